//! Kubernetes Events (`[kubernetes] use_events`), with upstream's reasons so `kubectl describe pod`
//! reads the same. Published in the background: an Event never slows or fails the pod path.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

/// Reasons (upstream kuryr-kubernetes names where one exists).
pub mod reason {
    /// The KuryrPort got its VIF(s) (upstream).
    pub const UPDATED_WITH_VIFS: &str = "KuryrPortUpdatedWithVIFs";
    /// The VIF(s) became ACTIVE (upstream).
    pub const UPDATED_WITH_ACTIVE_VIFS: &str = "KuryrPortUpdatedWithActiveVIFs";
    /// The port did not become ACTIVE in time (upstream).
    pub const ACTIVATE_PORT_FAILED: &str = "ActivatePortFailed";
    /// Creating or adopting the Neutron port failed.
    pub const PORT_CREATE_FAILED: &str = "KuryrPortCreateFailed";
    /// Neutron could not bind the port to the node.
    pub const PORT_BINDING_FAILED: &str = "KuryrPortBindingFailed";
    /// Releasing the Neutron port failed.
    pub const PORT_RELEASE_FAILED: &str = "KuryrPortReleaseFailed";
    /// The KuryrPort's pod is gone (upstream).
    pub const MISSING_POD: &str = "MissingPod";
    /// A standalone container's KuryrPort cannot be wired (kuryr-rs).
    pub const STANDALONE_INVALID: &str = "StandaloneKuryrPortInvalid";
    /// A Pod in the standalone namespace (reserved for standalone containers) is not wired (kuryr-rs).
    pub const POD_IN_STANDALONE_NAMESPACE: &str = "PodInStandaloneNamespace";
}

/// Event publisher for the controller.
#[derive(Clone)]
pub struct Events {
    recorder: Option<Recorder>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("enabled", &self.recorder.is_some()).finish()
    }
}

impl Events {
    pub fn new(client: Client, instance: &str, enabled: bool) -> Events {
        let reporter = Reporter { controller: "kuryr-controller".into(), instance: Some(instance.into()) };
        Events { recorder: enabled.then(|| Recorder::new(client, reporter)) }
    }

    /// Events off.
    pub fn disabled() -> Events {
        Events { recorder: None }
    }

    fn publish(&self, regarding: ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let Some(recorder) = self.recorder.clone() else { return };
        let ev = Event {
            type_,
            reason: reason.to_string(),
            // The API limits notes to 1 kB.
            note: Some(truncate(&note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &regarding).await {
                tracing::debug!(error = %e, reason = %ev.reason, "could not publish an Event");
            }
        });
    }

    pub fn normal(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Normal, reason, action, note);
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Warning, reason, action, note);
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Reference to a pod by namespace, name and UID (the Event's `regarding`).
pub fn pod_ref(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: (!uid.is_empty()).then(|| uid.to_string()),
        ..ObjectReference::default()
    }
}

/// Reference to a KuryrPort (the Event's `regarding` for standalone containers, which have no pod).
pub fn kuryrport_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", kuryr_core::names::GROUP, kuryr_core::names::VERSION)),
        kind: Some("KuryrPort".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_truncation() {
        let k = kuryrport_ref("kuryr-standalone", "web-1");
        assert_eq!((k.api_version.as_deref(), k.kind.as_deref()), (Some("openstack.org/v1"), Some("KuryrPort")));
        let r = pod_ref("ns", "p", "u1");
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.uid.as_deref(), Some("u1"));
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ab", 3), "ab");
    }
}
