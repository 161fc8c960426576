//! What the controller's stack tests (`stack.rs`, `nested.rs`) share: the stack's files and
//! clients, scratch-list helpers, a bounded wait.

#![allow(dead_code)]

use kube::Client;
use kuryr_controller::runtime::settings::{cloud_config, kube_config};
use kuryr_core::config::{Config, Role};
use kuryr_openstack::{Neutron, Session};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const STATE: &str = "/var/lib/kuryr-stack";

pub fn stack_env() -> HashMap<String, String> {
    let path = Path::new(STATE).join("stack.env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} unreadable ({e}): is the stack up? run hack/stack/stack up", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
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
        let config = Config::load(&Path::new(STATE).join("kuryr.conf"), Role::Controller).expect("kuryr.conf");
        let kube = kube_config(Some(&Path::new(STATE).join("kubeconfig")), &config.kubernetes).await.expect("kubeconfig");
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
