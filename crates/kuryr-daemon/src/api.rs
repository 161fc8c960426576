//! The daemon's socket API: [`routes`] parses, [`server`] serves.

#[doc(hidden)]
pub mod fuzzing;
pub mod routes;
pub mod server;
