//! Helpers for the packaging tests (`tests/deploy.rs`): the rendered manifests as JSON, the
//! overlay that points them at the local stack, host-process detection, and cleanup guards.

use crate::{kubectl, must, run, state_dir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub const CONFLIST: &str = "/etc/cni/net.d/10-kuryr.conflist";
pub const CNI_BIN: &str = "/opt/cni/bin/kuryr-cni";
pub const NAMESPACE: &str = "kube-system";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

/// The tests of this module touch the same cluster-wide objects (ClusterRoles, the DaemonSet):
/// one at a time.
pub fn cluster_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `kubectl ... -o json` parsed.
pub fn kjson(cmd: &mut Command) -> Value {
    serde_json::from_str(&must(cmd)).expect("kubectl printed JSON")
}

/// The objects of a manifest file (multi-document YAML), as JSON, via kubectl's client side.
pub fn manifest_objects(path: &Path) -> Vec<Value> {
    // One JSON document per object, one after the other (or a List).
    let text = must(
        kubectl()
            .args(["create", "--dry-run=client", "-o", "json", "-f"])
            .arg(path),
    );
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let v = v.expect("kubectl printed JSON");
        match v["kind"].as_str() {
            Some("List") => out.extend(v["items"].as_array().cloned().unwrap_or_default()),
            _ => out.push(v),
        }
    }
    out
}

/// Writes objects as a JSON `List` file kubectl takes with `-f`.
pub fn write_list(objects: &[Value], path: &Path) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(path, serde_json::to_vec_pretty(&list).expect("json")).expect("write manifest");
}

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

/// The stack's kuryr.conf made fit for the pods: the API server CA and token are the pod's
/// service account ones (the host path of the stack's CA is not mounted), everything else as is.
pub fn stack_conf_for_pods() -> String {
    let text =
        std::fs::read_to_string(state_dir().join("kuryr.conf")).expect("the stack's kuryr.conf");
    text.lines()
        .filter(|l| {
            let k = l.split('=').next().unwrap_or("").trim();
            !matches!(
                k,
                "ssl_ca_crt_file" | "token_file" | "ssl_client_crt_file" | "ssl_client_key_file"
            )
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Drops one `[section]` (with its options) from an INI text.
pub fn without_section(ini: &str, section: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for l in ini.lines() {
        let t = l.trim();
        if t.starts_with('[') && t.ends_with(']') {
            skip = &t[1..t.len() - 1] == section;
        }
        if !skip {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// What a `kubectl apply` user does to the rendered manifests for the local stack: the stack's
/// kuryr.conf into the ConfigMap (no credentials) and the controller's Secret, the API server
/// at 127.0.0.1:6443 (no kube-proxy here, so the `kubernetes` Service IP is unreachable from
/// hostNetwork pods), one controller replica (one node; hostNetwork replicas cannot share it),
/// and `imagePullPolicy: Never` (the images are imported, there is no registry).
pub fn overlay_for_stack(objects: &mut [Value]) {
    overlay_for_stack_with(objects, "");
}

/// [`overlay_for_stack`] with `extra_conf` (INI text) appended to both kuryr.conf files (a
/// repeated option wins), as a user changes an option in the ConfigMap and the Secret.
pub fn overlay_for_stack_with(objects: &mut [Value], extra_conf: &str) {
    let conf = format!("{}{extra_conf}", stack_conf_for_pods());
    let daemon_conf = without_section(&conf, "neutron");
    let api_env = json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
        {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": "6443"},
    ]);
    for o in objects.iter_mut() {
        match (kind(o), name(o)) {
            ("ConfigMap", "kuryr-config") => o["data"]["kuryr.conf"] = json!(daemon_conf),
            ("Secret", "kuryr-controller-config") => {
                if let Some(m) = o.as_object_mut() {
                    m.remove("data");
                }
                o["stringData"] = json!({"kuryr.conf": conf});
            }
            ("Deployment", "kuryr-controller") | ("DaemonSet", "kuryr-daemon") => {
                if kind(o) == "Deployment" {
                    o["spec"]["replicas"] = json!(1);
                }
                for c in o["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .expect("containers")
                {
                    c["imagePullPolicy"] = json!("Never");
                    let env = c["env"].as_array_mut().expect("env");
                    env.retain(|e| {
                        !e["name"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("KUBERNETES_SERVICE_")
                    });
                    env.extend(api_env.as_array().expect("env").iter().cloned());
                }
            }
            _ => {}
        }
    }
}

/// Pids of kuryr-controller / kuryr-daemon processes (by argv[0], so cargo commands that merely
/// mention the names do not count).
pub fn kuryr_processes() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let base = Path::new(std::str::from_utf8(argv0).unwrap_or(""))
            .file_name()
            .map(|s| s.to_string_lossy().into_owned());
        if matches!(base.as_deref(), Some("kuryr-controller" | "kuryr-daemon")) {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            out.push((pid, args.join(" ").trim().to_string()));
        }
    }
    out
}

/// Other tests and helpers on this machine run kuryr-controller / kuryr-daemon as host
/// processes; an in-cluster deployment must not race them for the conflist, the CNI binary
/// and the pods. Waits (polling every 30 s, up to `timeout`) until none runs.
pub fn wait_for_no_host_kuryr(timeout: Duration) {
    let end = std::time::Instant::now() + timeout;
    loop {
        let p = kuryr_processes();
        if p.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "kuryr host processes still running after {timeout:?}: {p:?}"
        );
        eprintln!("waiting for host kuryr processes to end: {p:?}");
        std::thread::sleep(Duration::from_secs(30));
    }
}

/// A host file that may exist before a test and that the test's deployment overwrites and
/// removes: saved on creation, put back on drop.
pub struct HostFile {
    pub path: PathBuf,
    saved: Option<(Vec<u8>, u32)>,
}

impl HostFile {
    pub fn save(path: &str) -> HostFile {
        use std::os::unix::fs::PermissionsExt;
        let saved = std::fs::read(path).ok().map(|b| {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644);
            (b, mode)
        });
        HostFile {
            path: PathBuf::from(path),
            saved,
        }
    }

    pub fn existed(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some((bytes, mode)) = &self.saved {
            if !self.path.exists() {
                let tmp = self.path.with_extension("restore-tmp");
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode));
                    let _ = std::fs::rename(&tmp, &self.path);
                }
            }
        }
    }
}

/// `kubectl delete` of the given manifest file on drop (best effort, for panicking tests).
pub struct Installed {
    pub manifest: PathBuf,
    pub armed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.armed {
            let _ = run(kubectl()
                .args([
                    "delete",
                    "--ignore-not-found",
                    "--wait=true",
                    "--timeout=120s",
                    "-f",
                ])
                .arg(&self.manifest));
        }
    }
}

/// A namespace deleted on drop.
pub struct TestNamespace(pub String);

impl TestNamespace {
    pub fn create(prefix: &str) -> TestNamespace {
        let ns = crate::unique(prefix);
        must(kubectl().args(["create", "namespace", &ns]));
        TestNamespace(ns)
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace while kuryr still runs (its pods carry kuryr's finalizer), waiting
    /// for it; if that does not finish (a failing test), strips the finalizers so the namespace
    /// does not stay behind forever.
    fn drop(&mut self) {
        let gone = run(kubectl().args([
            "delete",
            "namespace",
            &self.0,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
        ]));
        if !gone.status.success() {
            for res in ["pods", "kuryrports.openstack.org"] {
                let names = run(kubectl().args(["get", res, "-n", &self.0, "-o", "name"]));
                for n in String::from_utf8_lossy(&names.stdout).lines() {
                    let _ = run(kubectl().args([
                        "patch",
                        "-n",
                        &self.0,
                        n,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ]));
                }
            }
        }
    }
}

/// The node's Ready condition status ("True", "False", "Unknown").
pub fn node_ready(node: &str) -> String {
    let out = run(kubectl().args([
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `kubectl auth can-i VERB RESOURCE [flags] --as SUBJECT`: `Ok(true)` for "yes", `Ok(false)`
/// for "no"; anything else (kubectl failed, or the API server does not know the resource, which
/// kubectl answers "no" to with a warning) is an `Err` with kubectl's output, so a misspelt
/// resource cannot pass for a refusal.
pub fn can_i(subject: &str, args: &[&str]) -> Result<bool, String> {
    let out = run(kubectl()
        .args(["auth", "can-i", "--as", subject])
        .args(args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stdout.trim() {
        _ if stderr.contains("resource type") => Err(stderr.trim().to_string()),
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("{other} {}", stderr.trim())),
    }
}

/// Builds the images (static binaries included) and imports them into containerd; returns
/// build.sh's lines (`REF DIGEST ARCHIVE_BYTES UNCOMPRESSED_BYTES`).
/// `KURYR_IMAGES_NO_BUILD=1`: package the static binaries already built (no cargo run).
pub fn build_and_import_images() -> Vec<String> {
    let mut build = Command::new(deploy_dir().join("images/build.sh"));
    build.env("PATH", path_with_cargo());
    if std::env::var_os("KURYR_IMAGES_NO_BUILD").is_some_and(|v| v == "1") {
        build.arg("--no-build");
    }
    let lines = must(&mut build);
    must(&mut Command::new(deploy_dir().join("images/import.sh")));
    lines.lines().map(str::to_string).collect()
}

/// $PATH with ~/.cargo/bin first (the project's toolchain lives there).
pub fn path_with_cargo() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    format!(
        "{home}/.cargo/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Pods of a namespace matching a label selector, as JSON items.
pub fn pods(ns: &str, selector: &str) -> Vec<Value> {
    let list = kjson(kubectl().args(["get", "pods", "-n", ns, "-l", selector, "-o", "json"]));
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("kubectl get pods printed no item list: {list}"))
}

pub fn pod_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// How `/run/netns` is mounted in the host's mount namespace (this test process's): `None` when
/// it is no mount point, else the mountinfo optional fields (`shared:N`, `master:N`, or empty
/// for a private mount).
pub fn run_netns_propagation() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    // The last mount on the path is the one in effect.
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/run/netns"))
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let end = fields
                .iter()
                .position(|f| *f == "-")
                .unwrap_or(fields.len());
            fields[6..end].join(" ")
        })
}

/// Puts `/run/netns` back to what a fresh host without systemd has, so the DaemonSet must cope
/// with it (issue 10): no mount point at all when no netns is named; otherwise (netns of other
/// pods are mounted there and must stay) a private mount, which the runtime refuses for a
/// HostToContainer volume just the same. Returns what it left, for the log.
pub fn make_run_netns_unshared() -> String {
    let dir = Path::new("/run/netns");
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if run_netns_propagation().is_some() && empty {
        // Several stacked mounts are possible (each `ip netns add` on an unshared dir adds one).
        while run_netns_propagation().is_some() {
            must(Command::new("umount").arg("/run/netns"));
        }
        return "no mount point (fresh host)".into();
    }
    if run_netns_propagation().is_none() {
        return "no mount point (fresh host)".into();
    }
    must(Command::new("mount").args(["--make-private", "/run/netns"]));
    format!(
        "a private mount ({} netns kept)",
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    )
}

/// [`build_and_import_images`] once per test binary (its tests share the images): its lines.
pub fn images_built_once() -> &'static [String] {
    static IMAGES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    IMAGES.get_or_init(|| {
        let t = std::time::Instant::now();
        let lines = build_and_import_images();
        eprintln!(
            "images built and imported in {:.1?}:\n{}",
            t.elapsed(),
            lines.join("\n")
        );
        lines
    })
}

/// kuryr-rs in-cluster from the rendered manifests (`deploy/manifests/kuryr-rs.yaml`), as a
/// `kubectl apply` user adapts them to this stack ([`overlay_for_stack_with`]): the CRDs and the
/// other objects as two List files. Used by `deploy_stack` (hack/demo) and the migration tests.
pub struct InCluster {
    pub crds: PathBuf,
    pub objects: PathBuf,
    /// `--field-manager` of every apply.
    manager: String,
    /// Objects added to the manifests' (e.g. the warm pools' namespace).
    extra_objects: Vec<Value>,
}

impl InCluster {
    /// Writes the files (named after `tag`); `extra_conf`: see [`overlay_for_stack_with`].
    pub fn render(tag: &str, manager: &str, extra_conf: &str, extra_objects: &[Value]) -> Self {
        let dir = std::env::temp_dir();
        let ic = InCluster {
            crds: dir.join(format!("kuryr-rs-{tag}-crds.json")),
            objects: dir.join(format!("kuryr-rs-{tag}.json")),
            manager: manager.to_string(),
            extra_objects: extra_objects.to_vec(),
        };
        ic.write(extra_conf);
        ic
    }

    fn write(&self, extra_conf: &str) {
        let mut objs = manifest_objects(&deploy_dir().join("manifests/kuryr-rs.yaml"));
        overlay_for_stack_with(&mut objs, extra_conf);
        let (crds, mut objs): (Vec<_>, Vec<_>) = objs
            .into_iter()
            .partition(|o| kind(o) == "CustomResourceDefinition");
        objs.extend(self.extra_objects.iter().cloned());
        write_list(&crds, &self.crds);
        write_list(&objs, &self.objects);
    }

    fn apply_file(&self, f: &Path) -> String {
        must(
            kubectl()
                .args(["apply", "--server-side", "--force-conflicts"])
                .arg(format!("--field-manager={}", self.manager))
                .arg("-f")
                .arg(f),
        )
    }

    /// `kubectl apply` of kuryr-rs's CRDs (the objects and their status stay), until Established.
    pub fn apply_crds(&self) {
        self.apply_file(&self.crds);
        wait_crds_established("--all");
    }

    /// `kubectl apply` of everything else; kubectl's output.
    pub fn apply(&self) -> String {
        self.apply_file(&self.objects)
    }

    /// The same manifests with another `extra_conf`, applied (the ConfigMap and the Secret
    /// change; the pods only see it when restarted).
    pub fn reconfigure(&self, extra_conf: &str) {
        self.write(extra_conf);
        self.apply();
    }

    /// Waits until the DaemonSet, then the controller Deployment, are rolled out; on failure
    /// prints what to look at ([`explain`]) and says which one.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        for (w, component) in [
            ("daemonset/kuryr-daemon", "daemon"),
            ("deployment/kuryr-controller", "controller"),
        ] {
            if let Err(why) = wait_rolled_out(w, component, timeout) {
                explain(component);
                return Err(format!("{w} did not become ready: {why}"));
            }
        }
        Ok(())
    }

    /// `kubectl delete` of `what` (e.g. `daemonset/kuryr-daemon`) in kube-system, waiting until
    /// their pods are gone too (foreground: the daemon's preStop has removed the conflist and
    /// kuryr-cni by then).
    pub fn delete(what: &[&str]) -> std::process::Output {
        run(kubectl()
            .args(["delete", "-n", NAMESPACE, "--ignore-not-found"])
            .args(["--cascade=foreground", "--wait=true", "--timeout=180s"])
            .args(what))
    }

    /// Removes everything but the CRDs (and the objects in them), waiting for kuryr-rs's pods
    /// to be gone.
    pub fn uninstall(&self) -> std::process::Output {
        run(kubectl()
            .args(["delete", "--ignore-not-found", "--cascade=foreground"])
            .args(["--wait=true", "--timeout=180s", "-f"])
            .arg(&self.objects))
    }
}

/// An [`InCluster`] deployment uninstalled on drop, also when the test fails, so later tests
/// find the node without kuryr-rs; the files go too.
pub struct Deployed(pub InCluster);

impl Drop for Deployed {
    fn drop(&mut self) {
        let out = self.0.uninstall();
        if !out.status.success() {
            eprintln!(
                "uninstalling kuryr-rs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&self.0.objects);
        let _ = std::fs::remove_file(&self.0.crds);
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

/// Waits for `kubectl rollout status` of `workload` (in kube-system), failing early (with the
/// reason) as soon as one of its pods is stuck in a state from [`STUCK`] for 20 s.
pub fn wait_rolled_out(workload: &str, component: &str, timeout: Duration) -> Result<(), String> {
    let t = std::time::Instant::now();
    let mut stuck_since: Option<std::time::Instant> = None;
    loop {
        let r = run(kubectl().args([
            "rollout",
            "status",
            "-n",
            NAMESPACE,
            workload,
            "--timeout=5s",
        ]));
        if r.status.success() {
            return Ok(());
        }
        let stuck: Vec<String> = pods(
            NAMESPACE,
            &format!("app.kubernetes.io/component={component}"),
        )
        .iter()
        .flat_map(stuck_containers)
        .collect();
        match (stuck.is_empty(), stuck_since) {
            (true, _) => stuck_since = None,
            (false, None) => stuck_since = Some(std::time::Instant::now()),
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
/// lines of each container, and the commands to dig further (on stderr).
pub fn explain(component: &str) {
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
        out(&["get", "pods", "-n", NAMESPACE, "-l", &sel, "-o", "wide"])
    );
    for p in pods(NAMESPACE, &sel) {
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
                NAMESPACE,
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
                NAMESPACE,
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

/// Waits (30 s at most) until the CRDs `which` names (`--all`, or one CRD's name) are Established.
pub fn wait_crds_established(which: &str) {
    must(kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd",
        which,
    ]));
}
