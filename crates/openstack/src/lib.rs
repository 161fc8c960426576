//! Thin async OpenStack client for kuryr-rs: Keystone v3 sessions, Neutron and Octavia.
//!
//! ```no_run
//! # async fn f() -> kuryr_openstack::Result<()> {
//! use kuryr_openstack::{CloudConfig, Neutron, Query, Session};
//! let cloud = CloudConfig::from_clouds_yaml("/etc/openstack/clouds.yaml", "kuryr")?;
//! let session = Session::from_cloud(&cloud).await?;
//! let neutron = Neutron::new(session.clone());
//! let nets = neutron.list_networks(&Query::new()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keystone;
pub mod metrics;
pub mod neutron;
pub mod octavia;
pub mod query;
mod resource;
mod serde_util;
pub mod session;

#[cfg(any(test, feature = "test-support"))]
pub mod fake;

pub use config::{AuthConfig, AuthType, CloudConfig, CloudsFile, Interface};
pub use error::{Error, Fault, Result};
pub use keystone::{Catalog, CatalogEntry, Endpoint, Token};
pub use metrics::{Metrics, MetricsSink, RequestCounters, RequestRecord};
pub use neutron::Neutron;
pub use octavia::{LbState, Octavia};
pub use query::Query;
pub use reqwest::{Method, StatusCode};
pub use session::{Request, Response, Service, Session, SessionBuilder};
