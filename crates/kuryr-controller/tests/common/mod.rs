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
