//! `deploy_stack apply|delete`: deploys kuryr-rs onto the local stack's kubelet the way users do
//! (images built from the static binaries and imported into containerd, the rendered manifests
//! `deploy/manifests/kuryr-rs.yaml` with the stack's kuryr.conf and API server address), waits
//! for the DaemonSet and the Deployment, or removes it all again. Used by hack/demo.
use std::time::Instant;

use kuryr_e2e::deploy::{
    build_and_import_images, deploy_dir, kind, manifest_objects, overlay_for_stack, write_list,
};
use kuryr_e2e::{kubectl, must, run};

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "apply".into());
    let mut objs = manifest_objects(&deploy_dir().join("manifests/kuryr-rs.yaml"));
    overlay_for_stack(&mut objs);
    let (crds, objs): (Vec<_>, Vec<_>) = objs
        .into_iter()
        .partition(|o| kind(o) == "CustomResourceDefinition");
    let dir = std::env::temp_dir();
    let (crd_file, file) = (dir.join("kuryr-rs-crds.json"), dir.join("kuryr-rs.json"));
    write_list(&crds, &crd_file);
    write_list(&objs, &file);
    match what.as_str() {
        "apply" => {
            let t = Instant::now();
            for l in build_and_import_images() {
                println!("    image {l}");
            }
            println!("    images built and imported in {:.0?}", t.elapsed());
            let apply = |f: &std::path::Path| {
                must(
                    kubectl()
                        .args([
                            "apply",
                            "--server-side",
                            "--force-conflicts",
                            "--field-manager=kuryr-demo",
                            "-f",
                        ])
                        .arg(f),
                )
            };
            apply(&crd_file);
            must(kubectl().args([
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd",
                "--all",
            ]));
            print!("{}", apply(&file));
            let t = Instant::now();
            for w in ["daemonset/kuryr-daemon", "deployment/kuryr-controller"] {
                let r = run(kubectl().args([
                    "rollout",
                    "status",
                    "-n",
                    "kube-system",
                    w,
                    "--timeout=180s",
                ]));
                if !r.status.success() {
                    eprintln!(
                        "{w} did not become ready: {}\n{}",
                        String::from_utf8_lossy(&r.stderr),
                        String::from_utf8_lossy(
                            &run(kubectl().args([
                                "get",
                                "pods",
                                "-n",
                                "kube-system",
                                "-o",
                                "wide"
                            ]))
                            .stdout
                        )
                    );
                    std::process::exit(1);
                }
            }
            println!(
                "    kuryr-daemon and kuryr-controller ready {:.1?} after apply",
                t.elapsed()
            );
        }
        "delete" => {
            let _ = run(kubectl()
                .args(["delete", "--ignore-not-found", "--wait=true", "-f"])
                .arg(&file));
        }
        other => {
            eprintln!("usage: deploy_stack apply|delete (got {other})");
            std::process::exit(2);
        }
    }
}
