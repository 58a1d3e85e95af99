//! Golden tests: faultd's encoders against the bytes iproute2 6.1's `tc` sends
//! (`tests/golden/tc/`, regenerated with `tests/golden/tc/capture.sh --all`).
//!
//! Every case compares the `TCA_OPTIONS` payload **and** the whole `RTM_NEWQDISC` message as
//! [`new_qdisc_message`] builds it (sequence number zeroed on both sides), and checks that the
//! captured command line is the one the Go chaos-daemon would run for the spec.
use std::time::Duration;

use super::netem::{encode_netem_options, NetemArgs, NetemSpec};
use super::parse::NetemTime;
use super::prio::{encode_prio_options, PrioSpec, CHAOS_MESH_PRIOMAP};
use super::qdisc::{new_qdisc_message, AddMode, Qdisc};
use super::tbf::{encode_tbf_options, TbfArgs, TbfLimit, TbfSpec};
use super::{tc_handle, TC_H_ROOT};

struct Golden {
    name: &'static str,
    /// The tc argv after `tc`.
    argv: Vec<String>,
    opts: Vec<u8>,
    msg: Vec<u8>,
}

fn parse_hex(text: &str) -> (Vec<String>, Vec<u8>) {
    let mut argv = Vec::new();
    let mut bytes = Vec::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("# tc ") {
            if argv.is_empty() {
                argv = cmd.split_whitespace().map(str::to_string).collect();
            }
        } else if !line.starts_with('#') {
            bytes.extend(
                line.split_whitespace()
                    .map(|h| u8::from_str_radix(h, 16).expect("hex byte")),
            );
        }
    }
    (argv, bytes)
}

macro_rules! golden {
    ($name:literal) => {{
        let (argv, opts) = parse_hex(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/tc/",
            $name,
            ".opts.hex"
        )));
        let (argv2, msg) = parse_hex(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/tc/",
            $name,
            ".msg.hex"
        )));
        assert_eq!(argv, argv2);
        Golden {
            name: $name,
            argv,
            opts,
            msg,
        }
    }};
}

/// Parses `qdisc add dev lo {root|parent H} [handle H] KIND ARGS...` into (parent, handle, kind,
/// args).
fn split_cmd(argv: &[String]) -> (u32, u32, String, Vec<String>) {
    let handle_of = |s: &str| -> u32 {
        let (maj, min) = s.split_once(':').expect("major:minor");
        let maj = u16::from_str_radix(maj, 16).expect("hex major");
        let min = if min.is_empty() {
            0
        } else {
            u16::from_str_radix(min, 16).expect("hex minor")
        };
        tc_handle(maj, min)
    };
    assert_eq!(&argv[..4], ["qdisc", "add", "dev", "lo"]);
    let mut i = 4;
    let parent = if argv[i] == "root" {
        i += 1;
        TC_H_ROOT
    } else {
        assert_eq!(argv[i], "parent");
        i += 2;
        handle_of(&argv[i - 1])
    };
    let handle = if argv[i] == "handle" {
        i += 2;
        handle_of(&argv[i - 1])
    } else {
        0
    };
    (parent, handle, argv[i].clone(), argv[i + 1..].to_vec())
}

fn hexdump(b: &[u8]) -> String {
    b.chunks(16)
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{:04x}: {}",
                i * 16,
                c.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_bytes(what: &str, name: &str, ours: &[u8], theirs: &[u8]) {
    if ours != theirs {
        let at = ours
            .iter()
            .zip(theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "{name}: {what} differs from tc at byte {at} (ours {} bytes, tc {} bytes)\nours:\n{}\ntc:\n{}",
            ours.len(),
            theirs.len(),
            hexdump(ours),
            hexdump(theirs)
        );
    }
}

/// Checks the options payload and the whole message for qdisc `kind` with payload `ours`.
fn check(g: &Golden, kind: &str, ours: Vec<u8>) -> Vec<String> {
    let (parent, handle, gkind, args) = split_cmd(&g.argv);
    assert_eq!(gkind, kind, "{}", g.name);
    assert_bytes("TCA_OPTIONS", g.name, &ours, &g.opts);
    let q = Qdisc {
        kind: kind.to_string(),
        handle,
        parent,
        options: Some(ours),
    };
    let msg = new_qdisc_message(1, &q, AddMode::Exclusive).expect("message");
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    assert_bytes("whole message", g.name, &buf, &g.msg);
    args
}

fn netem(g: Golden, a: NetemArgs) {
    let spec = NetemSpec::from_args(&a).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    let args = check(&g, "netem", encode_netem_options(&spec));
    assert_eq!(
        spec.tc_args(),
        args,
        "{}: upstream would run a different command line",
        g.name
    );
}

fn t(s: &str) -> NetemTime {
    NetemTime::Text(s.to_string())
}

#[test]
fn netem_empty() {
    // `netem: {}` entries (chaos-mesh#2670) still produce a valid qdisc: tc's default limit only.
    netem(golden!("netem_empty"), NetemArgs::default());
}

#[test]
fn netem_delay() {
    netem(
        golden!("netem_delay"),
        NetemArgs {
            time: t("100ms"),
            ..Default::default()
        },
    );
}

#[test]
fn netem_delay_jitter() {
    netem(
        golden!("netem_delay_jitter"),
        NetemArgs {
            time: t("100ms"),
            jitter: t("10ms"),
            ..Default::default()
        },
    );
}

#[test]
fn netem_delay_jitter_corr() {
    netem(
        golden!("netem_delay_jitter_corr"),
        NetemArgs {
            time: t("0.1s"),
            jitter: t("10000us"),
            delay_corr: 25.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_delay_us() {
    netem(
        golden!("netem_delay_us"),
        NetemArgs {
            time: t("1.5ms"),
            jitter: t("249999ns"),
            delay_corr: 33.333_332,
            ..Default::default()
        },
    );
}

#[test]
fn netem_delay_max() {
    // The largest delay tc 6.1 accepts: 0xfffffff1 ticks, still without TCA_NETEM_LATENCY64.
    netem(
        golden!("netem_delay_max"),
        NetemArgs {
            time: t("274.877906s"),
            ..Default::default()
        },
    );
}

#[test]
fn netem_delay_chained() {
    // Legacy (pre-2.8 controller) microseconds encode like the duration strings.
    netem(
        golden!("netem_delay_chained"),
        NetemArgs {
            time: NetemTime::Micros(1_000_000),
            jitter: NetemTime::Micros(500_000),
            ..Default::default()
        },
    );
}

#[test]
fn netem_loss() {
    netem(
        golden!("netem_loss"),
        NetemArgs {
            loss: 30.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_loss_corr() {
    netem(
        golden!("netem_loss_corr"),
        NetemArgs {
            loss: 50.0,
            loss_corr: 12.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_loss_small() {
    netem(
        golden!("netem_loss_small"),
        NetemArgs {
            loss: 0.1,
            ..Default::default()
        },
    );
}

#[test]
fn netem_duplicate() {
    netem(
        golden!("netem_duplicate"),
        NetemArgs {
            duplicate: 5.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_duplicate_corr() {
    // tc drops a lone duplicate correlation (no TCA_NETEM_CORR), and so does faultd.
    netem(
        golden!("netem_duplicate_corr"),
        NetemArgs {
            duplicate: 5.0,
            duplicate_corr: 6.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_reorder() {
    // gap defaults to 1.
    netem(
        golden!("netem_reorder"),
        NetemArgs {
            time: t("10ms"),
            reorder: 25.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_reorder_gap() {
    netem(
        golden!("netem_reorder_gap"),
        NetemArgs {
            time: t("10ms"),
            reorder: 25.0,
            reorder_corr: 50.0,
            gap: 5,
            ..Default::default()
        },
    );
}

#[test]
fn netem_corrupt() {
    netem(
        golden!("netem_corrupt"),
        NetemArgs {
            corrupt: 1.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_corrupt_corr() {
    netem(
        golden!("netem_corrupt_corr"),
        NetemArgs {
            corrupt: 1.0,
            corrupt_corr: 2.0,
            ..Default::default()
        },
    );
}

#[test]
fn netem_rate() {
    netem(
        golden!("netem_rate"),
        NetemArgs {
            rate: "1kbps".into(),
            ..Default::default()
        },
    );
}

#[test]
fn netem_rate64() {
    netem(
        golden!("netem_rate64"),
        NetemArgs {
            rate: "100gbit".into(),
            ..Default::default()
        },
    );
}

#[test]
fn netem_limit() {
    netem(
        golden!("netem_limit"),
        NetemArgs {
            limit: 5000,
            ..Default::default()
        },
    );
}

#[test]
fn netem_all() {
    netem(
        golden!("netem_all"),
        NetemArgs {
            time: t("100ms"),
            jitter: t("10ms"),
            delay_corr: 25.0,
            limit: 2000,
            loss: 10.0,
            loss_corr: 20.0,
            gap: 3,
            duplicate: 5.0,
            duplicate_corr: 6.0,
            reorder: 5.0,
            reorder_corr: 10.0,
            corrupt: 1.0,
            corrupt_corr: 2.0,
            rate: "80mbit".into(),
        },
    );
}

fn tbf(g: Golden, spec: TbfSpec) {
    let ours = encode_tbf_options(&spec).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    check(&g, "tbf", ours);
}

#[test]
fn tbf_latency() {
    tbf(
        golden!("tbf_latency"),
        TbfSpec {
            rate: 125_000,
            burst: 32768,
            limit: TbfLimit::Latency(Duration::from_millis(50)),
            peak: None,
        },
    );
}

#[test]
fn tbf_limit() {
    tbf(
        golden!("tbf_limit"),
        TbfSpec {
            rate: 125_000,
            burst: 32768,
            limit: TbfLimit::Bytes(10_000),
            peak: None,
        },
    );
}

fn tbf_args(g: Golden, a: TbfArgs) {
    let spec = TbfSpec::from_args(&a).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    tbf(g, spec);
}

#[test]
fn tbf_slow() {
    tbf_args(
        golden!("tbf_slow"),
        TbfArgs {
            rate: "8kbit".into(),
            limit: 20_000,
            buffer: 10_000,
            ..Default::default()
        },
    );
}

#[test]
fn tbf_peak() {
    tbf_args(
        golden!("tbf_peak"),
        TbfArgs {
            rate: "1mbps".into(),
            limit: 10_000,
            buffer: 32768,
            peak_rate: 16_000_000,
            min_burst: 1500,
        },
    );
}

#[test]
fn tbf_rate64() {
    tbf_args(
        golden!("tbf_rate64"),
        TbfArgs {
            rate: "100gbit".into(),
            limit: 10_000,
            buffer: 32768,
            ..Default::default()
        },
    );
}

#[test]
fn tbf_rate64_peak64() {
    tbf_args(
        golden!("tbf_rate64_peak64"),
        TbfArgs {
            rate: "100gbit".into(),
            limit: 10_000_000,
            buffer: 1_000_000,
            peak_rate: 200_000_000_000,
            min_burst: 65536,
        },
    );
}

fn prio(g: Golden, spec: PrioSpec) {
    let args = check(&g, "prio", encode_prio_options(&spec));
    let mut expect = vec![
        "bands".to_string(),
        spec.bands().to_string(),
        "priomap".to_string(),
    ];
    expect.extend(spec.priomap().iter().map(u8::to_string));
    assert_eq!(args, expect, "{}", g.name);
}

#[test]
fn prio_bands3() {
    prio(golden!("prio_bands3"), PrioSpec::chaos_mesh(0).unwrap());
}

#[test]
fn prio_bands4() {
    prio(golden!("prio_bands4"), PrioSpec::chaos_mesh(1).unwrap());
}

#[test]
fn prio_bands16_chained() {
    prio(
        golden!("prio_bands16_chained"),
        PrioSpec::new(16, CHAOS_MESH_PRIOMAP).unwrap(),
    );
}
