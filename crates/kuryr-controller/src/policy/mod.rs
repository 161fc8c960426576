//! NetworkPolicy → Neutron security groups (`crate::policy`; upstream `NetworkPolicyHandler`,
//! `KuryrNetworkPolicyHandler`). One hop per module:
//! * [`model`]: pure translation NetworkPolicy + cached pods and namespaces → security groups,
//!   rules and address groups, the port groups of each pod, and the diffs against Neutron.
//!
//! The NetworkPolicy and KuryrNetworkPolicy reconcilers will live here, on top of [`model`].

pub mod model;
