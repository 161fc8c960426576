//! The VIF: one Neutron port as one pod interface.
//!
//! kuryr-rs writes the typed [`Vif`] (camelCase JSON, `"format": "kuryr-rs/v1"` marker) into
//! `KuryrPort.status.vifs[ifname].vif`. Upstream kuryr-kubernetes wrote an os-vif
//! oslo.versionedobjects primitive there instead (`versioned_object.name` = `VIFOpenVSwitch`,
//! `VIFBridge`, `VIFVlanNested`, `VIFMacvlanNested`, ...). [`Vif::from_status_value`] reads both,
//! so a cluster migrated from upstream keeps working (its pods can be CHECKed and DELeted).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// Marker stored with the typed form, to tell it from an os-vif primitive at a glance.
pub const FORMAT: &str = "kuryr-rs/v1";

/// How the pod interface is attached on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Binding {
    /// veth pair, host end in the OVS integration bridge (ML2/OVN, ML2/OVS native firewall).
    Ovs { bridge: String },
    /// veth pair into a per-port Linux bridge `qbr…`, which is plugged into OVS by a second veth
    /// (ML2/OVS with the iptables hybrid firewall: `binding:vif_details.ovs_hybrid_plug`).
    Hybrid {
        bridge: String,
        linux_bridge: String,
    },
    /// VLAN sub-interface of the VM's NIC (pods inside Nova VMs, trunk subports).
    #[serde(rename_all = "camelCase")]
    NestedVlan { vlan_id: u16 },
    /// macvlan on the VM's NIC (pods inside Nova VMs, allowed-address-pairs on the VM port).
    NestedMacvlan,
}

impl Binding {
    /// Short name, as used in metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Binding::Ovs { .. } => "ovs",
            Binding::Hybrid { .. } => "hybrid",
            Binding::NestedVlan { .. } => "nested-vlan",
            Binding::NestedMacvlan => "nested-macvlan",
        }
    }
}

/// A route that goes with a subnet (Neutron `host_routes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VifRoute {
    /// Destination CIDR, e.g. `10.128.0.0/14` or `0.0.0.0/0`.
    pub destination: String,
    pub gateway: IpAddr,
}

/// One fixed IP of the port, with what the pod needs to know about its subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VifIp {
    pub address: IpAddr,
    /// The subnet's CIDR, e.g. `10.244.0.0/16`.
    pub subnet_cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<VifRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
}

impl VifIp {
    /// Prefix length of the subnet (the `/N` of `subnet_cidr`).
    pub fn prefix_len(&self) -> Result<u8, VifError> {
        let (_, len) = self.subnet_cidr.split_once('/').ok_or_else(|| {
            VifError::Invalid(format!(
                "subnet cidr {:?} has no prefix length",
                self.subnet_cidr
            ))
        })?;
        let len: u8 = len.parse().map_err(|_| {
            VifError::Invalid(format!(
                "subnet cidr {:?}: bad prefix length",
                self.subnet_cidr
            ))
        })?;
        let max = if self.address.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(VifError::Invalid(format!(
                "subnet cidr {:?}: prefix length > {max}",
                self.subnet_cidr
            )));
        }
        Ok(len)
    }
}

/// A Neutron port as a pod interface: everything the daemon needs to wire it, no more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vif {
    /// Always [`FORMAT`] when written by kuryr-rs.
    #[serde(default = "default_format")]
    pub format: String,
    pub port_id: String,
    #[serde(default)]
    pub network_id: String,
    /// MAC address, lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub mtu: u32,
    pub ips: Vec<VifIp>,
    pub binding: Binding,
    /// Name of the host-side device (`tap` + first 11 characters of the port id for OVS).
    pub host_ifname: String,
    /// Neutron reports the port ACTIVE.
    #[serde(default)]
    pub active: bool,
    /// Neutron filters the port's traffic (security groups): `binding:vif_details.port_filter`.
    #[serde(default)]
    pub port_filter: bool,
}

fn default_format() -> String {
    FORMAT.to_string()
}

/// Host-side device name for a port: `tap` + the first 11 characters of its id (14 characters,
/// under IFNAMSIZ), the name os-vif and nova use, so OVS/OVN tooling recognises it.
pub fn host_ifname(port_id: &str) -> String {
    let short: String = port_id.chars().take(11).collect();
    format!("tap{short}")
}

/// Why a VIF record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VifError {
    #[error("unsupported os-vif object {0:?} (kuryr-rs reads VIFOpenVSwitch, VIFBridge, VIFVlanNested, VIFMacvlanNested)")]
    Unsupported(String),
    #[error("os-vif field {0} missing or of the wrong type")]
    Missing(String),
    #[error("invalid VIF: {0}")]
    Invalid(String),
}

fn ovo_data(v: &Value) -> Option<&Value> {
    v.get("versioned_object.data")
}

fn ovo_objects(v: &Value) -> Vec<&Value> {
    ovo_data(v)
        .and_then(|d| d.get("objects"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(ovo_data).collect())
        .unwrap_or_default()
}

fn req_str<'a>(d: &'a Value, field: &str) -> Result<&'a str, VifError> {
    d.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| VifError::Missing(field.to_string()))
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, VifError> {
    s.parse()
        .map_err(|_| VifError::Invalid(format!("{what} {s:?} is not an IP address")))
}

impl Vif {
    /// Read `status.vifs[ifname].vif`: the kuryr-rs typed form or an upstream os-vif primitive.
    pub fn from_status_value(v: &Value) -> Result<Vif, VifError> {
        if v.get("versioned_object.name").is_some() {
            return Vif::from_os_vif(v);
        }
        let vif: Vif =
            serde_json::from_value(v.clone()).map_err(|e| VifError::Invalid(e.to_string()))?;
        vif.validate()?;
        Ok(vif)
    }

    /// Serialize to the typed form for `status.vifs[ifname].vif`.
    pub fn to_status_value(&self) -> Value {
        // A struct of strings, numbers and enums always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks that hold for any VIF we are willing to wire.
    pub fn validate(&self) -> Result<(), VifError> {
        if self.port_id.is_empty() {
            return Err(VifError::Invalid("empty port id".into()));
        }
        let octets: Vec<&str> = self.mac.split(':').collect();
        if octets.len() != 6
            || octets
                .iter()
                .any(|o| o.len() != 2 || u8::from_str_radix(o, 16).is_err())
        {
            return Err(VifError::Invalid(format!(
                "MAC {:?} is not aa:bb:cc:dd:ee:ff",
                self.mac
            )));
        }
        if self.mtu < 68 || self.mtu > 65535 {
            return Err(VifError::Invalid(format!("MTU {} out of range", self.mtu)));
        }
        if self.host_ifname.is_empty() || self.host_ifname.len() > 15 {
            return Err(VifError::Invalid(format!(
                "host interface name {:?} must be 1-15 bytes",
                self.host_ifname
            )));
        }
        for ip in &self.ips {
            ip.prefix_len()?;
        }
        if let Binding::NestedVlan { vlan_id } = self.binding {
            if !(1..=4094).contains(&vlan_id) {
                return Err(VifError::Invalid(format!(
                    "VLAN id {vlan_id} out of 1-4094"
                )));
            }
        }
        Ok(())
    }

    /// Read an upstream os-vif primitive (what kuryr-kubernetes stored in KuryrPort status).
    pub fn from_os_vif(v: &Value) -> Result<Vif, VifError> {
        let name = v
            .get("versioned_object.name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let d = ovo_data(v).ok_or_else(|| VifError::Missing("versioned_object.data".into()))?;
        let port_id = req_str(d, "id")?.to_string();
        let mac = req_str(d, "address")?.to_ascii_lowercase();
        let active = d.get("active").and_then(Value::as_bool).unwrap_or(false);
        let port_filter = d
            .get("has_traffic_filtering")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let vif_name = d
            .get("vif_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let net = d
            .get("network")
            .and_then(ovo_data)
            .ok_or_else(|| VifError::Missing("network".into()))?;
        let network_id = net
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mtu = match net.get("mtu").and_then(Value::as_u64) {
            None => 1500,
            // Out of u32 is out of range (validate() then checks 68..=65535).
            Some(m) => {
                u32::try_from(m).map_err(|_| VifError::Invalid(format!("MTU {m} out of range")))?
            }
        };
        let binding = os_vif_binding(name, d, net)?;
        let ips = os_vif_ips(net)?;
        let host_ifname = match (&binding, vif_name) {
            (_, Some(n)) if !n.is_empty() => n,
            _ => host_ifname(&port_id),
        };
        let vif = Vif {
            format: "os-vif".into(),
            port_id,
            network_id,
            mac,
            mtu,
            ips,
            binding,
            host_ifname,
            active,
            port_filter,
        };
        vif.validate()?;
        Ok(vif)
    }
}

/// The binding of an os-vif primitive of class `name`, from its data `d` and its network `net`.
fn os_vif_binding(name: &str, d: &Value, net: &Value) -> Result<Binding, VifError> {
    let bridge = d
        .get("bridge_name")
        .and_then(Value::as_str)
        .or_else(|| net.get("bridge").and_then(Value::as_str))
        .unwrap_or("br-int")
        .to_string();
    Ok(match name {
        "VIFOpenVSwitch" => Binding::Ovs { bridge },
        // Upstream's VIFBridge is the hybrid plug: bridge_name is the qbr Linux bridge and the
        // network's bridge is the OVS integration bridge.
        "VIFBridge" => Binding::Hybrid {
            bridge: net
                .get("bridge")
                .and_then(Value::as_str)
                .unwrap_or("br-int")
                .to_string(),
            linux_bridge: d
                .get("bridge_name")
                .and_then(Value::as_str)
                .ok_or_else(|| VifError::Missing("bridge_name".into()))?
                .to_string(),
        },
        "VIFVlanNested" => {
            let id = d
                .get("vlan_id")
                .and_then(Value::as_u64)
                .ok_or_else(|| VifError::Missing("vlan_id".into()))?;
            let vlan_id =
                u16::try_from(id).map_err(|_| VifError::Invalid(format!("vlan_id {id}")))?;
            Binding::NestedVlan { vlan_id }
        }
        "VIFMacvlanNested" => Binding::NestedMacvlan,
        other => return Err(VifError::Unsupported(other.to_string())),
    })
}

/// The fixed IPs of an os-vif network, each with its subnet's CIDR, gateway, routes and DNS.
fn os_vif_ips(net: &Value) -> Result<Vec<VifIp>, VifError> {
    let mut ips = Vec::new();
    if let Some(subnets) = net.get("subnets") {
        for s in ovo_objects(subnets) {
            let cidr = req_str(s, "cidr")?.to_string();
            let gateway = match s.get("gateway").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => Some(parse_ip(g, "gateway")?),
                _ => None,
            };
            let dns = s
                .get("dns")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|x| parse_ip(x, "dns"))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let routes = os_vif_routes(s)?;
            if let Some(fixed) = s.get("ips") {
                for ip in ovo_objects(fixed) {
                    ips.push(VifIp {
                        address: parse_ip(req_str(ip, "address")?, "fixed ip")?,
                        subnet_cidr: cidr.clone(),
                        subnet_id: None,
                        gateway,
                        routes: routes.clone(),
                        dns: dns.clone(),
                    });
                }
            }
        }
    }
    Ok(ips)
}

/// The routes of an os-vif subnet `s`.
fn os_vif_routes(s: &Value) -> Result<Vec<VifRoute>, VifError> {
    let mut routes = Vec::new();
    if let Some(r) = s.get("routes") {
        for r in ovo_objects(r) {
            routes.push(VifRoute {
                destination: req_str(r, "cidr")?.to_string(),
                gateway: parse_ip(req_str(r, "gateway")?, "route gateway")?,
            });
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ovo(name: &str, data: Value) -> Value {
        json!({"versioned_object.name": name, "versioned_object.namespace": "os_vif",
               "versioned_object.version": "1.0", "versioned_object.data": data})
    }

    /// What upstream kuryr-kubernetes stored for an OVS pod port (shape from os-vif objects).
    fn upstream_ovs() -> Value {
        let route = ovo(
            "Route",
            json!({"cidr": "10.128.0.0/14", "gateway": "10.244.0.254"}),
        );
        let ip = ovo(
            "FixedIP",
            json!({"address": "10.244.0.17", "floating_ips": []}),
        );
        let subnet = ovo(
            "Subnet",
            json!({"cidr": "10.244.0.0/16", "gateway": "10.244.0.1", "dns": ["10.96.0.10"],
                   "routes": ovo("RouteList", json!({"objects": [route]})),
                   "ips": ovo("FixedIPList", json!({"objects": [ip]}))}),
        );
        let network = ovo(
            "Network",
            json!({"id": "net-1", "label": "kuryr-pods", "mtu": 1442, "bridge": "br-int",
                   "should_provide_vlan": false,
                   "subnets": ovo("SubnetList", json!({"objects": [subnet]}))}),
        );
        ovo(
            "VIFOpenVSwitch",
            json!({"id": "6d3b7c52-1a2b-4c5d-8e9f-001122334455", "address": "FA:16:3E:01:02:03",
                   "active": true, "plugin": "ovs", "vif_name": "tap6d3b7c52-1a",
                   "has_traffic_filtering": true, "preserve_on_delete": false, "bridge_name": "br-int",
                   "port_profile": ovo("VIFPortProfileOpenVSwitch", json!({"interface_id": "6d3b7c52-1a2b-4c5d-8e9f-001122334455"})),
                   "network": network}),
        )
    }

    #[test]
    fn reads_upstream_ovs_vif() {
        let vif = Vif::from_status_value(&upstream_ovs()).expect("parse");
        assert_eq!(vif.port_id, "6d3b7c52-1a2b-4c5d-8e9f-001122334455");
        assert_eq!(vif.mac, "fa:16:3e:01:02:03");
        assert_eq!(vif.mtu, 1442);
        assert_eq!(
            vif.binding,
            Binding::Ovs {
                bridge: "br-int".into()
            }
        );
        assert_eq!(vif.host_ifname, "tap6d3b7c52-1a");
        assert!(vif.active && vif.port_filter);
        assert_eq!(vif.ips.len(), 1);
        let ip = &vif.ips[0];
        assert_eq!(ip.address.to_string(), "10.244.0.17");
        assert_eq!(ip.prefix_len(), Ok(16));
        assert_eq!(
            ip.gateway.map(|g| g.to_string()).as_deref(),
            Some("10.244.0.1")
        );
        assert_eq!(ip.routes[0].destination, "10.128.0.0/14");
        assert_eq!(ip.dns[0].to_string(), "10.96.0.10");
    }

    #[test]
    fn reads_upstream_nested_and_bridge_vifs() {
        let mut v = upstream_ovs();
        v["versioned_object.name"] = json!("VIFVlanNested");
        v["versioned_object.data"]["vlan_id"] = json!(101);
        assert_eq!(
            Vif::from_status_value(&v).expect("vlan").binding,
            Binding::NestedVlan { vlan_id: 101 }
        );

        v["versioned_object.name"] = json!("VIFMacvlanNested");
        assert_eq!(
            Vif::from_status_value(&v).expect("macvlan").binding,
            Binding::NestedMacvlan
        );

        v["versioned_object.name"] = json!("VIFBridge");
        v["versioned_object.data"]["bridge_name"] = json!("qbr6d3b7c52-1a");
        assert_eq!(
            Vif::from_status_value(&v).expect("bridge").binding,
            Binding::Hybrid {
                bridge: "br-int".into(),
                linux_bridge: "qbr6d3b7c52-1a".into()
            }
        );
    }

    #[test]
    fn rejects_unsupported_and_broken_upstream_vifs() {
        let mut v = upstream_ovs();
        v["versioned_object.name"] = json!("VIFVHostUser");
        assert_eq!(
            Vif::from_status_value(&v),
            Err(VifError::Unsupported("VIFVHostUser".into()))
        );

        let mut v = upstream_ovs();
        v["versioned_object.data"]["vlan_id"] = json!(5000);
        v["versioned_object.name"] = json!("VIFVlanNested");
        assert!(matches!(
            Vif::from_status_value(&v),
            Err(VifError::Invalid(_))
        ));

        let mut v = upstream_ovs();
        v["versioned_object.data"]
            .as_object_mut()
            .map(|o| o.remove("address"));
        assert_eq!(
            Vif::from_status_value(&v),
            Err(VifError::Missing("address".into()))
        );
    }

    #[test]
    fn typed_form_round_trips() {
        let vif = Vif {
            format: FORMAT.into(),
            port_id: "p1".into(),
            network_id: "n1".into(),
            mac: "fa:16:3e:aa:bb:cc".into(),
            mtu: 1442,
            ips: vec![VifIp {
                address: "10.244.1.2".parse().expect("ip"),
                subnet_cidr: "10.244.0.0/16".into(),
                subnet_id: Some("s1".into()),
                gateway: Some("10.244.0.1".parse().expect("ip")),
                routes: vec![],
                dns: vec![],
            }],
            binding: Binding::Ovs {
                bridge: "br-int".into(),
            },
            host_ifname: host_ifname("p1"),
            active: false,
            port_filter: true,
        };
        let v = vif.to_status_value();
        assert_eq!(v["binding"], json!({"type": "ovs", "bridge": "br-int"}));
        assert_eq!(v["format"], json!(FORMAT));
        assert_eq!(Vif::from_status_value(&v), Ok(vif));
    }

    #[test]
    fn typed_form_is_validated() {
        let v = json!({"portId": "p", "mac": "nope", "mtu": 1500, "ips": [], "binding": {"type": "nested-macvlan"},
                       "hostIfname": "tapp"});
        assert!(
            matches!(Vif::from_status_value(&v), Err(VifError::Invalid(m)) if m.contains("MAC"))
        );
        let v = json!({"portId": "p", "mac": "fa:16:3e:00:00:01", "mtu": 1500,
                       "ips": [{"address": "10.0.0.1", "subnetCidr": "10.0.0.0/40"}],
                       "binding": {"type": "nested-macvlan"}, "hostIfname": "tapp"});
        assert!(
            matches!(Vif::from_status_value(&v), Err(VifError::Invalid(m)) if m.contains("prefix"))
        );
    }

    #[test]
    fn host_ifname_is_tap_plus_11() {
        assert_eq!(host_ifname("6d3b7c52-1a2b-4c5d"), "tap6d3b7c52-1a");
        assert!(host_ifname("6d3b7c52-1a2b-4c5d").len() <= 15);
    }
}
