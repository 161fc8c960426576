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
        return share_netns_dir(ns);
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

/// `--share-netns-dir-in`: makes /run/netns a shared mount point in the mount namespace `ns`
/// (the host's, through its /proc), then returns.
///
/// Some hosts refuse to open their init's namespaces even to a privileged container (a
/// sandbox init that is not dumpable: EACCES on `/proc/1/ns/mnt`). kthreadd (pid 2) lives in
/// the initial mount namespace too, which is init's on every host that does not move init
/// elsewhere: `PROC/1/ns/mnt` falls back to `PROC/2/ns/mnt` then.
fn share_netns_dir(ns: &std::path::Path) -> anyhow::Result<()> {
    use kuryr_netplumb::{share_run_dir_in, ErrorKind, NETNS_RUN_DIR};
    let what = |p: &std::path::Path| {
        format!(
            "preparing the host: making {NETNS_RUN_DIR} a shared mount point in the mount \
             namespace {} (kuryr-daemon needs privileges and the host's /proc)",
            p.display()
        )
    };
    let kthreadd = ns
        .ends_with("1/ns/mnt")
        .then(|| {
            ns.ancestors()
                .nth(3)
                .map(|proc_root| proc_root.join("2/ns/mnt"))
        })
        .flatten();
    let (used, done) = match share_run_dir_in(ns) {
        Ok(done) => (ns.to_path_buf(), done),
        Err(e) => match kthreadd.filter(|_| e.kind() == ErrorKind::PermissionDenied) {
            Some(alt) => {
                tracing::warn!(refused = %ns.display(), error = %e, using = %alt.display(), "init's mount namespace refused; using kthreadd's (the same initial namespace)");
                let done = share_run_dir_in(&alt).with_context(|| what(&alt))?;
                (alt, done)
            }
            None => return Err(e).with_context(|| what(ns)),
        },
    };
    tracing::info!(mount_ns = %used.display(), outcome = ?done, "{NETNS_RUN_DIR} is a shared mount point");
    Ok(())
}
