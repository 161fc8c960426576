//! Keystone v3: token issue (password, application credential), token and catalog types.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{AuthType, CloudConfig, Interface};
use crate::error::{error_message, snippet, transport_reason, Error, Result};
use crate::metrics::{MetricsSink, RequestRecord};
use crate::session::Service;

/// Tokens are refreshed when less than this is left (or half their lifetime, if shorter).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// One endpoint of a catalog entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub id: String,
    pub interface: String,
    pub region: Option<String>,
    pub region_id: Option<String>,
    pub url: String,
}

/// One service of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub endpoints: Vec<Endpoint>,
}

/// The service catalog that came with a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Catalog(pub Vec<CatalogEntry>);

impl Catalog {
    /// URL of `service_type` at `interface`, in `region` if given.
    pub fn url_for(
        &self,
        service_type: &str,
        interface: Interface,
        region: Option<&str>,
    ) -> Option<&str> {
        self.0
            .iter()
            .filter(|e| e.service_type == service_type)
            .flat_map(|e| e.endpoints.iter())
            .filter(|ep| {
                let itf = ep.interface.to_ascii_lowercase();
                itf == interface.as_str() || itf == format!("{}url", interface.as_str())
            })
            .find(|ep| match region {
                None => true,
                Some(r) => ep.region_id.as_deref() == Some(r) || ep.region.as_deref() == Some(r),
            })
            .map(|ep| ep.url.as_str())
    }

    /// Service types present in the catalog.
    pub fn service_types(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.service_type.as_str())
    }
}

/// An issued Keystone token. `Debug` does not print the secret.
#[derive(Clone)]
pub struct Token {
    secret: String,
    pub expires_at: SystemTime,
    pub issued_at: Option<SystemTime>,
    pub methods: Vec<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub roles: Vec<String>,
    pub catalog: Catalog,
    received: Instant,
    lifetime: Duration,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("roles", &self.roles)
            .field(
                "services",
                &self.catalog.service_types().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Token {
    /// The `X-Auth-Token` value.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Time left until expiry, measured on our monotonic clock from the server's lifetime.
    pub fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.received.elapsed())
    }

    /// Past expiry.
    pub fn is_expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Close enough to expiry that a new one should be issued.
    pub fn needs_refresh(&self) -> bool {
        let margin = REFRESH_MARGIN.min(self.lifetime / 2);
        self.remaining() <= margin
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenInfo {
    expires_at: String,
    issued_at: Option<String>,
    methods: Vec<String>,
    user: Option<Named>,
    project: Option<Named>,
    roles: Vec<Named>,
    catalog: Catalog,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named {
    id: Option<String>,
    name: Option<String>,
}

/// Credentials resolved from a [`CloudConfig`], ready to be sent.
#[derive(Clone)]
pub(crate) struct Credentials {
    body: Value,
    kind: &'static str,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .finish()
    }
}

fn domain(id: &Option<String>, name: &Option<String>) -> Value {
    match (id, name) {
        (Some(id), _) => json!({ "id": id }),
        (None, Some(name)) => json!({ "name": name }),
        (None, None) => json!({ "name": "Default" }),
    }
}

fn nonempty(v: &Option<String>) -> Option<&String> {
    v.as_ref().filter(|s| !s.is_empty())
}

impl Credentials {
    pub(crate) fn from_config(cfg: &CloudConfig) -> Result<Self> {
        let a = &cfg.auth;
        let user = |what: &str| -> Result<Value> {
            if let Some(id) = nonempty(&a.user_id) {
                Ok(json!({ "id": id }))
            } else if let Some(name) = nonempty(&a.username) {
                Ok(
                    json!({ "name": name, "domain": domain(&a.user_domain_id, &a.user_domain_name) }),
                )
            } else {
                Err(Error::Config(format!(
                    "{what} needs auth.username or auth.user_id"
                )))
            }
        };
        match cfg.resolved_auth_type() {
            AuthType::ApplicationCredential => {
                let secret = nonempty(&a.application_credential_secret).ok_or_else(|| {
                    Error::Config(
                        "application credential auth needs application_credential_secret".into(),
                    )
                })?;
                let ac = if let Some(id) = nonempty(&a.application_credential_id) {
                    json!({ "id": id, "secret": secret })
                } else if let Some(name) = nonempty(&a.application_credential_name) {
                    json!({
                        "name": name,
                        "secret": secret,
                        "user": user("application credential by name")?,
                    })
                } else {
                    return Err(Error::Config(
                        "application credential auth needs application_credential_id or application_credential_name".into(),
                    ));
                };
                Ok(Credentials {
                    body: json!({ "auth": { "identity": {
                        "methods": ["application_credential"],
                        "application_credential": ac,
                    }}}),
                    kind: "application_credential",
                })
            }
            AuthType::Password => {
                let password = a
                    .password
                    .as_ref()
                    .ok_or_else(|| Error::Config("password auth needs auth.password".into()))?;
                let mut u = user("password auth")?;
                u["password"] = json!(password);
                let mut auth = json!({ "identity": {
                    "methods": ["password"],
                    "password": { "user": u },
                }});
                if let Some(id) = nonempty(&a.project_id) {
                    auth["scope"] = json!({ "project": { "id": id } });
                } else if let Some(name) = nonempty(&a.project_name) {
                    auth["scope"] = json!({ "project": {
                        "name": name,
                        "domain": domain(&a.project_domain_id, &a.project_domain_name),
                    }});
                }
                Ok(Credentials {
                    body: json!({ "auth": auth }),
                    kind: "password",
                })
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn body(&self) -> &Value {
        &self.body
    }
}

/// `auth_url` normalized to end in `/v3`.
pub(crate) fn normalize_auth_url(auth_url: &str) -> Result<String> {
    let u = auth_url.trim().trim_end_matches('/');
    if u.is_empty() {
        return Err(Error::Config("auth.auth_url is empty".into()));
    }
    let parsed = url::Url::parse(u)
        .map_err(|e| Error::Config(format!("auth.auth_url {u:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "auth.auth_url {u:?} must be http or https"
        )));
    }
    if u.ends_with("/v3") {
        Ok(u.to_owned())
    } else if u.ends_with("/v2.0") {
        Err(Error::Config(format!(
            "auth.auth_url {u:?} is Keystone v2.0; only v3 is supported"
        )))
    } else {
        Ok(format!("{u}/v3"))
    }
}

/// Requests a new token from Keystone.
pub(crate) async fn issue_token(
    http: &reqwest::Client,
    auth_url: &str,
    creds: &Credentials,
    timeout: Duration,
    metrics: Option<&MetricsSink>,
) -> Result<Token> {
    let url = format!("{auth_url}/auth/tokens");
    let path = url::Url::parse(&url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/v3/auth/tokens".into());
    tracing::debug!(%url, method = creds.kind, "keystone: issuing token");
    let (status, subject, body) = post_credentials(http, &url, creds, timeout, metrics).await?;
    if !status.is_success() {
        let message = error_message(&body, status);
        tracing::debug!(%url, %status, %message, "keystone refused token request");
        return Err(Error::Auth {
            url,
            status,
            message,
        });
    }
    let token = token_from_response(&path, status, subject, &body)?;
    tracing::debug!(
        user_id = token.user_id.as_deref().unwrap_or(""),
        project_id = token.project_id.as_deref().unwrap_or(""),
        lifetime_s = token.lifetime.as_secs(),
        "keystone: token issued"
    );
    Ok(token)
}

/// POSTs the credentials to `url` and reads the answer (recorded in `metrics`): its status,
/// its `X-Subject-Token` header and its body.
async fn post_credentials(
    http: &reqwest::Client,
    url: &str,
    creds: &Credentials,
    timeout: Duration,
    metrics: Option<&MetricsSink>,
) -> Result<(StatusCode, Option<String>, bytes::Bytes)> {
    let started = Instant::now();
    let resp = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&creds.body)
        .send()
        .await;
    let record = |status: Option<StatusCode>| {
        if let Some(m) = metrics {
            m.record(&RequestRecord {
                service: Service::Identity,
                method: &Method::POST,
                path: "/v3/auth/tokens",
                status,
                latency: started.elapsed(),
            });
        }
    };
    let transport = |e: reqwest::Error| Error::Transport {
        service: Service::Identity,
        method: Method::POST,
        url: url.to_owned(),
        reason: transport_reason(&e, timeout),
        source: e,
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            record(None);
            return Err(transport(e));
        }
    };
    let status = resp.status();
    let subject = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await.map_err(|e| {
        record(None);
        transport(e)
    })?;
    record(Some(status));
    Ok((status, subject, body))
}

/// The token a successful answer describes: the secret from its `X-Subject-Token` header
/// (`subject`), the rest from its body.
pub(crate) fn token_from_response(
    path: &str,
    status: StatusCode,
    subject: Option<String>,
    body: &[u8],
) -> Result<Token> {
    let decode = |message: String| Error::Decode {
        service: Service::Identity,
        method: Method::POST,
        path: path.to_owned(),
        status,
        message,
    };
    let secret = subject
        .filter(|s| !s.is_empty())
        .ok_or_else(|| decode("no X-Subject-Token header in the response".into()))?;
    let parsed: TokenBody = serde_json::from_slice(body).map_err(|e| {
        decode(format!(
            "{e} in {:?}",
            snippet(&String::from_utf8_lossy(body), 200)
        ))
    })?;
    let received = Instant::now();
    let t = parsed.token;
    let expires_at = parse_timestamp(&t.expires_at)
        .ok_or_else(|| decode(format!("bad token expires_at {:?}", t.expires_at)))?;
    let issued_at = t.issued_at.as_deref().and_then(parse_timestamp);
    // Lifetime from the server's own clock when possible, so clock skew doesn't matter.
    let lifetime = match issued_at {
        Some(i) => expires_at.duration_since(i).unwrap_or_default(),
        None => expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    let (user_id, user_name) = t.user.map(|u| (u.id, u.name)).unwrap_or_default();
    let (project_id, project_name) = t.project.map(|p| (p.id, p.name)).unwrap_or_default();
    Ok(Token {
        secret,
        expires_at,
        issued_at,
        methods: t.methods,
        user_id,
        user_name,
        project_id,
        project_name,
        roles: t.roles.into_iter().filter_map(|r| r.name).collect(),
        catalog: t.catalog,
        received,
        lifetime,
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` (no zone means UTC).
pub(crate) fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut scale = 100_000_000u64;
        for c in frac[..digits].bytes().take(9) {
            nanos += u64::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[digits..];
    }
    let offset_s: i64 = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let hm = rest.get(1..)?;
            let (oh, om) = match hm.len() {
                5 if hm.as_bytes()[2] == b':' => (hm.get(0..2)?, hm.get(3..5)?),
                4 => (hm.get(0..2)?, hm.get(2..4)?),
                _ => return None,
            };
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from civil (Howard Hinnant).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::fake::token_body;

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2024-05-01T13:00:00.000000Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_714_568_400
        );
        let t2 = parse_timestamp("2024-05-01T15:00:00+02:00").unwrap();
        assert_eq!(t, t2);
        let t3 = parse_timestamp("1970-01-01T00:00:01.5").unwrap();
        assert_eq!(
            t3.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_timestamp("2000-02-29T00:00:00Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            951_782_400
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T00:00:00Q",
            "x024-05-01T00:00:00Z",
            "2024-05-01T00:00:00.Z",
        ] {
            assert!(parse_timestamp(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn catalog_lookup() {
        let body: TokenBody = serde_json::from_str(&token_body(
            "http://127.0.0.1:9696",
            "2024-05-01T12:00:00Z",
            "2024-05-01T13:00:00Z",
        ))
        .unwrap();
        let c = body.token.catalog;
        assert_eq!(
            c.url_for("network", Interface::Public, Some("RegionOne")),
            Some("http://127.0.0.1:9696")
        );
        assert_eq!(
            c.url_for("network", Interface::Public, Some("RegionTwo")),
            Some("http://192.0.2.1:9696")
        );
        assert_eq!(
            c.url_for("network", Interface::Internal, None),
            Some("http://127.0.0.1:9696/internal-net")
        );
        assert_eq!(c.url_for("network", Interface::Admin, None), None);
        assert_eq!(
            c.url_for("load-balancer", Interface::Public, Some("RegionOne")),
            Some("http://127.0.0.1:9696")
        );
        assert_eq!(c.url_for("compute", Interface::Public, None), None);
        assert_eq!(
            c.service_types().collect::<Vec<_>>(),
            ["network", "load-balancer", "identity"]
        );
    }

    #[test]
    fn credential_bodies() {
        let c = Credentials::from_config(&CloudConfig::application_credential(
            "http://k/v3",
            "acid",
            "sec",
        ))
        .unwrap();
        assert_eq!(
            c.body(),
            &json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "acid", "secret": "sec"}}}})
        );

        let mut cfg = CloudConfig::application_credential("http://k/v3", "x", "sec");
        cfg.auth.application_credential_id = None;
        cfg.auth.application_credential_name = Some("kuryr".into());
        cfg.auth.username = Some("kuryr".into());
        cfg.auth.user_domain_name = Some("Default".into());
        let c = Credentials::from_config(&cfg).unwrap();
        assert_eq!(
            c.body()["auth"]["identity"]["application_credential"],
            json!({"name": "kuryr", "secret": "sec", "user": {"name": "kuryr", "domain": {"name": "Default"}}})
        );
        cfg.auth.username = None;
        assert!(matches!(
            Credentials::from_config(&cfg),
            Err(Error::Config(_))
        ));

        let c = Credentials::from_config(&CloudConfig::password("http://k", "kuryr", "pw", "k8s"))
            .unwrap();
        assert_eq!(
            c.body(),
            &json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "kuryr", "domain": {"name": "Default"}, "password": "pw"}}},
                "scope": {"project": {"name": "k8s", "domain": {"name": "Default"}}}}})
        );
        let mut cfg = CloudConfig::password("http://k", "kuryr", "pw", "k8s");
        cfg.auth.project_id = Some("pid".into());
        cfg.auth.user_id = Some("uid".into());
        let c = Credentials::from_config(&cfg).unwrap();
        assert_eq!(c.body()["auth"]["scope"], json!({"project": {"id": "pid"}}));
        assert_eq!(
            c.body()["auth"]["identity"]["password"]["user"],
            json!({"id": "uid", "password": "pw"})
        );
        cfg.auth.password = None;
        assert!(matches!(
            Credentials::from_config(&cfg),
            Err(Error::Config(_))
        ));
        let c = CloudConfig {
            auth_type: Some(AuthType::ApplicationCredential),
            ..CloudConfig::default()
        };
        assert!(matches!(
            Credentials::from_config(&c),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn auth_url_normalization() {
        assert_eq!(
            normalize_auth_url("http://127.0.0.1:5000/v3/").unwrap(),
            "http://127.0.0.1:5000/v3"
        );
        assert_eq!(
            normalize_auth_url("https://k.example/identity").unwrap(),
            "https://k.example/identity/v3"
        );
        assert!(normalize_auth_url("http://k/v2.0").is_err());
        assert!(normalize_auth_url("").is_err());
        assert!(normalize_auth_url("ftp://k").is_err());
        assert!(normalize_auth_url("not a url").is_err());
    }
}
