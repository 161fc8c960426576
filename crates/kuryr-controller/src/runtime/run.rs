//! Wiring: clients, reflectors, the two controllers, the activator, leader election, the
//! health and metrics servers. [`start`] returns a handle; the binary and the integration tests
//! both use it.
//!
//! Watches: one on Pods (trimmed before caching), one on KuryrPorts. Each feeds its reflector
//! store (read by both reconcilers) and its own controller. The final deletion of a KuryrPort
//! triggers its pod (to drop the pod finalizer); the final deletion of a pod triggers its
//! KuryrPort (orphan check). No periodic re-lists, no fixed sleeps.

use crate::gc;
use crate::pod::activator;
use crate::pod::context::{PodContext, PodTasks};
use crate::pod::kuryrport;
use crate::pod::pods as pod;
use crate::runtime::cache::NeutronCache;
use crate::runtime::context::{Backoff, Context};
use crate::runtime::crds;
use crate::runtime::error::Error;
use crate::runtime::events::Events;
use crate::runtime::health::{self, Health, Reply};
use crate::runtime::hooks::SweepHooks;
use crate::runtime::lease::{self, LeaderGate, LeaseConfig};
use crate::runtime::metrics::Metrics;
use crate::runtime::settings::{cloud_config, Settings};
use crate::runtime::wiring::{controller, log_errors};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::{Client, ResourceExt};
use kuryr_core::config::Config;
use kuryr_core::crd::KuryrPort;
use kuryr_openstack::{CloudConfig, MetricsSink, Neutron, Session};
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Everything [`start`] needs.
#[derive(Clone, Debug)]
pub struct Options {
    pub settings: Settings,
    pub cloud: CloudConfig,
    pub kube: kube::Config,
    /// Server-side apply the CRDs before starting (`--install-crds`).
    pub install_crds: bool,
    /// `Some`: only the Lease holder writes (`--leader-elect`).
    pub leader_election: Option<LeaseConfig>,
    /// `/alive` and `/ready`; `None` = not served.
    pub health_addr: Option<SocketAddr>,
    /// `/metrics`; `None` = not served.
    pub metrics_addr: Option<SocketAddr>,
    /// This process in Events and the Lease.
    pub instance: String,
    /// Parallel reconciles per controller.
    pub concurrency: u16,
    /// Only pods and KuryrPorts of this namespace (`--watch-namespace`; default: all). For
    /// canaries and for tests sharing a cluster; a production controller watches everything.
    pub namespace: Option<String>,
    /// Periodic mark-and-sweep GC of orphaned Neutron resources ([`crate::gc`]); `None` = off.
    pub gc: Option<GcOptions>,
    /// Never lead, never write (caches and reads only): `--gc-list`.
    pub read_only: bool,
    /// Services through Octavia ([`crate::loadbalancer`]); `None` = off.
    pub services: Option<crate::loadbalancer::LbSettings>,
    /// The pod path (Pod and KuryrPort reconcilers): `[kubernetes] enabled_handlers` names `vif`
    /// or `kuryrport`. Off, this replica handles only what else is enabled (e.g. Services).
    pub pods: bool,
    /// NetworkPolicy through security groups ([`crate::policy`]): `[kubernetes] enabled_handlers`
    /// names `policy` or `kuryrnetworkpolicy`; `None` = off. Needs the pod path.
    pub policies: Option<crate::policy::PolicySettings>,
    /// A Neutron network, subnet and router interface per namespace ([`crate::namespace`]):
    /// `[kubernetes] pod_subnets_driver = namespace`; `None` = off (every pod on `pod_subnet`).
    pub namespaces: Option<crate::namespace::NamespaceSettings>,
}

/// `--gc-interval-seconds`, `--gc-dry-run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// Between passes; an orphan is deleted on the second pass that sees it.
    pub interval: Duration,
    /// Log what would be deleted, delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { interval: Duration::from_secs(300), dry_run: false }
    }
}

impl Options {
    /// Options from `kuryr.conf`: pod-path settings, `[neutron]` credentials, and the
    /// `[health_server]` / `[prometheus_exporter]` ports on all addresses.
    pub fn from_config(config: &Config, kube: kube::Config, cluster_name: &str) -> Result<Options, Error> {
        let settings = Settings::from_config(config, cluster_name)?;
        let neutron = config.neutron.as_ref().ok_or_else(|| Error::Config("[neutron] section is required".into()))?;
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        Ok(Options {
            settings,
            cloud: cloud_config(neutron)?,
            kube,
            install_crds: false,
            leader_election: None,
            health_addr: Some(any(config.ports.controller_health)),
            metrics_addr: Some(any(config.ports.controller_metrics)),
            instance: lease::default_identity(),
            concurrency: 32,
            namespace: None,
            gc: Some(GcOptions::default()),
            read_only: false,
            services: crate::loadbalancer::LbSettings::from_config(config, cluster_name)?,
            pods: config.kubernetes.enabled_handlers.iter().any(|h| h == "vif" || h == "kuryrport"),
            policies: crate::policy::PolicySettings::from_config(config, cluster_name)?,
            namespaces: crate::namespace::NamespaceSettings::from_config(config, cluster_name)?,
        })
        .and_then(|o| {
            if o.policies.is_some() && !o.pods {
                return Err(Error::Config(
                    "[kubernetes] enabled_handlers: policy/kuryrnetworkpolicy need the pod handlers (vif, kuryrport)".into(),
                ));
            }
            if o.namespaces.is_some() && !o.pods {
                return Err(Error::Config(
                    "[kubernetes] pod_subnets_driver = namespace: the namespace handlers need the pod handlers (vif, kuryrport)".into(),
                ));
            }
            Ok(o)
        })
    }
}

/// A running controller.
pub struct Running {
    /// Where `/alive` and `/ready` are served.
    pub health_addr: Option<SocketAddr>,
    /// Where `/metrics` is served.
    pub metrics_addr: Option<SocketAddr>,
    pub context: Arc<Context>,
    /// The pod path's state (activator, pools, nested-vlan trunks) on [`Running::context`].
    pub pod: Arc<PodContext>,
    shutdown: watch::Sender<bool>,
    controllers: JoinHandle<()>,
    lease: Option<JoinHandle<()>>,
    aux: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn health(&self) -> &Health {
        &self.context.health
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.context.metrics
    }

    /// Waits until both watches delivered their initial lists (for one-shot tools such as
    /// `--gc-list`; the controllers themselves need no such wait).
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), Error> {
        tokio::time::timeout(timeout, self.context.wait_synced())
            .await
            .map_err(|_| Error::Config(format!("the Pod and KuryrPort caches did not sync within {timeout:?}")))
    }

    /// Resolves when the controllers stop by themselves (they should not).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.controllers).await;
    }

    /// Stops the controllers (in-flight reconciles finish), releases the lease, stops the rest.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(30), self.controllers).await.is_err() {
            tracing::warn!("controllers did not stop within 30 s");
        }
        if let Some(l) = self.lease {
            let _ = tokio::time::timeout(Duration::from_secs(10), l).await;
        }
        for t in self.aux {
            t.abort();
        }
    }
}

/// Drops what the controller never reads before a pod enters the cache.
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        // Only the container names and ports stay (NetworkPolicy named ports).
        spec.containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|c| k8s_openapi::api::core::v1::Container { name: c.name, ports: c.ports, ..Default::default() })
            .collect();
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

/// The pod fields the pod reconciler acts on; other changes (status churn) do not trigger it.
pub fn pod_fingerprint(pod: &Pod) -> Option<u64> {
    let mut h = DefaultHasher::new();
    pod.metadata.uid.hash(&mut h);
    pod.metadata.deletion_timestamp.is_some().hash(&mut h);
    pod.metadata.finalizers.hash(&mut h);
    pod.annotations().get(kuryr_core::names::CONFIG_SOURCE_ANNOTATION).hash(&mut h);
    if let Some(spec) = pod.spec.as_ref() {
        spec.node_name.hash(&mut h);
        spec.host_network.hash(&mut h);
    }
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).hash(&mut h);
    Some(h.finish())
}

pub(crate) fn channel_stream<T: Send + 'static>(rx: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Emits once each time this replica becomes leader.
pub(crate) fn became_leader(mut rx: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send {
    rx.mark_unchanged();
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

pub(crate) fn shutdown_signal(mut rx: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.wait_for(|v| *v).await;
        let _ = tx.send(());
    });
    async move {
        let _ = done.await;
    }
}

/// Connects, optionally installs the CRDs, and starts everything, phase by phase: the shared
/// context, the probes and background tasks, the lease, then the domains' controllers.
pub async fn start(opts: Options) -> Result<Running, Error> {
    let client = crate::runtime::settings::kube_client(opts.kube.clone()).await?;
    if opts.install_crds {
        crds::install(&client).await?;
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let Shared { ctx, session, pod_writer, kp_writer } = shared_context(&opts, client)?;
    let (pod_ctx, pod_tasks) = PodContext::new(ctx.clone());
    let pod_ctx = Arc::new(pod_ctx);

    let mut aux = Vec::new();
    let (health_addr, metrics_addr) = serve_probes(&opts, &ctx.health, &ctx.metrics, &mut aux).await?;
    aux.push(spawn_keystone_check(session, ctx.health.clone()));
    spawn_background(&ctx, &pod_ctx, &opts, pod_tasks, &mut aux);
    let lease = spawn_lease(&opts, &ctx, &shutdown_rx);
    // The project drivers' namespace cache, before any domain creates something.
    if ctx.settings.project_drivers.any_annotation() {
        let (projects, watch) = crate::runtime::projects::Projects::watch(
            ctx.settings.project_drivers,
            &ctx.settings.project,
            &ctx.client,
            ctx.health.clone(),
            &shutdown_rx,
        );
        let _ = ctx.hooks.projects.set(projects);
        aux.push(tokio::spawn(watch));
    }

    // The policy domain first: it sets the taps the pod path's watches feed.
    let policy = match opts.policies.clone() {
        Some(s) if !opts.read_only => Some(crate::policy::start(&ctx, s, opts.namespace.as_deref(), opts.concurrency, shutdown_rx.clone())),
        _ => None,
    };
    // The namespace networks before the pod path too: the subnet hook and the KuryrPort tap.
    let namespaces = match opts.namespaces.clone() {
        Some(s) if !opts.read_only => {
            Some(crate::namespace::start(&ctx, s, opts.namespace.as_deref(), opts.concurrency, shutdown_rx.clone()))
        }
        _ => None,
    };
    let pod_path = pod_controllers(&opts, &ctx, &pod_ctx, (pod_writer, kp_writer), &shutdown_rx);
    let services = match opts.services.clone() {
        Some(s) if !opts.read_only => {
            let (fut, audit) = crate::loadbalancer::start(&ctx, s, opts.namespace.as_deref(), opts.concurrency, shutdown_rx.clone());
            aux.push(audit);
            Some(fut)
        }
        _ => None,
    };
    let controllers = tokio::spawn(async move {
        tokio::join!(pod_path, optional(services), optional(policy), optional(namespaces));
    });
    tracing::info!(
        leader_election = opts.leader_election.is_some(),
        namespace = opts.namespace.as_deref().unwrap_or("<all>"),
        pod_subnet = %opts.settings.pod_subnet,
        services = opts.services.is_some(),
        network_policy = opts.policies.is_some(),
        namespace_networks = opts.namespaces.is_some(),
        activation_interval = ?opts.settings.activation_interval,
        "kuryr-controller started"
    );
    Ok(Running { health_addr, metrics_addr, context: ctx, pod: pod_ctx, shutdown: shutdown_tx, controllers, lease, aux })
}

/// What [`shared_context`] builds: the context every domain shares, the OpenStack session (for
/// the Keystone check) and the writers of the two shared stores (fed by the pod path's watches).
struct Shared {
    ctx: Arc<Context>,
    session: Session,
    pod_writer: reflector::store::Writer<Pod>,
    kp_writer: reflector::store::Writer<KuryrPort>,
}

/// Start phase: metrics, the OpenStack session and clients, the leader gate, the shared stores
/// and the [`Context`] around them.
fn shared_context(opts: &Options, client: Client) -> Result<Shared, Error> {
    let metrics = Arc::new(Metrics::new());
    let sink: MetricsSink = metrics.clone();
    let session = Session::builder(&opts.cloud).metrics(sink).build()?;
    let leader = if opts.leader_election.is_some() || opts.read_only { LeaderGate::elected() } else { LeaderGate::always() };
    metrics.set_leader(leader.is_leader());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (kuryrports, kp_writer) = reflector::store::<KuryrPort>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        neutron: Neutron::new(session.clone()),
        octavia: kuryr_openstack::Octavia::new(session.clone()),
        settings: opts.settings.clone(),
        pods,
        kuryrports,
        cache: NeutronCache::new(opts.settings.neutron_cache_ttl),
        metrics,
        events: Events::new(client, &opts.instance, opts.settings.use_events),
        leader,
        health: Health::new(),
        backoff: Backoff::default(),
        synced: watch::channel(false).0,
        hooks: Default::default(),
    });
    Ok(Shared { ctx, session, pod_writer, kp_writer })
}

/// Start phase: Lease leader election, when asked for.
fn spawn_lease(opts: &Options, ctx: &Arc<Context>, shutdown: &watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let cfg = opts.leader_election.clone()?;
    let (client, leader, metrics, health) = (ctx.client.clone(), ctx.leader.clone(), ctx.metrics.clone(), ctx.health.clone());
    let stop = shutdown_signal(shutdown.clone());
    Some(tokio::spawn(lease::run(client, cfg, leader, metrics, move || health.beat("leader-election", Duration::from_secs(60)), stop)))
}

/// Start phase: the pod path. Two watches (Pods, trimmed; KuryrPorts) feed the shared stores,
/// mark the caches synced once both listed, copy their events to the policy domain's taps, and
/// cross-trigger: the final deletion of a KuryrPort triggers its pod (to drop the pod
/// finalizer), the final deletion of a pod its KuryrPort (orphan check). Returns both
/// controllers behind watchdogs; with the pod handlers off, a future that does nothing.
fn pod_controllers(
    opts: &Options,
    ctx: &Arc<Context>,
    pod_ctx: &Arc<PodContext>,
    (pod_writer, kp_writer): (reflector::store::Writer<Pod>, reflector::store::Writer<KuryrPort>),
    shutdown: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let (pod_trigger_tx, pod_trigger_rx) = mpsc::unbounded_channel::<ObjectRef<Pod>>();
    let (kp_trigger_tx, kp_trigger_rx) = mpsc::unbounded_channel::<ObjectRef<KuryrPort>>();
    // Other domains wake waiting KuryrPorts through it (the namespace networks' readiness).
    let _ = ctx.hooks.kuryrport_trigger.set(kp_trigger_tx.clone());
    let (pods_done, kps_done) = sync_markers(ctx);
    let pod_stream = shared_watch(
        scoped_api::<Pod>(&ctx.client, opts.namespace.as_deref()),
        trim_pod,
        pod_writer,
        WatchFeeds {
            name: "pods",
            health: ctx.health.clone(),
            deleted: kp_trigger_tx,
            listed: pods_done,
            taps: ctx.hooks.pod_events.senders(),
        },
    )
    .predicate_filter(pod_fingerprint, PredicateConfig::default());
    let kp_stream = shared_watch(
        scoped_api::<KuryrPort>(&ctx.client, opts.namespace.as_deref()),
        |kp: &mut KuryrPort| kp.metadata.managed_fields = None,
        kp_writer,
        WatchFeeds {
            name: "kuryrports",
            health: ctx.health.clone(),
            deleted: pod_trigger_tx,
            listed: kps_done,
            taps: ctx.hooks.kuryrport_events.senders(),
        },
    );

    let ccfg = ControllerConfig::default().concurrency(opts.concurrency);
    let pod_controller = controller(pod_stream, ctx.pods.clone(), ccfg.clone(), pod_trigger_rx, ctx, shutdown).run(
        pod::reconcile,
        pod::error_policy,
        pod_ctx.clone(),
    );
    let kp_controller = controller(kp_stream, ctx.kuryrports.clone(), ccfg, kp_trigger_rx, ctx, shutdown).run(
        kuryrport::reconcile,
        kuryrport::error_policy,
        pod_ctx.clone(),
    );
    let (pod_controller, kp_controller) = (log_errors(pod::CONTROLLER, pod_controller), log_errors(kuryrport::CONTROLLER, kp_controller));
    let (on, stop, health) = (opts.pods, shutdown.clone(), ctx.health.clone());
    async move {
        if on {
            tokio::join!(
                watchdog("pod-controller", pod_controller, stop.clone(), health.clone()),
                watchdog("kuryrport-controller", kp_controller, stop, health)
            );
        }
    }
}

/// Synced = both watches delivered their initial list (InitDone). Not Store::wait_until_ready:
/// the controller already waits on it, and its one-waker future would strand a second waiter.
/// Returns what the pod watch and the KuryrPort watch call on their InitDone.
fn sync_markers(ctx: &Arc<Context>) -> (impl Fn() + Send + 'static, impl Fn() + Send + 'static) {
    let pods_listed = Arc::new(AtomicBool::new(false));
    let kps_listed = Arc::new(AtomicBool::new(false));
    let listed = |mine: &Arc<AtomicBool>, other: &Arc<AtomicBool>| {
        let (mine, other, ctx) = (mine.clone(), other.clone(), ctx.clone());
        move || {
            mine.store(true, Ordering::Release);
            if other.load(Ordering::Acquire) && ctx.set_synced() {
                ctx.health.set_synced();
                tracing::info!(pods = ctx.pods.len(), kuryrports = ctx.kuryrports.len(), "caches synced");
            }
        }
    };
    (listed(&pods_listed, &kps_listed), listed(&kps_listed, &pods_listed))
}

/// Where one shared watch reports, besides its store.
struct WatchFeeds<K, O, L>
where
    O: kube::Resource,
{
    /// The watch's name in `/alive`.
    name: &'static str,
    health: Health,
    /// The final deletion of an object triggers the other controller's object of that name.
    deleted: mpsc::UnboundedSender<ObjectRef<O>>,
    /// Called on the initial list's end.
    listed: L,
    /// Every event, for the other domains that asked (their taps).
    taps: Vec<mpsc::UnboundedSender<watcher::Event<K>>>,
}

/// One watch of the pod path: back-off, `trim` before caching, the shared store, then
/// [`WatchFeeds`]. Yields the applied objects.
fn shared_watch<K, O, L>(
    api: Api<K>,
    trim: impl FnMut(&mut K) + Send + 'static,
    writer: reflector::store::Writer<K>,
    feeds: WatchFeeds<K, O, L>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
    O: kube::Resource + 'static,
    O::DynamicType: Default,
    L: Fn() + Send + 'static,
{
    let WatchFeeds { name, health, deleted, listed, taps } = feeds;
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .inspect(move |ev| match ev {
            Ok(ev) => {
                health.watch_ok(name);
                match ev {
                    watcher::Event::Delete(o) => {
                        let _ = deleted.send(ObjectRef::new(&o.name_any()).within(&o.namespace().unwrap_or_default()));
                    }
                    watcher::Event::InitDone => listed(),
                    _ => {}
                }
                for tap in &taps {
                    let _ = tap.send(ev.clone());
                }
            }
            Err(e) => health.watch_err(name, e.to_string()),
        })
        .applied_objects()
}

/// A domain's controllers when it is on; nothing when off.
async fn optional(domain: Option<impl Future<Output = ()>>) {
    if let Some(d) = domain {
        d.await;
    }
}

/// Start phase: the health (`/alive`, `/ready`) and metrics (`/metrics`) servers, when asked
/// for; returns their bound addresses.
async fn serve_probes(
    opts: &Options,
    health: &Health,
    metrics: &Arc<Metrics>,
    aux: &mut Vec<JoinHandle<()>>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), Error> {
    let mut health_addr = None;
    if let Some(addr) = opts.health_addr {
        let h = health.clone();
        let (bound, task) = health::serve(addr, Arc::new(move |p: &str| health::health_routes(&h, p)))
            .await
            .map_err(|e| Error::Config(format!("cannot serve health on {addr}: {e}")))?;
        tracing::info!(addr = %bound, "health server (/alive, /ready)");
        health_addr = Some(bound);
        aux.push(task);
    }
    let mut metrics_addr = None;
    if let Some(addr) = opts.metrics_addr {
        let m = metrics.clone();
        let route = move |p: &str| match p {
            "/metrics" => {
                Reply { status: 200, content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8", body: m.encode() }
            }
            _ => Reply::text(404, "not found\n"),
        };
        let (bound, task) =
            health::serve(addr, Arc::new(route)).await.map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
        tracing::info!(addr = %bound, "metrics server (/metrics)");
        metrics_addr = Some(bound);
        aux.push(task);
    }
    Ok((health_addr, metrics_addr))
}

/// Start phase: Keystone readiness. Reads the session's cached token; Keystone is called only
/// when the token nears expiry (or after a failure).
fn spawn_keystone_check(session: Session, health: Health) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let r = session.token().await.map(drop).map_err(|e| e.to_string());
            if let Err(e) = &r {
                tracing::warn!(error = %e, "no Keystone token");
            }
            health.set_keystone(r);
            health.beat("keystone-check", Duration::from_secs(180));
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
}

/// Start phase: the background tasks: activator, warm pools (or the drain of an earlier
/// configuration's pools), GC.
fn spawn_background(ctx: &Arc<Context>, pod_ctx: &Arc<PodContext>, opts: &Options, tasks: PodTasks, aux: &mut Vec<JoinHandle<()>>) {
    aux.push(tokio::spawn(activator::run(pod_ctx.clone(), tasks.activator)));
    match (pod_ctx.pools.clone(), tasks.pool_jobs) {
        (Some(p), Some(jobs)) => aux.push(tokio::spawn(crate::pod::pool::run(pod_ctx.clone(), p, jobs))),
        // Pools off: release what an earlier configuration's pools left.
        _ if !opts.read_only => aux.push(tokio::spawn(crate::pod::pool::run_drain(pod_ctx.clone()))),
        _ => {}
    }
    if let Some(g) = opts.gc.clone() {
        let hooks: Arc<dyn SweepHooks> = pod_ctx.clone();
        aux.push(tokio::spawn(gc::run(ctx.clone(), hooks, g.interval, opts.namespace.clone(), g.dry_run)));
    }
}

pub(crate) fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs a controller loop; if it ends while not shutting down, `/alive` fails.
pub(crate) async fn watchdog(name: &'static str, fut: impl Future<Output = ()>, stopping: watch::Receiver<bool>, health: Health) {
    fut.await;
    if !*stopping.borrow() {
        health.dead(name, "controller loop ended");
    }
}

pub(crate) fn log_controller_error(controller: &'static str, e: &kube::runtime::controller::Error<Error, watcher::Error>) {
    use kube::runtime::controller::Error as E;
    match e {
        // Already logged and counted by the error policy.
        E::ReconcilerFailed(..) => {}
        E::ObjectNotFound(r) => tracing::debug!(controller, object = %r, "object gone before its reconcile"),
        // Watch errors: the watcher retries with back-off; /alive tracks how long it fails.
        E::QueueError(err) => tracing::warn!(controller, error = %err, "watch error"),
        other => tracing::warn!(controller, error = %other, "controller error"),
    }
}
