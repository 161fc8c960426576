//! CNI specification types (spec 0.3.0 to 1.1.0) and the wire protocol between the
//! `kuryr-cni` shim (exec'd by container runtimes) and `kuryr-daemon` (one per node).
//!
//! Dependencies: `serde` and `serde_json` only, so the shim stays small and static.
//!
//! # CNI types
//!
//! - [`CniCommand`]: the six verbs, their required environment and minimum version.
//! - [`CniVersion`], [`SUPPORTED_VERSIONS`] (`0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0`) and
//!   [`VersionInfo`] (the answer to `VERSION`).
//! - [`NetConf`]: stdin config with kuryr's fields (`daemon_socket`, `timeout_seconds`,
//!   `status_timeout_seconds`, `debug`, `log_file`, `del_queue_dir`); unknown keys are kept.
//! - [`CniResult`]: the ADD result in the internal 1.1.0 form, its conversion to every
//!   supported output version ([`CniResult::to_version`]), parsing of a `prevResult` of
//!   any supported version ([`CniResult::from_prev_result`]) and chaining
//!   ([`CniResult::chained`]).
//! - [`CniError`] and the error [`codes`]; [`CniArgs`] (`CNI_ARGS`); validators for
//!   container IDs, interface names and network names.
//!
//! # Wire protocol (v1)
//!
//! HTTP/1.1 over the unix stream socket named by the config's `daemon_socket` (default
//! `/run/kuryr/kuryr-daemon.sock`). Bodies are JSON (`Content-Type: application/json`).
//! The shim sends `Host: kuryr-daemon`, `Content-Length`, and `Connection: close` (one
//! request per connection); it reads responses framed by `Content-Length`,
//! `Transfer-Encoding: chunked`, or connection close, and skips `1xx` interim responses.
//!
//! ## `POST /v1/cni`
//!
//! Request body: [`CniRequest`]
//!
//! ```json
//! {"command":"ADD","container_id":"90c45da1...","netns":"/var/run/netns/cni-8c1f...",
//!  "ifname":"eth0","args":"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-a",
//!  "path":"/opt/cni/bin","config":{"cniVersion":"1.0.0","name":"kuryr","type":"kuryr-cni"}}
//! ```
//!
//! `command` is one of `ADD`, `DEL`, `CHECK`, `GC`, `STATUS` (VERSION is answered by the
//! shim). `config` is the complete stdin JSON.
//!
//! Answers:
//!
//! - **200** (any 2xx) with [`CniResponse`] `{"result": <CniResult or null>}`.
//!   ADD must carry `result` (1.1.0 form, no `cniVersion` needed):
//!   `{"result":{"interfaces":[{"name":"eth0","mac":"fa:16:3e:..","mtu":1450,
//!   "sandbox":"/var/run/netns/cni-.."}],"ips":[{"interface":0,"address":"10.0.0.5/24",
//!   "gateway":"10.0.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],
//!   "dns":{"nameservers":["10.0.0.2"]}}}`. The result describes only what kuryr created;
//!   the shim appends it behind the chained `prevResult` and prints it in the config's
//!   `cniVersion`. DEL, CHECK, GC, STATUS answer `{"result":null}` (an empty body is also
//!   accepted) and the shim prints nothing.
//! - **non-2xx** with a [`CniError`] body `{"code":N,"msg":"..","details":".."}`; the
//!   shim prints it as-is (setting `cniVersion`) and exits 1. Use the spec's codes where
//!   they fit: 3 unknown container, 7 bad config, **11 try again later** (e.g. the pod's
//!   port is not there yet), **50/51 for STATUS** when not ready; kuryr codes >= 100
//!   otherwise. [`CniError::suggested_http_status`] maps codes to a status; the shim does
//!   not depend on the status value. A non-2xx whose body is not a `CniError` becomes code
//!   [`codes::KURYR_DAEMON_HTTP_ERROR`] (101), or 50 for STATUS.
//!
//! Daemon obligations:
//! - ADD and DEL are idempotent per `(container_id, ifname)`: the shim's deadline
//!   (`timeout_seconds`, default 120 s) may expire while the daemon keeps working, and the
//!   runtime then retries (ADD) or calls DEL.
//! - DEL succeeds when the attachment, netns (`netns == ""`) or `prevResult` is missing.
//! - STATUS answers 2xx when ready to serve ADD, else `CniError` 50 (or 51).
//! - GC removes attachments not listed in `config["cni.dev/valid-attachments"]`
//!   ([`CniRequest::valid_attachments`]).
//!
//! ## `GET /v1/ready`
//!
//! `200 {"ready":true}` when the daemon can serve ADD, else `503
//! {"ready":false,"reason":".."}` ([`ReadyResponse`]). For probes and operators
//! (`curl --unix-socket /run/kuryr/kuryr-daemon.sock http://kuryr-daemon/v1/ready`); the
//! shim uses the STATUS verb instead.
//!
//! ## DEL queue
//!
//! When the daemon cannot be reached on DEL (connect fails, or the connection drops before
//! an answer), the shim must neither fail (the runtime would retry forever and block pod
//! removal) nor lose the delete. It writes a [`DelQueueEntry`] (`{"format":1,
//! "queued_at_unix_ms":..,"reason":"..","request":<CniRequest>}`) to
//! `<del_queue_dir>/<container_id>@<ifname>.json` (see [`queue_file_name`]; default dir
//! `/var/lib/kuryr/del-queue`, created `0700`, files `0600`), atomically (write
//! `.<name>.tmp.<pid>`, fsync, rename, fsync the directory), and exits 0.
//!
//! kuryr-daemon drains the directory at start-up, before serving requests: for each file
//! accepted by [`is_queue_file_name`] (others are temporaries of an interrupted write and
//! may be removed), parse it ([`DelQueueEntry::from_json`]), run the DEL, and remove the
//! file once the DEL succeeded. Because container IDs can be reused (ctr uses
//! `<namespace>-<name>`), the daemon must skip an entry whose `queued_at_unix_ms` is
//! older than the ADD of the attachment currently recorded for that key.
#![deny(unsafe_code)]

pub mod args;
pub mod command;
pub mod error;
pub mod netconf;
pub mod result;
pub mod validate;
pub mod version;
pub mod wire;

pub use args::CniArgs;
pub use command::CniCommand;
pub use error::{codes, CniError};
pub use netconf::{
    NetConf, DEFAULT_DAEMON_SOCKET, DEFAULT_DEL_QUEUE_DIR, DEFAULT_STATUS_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
};
pub use result::{CniResult, Dns, Interface, IpConfig, Route, VersionedResult};
pub use validate::{validate_container_id, validate_ifname, validate_network_name};
pub use version::{CniVersion, VersionInfo, SUPPORTED_VERSIONS};
pub use wire::{
    is_queue_file_name, queue_file_name, CniRequest, CniResponse, DelQueueEntry, ReadyResponse,
    CNI_ENDPOINT, READY_ENDPOINT,
};
