//! Readiness and liveness.
//!
//! * **ready**: both watch caches synced, the OVS bridge exists (ovs/hybrid nodes), and the
//!   API server answered the last probe. Gates the conflist, STATUS and `/ready`.
//! * **alive**: both watch tasks still run, the probe task is not wedged, and the rate of
//!   CNI failures that are the daemon's own fault over a sliding window stays under a
//!   threshold. Never a lifetime counter (upstream's counter only ever grew, so old daemons
//!   eventually declared themselves dead).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::watch::Cluster;

/// Outcomes of recent CNI requests, oldest first.
#[derive(Debug, Clone)]
pub struct FailureWindow {
    window: Duration,
    /// At least this many failures before the rate counts.
    min_failures: usize,
    /// Failure ratio at or above which the daemon is unhealthy.
    max_ratio: f64,
    events: VecDeque<(Instant, bool)>,
}

impl FailureWindow {
    pub fn new(window: Duration, min_failures: usize, max_ratio: f64) -> Self {
        FailureWindow {
            window,
            min_failures: min_failures.max(1),
            max_ratio,
            events: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.events.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records one outcome (`failed`: a failure that is the daemon's fault).
    pub fn record(&mut self, now: Instant, failed: bool) {
        self.expire(now);
        self.events.push_back((now, failed));
        // Bound memory under a flood of requests: keep the newest 10k outcomes.
        while self.events.len() > 10_000 {
            self.events.pop_front();
        }
    }

    /// (failures, total) within the window.
    pub fn counts(&mut self, now: Instant) -> (usize, usize) {
        self.expire(now);
        (
            self.events.iter().filter(|(_, f)| *f).count(),
            self.events.len(),
        )
    }

    /// `Some(reason)` when failures are too frequent.
    pub fn unhealthy(&mut self, now: Instant) -> Option<String> {
        let (failed, total) = self.counts(now);
        if failed >= self.min_failures && (failed as f64) >= self.max_ratio * total as f64 {
            Some(format!(
                "{failed} of the last {total} CNI requests within {}s failed in kuryr-daemon",
                self.window.as_secs()
            ))
        } else {
            None
        }
    }
}

/// Result of the periodic probe.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// When the probe loop last completed a round (wedge detection).
    pub last_round: Option<Instant>,
    /// API server answered in the last round.
    pub api_ok: bool,
    pub api_error: Option<String>,
    /// `None` when this node needs no OVS bridge (nested bindings).
    pub bridge_ok: Option<bool>,
    pub bridge_error: Option<String>,
}

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    pub cluster: Arc<Cluster>,
    pub probe: Mutex<ProbeState>,
    pub failures: Mutex<FailureWindow>,
    /// The probe loop must complete a round at least this often.
    pub probe_stall: Duration,
    /// A watch that only fails for this long is wedged (restarting may fix credentials or
    /// connections a backoff loop cannot).
    pub watch_stall: Duration,
    /// The OVS bridge readiness depends on (None for nested nodes).
    pub bridge: Option<String>,
    /// What the last audit of the daemon's OVS ports left unrepaired ([`crate::stale`]), by
    /// port name. Neither readiness nor liveness: a restart fixes none of it.
    pub ovs_ports: Mutex<Vec<String>>,
}

impl Health {
    pub fn new(cluster: Arc<Cluster>, bridge: Option<String>, failures: FailureWindow) -> Self {
        Health {
            cluster,
            probe: Mutex::new(ProbeState::default()),
            failures: Mutex::new(failures),
            probe_stall: Duration::from_secs(60),
            watch_stall: Duration::from_secs(600),
            bridge,
            ovs_ports: Mutex::default(),
        }
    }

    /// Records the last OVS port audit's unrepaired problems.
    pub fn set_ovs_port_problems(&self, problems: Vec<String>) {
        *self.ovs_ports.lock().unwrap_or_else(|p| p.into_inner()) = problems;
    }

    /// What is wrong with pods' networking on this node that the daemon could not repair
    /// (stale OVS ports, vswitchd down); empty = nothing known.
    pub fn degraded_reasons(&self) -> Vec<String> {
        self.ovs_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn record(&self, failed: bool) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(Instant::now(), failed);
    }

    /// Why the daemon cannot serve ADD (empty = ready).
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in [&self.cluster.kp_stream, &self.cluster.pod_stream] {
            if !s.synced() {
                let err = s.last_error().map(|e| format!(": {e}")).unwrap_or_default();
                out.push(format!("the {} watch has not synced yet{err}", s.name));
            }
        }
        let p = self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if p.last_round.is_none() {
            out.push("the first health probe has not completed yet".into());
        } else {
            if !p.api_ok {
                out.push(format!(
                    "the API server is unreachable: {}",
                    p.api_error.as_deref().unwrap_or("no answer")
                ));
            }
            if p.bridge_ok == Some(false) {
                out.push(
                    p.bridge_error
                        .unwrap_or_else(|| "the OVS bridge is missing".into()),
                );
            }
        }
        out
    }

    pub fn ready(&self) -> bool {
        self.not_ready_reasons().is_empty()
    }

    /// Why the daemon should be restarted (empty = alive).
    pub fn not_alive_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in [&self.cluster.kp_stream, &self.cluster.pod_stream] {
            if !s.running() {
                out.push(format!("the {} watch task is not running", s.name));
            }
            if let Some(t) = s.failing_for().filter(|t| *t > self.watch_stall) {
                out.push(format!(
                    "the {} watch has only failed for {}s: {}",
                    s.name,
                    t.as_secs(),
                    s.last_error().unwrap_or_default()
                ));
            }
        }
        if let Some(t) = self
            .probe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_round
        {
            if t.elapsed() > self.probe_stall {
                out.push(format!(
                    "the health probe has been stuck for {}s",
                    t.elapsed().as_secs()
                ));
            }
        }
        if let Some(r) = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unhealthy(Instant::now())
        {
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate_is_over_a_sliding_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = FailureWindow::new(Duration::from_secs(300), 3, 0.5);
        // Two failures: under the minimum, whatever the ratio.
        w.record(t0, true);
        w.record(t0 + s, true);
        assert_eq!(w.unhealthy(t0 + 2 * s), None);
        // A third makes 3 of 3.
        w.record(t0 + 2 * s, true);
        assert!(w.unhealthy(t0 + 3 * s).is_some());
        // Successes dilute the rate: 3 of 7 < 50%.
        for i in 0..4 {
            w.record(t0 + (3 + i) * s, false);
        }
        assert_eq!(w.unhealthy(t0 + 8 * s), None);
        assert_eq!(w.counts(t0 + 8 * s), (3, 7));
    }

    #[test]
    fn old_failures_age_out() {
        let t0 = Instant::now();
        let mut w = FailureWindow::new(Duration::from_secs(300), 3, 0.5);
        for i in 0..10 {
            w.record(t0 + Duration::from_secs(i), true);
        }
        assert!(w.unhealthy(t0 + Duration::from_secs(10)).is_some());
        // Five minutes later the same daemon is healthy again: no lifetime counter.
        let later = t0 + Duration::from_secs(10 + 301);
        assert_eq!(w.unhealthy(later), None);
        assert_eq!(w.counts(later), (0, 0));
        w.record(later, true);
        assert_eq!(
            w.unhealthy(later),
            None,
            "one new failure after the window is not unhealthy"
        );
    }

    #[test]
    fn readiness_needs_sync_probe_api_and_bridge() {
        let (cluster, mut w) = Cluster::new();
        let h = Health::new(
            cluster.clone(),
            Some("br-int".into()),
            FailureWindow::new(Duration::from_secs(300), 3, 0.5),
        );
        let r = h.not_ready_reasons();
        assert!(
            r.iter().any(|m| m.contains("kuryrports watch"))
                && r.iter().any(|m| m.contains("pods watch")),
            "{r:?}"
        );
        use kube::runtime::watcher::Event;
        cluster.apply_kuryrport(&mut w.kuryrports, &Event::Init);
        cluster.apply_kuryrport(&mut w.kuryrports, &Event::InitDone);
        cluster.apply_pod(&mut w.pods, &Event::Init);
        cluster.apply_pod(&mut w.pods, &Event::InitDone);
        assert_eq!(
            h.not_ready_reasons(),
            ["the first health probe has not completed yet"]
        );
        *h.probe.lock().expect("lock") = ProbeState {
            last_round: Some(Instant::now()),
            api_ok: true,
            api_error: None,
            bridge_ok: Some(false),
            bridge_error: Some("OVS bridge br-int does not exist".into()),
        };
        assert_eq!(h.not_ready_reasons(), ["OVS bridge br-int does not exist"]);
        h.probe.lock().expect("lock").bridge_ok = Some(true);
        assert!(h.ready());
        h.probe.lock().expect("lock").api_ok = false;
        assert!(!h.ready());
    }

    #[test]
    fn liveness_reports_stopped_watches_and_failure_rate() {
        let (cluster, _w) = Cluster::new();
        let h = Health::new(
            cluster,
            None,
            FailureWindow::new(Duration::from_secs(300), 2, 0.5),
        );
        // Watch tasks never started.
        assert_eq!(h.not_alive_reasons().len(), 2);
        h.record(true);
        h.record(true);
        assert!(
            h.not_alive_reasons()
                .iter()
                .any(|r| r.contains("2 of the last 2")),
            "{:?}",
            h.not_alive_reasons()
        );
    }
}
