//! A lock-free duration histogram that takes many observations of one value at once.
//!
//! prometheus-client's `Histogram` takes a mutex per observation; the UDP loops time a whole
//! batch and count each of its queries with that time, so one observation here is an atomic
//! add to one bucket and to the sum, whatever the batch size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: 10 µs × 4ⁱ, 10 µs … ~2.6 s (in-zone answers take microseconds,
/// forwards milliseconds).
pub(crate) fn bounds() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.00001, 4.0, BOUNDS)
}

const BOUNDS: u16 = 10;

/// Durations in buckets of [`bounds`]; clones share the counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Durations(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Per bound, and one beyond the last: observations in that bucket alone.
    counts: [AtomicU64; BOUNDS as usize + 1],
    sum_nanos: AtomicU64,
}

impl Durations {
    /// Counts `n` observations of `took`.
    pub(crate) fn observe(&self, took: Duration, n: u64) {
        let secs = took.as_secs_f64();
        let bucket = bounds().position(|b| secs <= b).unwrap_or(BOUNDS as usize);
        self.0.counts[bucket].fetch_add(n, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos.saturating_mul(n), Relaxed);
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // The encoder makes the counts cumulative; `count` is their total, so the two agree.
        let buckets: Vec<(f64, u64)> = bounds()
            .chain([f64::INFINITY])
            .zip(&self.0.counts)
            .map(|(bound, count)| (bound, count.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn counts_many_observations_in_their_bucket_and_sum() {
        let durations = Durations::default();
        durations.observe(Duration::from_micros(5), 32);
        durations.observe(Duration::from_micros(30), 1);
        durations.observe(Duration::from_secs(10), 2);
        let mut registry = Registry::default();
        registry.register("took_seconds", "test", durations.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "took_seconds_count 35",
            "took_seconds_bucket{le=\"0.00001\"} 32",
            "took_seconds_bucket{le=\"0.00004\"} 33",
            "took_seconds_bucket{le=\"2.62144\"} 33",
            "took_seconds_bucket{le=\"+Inf\"} 35",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("took_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 20.00019).abs() < 1e-9, "{sum}");
    }
}
