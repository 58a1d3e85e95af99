//! Wire compatibility (tier 1): request bytes built field by field as the Chaos Mesh controller
//! (Go protobuf) encodes them, from the upstream field table, must decode into faultd's types
//! with the right values; faultd's responses must put each value on the upstream field number.
use faultd::proto::pb;
use faultd::tc::parse::NetemTime;
use prost::Message;

/// A minimal protobuf writer, independent of prost, so the test checks prost against the table.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn tag(&mut self, field: u32, wire: u8) -> &mut Self {
        self.varint(((field as u64) << 3) | wire as u64)
    }
    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.tag(field, 0).varint(v)
    }
    /// int32/int64 negative values are sign-extended to 10 bytes, as Go does.
    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.tag(field, 0).varint(v as u64)
    }
    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.tag(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.tag(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.tag(field, 2).varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u32, m: &W) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

#[test]
fn tcs_request_with_netem_tbf_and_filters() {
    let mut netem = W::default();
    netem
        .str(1, "100ms")
        .str(2, "10ms")
        .float(3, 25.0)
        .uint(4, 1000)
        .float(5, 5.5)
        .float(6, 10.0)
        .uint(7, 3)
        .float(8, 1.0)
        .float(9, 2.0)
        .float(10, 50.0)
        .float(11, 20.0)
        .float(12, 0.5)
        .float(13, 0.25)
        .str(16, "8000bit");
    let mut tc1 = W::default();
    tc1.uint(1, 0)
        .msg(2, &netem)
        .str(4, "chaos-net-tgt")
        .str(5, "tcp")
        .str(9, "eth1");
    let mut tbf = W::default();
    tbf.str(1, "1mbps")
        .uint(2, 10000)
        .uint(3, 32768)
        .uint(4, 2_000_000)
        .uint(5, 1500);
    let mut tc2 = W::default();
    tc2.uint(1, 1).msg(3, &tbf);
    // Reserved field 6 (the removed `source_port`) as an old controller might still send it.
    tc2.str(6, "8080");
    let mut req = W::default();
    req.msg(1, &tc1)
        .msg(1, &tc2)
        .str(2, "containerd://abc123")
        .uint(4, 1)
        .str(5, "7c6a1e2b-0000-4000-8000-000000000001");

    let r = pb::TcsRequest::decode(req.0.as_slice()).unwrap();
    assert_eq!(r.container_id, "containerd://abc123");
    assert!(r.enter_ns);
    assert_eq!(r.pod_uid, "7c6a1e2b-0000-4000-8000-000000000001");
    assert_eq!(r.tcs.len(), 2);
    let t = &r.tcs[0];
    assert_eq!(t.r#type(), pb::tc::Type::Netem);
    assert_eq!(
        (t.ipset.as_str(), t.protocol.as_str(), t.device.as_str()),
        ("chaos-net-tgt", "tcp", "eth1")
    );
    let n = t.netem.as_ref().unwrap();
    assert_eq!(n.time, NetemTime::Text("100ms".into()));
    assert_eq!(n.jitter, NetemTime::Text("10ms".into()));
    assert_eq!(n.rate, "8000bit");
    assert_eq!(
        (n.delay_corr, n.limit, n.loss, n.loss_corr, n.gap),
        (25.0, 1000, 5.5, 10.0, 3)
    );
    assert_eq!(
        (n.duplicate, n.duplicate_corr, n.reorder, n.reorder_corr),
        (1.0, 2.0, 50.0, 20.0)
    );
    assert_eq!((n.corrupt, n.corrupt_corr), (0.5, 0.25));
    let b = &r.tcs[1];
    assert_eq!(b.r#type(), pb::tc::Type::Bandwidth);
    let tb = b.tbf.as_ref().unwrap();
    assert_eq!(
        (
            tb.rate.as_str(),
            tb.limit,
            tb.buffer,
            tb.peak_rate,
            tb.min_burst
        ),
        ("1mbps", 10000, 32768, 2_000_000, 1500)
    );
}

#[test]
fn ipsets_and_iptables_chains() {
    let mut cp = W::default();
    cp.str(1, "10.0.0.0/8").uint(2, 8080);
    let mut set = W::default();
    set.str(1, "chaos-netport")
        .str(2, "10.1.0.0/16")
        .str(2, "10.2.0.1/32")
        .msg(3, &cp)
        .str(4, "other-set")
        .str(5, "hash:net,port");
    let mut req = W::default();
    req.msg(1, &set)
        .str(2, "docker://ffee")
        .uint(3, 1)
        .str(4, "pod-uid");
    let r = pb::IpSetsRequest::decode(req.0.as_slice()).unwrap();
    let s = &r.ipsets[0];
    assert_eq!(
        (s.name.as_str(), s.r#type.as_str()),
        ("chaos-netport", "hash:net,port")
    );
    assert_eq!(s.cidrs, vec!["10.1.0.0/16", "10.2.0.1/32"]);
    assert_eq!(
        (s.cidr_and_ports[0].cidr.as_str(), s.cidr_and_ports[0].port),
        ("10.0.0.0/8", 8080)
    );
    assert_eq!(s.set_names, vec!["other-set"]);
    assert!(r.enter_ns);
    assert_eq!(r.pod_uid, "pod-uid");

    let mut chain = W::default();
    chain
        .str(1, "OUTPUT/abc")
        .uint(2, 1)
        .str(3, "chaos-netport")
        .str(4, "REJECT --reject-with tcp-reset")
        .str(5, "tcp")
        .str(6, "80")
        .str(7, "443,8443")
        .str(8, "SYN,ACK SYN")
        .str(9, "eth0");
    let mut req = W::default();
    req.msg(1, &chain)
        .str(2, "cri-o://aa")
        .uint(3, 1)
        .str(4, "uid2");
    let r = pb::IptablesChainsRequest::decode(req.0.as_slice()).unwrap();
    let c = &r.chains[0];
    assert_eq!(c.direction(), pb::chain::Direction::Output);
    assert_eq!(
        (c.name.as_str(), c.target.as_str(), c.protocol.as_str()),
        ("OUTPUT/abc", "REJECT --reject-with tcp-reset", "tcp")
    );
    assert_eq!(
        (
            c.source_ports.as_str(),
            c.destination_ports.as_str(),
            c.tcp_flags.as_str(),
            c.device.as_str()
        ),
        ("80", "443,8443", "SYN,ACK SYN", "eth0")
    );
    assert_eq!(c.ipsets, vec!["chaos-netport"]);
}

#[test]
fn stress_requests_and_identities() {
    let mut req = W::default();
    req.uint(1, 0)
        .str(2, "containerd://0123")
        .str(
            3,
            " --cpu-load-slice 10 --cpu-method sqrt --cpu 2 --cpu-load 50",
        )
        .uint(4, 1)
        .str(5, " --workers 1 --size 512MB")
        .int(7, -1000);
    let r = pb::ExecStressRequest::decode(req.0.as_slice()).unwrap();
    assert_eq!(r.scope(), pb::exec_stress_request::Scope::Container);
    assert_eq!(r.target, "containerd://0123");
    assert!(r.cpu_stressors.contains("--cpu-load 50"));
    assert!(r.memory_stressors.contains("--size 512MB"));
    assert!(r.enter_ns);
    assert_eq!(r.oom_score_adj, -1000);

    let mut cancel = W::default();
    cancel
        .str(1, "4242")
        .int(2, 1_597_945_824_000)
        .str(3, "4243")
        .int(4, 1_597_945_825_000);
    let c = pb::CancelStressRequest::decode(cancel.0.as_slice()).unwrap();
    assert_eq!(
        (c.cpu_instance.as_str(), c.cpu_start_time),
        ("4242", 1_597_945_824_000)
    );
    assert_eq!(
        (c.memory_instance.as_str(), c.memory_start_time),
        ("4243", 1_597_945_825_000)
    );

    // Our response must put each value on the upstream field number.
    let resp = pb::ExecStressResponse {
        cpu_instance: "4242".into(),
        cpu_start_time: 1_597_945_824_000,
        memory_instance: "4243".into(),
        memory_start_time: 1_597_945_825_000,
        cpu_instance_uid: String::new(),
        memory_instance_uid: String::new(),
    };
    let mut want = W::default();
    want.str(1, "4242")
        .int(2, 1_597_945_824_000)
        .str(3, "4243")
        .int(4, 1_597_945_825_000);
    assert_eq!(resp.encode_to_vec(), want.0);

    let pid = pb::ContainerResponse { pid: 31337 };
    let mut want = W::default();
    want.uint(1, 31337);
    assert_eq!(pid.encode_to_vec(), want.0);
}

#[test]
fn container_time_http_block_dns_jvm() {
    let mut action = W::default();
    action.uint(1, 1);
    let mut req = W::default();
    req.msg(1, &action).str(2, "containerd://beef");
    let r = pb::ContainerRequest::decode(req.0.as_slice()).unwrap();
    assert_eq!(
        r.action.unwrap().action(),
        pb::container_action::Action::Getpid
    );

    let mut t = W::default();
    t.str(1, "containerd://c")
        .int(2, -3600)
        .int(3, 500)
        .uint(4, 0b11)
        .str(5, "uid")
        .str(6, "pod:ctr");
    let r = pb::TimeRequest::decode(t.0.as_slice()).unwrap();
    assert_eq!(
        (r.sec, r.nsec, r.clk_ids_mask, r.pod_container_name.as_str()),
        (-3600, 500, 3, "pod:ctr")
    );

    // proxy_ports is packed on the wire.
    let mut packed = W::default();
    packed.varint(80).varint(8080);
    let mut h = W::default();
    h.str(1, "[]")
        .bytes(2, &packed.0)
        .str(3, "containerd://h")
        .int(4, 77)
        .int(5, 1_600_000_000_000)
        .uint(6, 1)
        .str(8, "");
    let r = pb::ApplyHttpChaosRequest::decode(h.0.as_slice()).unwrap();
    assert_eq!(r.proxy_ports, vec![80, 8080]);
    assert_eq!((r.instance, r.start_time), (77, 1_600_000_000_000));

    let mut delay = W::default();
    delay.int(1, 1_000_000).double(2, 33.5).int(3, 20_000);
    let mut b = W::default();
    b.str(1, "containerd://b")
        .str(2, "/var/lib/data")
        .uint(3, 0)
        .msg(5, &delay)
        .uint(6, 1);
    let r = pb::ApplyBlockChaosRequest::decode(b.0.as_slice()).unwrap();
    let d = r.delay.unwrap();
    assert_eq!(
        (d.delay, d.correlation, d.jitter),
        (1_000_000, 33.5, 20_000)
    );

    let mut dns = W::default();
    dns.str(1, "containerd://d")
        .str(2, "10.96.0.53")
        .uint(3, 1)
        .uint(4, 1);
    let r = pb::SetDnsServerRequest::decode(dns.0.as_slice()).unwrap();
    assert!(r.enable && r.enter_ns);
    assert_eq!(r.dns_server, "10.96.0.53");

    let mut jvm = W::default();
    jvm.str(1, "containerd://j")
        .str(2, "RULE x")
        .int(3, 9288)
        .uint(4, 1);
    let r = pb::InstallJvmRulesRequest::decode(jvm.0.as_slice()).unwrap();
    assert_eq!((r.rule.as_str(), r.port), ("RULE x", 9288));
}

#[test]
fn pre_2_8_controllers_send_netem_time_as_microseconds() {
    // Chaos Mesh < 2.8 had `uint32 time = 1; uint32 jitter = 2;` (microseconds).
    let mut netem = W::default();
    netem
        .uint(1, 100_000)
        .uint(2, 10_000)
        .float(3, 25.0)
        .float(5, 1.0);
    let mut tc = W::default();
    tc.msg(2, &netem); // type NETEM = 0 is the proto3 default: not on the wire
    let mut req = W::default();
    req.msg(1, &tc).str(2, "containerd://old").uint(4, 1);
    let r = pb::TcsRequest::decode(req.0.as_slice()).unwrap();
    let n = r.tcs[0].netem.as_ref().unwrap();
    assert_eq!(n.time, NetemTime::Micros(100_000));
    assert_eq!(n.jitter, NetemTime::Micros(10_000));
    assert_eq!(
        n.time.to_duration("netem.time").unwrap(),
        std::time::Duration::from_millis(100)
    );
    assert_eq!((n.delay_corr, n.loss), (25.0, 1.0));
    // And it re-encodes exactly as received.
    assert_eq!(r.encode_to_vec(), req.0);
}
