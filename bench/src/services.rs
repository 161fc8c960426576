//! `services`: Services through Octavia with the real kuryr-controller (release) on the local
//! stack (real Octavia API, ovn provider). No pods are needed: the backend is an HTTP server of
//! this process on the node's address on the pod network (NODE_PORT_IP, the way the
//! `kubernetes` Service's endpoint is the apiserver on the node), behind selector-less
//! Services with hand-written EndpointSlices, and the client is this process on the node,
//! which reaches ClusterIPs through the node's Neutron port and the router.
//!
//! * `service_first_connection`: Service created → first HTTP answer through its ClusterIP
//!   (the EndpointSlice exists already), one Service at a time.
//! * `endpoint_converged`: EndpointSlice patched → Octavia's pool lists exactly the new members
//!   (read from Octavia's status tree every 25 ms).
//! * `octavia_calls_per_endpoint_change`: member-changing Octavia calls the controller made per
//!   change (its own request counter), next to what upstream kuryr's algorithm makes for the
//!   same changes (`upstream_octavia_calls_per_endpoint_change`: one call per added or removed
//!   member, each preceded by a poll until the load balancer is ACTIVE: 2 per member), and all
//!   Octavia requests per change (reads included).

use crate::burst::{free_port, Controller};
use crate::results::Run;
use crate::stack::{kube_client, octavia, stack_env, state_file};
use crate::stats::Metric;
use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kuryr_core::crd::KuryrLoadBalancer;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Opts {
    pub controller_bin: PathBuf,
    /// Services created one after the other (first-connection samples).
    pub services: usize,
    /// EndpointSlice changes (convergence samples).
    pub changes: usize,
    pub timeout: Duration,
}

const MEMBER_WRITES: [&str; 3] = [
    r#"method="PUT",path="/v2/lbaas/pools/{id}/members""#,
    r#"method="POST",path="/v2/lbaas/pools/{id}/members""#,
    r#"method="DELETE",path="/v2/lbaas/pools/{id}/members/{id}""#,
];

/// An HTTP server answering `kuryr-bench` to every connection, on `ip`.
fn serve(ip: &str) -> Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0))
        .with_context(|| format!("listen on {ip} (the node's address on the pod network)"))?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 512];
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nkuryr-bench\n");
            });
        }
    });
    Ok(addr)
}

/// One HTTP GET through `vip:80`; `true` if the backend answered.
fn http_ok(vip: &str) -> bool {
    let Ok(addr) = format!("{vip}:80").parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("kuryr-bench")
}

fn member_writes(s: &crate::prom::Scrape) -> f64 {
    s.0.iter()
        .filter(|(k, _)| {
            k.starts_with("kuryr_openstack_requests_total")
                && MEMBER_WRITES.iter().any(|w| k.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

fn octavia_requests(s: &crate::prom::Scrape) -> f64 {
    s.0.iter()
        .filter(|(k, _)| {
            k.starts_with("kuryr_openstack_requests_total") && k.contains("/v2/lbaas/")
        })
        .map(|(_, v)| v)
        .sum()
}

fn slice(ns: &str, svc: &str, addrs: &[String], port: u16) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": format!("{svc}-1"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()
    }))?)
}

fn service(ns: &str, name: &str) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": {"kuryr-bench": "true"}},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))?)
}

/// The member addresses of the load balancer's (only) pool, as Octavia lists them.
async fn octavia_members(oct: &kuryr_openstack::Octavia, lb: &str) -> Result<BTreeSet<String>> {
    let t = oct.status_tree(lb).await?;
    Ok(t.listeners
        .iter()
        .flat_map(|l| l.pools.iter())
        .flat_map(|p| p.members.iter())
        .filter(|m| m.provisioning_status != "PENDING_DELETE")
        .map(|m| m.address.clone())
        .collect())
}

pub async fn run(o: &Opts, repo: &Path) -> Result<Run> {
    let mut run = Run::start(repo);
    let env = stack_env()?;
    let node_ip = std::fs::read_to_string(state_file("node-port.env"))
        .context("node-port.env (hack/stack/node-port.sh)")?
        .lines()
        .find_map(|l| l.strip_prefix("NODE_PORT_IP=").map(str::to_string))
        .context("NODE_PORT_IP")?;
    let backend = serve(&node_ip)?;
    let client = kube_client().await?;
    let oct = octavia().await?;
    let id = format!("{}", std::process::id());
    let ns = format!("kuryr-bench-svc-{id}");
    let nsapi: Api<Namespace> = Api::all(client.clone());
    nsapi
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": ns, "labels": {"kuryr-bench": "true"}}}),
            )?,
        )
        .await?;
    let conf = std::env::temp_dir().join(format!("kuryr-bench-svc-{id}.conf"));
    let base = std::fs::read_to_string(state_file("kuryr.conf"))?;
    std::fs::write(
        &conf,
        format!(
            "{base}\n[kubernetes]\nenabled_handlers = service,endpoints,kuryrloadbalancer\nendpoints_driver_octavia_provider = ovn\n\
             [octavia_defaults]\nlb_algorithm = SOURCE_IP_PORT\n"
        ),
    )?;
    let log = std::env::temp_dir().join(format!("kuryr-bench-svc-{id}.log"));
    let ctl = Controller::start(&o.controller_bin, &conf, &ns, &log, free_port()?)?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let klbs: Api<KuryrLoadBalancer> = Api::namespaced(client.clone(), &ns);
    let result = async {
        // Controller up (its metrics answer) before the clock starts.
        let t0 = Instant::now();
        while ctl.scrape().await.is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("kuryr-controller did not serve /metrics within 30 s (log: {})", log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // 1. Service created → first answer through its ClusterIP.
        let mut first = Vec::new();
        let mut failures = 0;
        for i in 0..o.services {
            let name = format!("s{i}");
            slices.create(&PostParams::default(), &slice(&ns, &name, std::slice::from_ref(&node_ip), backend.port())?).await?;
            let t = Instant::now();
            let created = svcs.create(&PostParams::default(), &service(&ns, &name)?).await?;
            let vip = created.spec.and_then(|s| s.cluster_ip).context("no clusterIP")?;
            let ok = loop {
                if http_ok(&vip) {
                    break true;
                }
                if t.elapsed() > o.timeout {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if ok {
                first.push(t.elapsed());
            } else {
                failures += 1;
                run.note(format!("{name} ({vip}): no answer within {:?}", o.timeout));
            }
        }
        run.metric(
            "service_first_connection",
            Metric::from_durations(&first, "Service created → first HTTP answer through its ClusterIP (from the node)")
                .with_errors(failures)
                .with_target(&[("p50", 2000.0)]),
        );

        // 2. Endpoint changes on s0: member sets of varying size.
        let lb = klbs
            .get("s0")
            .await?
            .status
            .and_then(|s| s.loadbalancer.get("id").and_then(|v| v.as_str()).map(String::from))
            .context("s0 has no load balancer in its status")?;
        let pool_ip = |k: usize| -> String { format!("10.244.250.{}", k + 1) };
        let sizes = [3usize, 10, 1, 6, 2, 8, 4, 12, 5, 1];
        let mut current: BTreeSet<String> = [node_ip.clone()].into();
        let mut converged = Vec::new();
        let (mut ours, mut all, mut upstream) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..o.changes {
            let n = sizes[c % sizes.len()];
            let mut want: Vec<String> = (0..n - 1).map(|k| pool_ip((k + c) % 40)).collect();
            want.push(node_ip.clone());
            let want_set: BTreeSet<String> = want.iter().cloned().collect();
            let diff = current.symmetric_difference(&want_set).count();
            let before = ctl.scrape().await?;
            let t = Instant::now();
            slices.patch("s0-1", &PatchParams::default(), &Patch::Merge(&slice(&ns, "s0", &want, backend.port())?)).await?;
            loop {
                if octavia_members(&oct, &lb).await? == want_set {
                    break;
                }
                if t.elapsed() > o.timeout {
                    bail!("change {c}: the pool did not converge within {:?}", o.timeout);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            converged.push(t.elapsed());
            // The controller writes the KuryrLoadBalancer status after Octavia: count its
            // requests once it is done (the status lists the new members).
            let t2 = Instant::now();
            loop {
                let k = klbs.get("s0").await?;
                let have: BTreeSet<String> = k
                    .status
                    .map(|s| s.members.iter().filter_map(|m| m["ip"].as_str().map(String::from)).collect())
                    .unwrap_or_default();
                if have == want_set || t2.elapsed() > Duration::from_secs(10) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let after = ctl.scrape().await?;
            ours.push(member_writes(&after) - member_writes(&before));
            all.push(octavia_requests(&after) - octavia_requests(&before));
            upstream.push(2.0 * diff as f64);
            current = want_set;
        }
        run.metric(
            "endpoint_converged",
            Metric::from_durations(&converged, "EndpointSlice patched → Octavia's pool has exactly the new members").with_target(&[("p50", 1000.0)]),
        );
        run.metric(
            "octavia_calls_per_endpoint_change",
            Metric::from_samples(&ours, "count", "member-changing Octavia calls per endpoint change (one pool)").with_target(&[("p50", 1.0)]),
        );
        run.metric(
            "upstream_octavia_calls_per_endpoint_change",
            Metric::from_samples(&upstream, "count", "upstream kuryr's algorithm for the same changes: per added/removed member one call and one ACTIVE poll"),
        );
        run.metric(
            "octavia_requests_per_endpoint_change",
            Metric::from_samples(&all, "count", "all Octavia requests of the controller per change (reads: find, listeners, status tree, ACTIVE polls)"),
        );
        run.checks = json!({"services": o.services, "answered": first.len(), "changes": o.changes, "node_ip": node_ip, "backend_port": backend.port()});
        let rss = ctl.rss_kib("VmRSS:").unwrap_or(0.0) / 1024.0;
        run.metric("controller_rss", Metric::from_samples(&[rss], "MiB", "controller VmRSS after the run"));
        Ok(())
    }
    .await;

    // Clean up: Services first (their finalizers need the controller), then the namespace.
    let _ = svcs
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        match klbs.list(&Default::default()).await {
            Ok(l) if l.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    ctl.stop();
    let _ = nsapi.delete(&ns, &DeleteParams::default()).await;
    let _ = std::fs::remove_file(&conf);
    let _ = env;
    result?;
    Ok(run)
}
