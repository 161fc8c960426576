//! What one Neutron port costs on this cloud, alone and in bulk (`kuryr-bench neutron-bulk`):
//! the accounting behind kuryr-rs's port-creation batching and warm-pool refill chunks. Ports
//! are created as the controller makes them (bound to the stack's node, `compute:kuryr`) and
//! deleted at the end. Measured: one port at a time; bulks of 5, 10, 20 (their time per port);
//! 10 single creates at once; a single create sent while a bulk of 20 and of 5 is in flight
//! (what a pod's own port waits behind a pool refill chunk).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kuryr_openstack::neutron::{FixedIpRequest, Neutron, PortCreate};
use serde_json::json;

use crate::results::Run;
use crate::stack::{neutron, stack_env};
use crate::stats::Metric;

pub struct Opts {
    pub sequential: usize,
    pub bulks: Vec<usize>,
}

fn body(env: &std::collections::HashMap<String, String>, i: usize) -> PortCreate {
    PortCreate {
        network_id: env["POD_NET_ID"].clone(),
        name: format!("kuryr-bench-bulk-{i}"),
        description: "kuryr-bench neutron-bulk".into(),
        device_owner: "compute:kuryr".into(),
        device_id: format!("kuryr-bench-bulk-{i}"),
        binding_host_id: env["STACK_HOST"].clone(),
        fixed_ips: Some(vec![FixedIpRequest::subnet(env["POD_SUBNET_ID"].clone())]),
        ..PortCreate::default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub async fn run(o: &Opts, repo: &std::path::Path) -> Result<Run> {
    let mut run = Run::start(repo);
    run.params = json!({"sequential": o.sequential, "bulks": o.bulks});
    let env = stack_env()?;
    let n = neutron().await?;
    let mut made: Vec<String> = Vec::new();
    let r = measure(o, &env, &n, &mut run, &mut made).await;
    for id in &made {
        let _ = n.delete_port(id).await;
    }
    r?;
    Ok(run)
}

async fn measure(
    o: &Opts,
    env: &std::collections::HashMap<String, String>,
    n: &Neutron,
    run: &mut Run,
    made: &mut Vec<String>,
) -> Result<()> {
    let mut next = 0usize;
    let mut take = |k: usize| {
        let v: Vec<PortCreate> = (next..next + k).map(|i| body(env, i)).collect();
        next += k;
        v
    };
    let mut single = Vec::new();
    for b in take(o.sequential) {
        let t = Instant::now();
        made.push(n.create_port(&b).await.context("POST /ports")?.id);
        single.push(ms(t.elapsed()));
    }
    let one = Metric::from_samples(&single, "ms", "one port create, one at a time");
    let per_single = one.p50;
    run.metric("port_create_single", one);
    for &k in &o.bulks {
        let bodies = take(k);
        let t = Instant::now();
        made.extend(
            n.create_ports(&bodies)
                .await
                .context("bulk POST /ports")?
                .into_iter()
                .map(|p| p.id),
        );
        let total = ms(t.elapsed());
        run.metric(
            &format!("port_create_bulk{k}"),
            Metric::from_samples(&[total], "ms", &format!("one bulk create of {k} ports")),
        );
        run.metric(
            &format!("port_create_bulk{k}_per_port"),
            Metric::from_samples(
                &[total / k as f64],
                "ms",
                &format!("bulk of {k}: time per port"),
            ),
        );
        run.metric(
            &format!("bulk{k}_per_port_over_single"),
            Metric::from_samples(
                &[total / k as f64 / per_single],
                "x",
                &format!("bulk of {k} per port ÷ single p50 (below 1: bulk is cheaper per port)"),
            ),
        );
    }
    // 10 singles at once.
    let bodies = take(10);
    let t = Instant::now();
    let each = futures_util::future::join_all(bodies.iter().map(|b| async move {
        let t = Instant::now();
        n.create_port(b).await.map(|p| (p.id, ms(t.elapsed())))
    }))
    .await;
    let wall = ms(t.elapsed());
    let mut lat = Vec::new();
    for r in each {
        let (id, l) = r.context("POST /ports (concurrent)")?;
        made.push(id);
        lat.push(l);
    }
    run.metric(
        "port_create_concurrent10",
        Metric::from_samples(&lat, "ms", "one port create, 10 at once"),
    );
    run.metric(
        "concurrent10_wall_per_port_over_single",
        Metric::from_samples(&[wall / 10.0 / per_single], "x", "10 at once: wall time per port ÷ single p50 (1 = Neutron makes them one after the other)"),
    );
    // A single create behind a bulk in flight.
    for k in [20usize, 5] {
        let bulk = take(k);
        let lone = take(1);
        let (b, s) = tokio::join!(n.create_ports(&bulk), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = Instant::now();
            n.create_port(&lone[0])
                .await
                .map(|p| (p.id, ms(t.elapsed())))
        });
        made.extend(b.context("bulk POST /ports")?.into_iter().map(|p| p.id));
        let (id, l) = s.context("POST /ports behind a bulk")?;
        made.push(id);
        run.metric(
            &format!("port_create_behind_bulk{k}"),
            Metric::from_samples(
                &[l],
                "ms",
                &format!("one port create sent 0.3 s after a bulk of {k}"),
            ),
        );
    }
    Ok(())
}
