//! Validation of container IDs, interface names and network names (SPEC.md 1.1.0
//! "Parameters" and "Configuration format").

use crate::error::CniError;

/// Linux `IFNAMSIZ` is 16 including the terminating NUL, so names are at most 15 bytes.
pub const MAX_IFNAME_LEN: usize = 15;

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`: container IDs and network names.
pub fn is_valid_cni_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `CNI_CONTAINERID`: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. Code 4 otherwise.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::invalid_env(
            "required env variables [CNI_CONTAINERID] missing",
            "",
        ));
    }
    if !is_valid_cni_name(id) {
        return Err(CniError::invalid_env(
            "invalid characters in CNI_CONTAINERID",
            format!("{id:?} does not match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ));
    }
    Ok(())
}

/// `CNI_IFNAME`: non-empty, less than 16 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace. Code 4 otherwise.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_env(
            "required env variables [CNI_IFNAME] missing",
            "",
        ));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(CniError::invalid_env(
            "CNI_IFNAME is too long",
            format!(
                "{name:?} is {} bytes, at most {MAX_IFNAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(CniError::invalid_env(
            "CNI_IFNAME is . or ..",
            format!("{name:?}"),
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(CniError::invalid_env(
            "CNI_IFNAME contains / or : or whitespace characters",
            format!("{name:?}"),
        ));
    }
    Ok(())
}

/// The config's `name`: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. Code 7 otherwise.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_config("missing network name", ""));
    }
    if !is_valid_cni_name(name) {
        return Err(CniError::invalid_config(
            "invalid characters found in network name",
            format!("{name:?} does not match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ));
    }
    Ok(())
}
