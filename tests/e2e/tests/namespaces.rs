//! Namespace networks on the real stack (`[kubernetes] pod_subnets_driver = namespace`):
//! kuryr-controller (namespace and kuryrnetwork handlers) and kuryr-daemon as host services,
//! kubelet creates busybox pods in two namespaces. Each namespace gets its own Neutron network
//! and subnet from the `kuryr-namespaces` pool, attached to `kuryr-router`; its pods get IPs from
//! it and ping each other, the other namespace's pods (routed by `kuryr-router`) and are pinged
//! by a plain Neutron port on the default pod network (a "VM"). Deleting the namespaces removes
//! their networks, subnets and router interfaces. Times printed.
//!
//! The pods' security group is the test's own (ingress from the pod network, the namespace
//! pool, the service and external CIDRs): the stack's `kuryr-pods` group of an older stack does
//! not allow the namespace pool yet.

use kuryr_e2e::deploy::{cluster_lock, kjson};
use kuryr_e2e::kuryr::{self, Namespace};
use kuryr_e2e::vm::{Cloud, PlainPort};
use kuryr_e2e::{kubectl, run, stack_env, wait_for};
use kuryr_openstack::neutron::{
    Direction, EtherType, SecurityGroupCreate, SecurityGroupRuleCreate,
};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Whether IPv4 `ip` is in `cidr` (`a.b.c.d/n`).
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("cidr");
    let (IpAddr::V4(ip), Ok(std::net::IpAddr::V4(net)), Ok(len)) =
        (ip, net.parse::<IpAddr>(), len.parse::<u32>())
    else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn pod_ip(ns: &str, pod: &str) -> IpAddr {
    kjson(kubectl().args(["get", "pod", "-n", ns, pod, "-o", "json"]))["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .parse()
        .expect("ip")
}

fn wait_ready(ns: &str, what: &str) {
    let out = run(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "-n",
        ns,
        "pod",
        "--all",
    ]));
    if !out.status.success() {
        let d = run(kubectl().args(["describe", "pods", "-n", ns]));
        let k = run(kubectl().args(["get", "kuryrnetworks,kuryrports", "-n", ns, "-o", "yaml"]));
        panic!(
            "{what}: pods of {ns} not Ready: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&d.stdout),
            String::from_utf8_lossy(&k.stdout)
        );
    }
}

/// Whether `ns/pod` gets an answer to ping; a failed `kubectl exec` panics (it is no "refused").
fn ping(ns: &str, pod: &str, to: IpAddr) -> bool {
    kuryr_e2e::exec_probe(ns, pod, &format!("ping -c 3 -i 0.2 -W 2 {to}")).0 == 0
}

/// The test's pod security group, deleted on drop.
struct Group<'a> {
    cloud: &'a Cloud,
    id: String,
}

impl<'a> Group<'a> {
    fn create(cloud: &'a Cloud, cidrs: &[&str]) -> Group<'a> {
        let name = kuryr_e2e::unique("kst-ns-sg-");
        let sg = cloud
            .rt
            .block_on(cloud.neutron.create_security_group(&SecurityGroupCreate {
                name,
                description: "kuryr-rs e2e namespaces: pod group".into(),
                ..Default::default()
            }))
            .expect("create security group");
        for c in cidrs {
            let rule = SecurityGroupRuleCreate {
                security_group_id: sg.id.clone(),
                direction: Direction::Ingress,
                ethertype: EtherType::IPv4,
                protocol: None,
                port_range_min: None,
                port_range_max: None,
                remote_ip_prefix: Some(c.to_string()),
                remote_group_id: None,
                remote_address_group_id: None,
                description: String::new(),
                project_id: String::new(),
            };
            cloud
                .rt
                .block_on(cloud.neutron.create_security_group_rule(&rule))
                .expect("rule");
        }
        Group { cloud, id: sg.id }
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        let _ = self
            .cloud
            .rt
            .block_on(self.cloud.neutron.delete_security_group(&self.id));
    }
}

/// The networks kuryr-controller stamped for namespace `ns`.
fn stamped(cloud: &Cloud, ns: &str) -> Vec<kuryr_openstack::neutron::Network> {
    let all = cloud
        .rt
        .block_on(cloud.neutron.list_networks(&kuryr_openstack::Query::new()))
        .expect("networks");
    let mark = format!(", {ns}/{ns} (KuryrNetwork uid ");
    all.into_iter()
        .filter(|n| {
            n.description.starts_with("kuryr-rs namespace network: ")
                && n.description.contains(&mark)
        })
        .collect()
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn namespaces_get_their_own_networks_and_reach_each_other_through_the_router() {
    // Each test runs its own kuryr-daemon as the node's CNI: one at a time.
    let _node = cluster_lock();
    let env = stack_env();
    let cloud = Cloud::connect();
    let pool = cloud
        .rt
        .block_on(cloud.neutron.get_subnetpool(&env["SUBNETPOOL_ID"]))
        .expect("subnet pool");
    let pool_cidr = pool.prefixes.first().cloned().expect("pool prefix");
    let ext = cloud
        .rt
        .block_on(cloud.neutron.get_subnet(&env["EXT_SUBNET_ID"]))
        .expect("external subnet");
    let sg = Group::create(
        &cloud,
        &[
            &env["POD_CIDR"],
            &pool_cidr,
            &env["SERVICE_CIDR"],
            &ext.cidr,
        ],
    );
    let conf = kuryr::config_with(
        "ns",
        &format!(
            "[kubernetes]\npod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport,namespace,kuryrnetwork\n\
             [neutron_defaults]\npod_security_groups = {}\n",
            sg.id
        ),
    );
    let mut daemon = kuryr::spawn_daemon(&conf.0, &[]);
    let mut controller = kuryr::spawn_controller_with(
        &conf.0,
        &[
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    kuryr::wait_daemon_ready(&mut daemon);

    let a = Namespace::create("kst-ns-a-");
    let b = Namespace::create("kst-ns-b-");
    let t0 = Instant::now();
    for (ns, pod) in [(&a, "a1"), (&a, "a2"), (&b, "b1")] {
        ns.apply_json(pod, &kuryr::web_pod(&ns.0, pod, "kst"));
    }
    wait_ready(&a.0, "namespace a");
    wait_ready(&b.0, "namespace b");
    eprintln!(
        "3 pods in 2 new namespaces Ready {:?} after create (KuryrNetwork, network, subnet, router interface, ports)",
        t0.elapsed()
    );
    assert!(
        controller.alive(),
        "controller:\n{}",
        controller.log_tail(40)
    );

    // Each namespace's KuryrNetwork names its network, subnet and the pod router.
    let kn = |ns: &str| kjson(kubectl().args(["get", "kuryrnetwork", "-n", ns, ns, "-o", "json"]));
    let (ka, kb) = (kn(&a.0), kn(&b.0));
    for k in [&ka, &kb] {
        assert_eq!(
            k["status"]["routerId"].as_str(),
            Some(env["ROUTER_ID"].as_str()),
            "{k}"
        );
    }
    let cidr_a = ka["status"]["subnetCIDR"]
        .as_str()
        .expect("cidr")
        .to_string();
    let cidr_b = kb["status"]["subnetCIDR"]
        .as_str()
        .expect("cidr")
        .to_string();
    assert_ne!(cidr_a, cidr_b);
    let (a1, a2, b1) = (pod_ip(&a.0, "a1"), pod_ip(&a.0, "a2"), pod_ip(&b.0, "b1"));
    for c in [&cidr_a, &cidr_b] {
        let first: IpAddr = c
            .split('/')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("cidr address");
        assert!(in_cidr(first, &pool_cidr), "{c} from the pool {pool_cidr}");
    }
    assert!(
        in_cidr(a1, &cidr_a) && in_cidr(a2, &cidr_a),
        "{a1} {a2} in {cidr_a}"
    );
    assert!(in_cidr(b1, &cidr_b), "{b1} in {cidr_b}");
    eprintln!("namespace a: {cidr_a} (a1 {a1}, a2 {a2}); namespace b: {cidr_b} (b1 {b1})");

    // Same namespace; across namespaces (routed); from the default pod network (a VM port).
    let t = Instant::now();
    assert!(ping(&a.0, "a1", a2), "a1 -> a2 (same namespace subnet)");
    assert!(ping(&a.0, "a1", b1), "a1 -> b1 (through kuryr-router)");
    assert!(ping(&b.0, "b1", a1), "b1 -> a1 (through kuryr-router)");
    let vm = PlainPort::create(&cloud, 1);
    assert!(vm[0].ping(a1), "VM on the pod network -> a1");
    assert!(vm[0].ping(b1), "VM on the pod network -> b1");
    eprintln!(
        "pings (same namespace, across namespaces, from the pod network) passed in {:?}",
        t.elapsed()
    );
    drop(vm);

    // Deletion: everything Neutron held for the namespaces goes.
    let nets: Vec<String> = [&a.0, &b.0]
        .iter()
        .flat_map(|ns| stamped(&cloud, ns))
        .map(|n| n.id)
        .collect();
    assert_eq!(nets.len(), 2, "one network per namespace: {nets:?}");
    let t = Instant::now();
    for ns in [&a.0, &b.0] {
        let _ = run(kubectl().args(["delete", "namespace", ns, "--wait=false"]));
    }
    wait_for(
        "both namespaces gone",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let out = run(kubectl().args([
                "get",
                "namespace",
                &a.0,
                &b.0,
                "--ignore-not-found",
                "-o",
                "name",
            ]));
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(())
        },
    );
    eprintln!(
        "namespaces deleted → gone (pods, ports, router interfaces, subnets, networks) {:?}",
        t.elapsed()
    );
    for id in &nets {
        let r = cloud.rt.block_on(cloud.neutron.get_network(id));
        assert!(r.is_err_and(|e| e.is_not_found()), "network {id} left");
    }
    assert!(
        controller.alive(),
        "controller:\n{}",
        controller.log_tail(40)
    );
}

/// `openstack --os-cloud admin <args> -f json`, parsed.
fn admin_json(args: &[&str]) -> serde_json::Value {
    kjson(
        kuryr_e2e::openstack("admin")
            .args(args)
            .args(["-f", "json"]),
    )
}

/// The second project of the annotation test (made once, kept: projects are cheap and a
/// fresh id per run would leave one behind per run) and its id.
fn second_project() -> String {
    let p = admin_json(&[
        "project",
        "create",
        "--or-show",
        "--domain",
        "Default",
        "--description",
        "kuryr-rs e2e: a namespace's openstack.org/kuryr-project",
        "kst-kuryr-tenant2",
    ]);
    p["id"].as_str().expect("project id").to_string()
}

/// A user allowed to create in any project (role `admin` on the cluster's project `k8s`,
/// token scoped to it): what `*_project_driver = annotation` needs (the stack's `kuryr`
/// application credential, member+service on k8s, is refused networks, security groups,
/// address groups and load balancers with another `project_id`). A fresh password per run.
fn multi_project_user(k8s_project: &str) -> (String, String) {
    let user = "kst-kuryr-multi-project".to_string();
    let password = kuryr_e2e::unique("pw-");
    let _ = admin_json(&[
        "user",
        "create",
        "--or-show",
        "--domain",
        "Default",
        "--password",
        &password,
        &user,
    ]);
    kuryr_e2e::must(kuryr_e2e::openstack("admin").args([
        "user",
        "set",
        "--password",
        &password,
        &user,
    ]));
    kuryr_e2e::must(kuryr_e2e::openstack("admin").args([
        "role",
        "add",
        "--user",
        &user,
        "--project",
        k8s_project,
        "admin",
    ]));
    (user, password)
}

/// What `project` holds besides Neutron's own `default` security group: ports, networks,
/// subnets, security groups, address groups (as `kind id name`).
fn held_by(project: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, args) in [
        ("port", vec!["port", "list", "--project", project]),
        ("network", vec!["network", "list", "--project", project]),
        ("subnet", vec!["subnet", "list", "--project", project]),
        (
            "security group",
            vec!["security", "group", "list", "--project", project],
        ),
        (
            "address group",
            vec!["address", "group", "list", "--project", project],
        ),
    ] {
        let list = admin_json(&args);
        let list = list
            .as_array()
            .unwrap_or_else(|| panic!("openstack {args:?} printed no JSON list: {list}"));
        for o in list {
            let name = o["Name"].as_str().unwrap_or_default().to_string();
            if kind == "security group" && name == "default" {
                continue;
            }
            out.push(format!(
                "{kind} {} {name}",
                o["ID"].as_str().unwrap_or_default()
            ));
        }
    }
    out
}

/// `[kubernetes] pod_project_driver`, `namespace_project_driver` and
/// `network_policy_project_driver = annotation` (upstream's project drivers): a namespace
/// annotated `openstack.org/kuryr-project: <second project>` gets its namespace network and
/// subnet, its pods' ports and its NetworkPolicy's security group in that project; a plain
/// namespace stays in `[neutron_defaults] project`. Pods of both ping each other (through
/// `kuryr-router`), the policy is enforced (a ping refused, then allowed again once deleted), and
/// deleting the namespaces leaves nothing of them in either project. The controller runs with a
/// user that has the `admin` role on the cluster's project (what creating in another project
/// takes on this cloud, see README).
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn kuryr_project_annotation_places_a_namespaces_resources_in_its_project() {
    // Each test runs its own kuryr-daemon as the node's CNI: one at a time.
    let _node = cluster_lock();
    let env = stack_env();
    let cloud = Cloud::connect();
    let k8s = env["K8S_PROJECT_ID"].clone();
    let p2 = second_project();
    let (user, password) = multi_project_user(&k8s);
    assert!(
        held_by(&p2).is_empty(),
        "the second project is not empty before the test: {:?}",
        held_by(&p2)
    );
    let conf = kuryr::config_with(
        "proj",
        &format!(
            "[kubernetes]\npod_subnets_driver = namespace\n\
             enabled_handlers = vif,kuryrport,namespace,kuryrnetwork,policy,kuryrnetworkpolicy\n\
             pod_project_driver = annotation\nnamespace_project_driver = annotation\n\
             network_policy_project_driver = annotation\n\
             [neutron]\nauth_type = password\nusername = {user}\npassword = {password}\n\
             project_id = {k8s}\nuser_domain_name = Default\nproject_domain_name = Default\n"
        ),
    );
    let mut daemon = kuryr::spawn_daemon(&conf.0, &[]);
    let mut controller = kuryr::spawn_controller_with(
        &conf.0,
        &[
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    kuryr::wait_daemon_ready(&mut daemon);

    let t = Namespace::create("kst-proj-t-");
    let d = Namespace::create("kst-proj-d-");
    kuryr_e2e::must(kubectl().args([
        "annotate",
        "namespace",
        &t.0,
        &format!("openstack.org/kuryr-project={p2}"),
    ]));
    let t0 = Instant::now();
    for (ns, pod) in [(&t, "t1"), (&t, "t2"), (&d, "d1")] {
        ns.apply_json(pod, &kuryr::web_pod(&ns.0, pod, "kst"));
    }
    wait_ready(&t.0, "annotated namespace");
    wait_ready(&d.0, "plain namespace");
    eprintln!(
        "3 pods in an annotated and a plain namespace Ready {:?} after create",
        t0.elapsed()
    );

    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Where everything went.
        let kn =
            |ns: &str| kjson(kubectl().args(["get", "kuryrnetwork", "-n", ns, ns, "-o", "json"]));
        assert_eq!(kn(&t.0)["spec"]["projectId"].as_str(), Some(p2.as_str()));
        assert_eq!(kn(&d.0)["spec"]["projectId"].as_str(), Some(k8s.as_str()));
        for (ns, project) in [(&t.0, &p2), (&d.0, &k8s)] {
            let nets = stamped(&cloud, ns);
            // The kuryr credential (project k8s) does not see the other project's network.
            if project == &k8s {
                assert_eq!(nets.len(), 1, "{ns}: {nets:?}");
            }
            let kn = kn(ns);
            let net = admin_json(&[
                "network",
                "show",
                kn["status"]["netId"].as_str().expect("netId"),
            ]);
            let sub = admin_json(&[
                "subnet",
                "show",
                kn["status"]["subnetId"].as_str().expect("subnetId"),
            ]);
            assert_eq!(
                (net["project_id"].as_str(), sub["project_id"].as_str()),
                (Some(project.as_str()), Some(project.as_str())),
                "{ns}: network and subnet in {project}"
            );
        }
        let port_project = |ns: &str, pod: &str| {
            let uid = kjson(kubectl().args(["get", "pod", "-n", ns, pod, "-o", "json"]))
                ["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_string();
            let ports = admin_json(&["port", "list", "--device-id", &uid, "--long"]);
            let ports = ports.as_array().cloned().unwrap_or_default();
            assert_eq!(ports.len(), 1, "{ns}/{pod}: {ports:?}");
            let id = ports[0]["ID"].as_str().expect("port id").to_string();
            admin_json(&["port", "show", &id])["project_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(
            port_project(&t.0, "t1"),
            p2,
            "t1's port in the annotated project"
        );
        assert_eq!(
            port_project(&t.0, "t2"),
            p2,
            "t2's port in the annotated project"
        );
        assert_eq!(
            port_project(&d.0, "d1"),
            k8s,
            "d1's port in the default project"
        );

        // Traffic: within the annotated namespace, and across projects through the router.
        let (t1, t2, d1) = (pod_ip(&t.0, "t1"), pod_ip(&t.0, "t2"), pod_ip(&d.0, "d1"));
        assert!(ping(&t.0, "t1", t2), "t1 -> t2");
        assert!(
            ping(&t.0, "t1", d1),
            "t1 -> d1 (other project, through kuryr-router)"
        );
        assert!(ping(&d.0, "d1", t1), "d1 -> t1");

        // A NetworkPolicy of the annotated namespace: its security group in that project.
        t.apply_json(
            "deny",
            &serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": t.0},
                "spec": {"podSelector": {"matchLabels": {"app": "kst"}}, "policyTypes": ["Ingress"]}}),
        );
        let t_deny = Instant::now();
        wait_for(
            "ping d1 -> t2 refused by the policy",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || (!ping(&d.0, "d1", t2)).then_some(()),
        );
        eprintln!(
            "policy in the annotated namespace enforced {:?}",
            t_deny.elapsed()
        );
        let sg = kjson(kubectl().args([
            "get",
            "kuryrnetworkpolicy",
            "-n",
            &t.0,
            "deny",
            "-o",
            "json",
        ]))["status"]["securityGroupId"]
            .as_str()
            .expect("securityGroupId")
            .to_string();
        assert_eq!(
            admin_json(&["security", "group", "show", &sg])["project_id"].as_str(),
            Some(p2.as_str()),
            "the policy's security group is in the annotated project"
        );
        kuryr_e2e::must(kubectl().args([
            "delete",
            "networkpolicy",
            "-n",
            &t.0,
            "deny",
            "--wait=true",
            "--timeout=60s",
        ]));
        wait_for(
            "ping d1 -> t2 again",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || ping(&d.0, "d1", t2).then_some(()),
        );
    }));
    if r.is_err() {
        eprintln!("controller:\n{}", controller.log_tail(80));
    }

    // Deletion (also after a failure: the finalizers are the controller's): nothing of either
    // namespace in either project.
    let t_del = Instant::now();
    for ns in [&t.0, &d.0] {
        let _ = run(kubectl().args(["delete", "namespace", ns, "--wait=false"]));
    }
    wait_for(
        "both namespaces gone",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let out = run(kubectl().args([
                "get",
                "namespace",
                &t.0,
                &d.0,
                "--ignore-not-found",
                "-o",
                "name",
            ]));
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(())
        },
    );
    eprintln!("namespaces deleted → gone {:?}", t_del.elapsed());
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    let left = held_by(&p2);
    assert!(left.is_empty(), "left in the annotated project: {left:?}");
    for ns in [&t.0, &d.0] {
        let nets = stamped(&cloud, ns);
        assert!(
            nets.is_empty(),
            "{ns}'s network left in the default project: {nets:?}"
        );
    }
    assert!(
        controller.alive(),
        "controller:\n{}",
        controller.log_tail(40)
    );
}
