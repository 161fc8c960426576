//! From `kuryr.conf` (kuryr-core's validated [`Config`]) to what the controller needs: the
//! OpenStack cloud config, the Kubernetes client config, and the per-port defaults.

use crate::runtime::error::Error;
use kuryr_core::config::{
    Config, KubernetesConfig, NeutronAuth, NeutronConfig, PodVifDriver, ProjectDriver, ProjectDrivers, SubnetsDriver, VifPoolDriver,
};
use kuryr_openstack::{AuthConfig, AuthType, CloudConfig, Interface};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the pod path needs from the configuration, resolved once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `[neutron_defaults] project`: the project pod ports are created in.
    pub project: String,
    /// `[kubernetes] *_project_driver`: with `annotation`, a namespace's
    /// `openstack.org/kuryr-project` overrides `project` for that kind of resource
    /// ([`crate::runtime::projects`]).
    pub project_drivers: ProjectDrivers,
    /// `[neutron_defaults] pod_subnet` (empty: not configured, with `pod_subnets_driver = namespace`).
    pub pod_subnet: String,
    /// `[neutron_defaults] pod_subnets` past the first (dual-stack): a port on `pod_subnet` gets
    /// an address from each of these too.
    pub extra_pod_subnets: Vec<String>,
    /// `[neutron_defaults] pod_security_groups`.
    pub pod_security_groups: Vec<String>,
    /// `[neutron_defaults] ovs_bridge`: used when Neutron does not name the bridge.
    pub ovs_bridge: String,
    /// `[neutron_defaults] network_device_mtu`; 0 = the network's MTU.
    pub network_device_mtu: u32,
    /// `[neutron_defaults] port_bulk_max` (kuryr-rs): pod ports per bulk `POST /ports`, ≥ 1.
    pub port_bulk_max: usize,
    /// `[neutron_defaults] resource_tags`: put on every port kuryr-rs creates.
    pub resource_tags: Vec<String>,
    /// `resource_tags` and the cluster tag ([`kuryr_core::names::cluster_tag`]): what every
    /// resource kuryr-rs creates is tagged with.
    pub tags: Vec<String>,
    /// Name of this cluster, written into port descriptions (`--cluster-name`).
    pub cluster_name: String,
    /// `[cni_daemon] standalone_namespace`: where standalone containers' KuryrPorts live (see
    /// [`crate::pod::standalone`]); Pods there are not wired.
    pub standalone_namespace: String,
    /// `[kubernetes] use_events`.
    pub use_events: bool,
    /// How often the activator polls Neutron while some ports are not ACTIVE yet.
    pub activation_interval: Duration,
    /// A port not ACTIVE after this long gets a Warning Event (and is then polled less often).
    pub activation_deadline: Duration,
    /// Poll interval for ports past the deadline.
    pub activation_slow_interval: Duration,
    /// Upper bound for one reconcile (a hung call becomes an error, not a wedged worker).
    pub reconcile_timeout: Duration,
    /// How long subnets and networks stay in the controller's cache.
    pub neutron_cache_ttl: Duration,
    /// `[kubernetes] vif_pool_driver = neutron`: warm pools of ports per node ([`crate::pod::pool`]).
    pub pool: Option<PoolSettings>,
    /// `[kubernetes] pod_vif_driver`.
    pub pod_vif: PodVif,
    /// `[pod_vif_nested] worker_nodes_subnets`: where nested-vlan looks for a node's parent port
    /// (empty = any subnet).
    pub worker_nodes_subnets: Vec<String>,
}

/// How pods get their ports (`[kubernetes] pod_vif_driver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodVif {
    /// `neutron-vif`: a port bound to the node (bare metal / side by side).
    Neutron,
    /// `nested-vlan`: pods in VMs, a subport of the node VM's trunk ([`crate::pod::driver::nested`]).
    NestedVlan,
}

/// `resource_tags` plus the cluster tag.
pub fn all_tags(resource_tags: &[String], cluster: &str) -> Vec<String> {
    let mut tags = resource_tags.to_vec();
    let ct = kuryr_core::names::cluster_tag(cluster);
    if !tags.contains(&ct) {
        tags.push(ct);
    }
    tags
}

/// `[vif_pool]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Refill a pool below this many free ports.
    pub min: usize,
    /// Free ports kept at most; more are deleted on release (0 = unlimited).
    pub max: usize,
    /// Ports created per bulk request (at least `min - free`).
    pub batch: usize,
}

impl Settings {
    /// Reads the pod-path settings; refuses what this controller cannot do yet.
    pub fn from_config(cfg: &Config, cluster_name: &str) -> Result<Settings, Error> {
        let k = &cfg.kubernetes;
        let pod_vif = match k.pod_vif_driver {
            PodVifDriver::NeutronVif => PodVif::Neutron,
            PodVifDriver::NestedVlan => PodVif::NestedVlan,
            PodVifDriver::NestedMacvlan => {
                return Err(Error::Config(
                    "[kubernetes] pod_vif_driver = nested-macvlan: not implemented in kuryr-controller; use nested-vlan (pods in VMs) \
                     or neutron-vif"
                        .into(),
                ))
            }
        };
        if pod_vif == PodVif::NestedVlan && k.vif_pool_driver != VifPoolDriver::Noop {
            return Err(Error::Config(format!(
                "[kubernetes] vif_pool_driver = {}: warm pools are not implemented for pod_vif_driver = nested-vlan; use vif_pool_driver = noop",
                match k.vif_pool_driver {
                    VifPoolDriver::Nested => "nested",
                    _ => "neutron",
                }
            )));
        }
        let namespace_subnets = k.pod_subnets_driver == SubnetsDriver::Namespace;
        if namespace_subnets && pod_vif == PodVif::NestedVlan {
            return Err(Error::Config(
                "[kubernetes] pod_subnets_driver = namespace: not implemented for pod_vif_driver = nested-vlan yet; use neutron-vif".into(),
            ));
        }
        if k.project_drivers.pod == ProjectDriver::Annotation && pod_vif == PodVif::NestedVlan {
            return Err(Error::Config(
                "[kubernetes] pod_project_driver = annotation: not implemented for pod_vif_driver = nested-vlan (subports stay in their trunk's project); use neutron-vif".into(),
            ));
        }
        if k.project_drivers.pod == ProjectDriver::Annotation && k.vif_pool_driver != VifPoolDriver::Noop {
            return Err(Error::Config(
                "[kubernetes] pod_project_driver = annotation: warm pools per project are not implemented; use vif_pool_driver = noop"
                    .into(),
            ));
        }
        if namespace_subnets && k.vif_pool_driver != VifPoolDriver::Noop {
            return Err(Error::Config(
                "[kubernetes] pod_subnets_driver = namespace: warm pools per namespace network are not implemented yet; use vif_pool_driver = noop"
                    .into(),
            ));
        }
        let pool = match k.vif_pool_driver {
            VifPoolDriver::Noop => None,
            VifPoolDriver::Neutron => {
                let v = &cfg.vif_pool;
                let as_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
                if v.ports_pool_batch == 0 {
                    return Err(Error::Config("[vif_pool] ports_pool_batch = 0: a pool needs at least 1 port per bulk create".into()));
                }
                if v.ports_pool_max != 0 && v.ports_pool_min > v.ports_pool_max {
                    return Err(Error::Config(format!(
                        "[vif_pool] ports_pool_min = {} is above ports_pool_max = {}",
                        v.ports_pool_min, v.ports_pool_max
                    )));
                }
                Some(PoolSettings { min: as_usize(v.ports_pool_min), max: as_usize(v.ports_pool_max), batch: as_usize(v.ports_pool_batch) })
            }
            VifPoolDriver::Nested => {
                return Err(Error::Config(
                    "[kubernetes] vif_pool_driver = nested: needs pod_vif_driver = nested-vlan, not implemented in kuryr-controller yet"
                        .into(),
                ))
            }
        };
        kuryr_core::names::check_cluster_name(cluster_name).map_err(|e| Error::Config(format!("--cluster-name: {e}")))?;
        let nd = &cfg.neutron_defaults;
        // With namespace networks pods get their namespace's subnet; `pod_subnet` is optional then.
        let pod_subnet = match nd.pod_subnet.clone() {
            Some(s) => s,
            None if namespace_subnets => String::new(),
            None => return Err(Error::Config("[neutron_defaults] pod_subnet is required".into())),
        };
        if nd.pod_security_groups.is_empty() {
            return Err(Error::Config("[neutron_defaults] pod_security_groups is required".into()));
        }
        Ok(Settings {
            project: nd.project.clone(),
            project_drivers: k.project_drivers,
            pod_subnet,
            extra_pod_subnets: nd.extra_pod_subnets.clone(),
            pod_security_groups: nd.pod_security_groups.clone(),
            ovs_bridge: nd.ovs_bridge.clone(),
            network_device_mtu: nd.network_device_mtu,
            port_bulk_max: usize::try_from(nd.port_bulk_max).unwrap_or(usize::MAX).max(1),
            resource_tags: nd.resource_tags.clone(),
            tags: all_tags(&nd.resource_tags, cluster_name),
            cluster_name: cluster_name.to_string(),
            standalone_namespace: cfg.cni_daemon.standalone_namespace.clone(),
            use_events: k.use_events,
            pool,
            pod_vif,
            worker_nodes_subnets: cfg.worker_nodes_subnets.clone(),
            ..Settings::defaults()
        })
    }

    /// The fixed IPs a new port on `subnet` asks for: that subnet, and with the default pod
    /// subnet the other families' subnets too (dual-stack pods).
    pub fn fixed_ips_on(&self, subnet: &str) -> Vec<kuryr_openstack::neutron::FixedIpRequest> {
        let mut out = vec![kuryr_openstack::neutron::FixedIpRequest::subnet(subnet)];
        if subnet == self.pod_subnet {
            out.extend(self.extra_pod_subnets.iter().map(kuryr_openstack::neutron::FixedIpRequest::subnet));
        }
        out
    }

    /// Timing defaults (no pod-path configuration).
    pub fn defaults() -> Settings {
        Settings {
            project: String::new(),
            project_drivers: ProjectDrivers::default(),
            pod_subnet: String::new(),
            extra_pod_subnets: Vec::new(),
            pod_security_groups: Vec::new(),
            ovs_bridge: "br-int".into(),
            network_device_mtu: 0,
            port_bulk_max: kuryr_core::config::DEFAULT_PORT_BULK_MAX as usize,
            resource_tags: Vec::new(),
            tags: all_tags(&[], "kubernetes"),
            cluster_name: "kubernetes".into(),
            standalone_namespace: kuryr_core::config::DEFAULT_STANDALONE_NAMESPACE.into(),
            use_events: true,
            activation_interval: Duration::from_millis(250),
            activation_deadline: Duration::from_secs(60),
            activation_slow_interval: Duration::from_secs(5),
            reconcile_timeout: Duration::from_secs(120),
            neutron_cache_ttl: Duration::from_secs(300),
            pool: None,
            pod_vif: PodVif::Neutron,
            worker_nodes_subnets: Vec::new(),
        }
    }
}

/// `[neutron]` (keystoneauth option names) as a kuryr-openstack [`CloudConfig`].
pub fn cloud_config(n: &NeutronConfig) -> Result<CloudConfig, Error> {
    let (auth, auth_type) = match &n.auth {
        NeutronAuth::CloudsYaml { cloud, file } => {
            let mut c = match file {
                Some(f) => CloudConfig::from_clouds_yaml(f, cloud),
                None => CloudConfig::load(cloud),
            }
            .map_err(|e| Error::Config(format!("[neutron] cloud = {cloud}: {e}")))?;
            // kuryr.conf refines what clouds.yaml says.
            if n.region_name.is_some() {
                c.region_name = n.region_name.clone();
            }
            if let Some(ca) = &n.cafile {
                c.cacert = Some(PathBuf::from(ca));
            }
            c.insecure |= n.insecure;
            if !n.auth_url.is_empty() {
                c.auth.auth_url = n.auth_url.clone();
            }
            return Ok(c);
        }
        NeutronAuth::Password { username, password, user_domain_name, project_name, project_id, project_domain_name } => (
            AuthConfig {
                auth_url: n.auth_url.clone(),
                username: Some(username.clone()),
                password: Some(password.clone()),
                user_domain_name: Some(user_domain_name.clone()),
                project_name: project_name.clone(),
                project_id: project_id.clone(),
                project_domain_name: Some(project_domain_name.clone()),
                ..AuthConfig::default()
            },
            AuthType::Password,
        ),
        NeutronAuth::ApplicationCredential { id, name, secret, username, user_domain_name } => (
            AuthConfig {
                auth_url: n.auth_url.clone(),
                application_credential_id: id.clone(),
                application_credential_name: name.clone(),
                application_credential_secret: Some(secret.clone()),
                username: username.clone(),
                user_domain_name: Some(user_domain_name.clone()),
                ..AuthConfig::default()
            },
            AuthType::ApplicationCredential,
        ),
    };
    let interface: Interface =
        n.endpoint_type.parse().map_err(|e: kuryr_openstack::Error| Error::Config(format!("[neutron] endpoint_type: {e}")))?;
    Ok(CloudConfig {
        auth,
        auth_type: Some(auth_type),
        region_name: n.region_name.clone(),
        interface,
        cacert: n.cafile.as_ref().map(PathBuf::from),
        insecure: n.insecure,
        ..CloudConfig::default()
    })
}

/// The Kubernetes client configuration: `--kubeconfig` if given; else the in-cluster service
/// account; else `[kubernetes] api_root` with `token_file` / `ssl_ca_crt_file` (upstream's
/// options); else the usual `$KUBECONFIG` / `~/.kube/config`.
pub async fn kube_config(kubeconfig: Option<&Path>, k: &KubernetesConfig) -> Result<kube::Config, Error> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let opts = KubeConfigOptions::default();
    if let Some(path) = kubeconfig {
        let kc = Kubeconfig::read_from(path).map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?;
        return kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return kube::Config::incluster().map_err(|e| Error::Config(format!("in-cluster configuration: {e}")));
    }
    if let Some(api_root) = &k.api_root {
        let kc = kubeconfig_from_conf(api_root, k);
        return kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| Error::Config(format!("[kubernetes] api_root = {api_root}: {e}")));
    }
    kube::Config::infer().await.map_err(|e| Error::Config(format!("no --kubeconfig, not in a cluster, no [kubernetes] api_root, and: {e}")))
}

/// How long the start-up probe of the API server may take before the start goes on without it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kubernetes client, after one request (`GET /version`) that proves TLS to the API server
/// works. A TLS failure there (its certificate not signed by the CA of the kubeconfig /
/// `[kubernetes] ssl_ca_crt_file` / the service account, or not for its address) is a
/// configuration error no retry fixes: the start fails with it, naming the server, instead of
/// watches retrying it forever. Any other failure (the API server not up yet) is logged and left
/// to the watches, which retry.
pub async fn kube_client(config: kube::Config) -> Result<kube::Client, Error> {
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| Error::kube("connect to", format!("the API server {server}"), e))?;
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => match kuryr_core::tls::failure(&e) {
            Some(tls) => return Err(Error::Config(tls.api_server_error("kuryr-controller", &server))),
            None => tracing::warn!(%server, error = %e, "the API server did not answer GET /version; the watches retry"),
        },
        Err(_) => {
            tracing::warn!(%server, timeout = ?PROBE_TIMEOUT, "the API server did not answer GET /version in time; the watches retry")
        }
    }
    Ok(client)
}

/// An in-memory kubeconfig for `[kubernetes] api_root` + token / CA / client certificate files.
pub fn kubeconfig_from_conf(api_root: &str, k: &KubernetesConfig) -> kube::config::Kubeconfig {
    use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
    let exists = |p: &str| Path::new(p).exists();
    let cluster = Cluster {
        server: Some(api_root.to_string()),
        insecure_skip_tls_verify: Some(!k.ssl_verify_server_crt),
        certificate_authority: (k.ssl_verify_server_crt && exists(&k.ssl_ca_crt_file)).then(|| k.ssl_ca_crt_file.clone()),
        ..Cluster::default()
    };
    let auth = AuthInfo {
        token_file: exists(&k.token_file).then(|| k.token_file.clone()),
        client_certificate: k.ssl_client_crt_file.clone(),
        client_key: k.ssl_client_key_file.clone(),
        ..AuthInfo::default()
    };
    Kubeconfig {
        clusters: vec![NamedCluster { name: "kuryr".into(), cluster: Some(cluster), ..NamedCluster::default() }],
        auth_infos: vec![NamedAuthInfo { name: "kuryr".into(), auth_info: Some(auth), ..NamedAuthInfo::default() }],
        contexts: vec![NamedContext {
            name: "kuryr".into(),
            context: Some(Context { cluster: "kuryr".into(), user: Some("kuryr".into()), ..Context::default() }),
            ..NamedContext::default()
        }],
        current_context: Some("kuryr".into()),
        ..Kubeconfig::default()
    }
}

/// A controller `kuryr.conf` for unit tests: application-credential auth, a project, pod and
/// service subnets, one pod security group and one resource tag; `kubernetes_extra` goes into
/// `[kubernetes]` (e.g. `enabled_handlers = ...`).
#[cfg(test)]
pub(crate) fn test_config(kubernetes_extra: &str) -> Config {
    let text = format!(
        "[kubernetes]\n{kubernetes_extra}\n[neutron]\nauth_type = v3applicationcredential\nauth_url = http://k:5000/v3\napplication_credential_id = ac\napplication_credential_secret = s\n\
         [neutron_defaults]\nproject = p1\npod_subnet = pod-sub\npod_security_groups = sg\nservice_subnet = svc-sub\nresource_tags = t1\n"
    );
    Config::parse(&text, kuryr_core::config::Role::Controller).expect("config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_core::config::Role;

    const CONF: &str = "[kubernetes]\napi_root = https://10.0.0.1:6443\nssl_ca_crt_file = /nonexistent/ca.crt\n\
        [neutron]\nauth_type = v3applicationcredential\nauth_url = http://k:5000/v3\napplication_credential_id = ac\n\
        application_credential_secret = s\nregion_name = R1\nendpoint_type = internal\n\
        [neutron_defaults]\nproject = p\npod_subnet = sub\npod_security_groups = sg1,sg2\nresource_tags = a,b\nnetwork_device_mtu = 1400\n";

    #[test]
    fn maps_kuryr_conf() {
        let cfg = Config::parse(CONF, Role::Controller).expect("conf");
        let s = Settings::from_config(&cfg, "c1").expect("settings");
        assert_eq!(s.pod_subnet, "sub");
        assert_eq!(s.pod_security_groups, ["sg1", "sg2"]);
        assert_eq!(s.resource_tags, ["a", "b"]);
        assert_eq!(s.network_device_mtu, 1400);
        assert_eq!(s.cluster_name, "c1");
        assert_eq!(s.standalone_namespace, "kuryr-standalone");
        assert_eq!(s.activation_interval, Duration::from_millis(250));

        let cloud = cloud_config(cfg.neutron.as_ref().expect("neutron")).expect("cloud");
        assert_eq!(cloud.resolved_auth_type(), AuthType::ApplicationCredential);
        assert_eq!(cloud.auth.application_credential_id.as_deref(), Some("ac"));
        assert_eq!(cloud.region_name.as_deref(), Some("R1"));
        assert_eq!(cloud.interface, Interface::Internal);
    }

    #[test]
    fn maps_password_auth() {
        let text = CONF.replace(
            "auth_type = v3applicationcredential\n",
            "auth_type = password\nusername = kuryr\npassword = pw\nproject_name = k8s\n",
        );
        let cfg = Config::parse(&text, Role::Controller).expect("conf");
        let cloud = cloud_config(cfg.neutron.as_ref().expect("neutron")).expect("cloud");
        assert_eq!(cloud.resolved_auth_type(), AuthType::Password);
        assert_eq!(cloud.auth.username.as_deref(), Some("kuryr"));
        assert_eq!(cloud.auth.project_name.as_deref(), Some("k8s"));
        assert_eq!(cloud.auth.project_domain_name.as_deref(), Some("Default"));
    }

    #[test]
    fn every_resource_gets_the_cluster_tag() {
        let cfg = Config::parse(CONF, Role::Controller).expect("conf");
        let s = Settings::from_config(&cfg, "prod-1").expect("settings");
        assert_eq!(s.tags, ["a", "b", "kuryr-rs-cluster=prod-1"]);
        for bad in ["", "a/b", "a,b", "a b"] {
            let err = Settings::from_config(&cfg, bad).expect_err(bad).to_string();
            assert!(err.contains("--cluster-name"), "{err}");
        }
        assert!(Settings::from_config(&cfg, &"x".repeat(300)).is_err());
    }

    #[test]
    fn refuses_unimplemented_drivers() {
        let text = CONF.replace("[kubernetes]\n", "[kubernetes]\npod_vif_driver = nested-macvlan\n");
        let cfg = Config::parse(&text, Role::Controller).expect("conf");
        let err = Settings::from_config(&cfg, "c").expect_err("nested").to_string();
        assert!(err.contains("pod_vif_driver = nested-macvlan"), "{err}");

        let text = CONF.replace("[kubernetes]\n", "[kubernetes]\npod_vif_driver = nested-vlan\nvif_pool_driver = nested\n");
        let cfg = Config::parse(&text, Role::Controller).expect("conf");
        let err = Settings::from_config(&cfg, "c").expect_err("nested pool").to_string();
        assert!(err.contains("[kubernetes] vif_pool_driver = nested") && err.contains("nested-vlan"), "{err}");
        let text = CONF.replace("[kubernetes]\n", "[kubernetes]\npod_vif_driver = nested-vlan\nvif_pool_driver = neutron\n");
        let err = Config::parse(&text, Role::Controller).expect_err("neutron pool").to_string();
        assert!(err.contains("vif_pool_driver"), "{err}");
    }

    #[test]
    fn accepts_nested_vlan() {
        let text = CONF.replace("[kubernetes]\n", "[kubernetes]\npod_vif_driver = nested-vlan\n")
            + "[pod_vif_nested]\nworker_nodes_subnets = 0b5c1e7e-aaaa-4bbb-8ccc-123456789abc\n";
        let cfg = Config::parse(&text, Role::Controller).expect("conf");
        let s = Settings::from_config(&cfg, "c").expect("nested-vlan");
        assert_eq!(s.pod_vif, PodVif::NestedVlan);
        assert_eq!(s.worker_nodes_subnets, ["0b5c1e7e-aaaa-4bbb-8ccc-123456789abc"]);
        assert_eq!(Settings::from_config(&Config::parse(CONF, Role::Controller).expect("conf"), "c").expect("s").pod_vif, PodVif::Neutron);
    }

    #[test]
    fn kubeconfig_from_api_root() {
        let cfg = Config::parse(CONF, Role::Controller).expect("conf");
        let kc = kubeconfig_from_conf("https://10.0.0.1:6443", &cfg.kubernetes);
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.insecure_skip_tls_verify, Some(false));
        // A CA file that does not exist is not referenced (the system roots are used instead).
        assert_eq!(cluster.certificate_authority, None);
        assert_eq!(kc.current_context.as_deref(), Some("kuryr"));
    }
}
