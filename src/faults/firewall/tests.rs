//! Unit tests: golden batches for representative requests, as nft text (`golden/*.nft`) and as
//! the native netlink batch (`golden/*.nlhex`), validation against hostile input, read-back
//! layout. `FAULTD_UPDATE_GOLDEN=1 cargo test firewall` rewrites the goldens (review the diff);
//! `tests/host_partition.rs` loads every `.nlhex` natively and every `.nft` with `nft -f` and
//! compares what `nft list table inet faultd` shows.
use super::model::*;
use super::nlsock::Listing;
use super::render::{apply_batch, delete_owned_batch, expected_layout, validate_owner};
use super::*;

fn texts(rules: &[super::rule::Rule]) -> Vec<String> {
    rules.iter().map(|r| r.text()).collect()
}

/// The owner id used in goldens.
pub const OWNER: &str = "00000000-0000-4000-8000-000000000001";

fn net(name: &str, cidrs: &[&str]) -> IpSet {
    IpSet {
        name: name.into(),
        set_type: "hash:net".into(),
        cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn net_port(name: &str, entries: &[(&str, u32)]) -> IpSet {
    IpSet {
        name: name.into(),
        set_type: "hash:net,port".into(),
        cidr_and_ports: entries
            .iter()
            .map(|(c, p)| CidrAndPort {
                cidr: c.to_string(),
                port: *p,
            })
            .collect(),
        ..Default::default()
    }
}

fn list(name: &str, members: &[&str]) -> IpSet {
    IpSet {
        name: name.into(),
        set_type: "list:set".into(),
        set_names: members.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn chain(name: &str, direction: Direction, ipsets: &[&str], target: &str) -> Chain {
    Chain {
        name: name.into(),
        direction,
        ipsets: ipsets.iter().map(|s| s.to_string()).collect(),
        target: target.into(),
        protocol: String::new(),
        source_ports: String::new(),
        destination_ports: String::new(),
        tcp_flags: String::new(),
        device: String::new(),
    }
}

/// The requests the goldens cover, by golden file name.
pub fn golden_cases() -> Vec<(&'static str, DesiredState)> {
    let controller_sets = vec![
        net(
            "net_tgt_3f2a",
            &[
                "10.244.1.7/32",
                "10.244.2.0/24",
                "10.244.2.9",
                "10.244.1.7",
                "fd00:10:244::5",
                "10.96.0.0/12",
            ],
        ),
        net_port(
            "netport_tgt_3f2a",
            &[
                ("10.244.3.4/32", 8080),
                ("10.244.3.0/24", 8080),
                ("10.244.3.4", 9090),
                ("fd00::/64", 443),
            ],
        ),
        list("set_tgt_3f2a", &["net_tgt_3f2a", "netport_tgt_3f2a"]),
    ];
    let mut reject = chain(
        "OUTPUT/partition-reject",
        Direction::Output,
        &["set_tgt_3f2a"],
        "REJECT --reject-with tcp-reset",
    );
    reject.protocol = "tcp".into();
    reject.device = "eth1".into();
    let mut tcp = chain("INPUT/tcp-flags", Direction::Input, &[], "ACCEPT");
    tcp.protocol = "tcp".into();
    tcp.source_ports = "443,80,1000:2000,1500:2500".into();
    tcp.destination_ports = "22".into();
    tcp.tcp_flags = "SYN,ACK SYN".into();
    let mut udp = chain(
        "OUTPUT/udp-dns",
        Direction::Output,
        &["net_tgt_3f2a"],
        "DROP",
    );
    udp.protocol = "udp".into();
    udp.destination_ports = ":1024".into();
    let mut icmp = chain(
        "INPUT/icmp",
        Direction::Input,
        &[],
        "REJECT --reject-with icmp-host-prohibited",
    );
    icmp.protocol = "icmp".into();
    vec![
        (
            "partition_input_drop",
            DesiredState {
                classify: vec![],
                sets: controller_sets.clone(),
                chains: vec![chain(
                    "INPUT/partition-abc123",
                    Direction::Input,
                    &["set_tgt_3f2a"],
                    "DROP",
                )],
            },
        ),
        (
            "partition_both_directions_reject",
            DesiredState {
                classify: vec![],
                sets: controller_sets.clone(),
                chains: vec![
                    chain(
                        "INPUT/partition-abc123",
                        Direction::Input,
                        &["net_tgt_3f2a"],
                        "REJECT",
                    ),
                    reject,
                ],
            },
        ),
        (
            "protocol_ports_flags",
            DesiredState {
                classify: vec![],
                sets: controller_sets.clone(),
                chains: vec![tcp, udp, icmp],
            },
        ),
        (
            "ipsets_only",
            DesiredState {
                classify: vec![],
                sets: controller_sets,
                chains: vec![],
            },
        ),
        (
            "edge_shapes",
            DesiredState {
                sets: vec![
                    net("all", &["0.0.0.0/0", "::/0"]),
                    net(
                        "top",
                        &[
                            "255.255.255.0/24",
                            "ffff::/16",
                            "10.0.0.0/24",
                            "10.0.1.0/24",
                        ],
                    ),
                    net_port("np", &[("0.0.0.0/0", 65535), ("fd00::1", 1)]),
                ],
                chains: {
                    let mut a = chain(
                        "INPUT/edges-a",
                        Direction::Input,
                        &["all", "top"],
                        "REJECT --reject-with icmp-net-prohibited",
                    );
                    a.protocol = "tcp".into();
                    a.destination_ports = "1000:65535,80".into();
                    a.tcp_flags = "FIN,RST NONE".into();
                    a.device = "veth-x.1".into();
                    let mut b = chain(
                        "OUTPUT/edges-b",
                        Direction::Output,
                        &[],
                        "REJECT --reject-with icmp-proto-unreachable",
                    );
                    b.protocol = "udp".into();
                    b.source_ports = "53".into();
                    let mut c = chain("INPUT/edges-c", Direction::Input, &["np"], "ACCEPT");
                    c.protocol = "tcp".into();
                    c.destination_ports = "1:65535".into();
                    c.tcp_flags = "ALL SYN".into();
                    let mut d = chain(
                        "OUTPUT/edges-d",
                        Direction::Output,
                        &["np", "top"],
                        "REJECT --reject-with icmp-host-unreachable",
                    );
                    d.device = "eth0".into();
                    vec![a, b, c, d]
                },
                classify: vec![],
            },
        ),
        (
            "tc_classify",
            DesiredState {
                sets: vec![
                    net("chaos-tgt", &["10.250.6.3/32", "fd00::/8"]),
                    net(
                        "edges",
                        &["0.0.0.0/8", "10.0.0.0/24", "10.0.1.0/24", "255.255.255.255"],
                    ),
                ],
                chains: vec![],
                classify: vec![
                    Classify {
                        ipset: "chaos-tgt".into(),
                        protocol: "tcp".into(),
                        device: "d0".into(),
                        class: 0xFA02_0004,
                    },
                    Classify {
                        ipset: "edges".into(),
                        protocol: String::new(),
                        device: "eth0".into(),
                        class: 0x0001_0002,
                    },
                ],
            },
        ),
        (
            "chain_without_its_ipset",
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![chain(
                    "INPUT/partition-abc123",
                    Direction::Input,
                    &["set_tgt_3f2a"],
                    "DROP",
                )],
            },
        ),
    ]
}

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/faults/firewall/golden")
}

#[test]
fn batches_match_the_goldens() {
    let update = std::env::var_os("FAULTD_UPDATE_GOLDEN").is_some();
    for (name, state) in golden_cases() {
        let table = compile(&state).unwrap_or_else(|e| panic!("{name}: {e}"));
        let batch = apply_batch(&table, OWNER).unwrap();
        let path = golden_dir().join(format!("{name}.nft"));
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &batch).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (FAULTD_UPDATE_GOLDEN=1 writes it)", path.display())
        });
        assert_eq!(batch, want, "{name}: batch differs from {}", path.display());
        // Deterministic: the same state renders byte-identically again.
        assert_eq!(
            apply_batch(&compile(&state).unwrap(), OWNER).unwrap(),
            batch
        );
    }
}

#[test]
fn element_order_and_duplicates_do_not_change_the_batch() {
    let a = DesiredState {
        classify: vec![],
        sets: vec![net(
            "s",
            &["10.0.0.1", "10.0.0.0/8", "192.168.1.0/24", "10.1.2.3/32"],
        )],
        chains: vec![chain("INPUT/x", Direction::Input, &["s"], "DROP")],
    };
    let b = DesiredState {
        classify: vec![],
        sets: vec![net("s", &["192.168.1.77/24", "10.0.0.0/8", "10.0.0.0/8"])],
        chains: a.chains.clone(),
    };
    let ta = compile(&a).unwrap();
    assert_eq!(ta, compile(&b).unwrap());
    // Covered networks are dropped (nft interval sets refuse overlaps); host bits are cleared.
    assert_eq!(ta.sets[0].elements, vec!["10.0.0.0/8", "192.168.1.0/24"]);
}

#[test]
fn input_matches_source_output_matches_destination() {
    let sets = vec![net("n", &["10.0.0.1"]), net_port("p", &[("10.0.0.2", 80)])];
    let t = compile(&DesiredState {
        classify: vec![],
        sets: sets.clone(),
        chains: vec![chain("in", Direction::Input, &["n", "p"], "DROP")],
    })
    .unwrap();
    assert_eq!(
        texts(&t.chains[0].rules),
        vec![
            "iifname \"eth0\" ip saddr @v4_n counter drop",
            "iifname \"eth0\" ip saddr . tcp dport @v4port_p counter drop",
        ]
    );
    let t = compile(&DesiredState {
        classify: vec![],
        sets,
        chains: vec![chain("out", Direction::Output, &["p"], "DROP")],
    })
    .unwrap();
    assert_eq!(
        texts(&t.chains[0].rules),
        vec!["oifname \"eth0\" ip daddr . tcp dport @v4port_p counter drop"]
    );
}

#[test]
fn a_chain_without_ipsets_matches_everything_on_its_device_but_an_empty_ipset_nothing() {
    let t = compile(&DesiredState {
        classify: vec![],
        sets: vec![net("empty", &[])],
        chains: vec![
            chain("all", Direction::Input, &[], "DROP"),
            chain("none", Direction::Input, &["empty"], "DROP"),
        ],
    })
    .unwrap();
    assert!(t.sets.is_empty());
    assert_eq!(
        texts(&t.chains[0].rules),
        vec!["iifname \"eth0\" counter drop"]
    );
    assert!(t.chains[1].rules.is_empty());
}

#[test]
fn net_port_sets_never_match_udp_or_icmp_chains() {
    let mut c = chain("c", Direction::Output, &["p", "n"], "DROP");
    c.protocol = "udp".into();
    let t = compile(&DesiredState {
        classify: vec![],
        sets: vec![net_port("p", &[("10.0.0.2", 80)]), net("n", &["10.0.0.3"])],
        chains: vec![c],
    })
    .unwrap();
    assert_eq!(
        texts(&t.chains[0].rules),
        vec!["oifname \"eth0\" ip daddr @v4_n meta l4proto udp counter drop"]
    );
}

#[test]
fn every_reject_type_has_a_verdict_for_both_families() {
    for (with, any_rules) in [
        ("icmp-port-unreachable", 1),
        ("port-unreach", 1),
        ("icmp-host-unreachable", 1),
        ("icmp-net-unreachable", 1),
        ("icmp-admin-prohibited", 1),
        ("icmp-proto-unreachable", 2),
        ("icmp-net-prohibited", 2),
        ("icmp-host-prohibited", 2),
        ("host-prohib", 2),
    ] {
        let target = format!("REJECT --reject-with {with}");
        let t = compile(&DesiredState {
            classify: vec![],
            sets: vec![net("n", &["10.0.0.1", "fd00::1"])],
            chains: vec![
                chain("any", Direction::Input, &[], &target),
                chain("fam", Direction::Input, &["n"], &target),
            ],
        })
        .unwrap_or_else(|e| panic!("{with}: {e}"));
        assert_eq!(t.chains[0].rules.len(), any_rules, "{with}");
        assert_eq!(t.chains[1].rules.len(), 2, "{with}");
        assert!(t.chains[1].rules[0].text().contains("ip saddr @v4_n"));
        assert!(t.chains[1].rules[1].text().contains("ip6 saddr @v6_n"));
        assert!(t
            .chains
            .iter()
            .flat_map(|c| texts(&c.rules))
            .all(|r| r.ends_with("unreachable")
                || r.ends_with("prohibited")
                || r.ends_with("no-route")));
    }
}

fn assert_invalid(what: &str, state: DesiredState) {
    match compile(&state) {
        Err(e) => assert_eq!(e.kind(), FailureKind::InvalidArgument, "{what}: {e}"),
        Ok(t) => panic!("{what}: accepted: {t:?}"),
    }
}

const HOSTILE_NAMES: &[&str] = &[
    "",
    "a b",
    "a\"b",
    "a'b",
    "a;b",
    "a\nb",
    "a\rb",
    "a{b",
    "a}b",
    "a\\b",
    "a#b",
    "a@b",
    "a$b",
    "a`b",
    "a\0b",
    "a\tb",
    "ünïcödé",
    "名前",
    "x; flush ruleset",
    "x }\ntable ip evil {",
    "0123456789012345678901234567890123",
];

#[test]
fn hostile_ipset_names_are_refused() {
    for bad in HOSTILE_NAMES {
        assert_invalid(
            &format!("set name {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![net(bad, &["10.0.0.1"])],
                chains: vec![],
            },
        );
        assert_invalid(
            &format!("member name {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![net("ok", &["10.0.0.1"]), list("l", &["ok", bad])],
                chains: vec![],
            },
        );
        assert_invalid(
            &format!("chain ipset {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![chain("c", Direction::Input, &[bad], "DROP")],
            },
        );
    }
}

#[test]
fn hostile_chain_names_and_devices_are_refused() {
    for bad in HOSTILE_NAMES
        .iter()
        .chain(&["INPUT/0123456789012345678901234"])
    {
        assert_invalid(
            &format!("chain name {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![chain(bad, Direction::Input, &[], "DROP")],
            },
        );
    }
    for bad in HOSTILE_NAMES.iter().filter(|b| !b.is_empty()).chain(&[
        "eth0/1",
        "eth0:1",
        ".",
        "..",
        "averyverylongifname",
        "eth*",
    ]) {
        let mut c = chain("c", Direction::Output, &[], "DROP");
        c.device = bad.to_string();
        assert_invalid(
            &format!("device {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![c],
            },
        );
    }
}

#[test]
fn bad_cidrs_and_ports_are_refused() {
    for bad in [
        "",
        "10.0.0.256",
        "10.0.0.1/33",
        "10.0.0.1/",
        "10.0.0.1/-1",
        "10.0.0.1/+8",
        "10.0.0.1/ 8",
        "010.0.0.1",
        "10.0.0",
        "10.0.0.1/8/8",
        "fd00::/129",
        "fe80::1%eth0",
        "10.0.0.0-10.0.0.9",
        "example.com",
        " 10.0.0.1",
        "10.0.0.1\n",
        "10.0.0.1, 10.0.0.2",
        "１０.0.0.1",
    ] {
        assert_invalid(
            &format!("cidr {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![net("s", &[bad])],
                chains: vec![],
            },
        );
        assert_invalid(
            &format!("net,port cidr {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![net_port("s", &[(bad, 80)])],
                chains: vec![],
            },
        );
    }
    for port in [0, 65536, 70000, u32::MAX] {
        assert_invalid(
            &format!("port {port}"),
            DesiredState {
                classify: vec![],
                sets: vec![net_port("s", &[("10.0.0.1", port)])],
                chains: vec![],
            },
        );
    }
    for bad in [
        "0",
        "70000",
        "65536",
        "80-90",
        "90:80",
        ":",
        "80,",
        ",80",
        "80 ,90",
        "http",
        "80;90",
        "-1",
        "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
        "８０",
    ] {
        for field in ["source", "destination"] {
            let mut c = chain("c", Direction::Input, &[], "DROP");
            c.protocol = "tcp".into();
            if field == "source" {
                c.source_ports = bad.into();
            } else {
                c.destination_ports = bad.into();
            }
            assert_invalid(
                &format!("{field} ports {bad:?}"),
                DesiredState {
                    classify: vec![],
                    sets: vec![],
                    chains: vec![c],
                },
            );
        }
    }
    // Ports or flags need a protocol that has them.
    let mut c = chain("c", Direction::Input, &[], "DROP");
    c.destination_ports = "80".into();
    assert_invalid(
        "ports without protocol",
        DesiredState {
            classify: vec![],
            sets: vec![],
            chains: vec![c.clone()],
        },
    );
    c.protocol = "icmp".into();
    assert_invalid(
        "ports with icmp",
        DesiredState {
            classify: vec![],
            sets: vec![],
            chains: vec![c],
        },
    );
}

#[test]
fn unknown_targets_protocols_and_flags_are_refused() {
    for bad in [
        "",
        "drop",
        "Drop",
        "CLASSIFY --set-class 1:2",
        "DROP; flush ruleset",
        "DROP\nflush ruleset",
        "DROP -j ACCEPT",
        "REJECT --reject-with",
        "REJECT --reject-with tcp-reset --foo",
        "REJECT --reject-with icmp6-port-unreachable",
        "REJECT --reject-with ICMP-PORT-UNREACHABLE",
        "LOG --log-prefix x",
        "RETURN",
        "QUEUE",
        "MARK --set-mark 1",
        "jump c_x",
        "DROP\t",
        "ＤＲＯＰ",
        "DROP\u{a0}",
    ] {
        assert_invalid(
            &format!("target {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![chain("c", Direction::Input, &[], bad)],
            },
        );
    }
    // tcp-reset needs protocol tcp.
    assert_invalid(
        "tcp-reset without tcp",
        DesiredState {
            classify: vec![],
            sets: vec![],
            chains: vec![chain(
                "c",
                Direction::Input,
                &[],
                "REJECT --reject-with tcp-reset",
            )],
        },
    );
    for bad in ["sctp", "6", "tcp;", "tcp udp", "ip", "icmpv6", "ţcp"] {
        let mut c = chain("c", Direction::Input, &[], "DROP");
        c.protocol = bad.into();
        assert_invalid(
            &format!("protocol {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![c],
            },
        );
    }
    for bad in [
        "SYN",
        "SYN,ACK",
        "SYN,ACK SYN extra",
        "SYN,ACK FIN",
        "SYN,,ACK SYN",
        "SYN|ACK SYN",
        "ECE SYN",
        "SYN,ACK\nSYN",
        "SYN,ACK\tSYN",
        "NONE SYN",
    ] {
        let mut c = chain("c", Direction::Input, &[], "DROP");
        c.protocol = "tcp".into();
        c.tcp_flags = bad.into();
        assert_invalid(
            &format!("tcp flags {bad:?}"),
            DesiredState {
                classify: vec![],
                sets: vec![],
                chains: vec![c],
            },
        );
    }
    let mut c = chain("c", Direction::Input, &[], "DROP");
    c.tcp_flags = "SYN,ACK SYN".into();
    c.protocol = "udp".into();
    assert_invalid(
        "flags with udp",
        DesiredState {
            classify: vec![],
            sets: vec![],
            chains: vec![c],
        },
    );
}

#[test]
fn set_types_and_structure_are_checked() {
    let mut wrong_type = net("s", &["10.0.0.1"]);
    wrong_type.set_type = "hash:ip".into();
    let mut empty_type = net("s", &["10.0.0.1"]);
    empty_type.set_type = String::new();
    let mut mixed = net("s", &["10.0.0.1"]);
    mixed.set_names = vec!["other".into()];
    for (what, sets) in [
        ("unknown type", vec![wrong_type]),
        ("empty type", vec![empty_type]),
        ("contents of another type", vec![mixed]),
        (
            "duplicate names",
            vec![net("s", &["10.0.0.1"]), net("s", &["10.0.0.2"])],
        ),
        ("unknown member", vec![list("l", &["nope"])]),
        (
            "nested list:set",
            vec![net("n", &[]), list("a", &["n"]), list("b", &["a"])],
        ),
    ] {
        assert_invalid(
            what,
            DesiredState {
                classify: vec![],
                sets,
                chains: vec![],
            },
        );
    }
    assert_invalid(
        "duplicate chains",
        DesiredState {
            classify: vec![],
            sets: vec![],
            chains: vec![
                chain("c", Direction::Input, &[], "DROP"),
                chain("c", Direction::Output, &[], "DROP"),
            ],
        },
    );
    // A list:set may name its members in any order of the request.
    compile(&DesiredState {
        classify: vec![],
        sets: vec![list("l", &["n"]), net("n", &["10.0.0.1"])],
        chains: vec![],
    })
    .unwrap();
}

#[test]
fn chains_must_name_existing_ipsets() {
    let state = DesiredState {
        classify: vec![],
        sets: vec![net("a", &["10.0.0.1"])],
        chains: vec![chain("c", Direction::Input, &["a", "b"], "DROP")],
    };
    let e = check_references(&state).unwrap_err();
    assert_eq!(e.kind(), FailureKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("\"b\""), "{e}");
    // compile itself is lenient (a FlushIPSets may have dropped the set): no rule for it.
    let t = compile(&state).unwrap();
    assert_eq!(
        texts(&t.chains[0].rules),
        vec!["iifname \"eth0\" ip saddr @v4_a counter drop"]
    );
}

#[test]
fn a_part_replaces_only_its_half_of_the_state() {
    let s = DesiredState {
        classify: vec![],
        sets: vec![net("a", &["10.0.0.1"])],
        chains: vec![chain("c", Direction::Input, &["a"], "DROP")],
    };
    let t = s.with(Part::Sets(vec![]));
    assert!(t.sets.is_empty() && t.chains.len() == 1);
    let t = s.with(Part::Chains(vec![]));
    assert!(t.sets.len() == 1 && t.chains.is_empty());
    assert!(t.with(Part::Sets(vec![])).is_empty());
}

#[test]
fn port_and_flag_syntax() {
    assert_eq!(
        parse_ports("p", "443,80,1000:2000,1500:2500,81").unwrap(),
        vec![(80, 81), (443, 443), (1000, 2500)]
    );
    assert_eq!(parse_ports("p", ":1024").unwrap(), vec![(1, 1024)]);
    assert_eq!(parse_ports("p", "1024:").unwrap(), vec![(1024, 65535)]);
    assert_eq!(parse_ports("p", "7:7").unwrap(), vec![(7, 7)]);
    assert_eq!(parse_tcp_flags("f", "SYN,ACK SYN").unwrap(), (0x12, 0x02));
    assert_eq!(parse_tcp_flags("f", "all none").unwrap(), (0x3f, 0));
    assert_eq!(
        parse_tcp_flags("f", "  FIN,RST   RST ").unwrap(),
        (0x05, 0x04)
    );
}

#[test]
fn owner_ids_are_checked_before_they_reach_a_batch() {
    for bad in ["", "x y", "abc;", "g0", "a\nb", "../x"] {
        assert!(validate_owner(bad).is_err(), "{bad:?}");
        assert!(delete_owned_batch(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        delete_owned_batch(OWNER).unwrap(),
        format!("delete chain inet faultd owner_{OWNER}\ndelete table inet faultd\n")
    );
}

#[test]
fn read_back_layout() {
    let t = compile(&DesiredState {
        classify: vec![],
        sets: vec![net("s", &["10.0.0.0/8"])],
        chains: vec![chain("INPUT/x", Direction::Input, &["s"], "DROP")],
    })
    .unwrap();
    let (sets, chains) = expected_layout(&t, OWNER);
    assert_eq!(sets.into_iter().collect::<Vec<_>>(), vec!["v4_s"]);
    assert_eq!(
        chains.into_iter().collect::<Vec<_>>(),
        vec![
            ("c_INPUT/x".to_string(), 1),
            ("input".to_string(), 1),
            (format!("owner_{OWNER}"), 0)
        ]
    );
    let l = Listing {
        owners: vec![OWNER.into()],
        ..Default::default()
    };
    assert_eq!(l.owner(), Some(OWNER));
    let none = Listing::default();
    assert_eq!(none.owner(), None);
}

/// The native batch of every golden, one message per line in hex (`golden/<name>.nlhex`);
/// `FAULTD_UPDATE_GOLDEN=1` rewrites them. The host tier loads each into a kernel and compares
/// `nft list table inet faultd` with what `nft -f <name>.nft` gives.
#[test]
fn netlink_batches_match_the_goldens() {
    let update = std::env::var_os("FAULTD_UPDATE_GOLDEN").is_some();
    for (name, state) in golden_cases() {
        let table = compile(&state).unwrap_or_else(|e| panic!("{name}: {e}"));
        let batch = super::nl::apply_batch(&table, OWNER).unwrap();
        let hex = super::nl::hex_lines(&batch);
        let path = golden_dir().join(format!("{name}.nlhex"));
        if update {
            std::fs::write(&path, &hex).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (FAULTD_UPDATE_GOLDEN=1 writes it)", path.display())
        });
        assert_eq!(hex, want, "{name}: batch differs from {}", path.display());
        assert_eq!(super::nl::from_hex_lines(&hex).unwrap(), batch);
        // Every message is a well-formed nfnetlink message of the nf_tables subsystem.
        let bytes = batch.bytes(1);
        let mut off = 0;
        let mut n = 0;
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            assert!(
                len >= 20 && len.is_multiple_of(4),
                "{name}: message {n} length {len}"
            );
            off += len;
            n += 1;
        }
        assert_eq!(off, bytes.len());
        assert_eq!(n, batch.msgs.len() + 2);
    }
}

#[test]
fn netlink_owner_delete_and_errors_name_the_failing_message() {
    let b = super::nl::delete_owned_batch(OWNER).unwrap();
    assert_eq!(b.msgs.len(), 2);
    assert_eq!(b.what(10, 11), format!("delete chain owner_{OWNER}"));
    assert_eq!(b.what(10, 12), "delete table inet faultd");
    assert_eq!(b.what(10, 10), "batch begin");
    assert!(super::nl::delete_owned_batch("x y").is_err());
    let e = FirewallError::Kernel {
        op: "apply".into(),
        what: "add rule c_x #1: ...".into(),
        errno: libc::ENOENT,
    };
    assert_eq!(e.kind(), FailureKind::FailedPrecondition);
    assert!(e.to_string().contains("lacks nf_tables support"), "{e}");
    let e = FirewallError::Kernel {
        op: "recover".into(),
        what: "delete chain owner_x".into(),
        errno: libc::ENOENT,
    };
    assert_eq!(e.kind(), FailureKind::Internal);
    // A set element list never outgrows one attribute: 65536 IPv6 /128s split in messages.
    let many: Vec<String> = (0..20_000u32)
        .map(|i| format!("fd00::{:x}:{:x}", i >> 16, i & 0xffff))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let t = compile(&DesiredState {
        classify: vec![],
        sets: vec![net("big", &refs)],
        chains: vec![],
    })
    .unwrap();
    let b = super::nl::apply_batch(&t, OWNER).unwrap();
    assert!(b.msgs.len() > 20, "{}", b.msgs.len());
    assert!(b.bytes(1).len() > 1_000_000);
}

#[test]
fn the_journal_form_round_trips() {
    let (_, state) = golden_cases().remove(0);
    let fault = FirewallFault {
        netns: crate::faults::netns::NetnsRef {
            id: crate::ns::NsId {
                dev: 4,
                ino: 4026531840,
            },
            holder_pid: 1,
            host: false,
        },
        description: describe(&state),
        state,
    };
    let effect = <crate::faults::FaultEffect as crate::engine::Holds<FirewallFault>>::wrap(fault);
    let json = serde_json::to_string(&effect).unwrap();
    assert!(json.starts_with(r#"{"type":"firewall""#), "{json}");
    let back: crate::faults::FaultEffect = serde_json::from_str(&json).unwrap();
    let crate::faults::FaultEffect::Firewall(f) = back else {
        panic!("{json}")
    };
    assert_eq!(f.state, golden_cases().remove(0).1);
    assert_eq!(crate::engine::Effect::kind(&f), "firewall");
    assert!(
        f.description.contains("list:set set_tgt_3f2a"),
        "{}",
        f.description
    );
}

#[test]
fn tc_classification_renders_meta_priority_for_the_filter_band() {
    let state = DesiredState {
        sets: vec![IpSet {
            name: "chaos-tgt".into(),
            set_type: "hash:net".into(),
            cidrs: vec!["10.250.6.3/32".into()],
            cidr_and_ports: vec![],
            set_names: vec![],
        }],
        chains: vec![],
        classify: vec![Classify {
            ipset: "chaos-tgt".into(),
            protocol: "tcp".into(),
            device: "d0".into(),
            class: 0xFA02_0004,
        }],
    };
    let table = compile(&state).unwrap();
    let k = table
        .chains
        .iter()
        .find(|c| c.name == "k_0")
        .expect("classification chain");
    assert_eq!(k.direction, Direction::Output);
    assert_eq!(k.rules.len(), 1, "{:?}", k.rules);
    let r = &k.rules[0].text();
    assert!(r.starts_with("oifname \"d0\" ip daddr @"), "{r}");
    assert!(r.contains("meta l4proto tcp"), "{r}");
    assert!(r.ends_with("meta priority set fa02:4"), "{r}");
    let text = super::render::render_table(&table, "0b9c1a4e-0000-4000-8000-000000000001").unwrap();
    assert!(text.contains("jump k_0"), "{text}");
    // A classification naming an ipset the pod does not have is refused.
    let mut missing = state.clone();
    missing.classify[0].ipset = "nope".into();
    assert!(matches!(
        check_references(&missing),
        Err(FirewallError::MissingIpSet { .. })
    ));
}
