//! Parsers for the strings and numbers the Chaos Mesh contract carries for tc faults.
//!
//! Each parser follows the grammar of the program the Go chaos-daemon handed the value to, so a
//! value means the same thing to faultd as it did upstream:
//!
//! * [`parse_go_duration`]: Go's `time.ParseDuration` (what upstream's `convertNetemToArgs`
//!   applies to `Netem.time`/`jitter`), restricted to non-negative results.
//! * [`parse_rate`]: iproute2's `get_rate64` (upstream passes `Netem.rate`/`Tbf.rate` to `tc`
//!   verbatim). A plain number is **bits** per second; `bps` is **bytes** per second (it matches
//!   tc's `Bps` case-insensitively), `kbit` = 1000 bit/s, `kibit` = 1024 bit/s, `mbps` = 10^6
//!   bytes/s, and so on. The result is in bytes per second, truncated like tc does.
//! * [`parse_size`]: iproute2's `get_size` (tbf `burst`/`limit`): a plain number is bytes, `k`/`kb`
//!   = 1024, `m`/`mb` = 1024², `g`/`gb` = 1024³, `kbit`/`mbit`/`gbit` = 1024ⁿ/8.
//! * [`Percent`]: a probability in percent, `0..=100`.
//!
//! Deliberate restrictions compared to C's `strtod` (which tc uses for numbers): no leading
//! whitespace, no sign, no hexadecimal, no `inf`/`nan`; only ASCII decimal digits. tc's
//! percentage-of-device-speed rates (`"10%"`) are refused: they need the device speed, and no
//! Chaos Mesh controller sends them.
use std::time::Duration;

use super::{Result, TcError};

/// Parses a Go duration (`"100ms"`, `"1.5s"`, `"1m30s"`, `".5h"`, `"0"`) exactly like Go's
/// `time.ParseDuration`, including its nanosecond truncation of fractions, and refuses negative
/// results. Units: `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`, `m`, `h`. A unit is
/// required on every number except a lone `"0"`. The maximum is `i64::MAX` nanoseconds (~292
/// years), as in Go. `"-0"` and `"+1s"` are accepted because Go accepts them and the result is
/// not negative.
pub fn parse_go_duration(s: &str) -> Result<Duration> {
    let bad = |reason: &str| TcError::invalid("duration", s, reason);
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty duration"));
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        // [0-9]*
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, r) = rest.split_at(int_len);
        rest = r;
        let mut v: u64 = 0;
        for d in int_digits.bytes() {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(|| bad("value overflows"))?;
        }
        // (\.[0-9]*)?
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut has_frac_digits = false;
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            let (frac_digits, r2) = r.split_at(frac_len);
            rest = r2;
            has_frac_digits = frac_len > 0;
            let mut overflow = false;
            for d in frac_digits.bytes() {
                // Go's leadingFraction: stop accumulating once more digits cannot matter.
                if overflow || frac > LIMIT / 10 {
                    overflow = true;
                    continue;
                }
                let y = frac * 10 + u64::from(d - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = y;
                scale *= 10.0;
            }
        }
        if int_len == 0 && !has_frac_digits {
            return Err(bad("expected a number"));
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(bad("missing unit"));
        }
        let (unit_str, r) = rest.split_at(unit_len);
        rest = r;
        let unit: u64 = match unit_str {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad("unknown unit")),
        };
        if v > LIMIT / unit {
            return Err(bad("value overflows"));
        }
        v *= unit;
        if frac > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale)).
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let f = (frac as f64 * (unit as f64 / scale)) as u64;
            v = v
                .checked_add(f)
                .filter(|v| *v <= LIMIT)
                .ok_or_else(|| bad("value overflows"))?;
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(|| bad("value overflows"))?;
    }
    if neg && total != 0 {
        return Err(bad("negative duration"));
    }
    if total > i64::MAX as u64 {
        return Err(bad("value overflows"));
    }
    Ok(Duration::from_nanos(total))
}

/// Splits a leading unsigned decimal floating-point number (the subset of `strtod` syntax faultd
/// accepts: `12`, `1.5`, `.5`, `5.`, `1e3`, `2.5E-1`) from its suffix.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut mantissa_digits = i;
    if b.get(i) == Some(&b'.') {
        let frac = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        mantissa_digits += frac;
        i += 1 + frac;
    }
    if mantissa_digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp > 0 {
            i = j + exp;
        }
    }
    let (num, rest) = s.split_at(i);
    num.parse::<f64>().ok().map(|v| (v, rest))
}

/// iproute2's rate suffixes (`lib/utils_math.c`), matched case-insensitively, in bits.
const RATE_SUFFIXES: &[(&str, f64)] = &[
    ("bit", 1.),
    ("kibit", 1024.),
    ("kbit", 1000.),
    ("mibit", 1024. * 1024.),
    ("mbit", 1_000_000.),
    ("gibit", 1024. * 1024. * 1024.),
    ("gbit", 1_000_000_000.),
    ("tibit", 1024. * 1024. * 1024. * 1024.),
    ("tbit", 1_000_000_000_000.),
    ("bps", 8.),
    ("kibps", 8. * 1024.),
    ("kbps", 8000.),
    ("mibps", 8. * 1024. * 1024.),
    ("mbps", 8_000_000.),
    ("gibps", 8. * 1024. * 1024. * 1024.),
    ("gbps", 8_000_000_000.),
    ("tibps", 8. * 1024. * 1024. * 1024. * 1024.),
    ("tbps", 8_000_000_000_000.),
];

/// Parses a tc rate like iproute2 6.1's `get_rate64` and returns **bytes per second**.
///
/// `"8000bit"` → 1000, `"1kbit"` → 125, `"1mbps"` → 1 000 000, `"100bps"` → 100, `"8000"` → 1000.
pub fn parse_rate(s: &str) -> Result<u64> {
    let bad = |reason: &str| TcError::invalid("rate", s, reason);
    let (mut bits, suffix) = split_number(s).ok_or_else(|| bad("expected a number"))?;
    if !suffix.is_empty() {
        let (_, scale) = RATE_SUFFIXES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(suffix))
            .ok_or_else(|| bad("unknown unit"))?;
        bits *= scale;
    }
    let bytes = bits / 8.;
    // 2^64 as f64; `as u64` below truncates toward zero like C's conversion.
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(bad("value overflows"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// Parses a tc size like iproute2 6.1's `get_size`, in bytes.
pub fn parse_size(s: &str) -> Result<u32> {
    let bad = |reason: &str| TcError::invalid("size", s, reason);
    let (mut sz, suffix) = split_number(s).ok_or_else(|| bad("expected a number"))?;
    let scale: f64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.,
        "k" | "kb" => 1024.,
        "m" | "mb" => 1024. * 1024.,
        "g" | "gb" => 1024. * 1024. * 1024.,
        "kbit" => 128.,
        "mbit" => 131_072.,
        "gbit" => 134_217_728.,
        _ => return Err(bad("unknown unit")),
    };
    sz *= scale;
    if !sz.is_finite() || sz >= 4_294_967_296.0 {
        return Err(bad("value overflows"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(sz as u32)
}

/// A probability in percent, always within `0.0..=100.0` and never NaN.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f32);

impl Percent {
    pub const ZERO: Percent = Percent(0.0);

    /// Validates a percentage from a request (`field` names it in the error).
    pub fn new(field: &'static str, v: f32) -> Result<Percent> {
        if v.is_nan() {
            return Err(TcError::invalid(field, v.to_string(), "not a number"));
        }
        if !(0.0..=100.0).contains(&v) {
            return Err(TcError::invalid(
                field,
                v.to_string(),
                "must be within 0..=100 percent",
            ));
        }
        Ok(Percent(v))
    }

    pub fn get(self) -> f32 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }

    /// The kernel's fixed-point probability (`0` = never, `u32::MAX` = always), computed exactly
    /// as the Go daemon + iproute2 pipeline does: Go prints the `float32` with `%f` (6 decimals,
    /// ties to even), tc parses that with `strtod`, divides by 100 and applies
    /// `rint(p * UINT32_MAX)` (ties to even).
    pub fn to_kernel(self) -> u32 {
        let printed = format!("{:.6}", self.0);
        let p: f64 = printed
            .parse()
            .expect("a formatted finite float parses back");
        let scaled = (p / 100.0 * f64::from(u32::MAX)).round_ties_even();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let v = scaled.clamp(0.0, f64::from(u32::MAX)) as u32;
        v
    }
}

/// `Netem.time`/`Netem.jitter` as received on the wire.
///
/// Chaos Mesh ≥ 2.8 sends a Go duration string (`"100ms"`); older controllers sent a varint in
/// microseconds on the same field number (the Go daemon then ran `tc … delay <µs>`, which tc reads
/// as microseconds). The gRPC layer decides which one arrived; this type gives both one meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetemTime {
    /// Go duration string; empty means unset.
    Text(String),
    /// Legacy microseconds; 0 means unset.
    Micros(u32),
}

impl From<&str> for NetemTime {
    fn from(s: &str) -> Self {
        NetemTime::Text(s.to_string())
    }
}

impl From<String> for NetemTime {
    fn from(s: String) -> Self {
        NetemTime::Text(s)
    }
}

impl Default for NetemTime {
    fn default() -> Self {
        NetemTime::Text(String::new())
    }
}

impl NetemTime {
    /// The duration, zero when unset. Errors name `field` (`"netem.time"`, `"netem.jitter"`).
    pub fn to_duration(&self, field: &'static str) -> Result<Duration> {
        match self {
            NetemTime::Text(s) if s.is_empty() => Ok(Duration::ZERO),
            NetemTime::Text(s) => parse_go_duration(s).map_err(|e| match e {
                TcError::InvalidArgument { reason, .. } => {
                    TcError::invalid(field, s.as_str(), reason)
                }
                other => other,
            }),
            NetemTime::Micros(us) => Ok(Duration::from_micros(u64::from(*us))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_durations() {
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("200us"), Duration::from_micros(200));
        assert_eq!(d("200µs"), Duration::from_micros(200));
        assert_eq!(d("200μs"), Duration::from_micros(200));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("0m30s"), Duration::from_secs(30));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("-0"), Duration::ZERO);
        assert_eq!(d("+0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("+1s"), Duration::from_secs(1));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("5.s"), Duration::from_secs(5));
        assert_eq!(d("1500ns"), Duration::from_nanos(1500));
        assert_eq!(
            d("1h2m3s4ms5us6ns"),
            Duration::from_nanos(3_723_004_005_006)
        );
        // Go truncates fractions below a nanosecond.
        assert_eq!(d("0.0000000019s"), Duration::from_nanos(1));
        assert_eq!(d("1.0000000000000000000000001s"), Duration::from_secs(1));
        assert_eq!(
            d("2562047h47m16.854775807s"),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn go_durations_hostile() {
        for s in [
            "",
            "-",
            "+",
            "-1s",
            "-0.5ms",
            "100",
            "1",
            "00",
            "1.5",
            ".",
            ".s",
            "s",
            "ms1",
            "1x",
            "1 s",
            " 1s",
            "1s ",
            "1S",
            "1Ms",
            "1sec",
            "NaN",
            "nan",
            "inf",
            "Infinity",
            "1e3s",
            "0x10s",
            "١٠ms",
            "１s",
            "1\u{200b}s",
            "2562047h47m16.854775808s",
            "2562048h",
            "9223372036854775808ns",
            "99999999999999999999ns",
            "1h-1s",
            "1s-",
            "∞s",
        ] {
            assert!(parse_go_duration(s).is_err(), "{s:?} must be rejected");
        }
    }

    #[test]
    fn tc_rates_follow_get_rate64() {
        let r = |s: &str| parse_rate(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(r("8000bit"), 1000);
        assert_eq!(r("8000"), 1000, "plain number = bits per second");
        assert_eq!(r("1kbit"), 125);
        assert_eq!(r("1KBit"), 125);
        assert_eq!(r("10mbit"), 1_250_000);
        assert_eq!(r("1gbit"), 125_000_000);
        assert_eq!(r("1tbit"), 125_000_000_000);
        assert_eq!(r("100bps"), 100, "bps = bytes per second");
        assert_eq!(r("1kbps"), 1000);
        assert_eq!(r("1mbps"), 1_000_000);
        assert_eq!(r("1gbps"), 1_000_000_000);
        assert_eq!(r("1tbps"), 1_000_000_000_000);
        assert_eq!(r("1kibit"), 128);
        assert_eq!(r("1mibit"), 131_072);
        assert_eq!(r("1gibit"), 134_217_728);
        assert_eq!(r("1tibit"), 137_438_953_472);
        assert_eq!(r("1kibps"), 1024);
        assert_eq!(r("1mibps"), 1_048_576);
        assert_eq!(r("1gibps"), 1_073_741_824);
        assert_eq!(r("1.5mbit"), 187_500);
        assert_eq!(r("1e3kbit"), 125_000);
        assert_eq!(r("7bit"), 0, "truncated like tc");
        assert_eq!(r("0bit"), 0);
        assert_eq!(r("100gbit"), 12_500_000_000);
    }

    #[test]
    fn tc_rates_hostile() {
        for s in [
            "",
            "bit",
            "-1bit",
            "+1bit",
            " 1bit",
            "1 bit",
            "1bits",
            "1kb",
            "1mb",
            "10%",
            "nan",
            "inf",
            "infbit",
            "1e400bit",
            "0x10bit",
            "１bit",
            "1e",
            "1.2.3bit",
            "200000000tbps",
        ] {
            assert!(parse_rate(s).is_err(), "{s:?} must be rejected");
        }
    }

    #[test]
    fn tc_sizes_follow_get_size() {
        let z = |s: &str| parse_size(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(z("32768"), 32768);
        assert_eq!(z("32kb"), 32768);
        assert_eq!(z("32K"), 32768);
        assert_eq!(z("1mb"), 1_048_576);
        assert_eq!(z("1m"), 1_048_576);
        assert_eq!(z("2g"), 2_147_483_648);
        assert_eq!(z("1kbit"), 128);
        assert_eq!(z("1mbit"), 131_072);
        assert_eq!(z("1gbit"), 134_217_728);
        assert_eq!(z("10b"), 10);
        assert_eq!(z("1.5k"), 1536);
        assert_eq!(z("4294967295"), u32::MAX);
        for s in [
            "",
            "k",
            "-1",
            "4g",
            "4294967296",
            "1kib",
            "1 k",
            "nan",
            "1e99",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} must be rejected");
        }
    }

    #[test]
    fn percent_bounds() {
        assert!(Percent::new("loss", 0.0).is_ok());
        assert!(Percent::new("loss", 100.0).is_ok());
        for v in [
            f32::NAN,
            -0.1,
            -1.0,
            100.01,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
        ] {
            let e = Percent::new("loss", v).unwrap_err();
            assert!(
                matches!(e, TcError::InvalidArgument { field: "loss", .. }),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn percent_scaling_matches_tc() {
        let k = |v: f32| Percent::new("p", v).unwrap().to_kernel();
        assert_eq!(k(0.0), 0);
        assert_eq!(k(100.0), u32::MAX);
        assert_eq!(k(25.0), 0x4000_0000);
        assert_eq!(
            k(30.0),
            0x4ccc_cccc,
            "rint ties to even; round() would give ...cd"
        );
        assert_eq!(k(1.0), 0x028f_5c29);
        assert_eq!(k(2.0), 0x051e_b852);
        assert_eq!(k(0.1), 4_294_967);
    }

    #[test]
    fn netem_time_both_encodings() {
        let t = |v: NetemTime| v.to_duration("netem.time").unwrap();
        assert_eq!(t(NetemTime::default()), Duration::ZERO);
        assert_eq!(
            t(NetemTime::Text("100ms".into())),
            Duration::from_millis(100)
        );
        assert_eq!(t(NetemTime::Micros(0)), Duration::ZERO);
        assert_eq!(t(NetemTime::Micros(100_000)), Duration::from_millis(100));
        let e = NetemTime::Text("1000".into())
            .to_duration("netem.time")
            .unwrap_err();
        assert!(
            matches!(
                e,
                TcError::InvalidArgument {
                    field: "netem.time",
                    ..
                }
            ),
            "{e}"
        );
    }
}
