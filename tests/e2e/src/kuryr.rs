//! kuryr-daemon and kuryr-controller as host processes for a test, the way `hack/kuryr-services`
//! runs them (bare-metal style), plus a namespace guard.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{kubectl, must, run, stack_env, state_dir, wait_for, workspace_bin, Proc};

/// Where the daemon writes the conflist (containerd's CRI plugin reads it).
pub const CONFLIST: &str = "/etc/cni/net.d/10-kuryr.conflist";

/// The running pair; both are stopped on drop (the daemon removes its conflist then).
pub struct Kuryr {
    pub daemon: Proc,
    pub controller: Proc,
}

/// Starts both with the stack's kuryr.conf; `daemon_args` are extra daemon flags (e.g.
/// `--chain portmap`). Waits until the daemon wrote the conflist and the node is Ready.
pub fn start(daemon_args: &[&str]) -> Kuryr {
    start_with_config(&state_dir().join("kuryr.conf"), daemon_args)
}

/// [`start`] with another kuryr.conf (e.g. the stack's plus a few options, see
/// [`config_with`]).
pub fn start_with_config(conf: &Path, daemon_args: &[&str]) -> Kuryr {
    let mut daemon = spawn_daemon(conf, daemon_args);
    let controller = spawn_controller(conf);
    wait_daemon_ready(&mut daemon);
    Kuryr { daemon, controller }
}

/// The kubeconfig `component` (`kuryr-daemon`, `kuryr-controller`) runs with: the stack's admin
/// one; with `KURYR_E2E_AS_SERVICE_ACCOUNTS=1`, the same impersonating the component's
/// ServiceAccount of the deploy manifests (`kube-system/<component>`), so a test run proves the
/// chart's RBAC is enough for what the test exercises (the manifests' RBAC objects must be
/// applied, and the CRDs installed: the controller then runs without `--install-crds`).
pub fn kubeconfig_for(component: &str) -> (PathBuf, bool) {
    let admin = state_dir().join("kubeconfig");
    if std::env::var("KURYR_E2E_AS_SERVICE_ACCOUNTS").as_deref() != Ok("1") {
        return (admin, false);
    }
    let mut kc: serde_json::Value = serde_json::from_str(&must(kubectl().args([
        "config",
        "view",
        "--raw",
        "--flatten",
        "-o",
        "json",
    ])))
    .expect("kubeconfig as JSON");
    let user = format!("system:serviceaccount:kube-system:{component}");
    for u in kc["users"].as_array_mut().expect("users") {
        u["user"]["as"] = user.clone().into();
    }
    let path = std::env::temp_dir().join(format!(
        "kuryr-e2e-{component}-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&path, kc.to_string()).expect("write the impersonating kubeconfig");
    (path, true)
}

/// kuryr-daemon alone, as [`start_with_config`] runs it (not waited for: see
/// [`wait_daemon_ready`]).
pub fn spawn_daemon(conf: &Path, daemon_args: &[&str]) -> Proc {
    let (kcfg, _) = kubeconfig_for("kuryr-daemon");
    let host = stack_env()["STACK_HOST"].clone();
    Proc::spawn(
        "kuryr-daemon",
        Command::new(workspace_bin("kuryr-daemon"))
            .arg("--config-file")
            .arg(conf)
            .arg("--kubeconfig")
            .arg(&kcfg)
            .args(["--node-name", &host, "--cni-bin-dir", "/opt/cni/bin"])
            .arg("--install-cni-from")
            .arg(workspace_bin("kuryr-cni"))
            .args(daemon_args)
            .env("RUST_LOG", "info"),
    )
}

/// kuryr-controller alone, as [`start_with_config`] runs it.
pub fn spawn_controller(conf: &Path) -> Proc {
    spawn_controller_with(conf, &[])
}

/// [`spawn_controller`] with extra flags (e.g. `--lb-audit-seconds 5`).
pub fn spawn_controller_with(conf: &Path, args: &[&str]) -> Proc {
    let (kcfg, as_service_account) = kubeconfig_for("kuryr-controller");
    Proc::spawn(
        "kuryr-controller",
        Command::new(workspace_bin("kuryr-controller"))
            .arg("--config-file")
            .arg(conf)
            .arg("--kubeconfig")
            .arg(&kcfg)
            .args((!as_service_account).then_some("--install-crds"))
            .args(args)
            .env("RUST_LOG", "info"),
    )
}

/// Waits until `daemon` wrote the conflist and the node is Ready.
pub fn wait_daemon_ready(daemon: &mut Proc) {
    let host = stack_env()["STACK_HOST"].clone();
    // The daemon writes the conflist only once ready; then the node goes Ready.
    wait_for(
        "the kuryr conflist",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            assert!(
                daemon.alive(),
                "kuryr-daemon exited:\n{}",
                daemon.log_tail(40)
            );
            Path::new(CONFLIST).exists().then_some(())
        },
    );
    must(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "node",
        &host,
    ]));
}

/// A kuryr.conf of a test's own: the stack's plus `extra` (INI text; a repeated option wins),
/// mode 0600 (it holds the controller's credentials), removed on drop.
pub struct ConfigFile(pub std::path::PathBuf);

/// Writes [`ConfigFile`] named after `tag` under the temp dir.
pub fn config_with(tag: &str, extra: &str) -> ConfigFile {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let base =
        std::fs::read_to_string(state_dir().join("kuryr.conf")).expect("the stack's kuryr.conf");
    let path = std::env::temp_dir().join(format!("kuryr-{tag}-{}.conf", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("create kuryr.conf");
    write!(f, "{base}\n{extra}\n").expect("write kuryr.conf");
    ConfigFile(path)
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A namespace deleted (without waiting) on drop.
pub struct Namespace(pub String);

impl Namespace {
    /// Creates a namespace named `prefix` + a unique suffix.
    /// `kubectl apply` of `object` (JSON), written to a temporary file named after the
    /// namespace and `name`.
    pub fn apply_json(&self, name: &str, object: &serde_json::Value) {
        let path = std::env::temp_dir().join(format!("{}-{name}.json", self.0));
        std::fs::write(&path, object.to_string()).expect("write manifest");
        must(kubectl().arg("apply").arg("-f").arg(&path));
    }

    pub fn create(prefix: &str) -> Namespace {
        let ns = Namespace(crate::unique(prefix));
        must(kubectl().args(["create", "namespace", &ns.0]));
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // No stack, nothing to delete (and kubectl() would panic, aborting an unwinding test).
        if !crate::state_dir().join("stack.env").exists() {
            return;
        }
        let _ = run(kubectl().args(["delete", "namespace", &self.0, "--wait=false"]));
    }
}

/// A ValidatingAdmissionPolicy (and binding) denying every status write of one openstack.org
/// resource in one namespace: it holds the controller between its OpenStack create and the
/// status write that would record it, so a kill -9 there certainly falls in that window.
/// Removed by [`StatusWriteBlock::lift`] or on drop.
pub struct StatusWriteBlock {
    name: String,
    lifted: bool,
}

impl StatusWriteBlock {
    /// Denies `UPDATE` of `<plural>/status` in `ns`; returns once the API server enforces it:
    /// the status write `status` (a merge patch) of a probe object (`kind`, spec `probe_spec`,
    /// created in `ns` and deleted again) is refused.
    pub fn install(
        ns: &Namespace,
        plural: &str,
        kind: &str,
        probe_spec: serde_json::Value,
        status: serde_json::Value,
    ) -> StatusWriteBlock {
        let n = &ns.0;
        let name = format!("{n}-block-{plural}-status");
        let blocked = format!("e2e: {plural} status writes are blocked");
        ns.apply_json(
            "policy",
            &serde_json::json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{"apiGroups": ["openstack.org"], "apiVersions": ["v1"],
                        "operations": ["UPDATE"], "resources": [format!("{plural}/status")]}]},
                    "validations": [{"expression": "false", "message": blocked}]
                }
            }),
        );
        let block = StatusWriteBlock {
            name: name.clone(),
            lifted: false,
        };
        ns.apply_json(
            "binding",
            &serde_json::json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {"policyName": name, "validationActions": ["Deny"],
                         "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}}}
            }),
        );
        ns.apply_json(
            "probe",
            &serde_json::json!({"apiVersion": "openstack.org/v1", "kind": kind,
                "metadata": {"name": "probe", "namespace": n}, "spec": probe_spec}),
        );
        let patch = status.to_string();
        wait_for(
            &format!("the {plural} status-blocking policy in force"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let out = run(kubectl().args([
                    "patch",
                    plural,
                    "probe",
                    "-n",
                    n,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ]));
                let err = String::from_utf8_lossy(&out.stderr);
                if out.status.success() {
                    return None;
                }
                assert!(
                    err.contains(&blocked),
                    "probe status write of {plural} {n}/probe failed otherwise: {err}"
                );
                Some(())
            },
        );
        must(kubectl().args(["delete", plural, "probe", "-n", n, "--wait=true"]));
        block
    }

    /// Removes binding and policy.
    pub fn lift(&mut self) {
        if self.lifted {
            return;
        }
        must(kubectl().args([
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &self.name,
            "--ignore-not-found",
        ]));
        self.lifted = true;
    }
}

impl Drop for StatusWriteBlock {
    fn drop(&mut self) {
        if !self.lifted {
            let _ = run(kubectl().args([
                "delete",
                "validatingadmissionpolicybinding,validatingadmissionpolicy",
                &self.name,
                "--ignore-not-found",
            ]));
        }
    }
}

/// A busybox pod serving its hostname over HTTP on 8080 (label `app: APP`), as the e2e tests
/// create them through kubelet.
pub fn web_pod(ns: &str, name: &str, app: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
            }]
        }
    })
}

/// A Deployment `web` of [`web_pod`]-like pods (label `app: web`, named port `http` 8080) whose
/// readiness probe fails while `/tmp/unready` exists.
pub fn web_deployment(ns: &str, replicas: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "web", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                        "command": ["/bin/sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"exec": {"command": ["sh", "-c", "test ! -e /tmp/unready"]}, "periodSeconds": 1, "failureThreshold": 1}
                    }]
                }
            }
        }
    })
}

/// The eth0 VIF of a KuryrPort (its JSON), in whichever form it is stored (upstream's os-vif
/// primitive, which kuryr-rs writes too, or kuryr-rs's legacy typed form); `None` if it has none
/// or it is unreadable.
pub fn vif_of(kp: &serde_json::Value) -> Option<kuryr_core::vif::Vif> {
    kuryr_core::vif::Vif::from_status_value(&kp["status"]["vifs"]["eth0"]["vif"]).ok()
}

/// The eth0 VIF of KuryrPort `ns/name`; panics if it has none.
pub fn kuryrport_vif(ns: &str, name: &str) -> kuryr_core::vif::Vif {
    let kp =
        crate::deploy::kjson(kubectl().args(["get", "kuryrport", "-n", ns, name, "-o", "json"]));
    vif_of(&kp).unwrap_or_else(|| {
        panic!(
            "KuryrPort {ns}/{name} has no readable eth0 VIF: {}",
            kp["status"]
        )
    })
}
