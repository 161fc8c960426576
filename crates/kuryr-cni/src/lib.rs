//! The `kuryr-cni` shim as a library: [`run::run`] is one whole CNI invocation (environment
//! and stdin in, stdout and exit code out); `main.rs` only wires it to the process. Split out
//! so that property tests and the cargo-fuzz targets (`fuzz/` at the workspace root) drive
//! the same code the binary runs. Dependencies stay std + serde + serde_json (static binary).
#![deny(unsafe_code)]

pub mod delqueue;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod log;
pub mod run;
