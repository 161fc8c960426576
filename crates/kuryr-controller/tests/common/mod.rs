//! What the controller's stack tests (`stack.rs`, `nested.rs`) share: the stack's files and
//! clients, scratch-list helpers, a bounded wait.

#![allow(dead_code)]

use kube::Client;
use kuryr_controller::runtime::settings::{cloud_config, kube_config};
use kuryr_core::config::{Config, Role};
use kuryr_openstack::{Neutron, Session};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use kuryr_test_support::{stack_env, state_file};

/// `<prefix>-<pid>-<n>` ([`kuryr_test_support::unique`] with a dash).
pub fn unique(prefix: &str) -> String {
    kuryr_test_support::unique(&format!("{prefix}-"))
}

pub fn push(v: &Mutex<Vec<String>>, s: &str) {
    v.lock().unwrap_or_else(|e| e.into_inner()).push(s.to_string());
}

pub fn take(v: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *v.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Clients of the stack (each test file adds its own methods).
pub struct Stack {
    pub client: Client,
    pub kube: kube::Config,
    pub neutron: Neutron,
    pub config: Config,
    pub env: HashMap<String, String>,
}

impl Stack {
    /// The stack's kuryr.conf, kubeconfig and Neutron; controller logs go to the test output
    /// (RUST_LOG overrides).
    pub async fn connect() -> Stack {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kuryr_controller=debug,kube_runtime=warn")),
            )
            .with_test_writer()
            .try_init();
        let env = stack_env();
        let config = Config::load(&state_file("kuryr.conf"), Role::Controller).expect("kuryr.conf");
        let kube = kube_config(Some(&state_file("kubeconfig")), &config.kubernetes).await.expect("kubeconfig");
        let client = Client::try_from(kube.clone()).expect("kube client");
        let cloud = cloud_config(config.neutron.as_ref().expect("[neutron]")).expect("cloud config");
        let neutron = Neutron::new(Session::new(&cloud).expect("session"));
        Stack { client, kube, neutron, config, env }
    }
}

/// Polls `f` every 100 ms until it yields a value; panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ValidatingAdmissionPolicy (and its binding) that denies every status write of one custom
/// resource in one namespace: it holds a controller in the window between its OpenStack create
/// and the status write that records it, for as long as the test wants (a kill -9 there is
/// then certain to fall in the window). [`StatusWriteBlock::remove`] lifts it; a block left
/// by a panicking test is removed by its `Drop` (best effort, no wait).
pub struct StatusWriteBlock {
    name: String,
    vap: kube::Api<kube::core::DynamicObject>,
    vapb: kube::Api<kube::core::DynamicObject>,
    removed: bool,
}

fn admission_api(client: &Client, kind: &str, plural: &str) -> kube::Api<kube::core::DynamicObject> {
    let ar = kube::core::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    kube::Api::all_with(client.clone(), &ar)
}

impl StatusWriteBlock {
    /// Denies `UPDATE` of `<plural>/status` (group openstack.org) in namespace `ns`; returns once
    /// the API server enforces it: a status write of `probe` (an object of that resource, created
    /// in `ns` and deleted again) with the merge patch `status` is refused.
    pub async fn install(client: &Client, ns: &str, plural: &str, probe: serde_json::Value, status: serde_json::Value) -> StatusWriteBlock {
        use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
        let name = format!("{ns}-block-{plural}-status");
        let vap = admission_api(client, "ValidatingAdmissionPolicy", "validatingadmissionpolicies");
        let vapb = admission_api(client, "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings");
        let p: kube::core::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
            "spec": {"failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["openstack.org"], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": [format!("{plural}/status")]}]},
                "validations": [{"expression": "false", "message": format!("test: {plural} status writes are blocked")}]}
        }))
        .expect("policy");
        let b: kube::core::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}
        }))
        .expect("binding");
        vap.create(&PostParams::default(), &p).await.expect("create policy");
        vapb.create(&PostParams::default(), &b).await.expect("create binding");
        let block = StatusWriteBlock { name, vap, vapb, removed: false };
        let probe: kube::core::DynamicObject = serde_json::from_value(probe).expect("probe object");
        let probe_name = probe.metadata.name.clone().expect("probe name");
        let ar = kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("openstack.org", "v1", &probe.types.as_ref().expect("probe kind").kind),
            plural,
        );
        let api: kube::Api<kube::core::DynamicObject> = kube::Api::namespaced_with(client.clone(), ns, &ar);
        let what = format!("the {plural} status-blocking policy in force");
        wait_for(&what, Duration::from_secs(60), || async {
            match api.create(&PostParams::default(), &probe).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("create the probe {plural} {ns}/{probe_name}: {e}"),
            }
            let denied = match api.patch_status(&probe_name, &PatchParams::default(), &Patch::Merge(&status)).await {
                Ok(_) => false,
                Err(kube::Error::Api(e)) if e.message.contains("status writes are blocked") => true,
                Err(e) => panic!("probe status write of {plural} {ns}/{probe_name}: {e}"),
            };
            denied.then_some(())
        })
        .await;
        api.delete(&probe_name, &DeleteParams::default()).await.expect("delete the probe");
        wait_for(&format!("probe {plural} {ns}/{probe_name} gone"), Duration::from_secs(60), || async {
            api.get_opt(&probe_name).await.expect("get the probe").is_none().then_some(())
        })
        .await;
        block
    }

    /// Lifts the block (binding and policy deleted; a later status write goes through once the
    /// API server has seen the deletion, which the controller's retries absorb).
    pub async fn remove(mut self) {
        self.delete().await;
    }

    async fn delete(&mut self) {
        use kube::api::DeleteParams;
        for api in [&self.vapb, &self.vap] {
            match api.delete(&self.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => panic!("delete admission object {}: {e}", self.name),
            }
        }
        self.removed = true;
    }
}

impl Drop for StatusWriteBlock {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Dropped without `remove` (a failing test): delete on the test's (multi-thread) runtime.
        let Ok(h) = tokio::runtime::Handle::try_current() else { return };
        if h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let (name, vap, vapb) = (self.name.clone(), self.vap.clone(), self.vapb.clone());
        tokio::task::block_in_place(|| {
            h.block_on(async {
                let dp = kube::api::DeleteParams::default();
                let _ = vapb.delete(&name, &dp).await;
                let _ = vap.delete(&name, &dp).await;
            })
        });
    }
}

/// The kuryr-controller binary as a separate process (so it can be killed with SIGKILL), its
/// output in a log file of its own: `--config-file conf`, the stack's kubeconfig, watching only
/// `ns`, no GC, probes on free loopback ports.
pub fn controller_command(conf: &std::path::Path, cluster: &str, ns: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kuryr-controller"));
    c.arg("--config-file")
        .arg(conf)
        .arg("--kubeconfig")
        .arg(state_file("kubeconfig"))
        .args(["--cluster-name", cluster, "--watch-namespace", ns, "--gc-interval-seconds", "0"])
        .args(["--health-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    c
}

/// A controller process started by [`ControllerProcess::spawn`]; killed (SIGKILL) on drop.
pub struct ControllerProcess {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl ControllerProcess {
    pub fn spawn(cmd: &mut std::process::Command) -> ControllerProcess {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("kuryr-controller-test-{}-{n}.log", std::process::id()));
        let f = std::fs::File::create(&log).expect("controller log file");
        let child = cmd
            .stdout(f.try_clone().expect("log file"))
            .stderr(f)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn kuryr-controller");
        ControllerProcess { child, log }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| panic!("read {}: {e}", self.log.display()))
    }

    /// Where its metrics server listens (from its log; waits for the line, up to 60 s).
    pub async fn metrics_addr(&mut self) -> std::net::SocketAddr {
        let log = self.log.clone();
        wait_for("the controller's metrics address in its log", Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("kuryr-controller exited ({st}):\n{text}");
            }
            async move { kuryr_test_support::metrics::controller_metrics_addr(&text) }
        })
        .await
    }

    /// The metric sample `series` now (`None`: not exposed yet, i.e. never incremented).
    pub async fn sample(&mut self, series: &str) -> Option<f64> {
        let addr = self.metrics_addr().await;
        let text = tokio::task::spawn_blocking(move || kuryr_test_support::metrics::scrape(addr)).await.expect("scrape task");
        kuryr_test_support::metrics::sample(&text, series)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {}:\n{}", self.log.display(), lines[lines.len().saturating_sub(40)..].join("\n"));
        }
    }
}
