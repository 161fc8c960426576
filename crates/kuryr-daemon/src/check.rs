//! CHECK: compare what is in the pod netns with what ADD recorded, and say what differs.

use ipnet::IpNet;
use kuryr_netplumb::{IpFamily, LinkInfo, MacAddr, Netns, RouteInfo};

use crate::attachments::AttachedIface;
use crate::binding::l3;

/// What the pod netns shows for one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodObservation {
    pub link: Option<LinkInfo>,
    pub addresses: Vec<IpNet>,
    /// Main-table routes of both families (all interfaces).
    pub routes: Vec<RouteInfo>,
}

/// Reads `ifname`, its addresses and the routes in `ns` (blocking).
pub fn observe(ns: &Netns, ifname: &str) -> Result<PodObservation, kuryr_netplumb::Error> {
    ns.with_netlink(async |nl| {
        let Some(link) = nl.find_link(ifname).await? else {
            return Ok(PodObservation::default());
        };
        let addresses = nl.addresses(ifname).await?;
        let mut routes = nl.routes(IpFamily::V4).await?;
        routes.extend(nl.routes(IpFamily::V6).await?);
        Ok(PodObservation {
            link: Some(link),
            addresses,
            routes,
        })
    })
}

/// Differences between the recorded interface and the observation (empty = as set up).
pub fn diff_pod(iface: &AttachedIface, obs: &PodObservation) -> Vec<String> {
    let name = &iface.ifname;
    let Some(link) = &obs.link else {
        return vec![format!("interface {name} is missing in the pod netns")];
    };
    let mut out = Vec::new();
    match iface.vif.mac.parse::<MacAddr>() {
        Ok(mac) if link.mac != Some(mac) => out.push(format!(
            "{name}: MAC is {}, expected {mac}",
            link.mac
                .map(|m| m.to_string())
                .unwrap_or_else(|| "unset".into())
        )),
        Ok(_) => {}
        Err(_) => out.push(format!(
            "{name}: recorded MAC {:?} does not parse",
            iface.vif.mac
        )),
    }
    if link.mtu != Some(iface.mtu) {
        out.push(format!(
            "{name}: MTU is {}, expected {}",
            link.mtu.map_or("unset".into(), |m| m.to_string()),
            iface.mtu
        ));
    }
    if !link.admin_up {
        out.push(format!("{name}: is down"));
    }
    match l3::addresses(&iface.vif) {
        Ok(addrs) => {
            for a in addrs {
                if !obs.addresses.contains(&a) {
                    out.push(format!("{name}: address {a} is missing"));
                }
            }
        }
        Err(e) => out.push(format!("{name}: recorded addresses are invalid: {e}")),
    }
    match l3::routes(&iface.vif, name, iface.default) {
        Ok(routes) => {
            for r in routes {
                let dest = r.dest.trunc();
                let found = obs
                    .routes
                    .iter()
                    .any(|o| o.dest == dest && o.gateway == r.gateway && o.oif == Some(link.index));
                if !found {
                    let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                    out.push(format!("{name}: route {dest}{via} is missing"));
                }
            }
        }
        Err(e) => out.push(format!("{name}: recorded routes are invalid: {e}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::attachment;
    use kuryr_netplumb::OperState;

    fn good() -> (AttachedIface, PodObservation) {
        let iface = attachment("c1", "eth0", 1).interfaces.remove(0);
        let link = LinkInfo {
            index: 2,
            name: "eth0".into(),
            mac: Some("fa:16:3e:00:00:01".parse().expect("mac")),
            mtu: Some(1442),
            admin_up: true,
            lower_up: true,
            oper_state: OperState::Up,
            kind: Some("veth".into()),
            link_index: Some(9),
            promiscuity: Some(0),
        };
        let obs = PodObservation {
            link: Some(link),
            addresses: vec![
                "10.244.0.5/16".parse().expect("net"),
                "fe80::1/64".parse().expect("net"),
            ],
            routes: vec![
                RouteInfo {
                    dest: "10.244.0.0/16".parse().expect("net"),
                    gateway: None,
                    oif: Some(2),
                    onlink: false,
                    scope_link: true,
                    metric: None,
                    table: 254,
                },
                RouteInfo {
                    dest: "0.0.0.0/0".parse().expect("net"),
                    gateway: Some("10.244.0.1".parse().expect("ip")),
                    oif: Some(2),
                    onlink: false,
                    scope_link: false,
                    metric: None,
                    table: 254,
                },
            ],
        };
        (iface, obs)
    }

    #[test]
    fn matching_state_has_no_diff() {
        let (iface, obs) = good();
        assert_eq!(diff_pod(&iface, &obs), Vec::<String>::new());
    }

    #[test]
    fn each_difference_is_named() {
        let (iface, mut obs) = good();
        let link = obs.link.as_mut().expect("link");
        link.mac = Some("fa:16:3e:99:99:99".parse().expect("mac"));
        link.mtu = Some(1500);
        link.admin_up = false;
        obs.addresses.retain(|a| a.addr().is_ipv6());
        obs.routes.retain(|r| r.gateway.is_none());
        let d = diff_pod(&iface, &obs);
        assert_eq!(
            d,
            [
                "eth0: MAC is fa:16:3e:99:99:99, expected fa:16:3e:00:00:01",
                "eth0: MTU is 1500, expected 1442",
                "eth0: is down",
                "eth0: address 10.244.0.5/16 is missing",
                "eth0: route 0.0.0.0/0 via 10.244.0.1 is missing",
            ]
        );
    }

    #[test]
    fn route_on_another_interface_does_not_count() {
        let (iface, mut obs) = good();
        obs.routes[1].oif = Some(3);
        assert_eq!(
            diff_pod(&iface, &obs),
            ["eth0: route 0.0.0.0/0 via 10.244.0.1 is missing"]
        );
    }

    #[test]
    fn missing_interface() {
        let (iface, _) = good();
        assert_eq!(
            diff_pod(&iface, &PodObservation::default()),
            ["interface eth0 is missing in the pod netns"]
        );
    }
}
