//! "VMs": plain Neutron ports plugged into network namespaces the way Nova + os-vif would plug
//! a VM's interface (veth into br-int with the port's iface-id), outside Kubernetes. Used to
//! prove pods and VMs share one SDN, and by the plumbing tests.

use crate::{stack_env, state_dir, unique};
use kuryr_core::vif::host_ifname;
use kuryr_netplumb::{
    configure_interface, plug_veth, IfaceConfig, IpNet, MacAddr, Netns, RouteSpec, VethPlug,
};
use kuryr_openstack::neutron::{FixedIpRequest, Port, PortCreate};
use kuryr_openstack::{CloudConfig, Neutron, Session};
use kuryr_ovsdb::{Ovs, PortSpec};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Neutron client for the kuryr application credential, on its own runtime.
pub struct Cloud {
    pub rt: tokio::runtime::Runtime,
    pub neutron: Neutron,
}

impl Cloud {
    pub fn connect() -> Cloud {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let cloud = CloudConfig::from_clouds_yaml(state_dir().join("clouds.yaml"), "kuryr")
            .expect("clouds.yaml");
        let session = rt
            .block_on(Session::from_cloud(&cloud))
            .expect("keystone token for the kuryr application credential");
        Cloud {
            rt,
            neutron: Neutron::new(session),
        }
    }

    /// Ports whose device_id is `device_id` (kuryr stamps the pod UID there).
    pub fn ports_of_device(&self, device_id: &str) -> Vec<Port> {
        let q = kuryr_openstack::Query::new().eq("device_id", device_id);
        self.rt
            .block_on(self.neutron.list_ports(&q))
            .expect("list ports")
    }

    /// Wait until all `ids` are ACTIVE (30 s), returning how long it took.
    pub fn wait_active(&self, ids: &[String]) -> Duration {
        let t = Instant::now();
        loop {
            let now = self
                .rt
                .block_on(self.neutron.list_ports_by_id(ids, &["id", "status"]))
                .expect("list ports by id");
            if now.len() == ids.len() && now.iter().all(|p| p.status == "ACTIVE") {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "ports not ACTIVE after 30 s: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One plugged port; everything is removed on drop (OVS port, netns, Neutron port).
pub struct PlainPort {
    pub port: Port,
    pub ns_name: String,
    pub ns: Netns,
    pub tap: String,
    pub ip: IpAddr,
    neutron: Neutron,
}

impl PlainPort {
    /// Create `n` ports in one bulk call on the stack's pod network (security group kuryr-pods),
    /// bound to this host, and plug each into a fresh netns.
    pub fn create(cloud: &Cloud, n: usize) -> Vec<PlainPort> {
        let env = stack_env();
        let name = unique("kst-vm-");
        let reqs: Vec<PortCreate> = (0..n)
            .map(|i| PortCreate {
                network_id: env["POD_NET_ID"].clone(),
                name: format!("{name}-{i}"),
                fixed_ips: Some(vec![FixedIpRequest {
                    subnet_id: Some(env["POD_SUBNET_ID"].clone()),
                    ..Default::default()
                }]),
                device_owner: "compute:nova".into(),
                device_id: format!("{name}-{i}"),
                binding_host_id: env["STACK_HOST"].clone(),
                security_groups: Some(vec![env["POD_SG_ID"].clone()]),
                ..Default::default()
            })
            .collect();
        let ports = cloud
            .rt
            .block_on(cloud.neutron.create_ports(&reqs))
            .expect("bulk create ports");
        let net = cloud
            .rt
            .block_on(cloud.neutron.get_network(&env["POD_NET_ID"]))
            .expect("pod network");
        let mtu = net.mtu.unwrap_or(1442);
        let gw: IpAddr = env["POD_GW"].parse().expect("gw");
        let prefix: u8 = env["POD_CIDR"]
            .split('/')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("prefix");
        let mut out = Vec::new();
        for port in ports {
            let ns_name = unique("kst-vm-");
            let ns = Netns::create_named(&ns_name).expect("create netns");
            let tap = host_ifname(&port.id);
            let ip: IpAddr = port.ip().expect("fixed ip").parse().expect("ip");
            let pp = PlainPort {
                port,
                ns_name,
                ns,
                tap,
                ip,
                neutron: cloud.neutron.clone(),
            };
            pp.plug(&cloud.rt, mtu, gw, prefix);
            out.push(pp);
        }
        out
    }

    fn plug(&self, rt: &tokio::runtime::Runtime, mtu: u32, gw: IpAddr, prefix: u8) {
        let host = Netns::current().expect("host netns");
        let mac: MacAddr = self.port.mac_address.parse().expect("port MAC");
        plug_veth(
            &host,
            &self.ns,
            &VethPlug {
                host_ifname: self.tap.clone(),
                peer_ifname: "eth0".into(),
                mtu: Some(mtu),
                host_mac: None,
                peer_mac: Some(mac),
            },
        )
        .expect("plug veth");
        configure_interface(
            &self.ns,
            &IfaceConfig {
                ifname: "eth0".into(),
                mac: Some(mac),
                mtu: Some(mtu),
                addresses: vec![IpNet::new(self.ip, prefix).expect("cidr")],
                routes: vec![RouteSpec::default_via("eth0", gw)],
                disable_tx_checksum: false,
                announce: true,
            },
        )
        .expect("configure eth0 in the netns");
        rt.block_on(async {
            let ovs = Ovs::connect_default()
                .await
                .expect("OVSDB at /var/run/openvswitch/db.sock");
            ovs.add_port(
                &PortSpec::new("br-int", &self.tap)
                    .iface_id(&self.port.id)
                    .attached_mac(&self.port.mac_address)
                    .iface_status("active")
                    .vm_uuid(&self.port.device_id)
                    .wait_vswitchd(Duration::from_secs(10)),
            )
            .await
            .expect("add the tap to br-int through OVSDB");
        });
    }

    /// `ping -c 3` from this namespace.
    pub fn ping(&self, to: IpAddr) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
            ])
            .arg(to.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for PlainPort {
    fn drop(&mut self) {
        let (neutron, id, tap) = (self.neutron.clone(), self.port.id.clone(), self.tap.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else {
                return;
            };
            rt.block_on(async {
                if let Ok(ovs) = Ovs::connect_default().await {
                    let _ = ovs.del_port("br-int", &tap).await;
                }
                let _ = neutron.delete_port(&id).await;
            })
        })
        .join();
        let _ = Netns::delete_named(&self.ns_name);
    }
}
