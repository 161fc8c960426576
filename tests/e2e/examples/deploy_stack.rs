//! `deploy_stack apply|delete`: deploys kuryr-rs onto the local stack's kubelet the way users do
//! (images built from the static binaries and imported into containerd, the rendered manifests
//! `deploy/manifests/kuryr-rs.yaml` with the stack's kuryr.conf and API server address), waits
//! for the DaemonSet and the Deployment, or removes it all again. Used by hack/demo.
use std::time::{Duration, Instant};

use kuryr_e2e::deploy::{build_and_import_images, InCluster};

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "apply".into());
    let ic = InCluster::render("demo", "kuryr-demo", "", &[]);
    match what.as_str() {
        "apply" => {
            let t = Instant::now();
            for l in build_and_import_images() {
                println!("    image {l}");
            }
            println!("    images built and imported in {:.0?}", t.elapsed());
            ic.apply_crds();
            print!("{}", ic.apply());
            let t = Instant::now();
            if let Err(why) = ic.wait_ready(Duration::from_secs(180)) {
                eprintln!("{why}");
                std::process::exit(1);
            }
            println!(
                "    kuryr-daemon and kuryr-controller ready {:.1?} after apply",
                t.elapsed()
            );
        }
        "delete" => {
            let _ = ic.uninstall();
        }
        other => {
            eprintln!("usage: deploy_stack apply|delete (got {other})");
            std::process::exit(2);
        }
    }
}
