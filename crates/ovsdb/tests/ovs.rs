//! Integration tests against a real ovsdb-server started per test.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{OvsdbServer, BRIDGE};
use kuryr_ovsdb::{
    Client, Condition, Error, MonitorRequest, Mutation, Mutator, Operation, Ovs, PortSpec, Row,
    Uuid, Value, WaitUntil, OVS_DB,
};

const T: Duration = Duration::from_secs(10);

async fn ovs(s: &OvsdbServer) -> Ovs {
    Ovs::connect(&s.endpoint(), T).await.expect("connect")
}

fn pod_port(ifname: &str) -> PortSpec {
    PortSpec::new(BRIDGE, ifname)
        .iface_id("6f1e0a3c-0000-4000-8000-000000000001")
        .attached_mac("fa:16:3e:12:34:56")
        .iface_status("active")
        .vm_uuid("pod-uid-1")
}

/// Parse `{a="b", c=d}` as printed by ovs-vsctl into a map.
fn vsctl_map(s: &str) -> BTreeMap<String, String> {
    s.trim_matches(|c| c == '{' || c == '}')
        .split(", ")
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.trim_matches('"').to_owned(),
                v.trim_matches('"').to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn list_dbs_schema_and_echo_over_unix_and_tcp() {
    let s = OvsdbServer::start();
    for ep in [s.endpoint(), s.tcp_endpoint()] {
        let c = Client::connect(&ep, T).await.expect("connect");
        assert!(
            c.list_dbs()
                .await
                .expect("list_dbs")
                .contains(&OVS_DB.to_owned()),
            "{ep}"
        );
        // The ~100 KiB schema arrives over many reads: exercises stream framing.
        let schema = c.get_schema(OVS_DB).await.expect("schema");
        assert_eq!(schema["name"], OVS_DB);
        assert!(schema["tables"]["Interface"]["columns"]["ofport"].is_object());
        c.echo().await.expect("echo");
        let err = c.get_schema("NoSuchDb").await.expect_err("unknown db");
        assert!(
            matches!(err, Error::Rpc { ref method, .. } if method == "get_schema"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn bridge_exists_present_and_absent() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    let br = o
        .bridge_exists(BRIDGE)
        .await
        .expect("query")
        .expect("present");
    assert_eq!(br.name, BRIDGE);
    assert_eq!(br.datapath_type, "netdev");
    assert_eq!(
        br.uuid.as_str(),
        s.vsctl.run(&["get", "Bridge", BRIDGE, "_uuid"])
    );
    assert!(o.bridge_exists("br-nope").await.expect("query").is_none());
}

#[tokio::test]
async fn add_port_sets_external_ids_and_type() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    let out = o
        .add_port(&pod_port("tap1").iface_type("internal"))
        .await
        .expect("add_port");
    assert!(out.created);
    assert!(out.next_cfg.is_some());
    // Independent check with ovs-vsctl.
    let ids = vsctl_map(&s.vsctl.run(&["get", "Interface", "tap1", "external_ids"]));
    assert_eq!(
        ids.get("iface-id").map(String::as_str),
        Some("6f1e0a3c-0000-4000-8000-000000000001")
    );
    assert_eq!(
        ids.get("attached-mac").map(String::as_str),
        Some("fa:16:3e:12:34:56")
    );
    assert_eq!(ids.get("iface-status").map(String::as_str), Some("active"));
    assert_eq!(ids.get("vm-uuid").map(String::as_str), Some("pod-uid-1"));
    assert_eq!(
        s.vsctl.run(&["get", "Interface", "tap1", "type"]),
        "internal"
    );
    assert_eq!(s.vsctl.run(&["port-to-br", "tap1"]), BRIDGE);
    assert_eq!(
        s.vsctl.run(&["get", "Port", "tap1", "_uuid"]),
        out.port_uuid.as_str()
    );
    assert_eq!(
        s.vsctl.run(&["get", "Interface", "tap1", "_uuid"]),
        out.interface_uuid.as_str()
    );
    assert_eq!(
        s.vsctl.run(&["get", "Open_vSwitch", ".", "next_cfg"]),
        out.next_cfg.map(|c| c.to_string()).unwrap_or_default()
    );
}

#[tokio::test]
async fn add_port_twice_is_idempotent_and_merges_ids() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    let first = o
        .add_port(&pod_port("tap2").external_id("keep-me", "1"))
        .await
        .expect("first");
    let second = o
        .add_port(
            &PortSpec::new(BRIDGE, "tap2")
                .iface_id("new-port-id")
                .iface_status("active"),
        )
        .await
        .expect("second");
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.port_uuid, second.port_uuid);
    assert_eq!(first.interface_uuid, second.interface_uuid);
    assert!(second.next_cfg > first.next_cfg);
    let ports = s.vsctl.run(&["list-ports", BRIDGE]);
    assert_eq!(ports.lines().filter(|l| *l == "tap2").count(), 1, "{ports}");
    assert_eq!(
        s.vsctl
            .run(&["--columns=_uuid", "--bare", "find", "Port", "name=tap2"])
            .lines()
            .count(),
        1
    );
    let ids = vsctl_map(&s.vsctl.run(&["get", "Interface", "tap2", "external_ids"]));
    assert_eq!(
        ids.get("iface-id").map(String::as_str),
        Some("new-port-id"),
        "updated"
    );
    assert_eq!(
        ids.get("keep-me").map(String::as_str),
        Some("1"),
        "untouched keys kept"
    );
    assert_eq!(
        ids.get("attached-mac").map(String::as_str),
        Some("fa:16:3e:12:34:56")
    );
}

#[tokio::test]
async fn concurrent_add_port_same_name_yields_one_port() {
    let s = OvsdbServer::start();
    let a = ovs(&s).await;
    let b = ovs(&s).await;
    let spec = pod_port("tap-race");
    let (ra, rb) = tokio::join!(a.add_port(&spec), b.add_port(&spec));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!(ra.port_uuid, rb.port_uuid);
    assert_eq!(
        s.vsctl
            .run(&["--columns=_uuid", "--bare", "find", "Port", "name=tap-race"])
            .lines()
            .count(),
        1
    );
}

#[tokio::test]
async fn add_port_errors() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    let err = o
        .add_port(&PortSpec::new("br-missing", "tap9"))
        .await
        .expect_err("no bridge");
    assert!(
        matches!(err, Error::NotFound { kind: "bridge", ref name } if name == "br-missing"),
        "{err}"
    );
    s.vsctl.run(&["add-br", "br-other"]);
    s.vsctl.run(&["add-port", "br-other", "tap-other"]);
    let err = o
        .add_port(&PortSpec::new(BRIDGE, "tap-other"))
        .await
        .expect_err("other bridge");
    assert!(matches!(err, Error::Conflict(_)), "{err}");
}

#[tokio::test]
async fn del_port_removes_rows_and_is_idempotent() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    o.add_port(&pod_port("tap3")).await.expect("add");
    assert!(s
        .vsctl
        .run(&["list-ports", BRIDGE])
        .lines()
        .any(|l| l == "tap3"));
    assert!(o.del_port(BRIDGE, "tap3").await.expect("del"));
    assert!(!s
        .vsctl
        .run(&["list-ports", BRIDGE])
        .lines()
        .any(|l| l == "tap3"));
    // Port and Interface rows were garbage-collected by ovsdb.
    assert_eq!(
        s.vsctl
            .run(&["--bare", "--columns=name", "find", "Port", "name=tap3"]),
        ""
    );
    assert_eq!(
        s.vsctl
            .run(&["--bare", "--columns=name", "find", "Interface", "name=tap3"]),
        ""
    );
    assert!(!o.del_port(BRIDGE, "tap3").await.expect("second del ok"));
    assert!(!o
        .del_port("br-missing", "tap3")
        .await
        .expect("missing bridge ok"));
    // A port on another bridge is left alone.
    s.vsctl.run(&["add-br", "br-other"]);
    s.vsctl.run(&["add-port", "br-other", "tap-other"]);
    assert!(!o.del_port(BRIDGE, "tap-other").await.expect("not ours"));
    assert_eq!(s.vsctl.run(&["port-to-br", "tap-other"]), "br-other");
}

#[tokio::test]
async fn list_ports_and_find_interface() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    o.add_port(&pod_port("tap-a")).await.expect("add a");
    o.add_port(&PortSpec::new(BRIDGE, "tap-b").iface_id("id-b"))
        .await
        .expect("add b");
    s.vsctl
        .run(&["set", "Port", "tap-b", "external_ids:owner=kuryr"]);
    let ports = o.list_ports(BRIDGE).await.expect("list");
    let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec![BRIDGE, "tap-a", "tap-b"]);
    let b = &ports[2];
    assert_eq!(
        b.external_ids.get("owner").map(String::as_str),
        Some("kuryr")
    );
    assert_eq!(b.interfaces.len(), 1);
    assert_eq!(
        b.interfaces[0]
            .external_ids
            .get("iface-id")
            .map(String::as_str),
        Some("id-b")
    );
    assert_eq!(ports[0].interfaces[0].iface_type, "internal");
    assert!(matches!(
        o.list_ports("br-missing").await,
        Err(Error::NotFound { .. })
    ));

    let i = o
        .find_interface("tap-a")
        .await
        .expect("find")
        .expect("present");
    assert_eq!(i.name, "tap-a");
    assert_eq!(
        i.uuid.as_str(),
        s.vsctl.run(&["get", "Interface", "tap-a", "_uuid"])
    );
    assert_eq!(
        i.external_ids.get("vm-uuid").map(String::as_str),
        Some("pod-uid-1")
    );
    assert_eq!(
        (
            i.ofport,
            i.error.as_deref(),
            i.admin_state.as_deref(),
            i.link_state.as_deref()
        ),
        (None, None, None, None)
    );
    assert!(o.find_interface("tap-zzz").await.expect("find").is_none());
}

#[tokio::test]
async fn open_vswitch_other_config_and_external_ids() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    assert!(!o.userspace_tso_enabled().await.expect("read"));
    s.vsctl.run(&[
        "set",
        "Open_vSwitch",
        ".",
        "other_config:userspace-tso-enable=true",
    ]);
    s.vsctl
        .run(&["set", "Open_vSwitch", ".", "external_ids:system-id=node-1"]);
    let oc = o.open_vswitch_other_config().await.expect("other_config");
    assert_eq!(
        oc.get("userspace-tso-enable").map(String::as_str),
        Some("true")
    );
    assert!(o.userspace_tso_enabled().await.expect("read"));
    assert_eq!(
        o.external_ids()
            .await
            .expect("ids")
            .get("system-id")
            .map(String::as_str),
        Some("node-1")
    );
}

#[tokio::test]
async fn transaction_errors_are_surfaced() {
    let s = OvsdbServer::start();
    let c = Client::connect(&s.endpoint(), T).await.expect("connect");
    // Unknown table: syntax error on operation 0.
    let err = c
        .transact(
            OVS_DB,
            &[Operation::insert("NoSuchTable", Row::new(), None)],
        )
        .await
        .expect_err("must fail");
    match &err {
        Error::Transaction {
            index,
            op,
            error,
            details,
        } => {
            assert_eq!(
                (*index, op.as_str(), error.as_str()),
                (0, "insert", "syntax error")
            );
            assert!(
                details
                    .as_deref()
                    .unwrap_or_default()
                    .contains("No table named NoSuchTable"),
                "{details:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("operation 0 (insert): syntax error"),
        "{err}"
    );

    // Commit-time referential integrity error, reported after the last op.
    let dangling = Uuid("00000000-0000-0000-0000-000000000001".into());
    let ops = [
        Operation::comment("kuryr-ovsdb test"),
        Operation::insert(
            "Port",
            Row::new().with("name", "bad").with("interfaces", dangling),
            None,
        ),
    ];
    let err = c.transact(OVS_DB, &ops).await.expect_err("must fail");
    assert!(
        matches!(&err, Error::Transaction { index: 2, op, error, .. } if op == "commit" && error == "referential integrity violation"),
        "{err}"
    );

    // A failed wait aborts the transaction ("timed out") and nothing is applied.
    let ops = [
        Operation::wait(
            "Bridge",
            vec![Condition::eq("name", BRIDGE)],
            &["datapath_type"],
            WaitUntil::Eq,
            vec![Row::new().with("datapath_type", "system")],
            Some(0),
        ),
        Operation::update(
            "Bridge",
            vec![Condition::eq("name", BRIDGE)],
            Row::new().with("datapath_type", "dummy"),
        ),
    ];
    let err = c.transact(OVS_DB, &ops).await.expect_err("wait fails");
    assert!(
        matches!(&err, Error::Transaction { index: 0, op, error, .. } if op == "wait" && error == "timed out"),
        "{err}"
    );
    assert_eq!(
        s.vsctl.run(&["get", "Bridge", BRIDGE, "datapath_type"]),
        "netdev"
    );

    // And a successful select/mutate/delete round trip on the typed ops.
    let res = c
        .transact(
            OVS_DB,
            &[
                Operation::mutate(
                    "Bridge",
                    vec![Condition::eq("name", BRIDGE)],
                    vec![Mutation::new(
                        "external_ids",
                        Mutator::Insert,
                        Value::map([("k", "v")]),
                    )],
                ),
                Operation::select(
                    "Bridge",
                    vec![Condition::eq("name", BRIDGE)],
                    &["external_ids"],
                ),
                Operation::delete("Bridge", vec![Condition::eq("name", "br-none")]),
            ],
        )
        .await
        .expect("ok");
    assert_eq!(res[0].count(), 1);
    assert_eq!(
        res[1].rows()[0]
            .get_string_map("external_ids")
            .get("k")
            .map(String::as_str),
        Some("v")
    );
    assert_eq!(res[2].count(), 0);
}

#[tokio::test]
async fn timeout_when_server_is_frozen() {
    let s = OvsdbServer::start();
    let o = Ovs::connect(&s.endpoint(), Duration::from_millis(500))
        .await
        .expect("connect");
    let c = o.client().await.expect("client");
    c.echo().await.expect("alive");
    s.freeze();
    let started = std::time::Instant::now();
    let err = o.bridge_exists(BRIDGE).await.expect_err("frozen");
    assert!(
        matches!(&err, Error::Timeout { method, .. } if method == "transact"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = c
        .call_timeout(
            "list_dbs",
            serde_json::json!([]),
            Duration::from_millis(200),
        )
        .await
        .expect_err("frozen");
    assert!(err.to_string().contains("list_dbs timed out"), "{err}");
    s.thaw();
    // Late answers to abandoned calls are dropped; the connection is still usable.
    assert!(o.bridge_exists(BRIDGE).await.expect("after thaw").is_some());
}

#[tokio::test]
async fn connect_errors() {
    let err = Client::connect("unix:/nonexistent/kuryr/db.sock", T)
        .await
        .expect_err("bad path");
    assert!(
        matches!(&err, Error::Connect { endpoint, .. } if endpoint == "unix:/nonexistent/kuryr/db.sock")
    );
    assert!(
        err.to_string().contains("/nonexistent/kuryr/db.sock"),
        "{err}"
    );
    assert!(matches!(
        Ovs::connect("ssl:1.2.3.4:6640", T).await,
        Err(Error::InvalidEndpoint(_))
    ));
    let lazy = Ovs::lazy("/nonexistent/kuryr/db.sock", T);
    assert!(matches!(
        lazy.bridge_exists("x").await,
        Err(Error::Connect { .. })
    ));
}

#[tokio::test]
async fn reconnects_after_server_restart() {
    let mut s = OvsdbServer::start();
    let o = ovs(&s).await;
    assert!(o.bridge_exists(BRIDGE).await.expect("before").is_some());
    s.restart();
    // The old connection saw EOF; the next call reconnects (allow the EOF to be processed).
    let mut last = None;
    for _ in 0..50 {
        match o.bridge_exists(BRIDGE).await {
            Ok(b) => {
                last = Some(b);
                break;
            }
            Err(Error::Disconnected) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        last.flatten().is_some(),
        "data survives restart and client reconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_wait_sees_external_ids_and_ofport_request_changes() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    o.add_port(&pod_port("tap-m")).await.expect("add");
    assert!(!o
        .find_interface("tap-m")
        .await
        .expect("find")
        .expect("row")
        .external_ids
        .contains_key("marker"));

    let vs = s.vsctl.clone();
    let changer = tokio::task::spawn_blocking(move || {
        // Deliberate: the change comes after the wait started (what the test is about).
        std::thread::sleep(Duration::from_millis(300));
        vs.run(&["set", "Interface", "tap-m", "external_ids:marker=ready"]);
        std::thread::sleep(Duration::from_millis(100));
        vs.run(&["set", "Interface", "tap-m", "ofport_request=42"]);
    });
    let marker = o
        .wait_interface("tap-m", &["external_ids"], Duration::from_secs(10), |row| {
            row.get_string_map("external_ids")
                .get("marker")
                .cloned()
                .map(Ok)
        })
        .await
        .expect("external_ids change seen");
    assert_eq!(marker, "ready");
    let req = o
        .wait_interface(
            "tap-m",
            &["ofport_request"],
            Duration::from_secs(10),
            |row| row.get_i64("ofport_request").map(Ok),
        )
        .await
        .expect("ofport_request seen");
    assert_eq!(req, 42);
    changer.await.expect("changer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_monitor_reports_insert_modify_delete() {
    let s = OvsdbServer::start();
    let c = Client::connect(&s.endpoint(), T).await.expect("connect");
    let mut mon = c
        .monitor(
            OVS_DB,
            &[MonitorRequest::new("Port", &["name", "external_ids"])],
        )
        .await
        .expect("monitor");
    assert_eq!(mon.initial()["Port"].len(), 1, "bridge internal port");
    let vs = s.vsctl.clone();
    tokio::task::spawn_blocking(move || {
        vs.run(&["add-port", BRIDGE, "tap-x"]);
        vs.run(&["set", "Port", "tap-x", "external_ids:a=b"]);
        vs.run(&["del-port", BRIDGE, "tap-x"]);
    })
    .await
    .expect("vsctl");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let upd = tokio::time::timeout(T, mon.next())
            .await
            .expect("in time")
            .expect("update");
        for u in upd.get("Port").into_iter().flat_map(|t| t.values()) {
            seen.push(match (&u.old, &u.new) {
                (None, Some(_)) => "insert",
                (Some(_), Some(_)) => "modify",
                (Some(_), None) => "delete",
                _ => "none",
            });
        }
    }
    assert_eq!(seen, vec!["insert", "modify", "delete"]);
    drop(mon);
    c.echo()
        .await
        .expect("connection fine after monitor_cancel");
}

#[tokio::test]
async fn wait_ofport_times_out_without_vswitchd_and_reports_errors() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    o.add_port(&pod_port("tap-o")).await.expect("add");
    let err = o
        .wait_ofport("tap-o", Duration::from_millis(300))
        .await
        .expect_err("no vswitchd");
    assert!(
        matches!(&err, Error::Timeout { method, .. } if method == "wait_ofport(tap-o)"),
        "{err}"
    );

    // Play vswitchd: it writes ofport (and error) through ovsdb.
    let c = o.client().await.expect("client");
    let set = |row: Row| Operation::update("Interface", vec![Condition::eq("name", "tap-o")], row);
    let waiter = o.wait_ofport("tap-o", Duration::from_secs(10));
    let writer = async {
        // Deliberate: vswitchd writes after the wait started (what the test is about).
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.transact(OVS_DB, &[set(Row::new().with("ofport", Some(7)))])
            .await
            .expect("set ofport");
    };
    let (port, ()) = tokio::join!(waiter, writer);
    assert_eq!(port.expect("ofport"), 7);

    c.transact(
        OVS_DB,
        &[set(Row::new().with("ofport", Some(-1)).with(
            "error",
            Value::set(["could not open network device tap-o"]),
        ))],
    )
    .await
    .expect("set error");
    let err = o.wait_ofport("tap-o", T).await.expect_err("ofport -1");
    assert!(
        matches!(&err, Error::Interface { name, error } if name == "tap-o" && error.contains("could not open")),
        "{err}"
    );
}

#[tokio::test]
async fn wait_for_cfg_times_out_and_succeeds_with_fake_vswitchd() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    // No vswitchd: cur_cfg never catches up.
    let err = o
        .add_port(&pod_port("tap-w").wait_vswitchd(Duration::from_millis(300)))
        .await
        .expect_err("no vswitchd");
    assert!(
        matches!(&err, Error::Timeout { method, .. } if method == "wait_for_cfg"),
        "{err}"
    );
    // The port itself was committed before waiting.
    assert_eq!(s.vsctl.run(&["port-to-br", "tap-w"]), BRIDGE);

    // Fake vswitchd: copy next_cfg to cur_cfg whenever it changes (monitor-driven).
    let fake = Client::connect(&s.endpoint(), T).await.expect("connect");
    // Monitor set up before the change, so no bump can be missed.
    let mut mon = fake
        .monitor(
            OVS_DB,
            &[MonitorRequest::new("Open_vSwitch", &["next_cfg"])],
        )
        .await
        .expect("monitor");
    let vswitchd = tokio::spawn(async move {
        loop {
            let upd = mon.next().await.expect("update");
            for (uuid, u) in upd.get("Open_vSwitch").into_iter().flatten() {
                if let Some(n) = u.new.as_ref().and_then(|r| r.get_i64("next_cfg")) {
                    // The fake vswitchd's latency, simulated.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    fake.transact(
                        OVS_DB,
                        &[Operation::update(
                            "Open_vSwitch",
                            vec![Condition::eq("_uuid", uuid)],
                            Row::new().with("cur_cfg", n),
                        )],
                    )
                    .await
                    .expect("set cur_cfg");
                }
            }
        }
    });
    let out = o
        .add_port(&pod_port("tap-w2").wait_vswitchd(Duration::from_secs(10)))
        .await
        .expect("vswitchd caught up");
    let cur: i64 = s
        .vsctl
        .run(&["get", "Open_vSwitch", ".", "cur_cfg"])
        .parse()
        .expect("int");
    assert!(Some(cur) >= out.next_cfg);
    assert!(o
        .del_port_wait(BRIDGE, "tap-w2", Some(Duration::from_secs(10)))
        .await
        .expect("del + wait"));
    vswitchd.abort();
}

/// ovsdb-server probes idle TCP clients with `echo` every 5 s and drops them if unanswered.
#[tokio::test]
async fn answers_server_inactivity_probes() {
    let s = OvsdbServer::start();
    let c = Client::connect(&s.tcp_endpoint(), T)
        .await
        .expect("connect");
    c.echo().await.expect("alive");
    // The server probes after 5 s idle and drops the client 5 s after an unanswered probe: a
    // second probe answered means it kept the connection after the first answer. Wait for it.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.echoes_answered() < 2 {
        assert!(
            tokio::time::Instant::now() < end && !c.is_closed(),
            "{} echo probes answered in 20 s, closed: {}",
            c.echoes_answered(),
            c.is_closed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!c.is_closed());
    assert!(c
        .list_dbs()
        .await
        .expect("still connected")
        .contains(&OVS_DB.to_owned()));
}

/// A fake ovs-vswitchd: whenever `next_cfg` changes it records whether Port `watch` exists in
/// the database at that moment (what a real vswitchd would configure), then copies `next_cfg`
/// to `cur_cfg` after `delay`.
/// What the fake vswitchd saw: (next_cfg, whether the watched port existed).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(i64, bool)>>>;

fn fake_vswitchd(
    s: &OvsdbServer,
    watch: &'static str,
    delay: Duration,
) -> (tokio::task::JoinHandle<()>, Seen) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ep = s.endpoint();
    let log = seen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let fake = Client::connect(&ep, T).await.expect("connect");
        let mut mon = fake
            .monitor(
                OVS_DB,
                &[MonitorRequest::new("Open_vSwitch", &["next_cfg"])],
            )
            .await
            .expect("monitor");
        ready_tx.send(()).expect("ready");
        loop {
            let upd = mon.next().await.expect("update");
            for (uuid, u) in upd.get("Open_vSwitch").into_iter().flatten() {
                let Some(n) = u.new.as_ref().and_then(|r| r.get_i64("next_cfg")) else {
                    continue;
                };
                let res = fake
                    .transact(
                        OVS_DB,
                        &[Operation::select(
                            "Port",
                            vec![Condition::eq("name", watch)],
                            &["_uuid"],
                        )],
                    )
                    .await
                    .expect("select");
                let present = !res[0].rows().is_empty();
                log.lock().expect("log").push((n, present));
                // The fake vswitchd's latency, simulated.
                tokio::time::sleep(delay).await;
                fake.transact(
                    OVS_DB,
                    &[Operation::update(
                        "Open_vSwitch",
                        vec![Condition::eq("_uuid", uuid)],
                        Row::new().with("cur_cfg", n),
                    )],
                )
                .await
                .expect("set cur_cfg");
            }
        }
    });
    // The monitor is in place before the caller changes anything.
    tokio::task::block_in_place(|| ready_rx.recv().expect("fake vswitchd started"));
    (task, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_removes_the_port_lets_vswitchd_apply_it_then_inserts_afresh() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    let first = o
        .add_port(&pod_port("tap-r").external_id("stale-key", "1"))
        .await
        .expect("first");
    let (vswitchd, seen) = fake_vswitchd(&s, "tap-r", Duration::from_millis(100));
    let t = std::time::Instant::now();
    let second = o
        .add_port(&pod_port("tap-r").replace(Duration::from_secs(10)))
        .await
        .expect("replace");
    let took = t.elapsed();
    vswitchd.abort();
    assert!(second.created, "{second:?}");
    assert_eq!(second.replaced, Some(true), "vswitchd applied the removal");
    assert_ne!(second.port_uuid, first.port_uuid, "a new Port row");
    assert_ne!(
        second.interface_uuid, first.interface_uuid,
        "a new Interface row"
    );
    // vswitchd saw a configuration without the port between the two rows (what makes it close
    // the old device and open the new one): that is the whole point.
    let seen = seen.lock().expect("log").clone();
    assert!(
        seen.iter().any(|(_, present)| !present),
        "vswitchd never saw the port removed: {seen:?}"
    );
    assert!(
        took >= Duration::from_millis(100),
        "replace returned after {took:?}, before the fake vswitchd applied the removal"
    );
    // Fresh row: the external ids are the spec's, old keys are gone.
    let ids = vsctl_map(&s.vsctl.run(&["get", "Interface", "tap-r", "external_ids"]));
    assert_eq!(ids.get("stale-key"), None, "{ids:?}");
    assert_eq!(
        ids.get("iface-id").map(String::as_str),
        Some("6f1e0a3c-0000-4000-8000-000000000001")
    );
    assert_eq!(s.vsctl.run(&["port-to-br", "tap-r"]), BRIDGE);
    assert_eq!(
        s.vsctl
            .run(&["--columns=_uuid", "--bare", "find", "Port", "name=tap-r"])
            .lines()
            .count(),
        1
    );
    // Without `replace` the same call updates the row in place (the old behaviour).
    let third = o.add_port(&pod_port("tap-r")).await.expect("update");
    assert!(!third.created);
    assert_eq!(third.replaced, None);
    assert_eq!(third.port_uuid, second.port_uuid);
}

#[tokio::test]
async fn replace_goes_on_after_its_bound_when_vswitchd_is_down_and_creates_when_absent() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    // Nothing to replace: a plain insert, no wait.
    let t = std::time::Instant::now();
    let created = o
        .add_port(&pod_port("tap-d").replace(Duration::from_secs(5)))
        .await
        .expect("create");
    assert!(created.created);
    assert_eq!(created.replaced, None);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // No vswitchd: the removal is never applied; the port is inserted after the bound.
    let t = std::time::Instant::now();
    let out = o
        .add_port(&pod_port("tap-d").replace(Duration::from_millis(400)))
        .await
        .expect("replace without vswitchd");
    let took = t.elapsed();
    assert_eq!(out.replaced, Some(false));
    assert_ne!(out.port_uuid, created.port_uuid);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(s.vsctl.run(&["port-to-br", "tap-d"]), BRIDGE);
    // ifindex is read (unset without vswitchd).
    let iface = o.find_interface("tap-d").await.expect("find").expect("row");
    assert_eq!(iface.uuid, out.interface_uuid);
    assert_eq!(iface.ifindex, None);
    let c = Client::connect(&s.endpoint(), T).await.expect("connect");
    c.transact(
        OVS_DB,
        &[Operation::update(
            "Interface",
            vec![Condition::eq("name", "tap-d")],
            Row::new().with("ifindex", Some(42)).with("ofport", Some(7)),
        )],
    )
    .await
    .expect("set ifindex");
    let iface = o.find_interface("tap-d").await.expect("find").expect("row");
    assert_eq!((iface.ifindex, iface.ofport), (Some(42), Some(7)));
}

#[tokio::test]
async fn vswitchd_running_is_whether_someone_holds_its_lock_and_never_keeps_it() {
    let s = OvsdbServer::start();
    let o = ovs(&s).await;
    assert!(!o.vswitchd_running().await.expect("probe"), "no vswitchd");
    // Play vswitchd: hold the lock `ovs_vswitchd` as it does.
    let fake = Client::connect(&s.endpoint(), T).await.expect("connect");
    let r = fake
        .call("lock", serde_json::json!(["ovs_vswitchd"]))
        .await
        .expect("lock");
    assert_eq!(r["locked"], true, "the probe left the lock free: {r}");
    assert!(o.vswitchd_running().await.expect("probe"), "lock held");
    // The probe did not stay queued for it: after vswitchd leaves, another holder gets it at once.
    fake.call("unlock", serde_json::json!(["ovs_vswitchd"]))
        .await
        .expect("unlock");
    let other = Client::connect(&s.endpoint(), T).await.expect("connect");
    let r = other
        .call("lock", serde_json::json!(["ovs_vswitchd"]))
        .await
        .expect("lock");
    assert_eq!(r["locked"], true, "{r}");
}
