//! The parse step: (method, path, body) → a typed [`Route`]. Pure, so it is tested with raw
//! (also broken) input; execution lives in [`crate::cni`].
//!
//! Who an attachment is for ([`target`]): `K8S_POD_NAMESPACE` + `K8S_POD_NAME` name a pod
//! (containerd's CRI plugin, CRI-O). Without `K8S_POD_NAMESPACE` (podman, `ctr run --cni`) it
//! is a standalone container, wired from the KuryrPort `<standalone namespace>/<K8S_POD_NAME,
//! else CNI_CONTAINERID>` (see [`crate::standalone`]).

use std::time::Duration;

use kuryr_cni_api::{
    codes, validate_container_id, validate_ifname, CniArgs, CniCommand, CniError, CniRequest,
    NetConf, CNI_ENDPOINT, READY_ENDPOINT,
};
use kuryr_core::names::{
    check_dns1123_subdomain, NODE_NAME_LABEL, STANDALONE_LABEL, STANDALONE_LABEL_VALUE,
};

/// A Kubernetes pod as named by `CNI_ARGS`, or a standalone container: then `namespace` is
/// the standalone namespace and `name` the container's (see [`target`]). Either way it names
/// the KuryrPort the attachment is wired from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID`, when the runtime passes it (containerd and CRI-O do).
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One attachment verb (ADD, DEL, CHECK), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentRequest {
    pub container_id: String,
    pub ifname: String,
    /// Netns path; may be empty on DEL (the netns is gone).
    pub netns: String,
    /// The pod or standalone container (always set for ADD; see [`target`]).
    pub pod: Option<PodRef>,
    /// The shim's deadline for this call (`timeout_seconds` of the config).
    pub shim_timeout: Duration,
}

impl AttachmentRequest {
    /// What requests are serialized on: the pod, else the container.
    pub fn lock_key(&self) -> String {
        match &self.pod {
            Some(p) => format!("pod:{p}"),
            None => format!("container:{}", self.container_id),
        }
    }
}

/// A CNI verb to execute.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Add(AttachmentRequest),
    Del(AttachmentRequest),
    Check(AttachmentRequest),
    /// Remove every attachment not in the list of `(container_id, ifname)`.
    Gc {
        valid: Vec<(String, String)>,
    },
    Status,
}

impl Command {
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Add(_) => "ADD",
            Command::Del(_) => "DEL",
            Command::Check(_) => "CHECK",
            Command::Gc { .. } => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// What the HTTP layer should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Cni(Command),
    Ready,
}

/// A request that does not parse: HTTP status plus the CNI error body.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub error: CniError,
}

impl Rejection {
    fn new(status: u16, error: CniError) -> Self {
        Rejection { status, error }
    }
}

fn bad(error: CniError) -> Rejection {
    Rejection::new(400, error)
}

/// Routes `method path` and parses the body (standalone containers map to the process'
/// [`crate::standalone::namespace`]).
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<Route, Rejection> {
    parse_in(crate::standalone::namespace(), method, path, body)
}

/// [`parse`] with an explicit standalone namespace.
pub fn parse_in(
    standalone_ns: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Route, Rejection> {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("POST", p) if p == CNI_ENDPOINT => parse_cni_in(standalone_ns, body).map(Route::Cni),
        ("GET", p) if p == READY_ENDPOINT => Ok(Route::Ready),
        (_, p) if p == CNI_ENDPOINT || p == READY_ENDPOINT => Err(Rejection::new(
            405,
            CniError::new(
                codes::KURYR_DAEMON_HTTP_ERROR,
                format!("method {method} not allowed on {p}"),
                "",
            ),
        )),
        _ => Err(Rejection::new(
            404,
            CniError::new(
                codes::KURYR_DAEMON_HTTP_ERROR,
                format!("no such endpoint: {method} {path}"),
                format!("kuryr-daemon serves POST {CNI_ENDPOINT} and GET {READY_ENDPOINT}"),
            ),
        )),
    }
}

/// Who an attachment is for, from `CNI_ARGS` and `CNI_CONTAINERID`:
///
/// * `K8S_POD_NAMESPACE` and `K8S_POD_NAME`: that pod. An ADD for a pod in the standalone
///   namespace is refused (code 4): the namespace is reserved for standalone containers.
/// * `K8S_POD_NAMESPACE` without `K8S_POD_NAME`: an incomplete pod identity; an ADD is refused
///   (code 110), other verbs get `None`.
/// * no `K8S_POD_NAMESPACE`: a standalone container, `standalone_ns / (K8S_POD_NAME or
///   CNI_CONTAINERID)`. A name that cannot be a KuryrPort name (not a DNS-1123 subdomain)
///   fails an ADD with code 4 naming the argument; other verbs get `None`.
pub fn target(
    command: CniCommand,
    args: &CniArgs,
    container_id: &str,
    standalone_ns: &str,
) -> Result<Option<PodRef>, CniError> {
    let add = command == CniCommand::Add;
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let (ns, name, uid) = (
        nonempty(&args.k8s_pod_namespace),
        nonempty(&args.k8s_pod_name),
        nonempty(&args.k8s_pod_uid),
    );
    match (ns, name) {
        (Some(ns), Some(_)) if add && ns == standalone_ns => Err(CniError::invalid_env(
            format!(
                "ADD for pod {ns}/{}: namespace {ns} is reserved for standalone containers",
                args.k8s_pod_name.as_deref().unwrap_or_default()
            ),
            format!(
                "[cni_daemon] standalone_namespace = {standalone_ns}: kuryr wires the KuryrPorts \
                 of standalone containers (podman, ctr) there, never pods; run the pod in another namespace"
            ),
        )),
        (Some(namespace), Some(name)) => Ok(Some(PodRef {
            namespace,
            name,
            uid,
        })),
        (Some(_), None) if add => Err(crate::error::DaemonError::NotAPod.to_cni_error()),
        (Some(_), None) => Ok(None),
        (None, name) => {
            let (name, source) = match name {
                Some(n) => (n, "K8S_POD_NAME"),
                None => (container_id.to_owned(), "CNI_CONTAINERID"),
            };
            match check_dns1123_subdomain(&name) {
                Ok(()) => Ok(Some(PodRef {
                    namespace: standalone_ns.to_owned(),
                    name,
                    uid,
                })),
                Err(why) if add => Err(CniError::invalid_env(
                    format!(
                        "ADD of a standalone container (CNI_ARGS without K8S_POD_NAMESPACE): \
                         {source} {name:?} cannot name its KuryrPort: it {why}"
                    ),
                    format!(
                        "kuryr-daemon wires a standalone container from the KuryrPort \
                         {standalone_ns}/<{source}>, which must be created first \
                         (labels {STANDALONE_LABEL}={STANDALONE_LABEL_VALUE} and {NODE_NAME_LABEL}=<node>); \
                         KuryrPort names are DNS-1123 subdomains (lowercase letters, digits, '-' and '.', \
                         at most 253 characters): give the container such a name (podman run --name web-1)"
                    ),
                )),
                Err(_) => Ok(None),
            }
        }
    }
}

/// Parses the body of `POST /v1/cni` into a [`Command`] (standalone containers map to the
/// process' [`crate::standalone::namespace`]).
pub fn parse_cni(body: &[u8]) -> Result<Command, Rejection> {
    parse_cni_in(crate::standalone::namespace(), body)
}

/// [`parse_cni`] with an explicit standalone namespace.
pub fn parse_cni_in(standalone_ns: &str, body: &[u8]) -> Result<Command, Rejection> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        bad(CniError::decoding(
            "request body is not JSON",
            e.to_string(),
        ))
    })?;
    let req: CniRequest = serde_json::from_value(value).map_err(|e| {
        bad(CniError::decoding(
            "request body is not a CNI request",
            e.to_string(),
        ))
    })?;
    let netconf = NetConf::from_value(&req.config).map_err(bad)?;
    let shim_timeout = netconf.timeout_for(req.command);
    match req.command {
        CniCommand::Status => Ok(Command::Status),
        CniCommand::Gc => Ok(Command::Gc {
            valid: req.valid_attachments(),
        }),
        CniCommand::Version => Err(bad(CniError::invalid_env(
            "VERSION is answered by kuryr-cni, not kuryr-daemon",
            "",
        ))),
        CniCommand::Add | CniCommand::Del | CniCommand::Check => {
            validate_container_id(&req.container_id).map_err(bad)?;
            validate_ifname(&req.ifname).map_err(bad)?;
            if req.command != CniCommand::Del && req.netns.is_empty() {
                return Err(bad(CniError::invalid_env(
                    "required env variables [CNI_NETNS] missing",
                    "",
                )));
            }
            if !req.netns.is_empty() && !req.netns.starts_with('/') {
                return Err(bad(CniError::invalid_env(
                    "CNI_NETNS must be an absolute path",
                    format!("{:?}", req.netns),
                )));
            }
            let args: CniArgs = req.cni_args().map_err(bad)?;
            let pod = target(req.command, &args, &req.container_id, standalone_ns).map_err(bad)?;
            let a = AttachmentRequest {
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                netns: req.netns.clone(),
                pod,
                shim_timeout,
            };
            Ok(match req.command {
                CniCommand::Add => Command::Add(a),
                CniCommand::Del => Command::Del(a),
                _ => Command::Check(a),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes::KURYR_NOT_A_POD;
    use serde_json::json;

    const CONF: &str =
        r#"{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","timeout_seconds":30}"#;

    fn body(command: &str, cid: &str, netns: &str, ifname: &str, args: &str) -> Vec<u8> {
        let conf: serde_json::Value = serde_json::from_str(CONF).expect("conf");
        serde_json::to_vec(
            &json!({"command": command, "container_id": cid, "netns": netns, "ifname": ifname,
            "args": args, "path": "/opt/cni/bin", "config": conf}),
        )
        .expect("json")
    }

    const POD_ARGS: &str =
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=u-1";

    /// (case, method, path, body) → Ok(verb) or Err((http status, CNI code)).
    #[test]
    fn parse_table() {
        type Want = Result<&'static str, (u16, u32)>;
        let cases: Vec<(&str, &str, &str, Vec<u8>, Want)> = vec![
            ("add", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", POD_ARGS), Ok("ADD")),
            ("del without netns", "POST", "/v1/cni", body("DEL", "c1", "", "eth0", ""), Ok("DEL")),
            ("check", "POST", "/v1/cni", body("CHECK", "c1", "/run/netns/x", "eth0", POD_ARGS), Ok("CHECK")),
            ("status", "POST", "/v1/cni", body("STATUS", "", "", "", ""), Ok("STATUS")),
            ("gc", "POST", "/v1/cni", body("GC", "", "", "", ""), Ok("GC")),
            ("query string ignored", "POST", "/v1/cni?x=1", body("DEL", "c1", "", "eth0", ""), Ok("DEL")),
            ("ready", "GET", "/v1/ready", vec![], Ok("READY")),
            ("not json", "POST", "/v1/cni", b"{not json".to_vec(), Err((400, 6))),
            ("empty body", "POST", "/v1/cni", vec![], Err((400, 6))),
            ("json array", "POST", "/v1/cni", b"[1,2]".to_vec(), Err((400, 6))),
            ("unknown command", "POST", "/v1/cni", br#"{"command":"FROB","config":{}}"#.to_vec(), Err((400, 6))),
            ("missing config", "POST", "/v1/cni", br#"{"command":"ADD"}"#.to_vec(), Err((400, 6))),
            (
                "config without name",
                "POST",
                "/v1/cni",
                br#"{"command":"DEL","container_id":"c","ifname":"eth0","config":{"cniVersion":"1.1.0","type":"kuryr-cni"}}"#.to_vec(),
                Err((400, 7)),
            ),
            ("add without pod args: standalone (ctr)", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", ""), Ok("ADD")),
            ("add with only a name: standalone (podman)", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", "IgnoreUnknown=1;K8S_POD_NAME=web-1"), Ok("ADD")),
            ("standalone name not a KuryrPort name", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", "IgnoreUnknown=1;K8S_POD_NAME=web_1"), Err((400, 4))),
            ("standalone container id not a KuryrPort name", "POST", "/v1/cni", body("ADD", "Ctr_1", "/run/netns/x", "eth0", ""), Err((400, 4))),
            ("del of a badly named standalone container", "POST", "/v1/cni", body("DEL", "Ctr_1", "", "eth0", ""), Ok("DEL")),
            ("pod in the standalone namespace", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", "K8S_POD_NAMESPACE=kuryr-standalone;K8S_POD_NAME=p"), Err((400, 4))),
            ("add with only namespace", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", "K8S_POD_NAMESPACE=a"), Err((400, KURYR_NOT_A_POD))),
            ("add without netns", "POST", "/v1/cni", body("ADD", "c1", "", "eth0", POD_ARGS), Err((400, 4))),
            ("relative netns", "POST", "/v1/cni", body("ADD", "c1", "netns/x", "eth0", POD_ARGS), Err((400, 4))),
            ("bad container id", "POST", "/v1/cni", body("ADD", "-c1", "/run/netns/x", "eth0", POD_ARGS), Err((400, 4))),
            ("empty container id", "POST", "/v1/cni", body("DEL", "", "", "eth0", ""), Err((400, 4))),
            ("ifname too long", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0123456789012", POD_ARGS), Err((400, 4))),
            ("malformed CNI_ARGS", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", "K8S_POD_NAME"), Err((400, 4))),
            ("VERSION", "POST", "/v1/cni", body("VERSION", "", "", "", ""), Err((400, 4))),
            ("GET on cni", "GET", "/v1/cni", vec![], Err((405, 101))),
            ("unknown path", "POST", "/addNetwork", vec![], Err((404, 101))),
        ];
        for (name, method, path, body, want) in cases {
            let got = match parse(method, path, &body) {
                Ok(Route::Cni(c)) => Ok(c.verb()),
                Ok(Route::Ready) => Ok("READY"),
                Err(r) => Err((r.status, r.error.code)),
            };
            assert_eq!(got, want, "case {name:?}");
        }
    }

    #[test]
    fn add_carries_pod_and_deadline() {
        let Ok(Route::Cni(Command::Add(a))) = parse(
            "POST",
            "/v1/cni",
            &body("ADD", "c1", "/run/netns/x", "eth0", POD_ARGS),
        ) else {
            panic!("ADD did not parse")
        };
        assert_eq!(
            a.pod,
            Some(PodRef {
                namespace: "ns1".into(),
                name: "web-0".into(),
                uid: Some("u-1".into())
            })
        );
        assert_eq!(a.shim_timeout, Duration::from_secs(30));
        assert_eq!(a.lock_key(), "pod:ns1/web-0");
    }

    #[test]
    fn del_without_a_usable_name_locks_on_container() {
        let Ok(Route::Cni(Command::Del(a))) =
            parse("POST", "/v1/cni", &body("DEL", "C_9", "", "eth0", ""))
        else {
            panic!("DEL did not parse")
        };
        assert_eq!(a.pod, None);
        assert_eq!(a.lock_key(), "container:C_9");
        // A ctr DEL (no CNI_ARGS) locks where its ADD did.
        let Ok(Route::Cni(Command::Del(a))) =
            parse("POST", "/v1/cni", &body("DEL", "c9", "", "eth0", ""))
        else {
            panic!("DEL did not parse")
        };
        assert_eq!(a.lock_key(), "pod:kuryr-standalone/c9");
    }

    /// (case, verb, CNI_ARGS, CNI_CONTAINERID) → the KuryrPort `namespace/name` (uid) the
    /// attachment is wired from, `None`, or the CNI error code (and a piece of its message).
    #[test]
    fn target_table() {
        type Want = Result<Option<(&'static str, Option<&'static str>)>, (u32, &'static str)>;
        let hex = "4c5bd8fbd7ba42b0a2bc4b9e0fd1d1d97f7a6d4a9c1e0a4bd9e7f6f1c2d3e4f5";
        let long = format!("K8S_POD_NAME={}", "a".repeat(254));
        let cases: Vec<(&str, CniCommand, &str, &str, Want)> = vec![
            (
                "containerd CRI pod",
                CniCommand::Add,
                POD_ARGS,
                "c1",
                Ok(Some(("ns1/web-0", Some("u-1")))),
            ),
            (
                "pod without uid",
                CniCommand::Add,
                "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b",
                "c1",
                Ok(Some(("a/b", None))),
            ),
            (
                "podman",
                CniCommand::Add,
                "IgnoreUnknown=1;K8S_POD_NAME=web-1",
                hex,
                Ok(Some(("sa/web-1", None))),
            ),
            (
                "podman, empty namespace",
                CniCommand::Add,
                "K8S_POD_NAMESPACE=;K8S_POD_NAME=web-1",
                hex,
                Ok(Some(("sa/web-1", None))),
            ),
            (
                "ctr: container id",
                CniCommand::Add,
                "",
                "default-ctr-1",
                Ok(Some(("sa/default-ctr-1", None))),
            ),
            (
                "ctr: empty name falls back to the id",
                CniCommand::Add,
                "K8S_POD_NAME=",
                "ctr.1",
                Ok(Some(("sa/ctr.1", None))),
            ),
            (
                "podman default name (underscore)",
                CniCommand::Add,
                "IgnoreUnknown=1;K8S_POD_NAME=happy_einstein",
                hex,
                Err((
                    4,
                    "K8S_POD_NAME \"happy_einstein\" cannot name its KuryrPort",
                )),
            ),
            (
                "uppercase name",
                CniCommand::Add,
                "K8S_POD_NAME=Web",
                hex,
                Err((4, "must be created first")),
            ),
            (
                "uppercase ctr id",
                CniCommand::Add,
                "",
                "Ctr1",
                Err((4, "CNI_CONTAINERID \"Ctr1\"")),
            ),
            (
                "name too long",
                CniCommand::Add,
                &long,
                "c",
                Err((4, "at most 253")),
            ),
            (
                "DEL of a bad name: no target",
                CniCommand::Del,
                "K8S_POD_NAME=Web",
                "c",
                Ok(None),
            ),
            (
                "CHECK of podman",
                CniCommand::Check,
                "K8S_POD_NAME=web-1",
                "c",
                Ok(Some(("sa/web-1", None))),
            ),
            (
                "pod in the standalone namespace",
                CniCommand::Add,
                "K8S_POD_NAMESPACE=sa;K8S_POD_NAME=p",
                "c",
                Err((4, "reserved for standalone containers")),
            ),
            (
                "DEL of a pod in the standalone namespace",
                CniCommand::Del,
                "K8S_POD_NAMESPACE=sa;K8S_POD_NAME=p",
                "c",
                Ok(Some(("sa/p", None))),
            ),
            (
                "namespace without name",
                CniCommand::Add,
                "K8S_POD_NAMESPACE=a",
                "c",
                Err((KURYR_NOT_A_POD, "K8S_POD_NAME")),
            ),
            (
                "DEL with namespace without name",
                CniCommand::Del,
                "K8S_POD_NAMESPACE=a",
                "c",
                Ok(None),
            ),
        ];
        for (name, cmd, args, cid, want) in cases {
            let args = CniArgs::parse(args).expect("args");
            let got = target(cmd, &args, cid, "sa");
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    let got = got.map(|p| (p.to_string(), p.uid));
                    let want = want.map(|(k, u)| (k.to_string(), u.map(str::to_owned)));
                    assert_eq!(got, want, "case {name:?}");
                }
                (Err(e), Err((code, piece))) => {
                    assert_eq!(e.code, code, "case {name:?}: {e:?}");
                    let text = format!("{} {}", e.msg, e.details);
                    assert!(text.contains(piece), "case {name:?}: {text}");
                }
                (got, want) => panic!("case {name:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bad_standalone_name_error_says_what_to_do() {
        let args = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web_1").expect("args");
        let e = target(CniCommand::Add, &args, "c", "kuryr-standalone").expect_err("bad name");
        assert_eq!(e.code, 4);
        assert!(
            e.msg.starts_with("ADD of a standalone container"),
            "{}",
            e.msg
        );
        assert!(e.msg.contains("contains '_'"), "{}", e.msg);
        assert!(
            e.details
                .contains("KuryrPort kuryr-standalone/<K8S_POD_NAME>, which must be created first"),
            "{}",
            e.details
        );
        assert!(
            e.details.contains("kuryr.openstack.org/standalone=true"),
            "{}",
            e.details
        );
    }

    #[test]
    fn standalone_namespace_is_a_parameter() {
        let b = body("ADD", "c1", "/run/netns/x", "eth0", "K8S_POD_NAME=web-1");
        let Ok(Route::Cni(Command::Add(a))) = parse_in("podman-ports", "POST", "/v1/cni", &b)
        else {
            panic!("ADD did not parse")
        };
        assert_eq!(
            a.pod.map(|p| p.to_string()).as_deref(),
            Some("podman-ports/web-1")
        );
        let Ok(Route::Cni(Command::Add(a))) = parse("POST", "/v1/cni", &b) else {
            panic!("ADD did not parse")
        };
        assert_eq!(a.lock_key(), "pod:kuryr-standalone/web-1");
    }

    #[test]
    fn gc_lists_valid_attachments() {
        let conf = json!({"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni",
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"bogus":1}]});
        let b = serde_json::to_vec(&json!({"command":"GC","path":"/opt/cni/bin","config":conf}))
            .expect("json");
        assert_eq!(
            parse("POST", "/v1/cni", &b),
            Ok(Route::Cni(Command::Gc {
                valid: vec![("a".into(), "eth0".into())]
            }))
        );
    }
}
