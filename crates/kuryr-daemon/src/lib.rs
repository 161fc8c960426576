//! kuryr-daemon: the per-node half of kuryr-rs.
//!
//! It mirrors this node's KuryrPorts and Pods ([`watch`]), serves the `kuryr-cni` shim over
//! a unix socket ([`api`]: parse → [`cni`]: execute), wires pod interfaces through the
//! [`binding`] drivers, keeps crash-safe [`attachments`] records so that DEL/CHECK/GC never
//! depend on the API server, the controller or OpenStack, and reports [`health`] and
//! [`metrics`]. [`daemon`] wires it together; [`args`] maps the flags.
//!
//! Besides pods (containerd's CRI plugin, CRI-O), it wires standalone containers (podman,
//! `ctr run --cni`): a CNI ADD without `K8S_POD_NAMESPACE` is wired from an operator-made
//! KuryrPort in `[cni_daemon] standalone_namespace` named after the container ([`standalone`]).
//!
//! Warm pool ([`pool`]): the ports of this node's pool KuryrPort are pre-plugged into a
//! holding netns so that they are ACTIVE before any pod needs them; an ADD whose port is held
//! only moves the interface into the pod and configures it.
//!
//! Files and sockets (defaults):
//!
//! | what | path |
//! |---|---|
//! | CNI API socket (HTTP/1.1, root only) | `/run/kuryr/kuryr-daemon.sock` (`[cni_daemon] socket_path`, `--socket`) |
//! | attachment records | `/var/lib/kuryr/attachments/<container>@<ifname>.json` (`--state-dir`) |
//! | DEL queue (written by kuryr-cni) | `/var/lib/kuryr/del-queue` (`--del-queue-dir`) |
//! | conflist (written when ready) | `/etc/cni/net.d/10-kuryr.conflist` (`--cni-conf-dir`) |
//! | health `/ready`, `/alive` | `:8090` (`[cni_health_server] port`) |
//! | metrics `/metrics` | `:9655` (`[prometheus_exporter] cni_exporter_port`) |
//! | holding netns of pre-plugged ports (one daemon per netns) | `/run/netns/kuryr-pool` (`--pool-netns`, `""` = off) |
#![deny(unsafe_code)]

pub mod api;
pub mod args;
pub mod attachments;
pub mod binding;
pub mod chained;
pub mod check;
pub mod cni;
pub mod conflist;
pub mod daemon;
pub mod delqueue;
pub mod error;
pub mod events;
pub mod health;
pub mod locks;
pub mod metrics;
pub mod pool;
pub mod stale;
pub mod standalone;
pub mod watch;

pub use daemon::{Daemon, DaemonOptions, StartError};
pub use error::DaemonError;
