//! The kuryr-cni <-> kuryr-daemon wire protocol (see the crate docs for the full
//! description) and the DEL queue entry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::args::CniArgs;
use crate::command::CniCommand;
use crate::error::CniError;
use crate::netconf::NetConf;
use crate::result::CniResult;
use crate::version::CniVersion;

/// Path of the CNI endpoint: `POST`, body [`CniRequest`].
pub const CNI_ENDPOINT: &str = "/v1/cni";
/// Path of the readiness endpoint: `GET`, answer [`ReadyResponse`].
pub const READY_ENDPOINT: &str = "/v1/ready";
/// `Host` header value the shim sends (the socket is the real address).
pub const HTTP_HOST: &str = "kuryr-daemon";
/// Current [`DelQueueEntry::format`].
pub const DEL_QUEUE_FORMAT: u32 = 1;

/// Body of `POST /v1/cni`: one CNI invocation, as the runtime made it.
///
/// `container_id`, `netns`, `ifname`, `args`, `path` are the `CNI_*` environment
/// variables verbatim (empty string when unset: `netns` on a DEL after the netns is gone,
/// all of them on GC and STATUS). `config` is the stdin JSON verbatim, including
/// `prevResult` (chained ADD, CHECK, DEL), `runtimeConfig`, and on GC
/// `cni.dev/valid-attachments`. The shim has already validated the environment, the
/// config's required fields and the version for the verb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniRequest {
    pub command: CniCommand,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    /// Raw `CNI_ARGS`; parse with [`CniRequest::cni_args`].
    #[serde(default)]
    pub args: String,
    /// Raw `CNI_PATH`.
    #[serde(default)]
    pub path: String,
    pub config: Value,
}

impl CniRequest {
    /// Parsed `CNI_ARGS` (code 4 if malformed).
    pub fn cni_args(&self) -> Result<CniArgs, CniError> {
        CniArgs::parse(&self.args)
    }

    /// Typed view of [`config`](Self::config) (codes 6/7 as for stdin).
    pub fn netconf(&self) -> Result<NetConf, CniError> {
        NetConf::from_value(&self.config)
    }

    /// The config's `cniVersion`, if it is one kuryr supports.
    pub fn cni_version(&self) -> Option<CniVersion> {
        self.config
            .get("cniVersion")
            .and_then(Value::as_str)
            .and_then(CniVersion::parse)
    }

    /// `config.prevResult` in the internal form; `None` when absent or `null`.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match self.config.get("prevResult") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let version = self
                    .config
                    .get("cniVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                CniResult::from_prev_result(v, version).map(Some)
            }
        }
    }

    /// For GC: `config["cni.dev/valid-attachments"]` as `(containerID, ifname)` pairs.
    /// Entries that are not objects with string `containerID` and `ifname` are skipped.
    pub fn valid_attachments(&self) -> Vec<(String, String)> {
        self.config
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| {
                        let cid = a.get("containerID")?.as_str()?;
                        let ifname = a.get("ifname")?.as_str()?;
                        Some((cid.to_owned(), ifname.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Result<String, CniError> {
        serde_json::to_string(self)
            .map_err(|e| CniError::internal("cannot serialize the daemon request", e.to_string()))
    }
}

/// Body of a 2xx answer to `POST /v1/cni`. `result` is required for ADD (the interfaces,
/// IPs, routes and DNS kuryr set up, in the 1.1.0 form; the shim merges it behind a
/// `prevResult` and converts it to the requested version) and `null`/absent otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResponse {
    #[serde(default)]
    pub result: Option<CniResult>,
}

impl CniResponse {
    pub fn ok() -> CniResponse {
        CniResponse { result: None }
    }
    pub fn with_result(result: CniResult) -> CniResponse {
        CniResponse {
            result: Some(result),
        }
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"result\":null}".to_owned())
    }
}

/// Body of `GET /v1/ready`: `200 {"ready":true}` or `503 {"ready":false,"reason":"..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyResponse {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One DEL the shim could not deliver because kuryr-daemon was unreachable. Written as
/// `<del_queue_dir>/<file_name>` (JSON), atomically (temporary file + rename).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelQueueEntry {
    /// [`DEL_QUEUE_FORMAT`].
    pub format: u32,
    /// When the shim queued it, milliseconds since the Unix epoch.
    pub queued_at_unix_ms: u64,
    /// Why it was queued (the connection error), for logs.
    pub reason: String,
    /// The DEL exactly as it would have been POSTed.
    pub request: CniRequest,
}

impl DelQueueEntry {
    pub fn new(request: CniRequest, queued_at_unix_ms: u64, reason: impl Into<String>) -> Self {
        DelQueueEntry {
            format: DEL_QUEUE_FORMAT,
            queued_at_unix_ms,
            reason: reason.into(),
            request,
        }
    }

    /// The queue file name of this entry; see [`queue_file_name`].
    pub fn file_name(&self) -> String {
        queue_file_name(&self.request.container_id, &self.request.ifname)
    }

    pub fn to_json(&self) -> Result<String, CniError> {
        serde_json::to_string_pretty(self)
            .map_err(|e| CniError::internal("cannot serialize the DEL queue entry", e.to_string()))
    }

    pub fn from_json(bytes: &[u8]) -> Result<DelQueueEntry, CniError> {
        serde_json::from_slice(bytes)
            .map_err(|e| CniError::decoding("invalid DEL queue entry", e.to_string()))
    }
}

/// `<container_id>@<ifname>.json`, one file per attachment, so a repeated DEL replaces
/// the earlier one. Bytes of `ifname` outside `[A-Za-z0-9_.-]` are written `%XX`
/// (container IDs cannot contain `@` or `%`, so the name is unambiguous; a leading `.` is
/// written `%2E`, so the name is never taken for a temporary file). Names longer than
/// 200 bytes keep a 100-byte prefix plus a 64-bit FNV-1a hash of the full name.
pub fn queue_file_name(container_id: &str, ifname: &str) -> String {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    let mut base = format!("{}@{}", escape(container_id), escape(ifname));
    // A leading '.' would make it look like a temporary file (see `is_queue_file_name`);
    // valid container IDs never start with one, but the name must hold for any input.
    if base.starts_with('.') {
        base.replace_range(..1, "%2E");
    }
    if base.len() <= 200 {
        return format!("{base}.json");
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in base.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // `base` is ASCII, so any byte index is a char boundary.
    format!("{}~{hash:016x}.json", &base[..100])
}

/// Whether a directory entry is a complete queue entry the daemon should process:
/// ends in `.json` and does not start with `.` (temporary files are `.<name>.tmp.<pid>`).
pub fn is_queue_file_name(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.') && name.len() > ".json".len()
}
