//! Order statistics of measured samples (percentiles by nearest rank).

/// The nearest-rank `p` percentile (0 < p <= 1) of `samples`, in any order.
pub fn percentile<T: Copy + PartialOrd>(samples: &[T], p: f64) -> T {
    assert!(!samples.is_empty(), "no samples");
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The median (the lower one of an even number of samples).
pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

/// Summary of samples (any unit).
#[derive(Debug, Clone)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        Stats {
            n: samples.len(),
            p50: percentile(samples, 0.50),
            p99: percentile(samples, 0.99),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}
