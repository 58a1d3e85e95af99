//! netem: delay, jitter, loss, duplication, reordering, corruption and rate faults.
//!
//! [`NetemArgs`] mirrors the `pb.Netem` fields; [`NetemSpec::from_args`] validates them and
//! applies the Go daemon's `convertNetemToArgs` rules, so the spec holds exactly what upstream
//! would have passed to `tc`:
//!
//! * durations are Go durations (or legacy microseconds, see [`NetemTime`]); a zero delay drops
//!   jitter, delay correlation and the whole reorder group (netem cannot reorder without delay);
//! * a zero jitter drops the delay correlation;
//! * a zero loss/duplicate/reorder/corrupt probability drops its correlation (and reorder's gap);
//! * `limit` 0 means tc's default of 1000 packets; `rate` "" means no rate limit.
//!
//! Values that upstream silently dropped or mangled are refused instead: negative, NaN or >100
//! percentages, malformed durations or rates.
//!
//! [`encode_netem_options`] then produces the `TCA_OPTIONS` payload iproute2 6.1 sends for that
//! command line, byte for byte (goldens in `tests/golden/tc/netem_*.hex`): a `tc_netem_qopt`
//! (latency and jitter in psched ticks) followed by `TCA_NETEM_CORR`, `REORDER`, `CORRUPT`,
//! `RATE64`, `RATE`, in that order and only when tc would add them. Two tc quirks are reproduced
//! on purpose, because they define what the Go daemon actually programmed:
//!
//! * tc only sends `TCA_NETEM_CORR` when a delay, loss, reorder or corrupt correlation was given;
//!   a duplicate correlation on its own is parsed and then **dropped** (the kernel sees 0);
//! * a reorder probability without a gap gets `gap = 1`.
//!
//! One deliberate extension: tc 6.1 refuses delays/jitters above ~274.88 s (`u32::MAX` ticks).
//! faultd instead saturates the 32-bit tick field and adds `TCA_NETEM_LATENCY64` /
//! `TCA_NETEM_JITTER64` (nanoseconds), which kernels ≥ 4.15 prefer over the tick fields.
use std::time::Duration;

use super::nla;
use super::parse::{parse_rate, NetemTime, Percent};
use super::psched::{duration_ticks, micros_ceil};
use super::Result;

const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;

/// tc's default queue limit, in packets.
pub const DEFAULT_LIMIT: u32 = 1000;

/// The `pb.Netem` fields faultd uses (`parent`/`handle` are never set by controllers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetemArgs {
    pub time: NetemTime,
    pub jitter: NetemTime,
    pub delay_corr: f32,
    pub limit: u32,
    pub loss: f32,
    pub loss_corr: f32,
    pub gap: u32,
    pub duplicate: f32,
    pub duplicate_corr: f32,
    pub reorder: f32,
    pub reorder_corr: f32,
    pub corrupt: f32,
    pub corrupt_corr: f32,
    /// A tc rate string (`"8000bit"`, `"1mbps"`); empty means none.
    pub rate: String,
}

/// A validated netem configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetemSpec {
    pub delay: Duration,
    pub jitter: Duration,
    pub delay_corr: Percent,
    pub loss: Percent,
    pub loss_corr: Percent,
    pub duplicate: Percent,
    pub duplicate_corr: Percent,
    pub reorder: Percent,
    pub reorder_corr: Percent,
    /// Reorder gap in packets (0 = tc's default of 1 when reordering).
    pub gap: u32,
    pub corrupt: Percent,
    pub corrupt_corr: Percent,
    /// Rate limit in bytes per second.
    pub rate: Option<u64>,
    /// Queue limit in packets; `None` = [`DEFAULT_LIMIT`].
    pub limit: Option<u32>,
}

impl NetemSpec {
    /// Validates request fields and applies upstream's conversion rules (see the module docs).
    pub fn from_args(a: &NetemArgs) -> Result<NetemSpec> {
        let spec = NetemSpec {
            delay: a.time.to_duration("netem.time")?,
            jitter: a.jitter.to_duration("netem.jitter")?,
            delay_corr: Percent::new("netem.delay_corr", a.delay_corr)?,
            loss: Percent::new("netem.loss", a.loss)?,
            loss_corr: Percent::new("netem.loss_corr", a.loss_corr)?,
            duplicate: Percent::new("netem.duplicate", a.duplicate)?,
            duplicate_corr: Percent::new("netem.duplicate_corr", a.duplicate_corr)?,
            reorder: Percent::new("netem.reorder", a.reorder)?,
            reorder_corr: Percent::new("netem.reorder_corr", a.reorder_corr)?,
            gap: a.gap,
            corrupt: Percent::new("netem.corrupt", a.corrupt)?,
            corrupt_corr: Percent::new("netem.corrupt_corr", a.corrupt_corr)?,
            rate: if a.rate.is_empty() {
                None
            } else {
                Some(parse_rate(&a.rate).map_err(|e| match e {
                    super::TcError::InvalidArgument { reason, .. } => {
                        super::TcError::invalid("netem.rate", a.rate.as_str(), reason)
                    }
                    other => other,
                })?)
            },
            limit: (a.limit > 0).then_some(a.limit),
        };
        Ok(spec.normalized())
    }

    /// The spec with upstream's dropping rules applied. A percentage that prints as `0.000000`
    /// (below 0.0000005 %) counts as absent, which is what it is to the kernel.
    pub fn normalized(&self) -> NetemSpec {
        let given = |p: Percent| if p.to_kernel() == 0 { Percent::ZERO } else { p };
        let mut s = self.clone();
        for p in [
            &mut s.delay_corr,
            &mut s.loss,
            &mut s.loss_corr,
            &mut s.duplicate,
            &mut s.duplicate_corr,
            &mut s.reorder,
            &mut s.reorder_corr,
            &mut s.corrupt,
            &mut s.corrupt_corr,
        ] {
            *p = given(*p);
        }
        if micros_ceil(s.delay) == 0 {
            s.delay = Duration::ZERO;
            s.jitter = Duration::ZERO;
            s.reorder = Percent::ZERO;
        }
        if micros_ceil(s.jitter) == 0 {
            s.jitter = Duration::ZERO;
            s.delay_corr = Percent::ZERO;
        }
        if s.reorder.is_zero() {
            s.reorder_corr = Percent::ZERO;
            s.gap = 0;
        }
        for (p, c) in [
            (s.loss, &mut s.loss_corr),
            (s.duplicate, &mut s.duplicate_corr),
            (s.corrupt, &mut s.corrupt_corr),
        ] {
            if p.is_zero() {
                *c = Percent::ZERO;
            }
        }
        s
    }

    /// The `tc qdisc … netem` arguments the Go daemon would have run for this spec (for logs and
    /// for the golden tests, whose captures were made from exactly these command lines). The rate
    /// is rendered as `<bits>bit`, which tc parses to the same value as the original string.
    pub fn tc_args(&self) -> Vec<String> {
        let s = self.normalized();
        let mut args = Vec::new();
        let pct = |p: Percent| format!("{:.6}", p.get());
        if !s.delay.is_zero() {
            args.extend(["delay".to_string(), tc_duration(s.delay)]);
            if !s.jitter.is_zero() {
                args.push(tc_duration(s.jitter));
                if !s.delay_corr.is_zero() {
                    args.push(pct(s.delay_corr));
                }
            }
            if !s.reorder.is_zero() {
                args.extend(["reorder".to_string(), pct(s.reorder)]);
                if !s.reorder_corr.is_zero() {
                    args.push(pct(s.reorder_corr));
                }
                if s.gap > 0 {
                    args.extend(["gap".to_string(), s.gap.to_string()]);
                }
            }
        }
        if let Some(limit) = s.limit {
            args.extend(["limit".to_string(), limit.to_string()]);
        }
        for (name, p, c) in [
            ("loss", s.loss, s.loss_corr),
            ("duplicate", s.duplicate, s.duplicate_corr),
            ("corrupt", s.corrupt, s.corrupt_corr),
        ] {
            if !p.is_zero() {
                args.extend([name.to_string(), pct(p)]);
                if !c.is_zero() {
                    args.push(pct(c));
                }
            }
        }
        if let Some(rate) = s.rate {
            args.extend(["rate".to_string(), format!("{}bit", u128::from(rate) * 8)]);
        }
        args
    }
}

/// Upstream's `formatTcDuration`: whole seconds, else whole milliseconds, else microseconds
/// rounded up.
fn tc_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{}us", micros_ceil(d))
    }
}

/// Ticks for the 32-bit qopt field plus, when they do not fit, the nanoseconds for the 64-bit
/// attribute.
fn time_fields(d: Duration) -> (u32, Option<i64>) {
    match duration_ticks(d) {
        Some(t) => (t, None),
        None => {
            let ns = micros_ceil(d).saturating_mul(1000);
            (u32::MAX, Some(i64::try_from(ns).unwrap_or(i64::MAX)))
        }
    }
}

/// The `TCA_OPTIONS` payload for a netem qdisc (see the module docs for the exact layout).
pub fn encode_netem_options(spec: &NetemSpec) -> Vec<u8> {
    let s = spec.normalized();
    let (latency, latency64) = time_fields(s.delay);
    let (jitter, jitter64) = time_fields(s.jitter);
    let reordering = !s.reorder.is_zero();
    let gap = match (reordering, s.gap) {
        (false, _) => 0,
        (true, 0) => 1,
        (true, g) => g,
    };
    // struct tc_netem_qopt { latency, limit, loss, gap, duplicate, jitter }
    let mut out = nla::u32s(&[
        latency,
        s.limit.unwrap_or(DEFAULT_LIMIT),
        s.loss.to_kernel(),
        gap,
        s.duplicate.to_kernel(),
        jitter,
    ]);
    if let Some(ns) = latency64 {
        nla::put(&mut out, TCA_NETEM_LATENCY64, &ns.to_ne_bytes());
    }
    if let Some(ns) = jitter64 {
        nla::put(&mut out, TCA_NETEM_JITTER64, &ns.to_ne_bytes());
    }
    // tc counts a correlation as "present" for delay, loss, reorder and corrupt, not duplicate.
    let corr_present = !s.delay_corr.is_zero()
        || !s.loss_corr.is_zero()
        || !s.reorder_corr.is_zero()
        || !s.corrupt_corr.is_zero();
    if corr_present {
        // struct tc_netem_corr { delay_corr, loss_corr, dup_corr }
        let corr = [s.delay_corr, s.loss_corr, s.duplicate_corr].map(Percent::to_kernel);
        nla::put(&mut out, TCA_NETEM_CORR, &nla::u32s(&corr));
    }
    if reordering {
        // struct tc_netem_reorder { probability, correlation }
        let r = [s.reorder, s.reorder_corr].map(Percent::to_kernel);
        nla::put(&mut out, TCA_NETEM_REORDER, &nla::u32s(&r));
    }
    if !s.corrupt.is_zero() {
        // struct tc_netem_corrupt { probability, correlation }
        let c = [s.corrupt, s.corrupt_corr].map(Percent::to_kernel);
        nla::put(&mut out, TCA_NETEM_CORRUPT, &nla::u32s(&c));
    }
    if let Some(rate) = s.rate {
        let rate32 = match u32::try_from(rate) {
            Ok(r) => r,
            Err(_) => {
                nla::put_u64(&mut out, TCA_NETEM_RATE64, rate);
                u32::MAX
            }
        };
        // struct tc_netem_rate { rate, packet_overhead, cell_size, cell_overhead }
        nla::put(&mut out, TCA_NETEM_RATE, &nla::u32s(&[rate32, 0, 0, 0]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::TcError;

    fn pct(v: f32) -> Percent {
        Percent::new("t", v).unwrap()
    }

    #[test]
    fn upstream_dropping_rules() {
        let a = NetemArgs {
            jitter: NetemTime::Text("10ms".into()),
            delay_corr: 25.0,
            reorder: 5.0,
            reorder_corr: 10.0,
            gap: 3,
            loss_corr: 50.0,
            duplicate_corr: 50.0,
            corrupt_corr: 50.0,
            ..Default::default()
        };
        let s = NetemSpec::from_args(&a).unwrap();
        assert_eq!(s, NetemSpec::default());
        assert!(s.tc_args().is_empty());

        let a = NetemArgs {
            time: NetemTime::Text("1s".into()),
            delay_corr: 25.0,
            ..Default::default()
        };
        assert_eq!(NetemSpec::from_args(&a).unwrap().tc_args(), ["delay", "1s"]);
    }

    #[test]
    fn tc_args_match_upstream_tests() {
        // Expected strings from chaos-mesh pkg/chaosdaemon/tc_server_test.go (PR #4546).
        let args = |a: NetemArgs| NetemSpec::from_args(&a).unwrap().tc_args().join(" ");
        let t = |s: &str| NetemTime::Text(s.to_string());
        assert_eq!(
            args(NetemArgs {
                time: t("1000ms"),
                ..Default::default()
            }),
            "delay 1s"
        );
        assert_eq!(
            args(NetemArgs {
                time: t("1000us"),
                jitter: t("10000ns"),
                delay_corr: 25.0,
                ..Default::default()
            }),
            "delay 1ms 10us 25.000000"
        );
        assert_eq!(
            args(NetemArgs {
                time: t("1m30s"),
                ..Default::default()
            }),
            "delay 90s"
        );
        assert_eq!(
            args(NetemArgs {
                time: t("1500ns"),
                ..Default::default()
            }),
            "delay 2us"
        );
        assert_eq!(
            args(NetemArgs {
                time: t("0.5s"),
                ..Default::default()
            }),
            "delay 500ms"
        );
        for zero in ["", "0ms", "0s", "0us", "0ns"] {
            assert_eq!(
                args(NetemArgs {
                    time: t(zero),
                    ..Default::default()
                }),
                ""
            );
        }
        assert_eq!(
            args(NetemArgs {
                limit: 1000,
                ..Default::default()
            }),
            "limit 1000"
        );
        assert_eq!(
            args(NetemArgs {
                loss: 100.0,
                ..Default::default()
            }),
            "loss 100.000000"
        );
        assert_eq!(
            args(NetemArgs {
                loss: 50.0,
                loss_corr: 12.0,
                ..Default::default()
            }),
            "loss 50.000000 12.000000"
        );
        assert_eq!(
            args(NetemArgs {
                time: t("1000ms"),
                jitter: t("10000ms"),
                delay_corr: 25.0,
                reorder: 5.0,
                reorder_corr: 10.0,
                gap: 10,
                ..Default::default()
            }),
            "delay 1s 10s 25.000000 reorder 5.000000 10.000000 gap 10"
        );
        assert_eq!(
            args(NetemArgs {
                rate: "10mbit".into(),
                ..Default::default()
            }),
            "rate 10000000bit"
        );
    }

    #[test]
    fn invalid_args_are_invalid_argument() {
        let bad = [
            NetemArgs {
                time: NetemTime::Text("-1s".into()),
                ..Default::default()
            },
            NetemArgs {
                time: NetemTime::Text("1000".into()),
                ..Default::default()
            },
            NetemArgs {
                jitter: NetemTime::Text("not a duration".into()),
                ..Default::default()
            },
            NetemArgs {
                loss: f32::NAN,
                ..Default::default()
            },
            NetemArgs {
                loss: -1.0,
                ..Default::default()
            },
            NetemArgs {
                corrupt_corr: 100.5,
                ..Default::default()
            },
            NetemArgs {
                rate: "fast".into(),
                ..Default::default()
            },
            NetemArgs {
                rate: "10%".into(),
                ..Default::default()
            },
        ];
        for a in bad {
            let e = NetemSpec::from_args(&a).unwrap_err();
            assert!(matches!(e, TcError::InvalidArgument { .. }), "{a:?}: {e}");
            assert_eq!(e.class(), crate::tc::TcErrorClass::InvalidArgument);
        }
    }

    #[test]
    fn legacy_microseconds_encode_like_strings() {
        let legacy = NetemArgs {
            time: NetemTime::Micros(100_000),
            jitter: NetemTime::Micros(10_000),
            ..Default::default()
        };
        let modern = NetemArgs {
            time: NetemTime::Text("100ms".into()),
            jitter: NetemTime::Text("10ms".into()),
            ..Default::default()
        };
        assert_eq!(
            encode_netem_options(&NetemSpec::from_args(&legacy).unwrap()),
            encode_netem_options(&NetemSpec::from_args(&modern).unwrap())
        );
    }

    #[test]
    fn delays_beyond_tc_range_use_64bit_attributes() {
        let s = NetemSpec {
            delay: Duration::from_secs(300),
            jitter: Duration::from_secs(1),
            ..Default::default()
        };
        let b = encode_netem_options(&s);
        assert_eq!(&b[0..4], &u32::MAX.to_ne_bytes(), "qopt latency saturates");
        assert_eq!(
            &b[20..24],
            &15_625_000u32.to_ne_bytes(),
            "jitter fits in ticks"
        );
        assert_eq!(b.len(), 24 + 12);
        assert_eq!(&b[24..28], &[12, 0, TCA_NETEM_LATENCY64 as u8, 0]);
        assert_eq!(&b[28..36], &300_000_000_000i64.to_ne_bytes());

        let s = NetemSpec {
            delay: Duration::MAX,
            jitter: Duration::MAX,
            ..Default::default()
        };
        let b = encode_netem_options(&s);
        assert_eq!(b.len(), 24 + 12 + 12);
        assert_eq!(&b[40..48], &i64::MAX.to_ne_bytes());
    }

    #[test]
    fn hand_built_specs_encode_like_tc_would_run_them() {
        // Reorder without delay is dropped (tc would refuse it); gap without reorder too.
        let s = NetemSpec {
            reorder: pct(10.0),
            gap: 4,
            loss: pct(1.0),
            ..Default::default()
        };
        let plain = NetemSpec {
            loss: pct(1.0),
            ..Default::default()
        };
        assert_eq!(encode_netem_options(&s), encode_netem_options(&plain));
    }
}
