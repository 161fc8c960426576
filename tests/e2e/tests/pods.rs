//! The vertical slice on the real stack: kuryr-controller and kuryr-daemon run as host services,
//! kubelet creates pods through containerd's CRI plugin, which executes kuryr-cni. Each pod gets
//! its own Neutron port (device_id = pod UID, bound to this node), the port goes ACTIVE, pods
//! reach each other (ICMP, TCP) and a plain Neutron port outside Kubernetes (a "VM") both ways;
//! deleting the pods deletes their ports and their OVS ports.

use kuryr_e2e::kuryr::{self, Kuryr, Namespace, CONFLIST};
use kuryr_e2e::vm::{Cloud, PlainPort};
use kuryr_e2e::{kubectl, must, run, stack_env, wait_for};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

fn json(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&must(cmd)).expect("kubectl json")
}

fn pod_manifest(ns: &str, name: &str) -> serde_json::Value {
    kuryr::web_pod(ns, name, "kst")
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn pods_get_neutron_ports_and_talk_to_each_other_and_to_vms() {
    let Kuryr {
        mut daemon,
        mut controller,
    } = kuryr::start(&[]);
    let host = stack_env()["STACK_HOST"].clone();

    let ns = Namespace::create("kst-e2e-");
    let names = ["pod-a", "pod-b"];
    let t0 = Instant::now();
    for n in names {
        ns.apply_json(n, &pod_manifest(&ns.0, n));
    }
    let ready = run(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "-n",
        &ns.0,
        "pod",
        "--all",
    ]));
    if !ready.status.success() {
        let d = run(kubectl().args(["describe", "pods", "-n", &ns.0]));
        let kp = run(kubectl().args(["get", "kuryrports", "-n", &ns.0, "-o", "yaml"]));
        panic!(
            "pods not Ready: {}\n{}\n{}\ncontroller:\n{}\ndaemon:\n{}",
            String::from_utf8_lossy(&ready.stderr),
            String::from_utf8_lossy(&d.stdout),
            String::from_utf8_lossy(&kp.stdout),
            controller.log_tail(30),
            daemon.log_tail(30)
        );
    }
    eprintln!("2 pods Ready {:?} after create", t0.elapsed());

    let cloud = Cloud::connect();
    let mut ips = Vec::new();
    let mut uids = Vec::new();
    let mut port_ids = Vec::new();
    for n in names {
        let pod = json(kubectl().args(["get", "pod", "-n", &ns.0, n, "-o", "json"]));
        let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
        let ip: IpAddr = pod["status"]["podIP"]
            .as_str()
            .expect("podIP")
            .parse()
            .expect("ip");
        // The pod's Neutron port: stamped with the pod UID, bound to this node, ACTIVE, same IP.
        let ports = cloud.ports_of_device(&uid);
        assert_eq!(
            ports.len(),
            1,
            "exactly one Neutron port for pod {n} ({uid}): {ports:?}"
        );
        let p = &ports[0];
        assert_eq!(p.status, "ACTIVE", "{p:?}");
        assert_eq!(p.binding_host_id, host);
        assert_eq!(p.device_owner, kuryr_core::names::DEVICE_OWNER);
        assert_eq!(
            p.ip(),
            Some(ip.to_string().as_str()),
            "pod IP is the port's fixed IP"
        );
        // The KuryrPort records it.
        let kp = json(kubectl().args(["get", "kuryrport", "-n", &ns.0, n, "-o", "json"]));
        assert_eq!(kp["spec"]["podUid"].as_str(), Some(uid.as_str()));
        let vif = kuryr::vif_of(&kp).unwrap_or_else(|| panic!("no VIF: {kp}"));
        assert_eq!(
            (vif.port_id.as_str(), vif.active),
            (p.id.as_str(), true),
            "{kp}"
        );
        ips.push(ip);
        uids.push(uid);
        port_ids.push(p.id.clone());
    }

    // Pod to pod: ICMP and TCP.
    let exec =
        |pod: &str, cmd: &[&str]| run(kubectl().args(["exec", "-n", &ns.0, pod, "--"]).args(cmd));
    let ping = exec(
        "pod-a",
        &["ping", "-c", "3", "-W", "2", &ips[1].to_string()],
    );
    assert!(
        ping.status.success(),
        "pod-a -> pod-b ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // (busybox-static's wget resolves through glibc NSS and crashes; nc speaks HTTP fine.)
    let get = exec(
        "pod-b",
        &[
            "sh",
            "-c",
            &format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {} 8080",
                ips[0]
            ),
        ],
    );
    let body = String::from_utf8_lossy(&get.stdout);
    assert!(
        body.contains("200 OK") && body.trim_end().ends_with("pod-a"),
        "pod-b -> pod-a:8080 over TCP: {get:?}"
    );

    // Pods and a VM on the same Neutron network, both ways.
    let vm = PlainPort::create(&cloud, 1);
    cloud.wait_active(&[vm[0].port.id.clone()]);
    assert!(
        vm[0].ping(ips[0]),
        "VM {} -> pod-a {} failed",
        vm[0].ip,
        ips[0]
    );
    let back = exec(
        "pod-b",
        &["ping", "-c", "3", "-W", "2", &vm[0].ip.to_string()],
    );
    assert!(
        back.status.success(),
        "pod-b -> VM ping: {}",
        String::from_utf8_lossy(&back.stdout)
    );

    // Delete: the ports go, the OVS ports go, no KuryrPort is left behind.
    must(kubectl().args([
        "delete",
        "pods",
        "--all",
        "-n",
        &ns.0,
        "--wait=true",
        "--timeout=60s",
    ]));
    for uid in &uids {
        wait_for(
            "the pod's Neutron port to be deleted",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || cloud.ports_of_device(uid).is_empty().then_some(()),
        );
    }
    wait_for(
        "KuryrPorts to be gone",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let kps = json(kubectl().args(["get", "kuryrports", "-n", &ns.0, "-o", "json"]));
            kps["items"]
                .as_array()
                .is_some_and(|a| a.is_empty())
                .then_some(())
        },
    );
    let ovs_ports = must(Command::new("ovs-vsctl").args(["list-ports", "br-int"]));
    for id in &port_ids {
        let tap = kuryr_core::vif::host_ifname(id);
        assert!(
            !ovs_ports.lines().any(|l| l == tap),
            "OVS port {tap} left on br-int: {ovs_ports}"
        );
    }
    assert!(daemon.alive() && controller.alive(), "kuryr crashed");

    // A clean daemon shutdown removes the conflist, so kubelet stops scheduling pods here.
    daemon.stop();
    controller.stop();
    assert!(
        !std::path::Path::new(CONFLIST).exists(),
        "conflist left after the daemon stopped"
    );
}
