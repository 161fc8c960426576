//! Command-line flags → [`DaemonOptions`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kuryr_core::config::{Config, Role};

use crate::conflist::CONFLIST_NAME;
use crate::daemon::{node_name, state_paths, ConflistOptions, DaemonOptions};

/// kuryr-daemon: the kuryr-rs CNI daemon (one per node).
#[derive(Debug, Clone, Parser)]
#[command(name = "kuryr-daemon", version, about)]
pub struct Args {
    /// Prepare the host and exit: make /run/netns a shared mount point in the mount namespace
    /// at this path (the DaemonSet's init container passes the host's /proc/1/ns/mnt, mounted at
    /// /host_proc), so a container mounting /run/netns with HostToContainer propagation can
    /// start on a host where no netns was named yet and `/` is private (no systemd).
    #[arg(long, value_name = "MOUNT_NS")]
    pub share_netns_dir_in: Option<PathBuf>,
    /// kuryr.conf (oslo.config INI, same sections as upstream kuryr-kubernetes).
    #[arg(long, default_value = "/etc/kuryr/kuryr.conf")]
    pub config_file: PathBuf,
    /// Kubeconfig to use instead of [kubernetes] of kuryr.conf / the in-cluster account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name [default: $KUBERNETES_NODE_NAME, else the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// CNI API socket [default: [cni_daemon] socket_path, /run/kuryr/kuryr-daemon.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// State directory: attachment records in <state-dir>/attachments.
    #[arg(long, default_value = "/var/lib/kuryr")]
    pub state_dir: PathBuf,
    /// DEL queue kuryr-cni writes when the daemon is down [default: <state-dir>/del-queue].
    #[arg(long)]
    pub del_queue_dir: Option<PathBuf>,
    /// Where the conflist is written once ready (and removed on shutdown).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// File name of the conflist.
    #[arg(long, default_value = CONFLIST_NAME)]
    pub cni_conf_name: String,
    /// CNI binary directory (for --install-cni-from).
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Copy this kuryr-cni binary to <cni-bin-dir>/kuryr-cni (atomically) at start-up.
    #[arg(long)]
    pub install_cni_from: Option<PathBuf>,
    /// Install the CNI plugins in this directory (the reference `portmap` and `bandwidth` the
    /// daemon image ships) into <cni-bin-dir> at start-up, atomically, per
    /// --cni-plugins-install.
    #[arg(long, value_name = "DIR")]
    pub install_cni_plugins_from: Option<PathBuf>,
    /// What to do with a plugin of the same name the host already has: `unless-newer` keeps a
    /// host copy reporting the same or a newer version, `if-missing` keeps any host copy,
    /// `always` replaces it.
    #[arg(long, value_enum, default_value_t = crate::conflist::PluginInstall::UnlessNewer)]
    pub cni_plugins_install: crate::conflist::PluginInstall,
    /// Do not write the conflist.
    #[arg(long)]
    pub no_conflist: bool,
    /// Chained plugins after kuryr-cni in the conflist (e.g. portmap,bandwidth); repeatable.
    /// With --no-conflist: the chain of the static conflist (for the Events about pods asking
    /// for a plugin that is not chained).
    #[arg(long, value_delimiter = ',')]
    pub chain: Vec<String>,
    /// `cniVersion` of the conflist (and so of the results kuryr-cni prints). 1.1.0 adds STATUS
    /// and GC but needs a runtime with libcni >= 1.2 (containerd 2.x); 1.6/1.7 need <= 1.0.0.
    #[arg(long, default_value = crate::conflist::DEFAULT_CNI_VERSION, value_parser = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])]
    pub cni_version: String,
    /// The shim's deadline for ADD/DEL/CHECK/GC written into the conflist.
    #[arg(long, default_value_t = kuryr_cni_api::DEFAULT_TIMEOUT_SECONDS)]
    pub cni_timeout_seconds: f64,
    /// Health server port [default: [cni_health_server] port, 8090].
    #[arg(long)]
    pub health_port: Option<u16>,
    /// Metrics port [default: [prometheus_exporter] cni_exporter_port, 9655].
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Address the health and metrics servers bind to.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub listen_address: IpAddr,
    /// OVSDB endpoint.
    #[arg(long, default_value = kuryr_ovsdb::DEFAULT_ENDPOINT)]
    pub ovsdb: String,
    /// Parent NIC of nested bindings (overrides [binding] link_iface).
    #[arg(long)]
    pub link_iface: Option<String>,
    /// Holding netns (/run/netns/<name>) of pre-plugged pool ports; "" turns pre-plugging off.
    #[arg(long, default_value = kuryr_core::names::POOL_NETNS)]
    pub pool_netns: String,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

impl Args {
    /// Reads kuryr.conf and resolves every default.
    pub fn options(&self) -> Result<DaemonOptions, kuryr_core::config::ConfigError> {
        let mut config = Config::load(&self.config_file, Role::Daemon)?;
        if self.link_iface.is_some() {
            config.link_iface = self.link_iface.clone();
        }
        Ok(self.options_with(config))
    }

    /// Resolves the defaults against an already loaded config.
    pub fn options_with(&self, config: Config) -> DaemonOptions {
        let (attachments_dir, default_queue) = state_paths(&self.state_dir);
        let socket_path = self
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(&config.cni_daemon.socket_path));
        let health_addr = SocketAddr::new(
            self.listen_address,
            self.health_port.unwrap_or(config.ports.cni_health),
        );
        let metrics_addr = SocketAddr::new(
            self.listen_address,
            self.metrics_port.unwrap_or(config.ports.cni_metrics),
        );
        DaemonOptions {
            node_name: node_name(self.node_name.as_deref()),
            socket_path,
            attachments_dir,
            del_queue_dir: self.del_queue_dir.clone().unwrap_or(default_queue),
            conflist: (!self.no_conflist).then(|| ConflistOptions {
                dir: self.cni_conf_dir.clone(),
                name: self.cni_conf_name.clone(),
                chain: self.chain.clone(),
                timeout_seconds: self.cni_timeout_seconds,
                cni_version: self.cni_version.clone(),
            }),
            install_cni: self
                .install_cni_from
                .clone()
                .map(|f| (f, self.cni_bin_dir.clone())),
            chain_caps: (self.no_conflist && !self.chain.is_empty())
                .then(|| crate::chained::ChainCaps::of(&self.chain)),
            install_plugins: self
                .install_cni_plugins_from
                .clone()
                .map(|f| (f, self.cni_bin_dir.clone(), self.cni_plugins_install)),
            health_addr,
            metrics_addr,
            ovsdb_endpoint: self.ovsdb.clone(),
            probe_interval: Duration::from_secs(5),
            failure_window: Duration::from_secs(300),
            pool_netns: (!self.pool_netns.is_empty()).then(|| self.pool_netns.clone()),
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_config_and_defaults_follow_state_dir() {
        let config = Config::parse(
            "[cni_daemon]\nsocket_path = /run/x.sock\n[cni_health_server]\nport = 1234\n",
            Role::Daemon,
        )
        .expect("config");
        let a = Args::parse_from([
            "kuryr-daemon",
            "--state-dir",
            "/tmp/s",
            "--node-name",
            "n1",
            "--chain",
            "portmap,bandwidth",
        ]);
        let o = a.options_with(config.clone());
        assert_eq!(o.socket_path, PathBuf::from("/run/x.sock"));
        assert_eq!(o.attachments_dir, PathBuf::from("/tmp/s/attachments"));
        assert_eq!(o.del_queue_dir, PathBuf::from("/tmp/s/del-queue"));
        assert_eq!(o.health_addr.port(), 1234);
        assert_eq!(o.metrics_addr.port(), 9655);
        assert_eq!(o.node_name, "n1");
        let c = o.conflist.expect("conflist on by default");
        assert_eq!(c.dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(c.chain, ["portmap", "bandwidth"]);

        let a = Args::parse_from([
            "kuryr-daemon",
            "--socket",
            "/tmp/d.sock",
            "--no-conflist",
            "--health-port",
            "0",
        ]);
        let o = a.options_with(config);
        assert_eq!(o.socket_path, PathBuf::from("/tmp/d.sock"));
        assert!(o.conflist.is_none());
        assert_eq!(o.health_addr.port(), 0);
    }
}
