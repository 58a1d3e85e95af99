//! prio: the classful qdisc `SetTcs` inserts when some rules are filtered by ipset.
//!
//! Upstream runs `tc qdisc add dev D {root|parent N:} handle N+1: prio bands 3+F priomap
//! 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1` (F = number of distinct filters), then hangs the filtered
//! faults under bands 4.. and classifies with iptables `CLASSIFY`.
//!
//! [`encode_prio_options`] reproduces iproute2 6.1 byte for byte (golden
//! `tests/golden/tc/prio_*.hex`): the raw `struct tc_prio_qopt { int bands; __u8 priomap[16]; }`
//! followed by the empty nested `TCA_OPTIONS` that tc's `addattr_nest_compat` appends.
use super::nla;
use super::{Result, TcError, TCA_OPTIONS};

/// `TCQ_PRIO_BANDS`, the kernel's maximum.
pub const MAX_BANDS: u32 = 16;
/// `TCQ_MIN_PRIO_BANDS`, the kernel's minimum.
pub const MIN_BANDS: u32 = 2;
/// The priomap Chaos Mesh uses (and tc's default for 3 bands).
pub const CHAOS_MESH_PRIOMAP: [u8; 16] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

/// A prio configuration; build it with [`PrioSpec::new`] or [`PrioSpec::chaos_mesh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrioSpec {
    bands: u32,
    priomap: [u8; 16],
}

impl PrioSpec {
    /// Checks what the kernel's `prio_tune` checks: `2 <= bands <= 16`, every priomap entry
    /// names an existing band.
    pub fn new(bands: u32, priomap: [u8; 16]) -> Result<PrioSpec> {
        if !(MIN_BANDS..=MAX_BANDS).contains(&bands) {
            return Err(TcError::invalid(
                "prio.bands",
                bands.to_string(),
                "must be within 2..=16",
            ));
        }
        if let Some(b) = priomap.iter().find(|b| u32::from(**b) >= bands) {
            return Err(TcError::invalid(
                "prio.priomap",
                b.to_string(),
                "names a band that does not exist",
            ));
        }
        Ok(PrioSpec { bands, priomap })
    }

    /// Upstream's prio for `filters` ipset-filtered rule groups: `3 + filters` bands and
    /// [`CHAOS_MESH_PRIOMAP`]. At most 13 filter groups fit.
    pub fn chaos_mesh(filters: usize) -> Result<PrioSpec> {
        let bands = u32::try_from(filters)
            .ok()
            .and_then(|f| f.checked_add(3))
            .ok_or_else(|| {
                TcError::invalid("tcs", filters.to_string(), "too many ipset filters")
            })?;
        PrioSpec::new(bands, CHAOS_MESH_PRIOMAP).map_err(|_| {
            TcError::invalid(
                "tcs",
                filters.to_string(),
                "at most 13 distinct ipset filters per device",
            )
        })
    }

    pub fn bands(&self) -> u32 {
        self.bands
    }

    pub fn priomap(&self) -> [u8; 16] {
        self.priomap
    }
}

/// The `TCA_OPTIONS` payload for a prio qdisc.
pub fn encode_prio_options(spec: &PrioSpec) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&spec.bands.to_ne_bytes());
    out.extend_from_slice(&spec.priomap);
    nla::put(&mut out, TCA_OPTIONS, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(PrioSpec::chaos_mesh(0).is_ok());
        assert!(PrioSpec::chaos_mesh(13).is_ok());
        assert!(PrioSpec::chaos_mesh(14).is_err());
        assert!(PrioSpec::chaos_mesh(usize::MAX).is_err());
        assert!(PrioSpec::new(1, [0; 16]).is_err());
        assert!(PrioSpec::new(17, [0; 16]).is_err());
        assert!(
            PrioSpec::new(2, CHAOS_MESH_PRIOMAP).is_err(),
            "band 2 does not exist"
        );
        assert!(PrioSpec::new(2, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]).is_ok());
    }
}
