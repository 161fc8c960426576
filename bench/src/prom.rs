//! Just enough of the Prometheus text format to read the daemon's histograms
//! (`kuryr_cni_stage_duration_seconds`, `kuryr_cni_request_duration_seconds`) and turn the
//! difference of two scrapes into a [`Metric`].

use std::collections::BTreeMap;

use crate::stats::Metric;

/// `name{labels}` → value, labels kept in their text order.
#[derive(Clone, Debug, Default)]
pub struct Scrape(pub BTreeMap<String, f64>);

/// A cumulative histogram: bucket upper bounds with counts, sum, count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    // Values are quoted and never contain `",` in our metrics.
    s.split("\",")
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((k, v)) = line.rsplit_once(' ') {
                if let Ok(v) = v.parse::<f64>() {
                    m.insert(k.to_owned(), v);
                }
            }
        }
        Scrape(m)
    }

    /// A counter or gauge with exactly these labels (in this order); 0 if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// The histogram `name` whose labels include all of `want`.
    pub fn histogram(&self, name: &str, want: &[(&str, &str)]) -> Histogram {
        let mut h = Histogram::default();
        for (k, v) in &self.0 {
            let (metric, labels) = match k.split_once('{') {
                Some((m, rest)) => (m, parse_labels(rest.trim_end_matches('}'))),
                None => (k.as_str(), vec![]),
            };
            let matches = want
                .iter()
                .all(|(wk, wv)| labels.iter().any(|(k, v)| k == wk && v == wv));
            if !matches {
                continue;
            }
            if metric == format!("{name}_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("+Inf");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                h.buckets.push((le, *v));
            } else if metric == format!("{name}_sum") {
                h.sum = *v;
            } else if metric == format!("{name}_count") {
                h.count = *v;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }
}

impl Histogram {
    /// `self − before` (same buckets).
    pub fn minus(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |x| x.1);
                    (*le, c - b)
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// Prometheus' `histogram_quantile`: linear interpolation inside the bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count <= 0.0 || self.buckets.is_empty() {
            return f64::NAN;
        }
        let rank = q * self.count;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return prev.0;
                }
                let span = c - prev.1;
                return if span <= 0.0 {
                    le
                } else {
                    prev.0 + (le - prev.0) * (rank - prev.1) / span
                };
            }
            prev = (le, c);
        }
        prev.0
    }

    /// In milliseconds; percentiles are bucket interpolations, `min`/`max` unknown (NaN).
    pub fn to_metric(&self, what: &str) -> Metric {
        let ms = |s: f64| crate::stats::round3(s * 1e3);
        Metric {
            p50: ms(self.quantile(0.5)),
            p90: ms(self.quantile(0.9)),
            p99: ms(self.quantile(0.99)),
            mean: if self.count > 0.0 {
                ms(self.sum / self.count)
            } else {
                f64::NAN
            },
            min: f64::NAN,
            max: f64::NAN,
            n: self.count.max(0.0) as usize,
            unit: "ms".into(),
            target: None,
            meets_target: None,
            what: what.into(),
            errors: 0,
            samples: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP kuryr_cni_stage_duration_seconds x
# TYPE kuryr_cni_stage_duration_seconds histogram
kuryr_cni_stage_duration_seconds_sum{stage="plug"} 0.3
kuryr_cni_stage_duration_seconds_count{stage="plug"} 10
kuryr_cni_stage_duration_seconds_bucket{le="0.005",stage="plug"} 0
kuryr_cni_stage_duration_seconds_bucket{le="0.01",stage="plug"} 4
kuryr_cni_stage_duration_seconds_bucket{le="0.05",stage="plug"} 10
kuryr_cni_stage_duration_seconds_bucket{le="+Inf",stage="plug"} 10
kuryr_cni_stage_duration_seconds_count{stage="l3"} 3
kuryr_cni_request_duration_seconds_count{command="ADD",error="false"} 10
"#;

    #[test]
    fn histogram_and_quantiles() {
        let s = Scrape::parse(TEXT);
        let h = s.histogram("kuryr_cni_stage_duration_seconds", &[("stage", "plug")]);
        assert_eq!(h.count, 10.0);
        assert_eq!(h.buckets.len(), 4);
        // rank 5 lies in (0.01, 0.05] holding 6: 0.01 + 0.04 * 1/6.
        assert!((h.quantile(0.5) - (0.01 + 0.04 / 6.0)).abs() < 1e-9);
        let d = h.minus(&Histogram::default());
        assert_eq!(d, h);
        let m = h.to_metric("plug");
        assert!((m.mean - 30.0).abs() < 1e-9);
        assert_eq!(
            s.histogram(
                "kuryr_cni_request_duration_seconds",
                &[("command", "ADD"), ("error", "false")]
            )
            .count,
            10.0
        );
    }
}
