//! L3 of a pod interface from its VIF: addresses, routes, and the CNI result that reports them.

use std::net::IpAddr;

use ipnet::IpNet;
use kuryr_cni_api::{CniResult, Interface, IpConfig, Route};
use kuryr_core::vif::Vif;
use kuryr_netplumb::{IfaceConfig, MacAddr, RouteSpec};

use crate::attachments::{AttachedIface, Attachment};

/// Addresses with the subnet prefix length.
pub fn addresses(vif: &Vif) -> Result<Vec<IpNet>, String> {
    vif.ips
        .iter()
        .map(|ip| {
            let len = ip.prefix_len().map_err(|e| e.to_string())?;
            IpNet::new(ip.address, len).map_err(|e| format!("{}/{len}: {e}", ip.address))
        })
        .collect()
}

/// Routes of the interface: every subnet host route, plus (default interface only) one
/// default route per address family via the first subnet gateway of that family.
pub fn routes(vif: &Vif, ifname: &str, default: bool) -> Result<Vec<RouteSpec>, String> {
    let mut out: Vec<RouteSpec> = Vec::new();
    let mut push = |r: RouteSpec| {
        if !out
            .iter()
            .any(|o| o.dest.trunc() == r.dest.trunc() && o.gateway == r.gateway)
        {
            out.push(r);
        }
    };
    for ip in &vif.ips {
        for r in &ip.routes {
            let dest: IpNet = r
                .destination
                .parse()
                .map_err(|_| format!("host route destination {:?} is not a CIDR", r.destination))?;
            if dest.prefix_len() == 0 && !default {
                // A default route on a secondary interface would fight the pod's default one.
                continue;
            }
            push(RouteSpec::via(ifname, dest, r.gateway));
        }
    }
    if default {
        for v6 in [false, true] {
            let gw = vif
                .ips
                .iter()
                .filter(|ip| ip.address.is_ipv6() == v6)
                .find_map(|ip| ip.gateway);
            if let Some(gw) = gw {
                push(RouteSpec::default_via(ifname, gw));
            }
        }
    }
    Ok(out)
}

/// Everything `configure_interface` should set on the pod end.
pub fn iface_config(
    vif: &Vif,
    ifname: &str,
    default: bool,
    mtu: u32,
    tx_checksum_off: bool,
) -> Result<IfaceConfig, String> {
    let mac: MacAddr = vif
        .mac
        .parse()
        .map_err(|_| format!("MAC {:?} does not parse", vif.mac))?;
    Ok(IfaceConfig {
        ifname: ifname.to_owned(),
        mac: Some(mac),
        mtu: Some(mtu),
        addresses: addresses(vif)?,
        routes: routes(vif, ifname, default)?,
        disable_tx_checksum: tx_checksum_off,
        // Announced after the port is ACTIVE, off the request path (`crate::cni`).
        announce: false,
    })
}

/// The ADD result (1.1.0 form): per interface the host device (if any, no sandbox) and the
/// pod end (sandbox = netns path); IPs point at the pod end; routes and DNS from the subnets.
pub fn cni_result(att: &Attachment) -> CniResult {
    let mut res = CniResult::default();
    let mut ifaces: Vec<&AttachedIface> = att.interfaces.iter().collect();
    // The default interface first, so `ips[0]` is the pod's primary address.
    ifaces.sort_by_key(|i| !i.default);
    for iface in ifaces {
        if !iface.host_ifname.is_empty() {
            res.interfaces.push(Interface {
                name: iface.host_ifname.clone(),
                ..Default::default()
            });
        }
        let idx = res.interfaces.len();
        res.interfaces.push(Interface {
            name: iface.ifname.clone(),
            mac: Some(iface.vif.mac.clone()),
            mtu: Some(iface.mtu),
            sandbox: Some(att.netns.clone()),
            ..Default::default()
        });
        for (ip, net) in iface
            .vif
            .ips
            .iter()
            .zip(addresses(&iface.vif).unwrap_or_default())
        {
            res.ips.push(IpConfig {
                interface: Some(idx),
                address: net.to_string(),
                gateway: ip.gateway.map(|g| g.to_string()),
            });
            for d in &ip.dns {
                let d = d.to_string();
                if !res.dns.nameservers.contains(&d) {
                    res.dns.nameservers.push(d);
                }
            }
        }
        for r in routes(&iface.vif, &iface.ifname, iface.default).unwrap_or_default() {
            res.routes.push(Route {
                dst: r.dest.trunc().to_string(),
                gw: r.gateway.map(|g| g.to_string()),
                ..Default::default()
            });
        }
    }
    res
}

/// The gateway of a default route, if `r` is one.
pub fn default_gateway(r: &RouteSpec) -> Option<IpAddr> {
    (r.dest.prefix_len() == 0).then_some(r.gateway).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::{attachment, vif};
    use kuryr_core::vif::{VifIp, VifRoute};

    fn dual_stack_vif() -> Vif {
        let mut v = vif("p1");
        v.ips[0].routes = vec![VifRoute {
            destination: "10.128.0.0/14".into(),
            gateway: "10.244.0.254".parse().expect("ip"),
        }];
        v.ips[0].dns = vec!["10.96.0.10".parse().expect("ip")];
        v.ips.push(VifIp {
            address: "fd00::5".parse().expect("ip"),
            subnet_cidr: "fd00::/64".into(),
            subnet_id: None,
            gateway: Some("fd00::1".parse().expect("ip")),
            routes: vec![],
            dns: vec!["10.96.0.10".parse().expect("ip")],
        });
        v
    }

    #[test]
    fn config_has_addresses_host_routes_and_default_routes() {
        let cfg = iface_config(&dual_stack_vif(), "eth0", true, 1400, true).expect("config");
        assert_eq!(cfg.mtu, Some(1400));
        assert!(cfg.disable_tx_checksum && !cfg.announce);
        let addrs: Vec<String> = cfg.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.244.0.5/16", "fd00::5/64"]);
        let routes: Vec<String> = cfg
            .routes
            .iter()
            .map(|r| format!("{} via {:?}", r.dest, r.gateway))
            .collect();
        assert_eq!(
            routes,
            [
                "10.128.0.0/14 via Some(10.244.0.254)",
                "0.0.0.0/0 via Some(10.244.0.1)",
                "::/0 via Some(fd00::1)"
            ]
        );
    }

    #[test]
    fn secondary_interface_gets_no_default_route() {
        let cfg = iface_config(&dual_stack_vif(), "eth1", false, 1400, false).expect("config");
        assert!(
            cfg.routes.iter().all(|r| default_gateway(r).is_none()),
            "{:?}",
            cfg.routes
        );
        assert_eq!(cfg.routes.len(), 1);
    }

    #[test]
    fn result_reports_tap_and_pod_end_with_sandbox() {
        let mut a = attachment("c1", "eth0", 1);
        a.interfaces[0].vif = dual_stack_vif();
        let r = cni_result(&a);
        r.validate().expect("valid result");
        assert_eq!(r.interfaces.len(), 2);
        assert_eq!(r.interfaces[0].name, a.interfaces[0].host_ifname);
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.interfaces[1].name, "eth0");
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/x"));
        assert_eq!(r.interfaces[1].mac.as_deref(), Some("fa:16:3e:00:00:01"));
        assert!(r.ips.iter().all(|ip| ip.interface == Some(1)));
        assert_eq!(r.ips[0].address, "10.244.0.5/16");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.244.0.1"));
        assert!(r
            .routes
            .iter()
            .any(|rt| rt.dst == "0.0.0.0/0" && rt.gw.as_deref() == Some("10.244.0.1")));
        assert_eq!(r.dns.nameservers, ["10.96.0.10"]);
    }

    #[test]
    fn nested_result_has_no_host_interface() {
        let mut a = attachment("c1", "eth0", 1);
        a.interfaces[0].host_ifname.clear();
        let r = cni_result(&a);
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.ips[0].interface, Some(0));
    }
}
