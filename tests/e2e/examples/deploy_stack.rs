//! `deploy_stack apply|delete`: deploys kuryr-rs onto the local stack's kubelet the way users do
//! (images built from the static binaries and imported into containerd, the rendered manifests
//! `deploy/manifests/kuryr-rs.yaml` with the stack's kuryr.conf and API server address), waits
//! for the DaemonSet and the Deployment, or removes it all again. Used by hack/demo.
use std::time::{Duration, Instant};

use serde_json::Value;

use kuryr_e2e::deploy::{
    build_and_import_images, deploy_dir, kind, manifest_objects, overlay_for_stack, pods,
    write_list,
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
            for (w, component) in [
                ("daemonset/kuryr-daemon", "daemon"),
                ("deployment/kuryr-controller", "controller"),
            ] {
                if let Err(why) = wait_rolled_out(w, component, Duration::from_secs(180)) {
                    eprintln!("{w} did not become ready: {why}");
                    explain(component);
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

/// Container states a pod does not leave without a change on the host or in the manifests:
/// waiting for them to pass is only a longer way to fail.
const STUCK: &[&str] = &[
    "CreateContainerError",
    "CreateContainerConfigError",
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Waits for `kubectl rollout status` of `workload`, failing early (with the reason) as soon as
/// one of its pods is stuck in a state from [`STUCK`] for 20 s.
fn wait_rolled_out(workload: &str, component: &str, timeout: Duration) -> Result<(), String> {
    let t = Instant::now();
    let mut stuck_since: Option<Instant> = None;
    loop {
        let r = run(kubectl().args([
            "rollout",
            "status",
            "-n",
            "kube-system",
            workload,
            "--timeout=5s",
        ]));
        if r.status.success() {
            return Ok(());
        }
        let stuck: Vec<String> = pods(
            "kube-system",
            &format!("app.kubernetes.io/component={component}"),
        )
        .iter()
        .flat_map(stuck_containers)
        .collect();
        match (stuck.is_empty(), stuck_since) {
            (true, _) => stuck_since = None,
            (false, None) => stuck_since = Some(Instant::now()),
            (false, Some(s)) if s.elapsed() > Duration::from_secs(20) => {
                return Err(format!("stuck: {}", stuck.join("; ")))
            }
            _ => {}
        }
        if t.elapsed() > timeout {
            return Err(format!(
                "not rolled out after {timeout:?}: {}",
                String::from_utf8_lossy(&r.stderr).trim()
            ));
        }
    }
}

/// `pod/container: Reason: message` of each (init) container of `pod` in a [`STUCK`] state.
fn stuck_containers(pod: &Value) -> Vec<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("?");
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| {
            let w = &c["state"]["waiting"];
            let reason = w["reason"].as_str()?;
            STUCK.contains(&reason).then(|| {
                format!(
                    "{name}/{}: {reason}: {}",
                    c["name"].as_str().unwrap_or("?"),
                    w["message"].as_str().unwrap_or("")
                )
            })
        })
        .collect()
}

/// What to look at when a kuryr-rs pod does not start: its pods, their events, the last log
/// lines of each container, and the commands to dig further.
fn explain(component: &str) {
    let sel = format!("app.kubernetes.io/component={component}");
    let out = |args: &[&str]| {
        let r = run(kubectl().args(args));
        format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        )
    };
    eprintln!(
        "\n--- pods\n{}",
        out(&["get", "pods", "-n", "kube-system", "-l", &sel, "-o", "wide"])
    );
    for p in pods("kube-system", &sel) {
        let name = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        eprintln!(
            "--- events of pod {name}\n{}",
            out(&[
                "get",
                "events",
                "-n",
                "kube-system",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "custom-columns=TIME:.lastTimestamp,TYPE:.type,REASON:.reason,MESSAGE:.message",
            ])
        );
        eprintln!(
            "--- last log lines of {name}\n{}",
            out(&[
                "logs",
                "-n",
                "kube-system",
                &name,
                "--all-containers",
                "--tail=20"
            ])
        );
    }
    eprintln!(
        "look further with: kubectl describe pod -n kube-system -l {sel}; \
         kubectl logs -n kube-system -l {sel} --all-containers; the kubelet's log is \
         /var/lib/kuryr-stack/log/kubelet.log"
    );
}
