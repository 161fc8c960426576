//! What the NetworkPolicy domain takes from `kuryr.conf` (`crate::policy::settings`).

use crate::runtime::error::Error;
use crate::runtime::settings::all_tags;
use ipnet::IpNet;
use kuryr_core::config::{Config, SubnetsDriver};
use kuryr_openstack::neutron::EtherType;

/// Handlers that turn on NetworkPolicy (upstream's names).
pub const HANDLERS: [&str; 2] = ["policy", "kuryrnetworkpolicy"];

/// NetworkPolicy through Neutron security groups: on when `[kubernetes] enabled_handlers`
/// names `policy` or `kuryrnetworkpolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    pub cluster_name: String,
    /// `[neutron_defaults] project` (groups are created in it; empty = the token's).
    pub project: String,
    /// Some `[kubernetes] *_project_driver` is `annotation`: a policy's groups may be in its
    /// namespace's project, so lookups are not filtered by `project`.
    pub multi_project: bool,
    /// Tags of every security group (resource tags + the cluster tag).
    pub tags: Vec<String>,
    /// `[neutron_defaults] pod_security_groups`: ports of pods no policy selects.
    pub default_groups: Vec<String>,
    /// Neutron subnets whose CIDRs the Infra group allows in (the worker nodes' subnets for
    /// kubelet probes, the service subnet for OVN load balancer hairpins), resolved at start.
    pub infra_subnets: Vec<String>,
    /// `[network_policy] allow_cidrs`.
    pub infra_cidrs: Vec<IpNet>,
    /// Where the pods' addresses come from, to learn the pods' address families (rules with
    /// an address-group or "any" remote exist for each; [`crate::policy::Policy::families`]).
    pub pod_addresses: PodAddressSource,
}

/// Where pods get their addresses: their IP families are those of these Neutron objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAddressSource {
    /// Families given outright (tests).
    Families(Vec<EtherType>),
    /// `[neutron_defaults] pod_subnet(s)`: every pod port gets an address from each.
    Subnets(Vec<String>),
    /// `pod_subnets_driver = namespace`: namespace subnets come from this subnet pool.
    SubnetPool(String),
}

impl PolicySettings {
    /// `Ok(None)` when no NetworkPolicy handler is enabled.
    pub fn from_config(cfg: &Config, cluster_name: &str) -> Result<Option<PolicySettings>, Error> {
        let k = &cfg.kubernetes;
        if !k.enabled_handlers.iter().any(|h| HANDLERS.contains(&h.as_str())) {
            return Ok(None);
        }
        let nd = &cfg.neutron_defaults;
        let np = &cfg.network_policy;
        let mut infra_subnets = Vec::new();
        if np.allow_node_subnets {
            infra_subnets.extend(cfg.worker_nodes_subnets.iter().cloned());
        }
        if np.allow_service_subnet {
            infra_subnets.extend(nd.service_subnet.iter().chain(&nd.extra_service_subnets).cloned());
        }
        let mut infra_cidrs = Vec::new();
        for c in &np.allow_cidrs {
            infra_cidrs.push(c.parse::<IpNet>().map_err(|_| Error::Config(format!("[network_policy] allow_cidrs: {c:?} is not a CIDR")))?);
        }
        Ok(Some(PolicySettings {
            cluster_name: cluster_name.to_string(),
            project: nd.project.clone(),
            multi_project: k.project_drivers.any_annotation(),
            tags: all_tags(&nd.resource_tags, cluster_name),
            default_groups: nd.pod_security_groups.clone(),
            infra_subnets,
            infra_cidrs,
            pod_addresses: match (k.pod_subnets_driver, &cfg.namespace_subnet.pod_subnet_pool) {
                (SubnetsDriver::Namespace, Some(pool)) => PodAddressSource::SubnetPool(pool.clone()),
                _ => PodAddressSource::Subnets(nd.pod_subnet.iter().chain(&nd.extra_pod_subnets).cloned().collect()),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Config {
        crate::runtime::settings::test_config(extra)
    }

    #[test]
    fn on_with_policy_handlers_only() {
        assert_eq!(PolicySettings::from_config(&conf(""), "c1").expect("ok"), None);
        let s = PolicySettings::from_config(&conf("enabled_handlers = vif,kuryrport,policy"), "c1").expect("ok").expect("on");
        assert_eq!(s.default_groups, ["sg"]);
        assert_eq!(s.pod_addresses, PodAddressSource::Subnets(vec!["pod-sub".into()]));
        assert_eq!(s.infra_subnets, ["svc-sub"]);
        assert!(s.tags.iter().any(|t| t.contains("c1")));
        let s = PolicySettings::from_config(
            &conf("enabled_handlers = kuryrnetworkpolicy\n[network_policy]\nallow_service_subnet = false\nallow_cidrs = 10.1.0.0/16"),
            "c1",
        )
        .expect("ok")
        .expect("on");
        assert!(s.infra_subnets.is_empty());
        assert_eq!(s.infra_cidrs, ["10.1.0.0/16".parse::<IpNet>().expect("cidr")]);
        let bad = PolicySettings::from_config(&conf("enabled_handlers = policy\n[network_policy]\nallow_cidrs = nope"), "c1");
        assert!(bad.is_err());
    }
}
