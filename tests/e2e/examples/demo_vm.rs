//! `demo_vm IP...`: plug a plain Neutron port (a stand-in for an OpenStack VM) into a network
//! namespace on br-int, wait until it is ACTIVE, ping each IP from it, then remove it all.
//! Used by hack/demo; exits non-zero if a ping fails.
use kuryr_e2e::vm::{Cloud, PlainPort};

fn main() {
    let targets: Vec<std::net::IpAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("IP address argument"))
        .collect();
    let cloud = Cloud::connect();
    let vm = PlainPort::create(&cloud, 1);
    let took = cloud.wait_active(&[vm[0].port.id.clone()]);
    println!(
        "    VM port {} ({}) ACTIVE {:?} after plugging, netns {}",
        vm[0].port.id, vm[0].ip, took, vm[0].ns_name
    );
    let mut ok = true;
    for t in targets {
        let r = vm[0].ping(t);
        println!(
            "    VM {} -> {t}: {}",
            vm[0].ip,
            if r { "ping ok" } else { "PING FAILED" }
        );
        ok &= r;
    }
    drop(vm);
    std::process::exit(if ok { 0 } else { 1 });
}
