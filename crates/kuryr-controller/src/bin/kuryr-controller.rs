//! `kuryr-controller --config-file /etc/kuryr/kuryr.conf [--kubeconfig PATH] [--install-crds]
//! [--leader-elect]`: parses arguments, sets up logging, runs until SIGTERM/SIGINT.

use anyhow::Context as _;
use clap::Parser;
use kuryr_controller::runtime::lease::LeaseConfig;
use kuryr_controller::Options;
use kuryr_core::config::{Config, Role};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "kuryr-controller", version, about = "Kubernetes pods on OpenStack Neutron ports (kuryr-rs controller)")]
struct Args {
    /// kuryr.conf (upstream kuryr-kubernetes' option name and format).
    #[arg(long = "config-file", default_value = "/etc/kuryr/kuryr.conf")]
    config_file: PathBuf,
    /// kubeconfig to use; default: in-cluster, else [kubernetes] api_root, else $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Server-side apply the openstack.org/v1 CRDs at start-up.
    #[arg(long)]
    install_crds: bool,
    /// Only the holder of the coordination.k8s.io Lease writes (active/passive HA).
    #[arg(long)]
    leader_elect: bool,
    #[arg(long, default_value = "kube-system")]
    leader_elect_namespace: String,
    #[arg(long, default_value = "kuryr-controller")]
    leader_elect_name: String,
    /// Cluster name written into the description of the Neutron ports.
    #[arg(long, env = "KURYR_CLUSTER_NAME", default_value = "kubernetes")]
    cluster_name: String,
    /// Health server address (default: all addresses, [health_server] port).
    #[arg(long)]
    health_addr: Option<SocketAddr>,
    /// Metrics server address (default: all addresses, [prometheus_exporter] controller_exporter_port).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Poll interval of the batched port-status poll while ports wait to become ACTIVE.
    #[arg(long, default_value_t = 250)]
    activation_interval_ms: u64,
    /// Seconds after which a port not yet ACTIVE gets a Warning Event.
    #[arg(long, default_value_t = 60)]
    activation_deadline_secs: u64,
    /// Only handle pods and KuryrPorts of this namespace (canaries, shared test clusters).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// Seconds between the passes of the mark-and-sweep GC of orphaned Neutron resources (an
    /// orphan is deleted by the second pass that sees it); 0 disables GC.
    #[arg(long, default_value_t = 300)]
    gc_interval_seconds: u64,
    /// GC logs what it would delete and deletes nothing.
    #[arg(long)]
    gc_dry_run: bool,
    /// List the orphaned resources GC would collect (one line each, from the current state),
    /// then exit: 0 if none, 3 if some. Writes nothing.
    #[arg(long)]
    gc_list: bool,
    /// Seconds between the comparisons of Octavia with the KuryrLoadBalancers (three
    /// tag-filtered lists per pass) that repair load balancers, listeners and pools deleted out
    /// of band.
    #[arg(long, default_value_t = 30)]
    lb_audit_seconds: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn,kube_client=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--gc-list`: syncs the caches read-only (no leader election, no writes), prints the orphans.
async fn gc_list(mut opts: Options) -> anyhow::Result<()> {
    opts.gc = None;
    opts.health_addr = None;
    opts.metrics_addr = None;
    opts.install_crds = false;
    // A replica that never leads: the reconcilers' writes are fenced off.
    opts.leader_election = None;
    opts.read_only = true;
    let namespace = opts.namespace.clone();
    let client = kuryr_controller::runtime::settings::kube_client(opts.kube.clone()).await?;
    kuryr_controller::runtime::crds::ensure_served(&client, namespace.as_deref()).await?;
    let running = kuryr_controller::start(opts).await?;
    running.wait_synced(Duration::from_secs(120)).await?;
    let orphans = kuryr_controller::gc::orphans(&running.context, namespace.as_deref()).await?;
    for o in &orphans {
        println!("{o}");
    }
    eprintln!("{} orphaned resource(s)", orphans.len());
    std::process::exit(if orphans.is_empty() { 0 } else { 3 });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let config =
        Config::load(&args.config_file, Role::Controller).with_context(|| format!("--config-file {}", args.config_file.display()))?;
    let kube = kuryr_controller::runtime::settings::kube_config(args.kubeconfig.as_deref(), &config.kubernetes).await?;
    let mut opts = Options::from_config(&config, kube, &args.cluster_name)?;
    opts.install_crds = args.install_crds;
    opts.namespace = args.watch_namespace.clone();
    opts.settings.activation_interval = Duration::from_millis(args.activation_interval_ms.max(10));
    opts.settings.activation_deadline = Duration::from_secs(args.activation_deadline_secs.max(1));
    opts.gc = (args.gc_interval_seconds > 0).then(|| kuryr_controller::runtime::run::GcOptions {
        interval: Duration::from_secs(args.gc_interval_seconds),
        dry_run: args.gc_dry_run,
    });
    if let Some(s) = opts.services.as_mut() {
        s.audit_interval = Duration::from_secs(args.lb_audit_seconds.max(1));
    }
    if args.gc_list {
        return gc_list(opts).await;
    }
    if let Some(a) = args.health_addr {
        opts.health_addr = Some(a);
    }
    if let Some(a) = args.metrics_addr {
        opts.metrics_addr = Some(a);
    }
    if args.leader_elect {
        opts.leader_election = Some(LeaseConfig::new(&args.leader_elect_namespace, &args.leader_elect_name, &opts.instance));
    } else if config.kubernetes.controller_ha {
        tracing::warn!("[kubernetes] controller_ha = true but --leader-elect is not set: running without leader election");
    }
    let mut running = kuryr_controller::start(opts).await?;
    tokio::select! {
        _ = terminate() => {
            tracing::info!("shutting down");
            running.shutdown().await;
            Ok(())
        }
        _ = running.stopped() => anyhow::bail!("the controllers stopped unexpectedly"),
    }
}
