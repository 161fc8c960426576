//! `kuryr.conf`: the oslo.config INI file upstream kuryr-kubernetes used, read into typed,
//! validated settings. Options keep their upstream names and sections; an unknown driver or an
//! impossible combination is an error that names the option.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What is wrong with the configuration (always names the section and option).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("kuryr.conf line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("[{section}] {option} = {value:?}: {reason}")]
    Invalid {
        section: String,
        option: String,
        value: String,
        reason: String,
    },
    #[error("[{section}] {option} is required{reason}")]
    Missing {
        section: String,
        option: String,
        reason: String,
    },
}

/// The raw INI: section → option → value. `[DEFAULT]` values are visible in every section, as
/// in oslo.config. Values may continue on following lines indented with whitespace.
#[derive(Debug, Default, Clone)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl Ini {
    pub fn parse(text: &str) -> Result<Ini, ConfigError> {
        let mut ini = Ini::default();
        let mut section: Option<String> = None;
        let mut last: Option<(String, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                // Continuation of the previous value (oslo.config multi-line values).
                if let Some((s, k)) = &last {
                    if let Some(v) = ini.sections.get_mut(s).and_then(|m| m.get_mut(k)) {
                        v.push('\n');
                        v.push_str(trimmed);
                        continue;
                    }
                }
                return Err(ConfigError::Syntax {
                    line: line_no,
                    reason: "indented line continues nothing".into(),
                });
            }
            if let Some(name) = trimmed.strip_prefix('[') {
                let name = name
                    .strip_suffix(']')
                    .ok_or_else(|| ConfigError::Syntax {
                        line: line_no,
                        reason: format!("unterminated section header {trimmed:?}"),
                    })?
                    .trim();
                if name.is_empty() {
                    return Err(ConfigError::Syntax {
                        line: line_no,
                        reason: "empty section name".into(),
                    });
                }
                ini.sections.entry(name.to_string()).or_default();
                section = Some(name.to_string());
                last = None;
                continue;
            }
            let (k, v) = trimmed
                .split_once('=')
                .or_else(|| trimmed.split_once(':'))
                .ok_or_else(|| ConfigError::Syntax {
                    line: line_no,
                    reason: format!("expected `option = value`, got {trimmed:?}"),
                })?;
            let s = section.clone().ok_or_else(|| ConfigError::Syntax {
                line: line_no,
                reason: "option before any [section]".into(),
            })?;
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            ini.sections
                .entry(s.clone())
                .or_default()
                .insert(k.clone(), v);
            last = Some((s, k));
        }
        Ok(ini)
    }

    /// The value of `option` in `section`, falling back to `[DEFAULT]`.
    pub fn get(&self, section: &str, option: &str) -> Option<&str> {
        self.sections
            .get(section)
            .and_then(|m| m.get(option))
            .or_else(|| self.sections.get("DEFAULT").and_then(|m| m.get(option)))
            .map(String::as_str)
    }

    fn str_or(&self, section: &str, option: &str, default: &str) -> String {
        self.get(section, option).unwrap_or(default).to_string()
    }

    /// `option` as one of `choices` (`default` when unset); any other value is invalid, with
    /// `supported` as the reason.
    fn choice<T: Copy>(
        &self,
        section: &str,
        option: &str,
        default: &str,
        choices: &[(&str, T)],
        supported: &str,
    ) -> Result<T, ConfigError> {
        let v = self.str_or(section, option, default);
        choices
            .iter()
            .find(|(name, _)| *name == v)
            .map(|(_, t)| *t)
            .ok_or_else(|| invalid(section, option, &v, supported))
    }

    fn opt(&self, section: &str, option: &str) -> Option<String> {
        self.get(section, option)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    fn list(&self, section: &str, option: &str) -> Vec<String> {
        self.get(section, option)
            .map(|v| {
                v.split([',', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Upstream's single-subnet option `one` and kuryr-rs' list `many` (at most one subnet per
    /// IP family, the first is the primary one): `(primary, the others)`. Both may be given
    /// when `one` is the first of `many`.
    fn subnets(
        &self,
        section: &str,
        one: &str,
        many: &str,
    ) -> Result<(Option<String>, Vec<String>), ConfigError> {
        let single = self.opt(section, one);
        let mut list = self.list(section, many);
        if list.is_empty() {
            return Ok((single, Vec::new()));
        }
        if list.len() > 2 {
            return Err(invalid(
                section,
                many,
                &list.join(","),
                "at most two subnets: one per IP family",
            ));
        }
        if single.as_ref().is_some_and(|s| *s != list[0]) {
            return Err(invalid(
                section,
                one,
                single.as_deref().unwrap_or_default(),
                &format!(
                    "differs from the first of {many} ({}); give one of the two",
                    list[0]
                ),
            ));
        }
        let primary = list.remove(0);
        Ok((Some(primary), list))
    }

    fn bool_or(&self, section: &str, option: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(section, option) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(invalid(section, option, v, "expected true or false")),
            },
        }
    }

    fn num_or<T: std::str::FromStr>(
        &self,
        section: &str,
        option: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(section, option) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| invalid(section, option, v, "expected a number")),
        }
    }
}

fn invalid(section: &str, option: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        section: section.into(),
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn missing(section: &str, option: &str, reason: &str) -> ConfigError {
    ConfigError::Missing {
        section: section.into(),
        option: option.into(),
        reason: reason.into(),
    }
}

/// `[kubernetes] pod_vif_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodVifDriver {
    /// A Neutron port per pod, bound to the node (bare-metal or VM nodes with OVS).
    NeutronVif,
    /// Pods inside Nova VMs: trunk subports, VLAN sub-interfaces of the VM NIC.
    NestedVlan,
    /// Pods inside Nova VMs: macvlan on the VM NIC, allowed-address-pairs on the VM port.
    NestedMacvlan,
}

/// `[kubernetes] vif_pool_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VifPoolDriver {
    Noop,
    Neutron,
    Nested,
}

/// `[kubernetes] pod_subnets_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubnetsDriver {
    /// All pods on `[neutron_defaults] pod_subnet`.
    Default,
    /// A network and subnet per namespace, from `[namespace_subnet] pod_subnet_pool`.
    Namespace,
}

/// `[kubernetes] pod_project_driver`, `service_project_driver`, `namespace_project_driver`,
/// `network_policy_project_driver` (upstream's project drivers): which OpenStack project a
/// namespace's resources are created in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProjectDriver {
    /// `[neutron_defaults] project`.
    #[default]
    Default,
    /// The namespace's `openstack.org/kuryr-project` annotation, else `[neutron_defaults] project`.
    Annotation,
}

/// The namespace annotation naming the OpenStack project of its resources (upstream's).
pub const PROJECT_ANNOTATION: &str = "openstack.org/kuryr-project";

/// The four project drivers, by what they place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectDrivers {
    /// Pod ports.
    pub pod: ProjectDriver,
    /// Service load balancers (and their floating IPs).
    pub service: ProjectDriver,
    /// Namespace networks and subnets (`pod_subnets_driver = namespace`).
    pub namespace: ProjectDriver,
    /// NetworkPolicy security groups and address groups.
    pub network_policy: ProjectDriver,
}

impl ProjectDrivers {
    /// Whether any of them reads the annotation.
    pub fn any_annotation(&self) -> bool {
        [self.pod, self.service, self.namespace, self.network_policy]
            .contains(&ProjectDriver::Annotation)
    }
}

/// `[kubernetes] pod_security_groups_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityGroupsDriver {
    Default,
    Namespace,
    Policy,
}

/// `[neutron]`: how to authenticate to Keystone (keystoneauth option names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeutronAuth {
    Password {
        username: String,
        password: String,
        user_domain_name: String,
        project_name: Option<String>,
        project_id: Option<String>,
        project_domain_name: String,
    },
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        secret: String,
        username: Option<String>,
        user_domain_name: String,
    },
    /// kuryr-rs extension: `[neutron] cloud = NAME` (and optionally `clouds_file = PATH`) takes
    /// the credentials from a `clouds.yaml` (os-client-config); `auth_url` etc. come from there.
    CloudsYaml { cloud: String, file: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeutronConfig {
    pub auth_url: String,
    pub auth: NeutronAuth,
    pub region_name: Option<String>,
    pub endpoint_type: String,
    pub cafile: Option<String>,
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub api_root: Option<String>,
    pub token_file: String,
    pub ssl_ca_crt_file: String,
    /// TLS verification of the API server; on unless explicitly turned off.
    pub ssl_verify_server_crt: bool,
    pub ssl_client_crt_file: Option<String>,
    pub ssl_client_key_file: Option<String>,
    pub pod_vif_driver: PodVifDriver,
    pub vif_pool_driver: VifPoolDriver,
    pub pod_subnets_driver: SubnetsDriver,
    pub pod_security_groups_driver: SecurityGroupsDriver,
    /// `[kubernetes] *_project_driver`.
    pub project_drivers: ProjectDrivers,
    pub enabled_handlers: Vec<String>,
    /// `endpoints_driver_octavia_provider`: the Octavia provider of Service load balancers;
    /// `default` = Octavia's default provider.
    pub octavia_provider: String,
    pub controller_ha: bool,
    pub use_events: bool,
}

/// `[neutron_defaults] port_bulk_max` when unset: one request per port. Measured on the stack
/// (ML2/OVN, bench/results/neutron-bulk.json and port-batching.json): a bulk costs about as
/// much per port as single creates and every pod in it waits for all of it, so a 20-pod burst
/// was Ready later with bulks of 20 (p50 23.2 s) than with single creates side by side (13.4 s).
pub const DEFAULT_PORT_BULK_MAX: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeutronDefaults {
    pub project: String,
    /// `pod_subnet`, or the first of `pod_subnets`.
    pub pod_subnet: Option<String>,
    /// kuryr-rs: `pod_subnets` past the first (dual-stack: the other IP family's subnet on the
    /// same network); every pod port gets an address from each.
    pub extra_pod_subnets: Vec<String>,
    pub pod_security_groups: Vec<String>,
    /// `service_subnet`, or the first of `service_subnets`.
    pub service_subnet: Option<String>,
    /// kuryr-rs: `service_subnets` past the first (dual-stack: the other IP family's service
    /// subnet; a Service's VIP goes on the subnet of its ClusterIP's family).
    pub extra_service_subnets: Vec<String>,
    pub ovs_bridge: String,
    /// 0 = use the network's MTU.
    pub network_device_mtu: u32,
    /// kuryr-rs: at most this many pod ports asked for together go in one bulk `POST /ports`
    /// (1 = one request per port).
    pub port_bulk_max: u32,
    pub resource_tags: Vec<String>,
    pub external_svc_net: Option<String>,
    pub external_svc_subnet: Option<String>,
    /// `lbaas_activation_timeout`: how long a load balancer may stay PENDING_*.
    pub lbaas_activation_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifPoolConfig {
    pub ports_pool_min: u32,
    /// 0 = unlimited.
    pub ports_pool_max: u32,
    pub ports_pool_batch: u32,
    pub ports_pool_update_frequency: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSubnetConfig {
    pub pod_router: Option<String>,
    pub pod_subnet_pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OctaviaDefaults {
    pub member_mode: String,
    pub enforce_sg_rules: bool,
    pub lb_algorithm: String,
    pub timeout_client_data: u32,
    pub timeout_member_data: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniDaemonConfig {
    /// How long ADD waits for the controller's VIF (upstream `vif_annotation_timeout`).
    pub vif_annotation_timeout: Duration,
    /// The unix socket the daemon serves the CNI API on (kuryr-rs; upstream used TCP 5036).
    pub socket_path: String,
    pub cni_failures_count: u32,
    /// The namespace of standalone containers' KuryrPorts (kuryr-rs): a CNI ADD without
    /// `K8S_POD_NAMESPACE` (podman, `ctr run --cni`) is wired from the KuryrPort
    /// `<standalone_namespace>/<K8S_POD_NAME or CNI_CONTAINERID>`, which must be labelled
    /// `kuryr.openstack.org/standalone=true`. Reserved: kuryr does not wire Pods in it.
    /// Read by both the daemon and the controller.
    pub standalone_namespace: String,
    /// Who may use the CNI socket (kuryr-rs): peers whose SO_PEERCRED uid is in
    /// `socket_allowed_uids` (default `0`, root only); others get HTTP 403, code 115.
    pub socket_allowed_uids: Vec<u32>,
    /// Largest CNI request body (`socket_max_request_bytes`, default 1 MiB); larger is
    /// HTTP 413, code 117, without reading it.
    pub socket_max_request_bytes: usize,
    /// How long a client may take to send its whole request, head and body
    /// (`socket_request_timeout`, seconds, default 10): a connection that sends nothing or
    /// trickles is closed after it, so idle clients cannot hold the socket.
    pub socket_request_timeout: Duration,
    /// Connections served at once (`socket_max_connections`, default 512); one more is
    /// answered at once with HTTP 503, code 11 (try again later), never queued behind them.
    pub socket_max_connections: usize,
}

/// Default of `[cni_daemon] standalone_namespace`.
pub const DEFAULT_STANDALONE_NAMESPACE: &str = "kuryr-standalone";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub controller_health: u16,
    pub cni_health: u16,
    pub controller_metrics: u16,
    pub cni_metrics: u16,
}

/// `[network_policy]` (kuryr-rs): what every NetworkPolicy-selected pod accepts besides its
/// policies (the "Infra" group): kubelet probes come from the nodes, and with the OVN load
/// balancer a hairpin through a Service VIP arrives from the VIP (the service subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicyConfig {
    /// `allow_node_subnets` (default true): the CIDRs of `[pod_vif_nested] worker_nodes_subnets`.
    pub allow_node_subnets: bool,
    /// `allow_service_subnet` (default true): the CIDR of `[neutron_defaults] service_subnet`.
    pub allow_service_subnet: bool,
    /// `allow_cidrs`: further CIDRs (e.g. the nodes' network when the pods are not nested).
    pub allow_cidrs: Vec<String>,
}

/// The whole `kuryr.conf`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kubernetes: KubernetesConfig,
    /// `None` on nodes (the daemon has no cloud credentials).
    pub neutron: Option<NeutronConfig>,
    pub neutron_defaults: NeutronDefaults,
    pub vif_pool: VifPoolConfig,
    pub namespace_subnet: NamespaceSubnetConfig,
    pub worker_nodes_subnets: Vec<String>,
    pub octavia_defaults: OctaviaDefaults,
    pub cni_daemon: CniDaemonConfig,
    /// `[binding] link_iface`: the VM NIC for nested drivers.
    pub link_iface: Option<String>,
    pub ports: Ports,
    pub network_policy: NetworkPolicyConfig,
}

/// Which program reads the file: the controller needs cloud credentials, the daemon must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Controller,
    Daemon,
}

impl Config {
    pub fn load(path: &Path, role: Role) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, role)
    }

    pub fn parse(text: &str, role: Role) -> Result<Config, ConfigError> {
        Config::from_ini(&Ini::parse(text)?, role)
    }

    /// Reads and checks every section, in this order (the first error wins): `[kubernetes]`,
    /// `[neutron_defaults]`, `[vif_pool]`, `[namespace_subnet]` and `[binding]`, the
    /// combinations that cannot work, `[neutron]` (controller), `[octavia_defaults]`,
    /// `[cni_daemon]`, `[pod_vif_nested]`, the ports.
    pub fn from_ini(ini: &Ini, role: Role) -> Result<Config, ConfigError> {
        let kubernetes = Self::kubernetes_section(ini)?;
        let neutron_defaults = Self::neutron_defaults_section(ini)?;
        let vif_pool = Self::vif_pool_section(ini, kubernetes.vif_pool_driver)?;
        let ns = "namespace_subnet";
        let namespace_subnet = NamespaceSubnetConfig {
            pod_router: ini.opt(ns, "pod_router"),
            pod_subnet_pool: ini.opt(ns, "pod_subnet_pool"),
        };
        let link_iface = ini.opt("binding", "link_iface");
        Self::check_combinations(
            role,
            &kubernetes,
            &neutron_defaults,
            &namespace_subnet,
            link_iface.as_deref(),
        )?;
        let neutron = match role {
            Role::Daemon => None,
            Role::Controller => Some(neutron_config(ini)?),
        };
        let octavia_defaults = Self::octavia_defaults_section(ini)?;
        let cni_daemon = Self::cni_daemon_section(ini)?;
        let worker_nodes_subnets = Self::worker_nodes_subnets(ini)?;
        let ports = Self::ports(ini)?;
        let np = "network_policy";
        let network_policy = NetworkPolicyConfig {
            allow_node_subnets: ini.bool_or(np, "allow_node_subnets", true)?,
            allow_service_subnet: ini.bool_or(np, "allow_service_subnet", true)?,
            allow_cidrs: ini.list(np, "allow_cidrs"),
        };
        Ok(Config {
            kubernetes,
            neutron,
            neutron_defaults,
            vif_pool,
            namespace_subnet,
            worker_nodes_subnets,
            octavia_defaults,
            cni_daemon,
            link_iface,
            ports,
            network_policy,
        })
    }

    /// `[kubernetes]`: the drivers, the handlers, the API connection.
    fn kubernetes_section(ini: &Ini) -> Result<KubernetesConfig, ConfigError> {
        let k = "kubernetes";
        let pod_vif_driver = ini.choice(
            k,
            "pod_vif_driver",
            "neutron-vif",
            &[
                ("neutron-vif", PodVifDriver::NeutronVif),
                ("neutron", PodVifDriver::NeutronVif),
                ("nested-vlan", PodVifDriver::NestedVlan),
                ("nested-macvlan", PodVifDriver::NestedMacvlan),
            ],
            "supported: neutron-vif, nested-vlan, nested-macvlan",
        )?;
        let vif_pool_driver = ini.choice(
            k,
            "vif_pool_driver",
            "noop",
            &[
                ("noop", VifPoolDriver::Noop),
                ("neutron", VifPoolDriver::Neutron),
                ("nested", VifPoolDriver::Nested),
            ],
            "supported: noop, neutron, nested",
        )?;
        let pod_subnets_driver = ini.choice(
            k,
            "pod_subnets_driver",
            "default",
            &[
                ("default", SubnetsDriver::Default),
                ("namespace", SubnetsDriver::Namespace),
            ],
            "supported: default, namespace",
        )?;
        let pod_security_groups_driver = ini.choice(
            k,
            "pod_security_groups_driver",
            "default",
            &[
                ("default", SecurityGroupsDriver::Default),
                ("namespace", SecurityGroupsDriver::Namespace),
                ("policy", SecurityGroupsDriver::Policy),
            ],
            "supported: default, namespace, policy",
        )?;
        let project = |option: &str| {
            ini.choice(
                k,
                option,
                "default",
                &[
                    ("default", ProjectDriver::Default),
                    ("annotation", ProjectDriver::Annotation),
                ],
                "supported: default, annotation",
            )
        };
        let project_drivers = ProjectDrivers {
            pod: project("pod_project_driver")?,
            service: project("service_project_driver")?,
            namespace: project("namespace_project_driver")?,
            network_policy: project("network_policy_project_driver")?,
        };
        let enabled_handlers = Self::enabled_handlers(ini)?;
        Ok(KubernetesConfig {
            api_root: ini.opt(k, "api_root"),
            token_file: ini.str_or(
                k,
                "token_file",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            ),
            ssl_ca_crt_file: ini.str_or(
                k,
                "ssl_ca_crt_file",
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            ),
            ssl_verify_server_crt: ini.bool_or(k, "ssl_verify_server_crt", true)?,
            ssl_client_crt_file: ini.opt(k, "ssl_client_crt_file"),
            ssl_client_key_file: ini.opt(k, "ssl_client_key_file"),
            pod_vif_driver,
            vif_pool_driver,
            pod_subnets_driver,
            pod_security_groups_driver,
            project_drivers,
            enabled_handlers,
            octavia_provider: ini.str_or(k, "endpoints_driver_octavia_provider", "default"),
            controller_ha: ini.bool_or(k, "controller_ha", false)?,
            use_events: ini.bool_or(k, "use_events", true)?,
        })
    }

    /// `[kubernetes] enabled_handlers`: upstream's default set when unset; an unknown handler is
    /// invalid.
    fn enabled_handlers(ini: &Ini) -> Result<Vec<String>, ConfigError> {
        let k = "kubernetes";
        let mut enabled_handlers = ini.list(k, "enabled_handlers");
        if enabled_handlers.is_empty() {
            enabled_handlers = [
                "vif",
                "endpoints",
                "service",
                "kuryrloadbalancer",
                "kuryrport",
            ]
            .map(String::from)
            .to_vec();
        }
        const HANDLERS: &[&str] = &[
            "vif",
            "kuryrport",
            "endpoints",
            "service",
            "kuryrloadbalancer",
            "namespace",
            "kuryrnetwork",
            "kuryrnetwork_population",
            "policy",
            "kuryrnetworkpolicy",
            "pod_label",
        ];
        if let Some(h) = enabled_handlers
            .iter()
            .find(|h| !HANDLERS.contains(&h.as_str()))
        {
            return Err(invalid(
                k,
                "enabled_handlers",
                h,
                &format!("unknown handler; known: {}", HANDLERS.join(", ")),
            ));
        }
        Ok(enabled_handlers)
    }

    /// `[neutron_defaults]`.
    fn neutron_defaults_section(ini: &Ini) -> Result<NeutronDefaults, ConfigError> {
        let nd = "neutron_defaults";
        let (pod_subnet, extra_pod_subnets) = ini.subnets(nd, "pod_subnet", "pod_subnets")?;
        let (service_subnet, extra_service_subnets) =
            ini.subnets(nd, "service_subnet", "service_subnets")?;
        let neutron_defaults = NeutronDefaults {
            project: ini.str_or(nd, "project", ""),
            pod_subnet,
            extra_pod_subnets,
            pod_security_groups: ini.list(nd, "pod_security_groups"),
            service_subnet,
            extra_service_subnets,
            ovs_bridge: ini.str_or(nd, "ovs_bridge", "br-int"),
            network_device_mtu: ini.num_or(nd, "network_device_mtu", 0)?,
            port_bulk_max: ini.num_or(nd, "port_bulk_max", DEFAULT_PORT_BULK_MAX)?,
            resource_tags: ini.list(nd, "resource_tags"),
            external_svc_net: ini.opt(nd, "external_svc_net"),
            external_svc_subnet: ini.opt(nd, "external_svc_subnet"),
            lbaas_activation_timeout: Duration::from_secs(ini.num_or(
                nd,
                "lbaas_activation_timeout",
                300,
            )?),
        };
        if let Some(t) = neutron_defaults
            .resource_tags
            .iter()
            .find(|t| t.len() > 255 || t.contains(','))
        {
            return Err(invalid(
                nd,
                "resource_tags",
                t,
                "a Neutron tag is at most 255 characters and has no comma",
            ));
        }
        Ok(neutron_defaults)
    }

    /// `[vif_pool]` (its batch size is checked when a pool driver is on).
    fn vif_pool_section(
        ini: &Ini,
        vif_pool_driver: VifPoolDriver,
    ) -> Result<VifPoolConfig, ConfigError> {
        let vp = "vif_pool";
        let vif_pool = VifPoolConfig {
            ports_pool_min: ini.num_or(vp, "ports_pool_min", 5)?,
            ports_pool_max: ini.num_or(vp, "ports_pool_max", 0)?,
            ports_pool_batch: ini.num_or(vp, "ports_pool_batch", 10)?,
            ports_pool_update_frequency: Duration::from_secs(ini.num_or(
                vp,
                "ports_pool_update_frequency",
                20,
            )?),
        };
        if vif_pool.ports_pool_max != 0 && vif_pool.ports_pool_min > vif_pool.ports_pool_max {
            return Err(invalid(
                vp,
                "ports_pool_min",
                &vif_pool.ports_pool_min.to_string(),
                &format!("greater than ports_pool_max = {}", vif_pool.ports_pool_max),
            ));
        }
        if vif_pool_driver != VifPoolDriver::Noop && vif_pool.ports_pool_batch == 0 {
            return Err(invalid(
                vp,
                "ports_pool_batch",
                "0",
                "a pool needs a batch size of at least 1",
            ));
        }
        Ok(vif_pool)
    }

    /// Combinations that cannot work (drivers, `link_iface`, what the controller needs).
    fn check_combinations(
        role: Role,
        kubernetes: &KubernetesConfig,
        neutron_defaults: &NeutronDefaults,
        namespace_subnet: &NamespaceSubnetConfig,
        link_iface: Option<&str>,
    ) -> Result<(), ConfigError> {
        let (k, nd, ns) = ("kubernetes", "neutron_defaults", "namespace_subnet");
        let (pod_vif_driver, vif_pool_driver) =
            (kubernetes.pod_vif_driver, kubernetes.vif_pool_driver);
        let (pod_subnets_driver, pod_security_groups_driver) = (
            kubernetes.pod_subnets_driver,
            kubernetes.pod_security_groups_driver,
        );
        let nested = matches!(
            pod_vif_driver,
            PodVifDriver::NestedVlan | PodVifDriver::NestedMacvlan
        );
        if nested && role == Role::Daemon && link_iface.is_none() {
            return Err(missing(
                "binding",
                "link_iface",
                " with a nested pod_vif_driver (the VM NIC pods attach to)",
            ));
        }
        if vif_pool_driver == VifPoolDriver::Nested && !nested {
            return Err(invalid(
                k,
                "vif_pool_driver",
                "nested",
                "needs pod_vif_driver = nested-vlan",
            ));
        }
        if vif_pool_driver == VifPoolDriver::Neutron && nested {
            return Err(invalid(
                k,
                "vif_pool_driver",
                "neutron",
                "pods in VMs need vif_pool_driver = nested or noop",
            ));
        }
        if role == Role::Controller {
            if neutron_defaults.project.is_empty() {
                return Err(missing(nd, "project", ""));
            }
            match pod_subnets_driver {
                SubnetsDriver::Default if neutron_defaults.pod_subnet.is_none() => {
                    return Err(missing(
                        nd,
                        "pod_subnet",
                        " with pod_subnets_driver = default",
                    ))
                }
                SubnetsDriver::Namespace if namespace_subnet.pod_subnet_pool.is_none() => {
                    return Err(missing(
                        ns,
                        "pod_subnet_pool",
                        " with pod_subnets_driver = namespace",
                    ))
                }
                SubnetsDriver::Namespace if namespace_subnet.pod_router.is_none() => {
                    return Err(missing(
                        ns,
                        "pod_router",
                        " with pod_subnets_driver = namespace",
                    ))
                }
                _ => {}
            }
            if pod_security_groups_driver == SecurityGroupsDriver::Default
                && neutron_defaults.pod_security_groups.is_empty()
            {
                return Err(missing(
                    nd,
                    "pod_security_groups",
                    " with pod_security_groups_driver = default",
                ));
            }
        }
        Ok(())
    }

    /// `[octavia_defaults]`.
    fn octavia_defaults_section(ini: &Ini) -> Result<OctaviaDefaults, ConfigError> {
        let od = "octavia_defaults";
        let member_mode = ini.str_or(od, "member_mode", "L3");
        if member_mode != "L3" && member_mode != "L2" {
            return Err(invalid(
                od,
                "member_mode",
                &member_mode,
                "expected L2 or L3",
            ));
        }
        Ok(OctaviaDefaults {
            member_mode,
            enforce_sg_rules: ini.bool_or(od, "enforce_sg_rules", true)?,
            lb_algorithm: ini.str_or(od, "lb_algorithm", "ROUND_ROBIN"),
            timeout_client_data: ini.num_or(od, "timeout_client_data", 0)?,
            timeout_member_data: ini.num_or(od, "timeout_member_data", 0)?,
        })
    }

    /// `[cni_daemon]`.
    fn cni_daemon_section(ini: &Ini) -> Result<CniDaemonConfig, ConfigError> {
        let cd = "cni_daemon";
        let cni_daemon = CniDaemonConfig {
            vif_annotation_timeout: Duration::from_secs(ini.num_or(
                cd,
                "vif_annotation_timeout",
                60,
            )?),
            socket_path: ini.str_or(cd, "socket_path", "/run/kuryr/kuryr-daemon.sock"),
            cni_failures_count: ini.num_or(cd, "cni_failures_count", 3)?,
            standalone_namespace: ini.str_or(
                cd,
                "standalone_namespace",
                DEFAULT_STANDALONE_NAMESPACE,
            ),
            socket_allowed_uids: match ini.get(cd, "socket_allowed_uids") {
                None => vec![0],
                Some(v) => v
                    .split([',', '\n'])
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| {
                        u.parse::<u32>().map_err(|_| {
                            invalid(
                                cd,
                                "socket_allowed_uids",
                                v,
                                "expected a list of numeric uids",
                            )
                        })
                    })
                    .collect::<Result<Vec<u32>, ConfigError>>()?,
            },
            socket_max_request_bytes: ini.num_or(cd, "socket_max_request_bytes", 1 << 20)?,
            socket_request_timeout: Duration::from_secs(ini.num_or(
                cd,
                "socket_request_timeout",
                10,
            )?),
            socket_max_connections: ini.num_or(cd, "socket_max_connections", 512)?,
        };
        for (option, zero) in [
            (
                "socket_max_request_bytes",
                cni_daemon.socket_max_request_bytes == 0,
            ),
            (
                "socket_request_timeout",
                cni_daemon.socket_request_timeout.is_zero(),
            ),
            (
                "socket_max_connections",
                cni_daemon.socket_max_connections == 0,
            ),
        ] {
            if zero {
                return Err(invalid(cd, option, "0", "must be at least 1"));
            }
        }
        if cni_daemon.socket_request_timeout > Duration::from_secs(3600) {
            return Err(invalid(
                cd,
                "socket_request_timeout",
                &cni_daemon.socket_request_timeout.as_secs().to_string(),
                "at most 3600 seconds",
            ));
        }
        if cni_daemon.socket_allowed_uids.is_empty() {
            return Err(invalid(
                cd,
                "socket_allowed_uids",
                "",
                "no uid could use the CNI socket; leave it unset for root only",
            ));
        }
        if cni_daemon.vif_annotation_timeout.is_zero() {
            return Err(invalid(
                cd,
                "vif_annotation_timeout",
                "0",
                "must be at least 1 second",
            ));
        }
        if let Err(why) = crate::names::check_dns1123_label(&cni_daemon.standalone_namespace) {
            return Err(invalid(
                cd,
                "standalone_namespace",
                &cni_daemon.standalone_namespace,
                &format!("not a namespace name: {why}"),
            ));
        }
        Ok(cni_daemon)
    }

    /// `[pod_vif_nested] worker_nodes_subnets`.
    fn worker_nodes_subnets(ini: &Ini) -> Result<Vec<String>, ConfigError> {
        // Neutron subnet ids (UUIDs): a name or a CIDR here would silently match no parent port.
        let worker_nodes_subnets = ini.list("pod_vif_nested", "worker_nodes_subnets");
        for id in &worker_nodes_subnets {
            if !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(invalid(
                    "pod_vif_nested",
                    "worker_nodes_subnets",
                    id,
                    "not a Neutron subnet id (UUID)",
                ));
            }
        }
        Ok(worker_nodes_subnets)
    }

    /// `[health_server]`, `[cni_health_server]`, `[prometheus_exporter]` ports.
    fn ports(ini: &Ini) -> Result<Ports, ConfigError> {
        Ok(Ports {
            controller_health: ini.num_or("health_server", "port", 8082)?,
            cni_health: ini.num_or("cni_health_server", "port", 8090)?,
            controller_metrics: ini.num_or(
                "prometheus_exporter",
                "controller_exporter_port",
                9654,
            )?,
            cni_metrics: ini.num_or("prometheus_exporter", "cni_exporter_port", 9655)?,
        })
    }
}

fn neutron_config(ini: &Ini) -> Result<NeutronConfig, ConfigError> {
    let n = "neutron";
    if let Some(cloud) = ini.opt(n, "cloud") {
        if cloud.trim().is_empty() {
            return Err(invalid(
                n,
                "cloud",
                &cloud,
                "the name of a cloud in clouds.yaml",
            ));
        }
        return Ok(NeutronConfig {
            auth_url: ini.opt(n, "auth_url").unwrap_or_default(),
            auth: NeutronAuth::CloudsYaml {
                cloud,
                file: ini.opt(n, "clouds_file"),
            },
            region_name: ini.opt(n, "region_name"),
            endpoint_type: ini.str_or(n, "endpoint_type", "public"),
            cafile: ini.opt(n, "cafile"),
            insecure: ini.bool_or(n, "insecure", false)?,
        });
    }
    let auth_url = ini.opt(n, "auth_url").ok_or_else(|| {
        missing(
            n,
            "auth_url",
            " (Keystone v3 URL), unless `cloud` names a cloud of a clouds.yaml",
        )
    })?;
    let auth_type = ini.str_or(n, "auth_type", "password");
    let user_domain_name = ini.str_or(n, "user_domain_name", "Default");
    let auth = match auth_type.as_str() {
        "password" | "v3password" => NeutronAuth::Password {
            username: ini
                .opt(n, "username")
                .ok_or_else(|| missing(n, "username", " with auth_type = password"))?,
            password: ini
                .opt(n, "password")
                .ok_or_else(|| missing(n, "password", " with auth_type = password"))?,
            user_domain_name,
            project_name: ini.opt(n, "project_name"),
            project_id: ini.opt(n, "project_id"),
            project_domain_name: ini.str_or(n, "project_domain_name", "Default"),
        },
        "v3applicationcredential" | "applicationcredential" => {
            let id = ini.opt(n, "application_credential_id");
            let name = ini.opt(n, "application_credential_name");
            if id.is_none() && name.is_none() {
                return Err(missing(
                    n,
                    "application_credential_id",
                    " (or application_credential_name) with an application credential auth_type",
                ));
            }
            let username = ini.opt(n, "username");
            if id.is_none() && username.is_none() {
                return Err(missing(
                    n,
                    "username",
                    " with application_credential_name (a name is only unique per user)",
                ));
            }
            NeutronAuth::ApplicationCredential {
                id,
                name,
                secret: ini
                    .opt(n, "application_credential_secret")
                    .ok_or_else(|| missing(n, "application_credential_secret", ""))?,
                username,
                user_domain_name,
            }
        }
        other => {
            return Err(invalid(
                n,
                "auth_type",
                other,
                "supported: password, v3password, v3applicationcredential",
            ))
        }
    };
    if let NeutronAuth::Password {
        project_name: None,
        project_id: None,
        ..
    } = auth
    {
        return Err(missing(
            n,
            "project_name",
            " (or project_id) with auth_type = password",
        ));
    }
    Ok(NeutronConfig {
        auth_url,
        auth,
        region_name: ini.opt(n, "region_name"),
        endpoint_type: ini.str_or(n, "endpoint_type", "public"),
        cafile: ini.opt(n, "cafile"),
        insecure: ini.bool_or(n, "insecure", false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK_CONF: &str = r#"
# written by hack/stack/objects.sh
[DEFAULT]
debug = false

[kubernetes]
api_root = https://127.0.0.1:6443
ssl_ca_crt_file = /var/lib/kuryr-stack/pki/ca.crt
pod_vif_driver = neutron-vif
enabled_handlers = vif,kuryrport

[neutron]
auth_type = v3applicationcredential
auth_url = http://127.0.0.1:5000/v3
application_credential_id = abc
application_credential_secret = s3cret
region_name = RegionOne

[neutron_defaults]
project = p1
pod_subnet = sub-1
pod_security_groups = sg-1,sg-2
service_subnet = sub-2
resource_tags = kuryr-rs-local
"#;

    #[test]
    fn neutron_credentials_from_clouds_yaml() {
        let conf = STACK_CONF.replace(
            "[neutron]",
            "[neutron]\ncloud = kuryr\nclouds_file = /etc/kuryr/clouds.yaml",
        );
        let c = Config::parse(&conf, Role::Controller).expect("valid");
        let n = c.neutron.expect("[neutron]");
        assert_eq!(
            n.auth,
            NeutronAuth::CloudsYaml {
                cloud: "kuryr".into(),
                file: Some("/etc/kuryr/clouds.yaml".into())
            }
        );
        // Without auth_url or any credential option: the cloud has them.
        let minimal = "[kubernetes]\npod_vif_driver = neutron-vif\n[neutron]\ncloud = c1\n[neutron_defaults]\nproject = p\npod_subnet = s\npod_security_groups = g\n";
        let c = Config::parse(minimal, Role::Controller).expect("valid");
        assert_eq!(
            c.neutron.expect("neutron").auth,
            NeutronAuth::CloudsYaml {
                cloud: "c1".into(),
                file: None
            }
        );
        let e = Config::parse(&minimal.replace("cloud = c1", "cloud = "), Role::Controller)
            .expect_err("empty cloud");
        assert!(e.to_string().contains("`cloud`"), "{e}");
    }

    #[test]
    fn reads_the_stack_conf() {
        let c = Config::parse(STACK_CONF, Role::Controller).expect("valid");
        assert_eq!(
            c.kubernetes.api_root.as_deref(),
            Some("https://127.0.0.1:6443")
        );
        assert!(
            c.kubernetes.ssl_verify_server_crt,
            "TLS verification is on by default"
        );
        assert_eq!(c.kubernetes.enabled_handlers, ["vif", "kuryrport"]);
        assert_eq!(c.neutron_defaults.pod_security_groups, ["sg-1", "sg-2"]);
        assert_eq!(c.neutron_defaults.ovs_bridge, "br-int");
        assert_eq!(c.vif_pool.ports_pool_batch, 10);
        assert_eq!(c.neutron_defaults.port_bulk_max, DEFAULT_PORT_BULK_MAX);
        let twenty = Config::parse(
            &STACK_CONF.replace(
                "[neutron_defaults]\n",
                "[neutron_defaults]\nport_bulk_max = 20\n",
            ),
            Role::Controller,
        )
        .expect("valid");
        assert_eq!(twenty.neutron_defaults.port_bulk_max, 20);
        assert_eq!(c.cni_daemon.vif_annotation_timeout, Duration::from_secs(60));
        assert_eq!(c.cni_daemon.standalone_namespace, "kuryr-standalone");
        let other = Config::parse(
            "[cni_daemon]\nstandalone_namespace = podman-ports\n",
            Role::Daemon,
        )
        .expect("valid");
        assert_eq!(other.cni_daemon.standalone_namespace, "podman-ports");
        let n = c.neutron.expect("neutron");
        assert!(
            matches!(n.auth, NeutronAuth::ApplicationCredential { ref id, ref secret, .. } if id.as_deref() == Some("abc") && secret == "s3cret")
        );
        assert_eq!(c.ports.controller_health, 8082);
    }

    #[test]
    fn the_daemon_needs_no_credentials() {
        let c = Config::parse("[kubernetes]\npod_vif_driver = neutron-vif\n", Role::Daemon)
            .expect("valid");
        assert!(c.neutron.is_none());
    }

    #[test]
    fn project_drivers_default_and_annotation() {
        let c = Config::parse(STACK_CONF, Role::Controller).expect("valid");
        assert_eq!(c.kubernetes.project_drivers, ProjectDrivers::default());
        assert!(!c.kubernetes.project_drivers.any_annotation());
        let conf = STACK_CONF.replace(
            "[kubernetes]\n",
            "[kubernetes]\npod_project_driver = annotation\nnetwork_policy_project_driver = annotation\n",
        );
        let d = Config::parse(&conf, Role::Controller)
            .expect("valid")
            .kubernetes
            .project_drivers;
        assert_eq!(
            (d.pod, d.service, d.namespace, d.network_policy),
            (
                ProjectDriver::Annotation,
                ProjectDriver::Default,
                ProjectDriver::Default,
                ProjectDriver::Annotation
            )
        );
        assert!(d.any_annotation());
    }

    #[test]
    fn dual_stack_subnets_extend_upstreams_single_ones() {
        let c = Config::parse(STACK_CONF, Role::Controller).expect("valid");
        assert_eq!(
            (
                c.neutron_defaults.pod_subnet.as_deref(),
                c.neutron_defaults.extra_pod_subnets.len()
            ),
            (Some("sub-1"), 0)
        );
        let conf = STACK_CONF
            .replace("pod_subnet = sub-1", "pod_subnets = sub-1, sub-6")
            .replace(
                "service_subnet = sub-2",
                "service_subnet = sub-2\nservice_subnets = sub-2,sub-7",
            );
        let nd = Config::parse(&conf, Role::Controller)
            .expect("valid")
            .neutron_defaults;
        assert_eq!(
            (nd.pod_subnet.as_deref(), nd.extra_pod_subnets),
            (Some("sub-1"), vec!["sub-6".to_string()])
        );
        assert_eq!(
            (nd.service_subnet.as_deref(), nd.extra_service_subnets),
            (Some("sub-2"), vec!["sub-7".to_string()])
        );
    }

    #[test]
    fn errors_name_the_option() {
        let cases: &[(&str, Role, &str)] = &[
            ("[kubernetes]\npod_vif_driver = sriov\n", Role::Daemon, "[kubernetes] pod_vif_driver = \"sriov\""),
            ("[kubernetes]\nvif_pool_driver = magic\n", Role::Daemon, "[kubernetes] vif_pool_driver"),
            ("[kubernetes]\nenabled_handlers = vif,bogus\n", Role::Daemon, "[kubernetes] enabled_handlers = \"bogus\""),
            ("[vif_pool]\nports_pool_min = 9\nports_pool_max = 3\n", Role::Daemon, "[vif_pool] ports_pool_min = \"9\": greater than ports_pool_max = 3"),
            ("[kubernetes]\npod_vif_driver = nested-vlan\n", Role::Daemon, "[binding] link_iface is required"),
            ("[kubernetes]\nvif_pool_driver = nested\n", Role::Daemon, "needs pod_vif_driver = nested-vlan"),
            ("[kubernetes]\nssl_verify_server_crt = maybe\n", Role::Daemon, "[kubernetes] ssl_verify_server_crt"),
            (
                "[pod_vif_nested]\nworker_nodes_subnets = 0b5c1e7e-aaaa-4bbb-8ccc-123456789abc, 192.168.0.0/24\n",
                Role::Daemon,
                "[pod_vif_nested] worker_nodes_subnets = \"192.168.0.0/24\": not a Neutron subnet id",
            ),
            ("[cni_daemon]\nvif_annotation_timeout = soon\n", Role::Daemon, "[cni_daemon] vif_annotation_timeout"),
            ("[cni_daemon]\nstandalone_namespace = Podman\n", Role::Daemon, "[cni_daemon] standalone_namespace = \"Podman\": not a namespace name"),
            ("[cni_daemon]\nstandalone_namespace =\n", Role::Daemon, "[cni_daemon] standalone_namespace = \"\": not a namespace name: is empty"),
            ("[cni_daemon]\nstandalone_namespace = a.b\n", Role::Daemon, "[cni_daemon] standalone_namespace"),
            ("[neutron_defaults]\npod_subnet = s\n", Role::Controller, "[neutron_defaults] project is required"),
            ("[neutron_defaults]\npod_subnets = a,b,c\n", Role::Daemon, "[neutron_defaults] pod_subnets = \"a,b,c\": at most two subnets"),
            (
                "[kubernetes]\npod_project_driver = namespace\n",
                Role::Daemon,
                "[kubernetes] pod_project_driver = \"namespace\": supported: default, annotation",
            ),
            ("[kubernetes]\nnetwork_policy_project_driver = annotations\n", Role::Daemon, "[kubernetes] network_policy_project_driver = \"annotations\""),
            ("[neutron_defaults]\nservice_subnet = x\nservice_subnets = a,b\n", Role::Daemon, "[neutron_defaults] service_subnet = \"x\": differs from the first of service_subnets (a)"),
            (
                "[kubernetes]\npod_subnets_driver = namespace\n[neutron_defaults]\nproject = p\npod_security_groups = sg\n",
                Role::Controller,
                "[namespace_subnet] pod_subnet_pool is required",
            ),
            (
                "[neutron_defaults]\nproject = p\npod_subnet = s\npod_security_groups = sg\n[neutron]\nauth_url = http://k/v3\nauth_type = token\n",
                Role::Controller,
                "[neutron] auth_type = \"token\"",
            ),
            (
                "[neutron_defaults]\nproject = p\npod_subnet = s\npod_security_groups = sg\n[neutron]\nauth_url = http://k/v3\nusername = u\npassword = x\n",
                Role::Controller,
                "[neutron] project_name is required",
            ),
            ("key = value\n", Role::Daemon, "line 1: option before any [section]"),
            ("[kubernetes\n", Role::Daemon, "unterminated section header"),
        ];
        for (text, role, want) in cases {
            let err = Config::parse(text, *role).expect_err(text).to_string();
            assert!(
                err.contains(want),
                "{text:?}: got {err:?}, want it to contain {want:?}"
            );
        }
    }

    #[test]
    fn default_section_and_continuations() {
        let ini = Ini::parse(
            "[DEFAULT]\nregion_name = R1\n[neutron_defaults]\npod_security_groups = a,\n  b\n",
        )
        .expect("parse");
        assert_eq!(ini.get("neutron", "region_name"), Some("R1"));
        assert_eq!(
            ini.list("neutron_defaults", "pod_security_groups"),
            ["a", "b"]
        );
    }
}
