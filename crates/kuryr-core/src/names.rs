//! Strings that must stay identical to upstream kuryr-kubernetes (clusters migrate with them),
//! kuryr-rs' own labels, and the Kubernetes object-name rules they are checked against.

/// CRD group and version.
pub const GROUP: &str = "openstack.org";
pub const VERSION: &str = "v1";

/// Finalizer on Pods whose KuryrPort holds OpenStack resources.
pub const POD_FINALIZER: &str = "kuryr.openstack.org/pod-finalizer";
/// Finalizer on KuryrPorts until their Neutron ports are released.
pub const KURYRPORT_FINALIZER: &str = "kuryr.openstack.org/kuryrport-finalizer";
/// Finalizer on KuryrNetworks until network, subnet and router interface are gone.
pub const KURYRNETWORK_FINALIZER: &str = "kuryrnetwork.finalizers.kuryr.openstack.org";
/// Finalizer on Services with a KuryrLoadBalancer.
pub const SERVICE_FINALIZER: &str = "kuryr.openstack.org/service-finalizer";
/// Finalizer on KuryrLoadBalancers until the Octavia LB is cascade-deleted.
pub const KURYRLB_FINALIZER: &str = "kuryr.openstack.org/kuryrloadbalancer-finalizers";
/// Finalizer on NetworkPolicies and KuryrNetworkPolicies until their SG is deleted.
pub const NETWORKPOLICY_FINALIZER: &str = "kuryr.openstack.org/networkpolicy-finalizer";

/// Label on KuryrPorts: the node the pod runs on (the daemon's list/watch selector).
pub const NODE_NAME_LABEL: &str = "kuryr.openstack.org/nodeName";
/// Annotation that marks static pods (their API UID differs from the one the CRI passes).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Neutron `device_owner` of pod ports (upstream kuryr-lib's value).
pub const DEVICE_OWNER: &str = "compute:kuryr";
/// `device_owner` Neutron gives a port attached to a trunk (nested-vlan pod ports).
pub const SUBPORT_OWNER: &str = "trunk:subport";

/// The Neutron/Octavia tag every resource kuryr-rs creates for cluster `cluster` carries (GC
/// lists this cluster's resources by it; another cluster's are never candidates).
pub fn cluster_tag(cluster: &str) -> String {
    format!("kuryr-rs-cluster={cluster}")
}

/// Whether `cluster` can be written into a tag: Neutron's tag URLs cannot hold `/` or `,`, and a
/// tag is at most 255 characters.
pub fn check_cluster_name(cluster: &str) -> Result<(), String> {
    if cluster.is_empty() {
        return Err("the cluster name is empty".into());
    }
    if let Some(c) = cluster
        .chars()
        .find(|c| matches!(c, '/' | ',' | '?' | '#' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the cluster name {cluster:?} contains {c:?}, which a Neutron tag cannot hold"
        ));
    }
    if cluster_tag(cluster).len() > 255 {
        return Err(format!(
            "the cluster name {cluster:?} is too long for a Neutron tag (at most {} characters)",
            255 - cluster_tag("").len()
        ));
    }
    Ok(())
}

/// Label on KuryrPorts that stand for a standalone container (podman, `ctr run --cni`) rather
/// than a Pod: created by the operator, reconciled without an owning Pod, never treated as an
/// orphan. kuryr-rs only (upstream had no standalone containers).
pub const STANDALONE_LABEL: &str = "kuryr.openstack.org/standalone";
/// The value [`STANDALONE_LABEL`] must have.
pub const STANDALONE_LABEL_VALUE: &str = "true";

/// Description of a resource kuryr-rs creates for a namespaced object (a network for a
/// KuryrNetwork, a security group or rule for a KuryrNetworkPolicy, a load balancer or floating
/// IP for a KuryrLoadBalancer): `kuryr-rs <what>: cluster <cluster>, <namespace>/<name>`. GC reads
/// the cluster and namespace back with [`description_owner`].
pub fn resource_description(what: &str, cluster: &str, namespace: &str, name: &str) -> String {
    format!("kuryr-rs {what}: cluster {cluster}, {namespace}/{name}")
}

/// The (cluster, namespace) a [`resource_description`] names, if it is one.
pub fn description_owner(description: &str) -> Option<(&str, &str)> {
    let rest = description.strip_prefix("kuryr-rs ")?;
    let (_, rest) = rest.split_once(": cluster ")?;
    let (cluster, rest) = rest.split_once(", ")?;
    let (namespace, _) = rest.split_once('/')?;
    (!cluster.is_empty() && !namespace.is_empty() && !namespace.contains(' '))
        .then_some((cluster, namespace))
}

/// Whether an object with these labels is a standalone container's KuryrPort.
pub fn is_standalone(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(STANDALONE_LABEL))
        .is_some_and(|v| v == STANDALONE_LABEL_VALUE)
}

/// Label on the per-node *pool* KuryrPort (kuryr-rs only): `status.vifs` maps Neutron port id →
/// VIF of every warm-pool port of the node (bound to it, not yet claimed by a pod). kuryr-daemon
/// pre-plugs them into [`POOL_NETNS`] so they go ACTIVE before any pod needs them; ADD then only
/// moves and configures the interface. The controller never treats it as a pod's KuryrPort.
pub const POOL_LABEL: &str = "kuryr.openstack.org/pool";
/// The value [`POOL_LABEL`] must have.
pub const POOL_LABEL_VALUE: &str = "true";
/// Namespace of the pool KuryrPorts (one per node, named [`pool_kuryrport_name`]).
pub const POOL_NAMESPACE: &str = "kuryr-pool";
/// Named network namespace (`/run/netns/<name>`) where pre-plugged pod ends wait.
pub const POOL_NETNS: &str = "kuryr-pool";

/// Name of a node's pool KuryrPort.
pub fn pool_kuryrport_name(node: &str) -> String {
    format!("pool-{node}")
}

/// The Neutron description of a node's free pool port (kuryr-controller's pool stamp).
pub fn pool_port_description(cluster: &str, node: &str) -> String {
    format!("kuryr-rs pool port: cluster {cluster}, node {node}")
}

/// Whether a Neutron port description is the pool stamp of `cluster` (any node).
pub fn is_pool_port_description(description: &str, cluster: &str) -> bool {
    description
        .strip_prefix("kuryr-rs pool port: cluster ")
        .and_then(|r| r.strip_prefix(cluster))
        .is_some_and(|r| r.starts_with(", node "))
}

/// Whether an object with these labels is a node's pool KuryrPort.
pub fn is_pool(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(POOL_LABEL))
        .is_some_and(|v| v == POOL_LABEL_VALUE)
}

/// A DNS-1123 subdomain (the name rule of most Kubernetes objects, KuryrPorts included): at
/// most 253 characters, lowercase letters, digits, `-` and `.`, each `.`-separated part
/// starting and ending with a letter or digit. `Err` says what is wrong.
pub fn check_dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "is {} characters long, at most 253 are allowed",
            name.len()
        ));
    }
    for part in name.split('.') {
        check_label_chars(part)?;
    }
    Ok(())
}

/// A DNS-1123 label (the name rule of namespaces): at most 63 characters, lowercase letters,
/// digits and `-`, starting and ending with a letter or digit.
pub fn check_dns1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "is {} characters long, at most 63 are allowed",
            name.len()
        ));
    }
    check_label_chars(name)
}

fn check_label_chars(part: &str) -> Result<(), String> {
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}: only lowercase letters, digits, '-' and '.' are allowed"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(part.chars().next()) || !alnum(part.chars().last()) {
        return Err(
            "must start and end with a lowercase letter or digit (also around each '.')".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn resource_descriptions_name_their_owner() {
        let d =
            super::resource_description("network policy security group", "c1", "ns-a", "allow-web");
        assert_eq!(
            d,
            "kuryr-rs network policy security group: cluster c1, ns-a/allow-web"
        );
        assert_eq!(super::description_owner(&d), Some(("c1", "ns-a")));
        assert_eq!(
            super::description_owner("Kuryr-Kubernetes NetPolicy SG for ns-a/x"),
            None
        );
        assert_eq!(
            super::description_owner("kuryr-rs x: cluster c1, no-slash"),
            None
        );
        // Pod port descriptions have their own form (GC scopes ports by their `<ns>/<name>` name).
        assert_eq!(
            super::description_owner("kuryr-rs pod port: cluster c1, pod ns/a (uid u)"),
            None
        );
    }

    use super::*;

    #[test]
    fn pool_port_description_names_its_cluster() {
        let d = pool_port_description("c1", "vm");
        assert_eq!(d, "kuryr-rs pool port: cluster c1, node vm");
        assert!(is_pool_port_description(&d, "c1"));
        assert!(
            !is_pool_port_description(&d, "c"),
            "a prefix of the cluster name is another cluster"
        );
        assert!(!is_pool_port_description(
            "kuryr-rs pod port: cluster c1, pod ns/p (uid u)",
            "c1"
        ));
    }

    #[test]
    fn object_name_rules() {
        let ok_sub = [
            "a",
            "web-1",
            "kuryr-standalone",
            "a.b-c.d",
            "0123abc",
            &"a".repeat(253),
        ];
        for n in ok_sub {
            assert_eq!(check_dns1123_subdomain(n), Ok(()), "{n:?}");
        }
        let bad_sub: &[(&str, &str)] = &[
            ("", "empty"),
            ("Web", "'W'"),
            ("web_1", "'_'"),
            ("-web", "start and end"),
            ("web-", "start and end"),
            ("a..b", "start and end"),
            (".a", "start and end"),
            ("a b", "' '"),
            ("café", "'é'"),
        ];
        for (n, want) in bad_sub {
            let e = check_dns1123_subdomain(n).expect_err(n);
            assert!(e.contains(want), "{n:?}: {e}");
        }
        assert!(check_dns1123_subdomain(&"a".repeat(254))
            .expect_err("long")
            .contains("254"));
        assert_eq!(check_dns1123_label("kuryr-standalone"), Ok(()));
        assert!(check_dns1123_label("a.b").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn standalone_label() {
        use std::collections::BTreeMap;
        let l = |v: &str| BTreeMap::from([(STANDALONE_LABEL.to_string(), v.to_string())]);
        assert!(is_standalone(Some(&l("true"))));
        assert!(!is_standalone(Some(&l("yes"))));
        assert!(!is_standalone(Some(&BTreeMap::new())));
        assert!(!is_standalone(None));
    }
}
