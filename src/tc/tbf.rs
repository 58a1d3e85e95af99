//! tbf: the token-bucket bandwidth fault.
//!
//! [`TbfArgs`] mirrors `pb.Tbf`. Upstream ran `tc qdisc add … tbf rate <rate> burst <buffer>
//! [limit <limit>] [peakrate <peak_rate> mtu <min_burst>]`, so:
//!
//! * `rate` is a tc rate string ([`parse_rate`]);
//! * `buffer` is the bucket size in bytes, `limit` the queue size in bytes (tc requires one of
//!   `limit`/`latency`, and upstream only ever sends `limit`, so 0 is refused like tc refused it);
//! * `peak_rate` is a plain number handed to tc, which reads it as **bits** per second, and
//!   `min_burst` becomes the peak bucket (`mtu`).
//!
//! [`encode_tbf_options`] produces iproute2 6.1's payload byte for byte (goldens
//! `tests/golden/tc/tbf_*.hex`): `TCA_TBF_PARMS` (`tc_tbf_qopt`: rate and peak `tc_ratespec`s with
//! Ethernet link layer, limit, bucket sizes in psched ticks), `TCA_TBF_BURST`, `TCA_TBF_RATE64`
//! when the rate needs 64 bits, `TCA_TBF_RTAB`, then for a peak rate `TCA_TBF_PRATE64`,
//! `TCA_TBF_PBURST` and `TCA_TBF_PTAB`. The kernel ignores the rate tables when the rate spec
//! carries a link layer (it computes its own), but faultd still sends them, computed exactly like
//! tc's `tc_calc_rtable`, so a capture of faultd and a capture of tc are identical.
//!
//! Where tc would silently wrap a 32-bit field (a bucket too large to express in ticks at the
//! given rate, a latency-derived limit above 4 GiB), faultd refuses with `InvalidArgument`.
use std::time::Duration;

use super::nla;
use super::parse::parse_rate;
use super::psched::{c_uint_checked, micros_ceil, rate_table, xmittime_checked};
use super::{Result, TcError};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RTAB: u16 = 2;
const TCA_TBF_PTAB: u16 = 3;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_PRATE64: u16 = 5;
const TCA_TBF_BURST: u16 = 6;
const TCA_TBF_PBURST: u16 = 7;

/// `TC_LINKLAYER_ETHERNET`, what tc assumes unless told `linklayer atm`.
const LINKLAYER_ETHERNET: u8 = 1;

/// The `pb.Tbf` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TbfArgs {
    pub rate: String,
    pub limit: u32,
    pub buffer: u32,
    pub peak_rate: u64,
    pub min_burst: u32,
}

/// How the queue length is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TbfLimit {
    /// Queue size in bytes (`limit`).
    Bytes(u32),
    /// Maximum queueing delay (`latency`); tc converts it to bytes.
    Latency(Duration),
}

/// Peak-rate bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfPeak {
    /// Bytes per second.
    pub rate: u64,
    /// Peak bucket size in bytes (`mtu`/`minburst`).
    pub mtu: u32,
}

/// A tbf configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfSpec {
    /// Bytes per second.
    pub rate: u64,
    /// Bucket size in bytes.
    pub burst: u32,
    pub limit: TbfLimit,
    pub peak: Option<TbfPeak>,
}

impl TbfSpec {
    /// Validates request fields with upstream's meaning (see the module docs).
    pub fn from_args(a: &TbfArgs) -> Result<TbfSpec> {
        let rate = parse_rate(&a.rate).map_err(|e| match e {
            TcError::InvalidArgument { reason, .. } => {
                TcError::invalid("tbf.rate", a.rate.as_str(), reason)
            }
            other => other,
        })?;
        let peak = if a.peak_rate > 0 {
            // tc's get_rate64 on the decimal string: bits → bytes, through a double.
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let bytes = (a.peak_rate as f64 / 8.0) as u64;
            if bytes == 0 {
                return Err(TcError::invalid(
                    "tbf.peak_rate",
                    a.peak_rate.to_string(),
                    "below 8 bit/s",
                ));
            }
            Some(TbfPeak {
                rate: bytes,
                mtu: a.min_burst,
            })
        } else {
            None
        };
        let spec = TbfSpec {
            rate,
            burst: a.buffer,
            limit: TbfLimit::Bytes(a.limit),
            peak,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// tc's own checks: rate, burst and limit/latency are mandatory, and a peak rate needs an mtu.
    pub fn validate(&self) -> Result<()> {
        if self.rate == 0 {
            return Err(TcError::invalid("tbf.rate", "0", "must be positive"));
        }
        if self.burst == 0 {
            return Err(TcError::invalid("tbf.buffer", "0", "must be positive"));
        }
        match self.limit {
            TbfLimit::Bytes(0) => {
                return Err(TcError::invalid("tbf.limit", "0", "must be positive"))
            }
            TbfLimit::Latency(d) if d.is_zero() => {
                return Err(TcError::invalid("tbf.latency", "0", "must be positive"))
            }
            _ => {}
        }
        if let Some(p) = self.peak {
            if p.rate == 0 {
                return Err(TcError::invalid("tbf.peak_rate", "0", "must be positive"));
            }
            if p.mtu == 0 {
                return Err(TcError::invalid(
                    "tbf.min_burst",
                    "0",
                    "required with a peak rate",
                ));
            }
        }
        Ok(())
    }
}

/// `struct tc_ratespec` as tc fills it after `tc_calc_rtable`.
fn ratespec(cell_log: u8, rate: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = cell_log;
    b[1] = LINKLAYER_ETHERNET;
    // b[2..4]: overhead = 0. b[4..6]: cell_align = -1. b[6..8]: mpu = 0.
    b[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    b[8..12].copy_from_slice(&rate.to_ne_bytes());
    b
}

fn table_bytes(t: &[u32; 256]) -> Vec<u8> {
    nla::u32s(t)
}

/// The `TCA_OPTIONS` payload for a tbf qdisc, as iproute2 6.1 builds it.
pub fn encode_tbf_options(spec: &TbfSpec) -> Result<Vec<u8>> {
    spec.validate()?;
    let rate32 = u32::try_from(spec.rate).unwrap_or(u32::MAX);
    let peak32 = spec.peak.map(|p| u32::try_from(p.rate).unwrap_or(u32::MAX));
    let mtu = spec.peak.map_or(0, |p| p.mtu);

    let limit = match spec.limit {
        TbfLimit::Bytes(b) => b,
        TbfLimit::Latency(d) => {
            let us = u32::try_from(micros_ceil(d))
                .map_err(|_| TcError::invalid("tbf.latency", format!("{d:?}"), "too large"))?;
            #[allow(clippy::cast_precision_loss)]
            let mut lim = spec.rate as f64 * f64::from(us) / 1_000_000.0 + f64::from(spec.burst);
            if let Some(p) = spec.peak {
                #[allow(clippy::cast_precision_loss)]
                let lim2 = p.rate as f64 * f64::from(us) / 1_000_000.0 + f64::from(p.mtu);
                if lim2 < lim {
                    lim = lim2;
                }
            }
            c_uint_checked(lim).ok_or_else(|| {
                TcError::invalid(
                    "tbf.latency",
                    format!("{d:?}"),
                    "implies a queue above 4 GiB",
                )
            })?
        }
    };

    let (rtab, cell_log) = rate_table(rate32, mtu);
    let buffer = xmittime_checked(u64::from(rate32), spec.burst).ok_or_else(|| {
        TcError::invalid(
            "tbf.buffer",
            spec.burst.to_string(),
            "too large for the rate",
        )
    })?;
    let (peak_spec, mtu_ticks, ptab) = match peak32 {
        Some(p32) => {
            let (ptab, pcell) = rate_table(p32, mtu);
            let ticks = xmittime_checked(u64::from(p32), mtu).ok_or_else(|| {
                TcError::invalid(
                    "tbf.min_burst",
                    mtu.to_string(),
                    "too large for the peak rate",
                )
            })?;
            (ratespec(pcell, p32), ticks, Some(ptab))
        }
        None => ([0u8; 12], 0, None),
    };

    // struct tc_tbf_qopt { rate, peakrate, limit, buffer, mtu }
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(cell_log, rate32));
    parms.extend_from_slice(&peak_spec);
    parms.extend_from_slice(&nla::u32s(&[limit, buffer, mtu_ticks]));

    let mut out = Vec::with_capacity(1100);
    nla::put(&mut out, TCA_TBF_PARMS, &parms);
    nla::put_u32(&mut out, TCA_TBF_BURST, spec.burst);
    if u32::try_from(spec.rate).is_err() {
        nla::put_u64(&mut out, TCA_TBF_RATE64, spec.rate);
    }
    nla::put(&mut out, TCA_TBF_RTAB, &table_bytes(&rtab));
    if let (Some(p), Some(ptab)) = (spec.peak, ptab) {
        if u32::try_from(p.rate).is_err() {
            nla::put_u64(&mut out, TCA_TBF_PRATE64, p.rate);
        }
        nla::put_u32(&mut out, TCA_TBF_PBURST, p.mtu);
        nla::put(&mut out, TCA_TBF_PTAB, &table_bytes(&ptab));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_args_follows_upstream_argv() {
        let a = TbfArgs {
            rate: "1mbps".into(),
            limit: 20_000,
            buffer: 10_000,
            peak_rate: 16_000_000,
            min_burst: 1500,
        };
        let s = TbfSpec::from_args(&a).unwrap();
        assert_eq!(s.rate, 1_000_000, "mbps = megabytes per second");
        assert_eq!(
            s.peak,
            Some(TbfPeak {
                rate: 2_000_000,
                mtu: 1500
            }),
            "peak_rate is bits"
        );
        assert_eq!(s.limit, TbfLimit::Bytes(20_000));
    }

    #[test]
    fn refuses_what_tc_refuses() {
        let ok = TbfArgs {
            rate: "1mbit".into(),
            limit: 1000,
            buffer: 1000,
            ..Default::default()
        };
        assert!(TbfSpec::from_args(&ok).is_ok());
        for bad in [
            TbfArgs {
                rate: String::new(),
                ..ok.clone()
            },
            TbfArgs {
                rate: "0bit".into(),
                ..ok.clone()
            },
            TbfArgs {
                rate: "-1mbit".into(),
                ..ok.clone()
            },
            TbfArgs {
                buffer: 0,
                ..ok.clone()
            },
            TbfArgs {
                limit: 0,
                ..ok.clone()
            },
            TbfArgs {
                peak_rate: 8000,
                min_burst: 0,
                ..ok.clone()
            },
            TbfArgs {
                peak_rate: 7,
                min_burst: 1500,
                ..ok.clone()
            },
        ] {
            let e = TbfSpec::from_args(&bad).unwrap_err();
            assert!(matches!(e, TcError::InvalidArgument { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn refuses_where_tc_would_wrap() {
        let s = TbfSpec {
            rate: 125,
            burst: 1 << 30,
            limit: TbfLimit::Bytes(1000),
            peak: None,
        };
        assert!(encode_tbf_options(&s).is_err());
        let s = TbfSpec {
            rate: 1 << 40,
            burst: 1000,
            limit: TbfLimit::Latency(Duration::from_secs(10)),
            peak: None,
        };
        assert!(encode_tbf_options(&s).is_err());
    }
}
