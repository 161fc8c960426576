//! Prometheus metrics (`[prometheus_exporter] cni_exporter_port`, default 9655, `/metrics`).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `kuryr_cni_requests_total` | `command`, `result` (`ok` or the CNI code) | requests served |
//! | `kuryr_cni_requests_in_flight` | `command` | requests being served now (an ADD waiting for its VIF counts) |
//! | `kuryr_cni_request_duration_seconds` | `command`, `error` (`true`/`false`) | whole request (upstream's name) |
//! | `kuryr_cni_stage_duration_seconds` | `stage` (`wait_vif`, `plug` or `move`, `l3`, `wait_active`) | ADD stages (`move`: the ADD only moved pre-plugged interfaces, `plug`: it plugged at least one) |
//! | `kuryr_cni_stage_duration_seconds` | `stage` (`ovs_attach`, `announce`) | after-ADD work, off the request path |
//! | `kuryr_cni_stage_duration_seconds` | `stage` (`preplug`) | pre-plugging one pool port (background) |
//! | `kuryr_cni_background_failures_total` | `task` (`ovs_attach`, `announce`, `preplug`, `pool_unplug`) | background work that failed |
//! | `kuryr_cni_attachments` | | attachments recorded on this node |
//! | `kuryr_cni_add_path_total` | `path` (`preplugged`, `plug`) | ADDs served by moving pre-plugged interfaces only, or by plugging |
//! | `kuryr_cni_pool_held` | | pre-plugged ports waiting in the holding netns |
//! | `kuryr_cni_pool_operations_total` | `op` (`preplug`, `adopt`, `replug_ovs`, `unplug`) | what the pool reconciler did |
//! | `kuryr_cni_ovs_stale_repairs_total` | `found_by` (`after_add`, `preplug`, `adopt`, `take`, `check`, `audit`), `result` (`repaired`, `failed`) | OVS ports whose device ovs-vswitchd did not hold (a device re-created under an existing OVS port: re-added) or held down (set up) |
//! | `kuryr_cni_ovs_stale_ports` | | ports the last audit found stale and could not repair |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandResult {
    command: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandError {
    command: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stage {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Task {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddPath {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StaleRepair {
    found_by: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolOp {
    op: String,
}

/// Buckets from 1 ms (a pre-plugged ADD) to 3 min (upstream's longest).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A request in flight ([`Metrics::started`]); dropping it (served, failed or cancelled)
/// counts it out.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The daemon's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<CommandResult, Counter>,
    in_flight: Family<CommandLabel, Gauge>,
    durations: Family<CommandError, Histogram, fn() -> Histogram>,
    stages: Family<Stage, Histogram, fn() -> Histogram>,
    attachments: Gauge,
    background_failures: Family<Task, Counter>,
    add_paths: Family<AddPath, Counter>,
    pool_held: Gauge,
    pool_ops: Family<PoolOp, Counter>,
    stale_repairs: Family<StaleRepair, Counter>,
    stale_ports: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CommandResult, Counter>::default();
        let durations = Family::<CommandError, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let stages = Family::<Stage, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let attachments = Gauge::default();
        let background_failures = Family::<Task, Counter>::default();
        registry.register(
            "kuryr_cni_background_failures",
            "After-ADD work that failed: ovs_attach (vswitchd did not attach the OVS port), announce (gratuitous ARP / unsolicited NA)",
            background_failures.clone(),
        );
        registry.register(
            "kuryr_cni_requests",
            "CNI requests served, by command and result (ok or the CNI error code)",
            requests.clone(),
        );
        let in_flight = Family::<CommandLabel, Gauge>::default();
        registry.register(
            "kuryr_cni_requests_in_flight",
            "CNI requests being served now, by command (an ADD waiting for its VIF counts)",
            in_flight.clone(),
        );
        registry.register(
            "kuryr_cni_request_duration_seconds",
            "Duration of CNI requests",
            durations.clone(),
        );
        registry.register(
            "kuryr_cni_stage_duration_seconds",
            "Duration of ADD stages: wait_vif (controller), plug, l3, wait_active (Neutron)",
            stages.clone(),
        );
        registry.register(
            "kuryr_cni_attachments",
            "Pod attachments recorded on this node",
            attachments.clone(),
        );
        let add_paths = Family::<AddPath, Counter>::default();
        let pool_held = Gauge::default();
        let pool_ops = Family::<PoolOp, Counter>::default();
        registry.register(
            "kuryr_cni_add_path",
            "ADDs by how the interfaces got into the pod: preplugged (moved from the holding netns only) or plug (at least one plugged)",
            add_paths.clone(),
        );
        registry.register(
            "kuryr_cni_pool_held",
            "Pre-plugged pool ports waiting in the holding netns",
            pool_held.clone(),
        );
        registry.register(
            "kuryr_cni_pool_operations",
            "Pool reconciler operations: preplug, adopt (found after a restart), replug_ovs (adopted without its OVS port), unplug",
            pool_ops.clone(),
        );
        let stale_repairs = Family::<StaleRepair, Counter>::default();
        let stale_ports = Gauge::default();
        registry.register(
            "kuryr_cni_ovs_stale_repairs",
            "OVS ports whose device ovs-vswitchd did not hold (device re-created under an existing OVS port), re-added; by who found it and whether vswitchd held the device afterwards",
            stale_repairs.clone(),
        );
        registry.register(
            "kuryr_cni_ovs_stale_ports",
            "OVS ports of this daemon whose device ovs-vswitchd does not hold, after the last audit's repairs",
            stale_ports.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            stale_repairs,
            stale_ports,
            requests,
            in_flight,
            durations,
            stages,
            attachments,
            background_failures,
            add_paths,
            pool_held,
            pool_ops,
        }
    }

    /// One request started: counted in flight until the returned guard is dropped.
    pub fn started(&self, command: &str) -> InFlight {
        let gauge = self.in_flight.get_or_create(&CommandLabel {
            command: command.to_owned(),
        });
        gauge.inc();
        InFlight(gauge.clone())
    }

    /// One finished request; `code` is `None` on success.
    pub fn request(&self, command: &str, code: Option<u32>, took: Duration) {
        let result = code.map_or_else(|| "ok".to_owned(), |c| c.to_string());
        self.requests
            .get_or_create(&CommandResult {
                command: command.to_owned(),
                result,
            })
            .inc();
        self.durations
            .get_or_create(&CommandError {
                command: command.to_owned(),
                error: code.is_some().to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn stage(&self, stage: &str, took: Duration) {
        self.stages
            .get_or_create(&Stage {
                stage: stage.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn background_failure(&self, task: &str) {
        self.background_failures
            .get_or_create(&Task {
                task: task.to_owned(),
            })
            .inc();
    }

    pub fn set_attachments(&self, n: usize) {
        self.attachments.set(n as i64);
    }

    /// One ADD served: `preplugged` or `plug`.
    pub fn add_path(&self, path: &str) {
        self.add_paths
            .get_or_create(&AddPath {
                path: path.to_owned(),
            })
            .inc();
    }

    pub fn set_pool_held(&self, n: usize) {
        self.pool_held.set(n as i64);
    }

    pub fn pool_held_dec(&self) {
        self.pool_held.dec();
    }

    pub fn pool_op(&self, op: &str) {
        self.pool_ops
            .get_or_create(&PoolOp { op: op.to_owned() })
            .inc();
    }

    /// A stale OVS port re-added: `found_by` (`after_add`, `check`, `audit`, ...), `repaired`.
    pub fn stale_repair(&self, found_by: &str, repaired: bool) {
        self.stale_repairs
            .get_or_create(&StaleRepair {
                found_by: found_by.to_owned(),
                result: if repaired { "repaired" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    pub fn set_stale_ports(&self, n: usize) {
        self.stale_ports.set(n as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_requests_stages_and_attachments() {
        let m = Metrics::new();
        m.request("ADD", None, Duration::from_millis(30));
        m.request("ADD", Some(11), Duration::from_secs(60));
        m.stage("wait_active", Duration::from_millis(200));
        m.set_attachments(3);
        m.add_path("preplugged");
        m.set_pool_held(2);
        m.pool_held_dec();
        m.pool_op("preplug");
        m.stale_repair("audit", true);
        m.set_stale_ports(1);
        let text = m.encode();
        assert!(
            text.contains(
                r#"kuryr_cni_ovs_stale_repairs_total{found_by="audit",result="repaired"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("kuryr_cni_ovs_stale_ports 1"), "{text}");
        assert!(
            text.contains(r#"kuryr_cni_add_path_total{path="preplugged"} 1"#),
            "{text}"
        );
        assert!(text.contains("kuryr_cni_pool_held 1"), "{text}");
        assert!(
            text.contains(r#"kuryr_cni_pool_operations_total{op="preplug"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kuryr_cni_requests_total{command="ADD",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kuryr_cni_requests_total{command="ADD",result="11"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kuryr_cni_stage_duration_seconds_count{stage="wait_active"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"kuryr_cni_request_duration_seconds_bucket{le="0.05",command="ADD",error="false"} 1"#), "{text}");
        assert!(text.contains("kuryr_cni_attachments 3"), "{text}");
    }

    #[test]
    fn counts_requests_in_flight_until_the_guard_goes() {
        let m = Metrics::new();
        let add = m.started("ADD");
        let add2 = m.started("ADD");
        drop(m.started("DEL"));
        let text = m.encode();
        assert!(
            text.contains(r#"kuryr_cni_requests_in_flight{command="ADD"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kuryr_cni_requests_in_flight{command="DEL"} 0"#),
            "{text}"
        );
        drop((add, add2));
        assert!(m
            .encode()
            .contains(r#"kuryr_cni_requests_in_flight{command="ADD"} 0"#));
    }
}
