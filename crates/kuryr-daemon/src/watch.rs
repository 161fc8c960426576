//! This node's KuryrPorts and Pods, mirrored from the API server by two kube-runtime
//! watchers into in-memory stores, plus the change signal ADD waits on.
//!
//! What ADD waits for ([`eval_vifs`], [`eval_active`]) depends on who the request is for: a
//! pod's KuryrPort must match the pod (UID, not being deleted) and the pod must not be gone; a
//! standalone container's ([`crate::standalone`]) has no Pod, and its KuryrPort must carry the
//! standalone label and name this node in `spec.podNodeName` (the watch already selects this
//! node's label).
//!
//! Waiting is event-driven: every applied watch event bumps a `tokio::sync::watch` counter
//! *after* the store was updated. A waiter subscribes, marks the current value seen, checks
//! the stores, and sleeps on `changed()` until the next event or its deadline — no polling,
//! and no lost wake-ups (a change between the check and the sleep is still pending on the
//! receiver).

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::{
    is_pool, is_standalone, NODE_NAME_LABEL, POOL_LABEL, STANDALONE_LABEL, STANDALONE_LABEL_VALUE,
};
use kuryr_core::vif::Vif;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::routes::PodRef;
use crate::error::DaemonError;

/// Health of one watch stream.
#[derive(Debug)]
pub struct StreamHealth {
    pub name: &'static str,
    synced: AtomicBool,
    running: AtomicBool,
    /// Errors since the last successful event.
    errors_since_ok: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// When the current run of errors started (None while healthy).
    failing_since: Mutex<Option<Instant>>,
}

impl StreamHealth {
    fn new(name: &'static str) -> Self {
        StreamHealth {
            name,
            synced: AtomicBool::new(false),
            running: AtomicBool::new(false),
            errors_since_ok: AtomicU64::new(0),
            last_error: Mutex::new(None),
            failing_since: Mutex::new(None),
        }
    }
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// How long the stream has only been failing, if it is.
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
    fn ok(&self) {
        self.errors_since_ok.store(0, Ordering::SeqCst);
        *self.failing_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    fn error(&self, e: String) {
        self.errors_since_ok.fetch_add(1, Ordering::SeqCst);
        self.failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Instant::now);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// The mirrored state of this node.
pub struct Cluster {
    pub kuryrports: Store<KuryrPort>,
    pub pods: Store<Pod>,
    pub kp_stream: StreamHealth,
    pub pod_stream: StreamHealth,
    changes: watch::Sender<u64>,
}

impl Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kuryrports", &self.kuryrports.len())
            .field("pods", &self.pods.len())
            .field("kp_stream", &self.kp_stream)
            .field("pod_stream", &self.pod_stream)
            .finish()
    }
}

/// Store writers; the watch tasks own them (tests drive them by hand).
pub struct Writers {
    pub kuryrports: reflector::store::Writer<KuryrPort>,
    pub pods: reflector::store::Writer<Pod>,
}

impl Cluster {
    /// Empty stores, nothing synced.
    pub fn new() -> (Arc<Cluster>, Writers) {
        let (kr, kw) = reflector::store::<KuryrPort>();
        let (pr, pw) = reflector::store::<Pod>();
        let (tx, _) = watch::channel(0u64);
        let c = Cluster {
            kuryrports: kr,
            pods: pr,
            kp_stream: StreamHealth::new("kuryrports"),
            pod_stream: StreamHealth::new("pods"),
            changes: tx,
        };
        (
            Arc::new(c),
            Writers {
                kuryrports: kw,
                pods: pw,
            },
        )
    }

    /// Both stores have their initial list.
    pub fn synced(&self) -> bool {
        self.kp_stream.synced() && self.pod_stream.synced()
    }

    /// A receiver that fires after every change of either store.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Applies a KuryrPort event, then wakes waiters.
    pub fn apply_kuryrport(
        &self,
        w: &mut reflector::store::Writer<KuryrPort>,
        ev: &Event<KuryrPort>,
    ) {
        w.apply_watcher_event(ev);
        if matches!(ev, Event::InitDone) {
            self.kp_stream.synced.store(true, Ordering::SeqCst);
        }
        self.kp_stream.ok();
        self.bump();
    }

    /// Applies a Pod event, then wakes waiters.
    pub fn apply_pod(&self, w: &mut reflector::store::Writer<Pod>, ev: &Event<Pod>) {
        w.apply_watcher_event(ev);
        if matches!(ev, Event::InitDone) {
            self.pod_stream.synced.store(true, Ordering::SeqCst);
        }
        self.pod_stream.ok();
        self.bump();
    }

    pub fn kuryrport(&self, ns: &str, name: &str) -> Option<Arc<KuryrPort>> {
        self.kuryrports.get(&ObjectRef::new(name).within(ns))
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(ns))
    }

    /// Starts the two watchers (KuryrPorts labelled with this node, Pods bound to it).
    pub fn start(
        self: &Arc<Self>,
        client: Client,
        node: &str,
        writers: Writers,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let kp_cfg = watcher::Config::default().labels(&format!("{NODE_NAME_LABEL}={node}"));
        let pod_cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let kps: Api<KuryrPort> = Api::all(client.clone());
        let pods: Api<Pod> = Api::all(client);
        let (c1, c2) = (self.clone(), self.clone());
        let Writers {
            kuryrports: mut kw,
            pods: mut pw,
        } = writers;
        vec![
            tokio::spawn(async move {
                run_watch(kps, kp_cfg, &c1.kp_stream, trim_meta, |ev| {
                    c1.apply_kuryrport(&mut kw, ev)
                })
                .await;
            }),
            tokio::spawn(async move {
                run_watch(pods, pod_cfg, &c2.pod_stream, trim_pod, |ev| {
                    c2.apply_pod(&mut pw, ev)
                })
                .await;
            }),
        ]
    }
}

fn trim_meta<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Pods are kept for their identity (UID, deletion, static-pod annotations) and for what they
/// ask of the chained plugins ([`crate::chained`]: hostPorts, bandwidth annotations).
fn trim_pod(p: &mut Pod) {
    trim_meta(p);
    p.spec = crate::chained::trim_spec(p.spec.take());
    p.status = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            k.starts_with("kubernetes.io/config.")
                || crate::chained::BANDWIDTH_ANNOTATIONS.contains(&k.as_str())
        });
    }
}

async fn run_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    health: &StreamHealth,
    trim: fn(&mut K),
    mut apply: impl FnMut(&Event<K>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    health.running.store(true, Ordering::SeqCst);
    let stream = watcher::watcher(api, cfg).default_backoff().modify(trim);
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => apply(&ev),
            Err(e) => {
                tracing::warn!(stream = health.name, error = %e, "watch error, retrying with backoff");
                health.error(e.to_string());
            }
        }
    }
    tracing::error!(stream = health.name, "watch stream ended");
    health.running.store(false, Ordering::SeqCst);
}

/// A pod interface to wire, from `KuryrPort.status.vifs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVif {
    /// Name in the pod: `CNI_IFNAME` for the default VIF, the status key otherwise.
    pub ifname: String,
    pub default: bool,
    pub vif: Vif,
}

/// One look at the stores during a wait.
#[derive(Debug)]
pub enum Wait<T> {
    Ready(T),
    /// Not yet; the reason (for the timeout message and logs).
    Pending(String),
    Fail(DaemonError),
}

/// The identity a CNI request names, compared with what the API says.
fn pod_uid_matches(pod: &Pod, uid: &str) -> bool {
    if pod.metadata.uid.as_deref() == Some(uid) {
        return true;
    }
    // A static pod's API object is its mirror; the CRI knows the static pod's own UID,
    // which the mirror carries in this annotation.
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .is_some_and(|m| m == uid)
}

/// Fails fast when the pod is gone or replaced. `seen` remembers that the pod was in the
/// store during this wait (a pod never seen may just not have reached our watch yet).
pub fn check_pod(pod: Option<&Pod>, req: &PodRef, seen: &mut bool) -> Result<(), DaemonError> {
    match pod {
        Some(p) => {
            *seen = true;
            if let (Some(uid), Some(have)) = (req.uid.as_deref(), p.metadata.uid.as_deref()) {
                if !pod_uid_matches(p, uid) {
                    return Err(DaemonError::PodGone {
                        pod: req.to_string(),
                        why: format!("was replaced: the API has UID {have}, the CNI request is for UID {uid}"),
                    });
                }
            }
            if p.metadata.deletion_timestamp.is_some() {
                return Err(DaemonError::PodGone {
                    pod: req.to_string(),
                    why: "is being deleted".into(),
                });
            }
            Ok(())
        }
        None if *seen => Err(DaemonError::PodGone {
            pod: req.to_string(),
            why: "was deleted while kuryr-daemon waited for it".into(),
        }),
        None => Ok(()),
    }
}

/// Why a standalone container has no usable KuryrPort yet: it must be created first.
fn standalone_missing(req: &PodRef) -> String {
    format!(
        "KuryrPort {req} does not exist on this node: a standalone container (CNI_ARGS without \
         K8S_POD_NAMESPACE) is wired from a KuryrPort that must be created first, named after the \
         container, with labels {STANDALONE_LABEL}={STANDALONE_LABEL_VALUE} and \
         {NODE_NAME_LABEL}=<this node>, spec.podNodeName=<this node> and spec.podUid=<a new UUID>"
    )
}

/// Whether the KuryrPort is for the pod (or standalone container) the request names;
/// `Err(reason)` if not (yet).
fn kp_matches(kp: &KuryrPort, req: &PodRef, standalone: bool) -> Result<(), String> {
    let labels = kp.metadata.labels.as_ref();
    if is_pool(labels) {
        return Err(format!(
            "KuryrPort {req} is labelled {POOL_LABEL}=true: it is a node's port pool, no pod's or container's"
        ));
    }
    if standalone {
        if kp.metadata.deletion_timestamp.is_some() {
            return Err(format!("KuryrPort {req} is being deleted"));
        }
        if !is_standalone(labels) {
            return Err(format!(
                "KuryrPort {req} is not labelled {STANDALONE_LABEL}={STANDALONE_LABEL_VALUE}, \
                 which a standalone container's KuryrPort needs"
            ));
        }
        let node = labels
            .and_then(|l| l.get(NODE_NAME_LABEL))
            .map(String::as_str);
        if node != Some(kp.spec.pod_node_name.as_str()) {
            return Err(format!(
                "KuryrPort {req} has spec.podNodeName {:?} but label {NODE_NAME_LABEL} {:?}: \
                 both must name this node",
                kp.spec.pod_node_name,
                node.unwrap_or_default()
            ));
        }
    } else {
        if kp.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "KuryrPort {req} is being deleted (left over from an earlier pod of that name)"
            ));
        }
        if is_standalone(labels) {
            return Err(format!(
                "KuryrPort {req} is labelled {STANDALONE_LABEL}={STANDALONE_LABEL_VALUE}: it is \
                 a standalone container's, not this pod's"
            ));
        }
    }
    if let Some(uid) = &req.uid {
        if !kp.spec.pod_static && &kp.spec.pod_uid != uid {
            return Err(format!(
                "KuryrPort {req} is for pod UID {}, not {uid} (left over from an earlier pod of that name)",
                kp.spec.pod_uid
            ));
        }
    }
    Ok(())
}

/// ADD stage 1: the KuryrPort of the pod (or standalone container), with its VIFs.
/// Standalone containers are recognised by the process' [`crate::standalone::namespace`].
pub fn eval_vifs(
    kp: Option<&KuryrPort>,
    pod: Option<&Pod>,
    req: &PodRef,
    cni_ifname: &str,
    seen: &mut bool,
) -> Wait<Vec<PodVif>> {
    eval_vifs_in(
        crate::standalone::namespace(),
        kp,
        pod,
        req,
        cni_ifname,
        seen,
    )
}

/// [`eval_vifs`] with an explicit standalone namespace.
pub fn eval_vifs_in(
    standalone_ns: &str,
    kp: Option<&KuryrPort>,
    pod: Option<&Pod>,
    req: &PodRef,
    cni_ifname: &str,
    seen: &mut bool,
) -> Wait<Vec<PodVif>> {
    let standalone = crate::standalone::is_standalone(req, standalone_ns);
    // A standalone container has no Pod (one of the same name would be someone else's).
    if !standalone {
        if let Err(e) = check_pod(pod, req, seen) {
            return Wait::Fail(e);
        }
    }
    let Some(kp) = kp else {
        return Wait::Pending(if standalone {
            standalone_missing(req)
        } else {
            format!("KuryrPort {req} does not exist yet")
        });
    };
    if let Err(why) = kp_matches(kp, req, standalone) {
        return Wait::Pending(why);
    }
    let vifs = kp.status.as_ref().map(|s| &s.vifs);
    let Some(vifs) = vifs.filter(|v| v.values().any(|e| e.default)) else {
        return Wait::Pending(if standalone {
            // The controller may have refused it (namespace, UID, node): its Events say why.
            format!(
                "KuryrPort {req} has no default VIF yet (if this lasts, its Events say why: \
                 kubectl describe kuryrport -n {} {})",
                req.namespace, req.name
            )
        } else {
            format!("KuryrPort {req} has no default VIF yet")
        });
    };
    let mut out = Vec::new();
    for (key, entry) in vifs {
        match entry.vif() {
            Ok(vif) => out.push(PodVif {
                ifname: if entry.default {
                    cni_ifname.to_owned()
                } else {
                    key.clone()
                },
                default: entry.default,
                vif,
            }),
            Err(e) => {
                return Wait::Fail(DaemonError::BadVif {
                    kp: req.to_string(),
                    why: format!("status.vifs.{key}: {e}"),
                })
            }
        }
    }
    // The default interface first, then the others by name.
    out.sort_by(|a, b| {
        b.default
            .cmp(&a.default)
            .then_with(|| a.ifname.cmp(&b.ifname))
    });
    let defaults = out.iter().filter(|v| v.default).count();
    if defaults > 1 {
        return Wait::Fail(DaemonError::BadVif {
            kp: req.to_string(),
            why: format!("{defaults} VIFs are marked default"),
        });
    }
    Wait::Ready(out)
}

/// ADD stage 2: every port we plugged is reported ACTIVE.
pub fn eval_active(
    kp: Option<&KuryrPort>,
    pod: Option<&Pod>,
    req: &PodRef,
    port_ids: &[String],
    seen: &mut bool,
) -> Wait<()> {
    eval_active_in(crate::standalone::namespace(), kp, pod, req, port_ids, seen)
}

/// [`eval_active`] with an explicit standalone namespace.
pub fn eval_active_in(
    standalone_ns: &str,
    kp: Option<&KuryrPort>,
    pod: Option<&Pod>,
    req: &PodRef,
    port_ids: &[String],
    seen: &mut bool,
) -> Wait<()> {
    let standalone = crate::standalone::is_standalone(req, standalone_ns);
    if !standalone {
        if let Err(e) = check_pod(pod, req, seen) {
            return Wait::Fail(e);
        }
    }
    let gone = |why: String| {
        if standalone {
            DaemonError::KuryrPortGone {
                kp: req.to_string(),
                why,
            }
        } else {
            DaemonError::PodGone {
                pod: req.to_string(),
                why,
            }
        }
    };
    let Some(kp) = kp else {
        return Wait::Fail(gone(if standalone {
            "was deleted while kuryr-daemon waited for the VIF to become active".into()
        } else {
            "lost its KuryrPort while kuryr-daemon waited for the VIF to become active".into()
        }));
    };
    if let Err(why) = kp_matches(kp, req, standalone) {
        return Wait::Fail(gone(if standalone {
            format!("changed while kuryr-daemon waited for the VIF to become active ({why})")
        } else {
            why
        }));
    }
    let vifs: Vec<Vif> = kp
        .status
        .as_ref()
        .map(|s| s.vifs.values().filter_map(|e| e.vif().ok()).collect())
        .unwrap_or_default();
    let mut inactive = Vec::new();
    for id in port_ids {
        match vifs.iter().find(|v| &v.port_id == id) {
            Some(v) if v.active => {}
            Some(_) => inactive.push(format!("port {id} is not ACTIVE yet")),
            None => inactive.push(format!("port {id} is no longer in the KuryrPort status")),
        }
    }
    if inactive.is_empty() {
        Wait::Ready(())
    } else {
        Wait::Pending(inactive.join(", "))
    }
}

impl Cluster {
    /// Re-evaluates `f` after every store change until it is decided or `deadline` passes
    /// (`Err(last pending reason)`).
    pub async fn wait_for<T>(
        &self,
        deadline: tokio::time::Instant,
        mut f: impl FnMut(&Cluster) -> Wait<T>,
    ) -> Result<Result<T, DaemonError>, String> {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            let reason = match f(self) {
                Wait::Ready(t) => return Ok(Ok(t)),
                Wait::Fail(e) => return Ok(Err(e)),
                Wait::Pending(r) => r,
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(reason),
                Ok(Err(_)) => {
                    return Ok(Err(DaemonError::Internal(
                        "the watch stores were dropped".into(),
                    )))
                }
                Ok(Ok(())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::vif;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kuryr_core::crd::{KuryrPortSpec, KuryrPortStatus, VifEntry};

    fn req(uid: Option<&str>) -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: "web".into(),
            uid: uid.map(str::to_owned),
        }
    }

    fn pod(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn kp(uid: &str, active: Option<bool>) -> KuryrPort {
        let mut kp = KuryrPort::new(
            "web",
            KuryrPortSpec {
                pod_uid: uid.into(),
                pod_node_name: "n1".into(),
                pod_static: false,
            },
        );
        kp.metadata.namespace = Some("ns".into());
        if let Some(active) = active {
            let mut v = vif("port-1");
            v.active = active;
            let mut st = KuryrPortStatus::default();
            st.vifs.insert("eth0".into(), VifEntry::new(true, &v));
            kp.status = Some(st);
        }
        kp
    }

    #[test]
    fn vifs_wait_for_kuryrport_uid_and_default_vif() {
        let r = req(Some("u1"));
        let mut seen = false;
        assert!(
            matches!(eval_vifs(None, None, &r, "eth0", &mut seen), Wait::Pending(m) if m.contains("does not exist"))
        );
        assert!(
            matches!(eval_vifs(Some(&kp("u1", None)), None, &r, "eth0", &mut seen), Wait::Pending(m) if m.contains("no default VIF"))
        );
        assert!(
            matches!(eval_vifs(Some(&kp("u0", Some(false))), None, &r, "eth0", &mut seen), Wait::Pending(m) if m.contains("u0"))
        );
        let Wait::Ready(v) = eval_vifs(Some(&kp("u1", Some(false))), None, &r, "eth9", &mut seen)
        else {
            panic!("not ready")
        };
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ifname, "eth9");
        // Static pods: the KuryrPort's UID is the mirror's.
        let mut s = kp("mirror", Some(false));
        s.spec.pod_static = true;
        assert!(matches!(
            eval_vifs(Some(&s), None, &r, "eth0", &mut seen),
            Wait::Ready(_)
        ));
        // A KuryrPort being deleted is the previous pod's.
        let mut d = kp("u1", Some(false));
        d.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(
            matches!(eval_vifs(Some(&d), None, &r, "eth0", &mut seen), Wait::Pending(m) if m.contains("being deleted"))
        );
    }

    #[test]
    fn pod_replaced_or_deleted_fails_fast() {
        let r = req(Some("u1"));
        let mut seen = false;
        assert!(matches!(
            eval_vifs(None, Some(&pod("u2")), &r, "eth0", &mut seen),
            Wait::Fail(DaemonError::PodGone { .. })
        ));
        let mut seen = false;
        assert!(matches!(
            eval_vifs(None, Some(&pod("u1")), &r, "eth0", &mut seen),
            Wait::Pending(_)
        ));
        assert!(seen);
        // Seen, then gone.
        assert!(matches!(
            eval_vifs(None, None, &r, "eth0", &mut seen),
            Wait::Fail(DaemonError::PodGone { .. })
        ));
        // Mirror pod of a static pod: the CRI UID is in the annotation.
        let mut m = pod("api-uid");
        m.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "u1".to_string())].into());
        let mut seen = false;
        assert!(check_pod(Some(&m), &r, &mut seen).is_ok());
    }

    #[test]
    fn active_needs_every_plugged_port_active() {
        let r = req(Some("u1"));
        let ids = vec!["port-1".to_string()];
        let mut seen = false;
        assert!(
            matches!(eval_active(Some(&kp("u1", Some(false))), None, &r, &ids, &mut seen), Wait::Pending(m) if m.contains("not ACTIVE"))
        );
        assert!(matches!(
            eval_active(Some(&kp("u1", Some(true))), None, &r, &ids, &mut seen),
            Wait::Ready(())
        ));
        assert!(matches!(
            eval_active(None, None, &r, &ids, &mut seen),
            Wait::Fail(DaemonError::PodGone { .. })
        ));
        let other = vec!["port-2".to_string()];
        assert!(
            matches!(eval_active(Some(&kp("u1", Some(true))), None, &r, &other, &mut seen), Wait::Pending(m) if m.contains("no longer"))
        );
    }

    /// A standalone container's KuryrPort, as an operator would create it.
    fn standalone_kp(name: &str, active: Option<bool>) -> KuryrPort {
        let mut k = kp("6f1c1f0e-2f57-4c36-9b1e-0d5f0a4f6a10", active);
        k.metadata.name = Some(name.into());
        k.metadata.namespace = Some("sa".into());
        k.metadata.labels = Some(
            [
                (STANDALONE_LABEL.to_string(), "true".to_string()),
                (NODE_NAME_LABEL.to_string(), "n1".to_string()),
            ]
            .into(),
        );
        k
    }

    fn standalone_req(name: &str) -> PodRef {
        PodRef {
            namespace: "sa".into(),
            name: name.into(),
            uid: None,
        }
    }

    /// (case, KuryrPort, Pod of the same name) → stage 1 for a standalone container
    /// `sa/web-1`: Ready, or Pending/Fail with a piece of the reason.
    #[test]
    fn standalone_vifs_table() {
        enum Want {
            Ready,
            Pending(&'static str),
        }
        let unlabelled = {
            let mut k = standalone_kp("web-1", Some(false));
            k.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), "n1".to_string())].into());
            k
        };
        let wrong_value = {
            let mut k = standalone_kp("web-1", Some(false));
            k.metadata
                .labels
                .as_mut()
                .expect("labels")
                .insert(STANDALONE_LABEL.into(), "yes".into());
            k
        };
        let other_node = {
            let mut k = standalone_kp("web-1", Some(false));
            k.spec.pod_node_name = "n2".into();
            k
        };
        let deleting = {
            let mut k = standalone_kp("web-1", Some(false));
            k.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            k
        };
        // A Pod that happens to have the container's name: standalone waits ignore Pods.
        let mut same_name_pod = pod("some-other-uid");
        same_name_pod.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let cases: Vec<(&str, Option<KuryrPort>, Option<Pod>, Want)> = vec![
            (
                "no KuryrPort: create it",
                None,
                None,
                Want::Pending("must be created first"),
            ),
            (
                "no VIF yet",
                Some(standalone_kp("web-1", None)),
                None,
                Want::Pending("its Events say why: kubectl describe kuryrport -n sa web-1"),
            ),
            (
                "ready",
                Some(standalone_kp("web-1", Some(false))),
                None,
                Want::Ready,
            ),
            (
                "pod of the same name is ignored",
                Some(standalone_kp("web-1", Some(false))),
                Some(same_name_pod),
                Want::Ready,
            ),
            (
                "not labelled standalone",
                Some(unlabelled),
                None,
                Want::Pending("is not labelled kuryr.openstack.org/standalone=true"),
            ),
            (
                "label not \"true\"",
                Some(wrong_value),
                None,
                Want::Pending("is not labelled"),
            ),
            (
                "spec names another node",
                Some(other_node),
                None,
                Want::Pending("spec.podNodeName \"n2\""),
            ),
            (
                "being deleted",
                Some(deleting),
                None,
                Want::Pending("being deleted"),
            ),
        ];
        let r = standalone_req("web-1");
        for (name, kp, pod, want) in cases {
            let mut seen = false;
            let got = eval_vifs_in("sa", kp.as_ref(), pod.as_ref(), &r, "eth0", &mut seen);
            match (got, want) {
                (Wait::Ready(v), Want::Ready) => assert_eq!(v[0].ifname, "eth0", "case {name:?}"),
                (Wait::Pending(m), Want::Pending(piece)) => {
                    assert!(m.contains(piece), "case {name:?}: {m}")
                }
                (got, _) => panic!("case {name:?}: got {got:?}"),
            }
        }
    }

    #[test]
    fn pods_do_not_take_standalone_kuryrports() {
        // Outside the standalone namespace a request is a pod's; a standalone-labelled
        // KuryrPort there is not its.
        let r = PodRef {
            namespace: "ns".into(),
            name: "web".into(),
            uid: None,
        };
        let mut k = standalone_kp("web", Some(false));
        k.metadata.namespace = Some("ns".into());
        let mut seen = false;
        assert!(
            matches!(eval_vifs_in("sa", Some(&k), None, &r, "eth0", &mut seen), Wait::Pending(m) if m.contains("standalone container's, not this pod's"))
        );
        // The same request in the standalone namespace is a standalone container's.
        let r = standalone_req("web");
        let k = standalone_kp("web", Some(false));
        assert!(matches!(
            eval_vifs_in("sa", Some(&k), None, &r, "eth0", &mut seen),
            Wait::Ready(_)
        ));
        // With another standalone namespace configured, it is a pod request again.
        assert!(
            matches!(eval_vifs_in("other", Some(&k), None, &r, "eth0", &mut seen), Wait::Pending(m) if m.contains("not this pod's"))
        );
    }

    #[test]
    fn standalone_active_table() {
        let r = standalone_req("web-1");
        let ids = vec!["port-1".to_string()];
        let mut seen = false;
        let mut ev = |kp: Option<&KuryrPort>| eval_active_in("sa", kp, None, &r, &ids, &mut seen);
        assert!(
            matches!(ev(Some(&standalone_kp("web-1", Some(false)))), Wait::Pending(m) if m.contains("not ACTIVE"))
        );
        assert!(matches!(
            ev(Some(&standalone_kp("web-1", Some(true)))),
            Wait::Ready(())
        ));
        let Wait::Fail(e) = ev(None) else {
            panic!("a deleted KuryrPort fails the wait")
        };
        assert!(matches!(e, DaemonError::KuryrPortGone { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "KuryrPort sa/web-1 was deleted while kuryr-daemon waited for the VIF to become active"
        );
        let mut unlabelled = standalone_kp("web-1", Some(true));
        unlabelled.metadata.labels = None;
        let Wait::Fail(e) = ev(Some(&unlabelled)) else {
            panic!("a relabelled KuryrPort fails the wait")
        };
        assert!(e.to_string().contains("changed while"), "{e}");
    }

    /// A standalone ADD that never gets its KuryrPort times out telling the user to create it.
    #[tokio::test]
    async fn standalone_wait_times_out_asking_for_the_kuryrport() {
        let (cluster, _w) = Cluster::new();
        let r = standalone_req("web-1");
        let mut seen = false;
        let err = cluster
            .wait_for(
                tokio::time::Instant::now() + Duration::from_millis(50),
                |c| {
                    eval_vifs_in(
                        "sa",
                        c.kuryrport("sa", "web-1").as_deref(),
                        c.pod("sa", "web-1").as_deref(),
                        &r,
                        "eth0",
                        &mut seen,
                    )
                },
            )
            .await
            .expect_err("must time out");
        assert!(
            err.starts_with("KuryrPort sa/web-1 does not exist on this node"),
            "{err}"
        );
        assert!(err.contains("must be created first"), "{err}");
    }

    /// The wait wakes on the store change itself (no polling interval to wait out), and
    /// times out with the last reason when nothing changes.
    #[tokio::test]
    async fn wait_is_woken_by_store_events() {
        let (cluster, mut w) = Cluster::new();
        let r = req(Some("u1"));
        let c2 = cluster.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.apply_kuryrport(&mut w.kuryrports, &Event::Apply(kp("u1", None)));
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.apply_kuryrport(&mut w.kuryrports, &Event::Apply(kp("u1", Some(false))));
            w
        });
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        let got = cluster
            .wait_for(deadline, |c| {
                eval_vifs(
                    c.kuryrport("ns", "web").as_deref(),
                    c.pod("ns", "web").as_deref(),
                    &r,
                    "eth0",
                    &mut seen,
                )
            })
            .await
            .expect("no timeout")
            .expect("ready");
        assert_eq!(got[0].vif.port_id, "port-1");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "woke late: {:?}",
            start.elapsed()
        );
        let _w = writer.await.expect("writer");

        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        let ids = vec!["port-1".to_string()];
        let err = cluster
            .wait_for(deadline, |c| {
                eval_active(
                    c.kuryrport("ns", "web").as_deref(),
                    None,
                    &r,
                    &ids,
                    &mut seen,
                )
            })
            .await
            .expect_err("must time out");
        assert!(err.contains("not ACTIVE"), "{err}");
    }

    #[tokio::test]
    async fn wait_fails_fast_when_the_pod_is_deleted() {
        let (cluster, mut w) = Cluster::new();
        cluster.apply_pod(&mut w.pods, &Event::Apply(pod("u1")));
        let c2 = cluster.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.apply_pod(&mut w.pods, &Event::Delete(pod("u1")));
            w
        });
        let r = req(Some("u1"));
        let mut seen = false;
        let start = Instant::now();
        let res = cluster
            .wait_for(tokio::time::Instant::now() + Duration::from_secs(10), |c| {
                eval_vifs(
                    c.kuryrport("ns", "web").as_deref(),
                    c.pod("ns", "web").as_deref(),
                    &r,
                    "eth0",
                    &mut seen,
                )
            })
            .await
            .expect("decided before the deadline");
        assert!(matches!(res, Err(DaemonError::PodGone { .. })), "{res:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let _ = t.await;
    }
}
