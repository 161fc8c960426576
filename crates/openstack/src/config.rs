//! Cloud configuration: explicit values or a `clouds.yaml` (subset of os-client-config).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Catalog endpoint interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Interface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl Interface {
    /// Name as used in the Keystone catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interface {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "public" | "publicurl" => Ok(Interface::Public),
            "internal" | "internalurl" => Ok(Interface::Internal),
            "admin" | "adminurl" => Ok(Interface::Admin),
            other => Err(Error::Config(format!(
                "unknown endpoint interface {other:?} (expected public, internal or admin)"
            ))),
        }
    }
}

/// Keystone authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// `password` / `v3password`: user + password, scoped to a project.
    Password,
    /// `v3applicationcredential`: application credential (scope is implied).
    ApplicationCredential,
}

impl FromStr for AuthType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['_', '-'], "")
            .as_str()
        {
            "password" | "v3password" => Ok(AuthType::Password),
            "v3applicationcredential" | "applicationcredential" => {
                Ok(AuthType::ApplicationCredential)
            }
            other => Err(Error::Config(format!(
                "unsupported auth_type {other:?} (supported: password, v3password, \
                 v3applicationcredential, applicationcredential)"
            ))),
        }
    }
}

/// The `auth:` section of a cloud. Secrets are redacted from `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub auth_url: String,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_secret: Option<String>,
    pub application_credential_name: Option<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthConfig")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("user_id", &self.user_id)
            .field("password", &redact(&self.password))
            .field("user_domain_name", &self.user_domain_name)
            .field("user_domain_id", &self.user_domain_id)
            .field("project_name", &self.project_name)
            .field("project_id", &self.project_id)
            .field("project_domain_name", &self.project_domain_name)
            .field("project_domain_id", &self.project_domain_id)
            .field("application_credential_id", &self.application_credential_id)
            .field(
                "application_credential_secret",
                &redact(&self.application_credential_secret),
            )
            .field(
                "application_credential_name",
                &self.application_credential_name,
            )
            .finish()
    }
}

/// Everything needed to build a [`crate::Session`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudConfig {
    pub auth: AuthConfig,
    /// `None`: inferred (application credential if a secret is set, else password).
    pub auth_type: Option<AuthType>,
    pub region_name: Option<String>,
    pub interface: Interface,
    /// PEM bundle of extra trusted CAs.
    pub cacert: Option<PathBuf>,
    /// Skip TLS verification (clouds.yaml `verify: false` / `insecure: true`).
    pub insecure: bool,
    /// Per-request timeout; `None` means [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Service type (`network`, `load-balancer`) → base URL, bypassing the catalog.
    pub endpoint_overrides: BTreeMap<String, String>,
}

impl CloudConfig {
    /// Application credential by id.
    pub fn application_credential(
        auth_url: impl Into<String>,
        id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        CloudConfig {
            auth: AuthConfig {
                auth_url: auth_url.into(),
                application_credential_id: Some(id.into()),
                application_credential_secret: Some(secret.into()),
                ..AuthConfig::default()
            },
            auth_type: Some(AuthType::ApplicationCredential),
            ..CloudConfig::default()
        }
    }

    /// Password auth scoped to a project; user and project in domain `Default`.
    pub fn password(
        auth_url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
        project_name: impl Into<String>,
    ) -> Self {
        CloudConfig {
            auth: AuthConfig {
                auth_url: auth_url.into(),
                username: Some(username.into()),
                password: Some(password.into()),
                project_name: Some(project_name.into()),
                user_domain_name: Some("Default".into()),
                project_domain_name: Some("Default".into()),
                ..AuthConfig::default()
            },
            auth_type: Some(AuthType::Password),
            ..CloudConfig::default()
        }
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region_name = Some(region.into());
        self
    }

    /// Overrides the endpoint of one service type.
    pub fn with_endpoint_override(
        mut self,
        service_type: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        self.endpoint_overrides
            .insert(service_type.into(), url.into());
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Loads cloud `name` from a clouds.yaml file.
    pub fn from_clouds_yaml(path: impl AsRef<Path>, name: &str) -> Result<Self> {
        CloudsFile::from_path(path)?.cloud(name)
    }

    /// Loads cloud `name` from the first clouds.yaml found in the usual places:
    /// `$OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`, `~/.config/openstack/clouds.yaml`,
    /// `/etc/openstack/clouds.yaml`.
    pub fn load(name: &str) -> Result<Self> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("OS_CLIENT_CONFIG_FILE") {
            candidates.push(p.into());
        }
        candidates.push("clouds.yaml".into());
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".config/openstack/clouds.yaml"));
        }
        candidates.push("/etc/openstack/clouds.yaml".into());
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => Self::from_clouds_yaml(p, name),
            None => Err(Error::Config(format!(
                "no clouds.yaml found (looked at {candidates:?})"
            ))),
        }
    }

    /// Effective auth type (explicit or inferred).
    pub fn resolved_auth_type(&self) -> AuthType {
        match self.auth_type {
            Some(t) => t,
            None if self.auth.application_credential_secret.is_some() => {
                AuthType::ApplicationCredential
            }
            None => AuthType::Password,
        }
    }

    /// Effective per-request timeout.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// Largest `api_timeout` of a cloud, in seconds (one day).
pub const MAX_API_TIMEOUT_SECONDS: f64 = 86_400.0;

/// A parsed clouds.yaml; clouds are validated when picked with [`CloudsFile::cloud`].
#[derive(Clone, Debug, Default)]
pub struct CloudsFile {
    clouds: BTreeMap<String, RawCloud>,
    source: String,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    clouds: BTreeMap<String, RawCloud>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawCloud {
    auth: BTreeMap<String, serde_yaml::Value>,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
    cacert: Option<PathBuf>,
    verify: Option<serde_yaml::Value>,
    insecure: Option<bool>,
    api_timeout: Option<f64>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_yaml::Value>,
}

impl CloudsFile {
    /// Reads and parses a clouds.yaml file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut f = Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        f.source = path.display().to_string();
        Ok(f)
    }

    /// Parses clouds.yaml text.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawFile = serde_yaml::from_str(text)
            .map_err(|e| Error::Config(format!("invalid clouds.yaml: {e}")))?;
        Ok(CloudsFile {
            clouds: raw.clouds,
            source: "clouds.yaml".into(),
        })
    }

    /// Names of the clouds in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clouds.keys().map(String::as_str)
    }

    /// The cloud called `name`.
    pub fn cloud(&self, name: &str) -> Result<CloudConfig> {
        let raw = self.clouds.get(name).ok_or_else(|| {
            Error::Config(format!(
                "cloud {name:?} not found in {} (have: {})",
                self.source,
                self.clouds.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        raw.to_config(name)
    }
}

fn scalar(key: &str, v: &serde_yaml::Value) -> Result<Option<String>> {
    use serde_yaml::Value;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(Error::Config(format!("auth.{key} must be a scalar"))),
    }
}

impl RawCloud {
    fn to_config(&self, name: &str) -> Result<CloudConfig> {
        let mut auth = AuthConfig::default();
        for (k, v) in &self.auth {
            let val = scalar(k, v)?;
            let slot = match k.as_str() {
                "auth_url" => {
                    auth.auth_url = val.unwrap_or_default();
                    continue;
                }
                "username" | "user_name" => &mut auth.username,
                "user_id" => &mut auth.user_id,
                "password" => &mut auth.password,
                "user_domain_name" => &mut auth.user_domain_name,
                "user_domain_id" => &mut auth.user_domain_id,
                "project_name" | "tenant_name" => &mut auth.project_name,
                "project_id" | "tenant_id" => &mut auth.project_id,
                "project_domain_name" => &mut auth.project_domain_name,
                "project_domain_id" => &mut auth.project_domain_id,
                "application_credential_id" => &mut auth.application_credential_id,
                "application_credential_secret" => &mut auth.application_credential_secret,
                "application_credential_name" => &mut auth.application_credential_name,
                other => {
                    tracing::debug!(cloud = name, key = other, "ignoring unsupported auth key");
                    continue;
                }
            };
            *slot = val;
        }
        let auth_type = self.auth_type.as_deref().map(str::parse).transpose()?;
        let interface = match &self.interface {
            Some(s) => s.parse()?,
            None => Interface::default(),
        };
        let mut cacert = self.cacert.clone();
        let mut insecure = self.insecure.unwrap_or(false);
        match &self.verify {
            None | Some(serde_yaml::Value::Null) => {}
            Some(serde_yaml::Value::Bool(b)) => insecure = insecure || !*b,
            Some(serde_yaml::Value::String(p)) => {
                if cacert.is_none() {
                    cacert = Some(PathBuf::from(p));
                }
            }
            Some(_) => {
                return Err(Error::Config(format!(
                    "cloud {name:?}: verify must be a boolean or a CA bundle path"
                )))
            }
        }
        let timeout = match self.api_timeout {
            // At most a day: larger would not fit a Duration (or a deadline) anyway.
            Some(t) if t.is_finite() && t > 0.0 && t <= MAX_API_TIMEOUT_SECONDS => {
                Some(Duration::from_secs_f64(t))
            }
            Some(t) => {
                return Err(Error::Config(format!(
                    "cloud {name:?}: api_timeout must be a positive number of seconds, at most \
                     {MAX_API_TIMEOUT_SECONDS}, got {t}"
                )))
            }
            None => None,
        };
        let mut endpoint_overrides = BTreeMap::new();
        for (k, v) in &self.extra {
            if let Some(svc) = k.strip_suffix("_endpoint_override") {
                if let Some(url) = scalar(k, v)? {
                    endpoint_overrides.insert(svc.replace('_', "-"), url);
                }
            }
        }
        Ok(CloudConfig {
            auth,
            auth_type,
            region_name: self.region_name.clone(),
            interface,
            cacert,
            insecure,
            timeout,
            endpoint_overrides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDS: &str = r#"
clouds:
  admin:
    auth_type: password
    auth: {auth_url: 'http://127.0.0.1:5000/v3', username: admin, password: 'pw', project_name: admin, user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  kuryr:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://127.0.0.1:5000/v3
      application_credential_id: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
      application_credential_secret: s3cr3t
    region_name: RegionOne
    interface: internalURL
    cacert: /etc/ssl/ca.pem
    api_timeout: 2.5
    network_endpoint_override: http://neutron.example:9696
    load_balancer_endpoint_override: http://octavia.example:9876
  numeric:
    auth:
      auth_url: https://keystone.example/v3
      username: kuryr
      password: 123456
      project_id: 42
    verify: false
  appcred-by-name:
    auth_type: applicationcredential
    auth:
      auth_url: https://keystone.example
      application_credential_name: kuryr
      application_credential_secret: x
      username: kuryr
      user_domain_name: Default
  bad:
    auth_type: token
    auth: {auth_url: x}
"#;

    #[test]
    fn parses_password_cloud() {
        let f = CloudsFile::parse(CLOUDS).unwrap();
        assert_eq!(
            f.names().collect::<Vec<_>>(),
            ["admin", "appcred-by-name", "bad", "kuryr", "numeric"]
        );
        let c = f.cloud("admin").unwrap();
        assert_eq!(c.resolved_auth_type(), AuthType::Password);
        assert_eq!(c.auth.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(c.auth.username.as_deref(), Some("admin"));
        assert_eq!(c.auth.project_domain_name.as_deref(), Some("Default"));
        assert_eq!(c.region_name.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, Interface::Public);
        assert!(!c.insecure);
        assert_eq!(c.effective_timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn parses_appcred_cloud_with_overrides() {
        let c = CloudsFile::parse(CLOUDS).unwrap().cloud("kuryr").unwrap();
        assert_eq!(c.resolved_auth_type(), AuthType::ApplicationCredential);
        assert_eq!(
            c.auth.application_credential_secret.as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(c.interface, Interface::Internal);
        assert_eq!(c.cacert.as_deref(), Some(Path::new("/etc/ssl/ca.pem")));
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            c.endpoint_overrides["network"],
            "http://neutron.example:9696"
        );
        assert_eq!(
            c.endpoint_overrides["load-balancer"],
            "http://octavia.example:9876"
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn numeric_scalars_and_verify_false() {
        let c = CloudsFile::parse(CLOUDS).unwrap().cloud("numeric").unwrap();
        assert_eq!(c.auth.password.as_deref(), Some("123456"));
        assert_eq!(c.auth.project_id.as_deref(), Some("42"));
        assert!(c.insecure);
        assert_eq!(c.resolved_auth_type(), AuthType::Password);
    }

    #[test]
    fn appcred_by_name_and_errors() {
        let f = CloudsFile::parse(CLOUDS).unwrap();
        let c = f.cloud("appcred-by-name").unwrap();
        assert_eq!(c.auth_type, Some(AuthType::ApplicationCredential));
        assert_eq!(c.auth.application_credential_name.as_deref(), Some("kuryr"));
        let e = f.cloud("bad").unwrap_err();
        assert!(e.to_string().contains("unsupported auth_type"), "{e}");
        let e = f.cloud("nope").unwrap_err();
        assert!(e.to_string().contains("\"nope\" not found"), "{e}");
        assert!(CloudsFile::parse("clouds: [1, 2").is_err());
        assert!(CloudConfig::from_clouds_yaml("/nonexistent/clouds.yaml", "x").is_err());
    }

    #[test]
    fn explicit_constructors() {
        let c = CloudConfig::password("http://k:5000/v3", "u", "p", "proj")
            .with_region("R")
            .with_timeout(Duration::from_secs(3))
            .with_endpoint_override("network", "http://n");
        assert_eq!(c.auth.user_domain_name.as_deref(), Some("Default"));
        assert_eq!(c.region_name.as_deref(), Some("R"));
        assert_eq!(c.effective_timeout(), Duration::from_secs(3));
        let a = CloudConfig::application_credential("http://k", "id", "sec");
        assert_eq!(a.resolved_auth_type(), AuthType::ApplicationCredential);
        assert_eq!("adminURL".parse::<Interface>().unwrap(), Interface::Admin);
        assert!("bogus".parse::<Interface>().is_err());
        assert_eq!(
            "v3password".parse::<AuthType>().unwrap(),
            AuthType::Password
        );
        assert_eq!(
            "v3_application_credential".parse::<AuthType>().unwrap(),
            AuthType::ApplicationCredential
        );
    }
}
