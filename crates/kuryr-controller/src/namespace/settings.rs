//! What the namespace-networks domain takes from `kuryr.conf` (`crate::namespace::settings`).

use crate::runtime::error::Error;
use crate::runtime::settings::all_tags;
use kuryr_core::config::{Config, SubnetsDriver};

/// Handlers of the namespace networks (upstream's names); one must be enabled with
/// `pod_subnets_driver = namespace`.
pub const HANDLERS: [&str; 2] = ["namespace", "kuryrnetwork"];

/// A Neutron network, subnet (from a subnet pool) and router interface per namespace: on when
/// `[kubernetes] pod_subnets_driver = namespace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub cluster_name: String,
    /// `[neutron_defaults] project`: the project of the networks (a KuryrNetwork's
    /// `spec.projectId`).
    pub project: String,
    /// Tags of every network and subnet (resource tags + the cluster tag).
    pub tags: Vec<String>,
    /// `[namespace_subnet] pod_router`: every namespace subnet gets an interface on it.
    pub router: String,
    /// `[namespace_subnet] pod_subnet_pool`: where the namespace subnets come from (the pool's
    /// default prefix length).
    pub subnet_pool: String,
    /// `[neutron_defaults] network_device_mtu` (0: Neutron's default).
    pub network_device_mtu: u32,
    /// Namespaces that never get a network of their own (the warm pools' `kuryr-pool`).
    pub excluded: Vec<String>,
}

impl NamespaceSettings {
    /// `Ok(None)` with the default subnet driver (one pod network).
    pub fn from_config(cfg: &Config, cluster_name: &str) -> Result<Option<NamespaceSettings>, Error> {
        let k = &cfg.kubernetes;
        if k.pod_subnets_driver != SubnetsDriver::Namespace {
            return Ok(None);
        }
        if !k.enabled_handlers.iter().any(|h| HANDLERS.contains(&h.as_str())) {
            return Err(Error::Config(
                "[kubernetes] pod_subnets_driver = namespace needs the namespace and kuryrnetwork handlers in enabled_handlers \
                 (else pods would wait for their namespace's network forever)"
                    .into(),
            ));
        }
        let ns = &cfg.namespace_subnet;
        let router = ns
            .pod_router
            .clone()
            .ok_or_else(|| Error::Config("[namespace_subnet] pod_router is required with pod_subnets_driver = namespace".into()))?;
        let subnet_pool = ns
            .pod_subnet_pool
            .clone()
            .ok_or_else(|| Error::Config("[namespace_subnet] pod_subnet_pool is required with pod_subnets_driver = namespace".into()))?;
        let nd = &cfg.neutron_defaults;
        Ok(Some(NamespaceSettings {
            cluster_name: cluster_name.to_string(),
            project: nd.project.clone(),
            tags: all_tags(&nd.resource_tags, cluster_name),
            router,
            subnet_pool,
            network_device_mtu: nd.network_device_mtu,
            excluded: vec![kuryr_core::names::POOL_NAMESPACE.to_string()],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_core::config::Role;

    fn conf(kubernetes: &str) -> Result<Config, String> {
        let text = format!(
            "[kubernetes]\n{kubernetes}\n[neutron]\nauth_type = v3applicationcredential\nauth_url = http://k:5000/v3\n\
             application_credential_id = ac\napplication_credential_secret = s\n\
             [neutron_defaults]\nproject = p1\npod_security_groups = sg\nresource_tags = t1\n\
             [namespace_subnet]\npod_router = r1\npod_subnet_pool = pool1\n"
        );
        Config::parse(&text, Role::Controller).map_err(|e| e.to_string())
    }

    #[test]
    fn on_with_the_namespace_driver_only() {
        let cfg = conf("pod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport,namespace,kuryrnetwork").expect("conf");
        let s = NamespaceSettings::from_config(&cfg, "c1").expect("settings").expect("on");
        assert_eq!((s.router.as_str(), s.subnet_pool.as_str(), s.project.as_str()), ("r1", "pool1", "p1"));
        assert_eq!(s.tags, ["t1", "kuryr-rs-cluster=c1"]);
        assert_eq!(s.excluded, ["kuryr-pool"]);

        // The pod path accepts it too (no pod_subnet needed), and the runtime starts the domain.
        let settings = crate::runtime::settings::Settings::from_config(&cfg, "c1").expect("pod settings");
        assert_eq!(settings.pod_subnet, "");

        let cfg = conf("pod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport").expect("conf");
        let err = NamespaceSettings::from_config(&cfg, "c1").expect_err("no handler").to_string();
        assert!(err.contains("namespace and kuryrnetwork handlers"), "{err}");

        // Default driver: off, even with the handlers named.
        let text = "[kubernetes]\nenabled_handlers = vif,kuryrport,namespace\n[neutron]\nauth_type = v3applicationcredential\n\
                    auth_url = http://k:5000/v3\napplication_credential_id = ac\napplication_credential_secret = s\n\
                    [neutron_defaults]\nproject = p1\npod_subnet = s1\npod_security_groups = sg\n";
        let cfg = Config::parse(text, Role::Controller).expect("conf");
        assert_eq!(NamespaceSettings::from_config(&cfg, "c1").expect("settings"), None);
    }

    #[test]
    fn refuses_what_is_not_implemented_with_it() {
        let cfg =
            conf("pod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport,namespace\nvif_pool_driver = neutron").expect("conf");
        let err = crate::runtime::settings::Settings::from_config(&cfg, "c1").expect_err("pools").to_string();
        assert!(err.contains("vif_pool_driver = noop"), "{err}");
    }
}
