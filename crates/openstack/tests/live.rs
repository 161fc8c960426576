//! Live tests against the local stack brought up by `hack/stack/up`.
//!
//! Run with `cargo test -p kuryr-openstack -- --include-ignored`. clouds.yaml comes from
//! `$KURYR_STACK_CLOUDS` (default `/var/lib/kuryr-stack/clouds.yaml`); clouds `kuryr`
//! (application credential) and `kuryr-password`. Every resource is named
//! `kuryr-rs-test-*` and removed at the end, also when a test fails.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use kuryr_openstack::neutron::{
    Direction, FixedIpRequest, NetworkCreate, PortCreate, PortUpdate, RouterCreate,
    RouterInterface, SecurityGroupCreate, SecurityGroupRuleCreate, SubnetCreate, SubnetPoolCreate,
    TagResource,
};
use kuryr_openstack::octavia::{ListenerCreate, LoadBalancerCreate, MemberSpec, PoolCreate};
use kuryr_openstack::{
    CloudConfig, Error, Fault, LbState, Neutron, Octavia, Query, Service, Session,
};
use tokio::time::Instant;

const DEFAULT_CLOUDS: &str = "/var/lib/kuryr-stack/clouds.yaml";
const LB_TIMEOUT: Duration = Duration::from_secs(180);

fn clouds_path() -> String {
    std::env::var("KURYR_STACK_CLOUDS").unwrap_or_else(|_| DEFAULT_CLOUDS.to_owned())
}

fn cloud(name: &str) -> CloudConfig {
    let path = clouds_path();
    CloudConfig::from_clouds_yaml(&path, name)
        .unwrap_or_else(|e| panic!("cloud {name} from {path}: {e}"))
}

async fn session(name: &str) -> Session {
    Session::from_cloud(&cloud(name))
        .await
        .unwrap_or_else(|e| panic!("authenticating as {name}: {e}"))
}

fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("kuryr-rs-test-{what}-{}-{nanos:x}", std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Resources to delete at the end of a test, newest first.
#[derive(Debug, Clone)]
enum Res {
    Network(String),
    Subnet(String),
    SubnetPool(String),
    Port(String),
    Router(String),
    RouterInterface(String, String),
    SecurityGroup(String),
    LoadBalancer(String),
}

struct Cleanup {
    neutron: Neutron,
    octavia: Octavia,
    items: Mutex<Vec<Res>>,
}

impl Cleanup {
    fn add(&self, r: Res) {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    async fn run(&self) -> Vec<String> {
        let items: Vec<Res> =
            std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failures = Vec::new();
        for r in items.into_iter().rev() {
            if let Err(e) = self.delete(&r).await {
                failures.push(format!("cleanup of {r:?}: {e}"));
            }
        }
        failures
    }

    async fn delete(&self, r: &Res) -> kuryr_openstack::Result<()> {
        let n = &self.neutron;
        match r {
            Res::LoadBalancer(id) => {
                if self.octavia.delete_load_balancer(id, true).await? {
                    self.octavia
                        .wait_for_lb(id, Instant::now() + LB_TIMEOUT)
                        .await?;
                }
            }
            Res::Port(id) => drop(n.delete_port(id).await?),
            Res::RouterInterface(router, subnet) => {
                match n
                    .remove_router_interface(router, &RouterInterface::subnet(subnet))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Res::Router(id) => drop(n.delete_router(id).await?),
            Res::SecurityGroup(id) => drop(n.delete_security_group(id).await?),
            Res::Subnet(id) => drop(retry_conflict(|| n.delete_subnet(id)).await?),
            Res::SubnetPool(id) => drop(retry_conflict(|| n.delete_subnetpool(id)).await?),
            Res::Network(id) => drop(retry_conflict(|| n.delete_network(id)).await?),
        }
        Ok(())
    }
}

/// Retries a delete while Neutron answers 409 (ports of a deleted LB may linger a moment).
async fn retry_conflict<F, Fut>(f: F) -> kuryr_openstack::Result<bool>
where
    F: Fn() -> Fut,
    Fut: Future<Output = kuryr_openstack::Result<bool>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e) if e.is_conflict() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Runs `body` in its own task (so a panic is caught), then always cleans up.
async fn with_cleanup<F, Fut>(session: Session, body: F)
where
    F: FnOnce(Neutron, Octavia, Arc<Cleanup>) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let neutron = Neutron::new(session.clone());
    let octavia = Octavia::new(session);
    let cleanup = Arc::new(Cleanup {
        neutron: neutron.clone(),
        octavia: octavia.clone(),
        items: Mutex::new(Vec::new()),
    });
    let outcome = tokio::spawn(body(neutron, octavia, cleanup.clone())).await;
    let failures = cleanup.run().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}\n(cleanup problems: {failures:?})"),
        Err(join) => match join.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task failed: {e}"),
        },
    }
    assert!(failures.is_empty(), "cleanup failed: {failures:#?}");
}

/// A fresh network + /24 subnet, registered for cleanup.
async fn network_with_subnet(
    neutron: &Neutron,
    cleanup: &Cleanup,
    what: &str,
    cidr: &str,
) -> Result<(String, String)> {
    let net = neutron
        .create_network(&NetworkCreate {
            name: unique(what),
            ..Default::default()
        })
        .await
        .context("create network")?;
    cleanup.add(Res::Network(net.id.clone()));
    let subnet = neutron
        .create_subnet(&SubnetCreate {
            network_id: net.id.clone(),
            name: unique(what),
            cidr: Some(cidr.to_owned()),
            ..Default::default()
        })
        .await
        .context("create subnet")?;
    cleanup.add(Res::Subnet(subnet.id.clone()));
    ensure!(
        subnet.cidr == cidr && subnet.network_id == net.id,
        "subnet {subnet:?}"
    );
    Ok((net.id, subnet.id))
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn token_with_application_credential() {
    let s = session("kuryr").await;
    let t = s.token().await.unwrap();
    assert!(!t.secret().is_empty());
    assert!(
        t.methods.iter().any(|m| m == "application_credential"),
        "{:?}",
        t.methods
    );
    assert!(t.project_id.is_some(), "{t:?}");
    let types: Vec<&str> = t.catalog.service_types().collect();
    assert!(
        types.contains(&"network") && types.contains(&"load-balancer"),
        "{types:?}"
    );
    assert!(
        t.remaining() > Duration::from_secs(60),
        "{:?}",
        t.remaining()
    );
    assert!(!t.needs_refresh());
    let net = s.endpoint(Service::Network).await.unwrap();
    let lb = s.endpoint(Service::LoadBalancer).await.unwrap();
    assert!(net.contains(":9696"), "{net}");
    assert!(lb.contains(":9876"), "{lb}");
    // Cached: the same token comes back.
    assert_eq!(s.token().await.unwrap().secret(), t.secret());
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn token_with_password() {
    let s = session("kuryr-password").await;
    let t = s.token().await.unwrap();
    assert!(t.methods.iter().any(|m| m == "password"), "{:?}", t.methods);
    assert_eq!(t.project_name.as_deref(), Some("k8s"));
    assert_eq!(t.user_name.as_deref(), Some("kuryr"));
    let ac = session("kuryr").await.project_id().await.unwrap();
    assert_eq!(
        s.project_id().await.unwrap(),
        ac,
        "both clouds should be scoped to k8s"
    );
    // A fresh token on demand.
    let t2 = s.reauthenticate().await.unwrap();
    assert!(!t2.secret().is_empty());
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn wrong_password_is_auth_error() {
    let mut c = cloud("kuryr-password");
    c.auth.password = Some("definitely-not-the-password".into());
    let e = Session::from_cloud(&c).await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(e.fault(), Fault::Kuryr);
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn list_networks() {
    let neutron = Neutron::new(session("kuryr").await);
    let nets = neutron.list_networks(&Query::new()).await.unwrap();
    for n in &nets {
        assert!(!n.id.is_empty());
    }
    let none = neutron
        .list_networks(&Query::new().eq("name", unique("absent")))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn ports_lifecycle() {
    with_cleanup(
        session("kuryr").await,
        |neutron, _octavia, cleanup| async move {
            let (net_id, subnet_id) =
                network_with_subnet(&neutron, &cleanup, "ports", "10.251.0.0/24").await?;
            let host = hostname();
            let device_id = unique("pod");
            let reqs: Vec<PortCreate> = ["a", "b"]
                .iter()
                .map(|n| PortCreate {
                    network_id: net_id.clone(),
                    name: format!("{}-{n}", unique("port")),
                    device_owner: "compute:kuryr".into(),
                    device_id: device_id.clone(),
                    binding_host_id: host.clone(),
                    fixed_ips: Some(vec![FixedIpRequest::subnet(&subnet_id)]),
                    admin_state_up: Some(true),
                    ..Default::default()
                })
                .collect();
            let ports = neutron
                .create_ports(&reqs)
                .await
                .context("bulk create ports")?;
            for p in &ports {
                cleanup.add(Res::Port(p.id.clone()));
            }
            ensure!(ports.len() == 2, "got {} ports", ports.len());
            for (p, r) in ports.iter().zip(&reqs) {
                ensure!(
                    p.name == r.name,
                    "bulk answer out of order: {} vs {}",
                    p.name,
                    r.name
                );
                ensure!(
                    p.binding_host_id == host,
                    "binding:host_id {:?}",
                    p.binding_host_id
                );
                ensure!(p.device_owner == "compute:kuryr");
                ensure!(
                    p.binding_vif_type == "ovs",
                    "vif_type {:?} (details {})",
                    p.binding_vif_type,
                    p.binding_vif_details
                );
                ensure!(
                    p.fixed_ips.len() == 1 && p.fixed_ips[0].subnet_id == subnet_id,
                    "{:?}",
                    p.fixed_ips
                );
                ensure!(
                    p.ip().is_some_and(|ip| ip.starts_with("10.251.0.")),
                    "{:?}",
                    p.ip()
                );
                ensure!(!p.mac_address.is_empty());
            }

            let updated = neutron
                .update_port(
                    &ports[0].id,
                    &PortUpdate {
                        name: Some(unique("renamed")),
                        description: Some("updated by kuryr-rs live test".into()),
                        ..Default::default()
                    },
                )
                .await
                .context("update port")?;
            ensure!(updated.description == "updated by kuryr-rs live test");
            ensure!(updated.binding_host_id == host);

            let tags = neutron
                .set_tags(TagResource::Port, &ports[1].id, &["kuryr-rs", "live-test"])
                .await
                .context("tag port")?;
            let mut sorted = tags.clone();
            sorted.sort();
            ensure!(sorted == ["kuryr-rs", "live-test"], "{tags:?}");
            neutron
                .add_tag(TagResource::Port, &ports[1].id, "extra")
                .await
                .context("add tag")?;
            let got = neutron.get_port(&ports[1].id).await?;
            ensure!(got.tags.len() == 3, "{:?}", got.tags);
            let tagged = neutron
                .list_ports(
                    &Query::new()
                        .eq("network_id", &net_id)
                        .tags(["kuryr-rs", "live-test"]),
                )
                .await?;
            ensure!(
                tagged.len() == 1 && tagged[0].id == ports[1].id,
                "{tagged:?}"
            );

            let ids: Vec<&str> = ports.iter().map(|p| p.id.as_str()).collect();
            let listed = neutron
                .list_ports(
                    &Query::new()
                        .ids(&ids)
                        .fields(["id", "status", "binding:vif_type"]),
                )
                .await
                .context("list by repeated id")?;
            ensure!(listed.len() == 2, "{listed:?}");
            for p in &listed {
                ensure!(ids.contains(&p.id.as_str()));
                ensure!(!p.status.is_empty(), "status missing: {p:?}");
                ensure!(p.binding_vif_type == "ovs");
                ensure!(
                    p.mac_address.is_empty(),
                    "fields= should have trimmed mac_address"
                );
            }
            let by_id = neutron.list_ports_by_id(&ids, &["id", "status"]).await?;
            ensure!(by_id.len() == 2);
            let same_device = neutron
                .list_ports(&Query::new().eq("device_id", &device_id))
                .await?;
            ensure!(same_device.len() == 2);

            for p in &ports {
                ensure!(
                    neutron.delete_port(&p.id).await?,
                    "first delete of {} found nothing",
                    p.id
                );
                ensure!(
                    !neutron.delete_port(&p.id).await?,
                    "second delete of {} should be a no-op",
                    p.id
                );
            }
            let e = neutron.get_port(&ports[0].id).await.unwrap_err();
            ensure!(e.is_not_found(), "{e}");
            ensure!(neutron.delete_subnet(&subnet_id).await?);
            ensure!(neutron.delete_network(&net_id).await?);
            ensure!(!neutron.delete_network(&net_id).await?);
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn subnetpool_router_and_security_groups() {
    with_cleanup(
        session("kuryr").await,
        |neutron, _octavia, cleanup| async move {
            let pool = neutron
                .create_subnetpool(&SubnetPoolCreate {
                    name: unique("pool"),
                    prefixes: vec!["10.252.0.0/16".into()],
                    default_prefixlen: Some(26),
                    ..Default::default()
                })
                .await
                .context("create subnetpool")?;
            cleanup.add(Res::SubnetPool(pool.id.clone()));
            ensure!(pool.default_prefixlen == Some(26), "{pool:?}");
            let pools = neutron
                .list_subnetpools(&Query::new().eq("name", &pool.name))
                .await?;
            ensure!(
                pools.len() == 1 && pools[0].prefixes == ["10.252.0.0/16"],
                "{pools:?}"
            );

            let net = neutron
                .create_network(&NetworkCreate {
                    name: unique("rnet"),
                    ..Default::default()
                })
                .await?;
            cleanup.add(Res::Network(net.id.clone()));
            let subnet = neutron
                .create_subnet(&SubnetCreate {
                    network_id: net.id.clone(),
                    subnetpool_id: Some(pool.id.clone()),
                    prefixlen: Some(28),
                    dns_nameservers: Some(vec!["10.96.0.10".into()]),
                    host_routes: Some(vec![kuryr_openstack::neutron::HostRoute {
                        destination: "10.96.0.0/12".into(),
                        nexthop: "10.252.0.1".into(),
                    }]),
                    ..Default::default()
                })
                .await
                .context("create subnet from pool")?;
            cleanup.add(Res::Subnet(subnet.id.clone()));
            ensure!(subnet.subnetpool_id.as_deref() == Some(pool.id.as_str()));
            ensure!(
                subnet.cidr.ends_with("/28") && subnet.cidr.starts_with("10.252."),
                "{}",
                subnet.cidr
            );
            ensure!(subnet.dns_nameservers == ["10.96.0.10"]);
            ensure!(subnet.host_routes.len() == 1);
            let got = neutron.get_subnet(&subnet.id).await?;
            ensure!(got.gateway_ip == subnet.gateway_ip);

            let router = neutron
                .create_router(&RouterCreate {
                    name: unique("router"),
                    ..Default::default()
                })
                .await?;
            cleanup.add(Res::Router(router.id.clone()));
            let info = neutron
                .add_router_interface(&router.id, &RouterInterface::subnet(&subnet.id))
                .await
                .context("add router interface")?;
            cleanup.add(Res::RouterInterface(router.id.clone(), subnet.id.clone()));
            ensure!(
                info.id == router.id && info.subnet_id == subnet.id && !info.port_id.is_empty(),
                "{info:?}"
            );
            let rports = neutron
                .list_ports(&Query::new().eq("device_id", &router.id))
                .await?;
            ensure!(rports.iter().any(|p| p.id == info.port_id), "{rports:?}");
            let removed = neutron
                .remove_router_interface(&router.id, &RouterInterface::subnet(&subnet.id))
                .await
                .context("remove router interface")?;
            ensure!(removed.port_id == info.port_id);

            let sg = neutron
                .create_security_group(&SecurityGroupCreate {
                    name: unique("sg"),
                    description: "kuryr-rs live test".into(),
                    ..Default::default()
                })
                .await?;
            cleanup.add(Res::SecurityGroup(sg.id.clone()));
            let rule = neutron
                .create_security_group_rule(&SecurityGroupRuleCreate {
                    security_group_id: sg.id.clone(),
                    direction: Direction::Ingress,
                    protocol: Some("tcp".into()),
                    port_range_min: Some(8080),
                    port_range_max: Some(8080),
                    remote_ip_prefix: Some("10.252.0.0/16".into()),
                    ..Default::default()
                })
                .await?;
            ensure!(rule.port_range_min == Some(8080) && rule.protocol.as_deref() == Some("tcp"));
            let bulk = neutron
                .create_security_group_rules(&[
                    SecurityGroupRuleCreate {
                        security_group_id: sg.id.clone(),
                        protocol: Some("udp".into()),
                        port_range_min: Some(53),
                        port_range_max: Some(53),
                        ..Default::default()
                    },
                    SecurityGroupRuleCreate {
                        security_group_id: sg.id.clone(),
                        protocol: Some("icmp".into()),
                        ..Default::default()
                    },
                ])
                .await?;
            ensure!(bulk.len() == 2);
            let rules = neutron
                .list_security_group_rules(&Query::new().eq("security_group_id", &sg.id))
                .await?;
            // 2 default egress rules + 3 of ours.
            ensure!(
                rules
                    .iter()
                    .filter(|r| r.direction == Direction::Ingress)
                    .count()
                    == 3,
                "{rules:?}"
            );
            ensure!(neutron.delete_security_group_rule(&rule.id).await?);
            let sgs = neutron
                .list_security_groups(&Query::new().ids([&sg.id]))
                .await?;
            ensure!(
                sgs.len() == 1 && sgs[0].security_group_rules.len() == rules.len() - 1,
                "{sgs:?}"
            );
            neutron
                .set_tags(TagResource::SecurityGroup, &sg.id, &["kuryr-rs"])
                .await?;
            ensure!(neutron.get_security_group(&sg.id).await?.tags == ["kuryr-rs"]);
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn octavia_providers_include_ovn() {
    let octavia = Octavia::new(session("kuryr").await);
    let providers = octavia.list_providers().await.unwrap();
    assert!(providers.iter().any(|p| p.name == "ovn"), "{providers:?}");
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn load_balancer_lifecycle() {
    with_cleanup(
        session("kuryr").await,
        |neutron, octavia, cleanup| async move {
            let (_net_id, subnet_id) =
                network_with_subnet(&neutron, &cleanup, "lb", "10.253.0.0/24").await?;
            let name = unique("lb");
            let lb = octavia
                .create_load_balancer(&LoadBalancerCreate {
                    name: name.clone(),
                    description: "kuryr-rs live test".into(),
                    vip_subnet_id: subnet_id.clone(),
                    provider: "ovn".into(),
                    tags: vec!["kuryr-rs".into()],
                    ..Default::default()
                })
                .await
                .context("create load balancer")?;
            cleanup.add(Res::LoadBalancer(lb.id.clone()));
            ensure!(
                lb.provider == "ovn" && lb.vip_subnet_id == subnet_id,
                "{lb:?}"
            );
            let deadline = || Instant::now() + LB_TIMEOUT;
            let active = match octavia.wait_for_lb(&lb.id, deadline()).await? {
                LbState::Active(lb) => lb,
                LbState::Deleted => anyhow::bail!("load balancer vanished while being created"),
            };
            ensure!(active.vip_address.starts_with("10.253.0."), "{active:?}");
            let listed = octavia
                .list_load_balancers(&Query::new().eq("name", &name))
                .await?;
            ensure!(listed.len() == 1 && listed[0].id == lb.id, "{listed:?}");

            let listener = octavia
                .create_listener(&ListenerCreate {
                    loadbalancer_id: lb.id.clone(),
                    protocol: "TCP".into(),
                    protocol_port: 80,
                    name: unique("listener"),
                    ..Default::default()
                })
                .await
                .context("create listener")?;
            octavia.wait_for_lb(&lb.id, deadline()).await?;
            let pool = octavia
                .create_pool(&PoolCreate {
                    protocol: "TCP".into(),
                    lb_algorithm: "SOURCE_IP_PORT".into(),
                    listener_id: listener.id.clone(),
                    name: unique("pool"),
                    ..Default::default()
                })
                .await
                .context("create pool")?;
            octavia.wait_for_lb(&lb.id, deadline()).await?;
            let members: Vec<MemberSpec> = [50, 51]
                .iter()
                .map(|i| MemberSpec {
                    address: format!("10.253.0.{i}"),
                    protocol_port: 8080,
                    subnet_id: subnet_id.clone(),
                    name: format!("member-{i}"),
                    ..Default::default()
                })
                .collect();
            octavia
                .replace_members(&pool.id, &members)
                .await
                .context("batch members")?;
            octavia.wait_for_lb(&lb.id, deadline()).await?;
            let got = octavia.list_members(&pool.id, &Query::new()).await?;
            ensure!(got.len() == 2, "{got:?}");
            octavia.replace_members(&pool.id, &members[..1]).await?;
            octavia.wait_for_lb(&lb.id, deadline()).await?;
            // The ovn provider reports the LB ACTIVE while a removed member can still be
            // listed as PENDING_DELETE for a moment: poll until the member set settles.
            let settle = Instant::now() + Duration::from_secs(30);
            let left = loop {
                let ms = octavia.list_members(&pool.id, &Query::new()).await?;
                if ms
                    .iter()
                    .all(|m| !m.provisioning_status.starts_with("PENDING_"))
                    || Instant::now() > settle
                {
                    break ms;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            ensure!(
                left.len() == 1 && left[0].address == "10.253.0.50",
                "{left:?}"
            );
            ensure!(octavia
                .get_pool(&pool.id)
                .await?
                .listeners
                .iter()
                .any(|l| l.id == listener.id));
            ensure!(octavia.get_listener(&listener.id).await?.protocol_port == 80);

            ensure!(
                octavia.delete_load_balancer(&lb.id, true).await?,
                "delete found nothing"
            );
            match octavia.wait_for_lb(&lb.id, deadline()).await? {
                LbState::Deleted => {}
                LbState::Active(lb) => anyhow::bail!("still there after cascade delete: {lb:?}"),
            }
            ensure!(!octavia.delete_load_balancer(&lb.id, true).await?);
            let e = octavia.get_load_balancer(&lb.id).await.unwrap_err();
            ensure!(e.is_not_found(), "{e}");
            Ok(())
        },
    )
    .await;
}

/// Re-authentication on a 401, against the real Keystone and Neutron (the fake proves the branch;
/// this proves it with keystonemiddleware's answer): the session's token is revoked by the admin
/// before Neutron ever validated it (so no middleware cache hides the revocation); the next
/// Neutron call is answered 401, the session issues a new token once and the call succeeds.
/// Keystone's token API on token `subject`, authorized by token `auth`: `DELETE` revokes,
/// `GET` validates (200 valid, 404 not).
async fn on_token(
    http: &reqwest::Client,
    method: reqwest::Method,
    auth_url: &str,
    auth: &str,
    subject: &str,
) -> reqwest::Response {
    http.request(method, format!("{auth_url}/auth/tokens"))
        .header("X-Auth-Token", auth)
        .header("X-Subject-Token", subject)
        .send()
        .await
        .expect("Keystone's token API answers")
}

#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn revoked_token_is_replaced_on_401() {
    let s = session("kuryr").await;
    let old = s.token().await.unwrap();
    let admin = session("admin").await;
    let admin_token = admin.token().await.unwrap();
    let http = reqwest::Client::new();
    // Keystone's token API on the old token, as the admin.
    let on_old = |method: reqwest::Method| {
        on_token(
            &http,
            method,
            s.auth_url(),
            admin_token.secret(),
            old.secret(),
        )
    };
    let revoke = on_old(reqwest::Method::DELETE).await;
    assert_eq!(
        revoke.status().as_u16(),
        204,
        "revoke: {:?}",
        revoke.text().await
    );
    // Keystone itself no longer accepts the old token (the control: the revocation took).
    let check = on_old(reqwest::Method::GET).await;
    assert_eq!(
        check.status().as_u16(),
        404,
        "the revoked token still validates"
    );
    let neutron = Neutron::new(s.clone());
    neutron
        .list_networks(&Query::new().eq("name", unique("absent")))
        .await
        .expect("a Neutron call after the revocation re-authenticates and succeeds");
    let new = s.token().await.unwrap();
    assert_ne!(
        new.secret(),
        old.secret(),
        "the session still holds the revoked token"
    );
}

/// Refresh near expiry, on real Keystone (the unit tests prove it against the in-process fake):
/// Keystone caps a token's expiry at its application credential's (CVE-2022-2447), so an
/// application credential made to expire in 40 s yields tokens that live at most 40 s. The
/// session uses its token until half its lifetime is left, then issues a new one before the old
/// one expires (Keystone still validates the old one then: the refresh is ahead of expiry, not
/// a reaction to a 401). Once the credential itself has expired, a call fails with an
/// authentication error that blames the credential (Kuryr's configuration), not OpenStack.
#[tokio::test]
#[ignore = "needs the local stack (hack/stack/up)"]
async fn token_is_refreshed_before_it_expires() {
    const LIFE: u64 = 40;
    let user = session("kuryr-password").await;
    let user_token = user.token().await.unwrap();
    let user_id = user_token.user_id.clone().expect("user id in the token");
    let expires = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{LIFE} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("date");
    let expires = String::from_utf8_lossy(&expires.stdout).trim().to_string();
    let http = reqwest::Client::new();
    let made: serde_json::Value = http
        .post(format!(
            "{}/users/{user_id}/application_credentials",
            user.auth_url()
        ))
        .header("X-Auth-Token", user_token.secret())
        .json(&serde_json::json!({"application_credential": {
            "name": unique("short"), "expires_at": expires,
            "description": "kuryr-rs live test: token refresh near expiry"}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("create a short-lived application credential")
        .json()
        .await
        .unwrap();
    let cred = &made["application_credential"];
    let (id, secret) = (
        cred["id"].as_str().expect("id").to_string(),
        cred["secret"].as_str().expect("secret").to_string(),
    );
    let (auth_url, user_secret) = (user.auth_url().to_string(), user_token.secret().to_string());
    let (http2, id2) = (http.clone(), id.clone());
    // Spawned: a failed assertion comes back as the task's error, after the clean-up below.
    let result = tokio::spawn(async move {
        let (http, id) = (http2, id2);
        let s = Session::from_cloud(&CloudConfig::application_credential(
            &auth_url, &id, &secret,
        ))
        .await
        .expect("authenticate with the short-lived credential");
        let neutron = Neutron::new(s.clone());
        let absent = Query::new().eq("name", unique("absent"));
        let first = s.token().await.unwrap();
        assert!(
            first.remaining() <= Duration::from_secs(LIFE + 1),
            "Keystone did not cap the token at the credential's expiry: {first:?}, {:?} left",
            first.remaining()
        );
        assert!(
            !first.needs_refresh(),
            "a fresh token already needs a refresh"
        );
        neutron
            .list_networks(&absent)
            .await
            .expect("a call with the first token");
        assert_eq!(
            s.token().await.unwrap().secret(),
            first.secret(),
            "the token is reused while young"
        );
        // Half its lifetime later the session must move on (waits on the token's own clock).
        let deadline = Instant::now() + Duration::from_secs(LIFE);
        while !first.needs_refresh() {
            assert!(
                Instant::now() < deadline,
                "the token never came close to expiry"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!first.is_expired(), "{:?}", first.remaining());
        neutron
            .list_networks(&absent)
            .await
            .expect("a call close to the first token's expiry");
        let second = s.token().await.unwrap();
        assert_ne!(
            second.secret(),
            first.secret(),
            "the session still uses a token about to expire"
        );
        // The old token was still good at Keystone: the refresh came before expiry.
        let check = on_token(
            &http,
            reqwest::Method::GET,
            &auth_url,
            &user_secret,
            first.secret(),
        )
        .await;
        assert_eq!(
            check.status().as_u16(),
            200,
            "the first token had expired before the refresh"
        );
        // Past the credential's expiry: no token can be had; the error says whose fault it is.
        while !second.is_expired() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // Deliberate: past Keystone's second-resolution expiry.
        let e = neutron
            .list_networks(&absent)
            .await
            .expect_err("a call after the credential expired");
        assert!(matches!(e, Error::Auth { .. }), "{e:?}");
        assert_eq!(e.fault(), Fault::Kuryr, "{e}");
        eprintln!("after the credential's expiry: {e}");
    })
    .await;
    let _ = http
        .delete(format!(
            "{}/users/{user_id}/application_credentials/{id}",
            user.auth_url()
        ))
        .header("X-Auth-Token", user.token().await.unwrap().secret())
        .send()
        .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
