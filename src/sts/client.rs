//! The STS HTTP client: signing, sending, size-capped reading, typed errors, retries.
//!
//! TLS is rustls with the *ring* provider; server certificates are checked against the operating
//! system's trust store, or only against `ca_bundle` when one is configured (as the AWS SDKs do).
//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` are honoured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::endpoint::StsEndpoint;
use super::wire::{self, CallerIdentity, StsRequest};
use crate::creds::{SigningKey, TemporaryCredentials};
use crate::sigv4;

/// Largest response body read from STS. Real responses are a few KiB.
pub const MAX_BODY: usize = 256 * 1024;

/// How often and how patiently to retry throttling, 5xx and network failures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles each attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (0-based), "full jitter": a uniform draw `unit`
    /// (in 0..1) scaled to `min(cap, base * 2^retry)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The upper bound of [`RetryPolicy::delay`] for retry number `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base
            .checked_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// Options that shape the HTTP client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// PEM bundle that replaces the system trust store (`ca_bundle` / `AWS_CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout, body included.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_bundle: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            retry: RetryPolicy::default(),
        }
    }
}

/// An error STS itself returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    /// The action that failed.
    pub action: &'static str,
    /// HTTP status.
    pub status: u16,
    /// `Sender` / `Receiver` (may be empty).
    pub kind: String,
    /// Error code, e.g. `AccessDenied`.
    pub code: String,
    /// STS's message.
    pub message: String,
    /// STS's request id.
    pub request_id: Option<String>,
}

/// Why an STS call failed.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// STS answered with an error document.
    #[error("STS {} failed: {}: {}{}", .0.action, .0.code, .0.message,
        .0.request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Service(ServiceError),
    /// STS answered with a non-200 status and no error document.
    #[error("STS {action} at {endpoint} answered HTTP {status} without an AWS error document")]
    Http {
        /// Action.
        action: &'static str,
        /// Endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
    },
    /// The request could not be sent or the response not read.
    #[error("could not reach STS at {endpoint}: {detail}")]
    Transport {
        /// Endpoint.
        endpoint: String,
        /// What went wrong, from the HTTP stack.
        detail: String,
    },
    /// The whole request took longer than the timeout.
    #[error("STS at {endpoint} did not answer within {secs} s")]
    Timeout {
        /// Endpoint.
        endpoint: String,
        /// The timeout.
        secs: u64,
    },
    /// The response body exceeded [`MAX_BODY`].
    #[error("STS at {endpoint} sent a response larger than {limit} bytes")]
    TooLarge {
        /// Endpoint.
        endpoint: String,
        /// The cap.
        limit: usize,
    },
    /// A 200 response whose body is not the expected document.
    #[error("STS {action} at {endpoint} returned an unreadable response: {source}")]
    Malformed {
        /// Action.
        action: &'static str,
        /// Endpoint.
        endpoint: String,
        /// The parse failure.
        source: wire::ParseError,
    },
    /// The TLS or HTTP client could not be built (bad `ca_bundle`).
    #[error("{0}")]
    Setup(String),
}

/// Error codes that mean "slow down and try again".
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
    "TransactionInProgressException",
];

/// Error codes that are transient for the web-identity flow (`IDPCommunicationError`).
const TRANSIENT_CODES: &[&str] = &[
    "IDPCommunicationError",
    "RequestTimeout",
    "RequestTimeoutException",
];

impl ServiceError {
    /// Throttling code or a server-side (5xx) failure.
    pub fn is_retryable(&self) -> bool {
        self.status >= 500
            || self.status == 429
            || THROTTLING_CODES.contains(&self.code.as_str())
            || TRANSIENT_CODES.contains(&self.code.as_str())
    }
}

impl StsError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StsError::Service(e) => e.is_retryable(),
            StsError::Http { status, .. } => *status >= 500 || *status == 429,
            StsError::Transport { .. } | StsError::Timeout { .. } => true,
            StsError::TooLarge { .. } | StsError::Malformed { .. } | StsError::Setup(_) => false,
        }
    }

    /// Whether STS refused the request for its rate (so it was not carried out).
    pub fn is_throttled(&self) -> bool {
        match self {
            StsError::Service(e) => e.status == 429 || THROTTLING_CODES.contains(&e.code.as_str()),
            StsError::Http { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// The STS error code, when STS sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StsError::Service(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// A successful STS response.
#[derive(Debug)]
pub enum StsResponse {
    /// Any of the four minting calls.
    Credentials(TemporaryCredentials),
    /// `GetCallerIdentity`.
    CallerIdentity(CallerIdentity),
}

/// Sends STS requests. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct StsClient {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
}

/// Builds the rustls configuration: system roots, or only the roots in `ca_bundle`.
fn tls_config(ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, StsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StsError::Setup(format!("TLS setup failed: {e}")))?;
    let mut config = match ca_bundle {
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|e| {
                StsError::Setup(format!(
                    "cannot load the system's trusted certificates: {e}"
                ))
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        Some(path) => {
            let shown = path.display();
            let bundle = std::fs::read(path)
                .map_err(|e| StsError::Setup(format!("cannot read ca_bundle {shown}: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bundle) {
                let cert = cert.map_err(|e| {
                    StsError::Setup(format!("ca_bundle {shown} is not a PEM bundle: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    StsError::Setup(format!(
                        "ca_bundle {shown} holds an unusable certificate: {e}"
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(StsError::Setup(format!(
                    "ca_bundle {shown} holds no certificates; point it at a PEM file"
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds the reqwest client every AWS call of credvend goes through (STS here, IAM Identity
/// Center in `crate::sso`): the TLS setup of [`tls_config`], the connect and total timeouts of
/// `options`, credvend's User-Agent, no redirects followed, proxies from the environment. Fails
/// only when `ca_bundle` is unreadable or the system trust store cannot be loaded.
pub(crate) fn http_client(options: &ClientOptions) -> Result<reqwest::Client, StsError> {
    let tls = tls_config(options.ca_bundle.as_deref())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        .user_agent(concat!("credvend/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StsError::Setup(format!("HTTP client setup failed: {e}")))
}

impl StsClient {
    /// Builds a client. Fails only when `ca_bundle` is unreadable or the system trust store
    /// cannot be loaded.
    pub fn new(options: ClientOptions) -> Result<StsClient, StsError> {
        let http = http_client(&options)?;
        Ok(StsClient {
            http,
            options: Arc::new(options),
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Sends `req`, signed with `key` when the action needs a signature, retrying transient
    /// failures with capped exponential backoff and full jitter. A request carrying an MFA code
    /// is retried only when STS throttled it: after a timeout or a 5xx it may have used the code
    /// up, and repeating it would turn a passing fault into "invalid MFA code".
    pub async fn send(
        &self,
        endpoint: &StsEndpoint,
        req: &StsRequest,
        key: Option<SigningKey<'_>>,
    ) -> Result<StsResponse, StsError> {
        let retry = self.options.retry;
        let one_time = req.carries_mfa_code();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(endpoint, req, key).await {
                Err(e)
                    if e.is_retryable()
                        && (!one_time || e.is_throttled())
                        && attempt < retry.max_attempts =>
                {
                    let delay = retry.delay(attempt - 1, fastrand::f64());
                    tracing::debug!(action = req.action(), %endpoint, attempt, ?delay, error = %e, "retrying STS call");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Convenience: `GetCallerIdentity`.
    pub async fn caller_identity(
        &self,
        endpoint: &StsEndpoint,
        key: SigningKey<'_>,
    ) -> Result<CallerIdentity, StsError> {
        match self
            .send(endpoint, &StsRequest::GetCallerIdentity, Some(key))
            .await?
        {
            StsResponse::CallerIdentity(id) => Ok(id),
            StsResponse::Credentials(_) => unreachable!("GetCallerIdentity parses as an identity"),
        }
    }

    /// Convenience: one of the minting calls.
    pub async fn mint(
        &self,
        endpoint: &StsEndpoint,
        req: &StsRequest,
        key: Option<SigningKey<'_>>,
    ) -> Result<TemporaryCredentials, StsError> {
        match self.send(endpoint, req, key).await? {
            StsResponse::Credentials(c) => Ok(c),
            StsResponse::CallerIdentity(_) => {
                unreachable!("only GetCallerIdentity parses as an identity")
            }
        }
    }

    async fn send_once(
        &self,
        endpoint: &StsEndpoint,
        req: &StsRequest,
        key: Option<SigningKey<'_>>,
    ) -> Result<StsResponse, StsError> {
        const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
        let action = req.action();
        let body = req.form_body();
        let host = endpoint.host_header();
        let mut builder = self
            .http
            .post(endpoint.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, "text/xml");
        if let (true, Some(key)) = (req.is_signed(), key) {
            let path = endpoint.url.path();
            let query = endpoint.url.query().unwrap_or("");
            let headers = [("content-type", CONTENT_TYPE), ("host", host.as_str())];
            let signed = sigv4::sign(
                &sigv4::Request {
                    method: "POST",
                    path,
                    query,
                    headers: &headers,
                    payload: body.expose_secret().as_bytes(),
                },
                key,
                &sigv4::Scope {
                    region: &endpoint.signing_region,
                    service: "sts",
                    time: OffsetDateTime::now_utc(),
                },
            );
            builder = builder.header("x-amz-date", signed.amz_date).header(
                reqwest::header::AUTHORIZATION,
                sensitive(&signed.authorization)?,
            );
            if let Some(token) = key.session_token {
                builder = builder.header("x-amz-security-token", sensitive(token.expose_secret())?);
            }
        }
        let endpoint_text = endpoint.to_string();
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                StsError::Timeout {
                    endpoint: endpoint_text.clone(),
                    secs: self.options.timeout.as_secs(),
                }
            } else {
                StsError::Transport {
                    endpoint: endpoint_text.clone(),
                    detail: error_chain(&e),
                }
            }
        };
        let mut resp = builder
            .body(body.expose_secret().to_owned())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let header_request_id = ["x-amzn-requestid", "x-amz-request-id"]
            .iter()
            .find_map(|h| resp.headers().get(*h)?.to_str().ok())
            .map(str::to_owned);
        let mut data = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if data.len() + chunk.len() > MAX_BODY {
                return Err(StsError::TooLarge {
                    endpoint: endpoint_text,
                    limit: MAX_BODY,
                });
            }
            data.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&data);
        if status != 200 {
            return Err(match wire::parse_error(&text) {
                Some(e) => StsError::Service(ServiceError {
                    action,
                    status,
                    kind: e.kind,
                    code: e.code,
                    message: e.message,
                    request_id: e.request_id.or(header_request_id),
                }),
                None => StsError::Http {
                    action,
                    endpoint: endpoint_text,
                    status,
                },
            });
        }
        let malformed = |source| StsError::Malformed {
            action,
            endpoint: endpoint.to_string(),
            source,
        };
        match req {
            StsRequest::GetCallerIdentity => wire::parse_caller_identity(&text)
                .map(StsResponse::CallerIdentity)
                .map_err(malformed),
            _ => wire::parse_credentials(&text)
                .map(StsResponse::Credentials)
                .map_err(malformed),
        }
    }
}

fn sensitive(value: &str) -> Result<reqwest::header::HeaderValue, StsError> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        StsError::Setup("a credential holds characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The error and its sources, joined: reqwest's top-level message alone ("error sending
/// request") does not say what failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        let ceilings: Vec<_> = (0..6).map(|r| p.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(2, 7.0), Duration::from_millis(400));
        assert_eq!(p.ceiling(u32::MAX), p.cap);
    }

    #[test]
    fn retryable_classification() {
        let e = |status, code: &str| ServiceError {
            action: "AssumeRole",
            status,
            kind: "Sender".into(),
            code: code.into(),
            message: String::new(),
            request_id: None,
        };
        assert!(e(400, "Throttling").is_retryable());
        assert!(e(500, "InternalFailure").is_retryable());
        assert!(e(400, "IDPCommunicationError").is_retryable());
        assert!(!e(403, "AccessDenied").is_retryable());
        assert!(!e(403, "SignatureDoesNotMatch").is_retryable());
    }
}
