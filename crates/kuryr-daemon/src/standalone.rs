//! Standalone containers: containers that are not Kubernetes pods (podman, `ctr run --cni`)
//! but get a Neutron port through kuryr-rs all the same.
//!
//! Such a runtime calls `kuryr-cni` without `K8S_POD_NAMESPACE` in `CNI_ARGS` (podman 4 sends
//! `IgnoreUnknown=1;K8S_POD_NAME=<container name>`, `ctr run --cni` sends nothing). The daemon
//! then wires the container from the KuryrPort
//!
//! ```text
//! <[cni_daemon] standalone_namespace> / <K8S_POD_NAME, else CNI_CONTAINERID>
//! ```
//!
//! which the operator creates beforehand (no Pod object exists, so nothing else would):
//! labels `kuryr.openstack.org/standalone: "true"` and `kuryr.openstack.org/nodeName: <node>`,
//! `spec.podNodeName: <node>`, `spec.podUid: <a UUID the creator picks>` (it becomes the
//! Neutron port's `device_id`). kuryr-controller creates the port and writes `status.vifs` as
//! for a pod; deleting the KuryrPort releases the port.
//!
//! The standalone namespace is reserved: an ADD for a *pod* in it is refused, so a request's
//! namespace alone says whether it is a pod or a standalone container ([`is_standalone`]).
//! The namespace is a process-wide setting, set once at start-up from `kuryr.conf`
//! ([`set_namespace`]); until then it is the default `kuryr-standalone`.

use std::sync::OnceLock;

use kuryr_core::config::DEFAULT_STANDALONE_NAMESPACE;

use crate::api::routes::PodRef;

static NAMESPACE: OnceLock<String> = OnceLock::new();

/// The namespace of standalone containers' KuryrPorts (`[cni_daemon] standalone_namespace`).
pub fn namespace() -> &'static str {
    NAMESPACE
        .get()
        .map(String::as_str)
        .unwrap_or(DEFAULT_STANDALONE_NAMESPACE)
}

/// Sets the namespace for this process. Setting it again to the same value is fine; another
/// value is refused (requests already parsed would disagree with later ones).
pub fn set_namespace(ns: &str) -> Result<(), String> {
    let now = NAMESPACE.get_or_init(|| ns.to_owned());
    if now == ns {
        Ok(())
    } else {
        Err(format!(
            "the standalone namespace of this process is already {now:?}, cannot change it to {ns:?}"
        ))
    }
}

/// Whether a request is for a standalone container (its namespace is the standalone one).
pub fn is_standalone(req: &PodRef, standalone_ns: &str) -> bool {
    req.namespace == standalone_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_set_once() {
        // Unit tests share the process: only the default value is ever set here.
        assert_eq!(namespace(), "kuryr-standalone");
        assert_eq!(set_namespace("kuryr-standalone"), Ok(()));
        assert_eq!(namespace(), "kuryr-standalone");
        let e = set_namespace("other").expect_err("second value");
        assert!(e.contains("already \"kuryr-standalone\""), "{e}");
    }
}
