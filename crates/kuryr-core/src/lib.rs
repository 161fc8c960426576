//! kuryr-rs domain model shared by the controller and the daemon.
//!
//! * [`vif`]: the VIF (a Neutron port as a pod interface) in the project's typed form, and the
//!   reader for the os-vif versioned-object form that upstream kuryr-kubernetes wrote into
//!   `KuryrPort.status.vifs`, so pods wired by upstream can still be CHECKed and DELeted.
//! * [`crd`]: the four `openstack.org/v1` custom resources, wire-compatible with upstream.
//! * [`names`]: finalizers, labels and annotations (same strings as upstream).
//! * [`config`]: `kuryr.conf` (oslo.config INI) into typed, validated settings.
//! * [`tls`]: TLS failures (a certificate no trusted CA vouches for) found in error chains.
#![forbid(unsafe_code)]

pub mod config;
pub mod crd;
#[doc(hidden)]
pub mod fuzzing;
pub mod names;
pub mod tls;
pub mod vif;
