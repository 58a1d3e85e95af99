//! Hostile input, by property (tier 1): arbitrary bytes and arbitrary well-typed values fed to
//! every parser and decoder a request or the journal reaches. Properties: nothing panics, a value
//! that is accepted satisfies what its parser promises (it re-renders and re-parses to itself,
//! stays within its bounds, renders only validated text), and a rejection is a clear error (an
//! `InvalidArgument` naming the field, where the module has a kind).
//!
//! Cases per property: `FAULTD_PROPTEST_CASES` (default 256, a few seconds in a debug build).
//! The long run (>= 100 000 cases per property, release build) is `tests/bench/run.sh
//! --properties`, or by hand:
//!
//! ```sh
//! FAULTD_PROPTEST_CASES=100000 cargo test --release --test properties -- --test-threads=1
//! ```
//!
//! Journals are written under `FAULTD_PROPTEST_DIR` (default `/dev/shm` when it exists: the
//! journal fsyncs, which on a disk would make the long run slow without testing anything more).
use std::path::PathBuf;
use std::time::Duration;

use faultd::engine::{FaultRecord, Phase, TargetIdentity};
use faultd::failure::FailureKind;
use faultd::faults::firewall::{
    self, check_references, compile, validate_part, CidrAndPort, Classify, DesiredState, Direction,
    FirewallError, IpSet, Part,
};
use faultd::faults::netns::NetnsRef;
use faultd::faults::qdisc::{self as qfault, QdiscFault, TcRule, TcRuleKind};
use faultd::faults::stress::parse::{
    parse_cpu, parse_memory, MemSize, MAX_MEMORY_BYTES, MAX_WORKERS,
};
use faultd::faults::stress::StressError;
use faultd::faults::FaultEffect;
use faultd::journal::{Journal, JOURNAL_FILE};
use faultd::ns::NsId;
use faultd::proto::pb;
use faultd::runtime::id::{validate_pod_uid, ContainerId};
use faultd::runtime::ErrorKind as RuntimeErrorKind;
use faultd::server::decode;
use faultd::tc::netem::{encode_netem_options, NetemArgs, NetemSpec};
use faultd::tc::parse::{parse_go_duration, parse_rate, parse_size, NetemTime, Percent};
use faultd::tc::tbf::{encode_tbf_options, TbfArgs, TbfSpec};
use faultd::tc::{Qdisc, TcError, TcErrorClass, TC_H_ROOT};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use prost::Message;

// ---------------------------------------------------------------------------------------------
// configuration and shared strategies

fn cases() -> u32 {
    std::env::var("FAULTD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // No regression files in the source tree: a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters that break naive parsers and renderers.
const NASTY: &str = "\"'\n\r\t\0 ;{}#$\\/:,.-+=%@*eEµμ٣１\u{200b}\u{7f}\u{10ffff}";

fn nasty_char() -> BoxedStrategy<char> {
    prop_oneof![3 => select(NASTY.chars().collect::<Vec<_>>()), 1 => any::<char>()].boxed()
}

/// Arbitrary text: any Unicode, arbitrary bytes made UTF-8, or short runs of nasty characters.
fn hostile() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        proptest::collection::vec(nasty_char(), 0..8).prop_map(|c| c.into_iter().collect()),
    ]
    .boxed()
}

/// `s` with one character inserted, removed or replaced (by a nasty one, mostly).
fn mutate(s: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (s, any::<Index>(), nasty_char(), 0..3u8)
        .prop_map(|(s, i, c, op)| {
            let mut ch: Vec<char> = s.chars().collect();
            let n = ch.len();
            match op {
                1 if n > 0 => {
                    ch.remove(i.index(n));
                }
                2 if n > 0 => ch[i.index(n)] = c,
                _ => ch.insert(i.index(n + 1), c),
            }
            ch.into_iter().collect()
        })
        .boxed()
}

/// Mostly valid, sometimes one character off, sometimes anything.
fn near(valid: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![16 => valid.clone(), 2 => mutate(valid), 1 => hostile()].boxed()
}

/// [`near`] for one field of many: so that whole structures are often valid, a field is
/// corrupted less often.
fn near_rare(valid: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![48 => valid.clone(), 2 => mutate(valid), 1 => hostile()].boxed()
}

/// Decimal numbers as tc and Go write them (and a few they do not).
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..100_000).prop_map(|n| n.to_string()),
        (0u32..10_000, 0u32..1_000_000).prop_map(|(a, b)| format!("{a}.{b}")),
        "[0-9]{0,4}\\.?[0-9]{0,4}([eE][+-]?[0-9]{1,3})?",
        "[0-9]{18,30}",
    ]
    .boxed()
}

fn f32_value() -> BoxedStrategy<f32> {
    prop_oneof![
        8 => 0.0f32..=100.0,
        1 => select(vec![
            0.0,
            -0.0,
            100.0,
            100.000_01,
            -1e-45,
            1e-45,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ]),
        1 => any::<f32>(),
        8 => Just(0.0),
    ]
    .boxed()
}

fn invalid_field(e: &TcError) -> &'static str {
    match e {
        TcError::InvalidArgument { field, .. } => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// tc parsers

const RATE_UNITS: &[&str] = &[
    "", "bit", "kbit", "KBit", "kibit", "mbit", "Mibit", "gbit", "gibit", "tbit", "tibit", "bps",
    "kbps", "KiBps", "mbps", "mibps", "gbps", "gibps", "tbps", "tibps", "%", "kb", "b", "bits",
];
const SIZE_UNITS: &[&str] = &[
    "", "b", "k", "kb", "K", "m", "mb", "g", "gb", "kbit", "mbit", "gbit", "kib", "t", "B",
];
const DURATION_UNITS: &[&str] = &[
    "ns", "us", "µs", "μs", "ms", "s", "m", "h", "", "S", "d", "sec",
];

fn rate_text() -> BoxedStrategy<String> {
    near(
        prop_oneof![
            4 => ((0u32..100_000).prop_map(|n| n.to_string()), select(&RATE_UNITS[..20])),
            1 => (number(), select(RATE_UNITS)),
        ]
        .prop_map(|(n, u)| format!("{n}{u}"))
        .boxed(),
    )
}

fn size_text() -> BoxedStrategy<String> {
    near(
        (number(), select(SIZE_UNITS))
            .prop_map(|(n, u)| format!("{n}{u}"))
            .boxed(),
    )
}

fn duration_text() -> BoxedStrategy<String> {
    let term = prop_oneof![
        8 => (
            prop_oneof![
                (0u32..100_000).prop_map(|n| n.to_string()),
                (0u32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
            ],
            select(&DURATION_UNITS[..8]),
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        1 => (number(), select(DURATION_UNITS)).prop_map(|(n, u)| format!("{n}{u}")),
    ];
    near(
        (
            select(&["", "", "", "+", "-"][..]),
            proptest::collection::vec(term, 1..4),
        )
            .prop_map(|(sign, terms)| format!("{sign}{}", terms.concat()))
            .boxed(),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rate_parses_or_says_why(s in rate_text()) {
        match parse_rate(&s) {
            Ok(bytes) => {
                // What SetTcs logs and the goldens use: `<bits>bit` means the same rate.
                let bits = format!("{}bit", u128::from(bytes) * 8);
                prop_assert_eq!(parse_rate(&bits).ok(), Some(bytes), "{} -> {}", s, bits);
                prop_assert_eq!(parse_rate(&bytes.to_string()).ok(), Some(bytes / 8));
            }
            Err(e) => {
                prop_assert_eq!(invalid_field(&e), "rate");
                prop_assert_eq!(e.class(), TcErrorClass::InvalidArgument);
                prop_assert!(e.to_string().starts_with("invalid rate "), "{}", e);
            }
        }
    }

    #[test]
    fn size_parses_or_says_why(s in size_text()) {
        match parse_size(&s) {
            Ok(n) => prop_assert_eq!(parse_size(&n.to_string()).ok(), Some(n)),
            Err(e) => {
                prop_assert_eq!(invalid_field(&e), "size");
                prop_assert!(e.to_string().starts_with("invalid size "), "{}", e);
            }
        }
    }

    #[test]
    fn go_duration_parses_or_says_why(s in duration_text()) {
        match parse_go_duration(&s) {
            Ok(d) => {
                prop_assert!(d.as_nanos() <= i64::MAX as u128);
                let again = format!("{}ns", d.as_nanos());
                prop_assert_eq!(parse_go_duration(&again).ok(), Some(d));
                // The same value through NetemTime, both encodings.
                prop_assert_eq!(NetemTime::Text(s.clone()).to_duration("netem.time").ok(), Some(d));
            }
            Err(e) => {
                prop_assert_eq!(invalid_field(&e), "duration");
                let t = NetemTime::Text(s.clone()).to_duration("netem.jitter");
                if !s.is_empty() {
                    prop_assert_eq!(invalid_field(&t.unwrap_err()), "netem.jitter");
                }
            }
        }
    }

    #[test]
    fn netem_time_micros_is_exact(us in any::<u32>()) {
        let d = NetemTime::Micros(us).to_duration("netem.time").unwrap();
        prop_assert_eq!(d, Duration::from_micros(u64::from(us)));
    }

    #[test]
    fn percent_is_a_bounded_probability(v in f32_value()) {
        match Percent::new("netem.loss", v) {
            Ok(p) => {
                prop_assert!((0.0..=100.0).contains(&v));
                let k = p.to_kernel();
                if v == 100.0 {
                    prop_assert_eq!(k, u32::MAX);
                }
                // Monotone: more percent is never less probability.
                let up = Percent::new("p", (v + 1.0).min(100.0)).unwrap();
                prop_assert!(up.to_kernel() >= k);
            }
            Err(e) => {
                prop_assert!(v.is_nan() || !(0.0..=100.0).contains(&v));
                prop_assert_eq!(invalid_field(&e), "netem.loss");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// netem and tbf from request fields

fn netem_time() -> BoxedStrategy<NetemTime> {
    prop_oneof![
        3 => duration_text().prop_map(NetemTime::Text),
        1 => Just(NetemTime::Text(String::new())),
        1 => any::<u32>().prop_map(NetemTime::Micros),
    ]
    .boxed()
}

fn netem_args() -> BoxedStrategy<NetemArgs> {
    (
        (netem_time(), netem_time(), f32_value(), any::<u32>()),
        (f32_value(), f32_value(), any::<u32>()),
        (f32_value(), f32_value(), f32_value(), f32_value()),
        (f32_value(), f32_value()),
        prop_oneof![Just(String::new()), rate_text()],
    )
        .prop_map(
            |(
                (time, jitter, delay_corr, limit),
                (loss, loss_corr, gap),
                (duplicate, duplicate_corr, reorder, reorder_corr),
                (corrupt, corrupt_corr),
                rate,
            )| NetemArgs {
                time,
                jitter,
                delay_corr,
                limit,
                loss,
                loss_corr,
                gap,
                duplicate,
                duplicate_corr,
                reorder,
                reorder_corr,
                corrupt,
                corrupt_corr,
                rate,
            },
        )
        .boxed()
}

fn tbf_args() -> BoxedStrategy<TbfArgs> {
    let u32s = || prop_oneof![any::<u32>(), 0u32..100_000, Just(0u32)];
    (
        rate_text(),
        u32s(),
        u32s(),
        prop_oneof![Just(0u64), any::<u64>(), 0u64..1_000_000],
        u32s(),
    )
        .prop_map(|(rate, limit, buffer, peak_rate, min_burst)| TbfArgs {
            rate,
            limit,
            buffer,
            peak_rate,
            min_burst,
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn netem_spec_is_valid_or_refused_by_field(a in netem_args()) {
        match NetemSpec::from_args(&a) {
            Ok(spec) => {
                prop_assert_eq!(spec.normalized(), spec.clone(), "from_args normalizes");
                let opts = encode_netem_options(&spec);
                // struct tc_netem_qopt (24 bytes) at least, whole netlink attributes after it.
                prop_assert!(opts.len() >= 24 && opts.len().is_multiple_of(4), "{} bytes", opts.len());
                let args = spec.tc_args();
                if let Some(rate) = spec.rate {
                    let i = args.iter().position(|x| x == "rate").unwrap();
                    prop_assert_eq!(parse_rate(&args[i + 1]).ok(), Some(rate));
                }
                let q = Qdisc::netem(TC_H_ROOT, 0xFA01_0000, &spec);
                prop_assert_eq!(q.options.as_deref(), Some(&opts[..]));
            }
            Err(e) => {
                let f = invalid_field(&e);
                prop_assert!(f.starts_with("netem."), "{}: {}", f, e);
                prop_assert!(e.to_string().contains(f));
            }
        }
    }

    #[test]
    fn tbf_spec_is_valid_or_refused_by_field(a in tbf_args()) {
        match TbfSpec::from_args(&a) {
            Ok(spec) => {
                prop_assert!(spec.rate > 0 && spec.burst > 0);
                prop_assert_eq!(spec.rate, parse_rate(&a.rate).unwrap());
                // Encoding may still refuse a bucket that does not fit tc's fields; by field.
                match encode_tbf_options(&spec) {
                    Ok(opts) => prop_assert!(!opts.is_empty() && opts.len().is_multiple_of(4)),
                    Err(e) => prop_assert!(invalid_field(&e).starts_with("tbf."), "{}", e),
                }
            }
            Err(e) => {
                let f = invalid_field(&e);
                prop_assert!(f.starts_with("tbf."), "{}: {}", f, e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stressor options

const CPU_OPTS: &[&str] = &[
    "--cpu",
    "-c",
    "--cpu-load",
    "-l",
    "--cpu-load-slice",
    "--cpu-method",
    "--timeout",
    "-t",
    "--cpu-ops",
    "-",
    "--",
    "cpu",
];
const MEM_OPTS: &[&str] = &[
    "--workers",
    "-workers",
    "--size",
    "-size",
    "--time",
    "--required-limit",
    "-required-limit",
    "--",
    "-",
    "---size",
    "--vm",
];

fn option_value() -> BoxedStrategy<String> {
    near(
        prop_oneof![
            number(),
            (-5i64..200).prop_map(|n| n.to_string()),
            select(&["sqrt", "int64", "double", "loop", "fft", "true", "0", "t", "FALSE"][..])
                .prop_map(str::to_string),
            (
                number(),
                select(&["s", "m", "h", "d", "y", "%", "MB", "GiB", "Ki", "ms", "1m30s", ""][..])
            )
                .prop_map(|(n, u)| format!("{n}{u}")),
        ]
        .boxed(),
    )
}

/// `--opt value`, `--opt=value` or (`short`) `-ovalue`.
fn opt(long: &str, short: Option<&str>, v: String, form: u8) -> String {
    match (form % 3, short) {
        (1, _) => format!("{long}={v}"),
        (2, Some(s)) => format!("{s}{v}"),
        _ => format!("{long} {v}"),
    }
}

/// What the controller sends for CPU stressors, in any order and option form.
fn valid_cpu_text() -> BoxedStrategy<String> {
    (
        (0u32..=9000, any::<u8>()),
        prop::option::of((0u32..=110, any::<u8>())),
        prop::option::of((-20i64..3000, any::<u8>())),
        prop::option::of((
            select(&["sqrt", "int64", "double", "loop", "fft"][..]),
            any::<u8>(),
        )),
        prop::option::of((
            0u64..100_000,
            select(&["", "s", "m", "h", "d", "y", "S"][..]),
            any::<u8>(),
        )),
        any::<u64>(),
    )
        .prop_map(|(cpu, load, slice, method, timeout, order)| {
            let mut parts = vec![opt("--cpu", Some("-c"), cpu.0.to_string(), cpu.1)];
            if let Some((l, f)) = load {
                parts.push(opt("--cpu-load", Some("-l"), l.to_string(), f));
            }
            if let Some((n, f)) = slice {
                parts.push(opt("--cpu-load-slice", None, n.to_string(), f));
            }
            if let Some((m, f)) = method {
                parts.push(opt("--cpu-method", None, m.to_string(), f));
            }
            if let Some((n, u, f)) = timeout {
                parts.push(opt("--timeout", Some("-t"), format!("{n}{u}"), f));
            }
            let k = parts.len();
            parts.rotate_left((order % k as u64) as usize);
            format!(" {}", parts.join(" "))
        })
        .boxed()
}

/// What the controller sends for memory stressors, in any order and option form.
fn valid_memory_text() -> BoxedStrategy<String> {
    let size = prop_oneof![
        (
            1u64..1_000_000,
            select(&["", "B", "KB", "k", "KiB", "MB", "mib", "GB", "GiB", "TB", "PiB"][..])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        (0u32..200, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}%")),
        (1u32..5000).prop_map(|n| format!("{n},000MB")),
    ];
    (
        prop::option::of((0u32..=9000, any::<u8>())),
        (size, any::<u8>()),
        prop::option::of((duration_text(), any::<u8>())),
        prop::option::of(select(&["", "=true", "=0", "=F", "=yes"][..])),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(workers, size, time, req, dashes, order)| {
            let d = if dashes { "--" } else { "-" };
            let mut parts = vec![opt(&format!("{d}size"), None, size.0, size.1)];
            if let Some((n, f)) = workers {
                parts.push(opt(&format!("{d}workers"), None, n.to_string(), f));
            }
            if let Some((t, f)) = time {
                parts.push(opt(&format!("{d}time"), None, t, f));
            }
            if let Some(r) = req {
                parts.push(format!("{d}required-limit{r}"));
            }
            let k = parts.len();
            parts.rotate_left((order % k as u64) as usize);
            format!(" {}", parts.join(" "))
        })
        .boxed()
}

/// A stressor string made of option fragments: `--opt value`, `--opt=value`, `-cN`, or junk.
fn stressor_text(opts: &'static [&'static str]) -> BoxedStrategy<String> {
    let fragment = prop_oneof![
        4 => (select(opts), option_value()).prop_map(|(o, v)| format!("{o} {v}")),
        2 => (select(opts), option_value()).prop_map(|(o, v)| format!("{o}={v}")),
        1 => (select(opts), option_value()).prop_map(|(o, v)| format!("{o}{v}")),
        1 => select(opts).prop_map(str::to_string),
        1 => hostile(),
    ];
    let valid = if opts == CPU_OPTS {
        valid_cpu_text()
    } else {
        valid_memory_text()
    };
    prop_oneof![
        6 => near(valid),
        3 => (
            proptest::collection::vec(fragment, 0..6),
            select(&[" ", "  ", "\t", "\n", " \u{a0}"][..]),
        )
            .prop_map(|(f, sep)| format!(" {}", f.join(sep))),
        1 => hostile(),
    ]
    .boxed()
}

fn stress_message_ok(e: &StressError, stressor: &str) -> bool {
    e.to_string().starts_with(&format!("{stressor}Stressors: "))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cpu_stressors_parse_or_say_why(s in stressor_text(CPU_OPTS)) {
        match parse_cpu(&s) {
            Ok(None) => prop_assert!(s.trim().is_empty()),
            Ok(Some(c)) => {
                prop_assert!(c.workers <= MAX_WORKERS);
                prop_assert!(c.load <= 100);
                prop_assert!(c.period >= Duration::from_millis(10) && c.period <= Duration::from_secs(1));
                prop_assert!(c.timeout.is_none_or(|t| !t.is_zero()));
                prop_assert!((1..=MAX_WORKERS).contains(&c.resolved_workers()));
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), FailureKind::InvalidArgument);
                prop_assert!(stress_message_ok(&e, "cpu"), "{}", e);
            }
        }
    }

    #[test]
    fn memory_stressors_parse_or_say_why(
        s in stressor_text(MEM_OPTS),
        limit in prop_oneof![Just(None), any::<u64>().prop_map(Some)],
        node in any::<u64>(),
    ) {
        match parse_memory(&s) {
            Ok(None) => prop_assert!(s.trim().is_empty()),
            Ok(Some(m)) => {
                prop_assert!((1..=MAX_WORKERS).contains(&m.workers));
                match m.size {
                    MemSize::Bytes(b) => prop_assert!((1..=MAX_MEMORY_BYTES).contains(&b)),
                    MemSize::Percent(p) => prop_assert!(p.is_finite() && p > 0.0 && p <= 100_000.0),
                }
                match m.total_bytes(limit, node) {
                    Ok(b) => prop_assert!((1..=MAX_MEMORY_BYTES).contains(&b)),
                    Err(e) => {
                        prop_assert_eq!(e.kind(), FailureKind::InvalidArgument);
                        prop_assert!(stress_message_ok(&e, "memory"), "{}", e);
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), FailureKind::InvalidArgument);
                prop_assert!(stress_message_ok(&e, "memory"), "{}", e);
            }
        }
    }

    #[test]
    fn exec_stress_requests_decode_or_are_invalid(
        cpu in stressor_text(CPU_OPTS),
        mem in stressor_text(MEM_OPTS),
        scope in prop_oneof![Just(0i32), any::<i32>()],
        oom in prop_oneof![-1000i32..=1000, any::<i32>()],
        enter in any::<bool>(),
    ) {
        let req = pb::ExecStressRequest {
            scope,
            target: String::new(),
            cpu_stressors: cpu,
            enter_ns: enter,
            memory_stressors: mem,
            oom_score_adj: oom,
        };
        if let Err(st) = decode::stress_request(&req) {
            prop_assert_eq!(st.code(), tonic::Code::InvalidArgument, "{:?}", st);
            prop_assert!(!st.message().is_empty());
        }
        // And the same request as bytes on the wire.
        let back = pb::ExecStressRequest::decode(&req.encode_to_vec()[..]).unwrap();
        prop_assert_eq!(back, req);
    }
}

// ---------------------------------------------------------------------------------------------
// firewall model

fn name_text(max: usize) -> BoxedStrategy<String> {
    near_rare(
        prop_oneof![
            proptest::string::string_regex(&format!("[A-Za-z0-9_.-]{{1,{max}}}")).unwrap(),
            Just("INPUT/abc123".to_string()),
            Just("tgt-3f2a".to_string()),
        ]
        .boxed(),
    )
}

fn set_name() -> BoxedStrategy<String> {
    // A small pool, so chains often name sets that exist (and sometimes not).
    prop_oneof![
        4 => select(&["a", "b", "set-1", "net_tgt", "x.y"][..]).prop_map(str::to_string),
        1 => near_rare("[A-Za-z0-9_.-]{1,31}".boxed()),
    ]
    .boxed()
}

fn cidr_text() -> BoxedStrategy<String> {
    let v4 = (any::<[u8; 4]>(), prop::option::of(0u8..=32)).prop_map(|(a, p)| {
        let ip = std::net::Ipv4Addr::from(a);
        match p {
            Some(p) => format!("{ip}/{p}"),
            None => ip.to_string(),
        }
    });
    let v6 = (any::<[u16; 8]>(), prop::option::of(0u8..=128)).prop_map(|(a, p)| {
        let ip = std::net::Ipv6Addr::from(a);
        match p {
            Some(p) => format!("{ip}/{p}"),
            None => ip.to_string(),
        }
    });
    near_rare(prop_oneof![v4, v6, Just("10.0.0.0/8".to_string())].boxed())
}

fn ports_text() -> BoxedStrategy<String> {
    let item = prop_oneof![
        (1u32..=65535).prop_map(|p| p.to_string()),
        (1u32..=65535, 1u32..=65535).prop_map(|(a, b)| format!("{}:{}", a.min(b), a.max(b))),
        (1u32..=65535).prop_map(|p| format!(":{p}")),
        (1u32..=65535).prop_map(|p| format!("{p}:")),
    ];
    prop_oneof![
        2 => Just(String::new()),
        5 => near_rare(proptest::collection::vec(item, 1..16).prop_map(|v| v.join(",")).boxed()),
    ]
    .boxed()
}

fn flags_text() -> BoxedStrategy<String> {
    const FLAGS: [&str; 6] = ["SYN", "ACK", "FIN", "RST", "URG", "PSH"];
    // The flags that must be set are a subset of the mask, as iptables users write them.
    let valid = (1u8..64, any::<u8>(), any::<bool>()).prop_map(|(mask, comp, lower)| {
        let names = |bits: u8| {
            let v: Vec<&str> = (0..6)
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| FLAGS[i])
                .collect();
            match (bits, v.len()) {
                (0, _) => "NONE".to_string(),
                (63, _) => "ALL".to_string(),
                _ => v.join(","),
            }
        };
        let text = format!("{} {}", names(mask), names(comp & mask));
        if lower {
            text.to_lowercase()
        } else {
            text
        }
    });
    prop_oneof![2 => Just(String::new()), 3 => near_rare(valid.boxed())].boxed()
}

fn protocol_text() -> BoxedStrategy<String> {
    near_rare(
        select(&["", "", "tcp", "tcp", "udp", "icmp", "all", "TCP"][..])
            .prop_map(str::to_string)
            .boxed(),
    )
}

fn target_text() -> BoxedStrategy<String> {
    near_rare(
        select(
            &[
                "DROP",
                "ACCEPT",
                "REJECT",
                "REJECT --reject-with tcp-reset",
                "REJECT --reject-with icmp-host-prohibited",
                "REJECT --reject-with net-prohib",
                "REJECT  --reject-with   icmp-port-unreachable",
            ][..],
        )
        .prop_map(str::to_string)
        .boxed(),
    )
}

fn device_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just(String::new()),
        8 => near_rare(
            prop_oneof![
                select(&["eth0", "eth1", "d0", "veth-ab.12", "lo"][..]).prop_map(str::to_string),
                "[A-Za-z0-9_.-]{1,15}",
            ]
            .boxed()
        ),
        1 => select(&[".", "..", "a\"b", "a b", "eth0:1", "a/b", "sixteen-chars-xx"][..])
            .prop_map(str::to_string),
    ]
    .boxed()
}

fn ipset() -> BoxedStrategy<IpSet> {
    (
        set_name(),
        near_rare(
            select(
                &[
                    "hash:net",
                    "hash:net",
                    "hash:net,port",
                    "hash:net,port",
                    "list:set",
                ][..],
            )
            .prop_map(str::to_string)
            .boxed(),
        ),
        proptest::collection::vec(cidr_text(), 0..5),
        proptest::collection::vec(
            (
                cidr_text(),
                prop_oneof![8 => 1u32..=65535, 1 => any::<u32>()],
            )
                .prop_map(|(cidr, port)| CidrAndPort { cidr, port }),
            0..4,
        ),
        proptest::collection::vec(set_name(), 0..3),
        0..12u8,
    )
        .prop_map(|(name, set_type, cidrs, cps, members, shape)| {
            // Mostly shaped as the type says (so validation gets past the shape check).
            let mut s = IpSet {
                name,
                set_type,
                ..Default::default()
            };
            match (shape, s.set_type.as_str()) {
                (0, _) => {
                    s.cidrs = cidrs;
                    s.cidr_and_ports = cps;
                    s.set_names = members;
                }
                (_, "hash:net,port") => s.cidr_and_ports = cps,
                (_, "list:set") => s.set_names = members,
                _ => s.cidrs = cidrs,
            }
            s
        })
        .boxed()
}

fn chain() -> BoxedStrategy<firewall::Chain> {
    (
        (
            name_text(28),
            any::<bool>(),
            proptest::collection::vec(set_name(), 0..3),
        ),
        (target_text(), protocol_text(), ports_text(), ports_text()),
        (flags_text(), device_text(), 0..30u8),
    )
        .prop_map(
            |(
                (name, input, ipsets),
                (target, mut protocol, mut sp, mut dp),
                (mut tcp_flags, device, coherent),
            )| {
                // Mostly what iptables itself would accept: ports only with tcp/udp, flags only
                // with tcp, tcp-reset only with tcp.
                if coherent > 0 {
                    let p = protocol.to_ascii_lowercase();
                    if target.contains("tcp-re") {
                        protocol = "tcp".into();
                    } else if p != "tcp" && p != "udp" {
                        sp.clear();
                        dp.clear();
                    }
                    if !protocol.eq_ignore_ascii_case("tcp") {
                        tcp_flags.clear();
                    }
                }
                firewall::Chain {
                    name,
                    direction: if input {
                        Direction::Input
                    } else {
                        Direction::Output
                    },
                    ipsets,
                    target,
                    protocol,
                    source_ports: sp,
                    destination_ports: dp,
                    tcp_flags,
                    device,
                }
            },
        )
        .boxed()
}

fn classify() -> BoxedStrategy<Classify> {
    (
        set_name(),
        select(&["", "tcp", "udp", "icmp"][..]).prop_map(str::to_string),
        device_text(),
        any::<u32>(),
    )
        .prop_map(|(ipset, protocol, device, class)| Classify {
            ipset,
            protocol,
            device,
            class,
        })
        .boxed()
}

fn desired_state() -> BoxedStrategy<DesiredState> {
    (
        proptest::collection::vec(ipset(), 0..4),
        proptest::collection::vec(chain(), 0..4),
        proptest::collection::vec(classify(), 0..2),
    )
        .prop_map(|(mut sets, mut chains, classify)| {
            // Names mostly unique, as the controller sends them (the pool makes clashes common).
            let mut seen = std::collections::HashSet::new();
            sets.retain(|s| seen.insert(s.name.clone()));
            let mut seen = std::collections::HashSet::new();
            chains.retain(|c| seen.insert(c.name.clone()));
            DesiredState {
                sets,
                chains,
                classify,
            }
        })
        .boxed()
}

const OWNER: &str = "00000000-0000-4000-8000-000000000001";

fn charset(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') || extra.contains(&b))
}

/// The rendered batch holds only re-printed, validated values: its bytes are from a fixed
/// set, every quoted string is an interface name of the charset, every set and chain name is
/// faultd's prefix plus a name of the charset.
fn check_batch(batch: &str) -> Result<(), TestCaseError> {
    for b in batch.bytes() {
        prop_assert!(
            b.is_ascii_alphanumeric() || b" \t\n_.-/:{},@;=\"&|()".contains(&b),
            "byte {:?} in the batch:\n{}",
            b as char,
            batch
        );
    }
    for (i, quoted) in batch.split('"').enumerate() {
        if i % 2 == 1 {
            prop_assert!(
                !quoted.is_empty() && quoted.len() <= 15 && charset(quoted, b""),
                "quoted {:?}",
                quoted
            );
        }
    }
    for word in batch.split(|c: char| c.is_whitespace() || c == '@') {
        for prefix in ["c_", "v4_", "v6_", "v4port_", "v6port_"] {
            if let Some(rest) = word.strip_prefix(prefix) {
                prop_assert!(charset(rest, b"/"), "name {:?}", word);
            }
        }
    }
    Ok(())
}

fn firewall_rejection(e: &FirewallError) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.kind(), FailureKind::InvalidArgument, "{}", e);
    let invalid = matches!(e, FirewallError::Invalid { .. });
    prop_assert!(invalid, "{:?}", e);
    let msg = e.to_string();
    prop_assert!(msg.starts_with("invalid ") && msg.len() > 10, "{}", msg);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn firewall_parts_validate_or_name_the_field(
        sets in proptest::collection::vec(ipset(), 0..5),
        chains in proptest::collection::vec(chain(), 0..5),
        classes in proptest::collection::vec(classify(), 0..3),
    ) {
        for part in [Part::Sets(sets), Part::Chains(chains), Part::Classify(classes)] {
            if let Err(e) = validate_part(&part) {
                firewall_rejection(&e)?;
            }
        }
    }

    #[test]
    fn firewall_state_compiles_to_validated_text_only(state in desired_state()) {
        let parts_ok = validate_part(&Part::Sets(state.sets.clone())).is_ok()
            && validate_part(&Part::Chains(state.chains.clone())).is_ok()
            && validate_part(&Part::Classify(state.classify.clone())).is_ok();
        match check_references(&state) {
            Ok(()) => {
                let names: Vec<&str> = state.sets.iter().map(|s| s.name.as_str()).collect();
                prop_assert!(state.chains.iter().flat_map(|c| &c.ipsets).all(|s| names.contains(&s.as_str())));
            }
            Err(e) => {
                let missing = matches!(e, FirewallError::MissingIpSet { .. });
                prop_assert!(missing, "{:?}", e);
                prop_assert_eq!(e.kind(), FailureKind::FailedPrecondition);
            }
        }
        match compile(&state) {
            Ok(table) => {
                prop_assert!(parts_ok, "compile accepted what validate_part refused");
                // Independent oracle: every request string that can reach the batch passed
                // its charset.
                for c in &state.chains {
                    prop_assert!(!c.name.is_empty() && c.name.len() <= 28 && charset(&c.name, b"/"));
                    prop_assert!(c.device.len() <= 15 && charset(&c.device, b""));
                }
                for s in &state.sets {
                    prop_assert!(!s.name.is_empty() && s.name.len() <= 31 && charset(&s.name, b""));
                }
                let batch = firewall::render::apply_batch(&table, OWNER).unwrap();
                check_batch(&batch)?;
                let again = compile(&state).unwrap();
                prop_assert_eq!(again, table, "compile is deterministic");
            }
            Err(e) => {
                let invalid = matches!(e, FirewallError::Invalid { .. });
                prop_assert!(!parts_ok || invalid, "{:?}", e);
                firewall_rejection(&e)?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// protobuf decoding (prost, the hand-written pb.Netem) and the server's decoding

/// Arbitrary bytes, and protobuf-shaped bytes (tags, varints, lengths) that get further in.
fn wire_bytes() -> BoxedStrategy<Vec<u8>> {
    let field = (
        1u32..20,
        0u8..6,
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(tag, wt, body)| {
            let mut out = Vec::new();
            let mut key = u64::from((tag << 3) | u32::from(wt));
            while key >= 0x80 {
                out.push(key as u8 | 0x80);
                key >>= 7;
            }
            out.push(key as u8);
            if wt == 2 {
                out.push(body.len() as u8);
            }
            out.extend(body);
            out
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(field, 0..8).prop_map(|f| f.concat()),
    ]
    .boxed()
}

fn pb_netem() -> BoxedStrategy<pb::Netem> {
    netem_args()
        .prop_map(|a| pb::Netem {
            time: a.time,
            jitter: a.jitter,
            delay_corr: a.delay_corr,
            limit: a.limit,
            loss: a.loss,
            loss_corr: a.loss_corr,
            gap: a.gap,
            duplicate: a.duplicate,
            duplicate_corr: a.duplicate_corr,
            reorder: a.reorder,
            reorder_corr: a.reorder_corr,
            corrupt: a.corrupt,
            corrupt_corr: a.corrupt_corr,
            parent: None,
            handle: None,
            rate: a.rate,
        })
        .boxed()
}

fn pb_tc() -> BoxedStrategy<pb::Tc> {
    (
        prop_oneof![Just(0i32), Just(1i32), any::<i32>()],
        prop::option::of(pb_netem()),
        prop::option::of(tbf_args().prop_map(|t| pb::Tbf {
            rate: t.rate,
            limit: t.limit,
            buffer: t.buffer,
            peak_rate: t.peak_rate,
            min_burst: t.min_burst,
        })),
        prop_oneof![3 => Just(String::new()), 1 => set_name()],
        prop_oneof![3 => Just(String::new()), 1 => protocol_text()],
        prop_oneof![2 => Just(String::new()), 1 => near(Just("eth0".to_string()).boxed())],
    )
        .prop_map(|(r#type, netem, tbf, ipset, protocol, device)| pb::Tc {
            r#type,
            netem,
            tbf,
            ipset,
            protocol,
            device,
        })
        .boxed()
}

/// What SetTcs does with decoded rules before it touches anything: plan them.
fn plan_rules(rules: &[TcRule]) -> Result<(), TestCaseError> {
    match qfault::plan(rules) {
        Ok(plans) => {
            for p in &plans {
                prop_assert!(!p.tree.is_empty() && p.tree.len() < 255);
                prop_assert!(p.tree.iter().all(|q| qfault::is_faultd_handle(q.handle)));
            }
        }
        Err(e) => {
            let k = e.kind();
            prop_assert!(
                k == FailureKind::InvalidArgument || k == FailureKind::FailedPrecondition,
                "{:?}: {}",
                k,
                e
            );
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

fn decoded_tcs(tcs: &[pb::Tc]) -> Result<(), TestCaseError> {
    match decode::tc_rules(tcs) {
        Ok(rules) => {
            for r in &rules {
                match &r.kind {
                    TcRuleKind::Netem(a) => {
                        let _ = NetemSpec::from_args(a);
                    }
                    TcRuleKind::Tbf(a) => {
                        let _ = TbfSpec::from_args(a);
                    }
                }
            }
            plan_rules(&rules)?;
        }
        Err(st) => {
            prop_assert_eq!(st.code(), tonic::Code::InvalidArgument);
            prop_assert!(st.message().starts_with("tcs["), "{}", st.message());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn netem_messages_decode_or_fail_cleanly(bytes in wire_bytes()) {
        if let Ok(n) = pb::Netem::decode(&bytes[..]) {
            // Whatever decoded re-encodes to a message that decodes to the same encoding.
            let enc = n.encode_to_vec();
            prop_assert_eq!(enc.len(), n.encoded_len());
            let again = pb::Netem::decode(&enc[..]).unwrap();
            prop_assert_eq!(again.encode_to_vec(), enc);
        }
    }

    #[test]
    fn netem_values_round_trip_the_wire(n in pb_netem()) {
        let enc = n.encode_to_vec();
        let back = pb::Netem::decode(&enc[..]).unwrap();
        prop_assert_eq!(back.encode_to_vec(), enc);
        prop_assert_eq!(&back.time, &n.time);
        prop_assert_eq!(&back.rate, &n.rate);
    }

    #[test]
    fn tcs_requests_decode_plan_or_fail_cleanly(bytes in wire_bytes()) {
        if let Ok(req) = pb::TcsRequest::decode(&bytes[..]) {
            decoded_tcs(&req.tcs)?;
        }
        if let Ok(req) = pb::ExecStressRequest::decode(&bytes[..]) {
            if let Err(st) = decode::stress_request(&req) {
                prop_assert_eq!(st.code(), tonic::Code::InvalidArgument);
            }
        }
        if let Ok(req) = pb::IpSetsRequest::decode(&bytes[..]) {
            if let Err(e) = validate_part(&Part::Sets(decode::ip_sets(&req.ipsets))) {
                firewall_rejection(&e)?;
            }
        }
        if let Ok(req) = pb::IptablesChainsRequest::decode(&bytes[..]) {
            match decode::iptables_chains(&req.chains) {
                Ok(chains) => {
                    if let Err(e) = validate_part(&Part::Chains(chains)) {
                        firewall_rejection(&e)?;
                    }
                }
                Err(st) => prop_assert_eq!(st.code(), tonic::Code::InvalidArgument),
            }
        }
        let _ = faultd::proto::faultd::v1::ApplyFaultRequest::decode(&bytes[..]);
    }

    #[test]
    fn tcs_request_values_plan_or_fail_cleanly(tcs in proptest::collection::vec(pb_tc(), 0..5)) {
        let req = pb::TcsRequest { tcs, ..Default::default() };
        let back = pb::TcsRequest::decode(&req.encode_to_vec()[..]).unwrap();
        prop_assert_eq!(back.encode_to_vec(), req.encode_to_vec());
        decoded_tcs(&back.tcs)?;
    }

    #[test]
    fn many_tc_rules_plan_within_the_handle_range_or_are_refused(
        global in 0usize..300,
        groups in proptest::collection::vec((0usize..20, 1usize..30), 0..18),
        devices in 1usize..3,
    ) {
        // Large requests: up to ~300 chained rules and ~18 ipset groups over a few devices.
        let rule = |delay: usize, ipset: String, dev: usize| TcRule {
            kind: TcRuleKind::Netem(NetemArgs {
                time: NetemTime::Micros(delay as u32 + 1),
                ..Default::default()
            }),
            ipset,
            protocol: String::new(),
            device: format!("eth{}", dev % devices),
        };
        let mut rules: Vec<TcRule> = (0..global).map(|i| rule(i, String::new(), i)).collect();
        for (g, (set, n)) in groups.iter().enumerate() {
            rules.extend((0..*n).map(|i| rule(i, format!("set-{set}"), g)));
        }
        match qfault::plan(&rules) {
            Ok(plans) => {
                for p in &plans {
                    prop_assert!(p.tree.len() < 255);
                    let mut handles: Vec<u32> = p.tree.iter().map(|q| q.handle).collect();
                    handles.sort_unstable();
                    handles.dedup();
                    prop_assert_eq!(handles.len(), p.tree.len(), "handles are unique");
                    prop_assert!(p.tree.iter().all(|q| qfault::is_faultd_handle(q.handle)));
                    // Every parent is the root or a qdisc (or a class of one) of the same tree.
                    for q in &p.tree {
                        prop_assert!(
                            q.parent == TC_H_ROOT
                                || p.tree.iter().any(|o| o.handle == q.parent & 0xFFFF_0000)
                        );
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), FailureKind::InvalidArgument, "{}", e);
                prop_assert!(e.to_string().starts_with("invalid tcs "), "{}", e);
            }
        }
    }

    #[test]
    fn container_ids_and_pod_uids_are_safe_or_refused(
        id in near(
            prop_oneof![
                ("[0-9a-f]{64}", select(&["containerd://", "cri-o://", "docker://"][..]))
                    .prop_map(|(h, p)| format!("{p}{h}")),
                "containerd://[A-Za-z0-9][A-Za-z0-9_.-]{0,130}",
                "(docker|cri-o)://[0-9a-fA-F]{0,130}",
            ]
            .boxed()
        ),
        uid in near("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".boxed()),
    ) {
        match ContainerId::parse(&id) {
            Ok(c) => {
                // What reaches URL paths, gRPC requests and cgroup matching.
                let rest = c.id();
                prop_assert!(!rest.is_empty() && rest.len() <= 128);
                prop_assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
                prop_assert!(!rest.contains(".."));
                prop_assert_eq!(c.to_string(), id);
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), RuntimeErrorKind::InvalidArgument, "{}", e);
                prop_assert!(!e.to_string().is_empty());
            }
        }
        match validate_pod_uid(&uid) {
            Ok(()) => prop_assert!(uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
            Err(e) => prop_assert_eq!(e.kind(), RuntimeErrorKind::InvalidArgument),
        }
    }

    #[test]
    fn ttl_header_parses_or_says_why(s in prop_oneof![duration_text(), hostile()]) {
        if let Err(e) = faultd::duration::parse_duration(&s) {
            prop_assert!(!e.is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// journal replay

fn scratch_root() -> PathBuf {
    if let Some(d) = std::env::var_os("FAULTD_PROPTEST_DIR") {
        return d.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("faultd-prop-")
        .tempdir_in(scratch_root())
        .unwrap()
}

/// A realistic record: a netem fault in one of its phases.
fn record(k: usize) -> FaultRecord<FaultEffect> {
    let spec = NetemSpec::from_args(&NetemArgs {
        time: NetemTime::Text(format!("{}ms", k + 1)),
        ..Default::default()
    })
    .unwrap();
    FaultRecord {
        id: format!("00000000-0000-4000-8000-{k:012x}"),
        kind: "netem".into(),
        target: TargetIdentity {
            container_id: format!("containerd://{k:064x}"),
            pod_uid: "pod \"ü\"\n".into(),
            pid: 100 + k as u32,
            ..Default::default()
        },
        effect: FaultEffect::Qdisc(QdiscFault {
            netns: NetnsRef {
                id: NsId {
                    dev: 4,
                    ino: 4_026_532_000 + k as u64,
                },
                holder_pid: 100 + k as u32,
                host: false,
            },
            device: "eth0".into(),
            tree: vec![Qdisc::netem(TC_H_ROOT, 0xFA01_0000, &spec)],
            prior_root: None,
            description: format!("dev eth0: netem delay {}ms", k + 1),
        }),
        phase: [
            Phase::Intent,
            Phase::Applied,
            Phase::Reverting,
            Phase::Reverted,
        ][k % 4],
        owner: "spiffe://test".into(),
        lease_id: None,
        deadline: None,
        boot_id: "boot".into(),
        daemon_pid: 1,
        daemon_start_ticks: 2,
        created_unix_ms: 1_700_000_000_000 + k as i64,
        applied_unix_ms: 0,
        ended_unix_ms: 0,
        end_reason: None,
        last_error: String::new(),
        instance: None,
        group: format!("tc/4:{k}/eth0"),
    }
}

type Rec = FaultRecord<FaultEffect>;

fn json(r: &Rec) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

/// The bytes of a journal holding `n` records, written by the journal itself.
fn journal_bytes(n: usize) -> (Vec<u8>, Vec<serde_json::Value>) {
    let dir = scratch();
    let (mut j, replayed) = Journal::<Rec>::open(dir.path()).unwrap();
    assert!(replayed.is_empty());
    let recs: Vec<Rec> = (0..n).map(record).collect();
    for r in &recs {
        j.append(r).unwrap();
    }
    drop(j);
    let bytes = std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
    (bytes, recs.iter().map(json).collect())
}

/// Opens a fresh state dir whose journal file holds `bytes`; checks that open is idempotent.
fn replay<T>(bytes: &[u8]) -> Result<Vec<T>, TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let dir = scratch();
    std::fs::write(dir.path().join(JOURNAL_FILE), bytes).unwrap();
    let (j, recs) = match Journal::<T>::open(dir.path()) {
        Ok(x) => x,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            return Err(TestCaseError::fail(format!(
                "open failed on a writable dir: {e}"
            )));
        }
    };
    let rep = j.last_replay().clone();
    let len = std::fs::metadata(dir.path().join(JOURNAL_FILE))
        .unwrap()
        .len();
    if !rep.is_corrupt() && !rep.torn_tail {
        prop_assert_eq!(len, bytes.len() as u64, "a clean journal is left as it was");
    } else {
        prop_assert!(len <= bytes.len() as u64 || rep.is_corrupt());
        for c in &rep.corrupt {
            prop_assert!(!c.reason.is_empty());
            prop_assert!(c.end() <= bytes.len() as u64);
        }
    }
    prop_assert_eq!(j.len(), recs.len());
    drop(j);
    // Replaying the repaired file again finds the same records and nothing to skip.
    let (j2, again) = Journal::<T>::open(dir.path()).unwrap();
    prop_assert!(!j2.last_replay().is_corrupt() && !j2.last_replay().torn_tail);
    prop_assert_eq!(
        again
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect::<Vec<_>>(),
        recs.iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect::<Vec<_>>()
    );
    Ok(recs)
}

/// One byte-level change to a journal file.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<Index>().prop_map(Mutation::Truncate),
        (
            any::<Index>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                select(vec![
                    b"\n".to_vec(),
                    b" ".to_vec(),
                    b"FJ1 ".to_vec(),
                    b"0".to_vec()
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
    .boxed()
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match m {
        Mutation::Flip(i, x) if n > 0 => bytes[i.index(n)] ^= x,
        Mutation::Truncate(i) => bytes.truncate(i.index(n + 1)),
        Mutation::Insert(i, b) => {
            let at = i.index(n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Remove(i, k) if n > 0 => {
            let at = i.index(n);
            bytes.drain(at..(at + k).min(n));
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn journal_replay_of_arbitrary_bytes_never_panics(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(
                prop_oneof![
                    Just(b"FJ1 ".to_vec()),
                    Just(b"\n".to_vec()),
                    Just(b" ".to_vec()),
                    Just(b"{\"id\":\"x\"}".to_vec()),
                    "[0-9a-f]{1,9}".prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..24,
            )
            .prop_map(|v| v.concat()),
        ]
    ) {
        replay::<Rec>(&bytes)?;
        replay::<serde_json::Value>(&bytes)?;
    }

    #[test]
    fn journal_replay_of_a_damaged_journal_keeps_the_valid_records_in_order(
        n in 0usize..6,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (orig, recs) = journal_bytes(n);
        let mut bytes = orig.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let got: Vec<serde_json::Value> = replay::<Rec>(&bytes)?.iter().map(json).collect();
        prop_assert!(got.len() <= recs.len());
        // A corrupt record costs only itself: what is kept is the original records, in order
        // (an ordered subsequence; replay resumes at the next valid record).
        let mut it = recs.iter();
        for g in &got {
            prop_assert!(it.any(|r| r == g), "not an ordered subsequence of the originals");
        }
        // Every intact leading line is kept.
        let same = orig.iter().zip(&bytes).take_while(|(a, b)| a == b).count();
        let intact = orig[..same].iter().filter(|b| **b == b'\n').count();
        prop_assert!(got.len() >= intact, "{} records kept, {} intact lines", got.len(), intact);
        if bytes == orig {
            prop_assert_eq!(got.len(), n);
        }
    }

    #[test]
    fn journal_replay_of_reordered_lines_keeps_only_real_records(
        n in 1usize..6,
        order in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let (orig, recs) = journal_bytes(n);
        let lines: Vec<&[u8]> = orig.split_inclusive(|b| *b == b'\n').collect();
        let bytes: Vec<u8> = order.iter().flat_map(|i| lines[i.index(lines.len())].to_vec()).collect();
        let got = replay::<Rec>(&bytes)?;
        prop_assert_eq!(got.len(), order.len(), "whole lines are whole records");
        for r in &got {
            prop_assert!(recs.contains(&json(r)));
        }
    }
}
