//! Host networking for the kuryr daemon: network namespaces, rtnetlink verbs, ethtool
//! offloads and address announcements (gratuitous ARP / unsolicited NA).
//!
//! Everything that touches a foreign netns runs on a dedicated OS thread that `setns()`s
//! into it and exits afterwards (see [`Netns::run`]); async netlink work runs there on a
//! current-thread tokio runtime ([`Netns::with_netlink`]). All calls are blocking, so from
//! async code wrap them in `tokio::task::spawn_blocking`.
//!
//! ```no_run
//! use kuryr_netplumb::{Netns, VethOptions};
//! let host = Netns::current()?;
//! let pod = Netns::open("/var/run/netns/pod")?;
//! host.with_netlink(async |nl| {
//!     nl.create_veth("tap1234", "eth0", Some(&pod), &VethOptions::default()).await
//! })?;
//! pod.with_netlink(async |nl| {
//!     nl.add_address("eth0", "10.0.0.5/24".parse().expect("literal")).await?;
//!     nl.set_up("eth0").await
//! })?;
//! # Ok::<(), kuryr_netplumb::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod announce;
pub mod error;
pub mod ethtool;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod sysctl;
pub mod wiring;

/// Raw syscalls nix has no safe wrapper for (SIOCETHTOOL, AF_PACKET bind).
/// The only module where `unsafe` is allowed; every block carries a `// SAFETY:` note.
#[allow(unsafe_code)]
mod sys;

pub use error::{Cause, Error, ErrorKind, Result};
pub use ipnet::IpNet;
pub use mac::MacAddr;
pub use netlink::{
    vlan_link_message, IpFamily, LinkInfo, MacvlanMode, Neighbour, Netlink, OperState, RouteInfo,
    RouteSpec, VethOptions,
};
pub use netns::{share_run_dir_in, Netns, NetnsHandle, RunDirSharing, NETNS_RUN_DIR};
/// The rtnetlink version this crate speaks, for requests it does not wrap.
pub use rtnetlink;
pub use wiring::{
    announce_addresses, configure_interface, move_link, plug_veth, plug_veth_with, ExistingHost,
    IfaceConfig, VethPlug,
};
