//! kuryr-controller: Kubernetes pods on OpenStack Neutron ports (the drop-in successor of
//! upstream kuryr-kubernetes' controller).
//!
//! The pod path, one hop per module:
//! * [`pod`]: Pod → pod finalizer + KuryrPort (upstream `VIFHandler`).
//! * [`kuryrport`]: KuryrPort → Neutron port (adopt or create) → VIF in `status.vifs`; release on
//!   deletion (upstream `KuryrPortHandler`).
//! * [`ports`]: the Neutron calls of that (request body, adoption, tags, release, cache).
//! * [`nested`]: nested-vlan: the node VM's trunk, subports, per-trunk VLAN ids.
//! * [`vif`]: Neutron port + network + subnets → the typed VIF (pure).
//! * [`activator`]: one batched Neutron poll for all ports waiting to become ACTIVE.
//! * [`standalone`]: KuryrPorts of standalone containers (podman, `ctr run --cni`), made by the
//!   operator without a Pod: checked, then wired like a pod's, never released as orphans.
//! * [`run`]: watches, shared stores, controllers, servers; [`lease`]: leader election with
//!   fencing; [`health`], [`metrics`], [`events`]; [`crds`]: CRD YAML and installation;
//!   [`settings`]: kuryr.conf → clients and defaults.
#![forbid(unsafe_code)]

pub mod activator;
pub mod context;
pub mod crds;
pub mod error;
pub mod events;
pub mod gc;
pub mod health;
pub mod kuryrport;
pub mod lease;
pub mod metrics;
pub mod nested;
pub mod pod;
pub mod pool;
pub mod ports;
pub mod run;
pub mod settings;
pub mod standalone;
pub mod vif;

pub use error::Error;
pub use run::{start, Options, Running};
pub use settings::Settings;
