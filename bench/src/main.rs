//! kuryr-bench: benchmarks of kuryr-rs that report numbers (never assert timings).
//!
//! * `cni-exec`   — kuryr-cni exec overhead (VERSION, ADD with no daemon, ADD against a stub),
//!   next to a no-op binary;
//! * `daemon-add` — the real kuryr-daemon on the local stack: ADD/DEL latency for sequential
//!   and concurrent pods with the VIF already present, daemon-side stage timings, and its RSS
//!   (written to `daemon-add.json` and `daemon-rss.json`);
//! * `rss`        — the same run recording only `daemon-rss.json`, or `--pid` to read the
//!   memory of any running process;
//! * `chaos`      — the chaos soak: churn under a seeded fault schedule and an OpenStack fault
//!   proxy, then invariants that name what leaked (exits non-zero when one fails);
//! * `summary`    — regenerate `SUMMARY.md` from the JSON files;
//! * `cleanup`    — remove every object a (crashed) run left on the stack.
//!
//! See bench/README.md.

mod burst;
mod chaos;
mod cniexec;
mod compare;
mod cpu;
mod daemon;
mod daemonadd;
mod guard;
mod http;
mod neutronbulk;
mod policy;
mod prom;
mod proxy;
mod results;
mod rng;
mod services;
mod stack;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

const CNI_EXEC_DESC: &str = "kuryr-cni exec overhead: fork/exec + stdin + stdout + exit, the way a container runtime runs the plugin. Target ≤ 3 ms (p50).";
const DAEMON_ADD_DESC: &str = "kuryr-daemon (release, static) on the local stack: CNI ADD/DEL latency on its unix socket for pods whose VIF is already present and active (the daemon's own work: KuryrPort look-up, attachment record, veth + OVSDB plug into br-int, L3 in the netns; vswitchd's attach and the gratuitous ARPs happen after the answer). Targets ADD p50 ≤ 20 ms, p99 ≤ 100 ms.";
const BURST_DESC: &str = "kuryr-controller (release) on the local stack: a burst of pods created at once (bound to the node, never sandboxed), without and with a pre-filled warm pool: pod created → KuryrPort VIF written (→ active when the port is already ACTIVE), OpenStack calls per pod, controller RSS.";
const SERVICES_DESC: &str = "Services through Octavia (ovn provider) with kuryr-controller (release) on the local stack: Service created → first HTTP answer through its ClusterIP (from the node), EndpointSlice change → Octavia pool converged, Octavia member calls per endpoint change next to upstream kuryr's algorithm for the same changes. Targets: first connection p50 ≤ 2 s, converged p50 ≤ 1 s, 1 member call per change.";
const POLICY_DESC: &str = "NetworkPolicy through Neutron security groups and address groups with kuryr-controller and kuryr-daemon (release) on the local stack, 100 busybox pods through kubelet and 10 policies: pod label change, policy edit and new pod → enforcement observed by real TCP connections from inside a pod's netns (every 20 ms), Neutron calls per pod event, and the floor: one address-group update made by hand → enforcement (OVN's part). Targets: ≤ 1 s p99 to enforcement; calls per pod event constant.";
const NEUTRON_BULK_DESC: &str = "What one Neutron port costs on the local stack (ML2/OVN, one API worker), as kuryr-controller makes them (bound to the node, compute:kuryr): one at a time, in bulks of 5/10/20 (and their time per port ÷ a single's), 10 at once, and one sent while a bulk is in flight. The accounting behind kuryr-rs's coalesced pod port creation ([neutron_defaults] port_bulk_max) and its warm-pool refill chunks.";
const DAEMON_RSS_DESC: &str = "kuryr-daemon resident memory (VmRSS from /proc/<pid>/status) idle after start and after the daemon-add runs; VmHWM is the peak. Target ≤ 30 MiB.";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kuryr-rs/cargo-target"))
}

/// The checkout the bench runs for (its results directory, its commit, its manifests): the
/// working directory's when it is a kuryr-rs checkout (hack/bench runs from its root), else the
/// one this binary was compiled in. A binary built in one clone and run from another writes to
/// and records the commit of the one it runs from.
fn repo() -> PathBuf {
    let is_checkout =
        |d: &Path| d.join("bench/Cargo.toml").is_file() && d.join("hack/bench").is_file();
    std::env::current_dir()
        .ok()
        .filter(|d| is_checkout(d))
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        })
}

#[derive(Parser)]
#[command(
    name = "kuryr-bench",
    about = "kuryr-rs benchmarks (numbers, not assertions)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Out {
    /// Where <benchmark>.json and SUMMARY.md live.
    #[arg(long, default_value_os_t = repo().join("bench/results"))]
    results_dir: PathBuf,
    /// Print the numbers but do not append them to the results.
    #[arg(long)]
    no_record: bool,
}

#[derive(Args, Clone)]
struct DaemonArgs {
    /// The kuryr-daemon binary [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kuryr-daemon].
    #[arg(long)]
    daemon_bin: Option<PathBuf>,
    /// Pods ADDed one after the other.
    #[arg(long, default_value_t = 100)]
    sequential: usize,
    /// Pods ADDed all at once (after the sequential ones).
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
    /// Wait at most this long (s) for running kuryr-controllers to exit, then go on (noted).
    #[arg(long, default_value_t = 900)]
    controller_wait: u64,
    /// Poll interval (s) while waiting for kuryr-controllers to exit.
    #[arg(long, default_value_t = 30)]
    controller_poll: u64,
    /// Pause (s) before the idle RSS reading and after creating the objects.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// VmRSS readings per measurement point (200 ms apart).
    #[arg(long, default_value_t = 5)]
    rss_samples: usize,
    /// How long (s) to wait for Neutron to report the plugged ports ACTIVE (a check).
    #[arg(long, default_value_t = 90)]
    active_wait: u64,
}

impl DaemonArgs {
    fn opts(&self) -> daemonadd::Opts {
        daemonadd::Opts {
            daemon_bin: self.daemon_bin.clone().unwrap_or_else(|| {
                target_dir().join("x86_64-unknown-linux-gnu/release/kuryr-daemon")
            }),
            sequential: self.sequential,
            concurrent: self.concurrent,
            controller_wait: Duration::from_secs(self.controller_wait),
            controller_poll: Duration::from_secs(self.controller_poll),
            settle: Duration::from_secs_f64(self.settle),
            rss_samples: self.rss_samples.max(1),
            active_wait: Duration::from_secs(self.active_wait),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// kuryr-cni exec overhead (and a no-op binary for comparison).
    CniExec {
        /// The kuryr-cni binary [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kuryr-cni].
        #[arg(long)]
        cni_bin: Option<PathBuf>,
        /// VERSION execs (also the no-op execs).
        #[arg(long, default_value_t = 500)]
        version_runs: usize,
        /// ADD execs (unreachable daemon; and against the stub).
        #[arg(long, default_value_t = 200)]
        add_runs: usize,
        /// Unmeasured execs before each series.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        #[command(flatten)]
        out: Out,
    },
    /// kuryr-daemon ADD/DEL latency and RSS on the local stack (needs root and the stack).
    DaemonAdd {
        #[command(flatten)]
        d: DaemonArgs,
        #[command(flatten)]
        out: Out,
    },
    /// kuryr-daemon RSS (the daemon-add run, recording only daemon-rss.json), or --pid.
    Rss {
        /// Only read VmRSS/VmHWM of this running process (nothing is started or recorded).
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        d: DaemonArgs,
        #[command(flatten)]
        out: Out,
    },
    /// Regenerate SUMMARY.md from the JSON results and print it.
    Summary {
        #[arg(long, default_value_os_t = repo().join("bench/results"))]
        results_dir: PathBuf,
    },
    /// kuryr-controller: a burst of pods without and with a warm pool (needs the stack).
    ControllerBurst {
        /// The kuryr-controller binary [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kuryr-controller].
        #[arg(long)]
        controller_bin: Option<PathBuf>,
        /// Pods created at once.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Free ports the warm pool is filled to before the burst.
        #[arg(long, default_value_t = 100)]
        pool_size: usize,
        /// Give up waiting for VIFs after this long (s).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[command(flatten)]
        out: Out,
    },
    /// Services through Octavia: first connection, endpoint convergence, Octavia calls (needs the stack).
    Services {
        /// The kuryr-controller binary [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kuryr-controller].
        #[arg(long)]
        controller_bin: Option<PathBuf>,
        /// Services created one after the other.
        #[arg(long, default_value_t = 20)]
        services: usize,
        /// EndpointSlice changes.
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// Give up on one Service or change after this long (s).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        out: Out,
    },
    /// NetworkPolicy enforcement at 100 pods / 10 policies (needs root, the stack, and the node's CNI to itself).
    Policy {
        /// The kuryr-controller binary [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kuryr-controller].
        #[arg(long)]
        controller_bin: Option<PathBuf>,
        /// The kuryr-daemon binary [default: …/release/kuryr-daemon].
        #[arg(long)]
        daemon_bin: Option<PathBuf>,
        /// The kuryr-cni binary the daemon installs [default: …/release/kuryr-cni].
        #[arg(long)]
        cni_bin: Option<PathBuf>,
        /// Pods in all: 10 servers, the clients, one probe.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// NetworkPolicies (one per server group).
        #[arg(long, default_value_t = 10)]
        policies: usize,
        /// Samples per measured event.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Give up on one event after this long (s).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[command(flatten)]
        out: Out,
    },
    /// Upstream kuryr-kubernetes 10.0.0 against kuryr-rs, same workloads, one sitting (needs root, the stack, and the node's CNI to itself).
    CompareUpstream {
        /// Where the release kuryr-controller, kuryr-daemon and kuryr-cni are [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release].
        #[arg(long)]
        release_dir: Option<PathBuf>,
        /// Pool modes, in order (`off`, `on`).
        #[arg(long, value_delimiter = ',', default_value = "off,on")]
        pools: Vec<String>,
        /// Pods created one after the other.
        #[arg(long, default_value_t = 10)]
        sequential: usize,
        /// Burst sizes (pods created at once).
        #[arg(long, value_delimiter = ',', default_value = "20,50")]
        bursts: Vec<usize>,
        /// Give up on one workload after this long (s).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Which sides to run (`upstream`, `kuryr-rs`); ratios need both.
        #[arg(long, value_delimiter = ',', default_value = "upstream,kuryr-rs")]
        sides: Vec<String>,
        /// kuryr.conf lines appended for both sides (e.g. `[neutron_defaults]\nport_bulk_max = 1`).
        #[arg(long, default_value = "")]
        extra_conf: String,
        #[command(flatten)]
        out: Out,
    },
    /// What one Neutron port costs on the stack, alone and in bulk (the accounting behind
    /// kuryr-rs's port batching and pool refill chunks).
    NeutronBulk {
        /// Single creates, one at a time.
        #[arg(long, default_value_t = 8)]
        sequential: usize,
        /// Bulk sizes.
        #[arg(long, value_delimiter = ',', default_value = "5,10,20")]
        bulks: Vec<usize>,
        #[command(flatten)]
        out: Out,
    },
    /// Chaos soak: pods churned through kubelet under a seeded fault schedule (kills, restarts,
    /// OpenStack faults through a proxy), then invariants naming what leaked; exits non-zero if
    /// one fails (needs root, the stack, and the node's CNI to itself).
    Chaos {
        /// Where the release kuryr-controller, kuryr-daemon and kuryr-cni are [default: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release].
        #[arg(long)]
        release_dir: Option<PathBuf>,
        /// How long the churn and the faults last (`30m`, `3m`, `90s`).
        #[arg(long, default_value = "30m")]
        duration: String,
        /// Seed of the fault schedule and the churn [default: from the clock]; printed at the start.
        #[arg(long)]
        seed: Option<u64>,
        /// Mean time between faults (each gap 0.5–1.5 × this).
        #[arg(long, default_value = "30s")]
        mean_gap: String,
        /// Pods alive at once at most (standalone, the Deployment's, the probe).
        #[arg(long, default_value_t = 30)]
        max_pods: usize,
        /// Namespaces the standalone pods spread over.
        #[arg(long, default_value_t = 3)]
        namespaces: usize,
        /// How long the system may take to converge (after the faults, and after the teardown).
        #[arg(long, default_value = "5m")]
        converge_timeout: String,
        /// Warm pools (`on`, `off`).
        #[arg(long, default_value = "on")]
        pools: String,
        /// Fault kinds to draw from, comma-separated [default: all].
        #[arg(long, value_delimiter = ',')]
        faults: Vec<String>,
        /// Halfway through, create a Neutron port with the cluster's tag that nothing owns (to
        /// see the invariants catch a leak).
        #[arg(long)]
        inject_orphan: bool,
        #[command(flatten)]
        out: Out,
    },
    /// Remove everything a benchmark run may have left on the stack.
    Cleanup,
    /// Append one run measured elsewhere (e.g. by the migration e2e test) to a results file.
    Record {
        /// The benchmark (file `<results_dir>/<benchmark>.json`).
        #[arg(long)]
        benchmark: String,
        /// What the benchmark measures (the file's description).
        #[arg(long)]
        description: String,
        /// `name=value:unit:what`, one sample each (repeatable).
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// `name=value` facts of the run that are not timings (repeatable; JSON values allowed).
        #[arg(long = "check")]
        checks: Vec<String>,
        /// `name=value` settings the run was made with (repeatable; JSON values allowed).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Free-text notes (repeatable).
        #[arg(long = "note")]
        notes: Vec<String>,
        #[command(flatten)]
        out: Out,
    },
}

const COMPARE_DESC: &str = "Upstream kuryr-kubernetes 10.0.0 (hack/upstream/upstream: its controller, its daemon through the \
netdev launcher, its Go CNI shim) against kuryr-rs (release binaries as host services, no chained plugins) on the same \
stack, same kuryr.conf, one sitting; pools off, then on (ports_pool_min 25, batch 20). Pods through kubelet/containerd: \
created → Ready seen by a watch (one at a time, 20 and 50 at once); the runtime's exec of kuryr-cni timed by a wrapper; \
Neutron requests per pod from Neutron's access log by user agent; peak RSS and CPU seconds of each side's controller and \
daemon processes over the bursts. ratio_* = upstream ÷ kuryr-rs (p50 where sampled; above 1 = kuryr-rs ahead). Peer and \
limit in the same run: the reference bridge plugin's ADD (sequential, 20 at once) and the CPU floor of those 20.";

fn record(run: results::Run, out: &Out, name: &str, desc: &str) -> Result<()> {
    let text = serde_json::to_string_pretty(&run.metrics)?;
    if out.no_record {
        println!("{name} (not recorded):\n{text}");
        if run.checks.as_object().is_some_and(|c| !c.is_empty()) {
            println!("checks: {}", run.checks);
        }
        if !run.notes.is_empty() {
            println!("notes: {:?}", run.notes);
        }
        return Ok(());
    }
    let path = run.write(&out.results_dir, name, desc)?;
    eprintln!("{name}: appended to {}", path.display());
    Ok(())
}

fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    if euid != "0" {
        bail!("this benchmark needs root (network namespaces, OVS)");
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::CniExec {
            cni_bin,
            version_runs,
            add_runs,
            warmup,
            out,
        } => {
            let mut run = results::Run::start(&repo());
            let o = cniexec::Opts {
                cni_bin: cni_bin.unwrap_or_else(|| {
                    target_dir().join("x86_64-unknown-linux-gnu/release/kuryr-cni")
                }),
                version_runs,
                add_runs,
                warmup,
            };
            cniexec::run(&o, &mut run)?;
            record(run, &out, "cni-exec", CNI_EXEC_DESC)
        }
        Cmd::DaemonAdd { d, out } => {
            require_root()?;
            let (add, rss) = rt.block_on(daemonadd::run(&d.opts(), &repo()))?;
            record(add, &out, "daemon-add", DAEMON_ADD_DESC)?;
            record(rss, &out, "daemon-rss", DAEMON_RSS_DESC)
        }
        Cmd::Rss { pid: Some(pid), .. } => {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            for l in s.lines().filter(|l| {
                [
                    "Name:", "VmRSS:", "VmHWM:", "RssAnon:", "RssFile:", "Threads:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            }) {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Rss { pid: None, d, out } => {
            require_root()?;
            let (_, rss) = rt.block_on(daemonadd::run(&d.opts(), &repo()))?;
            record(rss, &out, "daemon-rss", DAEMON_RSS_DESC)
        }
        Cmd::ControllerBurst {
            controller_bin,
            pods,
            pool_size,
            timeout,
            out,
        } => {
            let o = burst::Opts {
                controller_bin: controller_bin.unwrap_or_else(|| {
                    target_dir().join("x86_64-unknown-linux-gnu/release/kuryr-controller")
                }),
                pods,
                pool_size,
                timeout: Duration::from_secs(timeout),
            };
            let run = rt.block_on(burst::run(&o, &repo()))?;
            record(run, &out, "controller-burst", BURST_DESC)
        }
        Cmd::NeutronBulk {
            sequential,
            bulks,
            out,
        } => {
            let o = neutronbulk::Opts { sequential, bulks };
            let run = rt.block_on(neutronbulk::run(&o, &repo()))?;
            record(run, &out, "neutron-bulk", NEUTRON_BULK_DESC)
        }
        Cmd::Services {
            controller_bin,
            services,
            changes,
            timeout,
            out,
        } => {
            require_root()?;
            let o = services::Opts {
                controller_bin: controller_bin.unwrap_or_else(|| {
                    target_dir().join("x86_64-unknown-linux-gnu/release/kuryr-controller")
                }),
                services,
                changes,
                timeout: Duration::from_secs(timeout),
            };
            let run = rt.block_on(services::run(&o, &repo()))?;
            record(run, &out, "services", SERVICES_DESC)
        }
        Cmd::Policy {
            controller_bin,
            daemon_bin,
            cni_bin,
            pods,
            policies,
            samples,
            timeout,
            out,
        } => {
            require_root()?;
            let release = |name: &str, given: Option<PathBuf>| {
                given.unwrap_or_else(|| {
                    target_dir()
                        .join("x86_64-unknown-linux-gnu/release")
                        .join(name)
                })
            };
            let o = policy::Opts {
                controller_bin: release("kuryr-controller", controller_bin),
                daemon_bin: release("kuryr-daemon", daemon_bin),
                cni_bin: release("kuryr-cni", cni_bin),
                pods,
                policies,
                samples,
                timeout: Duration::from_secs(timeout),
            };
            let run = rt.block_on(policy::run(&o, &repo()))?;
            record(run, &out, "policy", POLICY_DESC)
        }
        Cmd::Summary { results_dir } => {
            let p = results::write_summary(&results_dir)?;
            print!("{}", std::fs::read_to_string(p)?);
            Ok(())
        }
        Cmd::CompareUpstream {
            release_dir,
            pools,
            sequential,
            bursts,
            timeout,
            sides,
            extra_conf,
            out,
        } => {
            require_root()?;
            let o = compare::Opts {
                sides: compare::parse_sides(&sides)?,
                extra_conf: extra_conf.replace("\\n", "\n"),
                release_dir: release_dir
                    .unwrap_or_else(|| target_dir().join("x86_64-unknown-linux-gnu/release")),
                pools: pools.iter().map(|p| p == "on").collect(),
                sequential,
                bursts,
                timeout: Duration::from_secs(timeout),
            };
            let run = compare::run(&o, &repo())?;
            record(run, &out, "compare-upstream", COMPARE_DESC)
        }
        Cmd::Chaos {
            release_dir,
            duration,
            seed,
            mean_gap,
            max_pods,
            namespaces,
            converge_timeout,
            pools,
            faults,
            inject_orphan,
            out,
        } => {
            require_root()?;
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() % 1_000_000)
                    .unwrap_or(1)
            });
            let o = chaos::Opts {
                release_dir: release_dir
                    .unwrap_or_else(|| target_dir().join("x86_64-unknown-linux-gnu/release")),
                duration: chaos::parse_duration(&duration)?,
                seed,
                mean_gap: chaos::parse_duration(&mean_gap)?,
                max_pods,
                namespaces,
                converge_timeout: chaos::parse_duration(&converge_timeout)?,
                pools: match pools.as_str() {
                    "on" => true,
                    "off" => false,
                    other => bail!("--pools {other:?}: on or off"),
                },
                faults: if faults.is_empty() {
                    chaos::FaultKind::ALL.to_vec()
                } else {
                    faults
                        .iter()
                        .map(|f| chaos::FaultKind::parse(f))
                        .collect::<Result<_>>()?
                },
                inject_orphan,
            };
            let run = rt.block_on(chaos::run(&o, &repo()))?;
            let failed: Vec<String> = run.checks["invariants_failed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            record(run, &out, "chaos", chaos::DESC)?;
            if !failed.is_empty() {
                bail!(
                    "chaos (seed {seed}): {} invariant(s) failed:\n{}",
                    failed.len(),
                    failed.join("\n")
                );
            }
            Ok(())
        }
        Cmd::Record {
            benchmark,
            description,
            metrics,
            checks,
            params,
            notes,
            out,
        } => {
            // The commit is the one of the tree whose results directory this is
            // (`<repo>/bench/results`), not the one this binary was built from.
            let tree = out
                .results_dir
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(repo);
            let mut run = results::Run::start(&tree);
            for m in &metrics {
                let (name, rest) = m
                    .split_once('=')
                    .with_context(|| format!("--metric {m}: no '='"))?;
                let mut parts = rest.splitn(3, ':');
                let value: f64 = parts
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("--metric {m}: the value is not a number"))?;
                let unit = parts.next().unwrap_or("");
                let what = parts.next().unwrap_or("");
                run.metric(name, stats::Metric::from_samples(&[value], unit, what));
            }
            for (flag, pairs, into) in [
                ("--check", &checks, &mut run.checks),
                ("--param", &params, &mut run.params),
            ] {
                for c in pairs {
                    let (k, v) = c
                        .split_once('=')
                        .with_context(|| format!("{flag} {c}: no '='"))?;
                    into[k] = serde_json::from_str(v).unwrap_or_else(|_| serde_json::json!(v));
                }
            }
            for n in notes {
                run.note(n);
            }
            record(run, &out, &benchmark, &description)
        }
        Cmd::Cleanup => {
            require_root()?;
            let _lock = daemonadd::lock()?;
            let bridge = stack::stack_env()
                .ok()
                .and_then(|e| e.get("OVS_BRIDGE").cloned())
                .unwrap_or_else(|| "br-int".into());
            let s = rt.block_on(stack::sweep(&bridge));
            println!("{}", serde_json::to_string(&s)?);
            if !s.errors.is_empty() {
                bail!("cleanup incomplete");
            }
            Ok(())
        }
    }
}
