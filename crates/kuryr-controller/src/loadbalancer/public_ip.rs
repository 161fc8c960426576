//! Floating IPs of `type: LoadBalancer` Services (`crate::loadbalancer::public_ip`; upstream
//! `lb_public_ip.py`): a floating IP from `[neutron_defaults] external_svc_net` on the load
//! balancer's VIP port, recorded in `status.service_pub_ip_info` (upstream's shape: `ip_id`,
//! `ip_addr`, `alloc_method`) and published in the Service's `status.loadBalancer.ingress`.
//!
//! * `spec.loadBalancerIP` names an existing, free floating IP: it is associated and recorded as
//!   `alloc_method: user`, and never deleted (only disassociated on release).
//! * Otherwise a floating IP already on the VIP port is reused (a crash between create and status
//!   write is adopted this way), else one is created (`alloc_method: pool`, its description names
//!   the cluster and the Service and it carries the cluster tag, so GC knows it), and deleted on
//!   release.
//! * cloud-provider-openstack's annotations: `floating-network-id` picks the network instead of
//!   `external_svc_net` (a floating IP on another network is replaced); `keep-floatingip` makes
//!   release disassociate ours instead of deleting it, and hand it over (cluster tag removed,
//!   description saying so), so GC leaves it alone.

use super::model;
use super::Lb;
use crate::runtime::error::Error;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kuryr_core::crd::KuryrLoadBalancer;
use kuryr_core::names::resource_description;
use kuryr_openstack::neutron::{FloatingIp, FloatingIpCreate, TagResource};
use kuryr_openstack::Query;
use serde_json::{json, Value};

/// `status.service_pub_ip_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicIp {
    pub id: String,
    pub address: String,
    /// `user` (the Service's `loadBalancerIP`; never deleted) or `pool` (ours).
    pub alloc: String,
}

impl PublicIp {
    pub fn from_status(klb: &KuryrLoadBalancer) -> Option<PublicIp> {
        let v = &klb.status.as_ref()?.service_pub_ip_info;
        Some(PublicIp {
            id: v.get("ip_id")?.as_str().filter(|s| !s.is_empty())?.to_string(),
            address: v.get("ip_addr").and_then(Value::as_str).unwrap_or_default().to_string(),
            alloc: v.get("alloc_method").and_then(Value::as_str).unwrap_or("pool").to_string(),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({"ip_id": self.id, "ip_addr": self.address, "alloc_method": self.alloc})
    }
}

fn ours(f: &FloatingIp, lb: &Lb, ns: &str, name: &str) -> bool {
    f.description == resource_description("floating IP", &lb.settings.cluster_name, ns, name)
}

/// The floating IP the KuryrLoadBalancer should have on `vip_port`, or `None` when it should
/// have none (not `type: LoadBalancer`, or no external network configured). Releases one that
/// is no longer wanted.
pub async fn ensure(klb: &KuryrLoadBalancer, ns: &str, name: &str, vip_port: &str, lb: &Lb) -> Result<Option<PublicIp>, Error> {
    let neutron = &lb.ctx.neutron;
    let current = PublicIp::from_status(klb);
    let wanted = klb.spec.type_.as_deref() == Some("LoadBalancer");
    let annotated = klb.spec.floating_network_id.clone().filter(|n| !n.is_empty());
    // The configured subnet belongs to the configured network only.
    let subnet = if annotated.is_some() { None } else { lb.settings.external_subnet.clone() };
    let Some(ext_net) = annotated.or_else(|| lb.settings.external_net.clone()).filter(|_| wanted) else {
        if let Some(c) = current {
            release(&c, klb.spec.keep_floating_ip, ns, name, lb).await?;
        }
        return Ok(None);
    };
    let ip = if let Some(user_ip) = klb.spec.lb_ip.as_deref() {
        let fips = neutron.list_floating_ips(&Query::new().eq("floating_ip_address", user_ip)).await?;
        let fip = fips.into_iter().next().ok_or_else(|| {
            Error::Invalid(format!(
                "loadBalancerIP {user_ip} is not a floating IP of the project: allocate it first (openstack floating ip create \
                 --floating-ip-address {user_ip} <external network>) or leave loadBalancerIP empty"
            ))
        })?;
        match fip.port_id.as_deref() {
            Some(p) if p == vip_port => {}
            Some(p) => {
                return Err(Error::Invalid(format!(
                    "loadBalancerIP {user_ip} is in use by Neutron port {p}: a user-supplied floating IP must be free"
                )))
            }
            None => {
                neutron.associate_floating_ip(&fip.id, Some(vip_port)).await?;
            }
        }
        if let Some(c) = current.as_ref().filter(|c| c.id != fip.id) {
            release(c, klb.spec.keep_floating_ip, ns, name, lb).await?;
        }
        PublicIp { id: fip.id, address: fip.floating_ip_address, alloc: "user".into() }
    } else {
        if let Some(c) = current.as_ref().filter(|c| c.alloc == "user") {
            // loadBalancerIP was removed: give the user's address back.
            release(c, false, ns, name, lb).await?;
        }
        // Ours already: keep its address, also across a replaced load balancer (new VIP port),
        // unless it is on another network than the one now asked for.
        let kept = match current.as_ref().filter(|c| c.alloc == "pool") {
            Some(c) => match neutron.get_floating_ip(&c.id).await {
                Ok(f) if f.floating_network_id == ext_net => Some(f),
                Ok(_) => {
                    tracing::info!(fip = %c.address, network = %ext_net, "floating IP is on another network than asked: replaced");
                    release(c, false, ns, name, lb).await?;
                    None
                }
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let on_port = match kept {
            Some(f) => vec![f],
            None => neutron
                .list_floating_ips(&Query::new().eq("port_id", vip_port))
                .await?
                .into_iter()
                .filter(|f| f.floating_network_id == ext_net)
                .collect(),
        };
        if let Some(f) = on_port.into_iter().next() {
            if f.port_id.as_deref() != Some(vip_port) {
                neutron.associate_floating_ip(&f.id, Some(vip_port)).await?;
            }
            let alloc =
                if ours(&f, lb, ns, name) || current.as_ref().is_some_and(|c| c.id == f.id && c.alloc == "pool") { "pool" } else { "user" };
            PublicIp { id: f.id, address: f.floating_ip_address, alloc: alloc.into() }
        } else {
            let req = FloatingIpCreate {
                floating_network_id: ext_net,
                port_id: Some(vip_port.to_string()),
                subnet_id: subnet,
                description: resource_description("floating IP", &lb.settings.cluster_name, ns, name),
                project_id: lb.settings.project.clone(),
                ..FloatingIpCreate::default()
            };
            let f = neutron.create_floating_ip(&req).await?;
            tracing::info!(fip = %f.floating_ip_address, id = %f.id, "floating IP created on the VIP port");
            // The cluster tag makes it GC's to find should its record be lost.
            neutron.set_tags(TagResource::FloatingIp, &f.id, &lb.settings.tags).await?;
            PublicIp { id: f.id, address: f.floating_ip_address, alloc: "pool".into() }
        }
    };
    Ok(Some(ip))
}

/// Floating IPs on a VIP port that this KuryrLoadBalancer made (a crash between create and
/// status write leaves one unrecorded): released with the load balancer.
pub async fn release_on_port(vip_port: &str, keep: bool, ns: &str, name: &str, lb: &Lb) -> Result<(), Error> {
    if vip_port.is_empty() {
        return Ok(());
    }
    for f in lb.ctx.neutron.list_floating_ips(&Query::new().eq("port_id", vip_port)).await? {
        let alloc = if ours(&f, lb, ns, name) { "pool" } else { "user" };
        release(&PublicIp { id: f.id, address: f.floating_ip_address, alloc: alloc.into() }, keep, ns, name, lb).await?;
    }
    Ok(())
}

/// Gives a floating IP back: deleted when we allocated it, disassociated when it is the user's.
/// `keep` (`loadbalancer.openstack.org/keep-floatingip`): ours is disassociated and handed over
/// instead (no cluster tag, a description saying whose it was), so neither we nor GC delete it.
pub async fn release(ip: &PublicIp, keep: bool, ns: &str, name: &str, lb: &Lb) -> Result<(), Error> {
    let neutron = &lb.ctx.neutron;
    if ip.alloc == "pool" && keep {
        match neutron.associate_floating_ip(&ip.id, None).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        neutron.set_tags::<&str>(TagResource::FloatingIp, &ip.id, &[]).await?;
        neutron
            .describe_floating_ip(
                &ip.id,
                &format!(
                    "kept after Service {ns}/{name} of kuryr-rs cluster {} ({})",
                    lb.settings.cluster_name,
                    model::cpo::KEEP_FLOATINGIP
                ),
            )
            .await?;
        tracing::info!(fip = %ip.address, "floating IP kept (keep-floatingip): disassociated and handed over");
        return Ok(());
    }
    if ip.alloc == "user" {
        match neutron.associate_floating_ip(&ip.id, None).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(fip = %ip.address, "user floating IP disassociated");
    } else {
        // `Ok(false)`: already gone.
        neutron.delete_floating_ip(&ip.id).await?;
        tracing::info!(fip = %ip.address, "floating IP deleted");
    }
    Ok(())
}

/// `status.loadBalancer.ingress` of the Service: `[{ip}]`, or none.
pub async fn publish(ns: &str, name: &str, ip: Option<&PublicIp>, lb: &Lb) -> Result<(), Error> {
    let svc = lb.services.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns));
    let have: Vec<String> = svc
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default();
    let want: Vec<String> = ip.map(|i| vec![i.address.clone()]).unwrap_or_default();
    if svc.is_none() || have == want {
        return Ok(());
    }
    lb.ctx.leader.ensure()?;
    let ingress: Vec<Value> = want.iter().map(|a| json!({"ip": a})).collect();
    let api: Api<Service> = Api::namespaced(lb.ctx.client.clone(), ns);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": {"loadBalancer": {"ingress": ingress}}})))
        .await
        .map_err(|e| Error::kube("write status.loadBalancer of", format!("service {ns}/{name}"), e))?;
    Ok(())
}
