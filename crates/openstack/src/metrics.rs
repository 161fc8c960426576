//! Per-request metrics hook.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::session::Service;

/// One HTTP exchange with OpenStack (each attempt is recorded, including a 401 retried).
#[derive(Clone, Debug)]
pub struct RequestRecord<'a> {
    pub service: Service,
    pub method: &'a Method,
    /// Path with ids replaced by `{id}` (low cardinality).
    pub path: &'a str,
    /// `None` when no HTTP answer came back (transport error).
    pub status: Option<StatusCode>,
    pub latency: Duration,
}

/// Receives a [`RequestRecord`] after every request. Must be cheap and non-blocking.
pub trait Metrics: Send + Sync {
    fn record(&self, record: &RequestRecord<'_>);
}

impl<F> Metrics for F
where
    F: Fn(&RequestRecord<'_>) + Send + Sync,
{
    fn record(&self, record: &RequestRecord<'_>) {
        self(record)
    }
}

/// Shared metrics sink.
pub type MetricsSink = Arc<dyn Metrics>;

/// Key of [`RequestCounters`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub service: Service,
    pub method: String,
    pub path: String,
    /// 0 for transport errors.
    pub status: u16,
}

/// Aggregated values of [`RequestCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub count: u64,
    pub total_latency: Duration,
    pub max_latency: Duration,
}

/// A ready-made [`Metrics`] that counts requests and sums latencies.
#[derive(Debug, Default)]
pub struct RequestCounters {
    inner: Mutex<BTreeMap<CounterKey, CounterValue>>,
}

impl RequestCounters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Current counters, sorted by key.
    pub fn snapshot(&self) -> Vec<(CounterKey, CounterValue)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Total number of recorded requests.
    pub fn total(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.values().map(|v| v.count).sum()
    }
}

impl Metrics for RequestCounters {
    fn record(&self, r: &RequestRecord<'_>) {
        let key = CounterKey {
            service: r.service,
            method: r.method.as_str().to_owned(),
            path: r.path.to_owned(),
            status: r.status.map_or(0, |s| s.as_u16()),
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.entry(key).or_default();
        v.count += 1;
        v.total_latency += r.latency;
        v.max_latency = v.max_latency.max(r.latency);
    }
}

/// Replaces id-like path segments (UUIDs, long hex, digits) with `{id}`.
pub(crate) fn path_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|seg| if looks_like_id(seg) { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn looks_like_id(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let hexish = seg.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    let digits = seg.bytes().all(|c| c.is_ascii_digit());
    (hexish && seg.len() >= 16) || digits || seg.contains('%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            path_template("/v2.0/ports/3c3f6f7a-0fd6-4bd5-8bc6-4b3a1c1f3a6e/tags"),
            "/v2.0/ports/{id}/tags"
        );
        assert_eq!(
            path_template("/v2/lbaas/loadbalancers?cascade=true"),
            "/v2/lbaas/loadbalancers"
        );
        assert_eq!(
            path_template("/v2.0/trunks/0f1e2d3c4b5a69788796a5b4c3d2e1f0/add_subports"),
            "/v2.0/trunks/{id}/add_subports"
        );
        assert_eq!(
            path_template("/v2.0/security-groups"),
            "/v2.0/security-groups"
        );
    }

    #[test]
    fn counters_and_closures() {
        let c = RequestCounters::new();
        for (status, ms) in [
            (Some(StatusCode::OK), 5),
            (Some(StatusCode::OK), 7),
            (None, 1),
        ] {
            c.record(&RequestRecord {
                service: Service::Network,
                method: &Method::GET,
                path: "/v2.0/ports",
                status,
                latency: Duration::from_millis(ms),
            });
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].0.status, 0);
        assert_eq!(snap[1].1.count, 2);
        assert_eq!(snap[1].1.total_latency, Duration::from_millis(12));
        assert_eq!(snap[1].1.max_latency, Duration::from_millis(7));
        assert_eq!(c.total(), 3);

        let seen = Arc::new(Mutex::new(0));
        let s2 = seen.clone();
        let f: MetricsSink = Arc::new(move |_: &RequestRecord<'_>| *s2.lock().unwrap() += 1);
        f.record(&RequestRecord {
            service: Service::LoadBalancer,
            method: &Method::PUT,
            path: "/",
            status: None,
            latency: Duration::ZERO,
        });
        assert_eq!(*seen.lock().unwrap(), 1);
    }
}
