//! Times the pod-wiring steps (plug_veth, configure_interface) against the kernel.
//! `cargo run --release -p kuryr-netplumb --example wiring_timing [N]` as root.
use std::time::Instant;

use kuryr_netplumb::{configure_interface, plug_veth, IfaceConfig, Netns, RouteSpec, VethPlug};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let host = Netns::current()?;
    let (mut tp, mut tc, mut tn) = (vec![], vec![], vec![]);
    for i in 0..n {
        let name = format!("wt-{i}");
        let t = Instant::now();
        let ns = Netns::create_named(&name)?;
        tn.push(t.elapsed().as_secs_f64() * 1e3);
        let host_if = format!("wtap{i}");
        let t = Instant::now();
        plug_veth(
            &host,
            &ns,
            &VethPlug {
                host_ifname: host_if.clone(),
                peer_ifname: "eth0".into(),
                mtu: Some(1442),
                host_mac: None,
                peer_mac: Some("fa:16:3e:00:00:01".parse()?),
            },
        )?;
        tp.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        configure_interface(
            &ns,
            &IfaceConfig {
                ifname: "eth0".into(),
                mac: None,
                mtu: Some(1442),
                addresses: vec!["10.9.0.5/24".parse()?],
                routes: vec![RouteSpec {
                    dest: "0.0.0.0/0".parse()?,
                    gateway: Some("10.9.0.1".parse()?),
                    ifname: "eth0".into(),
                    onlink: false,
                    metric: None,
                }],
                disable_tx_checksum: std::env::var("CSUM").is_ok(),
                announce: std::env::var("NOANN").is_err(),
            },
        )?;
        tc.push(t.elapsed().as_secs_f64() * 1e3);
        Netns::delete_named(&name)?;
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &host_if])
            .status();
    }
    println!("netns create p50 {:.2} ms", pct(&mut tn, 0.5));
    println!(
        "plug_veth p50 {:.2} p90 {:.2} ms",
        pct(&mut tp, 0.5),
        pct(&mut tp, 0.9)
    );
    println!(
        "configure p50 {:.2} p90 {:.2} ms",
        pct(&mut tc, 0.5),
        pct(&mut tc, 0.9)
    );
    Ok(())
}
