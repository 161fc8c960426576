//! Pure translation (`crate::loadbalancer::model`): Service + EndpointSlices → KuryrLoadBalancer
//! spec, and KuryrLoadBalancer spec → the Octavia listeners, pools and members it asks for. No
//! I/O: every decision here is unit-tested.

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kuryr_core::crd::{KuryrLoadBalancerHealthMonitor, KuryrLoadBalancerPort, KuryrLoadBalancerSpec, KuryrLoadBalancerVip};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Annotations of upstream kuryr for listener timeouts (milliseconds).
pub const TIMEOUT_CLIENT_DATA: &str = "openstack.org/kuryr-timeout-client-data";
pub const TIMEOUT_MEMBER_DATA: &str = "openstack.org/kuryr-timeout-member-data";
/// A Service still carrying upstream's pre-CRD annotation is left to whoever wrote it.
pub const LEGACY_LBAAS_SPEC: &str = "openstack.org/kuryr-lbaas-spec";
/// The label EndpointSlices name their Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// cloud-provider-openstack's Service annotations that kuryr-rs honours (README: "Service
/// annotations"); any other `loadbalancer.openstack.org/*` one gets an Event saying it is not.
pub mod cpo {
    pub const PREFIX: &str = "loadbalancer.openstack.org/";
    pub const FLOATING_NETWORK_ID: &str = "loadbalancer.openstack.org/floating-network-id";
    pub const KEEP_FLOATINGIP: &str = "loadbalancer.openstack.org/keep-floatingip";
    pub const ENABLE_HEALTH_MONITOR: &str = "loadbalancer.openstack.org/enable-health-monitor";
    pub const HEALTH_MONITOR_DELAY: &str = "loadbalancer.openstack.org/health-monitor-delay";
    pub const HEALTH_MONITOR_TIMEOUT: &str = "loadbalancer.openstack.org/health-monitor-timeout";
    pub const HEALTH_MONITOR_MAX_RETRIES: &str = "loadbalancer.openstack.org/health-monitor-max-retries";
    pub const HEALTH_MONITOR_MAX_RETRIES_DOWN: &str = "loadbalancer.openstack.org/health-monitor-max-retries-down";
    pub const FLAVOR_ID: &str = "loadbalancer.openstack.org/flavor-id";
    pub const PROXY_PROTOCOL: &str = "loadbalancer.openstack.org/proxy-protocol";
    /// The annotation form of `spec.loadBalancerSourceRanges` (used when the field is empty).
    pub const SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    pub const HONOURED: [&str; 9] = [
        FLOATING_NETWORK_ID,
        KEEP_FLOATINGIP,
        ENABLE_HEALTH_MONITOR,
        HEALTH_MONITOR_DELAY,
        HEALTH_MONITOR_TIMEOUT,
        HEALTH_MONITOR_MAX_RETRIES,
        HEALTH_MONITOR_MAX_RETRIES_DOWN,
        FLAVOR_ID,
        PROXY_PROTOCOL,
    ];
    /// cloud-provider-openstack's defaults for the health monitor (seconds, counts).
    pub const DEFAULT_DELAY: u32 = 5;
    pub const DEFAULT_TIMEOUT: u32 = 3;
    pub const DEFAULT_MAX_RETRIES: u32 = 1;
    pub const DEFAULT_MAX_RETRIES_DOWN: u32 = 3;
}

/// What an Octavia provider accepts of what kuryr-rs may ask. Measured against the real API:
/// the ovn provider answers 501 to listener `allowed_cidrs`, `PROXY` pools, flavors and
/// `SCTP`/`HTTP` health monitors (it takes `TCP` and `UDP-CONNECT` ones, and SCTP listeners).
/// Other providers (amphora) take all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderCaps {
    pub allowed_cidrs: bool,
    pub proxy_protocol: bool,
    pub flavors: bool,
    pub sctp_monitor: bool,
}

impl ProviderCaps {
    pub fn of(provider: Option<&str>) -> ProviderCaps {
        match provider {
            Some("ovn") => ProviderCaps { allowed_cidrs: false, proxy_protocol: false, flavors: false, sctp_monitor: false },
            _ => ProviderCaps { allowed_cidrs: true, proxy_protocol: true, flavors: true, sctp_monitor: true },
        }
    }

    /// The health monitor type for a pool of `protocol`, if the provider has one.
    pub fn monitor_type(&self, protocol: &str) -> Option<&'static str> {
        match protocol.to_ascii_uppercase().as_str() {
            "TCP" => Some("TCP"),
            "UDP" => Some("UDP-CONNECT"),
            "SCTP" if self.sctp_monitor => Some("SCTP"),
            _ => None,
        }
    }
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1"))
}

/// What the Service controller does with a Service.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// No load balancer: why (logged at debug; DNS serves headless and ExternalName Services).
    Skip(&'static str),
    /// A load balancer with this spec; `notes` are things asked for that are not provided
    /// (one Warning Event each).
    Balance { spec: Box<KuryrLoadBalancerSpec>, notes: Vec<String> },
    /// No load balancer although the Service asks for one: why (a Warning Event).
    Unserved(String),
}

/// Defaults the spec takes from `kuryr.conf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecDefaults {
    pub project_id: String,
    /// The primary service subnet.
    pub subnet_id: String,
    /// The service subnet of each IP family (`IPv4`, `IPv6`) when known; empty = `subnet_id`
    /// serves every ClusterIP.
    pub family_subnets: BTreeMap<&'static str, String>,
    /// `None` = Octavia's default provider.
    pub provider: Option<String>,
    pub timeout_client_data: u32,
    pub timeout_member_data: u32,
    /// `[neutron_defaults] external_svc_net` is set: `type: LoadBalancer` gets a floating IP
    /// (also without it when the Service names a floating network).
    pub public_ips: bool,
}

/// Decides what to do with `svc` and builds the KuryrLoadBalancer spec from it and its
/// EndpointSlices.
pub fn plan(svc: &Service, slices: &[&EndpointSlice], d: &SpecDefaults) -> Plan {
    let Some(spec) = svc.spec.as_ref() else { return Plan::Skip("no spec") };
    let typ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let ip = match balanced_ip(svc, spec, typ) {
        Ok(ip) => ip,
        Err(why) => return Plan::Skip(why),
    };
    let ports = lb_ports(spec);
    if ports.is_empty() {
        return Plan::Skip("no ports");
    }
    let family = ip_family(&ip);
    let subnet_id = match d.family_subnets.get(family) {
        Some(s) => s.clone(),
        None if d.family_subnets.is_empty() => d.subnet_id.clone(),
        None => {
            return Plan::Unserved(format!(
                "ClusterIP {ip}: no {family} service subnet is configured ([neutron_defaults] service_subnets: one subnet per IP family); no load balancer"
            ))
        }
    };
    let mut notes = unprovided(spec, typ);
    let (additional_vips, families) = other_families(spec, &ip, d, &mut notes);
    let asks = Asks::new(svc.annotations(), typ, d);
    let floating_network_id = asks.floating_network_id(d, &mut notes);
    let allowed_cidrs = asks.allowed_cidrs(spec, &mut notes);
    let health_monitor = asks.health_monitor(spec, &mut notes);
    let flavor_id = asks.flavor_id(&mut notes);
    let proxy_protocol = asks.proxy_protocol(&mut notes);
    asks.ignored(&mut notes);
    let mine = service_slices(svc, slices);
    let spec = KuryrLoadBalancerSpec {
        ip: Some(ip.clone()),
        lb_ip: spec.load_balancer_ip.clone().filter(|s| !s.is_empty()),
        type_: Some(if typ == "LoadBalancer" { "LoadBalancer".into() } else { "ClusterIP".into() }),
        ports,
        project_id: Some(d.project_id.clone()),
        subnet_id: Some(subnet_id),
        security_groups_ids: Vec::new(),
        provider: d.provider.clone(),
        timeout_client_data: asks.timeout(TIMEOUT_CLIENT_DATA, d.timeout_client_data),
        timeout_member_data: asks.timeout(TIMEOUT_MEMBER_DATA, d.timeout_member_data),
        session_affinity_timeout: session_affinity_timeout(spec),
        health_monitor,
        allowed_cidrs,
        flavor_id,
        proxy_protocol,
        floating_network_id,
        keep_floating_ip: truthy(asks.ann.get(cpo::KEEP_FLOATINGIP)),
        additional_vips,
        endpoint_slices: endpoint_slices(&mine, &families),
    };
    Plan::Balance { spec: Box::new(spec), notes }
}

/// The (normalised) ClusterIP to balance, or why the Service gets no load balancer.
fn balanced_ip(svc: &Service, spec: &ServiceSpec, typ: &str) -> Result<String, &'static str> {
    if typ == "ExternalName" {
        return Err("ExternalName (served by DNS)");
    }
    if svc.annotations().contains_key(LEGACY_LBAAS_SPEC) {
        return Err("carries the legacy openstack.org/kuryr-lbaas-spec annotation");
    }
    if spec.load_balancer_class.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err("spec.loadBalancerClass names another implementation");
    }
    match spec.cluster_ip.as_deref() {
        None | Some("") => Err("no clusterIP allocated yet"),
        Some("None") => Err("headless (served by DNS)"),
        Some(ip) => Ok(normalize_ip(ip)),
    }
}

/// The Service's ports as the spec lists them (target ports as strings).
fn lb_ports(spec: &ServiceSpec) -> Vec<KuryrLoadBalancerPort> {
    spec.ports
        .iter()
        .flatten()
        .map(|p| KuryrLoadBalancerPort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            target_port: p.target_port.as_ref().map(|t| match t {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
            }),
        })
        .collect()
}

/// Notes on what the Service type asks that a load balancer does not provide: node ports.
fn unprovided(spec: &ServiceSpec, typ: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if typ == "NodePort" || (typ == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false)) {
        notes.push(format!(
            "type {typ}: the ClusterIP is an Octavia load balancer; node ports ({}) are not provided by kuryr-rs (there is no kube-proxy)",
            spec.ports.iter().flatten().filter_map(|p| p.node_port).map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    notes
}

/// A dual-stack Service's other ClusterIPs: Octavia additional VIPs where a service subnet of
/// their family is configured, a note otherwise. Also the IP families the load balancer serves
/// (whose endpoints become members).
fn other_families(
    spec: &ServiceSpec,
    ip: &str,
    d: &SpecDefaults,
    notes: &mut Vec<String>,
) -> (Vec<KuryrLoadBalancerVip>, Vec<&'static str>) {
    let mut vips = Vec::new();
    let mut families = vec![ip_family(ip)];
    let mut unserved = Vec::new();
    for other in spec.cluster_ips.iter().flatten().map(|c| normalize_ip(c)).filter(|c| c != ip) {
        let family = ip_family(&other);
        match d.family_subnets.get(family) {
            Some(subnet) if !families.contains(&family) => {
                families.push(family);
                vips.push(KuryrLoadBalancerVip { ip: other, subnet_id: subnet.clone() });
            }
            _ => unserved.push(other),
        }
    }
    if !unserved.is_empty() {
        notes.push(format!(
            "dual-stack: the load balancer serves {} only, not {} (no service subnet of that family: [neutron_defaults] service_subnets)",
            std::iter::once(ip.to_string()).chain(vips.iter().map(|v| v.ip.clone())).collect::<Vec<_>>().join(", "),
            unserved.join(", ")
        ));
    }
    (vips, families)
}

/// `sessionAffinity: ClientIP`'s timeout (seconds; Kubernetes' default 10800).
fn session_affinity_timeout(spec: &ServiceSpec) -> Option<i64> {
    (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds).map_or(10800, i64::from)
    })
}

/// The EndpointSlices of `svc` among `slices`.
fn service_slices<'s>(svc: &Service, slices: &[&'s EndpointSlice]) -> Vec<&'s EndpointSlice> {
    let svc_name = svc.name_any();
    slices.iter().copied().filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&svc_name) && s.namespace() == svc.namespace()).collect()
}

/// What a Service's annotations ask of its load balancer, read against the provider's
/// capabilities; what cannot be had becomes a note.
struct Asks<'a> {
    ann: &'a BTreeMap<String, String>,
    typ: &'a str,
    caps: ProviderCaps,
    provider_name: &'a str,
}

impl<'a> Asks<'a> {
    fn new(ann: &'a BTreeMap<String, String>, typ: &'a str, d: &'a SpecDefaults) -> Asks<'a> {
        Asks { ann, typ, caps: ProviderCaps::of(d.provider.as_deref()), provider_name: d.provider.as_deref().unwrap_or("default") }
    }

    /// The floating network a `LoadBalancer` Service names (a note when it gets no floating IP).
    fn floating_network_id(&self, d: &SpecDefaults, notes: &mut Vec<String>) -> Option<String> {
        let floating_network_id = self.ann.get(cpo::FLOATING_NETWORK_ID).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if self.typ == "LoadBalancer" && !d.public_ips && floating_network_id.is_none() {
            notes.push(format!(
                "type LoadBalancer: no floating IP, [neutron_defaults] external_svc_net is not set and there is no {} annotation (the ClusterIP works)",
                cpo::FLOATING_NETWORK_ID
            ));
        }
        floating_network_id.filter(|_| self.typ == "LoadBalancer")
    }

    /// The listener `allowed_cidrs` of `loadBalancerSourceRanges` (or its annotation), sorted.
    fn allowed_cidrs(&self, spec: &ServiceSpec, notes: &mut Vec<String>) -> Vec<String> {
        let mut ranges: Vec<String> = spec.load_balancer_source_ranges.clone().unwrap_or_default();
        if ranges.is_empty() {
            ranges = self
                .ann
                .get(cpo::SOURCE_RANGES)
                .map(|v| v.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect())
                .unwrap_or_default();
        }
        let mut allowed_cidrs = Vec::new();
        if !ranges.is_empty() && self.typ == "LoadBalancer" {
            let (good, bad): (Vec<String>, Vec<String>) = ranges.into_iter().partition(|r| r.parse::<ipnet::IpNet>().is_ok());
            if !bad.is_empty() {
                notes.push(format!("loadBalancerSourceRanges: {} are not CIDRs and are left out", bad.join(", ")));
            }
            if self.caps.allowed_cidrs {
                allowed_cidrs = good;
                allowed_cidrs.sort();
                allowed_cidrs.dedup();
            } else if !good.is_empty() {
                notes.push(format!(
                    "loadBalancerSourceRanges are not enforced: the {} Octavia provider has no listener allowed_cidrs (everyone reaches the floating IP)",
                    self.provider_name
                ));
            }
        }
        allowed_cidrs
    }

    /// A number annotation within `lo..=hi`, else `default` (with a note when it is set).
    fn num(&self, key: &str, default: u32, lo: u32, hi: u32, notes: &mut Vec<String>) -> u32 {
        match self.ann.get(key) {
            None => default,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => n,
                _ => {
                    notes.push(format!("{key}: {v:?} is not a number from {lo} to {hi}; using {default}"));
                    default
                }
            },
        }
    }

    /// The health monitor the annotations enable, if any, with a note for the protocols the
    /// provider cannot monitor.
    fn health_monitor(&self, spec: &ServiceSpec, notes: &mut Vec<String>) -> Option<KuryrLoadBalancerHealthMonitor> {
        if !truthy(self.ann.get(cpo::ENABLE_HEALTH_MONITOR)) {
            return None;
        }
        let delay = self.num(cpo::HEALTH_MONITOR_DELAY, cpo::DEFAULT_DELAY, 1, 86_400, notes);
        let mut timeout = self.num(cpo::HEALTH_MONITOR_TIMEOUT, cpo::DEFAULT_TIMEOUT, 1, 86_400, notes);
        if timeout > delay {
            notes.push(format!("{}: a probe cannot take longer than the delay ({delay} s); using {delay}", cpo::HEALTH_MONITOR_TIMEOUT));
            timeout = delay;
        }
        let max_retries = self.num(cpo::HEALTH_MONITOR_MAX_RETRIES, cpo::DEFAULT_MAX_RETRIES, 1, 10, notes);
        let max_retries_down = self.num(cpo::HEALTH_MONITOR_MAX_RETRIES_DOWN, cpo::DEFAULT_MAX_RETRIES_DOWN, 1, 10, notes);
        let unmonitored: BTreeSet<String> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| p.protocol.clone().unwrap_or_else(|| "TCP".into()))
            .filter(|p| self.caps.monitor_type(p).is_none())
            .collect();
        if !unmonitored.is_empty() {
            notes.push(format!(
                "{}: the {} Octavia provider has no health monitor for {} pools; they are not monitored",
                cpo::ENABLE_HEALTH_MONITOR,
                self.provider_name,
                unmonitored.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        Some(KuryrLoadBalancerHealthMonitor { delay, timeout, max_retries, max_retries_down })
    }

    /// The Octavia flavor the Service names, if the provider has flavors.
    fn flavor_id(&self, notes: &mut Vec<String>) -> Option<String> {
        self.ann.get(cpo::FLAVOR_ID).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).filter(|f| {
            if !self.caps.flavors {
                notes.push(format!("{}: the {} Octavia provider has no flavors; {f} is not used", cpo::FLAVOR_ID, self.provider_name));
            }
            self.caps.flavors
        })
    }

    /// The pool protocol (`PROXY`/`PROXYV2`) the Service asks for, if the provider speaks it.
    fn proxy_protocol(&self, notes: &mut Vec<String>) -> Option<String> {
        match self.ann.get(cpo::PROXY_PROTOCOL).map(|v| v.trim().to_ascii_lowercase()) {
            None => None,
            Some(v) if matches!(v.as_str(), "false" | "no" | "0" | "") => None,
            Some(v) => {
                let protocol = if v == "v2" { "PROXYV2" } else { "PROXY" };
                if self.caps.proxy_protocol {
                    Some(protocol.to_string())
                } else {
                    notes.push(format!(
                        "{}: the {} Octavia provider cannot speak the PROXY protocol to members; they see the client's address directly",
                        cpo::PROXY_PROTOCOL,
                        self.provider_name
                    ));
                    None
                }
            }
        }
    }

    /// A note naming the `loadbalancer.openstack.org/*` annotations kuryr-rs does not honour.
    fn ignored(&self, notes: &mut Vec<String>) {
        let ignored: Vec<&str> =
            self.ann.keys().map(String::as_str).filter(|k| k.starts_with(cpo::PREFIX) && !cpo::HONOURED.contains(k)).collect();
        if !ignored.is_empty() {
            notes.push(format!("not honoured by kuryr-rs (see its README, Service annotations): {}", ignored.join(", ")));
        }
    }

    /// A listener timeout (ms) from its annotation, else the configured default (0 = none).
    fn timeout(&self, key: &str, default: u32) -> Option<i64> {
        match self.ann.get(key).and_then(|v| v.trim().parse::<i64>().ok()) {
            Some(v) if v > 0 => Some(v),
            _ => (default > 0).then_some(i64::from(default)),
        }
    }
}

/// `010.096.000.001` → `10.96.0.1` (upstream normalises too: leading zeros are legal in a
/// Service but not in Octavia).
pub fn normalize_ip(ip: &str) -> String {
    if ip.contains(':') {
        return ip.parse::<std::net::Ipv6Addr>().map(|a| a.to_string()).unwrap_or_else(|_| ip.to_string());
    }
    let parts: Vec<&str> = ip.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit())) {
        return parts.iter().map(|p| p.trim_start_matches('0')).map(|p| if p.is_empty() { "0" } else { p }).collect::<Vec<_>>().join(".");
    }
    ip.to_string()
}

fn ip_family(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// The KuryrLoadBalancer `spec.endpointSlices` (upstream's shape): ready endpoints of the
/// Service's slices of the served address families, with their ports. Sorted, so the spec is
/// stable.
pub fn endpoint_slices(slices: &[&EndpointSlice], families: &[&str]) -> Vec<Value> {
    let mut out: Vec<Value> = slices
        .iter()
        .filter(|s| families.contains(&s.address_type.as_str()))
        .filter_map(|s| {
            let mut endpoints: Vec<Value> = s
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .map(|e| {
                    let mut addrs = e.addresses.clone();
                    addrs.sort();
                    let mut v = json!({"addresses": addrs, "conditions": {"ready": true}});
                    if let Some(t) = &e.target_ref {
                        v["targetRef"] = json!({"kind": t.kind, "name": t.name, "namespace": t.namespace, "uid": t.uid});
                    }
                    if let Some(h) = &e.hostname {
                        v["hostname"] = json!(h);
                    }
                    if let Some(n) = &e.node_name {
                        v["nodeName"] = json!(n);
                    }
                    v
                })
                .collect();
            if endpoints.is_empty() {
                return None;
            }
            endpoints.sort_by_key(|e| e.to_string());
            let mut ports: Vec<Value> = s
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    p.port.map(|port| {
                        let mut v = json!({"port": port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())});
                        // An unnamed port has no name, as in upstream's slices (converted from
                        // Endpoints): its KuryrLoadBalancer handler keys pools by the Service
                        // port's name, None for an unnamed one, and released every member of a
                        // slice port named "" as unused (a rollback cut the Service for ~10 s).
                        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                            v["name"] = json!(n);
                        }
                        v
                    })
                })
                .collect();
            ports.sort_by_key(|p| p.to_string());
            Some(json!({"endpoints": endpoints, "ports": ports}))
        })
        .collect();
    out.sort_by_key(|s| s.to_string());
    out
}

/// One Octavia listener (and its default pool) the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantListener {
    pub protocol: String,
    pub port: u16,
    /// `<lb name>:<PROTO>:<port>` (upstream's listener and pool name).
    pub name: String,
    pub members: BTreeSet<WantMember>,
}

/// One member of a pool: where traffic goes. `subnet` is resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WantMember {
    pub address: String,
    pub port: u16,
    /// `<namespace>/<pod>:<port>` for pod endpoints, `<namespace>/<service>:<port>` (the load
    /// balancer's name) otherwise: upstream's names, which its KuryrLoadBalancer handler parses
    /// (`name.split('/')[1]`; an `<address>:<port>` name made it fail with `IndexError` on a
    /// rollback).
    pub name: String,
}

/// The load balancer name (upstream's: `<namespace>/<service>`).
pub fn lb_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Listeners, pools and members from a KuryrLoadBalancer spec: one listener per (protocol,
/// port); members are the ready endpoint addresses × the slice port with the Service port's
/// name and protocol (so a named `targetPort` resolves per slice, as the EndpointSlice
/// controller resolved it per pod). Ports Octavia cannot serve (not 1–65535) are left out.
pub fn listeners(lb_name: &str, spec: &KuryrLoadBalancerSpec) -> Vec<WantListener> {
    let mut out: BTreeMap<(String, u16), WantListener> = BTreeMap::new();
    for p in &spec.ports {
        let Ok(port) = u16::try_from(p.port) else { continue };
        if port == 0 {
            continue;
        }
        let protocol = p.protocol.to_ascii_uppercase();
        let want_name = p.name.clone().unwrap_or_default();
        let entry = out.entry((protocol.clone(), port)).or_insert_with(|| WantListener {
            name: format!("{lb_name}:{protocol}:{port}"),
            protocol: protocol.clone(),
            port,
            members: BTreeSet::new(),
        });
        for slice in &spec.endpoint_slices {
            let Some(sport) = slice["ports"].as_array().and_then(|ps| {
                ps.iter().find(|sp| {
                    sp["name"].as_str().unwrap_or_default() == want_name
                        && sp["protocol"].as_str().unwrap_or("TCP").eq_ignore_ascii_case(&protocol)
                })
            }) else {
                continue;
            };
            let Some(target) = sport["port"].as_u64().and_then(|v| u16::try_from(v).ok()).filter(|v| *v > 0) else { continue };
            for ep in slice["endpoints"].as_array().into_iter().flatten() {
                if ep["conditions"]["ready"].as_bool() == Some(false) {
                    continue;
                }
                for addr in ep["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    let addr = normalize_ip(addr);
                    let name = match (ep["targetRef"]["namespace"].as_str(), ep["targetRef"]["name"].as_str()) {
                        (Some(ns), Some(n)) => format!("{ns}/{n}:{target}"),
                        _ => format!("{lb_name}:{target}"),
                    };
                    entry.members.insert(WantMember { address: addr, port: target, name });
                }
            }
        }
    }
    // One member per (address, port): the name of the first wins.
    for l in out.values_mut() {
        let mut seen = BTreeSet::new();
        l.members.retain(|m| seen.insert((m.address.clone(), m.port)));
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: Value) -> Service {
        let mut base = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns", "uid": "s-1"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}
        });
        merge(&mut base, v);
        serde_json::from_value(base).expect("service")
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn slice(name: &str, port_name: &str, port: i32, eps: &[(&str, Option<bool>, &str)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "web"}},
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": eps.iter().map(|(ip, ready, pod)| json!({
                "addresses": [ip], "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": "ns", "uid": format!("u-{pod}")}
            })).collect::<Vec<_>>()
        }))
        .expect("slice")
    }

    fn defaults() -> SpecDefaults {
        SpecDefaults {
            project_id: "p".into(),
            subnet_id: "svc-sub".into(),
            provider: Some("ovn".into()),
            public_ips: true,
            ..Default::default()
        }
    }

    fn balanced(p: Plan) -> (KuryrLoadBalancerSpec, Vec<String>) {
        match p {
            Plan::Balance { spec, notes } => (*spec, notes),
            Plan::Skip(why) => panic!("skipped: {why}"),
            Plan::Unserved(why) => panic!("unserved: {why}"),
        }
    }

    #[test]
    fn the_vip_goes_on_the_service_subnet_of_the_cluster_ips_family() {
        let v6 = svc(json!({"spec": {"clusterIP": "fd00:10:96::0a", "clusterIPs": ["fd00:10:96::0a"], "ipFamilies": ["IPv6"]}}));
        let mut s4 = slice("web-a", "http", 8080, &[("10.244.0.5", Some(true), "p1")]);
        s4.address_type = "IPv4".into();
        let mut s6 = slice("web-b", "http", 8080, &[("fd00:10:244::5", Some(true), "p1")]);
        s6.address_type = "IPv6".into();
        // One service subnet (upstream's single-stack setup): it serves any ClusterIP.
        let (spec, _) = balanced(plan(&v6, &[&s4, &s6], &defaults()));
        assert_eq!(spec.subnet_id.as_deref(), Some("svc-sub"));
        // One per family: the IPv6 one, and only the IPv6 slice's endpoints.
        let mut d = defaults();
        d.family_subnets = [("IPv4", "svc-sub".to_string()), ("IPv6", "svc-sub6".to_string())].into();
        let (spec, _) = balanced(plan(&v6, &[&s4, &s6], &d));
        assert_eq!((spec.ip.as_deref(), spec.subnet_id.as_deref()), (Some("fd00:10:96::a"), Some("svc-sub6")));
        let text = serde_json::to_string(&spec.endpoint_slices).expect("json");
        assert!(text.contains("fd00:10:244::5") && !text.contains("10.244.0.5"), "{text}");
        let (spec, _) = balanced(plan(&svc(json!({})), &[&s4, &s6], &d));
        assert_eq!(spec.subnet_id.as_deref(), Some("svc-sub"));
        // Dual-stack: one load balancer, the second ClusterIP an additional VIP on its family's
        // subnet, members of both families.
        let ds = svc(json!({"spec": {"clusterIPs": ["10.96.0.20", "fd00:10:96::0a"], "ipFamilies": ["IPv4", "IPv6"]}}));
        let (spec, notes) = balanced(plan(&ds, &[&s4, &s6], &d));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(spec.ip.as_deref(), Some("10.96.0.20"));
        assert_eq!(spec.additional_vips, [KuryrLoadBalancerVip { ip: "fd00:10:96::a".into(), subnet_id: "svc-sub6".into() }]);
        let text = serde_json::to_string(&spec.endpoint_slices).expect("json");
        assert!(text.contains("fd00:10:244::5") && text.contains("10.244.0.5"), "{text}");
        let members: Vec<String> = listeners("ns/web", &spec).iter().flat_map(|l| l.members.iter().map(|m| m.address.clone())).collect();
        assert_eq!(members.len(), 2, "{members:?}");
        // Dual-stack subnets configured without an IPv6 one: an Event, no load balancer.
        d.family_subnets.remove("IPv6");
        match plan(&v6, &[], &d) {
            Plan::Unserved(why) => assert!(why.contains("no IPv6 service subnet"), "{why}"),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn skips_what_needs_no_load_balancer() {
        let d = defaults();
        assert_eq!(
            plan(&svc(json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}})), &[], &d),
            Plan::Skip("headless (served by DNS)")
        );
        assert!(matches!(plan(&svc(json!({"spec": {"type": "ExternalName", "externalName": "x.example"}})), &[], &d), Plan::Skip(_)));
        assert!(matches!(
            plan(&svc(json!({"spec": {"loadBalancerClass": "other.io/lb", "type": "LoadBalancer"}})), &[], &d),
            Plan::Skip(_)
        ));
        assert!(matches!(plan(&svc(json!({"metadata": {"annotations": {LEGACY_LBAAS_SPEC: "{}"}}})), &[], &d), Plan::Skip(_)));
        assert!(matches!(plan(&svc(json!({"spec": {"ports": []}})), &[], &d), Plan::Skip("no ports")));
    }

    #[test]
    fn spec_has_upstream_fields_and_only_ready_endpoints_of_this_service() {
        let s = svc(json!({"metadata": {"annotations": {TIMEOUT_CLIENT_DATA: "70000"}}}));
        let a = slice(
            "web-a",
            "http",
            8080,
            &[("10.244.0.5", Some(true), "w1"), ("10.244.0.6", Some(false), "w2"), ("10.244.0.7", None, "w3")],
        );
        let mut other = slice("db-a", "http", 5432, &[("10.244.0.9", Some(true), "db")]);
        other.metadata.labels.as_mut().map(|l| l.insert(SERVICE_NAME_LABEL.into(), "db".into()));
        let (spec, notes) = balanced(plan(&s, &[&a, &other], &defaults()));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(spec.ip.as_deref(), Some("10.96.0.20"));
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.subnet_id.as_deref(), Some("svc-sub"));
        assert_eq!(spec.provider.as_deref(), Some("ovn"));
        assert_eq!(spec.timeout_client_data, Some(70000));
        assert_eq!(spec.timeout_member_data, None);
        assert_eq!(spec.ports[0].target_port.as_deref(), Some("http"));
        assert_eq!(spec.endpoint_slices.len(), 1);
        let addrs: Vec<&str> =
            spec.endpoint_slices[0]["endpoints"].as_array().unwrap().iter().map(|e| e["addresses"][0].as_str().unwrap()).collect();
        assert_eq!(addrs, ["10.244.0.5", "10.244.0.7"], "the unready 10.244.0.6 and the other Service's endpoint are left out");
    }

    #[test]
    fn nodeport_dual_stack_and_source_ranges_are_noted() {
        let s = svc(json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}}));
        let (_, notes) = balanced(plan(&s, &[], &defaults()));
        assert!(notes[0].contains("30080"), "{notes:?}");
        let s = svc(json!({"spec": {"clusterIPs": ["10.96.0.20", "fd00::20"]}}));
        let (spec, notes) = balanced(plan(&s, &[], &defaults()));
        assert_eq!(spec.ip.as_deref(), Some("10.96.0.20"));
        assert!(notes[0].contains("fd00::20"), "{notes:?}");
        let s = svc(
            json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "loadBalancerSourceRanges": ["1.2.3.0/24"], "loadBalancerIP": "172.24.4.50"}}),
        );
        let (spec, notes) = balanced(plan(&s, &[], &defaults()));
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.lb_ip.as_deref(), Some("172.24.4.50"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("loadBalancerSourceRanges"));
    }

    #[test]
    fn listeners_per_protocol_and_port_with_members_resolved_per_slice() {
        let s = svc(json!({"spec": {"ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353}]}}));
        // Two slices: pods whose named port "http" is 8080, and one where it is 9090.
        let mut a = slice("web-a", "http", 8080, &[("10.244.0.5", Some(true), "w1"), ("10.244.0.6", Some(true), "w2")]);
        a.ports.as_mut().unwrap().push(serde_json::from_value(json!({"name": "dns", "port": 5353, "protocol": "UDP"})).unwrap());
        let b = slice("web-b", "http", 9090, &[("10.244.0.7", Some(true), "w3")]);
        let (spec, _) = balanced(plan(&s, &[&a, &b], &defaults()));
        let ls = listeners("ns/web", &spec);
        let keys: Vec<(&str, u16)> = ls.iter().map(|l| (l.protocol.as_str(), l.port)).collect();
        assert_eq!(keys, [("TCP", 53), ("TCP", 80), ("UDP", 53)]);
        assert_eq!(ls[1].name, "ns/web:TCP:80");
        let http: Vec<(&str, u16)> = ls[1].members.iter().map(|m| (m.address.as_str(), m.port)).collect();
        assert_eq!(http, [("10.244.0.5", 8080), ("10.244.0.6", 8080), ("10.244.0.7", 9090)]);
        assert_eq!(ls[1].members.iter().next().unwrap().name, "ns/w1:8080");
        let udp: Vec<(&str, u16)> = ls[2].members.iter().map(|m| (m.address.as_str(), m.port)).collect();
        assert_eq!(udp, [("10.244.0.5", 5353), ("10.244.0.6", 5353)]);
        assert!(ls[0].members.is_empty(), "no slice has a dns-tcp port");
    }

    /// An unnamed Service port is `"name": null` in the spec's ports and has no name in its
    /// slices' ports, as upstream writes them (upstream matches the two by name).
    #[test]
    fn unnamed_ports_are_written_as_upstream_writes_them() {
        let s = svc(json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}));
        let a = slice("web-a", "", 8080, &[("10.244.0.5", Some(true), "w1")]);
        let (spec, _) = balanced(plan(&s, &[&a], &defaults()));
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["ports"][0]["name"], Value::Null);
        assert!(json["ports"][0].as_object().is_some_and(|p| p.contains_key("name")), "{json}");
        assert_eq!(json["endpointSlices"][0]["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
        assert_eq!(listeners("ns/web", &spec)[0].members.len(), 1, "kuryr-rs still matches them");
    }

    /// An endpoint without a Pod (the API server behind default/kubernetes) is named after the
    /// Service, as upstream names it and its KuryrLoadBalancer handler parses it
    /// (`<namespace>/<name>:<port>`, split on '/').
    #[test]
    fn members_without_a_pod_have_upstreams_name() {
        let s = svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}}));
        let mut a = slice("web-a", "http", 6443, &[("10.244.2.174", Some(true), "x")]);
        a.endpoints[0].target_ref = None;
        let (spec, _) = balanced(plan(&s, &[&a], &defaults()));
        let ls = listeners("ns/web", &spec);
        let names: Vec<&str> = ls[0].members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ns/web:6443"]);
    }

    #[test]
    fn client_ip_affinity_with_its_timeout() {
        let (spec, _) = balanced(plan(&svc(json!({"spec": {"sessionAffinity": "ClientIP"}})), &[], &defaults()));
        assert_eq!(spec.session_affinity_timeout, Some(10800), "Kubernetes' default timeout");
        let s = svc(json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}));
        assert_eq!(balanced(plan(&s, &[], &defaults())).0.session_affinity_timeout, Some(60));
        assert_eq!(balanced(plan(&svc(json!({})), &[], &defaults())).0.session_affinity_timeout, None);
    }

    fn lb_svc(annotations: Value) -> Service {
        svc(json!({"metadata": {"annotations": annotations},
                   "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                      {"name": "sig", "port": 3868, "protocol": "SCTP"}]}}))
    }

    #[test]
    fn cloud_provider_annotations_on_the_ovn_provider() {
        let s = lb_svc(json!({
            cpo::FLOATING_NETWORK_ID: "ext-2", cpo::KEEP_FLOATINGIP: "true",
            cpo::ENABLE_HEALTH_MONITOR: "true", cpo::HEALTH_MONITOR_DELAY: "7", cpo::HEALTH_MONITOR_MAX_RETRIES_DOWN: "2",
            cpo::FLAVOR_ID: "f-1", cpo::PROXY_PROTOCOL: "true", cpo::SOURCE_RANGES: "192.0.2.0/24, 198.51.100.7/32",
            "loadbalancer.openstack.org/x-forwarded-for": "true", "example.com/other": "x"
        }));
        let (spec, notes) = balanced(plan(&s, &[], &defaults()));
        assert_eq!(spec.floating_network_id.as_deref(), Some("ext-2"));
        assert!(spec.keep_floating_ip);
        assert_eq!(spec.health_monitor, Some(KuryrLoadBalancerHealthMonitor { delay: 7, timeout: 3, max_retries: 1, max_retries_down: 2 }));
        assert_eq!(spec.flavor_id, None, "ovn has no flavors");
        assert_eq!(spec.proxy_protocol, None, "ovn cannot speak PROXY");
        assert!(spec.allowed_cidrs.is_empty(), "ovn has no allowed_cidrs");
        let want = [
            "no health monitor for SCTP",
            "no flavors; f-1",
            "PROXY protocol",
            "loadBalancerSourceRanges are not enforced",
            "x-forwarded-for",
        ];
        for w in want {
            assert!(notes.iter().any(|n| n.contains(w)), "no note about {w:?}: {notes:?}");
        }
        assert_eq!(notes.len(), want.len(), "{notes:?}");
        assert!(!notes.iter().any(|n| n.contains("example.com/other")), "only loadbalancer.openstack.org/* are ours to judge");
    }

    #[test]
    fn cloud_provider_annotations_on_a_provider_that_takes_them() {
        let d = SpecDefaults { provider: Some("amphora".into()), public_ips: false, ..defaults() };
        let s = lb_svc(json!({cpo::FLAVOR_ID: "f-1", cpo::PROXY_PROTOCOL: "v2", cpo::ENABLE_HEALTH_MONITOR: "yes",
                              cpo::HEALTH_MONITOR_TIMEOUT: "9", cpo::HEALTH_MONITOR_MAX_RETRIES: "11"}));
        let mut s2 = s.clone();
        s2.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["198.51.100.0/24".into(), "192.0.2.0/24".into(), "bogus".into()]);
        let (spec, notes) = balanced(plan(&s2, &[], &d));
        assert_eq!(spec.flavor_id.as_deref(), Some("f-1"));
        assert_eq!(spec.proxy_protocol.as_deref(), Some("PROXYV2"));
        assert_eq!(spec.allowed_cidrs, ["192.0.2.0/24", "198.51.100.0/24"], "sorted, the bad one left out");
        assert_eq!(spec.health_monitor, Some(KuryrLoadBalancerHealthMonitor { delay: 5, timeout: 5, max_retries: 1, max_retries_down: 3 }));
        for w in ["bogus", "longer than the delay", "max-retries: \"11\"", "no floating IP"] {
            assert!(notes.iter().any(|n| n.contains(w)), "no note about {w:?}: {notes:?}");
        }
        assert_eq!(notes.len(), 4, "{notes:?}");
        // The Service's own field wins over the annotation; a ClusterIP Service restricts nothing.
        let mut c = s2.clone();
        c.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(balanced(plan(&c, &[], &d)).0.allowed_cidrs.is_empty());
        assert_eq!(balanced(plan(&c, &[], &d)).0.floating_network_id, None);
    }

    #[test]
    fn monitor_types_follow_the_pool_protocol() {
        let ovn = ProviderCaps::of(Some("ovn"));
        assert_eq!(ovn.monitor_type("TCP"), Some("TCP"));
        assert_eq!(ovn.monitor_type("udp"), Some("UDP-CONNECT"));
        assert_eq!(ovn.monitor_type("SCTP"), None);
        assert_eq!(ProviderCaps::of(None).monitor_type("SCTP"), Some("SCTP"));
    }

    #[test]
    fn normalizes_addresses() {
        assert_eq!(normalize_ip("010.096.000.001"), "10.96.0.1");
        assert_eq!(normalize_ip("fd00:0::1"), "fd00::1");
        assert_eq!(normalize_ip("10.0.0.1"), "10.0.0.1");
    }
}
