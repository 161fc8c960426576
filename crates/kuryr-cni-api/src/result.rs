//! The ADD result: the internal (1.1.0) form, conversion to every supported output
//! version, parsing of a `prevResult` of any supported version, and chaining.
//!
//! Differences between the versions, as far as the result is concerned:
//!
//! | field | 0.3.0 / 0.3.1 / 0.4.0 | 1.0.0 | 1.1.0 |
//! |---|---|---|---|
//! | `ips[].version` (`"4"`/`"6"`) | yes | removed | removed |
//! | `interfaces[].name/mac/sandbox` | yes | yes | yes |
//! | `interfaces[].mtu/socketPath/pciID` | no | no | yes |
//! | `routes[].dst/gw` | yes | yes | yes |
//! | `routes[].mtu/advmss/priority/table/scope` | no | no | yes |
//! | `ips[].interface/address/gateway`, `dns` | yes | yes | yes |
//!
//! Conversion drops the fields a version does not define. Empty lists, an empty `dns`
//! object and unset optional fields are omitted (the `omitempty` behaviour of libcni).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::{unsupported_version, CniVersion};

/// A result in the 1.1.0 shape, without `cniVersion` (the internal form). This is what
/// kuryr-daemon returns in [`CniResponse::result`](crate::wire::CniResponse::result);
/// a `cniVersion` key there is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces in the container; unset for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// CIDR, e.g. `10.0.0.5/24` (host bits kept).
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Parses `a.b.c.d/n` or `x::y/n` (host bits allowed).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "4"
    } else {
        "6"
    }
}

impl CniResult {
    /// Checks what the spec requires of a result: interface names non-empty, `address`
    /// and `dst` valid CIDRs, gateways valid IPs of the same family, `interface` indices in
    /// range. The error text names the offending entry.
    pub fn validate(&self) -> Result<(), String> {
        for (i, intf) in self.interfaces.iter().enumerate() {
            if intf.name.is_empty() {
                return Err(format!("interfaces[{i}]: empty name"));
            }
        }
        for (i, ip) in self.ips.iter().enumerate() {
            let (addr, _) = parse_cidr(&ip.address)
                .ok_or_else(|| format!("ips[{i}]: address {:?} is not a CIDR", ip.address))?;
            if let Some(gw) = &ip.gateway {
                let gw: IpAddr = gw
                    .parse()
                    .map_err(|_| format!("ips[{i}]: gateway {gw:?} is not an IP address"))?;
                if gw.is_ipv4() != addr.is_ipv4() {
                    return Err(format!(
                        "ips[{i}]: gateway {gw} is not of the address' family"
                    ));
                }
            }
            if let Some(idx) = ip.interface {
                if idx >= self.interfaces.len() {
                    return Err(format!(
                        "ips[{i}]: interface index {idx} out of range ({} interfaces)",
                        self.interfaces.len()
                    ));
                }
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let (dst, _) = parse_cidr(&r.dst)
                .ok_or_else(|| format!("routes[{i}]: dst {:?} is not a CIDR", r.dst))?;
            if let Some(gw) = &r.gw {
                let gw: IpAddr = gw
                    .parse()
                    .map_err(|_| format!("routes[{i}]: gw {gw:?} is not an IP address"))?;
                if gw.is_ipv4() != dst.is_ipv4() {
                    return Err(format!("routes[{i}]: gw {gw} is not of the dst' family"));
                }
            }
        }
        Ok(())
    }

    /// The result as printed for `version`. Infallible: call [`validate`](Self::validate)
    /// first (for an unparsable address the IP version falls back to "6" if it contains
    /// `:`, else "4").
    pub fn to_version(&self, version: CniVersion) -> VersionedResult {
        let v11 = version.has_v1_1_result_fields();
        VersionedResult {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| OutInterface {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    mtu: if v11 { i.mtu } else { None },
                    sandbox: i.sandbox.clone(),
                    socket_path: if v11 { i.socket_path.clone() } else { None },
                    pci_id: if v11 { i.pci_id.clone() } else { None },
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| OutIp {
                    version: version.has_ip_version_field().then(|| {
                        match parse_cidr(&ip.address) {
                            Some((addr, _)) => family(&addr),
                            None if ip.address.contains(':') => "6",
                            None => "4",
                        }
                    }),
                    interface: ip.interface,
                    address: ip.address.clone(),
                    gateway: ip.gateway.clone(),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| OutRoute {
                    dst: r.dst.clone(),
                    gw: r.gw.clone(),
                    mtu: if v11 { r.mtu } else { None },
                    advmss: if v11 { r.advmss } else { None },
                    priority: if v11 { r.priority } else { None },
                    table: if v11 { r.table } else { None },
                    scope: if v11 { r.scope } else { None },
                })
                .collect(),
            dns: (!self.dns.is_empty()).then(|| self.dns.clone()),
        }
    }

    /// Parses a `prevResult` (any supported version) into the internal form.
    ///
    /// The version is the prevResult's own `cniVersion` if present, else the config's
    /// (results before 1.0.0 did not always carry one). It must be one kuryr supports
    /// (code 1; the 0.1.0/0.2.0 `ip4`/`ip6` shape is rejected). Structure and addresses
    /// are then checked (code 6 on failure): a 0.x `ips[].version` must match the address
    /// family; in 1.x it is ignored. Empty strings and zero MTU/advmss/priority are read
    /// as unset (libcni writes them with `omitempty`); `null` lists read as empty. An
    /// empty object `{}` is an empty result.
    pub fn from_prev_result(value: &Value, config_version: &str) -> Result<CniResult, CniError> {
        let obj = value.as_object().ok_or_else(|| {
            CniError::decoding(
                "could not parse prevResult",
                "prevResult is not a JSON object",
            )
        })?;
        let version_str = match obj.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            None | Some(Value::Null) | Some(Value::String(_)) => config_version,
            Some(other) => {
                return Err(CniError::decoding(
                    "could not parse prevResult",
                    format!("prevResult cniVersion must be a string, got {other}"),
                ))
            }
        };
        let version = CniVersion::parse(version_str).ok_or_else(|| {
            let mut e = unsupported_version(version_str);
            e.msg = "unsupported prevResult version".to_owned();
            e
        })?;
        let raw: RawResult = serde_json::from_value(value.clone())
            .map_err(|e| CniError::decoding("could not parse prevResult", e.to_string()))?;
        if raw.ip4.is_some() || raw.ip6.is_some() {
            return Err(CniError::decoding(
                "could not parse prevResult",
                "ip4/ip6 keys are the 0.2.0 result shape, which is not supported",
            ));
        }
        let result = CniResult {
            interfaces: raw
                .interfaces
                .unwrap_or_default()
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: non_empty(i.mac),
                    mtu: non_zero(i.mtu),
                    sandbox: non_empty(i.sandbox),
                    socket_path: non_empty(i.socket_path),
                    pci_id: non_empty(i.pci_id),
                })
                .collect(),
            ips: raw
                .ips
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(n, ip)| {
                    if let (true, Some(v)) = (version.has_ip_version_field(), non_empty(ip.version))
                    {
                        let fam = parse_cidr(&ip.address).map(|(a, _)| family(&a));
                        if v != "4" && v != "6" {
                            return Err(format!("ips[{n}]: version {v:?} is not \"4\" or \"6\""));
                        }
                        if fam.is_some_and(|f| f != v) {
                            return Err(format!(
                                "ips[{n}]: version {v:?} does not match address {:?}",
                                ip.address
                            ));
                        }
                    }
                    Ok(IpConfig {
                        interface: ip.interface,
                        address: ip.address,
                        gateway: non_empty(ip.gateway),
                    })
                })
                .collect::<Result<_, String>>()
                .map_err(|e| CniError::decoding("could not parse prevResult", e))?,
            routes: raw
                .routes
                .unwrap_or_default()
                .into_iter()
                .map(|r| Route {
                    dst: r.dst,
                    gw: non_empty(r.gw),
                    mtu: non_zero(r.mtu),
                    advmss: non_zero(r.advmss),
                    priority: non_zero(r.priority),
                    table: r.table,
                    scope: r.scope,
                })
                .collect(),
            dns: raw
                .dns
                .map(|d| Dns {
                    nameservers: d.nameservers.unwrap_or_default(),
                    domain: non_empty(d.domain),
                    search: d.search.unwrap_or_default(),
                    options: d.options.unwrap_or_default(),
                })
                .unwrap_or_default(),
        };
        result
            .validate()
            .map_err(|e| CniError::decoding("could not parse prevResult", e))?;
        Ok(result)
    }

    /// Chaining on ADD: the previous plugins' result comes first, ours is appended.
    /// `interfaces`, `ips` and `routes` of `prev` keep their positions; our `ips[].interface`
    /// indices are shifted by `prev.interfaces.len()`. DNS: `prev`'s values are kept, ours
    /// are appended to the lists (without duplicates) and fill an unset `domain`.
    pub fn chained(prev: CniResult, ours: CniResult) -> CniResult {
        let offset = prev.interfaces.len();
        let mut out = prev;
        out.interfaces.extend(ours.interfaces);
        out.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        out.routes.extend(ours.routes);
        let extend_unique = |dst: &mut Vec<String>, src: Vec<String>| {
            for s in src {
                if !dst.contains(&s) {
                    dst.push(s);
                }
            }
        };
        extend_unique(&mut out.dns.nameservers, ours.dns.nameservers);
        extend_unique(&mut out.dns.search, ours.dns.search);
        extend_unique(&mut out.dns.options, ours.dns.options);
        if out.dns.domain.is_none() {
            out.dns.domain = ours.dns.domain;
        }
        out
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}
fn non_zero(n: Option<u32>) -> Option<u32> {
    n.filter(|n| *n != 0)
}

/// A result in the shape of one output version; serialize it to print it. Key order
/// follows libcni: `cniVersion, interfaces, ips, routes, dns`; in `ips`:
/// `version, interface, address, gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionedResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<OutInterface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<OutIp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<OutRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

impl VersionedResult {
    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutInterface {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(rename = "socketPath", skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutRoute {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

// Lenient input shapes for prevResult (every field optional, unknown keys ignored).

#[derive(Deserialize)]
struct RawResult {
    #[serde(default)]
    interfaces: Option<Vec<RawInterface>>,
    #[serde(default)]
    ips: Option<Vec<RawIp>>,
    #[serde(default)]
    routes: Option<Vec<RawRoute>>,
    #[serde(default)]
    dns: Option<RawDns>,
    #[serde(default)]
    ip4: Option<Value>,
    #[serde(default)]
    ip6: Option<Value>,
}

#[derive(Deserialize)]
struct RawInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(rename = "socketPath", default)]
    socket_path: Option<String>,
    #[serde(rename = "pciID", default)]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct RawIp {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Deserialize)]
struct RawDns {
    #[serde(default)]
    nameservers: Option<Vec<String>>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    search: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Vec<String>>,
}
