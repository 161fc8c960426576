//! Neutron (networking v2.0): networks, subnets, subnet pools, ports, routers,
//! security groups, address groups, tags, trunks. One file per resource, re-exported here.
//!
//! Response structs ignore unknown fields and default missing ones (so `fields=`
//! queries decode). Create structs skip empty strings and `None`s when serializing.

use crate::resource::Kind;
use crate::session::{Service, Session};

const NET: Service = Service::Network;

/// Max ids per `id=` batch in [`Neutron::list_ports_by_id`] (keeps the URL < 8 KiB).
pub const ID_BATCH: usize = 100;

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

mod address_groups;
mod floating_ips;
mod networks;
mod ports;
mod routers;
mod security_groups;
mod tags;
mod trunks;

pub use address_groups::*;
pub use floating_ips::*;
pub use networks::*;
pub use ports::*;
pub use routers::*;
pub use security_groups::*;
pub use tags::*;
pub use trunks::*;

// ---------------------------------------------------------------- client

const fn kind(path: &'static str, one: &'static str, many: &'static str) -> Kind {
    Kind::new(NET, "/v2.0", path, one, many)
}

const NETWORKS: Kind = kind("networks", "network", "networks");
const SUBNETS: Kind = kind("subnets", "subnet", "subnets");
const SUBNETPOOLS: Kind = kind("subnetpools", "subnetpool", "subnetpools");
const PORTS: Kind = kind("ports", "port", "ports");
const ROUTERS: Kind = kind("routers", "router", "routers");
const SECURITY_GROUPS: Kind = kind("security-groups", "security_group", "security_groups");
const SG_RULES: Kind = kind(
    "security-group-rules",
    "security_group_rule",
    "security_group_rules",
);
const ADDRESS_GROUPS: Kind = kind("address-groups", "address_group", "address_groups");
const TRUNKS: Kind = kind("trunks", "trunk", "trunks");
const FLOATING_IPS: Kind = kind("floatingips", "floatingip", "floatingips");

/// Neutron client over a shared [`Session`].
#[derive(Clone, Debug)]
pub struct Neutron {
    session: Session,
}

impl Neutron {
    pub fn new(session: Session) -> Self {
        Neutron { session }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}

#[cfg(test)]
mod tests {
    use super::tags::TagsBody;
    use super::trunks::PortIdOnly;
    use super::*;
    use crate::serde_util::decode_key;
    use serde_json::json;

    const PORT: &str = r#"{"port": {
        "admin_state_up": true, "allowed_address_pairs": [],
        "binding:host_id": "vm", "binding:profile": {}, "binding:vif_details": {"port_filter": true, "connectivity": "l2", "bridge_name": "br-int", "datapath_type": "netdev"},
        "binding:vif_type": "ovs", "binding:vnic_type": "normal",
        "created_at": "2024-05-01T12:00:00Z", "data_plane_status": null, "description": "",
        "device_id": "pod-uid-1", "device_owner": "compute:kuryr", "dns_assignment": [], "dns_name": "",
        "extra_dhcp_opts": [], "fixed_ips": [{"ip_address": "10.0.0.5", "subnet_id": "a0304c3a-4f08-4c43-88af-d796509c97d2"}],
        "id": "65c0ee9f-d634-4522-8954-51021b570b0d", "ip_allocation": "immediate", "mac_address": "fa:16:3e:c9:cb:f0",
        "name": "pod-1", "network_id": "a87cc70a-3e15-4acf-8205-9b711a3531b7", "port_security_enabled": true,
        "project_id": "7e02058126cc4950b75f9970368ba177", "propagate_uplink_status": false, "qos_network_policy_id": null, "qos_policy_id": null,
        "resource_request": null, "revision_number": 3, "security_groups": ["f0ac4394-7e4a-4409-9701-ba8be283dbc3"],
        "status": "DOWN", "tags": ["kuryr"], "tenant_id": "7e02058126cc4950b75f9970368ba177", "updated_at": "2024-05-01T12:00:01Z"
    }}"#;

    #[test]
    fn decode_port() {
        let p: Port = decode_key(PORT.as_bytes(), "port").unwrap();
        assert_eq!(p.id, "65c0ee9f-d634-4522-8954-51021b570b0d");
        assert_eq!(p.binding_vif_type, "ovs");
        assert_eq!(p.binding_host_id, "vm");
        assert_eq!(p.binding_vif_details["bridge_name"], "br-int");
        assert_eq!(p.ip(), Some("10.0.0.5"));
        assert_eq!(
            p.fixed_ips[0].subnet_id,
            "a0304c3a-4f08-4c43-88af-d796509c97d2"
        );
        assert_eq!(p.security_groups.len(), 1);
        assert_eq!(p.tags, ["kuryr"]);
        assert!(p.admin_state_up);
        assert_eq!(p.revision_number, Some(3));
        assert_eq!(p.port_security_enabled, Some(true));
    }

    #[test]
    fn decode_sparse_ports_from_fields_query() {
        let body = br#"{"ports": [{"id": "a", "status": "ACTIVE"}, {"id": "b", "status": "DOWN", "device_id": null, "binding:host_id": null, "fixed_ips": null}]}"#;
        let ps: Vec<Port> = decode_key(body, "ports").unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[1].status, "DOWN");
        assert_eq!(ps[1].device_id, "");
        assert!(ps[1].fixed_ips.is_empty());
        assert!(ps[0].binding_vif_details.is_null());
    }

    #[test]
    fn decode_network_subnet_pool() {
        let net = br#"{"network": {"admin_state_up": true, "availability_zone_hints": [], "availability_zones": [], "created_at": "2024-05-01T12:00:00Z", "description": "", "id": "a87cc70a-3e15-4acf-8205-9b711a3531b7", "ipv4_address_scope": null, "ipv6_address_scope": null, "l2_adjacency": true, "mtu": 1442, "name": "k8s-pods", "port_security_enabled": true, "project_id": "p", "provider:network_type": "geneve", "provider:physical_network": null, "provider:segmentation_id": 7, "qos_policy_id": null, "revision_number": 2, "router:external": false, "shared": false, "status": "ACTIVE", "subnets": ["s1"], "tags": [], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}}"#;
        let n: Network = decode_key(net, "network").unwrap();
        assert_eq!(n.mtu, Some(1442));
        assert_eq!(n.provider_network_type.as_deref(), Some("geneve"));
        assert_eq!(n.provider_segmentation_id, Some(7));
        assert!(!n.external);
        assert_eq!(n.subnets, ["s1"]);

        let subnet = br#"{"subnet": {"allocation_pools": [{"end": "10.0.0.254", "start": "10.0.0.2"}], "cidr": "10.0.0.0/24", "created_at": "2024-05-01T12:00:00Z", "description": "", "dns_nameservers": ["10.96.0.10"], "dns_publish_fixed_ip": null, "enable_dhcp": false, "gateway_ip": "10.0.0.1", "host_routes": [{"destination": "10.96.0.0/12", "nexthop": "10.0.0.1"}], "id": "s1", "ip_version": 4, "ipv6_address_mode": null, "ipv6_ra_mode": null, "name": "pods", "network_id": "n1", "project_id": "p", "revision_number": 0, "segment_id": null, "service_types": [], "subnetpool_id": "sp1", "tags": [], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}}"#;
        let s: Subnet = decode_key(subnet, "subnet").unwrap();
        assert_eq!(s.cidr, "10.0.0.0/24");
        assert_eq!(s.gateway_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.subnetpool_id.as_deref(), Some("sp1"));
        assert_eq!(s.host_routes[0].destination, "10.96.0.0/12");
        assert_eq!(s.dns_nameservers, ["10.96.0.10"]);
        assert_eq!(s.allocation_pools[0].start, "10.0.0.2");

        let no_gw = br#"{"subnet": {"id": "s2", "gateway_ip": null, "ip_version": 6, "cidr": "fd00::/64"}}"#;
        let s: Subnet = decode_key(no_gw, "subnet").unwrap();
        assert_eq!(s.gateway_ip, None);
        assert_eq!(s.ip_version, 6);

        let pools = br#"{"subnetpools": [{"address_scope_id": null, "created_at": "2024-05-01T12:00:00Z", "default_prefixlen": "26", "default_quota": null, "description": "", "id": "sp1", "ip_version": 4, "is_default": false, "max_prefixlen": 32, "min_prefixlen": "8", "name": "pods", "prefixes": ["10.0.0.0/16"], "project_id": "p", "revision_number": 0, "shared": false, "tags": ["kuryr"], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}]}"#;
        let p: Vec<SubnetPool> = decode_key(pools, "subnetpools").unwrap();
        assert_eq!(p[0].default_prefixlen, Some(26));
        assert_eq!(p[0].min_prefixlen, Some(8));
        assert_eq!(p[0].max_prefixlen, Some(32));
        assert_eq!(p[0].prefixes, ["10.0.0.0/16"]);
    }

    #[test]
    fn decode_router_sg_trunk() {
        let ri = br#"{"id": "r1", "network_id": "n1", "port_id": "p1", "subnet_id": "s1", "subnet_ids": ["s1"], "project_id": "p", "tenant_id": "p", "tags": []}"#;
        let ri: RouterInterfaceInfo = serde_json::from_slice(ri).unwrap();
        assert_eq!((ri.id.as_str(), ri.port_id.as_str()), ("r1", "p1"));

        let sg = br#"{"security_group": {"id": "sg1", "name": "kuryr-pods", "description": "", "stateful": true, "project_id": "p", "tags": [], "revision_number": 1,
            "security_group_rules": [
              {"id": "r1", "security_group_id": "sg1", "direction": "egress", "ethertype": "IPv6", "protocol": null, "port_range_min": null, "port_range_max": null, "remote_ip_prefix": null, "remote_group_id": null, "remote_address_group_id": null, "description": null, "normalized_cidr": null},
              {"id": "r2", "security_group_id": "sg1", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "10.0.0.0/16", "remote_group_id": null, "description": "http"}]}}"#;
        let sg: SecurityGroup = decode_key(sg, "security_group").unwrap();
        assert_eq!(sg.security_group_rules.len(), 2);
        assert_eq!(sg.security_group_rules[0].direction, Direction::Egress);
        assert_eq!(sg.security_group_rules[0].ethertype, EtherType::IPv6);
        assert_eq!(sg.security_group_rules[1].port_range_max, Some(80));
        assert_eq!(sg.security_group_rules[1].protocol.as_deref(), Some("tcp"));

        // add_subports answers with the bare trunk.
        let trunk = br#"{"admin_state_up": true, "created_at": "2024-05-01T12:00:00Z", "description": "", "id": "t1", "name": "trunk0", "port_id": "parent", "project_id": "p", "revision_number": 2, "status": "ACTIVE", "sub_ports": [{"port_id": "c1", "segmentation_id": 101, "segmentation_type": "vlan"}], "tags": [], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}"#;
        let t: Trunk = serde_json::from_slice(trunk).unwrap();
        assert_eq!(t.sub_ports, [SubPort::vlan("c1", 101)]);
        assert_eq!(t.port_id, "parent");
    }

    #[test]
    fn address_group_requests_and_answers() {
        // As Neutron 29 answers POST /v2.0/address-groups.
        let body = br#"{"address_group": {"id": "9f7a6c3e-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "name": "kuryr-rs/c1/ag/0123", "description": "kuryr-rs.cluster=c1",
            "project_id": "p", "tenant_id": "p", "addresses": ["10.0.0.5/32", "fd00::5/128"], "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z", "revision_number": 2}}"#;
        let ag: AddressGroup = decode_key(body, "address_group").unwrap();
        assert_eq!(ag.addresses, ["10.0.0.5/32", "fd00::5/128"]);
        assert_eq!(ag.description, "kuryr-rs.cluster=c1");
        assert_eq!(ag.revision_number, Some(2));
        let sparse: AddressGroup =
            serde_json::from_value(json!({"id": "a", "addresses": null, "name": null})).unwrap();
        assert!(sparse.addresses.is_empty() && sparse.name.is_empty());

        let create = AddressGroupCreate {
            name: "n".into(),
            addresses: vec![],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("address_group", &create)).unwrap(),
            json!({"address_group": {"name": "n", "addresses": []}})
        );
        let addrs = ["10.0.0.5/32"];
        assert_eq!(
            serde_json::to_value(address_groups::AddressesBody { addresses: &addrs }).unwrap(),
            json!({"addresses": ["10.0.0.5/32"]})
        );

        let rule = SecurityGroupRuleCreate {
            security_group_id: "sg".into(),
            direction: Direction::Egress,
            ethertype: EtherType::IPv6,
            remote_address_group_id: Some("ag".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            json!({"security_group_id": "sg", "direction": "egress", "ethertype": "IPv6", "remote_address_group_id": "ag"})
        );
        let r: SecurityGroupRule = serde_json::from_value(json!({"id": "r", "security_group_id": "sg", "direction": "ingress",
            "ethertype": "IPv4", "protocol": "sctp", "port_range_min": 1, "port_range_max": 65535,
            "remote_ip_prefix": null, "remote_group_id": null, "remote_address_group_id": "ag", "description": null})).unwrap();
        assert_eq!(r.remote_address_group_id.as_deref(), Some("ag"));
        assert_eq!(r.port_range_max, Some(65535));
    }

    #[test]
    fn decode_parent_port_with_trunk_details_and_subport() {
        // A trunk's parent port (GET /ports?fixed_ips=ip_address=…) and one of its subports,
        // as Neutron 29 / ML2-OVN answers them.
        let body = br#"{"ports": [{"id": "parent", "network_id": "workers", "device_id": "vm-uuid", "device_owner": "compute:nova",
            "fixed_ips": [{"subnet_id": "wsub", "ip_address": "192.168.77.10"}], "status": "ACTIVE",
            "trunk_details": {"trunk_id": "t1", "sub_ports": [
                {"segmentation_id": 101, "segmentation_type": "vlan", "port_id": "c1", "mac_address": "fa:16:3e:0f:6a:89"}]}},
            {"id": "c1", "network_id": "pods", "device_id": "", "device_owner": "trunk:subport", "status": "DOWN",
             "binding:host_id": "", "binding:vif_type": "ovs", "binding:profile": {"parent_name": "parent", "tag": 101}}]}"#;
        let ps: Vec<Port> = decode_key(body, "ports").unwrap();
        let td = ps[0].trunk_details.as_ref().expect("trunk_details");
        assert_eq!(td.trunk_id, "t1");
        assert_eq!(td.sub_ports, [SubPort::vlan("c1", 101)]);
        assert_eq!(ps[1].trunk_details, None);
        assert_eq!(ps[1].device_owner, "trunk:subport");
        assert_eq!(ps[1].binding_profile["parent_name"], "parent");
        let null: Port = serde_json::from_value(json!({"id": "p", "trunk_details": null})).unwrap();
        assert_eq!(null.trunk_details, None);
    }

    #[test]
    fn encode_trunk_requests() {
        let t = TrunkCreate {
            port_id: "parent".into(),
            name: "worker-0".into(),
            sub_ports: Some(vec![SubPort::vlan("c1", 7)]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("trunk", &t)).unwrap(),
            json!({"trunk": {"port_id": "parent", "name": "worker-0",
                   "sub_ports": [{"port_id": "c1", "segmentation_type": "vlan", "segmentation_id": 7}]}})
        );
        assert_eq!(
            serde_json::to_value(TrunkCreate {
                port_id: "p".into(),
                ..Default::default()
            })
            .unwrap(),
            json!({"port_id": "p"})
        );
    }

    #[test]
    fn encode_requests() {
        let bulk = [
            PortCreate {
                network_id: "n1".into(),
                name: "a".into(),
                device_owner: "compute:kuryr".into(),
                binding_host_id: "vm".into(),
                fixed_ips: Some(vec![FixedIpRequest::subnet("s1")]),
                security_groups: Some(vec![]),
                ..Default::default()
            },
            PortCreate {
                network_id: "n1".into(),
                ..Default::default()
            },
        ];
        let body = serde_json::to_value(crate::serde_util::Wrapped("ports", &bulk[..])).unwrap();
        assert_eq!(
            body,
            json!({"ports": [
                {"network_id": "n1", "name": "a", "device_owner": "compute:kuryr", "binding:host_id": "vm",
                 "fixed_ips": [{"subnet_id": "s1"}], "security_groups": []},
                {"network_id": "n1"}]})
        );

        let upd = PortUpdate {
            device_id: Some(String::new()),
            binding_host_id: Some(String::new()),
            name: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&upd).unwrap(),
            json!({"name": "x", "device_id": "", "binding:host_id": ""})
        );

        let sn = SubnetCreate {
            network_id: "n".into(),
            subnetpool_id: Some("sp".into()),
            prefixlen: Some(28),
            gateway_ip: Some(None),
            host_routes: Some(vec![HostRoute {
                destination: "0.0.0.0/0".into(),
                nexthop: "10.0.0.1".into(),
            }]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&sn).unwrap(),
            json!({"network_id": "n", "ip_version": 4, "subnetpool_id": "sp", "prefixlen": 28, "gateway_ip": null,
                   "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.1"}]})
        );

        assert_eq!(
            serde_json::to_value(RouterInterface::subnet("s")).unwrap(),
            json!({"subnet_id": "s"})
        );
        assert_eq!(
            serde_json::to_value(RouterInterface::port("p")).unwrap(),
            json!({"port_id": "p"})
        );

        let rule = SecurityGroupRuleCreate {
            security_group_id: "sg".into(),
            protocol: Some("tcp".into()),
            port_range_min: Some(53),
            port_range_max: Some(53),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            json!({"security_group_id": "sg", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                   "port_range_min": 53, "port_range_max": 53})
        );

        let tags = ["a", "b"];
        assert_eq!(
            serde_json::to_value(TagsBody { tags: &tags }).unwrap(),
            json!({"tags": ["a", "b"]})
        );
        let rm: Vec<PortIdOnly<'_>> = vec![PortIdOnly { port_id: "c1" }];
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("sub_ports", &rm)).unwrap(),
            json!({"sub_ports": [{"port_id": "c1"}]})
        );
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped(
                "sub_ports",
                &[SubPort::vlan("c1", 5)]
            ))
            .unwrap(),
            json!({"sub_ports": [{"port_id": "c1", "segmentation_type": "vlan", "segmentation_id": 5}]})
        );
        assert_eq!(
            serde_json::to_value(&NetworkCreate {
                name: "n".into(),
                mtu: Some(1400),
                ..Default::default()
            })
            .unwrap(),
            json!({"name": "n", "mtu": 1400})
        );
    }
}
