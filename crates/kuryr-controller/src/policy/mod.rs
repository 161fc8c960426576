//! NetworkPolicy → Neutron security groups (`crate::policy`; upstream `NetworkPolicyHandler`,
//! `KuryrNetworkPolicyHandler`). Empty today: the NetworkPolicy and KuryrNetworkPolicy
//! reconcilers, rule translation and pod security-group selection will live here.
