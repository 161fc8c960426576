//! Egress through Service VIPs. OVN applies a port's egress rules before its load balancer
//! translates a ClusterIP to a backend, so the rules see the ClusterIP and the Service port, not
//! the pod and its port. An egress rule allowing some pods on some ports therefore also allows
//! the ClusterIPs of the Services those pods back, on the Service ports whose `targetPort` is
//! one of those ports (upstream kuryr did the same with the policy's own port; that misses every
//! Service whose port differs from its target port). A Service backs a peer when:
//!
//! * it has a selector: a pod of the peer in the Service's namespace matches it;
//! * it has none (hand-written EndpointSlices, the `kubernetes` Service): one of its endpoint
//!   addresses is a pod of the peer, or lies in the peer's ipBlock.

use super::{push_rules, Dir, Family, PodInfo, PortSpec, Protocol, Remote, RuleSpec};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// EndpointSlice label naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the model needs of a Service with ClusterIPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    /// `None`: no selector (its endpoints are written by hand or by the apiserver).
    pub selector: Option<BTreeMap<String, String>>,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Endpoint addresses of a Service without selector (from its EndpointSlices).
    pub endpoints: Vec<IpAddr>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
    pub target: Target,
}

/// A Service port's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Number(u16),
    Name(String),
}

impl ServiceInfo {
    /// From the API objects: `None` for Services without ClusterIPs (headless, ExternalName).
    /// `slices` may hold any Service's slices; only this one's are read.
    pub fn from_service(svc: &Service, slices: &[&EndpointSlice]) -> Option<ServiceInfo> {
        let spec = svc.spec.as_ref()?;
        let ips: Vec<IpAddr> = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.as_ref()).filter_map(|ip| ip.parse().ok()).collect();
        let mut cluster_ips = Vec::new();
        for ip in ips {
            if !cluster_ips.contains(&ip) {
                cluster_ips.push(ip);
            }
        }
        if cluster_ips.is_empty() || spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let (namespace, name) = (svc.namespace()?, svc.name_any());
        let selector = spec.selector.clone().filter(|s| !s.is_empty());
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let target = match &p.target_port {
                    None => Target::Number(port),
                    Some(IntOrString::Int(n)) => Target::Number(u16::try_from(*n).ok()?),
                    Some(IntOrString::String(s)) => s.parse::<u16>().map(Target::Number).unwrap_or_else(|_| Target::Name(s.clone())),
                };
                Some(ServicePort { protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?, port, target })
            })
            .collect();
        let endpoints = if selector.is_some() {
            Vec::new()
        } else {
            slices
                .iter()
                .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()) && s.labels().get(SERVICE_NAME_LABEL) == Some(&name))
                .flat_map(|s| s.endpoints.iter())
                .flat_map(|e| e.addresses.iter())
                .filter_map(|a| a.parse().ok())
                .collect::<BTreeSet<IpAddr>>()
                .into_iter()
                .collect()
        };
        Some(ServiceInfo { namespace, name, selector, cluster_ips, ports, endpoints })
    }

    /// The pods of `pods` this Service sends to.
    fn backends<'p>(&self, pods: &[&'p PodInfo]) -> Vec<&'p PodInfo> {
        pods.iter()
            .copied()
            .filter(|p| match &self.selector {
                Some(sel) => p.namespace == self.namespace && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)),
                None => p.ips.iter().any(|ip| self.endpoints.contains(ip)),
            })
            .collect()
    }

    /// The ports of this Service whose target is allowed by `spec` on `backends`.
    fn ports_allowed(&self, spec: &PortSpec, backends: &[&PodInfo]) -> Vec<&ServicePort> {
        let resolve = |sp: &ServicePort| -> Vec<u16> {
            match &sp.target {
                Target::Number(n) => vec![*n],
                Target::Name(name) => backends.iter().filter_map(|p| p.named_port(name, sp.protocol)).collect(),
            }
        };
        self.ports
            .iter()
            .filter(|sp| match spec {
                PortSpec::All => true,
                PortSpec::Range(proto, range) => {
                    sp.protocol == *proto && range.is_none_or(|(lo, hi)| resolve(sp).iter().any(|t| (lo..=hi).contains(t)))
                }
                PortSpec::Named(proto, name) => {
                    sp.protocol == *proto
                        && (sp.target == Target::Name(name.clone())
                            || resolve(sp).iter().any(|t| backends.iter().any(|p| p.named_port(name, *proto) == Some(*t))))
                }
            })
            .collect()
    }
}

/// Who a peer is, for finding the Services behind it.
pub(super) enum Behind<'a, 'p> {
    Pods(&'a [&'p PodInfo]),
    /// An ipBlock (after `except`), and every pod of the cluster (a Service with a selector is
    /// behind it when one of its backends' addresses is in the block).
    Cidrs(&'a [IpNet], &'a [PodInfo]),
}

/// The egress rules towards the ClusterIPs of the Services behind a peer, for one port spec of
/// the rule: one rule per (ClusterIP, Service port), each address as a host prefix.
pub(super) fn vip_rules(out: &mut BTreeSet<RuleSpec>, services: &[ServiceInfo], peer: &Behind<'_, '_>, spec: &PortSpec) {
    let family = |ip: &IpAddr| if ip.is_ipv4() { Family::V4 } else { Family::V6 };
    for svc in services {
        // The families whose ClusterIP leads into the peer: a ClusterIP sends to the backends'
        // addresses of its own family, so an IPv6 ipBlock holding a dual-stack pod's IPv6
        // address allows the Service's IPv6 ClusterIP, not its IPv4 one.
        let (backends, families): (Vec<&PodInfo>, BTreeSet<Family>) = match peer {
            Behind::Pods(pods) => (svc.backends(pods), [Family::V4, Family::V6].into()),
            Behind::Cidrs(cidrs, all) => {
                let everyone: Vec<&PodInfo> = all.iter().collect();
                let in_block = |ip: &IpAddr| cidrs.iter().any(|c| c.contains(ip));
                let backends: Vec<&PodInfo> = svc.backends(&everyone).into_iter().filter(|p| p.ips.iter().any(in_block)).collect();
                let families: BTreeSet<Family> =
                    backends.iter().flat_map(|p| p.ips.iter()).chain(&svc.endpoints).filter(|ip| in_block(ip)).map(family).collect();
                if families.is_empty() {
                    continue;
                }
                (backends, families)
            }
        };
        if backends.is_empty() && matches!(peer, Behind::Pods(_)) {
            continue;
        }
        for sp in svc.ports_allowed(spec, &backends) {
            for ip in svc.cluster_ips.iter().filter(|ip| families.contains(&family(ip))) {
                push_rules(out, Dir::Egress, &[family(ip)], Some(sp.protocol), Some((sp.port, sp.port)), Remote::Prefix(IpNet::from(*ip)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ContainerPort;
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> ServiceInfo {
        let s: Service = serde_json::from_value(v).expect("service");
        ServiceInfo::from_service(&s, &[]).expect("has a ClusterIP")
    }

    fn pod(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)], ports: &[(&str, u16, Protocol)]) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ips: vec![ip.parse().expect("ip")],
            ports: ports.iter().map(|(n, p, proto)| ContainerPort { name: Some(n.to_string()), port: *p, protocol: *proto }).collect(),
        }
    }

    fn vips(out: &BTreeSet<RuleSpec>) -> Vec<String> {
        out.iter()
            .map(|r| {
                let Remote::Prefix(n) = &r.remote else { panic!("{r:?}") };
                format!("{n} {:?} {:?}", r.protocol, r.ports)
            })
            .collect()
    }

    #[test]
    fn clusterips_of_services_backed_by_the_peer_on_the_service_port_of_the_allowed_target() {
        let dns = svc(json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                               {"name": "metrics", "port": 9153, "protocol": "TCP"}]}}));
        let web = svc(json!({"metadata": {"name": "web", "namespace": "a"},
            "spec": {"clusterIPs": ["10.96.0.20", "fd00:10:96::20"], "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": "http"}]}}));
        let coredns = pod("kube-system", "coredns", "10.244.0.5", &[("k8s-app", "kube-dns")], &[("dns", 53, Protocol::Udp)]);
        let w = pod("a", "w", "10.244.0.6", &[("app", "web")], &[("http", 8080, Protocol::Tcp)]);
        let other = pod("b", "w", "10.244.0.7", &[("app", "web")], &[("http", 8080, Protocol::Tcp)]);
        let services = [dns, web];
        let mut out = BTreeSet::new();
        // DNS peers on UDP and TCP 53: the DNS VIP on both, not the metrics port, not web.
        for spec in [PortSpec::Range(Protocol::Udp, Some((53, 53))), PortSpec::Range(Protocol::Tcp, Some((53, 53)))] {
            vip_rules(&mut out, &services, &Behind::Pods(&[&coredns]), &spec);
        }
        assert_eq!(vips(&out), ["10.96.0.10/32 Some(Tcp) Some((53, 53))", "10.96.0.10/32 Some(Udp) Some((53, 53))"]);
        // A named target resolved on the backends: port 8080 allows Service port 80, both families.
        let mut out = BTreeSet::new();
        vip_rules(&mut out, &services, &Behind::Pods(&[&w]), &PortSpec::Range(Protocol::Tcp, Some((8080, 8080))));
        assert_eq!(vips(&out), ["10.96.0.20/32 Some(Tcp) Some((80, 80))", "fd00:10:96::20/128 Some(Tcp) Some((80, 80))"]);
        let mut out = BTreeSet::new();
        vip_rules(&mut out, &services, &Behind::Pods(&[&w]), &PortSpec::Named(Protocol::Tcp, "http".into()));
        assert_eq!(out.len(), 2);
        // Another port, or pods in another namespace than the Service's: nothing.
        let mut out = BTreeSet::new();
        vip_rules(&mut out, &services, &Behind::Pods(&[&w]), &PortSpec::Range(Protocol::Tcp, Some((9090, 9090))));
        vip_rules(&mut out, &services, &Behind::Pods(&[&other]), &PortSpec::All);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn an_ipblock_allows_the_clusterips_of_the_family_it_holds_a_backend_address_of() {
        let web = svc(json!({"metadata": {"name": "web", "namespace": "a"},
            "spec": {"clusterIPs": ["10.96.0.20", "fd00:10:96::20"], "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080}]}}));
        let mut w = pod("a", "w", "10.244.0.6", &[("app", "web")], &[("http", 8080, Protocol::Tcp)]);
        w.ips.push("fd00:10:244::6".parse().expect("ip"));
        let all = [w];
        let tcp = PortSpec::Range(Protocol::Tcp, Some((8080, 8080)));
        let v6: Vec<IpNet> = vec!["fd00:10:244::/64".parse().expect("net")];
        let mut out = BTreeSet::new();
        vip_rules(&mut out, std::slice::from_ref(&web), &Behind::Cidrs(&v6, &all), &tcp);
        assert_eq!(vips(&out), ["fd00:10:96::20/128 Some(Tcp) Some((80, 80))"], "not the IPv4 ClusterIP: the block holds no IPv4 backend");
        let v4: Vec<IpNet> = vec!["10.244.0.0/16".parse().expect("net")];
        let mut out = BTreeSet::new();
        vip_rules(&mut out, std::slice::from_ref(&web), &Behind::Cidrs(&v4, &all), &tcp);
        assert_eq!(vips(&out), ["10.96.0.20/32 Some(Tcp) Some((80, 80))"]);
        // The IPv6 address excepted out of the block: nothing.
        let rest: Vec<IpNet> =
            super::super::cidr_minus("fd00:10:244::/64".parse().expect("net"), &["fd00:10:244::6/128".parse().expect("net")]);
        let mut out = BTreeSet::new();
        vip_rules(&mut out, std::slice::from_ref(&web), &Behind::Cidrs(&rest, &all), &tcp);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_selectorless_service_is_behind_an_ipblock_holding_its_endpoints() {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}))
        .expect("svc");
        let slice: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.2.197"]}], "ports": [{"name": "https", "port": 6443}]}))
        .expect("slice");
        let api = ServiceInfo::from_service(&s, &[&slice]).expect("api");
        assert_eq!(api.endpoints, ["10.244.2.197".parse::<IpAddr>().expect("ip")]);
        let block: Vec<IpNet> = vec!["10.244.2.197/32".parse().expect("net")];
        let mut out = BTreeSet::new();
        vip_rules(&mut out, std::slice::from_ref(&api), &Behind::Cidrs(&block, &[]), &PortSpec::Range(Protocol::Tcp, Some((6443, 6443))));
        assert_eq!(vips(&out), ["10.96.0.1/32 Some(Tcp) Some((443, 443))"]);
        let elsewhere: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut out = BTreeSet::new();
        vip_rules(&mut out, std::slice::from_ref(&api), &Behind::Cidrs(&elsewhere[..0], &[]), &PortSpec::All);
        assert!(out.is_empty());
        // Headless: nothing to allow.
        let headless: Service =
            serde_json::from_value(json!({"metadata": {"name": "h", "namespace": "a"}, "spec": {"clusterIP": "None"}})).expect("svc");
        assert_eq!(ServiceInfo::from_service(&headless, &[]), None);
    }
}
