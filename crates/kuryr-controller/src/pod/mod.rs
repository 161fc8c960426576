//! The pod path (`crate::pod`), one hop per module:
//! * [`context`]: [`context::PodContext`]: the runtime's context plus the pod path's state (port
//!   driver, activator, pools, fresh marks, nested-vlan trunks, [`timeline`] of stage times);
//!   implements GC's sweep hooks.
//! * [`pods`]: Pod → pod finalizer + KuryrPort (upstream `VIFHandler`).
//! * [`kuryrport`]: KuryrPort → the driver's port (adopt or create) → VIF in `status.vifs`; release
//!   on deletion (upstream `KuryrPortHandler`).
//! * [`driver`]: the port drivers side by side, chosen once from `pod_vif_driver`:
//!   [`driver::neutron`] (a port bound to the node, warm pools) and [`driver::nested`]
//!   (nested-vlan: the node VM's trunk, subports, per-trunk VLAN ids).
//! * [`ports`]: what the drivers and pools share (the request, description, tags, a plain
//!   delete, the port → VIF read through the cache).
//! * [`pool`]: warm pools of ports per node and network (`vif_pool_driver = neutron`).
//! * [`vif`]: Neutron port + network + subnets → the typed VIF (pure).
//! * [`activator`]: one batched Neutron poll for all ports waiting to become ACTIVE.
//! * [`standalone`]: KuryrPorts of standalone containers (podman, `ctr run --cni`), made by the
//!   operator without a Pod: checked, then wired like a pod's, never released as orphans.

pub mod activator;
pub mod context;
pub mod driver;
pub mod kuryrport;
pub mod pods;
pub mod pool;
pub mod ports;
pub mod standalone;
pub mod timeline;
pub mod vif;
