//! Sample statistics and the per-metric record written to the results files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds a metric is compared against (`stat ≤ bound`), keyed by statistic name
/// (`p50`, `p90`, `p99`, `mean`, `max`).
pub type Target = BTreeMap<String, f64>;

/// One metric of a run: percentiles are nearest-rank (`sorted[ceil(p·n) − 1]`), so with
/// n = 20 the p99 is the maximum.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
    pub unit: String,
    /// `null` when the metric has no target (informational).
    pub target: Option<Target>,
    /// `null` when there is no target.
    pub meets_target: Option<bool>,
    /// What was measured, for the summary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub what: String,
    /// Failed samples (not included in the statistics).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: usize,
    /// The samples in the order taken (only where kept, for later analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<f64>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Three decimals (µs for ms, KiB-ish for MiB): the noise is far larger.
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Metric {
    /// Statistics of `samples` (any order); NaN everywhere when empty.
    pub fn from_samples(samples: &[f64], unit: &str, what: &str) -> Metric {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            s.iter().sum::<f64>() / n as f64
        };
        Metric {
            p50: round3(percentile(&s, 0.50)),
            p90: round3(percentile(&s, 0.90)),
            p99: round3(percentile(&s, 0.99)),
            mean: round3(mean),
            min: round3(s.first().copied().unwrap_or(f64::NAN)),
            max: round3(s.last().copied().unwrap_or(f64::NAN)),
            n,
            unit: unit.to_owned(),
            target: None,
            meets_target: None,
            what: what.to_owned(),
            errors: 0,
            samples: None,
        }
    }

    /// Keeps `samples` (in the order taken, two decimals) in the record.
    pub fn keep_samples(mut self, samples: &[f64]) -> Metric {
        self.samples = Some(
            samples
                .iter()
                .map(|x| (x * 100.0).round() / 100.0)
                .collect(),
        );
        self
    }

    /// Durations in milliseconds.
    pub fn from_durations(samples: &[Duration], what: &str) -> Metric {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Metric::from_samples(&ms, "ms", what)
    }

    pub fn with_errors(mut self, errors: usize) -> Metric {
        self.errors = errors;
        self
    }

    /// Sets the target and evaluates it (a metric without samples, or with failed samples,
    /// does not meet its target).
    pub fn with_target(mut self, bounds: &[(&str, f64)]) -> Metric {
        let target: Target = bounds.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        let ok = self.n > 0
            && self.errors == 0
            && target
                .iter()
                .all(|(k, bound)| self.stat(k).is_some_and(|v| v <= *bound));
        self.target = Some(target);
        self.meets_target = Some(ok);
        self
    }

    pub fn stat(&self, name: &str) -> Option<f64> {
        Some(match name {
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "mean" => self.mean,
            "min" => self.min,
            "max" => self.max,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), 50.0);
        assert_eq!(percentile(&s, 0.9), 90.0);
        assert_eq!(percentile(&s, 0.99), 99.0);
        let t: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&t, 0.99), 20.0);
        assert_eq!(percentile(&t, 0.5), 10.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn targets() {
        let m = Metric::from_samples(&[1.0, 2.0, 3.0], "ms", "").with_target(&[("p50", 2.0)]);
        assert_eq!(m.meets_target, Some(true));
        let m = Metric::from_samples(&[1.0, 2.0, 3.0], "ms", "")
            .with_target(&[("p50", 2.0), ("p99", 2.5)]);
        assert_eq!(m.meets_target, Some(false));
        let m = Metric::from_samples(&[], "ms", "").with_target(&[("p50", 2.0)]);
        assert_eq!(m.meets_target, Some(false));
        let m = Metric::from_samples(&[1.0], "ms", "")
            .with_errors(1)
            .with_target(&[("p50", 2.0)]);
        assert_eq!(m.meets_target, Some(false));
    }
}
