//! The `openstack.org/v1` custom resources, field-compatible with upstream kuryr-kubernetes
//! (`kubernetes_crds/kuryr_crds/*.yaml`), so existing objects keep working after a migration.
//! `crdgen` (in kuryr-controller) renders them to YAML for `deploy/`.

use crate::vif::{Vif, VifError};
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Schema for a field whose content we do not constrain (os-vif primitives, raw selectors).
fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn preserve_unknown_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

// ------------------------------------------------------------------------------- KuryrPort

/// One per non-hostNetwork pod, same name and namespace as the pod; or one per standalone
/// container (podman, ctr), made by its creator in the standalone namespace with the label
/// kuryr.openstack.org/standalone=true.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrPort",
    plural = "kuryrports",
    shortname = "kp",
    namespaced,
    status = "KuryrPortStatus",
    printcolumn = r#"{"name":"PodUID","type":"string","jsonPath":".spec.podUid"}"#,
    printcolumn = r#"{"name":"Nodename","type":"string","jsonPath":".spec.podNodeName"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KuryrPortSpec {
    /// UID of the pod this port belongs to; a re-created pod of the same name has another. For a
    /// standalone container: a fresh UUID its creator picks. It is the Neutron port's device_id.
    pub pod_uid: String,
    /// Node the pod (or standalone container) runs on (the Neutron port's binding:host_id).
    pub pod_node_name: String,
    /// Static (mirror) pod: its API UID differs from the one the CRI passes to the CNI.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_static: bool,
}

/// `status.vifs`: interface name (eth0, eth1…) → VIF.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct KuryrPortStatus {
    #[serde(default)]
    pub vifs: BTreeMap<String, VifEntry>,
}

/// One interface of the pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct VifEntry {
    /// The pod's default interface (gets the default route).
    #[serde(default)]
    pub default: bool,
    /// The VIF: an os-vif primitive (kuryr-rs's or upstream's), or the legacy kuryr-rs typed
    /// form (see [`crate::vif`]).
    #[schemars(schema_with = "preserve_unknown_object")]
    pub vif: Value,
}

impl VifEntry {
    pub fn new(default: bool, vif: &Vif) -> Self {
        VifEntry {
            default,
            vif: vif.to_status_value(),
        }
    }

    /// The VIF, whichever form it was stored in.
    pub fn vif(&self) -> Result<Vif, VifError> {
        Vif::from_status_value(&self.vif)
    }
}

impl KuryrPort {
    /// A node's pool KuryrPort, before its status (see [`crate::names::POOL_LABEL`]): named
    /// [`crate::names::pool_kuryrport_name`], labelled with the node and as a pool, no pod.
    pub fn pool(node: &str) -> KuryrPort {
        use crate::names::{pool_kuryrport_name, NODE_NAME_LABEL, POOL_LABEL, POOL_LABEL_VALUE};
        let mut kp = KuryrPort::new(
            &pool_kuryrport_name(node),
            KuryrPortSpec {
                pod_uid: String::new(),
                pod_node_name: node.to_string(),
                pod_static: false,
            },
        );
        kp.metadata.labels = Some(BTreeMap::from([
            (NODE_NAME_LABEL.to_string(), node.to_string()),
            (POOL_LABEL.to_string(), POOL_LABEL_VALUE.to_string()),
        ]));
        kp
    }
}

impl KuryrPortStatus {
    /// The default interface and its VIF, if the controller has written one.
    pub fn default_vif(&self) -> Option<(&str, Result<Vif, VifError>)> {
        self.vifs
            .iter()
            .find(|(_, e)| e.default)
            .map(|(k, e)| (k.as_str(), e.vif()))
    }
}

// ---------------------------------------------------------------------------- KuryrNetwork

/// One per namespace when namespaces get their own Neutron networks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrNetwork",
    plural = "kuryrnetworks",
    shortname = "kns",
    namespaced,
    status = "KuryrNetworkStatus",
    printcolumn = r#"{"name":"SUBNET-CIDR","type":"string","jsonPath":".status.subnetCIDR"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkSpec {
    pub ns_name: String,
    pub project_id: String,
    #[serde(default)]
    pub ns_labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(
        default,
        rename = "subnetCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    #[serde(default)]
    pub populated: bool,
    #[serde(default)]
    pub ns_labels: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------- KuryrNetworkPolicy

/// One per NetworkPolicy: desired SG rules in `spec`, the actual Neutron rules in `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrNetworkPolicy",
    plural = "kuryrnetworkpolicies",
    shortname = "knp",
    namespaced,
    status = "KuryrNetworkPolicyStatus",
    printcolumn = r#"{"name":"SG-ID","type":"string","jsonPath":".status.securityGroupId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkPolicySpec {
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub ingress_sg_rules: Vec<Value>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub egress_sg_rules: Vec<Value>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub pod_selector: Value,
    #[serde(default)]
    pub policy_types: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub security_group_rules: Vec<Value>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub pod_selector: Value,
    /// kuryr-rs: every security group the policy's pods carry for it (one per direction, the
    /// named-port variants, and the shared base groups), key → Neutron id. Upstream had one
    /// group (`securityGroupId`, kept: the first of these).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub security_groups: BTreeMap<String, String>,
    /// kuryr-rs: the Neutron address groups the rules name, key → Neutron id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub address_groups: BTreeMap<String, String>,
}

// ----------------------------------------------------------------------- KuryrLoadBalancer

/// One per Service handled by Octavia.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrLoadBalancer",
    plural = "kuryrloadbalancers",
    shortname = "klb",
    namespaced,
    status = "KuryrLoadBalancerStatus",
    printcolumn = r#"{"name":"VIP","type":"string","jsonPath":".status.loadbalancer.ip"}"#,
    printcolumn = r#"{"name":"PROVIDER","type":"string","jsonPath":".status.loadbalancer.provider"}"#,
    printcolumn = r#"{"name":"STATE","type":"string","jsonPath":".status.loadbalancer.provisioning_status"}"#,
    printcolumn = r#"{"name":"MEMBERS","type":"string","jsonPath":".status.members[*].ip"}"#,
    printcolumn = r#"{"name":"PUBLIC-IP","type":"string","jsonPath":".status.service_pub_ip_info.ip_addr"}"#,
    printcolumn = r#"{"name":"PROJECT-ID","type":"string","priority":1,"jsonPath":".spec.project_id"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct KuryrLoadBalancerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_ip: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub ports: Vec<KuryrLoadBalancerPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub security_groups_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<i64>,
    /// `sessionAffinity: ClientIP`: seconds a client sticks to its backend (kuryr-rs; upstream
    /// had no session affinity). Absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<i64>,
    /// A health monitor on every pool (kuryr-rs, from cloud-provider-openstack's
    /// `loadbalancer.openstack.org/enable-health-monitor`). Absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_monitor: Option<KuryrLoadBalancerHealthMonitor>,
    /// Listener `allowed_cidrs` (kuryr-rs, from `loadBalancerSourceRanges`; only where the
    /// provider enforces them). Empty = everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// Octavia flavor of the load balancer (kuryr-rs, `loadbalancer.openstack.org/flavor-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor_id: Option<String>,
    /// TCP pools speak the PROXY protocol to members: Octavia's pool protocol `PROXY` or
    /// `PROXYV2` (kuryr-rs, `loadbalancer.openstack.org/proxy-protocol`). Absent = plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// Network the floating IP comes from instead of `[neutron_defaults] external_svc_net`
    /// (kuryr-rs, `loadbalancer.openstack.org/floating-network-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_network_id: Option<String>,
    /// The floating IP we allocated outlives the Service (disassociated, not deleted; kuryr-rs,
    /// `loadbalancer.openstack.org/keep-floatingip`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_floating_ip: bool,
    /// A dual-stack Service's other ClusterIPs, each on the service subnet of its family
    /// (kuryr-rs; Octavia's `additional_vips`). Empty = single-stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_vips: Vec<KuryrLoadBalancerVip>,
    #[serde(default, rename = "endpointSlices")]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub endpoint_slices: Vec<Value>,
}

/// One more VIP of a load balancer: an address and the subnet it is on.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct KuryrLoadBalancerVip {
    pub ip: String,
    pub subnet_id: String,
}

/// Health monitor settings of every pool (Octavia's fields; the type follows the pool's
/// protocol: TCP → `TCP`, UDP → `UDP-CONNECT`, SCTP → `SCTP`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct KuryrLoadBalancerHealthMonitor {
    /// Seconds between probes.
    pub delay: u32,
    /// Seconds a probe may take.
    pub timeout: u32,
    /// Successes before a member is ONLINE again.
    pub max_retries: u32,
    /// Failures before a member is ERROR.
    pub max_retries_down: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KuryrLoadBalancerPort {
    /// The Service port's name; `null` for an unnamed port, as upstream writes it (its
    /// KuryrLoadBalancer handler indexes `port['name']` and skips a port without the key).
    #[serde(default)]
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct KuryrLoadBalancerStatus {
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub loadbalancer: Value,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub listeners: Vec<Value>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub pools: Vec<Value>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub members: Vec<Value>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub service_pub_ip_info: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crds_have_upstream_names_and_structural_schemas() {
        for (crd, plural, short) in [
            (KuryrPort::crd(), "kuryrports", "kp"),
            (KuryrNetwork::crd(), "kuryrnetworks", "kns"),
            (KuryrNetworkPolicy::crd(), "kuryrnetworkpolicies", "knp"),
            (KuryrLoadBalancer::crd(), "kuryrloadbalancers", "klb"),
        ] {
            assert_eq!(crd.spec.group, "openstack.org");
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_string()][..])
            );
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, "v1");
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{plural}: status subresource"
            );
            assert!(v.schema.is_some(), "{plural}: schema");
        }
    }

    #[test]
    fn kuryrport_spec_requires_uid_and_node() {
        let crd = KuryrPort::crd();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let required = &schema["openAPIV3Schema"]["properties"]["spec"]["required"];
        assert!(
            required
                .as_array()
                .is_some_and(|r| r.contains(&"podUid".into()) && r.contains(&"podNodeName".into())),
            "{required}"
        );
    }

    #[test]
    fn reads_an_upstream_kuryrport() {
        // Shape of a KuryrPort as upstream kuryr-kubernetes wrote it (trimmed os-vif primitive).
        let obj = serde_json::json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "web-0", "namespace": "default",
                         "finalizers": ["kuryr.openstack.org/kuryrport-finalizer"],
                         "labels": {"kuryr.openstack.org/nodeName": "node-1"}},
            "spec": {"podUid": "u-1", "podNodeName": "node-1", "podStatic": false},
            "status": {"vifs": {"eth0": {"default": true, "vif": {
                "versioned_object.name": "VIFOpenVSwitch", "versioned_object.namespace": "os_vif",
                "versioned_object.version": "1.0", "versioned_object.data": {
                    "id": "p-123456789012", "address": "fa:16:3e:00:00:01", "active": true, "plugin": "ovs",
                    "vif_name": "tapp-123456789", "bridge_name": "br-int", "has_traffic_filtering": true,
                    "network": {"versioned_object.name": "Network", "versioned_object.data": {"id": "n1", "mtu": 1442}}}}}}}
        });
        let kp: KuryrPort = serde_json::from_value(obj).expect("deserialize");
        let status = kp.status.expect("status");
        let (ifname, vif) = status.default_vif().expect("default vif");
        assert_eq!(ifname, "eth0");
        let vif = vif.expect("vif");
        assert_eq!(vif.port_id, "p-123456789012");
        assert_eq!(vif.host_ifname, "tapp-123456789");
    }
}
