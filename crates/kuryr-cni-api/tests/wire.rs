//! Wire protocol types: exact JSON shapes the daemon will see, and the DEL queue naming.

use kuryr_cni_api::{
    is_queue_file_name, queue_file_name, CniCommand, CniRequest, CniResponse, CniResult,
    DelQueueEntry, IpConfig, ReadyResponse, CNI_ENDPOINT, READY_ENDPOINT,
};
use serde_json::json;

fn add_request() -> CniRequest {
    CniRequest {
        command: CniCommand::Add,
        container_id: "90c45da1".into(),
        netns: "/var/run/netns/cni-8c1f".into(),
        ifname: "eth0".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-a".into(),
        path: "/opt/cni/bin".into(),
        config: json!({"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni",
                       "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.9/32"}]}}),
    }
}

#[test]
fn endpoints() {
    assert_eq!(CNI_ENDPOINT, "/v1/cni");
    assert_eq!(READY_ENDPOINT, "/v1/ready");
}

#[test]
fn request_json_shape() {
    assert_eq!(
        add_request().to_json().unwrap(),
        r#"{"command":"ADD","container_id":"90c45da1","netns":"/var/run/netns/cni-8c1f","ifname":"eth0","args":"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-a","path":"/opt/cni/bin","config":{"cniVersion":"1.0.0","name":"kuryr","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.9/32"}]},"type":"kuryr-cni"}}"#
    );
}

#[test]
fn request_helpers() {
    let r = add_request();
    assert_eq!(r.cni_args().unwrap().pod(), Some(("ns", "pod-a")));
    assert_eq!(r.netconf().unwrap().name, "kuryr");
    assert_eq!(r.cni_version().map(|v| v.as_str()), Some("1.0.0"));
    let prev = r.prev_result().unwrap().unwrap();
    assert_eq!(
        prev.ips,
        vec![IpConfig {
            interface: None,
            address: "10.0.0.9/32".into(),
            gateway: None
        }]
    );

    // GC and STATUS carry no attachment; missing fields default to "".
    let gc: CniRequest = serde_json::from_value(json!({
        "command": "GC", "path": "/opt/cni/bin",
        "config": {"cniVersion": "1.1.0", "name": "kuryr", "type": "kuryr-cni",
                   "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"},
                                                 {"containerID": "c2"}, 5,
                                                 {"containerID": "c3", "ifname": "net1"}]}
    }))
    .unwrap();
    assert_eq!(
        (
            gc.container_id.as_str(),
            gc.netns.as_str(),
            gc.ifname.as_str()
        ),
        ("", "", "")
    );
    assert_eq!(gc.prev_result().unwrap(), None);
    assert_eq!(
        gc.valid_attachments(),
        vec![
            ("c1".to_owned(), "eth0".to_owned()),
            ("c3".to_owned(), "net1".to_owned())
        ]
    );

    for cmd in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
        let r: CniRequest = serde_json::from_value(json!({"command": cmd, "config": {}})).unwrap();
        assert_eq!(r.command.as_str(), cmd);
    }
    assert!(serde_json::from_value::<CniRequest>(json!({"command": "add", "config": {}})).is_err());
    assert!(serde_json::from_value::<CniRequest>(json!({"command": "ADD"})).is_err());
}

#[test]
fn response_json_shapes() {
    assert_eq!(CniResponse::ok().to_json(), r#"{"result":null}"#);
    let r = CniResponse::with_result(CniResult {
        ips: vec![IpConfig {
            interface: None,
            address: "10.0.0.5/24".into(),
            gateway: None,
        }],
        ..Default::default()
    });
    assert_eq!(
        r.to_json(),
        r#"{"result":{"ips":[{"address":"10.0.0.5/24"}]}}"#
    );
    for body in ["{}", r#"{"result":null}"#] {
        assert_eq!(
            serde_json::from_str::<CniResponse>(body).unwrap(),
            CniResponse::ok()
        );
    }
    assert_eq!(
        serde_json::to_string(&ReadyResponse {
            ready: true,
            reason: None
        })
        .unwrap(),
        r#"{"ready":true}"#
    );
    assert_eq!(
        serde_json::to_string(&ReadyResponse {
            ready: false,
            reason: Some("no pool".into())
        })
        .unwrap(),
        r#"{"ready":false,"reason":"no pool"}"#
    );
}

#[test]
fn del_queue_entry_round_trip() {
    let mut req = add_request();
    req.command = CniCommand::Del;
    req.netns.clear();
    let entry = DelQueueEntry::new(req.clone(), 1_795_708_375_539, "connect failed");
    assert_eq!(entry.format, 1);
    assert_eq!(entry.file_name(), "90c45da1@eth0.json");
    let back = DelQueueEntry::from_json(entry.to_json().unwrap().as_bytes()).unwrap();
    assert_eq!(back, entry);
    assert_eq!(back.request, req);
    assert_eq!(DelQueueEntry::from_json(b"{}").unwrap_err().code, 6);
}

#[test]
fn queue_file_names() {
    let table = [
        ("default-c1", "eth0", "default-c1@eth0.json"),
        ("775cd3138186", "net1", "775cd3138186@net1.json"),
        ("c", "a@b", "c@a%40b.json"),
        ("c", "e%0", "c@e%250.json"),
        ("c", "\u{1}*é", "c@%01%2A%C3%A9.json"),
    ];
    for (cid, ifname, want) in table {
        let name = queue_file_name(cid, ifname);
        assert_eq!(name, want);
        assert!(is_queue_file_name(&name));
    }
    let long_id = "a".repeat(300);
    let long = queue_file_name(&long_id, "eth0");
    assert!(long.len() < 140, "{long}");
    assert!(long.starts_with(&"a".repeat(100)));
    assert_ne!(
        long,
        queue_file_name(&long_id, "eth1"),
        "hash covers the whole key"
    );
    assert!(is_queue_file_name(&long));

    for (name, ok) in [
        ("x.json", true),
        (".x.json.tmp.12", false),
        (".x.json", false),
        ("x.json.tmp", false),
        (".json", false),
    ] {
        assert_eq!(is_queue_file_name(name), ok, "{name}");
    }
}
