//! Shared read cache of Neutron subnets and networks (`crate::runtime::cache`), used by every
//! domain that builds VIFs or protects the pod network.

use crate::runtime::error::Error;
use kuryr_openstack::neutron::{Network, Subnet};
use kuryr_openstack::Neutron;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Subnets and networks by id. They rarely change; entries expire after a TTL so MTU or
/// host-route changes are picked up.
#[derive(Debug)]
pub struct NeutronCache {
    ttl: Duration,
    subnets: Mutex<HashMap<String, (Instant, Arc<Subnet>)>>,
    networks: Mutex<HashMap<String, (Instant, Arc<Network>)>>,
}

fn cached<T>(map: &Mutex<HashMap<String, (Instant, Arc<T>)>>, id: &str, ttl: Duration) -> Option<Arc<T>> {
    let g = map.lock().unwrap_or_else(|e| e.into_inner());
    g.get(id).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
}

fn store<T>(map: &Mutex<HashMap<String, (Instant, Arc<T>)>>, id: &str, v: T) -> Arc<T> {
    let v = Arc::new(v);
    map.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), (Instant::now(), v.clone()));
    v
}

impl NeutronCache {
    pub fn new(ttl: Duration) -> NeutronCache {
        NeutronCache { ttl, subnets: Mutex::default(), networks: Mutex::default() }
    }

    pub async fn subnet(&self, neutron: &Neutron, id: &str) -> Result<Arc<Subnet>, Error> {
        if let Some(s) = cached(&self.subnets, id, self.ttl) {
            return Ok(s);
        }
        Ok(store(&self.subnets, id, neutron.get_subnet(id).await?))
    }

    pub async fn network(&self, neutron: &Neutron, id: &str) -> Result<Arc<Network>, Error> {
        if let Some(n) = cached(&self.networks, id, self.ttl) {
            return Ok(n);
        }
        Ok(store(&self.networks, id, neutron.get_network(id).await?))
    }
}
