//! Latency percentiles over a bounded set of samples.

use std::time::Duration;

/// Latencies of one kind of call, sorted.
#[derive(Debug, Clone)]
pub(crate) struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile `p` (0 to 100) in milliseconds; 0 without samples.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let n = self.sorted.len();
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.sorted[index].as_secs_f64() * 1_000.0
    }

    /// "p50 x ms, p95 y ms, p99 z ms (n samples)".
    pub(crate) fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.percentile_ms(50.0),
            self.percentile_ms(95.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0),
            self.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_pick_a_sample() {
        let latencies = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert!((latencies.percentile_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((latencies.percentile_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((latencies.percentile_ms(100.0) - 100.0).abs() < 1e-9);
        assert!((latencies.percentile_ms(0.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn no_samples_report_zero() {
        assert_eq!(Latencies::new(Vec::new()).percentile_ms(50.0), 0.0);
    }
}
