//! Authenticated session: token cache, endpoint lookup, request pipeline.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::config::{CloudConfig, Interface};
use crate::error::{error_message, snippet, transport_reason, Error, Result};
use crate::keystone::{self, Credentials, Token};
use crate::metrics::{path_template, MetricsSink, RequestRecord};
use crate::query::Query;
use crate::serde_util;

/// An OpenStack service this crate talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Keystone.
    Identity,
    /// Neutron.
    Network,
    /// Octavia.
    LoadBalancer,
}

impl Service {
    /// Catalog service type.
    pub fn service_type(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Network => "network",
            Service::LoadBalancer => "load-balancer",
        }
    }

    /// Project name (`keystone`, `neutron`, `octavia`), used in messages and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "keystone",
            Service::Network => "neutron",
            Service::LoadBalancer => "octavia",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds a [`Session`] with optional extras.
pub struct SessionBuilder {
    config: CloudConfig,
    metrics: Option<MetricsSink>,
}

impl SessionBuilder {
    /// Reports every request to `metrics`.
    pub fn metrics(mut self, metrics: MetricsSink) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds the session without contacting Keystone.
    pub fn build(self) -> Result<Session> {
        let cfg = &self.config;
        let creds = Credentials::from_config(cfg)?;
        let auth_url = keystone::normalize_auth_url(&cfg.auth.auth_url)?;
        let timeout = cfg.effective_timeout();
        if timeout.is_zero() {
            return Err(Error::Config("timeout must be positive".into()));
        }
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("kuryr-rs/", env!("CARGO_PKG_VERSION")));
        if cfg.insecure {
            tracing::warn!("TLS certificate verification is disabled for OpenStack");
            http = http.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &cfg.cacert {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!("cannot read cacert {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("bad cacert {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "cacert {} holds no PEM certificate",
                    path.display()
                )));
            }
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        let mut overrides = Vec::new();
        for (svc, url) in &cfg.endpoint_overrides {
            url::Url::parse(url).map_err(|e| {
                Error::Config(format!(
                    "endpoint override for {svc}: {url:?} is not a URL: {e}"
                ))
            })?;
            overrides.push((svc.clone(), url.clone()));
        }
        Ok(Session {
            inner: Arc::new(Inner {
                http,
                creds,
                auth_url,
                region: cfg.region_name.clone().filter(|r| !r.is_empty()),
                interface: cfg.interface,
                overrides,
                timeout,
                token: tokio::sync::Mutex::new(None),
                metrics: self.metrics,
            }),
        })
    }

    /// Builds the session and issues a first token (fails fast on bad credentials).
    pub async fn connect(self) -> Result<Session> {
        let s = self.build()?;
        s.token().await?;
        Ok(s)
    }
}

/// Cheaply cloneable authenticated session shared by the service clients.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    creds: Credentials,
    auth_url: String,
    region: Option<String>,
    interface: Interface,
    overrides: Vec<(String, String)>,
    timeout: Duration,
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
    metrics: Option<MetricsSink>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("auth_url", &self.inner.auth_url)
            .field("credentials", &self.inner.creds)
            .field("region", &self.inner.region)
            .field("interface", &self.inner.interface)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// A raw request to any service (for calls this crate does not wrap).
#[derive(Clone, Debug)]
pub struct Request {
    service: Service,
    method: Method,
    path: String,
    query: Query,
    body: Option<Bytes>,
}

impl Request {
    /// `path` is relative to the service endpoint and includes the version (`/v2.0/...`).
    pub fn new(service: Service, method: Method, path: impl Into<String>) -> Self {
        Request {
            service,
            method,
            path: path.into(),
            query: Query::new(),
            body: None,
        }
    }

    pub fn query(mut self, query: Query) -> Self {
        self.query = query;
        self
    }

    /// Sets a JSON body.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Self> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            Error::Config(format!(
                "cannot encode {} {} body: {e}",
                self.method, self.path
            ))
        })?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    /// Sets `{key: body}` as the JSON body.
    pub fn json_wrapped<B: Serialize + ?Sized>(self, key: &str, body: &B) -> Result<Self> {
        self.json(&serde_util::Wrapped(key, body))
    }
}

/// A successful (2xx) response.
#[derive(Clone, Debug)]
pub struct Response {
    service: Service,
    method: Method,
    path: String,
    status: StatusCode,
    body: Bytes,
    request_id: Option<String>,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Decodes the whole body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_util::decode(&self.body).map_err(|m| self.decode_error(m))
    }

    /// Decodes `body[key]` (e.g. `"port"` of `{"port": {...}}`).
    pub fn json_key<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        serde_util::decode_key(&self.body, key).map_err(|m| self.decode_error(m))
    }

    fn decode_error(&self, message: String) -> Error {
        let text = String::from_utf8_lossy(&self.body);
        tracing::debug!(service = %self.service, path = %self.path, body = %snippet(&text, 2000), "undecodable response");
        Error::Decode {
            service: self.service,
            method: self.method.clone(),
            path: self.path.clone(),
            status: self.status,
            message: format!("{message}; body starts with {:?}", snippet(&text, 120)),
        }
    }
}

impl Session {
    /// A builder, for extras such as metrics.
    pub fn builder(config: &CloudConfig) -> SessionBuilder {
        SessionBuilder {
            config: config.clone(),
            metrics: None,
        }
    }

    /// Session without contacting Keystone yet (first request authenticates).
    pub fn new(config: &CloudConfig) -> Result<Session> {
        Self::builder(config).build()
    }

    /// Session with a token already issued: bad credentials fail here.
    pub async fn from_cloud(config: &CloudConfig) -> Result<Session> {
        Self::builder(config).connect().await
    }

    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Normalized Keystone URL (ends in `/v3`).
    pub fn auth_url(&self) -> &str {
        &self.inner.auth_url
    }

    /// A valid token: the cached one unless it is close to expiry. Concurrent callers
    /// share one refresh.
    pub async fn token(&self) -> Result<Arc<Token>> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if !t.needs_refresh() {
                return Ok(t.clone());
            }
        }
        match self.issue().await {
            Ok(t) => {
                let t = Arc::new(t);
                *slot = Some(t.clone());
                Ok(t)
            }
            Err(e) => match slot.as_ref() {
                // Refresh failed but the old token is still good: keep using it.
                Some(old) if !old.is_expired() && e.is_transient() => {
                    tracing::warn!(error = %e, remaining_s = old.remaining().as_secs(), "token refresh failed; reusing current token");
                    Ok(old.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Drops the cached token and issues a new one.
    pub async fn reauthenticate(&self) -> Result<Arc<Token>> {
        let mut slot = self.inner.token.lock().await;
        *slot = None;
        let t = Arc::new(self.issue().await?);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Project id of the current token.
    pub async fn project_id(&self) -> Result<String> {
        self.token()
            .await?
            .project_id
            .clone()
            .ok_or_else(|| Error::Config("the token is not scoped to a project".into()))
    }

    /// Base URL of `service` (override, else catalog by interface and region).
    pub async fn endpoint(&self, service: Service) -> Result<String> {
        let t = self.token().await?;
        self.endpoint_in(&t, service)
    }

    async fn issue(&self) -> Result<Token> {
        keystone::issue_token(
            &self.inner.http,
            &self.inner.auth_url,
            &self.inner.creds,
            self.inner.timeout,
            self.inner.metrics.as_ref(),
        )
        .await
    }

    /// Forgets `stale` if it is still the cached token (another task may have replaced it).
    async fn invalidate(&self, stale: &Token) {
        let mut slot = self.inner.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.secret() == stale.secret()) {
            *slot = None;
        }
    }

    fn endpoint_in(&self, token: &Token, service: Service) -> Result<String> {
        let st = service.service_type();
        if let Some((_, url)) = self.inner.overrides.iter().find(|(s, _)| s == st) {
            return Ok(url.clone());
        }
        token
            .catalog
            .url_for(st, self.inner.interface, self.inner.region.as_deref())
            .map(str::to_owned)
            .ok_or_else(|| Error::NoEndpoint {
                service_type: st.to_string(),
                interface: self.inner.interface.to_string(),
                region: self.inner.region.as_deref().unwrap_or("<any>").to_string(),
                services: token.catalog.service_types().collect::<Vec<_>>().join(", "),
            })
    }

    /// Sends `req`; on a 401 re-authenticates once and retries. Non-2xx → [`Error::Api`].
    pub async fn request(&self, req: Request) -> Result<Response> {
        let span = tracing::debug_span!(
            "openstack",
            service = %req.service,
            method = %req.method,
            path = %req.path
        );
        self.request_inner(req).instrument(span).await
    }

    async fn request_inner(&self, req: Request) -> Result<Response> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let base = self.endpoint_in(&token, req.service)?;
            let url = join_url(&base, &req.path, &req.query)?;
            let mut rb = self
                .inner
                .http
                .request(req.method.clone(), url.clone())
                .header("X-Auth-Token", token.secret())
                .header(ACCEPT, "application/json");
            if let Some(b) = &req.body {
                rb = rb.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let started = Instant::now();
            let sent = rb.send().await;
            let transport = |e: reqwest::Error| Error::Transport {
                service: req.service,
                method: req.method.clone(),
                url: url.to_string(),
                reason: transport_reason(&e, self.inner.timeout),
                source: e,
            };
            let (status, request_id, body) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let request_id = resp
                        .headers()
                        .get("x-openstack-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match resp.bytes().await {
                        Ok(body) => (status, request_id, body),
                        Err(e) => {
                            self.record(&req, None, started);
                            return Err(transport(e));
                        }
                    }
                }
                Err(e) => {
                    self.record(&req, None, started);
                    let err = transport(e);
                    tracing::debug!(error = %err, "request failed");
                    return Err(err);
                }
            };
            self.record(&req, Some(status), started);
            tracing::debug!(
                status = status.as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                request_id = request_id.as_deref().unwrap_or(""),
                "response"
            );
            if status == StatusCode::UNAUTHORIZED && !retried {
                tracing::debug!("401: re-authenticating once");
                retried = true;
                self.invalidate(&token).await;
                continue;
            }
            if !status.is_success() {
                return Err(Error::Api {
                    service: req.service,
                    method: req.method.clone(),
                    path: req.path.clone(),
                    status,
                    message: error_message(&body, status),
                    request_id,
                });
            }
            return Ok(Response {
                service: req.service,
                method: req.method,
                path: req.path,
                status,
                body,
                request_id,
            });
        }
    }

    fn record(&self, req: &Request, status: Option<StatusCode>, started: Instant) {
        if let Some(m) = &self.inner.metrics {
            let path = path_template(&req.path);
            m.record(&RequestRecord {
                service: req.service,
                method: &req.method,
                path: &path,
                status,
                latency: started.elapsed(),
            });
        }
    }

    // Typed helpers used by the service clients.

    pub(crate) async fn get_key<T: DeserializeOwned>(
        &self,
        service: Service,
        path: String,
        query: Option<&Query>,
        key: &str,
    ) -> Result<T> {
        let mut req = Request::new(service, Method::GET, path);
        if let Some(q) = query {
            req = req.query(q.clone());
        }
        self.request(req).await?.json_key(key)
    }

    pub(crate) async fn send_key<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        service: Service,
        method: Method,
        path: String,
        wrap: Option<&str>,
        body: &B,
        key: Option<&str>,
    ) -> Result<T> {
        let req = Request::new(service, method, path);
        let req = match wrap {
            Some(k) => req.json_wrapped(k, body)?,
            None => req.json(body)?,
        };
        let resp = self.request(req).await?;
        match key {
            Some(k) => resp.json_key(k),
            None => resp.json(),
        }
    }

    /// DELETE; a 404 counts as success. Returns whether something was deleted.
    pub(crate) async fn delete(
        &self,
        service: Service,
        path: String,
        query: Option<Query>,
    ) -> Result<bool> {
        let mut req = Request::new(service, Method::DELETE, path);
        if let Some(q) = query {
            req = req.query(q);
        }
        match self.request(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => {
                tracing::debug!(error = %e, "already gone");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Percent-encodes one path segment (ids supplied by callers).
pub(crate) fn seg(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b':');
    let enc = percent_encoding::utf8_percent_encode(s, SET).to_string();
    // "." and ".." would be normalized away by URL parsing.
    match enc.as_str() {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => enc,
    }
}

/// `base` + `path` + query. Drops a version prefix of `path` that `base` already ends with.
pub(crate) fn join_url(base: &str, path: &str, query: &Query) -> Result<url::Url> {
    let base = base.trim_end_matches('/');
    let mut path = path;
    let base_path = url::Url::parse(base)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    if let Some(first) = path.strip_prefix('/').and_then(|p| p.split('/').next()) {
        if !first.is_empty() && base_path.ends_with(&format!("/{first}")) {
            path = &path[first.len() + 1..];
        }
    }
    let joined = format!("{base}{path}");
    let mut url = url::Url::parse(&joined)
        .map_err(|e| Error::Config(format!("bad endpoint URL {joined:?}: {e}")))?;
    if !query.is_empty() {
        let mut qp = url.query_pairs_mut();
        for (k, v) in query.pairs() {
            qp.append_pair(k, v);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_joining() {
        let q = Query::new().ids(["a", "b"]).fields(["id"]);
        assert_eq!(
            join_url("http://127.0.0.1:9696/", "/v2.0/ports", &q)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9696/v2.0/ports?id=a&id=b&fields=id"
        );
        assert_eq!(
            join_url("http://h/networking", "/v2.0/ports", &Query::new())
                .unwrap()
                .as_str(),
            "http://h/networking/v2.0/ports"
        );
        assert_eq!(
            join_url("http://h:9696/v2.0", "/v2.0/ports", &Query::new())
                .unwrap()
                .as_str(),
            "http://h:9696/v2.0/ports"
        );
        assert_eq!(
            join_url(
                "http://h:9876/v2/",
                "/v2/lbaas/loadbalancers",
                &Query::new().eq("cascade", true)
            )
            .unwrap()
            .as_str(),
            "http://h:9876/v2/lbaas/loadbalancers?cascade=true"
        );
        assert_eq!(
            join_url("http://v2", "/v2/lbaas/pools", &Query::new())
                .unwrap()
                .as_str(),
            "http://v2/v2/lbaas/pools"
        );
        assert!(join_url("nope", "/v2.0/ports", &Query::new()).is_err());
    }

    #[test]
    fn segments() {
        assert_eq!(seg("3c3f6f7a-0fd6-4bd5"), "3c3f6f7a-0fd6-4bd5");
        assert_eq!(seg("../x"), "..%2Fx");
        assert_eq!(seg(".."), "%2E%2E");
        assert_eq!(seg("a b?c"), "a%20b%3Fc");
        assert_eq!(seg("k8s:ns/x"), "k8s:ns%2Fx");
    }

    #[test]
    fn build_validates() {
        let mut cfg = CloudConfig::application_credential("http://127.0.0.1:5000/v3", "id", "s");
        assert!(Session::new(&cfg).is_ok());
        cfg.cacert = Some("/nonexistent/ca.pem".into());
        assert!(matches!(Session::new(&cfg), Err(Error::Config(_))));
        cfg.cacert = None;
        cfg.endpoint_overrides.insert("network".into(), "::".into());
        assert!(matches!(Session::new(&cfg), Err(Error::Config(_))));
        let bad = CloudConfig::application_credential("", "id", "s");
        assert!(matches!(Session::new(&bad), Err(Error::Config(_))));
    }
}
