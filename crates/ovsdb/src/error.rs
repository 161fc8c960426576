//! Error type of the crate.

use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to ovsdb-server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint string could not be parsed.
    #[error(
        "invalid OVSDB endpoint {0:?} (expected unix:PATH, tcp:HOST:PORT or an absolute path)"
    )]
    InvalidEndpoint(String),

    /// Connecting to the server failed.
    #[error("cannot connect to OVSDB at {endpoint}: {source}")]
    Connect {
        /// Endpoint we tried, e.g. `unix:/var/run/openvswitch/db.sock`.
        endpoint: String,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Reading or writing the established connection failed.
    #[error("OVSDB connection I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The connection is closed (server went away or the client was dropped).
    #[error("OVSDB connection closed")]
    Disconnected,

    /// The server sent something we could not decode.
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),

    /// A JSON-RPC call returned a non-null `error`.
    #[error("OVSDB {method} failed: {error}")]
    Rpc {
        /// JSON-RPC method name.
        method: String,
        /// The `error` member, rendered as JSON.
        error: String,
    },

    /// A `transact` call returned an error for one operation (or at commit).
    #[error("OVSDB transaction failed at operation {index} ({op}): {error}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Transaction {
        /// Index of the failing operation; equal to the number of operations for commit-time errors.
        index: usize,
        /// Name of the failing operation (`insert`, ...) or `commit`.
        op: String,
        /// The `error` string, e.g. `constraint violation`.
        error: String,
        /// The optional `details` string.
        details: Option<String>,
    },

    /// No answer within the deadline.
    #[error("OVSDB {method} timed out after {timeout:?}")]
    Timeout {
        /// Method (or high-level operation) that timed out.
        method: String,
        /// The deadline that elapsed.
        timeout: Duration,
    },

    /// A row the operation depends on does not exist.
    #[error("{kind} {name:?} not found in OVSDB")]
    NotFound {
        /// Table-ish kind, e.g. `bridge`.
        kind: &'static str,
        /// Name that was looked up.
        name: String,
    },

    /// The database state does not allow the operation (e.g. port on another bridge).
    #[error("OVSDB conflict: {0}")]
    Conflict(String),

    /// vswitchd reported an error for an interface (ofport -1).
    #[error("interface {name} failed in vswitchd: {error}")]
    Interface {
        /// Interface name.
        name: String,
        /// Content of the Interface `error` column.
        error: String,
    },
}

impl Error {
    /// True for transaction errors that a retry of the whole read-modify-write may fix.
    pub fn is_retryable_conflict(&self) -> bool {
        matches!(self, Error::Transaction { error, .. }
            if error == "constraint violation" || error == "timed out" || error == "referential integrity violation")
    }
}
