//! Durations as people write them (`90s`, `10m`, `1h30m`, `250ms`, or bare seconds) and as
//! faultd prints them (`23h59m`, `1m05s`, `250ms`).
use std::time::Duration;

/// Parses `90s`, `10m`, `24h`, `500ms`, `1h30m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h)"))?;
        if digits == 0 {
            return Err(format!("{s:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
        };
        total = total.saturating_add(d);
    }
    Ok(total)
}

/// Parses a signed duration the way Go's `time.ParseDuration` does (what Chaos Mesh's
/// `timeOffset` is): an optional sign, then number+unit pairs with units `ns`, `us`, `µs`, `ms`,
/// `s`, `m`, `h` (`-10m100ns`, `+1h`, `1.5s`). Returns nanoseconds.
pub fn parse_signed_nanos(s: &str) -> Result<i128, String> {
    let t = s.trim();
    let (neg, mut rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("{s:?}: empty duration"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: missing unit (ns, us, ms, s, m, h)"))?;
        let num = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
                ))
            }
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(format!("{s:?}: expected a number"));
        }
        let int: i128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("{s:?}: number too large"))?
        };
        let mut part = int
            .checked_mul(scale)
            .ok_or_else(|| format!("{s:?}: out of range"))?;
        let mut unit_frac = scale;
        for d in frac.chars().take(18) {
            unit_frac /= 10;
            part += i128::from(d.to_digit(10).unwrap_or(0)) * unit_frac;
        }
        total = total
            .checked_add(part)
            .filter(|t| *t <= i128::from(i64::MAX))
            .ok_or_else(|| format!("{s:?}: out of range"))?;
    }
    Ok(if neg { -total } else { total })
}

/// A duration for people: the two largest units, rounded down (`23h59m`, `4m05s`, `42s`,
/// `250ms`).
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if s >= 86_400 {
        format!("{}d{:02}h", s / 86_400, h % 24)
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_offsets_parse_as_go_parses_them() {
        assert_eq!(parse_signed_nanos("-10m100ns"), Ok(-600_000_000_100));
        assert_eq!(parse_signed_nanos("+1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_signed_nanos("3600s"), Ok(3_600_000_000_000));
        assert_eq!(parse_signed_nanos("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_signed_nanos("999999999ns"), Ok(999_999_999));
        assert_eq!(parse_signed_nanos("-1ns"), Ok(-1));
        assert_eq!(parse_signed_nanos("2us"), Ok(2_000));
        assert_eq!(parse_signed_nanos("0"), Ok(0));
        for bad in ["", "-", "10", "10x", "h", "9999999999999999999h"] {
            assert!(parse_signed_nanos(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "h", "10x", "-5s", "1.5s", "ms", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(humanize(Duration::from_secs(86_369)), "23h59m");
        assert_eq!(humanize(Duration::from_secs(245)), "4m05s");
        assert_eq!(humanize(Duration::from_secs(42)), "42s");
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
        assert_eq!(humanize(Duration::from_secs(3 * 86_400 + 7200)), "3d02h");
    }
}
