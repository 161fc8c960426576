//! Least privilege of kuryr-rs's OpenStack credential (issue 15), on the local stack.
//!
//! The stack gives the kuryr user `member` and `kuryr` in its project (`k8s`), no `service`
//! role: Neutron's policy override (hack/stack/etc/neutron/policy.yaml) grants the binding
//! attributes to the `kuryr` role for its own project's ports only. What kuryr-rs needs works
//! with the application credential kuryr-rs runs with (a port bound to the node, its
//! binding:vif_type read back, Octavia's provider list); what it must not do is refused: another
//! project's ports and networks (invisible, cannot be changed or deleted), admin-only Neutron
//! APIs (agents, provider networks, quotas), Keystone's admin APIs (users, projects). Each refusal has an admin-side
//! control, so a broken CLI or a missing object cannot read as a refusal.

use kuryr_e2e::{must, openstack, run, says_not_found, stack_env, text, unique};

/// Runs an `openstack` command that must be refused; returns its output text for the message.
fn refused(cloud: &str, args: &[&str], what: &str) -> String {
    let out = run(openstack(cloud).args(args));
    let t = text(&out);
    assert!(
        !out.status.success(),
        "{what}: kuryr's credential was allowed `openstack {}`:\n{t}",
        args.join(" ")
    );
    t
}

/// Whether a refusal reads as a policy refusal (HTTP 403) rather than any other failure.
fn forbidden(t: &str) -> bool {
    let l = t.to_lowercase();
    l.contains("403")
        || l.contains("forbidden")
        || l.contains("not authorized")
        || l.contains("disallowed by policy")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The admin's objects in another project (`admin`): a network and a port on it; deleted on drop.
struct Foreign {
    name: String,
    network: String,
    port: String,
}

impl Foreign {
    fn create() -> Foreign {
        let name = unique("lp-foreign-");
        let net = json(&must(
            openstack("admin").args(["network", "create", &name, "-f", "json"]),
        ));
        let network = net["id"].as_str().expect("network id").to_owned();
        let port = json(&must(openstack("admin").args([
            "port",
            "create",
            "--network",
            &network,
            &name,
            "-f",
            "json",
        ])));
        Foreign {
            name,
            network,
            port: port["id"].as_str().expect("port id").to_owned(),
        }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = run(openstack("admin").args(["port", "delete", &self.port]));
        let _ = run(openstack("admin").args(["network", "delete", &self.network]));
    }
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn kuryr_credential_binds_its_own_ports_and_nothing_of_other_projects() {
    let env = stack_env();
    let host = &env["STACK_HOST"];
    // What kuryr-rs needs: a port of its project bound to the node, binding read back.
    let name = unique("lp-own-");
    let port = json(&must(openstack("kuryr").args([
        "port",
        "create",
        "--network",
        &env["POD_NET_ID"],
        "--host",
        host,
        "--device-owner",
        "compute:kuryr",
        &name,
        "-f",
        "json",
    ])));
    let id = port["id"].as_str().expect("port id").to_owned();
    let shown = json(&must(
        openstack("kuryr").args(["port", "show", &id, "-f", "json"]),
    ));
    must(openstack("kuryr").args(["port", "delete", &id]));
    assert_eq!(
        shown["binding_host_id"].as_str(),
        Some(host.as_str()),
        "binding:host_id of its own port: {shown}"
    );
    let vif_type = shown["binding_vif_type"].as_str().unwrap_or_default();
    assert!(
        !vif_type.is_empty() && vif_type != "unbound" && vif_type != "binding_failed",
        "kuryr's credential must read its own port's binding:vif_type (bound by OVN to {host}): {shown}"
    );

    // Another project's network and port: the admin sees them, kuryr neither sees nor touches them.
    let f = Foreign::create();
    must(openstack("admin").args(["port", "show", &f.port, "-f", "json"]));
    for (args, what) in [
        (
            vec!["port", "show", f.port.as_str()],
            "show another project's port",
        ),
        (
            vec!["port", "set", "--name", "taken", f.port.as_str()],
            "rename another project's port",
        ),
        (
            vec!["port", "delete", f.port.as_str()],
            "delete another project's port",
        ),
        (
            vec!["network", "show", f.network.as_str()],
            "show another project's network",
        ),
        (
            vec!["network", "delete", f.network.as_str()],
            "delete another project's network",
        ),
    ] {
        let t = refused("kuryr", &args, what);
        assert!(
            says_not_found(&t) || forbidden(&t),
            "{what}: refused, but not as not-found/forbidden:\n{t}"
        );
    }
    // Listed by name: the admin finds the port, kuryr does not.
    let by_name = |cloud: &str| {
        json(&must(
            openstack(cloud).args(["port", "list", "--name", &f.name, "-f", "json"]),
        ))
    };
    assert_eq!(
        by_name("admin").as_array().map(Vec::len),
        Some(1),
        "the admin's own port by name"
    );
    let listed = by_name("kuryr");
    assert_eq!(
        listed,
        serde_json::json!([]),
        "kuryr lists another project's ports: {listed}"
    );
    // A port on another project's network, bound to the node: refused (not its network).
    let t = refused(
        "kuryr",
        &[
            "port",
            "create",
            "--network",
            &f.network,
            "--host",
            host,
            &unique("lp-steal-"),
        ],
        "create a port on another project's network",
    );
    assert!(says_not_found(&t) || forbidden(&t), "{t}");
    // The admin's port is untouched.
    let after = json(&must(
        openstack("admin").args(["port", "show", &f.port, "-f", "json"]),
    ));
    assert_ne!(
        after["name"].as_str(),
        Some("taken"),
        "another project's port was renamed: {after}"
    );
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn kuryr_credential_is_refused_admin_operations() {
    let env = stack_env();
    // Controls: the admin credential may do each of these.
    let agents = json(&must(
        openstack("admin").args(["network", "agent", "list", "-f", "json"]),
    ));
    assert!(
        agents.as_array().is_some_and(|a| !a.is_empty()),
        "the admin sees no Neutron agent: {agents}"
    );
    must(openstack("admin").args(["user", "list", "-f", "json"]));
    // Neutron answers a member's agent list with the agents it may see: none.
    let seen = run(openstack("kuryr").args(["network", "agent", "list", "-f", "json"]));
    assert!(
        !seen.status.success()
            || json(&String::from_utf8_lossy(&seen.stdout)) == serde_json::json!([]),
        "kuryr's credential lists Neutron agents: {}",
        text(&seen)
    );
    for (args, what) in [
        (vec!["user", "list"], "list Keystone users"),
        (
            vec!["project", "create", "lp-project"],
            "create a Keystone project",
        ),
        (
            vec![
                "quota",
                "set",
                "--ports",
                "100000",
                env["K8S_PROJECT_ID"].as_str(),
            ],
            "raise its own project's port quota",
        ),
        (
            vec![
                "network",
                "create",
                "--provider-network-type",
                "flat",
                "--provider-physical-network",
                "public",
                "lp-provider",
            ],
            "create a provider network",
        ),
        (
            vec!["network", "create", "--external", "lp-external"],
            "create an external network",
        ),
    ] {
        let t = refused("kuryr", &args, what);
        assert!(
            forbidden(&t),
            "{what}: refused, but not by policy (403):\n{t}"
        );
    }
    // Nothing of the refused creates exists.
    let nets = must(openstack("admin").args([
        "network",
        "list",
        "--name",
        "lp-provider",
        "-f",
        "value",
        "-c",
        "ID",
    ])) + &must(openstack("admin").args([
        "network",
        "list",
        "--name",
        "lp-external",
        "-f",
        "value",
        "-c",
        "ID",
    ]));
    assert!(nets.trim().is_empty(), "a refused network exists: {nets}");
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn kuryr_user_has_no_service_or_admin_role() {
    let env = stack_env();
    let out = must(openstack("admin").args([
        "role",
        "assignment",
        "list",
        "--user",
        "kuryr",
        "--names",
        "-f",
        "json",
    ]));
    let roles: Vec<String> = json(&out)
        .as_array()
        .expect("assignments")
        .iter()
        .filter_map(|a| a["Role"].as_str().map(str::to_owned))
        .collect();
    assert!(
        roles.iter().any(|r| r == "kuryr"),
        "the kuryr role is not granted: {roles:?}"
    );
    for bad in ["service", "admin"] {
        assert!(
            !roles.iter().any(|r| r == bad),
            "kuryr holds the {bad} role: {roles:?}"
        );
    }
    // The application credential kuryr-rs runs with carries the same roles, in its project.
    let ac = json(&must(openstack("kuryr-password").args([
        "application",
        "credential",
        "show",
        "kuryr",
        "-f",
        "json",
    ])));
    assert_eq!(
        ac["Project ID"].as_str(),
        env.get("K8S_PROJECT_ID").map(String::as_str),
        "{ac}"
    );
    let ac_roles: Vec<&str> = ac["Roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        ac_roles.contains(&"kuryr"),
        "the application credential lacks the kuryr role: {ac}"
    );
    for bad in ["service", "admin"] {
        assert!(
            !ac_roles.contains(&bad),
            "the application credential holds {bad}: {ac}"
        );
    }
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn neutron_policy_override_scopes_binding_to_the_kuryr_role_of_its_project() {
    // The override neutron-server runs with, evaluated by Neutron's own policy engine (its venv),
    // Neutron's registered defaults first (hack/stack/check_neutron_policy.py).
    let repo = kuryr_e2e::deploy::repo();
    let versions =
        std::fs::read_to_string(repo.join("hack/stack/versions.env")).expect("versions.env");
    let neutron = versions
        .lines()
        .find_map(|l| l.strip_prefix("NEUTRON_VERSION="))
        .expect("NEUTRON_VERSION in versions.env");
    let cache = std::env::var("KURYR_CACHE").unwrap_or_else(|_| "/var/cache/kuryr-rs".into());
    let python = format!("{cache}/venv-neutron-{neutron}/bin/python");
    let file = kuryr_e2e::state_dir().join("etc/neutron-policy.yaml");
    let out = must(
        std::process::Command::new(&python)
            .arg(repo.join("hack/stack/check_neutron_policy.py"))
            .arg(&file),
    );
    let v = json(&out);
    let rules = v.as_object().expect("rules");
    assert_eq!(rules.len(), 7, "{v}");
    for (rule, cases) in rules {
        let allowed = |case: &str| {
            cases[case]
                .as_bool()
                .unwrap_or_else(|| panic!("{rule}: no {case}: {v}"))
        };
        assert!(
            allowed("kuryr_own"),
            "{rule}: the kuryr role is refused its own project's port"
        );
        assert!(
            !allowed("kuryr_other"),
            "{rule}: the kuryr role reaches another project's port"
        );
        assert!(
            !allowed("member_own"),
            "{rule}: a member without the kuryr role is allowed"
        );
        assert!(
            allowed("service_any"),
            "{rule}: Neutron's default for the service role was lost"
        );
    }
}
