//! The CNI error object and the error codes used by kuryr.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Error codes.
///
/// `0..=99` are reserved by the CNI specification; only the ones listed here are defined
/// (SPEC.md 1.1.0, "Error"). `100+` are free for plugins: kuryr's own codes are the
/// `KURYR_*` constants. [`INTERNAL`](codes::INTERNAL) (999) is the catch-all of the
/// reference Go library (`types.ErrInternal`), kept for the same purpose.
pub mod codes {
    /// Incompatible CNI version (the config's `cniVersion` is not supported, or too old
    /// for the command, e.g. CHECK below 0.4.0, GC/STATUS below 1.1.0).
    pub const INCOMPATIBLE_CNI_VERSION: u32 = 1;
    /// Unsupported field in the network configuration. The message names key and value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist; the runtime need not clean up.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables; the message names them.
    pub const INVALID_ENVIRONMENT_VARIABLES: u32 = 4;
    /// I/O failure, e.g. reading stdin.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not JSON, a prevResult cannot be decoded, ...).
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config (missing `name`/`cniVersion`/`type`, bad kuryr fields).
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later: a transient condition (daemon unreachable, deadline exceeded).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (cannot service ADD requests).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;

    /// kuryr: kuryr-daemon answered something that does not follow the wire protocol
    /// (malformed HTTP, a 2xx body that is not a `CniResponse`, an ADD without result).
    pub const KURYR_DAEMON_BAD_RESPONSE: u32 = 100;
    /// kuryr: kuryr-daemon answered a non-2xx status whose body is not a CNI error
    /// object; `details` carries the status line and the start of the body.
    pub const KURYR_DAEMON_HTTP_ERROR: u32 = 101;
    /// kuryr: the result returned by kuryr-daemon is invalid (bad CIDR, interface index
    /// out of range, ...), so it cannot be printed.
    pub const KURYR_INVALID_RESULT: u32 = 102;
    /// Internal error that should not happen (e.g. serialization failure).
    pub const INTERNAL: u32 = 999;

    /// Whether `code` may appear in an error a plugin prints: one the spec defines (1-7, 11,
    /// 50, 51) or a plugin's own (100 and up). 0 and the rest of 0-99 are reserved.
    pub fn is_spec_code(code: u32) -> bool {
        matches!(code, 1..=7 | 11 | 50 | 51) || code >= 100
    }
}

/// The CNI error object, printed on stdout with a non-zero exit code:
/// `{"cniVersion": "...", "code": N, "msg": "...", "details": "..."}`.
///
/// It is also the body of every non-2xx answer of kuryr-daemon (there `cniVersion` may be
/// omitted; the shim sets it to the version of the request before printing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Sets `cniVersion` (the version the error is reported in).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.cni_version = version.into();
        self
    }

    /// Compact JSON, key order `cniVersion, code, msg, details`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Serializing strings and an integer cannot fail; keep a hand-written fallback
            // anyway so that an error is always printable.
            format!("{{\"code\":{},\"msg\":\"internal error\"}}", self.code)
        })
    }

    /// Parses a daemon error body. Returns `None` unless the body is a JSON object with a
    /// non-zero numeric `code` and a string `msg`.
    pub fn from_body(body: &[u8]) -> Option<CniError> {
        let err: CniError = serde_json::from_slice(body).ok()?;
        (err.code != 0).then_some(err)
    }

    /// The HTTP status kuryr-daemon should use when answering with this error. The shim
    /// does not depend on it (any non-2xx with a `CniError` body is forwarded as-is); it
    /// only keeps logs and `curl` output meaningful.
    pub fn suggested_http_status(&self) -> u16 {
        match self.code {
            codes::UNKNOWN_CONTAINER => 404,
            codes::INCOMPATIBLE_CNI_VERSION
            | codes::UNSUPPORTED_FIELD
            | codes::INVALID_ENVIRONMENT_VARIABLES
            | codes::DECODING_FAILURE
            | codes::INVALID_NETWORK_CONFIG => 400,
            codes::TRY_AGAIN_LATER
            | codes::PLUGIN_NOT_AVAILABLE
            | codes::PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY => 503,
            _ => 500,
        }
    }

    pub fn incompatible_version(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INCOMPATIBLE_CNI_VERSION, msg, details)
    }
    pub fn invalid_env(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ENVIRONMENT_VARIABLES, msg, details)
    }
    pub fn io_failure(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::IO_FAILURE, msg, details)
    }
    pub fn decoding(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::DECODING_FAILURE, msg, details)
    }
    pub fn invalid_config(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_NETWORK_CONFIG, msg, details)
    }
    pub fn try_again_later(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::TRY_AGAIN_LATER, msg, details)
    }
    pub fn internal(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, msg, details)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
