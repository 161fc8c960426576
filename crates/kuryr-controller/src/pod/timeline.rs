//! When each pod passed each stage (seen, port, VIF, ACTIVE), for the stage histograms.

use crate::runtime::metrics::{Metrics, Stage};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each pod passed each stage, for the stage histograms. Keyed by pod UID.
#[derive(Debug, Default)]
pub struct Timeline {
    inner: Mutex<HashMap<String, Times>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Times {
    seen: Option<Instant>,
    port: Option<Instant>,
    vif: Option<Instant>,
}

/// Entries are dropped after this long even if the pod never got ACTIVE.
const TIMELINE_MAX_AGE: Duration = Duration::from_secs(1800);

impl Timeline {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Times>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// The pod controller saw the pod (first time only counts).
    pub fn pod_seen(&self, uid: &str) {
        self.with(|m| {
            if m.len() > 10_000 {
                m.retain(|_, t| t.seen.is_some_and(|s| s.elapsed() < TIMELINE_MAX_AGE));
            }
            m.entry(uid.to_string()).or_default().seen.get_or_insert_with(Instant::now);
        });
    }

    /// The port exists (created or adopted): observes `pod_to_port`.
    pub fn port_ready(&self, uid: &str, metrics: &Metrics) {
        self.with(|m| {
            let t = m.entry(uid.to_string()).or_default();
            let now = Instant::now();
            if let (Some(seen), None) = (t.seen, t.port) {
                metrics.observe_stage(Stage::PodToPort, now - seen);
            }
            t.port.get_or_insert(now);
        });
    }

    /// The VIF is in the KuryrPort status: observes `port_to_vif`.
    pub fn vif_written(&self, uid: &str, metrics: &Metrics) {
        self.with(|m| {
            let t = m.entry(uid.to_string()).or_default();
            let now = Instant::now();
            if let (Some(port), None) = (t.port, t.vif) {
                metrics.observe_stage(Stage::PortToVif, now - port);
            }
            t.vif.get_or_insert(now);
        });
    }

    /// The port is ACTIVE: observes `vif_to_active` and `pod_to_active`, forgets the pod.
    pub fn active(&self, uid: &str, metrics: &Metrics) {
        if let Some(t) = self.with(|m| m.remove(uid)) {
            let now = Instant::now();
            if let Some(vif) = t.vif {
                metrics.observe_stage(Stage::VifToActive, now - vif);
            }
            if let Some(seen) = t.seen {
                metrics.observe_stage(Stage::PodToActive, now - seen);
            }
        }
    }

    /// The pod's port is gone: forget it.
    pub fn forget(&self, uid: &str) {
        self.with(|m| m.remove(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_observes_each_stage_once() {
        let m = Metrics::new();
        let t = Timeline::default();
        t.pod_seen("u");
        t.pod_seen("u");
        t.port_ready("u", &m);
        t.port_ready("u", &m);
        t.vif_written("u", &m);
        t.active("u", &m);
        t.active("u", &m);
        let text = m.encode();
        for stage in ["pod_to_port", "port_to_vif", "vif_to_active", "pod_to_active"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("kuryr_controller_stage_duration_seconds_count") && l.contains(stage) && l.ends_with(" 1")),
                "{stage} once:\n{text}"
            );
        }
    }
}
