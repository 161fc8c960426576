//! The daemon's socket API: [`routes`] parses, [`server`] serves.

pub mod routes;
pub mod server;
