//! Port drivers (`[kubernetes] pod_vif_driver`): how a pod's Neutron port is made, found again
//! and released. [`PortDriver`] is chosen once from the settings and held in
//! [`crate::pod::context::PodContext`]; the KuryrPort reconciler calls its phases and never asks
//! which driver it is:
//! * acquire: adopt the pod's port or make it, ready to be built as a VIF ([`Acquired`], with the
//!   binding the driver chose, if any);
//! * adoption candidates: on cleanup, the pod's ports a crash may have left unrecorded;
//! * release: what becomes of a pod's port when its KuryrPort goes.
//!
//! One hop per driver:
//! * [`neutron`] (`neutron-vif`): a port bound to the pod's node, keyed by `device_id` = pod UID;
//!   warm pools ([`crate::pod::pool`]) claim and recycle.
//! * [`nested`] (`nested-vlan`): pods in VMs: a subport of the node VM's trunk with its VLAN id,
//!   keyed by its description; detached from the trunk, then deleted.

pub mod nested;
pub mod neutron;

use crate::pod::context::PodContext;
use crate::pod::ports::{Acquired, PodPortRequest};
use crate::runtime::error::Error;
use crate::runtime::settings::{PodVif, Settings};
use std::collections::BTreeSet;

/// The driver of the pods' ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortDriver {
    /// `neutron-vif`: [`neutron`].
    Neutron,
    /// `nested-vlan`: [`nested`].
    NestedVlan,
}

impl PortDriver {
    /// The driver `[kubernetes] pod_vif_driver` names.
    pub fn from_settings(s: &Settings) -> PortDriver {
        match s.pod_vif {
            PodVif::Neutron => PortDriver::Neutron,
            PodVif::NestedVlan => PortDriver::NestedVlan,
        }
    }

    /// Adopts the pod's port or makes one (checks the leader gate before every write).
    pub async fn acquire(self, ctx: &PodContext, req: &PodPortRequest) -> Result<Acquired, Error> {
        match self {
            PortDriver::Neutron => neutron::acquire(ctx, req).await,
            PortDriver::NestedVlan => nested::acquire(ctx, req).await,
        }
    }

    /// The ids of the pod's ports a previous attempt may have left without recording them.
    pub async fn adoption_candidates(self, ctx: &PodContext, req: &PodPortRequest) -> Result<BTreeSet<String>, Error> {
        let ids = match self {
            PortDriver::Neutron => neutron::adoption_candidates(ctx, &req.pod_uid).await?,
            PortDriver::NestedVlan => nested::adoption_candidates(ctx, req).await?,
        };
        Ok(ids.into_iter().collect())
    }

    /// Releases a pod's port whose KuryrPort is going (`node`: the pod's, `pod_uid`: its UID);
    /// `Ok(false)` if it was already gone. neutron-vif: back into the node's warm pool if there is
    /// room, else deleted — unless the pool gave it to another pod meanwhile (see
    /// [`crate::pod::pool::recycle`]); nested-vlan: detached from its trunk, then deleted.
    pub async fn release(self, ctx: &PodContext, port_id: &str, node: &str, pod_uid: &str) -> Result<bool, Error> {
        match self {
            PortDriver::Neutron => neutron::release_or_recycle(ctx, port_id, pod_uid).await,
            PortDriver::NestedVlan => nested::release(ctx, port_id, Some(node)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_from_pod_vif_driver() {
        let mut s = Settings::defaults();
        s.pod_vif = PodVif::Neutron;
        assert_eq!(PortDriver::from_settings(&s), PortDriver::Neutron);
        s.pod_vif = PodVif::NestedVlan;
        assert_eq!(PortDriver::from_settings(&s), PortDriver::NestedVlan);
    }
}
