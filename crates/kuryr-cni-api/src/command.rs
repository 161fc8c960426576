//! The CNI verbs (`CNI_COMMAND`) and what each one requires.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CniError;
use crate::version::{unsupported_version, CniVersion};

/// A CNI verb. SPEC.md 1.1.0 says "CNI defines 5 operations" but also defines STATUS, so
/// six are valid. Serialized as the `CNI_COMMAND` spelling (`"ADD"`, `"DEL"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl CniCommand {
    pub const ALL: [CniCommand; 6] = [
        CniCommand::Add,
        CniCommand::Del,
        CniCommand::Check,
        CniCommand::Gc,
        CniCommand::Status,
        CniCommand::Version,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Gc => "GC",
            CniCommand::Status => "STATUS",
            CniCommand::Version => "VERSION",
        }
    }

    /// Case-sensitive, like the reference implementation.
    pub fn parse(s: &str) -> Option<CniCommand> {
        CniCommand::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Parses `CNI_COMMAND`; unset, empty or unknown is code 4.
    pub fn from_env_value(value: Option<&str>) -> Result<CniCommand, CniError> {
        match value {
            None | Some("") => Err(CniError::invalid_env(
                "required env variables [CNI_COMMAND] missing",
                "",
            )),
            Some(v) => CniCommand::parse(v).ok_or_else(|| {
                CniError::invalid_env(
                    format!("unknown CNI_COMMAND: {v}"),
                    "CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION",
                )
            }),
        }
    }

    /// The oldest config `cniVersion` this verb exists in: CHECK came with 0.4.0,
    /// GC and STATUS with 1.1.0.
    pub fn min_version(self) -> CniVersion {
        match self {
            CniCommand::Add | CniCommand::Del | CniCommand::Version => CniVersion::V0_3_0,
            CniCommand::Check => CniVersion::V0_4_0,
            CniCommand::Gc | CniCommand::Status => CniVersion::V1_1_0,
        }
    }

    /// The environment variables the spec requires for this verb (besides `CNI_COMMAND`).
    /// `CNI_NETNS` is optional on DEL (the netns may be gone); `CNI_PATH` is required only
    /// for GC.
    pub fn required_env(self) -> &'static [&'static str] {
        match self {
            CniCommand::Add | CniCommand::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            CniCommand::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            CniCommand::Gc => &["CNI_PATH"],
            CniCommand::Status | CniCommand::Version => &[],
        }
    }

    /// Whether the verb works on one attachment `(CNI_CONTAINERID, CNI_IFNAME)`.
    pub fn is_per_attachment(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Del | CniCommand::Check)
    }

    /// Checks the config's `cniVersion` for this verb: it must be one kuryr supports
    /// (else code 1) and not older than [`min_version`](Self::min_version) (else code 1).
    pub fn check_version(self, config_version: &str) -> Result<CniVersion, CniError> {
        let v =
            CniVersion::parse(config_version).ok_or_else(|| unsupported_version(config_version))?;
        if v < self.min_version() {
            return Err(CniError::incompatible_version(
                format!("config version does not allow {self}"),
                format!(
                    "{self} needs cniVersion {} or later, config is {v}",
                    self.min_version()
                ),
            ));
        }
        Ok(v)
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
