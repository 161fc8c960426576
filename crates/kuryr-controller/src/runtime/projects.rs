//! Upstream's project drivers (`crate::runtime::projects`): `[kubernetes] pod_project_driver`,
//! `service_project_driver`, `namespace_project_driver`, `network_policy_project_driver` =
//! `default` | `annotation`. With `annotation` the resources of that kind for a namespace
//! carrying `openstack.org/kuryr-project: <project id>` are created in that project (pod ports,
//! Service load balancers, namespace networks and subnets, NetworkPolicy security groups and
//! address groups); without the annotation, or with `default`, in `[neutron_defaults] project`.
//!
//! The namespaces come from one watch (started only when a driver is `annotation`); the first
//! answer waits until it has listed, so a resource is never created in the default project
//! because the cache was still empty. The project is read when a resource is created: changing
//! the annotation later moves nothing (as upstream).

use crate::runtime::health::Health;
use crate::runtime::wiring::event_watch;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use kuryr_core::config::{ProjectDriver, ProjectDrivers, PROJECT_ANNOTATION};
use std::future::Future;
use tokio::sync::watch;

/// What a resource is, for picking its project driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectKind {
    Pod,
    Service,
    Namespace,
    NetworkPolicy,
}

/// The project drivers with the namespaces they read.
pub struct Projects {
    drivers: ProjectDrivers,
    default: String,
    namespaces: Store<Namespace>,
    synced: watch::Sender<bool>,
}

impl Projects {
    /// The drivers over `namespaces` (filled by [`Projects::watch`], or by a test).
    pub fn new(drivers: ProjectDrivers, default: &str, namespaces: Store<Namespace>) -> Projects {
        Projects { drivers, default: default.to_string(), namespaces, synced: watch::channel(false).0 }
    }

    /// The drivers and the namespace watch that feeds them (run it until shutdown).
    pub fn watch(
        drivers: ProjectDrivers,
        default: &str,
        client: &Client,
        health: Health,
        shutdown: &watch::Receiver<bool>,
    ) -> (std::sync::Arc<Projects>, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store::<Namespace>();
        let p = std::sync::Arc::new(Projects::new(drivers, default, store));
        let q = p.clone();
        let fut = event_watch(Api::<Namespace>::all(client.clone()), "namespaces-projects", writer, health, shutdown, move |ev| {
            if let watcher::Event::InitDone = ev {
                q.set_synced();
            }
        });
        (p, fut)
    }

    /// Marks the namespace cache complete.
    pub fn set_synced(&self) {
        self.synced.send_if_modified(|s| !std::mem::replace(s, true));
    }

    fn driver(&self, kind: ProjectKind) -> ProjectDriver {
        match kind {
            ProjectKind::Pod => self.drivers.pod,
            ProjectKind::Service => self.drivers.service,
            ProjectKind::Namespace => self.drivers.namespace,
            ProjectKind::NetworkPolicy => self.drivers.network_policy,
        }
    }

    /// The project of a new `kind` resource of `namespace` (waits for the namespace cache
    /// when the kind's driver is `annotation`).
    pub async fn project_for(&self, kind: ProjectKind, namespace: &str) -> String {
        if self.driver(kind) == ProjectDriver::Default {
            return self.default.clone();
        }
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
        let ns = self.namespaces.get(&ObjectRef::new(namespace));
        let annotated = ns.as_deref().and_then(|n| annotated_project(n).map(str::to_string));
        annotated.unwrap_or_else(|| self.default.clone())
    }
}

/// The namespace's `openstack.org/kuryr-project`, when set and not blank.
pub fn annotated_project(ns: &Namespace) -> Option<&str> {
    ns.metadata.annotations.as_ref()?.get(PROJECT_ANNOTATION).map(|s| s.trim()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(name: &str, project: Option<&str>) -> Namespace {
        let mut v = json!({"metadata": {"name": name}});
        if let Some(p) = project {
            v["metadata"]["annotations"] = json!({PROJECT_ANNOTATION: p});
        }
        serde_json::from_value(v).expect("namespace")
    }

    #[tokio::test]
    async fn the_annotation_wins_for_annotation_drivers_only() {
        let (store, mut writer) = reflector::store::<Namespace>();
        for n in [ns("tenant", Some("p2")), ns("plain", None), ns("blank", Some("  "))] {
            writer.apply_watcher_event(&watcher::Event::Apply(n));
        }
        let drivers = ProjectDrivers { pod: ProjectDriver::Annotation, network_policy: ProjectDriver::Annotation, ..Default::default() };
        let p = Projects::new(drivers, "k8s", store);
        p.set_synced();
        assert_eq!(p.project_for(ProjectKind::Pod, "tenant").await, "p2");
        assert_eq!(p.project_for(ProjectKind::NetworkPolicy, "tenant").await, "p2");
        assert_eq!(p.project_for(ProjectKind::Service, "tenant").await, "k8s", "service driver is default");
        assert_eq!(p.project_for(ProjectKind::Namespace, "tenant").await, "k8s", "namespace driver is default");
        assert_eq!(p.project_for(ProjectKind::Pod, "plain").await, "k8s");
        assert_eq!(p.project_for(ProjectKind::Pod, "blank").await, "k8s");
        assert_eq!(p.project_for(ProjectKind::Pod, "missing").await, "k8s");
    }
}
