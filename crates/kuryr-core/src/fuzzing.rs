//! The outside input kuryr-core reads, from one byte string, with the invariants checked: for
//! the property tests and the cargo-fuzz targets `kuryr_conf` and `kuryrport_vif` (`fuzz/` at
//! the workspace root). Not used by the programs.

use crate::config::{Config, Ini, Role};
use crate::crd::KuryrPortStatus;
use crate::vif::Vif;

/// kuryr.conf text, read as the controller and as the daemon read it. Never panics.
pub fn kuryr_conf(text: &str) {
    if Ini::parse(text).is_ok() {
        for role in [Role::Controller, Role::Daemon] {
            let _ = Config::parse(text, role);
        }
    }
}

/// A VIF as stored in `KuryrPort.status.vifs[ifname].vif` (either form), or a whole
/// `status`. A VIF that is read is valid and survives being written back in the status form
/// (an os-vif primitive) and read again, unchanged.
pub fn kuryrport_vif(data: &[u8]) -> Result<(), String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Ok(());
    };
    let mut vifs = vec![Vif::from_status_value(&v)];
    if let Ok(status) = serde_json::from_value::<KuryrPortStatus>(v) {
        let _ = status.default_vif();
        vifs.extend(status.vifs.values().map(|e| e.vif()));
    }
    for vif in vifs.into_iter().flatten() {
        vif.validate()
            .map_err(|e| format!("a VIF that was read does not validate: {e}: {vif:?}"))?;
        let again = Vif::from_status_value(&vif.to_status_value())
            .map_err(|e| format!("a VIF written back does not read: {e}: {vif:?}"))?;
        if again != vif {
            return Err(format!("VIF changed on a round trip: {vif:?} -> {again:?}"));
        }
        for ip in &vif.ips {
            ip.prefix_len()
                .map_err(|e| format!("{e} in a VIF that was read: {vif:?}"))?;
        }
    }
    Ok(())
}
