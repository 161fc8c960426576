//! `policy`: NetworkPolicy enforcement with the real kuryr-controller and kuryr-daemon (release)
//! on the local stack, at scale: `pods` busybox pods through kubelet (10 servers `s<i>` labelled
//! `app=s<i>` serving TCP 8080, the rest clients labelled `role=c<i>`, one probe pod) and one
//! NetworkPolicy per server group (`app=s<i>` accepts 8080 only from `role=c<i>`).
//!
//! Every time is observed by real traffic from inside a pod's network namespace: this process
//! enters the netns (from the daemon's attachment record) and opens a new TCP connection to the
//! server every 20 ms; "enforced" is the start of the first attempt with the wanted outcome
//! (for a deny: the first of 10 failed attempts in a row).
//!
//! * `policy_enforced_label_change`: the probe pod relabelled into a peer set → first accepted
//!   connection (and `policy_enforced_label_removal`: relabelled out → first refused one);
//! * `policy_enforced_new_pod`: a new client pod's interface plugged (its attachment record) →
//!   first accepted connection to its group's server;
//! * `policy_enforced_edit`: a policy edited in place to admit the probe's label → first
//!   accepted connection;
//! * `neutron_calls_per_pod_event`: Neutron requests the controller made for one label change
//!   (its own request counter), for peer sets of different sizes (constant is the goal);
//! * `floor_address_group_update`: the same change made by hand, one Neutron address-group
//!   update straight to the API → first accepted connection: what OVN itself needs, the limit
//!   kuryr-rs's figures are read against (same run, same stack).

use crate::burst::{free_port, Controller};
use crate::results::Run;
use crate::stack::{kube_client, neutron, stack_env, state_file};
use crate::stats::Metric;
use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kuryr_core::crd::KuryrNetworkPolicy;
use kuryr_netplumb::Netns;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Opts {
    pub controller_bin: PathBuf,
    pub daemon_bin: PathBuf,
    pub cni_bin: PathBuf,
    /// Pods in all (servers, clients, the probe).
    pub pods: usize,
    /// NetworkPolicies (= server groups).
    pub policies: usize,
    /// Samples per measured event.
    pub samples: usize,
    /// Give up on one event after this long.
    pub timeout: Duration,
}

/// Between two connection attempts.
const EVERY: Duration = Duration::from_millis(20);
/// One attempt's connect timeout (RTT on the stack is a few ms).
const CONNECT: Duration = Duration::from_millis(400);
/// Failed attempts in a row that make a deny.
const DENIED_RUN: usize = 10;
const PORT: u16 = 8080;

/// The kuryr-daemon as the node's CNI (socket, conflist), like the e2e tests run it.
struct NodeDaemon(Child);

impl NodeDaemon {
    fn start(o: &Opts, conf: &Path, dir: &Path, node: &str) -> Result<NodeDaemon> {
        let log = std::fs::File::create(dir.join("kuryr-daemon.log"))?;
        let child = Command::new(&o.daemon_bin)
            .arg("--config-file")
            .arg(conf)
            .arg("--kubeconfig")
            .arg(state_file("kubeconfig"))
            .args(["--node-name", node, "--cni-bin-dir", "/opt/cni/bin"])
            .arg("--install-cni-from")
            .arg(&o.cni_bin)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", o.daemon_bin.display()))?;
        Ok(NodeDaemon(child))
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon removes its conflist.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn busybox(ns: &str, name: &str, labels: Value, server: bool) -> Result<Pod> {
    let cmd = if server {
        json!([
            "/bin/sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
        ])
    } else {
        json!(["sleep", "3600"])
    };
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "localhost/kuryr/busybox:1.35",
                                 "imagePullPolicy": "Never", "command": cmd}]}
    }))?)
}

fn policy(ns: &str, i: usize, roles: &[String]) -> Result<NetworkPolicy> {
    let from: Vec<Value> = roles
        .iter()
        .map(|r| json!({"podSelector": {"matchLabels": {"role": r}}}))
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": format!("s{i}")}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": PORT}]}]}
    }))?)
}

/// The netns path and state of `ns/pod`'s attachment, from the daemon's records.
fn attachment(state: &Path, ns: &str, pod: &str) -> Option<(String, String)> {
    let dir = std::fs::read_dir(state.join("attachments")).ok()?;
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|v| v["podNamespace"] == ns && v["podName"] == pod)
        .max_by_key(|v| v["createdUnixMs"].as_u64().unwrap_or(0))
        .and_then(|v| {
            Some((
                v["netns"].as_str()?.to_owned(),
                v["state"].as_str()?.to_owned(),
            ))
        })
}

/// From inside `netns`: a new connection to `to` every [`EVERY`] until the outcome is `want`
/// (accepted; or refused [`DENIED_RUN`] times in a row). Returns the start of the deciding
/// attempt, measured from `t0`.
fn observe(
    netns: &Netns,
    to: SocketAddr,
    want: bool,
    t0: Instant,
    limit: Duration,
) -> Result<Duration> {
    netns.run(|| -> Result<Duration> {
        let (tx, rx) = mpsc::channel::<(usize, Duration, bool)>();
        let mut outcomes: Vec<Option<(Duration, bool)>> = Vec::new();
        let end = Instant::now() + limit;
        loop {
            // Threads made here share this thread's netns.
            let (i, tx) = (outcomes.len(), tx.clone());
            outcomes.push(None);
            let started = t0.elapsed();
            std::thread::spawn(move || {
                let ok = TcpStream::connect_timeout(&to, CONNECT).is_ok();
                let _ = tx.send((i, started, ok));
            });
            let next = Instant::now() + EVERY;
            while let Ok((i, at, ok)) =
                rx.recv_timeout(next.saturating_duration_since(Instant::now()))
            {
                outcomes[i] = Some((at, ok));
                if want && ok {
                    return Ok(at);
                }
            }
            if !want {
                // The first run of DENIED_RUN resolved failures, all earlier attempts resolved.
                let mut run = 0;
                for o in &outcomes {
                    match o {
                        None => break,
                        Some((_, true)) => run = 0,
                        Some((_, false)) => {
                            run += 1;
                            if run == DENIED_RUN {
                                let first = outcomes.iter().flatten().rev().nth(DENIED_RUN - 1);
                                return first
                                    .map(|(at, _)| *at)
                                    .ok_or_else(|| anyhow!("no outcome"));
                            }
                        }
                    }
                }
            }
            if Instant::now() > end {
                bail!(
                    "{to}: still not {} after {limit:?}",
                    if want { "accepted" } else { "refused" }
                );
            }
        }
    })
}

/// Neutron requests the controller has made so far (an error if it reports none at all: a
/// controller that made policies has called Neutron, so a missing series is a wrong name).
async fn neutron_calls(c: &Controller) -> Result<f64> {
    let s = c.scrape().await?;
    let series: Vec<f64> = s
        .0
        .iter()
        .filter(|(k, _)| {
            k.starts_with("kuryr_openstack_requests_total{") && k.contains(r#"service="neutron""#)
        })
        .map(|(_, v)| *v)
        .collect();
    if series.is_empty() {
        bail!("the controller's /metrics has no kuryr_openstack_requests_total{{service=\"neutron\"}} series");
    }
    Ok(series.iter().sum())
}

/// Waits until the controller's Neutron request counter has not moved for `quiet`; returns it.
async fn settled_calls(c: &Controller, quiet: Duration) -> Result<f64> {
    let mut last = neutron_calls(c).await?;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = neutron_calls(c).await?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(last)
}

async fn wait_ready(pods: &Api<Pod>, names: &[String], limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    loop {
        let list = pods.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| names.iter().any(|n| Some(n) == p.metadata.name.as_ref()))
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == names.len() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{ready}/{} pods Ready after {limit:?}", names.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

async fn label(pods: &Api<Pod>, name: &str, role: &str) -> Result<()> {
    pods.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"role": role}}})),
    )
    .await
    .with_context(|| format!("relabel {name}"))?;
    Ok(())
}

pub async fn run(o: &Opts, repo: &Path) -> Result<Run> {
    let mut run = Run::start(repo);
    let others = crate::guard::running_controllers();
    if !others.is_empty()
        || !Command::new("pgrep")
            .args(["-x", "kuryr-daemon"])
            .output()?
            .stdout
            .is_empty()
    {
        bail!("another kuryr-controller or kuryr-daemon runs on this node ({others:?}): this benchmark needs the node's CNI to itself");
    }
    let env = stack_env()?;
    let client = kube_client().await?;
    let neutron = neutron().await?;
    let node = env["STACK_HOST"].clone();
    let run_id = format!("{}", std::process::id());
    let ns = format!("kb-pol-{run_id}");
    let dir = tempfile::tempdir()?;
    let ext = neutron
        .get_subnet(&env["EXT_SUBNET_ID"])
        .await
        .context("external subnet")?;
    let conf = dir.path().join("kuryr.conf");
    std::fs::write(
        &conf,
        format!(
            "{}\n[kubernetes]\nenabled_handlers = vif,kuryrport,policy,kuryrnetworkpolicy\n[network_policy]\nallow_cidrs = {}\n",
            std::fs::read_to_string(state_file("kuryr.conf"))?,
            ext.cidr
        ),
    )?;
    let controller = Controller::start(
        &o.controller_bin,
        &conf,
        &ns,
        &dir.path().join("kuryr-controller.log"),
        free_port()?,
    )?;
    let daemon = NodeDaemon::start(o, &conf, dir.path(), &node)?;
    let state = dir.path().join("state");
    let result = measure(o, &mut run, &client, &neutron, &ns, &state, &controller).await;
    if let Err(e) = &result {
        run.note(format!("failed: {e:#}"));
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    // Give the pods' DELs (kubelet → kuryr-cni → this daemon) and the controller's cleanup time
    // before both stop: wait for the namespace to go.
    let end = Instant::now() + Duration::from_secs(180);
    while Api::<Namespace>::all(client.clone())
        .get_opt(&ns)
        .await?
        .is_some()
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(daemon);
    controller.stop();
    if result.is_err() {
        let kept = dir.keep();
        eprintln!("logs and the daemon's state kept in {}", kept.display());
    }
    result.map(|()| run)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    o: &Opts,
    run: &mut Run,
    client: &kube::Client,
    neutron: &kuryr_openstack::Neutron,
    ns: &str,
    state: &Path,
    controller: &Controller,
) -> Result<()> {
    let groups = o.policies.max(2);
    let clients = o.pods.saturating_sub(groups + 1).max(groups);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await
        .context("create namespace")?;
    // Node ready = the daemon wrote the conflist (kubelet then runs pods).
    let end = Instant::now() + Duration::from_secs(60);
    while !Path::new("/etc/cni/net.d/10-kuryr.conflist").exists() {
        if Instant::now() > end {
            bail!("kuryr-daemon wrote no conflist within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    // Peer sets of different sizes: group 0 has one client, the others share the rest.
    let role_of = |j: usize| {
        if j == 0 {
            0
        } else {
            1 + (j - 1) % (groups - 1)
        }
    };
    let mut names = Vec::new();
    for i in 0..groups {
        names.push(format!("s{i}"));
        pods.create(
            &PostParams::default(),
            &busybox(ns, &format!("s{i}"), json!({"app": format!("s{i}")}), true)?,
        )
        .await?;
    }
    for j in 0..clients {
        names.push(format!("c{j}"));
        pods.create(
            &PostParams::default(),
            &busybox(
                ns,
                &format!("c{j}"),
                json!({"role": format!("c{}", role_of(j))}),
                false,
            )?,
        )
        .await?;
    }
    names.push("probe".into());
    pods.create(
        &PostParams::default(),
        &busybox(ns, "probe", json!({"role": "none"}), false)?,
    )
    .await?;
    let t = Instant::now();
    wait_ready(&pods, &names, Duration::from_secs(900)).await?;
    run.note(format!(
        "{} pods Ready through kubelet in {:.1} s",
        names.len(),
        t.elapsed().as_secs_f64()
    ));
    for i in 0..groups {
        policies
            .create(&PostParams::default(), &policy(ns, i, &[format!("c{i}")])?)
            .await?;
    }
    let mut servers = Vec::new();
    for i in 0..groups {
        let ip =
            pod_ip(&pods.get(&format!("s{i}")).await?).ok_or_else(|| anyhow!("s{i} has no IP"))?;
        servers.push(SocketAddr::new(ip.parse()?, PORT));
    }
    let server = |i: usize| -> Result<SocketAddr> { Ok(servers[i]) };
    let probe_ns = Netns::open(
        attachment(state, ns, "probe")
            .ok_or_else(|| anyhow!("no attachment record of the probe pod"))?
            .0,
    )?;
    // Every policy in force: the probe is refused by every group.
    for i in 0..groups {
        observe(&probe_ns, server(i)?, false, Instant::now(), o.timeout)
            .with_context(|| format!("policy p{i} never denied the probe"))?;
    }
    let first_client = Netns::open(
        attachment(state, ns, "c0")
            .ok_or_else(|| anyhow!("no attachment record of c0"))?
            .0,
    )?;
    observe(&first_client, server(0)?, true, Instant::now(), o.timeout)
        .context("c0 never reached s0")?;

    // Label changes (into and out of a peer set), with the controller's Neutron calls.
    let (mut into, mut out_of, mut calls_small, mut calls_large) = (vec![], vec![], vec![], vec![]);
    for k in 0..o.samples {
        let g = k % groups;
        let before = settled_calls(controller, Duration::from_millis(500)).await?;
        let t0 = Instant::now();
        label(&pods, "probe", &format!("c{g}")).await?;
        into.push(observe(&probe_ns, server(g)?, true, t0, o.timeout)?);
        let mid = settled_calls(controller, Duration::from_millis(500)).await?;
        let t0 = Instant::now();
        label(&pods, "probe", "none").await?;
        out_of.push(observe(&probe_ns, server(g)?, false, t0, o.timeout)?);
        let after = settled_calls(controller, Duration::from_millis(500)).await?;
        let calls = if g == 0 {
            &mut calls_small
        } else {
            &mut calls_large
        };
        calls.extend([mid - before, after - mid]);
    }
    run.metric(
        "policy_enforced_label_change",
        Metric::from_durations(
            &into,
            "pod relabelled into a peer set → first accepted connection",
        )
        .with_target(&[("p99", 1000.0)]),
    );
    run.metric(
        "policy_enforced_label_removal",
        Metric::from_durations(
            &out_of,
            "pod relabelled out of a peer set → first of 10 refused connections in a row",
        ),
    );
    let all: Vec<f64> = calls_small.iter().chain(&calls_large).copied().collect();
    run.metric(
        "neutron_calls_per_pod_event",
        Metric::from_samples(
            &all,
            "count",
            "Neutron requests the controller made per label change (settled)",
        ),
    );
    run.metric(
        "neutron_calls_per_pod_event_set_of_1",
        Metric::from_samples(&calls_small, "count", "the same, peer set of 1 pod"),
    );
    run.metric(
        "neutron_calls_per_pod_event_set_of_many",
        Metric::from_samples(
            &calls_large,
            "count",
            &format!("the same, peer sets of ~{} pods", clients / (groups - 1)),
        ),
    );

    // Policy edits: admit the probe's label, then take it back.
    let mut edits = vec![];
    label(&pods, "probe", "edit").await?;
    for k in 0..o.samples {
        let g = k % groups;
        let t0 = Instant::now();
        policies
            .replace(
                &format!("p{g}"),
                &PostParams::default(),
                &with_version(&policies, g, &[format!("c{g}"), "edit".into()]).await?,
            )
            .await?;
        edits.push(observe(&probe_ns, server(g)?, true, t0, o.timeout)?);
        policies
            .replace(
                &format!("p{g}"),
                &PostParams::default(),
                &with_version(&policies, g, &[format!("c{g}")]).await?,
            )
            .await?;
        observe(&probe_ns, server(g)?, false, Instant::now(), o.timeout)?;
    }
    label(&pods, "probe", "none").await?;
    run.metric(
        "policy_enforced_edit",
        Metric::from_durations(
            &edits,
            "policy edited in place to admit the probe → first accepted connection",
        )
        .with_target(&[("p99", 1000.0)]),
    );

    // New pods: a client joins a peer set by being created.
    let mut fresh = vec![];
    for k in 0..o.samples {
        let g = k % groups;
        let name = format!("n{k}");
        pods.create(
            &PostParams::default(),
            &busybox(ns, &name, json!({"role": format!("c{g}")}), false)?,
        )
        .await?;
        let end = Instant::now() + o.timeout;
        let netns = loop {
            if let Some((netns, st)) = attachment(state, ns, &name) {
                if st == "plugged" {
                    break netns;
                }
            }
            if Instant::now() > end {
                bail!("{name}: not plugged after {:?}", o.timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let t0 = Instant::now();
        let n = Netns::open(&netns)?;
        fresh.push(observe(&n, server(g)?, true, t0, o.timeout)?);
        // And no other group admits it.
        let other = (g + 1) % groups;
        observe(&n, server(other)?, false, Instant::now(), o.timeout)
            .with_context(|| format!("{name} reached s{other}"))?;
    }
    run.metric("policy_enforced_new_pod", Metric::from_durations(&fresh, "new client pod plugged (attachment record) → first accepted connection to its group's server").with_target(&[("p99", 1000.0)]));

    // The floor: the same "join" made by hand, one address-group update straight to Neutron.
    let knp: Api<KuryrNetworkPolicy> = Api::namespaced(client.clone(), ns);
    let probe_ip = pod_ip(&pods.get("probe").await?).ok_or_else(|| anyhow!("probe has no IP"))?;
    let mut floor = vec![];
    for k in 0..o.samples {
        let g = k % groups;
        let st = knp
            .get(&format!("p{g}"))
            .await?
            .status
            .ok_or_else(|| anyhow!("p{g}: no status"))?;
        let ags: Vec<String> = st.address_groups.values().cloned().collect();
        if ags.is_empty() {
            run.note("no address groups in the policies' status: floor not measured");
            break;
        }
        let addr = [format!("{probe_ip}/32")];
        let t0 = Instant::now();
        for ag in &ags {
            neutron.add_addresses(ag, &addr).await.ok();
        }
        let r = observe(&probe_ns, server(g)?, true, t0, o.timeout);
        for ag in &ags {
            neutron.remove_addresses(ag, &addr).await.ok();
        }
        floor.push(r.with_context(|| format!("address groups {ags:?} of p{g}"))?);
        observe(&probe_ns, server(g)?, false, Instant::now(), o.timeout)?;
    }
    if !floor.is_empty() {
        run.metric("floor_address_group_update", Metric::from_durations(&floor, "the probe's /32 added by hand to the policy's address groups (one Neutron call) → first accepted connection: OVN's own part, no kuryr"));
    }
    run.checks["pods"] = json!(names.len() + o.samples);
    run.checks["policies"] = json!(groups);
    Ok(())
}

/// Policy `p<g>` admitting `roles`, with the stored resourceVersion (for a replace).
async fn with_version(
    policies: &Api<NetworkPolicy>,
    g: usize,
    roles: &[String],
) -> Result<NetworkPolicy> {
    let cur = policies.get(&format!("p{g}")).await?;
    let mut p = policy(
        cur.metadata.namespace.as_deref().unwrap_or_default(),
        g,
        roles,
    )?;
    p.metadata.resource_version = cur.metadata.resource_version;
    Ok(p)
}
