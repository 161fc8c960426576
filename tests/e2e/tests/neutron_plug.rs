//! A Neutron port plugged the way kuryr-daemon plugs a pod, on the real stack: the port is
//! created through Keystone-authenticated REST (the kuryr application credential), a veth from a
//! fresh network namespace goes into br-int through OVSDB with the port's iface-id, OVN claims
//! it, Neutron reports it ACTIVE, and two such namespaces reach each other (ICMP and TCP).
//! The second namespace stands in for an OpenStack VM on the same network.

use kuryr_core::vif::host_ifname;
use kuryr_e2e::{stack_env, state_dir, unique};
use kuryr_netplumb::{configure_interface, plug_veth, IfaceConfig, IpNet, MacAddr, Netns, RouteSpec, VethPlug};
use kuryr_openstack::neutron::{FixedIpRequest, Port, PortCreate};
use kuryr_openstack::{CloudConfig, Neutron, Session};
use kuryr_ovsdb::{Ovs, PortSpec};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

struct Plugged {
    ns_name: String,
    ns: Netns,
    tap: String,
    ip: IpAddr,
}

/// Everything the test made, removed even when an assertion fails.
struct Cleanup {
    rt: tokio::runtime::Handle,
    neutron: Neutron,
    ports: Vec<String>,
    taps: Vec<String>,
    netns: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (neutron, ports, taps) = (self.neutron.clone(), self.ports.clone(), self.taps.clone());
        let rt = self.rt.clone();
        let _ = std::thread::spawn(move || {
            rt.block_on(async {
                if let Ok(ovs) = Ovs::connect_default().await {
                    for t in &taps {
                        let _ = ovs.del_port("br-int", t).await;
                    }
                }
                for p in &ports {
                    let _ = neutron.delete_port(p).await;
                }
            })
        })
        .join();
        for n in &self.netns {
            let _ = Netns::delete_named(n);
        }
    }
}

async fn plug(port: &Port, mtu: u32, gw: IpAddr, prefix: u8, cleanup: &mut Cleanup) -> Plugged {
    let ns_name = unique("kst-plug-");
    let ns = Netns::create_named(&ns_name).expect("create netns");
    cleanup.netns.push(ns_name.clone());
    let host = Netns::current().expect("host netns");
    let tap = host_ifname(&port.id);
    let mac: MacAddr = port.mac_address.parse().expect("port MAC");
    let ip: IpAddr = port.ip().expect("fixed ip").parse().expect("ip");
    plug_veth(&host, &ns, &VethPlug { host_ifname: tap.clone(), peer_ifname: "eth0".into(), mtu: Some(mtu), host_mac: None, peer_mac: Some(mac) })
        .expect("plug veth");
    cleanup.taps.push(tap.clone());
    configure_interface(
        &ns,
        &IfaceConfig {
            ifname: "eth0".into(),
            mac: Some(mac),
            mtu: Some(mtu),
            addresses: vec![IpNet::new(ip, prefix).expect("cidr")],
            routes: vec![RouteSpec::default_via("eth0", gw)],
            disable_tx_checksum: false,
            announce: true,
        },
    )
    .expect("configure eth0 in the pod netns");
    let ovs = Ovs::connect_default().await.expect("OVSDB at /var/run/openvswitch/db.sock");
    ovs.add_port(
        &PortSpec::new("br-int", &tap)
            .iface_id(&port.id)
            .attached_mac(&port.mac_address)
            .iface_status("active")
            .vm_uuid(&port.device_id)
            .wait_vswitchd(Duration::from_secs(10)),
    )
    .await
    .expect("add the tap to br-int through OVSDB");
    Plugged { ns_name, ns, tap, ip }
}

fn ping(from: &Plugged, to: IpAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &from.ns_name, "ping", "-c", "3", "-i", "0.2", "-W", "2"])
        .arg(to.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn neutron_ports_plugged_into_br_int_go_active_and_talk() {
    let env = stack_env();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cloud = CloudConfig::from_clouds_yaml(state_dir().join("clouds.yaml"), "kuryr").expect("clouds.yaml");
    let session = rt.block_on(Session::from_cloud(&cloud)).expect("keystone token for the kuryr application credential");
    let neutron = Neutron::new(session);
    let mut cleanup = Cleanup { rt: rt.handle().clone(), neutron: neutron.clone(), ports: vec![], taps: vec![], netns: vec![] };

    let host = env["STACK_HOST"].clone();
    let name = unique("kst-plug-");
    let reqs: Vec<PortCreate> = (0..2)
        .map(|i| PortCreate {
            network_id: env["POD_NET_ID"].clone(),
            name: format!("{name}-{i}"),
            fixed_ips: Some(vec![FixedIpRequest { subnet_id: Some(env["POD_SUBNET_ID"].clone()), ..Default::default() }]),
            device_owner: kuryr_core::names::DEVICE_OWNER.into(),
            device_id: format!("{name}-{i}"),
            binding_host_id: host.clone(),
            security_groups: Some(vec![env["POD_SG_ID"].clone()]),
            ..Default::default()
        })
        .collect();
    let ports = rt.block_on(neutron.create_ports(&reqs)).expect("bulk create 2 ports");
    cleanup.ports.extend(ports.iter().map(|p| p.id.clone()));
    assert_eq!(ports.len(), 2);
    for p in &ports {
        assert_eq!(p.binding_vif_type, "ovs", "port {} not bound to {host}: {:?}", p.id, p.binding_vif_type);
        assert_ne!(p.status, "ACTIVE", "port {} ACTIVE before it was plugged", p.id);
    }
    let net = rt.block_on(neutron.get_network(&env["POD_NET_ID"])).expect("pod network");
    let mtu = net.mtu.unwrap_or(1442) as u32;
    let gw: IpAddr = env["POD_GW"].parse().expect("gw");
    let prefix: u8 = env["POD_CIDR"].split('/').nth(1).and_then(|p| p.parse().ok()).expect("prefix");

    let t_plug = Instant::now();
    let a = rt.block_on(plug(&ports[0], mtu, gw, prefix, &mut cleanup));
    let b = rt.block_on(plug(&ports[1], mtu, gw, prefix, &mut cleanup));

    // ACTIVE: OVN saw the iface-id and Neutron flipped the status.
    let ids: Vec<String> = ports.iter().map(|p| p.id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let statuses = loop {
        let now = rt.block_on(neutron.list_ports_by_id(&ids, &["id", "status"])).expect("list ports by id");
        if now.iter().all(|p| p.status == "ACTIVE") || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(statuses.iter().all(|p| p.status == "ACTIVE"), "ports not ACTIVE 30 s after plugging: {statuses:?}");
    eprintln!("both ports ACTIVE {:?} after the first plug", t_plug.elapsed());

    assert!(ping(&a, b.ip), "ping {} -> {} through OVN failed", a.ip, b.ip);
    assert!(ping(&b, a.ip), "ping {} -> {} through OVN failed", b.ip, a.ip);

    // TCP through the userspace datapath (fails silently if checksum offload is mishandled).
    let listen = SocketAddr::new(b.ip, 8080);
    let listener = b
        .ns
        .run(|| Ok::<_, kuryr_netplumb::Error>(TcpListener::bind(listen)))
        .expect("netns thread")
        .expect("bind in b");
    let server = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        s.write_all(b"pong")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let reply = a
        .ns
        .run(|| {
            Ok::<_, kuryr_netplumb::Error>((|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&listen, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"ping")?;
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            })())
        })
        .expect("netns thread")
        .expect("TCP a -> b:8080 through OVN");
    assert_eq!(reply, "pong");
    assert_eq!(server.join().expect("server thread").expect("server"), "ping");
    let _ = (&a.tap, &b.tap);
}
