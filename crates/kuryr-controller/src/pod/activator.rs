//! ACTIVE detection without per-pod polling loops.
//!
//! One task holds the set of ports whose KuryrPort VIF still says `active: false`. While the set
//! is non-empty (and this replica leads) it asks Neutron about all of them in **one** request
//! every `activation_interval` (250 ms): `GET /v2.0/ports?id=a&id=b…&fields=id&fields=status`
//! (100 ids per request). Each port now ACTIVE gets its KuryrPort patched (`vif.active = true`,
//! guarded by a JSON-patch `test` on the port id so a re-created KuryrPort is never touched).
//! With an empty set the task makes no Neutron calls at all. A port still not ACTIVE after
//! `activation_deadline` gets a Warning Event and is polled every `activation_slow_interval`
//! from then on.
//!
//! The KuryrPort reconciler feeds the set ([`Activator::track`]) whenever it sees an inactive
//! default VIF, so a restart rebuilds it from the KuryrPorts themselves.

use crate::pod::context::PodContext;
use crate::runtime::error::Error;
use crate::runtime::events::{kuryrport_ref, pod_ref, reason};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kuryr_core::crd::KuryrPort;
use kuryr_core::vif::StoredForm;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Heartbeat period of the idle loop (no Neutron calls), for `/alive`.
const IDLE_TICK: Duration = Duration::from_secs(5);
/// Upper bound of one poll (Neutron request(s) plus the KuryrPort patches).
const POLL_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent KuryrPort patches after one poll.
const PATCH_CONCURRENCY: usize = 16;

/// A port to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub port_id: String,
    /// KuryrPort (= pod) namespace and name.
    pub namespace: String,
    pub name: String,
    /// Interface name in `status.vifs`.
    pub ifname: String,
    pub pod_uid: String,
    /// The form the VIF is stored in (os-vif primitive, or the legacy typed form).
    pub form: StoredForm,
    /// A standalone container's KuryrPort: Events go to the KuryrPort (there is no pod).
    pub standalone: bool,
}

impl Pending {
    /// What Events about this port are about: the pod, or a standalone container's KuryrPort.
    fn regarding(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        if self.standalone {
            kuryrport_ref(&self.namespace, &self.name)
        } else {
            pod_ref(&self.namespace, &self.name, &self.pod_uid)
        }
    }
}

/// Commands to the activator task.
#[derive(Debug)]
pub enum Cmd {
    Track(Pending),
    Untrack(String),
}

/// Handle to the activator task (cheap to clone).
#[derive(Clone, Debug)]
pub struct Activator {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Activator {
    /// A handle and the receiver to pass to [`run`].
    pub fn channel() -> (Activator, mpsc::UnboundedReceiver<Cmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Activator { tx }, rx)
    }

    /// Watch this port until it is ACTIVE (idempotent).
    pub fn track(&self, p: Pending) {
        let _ = self.tx.send(Cmd::Track(p));
    }

    /// Stop watching this port.
    pub fn untrack(&self, port_id: &str) {
        let _ = self.tx.send(Cmd::Untrack(port_id.to_string()));
    }
}

#[derive(Debug)]
struct Entry {
    p: Pending,
    since: Instant,
    last_poll: Option<Instant>,
    warned: bool,
}

/// Which of the tracked ports to ask about now: all young ones, old ones only every `slow`.
fn due(entries: &HashMap<String, Entry>, now: Instant, deadline: Duration, slow: Duration) -> Vec<String> {
    let mut ids: Vec<String> = entries
        .iter()
        .filter(|(_, e)| {
            now.saturating_duration_since(e.since) < deadline || e.last_poll.is_none_or(|l| now.saturating_duration_since(l) >= slow)
        })
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort();
    ids
}

/// JSON-pointer escaping of one path segment.
pub(crate) fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// The JSON patch that marks the VIF of `p` active, only if it still holds `p.port_id`.
pub fn active_patch(p: &Pending) -> serde_json::Value {
    let base = format!("/status/vifs/{}/vif", escape(&p.ifname));
    let (id, active) = match p.form {
        StoredForm::OsVif => ("/versioned_object.data/id", "/versioned_object.data/active"),
        StoredForm::Legacy => ("/portId", "/active"),
    };
    json!([
        {"op": "test", "path": format!("{base}{id}"), "value": p.port_id},
        {"op": "add", "path": format!("{base}{active}"), "value": true},
    ])
}

enum Marked {
    Done,
    /// The KuryrPort is gone or holds another port now.
    Gone,
}

async fn mark_active(ctx: &PodContext, p: &Pending) -> Result<Marked, Error> {
    ctx.leader.ensure()?;
    let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), &p.namespace);
    let patch: json_patch::Patch = serde_json::from_value(active_patch(p)).map_err(|e| Error::Invalid(format!("activation patch: {e}")))?;
    match api.patch_status(&p.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => return Ok(Marked::Gone),
        Err(e) => return Err(Error::kube("patch status of", format!("kuryrport {}/{}", p.namespace, p.name), e)),
    }
    tracing::info!(namespace = %p.namespace, pod = %p.name, port = %p.port_id, "port ACTIVE");
    ctx.timeline.active(&p.pod_uid, &ctx.metrics);
    let pod = ctx.pods.get(&ObjectRef::<Pod>::new(&p.name).within(&p.namespace));
    if let Some(scheduled) = pod.as_deref().filter(|pod| pod.metadata.uid.as_deref() == Some(&p.pod_uid)).and_then(scheduled_at) {
        let secs = Timestamp::now().duration_since(scheduled).as_secs_f64();
        ctx.metrics.observe_pod_creation(secs);
    }
    ctx.events.normal(
        p.regarding(),
        reason::UPDATED_WITH_ACTIVE_VIFS,
        "ActivatePort",
        format!("Neutron port {} is ACTIVE ({})", p.port_id, p.ifname),
    );
    Ok(Marked::Done)
}

/// `lastTransitionTime` of the pod's PodScheduled condition.
fn scheduled_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

async fn poll(ctx: &PodContext, entries: &mut HashMap<String, Entry>) {
    let s = &ctx.settings;
    let now = Instant::now();
    let ids = due(entries, now, s.activation_deadline, s.activation_slow_interval);
    if ids.is_empty() {
        return;
    }
    ctx.metrics.activation_poll();
    let ports = match ctx.neutron.list_ports_by_id(&ids, &["id", "status"]).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, ports = ids.len(), "activator: port status poll failed");
            return;
        }
    };
    let status: HashMap<&str, &str> = ports.iter().map(|p| (p.id.as_str(), p.status.as_str())).collect();
    let mut active = Vec::new();
    for id in &ids {
        let Some(e) = entries.get_mut(id) else { continue };
        e.last_poll = Some(now);
        match status.get(id.as_str()) {
            Some(&"ACTIVE") => active.push(e.p.clone()),
            Some(st) => {
                let age = now.saturating_duration_since(e.since);
                if !e.warned && age >= s.activation_deadline {
                    e.warned = true;
                    ctx.metrics.port_not_ready();
                    tracing::warn!(namespace = %e.p.namespace, pod = %e.p.name, port = %id, status = %st, ?age, "port not ACTIVE in time");
                    ctx.events.warning(
                        e.p.regarding(),
                        reason::ACTIVATE_PORT_FAILED,
                        "ActivatePort",
                        format!(
                            "Neutron port {id} is still {st} after {}s: is kuryr-daemon running on the node, and the Neutron agent / OVN controller healthy?",
                            age.as_secs()
                        ),
                    );
                }
            }
            None => {
                tracing::warn!(namespace = %e.p.namespace, pod = %e.p.name, port = %id, "activator: port no longer exists in Neutron; not waiting for it");
                entries.remove(id);
                settled(ctx, id);
            }
        }
    }
    let results: Vec<(String, Result<Marked, Error>)> = futures_util::stream::iter(active)
        .map(|p| async move {
            let r = mark_active(ctx, &p).await;
            (p.port_id, r)
        })
        .buffer_unordered(PATCH_CONCURRENCY)
        .collect()
        .await;
    for (id, r) in results {
        match r {
            Ok(Marked::Done) | Ok(Marked::Gone) => {
                entries.remove(&id);
                settled(ctx, &id);
            }
            Err(Error::NotLeader) => {}
            Err(e) => tracing::warn!(port = %id, error = %e, "activator: could not mark the VIF active; will retry"),
        }
    }
}

/// The activator is done with `port_id`: a warm pool waiting for it may refill.
pub fn settled(ctx: &PodContext, port_id: &str) {
    if let Some(pools) = &ctx.pools {
        crate::pod::pool::settled(ctx, pools, port_id);
    }
}

/// The activator task: runs until every [`Activator`] handle is dropped.
pub async fn run(ctx: Arc<PodContext>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut leader = ctx.leader.subscribe();
    let mut next_poll = Instant::now();
    loop {
        ctx.metrics.set_pending_activations(entries.len());
        ctx.health.beat("activator", IDLE_TICK + POLL_TIMEOUT * 2);
        let idle = entries.is_empty() || !ctx.leader.is_leader();
        let wake = if idle { Instant::now() + IDLE_TICK } else { next_poll };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Track(p)) => {
                    if entries.is_empty() {
                        next_poll = Instant::now() + ctx.settings.activation_interval;
                    }
                    let id = p.port_id.clone();
                    entries
                        .entry(id)
                        .and_modify(|e| e.p = p.clone())
                        .or_insert_with(|| Entry { p, since: Instant::now(), last_poll: None, warned: false });
                }
                Some(Cmd::Untrack(id)) => {
                    entries.remove(&id);
                    settled(&ctx, &id);
                }
            },
            r = leader.changed() => {
                if r.is_err() {
                    // The gate is gone: the controller is shutting down.
                    return;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if !idle {
                    // Bounded, so a hung Neutron cannot wedge the loop (a cancelled poll is
                    // harmless: every step is idempotent).
                    if tokio::time::timeout(POLL_TIMEOUT, poll(&ctx, &mut entries)).await.is_err() {
                        tracing::warn!(after = ?POLL_TIMEOUT, "activator: poll timed out");
                    }
                    next_poll = Instant::now() + ctx.settings.activation_interval;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(form: StoredForm) -> Pending {
        Pending {
            port_id: "p1".into(),
            namespace: "ns".into(),
            name: "web-0".into(),
            ifname: "eth0".into(),
            pod_uid: "u".into(),
            form,
            standalone: false,
        }
    }

    #[test]
    fn events_are_about_the_pod_or_the_standalone_kuryrport() {
        assert_eq!(pending(StoredForm::Legacy).regarding().kind.as_deref(), Some("Pod"));
        let s = Pending { standalone: true, ..pending(StoredForm::Legacy) };
        let r = s.regarding();
        assert_eq!((r.kind.as_deref(), r.name.as_deref(), r.uid), (Some("KuryrPort"), Some("web-0"), None));
    }

    #[test]
    fn patch_tests_the_port_id() {
        assert_eq!(
            active_patch(&pending(StoredForm::Legacy)),
            json!([{"op": "test", "path": "/status/vifs/eth0/vif/portId", "value": "p1"},
                   {"op": "add", "path": "/status/vifs/eth0/vif/active", "value": true}])
        );
        assert_eq!(active_patch(&pending(StoredForm::OsVif))[1]["path"], "/status/vifs/eth0/vif/versioned_object.data/active");
        let p: json_patch::Patch = serde_json::from_value(active_patch(&pending(StoredForm::Legacy))).expect("valid JSON patch");
        assert_eq!(p.0.len(), 2);
        // The patch applied to a KuryrPort status: flips active only for the same port.
        let mut doc = json!({"status": {"vifs": {"eth0": {"default": true, "vif": {"portId": "p1", "active": false}}}}});
        json_patch::patch(&mut doc, &p.0).expect("applies");
        assert_eq!(doc["status"]["vifs"]["eth0"]["vif"]["active"], true);
        let mut other = json!({"status": {"vifs": {"eth0": {"default": true, "vif": {"portId": "p2", "active": false}}}}});
        assert!(json_patch::patch(&mut other, &p.0).is_err(), "another port: test fails");
        // What kuryr-rs writes now: the os-vif form's patch flips it.
        let vif = kuryr_core::vif::Vif {
            port_id: "p1".into(),
            network_id: "n1".into(),
            mac: "fa:16:3e:00:00:01".into(),
            mtu: 1500,
            ips: vec![],
            binding: kuryr_core::vif::Binding::NestedMacvlan,
            host_ifname: "tapp1".into(),
            active: false,
            port_filter: false,
        };
        let mut doc = json!({"status": {"vifs": {"eth0": {"default": true, "vif": vif.to_status_value()}}}});
        let p: json_patch::Patch = serde_json::from_value(active_patch(&pending(StoredForm::OsVif))).expect("valid JSON patch");
        json_patch::patch(&mut doc, &p.0).expect("applies");
        assert!(kuryr_core::vif::Vif::from_status_value(&doc["status"]["vifs"]["eth0"]["vif"]).expect("reads").active);
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn young_ports_every_tick_old_ones_slowly() {
        let now = Instant::now();
        let deadline = Duration::from_secs(60);
        let slow = Duration::from_secs(5);
        let mut m = HashMap::new();
        let entry = |id: &str, age: u64, polled_ago: Option<u64>| Entry {
            p: Pending { port_id: id.into(), ..pending(StoredForm::Legacy) },
            since: now - Duration::from_secs(age),
            last_poll: polled_ago.map(|a| now - Duration::from_secs(a)),
            warned: false,
        };
        m.insert("young".to_string(), entry("young", 1, Some(0)));
        m.insert("old-recent".to_string(), entry("old-recent", 100, Some(1)));
        m.insert("old-stale".to_string(), entry("old-stale", 100, Some(6)));
        m.insert("old-never".to_string(), entry("old-never", 100, None));
        assert_eq!(due(&m, now, deadline, slow), ["old-never", "old-stale", "young"]);
    }
}
