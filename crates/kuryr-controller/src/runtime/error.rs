//! The controller's one error type. Every variant says which step failed and on which object;
//! OpenStack errors keep kuryr-openstack's message (`neutron POST /v2.0/ports failed: HTTP 409 …`),
//! so logs and Events tell a Kuryr fault from an OpenStack one.

use kuryr_openstack::Fault;
use std::time::Duration;

/// Why a reconcile (or start-up) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes {verb} {what}: {source}")]
    Kube {
        verb: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    /// An OpenStack call failed (the message names service, method, path and HTTP status).
    #[error(transparent)]
    OpenStack(#[from] kuryr_openstack::Error),
    /// Neutron could not bind the port to the node (`binding:vif_type` = `binding_failed`,
    /// `unbound`, or a type kuryr-rs cannot wire).
    #[error("neutron port {port_id} not usable on host {host:?}: binding:vif_type = {vif_type:?}")]
    Binding { port_id: String, host: String, vif_type: String },
    /// The port Neutron returned cannot be turned into a VIF (no IP, bad MAC, unknown subnet…).
    #[error("neutron port {port_id}: {reason}")]
    BadPort { port_id: String, reason: String },
    /// An object lacks something the controller needs (namespace, uid, node name…).
    #[error("{0}")]
    Invalid(String),
    /// This replica does not hold the leader lease: it must not write.
    #[error("not the leader: refusing to write")]
    NotLeader,
    /// A reconcile took longer than its deadline.
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    /// Wrong or unsupported configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// nested-vlan: the pod's node has no usable trunk parent port. A deployment problem (the
    /// node VM's port has no trunk, `[pod_vif_nested] worker_nodes_subnets` does not hold its
    /// subnet, the Node has no InternalIP), not an OpenStack failure.
    #[error("nested-vlan: node {node} (InternalIP {ip}): {reason}")]
    NodeTrunk { node: String, ip: String, reason: String },
    /// nested-vlan: attaching the pod's port to its node's trunk failed (`reason` keeps the
    /// OpenStack message; one failure can answer several ports attached in one request).
    #[error("nested-vlan: cannot attach port {port_id} to trunk {trunk_id}: {reason}")]
    Subport { port_id: String, trunk_id: String, reason: String, transient: bool },
    /// Something this step needs is not there yet (a NetworkPolicy's security group for a new
    /// port); retried soon.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A batched call this request was part of was abandoned (the caller running the batch was
    /// cancelled): it may or may not have taken effect; retried soon (with adoption first).
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The KuryrPort finalizer helper failed (boxed: it wraps this type).
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Wraps a kube error with the verb and the object it was about.
    pub fn kube(verb: &'static str, what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { verb, what: what.into(), source }
    }

    /// Low-cardinality name for the `error` label of the reconcile-error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kubernetes",
            Error::OpenStack(e) => match e.fault() {
                Fault::OpenStack => "openstack",
                Fault::Kuryr => "openstack_request",
            },
            Error::Binding { .. } => "binding",
            Error::BadPort { .. } => "bad_port",
            Error::Invalid(_) => "invalid_object",
            Error::NotLeader => "not_leader",
            Error::NotReady(_) => "not_ready",
            Error::Interrupted(_) => "interrupted",
            Error::Timeout { .. } => "timeout",
            Error::Config(_) => "config",
            Error::NodeTrunk { .. } => "nested_config",
            Error::Subport { .. } => "openstack",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }

    /// The innermost controller error (unwraps the finalizer helper's wrapper).
    pub fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            other => other,
        }
    }

    /// A retry soon may succeed (network blips, 5xx, 409 conflicts, timeouts). Anything else
    /// gets a long back-off and an Event rather than a hot loop.
    pub fn is_transient(&self) -> bool {
        match self.inner() {
            Error::Kube { source, .. } => match source {
                // 409/422: a conflict or a failed JSON-patch `test` (a stale view): retry soon.
                kube::Error::Api(s) => s.code >= 500 || matches!(s.code, 409 | 422 | 429),
                _ => true,
            },
            Error::OpenStack(e) => e.is_transient() || e.is_conflict(),
            Error::Timeout { .. } | Error::NotLeader | Error::NotReady(_) | Error::Interrupted(_) | Error::Finalizer(_) => true,
            Error::Subport { transient, .. } => *transient,
            Error::Binding { .. } | Error::BadPort { .. } | Error::Invalid(_) | Error::Config(_) | Error::NodeTrunk { .. } => false,
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

/// `Ok(None)` for a 404, so callers can treat "already gone" as success.
pub fn ok_if_not_found<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The API server answered 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The API server answered 409 (already exists, or a conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
