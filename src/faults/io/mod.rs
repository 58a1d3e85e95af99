//! IOChaos (`ApplyIOChaos`), step 1: the action model and the injectors, as a library with no
//! FUSE types in it. So far: the actions chaos-daemon receives, parsed and validated in full
//! (`actions.rs`, toda's `src/injector/injector_config.rs`), which operations an action covers
//! (`matcher.rs`: path glob, methods, percent, as toda's `src/injector/filter.rs`) and the
//! randomness every decision draws from ([`IoRng`], passed in by the caller so that tests
//! replay with a seed).
pub mod actions;
pub mod matcher;

pub use actions::{
    parse_actions, Action, ActionKind, AttrOverride, FileKind, Filling, Mistake, Timespec,
    WeightedErrno,
};
pub use matcher::{Filter, Method, MethodSet};

use crate::failure::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// `actions` is not JSON, or not a list.
    #[error("IOChaos actions: {0}")]
    Json(String),
    /// One field of one action is bad.
    #[error("IOChaos action {index}, {field}: {reason}")]
    Action {
        index: usize,
        field: String,
        reason: String,
    },
}

crate::impl_failure!(IoError);

impl IoError {
    pub fn kind(&self) -> FailureKind {
        match self {
            IoError::Json(_) | IoError::Action { .. } => FailureKind::InvalidArgument,
        }
    }
}

/// The randomness the injectors draw from (percent, errno choice, mistakes). Production uses
/// [`SplitMix64::from_entropy`], one per serving thread; tests pass a seeded one.
pub trait IoRng {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `0..n`; `n` must not be 0. (Lemire's multiply-and-reject: no modulo bias.)
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "IoRng::below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let n = rest.len();
            rest.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a small, fast, seedable generator; chaos needs
/// unpredictability to the target, not cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Seeded from the OS's randomness.
    pub fn from_entropy() -> SplitMix64 {
        let r = uuid::Uuid::new_v4().as_u128();
        SplitMix64((r >> 64) as u64 ^ r as u64)
    }
}

impl IoRng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    #[test]
    fn splitmix_is_deterministic_per_seed() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut c = SplitMix64::new(8);
        assert_ne!(a[0], c.next_u64());
        // The reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut e1 = SplitMix64::from_entropy();
        let mut e2 = SplitMix64::from_entropy();
        assert_ne!(e1.next_u64(), e2.next_u64());
    }

    #[test]
    fn below_is_in_range_and_uniform() {
        let mut r = SplitMix64::new(42);
        assert!((0..1000).all(|_| r.below(1) == 0));
        assert!((0..1000).all(|_| r.below(3) < 3));
        assert!((0..1000).all(|_| r.below(u64::MAX) < u64::MAX));
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        // 10 000 expected per bucket, σ ≈ 95.
        assert!(
            counts.iter().all(|c| (9_500..=10_500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn fill_covers_odd_lengths() {
        let mut r = SplitMix64::new(3);
        for len in [0, 1, 7, 8, 9, 4096 + 3] {
            let mut buf = vec![0u8; len];
            r.fill(&mut buf);
            if len >= 8 {
                assert!(buf.iter().any(|b| *b != 0), "{len}");
            }
        }
        let mut a = [0u8; 13];
        let mut b = [0u8; 13];
        SplitMix64::new(5).fill(&mut a);
        SplitMix64::new(5).fill(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn errors_are_invalid_argument() {
        let e = IoError::Action {
            index: 2,
            field: "percent".into(),
            reason: "101 is outside 0..=100".into(),
        };
        assert_eq!(e.failure(), FailureKind::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "IOChaos action 2, percent: 101 is outside 0..=100"
        );
        assert_eq!(
            IoError::Json("x".into()).failure(),
            FailureKind::InvalidArgument
        );
    }
}
