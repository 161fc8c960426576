//! Wiring it all together: start-up order, the probe loop, the conflist, shutdown.
//!
//! Start-up: install `kuryr-cni` (optional) → open the attachment records → start the watches
//! → drain the DEL queue → listen on the CNI socket, health and metrics ports → probe loop.
//! The conflist is written as soon as the daemon is ready (caches synced, API server
//! reachable, OVS bridge present) and removed on shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kuryr_core::config::{Config, KubernetesConfig, PodVifDriver};
use kuryr_netplumb::Netns;
use kuryr_ovsdb::Ovs;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::api::server::{bind_unix, serve_tcp, serve_unix, Site, SocketLimits};
use crate::attachments::AttachmentStore;
use crate::binding::HostEnv;
use crate::cni::{Cni, Settings};
use crate::conflist::{self, ConflistSpec};
use crate::delqueue;
use crate::events::Recorder;
use crate::health::{FailureWindow, Health, ProbeState};
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::watch::Cluster;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    State(#[from] crate::error::DaemonError),
    #[error("open the host netns: {0}")]
    Netns(#[from] kuryr_netplumb::Error),
    #[error("Kubernetes client: {0}")]
    Kube(String),
    #[error("configuration: {0}")]
    Config(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.display().to_string();
    move |source| StartError::Io { what, path, source }
}

/// Where the conflist goes.
#[derive(Debug, Clone)]
pub struct ConflistOptions {
    pub dir: PathBuf,
    pub name: String,
    pub chain: Vec<String>,
    pub timeout_seconds: f64,
    pub cni_version: String,
}

/// Everything the daemon needs; see `args.rs` for the flags that fill it.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub config: Config,
    pub node_name: String,
    pub socket_path: PathBuf,
    pub attachments_dir: PathBuf,
    pub del_queue_dir: PathBuf,
    /// `None`: do not write a conflist (`--no-conflist`).
    pub conflist: Option<ConflistOptions>,
    /// Copy this `kuryr-cni` binary into the CNI bin dir at start-up.
    pub install_cni: Option<(PathBuf, PathBuf)>,
    /// What the chain after kuryr-cni does when the conflist is not the daemon's to write
    /// (`--no-conflist --chain ...`: a static conflist naming that chain); else from `conflist`.
    pub chain_caps: Option<crate::chained::ChainCaps>,
    /// Copy the shipped CNI plugins (directory, CNI bin dir, policy) at start-up.
    pub install_plugins: Option<(PathBuf, PathBuf, conflist::PluginInstall)>,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub ovsdb_endpoint: String,
    /// How often the API server and the OVS bridge are probed.
    pub probe_interval: Duration,
    /// Liveness: failure-rate window.
    pub failure_window: Duration,
    /// Holding netns (`/run/netns/<name>`) of pre-plugged pool ports
    /// ([`kuryr_core::names::POOL_NETNS`] by default); `None`: no pre-plugging.
    pub pool_netns: Option<String>,
}

/// A running daemon.
pub struct Daemon {
    pub cni: Arc<Cni>,
    pub health: Arc<Health>,
    socket_path: PathBuf,
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    conflist_path: Arc<Mutex<Option<PathBuf>>>,
    pub drained: delqueue::DrainReport,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket_path)
            .field("health", &self.health_addr)
            .field("metrics", &self.metrics_addr)
            .finish()
    }
}

/// A Kubernetes client: from `kubeconfig` if given, else from `[kubernetes]` of kuryr.conf
/// (`api_root`, `token_file`, `ssl_ca_crt_file`, ...) when `api_root` is set and the token
/// file exists, else the usual inference (in-cluster service account, `$KUBECONFIG`).
pub async fn kube_client(
    kubeconfig: Option<&Path>,
    k: &KubernetesConfig,
) -> Result<Client, StartError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kerr = |e: &dyn std::fmt::Display| StartError::Kube(e.to_string());
    let config = if let Some(path) = kubeconfig {
        let kc = Kubeconfig::read_from(path)
            .map_err(|e| kerr(&format!("read {}: {e}", path.display())))?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| kerr(&e))?
    } else if let (Some(api), true) = (&k.api_root, Path::new(&k.token_file).exists()) {
        let mut cluster = serde_json::json!({"server": api, "insecure-skip-tls-verify": !k.ssl_verify_server_crt});
        if k.ssl_verify_server_crt && Path::new(&k.ssl_ca_crt_file).exists() {
            cluster["certificate-authority"] = k.ssl_ca_crt_file.clone().into();
        }
        let mut user = serde_json::json!({"tokenFile": k.token_file});
        if let (Some(c), Some(key)) = (&k.ssl_client_crt_file, &k.ssl_client_key_file) {
            user = serde_json::json!({"client-certificate": c, "client-key": key});
        }
        let kc: Kubeconfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kuryr", "cluster": cluster}],
            "users": [{"name": "kuryr", "user": user}],
            "contexts": [{"name": "kuryr", "context": {"cluster": "kuryr", "user": "kuryr"}}],
            "current-context": "kuryr",
        }))
        .map_err(|e| kerr(&e))?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| kerr(&e))?
    } else {
        kube::Config::infer().await.map_err(|e| kerr(&e))?
    };
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| kerr(&e))?;
    probe_api_server(&client, &server).await?;
    Ok(client)
}

/// One request (`GET /version`) before the daemon starts: a TLS failure (the API server's
/// certificate not signed by the CA the daemon was given, or not for its address) is a
/// configuration error no retry fixes, so the start fails naming it and the server, instead of
/// the watches retrying it forever (and the node never getting its conflist). Any other failure
/// (the API server not up yet) is logged and left to the watches, which retry.
async fn probe_api_server(client: &Client, server: &str) -> Result<(), StartError> {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => match kuryr_core::tls::failure(&e) {
            Some(tls) => Err(StartError::Kube(
                tls.api_server_error("kuryr-daemon", server),
            )),
            None => {
                tracing::warn!(%server, error = %e, "the API server did not answer GET /version; the watches retry");
                Ok(())
            }
        },
        Err(_) => {
            tracing::warn!(%server, timeout = ?PROBE_TIMEOUT, "the API server did not answer GET /version in time; the watches retry");
            Ok(())
        }
    }
}

/// This node's name: `--node-name`, else `$KUBERNETES_NODE_NAME`, else the hostname
/// (lower-cased, as kubelet does).
pub fn node_name(flag: Option<&str>) -> String {
    if let Some(n) = flag.filter(|n| !n.is_empty()) {
        return n.to_owned();
    }
    if let Ok(n) = std::env::var("KUBERNETES_NODE_NAME") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_default()
}

impl Daemon {
    /// Starts everything and returns once the CNI socket accepts requests.
    pub async fn start(opts: DaemonOptions, client: Client) -> Result<Daemon, StartError> {
        let store = prepare_host(&opts)?;
        let metrics = Metrics::new();
        metrics.set_attachments(store.list().map(|l| l.len()).unwrap_or(0));

        let (cluster, writers) = Cluster::new();
        let watch_tasks = cluster.start(client.clone(), &opts.node_name, writers);
        let parts = assemble(&opts, &client, cluster, store, &metrics)?;
        let cni = parts.cni.clone();
        let health = cni.health.clone();

        // DELs the shim queued while we were down, before anything new is served.
        let drained = delqueue::drain(&opts.del_queue_dir, &cni).await;
        if drained != delqueue::DrainReport::default() {
            tracing::info!(?drained, "drained the DEL queue");
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (servers, health_addr, metrics_addr) =
            serve(&opts, &cni, metrics, &shutdown_rx).await?;
        tracing::info!(socket = %opts.socket_path.display(), %health_addr, %metrics_addr, node = %opts.node_name, standalone_namespace = crate::standalone::namespace(), "kuryr-daemon serving");

        let conflist_path = Arc::new(Mutex::new(None));
        let mut background = watch_tasks;
        background.extend(spawn_background(
            &opts,
            client,
            parts,
            &conflist_path,
            shutdown_rx,
        ));
        Ok(Daemon {
            cni,
            health,
            socket_path: opts.socket_path,
            health_addr,
            metrics_addr,
            shutdown,
            servers,
            background,
            conflist_path,
            drained,
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }
    /// The conflist, once written.
    pub fn conflist_path(&self) -> Option<PathBuf> {
        self.conflist_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Clean shutdown: the conflist goes first (the node's network is not ready without us),
    /// then the servers stop accepting and finish in-flight requests, then the watches stop.
    pub async fn shutdown(self) {
        if let Some(p) = self
            .conflist_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            match conflist::remove(&p) {
                Ok(()) => tracing::info!(conflist = %p.display(), "removed the conflist"),
                Err(e) => {
                    tracing::warn!(conflist = %p.display(), error = %e, "cannot remove the conflist")
                }
            }
        }
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        for t in &self.background {
            t.abort();
        }
        for t in self.background {
            let _ = t.await;
        }
        // The writer may have finished a write while we were stopping.
        if let Some(p) = self
            .conflist_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = conflist::remove(&p);
        }
        let _ = std::fs::remove_file(&self.socket_path);
        tracing::info!("kuryr-daemon stopped");
    }

    /// Runs until SIGTERM or SIGINT, then shuts down cleanly.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        self.shutdown().await;
        Ok(())
    }
}

/// Prepares the host before anything runs: the standalone namespace, `kuryr-cni` installed
/// (optional), the attachment records opened and the DEL queue directory present.
/// Start phase: the shipped CNI plugins installed next to kuryr-cni (when asked), and a warning
/// for each chained plugin the CNI bin dir lacks.
fn install_plugins(opts: &DaemonOptions) -> Result<(), StartError> {
    if let Some((from, bin_dir, policy)) = &opts.install_plugins {
        let done = conflist::install_plugins(from, bin_dir, *policy)
            .map_err(io_err("install the CNI plugins into", bin_dir))?;
        for (name, outcome) in done {
            let dest = bin_dir.join(&name);
            tracing::info!(plugin = %name, dest = %dest.display(), ?outcome, "CNI plugin");
        }
    }
    if let Some(c) = &opts.conflist {
        for p in c.chain.iter().filter(|p| !p.is_empty()) {
            let bin = opts
                .install_plugins
                .as_ref()
                .map(|(_, b, _)| b.clone())
                .or_else(|| opts.install_cni.as_ref().map(|(_, b)| b.clone()));
            if let Some(bin) = bin.filter(|b| !b.join(p).exists()) {
                tracing::warn!(plugin = %p, dir = %bin.display(), "a chained CNI plugin is not in the CNI bin dir: pods will fail ADD");
            }
        }
    }
    Ok(())
}

fn prepare_host(opts: &DaemonOptions) -> Result<AttachmentStore, StartError> {
    crate::standalone::set_namespace(&opts.config.cni_daemon.standalone_namespace)
        .map_err(StartError::Config)?;
    if let Some((from, bin_dir)) = &opts.install_cni {
        let dest = conflist::install_cni_binary(from, bin_dir)
            .map_err(io_err("install kuryr-cni into", bin_dir))?;
        tracing::info!(dest = %dest.display(), "installed kuryr-cni");
    }
    install_plugins(opts)?;
    let store = AttachmentStore::open(&opts.attachments_dir)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.del_queue_dir)
            .map_err(io_err(
                "create the DEL queue directory",
                &opts.del_queue_dir,
            ))?;
    }
    Ok(store)
}

/// The CNI service and what the background tasks share with it.
struct Parts {
    cni: Arc<Cni>,
    ovs: Arc<Ovs>,
    /// The OVS bridge pods are plugged into (`None` for the nested drivers).
    bridge: Option<String>,
}

/// Builds the CNI service: health, the host environment (OVS, the host netns), events and the
/// port pool (disabled when its holding netns cannot be opened).
fn assemble(
    opts: &DaemonOptions,
    client: &Client,
    cluster: Arc<Cluster>,
    store: AttachmentStore,
    metrics: &Metrics,
) -> Result<Parts, StartError> {
    let cfg = &opts.config;
    let bridge = match cfg.kubernetes.pod_vif_driver {
        PodVifDriver::NeutronVif => Some(cfg.neutron_defaults.ovs_bridge.clone()),
        PodVifDriver::NestedVlan | PodVifDriver::NestedMacvlan => None,
    };
    let failures = FailureWindow::new(
        opts.failure_window,
        cfg.cni_daemon.cni_failures_count as usize,
        0.5,
    );
    let health = Arc::new(Health::new(cluster.clone(), bridge.clone(), failures));
    let ovs = Arc::new(Ovs::lazy(&opts.ovsdb_endpoint, Duration::from_secs(10)));
    let env = HostEnv::new(
        Netns::current()?,
        ovs.clone(),
        cfg.link_iface.clone(),
        cfg.neutron_defaults.network_device_mtu,
    );
    let events = Recorder::new(
        cfg.kubernetes.use_events.then(|| client.clone()),
        &opts.node_name,
    );
    let pool = match (&opts.pool_netns, &bridge) {
        (Some(name), Some(br)) => match Pool::open(name, br, metrics.clone()) {
            Ok(p) => p,
            Err(e) => {
                // ADD works without it, only slower.
                tracing::error!(netns = %name, error = %e, "cannot open the holding netns: pre-plugging is off");
                Pool::disabled(metrics.clone())
            }
        },
        _ => Pool::disabled(metrics.clone()),
    };
    let cni = Arc::new(Cni {
        settings: Settings {
            vif_timeout: cfg.cni_daemon.vif_annotation_timeout,
            chain: opts.chain_caps.or_else(|| {
                opts.conflist
                    .as_ref()
                    .map(|c| crate::chained::ChainCaps::of(&c.chain))
            }),
        },
        cluster,
        env,
        store,
        locks: KeyedLocks::new(),
        events,
        metrics: metrics.clone(),
        health,
        pool: Arc::new(pool),
    });
    Ok(Parts { cni, ovs, bridge })
}

/// Listens on the CNI socket and the health and metrics ports and serves them; returns the
/// servers and the bound health and metrics addresses.
async fn serve(
    opts: &DaemonOptions,
    cni: &Arc<Cni>,
    metrics: Metrics,
    shutdown_rx: &watch::Receiver<bool>,
) -> Result<(Vec<JoinHandle<()>>, SocketAddr, SocketAddr), StartError> {
    let unix = bind_unix(&opts.socket_path)
        .await
        .map_err(io_err("listen on", &opts.socket_path))?;
    let health_l = TcpListener::bind(opts.health_addr).await.map_err(io_err(
        "listen on",
        Path::new(&opts.health_addr.to_string()),
    ))?;
    let metrics_l = TcpListener::bind(opts.metrics_addr).await.map_err(io_err(
        "listen on",
        Path::new(&opts.metrics_addr.to_string()),
    ))?;
    let health_addr = health_l
        .local_addr()
        .map_err(io_err("address of", Path::new("health listener")))?;
    let metrics_addr = metrics_l
        .local_addr()
        .map_err(io_err("address of", Path::new("metrics listener")))?;
    let servers = vec![
        tokio::spawn(serve_unix(
            unix,
            cni.clone(),
            shutdown_rx.clone(),
            SocketLimits::from_config(&opts.config.cni_daemon),
        )),
        tokio::spawn(serve_tcp(
            health_l,
            Site::Health(cni.health.clone()),
            shutdown_rx.clone(),
        )),
        tokio::spawn(serve_tcp(
            metrics_l,
            Site::Metrics(metrics),
            shutdown_rx.clone(),
        )),
    ];
    Ok((servers, health_addr, metrics_addr))
}

/// Spawns the background tasks: the pool, the probe loop, the OVS port audit (with a bridge)
/// and the conflist writer (unless `--no-conflist`).
fn spawn_background(
    opts: &DaemonOptions,
    client: Client,
    parts: Parts,
    conflist_path: &Arc<Mutex<Option<PathBuf>>>,
    shutdown_rx: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let Parts { cni, ovs, bridge } = parts;
    let health = cni.health.clone();
    let probed = Arc::new(Notify::new());
    let mut background = Vec::new();
    background.push(tokio::spawn(
        cni.pool.clone().run(cni.clone(), shutdown_rx.clone()),
    ));
    background.push(tokio::spawn(probe_loop(
        client,
        ovs,
        bridge,
        health.clone(),
        opts.probe_interval,
        probed.clone(),
        shutdown_rx.clone(),
    )));
    if health.bridge.is_some() {
        background.push(tokio::spawn(ovs_audit_loop(
            cni.clone(),
            opts.probe_interval,
            shutdown_rx.clone(),
        )));
    }
    if let Some(c) = &opts.conflist {
        let spec = ConflistSpec {
            daemon_socket: opts.socket_path.display().to_string(),
            del_queue_dir: opts.del_queue_dir.display().to_string(),
            timeout_seconds: c.timeout_seconds,
            chain: c.chain.clone(),
            cni_version: c.cni_version.clone(),
        };
        background.push(tokio::spawn(write_conflist_when_ready(
            c.clone(),
            spec,
            health,
            probed,
            conflist_path.clone(),
            shutdown_rx,
        )));
    }
    background
}

/// Probes the API server and the OVS bridge every `interval`.
async fn probe_loop(
    client: Client,
    ovs: Arc<Ovs>,
    bridge: Option<String>,
    health: Arc<Health>,
    interval: Duration,
    probed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
    loop {
        let api = tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await;
        let (api_ok, api_error) = match api {
            Ok(Ok(_)) => (true, None),
            Ok(Err(e)) => (false, Some(e.to_string())),
            Err(_) => (
                false,
                Some(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            ),
        };
        let (bridge_ok, bridge_error) = match &bridge {
            None => (None, None),
            Some(b) => match tokio::time::timeout(PROBE_TIMEOUT, ovs.bridge_exists(b)).await {
                Ok(Ok(Some(_))) => (Some(true), None),
                Ok(Ok(None)) => (Some(false), Some(format!("OVS bridge {b} does not exist"))),
                Ok(Err(e)) => (
                    Some(false),
                    Some(format!("cannot check OVS bridge {b}: {e}")),
                ),
                Err(_) => (
                    Some(false),
                    Some(format!(
                        "OVSDB did not answer within {}s",
                        PROBE_TIMEOUT.as_secs()
                    )),
                ),
            },
        };
        *health.probe.lock().unwrap_or_else(|p| p.into_inner()) = ProbeState {
            last_round: Some(Instant::now()),
            api_ok,
            api_error,
            bridge_ok,
            bridge_error,
        };
        probed.notify_waiters();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::daemon::stopped(&mut shutdown) => return,
        }
    }
}

/// Every `interval`: judges every OVS port the daemon owns (attachments and held pool ports)
/// against its device and re-adds the stale ones ([`crate::stale`]); what stays wrong goes to
/// the health report (`/health`) and the `kuryr_cni_ovs_stale_ports` gauge. Before that, the OVS
/// ports upstream kuryr left without a device go ([`crate::stale::sweep_upstream_leftovers`]).
async fn ovs_audit_loop(cni: Arc<Cni>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let repairer = cni.repairer();
    loop {
        let bridge = cni.health.bridge.as_deref().unwrap_or_default();
        let problems = match crate::stale::audit(&repairer, &cni.store, &cni.pool, bridge).await {
            Ok(p) => p,
            Err(e) => vec![format!("cannot audit the OVS ports: {e}")],
        };
        if !problems.is_empty() {
            tracing::warn!(?problems, "OVS port audit");
        }
        cni.metrics.set_stale_ports(problems.len());
        cni.health.set_ovs_port_problems(problems);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::daemon::stopped(&mut shutdown) => return,
        }
    }
}

/// Writes the conflist as soon as the daemon is ready: re-checked on every watch event and
/// after every probe round (no polling of its own).
async fn write_conflist_when_ready(
    c: ConflistOptions,
    spec: ConflistSpec,
    health: Arc<Health>,
    probed: Arc<Notify>,
    written: Arc<Mutex<Option<PathBuf>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = health.cluster.subscribe();
    loop {
        let notified = probed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        changes.borrow_and_update();
        if health.ready() {
            match conflist::write(&c.dir, &c.name, &spec) {
                Ok(p) => {
                    tracing::info!(conflist = %p.display(), "ready: wrote the CNI conflist");
                    *written.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
                    return;
                }
                Err(e) => {
                    tracing::error!(dir = %c.dir.display(), error = %e, "cannot write the CNI conflist; retrying after the next probe")
                }
            }
        }
        tokio::select! {
            _ = notified => {}
            r = changes.changed() => if r.is_err() { return },
            _ = crate::daemon::stopped(&mut shutdown) => return,
        }
    }
}

/// Attachments directory and DEL queue under a state directory.
pub fn state_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (state_dir.join("attachments"), state_dir.join("del-queue"))
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
