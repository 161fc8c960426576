//! Namespace networks (`crate::namespace`; upstream `NamespaceHandler`, `KuryrNetworkHandler`,
//! `namespace_subnet` driver), on with `[kubernetes] pod_subnets_driver = namespace`. One hop
//! per module:
//! * [`namespaces`]: Namespace → its KuryrNetwork (upstream's kind, spec and finalizer), made
//!   once the namespace has a pod (or a KuryrPort) waiting to be wired, as upstream did.
//! * [`kuryrnetwork`]: KuryrNetwork → Neutron network, subnet from `[namespace_subnet]
//!   pod_subnet_pool`, interface on `pod_router`, each step written to `status` as it happens
//!   (a restart resumes); the teardown behind the finalizer.
//! * [`neutron`]: one namespace's Neutron objects (owner stamp, adoption, teardown).
//! * [`settings`]: `kuryr.conf` → [`NamespaceSettings`].
//! * here: the domain state, the watches, and the runtime hook the pod path asks for a pod's
//!   subnet ([`PodSubnets`]).
//!
//! Event-driven end to end: a KuryrPort whose namespace has no ready network yet asks the hook,
//! which triggers the Namespace reconcile and answers "not ready"; the KuryrPort waits (no
//! back-off, no polling). When the KuryrNetwork watch shows its status ready, the namespace's
//! waiting KuryrPorts are triggered again ([`Context::retrigger_waiting_kuryrports`]). A
//! deleted KuryrNetwork detaches from the router at once and deletes the network once the
//! namespace's last KuryrPort is gone (the KuryrPort watch's tap triggers it).

pub mod kuryrnetwork;
pub mod namespaces;
pub mod neutron;
pub mod settings;

pub use settings::NamespaceSettings;

use crate::runtime::context::Context;
use crate::runtime::hooks::PodSubnets;
use crate::runtime::run::{shutdown_signal, watchdog};
use crate::runtime::wiring::{controller, domain_watch, log_errors};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::ResourceExt;
use kuryr_core::crd::{KuryrNetwork, KuryrNetworkStatus, KuryrPort};
use std::collections::HashSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// The namespace-networks domain: the runtime context, settings, stores and triggers.
pub struct Namespaces {
    pub ctx: Arc<Context>,
    pub settings: NamespaceSettings,
    pub namespaces: Store<Namespace>,
    pub networks: Store<KuryrNetwork>,
    /// Wakes a Namespace reconcile (a pod needs its namespace's network).
    ns_trigger: mpsc::UnboundedSender<ObjectRef<Namespace>>,
    /// Wakes a KuryrNetwork reconcile (its namespace's last KuryrPort went).
    kn_trigger: mpsc::UnboundedSender<ObjectRef<KuryrNetwork>>,
    /// Namespaces whose KuryrNetwork was last seen ready (to wake their KuryrPorts once).
    ready: Mutex<HashSet<String>>,
    /// Both of this domain's watches listed (with the runtime's pod and KuryrPort caches).
    listed: AtomicU8,
    synced: watch::Sender<bool>,
}

/// The receiving ends of the domain's triggers.
pub struct Triggers {
    pub namespaces: mpsc::UnboundedReceiver<ObjectRef<Namespace>>,
    pub networks: mpsc::UnboundedReceiver<ObjectRef<KuryrNetwork>>,
}

/// A status that names the network, the subnet and the router: pods can get ports.
pub fn is_ready(status: Option<&KuryrNetworkStatus>) -> bool {
    status.is_some_and(|s| s.net_id.is_some() && s.subnet_id.is_some() && s.router_id.is_some())
}

impl Namespaces {
    pub fn new(
        ctx: Arc<Context>,
        settings: NamespaceSettings,
        namespaces: Store<Namespace>,
        networks: Store<KuryrNetwork>,
    ) -> (Namespaces, Triggers) {
        let (ns_trigger, ns_rx) = mpsc::unbounded_channel();
        let (kn_trigger, kn_rx) = mpsc::unbounded_channel();
        let d = Namespaces {
            ctx,
            settings,
            namespaces,
            networks,
            ns_trigger,
            kn_trigger,
            ready: Mutex::default(),
            listed: AtomicU8::new(0),
            synced: watch::channel(false).0,
        };
        (d, Triggers { namespaces: ns_rx, networks: kn_rx })
    }

    /// Resolves once this domain's watches and the runtime's caches listed.
    pub async fn wait_synced(&self) {
        self.ctx.wait_synced().await;
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Marks this domain's watches listed (for tests that fill the stores by hand).
    pub fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    fn one_listed(&self) {
        if self.listed.fetch_add(1, Ordering::AcqRel) + 1 >= 2 {
            self.synced.send_replace(true);
        }
    }

    /// The KuryrNetwork of `namespace` in the cache.
    pub fn network(&self, namespace: &str) -> Option<Arc<KuryrNetwork>> {
        self.networks.get(&ObjectRef::new(namespace).within(namespace))
    }

    /// Whether `namespace` never gets a network of its own.
    pub fn excluded(&self, namespace: &str) -> bool {
        self.settings.excluded.iter().any(|n| n == namespace)
    }

    /// Whether `namespace` has something to wire, from the runtime's caches: a KuryrPort without
    /// its VIF yet, or a pod on pod networking without a KuryrPort. Upstream made a namespace's
    /// network once it had a pod; pods already wired (a cluster switched from the default
    /// driver) keep their ports and need none until a new pod comes.
    pub fn needs_network(&self, namespace: &str) -> bool {
        let kps = self.ctx.kuryrports.state();
        let in_ns = |k: &&Arc<KuryrPort>| {
            k.metadata.namespace.as_deref() == Some(namespace) && !kuryr_core::names::is_pool(k.metadata.labels.as_ref())
        };
        let waiting = kps
            .iter()
            .filter(in_ns)
            .any(|k| k.metadata.deletion_timestamp.is_none() && k.status.as_ref().is_none_or(|s| s.default_vif().is_none()));
        waiting
            || self.ctx.pods.state().iter().any(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.deletion_timestamp.is_none()
                    && !p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
                    && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
                    && !kps.iter().filter(in_ns).any(|k| k.metadata.name == p.metadata.name)
            })
    }

    /// Whether a KuryrPort of `namespace` is left (its network waits for the last one).
    pub fn has_kuryrports(&self, namespace: &str) -> bool {
        self.ctx
            .kuryrports
            .state()
            .iter()
            .any(|k| k.metadata.namespace.as_deref() == Some(namespace) && !kuryr_core::names::is_pool(k.metadata.labels.as_ref()))
    }

    /// A KuryrNetwork watch event: a network that became ready wakes its namespace's waiting
    /// KuryrPorts (once per readiness); a deleted one lets its namespace be reconciled again (a
    /// KuryrNetwork deleted by hand while the namespace lives is made again).
    pub fn on_network_event(&self, ev: &watcher::Event<KuryrNetwork>) {
        match ev {
            watcher::Event::Apply(k) | watcher::Event::InitApply(k) => {
                let ns = k.namespace().unwrap_or_default();
                let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
                if k.metadata.deletion_timestamp.is_none() && is_ready(k.status.as_ref()) {
                    if ready.insert(ns.clone()) {
                        drop(ready);
                        let n = self.ctx.retrigger_waiting_kuryrports(&ns);
                        tracing::info!(namespace = %ns, waiting_kuryrports = n, "namespace network ready");
                    }
                } else {
                    ready.remove(&ns);
                }
            }
            watcher::Event::Delete(k) => {
                let ns = k.namespace().unwrap_or_default();
                self.ready.lock().unwrap_or_else(|e| e.into_inner()).remove(&ns);
                let _ = self.ns_trigger.send(ObjectRef::new(&ns));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// A KuryrPort watch event: the deletion of a namespace's KuryrPort wakes its KuryrNetwork
    /// when that is being deleted (the network goes once no port is left on it).
    pub fn on_kuryrport_event(&self, ev: &watcher::Event<KuryrPort>) {
        if let watcher::Event::Delete(kp) = ev {
            let ns = kp.namespace().unwrap_or_default();
            if self.network(&ns).is_some_and(|k| k.metadata.deletion_timestamp.is_some()) {
                let _ = self.kn_trigger.send(ObjectRef::new(&ns).within(&ns));
            }
        }
    }
}

/// The pod path's question: the namespace's subnet once its KuryrNetwork is ready. Without a
/// KuryrNetwork the Namespace is reconciled (it makes one) and the answer is "not yet".
impl PodSubnets for Namespaces {
    fn pod_subnet(&self, namespace: &str) -> Option<String> {
        match self.network(namespace) {
            Some(k) if k.metadata.deletion_timestamp.is_none() && is_ready(k.status.as_ref()) => {
                k.status.as_ref().and_then(|s| s.subnet_id.clone())
            }
            // Being made (its readiness wakes the KuryrPort), or going with its namespace.
            Some(_) => None,
            None => {
                let _ = self.ns_trigger.send(ObjectRef::new(namespace));
                None
            }
        }
    }
}

fn namespace_fingerprint(n: &Namespace) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.metadata.uid.hash(&mut h);
    n.metadata.deletion_timestamp.is_some().hash(&mut h);
    n.metadata.labels.hash(&mut h);
    Some(h.finish())
}

fn network_fingerprint(k: &KuryrNetwork) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.metadata.uid.hash(&mut h);
    k.metadata.deletion_timestamp.is_some().hash(&mut h);
    k.metadata.finalizers.hash(&mut h);
    serde_json::to_string(&k.spec).ok().hash(&mut h);
    is_ready(k.status.as_ref()).hash(&mut h);
    Some(h.finish())
}

/// Starts the Namespace and KuryrNetwork controllers and the KuryrPort tap; installs the
/// pod-subnet hook. `namespace`: only that namespace's KuryrNetworks (`--watch-namespace`; the
/// pods and KuryrPorts the runtime caches are scoped the same way). Returns the controllers'
/// future.
pub fn start(
    ctx: &Arc<Context>,
    settings: NamespaceSettings,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let client = ctx.client.clone();
    let (ns_store, ns_writer) = reflector::store::<Namespace>();
    let (kn_store, kn_writer) = reflector::store::<KuryrNetwork>();
    let (d, triggers) = Namespaces::new(ctx.clone(), settings, ns_store.clone(), kn_store.clone());
    let d = Arc::new(d);
    ctx.set_pod_subnets(d.clone());

    let (kp_tx, mut kp_rx) = mpsc::unbounded_channel::<watcher::Event<KuryrPort>>();
    ctx.hooks.kuryrport_events.add(kp_tx);
    let dd = d.clone();
    let kp_tap = async move {
        while let Some(ev) = kp_rx.recv().await {
            dd.on_kuryrport_event(&ev);
        }
    };

    let dd = d.clone();
    let ns_stream =
        domain_watch(Api::<Namespace>::all(client.clone()), "namespace-networks/namespaces", ns_writer, ctx.health.clone(), move |ev| {
            if matches!(ev, watcher::Event::InitDone) {
                dd.one_listed();
            }
        })
        .predicate_filter(namespace_fingerprint, PredicateConfig::default());
    let dd = d.clone();
    let kn_api = crate::runtime::run::scoped_api::<KuryrNetwork>(&client, namespace);
    let kn_stream = domain_watch(kn_api, "kuryrnetworks", kn_writer, ctx.health.clone(), move |ev| {
        if matches!(ev, watcher::Event::InitDone) {
            dd.one_listed();
        }
        dd.on_network_event(ev);
    })
    .predicate_filter(network_fingerprint, PredicateConfig::default());

    let ccfg = ControllerConfig::default().concurrency(concurrency);
    let ns_controller = log_errors(
        namespaces::CONTROLLER,
        controller(ns_stream, ns_store, ccfg.clone(), triggers.namespaces, ctx, &shutdown).run(
            namespaces::reconcile,
            namespaces::error_policy,
            d.clone(),
        ),
    );
    let kn_controller = log_errors(
        kuryrnetwork::CONTROLLER,
        controller(kn_stream, kn_store, ccfg, triggers.networks, ctx, &shutdown).run(
            kuryrnetwork::reconcile,
            kuryrnetwork::error_policy,
            d,
        ),
    );
    let health = ctx.health.clone();
    async move {
        let n = watchdog("namespace-controller", ns_controller, shutdown.clone(), health.clone());
        let k = watchdog("kuryrnetwork-controller", kn_controller, shutdown.clone(), health);
        let stop = shutdown_signal(shutdown);
        let tap = async move {
            tokio::select! {
                _ = stop => {}
                _ = kp_tap => {}
            }
        };
        tokio::join!(n, k, tap);
    }
}
