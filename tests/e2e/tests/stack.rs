//! The local stack itself (issue: local all-in-one stack): Kubernetes answers and runs a
//! hostNetwork pod through kubelet + containerd; the OpenStack CLI works with the kuryr
//! application credential; Octavia offers the `ovn` provider.

use kuryr_e2e::{kubectl, must, openstack, run, stack_env, unique};
use std::time::Instant;

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn kubectl_lists_the_node() {
    let env = stack_env();
    let host = &env["STACK_HOST"];
    let out = must(kubectl().args(["get", "nodes", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("kubectl get nodes -o json");
    let names: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&host.as_str()),
        "node {host} not in {names:?}"
    );
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn host_network_pod_runs_through_kubelet_and_containerd() {
    let name = unique("stack-hostnet-");
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hostNetwork": true,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            // The node stays NotReady (no CNI conflist) until kuryr-daemon is deployed.
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "c", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "echo hello-from-$(hostname); sleep 3600"]
            }]
        }
    });
    let path = std::env::temp_dir().join(format!("{name}.json"));
    std::fs::write(&path, manifest.to_string()).expect("write manifest");
    must(kubectl().args(["apply", "-f"]).arg(&path));
    let ok = run(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "pod",
        &name,
    ]));
    let logs = run(kubectl().args(["logs", &name]));
    let describe = run(kubectl().args(["describe", "pod", &name]));
    run(kubectl().args(["delete", "pod", &name, "--wait=false"]));
    let _ = std::fs::remove_file(&path);
    assert!(
        ok.status.success(),
        "pod {name} not Ready: {}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        String::from_utf8_lossy(&describe.stdout)
    );
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("hello-from-"), "unexpected pod log: {logs:?}");
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn openstack_cli_token_issue_with_application_credential() {
    let out = must(openstack("kuryr").args(["token", "issue", "-f", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("token issue json");
    let env = stack_env();
    assert_eq!(
        v["project_id"].as_str(),
        Some(env["K8S_PROJECT_ID"].as_str()),
        "{v}"
    );
    assert!(v["id"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn openstack_cli_lists_the_stack_networks() {
    let out = must(openstack("kuryr").args(["network", "list", "-f", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("network list json");
    let names: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["Name"].as_str())
        .collect();
    for want in ["kuryr-pods", "kuryr-services"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn octavia_offers_the_ovn_provider() {
    let out = must(openstack("kuryr").args(["loadbalancer", "provider", "list", "-f", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("provider list json");
    let names: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert!(names.contains(&"ovn"), "providers: {names:?}");
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn second_up_is_fast_and_changes_nothing() {
    // `up` on a running stack only checks: no service is restarted (same pids).
    let state = kuryr_e2e::state_dir();
    let pids = |dir: &std::path::Path| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir.join("pids"))
            .expect("pids dir")
            .filter_map(|e| e.ok())
            .map(|e| {
                let p = e.path();
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read_to_string(&p).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = pids(&state);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/stack/stack");
    let t = Instant::now();
    must(std::process::Command::new(script).arg("up"));
    let took = t.elapsed();
    let after = pids(&state);
    assert_eq!(before, after, "a second `up` restarted services");
    eprintln!("no-op up took {took:?}");
}

#[test]
fn a_service_that_dies_fails_up_with_its_name_and_log() {
    // The mechanism every service start in hack/stack goes through: start + ready. A process
    // that exits before it is ready must fail fast with the service name and its last log lines.
    let dir = std::env::temp_dir().join(kuryr_e2e::unique("kst-fail-"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/stack/lib.sh");
    let script = format!(
        ". {lib}; PIDDIR={d}/pids; LOGDIR={d}; \
         start bogus-svc {d}/bogus.log sh -c 'echo config error: port 1 taken; exit 3'; \
         ready bogus-svc {d}/bogus.log 30 false",
        lib = lib.display(),
        d = dir.display()
    );
    let t = Instant::now();
    let out = run(std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("STACK_STATE", &dir));
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "ready must fail");
    assert!(
        stderr.contains("FAILED: bogus-svc: process")
            && stderr.contains("exited before it was ready"),
        "{stderr}"
    );
    assert!(
        stderr.contains("config error: port 1 taken"),
        "log tail missing: {stderr}"
    );
    // It noticed the death, it did not wait for the 30 s deadline.
    assert!(took.as_secs() < 25, "took {took:?}");
}
