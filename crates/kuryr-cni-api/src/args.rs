//! `CNI_ARGS`: `K1=V1;K2=V2`, as set by Kubernetes runtimes.

use std::str::FromStr;

use crate::error::CniError;

/// Parsed `CNI_ARGS`.
///
/// Kubernetes runtimes (containerd CRI, CRI-O) send `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;
/// K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..` in random order; podman
/// sends `IgnoreUnknown=1;K8S_POD_NAME=..`; ctr sends nothing.
///
/// Rules (those of libcni's `types.LoadArgs`, except that unknown keys are always
/// tolerated, whether or not `IgnoreUnknown` is set):
/// - the empty string means no arguments;
/// - pairs are separated by `;` and each must be exactly `KEY=VALUE` (one `=`, non-empty
///   key); anything else, including an empty pair from `;;` or a trailing `;`, is rejected;
/// - values may be empty; keys are case-sensitive; a repeated key keeps the last value;
/// - `IgnoreUnknown` accepts `1`/`true`/`0`/`false` (case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ignore_unknown: bool,
    pub k8s_pod_namespace: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_pod_uid: Option<String>,
    pub k8s_pod_infra_container_id: Option<String>,
    /// Other keys, in input order.
    pub other: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses a `CNI_ARGS` value; malformed input is code 4 naming `CNI_ARGS`.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        if s.is_empty() {
            return Ok(out);
        }
        for pair in s.split(';') {
            let mut kv = pair.split('=');
            let (key, value) = match (kv.next(), kv.next(), kv.next()) {
                (Some(k), Some(v), None) if !k.is_empty() => (k, v),
                _ => {
                    return Err(CniError::invalid_env(
                        "invalid CNI_ARGS",
                        format!("invalid pair {pair:?}: expected KEY=VALUE pairs separated by ';'"),
                    ))
                }
            };
            match key {
                "IgnoreUnknown" => {
                    out.ignore_unknown = match value.to_ascii_lowercase().as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(CniError::invalid_env(
                                "invalid CNI_ARGS",
                                format!("IgnoreUnknown={value:?} is not a boolean"),
                            ))
                        }
                    }
                }
                "K8S_POD_NAMESPACE" => out.k8s_pod_namespace = Some(value.to_owned()),
                "K8S_POD_NAME" => out.k8s_pod_name = Some(value.to_owned()),
                "K8S_POD_UID" => out.k8s_pod_uid = Some(value.to_owned()),
                "K8S_POD_INFRA_CONTAINER_ID" => {
                    out.k8s_pod_infra_container_id = Some(value.to_owned())
                }
                _ => {
                    if let Some(slot) = out.other.iter_mut().find(|(k, _)| k == key) {
                        slot.1 = value.to_owned();
                    } else {
                        out.other.push((key.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Looks a key up, known or not.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "K8S_POD_NAMESPACE" => self.k8s_pod_namespace.as_deref(),
            "K8S_POD_NAME" => self.k8s_pod_name.as_deref(),
            "K8S_POD_UID" => self.k8s_pod_uid.as_deref(),
            "K8S_POD_INFRA_CONTAINER_ID" => self.k8s_pod_infra_container_id.as_deref(),
            _ => self
                .other
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// `namespace/name` when both are set (a Kubernetes pod), else `None`.
    pub fn pod(&self) -> Option<(&str, &str)> {
        match (
            self.k8s_pod_namespace.as_deref(),
            self.k8s_pod_name.as_deref(),
        ) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Some((ns, name)),
            _ => None,
        }
    }
}

impl FromStr for CniArgs {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniArgs::parse(s)
    }
}
