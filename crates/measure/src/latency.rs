//! Latency recording with hdrhistogram: fixed memory, no allocation per sample.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latency percentiles in microseconds; the JSON shape every tool emits (`latency_us`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub stdev: f64,
    pub samples: u64,
}

/// Records durations at nanosecond resolution, 1 ns .. 1 hour, 3 significant digits.
pub struct LatencyRecorder {
    histogram: hdrhistogram::Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    pub fn new() -> Self {
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("static histogram bounds are valid");
        Self { histogram }
    }

    pub fn record(&mut self, sample: Duration) {
        let nanos = (sample.as_nanos() as u64).clamp(1, self.histogram.high());
        self.histogram.saturating_record(nanos);
    }

    pub fn record_nanos(&mut self, nanos: u64) {
        self.histogram
            .saturating_record(nanos.clamp(1, self.histogram.high()));
    }

    /// Adds another recorder's samples (e.g. per-stream or per-thread histograms).
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Both have identical bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    pub fn clear(&mut self) {
        self.histogram.reset();
    }

    /// Summary in microseconds; `scale` divides every figure (0.5 turns RTT into one-way).
    pub fn summary_scaled(&self, scale: f64) -> LatencySummary {
        let us = |nanos: f64| nanos * scale / 1e3;
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary {
                min: 0.0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                stdev: 0.0,
                samples: 0,
            };
        }
        LatencySummary {
            min: us(h.min() as f64),
            mean: us(h.mean()),
            p50: us(h.value_at_quantile(0.50) as f64),
            p90: us(h.value_at_quantile(0.90) as f64),
            p99: us(h.value_at_quantile(0.99) as f64),
            p999: us(h.value_at_quantile(0.999) as f64),
            max: us(h.max() as f64),
            stdev: us(h.stdev()),
            samples: h.len(),
        }
    }

    pub fn summary(&self) -> LatencySummary {
        self.summary_scaled(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_microseconds() {
        let mut recorder = LatencyRecorder::new();
        for micros in 1..=1000u64 {
            recorder.record(Duration::from_micros(micros));
        }
        let s = recorder.summary();
        assert_eq!(s.samples, 1000);
        assert!((s.min - 1.0).abs() < 0.01);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 1.0, "{s:?}");
        assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
        let half = recorder.summary_scaled(0.5);
        assert!((half.p50 - s.p50 / 2.0).abs() < 1e-9);
    }

    #[test]
    fn empty_recorder_summarises_to_zero() {
        assert_eq!(LatencyRecorder::new().summary().samples, 0);
    }
}
