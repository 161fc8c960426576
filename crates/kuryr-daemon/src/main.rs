//! kuryr-daemon binary: flags, logging, run until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use kuryr_daemon::args::Args;
use kuryr_daemon::daemon::{kube_client, Daemon};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("KURYR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if let Some(ns) = &args.share_netns_dir_in {
        let done = kuryr_netplumb::share_run_dir_in(ns).with_context(|| {
            format!(
                "preparing the host: making {} a shared mount point in the mount namespace {} \
                 (kuryr-daemon needs privileges and the host's /proc)",
                kuryr_netplumb::NETNS_RUN_DIR,
                ns.display()
            )
        })?;
        tracing::info!(mount_ns = %ns.display(), outcome = ?done, "{} is a shared mount point", kuryr_netplumb::NETNS_RUN_DIR);
        return Ok(());
    }
    let opts = args
        .options()
        .with_context(|| format!("reading {}", args.config_file.display()))?;
    let client = kube_client(args.kubeconfig.as_deref(), &opts.config.kubernetes)
        .await
        .context("Kubernetes client")?;
    let daemon = Daemon::start(opts, client)
        .await
        .context("starting kuryr-daemon")?;
    daemon
        .run_until_signal()
        .await
        .context("waiting for a signal")?;
    Ok(())
}
