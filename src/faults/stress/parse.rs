//! Parsers for the two stressor strings of `pb.ExecStressRequest`.
//!
//! The controller builds them in `Stressors.Normalize`:
//! CPU `" --cpu-load-slice 10 --cpu-method sqrt --cpu <workers> [--cpu-load <load>] [options...]"`
//! (stress-ng syntax) and memory `" --workers <n> [--size <size>] [options...]"` (memStress
//! syntax). Tokens are split on whitespace like Go's `strings.Fields`; a repeated option keeps
//! its last value (as getopt and Go's `flag` do). Anything faultd does not honour is an error
//! naming it, never silently ignored.
//!
//! CPU options honoured (stress-ng meaning; `--opt value` or `--opt=value`):
//!
//! | option | meaning |
//! |---|---|
//! | `--cpu N`, `-c N` | N load processes, 0 = one per online CPU; at most 8192 |
//! | `--cpu-load P`, `-l P` | each process keeps P % of one CPU busy (integer 0..=100, default 100) |
//! | `--cpu-load-slice S` | busy slice of S ms per duty cycle (so the cycle is S·100/P ms, kept within 10 ms..1 s); S <= 0 (stress-ng's iteration count / random slice) uses the default 100 ms cycle |
//! | `--cpu-method M` | `sqrt` (default), `int64`, `double` or `loop` |
//! | `--timeout T`, `-t T` | stop after T (integer with optional unit s, m, h, d, y; no unit = seconds; 0 = no limit): becomes the fault's TTL |
//!
//! Memory options honoured (memStress meaning; `-opt` or `--opt`, `value` or `=value`):
//!
//! | option | meaning |
//! |---|---|
//! | `--size S` | total memory to hold, split evenly over the workers. go-humanize units: `B`, `KB`/`K`=10^3, `KiB`/`Ki`=2^10, `MB`, `MiB`, `GB`, `GiB`, `TB`, `TiB`, ... (case-insensitive; fractions allowed), or `NN%` of the container's memory limit (of the node's memory if it has none). Required, > 0, at most 64 TiB |
//! | `--workers N` | N allocating processes (1..=8192, default 1) |
//! | `--time D` | reach the size linearly over D (Go duration: `30s`, `1m30s`, `1.5h`, `500ms`; default 0 = at once) |
//! | `--required-limit[=BOOL]` | refuse the stressor when the container has no memory limit, even with `--allow-unbounded-memory-stress` |
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StressError;

/// Most load processes one stressor may start (Chaos Mesh's webhook allows 8192 workers).
pub const MAX_WORKERS: u32 = 8192;
/// Largest memory size accepted (64 TiB): anything bigger is a typo.
pub const MAX_MEMORY_BYTES: u64 = 1 << 46;
/// Duty cycle used when no positive `--cpu-load-slice` is given.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);
const MIN_PERIOD: Duration = Duration::from_millis(10);
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// How a CPU load process burns its busy time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CpuMethod {
    /// Square roots of a running value (stress-ng `sqrt`).
    Sqrt,
    /// 64-bit integer multiply/add (stress-ng `int64`).
    Int64,
    /// Double precision multiply/add (stress-ng `double`).
    Double,
    /// An empty counted loop (stress-ng `loop`).
    Loop,
}

impl CpuMethod {
    fn parse(v: &str) -> Option<CpuMethod> {
        Some(match v {
            "sqrt" => CpuMethod::Sqrt,
            "int64" => CpuMethod::Int64,
            "double" => CpuMethod::Double,
            "loop" => CpuMethod::Loop,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CpuMethod::Sqrt => "sqrt",
            CpuMethod::Int64 => "int64",
            CpuMethod::Double => "double",
            CpuMethod::Loop => "loop",
        }
    }
}

/// A parsed `cpuStressors` string.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuSpec {
    /// Load processes; 0 means one per online CPU (resolved by [`CpuSpec::resolved_workers`]).
    pub workers: u32,
    /// Percent of one CPU each process keeps busy.
    pub load: u8,
    /// Duty-cycle length.
    pub period: Duration,
    pub method: CpuMethod,
    /// `--timeout`, if any (never zero).
    pub timeout: Option<Duration>,
}

impl CpuSpec {
    /// Workers with 0 replaced by the number of online CPUs (stress-ng's meaning).
    pub fn resolved_workers(&self) -> u32 {
        if self.workers > 0 {
            return self.workers;
        }
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        (n.max(1) as u32).min(MAX_WORKERS)
    }
}

/// Memory size as given: bytes, or a percentage of the container's memory limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemSize {
    Bytes(u64),
    Percent(f64),
}

/// A parsed `memoryStressors` string.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySpec {
    pub workers: u32,
    pub size: MemSize,
    /// Time to reach the size (zero: at once).
    pub ramp: Duration,
    /// `--required-limit`: refuse containers without a memory limit in any case.
    pub required_limit: bool,
}

impl MemorySpec {
    /// Total bytes for a container whose memory limit is `limit` (`None`: no limit, then the
    /// percentage applies to `node_total`).
    pub fn total_bytes(&self, limit: Option<u64>, node_total: u64) -> Result<u64, StressError> {
        let bytes = match self.size {
            MemSize::Bytes(b) => b,
            MemSize::Percent(p) => {
                let base = limit.unwrap_or(node_total) as f64;
                (base * p / 100.0).floor() as u64
            }
        };
        if bytes == 0 {
            return Err(invalid("memory", "--size", "resolves to 0 bytes"));
        }
        if bytes > MAX_MEMORY_BYTES {
            return Err(invalid(
                "memory",
                "--size",
                &format!("resolves to {bytes} bytes, more than the 64 TiB faultd accepts"),
            ));
        }
        Ok(bytes)
    }
}

fn invalid(stressor: &'static str, option: &str, reason: &str) -> StressError {
    StressError::InvalidOption {
        stressor,
        option: option.to_string(),
        reason: reason.to_string(),
    }
}

/// One command-line token split into name and inline value (`--opt=value`).
struct Tokens<'a> {
    stressor: &'static str,
    words: std::iter::Peekable<std::str::SplitWhitespace<'a>>,
}

impl<'a> Tokens<'a> {
    fn new(stressor: &'static str, s: &'a str) -> Self {
        Tokens {
            stressor,
            words: s.split_whitespace().peekable(),
        }
    }

    /// The value of option `name`: the inline one, or the next word.
    fn value(&mut self, name: &str, inline: Option<&'a str>) -> Result<&'a str, StressError> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.words.next() {
            Some(v) => Ok(v),
            None => Err(invalid(self.stressor, name, "needs a value")),
        }
    }
}

fn split_inline(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (word, None),
    }
}

fn parse_int<T: std::str::FromStr>(
    stressor: &'static str,
    option: &str,
    v: &str,
    what: &str,
) -> Result<T, StressError> {
    // Plain decimal only: no signs, spaces, hex or exponents.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(stressor, option, &format!("{v:?} is not {what}")));
    }
    v.parse()
        .map_err(|_| invalid(stressor, option, &format!("{v:?} is out of range ({what})")))
}

/// Parses a `cpuStressors` string. Empty (or blank) gives `None`.
pub fn parse_cpu(s: &str) -> Result<Option<CpuSpec>, StressError> {
    const S: &str = "cpu";
    if s.trim().is_empty() {
        return Ok(None);
    }
    let mut t = Tokens::new(S, s);
    let mut workers: Option<u32> = None;
    let mut load: u8 = 100;
    let mut slice_ms: i64 = 0;
    let mut method = CpuMethod::Sqrt;
    let mut timeout: Option<Duration> = None;
    while let Some(word) = t.words.next() {
        let (name, inline) = if word.starts_with("--") {
            split_inline(word)
        } else if word.starts_with('-') && word.len() > 1 && word.is_char_boundary(2) {
            // Short options: "-c 2" or "-c2".
            let (n, rest) = word.split_at(2);
            (n, (!rest.is_empty()).then_some(rest))
        } else {
            return Err(invalid(
                S,
                word,
                "unexpected argument (options start with --)",
            ));
        };
        match name {
            "--cpu" | "-c" => {
                let v = t.value(name, inline)?;
                let n: u32 = parse_int(S, name, v, "a number of workers 0..=8192")?;
                if n > MAX_WORKERS {
                    return Err(invalid(S, name, &format!("{n} workers is more than {MAX_WORKERS}")));
                }
                workers = Some(n);
            }
            "--cpu-load" | "-l" => {
                let v = t.value(name, inline)?;
                let p: u32 = parse_int(S, name, v, "a percentage 0..=100")?;
                if p > 100 {
                    return Err(invalid(S, name, &format!("{p} is not a percentage 0..=100")));
                }
                load = p as u8;
            }
            "--cpu-load-slice" => {
                let v = t.value(name, inline)?;
                let (neg, digits) = match v.strip_prefix('-') {
                    Some(d) => (true, d),
                    None => (false, v),
                };
                let n: i64 = parse_int(S, name, digits, "a number of milliseconds")?;
                if n > 1_000_000 {
                    return Err(invalid(S, name, &format!("{v} ms is too long")));
                }
                slice_ms = if neg { -n } else { n };
            }
            "--cpu-method" => {
                let v = t.value(name, inline)?;
                method = CpuMethod::parse(v).ok_or_else(|| {
                    invalid(
                        S,
                        name,
                        &format!("method {v:?} is not supported (faultd runs sqrt, int64, double, loop)"),
                    )
                })?;
            }
            "--timeout" | "-t" => {
                let v = t.value(name, inline)?;
                let d = parse_stress_ng_time(v).map_err(|r| invalid(S, name, &r))?;
                timeout = (!d.is_zero()).then_some(d);
            }
            _ => {
                return Err(invalid(
                    S,
                    name,
                    "unknown option (faultd honours --cpu, --cpu-load, --cpu-load-slice, --cpu-method, --timeout)",
                ))
            }
        }
    }
    let workers = workers.ok_or_else(|| invalid(S, "--cpu", "is required"))?;
    let period = if slice_ms > 0 && load > 0 {
        let micros = slice_ms as u64 * 1000 * 100 / load as u64;
        Duration::from_micros(micros).clamp(MIN_PERIOD, MAX_PERIOD)
    } else {
        DEFAULT_PERIOD
    };
    Ok(Some(CpuSpec {
        workers,
        load,
        period,
        method,
        timeout,
    }))
}

/// Parses a `memoryStressors` string. Empty (or blank) gives `None`.
pub fn parse_memory(s: &str) -> Result<Option<MemorySpec>, StressError> {
    const S: &str = "memory";
    if s.trim().is_empty() {
        return Ok(None);
    }
    let mut t = Tokens::new(S, s);
    let mut workers: u32 = 1;
    let mut size: Option<MemSize> = None;
    let mut ramp = Duration::ZERO;
    let mut required_limit = false;
    while let Some(word) = t.words.next() {
        if word == "--" {
            if let Some(rest) = t.words.next() {
                return Err(invalid(S, rest, "unexpected argument"));
            }
            break;
        }
        // Go's flag package: one or two dashes, then the name.
        let Some(body) = word
            .strip_prefix("--")
            .or_else(|| word.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
        else {
            return Err(invalid(
                S,
                word,
                "unexpected argument (options start with --)",
            ));
        };
        let (bare, inline) = split_inline(body);
        let name = format!("--{bare}");
        match bare {
            "workers" => {
                let v = t.value(&name, inline)?;
                let n: u32 = parse_int(S, &name, v, "a number of workers 1..=8192")?;
                if n == 0 || n > MAX_WORKERS {
                    return Err(invalid(
                        S,
                        &name,
                        &format!("{n} is not a number of workers 1..=8192"),
                    ));
                }
                workers = n;
            }
            "size" => {
                let v = t.value(&name, inline)?;
                size = Some(parse_mem_size(v).map_err(|r| invalid(S, &name, &r))?);
            }
            "time" => {
                let v = t.value(&name, inline)?;
                ramp = parse_go_duration(v).map_err(|r| invalid(S, &name, &r))?;
            }
            "required-limit" => {
                required_limit = match inline {
                    None => true,
                    Some(v) => parse_go_bool(v)
                        .ok_or_else(|| invalid(S, &name, &format!("{v:?} is not a boolean")))?,
                };
            }
            _ => {
                return Err(invalid(
                    S,
                    &name,
                    "unknown option (faultd honours --size, --workers, --time, --required-limit)",
                ))
            }
        }
    }
    let size = size.ok_or_else(|| invalid(S, "--size", "is required"))?;
    Ok(Some(MemorySpec {
        workers,
        size,
        ramp,
        required_limit,
    }))
}

fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// memStress's `--size`: `NN%` (a positive, finite percentage) or go-humanize bytes.
pub fn parse_mem_size(v: &str) -> Result<MemSize, String> {
    if let Some(p) = v.strip_suffix('%') {
        let ok = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let pct: f64 = if ok {
            p.parse().unwrap_or(f64::NAN)
        } else {
            f64::NAN
        };
        if !pct.is_finite() || pct <= 0.0 {
            return Err(format!("{v:?} is not a positive percentage"));
        }
        if pct > 100_000.0 {
            return Err(format!("{v:?} is an absurd percentage"));
        }
        return Ok(MemSize::Percent(pct));
    }
    let bytes = parse_humanize_bytes(v)?;
    if bytes == 0 {
        return Err(format!("{v:?} is zero bytes"));
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!("{v:?} is more than the 64 TiB faultd accepts"));
    }
    Ok(MemSize::Bytes(bytes))
}

/// go-humanize's `ParseBytes`: a decimal number (`,` separators and a fraction allowed) and an
/// optional case-insensitive unit; `KB`/`K` are powers of 1000, `KiB`/`Ki` powers of 1024.
pub fn parse_humanize_bytes(v: &str) -> Result<u64, String> {
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(v.len());
    let num: String = v[..end].chars().filter(|&c| c != ',').collect();
    let digits = num.bytes().filter(|b| b.is_ascii_digit()).count();
    if digits == 0 || num.matches('.').count() > 1 {
        return Err(format!("{v:?} is not a size (e.g. 512MB, 1GiB, 50%)"));
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a size (e.g. 512MB, 1GiB, 50%)"))?;
    let unit = v[end..].trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => (1u64 << 40) as f64,
        "p" | "pb" => 1e15,
        "pi" | "pib" => (1u64 << 50) as f64,
        "e" | "eb" => 1e18,
        "ei" | "eib" => (1u64 << 60) as f64,
        _ => return Err(format!("{v:?}: unknown size unit {:?}", &v[end..])),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{v:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Go's `time.ParseDuration`, refusing negative durations: `300ms`, `1.5h`, `2h45m`, `0`.
/// Units: ns, us (µs, μs), ms, s, m, h.
pub fn parse_go_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("{v:?} is not a duration (e.g. 30s, 1m30s, 500ms)");
    let mut rest = v.strip_prefix('+').unwrap_or(v);
    if let Some(abs) = rest.strip_prefix('-') {
        if !abs.is_empty() && abs.bytes().all(|b| b == b'0') {
            return Ok(Duration::ZERO);
        }
        return Err(format!("{v:?} is negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("{v:?}: missing unit (ns, us, ms, s, m, h)")),
            _ => {
                return Err(format!(
                    "{v:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
                ))
            }
        };
        total_ns += n * scale;
    }
    // Go's limit: an int64 of nanoseconds (about 292 years).
    if !total_ns.is_finite() || total_ns > i64::MAX as f64 {
        return Err(format!("{v:?} is too long"));
    }
    Ok(Duration::from_nanos(total_ns as u64))
}

/// stress-ng's time values: an integer with an optional unit s, m, h, d or y (no unit: s).
pub fn parse_stress_ng_time(v: &str) -> Result<Duration, String> {
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(end);
    if num.is_empty() {
        return Err(format!("{v:?} is not a time (e.g. 60, 60s, 5m)"));
    }
    let n: u64 = num.parse().map_err(|_| format!("{v:?} is too long"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "y" => 31_556_952,
        _ => return Err(format!("{v:?}: unknown unit {unit:?} (s, m, h, d, y)")),
    };
    let secs = n
        .checked_mul(scale)
        .filter(|s| *s <= i64::MAX as u64 / 1000)
        .ok_or_else(|| format!("{v:?} is too long"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(s: &str) -> CpuSpec {
        parse_cpu(s).unwrap().unwrap()
    }

    fn cpu_err(s: &str) -> String {
        parse_cpu(s).unwrap_err().to_string()
    }

    fn mem(s: &str) -> MemorySpec {
        parse_memory(s).unwrap().unwrap()
    }

    fn mem_err(s: &str) -> String {
        parse_memory(s).unwrap_err().to_string()
    }

    #[test]
    fn controller_cpu_string() {
        let c = cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 2 --cpu-load 50");
        assert_eq!(c.workers, 2);
        assert_eq!(c.load, 50);
        assert_eq!(c.method, CpuMethod::Sqrt);
        // 10 ms busy at 50 %: a 20 ms cycle.
        assert_eq!(c.period, Duration::from_millis(20));
        assert_eq!(c.timeout, None);
        // Without --cpu-load stress-ng loads fully.
        let c = cpu(" --cpu-load-slice 10 --cpu-method sqrt --cpu 1");
        assert_eq!(c.load, 100);
        assert_eq!(c.period, MIN_PERIOD);
    }

    #[test]
    fn cpu_option_forms_and_user_options() {
        let c = cpu("--cpu=3 -l 25 --cpu-method=int64 --timeout 2m -t 90");
        assert_eq!((c.workers, c.load, c.method), (3, 25, CpuMethod::Int64));
        // Last one wins, like getopt.
        assert_eq!(c.timeout, Some(Duration::from_secs(90)));
        let c = cpu("-c4 -l75");
        assert_eq!((c.workers, c.load), (4, 75));
        assert_eq!(c.period, DEFAULT_PERIOD);
        assert_eq!(cpu("--cpu 1 --timeout 0").timeout, None);
        assert_eq!(
            cpu("--cpu 1 --timeout 1h").timeout,
            Some(Duration::from_secs(3600))
        );
        // Slices: 10 ms at 10 % is a 100 ms cycle; long and non-positive slices.
        assert_eq!(
            cpu("--cpu 1 --cpu-load 10 --cpu-load-slice 10").period,
            DEFAULT_PERIOD
        );
        assert_eq!(
            cpu("--cpu 1 --cpu-load 1 --cpu-load-slice 500").period,
            MAX_PERIOD
        );
        assert_eq!(cpu("--cpu 1 --cpu-load-slice -30").period, DEFAULT_PERIOD);
        assert_eq!(cpu("--cpu 1 --cpu-load-slice 0").period, DEFAULT_PERIOD);
        assert_eq!(cpu("--cpu 1 --cpu-load 0").load, 0);
        // 0 workers: one per online CPU.
        assert!(cpu("--cpu 0").resolved_workers() >= 1);
        assert_eq!(cpu("--cpu 5").resolved_workers(), 5);
    }

    #[test]
    fn cpu_hostile_inputs() {
        for (s, needle) in [
            ("--cpu -1", "--cpu"),
            ("--cpu 8193", "more than 8192"),
            ("--cpu 99999999999999999999999", "out of range"),
            ("--cpu 1 --cpu-load 101", "0..=100"),
            ("--cpu 1 --cpu-load -5", "--cpu-load"),
            ("--cpu 1 --cpu-load NaN", "--cpu-load"),
            ("--cpu 1 --cpu-load 50.5", "--cpu-load"),
            ("--cpu 1 --cpu-load 1e2", "--cpu-load"),
            ("--cpu 1 --cpu-load", "needs a value"),
            ("--cpu", "needs a value"),
            ("--cpu-load 50", "--cpu"),
            ("--cpu 1 --cpu-method matrixprod", "matrixprod"),
            ("--cpu 1 --vm 2", "--vm"),
            ("--cpu 1 --cpu-lоad 50", "--cpu-lоad"),
            ("--cpu 1 ☃", "☃"),
            ("--cpu 1 -é", "-é"),
            ("--cpu 1 --timeout 5x", "--timeout"),
            ("--cpu 1 --timeout -5", "--timeout"),
            ("--cpu 1 --timeout 99999999999999999999y", "too long"),
            (
                "--cpu 1 --cpu-load-slice 9999999999999999999999",
                "--cpu-load-slice",
            ),
            ("--cpu １", "--cpu"),
            ("2", "unexpected argument"),
        ] {
            let e = cpu_err(s);
            assert!(e.contains(needle), "{s:?}: {e}");
            assert!(e.starts_with("cpuStressors"), "{s:?}: {e}");
        }
    }

    #[test]
    fn controller_memory_string() {
        let m = mem(" --workers 1 --size 512MB");
        assert_eq!(m.workers, 1);
        assert_eq!(m.size, MemSize::Bytes(512_000_000));
        assert_eq!(m.ramp, Duration::ZERO);
        assert!(!m.required_limit);
        let m = mem(" --workers 2 --size 50% --time 30s");
        assert_eq!(m.size, MemSize::Percent(50.0));
        assert_eq!(m.ramp, Duration::from_secs(30));
        assert_eq!(m.total_bytes(Some(1000), 1 << 30).unwrap(), 500);
        assert_eq!(m.total_bytes(None, 1000).unwrap(), 500);
    }

    #[test]
    fn memory_option_forms() {
        let m = mem("-size=128MiB -workers=3 --time=1m30s --required-limit");
        assert_eq!(m.size, MemSize::Bytes(128 << 20));
        assert_eq!((m.workers, m.required_limit), (3, true));
        assert_eq!(m.ramp, Duration::from_secs(90));
        assert!(!mem("--size 1G --required-limit=false").required_limit);
        assert_eq!(mem("--size 1.5GiB").size, MemSize::Bytes(3 << 29));
        assert_eq!(mem("--size 1,000kb").size, MemSize::Bytes(1_000_000));
        assert_eq!(mem("--size 4096").size, MemSize::Bytes(4096));
        assert_eq!(mem("--size 12.5%").size, MemSize::Percent(12.5));
        assert_eq!(mem("--size 1g --").workers, 1);
    }

    #[test]
    fn memory_hostile_inputs() {
        for (s, needle) in [
            ("--workers 1", "--size"),
            ("--size", "needs a value"),
            ("--size 0", "zero"),
            ("--size 0KB", "zero"),
            ("--size -5MB", "--size"),
            ("--size NaN%", "percentage"),
            ("--size inf%", "percentage"),
            ("--size -10%", "percentage"),
            ("--size 0%", "percentage"),
            ("--size %", "percentage"),
            ("--size 1e9%", "percentage"),
            ("--size 99999999999999999999999EB", "too large"),
            ("--size 100PB", "64 TiB"),
            ("--size 5 MB", "unexpected argument"),
            ("--size 5XB", "unknown size unit"),
            ("--size 1.2.3MB", "not a size"),
            ("--size １２MB", "not a size"),
            ("--size 1MB --workers 0", "1..=8192"),
            ("--size 1MB --workers -1", "--workers"),
            ("--size 1MB --workers 8193", "1..=8192"),
            ("--size 1MB --time -5s", "negative"),
            ("--size 1MB --time 5", "missing unit"),
            ("--size 1MB --time 5d", "unknown unit"),
            ("--size 1MB --time 99999999999h", "too long"),
            ("--size 1MB --required-limit=maybe", "boolean"),
            ("--size 1MB --client", "--client"),
            ("--size 1MB --pid 5", "--pid"),
            ("--size 1MB --sizé 5", "--sizé"),
            ("--size 1MB extra", "unexpected argument"),
            ("---size 1MB", "unexpected argument"),
            ("--size 1MB -- extra", "extra"),
        ] {
            let e = mem_err(s);
            assert!(e.contains(needle), "{s:?}: {e}");
            assert!(e.starts_with("memoryStressors"), "{s:?}: {e}");
        }
        // A percentage that resolves to nothing.
        let m = mem("--size 0.0000001%");
        assert!(m.total_bytes(Some(1000), 1000).is_err());
        let m = mem("--size 90000%");
        assert!(m.total_bytes(Some(1 << 40), 1).is_err());
    }

    #[test]
    fn empty_strings_are_none() {
        assert_eq!(parse_cpu("").unwrap(), None);
        assert_eq!(parse_cpu("  \t ").unwrap(), None);
        assert_eq!(parse_memory("").unwrap(), None);
    }

    #[test]
    fn go_durations() {
        for (s, d) in [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("300ms", Duration::from_millis(300)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+2s", Duration::from_secs(2)),
            ("-0", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(s).unwrap(), d, "{s}");
        }
        for s in [
            "", "s", "5", ".s", "1..5s", "5 s", "-1s", "1e3s", "NaN", "5sec", "3d",
        ] {
            assert!(parse_go_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn stress_ng_times() {
        assert_eq!(parse_stress_ng_time("60").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_stress_ng_time("2M").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            parse_stress_ng_time("1d").unwrap(),
            Duration::from_secs(86_400)
        );
        for s in ["", "s", "1.5s", "-1", "5ms", "18446744073709551615y"] {
            assert!(parse_stress_ng_time(s).is_err(), "{s}");
        }
    }
}
