//! One CNI invocation: environment + stdin in, stdout + exit code out. No panics on
//! input: every failure becomes a CNI error object.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use kuryr_cni_api::{
    codes, CniArgs, CniCommand, CniError, CniRequest, CniResponse, CniResult, CniVersion,
    DelQueueEntry, NetConf, VersionInfo, CNI_ENDPOINT,
};

use crate::delqueue;
use crate::http::{self, Deadline, HttpError, Response};
use crate::log::Logger;

/// What to print and how to exit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            exit_code: 0,
        }
    }
}

/// Reads one environment variable (`None` when unset).
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<OsString>;

struct Ctx {
    /// The version errors are reported in: the config's, once known and supported.
    version: CniVersion,
    log: Logger,
}

/// Sends the request body to the daemon's socket within the deadline and returns its answer
/// ([`http::request`] in the binary).
pub type Transport<'a> = &'a mut dyn FnMut(&Path, &[u8], Deadline) -> Result<Response, HttpError>;

/// Runs the invocation. `started` is when the process started: the deadline counts from it.
pub fn run(env: EnvFn<'_>, stdin: &mut dyn Read, started: Instant) -> Outcome {
    run_with(env, stdin, started, &mut |socket, body, deadline| {
        http::request(socket, "POST", CNI_ENDPOINT, Some(body), deadline)
    })
}

/// [`run`] with another transport (tests and fuzz targets answer from bytes). Everything
/// else, parsing, the DEL queue and the printed answer, is what the binary does.
pub fn run_with(
    env: EnvFn<'_>,
    stdin: &mut dyn Read,
    started: Instant,
    transport: Transport<'_>,
) -> Outcome {
    let mut ctx = Ctx {
        version: CniVersion::LATEST,
        log: Logger::disabled(),
    };
    match dispatch(&mut ctx, env, stdin, started, transport) {
        Ok(out) => {
            ctx.log
                .info(&format!("ok in {} ms", started.elapsed().as_millis()));
            out
        }
        Err(e) => {
            let e = e.with_version(ctx.version.as_str());
            ctx.log.error(&format!(
                "failed in {} ms: {e}",
                started.elapsed().as_millis()
            ));
            Outcome {
                stdout: format!("{}\n", e.to_json()),
                stderr: String::new(),
                exit_code: 1,
            }
        }
    }
}

/// The `CNI_*` variables; empty string when unset.
struct Vars {
    container_id: String,
    netns: String,
    ifname: String,
    args: String,
    path: String,
}

fn getenv(env: EnvFn<'_>, name: &str) -> Result<String, CniError> {
    match env(name) {
        None => Ok(String::new()),
        Some(v) => v.into_string().map_err(|_| {
            CniError::invalid_env(
                format!("invalid env variable {name}"),
                "the value is not valid UTF-8",
            )
        }),
    }
}

fn read_vars(command: CniCommand, env: EnvFn<'_>) -> Result<Vars, CniError> {
    let vars = Vars {
        container_id: getenv(env, "CNI_CONTAINERID")?,
        netns: getenv(env, "CNI_NETNS")?,
        ifname: getenv(env, "CNI_IFNAME")?,
        args: getenv(env, "CNI_ARGS")?,
        path: getenv(env, "CNI_PATH")?,
    };
    let missing: Vec<&str> = command
        .required_env()
        .iter()
        .copied()
        .filter(|name| match *name {
            "CNI_CONTAINERID" => vars.container_id.is_empty(),
            "CNI_NETNS" => vars.netns.is_empty(),
            "CNI_IFNAME" => vars.ifname.is_empty(),
            "CNI_PATH" => vars.path.is_empty(),
            _ => false,
        })
        .collect();
    if !missing.is_empty() {
        return Err(CniError::invalid_env(
            format!("required env variables [{}] missing", missing.join(",")),
            format!("{command} requires {}", command.required_env().join(", ")),
        ));
    }
    if command.is_per_attachment() {
        kuryr_cni_api::validate_container_id(&vars.container_id)?;
        kuryr_cni_api::validate_ifname(&vars.ifname)?;
        CniArgs::parse(&vars.args)?;
    }
    Ok(vars)
}

fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>, CniError> {
    let mut data = Vec::new();
    stdin.read_to_end(&mut data).map_err(|e| {
        CniError::io_failure("error reading network config from stdin", e.to_string())
    })?;
    Ok(data)
}

fn dispatch(
    ctx: &mut Ctx,
    env: EnvFn<'_>,
    stdin: &mut dyn Read,
    started: Instant,
    transport: Transport<'_>,
) -> Result<Outcome, CniError> {
    let command = CniCommand::from_env_value(getenv(env, "CNI_COMMAND")?.as_str().into())?;
    if command == CniCommand::Version {
        // VERSION is a probe: an unreadable stdin is answered like an empty one.
        let data = read_stdin(stdin).unwrap_or_default();
        return Ok(Outcome::ok(format!(
            "{}\n",
            VersionInfo::for_stdin(&data).to_json()
        )));
    }
    let vars = read_vars(command, env)?;
    let data = read_stdin(stdin)?;
    let (conf, config) = NetConf::parse(&data)?;
    // Report errors in the config's version as soon as it is one we speak, even when it
    // is too old for this verb.
    if let Some(v) = CniVersion::parse(&conf.cni_version) {
        ctx.version = v;
    }
    ctx.version = command.check_version(&conf.cni_version)?;
    ctx.log = Logger::open(conf.log_file.as_deref(), conf.debug);
    ctx.log.set_context(if command.is_per_attachment() {
        format!(
            "{command} cid={} ifname={} netns={:?}",
            vars.container_id, vars.ifname, vars.netns
        )
    } else {
        command.to_string()
    });

    // Chained ADD: decode the previous plugins' result now, before asking the daemon.
    let prev = match (&conf.prev_result, command) {
        (Some(p), CniCommand::Add) if !p.is_null() => {
            Some(CniResult::from_prev_result(p, &conf.cni_version)?)
        }
        _ => None,
    };

    let request = CniRequest {
        command,
        container_id: vars.container_id,
        netns: vars.netns,
        ifname: vars.ifname,
        args: vars.args,
        path: vars.path,
        config,
    };
    let body = request.to_json()?;
    let timeout = conf.timeout_for(command);
    let deadline = Deadline::new(started, timeout);
    let socket = Path::new(&conf.daemon_socket);
    ctx.log
        .debug(|| format!("POST {CNI_ENDPOINT} on {}: {body}", socket.display()));

    let sent = transport(socket, body.as_bytes(), deadline);
    if let Ok(resp) = &sent {
        ctx.log.debug(|| {
            format!(
                "HTTP {} {}: {}",
                resp.status,
                resp.reason,
                String::from_utf8_lossy(&resp.body)
            )
        });
    }
    match sent {
        Ok(resp) => handle_response(ctx, command, resp, prev),
        Err(e) => handle_failure(ctx, &conf, &request, e, timeout),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(512) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

fn handle_response(
    ctx: &mut Ctx,
    command: CniCommand,
    resp: Response,
    prev: Option<CniResult>,
) -> Result<Outcome, CniError> {
    if !resp.is_success() {
        if let Some(mut e) = CniError::from_body(&resp.body) {
            if codes::is_spec_code(e.code) {
                if e.msg.trim().is_empty() {
                    // The spec requires a message; say at least who failed.
                    e.msg = format!("kuryr-daemon failed {command} with HTTP {}", resp.status);
                }
                return Err(e);
            }
            // A code the spec reserves (8-10, 12-49, 52-99) must not reach the runtime.
            return Err(CniError::new(
                codes::KURYR_DAEMON_BAD_RESPONSE,
                format!(
                    "kuryr-daemon failed {command} with code {}, which the CNI spec reserves",
                    e.code
                ),
                format!("{}: {}", e.msg, e.details),
            ));
        }
        let details = format!(
            "HTTP {} {}: {}",
            resp.status,
            resp.reason,
            excerpt(&resp.body)
        );
        return Err(if command == CniCommand::Status {
            CniError::new(
                codes::PLUGIN_NOT_AVAILABLE,
                "kuryr-daemon is not ready",
                details,
            )
        } else {
            CniError::new(
                codes::KURYR_DAEMON_HTTP_ERROR,
                format!("kuryr-daemon failed {command} with HTTP {}", resp.status),
                details,
            )
        });
    }
    let parsed: CniResponse = if resp.body.iter().all(u8::is_ascii_whitespace) {
        CniResponse::default()
    } else {
        serde_json::from_slice(&resp.body).map_err(|e| {
            CniError::new(
                codes::KURYR_DAEMON_BAD_RESPONSE,
                format!("invalid {command} response from kuryr-daemon"),
                format!("{e}; body: {}", excerpt(&resp.body)),
            )
        })?
    };
    if command != CniCommand::Add {
        // DEL, CHECK, GC and STATUS print nothing on success.
        return Ok(Outcome::ok(String::new()));
    }
    let ours = parsed.result.ok_or_else(|| {
        CniError::new(
            codes::KURYR_DAEMON_BAD_RESPONSE,
            "kuryr-daemon returned no result for ADD",
            "",
        )
    })?;
    ours.validate().map_err(|e| {
        CniError::new(
            codes::KURYR_INVALID_RESULT,
            "kuryr-daemon returned an invalid result",
            e,
        )
    })?;
    let result = match prev {
        Some(prev) => CniResult::chained(prev, ours),
        None => ours,
    };
    let out = result.to_version(ctx.version).to_json();
    ctx.log.debug(|| format!("result: {out}"));
    Ok(Outcome::ok(format!("{out}\n")))
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

fn handle_failure(
    ctx: &mut Ctx,
    conf: &NetConf,
    request: &CniRequest,
    err: HttpError,
    timeout: Duration,
) -> Result<Outcome, CniError> {
    let command = request.command;
    let socket = &conf.daemon_socket;
    let what = if command.is_per_attachment() {
        format!(
            "{command} of container {} interface {}",
            request.container_id, request.ifname
        )
    } else {
        command.to_string()
    };
    let (msg, details) = match &err {
        HttpError::Connect(e) => (
            format!("kuryr-daemon unreachable at {socket}: {e}; is kuryr-daemon running?"),
            format!("{what} was not sent"),
        ),
        HttpError::Timeout(step) => (
            format!(
                "kuryr-daemon did not complete {command} within {}: timed out {step}",
                secs(timeout)
            ),
            format!("{what} on {socket}; the daemon may still finish it, retry later"),
        ),
        HttpError::Io(step, e) => (
            format!("connection to kuryr-daemon at {socket} failed while {step}: {e}"),
            format!("{what}; the daemon may have restarted, retry later"),
        ),
        HttpError::Protocol(m) => (
            format!("invalid HTTP response from kuryr-daemon at {socket}"),
            m.clone(),
        ),
    };

    match (command, &err) {
        (CniCommand::Status, _) => Err(CniError::new(codes::PLUGIN_NOT_AVAILABLE, msg, details)),
        // The daemon never got the DEL, or died while handling it: queue it and succeed.
        (CniCommand::Del, HttpError::Connect(_) | HttpError::Io(..)) => {
            let entry = DelQueueEntry::new(request.clone(), delqueue::now_unix_ms(), msg.clone());
            let dir = Path::new(&conf.del_queue_dir);
            match delqueue::enqueue(dir, &entry) {
                Ok(path) => {
                    let note = format!(
                        "{msg}; DEL queued in {} for kuryr-daemon to replay",
                        path.display()
                    );
                    ctx.log.warn(&note);
                    Ok(Outcome {
                        stdout: String::new(),
                        stderr: format!("kuryr-cni: {note}\n"),
                        exit_code: 0,
                    })
                }
                Err(qe) => Err(CniError::try_again_later(
                    format!(
                        "{msg}; and the DEL could not be queued in {}: {qe}",
                        dir.display()
                    ),
                    details,
                )),
            }
        }
        (_, HttpError::Protocol(_)) => Err(CniError::new(
            codes::KURYR_DAEMON_BAD_RESPONSE,
            msg,
            details,
        )),
        _ => Err(CniError::try_again_later(msg, details)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> (Outcome, serde_json::Value) {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(*v)))
            .collect();
        let env = move |k: &str| map.get(k).cloned();
        let out = run(&env, &mut stdin.as_bytes(), Instant::now());
        let v = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, v)
    }

    #[test]
    fn missing_command_lists_the_variable() {
        let (out, v) = run_with(&[], "{}");
        assert_eq!(out.exit_code, 1);
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["msg"].as_str().unwrap().contains("CNI_COMMAND"));
    }

    #[test]
    fn add_missing_everything_lists_all_variables() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"kuryr-cni"}"#;
        let (_, v) = run_with(&[("CNI_COMMAND", "ADD")], conf);
        assert_eq!(
            v["msg"],
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"
        );
    }

    #[test]
    fn version_ignores_other_variables() {
        let (out, v) = run_with(
            &[
                ("CNI_COMMAND", "VERSION"),
                ("CNI_CONTAINERID", "$$bad"),
                ("CNI_IFNAME", "dummy"),
            ],
            r#"{"cniVersion":"0.4.0"}"#,
        );
        assert_eq!(out.exit_code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
    }

    #[test]
    fn unreadable_stdin_is_code_5() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("stdin exploded"))
            }
        }
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(OsString::from("STATUS")),
            _ => None,
        };
        let out = run(&env, &mut Broken, Instant::now());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!((out.exit_code, v["code"].as_u64()), (1, Some(5)));
        assert_eq!(v["details"], "stdin exploded");
        // VERSION treats it as empty input.
        let env = |k: &str| (k == "CNI_COMMAND").then(|| OsString::from("VERSION"));
        let out = run(&env, &mut Broken, Instant::now());
        assert_eq!(out.exit_code, 0);
        assert!(out
            .stdout
            .starts_with(r#"{"cniVersion":"1.1.0","supportedVersions""#));
    }

    #[test]
    fn non_utf8_variable_is_code_4() {
        use std::os::unix::ffi::OsStringExt;
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(OsString::from("ADD")),
            "CNI_CONTAINERID" => Some(OsString::from_vec(vec![b'a', 0xff])),
            _ => None,
        };
        let out = run(&env, &mut &b"{}"[..], Instant::now());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!((out.exit_code, v["code"].as_u64()), (1, Some(4)));
        assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
    }
}
