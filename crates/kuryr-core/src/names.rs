//! Strings that must stay identical to upstream kuryr-kubernetes (clusters migrate with them).

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
