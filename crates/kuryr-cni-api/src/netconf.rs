//! The network configuration a plugin receives on stdin, with kuryr's own fields.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::command::CniCommand;
use crate::error::CniError;
use crate::validate::validate_network_name;

pub const DEFAULT_DAEMON_SOCKET: &str = "/run/kuryr/kuryr-daemon.sock";
pub const DEFAULT_DEL_QUEUE_DIR: &str = "/var/lib/kuryr/del-queue";
/// Deadline of ADD, DEL, CHECK and GC, in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 120.0;
/// Deadline of STATUS, in seconds (containerd asks every 5 s through CRI Status).
pub const DEFAULT_STATUS_TIMEOUT_SECONDS: f64 = 10.0;
/// Upper bound accepted for the timeouts (one day); larger is code 7.
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;
/// Lower bound accepted for the timeouts (one millisecond); smaller is code 7 (a positive
/// value below it would make a zero deadline, failing every call at once).
pub const MIN_TIMEOUT_SECONDS: f64 = 0.001;

/// The plugin configuration from stdin.
///
/// Spec fields: `cniVersion`, `name`, `type` (required), `prevResult` (set by the runtime
/// on chained ADD, and on CHECK/DEL). Everything else the runtime or the admin put in
/// (`runtimeConfig`, `capabilities`, `args`, `ipam`, `dns`, `cni.dev/valid-attachments`,
/// ...) is kept in [`extra`](Self::extra) so the whole config survives a round trip.
///
/// kuryr fields, all optional, as they would appear in the conflist's plugin object:
///
/// | field | default | meaning |
/// |---|---|---|
/// | `daemon_socket` | `/run/kuryr/kuryr-daemon.sock` | kuryr-daemon's unix socket |
/// | `timeout_seconds` | `120` | deadline of ADD/DEL/CHECK/GC (number, may be fractional) |
/// | `status_timeout_seconds` | `10` | deadline of STATUS |
/// | `debug` | `false` | log requests and responses to `log_file` |
/// | `log_file` | none | append-only log file; never stdout |
/// | `del_queue_dir` | `/var/lib/kuryr/del-queue` | where DELs are queued when the daemon is down |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default = "default_daemon_socket")]
    pub daemon_socket: String,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_status_timeout")]
    pub status_timeout_seconds: f64,
    #[serde(default)]
    pub debug: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
    #[serde(default = "default_del_queue_dir")]
    pub del_queue_dir: String,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_daemon_socket() -> String {
    DEFAULT_DAEMON_SOCKET.to_owned()
}
fn default_del_queue_dir() -> String {
    DEFAULT_DEL_QUEUE_DIR.to_owned()
}
fn default_timeout() -> f64 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_status_timeout() -> f64 {
    DEFAULT_STATUS_TIMEOUT_SECONDS
}

impl NetConf {
    /// Parses stdin. Returns the typed config and the raw JSON value (forwarded as-is to
    /// the daemon).
    ///
    /// - not JSON, or not a JSON object: code 6;
    /// - `cniVersion`, `name` or `type` missing, empty or not a string: code 7;
    /// - `name` not matching `[a-zA-Z0-9][a-zA-Z0-9_.-]*`: code 7;
    /// - a kuryr field of the wrong type or out of range (timeouts: 1 ms to one day): code 7.
    ///
    /// Whether `cniVersion` is supported is checked by [`CniCommand::check_version`]
    /// (code 1), since the answer depends on the verb.
    pub fn parse(stdin: &[u8]) -> Result<(NetConf, Value), CniError> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::decoding("error decoding network config from stdin", e.to_string())
        })?;
        let conf = NetConf::from_value(&raw)?;
        Ok((conf, raw))
    }

    /// Like [`parse`](Self::parse), from an already decoded value (the daemon gets the
    /// config this way, in [`CniRequest::config`](crate::wire::CniRequest::config)).
    pub fn from_value(raw: &Value) -> Result<NetConf, CniError> {
        let obj = raw.as_object().ok_or_else(|| {
            CniError::decoding(
                "error decoding network config",
                "the network config is not a JSON object",
            )
        })?;
        for key in ["cniVersion", "name", "type"] {
            match obj.get(key) {
                None | Some(Value::Null) => {
                    return Err(CniError::invalid_config(
                        format!("missing {key} in network config"),
                        "",
                    ))
                }
                Some(Value::String(s)) if s.is_empty() => {
                    return Err(CniError::invalid_config(
                        format!("empty {key} in network config"),
                        "",
                    ))
                }
                Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(CniError::invalid_config(
                        format!("{key} in network config must be a string"),
                        format!("got {other}"),
                    ))
                }
            }
        }
        let conf: NetConf = serde_json::from_value(raw.clone())
            .map_err(|e| CniError::invalid_config("invalid network config", e.to_string()))?;
        validate_network_name(&conf.name)?;
        for (key, v) in [
            ("timeout_seconds", conf.timeout_seconds),
            ("status_timeout_seconds", conf.status_timeout_seconds),
        ] {
            if !(v.is_finite() && (MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&v)) {
                return Err(CniError::invalid_config(
                    format!("invalid {key} in network config"),
                    format!("{v} is not in [{MIN_TIMEOUT_SECONDS}, {MAX_TIMEOUT_SECONDS}]"),
                ));
            }
        }
        for (key, v) in [
            ("daemon_socket", &conf.daemon_socket),
            ("del_queue_dir", &conf.del_queue_dir),
        ] {
            if v.is_empty() {
                return Err(CniError::invalid_config(
                    format!("empty {key} in network config"),
                    "",
                ));
            }
        }
        Ok(conf)
    }

    /// The deadline for one verb: `status_timeout_seconds` for STATUS, `timeout_seconds`
    /// otherwise. Values were range-checked by [`from_value`](Self::from_value); an
    /// out-of-range value from a hand-built `NetConf` falls back to the default.
    pub fn timeout_for(&self, command: CniCommand) -> Duration {
        let (secs, default) = match command {
            CniCommand::Status => (self.status_timeout_seconds, DEFAULT_STATUS_TIMEOUT_SECONDS),
            _ => (self.timeout_seconds, DEFAULT_TIMEOUT_SECONDS),
        };
        let secs =
            if secs.is_finite() && (MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&secs) {
                secs
            } else {
                default
            };
        Duration::from_secs_f64(secs)
    }
}
