//! Neutron port (+ its network and subnets) → the typed [`Vif`] the daemon wires. Pure: no I/O,
//! so every binding case is unit-tested from JSON.

use kuryr_core::vif::{host_ifname, Binding, Vif, VifIp, VifRoute};
use kuryr_openstack::neutron::{Network, Port, Subnet};
use serde_json::Value;
use std::net::IpAddr;

/// Port-independent inputs of the translation (from `[neutron_defaults]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifDefaults {
    /// The bridge when `binding:vif_details.bridge_name` is absent.
    pub ovs_bridge: String,
    /// 0 = the network's MTU.
    pub network_device_mtu: u32,
}

/// Why a port cannot be a VIF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VifBuildError {
    /// Neutron could not bind the port (`binding_failed`), or has not bound it (`unbound`).
    #[error("binding:vif_type = {0:?}")]
    Binding(String),
    /// A binding type the daemon cannot wire (e.g. `vhostuser`).
    #[error("binding:vif_type = {0:?} is not supported by kuryr-rs")]
    Unsupported(String),
    /// The port data is unusable.
    #[error("{0}")]
    Invalid(String),
}

impl VifBuildError {
    /// A binding problem (retrying with a fresh port may help), rather than bad data.
    pub fn is_binding(&self) -> bool {
        matches!(self, VifBuildError::Binding(_))
    }
}

/// `binding:vif_type` values that mean "Neutron did not bind this port".
pub fn is_unbound(vif_type: &str) -> bool {
    matches!(vif_type, "" | "unbound" | "binding_failed")
}

fn details_str<'a>(details: &'a Value, key: &str) -> Option<&'a str> {
    details.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn details_bool(details: &Value, key: &str) -> bool {
    match details.get(key) {
        Some(Value::Bool(b)) => *b,
        // Some drivers report booleans as strings.
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// How the daemon attaches the port, from `binding:vif_type` / `binding:vif_details`.
pub fn binding_of(port: &Port, defaults: &VifDefaults) -> Result<Binding, VifBuildError> {
    let details = &port.binding_vif_details;
    match port.binding_vif_type.as_str() {
        "ovs" => {
            let bridge = details_str(details, "bridge_name").unwrap_or(&defaults.ovs_bridge).to_string();
            if details_bool(details, "ovs_hybrid_plug") {
                let short: String = port.id.chars().take(11).collect();
                Ok(Binding::Hybrid { bridge, linux_bridge: format!("qbr{short}") })
            } else {
                Ok(Binding::Ovs { bridge })
            }
        }
        t if is_unbound(t) => Err(VifBuildError::Binding(t.to_string())),
        other => Err(VifBuildError::Unsupported(other.to_string())),
    }
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, VifBuildError> {
    s.parse().map_err(|_| VifBuildError::Invalid(format!("{what} {s:?} is not an IP address")))
}

/// Builds the VIF. `subnets` must hold the subnet of every fixed IP of the port.
pub fn build_vif(port: &Port, network: &Network, subnets: &[Subnet], defaults: &VifDefaults) -> Result<Vif, VifBuildError> {
    build_vif_with(port, network, subnets, defaults, binding_of(port, defaults)?)
}

/// Builds the VIF with a binding the controller chose (nested-vlan: the subport's VLAN id on the
/// node VM's NIC, whatever `binding:vif_type` Neutron reports for the subport).
pub fn build_vif_with(
    port: &Port,
    network: &Network,
    subnets: &[Subnet],
    defaults: &VifDefaults,
    binding: Binding,
) -> Result<Vif, VifBuildError> {
    if port.fixed_ips.is_empty() {
        return Err(VifBuildError::Invalid("the port has no fixed IP".into()));
    }
    let mut ips = Vec::with_capacity(port.fixed_ips.len());
    for fip in &port.fixed_ips {
        let subnet = subnets
            .iter()
            .find(|s| s.id == fip.subnet_id)
            .ok_or_else(|| VifBuildError::Invalid(format!("subnet {} of fixed IP {} not known", fip.subnet_id, fip.ip_address)))?;
        let gateway = match subnet.gateway_ip.as_deref() {
            Some(g) if !g.is_empty() => Some(parse_ip(g, "gateway_ip")?),
            _ => None,
        };
        let routes = subnet
            .host_routes
            .iter()
            .map(|r| Ok(VifRoute { destination: r.destination.clone(), gateway: parse_ip(&r.nexthop, "host route nexthop")? }))
            .collect::<Result<Vec<_>, VifBuildError>>()?;
        let dns = subnet.dns_nameservers.iter().map(|d| parse_ip(d, "dns_nameserver")).collect::<Result<Vec<_>, _>>()?;
        ips.push(VifIp {
            address: parse_ip(&fip.ip_address, "fixed IP")?,
            subnet_cidr: subnet.cidr.clone(),
            subnet_id: Some(subnet.id.clone()),
            gateway,
            routes,
            dns,
        });
    }
    let mtu = if defaults.network_device_mtu != 0 { defaults.network_device_mtu } else { network.mtu.unwrap_or(1500) };
    let vif = Vif {
        port_id: port.id.clone(),
        network_id: port.network_id.clone(),
        mac: port.mac_address.to_ascii_lowercase(),
        mtu,
        ips,
        binding,
        host_ifname: host_ifname(&port.id),
        active: port.status == "ACTIVE",
        port_filter: details_bool(&port.binding_vif_details, "port_filter"),
    };
    vif.validate().map_err(|e| VifBuildError::Invalid(e.to_string()))?;
    Ok(vif)
}

/// The Neutron port id of a `status.vifs[*].vif` value, in either stored form (kuryr-rs typed
/// or upstream os-vif), even if the rest of the record is unreadable.
pub fn port_id_of(vif: &Value) -> Option<String> {
    vif.get("portId")
        .or_else(|| vif.get("versioned_object.data").and_then(|d| d.get("id")))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Whether a `status.vifs[*].vif` value says the port is ACTIVE (either form).
pub fn is_active(vif: &Value) -> bool {
    vif.get("active").or_else(|| vif.get("versioned_object.data").and_then(|d| d.get("active"))).and_then(Value::as_bool).unwrap_or(false)
}

/// JSON pointer (below `/status/vifs/<ifname>/vif`) of the `active` flag for the stored form.
pub fn active_pointer(vif: &Value) -> &'static str {
    if vif.get("versioned_object.data").is_some() {
        "/versioned_object.data/active"
    } else {
        "/active"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> VifDefaults {
        VifDefaults { ovs_bridge: "br-int".into(), network_device_mtu: 0 }
    }

    fn port(vif_type: &str, details: Value, status: &str) -> Port {
        serde_json::from_value(json!({
            "id": "3c3f6f7a-0fd6-4bd5-8bc6-4b3a1c1f3a6e", "network_id": "net-1",
            "mac_address": "FA:16:3E:C9:CB:F0", "status": status,
            "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "10.244.0.17"}],
            "binding:host_id": "vm", "binding:vif_type": vif_type, "binding:vif_details": details,
            "device_id": "uid-1", "device_owner": "compute:kuryr"
        }))
        .expect("port json")
    }

    fn network() -> Network {
        serde_json::from_value(json!({"id": "net-1", "mtu": 1442, "subnets": ["sub-1"]})).expect("network json")
    }

    fn subnet() -> Subnet {
        serde_json::from_value(json!({
            "id": "sub-1", "network_id": "net-1", "cidr": "10.244.0.0/16", "ip_version": 4,
            "gateway_ip": "10.244.0.1", "dns_nameservers": ["10.96.0.10"],
            "host_routes": [{"destination": "10.128.0.0/14", "nexthop": "10.244.0.254"}]
        }))
        .expect("subnet json")
    }

    #[test]
    fn ovs_port_becomes_an_ovs_vif() {
        let p = port("ovs", json!({"port_filter": true, "connectivity": "l2", "bridge_name": "br-int", "datapath_type": "netdev"}), "DOWN");
        let vif = build_vif(&p, &network(), &[subnet()], &defaults()).expect("vif");
        assert_eq!(vif.port_id, p.id);
        assert_eq!(vif.network_id, "net-1");
        assert_eq!(vif.mac, "fa:16:3e:c9:cb:f0");
        assert_eq!(vif.mtu, 1442);
        assert_eq!(vif.binding, Binding::Ovs { bridge: "br-int".into() });
        assert_eq!(vif.host_ifname, "tap3c3f6f7a-0f");
        assert!(!vif.active);
        assert!(vif.port_filter);
        let ip = &vif.ips[0];
        assert_eq!(ip.address.to_string(), "10.244.0.17");
        assert_eq!(ip.subnet_cidr, "10.244.0.0/16");
        assert_eq!(ip.subnet_id.as_deref(), Some("sub-1"));
        assert_eq!(ip.gateway.map(|g| g.to_string()).as_deref(), Some("10.244.0.1"));
        assert_eq!(ip.routes, vec![VifRoute { destination: "10.128.0.0/14".into(), gateway: "10.244.0.254".parse().expect("ip") }]);
        assert_eq!(ip.dns[0].to_string(), "10.96.0.10");
        // Round trip through the status form.
        assert_eq!(Vif::from_status_value(&vif.to_status_value()).expect("read back"), vif);
    }

    #[test]
    fn bridge_defaults_mtu_override_and_active() {
        let p = port("ovs", json!({}), "ACTIVE");
        let d = VifDefaults { ovs_bridge: "br-pods".into(), network_device_mtu: 1400 };
        let vif = build_vif(&p, &network(), &[subnet()], &d).expect("vif");
        assert_eq!(vif.binding, Binding::Ovs { bridge: "br-pods".into() });
        assert_eq!(vif.mtu, 1400);
        assert!(vif.active);
        assert!(!vif.port_filter);
    }

    #[test]
    fn hybrid_plug_becomes_a_qbr_bridge() {
        let p = port("ovs", json!({"ovs_hybrid_plug": true, "port_filter": true}), "DOWN");
        let vif = build_vif(&p, &network(), &[subnet()], &defaults()).expect("vif");
        assert_eq!(vif.binding, Binding::Hybrid { bridge: "br-int".into(), linux_bridge: "qbr3c3f6f7a-0f".into() });
    }

    #[test]
    fn failed_and_unbound_ports_are_binding_errors() {
        for t in ["binding_failed", "unbound", ""] {
            let err = build_vif(&port(t, json!({}), "DOWN"), &network(), &[subnet()], &defaults()).expect_err(t);
            assert_eq!(err, VifBuildError::Binding(t.into()));
            assert!(err.is_binding());
        }
        let err = build_vif(&port("vhostuser", json!({}), "DOWN"), &network(), &[subnet()], &defaults()).expect_err("vhu");
        assert_eq!(err, VifBuildError::Unsupported("vhostuser".into()));
    }

    #[test]
    fn bad_ports_are_rejected() {
        let mut p = port("ovs", json!({}), "DOWN");
        p.fixed_ips.clear();
        assert!(matches!(build_vif(&p, &network(), &[subnet()], &defaults()), Err(VifBuildError::Invalid(m)) if m.contains("no fixed IP")));
        let p = port("ovs", json!({}), "DOWN");
        assert!(matches!(build_vif(&p, &network(), &[], &defaults()), Err(VifBuildError::Invalid(m)) if m.contains("sub-1")));
        let mut p = port("ovs", json!({}), "DOWN");
        p.mac_address = "zz".into();
        assert!(matches!(build_vif(&p, &network(), &[subnet()], &defaults()), Err(VifBuildError::Invalid(m)) if m.contains("MAC")));
    }

    #[test]
    fn nested_vlan_binding_ignores_the_subport_vif_type() {
        // A subport before attachment: unbound; after: "ovs" without details. Both are VLANs.
        for t in ["unbound", "ovs"] {
            let p = port(t, json!({}), "DOWN");
            let vif = build_vif_with(&p, &network(), &[subnet()], &defaults(), Binding::NestedVlan { vlan_id: 101 }).expect("vif");
            assert_eq!(vif.binding, Binding::NestedVlan { vlan_id: 101 });
            assert_eq!(vif.binding.kind(), "nested-vlan");
            assert_eq!(vif.ips[0].address.to_string(), "10.244.0.17");
            assert_eq!(Vif::from_status_value(&vif.to_status_value()).expect("read back"), vif);
        }
        let p = port("ovs", json!({}), "DOWN");
        let err = build_vif_with(&p, &network(), &[subnet()], &defaults(), Binding::NestedVlan { vlan_id: 0 }).expect_err("vlan 0");
        assert!(matches!(err, VifBuildError::Invalid(m) if m.contains("VLAN id 0")));
    }

    #[test]
    fn reads_port_id_and_active_of_both_forms() {
        let typed = json!({"portId": "p1", "active": true});
        let ovo = json!({"versioned_object.name": "VIFOpenVSwitch", "versioned_object.data": {"id": "p2", "active": false}});
        assert_eq!(port_id_of(&typed).as_deref(), Some("p1"));
        assert_eq!(port_id_of(&ovo).as_deref(), Some("p2"));
        assert!(is_active(&typed));
        assert!(!is_active(&ovo));
        assert_eq!(active_pointer(&typed), "/active");
        assert_eq!(active_pointer(&ovo), "/versioned_object.data/active");
        assert_eq!(port_id_of(&json!({})), None);
    }
}
