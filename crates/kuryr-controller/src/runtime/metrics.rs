//! Prometheus metrics (`[prometheus_exporter] controller_exporter_port`, 9654). Nothing here calls
//! OpenStack at scrape time (upstream listed ports and quotas on every scrape).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kuryr_controller_stage_duration_seconds` | histogram | `stage`: `pod_to_port` (pod seen → Neutron port created or adopted), `port_to_vif` (→ KuryrPort VIF written), `vif_to_active` (→ ACTIVE seen), `pod_to_active` (pod seen → ACTIVE) |
//! | `kuryr_pod_creation_latency` | histogram | (upstream name) PodScheduled → port ACTIVE, seconds |
//! | `kuryr_openstack_requests_total` | counter | `service`, `method`, `path` (ids templated), `status` (0 = no answer) |
//! | `kuryr_openstack_request_duration_seconds` | histogram | `service`, `method`, `path` |
//! | `kuryr_controller_reconciles_total` | counter | `controller` |
//! | `kuryr_controller_reconcile_errors_total` | counter | `controller`, `error` |
//! | `kuryr_controller_pending_activations` | gauge | ports the activator waits on |
//! | `kuryr_controller_activation_polls_total` | counter | batched `GET /v2.0/ports?id=…` polls |
//! | `kuryr_port_readiness_total` | counter | (upstream name) ports past the activation deadline |
//! | `kuryr_controller_leader` | gauge | 1 while this replica may write |
//! | `kuryr_controller_pool_ports` | gauge | `node`: free warm-pool ports |
//! | `kuryr_controller_pool_events_total` | counter | `outcome`: `created` (bulk), `claimed`, `recycled`, `deleted`, `miss` (a pod found the pool empty) |
//! | `kuryr_controller_adopted_total` | counter | `kind`: `port`, `network`, `loadbalancer`: an OpenStack object found for a resource whose status did not record it (made before a crash, or by an attempt whose status write failed) and taken instead of creating another |

use kuryr_openstack::{Metrics as OsMetrics, RequestRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Pipeline stages of a pod's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Pod first seen → Neutron port created (or adopted).
    PodToPort,
    /// Port created → VIF written into KuryrPort status.
    PortToVif,
    /// VIF written → Neutron reports ACTIVE.
    VifToActive,
    /// Pod first seen → ACTIVE.
    PodToActive,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PodToPort => "pod_to_port",
            Stage::PortToVif => "port_to_vif",
            Stage::VifToActive => "vif_to_active",
            Stage::PodToActive => "pod_to_active",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OsLabels {
    service: &'static str,
    method: String,
    path: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OsLatencyLabels {
    service: &'static str,
    method: String,
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    error: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 5 ms … ~80 s: the pod path should be sub-second; the tail shows OpenStack trouble.
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0])
}

fn request_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// All controller metrics and their registry.
pub struct Metrics {
    registry: Registry,
    stages: HistogramFamily<StageLabels>,
    pod_creation_latency: Histogram,
    os_requests: Family<OsLabels, Counter>,
    os_latency: HistogramFamily<OsLatencyLabels>,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    pending_activations: Gauge,
    activation_polls: Counter,
    port_readiness: Counter,
    leader: Gauge,
    gc_deleted: Family<KindLabels, Counter>,
    pool_ports: Family<NodeLabels, Gauge>,
    pool_events: Family<OutcomeLabels, Counter>,
    adoption_lookups: Family<OutcomeLabels, Counter>,
    adopted: Family<KindLabels, Counter>,
    lb_converge: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
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
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let stages = HistogramFamily::<StageLabels>::new_with_constructor(stage_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "kuryr_controller_stage_duration",
            "Time between stages of a pod's port: pod_to_port, port_to_vif, vif_to_active, pod_to_active",
            Unit::Seconds,
            stages.clone(),
        );
        let pod_creation_latency = Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 90.0, 120.0]);
        registry.register(
            "kuryr_pod_creation_latency",
            "Seconds from the pod's PodScheduled condition to its port being ACTIVE (upstream kuryr metric)",
            pod_creation_latency.clone(),
        );
        let os_requests = Family::<OsLabels, Counter>::default();
        registry.register(
            "kuryr_openstack_requests",
            "OpenStack API requests by service, method, path and HTTP status (0 = no answer)",
            os_requests.clone(),
        );
        let os_latency = HistogramFamily::<OsLatencyLabels>::new_with_constructor(request_histogram as fn() -> Histogram);
        registry.register_with_unit("kuryr_openstack_request_duration", "OpenStack API request latency", Unit::Seconds, os_latency.clone());
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("kuryr_controller_reconciles", "Reconciliations run, by controller", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "kuryr_controller_reconcile_errors",
            "Failed reconciliations, by controller and error kind",
            reconcile_errors.clone(),
        );
        let pending_activations = Gauge::default();
        registry.register(
            "kuryr_controller_pending_activations",
            "Ports the activator is waiting on to become ACTIVE",
            pending_activations.clone(),
        );
        let activation_polls = Counter::default();
        registry.register(
            "kuryr_controller_activation_polls",
            "Batched Neutron port status polls by the activator",
            activation_polls.clone(),
        );
        let port_readiness = Counter::default();
        registry.register(
            "kuryr_port_readiness",
            "Ports not ACTIVE within the activation deadline (upstream kuryr metric)",
            port_readiness.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "kuryr_controller_leader",
            "1 while this replica holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let gc_deleted = Family::<KindLabels, Counter>::default();
        registry.register(
            "kuryr_controller_gc_deleted",
            "Orphaned OpenStack resources deleted by the mark-and-sweep GC, by kind",
            gc_deleted.clone(),
        );
        let pool_ports = Family::<NodeLabels, Gauge>::default();
        registry.register("kuryr_controller_pool_ports", "Free ports in the node's warm pools", pool_ports.clone());
        let adoption_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kuryr_controller_adoption_lookups",
            "Pod port acquisitions by whether Neutron was asked for a port an earlier attempt left (done) or the KuryrPort was known fresh (skipped)",
            adoption_lookups.clone(),
        );
        let adopted = Family::<KindLabels, Counter>::default();
        registry.register(
            "kuryr_controller_adopted",
            "OpenStack objects adopted (found by their stamp, not recorded in the status) instead of created, by kind: port, network, loadbalancer",
            adopted.clone(),
        );
        let pool_events = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kuryr_controller_pool_events",
            "Warm-pool port events: created (bulk), claimed, recycled, deleted, miss (pool empty)",
            pool_events.clone(),
        );
        let lb_converge = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register_with_unit(
            "kuryr_controller_lb_converge",
            "From a Service or EndpointSlice change (the KuryrLoadBalancer spec written) to Octavia converged (load balancer ACTIVE again)",
            Unit::Seconds,
            lb_converge.clone(),
        );
        Metrics {
            registry,
            stages,
            pod_creation_latency,
            os_requests,
            os_latency,
            reconciles,
            reconcile_errors,
            pending_activations,
            activation_polls,
            port_readiness,
            leader,
            gc_deleted,
            pool_ports,
            pool_events,
            adoption_lookups,
            adopted,
            lb_converge,
        }
    }

    pub fn observe_lb_converge(&self, d: Duration) {
        self.lb_converge.observe(d.as_secs_f64());
    }

    pub fn observe_stage(&self, stage: Stage, d: Duration) {
        self.stages.get_or_create(&StageLabels { stage: stage.as_str() }).observe(d.as_secs_f64());
    }

    pub fn observe_pod_creation(&self, secs: f64) {
        if secs.is_finite() && secs >= 0.0 {
            self.pod_creation_latency.observe(secs);
        }
    }

    pub fn reconciled(&self, controller: &'static str) {
        self.reconciles.get_or_create(&ControllerLabels { controller }).inc();
    }

    pub fn reconcile_error(&self, controller: &'static str, error: &'static str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { controller, error }).inc();
    }

    pub fn set_pending_activations(&self, n: usize) {
        self.pending_activations.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn activation_poll(&self) {
        self.activation_polls.inc();
    }

    pub fn port_not_ready(&self) {
        self.port_readiness.inc();
    }

    pub fn gc_deleted(&self, kind: &'static str) {
        self.gc_deleted.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn set_pool_size(&self, node: &str, n: usize) {
        self.pool_ports.get_or_create(&NodeLabels { node: node.to_string() }).set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn adoption_lookup(&self, done: bool) {
        self.adoption_lookups.get_or_create(&OutcomeLabels { outcome: if done { "done" } else { "skipped" } }).inc();
    }

    /// An unrecorded OpenStack object of `kind` (`port`, `network`, `loadbalancer`) was adopted.
    pub fn adopted(&self, kind: &'static str) {
        self.adopted.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn pool_event(&self, outcome: &'static str, n: u64) {
        self.pool_events.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// kuryr-openstack's per-request hook → the OpenStack request metrics.
impl OsMetrics for Metrics {
    fn record(&self, r: &RequestRecord<'_>) {
        let service = r.service.name();
        let method = r.method.as_str().to_string();
        self.os_requests
            .get_or_create(&OsLabels {
                service,
                method: method.clone(),
                path: r.path.to_string(),
                status: r.status.map_or(0, |s| s.as_u16()),
            })
            .inc();
        self.os_latency.get_or_create(&OsLatencyLabels { service, method, path: r.path.to_string() }).observe(r.latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_openstack::session::Service;
    use kuryr_openstack::{Method, StatusCode};

    #[test]
    fn exposes_the_documented_names() {
        let m = Metrics::new();
        m.observe_stage(Stage::PodToPort, Duration::from_millis(120));
        m.observe_pod_creation(3.0);
        m.reconciled("kuryrport");
        m.reconcile_error("kuryrport", "openstack");
        m.set_pending_activations(2);
        m.activation_poll();
        m.port_not_ready();
        m.set_leader(true);
        m.adopted("port");
        m.record(&RequestRecord {
            service: Service::Network,
            method: &Method::POST,
            path: "/v2.0/ports",
            status: Some(StatusCode::CREATED),
            latency: Duration::from_millis(80),
        });
        let text = m.encode();
        for want in [
            "kuryr_controller_stage_duration_seconds_bucket{le=\"0.25\",stage=\"pod_to_port\"} 1",
            "kuryr_pod_creation_latency_count 1",
            "kuryr_openstack_requests_total{service=\"neutron\",method=\"POST\",path=\"/v2.0/ports\",status=\"201\"} 1",
            "kuryr_openstack_request_duration_seconds_count{service=\"neutron\",method=\"POST\",path=\"/v2.0/ports\"} 1",
            "kuryr_controller_reconciles_total{controller=\"kuryrport\"} 1",
            "kuryr_controller_reconcile_errors_total{controller=\"kuryrport\",error=\"openstack\"} 1",
            "kuryr_controller_pending_activations 2",
            "kuryr_controller_activation_polls_total 1",
            "kuryr_port_readiness_total 1",
            "kuryr_controller_leader 1",
            "kuryr_controller_adopted_total{kind=\"port\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
