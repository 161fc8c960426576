//! kuryr-rs packaged as its users deploy it (deploy/): the Helm chart and the plain manifests
//! rendered from it, checked against the real API server; least-privilege RBAC; the host
//! install path; and the whole thing running in-cluster on the local stack's kubelet.

use kuryr_e2e::deploy::*;
use kuryr_e2e::vm::{Cloud, PlainPort};
use kuryr_e2e::{bin_dir, kubectl, must, run, stack_env, wait_for};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn manifests() -> PathBuf {
    deploy_dir().join("manifests/kuryr-rs.yaml")
}

fn crds() -> PathBuf {
    deploy_dir().join("crds/kuryr-crds.yaml")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kuryr-deploy-{}-{name}", std::process::id()))
}

fn helm() -> String {
    must(&mut Command::new(deploy_dir().join("helm.sh")))
        .trim()
        .to_string()
}

/// `helm template` of the chart with extra `--set` flags, as JSON objects.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "kuryr-rs"])
        .arg(deploy_dir().join("chart/kuryr-rs"))
        .args(["--namespace", NAMESPACE, "--include-crds"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let yaml = must(&mut cmd);
    let path = tmp(&format!("render-{}.yaml", sets.len()));
    std::fs::write(&path, yaml).expect("write render");
    let objs = manifest_objects(&path);
    let _ = std::fs::remove_file(&path);
    objs
}

fn find<'a>(objs: &'a [Value], k: &str, n: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k} {n} in the render"))
}

fn server_dry_run(path: &Path) -> std::process::Output {
    run(kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kuryr-e2e-deploy",
            "--dry-run=server",
            "-f",
        ])
        .arg(path))
}

fn container(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]["containers"][0]
}

fn env_names(o: &Value) -> Vec<String> {
    container(o)["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `neutron.cloud` + `neutron.cloudsYaml`: the clouds.yaml goes into the controller's Secret and
/// is mounted; its kuryr.conf points at it (`[neutron] cloud`, `clouds_file`) instead of carrying
/// keystoneauth options; the daemon's ConfigMap has neither.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn chart_takes_credentials_from_a_clouds_yaml() {
    let objs = render(&[
        "neutron.cloud=kuryr",
        "neutron.cloudsYaml=clouds: {kuryr: {auth: {auth_url: 'https://k:5000/v3'}}}",
    ]);
    let secret = find(&objs, "Secret", "kuryr-controller-config");
    let data = |k: &str| {
        secret["stringData"][k]
            .as_str()
            .unwrap_or_else(|| panic!("Secret stringData.{k}: {secret}"))
            .to_string()
    };
    let conf = data("kuryr.conf");
    assert!(
        conf.contains("[neutron]\ncloud = kuryr\nclouds_file = /etc/kuryr/clouds.yaml"),
        "{conf}"
    );
    assert!(
        !conf.contains("auth_url") && !conf.contains("auth_type"),
        "{conf}"
    );
    assert!(
        data("clouds.yaml").contains("kuryr"),
        "clouds.yaml not in the Secret"
    );
    let ctl = find(&objs, "Deployment", "kuryr-controller");
    let mounts = container(ctl)["volumeMounts"].to_string();
    assert!(mounts.contains("/etc/kuryr/clouds.yaml"), "{mounts}");
    let cm = find(&objs, "ConfigMap", "kuryr-config");
    let daemon_conf = cm["data"]["kuryr.conf"].as_str().expect("daemon conf");
    assert!(
        !daemon_conf.contains("[neutron]") && !daemon_conf.contains("clouds"),
        "{daemon_conf}"
    );
}

/// The chart is the one source of truth: the checked-in manifests are its current render, its
/// CRDs are crdgen's, and its values drive what matters (no credentials on nodes; CRD rights
/// only with --install-crds; the API server override; the daemon's host mounts).
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn chart_renders_and_the_checked_in_manifests_are_current() {
    let out = run(Command::new(deploy_dir().join("render.sh")).arg("--check"));
    assert!(
        out.status.success(),
        "deploy/render.sh --check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let objs = manifest_objects(&manifests());
    let kinds: BTreeSet<String> = objs
        .iter()
        .map(|o| format!("{}/{}", kind(o), name(o)))
        .collect();
    for want in [
        "CustomResourceDefinition/kuryrports.openstack.org",
        "CustomResourceDefinition/kuryrnetworks.openstack.org",
        "CustomResourceDefinition/kuryrnetworkpolicies.openstack.org",
        "CustomResourceDefinition/kuryrloadbalancers.openstack.org",
        "ConfigMap/kuryr-config",
        "Secret/kuryr-controller-config",
        "ServiceAccount/kuryr-controller",
        "ServiceAccount/kuryr-daemon",
        "ClusterRole/kuryr-controller",
        "ClusterRole/kuryr-daemon",
        "Role/kuryr-controller-leader-election",
        "Deployment/kuryr-controller",
        "DaemonSet/kuryr-daemon",
    ] {
        assert!(
            kinds.contains(want),
            "{want} missing from the manifests: {kinds:?}"
        );
    }
    let cm = find(&objs, "ConfigMap", "kuryr-config")["data"]["kuryr.conf"]
        .as_str()
        .expect("kuryr.conf")
        .to_string();
    assert!(
        !cm.contains("[neutron]") && !cm.contains("application_credential"),
        "daemon config has credentials:\n{cm}"
    );
    for s in [
        "[kubernetes]",
        "[neutron_defaults]",
        "[vif_pool]",
        "[namespace_subnet]",
        "[octavia_defaults]",
        "[cni_daemon]",
        "[binding]",
    ] {
        assert!(cm.contains(s), "{s} missing from kuryr.conf:\n{cm}");
    }
    let sec = find(&objs, "Secret", "kuryr-controller-config");
    let conf = sec["stringData"]["kuryr.conf"]
        .as_str()
        .expect("controller kuryr.conf");
    assert!(
        conf.contains("[neutron]") && conf.contains("auth_type = v3applicationcredential"),
        "{conf}"
    );

    // Controller: HA with a Lease, probes, hostNetwork, tolerates not-ready nodes, non-root.
    let dep = find(&objs, "Deployment", "kuryr-controller");
    assert_eq!(dep["spec"]["replicas"], 2);
    let args = container(dep)["args"].to_string();
    assert!(
        args.contains("--leader-elect") && !args.contains("--install-crds"),
        "{args}"
    );
    assert_eq!(dep["spec"]["template"]["spec"]["hostNetwork"], true);
    assert_eq!(
        container(dep)["readinessProbe"]["httpGet"]["path"],
        "/ready"
    );
    assert_eq!(container(dep)["livenessProbe"]["httpGet"]["path"], "/alive");
    assert!(container(dep)["resources"]["requests"]["cpu"].is_string());
    let tol = dep["spec"]["template"]["spec"]["tolerations"].to_string();
    assert!(
        tol.contains("node.kubernetes.io/not-ready")
            && tol.contains("node.cloudprovider.kubernetes.io/uninitialized"),
        "{tol}"
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );

    // Daemon: privileged, hostNetwork, no hostPID, downward API, host mounts, preStop.
    let ds = find(&objs, "DaemonSet", "kuryr-daemon");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostPID"], false);
    assert_eq!(container(ds)["securityContext"]["privileged"], true);
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let env = env_names(ds);
    assert!(
        env.contains(&"KUBERNETES_NODE_NAME".into()) && env.contains(&"POD_NAME".into()),
        "{env:?}"
    );
    let mounts = container(ds)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .clone();
    let mount = |p: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == p)
            .unwrap_or_else(|| panic!("no mount at {p}: {mounts:?}"))
            .clone()
    };
    for p in [
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/var/run/openvswitch",
        "/var/lib/kuryr",
        "/run/kuryr",
        "/host_proc",
    ] {
        mount(p);
    }
    assert_eq!(mount("/run/netns")["mountPropagation"], "HostToContainer");
    // ...which needs /run/netns shared on the host first: the init container does it (issue 10).
    let init = &spec["initContainers"][0];
    assert_eq!(init["name"], "share-netns-dir", "{init}");
    assert_eq!(
        init["command"],
        json!([
            "/usr/bin/kuryr-daemon",
            "--share-netns-dir-in=/host_proc/1/ns/mnt"
        ]),
        "{init}"
    );
    assert_eq!(init["securityContext"]["privileged"], true, "{init}");
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/host_proc", "{init}");
    let pre = container(ds)["lifecycle"]["preStop"]["exec"]["command"].to_string();
    assert!(
        pre.contains(CONFLIST) && pre.contains(CNI_BIN),
        "preStop: {pre}"
    );
    assert!(spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(0) >= 10);
    assert!(
        container(ds)["args"]
            .to_string()
            .contains("--install-cni-from="),
        "{}",
        container(ds)["args"]
    );
    // hostPort and traffic shaping out of the box: portmap and bandwidth chained, shipped in
    // the image and installed next to kuryr-cni (issue 17).
    let args: Vec<String> = container(ds)["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    for want in [
        "--chain=portmap,bandwidth",
        "--install-cni-plugins-from=/usr/libexec/kuryr/cni-plugins",
        "--cni-plugins-install=unless-newer",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }

    // Values: API server override, --install-crds with its RBAC, CA bundle, an existing Secret.
    let objs = render(&[
        "apiServer.host=10.0.0.5",
        "controller.installCRDs=true",
        "neutron.caBundle=-----BEGIN CERTIFICATE-----",
        "neutronDefaults.podSecurityGroups={sg-1,sg-2}",
        "neutronDefaults.project=p-1",
        "daemon.chain={portmap}",
    ]);
    let dep = find(&objs, "Deployment", "kuryr-controller");
    assert!(env_names(dep).contains(&"KUBERNETES_SERVICE_HOST".into()));
    assert!(container(dep)["args"]
        .to_string()
        .contains("--install-crds"));
    let cr = find(&objs, "ClusterRole", "kuryr-controller")["rules"].to_string();
    assert!(cr.contains("customresourcedefinitions"), "{cr}");
    let conf = find(&objs, "Secret", "kuryr-controller-config")["stringData"]["kuryr.conf"]
        .as_str()
        .expect("conf")
        .to_string();
    for want in [
        "api_root = https://10.0.0.5:6443",
        "cafile = /etc/kuryr/ca/ca.crt",
        "pod_security_groups = sg-1,sg-2",
        "project = p-1",
    ] {
        assert!(conf.contains(want), "{want} not in\n{conf}");
    }
    assert!(container(find(&objs, "DaemonSet", "kuryr-daemon"))["args"]
        .to_string()
        .contains("\"--chain=portmap\""));
    let objs = render(&[
        "neutron.existingSecret=my-kuryr",
        "controller.leaderElect=false",
    ]);
    assert!(
        !objs.iter().any(|o| kind(o) == "Secret"),
        "existingSecret: no Secret rendered"
    );
    assert!(
        !objs.iter().any(|o| kind(o) == "Role"),
        "no Lease Role without leader election"
    );
    let dep = find(&objs, "Deployment", "kuryr-controller");
    assert_eq!(
        dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "my-kuryr"
    );
    let path = tmp("existing.json");
    write_list(&objs, &path);
    let out = server_dry_run(&path);
    assert!(
        out.status.success(),
        "dry-run of the existingSecret render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (a) The rendered manifests and the CRDs pass a server-side dry-run apply against the real API
/// server (schemas, admission, RBAC object validation), and the CRD schema rejects a malformed
/// KuryrPort with 422 while accepting a well-formed one.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn manifests_pass_server_side_dry_run_and_crds_validate() {
    let _g = cluster_lock();
    for f in [crds(), manifests()] {
        let out = server_dry_run(&f);
        assert!(
            out.status.success(),
            "server-side dry-run apply of {} failed:\n{}\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("(server dry run)"), "{said}");
    }

    // CR validation needs the CRDs for real (the controller installs the same ones).
    if !run(kubectl().args(["get", "crd", "kuryrports.openstack.org"]))
        .status
        .success()
    {
        must(
            kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "--field-manager=kuryr-e2e-deploy",
                    "-f",
                ])
                .arg(crds()),
        );
    }
    wait_crds_established("kuryrports.openstack.org");

    let bad = json!({
        "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
        "metadata": {"name": "malformed", "namespace": "default"},
        "spec": {"podUid": 42}
    });
    let path = tmp("bad-kp.json");
    std::fs::write(&path, bad.to_string()).expect("write");
    let out = run(kubectl()
        .args(["create", "--dry-run=server", "-v=6", "-f"])
        .arg(&path));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed KuryrPort was accepted");
    assert!(
        err.contains("422"),
        "expected HTTP 422 Unprocessable Entity:\n{err}"
    );
    assert!(
        err.contains("spec.podUid") && err.contains("spec.podNodeName"),
        "the error should name both fields:\n{err}"
    );

    let good = json!({
        "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
        "metadata": {"name": "well-formed", "namespace": "default"},
        "spec": {"podUid": "00000000-0000-0000-0000-000000000000", "podNodeName": "vm"}
    });
    std::fs::write(&path, good.to_string()).expect("write");
    let out = run(kubectl()
        .args(["create", "--dry-run=server", "-f"])
        .arg(&path));
    assert!(
        out.status.success(),
        "a well-formed KuryrPort was rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
}

/// (b) RBAC, asked of the API server for every kind kuryr-rs touches: the daemon's
/// ServiceAccount may watch pods and KuryrPorts and create Events, and nothing else; the
/// controller may make exactly the calls its code makes (verb by verb, status and finalizers
/// subresources included) and none of the writes it must never make.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn rbac_is_least_privilege() {
    let _g = cluster_lock();
    // `auth can-i` evaluates the live RBAC: apply the ServiceAccounts, roles and bindings of the
    // manifests (identical to what a deployment applies), and remove what was not there before.
    let rbac: Vec<Value> = manifest_objects(&manifests())
        .into_iter()
        .filter(|o| {
            matches!(
                kind(o),
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            )
        })
        .collect();
    assert_eq!(rbac.len(), 8, "{rbac:?}");
    let preexisting: Vec<bool> = rbac
        .iter()
        .map(|o| {
            let mut c = kubectl();
            c.args(["get", &kind(o).to_lowercase(), name(o)]);
            if let Some(ns) = o["metadata"]["namespace"].as_str() {
                c.args(["-n", ns]);
            }
            kuryr_e2e::unless_not_found(&mut c).is_some()
        })
        .collect();
    let path = tmp("rbac.json");
    write_list(&rbac, &path);
    must(
        kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=kuryr-e2e-deploy",
                "-f",
            ])
            .arg(&path),
    );
    let created: Vec<Value> = rbac
        .iter()
        .zip(&preexisting)
        .filter(|(_, pre)| !**pre)
        .map(|(o, _)| o.clone())
        .collect();
    struct Cleanup(Vec<Value>, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if !self.0.is_empty() {
                write_list(&self.0, &self.1);
                let _ = run(kubectl()
                    .args(["delete", "--ignore-not-found", "-f"])
                    .arg(&self.1));
            }
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let _cleanup = Cleanup(created, path);

    let daemon = format!("system:serviceaccount:{NAMESPACE}:kuryr-daemon");
    let controller = format!("system:serviceaccount:{NAMESPACE}:kuryr-controller");
    let mut wrong = Vec::new();
    let mut check = |who: &str, allowed: bool, args: &[&str]| match can_i(who, args) {
        Ok(answer) if answer == allowed => {}
        Ok(_) => wrong.push(format!(
            "{who} {} {args:?}",
            if allowed {
                "should be allowed"
            } else {
                "should be refused"
            }
        )),
        Err(e) => wrong.push(format!("{who} {args:?}: kubectl auth can-i failed: {e}")),
    };
    const KP: &str = "kuryrports.openstack.org";
    const KN: &str = "kuryrnetworks.openstack.org";
    const KNP: &str = "kuryrnetworkpolicies.openstack.org";
    const KLB: &str = "kuryrloadbalancers.openstack.org";
    const NP: &str = "networkpolicies.networking.k8s.io";
    const SLICES: &str = "endpointslices.discovery.k8s.io";
    const EVENTS: &str = "events.events.k8s.io";
    const LEASES: &str = "leases.coordination.k8s.io";
    const ALL: &str = "--all-namespaces";
    const STATUS: &str = "--subresource=status";
    const FINALIZERS: &str = "--subresource=finalizers";
    let ns = |v: &[&'static str]| [v, &["-n", "default"][..]].concat();
    let (own_lease, other_lease) = (
        format!("{LEASES}/kuryr-controller"),
        format!("{LEASES}/kube-scheduler"),
    );

    // What the daemon calls (crates/kuryr-daemon/src/watch.rs, events.rs): the watches of the
    // node's pods and KuryrPorts, core/v1 Events on pods.
    for a in [
        vec!["watch", "pods", ALL],
        vec!["list", "pods", ALL],
        vec!["watch", KP, ALL],
        vec!["list", KP, ALL],
        ns(&["create", "events"]),
    ] {
        check(&daemon, true, &a);
    }
    // Nothing more: no write to any kind kuryr-rs touches, no read of the controller's kinds,
    // no Secrets, Nodes or Leases.
    let mut refused = vec![
        ns(&["update", "pods", STATUS]),
        ns(&["update", "pods", FINALIZERS]),
        ns(&["patch", "events"]),
        ns(&["delete", "events"]),
        ns(&["create", EVENTS]),
        vec!["list", "namespaces"],
        vec!["create", "namespaces"],
        vec!["delete", "namespaces"],
        vec!["list", NP, ALL],
        vec!["list", "services", ALL],
        ns(&["patch", "services", STATUS]),
        vec!["list", SLICES, ALL],
        ns(&["create", SLICES]),
        vec!["list", "endpoints", ALL],
        vec!["get", "nodes"],
        vec!["list", "nodes"],
        vec!["patch", "nodes"],
        vec!["patch", "nodes", STATUS],
        vec!["create", LEASES, "-n", NAMESPACE],
        vec!["get", "secrets", "-n", NAMESPACE],
        vec!["list", "secrets", ALL],
        vec!["get", "configmaps", "-n", NAMESPACE],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ];
    for kind in ["pods", NP, "services", KP, KN, KNP, KLB] {
        for verb in ["create", "patch", "update", "delete"] {
            refused.push(ns(&[verb, kind]));
        }
    }
    for cr in [KP, KN, KNP, KLB] {
        refused.push(ns(&["patch", cr, STATUS]));
        if cr != KP {
            refused.push(vec!["list", cr, ALL]);
        }
    }
    for a in &refused {
        check(&daemon, false, a);
    }

    // What the controller calls (the kube::Api uses in crates/kuryr-controller/src): watches
    // (list + watch) of pods, namespaces, nodes' names (GC), Services, EndpointSlices,
    // NetworkPolicies and the four CRs; finalizer patches of pods, Services, NetworkPolicies and
    // the CRs; owner references with blockOwnerDeletion (pods/services/networkpolicies
    // finalizers); status patches of Services and every CR; KuryrPort, KuryrNetworkPolicy and
    // KuryrLoadBalancer create/delete, KuryrNetwork create; events.k8s.io Events; its Lease.
    let mut allowed = vec![
        vec!["watch", "pods", ALL],
        ns(&["get", "pods"]),
        ns(&["patch", "pods"]),
        ns(&["update", "pods", FINALIZERS]),
        vec!["get", "nodes"],
        vec!["list", "nodes"],
        vec!["watch", "namespaces"],
        vec!["list", "namespaces"],
        vec!["watch", "services", ALL],
        ns(&["patch", "services"]),
        ns(&["patch", "services", STATUS]),
        ns(&["update", "services", FINALIZERS]),
        vec!["watch", SLICES, ALL],
        vec!["list", SLICES, ALL],
        vec!["watch", NP, ALL],
        ns(&["patch", NP]),
        ns(&["update", NP, FINALIZERS]),
        ns(&["get", KP]),
        ns(&["get", KNP]),
        ns(&["create", EVENTS]),
        ns(&["patch", EVENTS]),
        vec!["create", LEASES, "-n", NAMESPACE],
        vec!["get", own_lease.as_str(), "-n", NAMESPACE],
        vec!["update", own_lease.as_str(), "-n", NAMESPACE],
    ];
    for cr in [KP, KN, KNP, KLB] {
        allowed.push(vec!["watch", cr, ALL]);
        allowed.push(vec!["list", cr, ALL]);
        allowed.push(ns(&["create", cr]));
        allowed.push(ns(&["patch", cr]));
        allowed.push(ns(&["patch", cr, STATUS]));
    }
    for cr in [KP, KNP, KLB] {
        allowed.push(ns(&["delete", cr]));
    }
    for a in &allowed {
        check(&controller, true, a);
    }
    // Never: deleting or writing Namespaces (kuryr-pool comes with the chart; a refusal is
    // expected by the code), creating or deleting NetworkPolicies, Services or pods, writing
    // Nodes or EndpointSlices, deleting KuryrNetworks (they go with their namespace), `update`
    // (the code only patches), core/v1 Events, other Leases, Secrets, and anything that could
    // grant more rights.
    let mut refused = vec![
        vec!["create", "namespaces"],
        vec!["delete", "namespaces"],
        vec!["patch", "namespaces"],
        vec!["update", "namespaces"],
        ns(&["create", NP]),
        ns(&["delete", NP]),
        ns(&["create", "services"]),
        ns(&["delete", "services"]),
        ns(&["create", "pods"]),
        ns(&["delete", "pods"]),
        ns(&["update", "pods", STATUS]),
        ns(&["create", "pods", "--subresource=exec"]),
        ns(&["create", "pods", "--subresource=eviction"]),
        vec!["create", "nodes"],
        vec!["patch", "nodes"],
        vec!["update", "nodes"],
        vec!["delete", "nodes"],
        vec!["patch", "nodes", STATUS],
        ns(&["create", SLICES]),
        ns(&["patch", SLICES]),
        ns(&["update", SLICES]),
        ns(&["delete", SLICES]),
        vec!["list", "endpoints", ALL],
        ns(&["create", "endpoints"]),
        ns(&["delete", KN]),
        ns(&["create", "events"]),
        vec!["update", other_lease.as_str(), "-n", NAMESPACE],
        vec!["delete", own_lease.as_str(), "-n", NAMESPACE],
        ns(&["create", LEASES]),
        vec!["get", "secrets", "-n", NAMESPACE],
        vec!["list", "secrets", ALL],
        vec!["list", "configmaps", ALL],
        vec![
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            NAMESPACE,
        ],
        vec!["patch", "daemonsets.apps", "-n", NAMESPACE],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
        vec!["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        vec!["create", "roles.rbac.authorization.k8s.io", "-n", NAMESPACE],
    ];
    for kind in ["pods", "services", NP, KP, KN, KNP, KLB] {
        refused.push(ns(&["update", kind]));
    }
    for kind in ["services", KP, KN, KNP, KLB] {
        refused.push(ns(&["update", kind, STATUS]));
    }
    for a in &refused {
        check(&controller, false, a);
    }
    assert!(
        wrong.is_empty(),
        "RBAC is not as designed:\n{}",
        wrong.join("\n")
    );
}

/// The bare-metal path: install-host.sh places kuryr-cni (atomically), the daemon and
/// controller, the systemd units (which systemd-analyze accepts) and, on request, a conflist
/// kuryr-cni accepts; --uninstall removes all of it. Into a scratch root, not the host.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn install_host_places_cni_units_and_conflist() {
    let root = tmp("root");
    let _ = std::fs::remove_dir_all(&root);
    let conf = tmp("kuryr.conf");
    std::fs::write(&conf, stack_conf_for_pods()).expect("conf");
    let bins = bin_dir();
    must(
        Command::new(deploy_dir().join("install-host.sh"))
            .args(["--role", "all", "--static-conflist", "--root"])
            .arg(&root)
            .arg("--from")
            .arg(&bins)
            .arg("--config")
            .arg(&conf),
    );
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    for p in [
        "/opt/cni/bin/kuryr-cni",
        "/usr/local/bin/kuryr-daemon",
        "/usr/local/bin/kuryr-controller",
        "/etc/systemd/system/kuryr-daemon.service",
        "/etc/systemd/system/kuryr-controller.service",
        "/etc/default/kuryr-daemon",
        "/etc/kuryr/kuryr.conf",
        "/etc/cni/net.d/10-kuryr.conflist",
    ] {
        assert!(at(p).exists(), "{p} not installed");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(at("/etc/kuryr/kuryr.conf"))
            .expect("conf")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let cni = std::fs::read(at("/opt/cni/bin/kuryr-cni")).expect("cni");
    assert_eq!(
        cni,
        std::fs::read(bins.join("kuryr-cni")).expect("built cni"),
        "kuryr-cni copied whole"
    );
    let leftovers: Vec<_> = std::fs::read_dir(at("/opt/cni/bin"))
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(std::fs::read_to_string(at("/etc/default/kuryr-daemon"))
        .expect("defaults")
        .contains("--no-conflist"));

    // The conflist is what the daemon writes, and kuryr-cni accepts it (VERSION needs no daemon).
    let cl: Value = serde_json::from_slice(
        &std::fs::read(at("/etc/cni/net.d/10-kuryr.conflist")).expect("conflist"),
    )
    .expect("json");
    assert_eq!(cl["cniVersion"], "1.0.0");
    assert_eq!(cl["plugins"][0]["type"], "kuryr-cni");
    assert_eq!(
        cl["plugins"][0]["daemon_socket"],
        "/run/kuryr/kuryr-daemon.sock"
    );
    // portmap and bandwidth chained by default, with the capabilities the runtime fills, and
    // shipped: the pinned reference plugins, for the daemon to install next to kuryr-cni.
    assert_eq!(
        cl["plugins"][1],
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        "{cl}"
    );
    assert_eq!(
        cl["plugins"][2],
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        "{cl}"
    );
    let defaults = std::fs::read_to_string(at("/etc/default/kuryr-daemon")).expect("defaults");
    for want in [
        "--chain portmap,bandwidth",
        "--install-cni-plugins-from /usr/local/libexec/kuryr/cni-plugins",
    ] {
        assert!(defaults.contains(want), "{want} not in {defaults}");
    }
    for p in ["portmap", "bandwidth"] {
        let out = run(&mut Command::new(at(&format!(
            "/usr/local/libexec/kuryr/cni-plugins/{p}"
        ))));
        let about = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            about.starts_with(&format!("CNI {p} plugin v")),
            "{p}: {about}"
        );
    }
    let mut plugin = cl["plugins"][0].clone();
    plugin["cniVersion"] = cl["cniVersion"].clone();
    plugin["name"] = cl["name"].clone();
    let mut child = Command::new(at("/opt/cni/bin/kuryr-cni"))
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kuryr-cni");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(plugin.to_string().as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("kuryr-cni VERSION");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1.1.0"),
        "{out:?}"
    );

    // systemd accepts the units: no unknown keys or bad values (their binaries pointed at the
    // ones installed under the scratch root, which systemd-analyze checks are executable).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let units = tmp("units");
        std::fs::create_dir_all(&units).expect("units dir");
        let mut files = Vec::new();
        for u in ["kuryr-daemon.service", "kuryr-controller.service"] {
            let text =
                std::fs::read_to_string(at(&format!("/etc/systemd/system/{u}"))).expect("unit");
            assert!(text.contains("ExecStart=/usr/local/bin/"), "{u}: {text}");
            let f = units.join(u);
            std::fs::write(
                &f,
                text.replace(
                    "/usr/local/bin/",
                    &format!("{}/", at("/usr/local/bin").display()),
                ),
            )
            .expect("unit copy");
            files.push(f);
        }
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&files));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("kuryr-"),
            "systemd-analyze verify:\n{err}"
        );
        let _ = std::fs::remove_dir_all(&units);
    } else {
        kuryr_test_support::skip::record_skip(
            "no /usr/bin/systemd-analyze: the systemd units are not verified",
        );
    }

    must(
        Command::new(deploy_dir().join("install-host.sh"))
            .args(["--role", "all", "--uninstall", "--root"])
            .arg(&root),
    );
    for p in [
        "/opt/cni/bin/kuryr-cni",
        "/usr/local/bin/kuryr-daemon",
        "/usr/local/libexec/kuryr/cni-plugins/portmap",
        "/usr/local/bin/kuryr-controller",
        "/etc/systemd/system/kuryr-daemon.service",
        "/etc/systemd/system/kuryr-controller.service",
        "/etc/cni/net.d/10-kuryr.conflist",
    ] {
        assert!(!at(p).exists(), "{p} left after --uninstall");
    }
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&conf);
}

struct App<'a> {
    ns: &'a str,
    cloud: &'a Cloud,
    node: String,
}

impl App<'_> {
    /// Every pod of the app Ready, with exactly one ACTIVE Neutron port bound here whose IP is
    /// the pod IP; returns (name, uid, ip, port id).
    fn networked(&self, want: usize, timeout: Duration) -> Vec<(String, String, String, String)> {
        let t0 = Instant::now();
        wait_for(
            &format!("{want} app pods Ready"),
            timeout,
            Duration::from_secs(1),
            || {
                let ps = pods(self.ns, "app=web");
                (ps.len() == want && ps.iter().all(pod_ready)).then_some(())
            },
        );
        eprintln!("{want} app pods Ready after {:?}", t0.elapsed());
        let mut out = Vec::new();
        for p in pods(self.ns, "app=web") {
            let name = p["metadata"]["name"].as_str().expect("name").to_string();
            let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
            let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
            let ports = self.cloud.ports_of_device(&uid);
            assert_eq!(
                ports.len(),
                1,
                "pod {name}: exactly one Neutron port, got {ports:?}"
            );
            let port = &ports[0];
            assert_eq!(port.status, "ACTIVE", "{port:?}");
            assert_eq!(port.device_owner, kuryr_core::names::DEVICE_OWNER);
            assert_eq!(port.binding_host_id, self.node);
            assert_eq!(
                port.ip(),
                Some(ip.as_str()),
                "pod {name}: the pod IP is its port's"
            );
            out.push((name, uid, ip, port.id.clone()));
        }
        out
    }

    fn exec(&self, pod: &str, cmd: &[&str]) -> std::process::Output {
        run(kubectl().args(["exec", "-n", self.ns, pod, "--"]).args(cmd))
    }

    fn ping(&self, from: &str, to: &str) {
        let out = self.exec(from, &["ping", "-c", "2", "-W", "2", to]);
        assert!(
            out.status.success(),
            "{from} -> {to}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// kuryr's Neutron ports (device_owner compute:kuryr) as (id, name, device_id). Others on
/// this machine create such ports too; the test only judges the ones of its namespace (the
/// controller names ports `<namespace>/<pod>`) and of its pods' UIDs.
fn kuryr_ports(cloud: &Cloud) -> Vec<(String, String, String)> {
    let q = kuryr_openstack::Query::new().eq("device_owner", kuryr_core::names::DEVICE_OWNER);
    cloud
        .rt
        .block_on(cloud.neutron.list_ports(&q))
        .expect("list ports")
        .into_iter()
        .map(|p| (p.id, p.name, p.device_id))
        .collect()
}

/// Ports of namespace `ns` or of one of `uids` whose device is not one of `live`.
fn leaked(
    cloud: &Cloud,
    ns: &str,
    uids: &BTreeSet<String>,
    live: &BTreeSet<String>,
) -> Vec<(String, String, String)> {
    kuryr_ports(cloud)
        .into_iter()
        .filter(|(_, name, dev)| name.starts_with(&format!("{ns}/")) || uids.contains(dev))
        .filter(|(_, _, dev)| !live.contains(dev))
        .collect()
}

fn daemon_pods() -> Vec<Value> {
    pods(
        NAMESPACE,
        "app.kubernetes.io/name=kuryr-rs,app.kubernetes.io/component=daemon",
    )
}

fn controller_pods() -> Vec<Value> {
    pods(
        NAMESPACE,
        "app.kubernetes.io/name=kuryr-rs,app.kubernetes.io/component=controller",
    )
}

fn logs(selector: &str) -> String {
    let out = run(kubectl().args([
        "logs",
        "-n",
        NAMESPACE,
        "-l",
        selector,
        "--tail=40",
        "--prefix",
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (c) kuryr-rs deployed from the manifests onto the stack's kubelet: images built from scratch
/// and imported; the node goes Ready only once the daemon is (its conflist); a Deployment's
/// pods get Neutron ports and talk to each other and to a VM; deleting the daemon and the
/// controller pods while pods are being created recovers with every pod networked and no leaked
/// port; a rolling update of the DaemonSet keeps traffic flowing; deleting the manifests leaves
/// no conflist, no kuryr-cni, and no kuryr Neutron port once the pods are gone.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn deployed_in_cluster_end_to_end() {
    let _g = cluster_lock();
    let node = stack_env()["STACK_HOST"].clone();

    // Images first (minutes on a cold cache), before claiming the node.
    let t = Instant::now();
    let images = build_and_import_images();
    eprintln!(
        "images built and imported in {:?}:\n{}",
        t.elapsed(),
        images.join("\n")
    );
    for name in ["kuryr-controller", "kuryr-daemon"] {
        assert!(
            images
                .iter()
                .any(|l| l.starts_with(&format!("localhost/kuryr/{name}:"))),
            "{images:?}"
        );
    }

    wait_for_no_host_kuryr(Duration::from_secs(20 * 60));
    let conflist_backup = HostFile::save(CONFLIST);
    let cni_backup = HostFile::save(CNI_BIN);
    if conflist_backup.existed() {
        // Nobody runs a daemon (checked above): a stale conflist from a killed host daemon.
        eprintln!("removing a stale {CONFLIST} (restored afterwards)");
        std::fs::remove_file(CONFLIST).expect("remove stale conflist");
    }
    let cloud = Cloud::connect();
    // The host has Debian's reference plugins (`version unknown`) where the DaemonSet installs
    // the ones kuryr-rs ships (issue 17): it must replace them.
    for p in ["portmap", "bandwidth"] {
        let debian = Path::new("/usr/lib/cni").join(p);
        if debian.exists() {
            let dest = Path::new("/opt/cni/bin").join(p);
            let tmp = dest.with_extension("e2e-tmp");
            std::fs::copy(&debian, &tmp).expect("copy Debian's plugin");
            std::fs::rename(&tmp, &dest).expect("install Debian's plugin");
        }
    }

    // The manifests as a kubectl user adapts them to this cloud.
    let mut objs = manifest_objects(&manifests());
    overlay_for_stack(&mut objs);
    let (crd_objs, objs): (Vec<Value>, Vec<Value>) = objs
        .into_iter()
        .partition(|o| kind(o) == "CustomResourceDefinition");
    let crd_file = tmp("crds.json");
    write_list(&crd_objs, &crd_file);
    let manifest = tmp("kuryr-rs.json");
    write_list(&objs, &manifest);

    // Without a kuryr daemon the node's network is not ready.
    wait_for(
        "node NotReady without the CNI",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || (node_ready(&node) != "True").then_some(()),
    );

    // The host as a fresh node without systemd has it (issue 10): /run/netns is no shared
    // mount, and the daemon is the node's first pod. Its init container must fix that.
    let before = make_run_netns_unshared();
    eprintln!("/run/netns before the DaemonSet: {before}");
    assert!(
        !run_netns_propagation()
            .unwrap_or_default()
            .contains("shared:"),
        "/run/netns still shared"
    );

    must(
        kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=kuryr-e2e-deploy",
                "-f",
            ])
            .arg(&crd_file),
    );
    wait_crds_established("--all");
    let installed = Installed {
        manifest: manifest.clone(),
        armed: true,
    };
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, node) = (watching.clone(), node.clone());
        std::thread::spawn(move || {
            // (node Ready first seen, conflist first seen, samples of Ready without a conflist)
            let (mut ready_at, mut conf_at, mut violations) = (None, None, Vec::new());
            let t0 = Instant::now();
            // Sample until told to stop, and once more after that (the node is Ready by then).
            loop {
                let last = !watching.load(Ordering::Relaxed);
                let ready = node_ready(&node) == "True";
                let conf = Path::new(CONFLIST).exists();
                // One time per sample: both first seen in one sample are simultaneous.
                let now = t0.elapsed();
                if ready && ready_at.is_none() {
                    ready_at = Some(now);
                }
                if conf && conf_at.is_none() {
                    conf_at = Some(now);
                }
                if ready && !conf {
                    violations.push(now);
                }
                if last {
                    break;
                }
                // Pacing of the sampler (it records, it waits for nothing).
                std::thread::sleep(Duration::from_millis(250));
            }
            (ready_at, conf_at, violations)
        })
    };
    let t0 = Instant::now();
    must(
        kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=kuryr-e2e-deploy",
                "-f",
            ])
            .arg(&manifest),
    );

    let rollout = run(kubectl().args([
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        "daemonset/kuryr-daemon",
        "--timeout=180s",
    ]));
    assert!(
        rollout.status.success(),
        "daemon not ready:\n{}\n{}",
        String::from_utf8_lossy(&rollout.stderr),
        logs("app.kubernetes.io/component=daemon")
    );
    eprintln!("daemon Ready {:?} after apply", t0.elapsed());
    let after = run_netns_propagation();
    assert!(
        after.as_deref().unwrap_or_default().contains("shared:"),
        "the init container did not make /run/netns a shared mount point on the host: {after:?}"
    );
    let rollout = run(kubectl().args([
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        "deployment/kuryr-controller",
        "--timeout=180s",
    ]));
    assert!(
        rollout.status.success(),
        "controller not ready:\n{}\n{}",
        String::from_utf8_lossy(&rollout.stderr),
        logs("app.kubernetes.io/component=controller")
    );
    eprintln!("controller Ready {:?} after apply", t0.elapsed());
    must(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=90s",
        "node",
        &node,
    ]));
    watching.store(false, Ordering::Relaxed);
    let (ready_at, conf_at, violations) = watcher.join().expect("watcher");
    eprintln!("conflist written at {conf_at:?}, node Ready at {ready_at:?}");
    assert!(
        violations.is_empty(),
        "node Ready without the kuryr conflist at {violations:?}"
    );
    assert!(
        conf_at.is_some() && ready_at.is_some() && conf_at <= ready_at,
        "conflist {conf_at:?} must precede node Ready {ready_at:?}"
    );
    assert!(
        Path::new(CNI_BIN).exists(),
        "the DaemonSet installed kuryr-cni"
    );
    let cl: Value =
        serde_json::from_slice(&std::fs::read(CONFLIST).expect("conflist")).expect("json");
    assert_eq!(
        cl["plugins"][0]["daemon_socket"], "/run/kuryr/kuryr-daemon.sock",
        "{cl}"
    );
    assert!(
        Path::new("/run/kuryr/kuryr-daemon.sock").exists(),
        "the socket the conflist names exists on the host"
    );
    // hostPort and shaping out of the box: portmap and bandwidth chained, and the pinned
    // plugins the image ships installed next to kuryr-cni.
    assert_eq!(
        cl["plugins"][1],
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        "{cl}"
    );
    assert_eq!(
        cl["plugins"][2],
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        "{cl}"
    );
    let pinned = std::fs::read_to_string(deploy_dir().join("../hack/stack/versions.env"))
        .expect("versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("CNI_PLUGINS_VERSION=").map(str::to_owned))
        .expect("CNI_PLUGINS_VERSION");
    for p in ["portmap", "bandwidth"] {
        let out = run(&mut Command::new(Path::new("/opt/cni/bin").join(p)));
        let about = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            about.starts_with(&format!("CNI {p} plugin {pinned}\n")),
            "/opt/cni/bin/{p} is not the shipped {pinned}: {about}"
        );
    }

    // An app: a Deployment of 2 pods, networked, talking to each other and to a VM.
    let ns = TestNamespace::create("kst-deploy-");
    let app = App {
        ns: &ns.0,
        cloud: &cloud,
        node: node.clone(),
    };
    let dep_file = tmp("app.json");
    std::fs::write(
        &dep_file,
        kuryr_e2e::kuryr::web_deployment(&ns.0, 2).to_string(),
    )
    .expect("write app");
    must(kubectl().arg("apply").arg("-f").arg(&dep_file));
    let first = app.networked(2, Duration::from_secs(180));
    app.ping(&first[0].0, &first[1].2);
    app.ping(&first[1].0, &first[0].2);
    // TCP (busybox nc: busybox-static 1.35's wget crashes on this Debian).
    let get = app.exec(
        &first[1].0,
        &[
            "sh",
            "-c",
            &format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {} 8080",
                first[0].2
            ),
        ],
    );
    let body = String::from_utf8_lossy(&get.stdout);
    assert!(
        body.contains("200 OK") && body.trim_end().ends_with(first[0].0.as_str()),
        "TCP between the pods: {get:?}"
    );
    {
        let vm = PlainPort::create(&cloud, 1);
        cloud.wait_active(&[vm[0].port.id.clone()]);
        let pod_ip: std::net::IpAddr = first[0].2.parse().expect("ip");
        assert!(vm[0].ping(pod_ip), "VM {} -> pod {}", vm[0].ip, pod_ip);
        app.ping(&first[1].0, &vm[0].ip.to_string());
    }

    // Kill the daemon and the controller while pods are being created.
    let names = |ps: Vec<Value>| -> BTreeSet<String> {
        ps.iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    let (old_daemon, old_controller) = (names(daemon_pods()), names(controller_pods()));
    must(kubectl().args([
        "delete",
        "pod",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/component=daemon",
        "--wait=false",
    ]));
    must(kubectl().args(["scale", "-n", &ns.0, "deployment/web", "--replicas=5"]));
    // The controller goes while the new pods are being created: once they exist.
    wait_for(
        "the 5 pods of the scaled Deployment created",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (pods(&ns.0, "app=web").len() >= 5).then_some(()),
    );
    must(kubectl().args([
        "delete",
        "pod",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/component=controller",
        "--wait=false",
    ]));
    let t = Instant::now();
    for (what, pods_of, old) in [
        ("daemon", daemon_pods as fn() -> Vec<Value>, &old_daemon),
        ("controller", controller_pods, &old_controller),
    ] {
        wait_for(
            &format!("a new {what} pod Ready"),
            Duration::from_secs(180),
            Duration::from_secs(1),
            || {
                let ps = pods_of();
                (ps.iter().any(|p| {
                    pod_ready(p) && !old.contains(p["metadata"]["name"].as_str().unwrap_or(""))
                }) && ps
                    .iter()
                    .all(|p| !old.contains(p["metadata"]["name"].as_str().unwrap_or(""))))
                .then_some(())
            },
        );
        eprintln!("new {what} pod Ready {:?} after the kill", t.elapsed());
    }
    let all = app.networked(5, Duration::from_secs(300));
    eprintln!(
        "5 pods networked {:?} after killing the daemon and the controller",
        t.elapsed()
    );
    for (name, _, _, _) in &all {
        app.ping(name, &first[0].2);
    }
    let ours: BTreeSet<String> = all.iter().map(|(_, uid, _, _)| uid.clone()).collect();
    let seen: BTreeSet<String> = ours
        .iter()
        .chain(first.iter().map(|f| &f.1))
        .cloned()
        .collect();
    let extra = leaked(&cloud, &ns.0, &seen, &ours);
    assert!(
        extra.is_empty(),
        "leaked kuryr ports (not of a live pod): {extra:?}"
    );

    // A rolling update of the DaemonSet: existing pods keep talking.
    let pinger = {
        let (ns, from, to) = (ns.0.clone(), all[0].0.clone(), all[1].2.clone());
        std::thread::spawn(move || {
            run(kubectl().args([
                "exec", "-n", &ns, &from, "--", "ping", "-c", "40", "-i", "0.5", "-W", "1", &to,
            ]))
        })
    };
    // Pacing of the traffic probe: some pings answered before the restart begins.
    std::thread::sleep(Duration::from_secs(2));
    must(kubectl().args([
        "rollout",
        "restart",
        "-n",
        NAMESPACE,
        "daemonset/kuryr-daemon",
    ]));
    must(kubectl().args([
        "rollout",
        "status",
        "-n",
        NAMESPACE,
        "daemonset/kuryr-daemon",
        "--timeout=180s",
    ]));
    let ping = pinger.join().expect("pinger");
    let said = String::from_utf8_lossy(&ping.stdout);
    assert!(
        said.contains(" 0% packet loss"),
        "traffic interrupted by the DaemonSet rolling update:\n{said}"
    );
    eprintln!(
        "during the DaemonSet rolling update: {}",
        said.lines()
            .find(|l| l.contains("packet loss"))
            .unwrap_or("")
    );
    let after = app.networked(5, Duration::from_secs(60));
    let seen: BTreeSet<String> = seen
        .into_iter()
        .chain(after.iter().map(|a| a.1.clone()))
        .collect();

    // Pods gone -> their ports gone; then uninstall -> nothing left on the host or the cloud.
    let ns_name = ns.0.clone();
    drop(ns);
    wait_for(
        "the app's Neutron ports to be deleted",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || {
            leaked(&cloud, &ns_name, &seen, &BTreeSet::new())
                .is_empty()
                .then_some(())
        },
    );
    drop(installed);
    wait_for(
        "kuryr pods gone",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || (daemon_pods().is_empty() && controller_pods().is_empty()).then_some(()),
    );
    assert!(
        !Path::new(CONFLIST).exists(),
        "conflist left after uninstall"
    );
    assert!(
        !Path::new(CNI_BIN).exists(),
        "kuryr-cni left in /opt/cni/bin after uninstall"
    );
    let left = leaked(&cloud, &ns_name, &seen, &BTreeSet::new());
    assert!(
        left.is_empty(),
        "kuryr Neutron ports left after uninstall: {left:?}"
    );
    wait_for(
        "node NotReady after uninstall",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || (node_ready(&node) != "True").then_some(()),
    );
    let _ = std::fs::remove_file(&manifest);
    let _ = std::fs::remove_file(&crd_file);
    let _ = std::fs::remove_file(&dep_file);
    drop(cni_backup);
    drop(conflist_backup);
}
