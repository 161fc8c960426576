//! The daemon's error type and how each error maps to a CNI error (code, message,
//! details) and an HTTP status. Mapped once, at the API edge.

use std::time::Duration;

use kuryr_cni_api::CniError;

/// CNI error codes the daemon answers with: the spec's where they fit, kuryr's own (>= 100)
/// otherwise. `100..=102` and `999` belong to the shim (see `kuryr_cni_api::codes`).
pub mod codes {
    pub use kuryr_cni_api::codes::*;
    /// ADD with an incomplete pod identity: `CNI_ARGS` has `K8S_POD_NAMESPACE` but no
    /// `K8S_POD_NAME`. (Without `K8S_POD_NAMESPACE` it is a standalone container, see
    /// `crate::standalone`.)
    pub const KURYR_NOT_A_POD: u32 = 110;
    /// The VIF in `KuryrPort.status.vifs` cannot be wired (invalid, unsupported binding).
    pub const KURYR_BAD_VIF: u32 = 111;
    /// Wiring or unwiring an interface failed (netlink, OVSDB).
    pub const KURYR_PLUG_FAILED: u32 = 112;
    /// CHECK found that the attachment differs from what ADD set up; `details` lists it.
    pub const KURYR_CHECK_MISMATCH: u32 = 113;
    /// CHECK for an attachment the daemon has no record of.
    pub const KURYR_UNKNOWN_ATTACHMENT: u32 = 114;
    /// The peer on the daemon socket is not root.
    pub const KURYR_FORBIDDEN: u32 = 115;
    /// Reading or writing the local attachment records failed.
    pub const KURYR_STATE_IO: u32 = 116;
    /// The request body is larger than `[cni_daemon] socket_max_request_bytes` (HTTP 413).
    pub const KURYR_REQUEST_TOO_LARGE: u32 = 117;
}

/// Why a request failed. Every variant names the object and the step.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The request itself is unusable (already a CNI error: bad JSON, bad env, bad config).
    #[error("{0}")]
    BadRequest(CniError),

    /// ADD with `K8S_POD_NAMESPACE` but no `K8S_POD_NAME`.
    #[error("CNI_ARGS has K8S_POD_NAMESPACE but no K8S_POD_NAME: the pod is not named")]
    NotAPod,

    /// A bounded wait ran out (controller or Neutron too slow): try again later.
    #[error("timed out after {}s waiting for {what}", waited.as_secs())]
    TimedOut {
        waited: Duration,
        what: String,
        /// What the last look at the state showed.
        last: String,
    },

    /// The pod the ADD is for is gone or was replaced (another UID).
    #[error("pod {pod} {why}")]
    PodGone { pod: String, why: String },

    /// A standalone container's KuryrPort went away (or changed) while ADD waited for it.
    #[error("KuryrPort {kp} {why}")]
    KuryrPortGone { kp: String, why: String },

    /// The KuryrPort's VIF cannot be wired.
    #[error("KuryrPort {kp}: {why}")]
    BadVif { kp: String, why: String },

    /// A wiring step failed.
    #[error("{step} for {what}: {source}")]
    Plug {
        step: &'static str,
        what: String,
        #[source]
        source: Box<crate::binding::BindError>,
    },

    /// CHECK found differences.
    #[error("attachment {what} differs from what ADD set up")]
    CheckMismatch { what: String, diffs: Vec<String> },

    /// No local record for the attachment.
    #[error("no attachment {what} is known to kuryr-daemon")]
    UnknownAttachment { what: String },

    /// Local state (attachment records) I/O.
    #[error("{op} {path}: {source}")]
    State {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// STATUS: not ready to serve ADD.
    #[error("kuryr-daemon is not ready: {0}")]
    NotReady(String),

    /// The daemon is shutting down or a background task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DaemonError {
    /// The CNI error object sent to the shim.
    pub fn to_cni_error(&self) -> CniError {
        match self {
            DaemonError::BadRequest(e) => e.clone(),
            DaemonError::NotAPod => CniError::new(
                codes::KURYR_NOT_A_POD,
                "incomplete pod identity: CNI_ARGS has K8S_POD_NAMESPACE but no K8S_POD_NAME",
                "Kubernetes runtimes (containerd, CRI-O) pass both; standalone containers (podman, \
                 ctr) pass no K8S_POD_NAMESPACE and are wired from a KuryrPort in \
                 [cni_daemon] standalone_namespace",
            ),
            DaemonError::TimedOut { last, .. } => CniError::try_again_later(
                self.to_string(),
                if last.is_empty() {
                    "Try again later.".to_owned()
                } else {
                    format!("last seen: {last}. Try again later.")
                },
            ),
            DaemonError::PodGone { .. } | DaemonError::KuryrPortGone { .. } => {
                CniError::new(codes::UNKNOWN_CONTAINER, self.to_string(), "")
            }
            DaemonError::BadVif { .. } => CniError::new(codes::KURYR_BAD_VIF, self.to_string(), ""),
            DaemonError::Plug { step, what, source } => CniError::new(
                codes::KURYR_PLUG_FAILED,
                format!("{step} for {what} failed"),
                source.to_string(),
            ),
            DaemonError::CheckMismatch { diffs, .. } => CniError::new(
                codes::KURYR_CHECK_MISMATCH,
                self.to_string(),
                diffs.join("; "),
            ),
            DaemonError::UnknownAttachment { .. } => {
                CniError::new(codes::KURYR_UNKNOWN_ATTACHMENT, self.to_string(), "")
            }
            DaemonError::State { .. } => CniError::new(codes::KURYR_STATE_IO, self.to_string(), ""),
            DaemonError::NotReady(why) => CniError::new(
                codes::PLUGIN_NOT_AVAILABLE,
                "kuryr-daemon is not ready",
                why.clone(),
            ),
            DaemonError::Internal(_) => CniError::internal(self.to_string(), ""),
        }
    }

    /// HTTP status of the answer (the shim only looks at the body).
    pub fn http_status(&self) -> u16 {
        match self {
            DaemonError::PodGone { .. } | DaemonError::KuryrPortGone { .. } => 410,
            DaemonError::TimedOut { .. } => 504,
            DaemonError::UnknownAttachment { .. } => 404,
            DaemonError::CheckMismatch { .. } => 409,
            _ => self.to_cni_error().suggested_http_status(),
        }
    }

    /// Whether this failure says something is wrong with this daemon or node (counts
    /// towards the liveness failure rate). Waiting on the controller / Neutron, pods that
    /// went away and bad requests do not.
    pub fn is_daemon_fault(&self) -> bool {
        matches!(
            self,
            DaemonError::Plug { .. } | DaemonError::State { .. } | DaemonError::Internal(_)
        )
    }
}

impl From<CniError> for DaemonError {
    fn from(e: CniError) -> Self {
        DaemonError::BadRequest(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_try_again_later_and_names_what() {
        let e = DaemonError::TimedOut {
            waited: Duration::from_secs(60),
            what: "KuryrPort ns/pod to have an active VIF (controller / Neutron)".into(),
            last: "port p1 is not ACTIVE yet".into(),
        };
        let c = e.to_cni_error();
        assert_eq!(c.code, 11);
        assert_eq!(
            c.msg,
            "timed out after 60s waiting for KuryrPort ns/pod to have an active VIF (controller / Neutron)"
        );
        assert_eq!(
            c.details,
            "last seen: port p1 is not ACTIVE yet. Try again later."
        );
        assert!(!e.is_daemon_fault());
        assert_eq!(e.http_status(), 504);
    }

    #[test]
    fn codes_per_variant() {
        assert_eq!(
            DaemonError::NotAPod.to_cni_error().code,
            codes::KURYR_NOT_A_POD
        );
        assert_eq!(
            DaemonError::PodGone {
                pod: "a/b".into(),
                why: "was deleted".into()
            }
            .to_cni_error()
            .code,
            3
        );
        let gone = DaemonError::KuryrPortGone {
            kp: "kuryr-standalone/web-1".into(),
            why: "was deleted".into(),
        };
        assert_eq!(gone.to_cni_error().code, 3);
        assert_eq!(
            gone.to_cni_error().msg,
            "KuryrPort kuryr-standalone/web-1 was deleted"
        );
        assert_eq!(gone.http_status(), 410);
        assert!(!gone.is_daemon_fault());
        assert_eq!(DaemonError::NotReady("x".into()).to_cni_error().code, 50);
        let m = DaemonError::CheckMismatch {
            what: "c/eth0".into(),
            diffs: vec!["a".into(), "b".into()],
        };
        assert_eq!(m.to_cni_error().code, codes::KURYR_CHECK_MISMATCH);
        assert_eq!(m.to_cni_error().details, "a; b");
        assert!(DaemonError::Internal("x".into()).is_daemon_fault());
    }
}
