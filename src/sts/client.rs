//! The STS HTTP client: typed errors and retries around the shared query-protocol transport
//! (`super::query`: signing, sending, size-capped reading; TLS with rustls(ring), the system's
//! trust store or `ca_bundle`, `HTTPS_PROXY` / `NO_PROXY` honoured).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::endpoint::StsEndpoint;
use super::query::{Call, Failure, Transport};
use super::wire::{self, CallerIdentity, StsRequest};
use crate::creds::{SigningKey, TemporaryCredentials};

/// Largest response body read from STS (and IAM). Real responses are a few KiB.
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

/// Whether `code` is one of the error codes that mean "slow down and try again".
pub(crate) fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

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
    transport: Transport,
}

impl StsClient {
    /// Builds a client. Fails only when `ca_bundle` is unreadable or the system trust store
    /// cannot be loaded.
    pub fn new(options: ClientOptions) -> Result<StsClient, StsError> {
        Ok(StsClient {
            transport: Transport::new(options).map_err(StsError::Setup)?,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        self.transport.options()
    }

    /// The transport, for other query-protocol clients that share its connections.
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
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
        let retry = self.options().retry;
        let one_time = req.carries_mfa_code();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = self.send_once(endpoint, req, key).await;
            crate::metrics::histogram::record_sts_call(req.action(), started.elapsed());
            match result {
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
        let action = req.action();
        let body = req.form_body();
        let endpoint_text = || endpoint.to_string();
        let text = self
            .transport
            .call(&Call {
                url: &endpoint.url,
                signing_region: &endpoint.signing_region,
                service: "sts",
                body: body.expose_secret(),
                key: key.filter(|_| req.is_signed()),
            })
            .await
            .map_err(|failure| match failure {
                Failure::Service { status, error } => StsError::Service(ServiceError {
                    action,
                    status,
                    kind: error.kind,
                    code: error.code,
                    message: error.message,
                    request_id: error.request_id,
                }),
                Failure::Http { status } => StsError::Http {
                    action,
                    endpoint: endpoint_text(),
                    status,
                },
                Failure::Transport(detail) => StsError::Transport {
                    endpoint: endpoint_text(),
                    detail,
                },
                Failure::Timeout => StsError::Timeout {
                    endpoint: endpoint_text(),
                    secs: self.options().timeout.as_secs(),
                },
                Failure::TooLarge => StsError::TooLarge {
                    endpoint: endpoint_text(),
                    limit: MAX_BODY,
                },
                Failure::Setup(detail) => StsError::Setup(detail),
            })?;
        let malformed = |source| StsError::Malformed {
            action,
            endpoint: endpoint_text(),
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
