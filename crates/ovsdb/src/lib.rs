//! Minimal OVSDB (RFC 7047) JSON-RPC client for kuryr-daemon.
//!
//! [`Client`] is the protocol layer (transact, monitor, echo); [`Ovs`] is the
//! Open_vSwitch-database API used to plug pod interfaces into bridges.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod endpoint;
pub mod error;
pub mod framing;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzzing;
pub mod monitor;
pub mod op;
pub mod ovs;
pub mod value;

pub use client::{Client, DEFAULT_TIMEOUT};
pub use endpoint::{Endpoint, DEFAULT_ENDPOINT};
pub use error::{Error, Result};
pub use monitor::{Monitor, MonitorRequest, RowUpdate, TableUpdates};
pub use op::{Condition, Function, Mutation, Mutator, OpResult, Operation, WaitUntil};
pub use ovs::{AddPortOutcome, BridgeInfo, InterfaceInfo, Ovs, PortInfo, PortSpec, OVS_DB};
pub use value::{Atom, Row, Uuid, Value};
