//! What the load balancer domain takes from `kuryr.conf` (`crate::loadbalancer::settings`).

use crate::runtime::error::Error;
use crate::runtime::settings::all_tags;
use kuryr_core::config::Config;
use std::time::Duration;

/// Services through Octavia: on when `[kubernetes] enabled_handlers` names `service`,
/// `endpoints` or `kuryrloadbalancer` (upstream's default set names all three).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbSettings {
    /// `[neutron_defaults] project`.
    pub project: String,
    /// `[neutron_defaults] service_subnet`: where VIPs (= ClusterIPs) live.
    pub service_subnet: String,
    /// `[neutron_defaults] service_subnets` past the first (dual-stack): a Service whose ClusterIP
    /// is of another family than `service_subnet` gets its VIP on the one of its family.
    pub extra_service_subnets: Vec<String>,
    /// `[kubernetes] endpoints_driver_octavia_provider`; `None` = Octavia's default.
    pub provider: Option<String>,
    /// `[octavia_defaults] lb_algorithm` (the ovn provider takes only `SOURCE_IP_PORT`).
    pub lb_algorithm: String,
    /// `[octavia_defaults] timeout_client_data`, `timeout_member_data` (0 = Octavia's).
    pub timeout_client_data: u32,
    pub timeout_member_data: u32,
    /// Subnets a member address is looked up in (the pod subnet, `[pod_vif_nested]
    /// worker_nodes_subnets`); a member outside all of them is given the VIP subnet (routed,
    /// upstream's `member_mode = L3`).
    pub member_subnets: Vec<String>,
    /// `[neutron_defaults] external_svc_net` / `external_svc_subnet`: floating IPs of
    /// `type: LoadBalancer` Services; `None` = no floating IPs.
    pub external_net: Option<String>,
    pub external_subnet: Option<String>,
    /// `[neutron_defaults] lbaas_activation_timeout`.
    pub activation_timeout: Duration,
    /// How often Octavia is compared with the KuryrLoadBalancers (three tag-filtered lists per
    /// pass, whatever the number of Services) to repair out-of-band changes.
    pub audit_interval: Duration,
    /// Tags every Octavia object and floating IP gets (resource tags + cluster tag).
    pub tags: Vec<String>,
    pub cluster_name: String,
}

/// Handlers that turn on Services.
pub const HANDLERS: [&str; 3] = ["service", "endpoints", "kuryrloadbalancer"];

impl LbSettings {
    /// Every service subnet, the primary one first.
    pub fn service_subnets(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.service_subnet).chain(&self.extra_service_subnets)
    }

    /// `Ok(None)` when no Service handler is enabled.
    pub fn from_config(cfg: &Config, cluster_name: &str) -> Result<Option<LbSettings>, Error> {
        let k = &cfg.kubernetes;
        if !k.enabled_handlers.iter().any(|h| HANDLERS.contains(&h.as_str())) {
            return Ok(None);
        }
        let nd = &cfg.neutron_defaults;
        let service_subnet = nd.service_subnet.clone().ok_or_else(|| {
            Error::Config(format!(
                "[kubernetes] enabled_handlers = {}: Services need [neutron_defaults] service_subnet (the Neutron subnet holding the Kubernetes service CIDR)",
                k.enabled_handlers.join(",")
            ))
        })?;
        let provider = Some(k.octavia_provider.clone()).filter(|p| !p.is_empty() && p != "default");
        let od = &cfg.octavia_defaults;
        if provider.as_deref() == Some("ovn") && od.lb_algorithm != "SOURCE_IP_PORT" {
            return Err(Error::Config(format!(
                "[octavia_defaults] lb_algorithm = {}: the ovn provider supports only SOURCE_IP_PORT",
                od.lb_algorithm
            )));
        }
        let mut member_subnets: Vec<String> = nd.pod_subnet.iter().chain(&nd.extra_pod_subnets).cloned().collect();
        member_subnets.extend(cfg.worker_nodes_subnets.iter().cloned());
        Ok(Some(LbSettings {
            project: nd.project.clone(),
            service_subnet,
            extra_service_subnets: nd.extra_service_subnets.clone(),
            provider,
            lb_algorithm: od.lb_algorithm.clone(),
            timeout_client_data: od.timeout_client_data,
            timeout_member_data: od.timeout_member_data,
            member_subnets,
            external_net: nd.external_svc_net.clone().filter(|s| !s.is_empty()),
            external_subnet: nd.external_svc_subnet.clone().filter(|s| !s.is_empty()),
            activation_timeout: nd.lbaas_activation_timeout,
            audit_interval: Duration::from_secs(30),
            tags: all_tags(&nd.resource_tags, cluster_name),
            cluster_name: cluster_name.to_string(),
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
    fn on_with_upstream_default_handlers_off_without_them() {
        let s = LbSettings::from_config(&conf(""), "c1").expect("ok").expect("on by default");
        assert_eq!(s.service_subnet, "svc-sub");
        assert_eq!(s.provider, None);
        assert_eq!(s.member_subnets, ["pod-sub"]);
        assert!(s.tags.contains(&"t1".to_string()) && s.tags.iter().any(|t| t.contains("c1")));
        assert_eq!(LbSettings::from_config(&conf("enabled_handlers = vif,kuryrport"), "c1").expect("ok"), None);
    }

    #[test]
    fn ovn_needs_source_ip_port() {
        let err = LbSettings::from_config(&conf("endpoints_driver_octavia_provider = ovn"), "c1").expect_err("round robin");
        assert!(err.to_string().contains("SOURCE_IP_PORT"), "{err}");
        let c = conf("endpoints_driver_octavia_provider = ovn\n[octavia_defaults]\nlb_algorithm = SOURCE_IP_PORT");
        assert_eq!(LbSettings::from_config(&c, "c1").expect("ok").expect("on").provider.as_deref(), Some("ovn"));
    }
}
