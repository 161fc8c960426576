//! kuryr-cni chained with the reference `portmap` plugin (whichever the host has in /opt/cni/bin),
//! through the path kubelet uses: the daemon writes a conflist `kuryr-cni` → `portmap`, the CRI
//! plugin passes the pod's hostPorts as `runtimeConfig.portMappings`, portmap reads kuryr's
//! result from `prevResult` and DNATs node-IP:hostPort to the pod. The stack's node port
//! (hack/stack/node-port.sh) gives the host its path into the pod network, as a Kubernetes node on
//! OpenStack has through its VM NIC.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use kuryr_e2e::kuryr::{self, Namespace, CONFLIST};
use kuryr_e2e::{kubectl, must, run, wait_for};

/// The stack's node IP (hack/stack/k8s.sh NODE_IP).
const NODE_IP: &str = "172.31.255.1";
const HOST_PORT: u16 = 30880;

fn http_get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(body)
}

fn hostport_rules() -> String {
    must(Command::new("iptables").args(["-t", "nat", "-S"]))
        .lines()
        .filter(|l| l.contains(&format!("--dport {HOST_PORT}")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn kuryr_cni_chains_with_portmap_for_host_ports() {
    assert!(
        hostport_rules().is_empty(),
        "leftover hostPort {HOST_PORT} rules before the test:\n{}",
        hostport_rules()
    );
    let _kuryr = kuryr::start(&["--chain", "portmap"]);
    let conflist: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(CONFLIST).expect("conflist")).expect("json");
    let plugins = conflist["plugins"].as_array().expect("plugins");
    assert_eq!(plugins[0]["type"], "kuryr-cni", "{conflist}");
    assert_eq!(plugins[1]["type"], "portmap", "{conflist}");
    assert_eq!(
        plugins[1]["capabilities"]["portMappings"], true,
        "{conflist}"
    );

    let ns = Namespace::create("kst-chain-");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": ns.0},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "mkdir -p /www && echo chained-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "ports": [{"containerPort": 8080, "hostPort": HOST_PORT, "protocol": "TCP"}],
                // kubelet probes the pod IP from the host: only works with a path into the pod network.
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
            }]
        }
    });
    ns.apply_json("web", &pod);
    let ready = run(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "-n",
        &ns.0,
        "pod/web",
    ]));
    assert!(
        ready.status.success(),
        "pod not Ready: {}\n{}",
        String::from_utf8_lossy(&ready.stderr),
        String::from_utf8_lossy(
            &run(kubectl().args(["describe", "pod", "-n", &ns.0, "web"])).stdout
        )
    );
    let pod_ip: IpAddr = must(kubectl().args([
        "get",
        "pod",
        "-n",
        &ns.0,
        "web",
        "-o",
        "jsonpath={.status.podIP}",
    ]))
    .trim()
    .parse()
    .expect("podIP");

    // portmap ran after kuryr-cni with kuryr's result: its DNAT names the pod IP.
    let rules = hostport_rules();
    assert!(
        rules.contains(&format!("--to-destination {pod_ip}:8080")),
        "no DNAT {HOST_PORT} -> {pod_ip}:8080 in:\n{rules}"
    );
    // The host reaches the pod directly and through the hostPort on the node IP.
    let direct = http_get(SocketAddr::new(pod_ip, 8080)).expect("host -> pod IP");
    assert!(direct.contains("chained-web"), "{direct}");
    let via_hostport = wait_for(
        "node IP hostPort to answer",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || http_get(SocketAddr::new(NODE_IP.parse().expect("ip"), HOST_PORT)).ok(),
    );
    assert!(
        via_hostport.contains("200 OK") && via_hostport.contains("chained-web"),
        "{via_hostport}"
    );

    // DEL runs the chain in reverse: portmap removes its rules.
    must(kubectl().args([
        "delete",
        "pod",
        "-n",
        &ns.0,
        "web",
        "--wait=true",
        "--timeout=60s",
    ]));
    wait_for(
        "portmap's rules to be removed",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || hostport_rules().is_empty().then_some(()),
    );
}
