//! The VIF: one Neutron port as one pod interface.
//!
//! **Stored form.** `KuryrPort.status.vifs[ifname].vif` holds an os-vif oslo.versionedobjects
//! primitive, the form upstream kuryr-kubernetes writes and reads (`versioned_object.name` =
//! `VIFOpenVSwitch`, `VIFBridge`, `VIFVlanNested`, `VIFMacvlanNested`; every object, kuryr's
//! nested classes included, in namespace `os_vif`, which is what their base class `VIFBase`
//! declares). [`Vif::to_status_value`] writes it, [`Vif::from_status_value`] reads it, and also
//! the typed form earlier kuryr-rs releases wrote (camelCase JSON, `"format": "kuryr-rs/v1"`),
//! so clusters that ran those keep working.
//!
//! Writing upstream's form is unconditional, not an option: a drop-in successor must let its
//! users go back, and the need to go back shows only after pods exist — an opt-in would be off
//! exactly when it is needed, and with kuryr-rs's own form one KuryrPort is enough to stop
//! upstream's KuryrPort handler (`KeyError: 'versioned_object.namespace'`). Nothing is lost:
//! every field kuryr-rs uses is an os-vif field (port id, MAC, MTU and network id on the
//! `Network`, fixed IPs grouped in `Subnet`s with CIDR, gateway, routes and DNS, host device
//! `vif_name`, `active`, `has_traffic_filtering`, OVS bridge / hybrid `qbr` bridge / VLAN id)
//! except the Neutron subnet id, which rides in the `Subnet` data under [`SUBNET_ID_KEY`]:
//! oslo's `obj_from_primitive` sets only the declared fields of `versioned_object.data` and
//! ignores other keys (checked against upstream's venv by the e2e test
//! `upstream_reads_kuryr_rs_vifs`). Upstream drops that key when it rewrites a VIF; kuryr-rs
//! does not need it (it is informational).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;

/// Marker of the typed form earlier kuryr-rs releases stored (read, no longer written).
pub const LEGACY_FORMAT: &str = "kuryr-rs/v1";

/// oslo.versionedobjects namespace of every object written: os-vif's `VersionedObject`
/// (`os_vif.objects.base`), which upstream deserializes `status.vifs` with.
pub const OS_VIF_NAMESPACE: &str = "os_vif";

/// Extra key of an os-vif `Subnet` primitive's data: the Neutron subnet id (os-vif's `Subnet`
/// has no such field; oslo ignores undeclared keys).
pub const SUBNET_ID_KEY: &str = "kuryr_rs_subnet_id";

/// The form a `status.vifs[*].vif` value is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredForm {
    /// An os-vif primitive (written by kuryr-rs now, and by upstream).
    OsVif,
    /// The typed form of earlier kuryr-rs releases ([`LEGACY_FORMAT`]).
    Legacy,
}

impl StoredForm {
    pub fn of(v: &Value) -> StoredForm {
        if v.get("versioned_object.name").is_some() {
            StoredForm::OsVif
        } else {
            StoredForm::Legacy
        }
    }
}

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

/// A Neutron port as a pod interface: everything the daemon needs to wire it, no more. Its serde
/// form is the legacy typed form (and the daemon's attachment records); the KuryrPort status
/// form is [`Vif::to_status_value`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vif {
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

/// An os-vif object primitive (no `versioned_object.changes`: optional, only for change
/// tracking).
fn ovo(name: &str, version: &str, data: Value) -> Value {
    json!({"versioned_object.name": name, "versioned_object.namespace": OS_VIF_NAMESPACE,
           "versioned_object.version": version, "versioned_object.data": data})
}

/// Runs of consecutive IPs on the same subnet (same CIDR, subnet id, gateway, routes, DNS): one
/// os-vif `Subnet` each, as upstream groups a port's fixed IPs; reading flattens them back in
/// order.
fn subnet_groups(ips: &[VifIp]) -> impl Iterator<Item = &[VifIp]> {
    ips.chunk_by(|a, b| {
        (&a.subnet_cidr, &a.subnet_id, a.gateway, &a.routes, &a.dns)
            == (&b.subnet_cidr, &b.subnet_id, b.gateway, &b.routes, &b.dns)
    })
}

/// One os-vif `Subnet` for a run of [`subnet_groups`] (not empty).
fn os_vif_subnet(group: &[VifIp]) -> Value {
    let ips: Vec<Value> = group
        .iter()
        .map(|ip| ovo("FixedIP", "1.0", json!({"address": ip.address.to_string()})))
        .collect();
    let Some(s) = group.first() else {
        return Value::Null;
    };
    let routes: Vec<Value> = s
        .routes
        .iter()
        .map(|r| {
            ovo(
                "Route",
                "1.0",
                json!({"cidr": r.destination, "gateway": r.gateway.to_string()}),
            )
        })
        .collect();
    let dns: Vec<String> = s.dns.iter().map(IpAddr::to_string).collect();
    let mut d = json!({
        "cidr": s.subnet_cidr, "dns": dns,
        "routes": ovo("RouteList", "1.0", json!({"objects": routes})),
        "ips": ovo("FixedIPList", "1.0", json!({"objects": ips})),
    });
    // Upstream leaves an unset gateway out (os-vif's field is not nullable).
    if let Some(g) = s.gateway {
        d["gateway"] = json!(g.to_string());
    }
    if let Some(id) = &s.subnet_id {
        d[SUBNET_ID_KEY] = json!(id);
    }
    ovo("Subnet", "1.0", d)
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
    /// Read `status.vifs[ifname].vif`: an os-vif primitive (kuryr-rs's or upstream's) or the
    /// legacy kuryr-rs typed form.
    pub fn from_status_value(v: &Value) -> Result<Vif, VifError> {
        if StoredForm::of(v) == StoredForm::OsVif {
            return Vif::from_os_vif(v);
        }
        let mut vif: Vif =
            serde_json::from_value(v.clone()).map_err(|e| VifError::Invalid(e.to_string()))?;
        vif.mac.make_ascii_lowercase();
        vif.validate()?;
        Ok(vif)
    }

    /// The value for `status.vifs[ifname].vif`: the os-vif primitive upstream kuryr-kubernetes
    /// 10.0.0 writes for this binding (see the module doc).
    pub fn to_status_value(&self) -> Value {
        let (class, plugin) = match self.binding {
            Binding::Ovs { .. } => ("VIFOpenVSwitch", "ovs"),
            Binding::Hybrid { .. } => ("VIFBridge", "ovs"),
            Binding::NestedVlan { .. } => ("VIFVlanNested", "noop"),
            Binding::NestedMacvlan => ("VIFMacvlanNested", "noop"),
        };
        let subnets: Vec<Value> = subnet_groups(&self.ips).map(os_vif_subnet).collect();
        let mut net = json!({
            "mtu": self.mtu, "multi_host": false, "should_provide_bridge": false,
            "should_provide_vlan": false,
            "subnets": ovo("SubnetList", "1.0", json!({"objects": subnets})),
        });
        if !self.network_id.is_empty() {
            net["id"] = json!(self.network_id);
        }
        let mut d = json!({
            "id": self.port_id, "address": self.mac, "active": self.active,
            "has_traffic_filtering": self.port_filter, "preserve_on_delete": false,
            "plugin": plugin, "vif_name": self.host_ifname,
        });
        // os-vif's OVS plugin refuses to unplug a VIF without its OVS port profile.
        let profile = ovo(
            "VIFPortProfileOpenVSwitch",
            "1.3",
            json!({"interface_id": self.port_id}),
        );
        match &self.binding {
            Binding::Ovs { bridge } => {
                net["bridge"] = json!(bridge);
                d["bridge_name"] = json!(bridge);
                d["port_profile"] = profile;
            }
            Binding::Hybrid {
                bridge,
                linux_bridge,
            } => {
                net["bridge"] = json!(bridge);
                d["bridge_name"] = json!(linux_bridge);
                d["port_profile"] = profile;
            }
            Binding::NestedVlan { vlan_id } => d["vlan_id"] = json!(vlan_id),
            Binding::NestedMacvlan => {}
        }
        d["network"] = ovo("Network", "1.1", net);
        ovo(class, "1.0", d)
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
            let subnet_id = s
                .get(SUBNET_ID_KEY)
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(fixed) = s.get("ips") {
                for ip in ovo_objects(fixed) {
                    ips.push(VifIp {
                        address: parse_ip(req_str(ip, "address")?, "fixed ip")?,
                        subnet_cidr: cidr.clone(),
                        subnet_id: subnet_id.clone(),
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

/// One VIF per binding kind (OVS, hybrid, nested VLAN, nested macvlan) with every field kuryr-rs
/// uses set: two IPv4 addresses on one subnet (one os-vif `Subnet`), an IPv6 address on another
/// without a gateway, routes, DNS, subnet ids. For tests (here, and the e2e test that has
/// upstream read them).
pub fn examples() -> [Vif; 4] {
    let ip = |a: &str, cidr: &str, sid: &str, gw: Option<&str>| VifIp {
        address: a.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        subnet_cidr: cidr.into(),
        subnet_id: Some(sid.into()),
        gateway: gw.and_then(|g| g.parse().ok()),
        routes: vec![],
        dns: vec![],
    };
    let mut v4 = ip("10.244.1.2", "10.244.0.0/16", "s4", Some("10.244.0.1"));
    v4.routes = vec![VifRoute {
        destination: "10.128.0.0/14".into(),
        gateway: IpAddr::from([10, 244, 0, 254]),
    }];
    v4.dns = vec![IpAddr::from([10, 96, 0, 10])];
    let v4b = VifIp {
        address: IpAddr::from([10, 244, 1, 3]),
        ..v4.clone()
    };
    let ips = vec![
        v4,
        v4b,
        ip("fd00:10:244::5", "fd00:10:244::/64", "s6", None),
    ];
    let port_id = "6d3b7c52-1a2b-4c5d-8e9f-001122334455";
    [
        Binding::Ovs {
            bridge: "br-int".into(),
        },
        Binding::Hybrid {
            bridge: "br-int".into(),
            linux_bridge: "qbr6d3b7c52-1a".into(),
        },
        Binding::NestedVlan { vlan_id: 101 },
        Binding::NestedMacvlan,
    ]
    .map(|binding| Vif {
        port_id: port_id.into(),
        network_id: "3c3f6f7a-0fd6-4bd5-8bc6-4b3a1c1f3a6e".into(),
        mac: "fa:16:3e:aa:bb:cc".into(),
        mtu: 1442,
        ips: ips.clone(),
        binding,
        host_ifname: host_ifname(port_id),
        active: true,
        port_filter: true,
    })
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
    fn every_binding_round_trips_through_the_status_form() {
        for example in examples() {
            for (active, port_filter, network_id) in [(true, true, "n1"), (false, false, "")] {
                let vif = Vif {
                    active,
                    port_filter,
                    network_id: network_id.into(),
                    ..example.clone()
                };
                let v = vif.to_status_value();
                assert_eq!(StoredForm::of(&v), StoredForm::OsVif);
                assert_eq!(Vif::from_status_value(&v), Ok(vif), "{v}");
            }
        }
        // No IPs, no gateway, no subnet id.
        let [.., mut bare] = examples();
        bare.ips.truncate(0);
        assert_eq!(Vif::from_status_value(&bare.to_status_value()), Ok(bare));
    }

    #[test]
    fn written_form_is_upstreams_os_vif_primitive() {
        let [ovs, hybrid, vlan, macvlan] = examples().map(|v| v.to_status_value());
        for (v, class, plugin) in [
            (&ovs, "VIFOpenVSwitch", "ovs"),
            (&hybrid, "VIFBridge", "ovs"),
            (&vlan, "VIFVlanNested", "noop"),
            (&macvlan, "VIFMacvlanNested", "noop"),
        ] {
            assert_eq!(v["versioned_object.name"], json!(class));
            // kuryr's nested classes inherit os-vif's VIFBase, and its namespace.
            assert_eq!(v["versioned_object.namespace"], json!("os_vif"));
            assert_eq!(v["versioned_object.version"], json!("1.0"));
            assert!(v.get("format").is_none(), "{v}");
            let d = &v["versioned_object.data"];
            assert_eq!(d["id"], json!("6d3b7c52-1a2b-4c5d-8e9f-001122334455"));
            assert_eq!(d["address"], json!("fa:16:3e:aa:bb:cc"));
            assert_eq!(d["plugin"], json!(plugin));
            assert_eq!(d["vif_name"], json!("tap6d3b7c52-1a"));
            assert_eq!(
                (
                    &d["active"],
                    &d["has_traffic_filtering"],
                    &d["preserve_on_delete"]
                ),
                (&json!(true), &json!(true), &json!(false))
            );
            let net = &d["network"];
            assert_eq!(
                (
                    &net["versioned_object.name"],
                    &net["versioned_object.version"]
                ),
                (&json!("Network"), &json!("1.1"))
            );
            let n = &net["versioned_object.data"];
            assert_eq!(n["id"], json!("3c3f6f7a-0fd6-4bd5-8bc6-4b3a1c1f3a6e"));
            assert_eq!(n["mtu"], json!(1442));
            let subnets = n["subnets"]["versioned_object.data"]["objects"]
                .as_array()
                .expect("subnets");
            assert_eq!(subnets.len(), 2, "two IPv4 addresses share one Subnet");
            let s4 = &subnets[0]["versioned_object.data"];
            assert_eq!(s4["cidr"], json!("10.244.0.0/16"));
            assert_eq!(s4["gateway"], json!("10.244.0.1"));
            assert_eq!(s4["dns"], json!(["10.96.0.10"]));
            assert_eq!(s4[SUBNET_ID_KEY], json!("s4"));
            let route = &s4["routes"]["versioned_object.data"]["objects"][0];
            assert_eq!(
                (
                    &route["versioned_object.name"],
                    &route["versioned_object.data"]
                ),
                (
                    &json!("Route"),
                    &json!({"cidr": "10.128.0.0/14", "gateway": "10.244.0.254"})
                )
            );
            let fixed: Vec<&Value> = s4["ips"]["versioned_object.data"]["objects"]
                .as_array()
                .expect("ips")
                .iter()
                .map(|f| &f["versioned_object.data"]["address"])
                .collect();
            assert_eq!(fixed, [&json!("10.244.1.2"), &json!("10.244.1.3")]);
            let s6 = &subnets[1]["versioned_object.data"];
            assert!(s6.get("gateway").is_none(), "no gateway is left out: {s6}");
        }
        let profile = |v: &Value| v["versioned_object.data"]["port_profile"].clone();
        for v in [&ovs, &hybrid] {
            assert_eq!(
                profile(v),
                json!({"versioned_object.name": "VIFPortProfileOpenVSwitch",
                       "versioned_object.namespace": "os_vif", "versioned_object.version": "1.3",
                       "versioned_object.data": {"interface_id": "6d3b7c52-1a2b-4c5d-8e9f-001122334455"}})
            );
            assert_eq!(
                v["versioned_object.data"]["network"]["versioned_object.data"]["bridge"],
                json!("br-int")
            );
        }
        assert_eq!(ovs["versioned_object.data"]["bridge_name"], json!("br-int"));
        assert_eq!(
            hybrid["versioned_object.data"]["bridge_name"],
            json!("qbr6d3b7c52-1a")
        );
        assert_eq!(vlan["versioned_object.data"]["vlan_id"], json!(101));
        for v in [&vlan, &macvlan] {
            assert!(
                profile(v).is_null() && v["versioned_object.data"].get("bridge_name").is_none()
            );
        }
    }

    #[test]
    fn legacy_typed_form_still_reads() {
        // As kuryr-rs wrote it before it wrote os-vif primitives (MAC in any case).
        let v = json!({"format": LEGACY_FORMAT, "portId": "p1", "networkId": "n1",
            "mac": "FA:16:3E:AA:BB:CC", "mtu": 1442,
            "ips": [{"address": "10.244.1.2", "subnetCidr": "10.244.0.0/16", "subnetId": "s1",
                     "gateway": "10.244.0.1"}],
            "binding": {"type": "nested-vlan", "vlanId": 42}, "hostIfname": "tapp1",
            "active": false, "portFilter": true});
        assert_eq!(StoredForm::of(&v), StoredForm::Legacy);
        let vif = Vif::from_status_value(&v).expect("legacy form");
        assert_eq!(
            (
                vif.port_id.as_str(),
                vif.mac.as_str(),
                &vif.binding,
                vif.ips[0].subnet_id.as_deref()
            ),
            (
                "p1",
                "fa:16:3e:aa:bb:cc",
                &Binding::NestedVlan { vlan_id: 42 },
                Some("s1")
            )
        );
        // Written back, it is an os-vif primitive that reads the same.
        assert_eq!(Vif::from_status_value(&vif.to_status_value()), Ok(vif));
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
