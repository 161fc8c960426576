//! The parse step: (method, path, body) → a typed [`Route`]. Pure, so it is tested with raw
//! (also broken) input; execution lives in [`crate::cni`].

use std::time::Duration;

use kuryr_cni_api::{
    codes, validate_container_id, validate_ifname, CniArgs, CniCommand, CniError, CniRequest,
    NetConf, CNI_ENDPOINT, READY_ENDPOINT,
};

/// A Kubernetes pod as named by `CNI_ARGS`.
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
    /// The pod, when `CNI_ARGS` names one (always for ADD).
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

/// Routes `method path` and parses the body.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<Route, Rejection> {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("POST", p) if p == CNI_ENDPOINT => parse_cni(body).map(Route::Cni),
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

/// Parses the body of `POST /v1/cni` into a [`Command`].
pub fn parse_cni(body: &[u8]) -> Result<Command, Rejection> {
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
            let pod = args.pod().map(|(ns, name)| PodRef {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                uid: args.k8s_pod_uid.clone().filter(|u| !u.is_empty()),
            });
            if req.command == CniCommand::Add && pod.is_none() {
                let e = crate::error::DaemonError::NotAPod.to_cni_error();
                return Err(bad(e));
            }
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
            ("add without pod args", "POST", "/v1/cni", body("ADD", "c1", "/run/netns/x", "eth0", "IgnoreUnknown=1"), Err((400, KURYR_NOT_A_POD))),
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
    fn del_without_pod_locks_on_container() {
        let Ok(Route::Cni(Command::Del(a))) =
            parse("POST", "/v1/cni", &body("DEL", "c9", "", "eth0", ""))
        else {
            panic!("DEL did not parse")
        };
        assert_eq!(a.pod, None);
        assert_eq!(a.lock_key(), "container:c9");
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
