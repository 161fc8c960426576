//! The daemon's socket API parse step from one byte string, with its invariants: for the
//! property tests and the cargo-fuzz target `daemon_api` (`fuzz/` at the workspace root). Not
//! used by the daemon.
//!
//! Input: the first line is `METHOD PATH`, the rest is the request body.

use kuryr_cni_api::{codes::is_spec_code, validate_container_id, validate_ifname, DelQueueEntry};

use super::routes::{parse_in, Command, Route};

/// Parses one request. A rejection has a 4xx status and a spec code; an accepted ADD, DEL or
/// CHECK has a valid container id and interface name, an absolute (or, for DEL, empty) netns,
/// and an ADD names its pod.
pub fn api_request(data: &[u8]) -> Result<(), String> {
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let line = String::from_utf8_lossy(line);
    let (method, path) = line.split_once(' ').unwrap_or((&line, "/"));
    // The DEL queue holds the same requests (written by kuryr-cni, read back at start-up).
    let _ = DelQueueEntry::from_json(body).map(|e| e.file_name());
    match parse_in("kuryr-standalone", method, path, body) {
        Err(r) => {
            if !matches!(r.status, 400 | 404 | 405) {
                return Err(format!("rejected with HTTP {}: {:?}", r.status, r.error));
            }
            if !is_spec_code(r.error.code) || r.error.msg.is_empty() {
                return Err(format!("rejection not in spec: {:?}", r.error));
            }
            Ok(())
        }
        Ok(Route::Ready) => Ok(()),
        Ok(Route::Cni(cmd)) => {
            let verb = cmd.verb();
            let a = match cmd {
                Command::Add(a) => {
                    if a.pod.is_none() || a.netns.is_empty() {
                        return Err(format!("ADD accepted without pod or netns: {a:?}"));
                    }
                    a
                }
                Command::Del(a) | Command::Check(a) => a,
                Command::Gc { .. } | Command::Status => return Ok(()),
            };
            validate_container_id(&a.container_id).map_err(|e| format!("{verb}: {e}"))?;
            validate_ifname(&a.ifname).map_err(|e| format!("{verb}: {e}"))?;
            if !(a.netns.starts_with('/') || a.netns.is_empty()) {
                return Err(format!("{verb} accepted netns {:?}", a.netns));
            }
            if a.shim_timeout.is_zero() {
                return Err(format!("{verb} accepted a zero deadline"));
            }
            Ok(())
        }
    }
}
