//! The runtime every domain runs on (`crate::runtime`), one hop per module:
//! * [`run`]: watches, shared reflector stores, the controllers, servers; [`run::start`].
//! * [`wiring`]: what every domain's start repeats: a watch feeding its store and `/alive`, a
//!   controller reconciling on its watch, on triggers and on becoming leader.
//! * [`context`]: what every reconciler gets (clients, stores, settings), back-off.
//! * [`hooks`]: what GC's sweep asks of the domains ([`hooks::SweepHooks`], the pod path implements it),
//!   the groups a new pod port gets ([`hooks::PortGroups`], the policy domain implements it), and
//!   the pod/KuryrPort event taps ([`hooks::Hooks`]).
//! * [`error`]: the error type and its classification; [`policy`]: the shared error policy
//!   (count, log, back-off).
//! * [`cache`]: shared read cache of Neutron subnets and networks; [`batch`]: group commit of
//!   requests (bulk port creation, subport attachment).
//! * [`lease`]: leader election with fencing, the leader gate.
//! * [`health`], [`metrics`], [`events`]: probes, Prometheus metrics, Kubernetes Events.
//! * [`settings`]: kuryr.conf → clients and defaults.
//! * [`crds`]: CRD YAML and installation.

pub mod batch;
pub mod cache;
pub mod context;
pub mod crds;
pub mod error;
pub mod events;
pub mod finalizers;
pub mod health;
pub mod hooks;
pub mod lease;
pub mod metrics;
pub mod policy;
pub mod projects;
pub mod run;
pub mod settings;
pub mod wiring;
