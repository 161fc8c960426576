//! A Neutron port plugged the way kuryr-daemon plugs a pod, on the real stack: the port is
//! created through Keystone-authenticated REST (the kuryr application credential), a veth from a
//! fresh network namespace goes into br-int through OVSDB with the port's iface-id, OVN claims
//! it, Neutron reports it ACTIVE, and two such namespaces reach each other (ICMP and TCP).

use kuryr_e2e::vm::{Cloud, PlainPort};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn neutron_ports_plugged_into_br_int_go_active_and_talk() {
    let cloud = Cloud::connect();
    let plugged = PlainPort::create(&cloud, 2);
    let (a, b) = (&plugged[0], &plugged[1]);
    for p in &plugged {
        assert_eq!(
            p.port.binding_vif_type, "ovs",
            "port {} not bound: {:?}",
            p.port.id, p.port.binding_vif_type
        );
    }
    let ids: Vec<String> = plugged.iter().map(|p| p.port.id.clone()).collect();
    let took = cloud.wait_active(&ids);
    eprintln!("both ports ACTIVE {took:?} after plugging");

    assert!(a.ping(b.ip), "ping {} -> {} through OVN failed", a.ip, b.ip);
    assert!(b.ping(a.ip), "ping {} -> {} through OVN failed", b.ip, a.ip);

    // TCP through the userspace datapath (fails silently if checksum offload is mishandled).
    let listen = SocketAddr::new(b.ip, 8080);
    let listener =
        b.ns.run(|| Ok::<_, kuryr_netplumb::Error>(TcpListener::bind(listen)))
            .expect("netns thread")
            .expect("bind in b");
    let server = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        s.write_all(b"pong")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let reply =
        a.ns.run(|| {
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
    assert_eq!(
        server.join().expect("server thread").expect("server"),
        "ping"
    );
}
