//! Packet-scheduler clock arithmetic, as iproute2's `tc/tc_core.c` does it.
//!
//! Qdisc parameters that are times (netem latency/jitter, tbf buffer and mtu) travel in
//! **psched ticks**. tc derives the tick length from `/proc/net/psched`, whose first three words
//! are `t2us us2t clock_res`: `tick_in_usec = t2us / us2t * (clock_res / 10^6)`. Every kernel since
//! 2.6.24 (high-resolution psched clock, `PSCHED_SHIFT = 6`) reports `000003e8 00000040 000f4240`,
//! so a tick is 64 ns and `tick_in_usec = 1000 / 64 = 15.625`. faultd hardcodes that relation
//! instead of reading the file at run time; [`kernel_psched_is_standard`] checks the assumption
//! (the unit tests call it on the build host).
//!
//! The conversions deliberately use the same IEEE double operations and truncations as the C code,
//! so their results are bit-identical to what tc sends.
use std::time::Duration;

/// Microseconds per psched tick, numerator/denominator form: `tick_in_usec = 1000 / 64`.
pub const TICK_IN_USEC: f64 = 1000.0 / 64.0;

/// `TIME_UNITS_PER_SEC`: tc's time unit is the microsecond.
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

/// C's `(unsigned int)` conversion of a double as gcc compiles it on x86-64 (`cvttsd2si` into a
/// 64-bit register, keep the low 32 bits): truncation toward zero, wrapping modulo 2³² for values
/// up to 2⁶³. Only used where tc's own result wraps and faultd must send the same bytes (rate
/// tables, which the kernel ignores for link-layer-aware rate specs).
pub(crate) fn c_uint(d: f64) -> u32 {
    if d.is_nan() || d <= -1.0 || d >= 9_223_372_036_854_775_808.0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let v = (d as i64) as u32;
    v
}

/// Checked `(unsigned int)` conversion: `None` when tc's C code would wrap or the input is not a
/// finite non-negative number.
pub(crate) fn c_uint_checked(d: f64) -> Option<u32> {
    if !d.is_finite() || !(0.0..4_294_967_296.0).contains(&d) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(d as u32)
}

/// `tc_core_time2tick(us)`: microseconds to ticks (`us * 15.625`, truncated, wrapping).
pub fn time2tick(us: u32) -> u32 {
    c_uint(f64::from(us) * TICK_IN_USEC)
}

/// `tc_calc_xmittime(rate, size)`: ticks to send `size` bytes at `rate` bytes/s, with tc's two
/// truncations (to whole microseconds, then to whole ticks). Wraps like tc on overflow.
pub fn xmittime(rate: u64, size: u32) -> u32 {
    #[allow(clippy::cast_precision_loss)]
    let us = TIME_UNITS_PER_SEC * (f64::from(size) / rate as f64);
    time2tick(c_uint(us))
}

/// [`xmittime`], but `None` where tc would silently wrap (an absurdly large burst for the rate).
pub fn xmittime_checked(rate: u64, size: u32) -> Option<u32> {
    #[allow(clippy::cast_precision_loss)]
    let us = c_uint_checked(TIME_UNITS_PER_SEC * (f64::from(size) / rate as f64))?;
    c_uint_checked(f64::from(us) * TICK_IN_USEC)
}

/// A duration as tc gets it from the Go daemon: whole microseconds, rounded **up** (upstream's
/// `formatTcDuration` rounds sub-microsecond remainders up so a tiny delay never becomes zero).
pub fn micros_ceil(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1000)
}

/// Ticks for a duration given to tc in whole microseconds, or `None` when tc 6.1 refuses it as
/// "too large" (`tc_core_time2big`: more than `u32::MAX` ticks, i.e. above ~274.88 s).
pub fn duration_ticks(d: Duration) -> Option<u32> {
    let us = u32::try_from(micros_ceil(d)).ok()?;
    c_uint_checked(f64::from(us) * TICK_IN_USEC)
}

/// Whether this host's `/proc/net/psched` has the standard values faultd hardcodes.
pub fn kernel_psched_is_standard() -> std::io::Result<bool> {
    let text = std::fs::read_to_string("/proc/net/psched")?;
    let words: Vec<&str> = text.split_whitespace().collect();
    Ok(words.len() >= 3
        && words[0] == "000003e8"
        && words[1] == "00000040"
        && words[2] == "000f4240")
}

/// `tc_calc_rtable` for an Ethernet link layer with `mpu = 0`: the 256-entry rate table tc sends as
/// `TCA_*_RTAB`/`PTAB`, and the cell log it chose. `mtu == 0` means tc's default of 2047 bytes.
pub fn rate_table(rate: u32, mtu: u32) -> ([u32; 256], u8) {
    let mtu = if mtu == 0 { 2047 } else { mtu };
    let mut cell_log: u8 = 0;
    while (mtu >> cell_log) > 255 {
        cell_log += 1;
    }
    let mut table = [0u32; 256];
    for (i, slot) in (1u32..).zip(table.iter_mut()) {
        // tc_adjust_size: no change for Ethernet with mpu 0. `<<` wraps like C's unsigned shift.
        let size = i.wrapping_shl(u32::from(cell_log));
        *slot = xmittime(u64::from(rate), size);
    }
    (table, cell_log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_psched_is_standard() {
        assert!(kernel_psched_is_standard().unwrap());
    }

    #[test]
    fn ticks() {
        assert_eq!(time2tick(100_000), 1_562_500);
        assert_eq!(duration_ticks(Duration::from_millis(100)), Some(1_562_500));
        assert_eq!(
            duration_ticks(Duration::from_nanos(1)),
            Some(15),
            "rounded up to 1us"
        );
        assert_eq!(duration_ticks(Duration::from_micros(2)), Some(31));
        assert_eq!(
            duration_ticks(Duration::from_micros(274_877_906)),
            Some(0xffff_fff1)
        );
        assert_eq!(duration_ticks(Duration::from_micros(274_877_907)), None);
        assert_eq!(xmittime(125_000, 32768), 4_096_000);
        assert_eq!(xmittime_checked(125, 1 << 30), None);
    }

    #[test]
    fn c_conversions() {
        assert_eq!(c_uint(4_294_967_296.0 + 5.0), 5);
        assert_eq!(c_uint(1.9), 1);
        assert_eq!(c_uint_checked(4_294_967_295.9), Some(u32::MAX));
        assert_eq!(c_uint_checked(4_294_967_296.0), None);
        assert_eq!(c_uint_checked(f64::NAN), None);
    }
}
