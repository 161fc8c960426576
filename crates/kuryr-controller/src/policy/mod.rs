//! NetworkPolicy → Neutron security groups (`crate::policy`; upstream `NetworkPolicyHandler`,
//! `KuryrNetworkPolicyHandler`). One hop per module:
//! * [`model`]: pure translation NetworkPolicy + cached pods and namespaces → security groups,
//!   rules and address groups, the port groups of each pod, and the diffs against Neutron.
//! * [`networkpolicy`]: NetworkPolicy reconciler (finalizer, the KuryrNetworkPolicy in
//!   upstream's shape, its deletion).
//! * [`knp`]: KuryrNetworkPolicy reconciler: Neutron converged, ports re-grouped, status; the
//!   teardown behind its finalizer.
//! * [`neutron`]: one policy's Neutron objects: discovery (adoption), convergence, teardown; the
//!   shared base groups.
//! * [`settings`]: `kuryr.conf` → [`PolicySettings`].
//! * here: the domain state, the watches, pod and namespace events → the policies they concern,
//!   port groups, and the runtime hook new ports get their groups from ([`PortGroups`]).
//!
//! Events: NetworkPolicies and KuryrNetworkPolicies are watched here, Namespaces too (their
//! labels); pods and KuryrPorts come from the runtime's shared watches (event taps in
//! [`crate::runtime::hooks::Hooks`]) and stores. A pod event is compared with the pod as this
//! domain last saw it; only the policies [`model::concerns`] names for the old or new pod are
//! reconciled again, from the caches (no LIST), under one lock so two passes never race on a port.
//!
//! A pod's addresses ([`Policy::pod_info`]) are its status's, or, until kubelet writes them
//! (after the sandbox and the containers started), its KuryrPort's VIF's: the address exists as
//! soon as the port does, so a new pod joins its peer sets before its interface is even plugged.
//! A KuryrPort event is therefore a pod event too: the pod is looked at again, and the policies
//! it concerns are reconciled when what the model sees of it changed. The status written later
//! with the same address changes nothing and triggers nothing.

pub mod knp;
pub mod model;
pub mod networkpolicy;
pub mod neutron;
pub mod settings;

pub use settings::{PodAddressSource, PolicySettings};

/// The watches that must have listed before the domain acts: NetworkPolicies, Namespaces,
/// KuryrNetworkPolicies, Services, EndpointSlices.
const WATCHES: u8 = 5;

use crate::policy::model::{BaseGroup, GroupRef, ModelSettings, PodGroups, PodInfo, PolicyState, ServiceInfo};
use crate::policy::neutron::Known;
use crate::runtime::context::Context;
use crate::runtime::error::Error;
use crate::runtime::hooks::PortGroups;
use crate::runtime::run::{scoped_api, shutdown_signal, watchdog};
use crate::runtime::wiring::{controller, domain_watch, event_watch, log_errors};
use futures_util::future::BoxFuture;
use futures_util::Stream;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::ResourceExt;
use kuryr_core::crd::{KuryrNetworkPolicy, KuryrPort};
use kuryr_openstack::neutron::{EtherType, PortUpdate};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// What the passes share, under one lock.
#[derive(Debug, Default)]
pub struct State {
    /// Each policy's last applied desired state, by `namespace/name`.
    pub desired: HashMap<String, PolicyState>,
    /// Each policy's Neutron objects, by policy uid.
    pub known: HashMap<String, Known>,
    /// The base groups' ids (empty until found or made).
    pub base: BTreeMap<BaseGroup, String>,
    /// Port id → its security groups (sorted), as last set or read.
    pub ports: HashMap<String, Vec<String>>,
    /// The translation settings, the Infra CIDRs resolved (`None` until then).
    pub model: Option<ModelSettings>,
}

/// The NetworkPolicy domain: the runtime context, settings, stores and state.
pub struct Policy {
    pub ctx: Arc<Context>,
    pub settings: PolicySettings,
    pub policies: Store<NetworkPolicy>,
    pub namespaces: Store<Namespace>,
    pub knps: Store<KuryrNetworkPolicy>,
    /// Services and EndpointSlices: egress rules also allow the ClusterIPs of the Services
    /// their peers back ([`model::services`]).
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub state: tokio::sync::Mutex<State>,
    /// Pods as this domain last saw them (`namespace/name`), to tell what an event changed.
    seen_pods: Mutex<HashMap<String, PodInfo>>,
    /// Each pod's port id (its KuryrPort's default VIF) as of the last trigger of its policies,
    /// to tell a new port.
    seen_ports: Mutex<HashMap<String, String>>,
    /// Namespace labels as last seen.
    seen_namespaces: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// What the model reads of the Services, read from the stores once per Service or
    /// EndpointSlice event and shared by every pass until the next one.
    seen_services: Mutex<Arc<Vec<ServiceInfo>>>,
    /// Notes already published per policy (one Warning Event per distinct note).
    noted: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Re-reconciles a KuryrNetworkPolicy (pod and namespace events, the NetworkPolicy reconciler).
    knp_trigger: mpsc::UnboundedSender<ObjectRef<KuryrNetworkPolicy>>,
    listed: AtomicU8,
    synced: watch::Sender<bool>,
    /// The pods' address families, once resolved ([`Policy::families`]).
    families: Mutex<Option<Vec<EtherType>>>,
}

impl Policy {
    /// The domain on `ctx` (stores empty; the watches of [`start`] fill them). Also returns the
    /// receiving end of the KuryrNetworkPolicy trigger.
    pub fn new(
        ctx: Arc<Context>,
        settings: PolicySettings,
        policies: Store<NetworkPolicy>,
        namespaces: Store<Namespace>,
        knps: Store<KuryrNetworkPolicy>,
    ) -> (Policy, mpsc::UnboundedReceiver<ObjectRef<KuryrNetworkPolicy>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let p = Policy {
            ctx,
            settings,
            policies,
            namespaces,
            knps,
            services: reflector::store().0,
            slices: reflector::store().0,
            state: tokio::sync::Mutex::new(State::default()),
            seen_pods: Mutex::default(),
            seen_ports: Mutex::default(),
            seen_namespaces: Mutex::default(),
            seen_services: Mutex::default(),
            noted: Mutex::default(),
            knp_trigger: tx,
            listed: AtomicU8::new(0),
            synced: watch::channel(false).0,
            families: Mutex::default(),
        };
        (p, rx)
    }

    /// The domain with its Service and EndpointSlice stores (without them no VIP is allowed).
    pub fn with_services(self, services: Store<Service>, slices: Store<EndpointSlice>) -> Policy {
        Policy { services, slices, ..self }
    }

    /// Marks the domain's caches complete (tests; [`start`] does it from the watches).
    pub fn set_synced(&self) {
        self.synced.send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// Resolves once the three watches here and the runtime's pod and KuryrPort caches are
    /// complete.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
        self.ctx.wait_synced().await;
    }

    fn one_listed(&self) {
        if self.listed.fetch_add(1, Ordering::AcqRel) + 1 >= WATCHES && self.synced.send_if_modified(|s| !std::mem::replace(s, true)) {
            tracing::info!(networkpolicies = self.policies.len(), namespaces = self.namespaces.len(), "policy caches synced");
        }
    }

    /// The pods' IP families (sorted): those of the pod subnets, or of the namespace subnet
    /// pool; read from Neutron once. Rules with an address-group or "any" remote exist for each,
    /// so a dual-stack pod's IPv6 traffic is allowed (or opened) like its IPv4 traffic.
    pub async fn families(&self) -> Result<Vec<EtherType>, Error> {
        if let Some(f) = self.families.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(f);
        }
        let version = |v: u8| match v {
            6 => EtherType::IPv6,
            _ => EtherType::IPv4,
        };
        let mut f = match &self.settings.pod_addresses {
            PodAddressSource::Families(f) => f.clone(),
            PodAddressSource::Subnets(ids) => {
                let mut f = Vec::new();
                for id in ids {
                    f.push(version(self.ctx.cache.subnet(&self.ctx.neutron, id).await?.ip_version));
                }
                f
            }
            PodAddressSource::SubnetPool(id) => vec![version(self.ctx.neutron.get_subnetpool(id).await?.ip_version)],
        };
        if f.is_empty() {
            f.push(EtherType::IPv4);
        }
        f.sort_by_key(|e| matches!(e, EtherType::IPv6));
        f.dedup();
        tracing::info!(families = ?f, "pod address families");
        *self.families.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        Ok(f)
    }

    /// The settings for the Neutron objects of a policy of `namespace`: its project is the
    /// namespace's with `network_policy_project_driver = annotation` (the base groups stay in
    /// `[neutron_defaults] project`).
    pub async fn settings_for(&self, namespace: &str) -> PolicySettings {
        if !self.settings.multi_project {
            return self.settings.clone();
        }
        let project = self.ctx.project_for(crate::runtime::projects::ProjectKind::NetworkPolicy, namespace).await;
        PolicySettings { project, ..self.settings.clone() }
    }

    /// Asks for a pass over the policy `namespace/name`.
    pub fn trigger(&self, namespace: &str, name: &str) {
        let _ = self.knp_trigger.send(ObjectRef::new(name).within(namespace));
    }

    /// What the model sees of `pod` (`None`: host network): its addresses from its status, or
    /// while that has none from its KuryrPort's VIF (the shared KuryrPort store).
    pub fn pod_info(&self, pod: &Pod) -> Option<PodInfo> {
        PodInfo::from_pod_and_port(pod, || {
            let ns = pod.metadata.namespace.as_deref()?;
            self.ctx.kuryrports.get(&ObjectRef::new(&pod.name_any()).within(ns))
        })
    }

    /// The model's view of the cluster: pods (from the shared store) and namespace labels.
    pub fn cluster_snapshot(&self) -> (Vec<PodInfo>, BTreeMap<String, BTreeMap<String, String>>) {
        let pods = self.ctx.pods.state().iter().filter_map(|p| self.pod_info(p)).collect();
        (pods, self.namespace_labels())
    }

    /// Namespace name → labels, from the store.
    fn namespace_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces.state().iter().map(|n| (n.name_any(), n.labels().clone())).collect()
    }

    /// The model's view of the Services with ClusterIPs, as of the last Service or
    /// EndpointSlice event ([`Policy::on_service_event`]).
    pub fn services_snapshot(&self) -> Arc<Vec<ServiceInfo>> {
        self.seen_services.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the model reads of the Services now, from the stores.
    fn read_services(&self) -> Vec<ServiceInfo> {
        let slices = self.slices.state();
        let refs: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
        let mut out: Vec<ServiceInfo> = self.services.state().iter().filter_map(|s| ServiceInfo::from_service(s, &refs)).collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// A Service or EndpointSlice event: when what the model reads of the Services changed, the
    /// policies with egress rules are reconciled again.
    pub fn on_service_event(&self) {
        let now = self.read_services();
        {
            let mut seen = self.seen_services.lock().unwrap_or_else(|e| e.into_inner());
            if **seen == now {
                return;
            }
            *seen = Arc::new(now);
        }
        for np in self.policies.state() {
            if np.spec.as_ref().is_some_and(|s| s.egress.as_ref().is_some_and(|e| !e.is_empty())) {
                self.trigger(&np.namespace().unwrap_or_default(), &np.name_any());
            }
        }
    }

    /// The live NetworkPolicies of `namespace` (not being deleted).
    pub fn live_policies(&self, namespace: &str) -> Vec<Arc<NetworkPolicy>> {
        self.policies
            .state()
            .into_iter()
            .filter(|np| np.namespace().as_deref() == Some(namespace) && np.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Publishes a Warning Event for each note of `st` not yet published for it.
    pub fn publish_notes(&self, np: &NetworkPolicy, st: &PolicyState) {
        let key = format!("{}/{}", st.namespace, st.name);
        let new: Vec<String> = {
            let mut g = self.noted.lock().unwrap_or_else(|e| e.into_inner());
            let seen = g.entry(key).or_default();
            st.notes.iter().filter(|n| seen.insert((*n).clone())).cloned().collect()
        };
        for note in new {
            let r = kube::Resource::object_ref(np, &());
            self.ctx.events.warning(r, "PolicyNotEnforceable", "Translate", note);
        }
    }

    /// Forgets the published notes of `namespace/name` (deleted policy).
    pub fn forget_notes(&self, key: &str) {
        self.noted.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// A pod watch event: the policies the old or new pod concerns are reconciled again.
    pub fn on_pod_event(&self, ev: &watcher::Event<Pod>) {
        match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                self.pod_changed(&key, self.pod_info(p));
            }
            watcher::Event::Delete(p) => {
                let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                self.pod_changed(&key, None);
            }
            watcher::Event::InitDone => {
                // Pods deleted while the watch was re-listing: gone from the store.
                let gone: Vec<String> = {
                    let seen = self.seen_pods.lock().unwrap_or_else(|e| e.into_inner());
                    seen.keys()
                        .filter(|k| {
                            let (ns, n) = k.split_once('/').unwrap_or_default();
                            self.ctx.pods.get(&ObjectRef::new(n).within(ns)).is_none()
                        })
                        .cloned()
                        .collect()
                };
                for k in gone {
                    self.pod_changed(&k, None);
                }
            }
            watcher::Event::Init => {}
        }
    }

    /// Records what the model now sees of pod `key` and reconciles the policies its old or new
    /// view concerns; `false` (nothing triggered) when the view did not change.
    fn pod_changed(&self, key: &str, new: Option<PodInfo>) -> bool {
        let old = {
            let mut seen = self.seen_pods.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(key) == new.as_ref() {
                return false;
            }
            match &new {
                Some(n) => seen.insert(key.to_string(), n.clone()),
                None => seen.remove(key),
            }
        };
        let namespaces = self.namespace_labels();
        for np in self.policies.state() {
            let hit = [&old, &new].into_iter().flatten().any(|p| model::concerns(&np, p, &namespaces));
            if hit {
                self.trigger(&np.namespace().unwrap_or_default(), &np.name_any());
            }
        }
        // Those passes see the pod's port as the store has it now.
        self.port_noted(key);
        true
    }

    /// Notes the port pod `key` has now (the KuryrPort store); `true` when it is another than
    /// the one last noted (and there is one).
    fn port_noted(&self, key: &str) -> bool {
        let (ns, name) = key.split_once('/').unwrap_or_default();
        let port = self.port_of(ns, name);
        let mut seen = self.seen_ports.lock().unwrap_or_else(|e| e.into_inner());
        match port {
            Some(id) => seen.insert(key.to_string(), id.clone()).as_ref() != Some(&id),
            None => {
                seen.remove(key);
                false
            }
        }
    }

    /// Looks at pod `namespace/name` again (its KuryrPort changed): `true` when the model's view
    /// of it changed, and the policies concerned were triggered. A pod not in the store is left
    /// to the pod watch (its deletion comes from there).
    fn pod_refreshed(&self, namespace: &str, name: &str) -> bool {
        let Some(pod) = self.ctx.pods.get(&ObjectRef::new(name).within(namespace)) else { return false };
        self.pod_changed(&format!("{namespace}/{name}"), self.pod_info(&pod))
    }

    /// A KuryrPort event. Its VIF may give the pod its first address (the status has none yet):
    /// the pod is looked at again, a changed view reconciles every policy it concerns (its peer
    /// sets gain the address at once, its port gets its groups). Otherwise, when its port id
    /// appeared or changed, the policies of its namespace concerning the pod check its groups.
    /// Other KuryrPort writes (the VIF turning active) trigger nothing.
    pub fn on_kuryrport_event(&self, ev: &watcher::Event<KuryrPort>) {
        match ev {
            // A node's pool KuryrPort belongs to no pod.
            watcher::Event::Apply(kp) | watcher::Event::InitApply(kp) if kuryr_core::names::is_pool(kp.metadata.labels.as_ref()) => {}
            watcher::Event::Apply(kp) | watcher::Event::InitApply(kp) => {
                let (ns, name) = (kp.namespace().unwrap_or_default(), kp.name_any());
                let key = format!("{ns}/{name}");
                if !self.pod_refreshed(&ns, &name) && self.port_noted(&key) {
                    self.port_changed(&key);
                }
            }
            watcher::Event::Delete(kp) => {
                let (ns, name) = (kp.namespace().unwrap_or_default(), kp.name_any());
                self.seen_ports.lock().unwrap_or_else(|e| e.into_inner()).remove(&format!("{ns}/{name}"));
                self.pod_refreshed(&ns, &name);
            }
            watcher::Event::InitDone => {
                // KuryrPorts deleted while the watch was re-listing: gone from the store.
                self.seen_ports.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| {
                    let (ns, n) = k.split_once('/').unwrap_or_default();
                    self.ctx.kuryrports.get(&ObjectRef::new(n).within(ns)).is_some()
                });
                let keys: Vec<String> = self.seen_pods.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
                for k in keys {
                    if let Some((ns, n)) = k.split_once('/') {
                        self.pod_refreshed(ns, n);
                    }
                }
            }
            watcher::Event::Init => {}
        }
    }

    /// The port of pod `key` appeared or changed: the live policies of its namespace that
    /// concern it are reconciled (they set its groups).
    fn port_changed(&self, key: &str) {
        let info = self.seen_pods.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        let Some(pod) = info else { return };
        let namespaces = self.namespace_labels();
        for np in self.live_policies(&pod.namespace) {
            if model::concerns(&np, &pod, &namespaces) {
                self.trigger(&pod.namespace, &np.name_any());
            }
        }
    }

    /// A namespace event: a label change re-reconciles the policies with namespace selectors.
    pub fn on_namespace_event(&self, ns: &Namespace, deleted: bool) {
        let name = ns.name_any();
        let labels = (!deleted).then(|| ns.labels().clone());
        {
            let mut seen = self.seen_namespaces.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&name) == labels.as_ref() {
                return;
            }
            match labels {
                Some(l) => seen.insert(name, l),
                None => seen.remove(&name),
            };
        }
        for np in self.policies.state() {
            if model::uses_namespace_labels(&np) {
                self.trigger(&np.namespace().unwrap_or_default(), &np.name_any());
            }
        }
    }

    /// The ids of a pod's groups, `None` when one of them does not exist yet.
    fn group_ids(&self, st: &State, groups: &PodGroups) -> Option<Vec<String>> {
        let mut ids: Vec<String> = match groups {
            PodGroups::Default => self.settings.default_groups.clone(),
            PodGroups::Groups(gs) => {
                let mut out = Vec::with_capacity(gs.len());
                for g in gs {
                    let id = match g {
                        GroupRef::Base(b) => st.base.get(b)?.clone(),
                        GroupRef::Policy(k) => st.known.get(&k.policy_uid)?.sgs.get(k)?.id.clone(),
                    };
                    out.push(id);
                }
                out
            }
        };
        ids.sort();
        ids.dedup();
        Some(ids)
    }

    /// The Neutron port of pod `namespace/name` (its KuryrPort's default VIF).
    fn port_of(&self, namespace: &str, name: &str) -> Option<String> {
        let kp = self.ctx.kuryrports.get(&ObjectRef::new(name).within(namespace))?;
        let (_, vif) = kp.status.as_ref()?.default_vif()?;
        vif.ok().map(|v| v.port_id).filter(|id| !id.is_empty())
    }

    /// Gives each of `pods` (`namespace/name`) the groups the current desired states ask for;
    /// only ports whose list changes are written. A pod whose groups do not all exist yet is
    /// left for the pass that creates them. Returns the number of Neutron calls.
    pub async fn sync_ports(&self, st: &mut State, pods: &BTreeSet<String>) -> Result<usize, Error> {
        let mut calls = 0;
        let mut failed = None;
        for key in pods {
            let Some((ns, name)) = key.split_once('/') else { continue };
            let Some(pod) = self.ctx.pods.get(&ObjectRef::new(name).within(ns)) else { continue };
            // Host-network pods have no port of their own (the model does not see them either).
            if pod.spec.as_ref().is_none_or(|s| s.host_network == Some(true)) {
                continue;
            }
            let Some(port_id) = self.port_of(ns, name) else { continue };
            let groups = model::pod_groups(key, st.desired.values().filter(|p| p.namespace == ns));
            let Some(want) = self.group_ids(st, &groups) else {
                tracing::debug!(pod = %key, "a group of the pod does not exist yet");
                continue;
            };
            let have = match st.ports.get(&port_id) {
                Some(h) => h.clone(),
                None => {
                    calls += 1;
                    match self.ctx.neutron.get_port(&port_id).await {
                        Ok(p) => {
                            let mut h = p.security_groups;
                            h.sort();
                            h
                        }
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => {
                            failed = Some(e.into());
                            continue;
                        }
                    }
                }
            };
            if have == want {
                st.ports.insert(port_id, have);
                continue;
            }
            self.ctx.leader.ensure()?;
            calls += 1;
            let upd = PortUpdate { security_groups: Some(want.clone()), ..PortUpdate::default() };
            match self.ctx.neutron.update_port(&port_id, &upd).await {
                Ok(_) => {
                    tracing::debug!(pod = %key, port = %port_id, groups = ?want, "port security groups updated");
                    st.ports.insert(port_id, want);
                }
                Err(e) if e.is_not_found() => {
                    st.ports.remove(&port_id);
                }
                Err(e) => {
                    st.ports.remove(&port_id);
                    failed = Some(e.into());
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(calls),
        }
    }

    /// The translation settings with the Infra CIDRs resolved (subnet CIDRs read once).
    pub async fn model_settings(&self, st: &mut State) -> Result<ModelSettings, Error> {
        if let Some(m) = &st.model {
            return Ok(m.clone());
        }
        let mut allow = self.settings.infra_cidrs.clone();
        for id in &self.settings.infra_subnets {
            let subnet = self.ctx.cache.subnet(&self.ctx.neutron, id).await?;
            match subnet.cidr.parse() {
                Ok(n) => allow.push(n),
                Err(_) => return Err(Error::Config(format!("subnet {id} has no valid CIDR ({:?})", subnet.cidr))),
            }
        }
        allow.sort();
        allow.dedup();
        let m = ModelSettings { families: self.families().await?, always_allow_ingress: allow };
        st.model = Some(m.clone());
        Ok(m)
    }
}

/// New ports get their groups here: the policies of the pod's namespace are translated from
/// the caches (so a pod the last pass has not seen yet is included); a group that does not exist
/// yet makes the port wait.
impl PortGroups for Policy {
    fn port_security_groups<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async move {
            // Before the policy caches are complete, "no policy" could be wrong: wait.
            self.wait_synced().await;
            let nps = self.live_policies(namespace);
            if nps.is_empty() {
                return Ok(self.settings.default_groups.clone());
            }
            let pod = self
                .ctx
                .pods
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|p| self.pod_info(&p))
                .ok_or_else(|| Error::NotReady(format!("pod {namespace}/{name} is not in the cache yet")))?;
            let mut st = self.state.lock().await;
            let m = self.model_settings(&mut st).await?;
            let (pods, nss) = self.cluster_snapshot();
            let svcs = self.services_snapshot();
            let cluster = model::Cluster { pods: &pods, namespaces: &nss, services: &svcs };
            let states: Vec<PolicyState> = nps.iter().map(|np| model::desired(np, &cluster, &m)).collect();
            let groups = model::pod_groups(&pod.key(), &states);
            self.group_ids(&st, &groups).ok_or_else(|| {
                Error::NotReady(format!("the security groups of the policies selecting pod {namespace}/{name} are not ready"))
            })
        })
    }
}

/// The KuryrNetworkPolicy fields its reconciler acts on (not its status).
pub fn knp_fingerprint(k: &KuryrNetworkPolicy) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.metadata.uid.hash(&mut h);
    k.metadata.generation.hash(&mut h);
    k.metadata.deletion_timestamp.is_some().hash(&mut h);
    k.metadata.finalizers.hash(&mut h);
    Some(h.finish())
}

/// Starts the NetworkPolicy and KuryrNetworkPolicy controllers and the event taps; installs the
/// port-groups hook. Returns the controllers' future.
pub fn start(
    ctx: &Arc<Context>,
    settings: PolicySettings,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let (np_store, np_writer) = reflector::store::<NetworkPolicy>();
    let (ns_store, ns_writer) = reflector::store::<Namespace>();
    let (knp_store, knp_writer) = reflector::store::<KuryrNetworkPolicy>();
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (policy, knp_rx) = Policy::new(ctx.clone(), settings, np_store.clone(), ns_store, knp_store.clone());
    let policy = Arc::new(policy.with_services(svc_store, slice_store));
    ctx.set_port_groups(policy.clone());
    let taps = event_taps(ctx, &policy);

    let (np_tx, np_rx) = mpsc::unbounded_channel::<ObjectRef<NetworkPolicy>>();
    let np_stream = np_watch(&policy, namespace, np_writer);
    let ns_watch = namespace_watch(&policy, ns_writer, &shutdown);
    let svc_watches = service_watches(&policy, svc_writer, slice_writer, &shutdown);
    let knp_stream = knp_watch(&policy, namespace, knp_writer, np_tx);

    let ccfg = ControllerConfig::default().concurrency(concurrency);
    let np_controller = controller(np_stream, np_store, ccfg.clone(), np_rx, ctx, &shutdown).run(
        networkpolicy::reconcile,
        networkpolicy::error_policy,
        policy.clone(),
    );
    let knp_controller = controller(knp_stream, knp_store, ccfg, knp_rx, ctx, &shutdown).run(knp::reconcile, knp::error_policy, policy);
    let (np_controller, knp_controller) =
        (log_errors(networkpolicy::CONTROLLER, np_controller), log_errors(knp::CONTROLLER, knp_controller));
    let health = ctx.health.clone();
    async move {
        let n = watchdog("networkpolicy-controller", np_controller, shutdown.clone(), health.clone());
        let k = watchdog("kuryrnetworkpolicy-controller", knp_controller, shutdown.clone(), health.clone());
        let stop = shutdown_signal(shutdown.clone());
        let v = watchdog("service-watches", svc_watches, shutdown.clone(), health.clone());
        let w = watchdog("namespace-watch", ns_watch, shutdown, health);
        let taps = async move {
            tokio::select! {
                _ = stop => {}
                _ = taps => {}
            }
        };
        tokio::join!(n, k, w, v, taps);
    }
}

/// Start phase: the NetworkPolicy watch, for the NetworkPolicy controller.
fn np_watch(
    policy: &Arc<Policy>,
    namespace: Option<&str>,
    writer: reflector::store::Writer<NetworkPolicy>,
) -> impl Stream<Item = Result<NetworkPolicy, watcher::Error>> + Send {
    let p = policy.clone();
    let api = scoped_api::<NetworkPolicy>(&policy.ctx.client, namespace);
    domain_watch(api, "networkpolicies", writer, policy.ctx.health.clone(), move |ev| {
        if let watcher::Event::InitDone = ev {
            p.one_listed();
        }
    })
}

/// Start phase: the Namespace watch (all namespaces: their labels feed namespaceSelectors).
fn namespace_watch(
    policy: &Arc<Policy>,
    writer: reflector::store::Writer<Namespace>,
    shutdown: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let p = policy.clone();
    let api = Api::<Namespace>::all(policy.ctx.client.clone());
    event_watch(api, "namespaces", writer, policy.ctx.health.clone(), shutdown, move |ev| match ev {
        watcher::Event::Apply(n) | watcher::Event::InitApply(n) => p.on_namespace_event(n, false),
        watcher::Event::Delete(n) => p.on_namespace_event(n, true),
        watcher::Event::InitDone => p.one_listed(),
        _ => {}
    })
}

/// Start phase: the Service and EndpointSlice watches (all namespaces: a peer's Services may be
/// anywhere).
fn service_watches(
    policy: &Arc<Policy>,
    svc_writer: reflector::store::Writer<Service>,
    slice_writer: reflector::store::Writer<EndpointSlice>,
    shutdown: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let health = policy.ctx.health.clone();
    let p = policy.clone();
    let services =
        event_watch(Api::<Service>::all(policy.ctx.client.clone()), "services", svc_writer, health.clone(), shutdown, move |ev| match ev {
            watcher::Event::InitDone => {
                // The snapshot first: a pass may start once the domain counts as synced.
                p.on_service_event();
                p.one_listed();
            }
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => p.on_service_event(),
            _ => {}
        });
    let p = policy.clone();
    let slices =
        event_watch(Api::<EndpointSlice>::all(policy.ctx.client.clone()), "endpointslices", slice_writer, health, shutdown, move |ev| {
            match ev {
                watcher::Event::InitDone => {
                    // The snapshot first: a pass may start once the domain counts as synced.
                    p.on_service_event();
                    p.one_listed();
                }
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => p.on_service_event(),
                _ => {}
            }
        });
    async move {
        tokio::join!(services, slices);
    }
}

/// Start phase: the KuryrNetworkPolicy watch, for its controller; a final deletion triggers
/// the NetworkPolicy of that name (`np_tx`).
fn knp_watch(
    policy: &Arc<Policy>,
    namespace: Option<&str>,
    writer: reflector::store::Writer<KuryrNetworkPolicy>,
    np_tx: mpsc::UnboundedSender<ObjectRef<NetworkPolicy>>,
) -> impl Stream<Item = Result<KuryrNetworkPolicy, watcher::Error>> + Send {
    let p = policy.clone();
    let api = scoped_api::<KuryrNetworkPolicy>(&policy.ctx.client, namespace);
    domain_watch(api, "kuryrnetworkpolicies", writer, policy.ctx.health.clone(), move |ev| match ev {
        // Its final deletion lets the NetworkPolicy drop its finalizer.
        watcher::Event::Delete(k) => {
            let _ = np_tx.send(ObjectRef::new(&k.name_any()).within(&k.namespace().unwrap_or_default()));
        }
        watcher::Event::InitDone => p.one_listed(),
        _ => {}
    })
    .predicate_filter(knp_fingerprint, PredicateConfig::default())
}

/// Sets the runtime's pod and KuryrPort event taps; returns the future that hands their events
/// to the domain.
fn event_taps(ctx: &Context, policy: &Arc<Policy>) -> impl Future<Output = ()> + Send + 'static {
    let (pod_tx, mut pod_rx) = mpsc::unbounded_channel::<watcher::Event<Pod>>();
    let (kp_tx, mut kp_rx) = mpsc::unbounded_channel::<watcher::Event<KuryrPort>>();
    ctx.hooks.pod_events.add(pod_tx);
    ctx.hooks.kuryrport_events.add(kp_tx);
    let p = policy.clone();
    let pod_tap = async move {
        while let Some(ev) = pod_rx.recv().await {
            p.on_pod_event(&ev);
        }
    };
    let p = policy.clone();
    let kp_tap = async move {
        while let Some(ev) = kp_rx.recv().await {
            p.on_kuryrport_event(&ev);
        }
    };
    async move {
        tokio::join!(pod_tap, kp_tap);
    }
}
