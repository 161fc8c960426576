//! kuryr-controller: Kubernetes pods on OpenStack Neutron ports (the drop-in successor of
//! upstream kuryr-kubernetes' controller).
//!
//! One folder per domain, one hop from here:
//! * [`runtime`]: watches, shared stores, leader gate and lease, back-off and error policy,
//!   health, metrics, events, settings, CRD installation, [`start`].
//! * [`pod`]: the pod path: Pod → KuryrPort → Neutron port through a port driver (neutron-vif, or
//!   nested-vlan: a trunk subport) → VIF, activator, warm pools, standalone containers.
//! * [`gc`]: mark-and-sweep garbage collection of the OpenStack resources this controller made.
//! * [`loadbalancer`]: Services → KuryrLoadBalancers → Octavia.
//! * [`policy`]: NetworkPolicies → KuryrNetworkPolicies → Neutron security groups and address groups.
//! * [`namespace`]: namespace networks (`pod_subnets_driver = namespace`): Namespaces → KuryrNetworks → a
//!   Neutron network, subnet (from a subnet pool) and router interface per namespace.
//!
//! Domains reach [`runtime`], never each other except through kuryr-core types.
#![forbid(unsafe_code)]

pub mod gc;
pub mod loadbalancer;
pub mod namespace;
pub mod pod;
pub mod policy;
pub mod runtime;

pub use runtime::error::Error;
pub use runtime::run::{start, Options, Running};
pub use runtime::settings::Settings;
