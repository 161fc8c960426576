//! CNI spec versions and the VERSION command.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CniError;

/// The CNI spec versions kuryr speaks, oldest first. 0.1.0/0.2.0 (the `ip4`/`ip6` result
/// shape) are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// What `VERSION` reports in `supportedVersions`.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl CniVersion {
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Exact match on the version string (`"1.1"` or `"v1.1.0"` are not accepted).
    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// 0.3.x/0.4.0 results carry `"version": "4"|"6"` in each `ips` entry; 1.0.0 removed it.
    pub fn has_ip_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// 1.1.0 added `interfaces[].mtu/socketPath/pciID` and
    /// `routes[].mtu/advmss/priority/table/scope` to the result.
    pub fn has_v1_1_result_fields(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::parse(s).ok_or_else(|| unsupported_version(s))
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CniVersion::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unsupported CNI version {s:?}")))
    }
}

/// Code 1 "incompatible CNI versions" for a version string kuryr does not speak.
pub fn unsupported_version(requested: &str) -> CniError {
    CniError::incompatible_version(
        "incompatible CNI versions",
        format!(
            "config is {requested:?}, plugin supports [{}]",
            SUPPORTED_VERSIONS.join(", ")
        ),
    )
}

/// The answer to `VERSION`: `{"cniVersion": <input cniVersion>, "supportedVersions": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// Builds the VERSION answer for the given stdin. The spec says `cniVersion` is "the
    /// value of cniVersion specified on input", so a string `cniVersion` is echoed back
    /// (even one kuryr does not support: the caller learns the supported list either way).
    /// Empty or undecodable stdin, or one without `cniVersion`, is answered with the latest
    /// version rather than an error: VERSION is a probe and libcni-based callers
    /// (podman) only look at `supportedVersions`.
    pub fn for_stdin(stdin: &[u8]) -> VersionInfo {
        let requested = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| {
                v.get("cniVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .filter(|v| !v.is_empty());
        VersionInfo {
            cni_version: requested.unwrap_or_else(|| CniVersion::LATEST.as_str().to_owned()),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
