//! Standalone containers (podman, `ctr run --cni`): KuryrPorts without a Pod.
//!
//! The operator creates the KuryrPort (kuryr-daemon wires the container from it on the CNI ADD):
//!
//! ```yaml
//! apiVersion: openstack.org/v1
//! kind: KuryrPort
//! metadata:
//!   name: web-1                          # podman: the container name; ctr: <ctr namespace>-<container id>
//!   namespace: kuryr-standalone          # [cni_daemon] standalone_namespace
//!   labels:
//!     kuryr.openstack.org/standalone: "true"
//!     kuryr.openstack.org/nodeName: node-1
//! spec:
//!   podUid: 0b6c4c1e-5a52-4c1f-9d0e-2f3c4b5a6d7e   # any fresh UUID: the Neutron port's device_id
//!   podNodeName: node-1                  # the port's binding:host_id
//! ```
//!
//! kuryr-controller reconciles it like a pod's KuryrPort (adopt or create the Neutron port with
//! `device_id = spec.podUid`, bound to `spec.podNodeName`, same subnet, security groups and tags;
//! `status.vifs`; activation), except that there is no Pod to own it or to be "gone": it is never
//! deleted as an orphan. Deleting it releases the port (same finalizer as pods' KuryrPorts).
//!
//! A standalone KuryrPort that could not work is refused with a Warning Event on it and gets no
//! port ([`check`]): outside the standalone namespace, a `podUid` that is not a UUID or that an
//! older KuryrPort already uses (the UID is the port's idempotency key: two KuryrPorts sharing it
//! would adopt and release each other's port), or a node label that differs from `podNodeName`.

use kube::ResourceExt;
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::{is_standalone, NODE_NAME_LABEL, STANDALONE_LABEL};

/// Whether the KuryrPort stands for a standalone container (label `kuryr.openstack.org/standalone=true`).
pub fn is_standalone_kp(kp: &KuryrPort) -> bool {
    is_standalone(kp.metadata.labels.as_ref())
}

/// `8-4-4-4-12` hexadecimal digits.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Why a standalone KuryrPort cannot be wired: a message for its Warning Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub why: String,
    /// Another KuryrPort holds the UID: looking again later may succeed once it is gone.
    pub retry: bool,
}

impl Refusal {
    fn fix(why: String) -> Refusal {
        Refusal { why, retry: false }
    }
}

/// `(creationTimestamp, namespace/name)`: older first.
fn age_key(kp: &KuryrPort) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (kp.metadata.creation_timestamp.as_ref().map(|t| t.0), format!("{}/{}", kp.namespace().unwrap_or_default(), kp.name_any()))
}

/// Checks a standalone KuryrPort against the standalone namespace and every other KuryrPort
/// (pods' included).
pub fn check<'a>(kp: &KuryrPort, standalone_ns: &str, all: impl IntoIterator<Item = &'a KuryrPort>) -> Result<(), Refusal> {
    let ns = kp.namespace().unwrap_or_default();
    if ns != standalone_ns {
        return Err(Refusal::fix(format!(
            "a standalone container's KuryrPort (label {STANDALONE_LABEL}) must be in namespace {standalone_ns} \
             ([cni_daemon] standalone_namespace), not {ns}: it gets no Neutron port"
        )));
    }
    let uid = &kp.spec.pod_uid;
    if !is_uuid(uid) {
        return Err(Refusal::fix(format!(
            "spec.podUid {uid:?} is not a UUID: pick a fresh one (e.g. `cat /proc/sys/kernel/random/uuid`); it becomes the Neutron port's device_id"
        )));
    }
    let node = &kp.spec.pod_node_name;
    if node.is_empty() {
        return Err(Refusal::fix("spec.podNodeName is empty: name the node the container runs on".into()));
    }
    let label = kp.labels().get(NODE_NAME_LABEL).map(String::as_str);
    if label != Some(node.as_str()) {
        return Err(Refusal::fix(format!(
            "label {NODE_NAME_LABEL} is {:?} but spec.podNodeName is {node:?}: both must name the container's node \
             (kuryr-daemon only sees KuryrPorts labelled with its node)",
            label.unwrap_or_default()
        )));
    }
    let me = age_key(kp);
    if let Some(older) = all
        .into_iter()
        .filter(|o| o.metadata.uid != kp.metadata.uid && &o.spec.pod_uid == uid && age_key(o) < me)
        .min_by_key(|o| age_key(o))
    {
        return Err(Refusal {
            why: format!(
                "spec.podUid {uid} is already used by KuryrPort {}/{}: the UID identifies the Neutron port, pick a fresh one",
                older.namespace().unwrap_or_default(),
                older.name_any()
            ),
            retry: true,
        });
    }
    Ok(())
}

/// Whether another KuryrPort (not `kp` itself) has `kp`'s pod UID: then ports stamped with that
/// UID may be the other one's, and releasing `kp` must not touch them.
pub fn uid_shared<'a>(kp: &KuryrPort, all: impl IntoIterator<Item = &'a KuryrPort>) -> bool {
    all.into_iter().any(|o| o.metadata.uid != kp.metadata.uid && o.spec.pod_uid == kp.spec.pod_uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "0b6c4c1e-5a52-4c1f-9d0e-2f3c4b5a6d7e";

    fn kp(v: serde_json::Value) -> KuryrPort {
        let mut base = json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "web-1", "namespace": "kuryr-standalone", "uid": "kp-1",
                         "creationTimestamp": "2026-01-01T00:00:10Z",
                         "labels": {"kuryr.openstack.org/standalone": "true", "kuryr.openstack.org/nodeName": "vm"}},
            "spec": {"podUid": UID, "podNodeName": "vm"}
        });
        merge(&mut base, v);
        serde_json::from_value(base).expect("kp")
    }

    /// Deep merge; `null` removes the key.
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    if v.is_null() {
                        a.remove(&k);
                    } else {
                        merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn recognises_uuids() {
        assert!(is_uuid(UID));
        assert!(is_uuid("0B6C4C1E-5A52-4C1F-9D0E-2F3C4B5A6D7E"));
        for bad in
            ["", "web-1", "0b6c4c1e5a524c1f9d0e2f3c4b5a6d7e", "0b6c4c1e-5a52-4c1f-9d0e-2f3c4b5a6d7", "0b6c4c1e-5a52-4c1f-9d0e-2f3c4b5a6d7g"]
        {
            assert!(!is_uuid(bad), "{bad:?}");
        }
    }

    /// (case, KuryrPort patch, other KuryrPorts) → Ok, or the refusal (a piece of it, retry?).
    #[test]
    fn check_table() {
        let older_twin = kp(json!({"metadata": {"name": "twin", "uid": "kp-0", "creationTimestamp": "2026-01-01T00:00:00Z"}}));
        let younger_twin = kp(json!({"metadata": {"name": "twin", "uid": "kp-2", "creationTimestamp": "2026-01-01T00:01:00Z"}}));
        let pod_kp_same_uid = kp(json!({"metadata": {"name": "pod", "namespace": "ns", "uid": "kp-3", "labels": null,
                                                      "creationTimestamp": "2026-01-01T00:00:00Z"}}));
        let other_uid = kp(json!({"metadata": {"name": "x", "uid": "kp-4", "creationTimestamp": "2026-01-01T00:00:00Z"},
                                  "spec": {"podUid": "11111111-2222-3333-4444-555555555555"}}));
        let itself = kp(json!({}));
        type Want = Result<(), (&'static str, bool)>;
        let cases: Vec<(&str, serde_json::Value, Vec<&KuryrPort>, Want)> = vec![
            ("valid", json!({}), vec![], Ok(())),
            ("itself in the list", json!({}), vec![&itself], Ok(())),
            ("other KuryrPorts with other UIDs", json!({}), vec![&other_uid], Ok(())),
            ("younger twin: this one keeps the UID", json!({}), vec![&younger_twin], Ok(())),
            ("older twin holds the UID", json!({}), vec![&older_twin], Err(("already used by KuryrPort kuryr-standalone/twin", true))),
            ("a pod's KuryrPort holds the UID", json!({}), vec![&pod_kp_same_uid], Err(("already used by KuryrPort ns/pod", true))),
            (
                "wrong namespace",
                json!({"metadata": {"namespace": "default"}}),
                vec![],
                Err(("must be in namespace kuryr-standalone", false)),
            ),
            ("uid not a UUID", json!({"spec": {"podUid": "web-1"}}), vec![], Err(("is not a UUID", false))),
            ("empty uid", json!({"spec": {"podUid": ""}}), vec![], Err(("is not a UUID", false))),
            ("no node", json!({"spec": {"podNodeName": ""}}), vec![], Err(("spec.podNodeName is empty", false))),
            (
                "node label differs",
                json!({"metadata": {"labels": {"kuryr.openstack.org/nodeName": "other"}}}),
                vec![],
                Err(("label kuryr.openstack.org/nodeName is \"other\"", false)),
            ),
            (
                "node label missing",
                json!({"metadata": {"labels": {"kuryr.openstack.org/nodeName": null}}}),
                vec![],
                Err(("is \"\" but spec.podNodeName is \"vm\"", false)),
            ),
        ];
        for (name, patch, others, want) in cases {
            let k = kp(patch);
            let got = check(&k, "kuryr-standalone", others).map_err(|r| (r.why, r.retry));
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err((why, retry)), Err((piece, want_retry))) => {
                    assert!(why.contains(piece), "case {name:?}: {why}");
                    assert_eq!(retry, want_retry, "case {name:?}");
                }
                (got, want) => panic!("case {name:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn shared_uid() {
        let me = kp(json!({}));
        assert!(!uid_shared(&me, [&me]));
        let twin = kp(json!({"metadata": {"uid": "kp-9"}}));
        assert!(uid_shared(&me, [&me, &twin]));
        assert!(is_standalone_kp(&me));
        assert!(!is_standalone_kp(&kp(json!({"metadata": {"labels": null}}))));
    }
}
