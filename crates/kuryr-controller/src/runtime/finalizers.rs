//! Finalizers and JSON patches shared by every reconciler (`crate::runtime::finalizers`): a
//! finalizer is added with a `test` on the current list, so two writers never lose one.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;

use crate::runtime::error::is_not_found;

/// JSON patch adding `finalizer`, guarded by a test of the current list (as kube's finalizer
/// helper does), so a concurrent writer makes it fail instead of being overwritten.
pub fn add_finalizer_patch<K: Resource>(obj: &K, finalizer: &str) -> serde_json::Value {
    let current = obj.finalizers();
    if current.is_empty() {
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}])
    } else {
        json!([{"op": "test", "path": "/metadata/finalizers", "value": current},
               {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}])
    }
}

/// JSON patch removing `finalizer` (`None` if absent), guarded by a test of its position.
pub fn remove_finalizer_patch<K: Resource>(obj: &K, finalizer: &str) -> Option<serde_json::Value> {
    let i = obj.finalizers().iter().position(|f| f == finalizer)?;
    Some(json!([{"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer},
                {"op": "remove", "path": format!("/metadata/finalizers/{i}")}]))
}

pub async fn json_patch<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    match api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
