//! Integration tests against the real kernel. They need root (CAP_NET_ADMIN + CAP_SYS_ADMIN), so
//! plain `cargo test` (any user) ignores them; hack/test runs them as root with the other ignored
//! tests, or by hand: `sudo -E cargo test -p kuryr-netplumb --test kernel -- --ignored`. Run
//! without root they fail loudly. Each test works in its own freshly created named netns
//! (`npt-<pid>-<n>`), removed by a Drop guard even when the test panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kuryr_netplumb::announce::{self, PacketSocket, ETH_P_ARP, ETH_P_IPV6};
use kuryr_netplumb::{
    configure_interface, ethtool, move_link, plug_veth, plug_veth_with, sysctl, Error, ErrorKind,
    ExistingHost, IfaceConfig, IpFamily, IpNet, MacAddr, MacvlanMode, Netns, RouteSpec,
    VethOptions, VethPlug,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "kuryr-netplumb kernel tests must run as root (they create netns, veth, macvlan): \
             run `sudo -E cargo test -p kuryr-netplumb --test kernel -- --ignored`"
        );
    }
}

/// A named netns that is deleted on drop.
struct TestNs {
    name: String,
    ns: Netns,
}

impl TestNs {
    fn new() -> TestNs {
        require_root();
        let name = format!(
            "npt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ns =
            Netns::create_named(&name).unwrap_or_else(|e| panic!("create test netns {name}: {e}"));
        TestNs { name, ns }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = Netns::delete_named(&self.name) {
            eprintln!("cleanup: {e}");
        }
    }
}

impl std::ops::Deref for TestNs {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

fn net(s: &str) -> IpNet {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test literal {s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test literal {s}: {e}"))
}

fn mac(s: &str) -> MacAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test literal {s}: {e}"))
}

/// Waits until the link is operationally up (linkwatch settles asynchronously after `up`).
fn wait_up(ns: &TestNs, ifname: &str) {
    ns.with_netlink(async |nl| nl.wait_oper_up(ifname, Duration::from_secs(5)).await)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `ip netns exec NS ping -c1 -W1 ADDR`: true on reply, false when no reply came (ping's status
/// 1); any other failure (the netns cannot be entered, ping cannot run: status 2 or 255) panics,
/// so a negative check cannot pass on a probe that never ran.
fn ping(from: &TestNs, to: IpAddr) -> bool {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &from.name,
            "ping",
            "-c1",
            "-W1",
            &to.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `ip netns exec ... ping` (iproute2 + iputils-ping needed): {e}")
        });
    if !out.status.success() {
        eprintln!(
            "ping {to} from {} failed:\n{}{}",
            from.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "ping {to} from {} did not run: {}",
            from.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn run_returns_closure_value_and_errors() {
    let t = TestNs::new();
    let host_before = Netns::current().expect("current").id().expect("id");

    // Value comes back, and the closure really ran inside the netns.
    let (v, inside) = t
        .run(|| Ok::<_, Error>((42, Netns::current()?.id()?)))
        .expect("run");
    assert_eq!(v, 42);
    assert_eq!(inside, t.id().expect("id"));
    assert_ne!(
        inside, host_before,
        "test netns must differ from the host one"
    );
    // The calling thread never moved.
    assert_eq!(
        Netns::current().expect("current").id().expect("id"),
        host_before
    );

    // The closure's own error type comes back untouched.
    #[derive(Debug, PartialEq)]
    enum MyErr {
        Mine(&'static str),
        Plumb(ErrorKind),
    }
    impl From<Error> for MyErr {
        fn from(e: Error) -> Self {
            MyErr::Plumb(e.kind())
        }
    }
    let r: Result<(), MyErr> = t.run(|| Err(MyErr::Mine("boom")));
    assert_eq!(r, Err(MyErr::Mine("boom")));

    // Errors raised inside name the netns.
    let e = t
        .with_netlink(async |nl| nl.link("nope0").await)
        .expect_err("nope0 must not exist");
    assert!(e.is_not_found(), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "get link nope0 in /run/netns/{}: No such device (os error 19)",
            t.name
        )
    );

    // Panics become errors instead of tearing down the caller.
    let p = t
        .run(|| -> Result<(), Error> { panic!("inside") })
        .expect_err("panic");
    assert_eq!(p.kind(), ErrorKind::Panicked);
    assert!(p.to_string().contains("inside"), "{p}");

    // Async variant.
    let n = t
        .run_async(async || Ok::<_, Error>(7u8))
        .expect("run_async");
    assert_eq!(n, 7);
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn usable_from_a_tokio_daemon() {
    let t = TestNs::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ns = t.ns.clone();
    let host_id = Netns::current().expect("current").id().expect("id");
    let (names, worker_id) = rt
        .block_on(async move {
            // The daemon's way: spawn_blocking around the sync API.
            let names = tokio::task::spawn_blocking(move || {
                ns.with_netlink(async |nl| {
                    nl.create_veth("npd0", "npd1", None, &VethOptions::default())
                        .await?;
                    Ok::<_, Error>(
                        nl.links()
                            .await?
                            .into_iter()
                            .map(|l| l.name)
                            .collect::<Vec<_>>(),
                    )
                })
            })
            .await
            .expect("join")?;
            // Even called directly on a worker it must not panic ("runtime within runtime")
            // nor move the worker into the netns.
            let _ = t.with_netlink(async |nl| nl.link("npd0").await)?;
            Ok::<_, Error>((names, Netns::current()?.id()?))
        })
        .expect("async use");
    assert!(
        names.contains(&"npd0".to_string()) && names.contains(&"npd1".to_string()),
        "{names:?}"
    );
    assert_eq!(worker_id, host_id, "a tokio worker must never change netns");
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn netns_open_create_delete_errors() {
    let t = TestNs::new();
    let e = Netns::create_named(&t.name).expect_err("duplicate name");
    assert!(e.is_already_exists(), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("create netns /run/netns/{}: File exists", t.name)),
        "{e}"
    );

    let reopened = Netns::open(format!("/var/run/netns/{}", t.name)).expect("open via /var/run");
    assert_eq!(reopened.id().expect("id"), t.id().expect("id"));
    let by_pid = Netns::for_pid(std::process::id()).expect("own pid");
    assert_ne!(by_pid.id().expect("id"), t.id().expect("id"));

    let missing = Netns::open("/run/netns/npt-does-not-exist").expect_err("missing");
    assert!(missing.is_not_found(), "{missing}");
    let not_ns = Netns::open("/proc/self/status").expect_err("regular file");
    assert_eq!(not_ns.kind(), ErrorKind::InvalidInput, "{not_ns}");
    assert!(Netns::create_named("../etc").is_err());

    // Delete is idempotent.
    let name = format!("npt-{}-del", std::process::id());
    Netns::create_named(&name).expect("create");
    assert!(Netns::delete_named(&name).expect("delete"));
    assert!(!Netns::delete_named(&name).expect("second delete"));
    assert!(Netns::open_named(&name).expect_err("gone").is_not_found());
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn veth_across_netns_configured_and_pingable() {
    let host = TestNs::new();
    let pod = TestNs::new();
    let host_mac = mac("02:00:00:aa:00:01");
    let pod_mac = mac("fa:16:3e:aa:00:02");

    let host_link = plug_veth(
        &host,
        &pod,
        &VethPlug {
            host_ifname: "tapnpt0".into(),
            peer_ifname: "eth0".into(),
            mtu: Some(1400),
            host_mac: Some(host_mac),
            peer_mac: None,
        },
    )
    .expect("plug veth");
    assert_eq!(host_link.kind.as_deref(), Some("veth"));
    assert_eq!(host_link.mtu, Some(1400));
    assert_eq!(host_link.mac, Some(host_mac));
    assert!(host_link.admin_up);

    // Host side: address + route to the pod (like kuryr's host-side routing).
    host.with_netlink(async |nl| {
        nl.add_address("tapnpt0", net("10.99.0.1/24")).await?;
        nl.add_route(&RouteSpec::link("tapnpt0", net("10.99.7.0/24")))
            .await
    })
    .expect("host address");

    // Pod side via the composable configure step.
    let cfg = IfaceConfig {
        ifname: "eth0".into(),
        mac: Some(pod_mac),
        mtu: Some(1400),
        addresses: vec![net("10.99.0.5/24")],
        routes: vec![
            RouteSpec::default_via("eth0", ip("10.99.0.1")),
            RouteSpec::via("eth0", net("192.0.2.0/24"), ip("10.99.0.1")).metric(50),
            RouteSpec::via("eth0", net("198.51.100.0/24"), ip("203.0.113.1")).onlink(),
            RouteSpec::link("eth0", net("169.254.169.254/32")),
        ],
        disable_tx_checksum: false,
        announce: true,
    };
    let eth0 = configure_interface(&pod, &cfg).expect("configure pod side");
    assert_eq!(eth0.name, "eth0");
    assert_eq!(eth0.mac, Some(pod_mac));
    assert_eq!(eth0.mtu, Some(1400));
    assert!(eth0.admin_up);
    assert_eq!(eth0.kind.as_deref(), Some("veth"));

    // Read everything back through netlink in the pod netns.
    let (addrs, routes, link) = pod
        .with_netlink(async |nl| {
            Ok::<_, Error>((
                nl.addresses("eth0").await?,
                nl.routes(IpFamily::V4).await?,
                nl.link("eth0").await?,
            ))
        })
        .expect("read back");
    assert!(addrs.contains(&net("10.99.0.5/24")), "{addrs:?}");
    let oif = Some(link.index);
    let find = |dest: &str| routes.iter().find(|r| r.dest == net(dest) && r.oif == oif);
    let default = find("0.0.0.0/0").unwrap_or_else(|| panic!("no default route in {routes:?}"));
    assert_eq!(default.gateway, Some(ip("10.99.0.1")));
    let host_route =
        find("192.0.2.0/24").unwrap_or_else(|| panic!("no subnet route in {routes:?}"));
    assert_eq!(host_route.gateway, Some(ip("10.99.0.1")));
    assert_eq!(host_route.metric, Some(50));
    let onlink = find("198.51.100.0/24").unwrap_or_else(|| panic!("no onlink route in {routes:?}"));
    assert!(onlink.onlink);
    assert_eq!(onlink.gateway, Some(ip("203.0.113.1")));
    let md = find("169.254.169.254/32").unwrap_or_else(|| panic!("no link route in {routes:?}"));
    assert!(md.scope_link && md.gateway.is_none());

    // Operational state settles to up once both ends are up.
    assert!(link.lower_up, "{link:?}");

    // Traffic both ways, and a negative control so a broken ping check cannot pass.
    wait_up(&host, "tapnpt0");
    wait_up(&pod, "eth0");
    assert!(ping(&pod, ip("10.99.0.1")), "pod -> host");
    assert!(ping(&host, ip("10.99.0.5")), "host -> pod");
    assert!(
        !ping(&pod, ip("10.99.0.77")),
        "ping to an unassigned address must fail"
    );

    // Re-running configure is harmless (idempotent daemon retries).
    configure_interface(&pod, &cfg).expect("configure again");
    let addrs2 = pod
        .with_netlink(async |nl| nl.addresses("eth0").await)
        .expect("addrs");
    assert_eq!(
        addrs2.iter().filter(|a| **a == net("10.99.0.5/24")).count(),
        1
    );
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn link_verbs_and_delete_idempotency() {
    let t = TestNs::new();
    let peer = TestNs::new();
    t.with_netlink(async |nl| {
        nl.create_veth(
            "npa0",
            "npb0",
            None,
            &VethOptions {
                mtu: Some(1450),
                ..Default::default()
            },
        )
        .await?;
        let a = nl.link("npa0").await?;
        let b = nl.link("npb0").await?;
        assert_eq!(a.link_index, Some(b.index), "veth peer index");
        assert_eq!(b.mtu, Some(1450));
        assert!(!a.admin_up);

        nl.set_mtu("npa0", 1300).await?;
        nl.set_mac("npa0", mac("02:11:22:33:44:55")).await?;
        nl.set_up("npa0").await?;
        let a = nl.link("npa0").await?;
        assert_eq!(
            (a.mtu, a.mac, a.admin_up),
            (Some(1300), Some(mac("02:11:22:33:44:55")), true)
        );
        nl.set_down("npa0").await?;
        nl.rename("npa0", "npa1").await?;
        assert!(nl.find_link("npa0").await?.is_none());
        assert!(!nl.link("npa1").await?.admin_up);

        // Duplicate create is reported as already-exists and names both ends.
        let e = nl
            .create_veth("npa1", "npc0", None, &VethOptions::default())
            .await
            .expect_err("duplicate");
        assert!(e.is_already_exists(), "{e}");
        assert!(
            e.to_string()
                .starts_with("create veth npa1 <-> npc0 in /run/netns/npt-"),
            "{e}"
        );
        assert!(
            e.to_string().ends_with(": File exists (os error 17)"),
            "{e}"
        );

        // Delete: true, then Ok(false); deleting one veth end removes the other.
        assert!(nl.delete_link("npa1").await?);
        assert!(!nl.delete_link("npa1").await?);
        assert!(nl.find_link("npb0").await?.is_none());
        let e = nl.set_up("npa1").await.expect_err("gone");
        assert!(e.is_not_found(), "{e}");
        assert!(
            e.to_string()
                .starts_with("set link up npa1 in /run/netns/npt-"),
            "{e}"
        );

        // Bad names never reach the kernel.
        let e = nl
            .create_veth("x".repeat(16).as_str(), "y", None, &VethOptions::default())
            .await
            .expect_err("long");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        Ok::<_, Error>(())
    })
    .expect("verbs");

    // Move to another netns with rename; rename clash is already-exists.
    t.with_netlink(async |nl| {
        nl.create_veth("npm0", "npm1", None, &VethOptions::default())
            .await?;
        nl.move_link_to_netns("npm0", &peer, Some("eth0")).await?;
        assert!(nl.find_link("npm0").await?.is_none());
        nl.create_veth("npm2", "npm3", None, &VethOptions::default())
            .await?;
        let e = nl
            .move_link_to_netns("npm2", &peer, Some("eth0"))
            .await
            .expect_err("clash");
        assert!(e.is_already_exists(), "{e}");
        Ok::<_, Error>(())
    })
    .expect("move");
    let moved = peer
        .with_netlink(async |nl| nl.link("eth0").await)
        .expect("moved link");
    assert_eq!(moved.kind.as_deref(), Some("veth"));
}

/// A host end left by an earlier sandbox (peer in another netns): `Reuse` keeps it (a retry
/// into the same target), `Replace` recreates the pair into the new target.
#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn plug_veth_replaces_a_host_end_left_by_an_earlier_sandbox() {
    let host = TestNs::new();
    let old = TestNs::new();
    let new = TestNs::new();
    let plug = VethPlug {
        host_ifname: "nptrep0".into(),
        peer_ifname: "eth0".into(),
        mtu: Some(1400),
        host_mac: None,
        peer_mac: Some(mac("fa:16:3e:00:00:77")),
    };
    plug_veth(&host, &old, &plug).expect("first sandbox");
    let has_eth0 = |ns: &TestNs| {
        ns.with_netlink(async |nl| nl.find_link("eth0").await)
            .expect("find")
            .is_some()
    };
    // Reuse: the existing veth is kept, nothing lands in the new netns.
    plug_veth_with(&host, &new, &plug, ExistingHost::Reuse).expect("reuse");
    assert!(has_eth0(&old) && !has_eth0(&new));
    // Replace: the old pair goes (with its peer), the new peer is in the new netns.
    plug_veth_with(&host, &new, &plug, ExistingHost::Replace).expect("replace");
    assert!(!has_eth0(&old), "old sandbox's end must be gone");
    assert!(has_eth0(&new), "new sandbox must have eth0");
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn preplugged_veth_moved_from_holding_netns_then_configured() {
    let host = TestNs::new();
    let holding = TestNs::new();
    let pod = TestNs::new();
    // Pre-plug: host end up, peer parked in the holding netns under a temporary name.
    plug_veth(
        &host,
        &holding,
        &VethPlug {
            host_ifname: "tapnptpre".into(),
            peer_ifname: "npttmp".into(),
            mtu: None,
            host_mac: None,
            peer_mac: None,
        },
    )
    .expect("pre-plug");
    // Re-plugging the same host end is accepted (idempotent).
    plug_veth(
        &host,
        &holding,
        &VethPlug {
            host_ifname: "tapnptpre".into(),
            peer_ifname: "npttmp".into(),
            mtu: None,
            host_mac: None,
            peer_mac: None,
        },
    )
    .expect("re-plug");
    host.with_netlink(async |nl| nl.add_address("tapnptpre", net("10.98.0.1/24")).await)
        .expect("host addr");

    // Pod arrives: move + rename, then configure.
    move_link(&holding, "npttmp", &pod, Some("eth0")).expect("move to pod");
    assert!(holding
        .with_netlink(async |nl| { nl.find_link("npttmp").await })
        .expect("holding")
        .is_none());
    configure_interface(
        &pod,
        &IfaceConfig {
            ifname: "eth0".into(),
            addresses: vec![net("10.98.0.9/24")],
            routes: vec![RouteSpec::default_via("eth0", ip("10.98.0.1"))],
            ..Default::default()
        },
    )
    .expect("configure");
    wait_up(&host, "tapnptpre");
    wait_up(&pod, "eth0");
    assert!(ping(&pod, ip("10.98.0.1")));
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn macvlan_bridge_mode_into_other_netns() {
    let parent_ns = TestNs::new();
    let pod = TestNs::new();
    let far = TestNs::new();
    // Parent: a veth end whose peer sits in `far`, so the macvlan can carry real traffic.
    parent_ns
        .with_netlink(async |nl| {
            nl.create_veth("nptpar", "eth0", Some(&far), &VethOptions::default())
                .await?;
            nl.set_up("nptpar").await?;
            nl.create_macvlan(
                "nptpar",
                "eth0",
                MacvlanMode::Bridge,
                Some(&pod),
                Some(1400),
            )
            .await
        })
        .expect("macvlan");
    let parent = parent_ns
        .with_netlink(async |nl| nl.link("nptpar").await)
        .expect("parent");
    // Name already taken in pod netns: already-exists.
    let e = parent_ns
        .with_netlink(async |nl| {
            nl.create_macvlan("nptpar", "eth0", MacvlanMode::Bridge, Some(&pod), None)
                .await
        })
        .expect_err("duplicate");
    assert!(e.is_already_exists(), "{e}");
    let e = parent_ns
        .with_netlink(async |nl| {
            nl.create_macvlan("nope9", "mv0", MacvlanMode::Bridge, None, None)
                .await
        })
        .expect_err("missing parent");
    assert!(e.is_not_found(), "{e}");

    let mv = pod
        .with_netlink(async |nl| nl.link("eth0").await)
        .expect("macvlan in pod");
    assert_eq!(mv.kind.as_deref(), Some("macvlan"));
    assert_eq!(mv.mtu, Some(1400));
    assert_eq!(
        mv.link_index,
        Some(parent.index),
        "parent ifindex (in the parent's netns)"
    );

    configure_interface(
        &pod,
        &IfaceConfig {
            ifname: "eth0".into(),
            addresses: vec![net("10.97.0.2/24")],
            ..Default::default()
        },
    )
    .expect("pod");
    configure_interface(
        &far,
        &IfaceConfig {
            ifname: "eth0".into(),
            addresses: vec![net("10.97.0.3/24")],
            ..Default::default()
        },
    )
    .expect("far");
    wait_up(&pod, "eth0");
    wait_up(&far, "eth0");
    assert!(ping(&pod, ip("10.97.0.3")), "macvlan -> parent's wire");
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn dummy_link_created_or_reported_unsupported() {
    let t = TestNs::new();
    let r = t.with_netlink(async |nl| nl.create_dummy("nptdum0").await);
    match r {
        Ok(()) => {
            let l = t
                .with_netlink(async |nl| nl.link("nptdum0").await)
                .expect("dummy");
            assert_eq!(l.kind.as_deref(), Some("dummy"));
        }
        Err(e) => {
            // This kernel may lack the dummy module: must be classified, not a generic error.
            assert!(e.is_not_supported(), "{e}");
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
            kuryr_test_support::skip!("kernel without the dummy module, no dummy link made: {e}");
        }
    }
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn vlan_request_executes_or_reports_unsupported() {
    let t = TestNs::new();
    let r = t.with_netlink(async |nl| {
        nl.create_veth("nptv0", "nptv1", None, &VethOptions::default())
            .await?;
        nl.create_vlan("nptv0", "nptv0.100", 100, None).await
    });
    match r {
        Ok(()) => {
            let (v, p) = t
                .with_netlink(async |nl| {
                    Ok::<_, Error>((nl.link("nptv0.100").await?, nl.link("nptv0").await?))
                })
                .expect("vlan");
            assert_eq!(v.kind.as_deref(), Some("vlan"));
            assert_eq!(v.link_index, Some(p.index));
        }
        Err(e) => {
            // No 8021q module on this kernel: the request reached it and was refused cleanly.
            assert!(e.is_not_supported(), "{e}");
            assert!(
                e.to_string()
                    .starts_with("create vlan nptv0.100 on nptv0 id 100 in /run/netns/npt-"),
                "{e}"
            );
            kuryr_test_support::skip::record_skip(&format!(
                "kernel without 802.1Q, no VLAN made (the missing parent is still checked): {e}"
            ));
        }
    }
    // Missing parent is not-found, before any kernel feature question.
    let e = t
        .with_netlink(async |nl| nl.create_vlan("nope7", "nope7.5", 5, None).await)
        .expect_err("missing parent");
    assert!(e.is_not_found(), "{e}");
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn ipv6_address_route_and_ping() {
    let a = TestNs::new();
    let b = TestNs::new();
    a.with_netlink(async |nl| {
        nl.create_veth("eth0", "eth0", Some(&b), &VethOptions::default())
            .await?;
        nl.add_address("eth0", net("2001:db8:1::1/64")).await?;
        nl.set_up("eth0").await
    })
    .expect("a");
    // Explicit sysctl write + read-back inside the netns thread.
    b.run(|| {
        sysctl::write("net/ipv6/conf/eth0/disable_ipv6", "1")?;
        assert_eq!(sysctl::read("net.ipv6.conf.eth0.disable_ipv6")?, "1");
        sysctl::write("net/ipv6/conf/eth0/disable_ipv6", "0")?;
        assert_eq!(sysctl::read("net/ipv6/conf/eth0/disable_ipv6")?, "0");
        Ok::<_, Error>(())
    })
    .expect("sysctl");
    // The sysctl write only affected the test netns: the host has no eth0 of ours there.
    let e = sysctl::read("kernel/hostname").expect_err("non-net key");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    configure_interface(
        &b,
        &IfaceConfig {
            ifname: "eth0".into(),
            addresses: vec![net("2001:db8:1::2/64")],
            routes: vec![
                RouteSpec::default_via("eth0", ip("2001:db8:1::1")),
                RouteSpec::via("eth0", net("2001:db8:99::/64"), ip("2001:db8:1::1")),
            ],
            ..Default::default()
        },
    )
    .expect("b");
    let (addrs, routes, idx) = b
        .with_netlink(async |nl| {
            Ok::<_, Error>((
                nl.addresses("eth0").await?,
                nl.routes(IpFamily::V6).await?,
                nl.link("eth0").await?.index,
            ))
        })
        .expect("read back");
    assert!(addrs.contains(&net("2001:db8:1::2/64")), "{addrs:?}");
    let r = routes
        .iter()
        .find(|r| r.dest == net("2001:db8:99::/64"))
        .unwrap_or_else(|| panic!("{routes:?}"));
    assert_eq!((r.gateway, r.oif), (Some(ip("2001:db8:1::1")), Some(idx)));
    assert!(routes
        .iter()
        .any(|r| r.dest == net("::/0") && r.gateway == Some(ip("2001:db8:1::1"))));

    // Delete address: true then false. (Its low 24 bits differ from 2001:db8:1::1 on purpose:
    // a shared solicited-node group would be left by the delete while the link is settling.)
    let (d1, d2) = a
        .with_netlink(async |nl| {
            nl.add_address("eth0", net("2001:db8:2::abcd/64")).await?;
            Ok::<_, Error>((
                nl.del_address("eth0", net("2001:db8:2::abcd/64")).await?,
                nl.del_address("eth0", net("2001:db8:2::abcd/64")).await?,
            ))
        })
        .expect("del");
    assert_eq!((d1, d2), (true, false));

    wait_up(&a, "eth0");
    wait_up(&b, "eth0");
    assert!(ping(&b, ip("2001:db8:1::1")), "v6 ping");
    assert!(
        !ping(&b, ip("2001:db8:1::77")),
        "unassigned v6 address must not answer"
    );
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn tx_checksum_offload_off_and_read_back() {
    let t = TestNs::new();
    t.with_netlink(async |nl| {
        nl.create_veth("nptc0", "nptc1", None, &VethOptions::default())
            .await
    })
    .expect("veth");
    let (before, after) = t
        .run(|| {
            let before = ethtool::tx_checksum("nptc0")?;
            ethtool::set_tx_checksum("nptc0", false)?;
            Ok::<_, Error>((before, ethtool::tx_checksum("nptc0")?))
        })
        .expect("ethtool");
    assert!(before, "veth starts with tx checksumming on");
    assert!(!after, "tx checksumming must be off");
    // Cross-check with the ethtool binary.
    let out = Command::new("ip")
        .args(["netns", "exec", &t.name, "ethtool", "-k", "nptc0"])
        .output()
        .expect("run ethtool (package ethtool)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tx-checksumming: off"), "{text}");
    // Missing interface, outside the netns (host has no nptc0): not-found.
    let e = t
        .run(|| ethtool::tx_checksum("nptzz"))
        .expect_err("missing");
    assert!(e.is_not_found(), "{e}");
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn gratuitous_arp_reaches_peer_and_fills_its_neighbour_table() {
    let pod = TestNs::new();
    let peer = TestNs::new();
    let pod_mac = mac("fa:16:3e:00:00:42");
    let pod_ip = Ipv4Addr::new(10, 96, 0, 42);
    pod.with_netlink(async |nl| {
        nl.create_veth(
            "eth0",
            "nptpeer",
            Some(&peer),
            &VethOptions {
                mac: Some(pod_mac),
                ..Default::default()
            },
        )
        .await?;
        nl.add_address("eth0", net("10.96.0.42/24")).await?;
        nl.set_up("eth0").await
    })
    .expect("pod");
    peer.with_netlink(async |nl| {
        nl.add_address("nptpeer", net("10.96.0.1/24")).await?;
        nl.set_up("nptpeer").await
    })
    .expect("peer");
    // Peer accepts gratuitous ARP into its cache; capture socket opened inside peer netns
    // (once the link is up: binding to a down link leaves a pending ENETDOWN).
    let cap = peer
        .run(|| {
            sysctl::write("net/ipv4/conf/nptpeer/arp_accept", "1")?;
            PacketSocket::open("nptpeer", ETH_P_ARP)
        })
        .expect("capture socket");
    let has_entry = |ns: &TestNs| {
        ns.with_netlink(async |nl| nl.neighbours(IpFamily::V4).await)
            .expect("neighbours")
            .into_iter()
            .find(|n| n.ip == IpAddr::V4(pod_ip))
    };
    assert!(
        has_entry(&peer).is_none(),
        "no entry before the announcement"
    );

    wait_up(&pod, "eth0");
    wait_up(&peer, "nptpeer");
    pod.run(|| announce::send_gratuitous_arp("eth0", pod_ip))
        .expect("send garp");

    let expected = announce::gratuitous_arp_frame(pod_mac, pod_ip);
    let got = cap
        .recv_matching(Duration::from_secs(3), |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == pod_ip.octets()
        })
        .expect("recv")
        .expect("peer saw no gratuitous ARP");
    assert_eq!(&got[..42], &expected[..]);

    let entry = has_entry(&peer).expect("peer's neighbour table must learn the pod IP");
    assert_eq!(entry.mac, Some(pod_mac), "{entry:?}");
}

/// `announce_addresses` repeats: every round reaches the peer, v4 and v6 from one call, and
/// the event-driven oper-up wait returns for a link that comes up after the call started.
#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn announce_addresses_sends_every_round_for_every_family() {
    let pod = TestNs::new();
    let peer = TestNs::new();
    let pod_mac = mac("fa:16:3e:00:00:43");
    let v4 = Ipv4Addr::new(10, 96, 0, 43);
    let v6: Ipv6Addr = "2001:db8:43::43".parse().expect("literal");
    pod.with_netlink(async |nl| {
        nl.create_veth(
            "eth0",
            "nptpeer",
            Some(&peer),
            &VethOptions {
                mac: Some(pod_mac),
                ..Default::default()
            },
        )
        .await
    })
    .expect("pod");
    peer.with_netlink(async |nl| nl.set_up("nptpeer").await)
        .expect("peer up (admin up; carrier follows the pod end)");
    let cap = peer
        .run(|| PacketSocket::open("nptpeer", 0x0003))
        .expect("capture socket (ETH_P_ALL)");
    // Bring the pod end up from another thread while announce_addresses waits for it.
    let pod2: Netns = (*pod).clone();
    let upper = std::thread::spawn(move || {
        pod2.with_netlink(async |nl| {
            nl.add_address("eth0", net("10.96.0.43/24")).await?;
            nl.set_up("eth0").await
        })
    });
    let sent = kuryr_netplumb::announce_addresses(
        &pod,
        "eth0",
        &[IpAddr::V4(v4), IpAddr::V6(v6)],
        3,
        Duration::from_millis(50),
    )
    .expect("announce");
    upper.join().expect("thread").expect("pod up");
    assert_eq!(sent, 6, "3 rounds x 2 addresses");
    let (mut garps, mut nas) = (0, 0);
    let garp = announce::gratuitous_arp_frame(pod_mac, v4);
    let na = announce::unsolicited_na_frame(pod_mac, v6);
    while let Some(n) = {
        let mut buf = vec![0u8; 2048];
        cap.recv_timeout(&mut buf, Duration::from_millis(500))
            .expect("recv")
            .map(|n| buf[..n].to_vec())
    } {
        if n.starts_with(&garp[..]) {
            garps += 1;
        } else if n.starts_with(&na[..]) {
            nas += 1;
        }
        if garps == 3 && nas == 3 {
            break;
        }
    }
    assert_eq!(
        (garps, nas),
        (3, 3),
        "gratuitous ARPs and unsolicited NAs seen by the peer"
    );
}

#[test]
#[ignore = "needs root (netns, veth, macvlan); hack/test runs it as root"]
fn unsolicited_na_reaches_peer_and_is_accepted() {
    let pod = TestNs::new();
    let peer = TestNs::new();
    let pod_mac = mac("fa:16:3e:00:00:66");
    let pod_ip: Ipv6Addr = "2001:db8:66::6".parse().expect("literal");
    pod.with_netlink(async |nl| {
        nl.create_veth(
            "eth0",
            "nptpeer",
            Some(&peer),
            &VethOptions {
                mac: Some(pod_mac),
                ..Default::default()
            },
        )
        .await?;
        nl.add_address("eth0", net("2001:db8:66::6/64")).await?;
        nl.set_up("eth0").await
    })
    .expect("pod");
    // RFC 9131: with forwarding + accept_untracked_na the kernel creates a STALE entry from
    // a valid unsolicited NA, so the entry proves checksum/hop-limit/format were accepted.
    peer.with_netlink(async |nl| {
        nl.add_address("nptpeer", net("2001:db8:66::1/64")).await?;
        nl.set_up("nptpeer").await
    })
    .expect("peer");
    let cap = peer
        .run(|| {
            sysctl::write("net/ipv6/conf/nptpeer/forwarding", "1")?;
            sysctl::write("net/ipv6/conf/nptpeer/accept_untracked_na", "1")?;
            PacketSocket::open("nptpeer", ETH_P_IPV6)
        })
        .expect("capture socket");
    let entry = |ns: &TestNs| {
        ns.with_netlink(async |nl| nl.neighbours(IpFamily::V6).await)
            .expect("neighbours")
            .into_iter()
            .find(|n| n.ip == IpAddr::V6(pod_ip))
    };
    assert!(entry(&peer).is_none(), "no entry before the announcement");

    wait_up(&pod, "eth0");
    wait_up(&peer, "nptpeer");
    pod.run(|| announce::announce("eth0", IpAddr::V6(pod_ip)))
        .expect("send NA");

    let expected = announce::unsolicited_na_frame(pod_mac, pod_ip);
    let got = cap
        .recv_matching(Duration::from_secs(3), |f| {
            f.len() >= 86 && f[20] == 58 && f[54] == 136 && f[62..78] == pod_ip.octets()
        })
        .expect("recv")
        .expect("peer saw no neighbour advertisement");
    assert_eq!(&got[..86], &expected[..]);

    let e = entry(&peer).expect("peer kernel must accept the NA into its neighbour table");
    assert_eq!(e.mac, Some(pod_mac), "{e:?}");
}

/// A runtime that mounts netns files in /run/netns without making the directory a mount point
/// (containerd does): when the first named netns of ours makes it one, those mounts must stay
/// reachable by their path, or the runtime's umount + unlink fails with EBUSY and its pods
/// never finish terminating (seen when kuryr-daemon started on a node with running pods).
/// Runs in a private mount namespace with its own /run, so the host's /run/netns is untouched.
#[test]
#[ignore = "needs root"]
fn netns_mounts_made_before_run_netns_became_a_mount_point_can_still_be_removed() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    require_root();
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).expect("private mount namespace");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        mount(
            Some("tmpfs"),
            "/run",
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("tmpfs on /run");
        std::fs::create_dir("/run/netns").expect("mkdir /run/netns");
        // What containerd does: a plain file in the plain directory, the netns bound onto it.
        let file = "/run/netns/cni-before";
        std::fs::File::create(file).expect("netns file");
        mount(
            Some("/proc/thread-self/ns/net"),
            file,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind the netns like a runtime");
        // Our first named netns makes /run/netns a (shared) mount point.
        let name = format!(
            "npt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let _ours = Netns::create_named(&name).expect("create a named netns");
        let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
        assert!(
            mountinfo
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some("/run/netns")),
            "the test did not reach the case: /run/netns did not become a mount point\n{mountinfo}"
        );
        // The runtime's netns is still usable by its path...
        Netns::open(file).expect("the runtime's netns is still mounted at its path");
        // ...and its teardown works: umount, then unlink (EBUSY when the mount was hidden).
        umount2(file, MntFlags::MNT_DETACH).expect("umount the runtime's netns");
        std::fs::remove_file(file)
            .expect("unlink the runtime's netns file after umount (EBUSY = hidden mount)");
        Netns::delete_named(&name).expect("delete our netns");
    })
    .join()
    .expect("test thread");
}
