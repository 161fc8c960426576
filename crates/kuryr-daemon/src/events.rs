//! Kubernetes Events on pods (core/v1, `create` only: the daemon's RBAC allows nothing more).
//! Sent in the background with a deadline: a slow API server never delays a CNI answer.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::api::routes::PodRef;

/// Upstream's reasons, so dashboards and runbooks keep working.
pub mod reasons {
    /// ADD gave up waiting for the controller to write the KuryrPort's VIFs.
    pub const KURYRPORT_TIMEOUT: &str = "CNITimeoutKuryrPortRegistry";
    /// ADD gave up waiting for Neutron to report the plugged port ACTIVE.
    pub const ACTIVE_TIMEOUT: &str = "CNITimedOutWaitingForActiveVIFs";
    /// Wiring the interface on the node failed.
    pub const PLUG_FAILED: &str = "CNIPlugFailed";
    /// ovs-vswitchd did not attach a plugged OVS port (after ADD answered).
    pub const OVS_ATTACH_FAILED: &str = "CNIOVSPortNotAttached";
    /// ovs-vswitchd did not hold the pod's host device (stale OVS port); the daemon re-added it.
    pub const OVS_PORT_STALE: &str = "CNIOVSPortStale";
}

const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts Events about pods.
#[derive(Clone)]
pub struct Recorder {
    client: Option<Client>,
    node: String,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("enabled", &self.client.is_some())
            .field("node", &self.node)
            .finish()
    }
}

/// The Event object (pure, for tests).
pub fn build_event(pod: &PodRef, node: &str, type_: &str, reason: &str, message: &str) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // Events are namespaced; the name must be unique: let the API server pick it.
    let prefix: String = pod.name.chars().take(200).collect();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}.")),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: pod.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some("kuryr-daemon".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kuryr-daemon".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    }
}

impl Recorder {
    /// `client: None` (or `[kubernetes] use_events = false`) disables events.
    pub fn new(client: Option<Client>, node: &str) -> Self {
        Recorder {
            client,
            node: node.to_owned(),
        }
    }

    /// Sends a Warning event in the background.
    pub fn warn(&self, pod: &PodRef, reason: &'static str, message: String) {
        self.send(pod, "Warning", reason, message)
    }

    fn send(&self, pod: &PodRef, type_: &'static str, reason: &'static str, message: String) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let ev = build_event(pod, &self.node, type_, reason, &message);
        let pod = pod.clone();
        tokio::spawn(async move {
            let api: Api<Event> = Api::namespaced(client, &pod.namespace);
            match tokio::time::timeout(SEND_TIMEOUT, api.create(&PostParams::default(), &ev)).await
            {
                Ok(Ok(_)) => tracing::debug!(%pod, reason, "event sent"),
                Ok(Err(e)) => tracing::warn!(%pod, reason, error = %e, "cannot send event"),
                Err(_) => tracing::warn!(%pod, reason, "sending event timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_points_at_the_pod() {
        let pod = PodRef {
            namespace: "ns".into(),
            name: "web-0".into(),
            uid: Some("u1".into()),
        };
        let ev = build_event(
            &pod,
            "node-1",
            "Warning",
            reasons::ACTIVE_TIMEOUT,
            "timed out",
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(ev.metadata.generate_name.as_deref(), Some("web-0."));
        assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(ev.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(
            ev.reason.as_deref(),
            Some("CNITimedOutWaitingForActiveVIFs")
        );
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.source.and_then(|s| s.host).as_deref(), Some("node-1"));
    }
}
