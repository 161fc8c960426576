//! What a pod asks of the plugins chained after kuryr-cni (hostPort → `portmap`, the
//! `kubernetes.io/{ingress,egress}-bandwidth` annotations → `bandwidth`), checked against the
//! chain the daemon wrote into the conflist. The container runtime hands those requests only
//! to plugins declaring the capability, so without the plugin they would be dropped in
//! silence; the daemon says so in a Warning Event on the pod instead.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};

/// Annotations the `bandwidth` capability is filled from (kubelet's dockershim/CRI names).
pub const BANDWIDTH_ANNOTATIONS: [&str; 2] = [
    "kubernetes.io/ingress-bandwidth",
    "kubernetes.io/egress-bandwidth",
];

/// Event reasons.
pub mod reasons {
    /// The pod asks for a hostPort, the conflist chains no `portmap`.
    pub const HOST_PORT_DISABLED: &str = "CNIHostPortDisabled";
    /// The pod asks for traffic shaping, the conflist chains no `bandwidth`.
    pub const BANDWIDTH_DISABLED: &str = "CNIBandwidthDisabled";
    /// The pod asks for egress shaping, which cannot act on this node's datapath.
    pub const EGRESS_SHAPING_INEFFECTIVE: &str = "CNIEgressShapingIneffective";
}

/// What the chain does for pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainCaps {
    pub port_mappings: bool,
    pub bandwidth: bool,
    /// `bandwidth`'s egress limit acts. It shapes what the pod sends at the kernel's ingress
    /// hook of the host-side veth; Open vSwitch's userspace (netdev) datapath reads the pod's
    /// packets from a packet socket before that hook, so there the limit never bites
    /// (measured: 1.1 Gbit/s sent under a 10 Mbit/s limit). The kernel datapath reads after it.
    pub egress_shaping: bool,
}

impl ChainCaps {
    /// The capabilities of a conflist chain (`--chain`).
    pub fn of(chain: &[String]) -> Self {
        ChainCaps {
            port_mappings: chain.iter().any(|p| p == "portmap"),
            bandwidth: chain.iter().any(|p| p == "bandwidth"),
            egress_shaping: true,
        }
    }
}

/// The hostPorts a pod asks for, as `PORT/PROTO` (with `on HOSTIP` when given).
pub fn host_ports(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|hp| *hp > 0)?;
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            Some(match p.host_ip.as_deref().filter(|i| !i.is_empty()) {
                Some(ip) => format!("{hp}/{proto} on {ip}"),
                None => format!("{hp}/{proto}"),
            })
        })
        .collect()
}

/// The bandwidth annotations a pod carries, as `name=value`.
pub fn bandwidth_requests(pod: &Pod) -> Vec<String> {
    let Some(a) = &pod.metadata.annotations else {
        return Vec::new();
    };
    BANDWIDTH_ANNOTATIONS
        .iter()
        .filter_map(|k| a.get(*k).map(|v| format!("{k}={v}")))
        .collect()
}

/// The warnings for a pod: (reason, message), empty when the chain serves it all.
pub fn unserved(pod: &Pod, caps: ChainCaps) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let ports = host_ports(pod);
    if !caps.port_mappings && !ports.is_empty() {
        out.push((
            reasons::HOST_PORT_DISABLED,
            format!(
                "hostPort {} not mapped: the portmap plugin is turned off on this node \
                 (kuryr-daemon --chain without portmap)",
                ports.join(", ")
            ),
        ));
    }
    let bw = bandwidth_requests(pod);
    if !caps.bandwidth && !bw.is_empty() {
        out.push((
            reasons::BANDWIDTH_DISABLED,
            format!(
                "{} not applied: the bandwidth plugin is turned off on this node \
                 (kuryr-daemon --chain without bandwidth)",
                bw.join(", ")
            ),
        ));
    }
    let egress = bw.iter().find(|r| r.starts_with(BANDWIDTH_ANNOTATIONS[1]));
    if let Some(egress) = egress.filter(|_| caps.bandwidth && !caps.egress_shaping) {
        out.push((
            reasons::EGRESS_SHAPING_INEFFECTIVE,
            format!(
                "{egress} has no effect on this node: Open vSwitch's userspace datapath \
                 (datapath_type netdev) takes the pod's packets before the kernel hook the \
                 bandwidth plugin limits them at; ingress shaping works"
            ),
        ));
    }
    out
}

/// Trims a watched Pod to what [`unserved`] reads: containers' hostPorts and the bandwidth
/// annotations (the daemon's pod store keeps identities only, see `watch::trim_pod`).
pub fn trim_spec(spec: Option<PodSpec>) -> Option<PodSpec> {
    let keep = |cs: Vec<Container>| -> Vec<Container> {
        cs.into_iter()
            .filter_map(|c| {
                let ports: Vec<ContainerPort> = c
                    .ports
                    .into_iter()
                    .flatten()
                    .filter(|p| p.host_port.is_some_and(|hp| hp > 0))
                    .collect();
                (!ports.is_empty()).then(|| Container {
                    name: c.name,
                    ports: Some(ports),
                    ..Default::default()
                })
            })
            .collect()
    };
    let spec = spec?;
    let containers = keep(spec.containers);
    let init = keep(spec.init_containers.unwrap_or_default());
    (!containers.is_empty() || !init.is_empty()).then(|| PodSpec {
        containers,
        init_containers: (!init.is_empty()).then_some(init),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn shaped_web() -> Pod {
        pod(json!({
            "metadata": {"name": "web", "namespace": "ns", "annotations": {
                "kubernetes.io/ingress-bandwidth": "10M", "other": "x"}},
            "spec": {"containers": [
                {"name": "web", "image": "busybox", "ports": [
                    {"containerPort": 8080, "hostPort": 54401, "hostIP": "127.0.0.1"},
                    {"containerPort": 8081, "hostPort": 54402, "protocol": "UDP"},
                    {"containerPort": 9000}]},
                {"name": "side", "image": "busybox"}]}
        }))
    }

    #[test]
    fn a_pod_asking_for_a_turned_off_plugin_gets_a_warning() {
        let p = shaped_web();
        let all = ChainCaps::of(&["portmap".into(), "bandwidth".into()]);
        assert!(unserved(&p, all).is_empty());
        let none = ChainCaps::of(&[]);
        let w = unserved(&p, none);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, reasons::HOST_PORT_DISABLED);
        assert!(
            w[0].1.contains("54401/TCP on 127.0.0.1, 54402/UDP"),
            "{}",
            w[0].1
        );
        assert_eq!(w[1].0, reasons::BANDWIDTH_DISABLED);
        assert!(
            w[1].1.contains("kubernetes.io/ingress-bandwidth=10M"),
            "{}",
            w[1].1
        );
        let only_bw = unserved(&p, ChainCaps::of(&["portmap".into()]));
        assert_eq!(
            only_bw.iter().map(|w| w.0).collect::<Vec<_>>(),
            [reasons::BANDWIDTH_DISABLED]
        );
        // Egress shaping on a userspace datapath: said, ingress shaping is not.
        let userspace = ChainCaps {
            egress_shaping: false,
            ..all
        };
        assert!(unserved(&p, userspace).is_empty());
        let mut egress = p.clone();
        egress
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BANDWIDTH_ANNOTATIONS[1].into(), "5M".into());
        assert!(unserved(&egress, all).is_empty());
        let w = unserved(&egress, userspace);
        assert_eq!(
            w.iter().map(|w| w.0).collect::<Vec<_>>(),
            [reasons::EGRESS_SHAPING_INEFFECTIVE]
        );
        assert!(
            w[0].1.contains("kubernetes.io/egress-bandwidth=5M"),
            "{}",
            w[0].1
        );
        // A pod asking for neither never warns.
        let plain = pod(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}));
        assert!(unserved(&plain, none).is_empty());
    }

    #[test]
    fn the_trimmed_spec_keeps_what_the_check_reads() {
        let p = shaped_web();
        let mut t = p.clone();
        t.spec = trim_spec(t.spec.take());
        let spec = t.spec.as_ref().expect("spec kept");
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].ports.as_ref().map(Vec::len), Some(2));
        assert!(spec.containers[0].image.is_none());
        assert_eq!(
            unserved(&t, ChainCaps::of(&[])),
            unserved(&p, ChainCaps::of(&[]))
        );
        let plain = pod(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}));
        assert_eq!(trim_spec(plain.spec), None);
    }
}
