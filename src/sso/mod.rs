//! IAM Identity Center (SSO): the sign-in the AWS CLI v2 runs and the role credentials it leads to.
//!
//! Two AWS services are involved. The OIDC service (`sso-oidc`, `https://oidc.REGION.amazonaws.com`)
//! registers this program as a public OAuth client and signs the user in, with the device-code
//! grant (RFC 8628) or the authorization-code grant with PKCE (RFC 7636), and later refreshes the
//! access token with the refresh token. The access portal (`sso`,
//! `https://portal.sso.REGION.amazonaws.com`) turns an access token into temporary credentials of
//! one role in one account (`GetRoleCredentials`). Both are unsigned REST-JSON APIs; their shapes
//! are botocore's models `sso-oidc/2019-06-10` and `sso/2019-06-10`.
//!
//! Pure: the types here, [`pkce`], [`oidc::authorize_url`], [`cache`]'s parse/render. IO: the
//! [`SsoClient`] calls in [`oidc`] and [`portal`] (reqwest + rustls(ring), the TLS setup of
//! `sts::client`), and [`cache::write`]. Nothing here keeps tokens anywhere but in the values it
//! returns: storage (keyring, the AWS CLI's cache directory) is the caller's choice.
//!
//! Secrets (access and refresh tokens, client secrets, device codes, PKCE verifiers) are
//! [`SecretString`]s; no request, log line, error or `Debug` output shows one.
//!
//! [`login`] runs a whole sign-in for `credvend login` (registration reused when it can be, the
//! browser's redirect received by [`loopback`]); [`SignIn`] is what credvend keeps of one in the
//! keyring.

pub mod cache;
pub mod login;
pub mod loopback;
pub mod oidc;
pub mod pkce;
pub mod portal;

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::sts::ClientOptions;
use crate::sts::endpoint::StsEndpoint;

pub use oidc::{DeviceAuthorization, GrantKind};

/// Largest response body read from either service. Real responses are well under 10 KiB.
pub const MAX_BODY: usize = 256 * 1024;

/// The scope that makes IAM Identity Center issue refresh tokens, and the AWS CLI's default for the
/// authorization-code flow (AWS CLI user guide, `sso_registration_scopes`; aws-cli v2
/// `SSOTokenFetcherAuth._AUTH_GRANT_DEFAULT_SCOPE`).
pub const REFRESH_SCOPE: &str = "sso:account:access";

/// One sign-in configuration: an `[sso-session NAME]` section, or the `sso_start_url` /
/// `sso_region` keys of a legacy profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoSession {
    /// The `[sso-session NAME]`; `None` for a legacy per-profile configuration (which the AWS CLI
    /// signs in without scopes, so its tokens cannot be refreshed).
    pub name: Option<String>,
    /// `sso_start_url`, the AWS access portal URL (`https://d-XXXXXXXXXX.awsapps.com/start`).
    pub start_url: String,
    /// `sso_region`, where the Identity Center instance lives.
    pub region: String,
    /// `sso_registration_scopes` (comma-separated in the config file).
    pub registration_scopes: Vec<String>,
}

impl SsoSession {
    /// The name credvend files this sign-in under in the keyring: the `sso-session` name, or for a
    /// legacy profile the lowercase hex SHA-1 of its start URL (the name of the AWS CLI's cache
    /// file without `.json`). Every profile of one session shares it.
    pub fn storage_key(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => cache::cache_key(self),
        }
    }

    /// `sso-session NAME`, or `sso_start_url URL` for a legacy profile (for messages).
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("sso-session {name}"),
            None => format!("sso_start_url {}", self.start_url),
        }
    }
}

/// A client registration (`RegisterClient`): what the OIDC service knows this program by.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The client id (not a secret; it appears in the authorize URL).
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// When the registration stops working (`clientSecretExpiresAt`, 90 days at AWS).
    pub expires_at: OffsetDateTime,
}

/// An access token and what refreshing it needs.
#[derive(Clone, Debug)]
pub struct Token {
    /// The bearer token `GetRoleCredentials` takes.
    pub access_token: SecretString,
    /// When the access token expires.
    pub expires_at: OffsetDateTime,
    /// The refresh token; `None` when the service issued none (registrations without the
    /// `sso:account:access` scope).
    pub refresh_token: Option<SecretString>,
    /// The registration the token was issued to; refreshing needs it.
    pub registration: Option<Registration>,
    /// `sso_region`.
    pub region: String,
    /// `sso_start_url`.
    pub start_url: String,
}

/// Which sign-in a stored registration was made for, so a later sign-in of the same kind can
/// reuse it instead of registering again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The device-code flow.
    DeviceCode,
    /// The authorization-code flow with PKCE.
    AuthCode,
    /// Not known: the sign-in came from the AWS CLI's token cache.
    Unknown,
}

impl Grant {
    /// The spelling stored in the keyring.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::DeviceCode => "device_code",
            Grant::AuthCode => "authorization_code",
            Grant::Unknown => "unknown",
        }
    }

    /// The grant of a stored spelling (anything else is [`Grant::Unknown`]).
    pub fn parse(s: &str) -> Grant {
        match s {
            "device_code" => Grant::DeviceCode,
            "authorization_code" => Grant::AuthCode,
            _ => Grant::Unknown,
        }
    }
}

/// One sign-in as credvend keeps it in the keyring: the token (with its refresh token and
/// registration, written together because every refresh may hand out a new refresh token), what
/// the registration was made for, and whether the AWS CLI's cache file is kept in step with it.
#[derive(Clone, Debug)]
pub struct SignIn {
    /// The access token, refresh token and registration.
    pub token: Token,
    /// The flow the registration was made for.
    pub grant: Grant,
    /// The scopes the registration asked for.
    pub scopes: Vec<String>,
    /// When the access token was issued, when known (imported tokens do not say).
    pub issued_at: Option<OffsetDateTime>,
    /// `credvend login --share-cache`: every new token is also written to the AWS CLI's cache
    /// file, and a newer token found there (the AWS CLI refreshed it) is taken over.
    pub share_cache: bool,
}

impl SignIn {
    /// A sign-in found in the AWS CLI's token cache (registration kind unknown, not shared).
    pub fn imported(token: Token) -> SignIn {
        SignIn {
            token,
            grant: Grant::Unknown,
            scopes: Vec::new(),
            issued_at: None,
            share_cache: false,
        }
    }

    /// Whether this sign-in can still give an access token at `now` without the user: the access
    /// token has more than `margin` left, or it can be refreshed.
    pub fn usable(&self, now: OffsetDateTime, margin: time::Duration) -> bool {
        self.token.expires_at - now > margin || self.token.can_refresh(now)
    }

    /// Whether `other` holds the same access token (the same sign-in, not a newer one).
    pub fn same_token(&self, other: &Token) -> bool {
        self.token.access_token.expose_secret() == other.access_token.expose_secret()
    }
}

impl Registration {
    /// Whether the registration has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }
}

impl Token {
    /// Whether the access token has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }

    /// Whether the token has a refresh token and an unexpired registration to refresh with.
    pub fn can_refresh(&self, now: OffsetDateTime) -> bool {
        self.refresh_token.is_some()
            && self
                .registration
                .as_ref()
                .is_some_and(|r| !r.is_expired(now))
    }
}

/// Where the two services are. [`SsoEndpoints::aws`] for AWS; the fields can be replaced for a
/// private endpoint or a test stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoEndpoints {
    /// The OIDC service (RegisterClient, StartDeviceAuthorization, CreateToken, /authorize).
    pub oidc: Url,
    /// The access portal (GetRoleCredentials).
    pub portal: Url,
}

impl SsoEndpoints {
    /// The AWS endpoints of `region`: `https://oidc.{region}.amazonaws.com` and
    /// `https://portal.sso.{region}.amazonaws.com` (`.amazonaws.com.cn` in China), as botocore's
    /// endpoint rule sets for `sso-oidc` and `sso` give them. `None` when `region` is not a
    /// region name.
    pub fn aws(region: &str) -> Option<SsoEndpoints> {
        if !StsEndpoint::valid_region(region) {
            return None;
        }
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        Some(SsoEndpoints {
            oidc: Url::parse(&format!("https://oidc.{region}.{suffix}")).ok()?,
            portal: Url::parse(&format!("https://portal.sso.{region}.{suffix}")).ok()?,
        })
    }

    /// One URL serving both services (a test stand-in, or a proxy).
    pub fn custom(url: Url) -> SsoEndpoints {
        SsoEndpoints {
            oidc: url.clone(),
            portal: url,
        }
    }

    /// These endpoints with the OIDC service at `url` (`AWS_ENDPOINT_URL_SSO_OIDC`).
    pub fn with_oidc(mut self, url: Url) -> SsoEndpoints {
        self.oidc = url;
        self
    }

    /// These endpoints with the portal at `url` (`AWS_ENDPOINT_URL_SSO`).
    pub fn with_portal(mut self, url: Url) -> SsoEndpoints {
        self.portal = url;
        self
    }
}

/// `base` with `path` appended to its path (`/token` at `https://oidc.x.amazonaws.com` or at a
/// stand-in's `http://127.0.0.1:PORT/prefix`).
pub(crate) fn operation_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Why an IAM Identity Center call failed. Each message is one line. Errors that only a new
/// sign-in cures ([`SsoError::needs_login`]) leave the fix to the caller, who knows the profile:
/// [`SsoError::with_login_hint`] adds it.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// Device flow: the user has not approved the sign-in yet (poll again after the interval).
    #[error("the IAM Identity Center sign-in has not been approved in the browser yet")]
    AuthorizationPending,
    /// Device flow: polling too fast; add 5 seconds to the interval (RFC 8628 3.5).
    #[error("IAM Identity Center asked to poll more slowly")]
    SlowDown,
    /// The user denied the sign-in in the browser.
    #[error("the IAM Identity Center sign-in was denied in the browser")]
    AccessDenied,
    /// Device flow: the device code expired before the user approved it.
    #[error("the IAM Identity Center sign-in expired before it was approved")]
    ExpiredToken,
    /// The refresh token (or an authorization code) was refused: the session ended or was revoked.
    #[error(
        "IAM Identity Center refused the refresh token: the sign-in session ended or was revoked"
    )]
    InvalidGrant,
    /// The client registration is unknown or expired.
    #[error("the client registration with IAM Identity Center is invalid or has expired")]
    InvalidClient,
    /// The portal refused the access token (expired, signed out, or never valid).
    #[error(
        "IAM Identity Center rejected the access token: it expired or the session was signed out"
    )]
    Unauthorized,
    /// The portal has no such role for this user (`ForbiddenException: No access`).
    #[error(
        "IAM Identity Center gives this user no access to role {role_name} in account {account_id}; check sso_account_id and sso_role_name"
    )]
    NoAccess {
        /// `sso_account_id`.
        account_id: String,
        /// `sso_role_name`.
        role_name: String,
    },
    /// The token has no refresh token or no usable registration, so only a new sign-in helps.
    #[error(
        "the IAM Identity Center token cannot be refreshed (no refresh token, or the client registration expired)"
    )]
    NotRefreshable,
    /// Any other error the service returned.
    #[error(
        "IAM Identity Center {operation} failed (HTTP {status}){}",
        code_and_message(code, message)
    )]
    Service {
        /// The operation (`CreateToken`, `GetRoleCredentials`, ...).
        operation: &'static str,
        /// The error code (`InvalidRequestException`, `invalid_scope`); empty when none was sent.
        code: String,
        /// The service's message, one line, cut at 300 characters.
        message: String,
        /// HTTP status.
        status: u16,
    },
    /// The request could not be sent or the response not read.
    #[error(
        "could not reach IAM Identity Center at {endpoint}: {detail}; check the network and sso_region"
    )]
    Transport {
        /// The endpoint (no path or query).
        endpoint: String,
        /// What went wrong, from the HTTP stack.
        detail: String,
    },
    /// The request took longer than the timeout.
    #[error("IAM Identity Center at {endpoint} did not answer within {secs} s")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The timeout.
        secs: u64,
    },
    /// A response that is not the document the operation returns (never quotes the response).
    #[error(
        "IAM Identity Center {operation} at {endpoint} returned an unreadable response: {detail}"
    )]
    Malformed {
        /// The operation.
        operation: &'static str,
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Authorization-code flow: the browser did not deliver the redirect in time.
    #[error(
        "the browser did not come back to credvend within {secs} s; sign in with `--device-code` instead (any browser, any device)"
    )]
    BrowserTimeout {
        /// How long credvend waited.
        secs: u64,
    },
    /// The HTTP client could not be built (bad `ca_bundle`).
    #[error("{0}")]
    Setup(String),
}

impl SsoError {
    /// Whether trying again later may succeed without the user doing anything: network failures,
    /// timeouts, throttling and 5xx answers, and the two "not yet" answers of the device flow.
    pub fn is_transient(&self) -> bool {
        match self {
            SsoError::AuthorizationPending
            | SsoError::SlowDown
            | SsoError::Transport { .. }
            | SsoError::Timeout { .. } => true,
            SsoError::Service { code, status, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "TooManyRequestsException" | "InternalServerException" | "server_error"
                    )
            }
            _ => false,
        }
    }

    /// Whether only a new sign-in (`credvend login`) cures this error.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            SsoError::AccessDenied
                | SsoError::ExpiredToken
                | SsoError::InvalidGrant
                | SsoError::InvalidClient
                | SsoError::Unauthorized
                | SsoError::NotRefreshable
        )
    }

    /// The message, with "; run `credvend login PROFILE`" appended when a new sign-in is the fix.
    pub fn with_login_hint(&self, profile: &str) -> String {
        if self.needs_login() {
            format!("{self}; run `credvend login {profile}`")
        } else {
            self.to_string()
        }
    }
}

/// HTTP client for both services. Cheap to clone; clones share connections. It does not retry:
/// a refresh whose answer was lost may already have rotated the refresh token, so repeating it
/// could turn a passing fault into "session ended". The caller backs off ([`SsoError::is_transient`]).
#[derive(Clone, Debug)]
pub struct SsoClient {
    http: reqwest::Client,
    timeout: Duration,
}

impl SsoClient {
    /// Builds a client with the STS client's TLS setup (system roots, or only `ca_bundle`),
    /// timeouts and proxy handling. `options.retry` is not used.
    pub fn new(options: &ClientOptions) -> Result<SsoClient, SsoError> {
        let http = crate::sts::query::http_client(options).map_err(SsoError::Setup)?;
        Ok(SsoClient {
            http,
            timeout: options.timeout,
        })
    }

    /// Sends `req` and reads the answer (at most [`MAX_BODY`] bytes). `Ok` carries the status and
    /// body of any answer; only transport failures are errors here.
    pub(crate) async fn exchange(
        &self,
        operation: &'static str,
        base: &Url,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<String>, Vec<u8>), SsoError> {
        let endpoint = endpoint_text(base);
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                SsoError::Timeout {
                    endpoint: endpoint.clone(),
                    secs: self.timeout.as_secs(),
                }
            } else {
                SsoError::Transport {
                    endpoint: endpoint.clone(),
                    detail: crate::sts::query::error_chain(&e.without_url()),
                }
            }
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut data = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if data.len() + chunk.len() > MAX_BODY {
                return Err(SsoError::Malformed {
                    operation,
                    endpoint,
                    detail: format!("the response is larger than {MAX_BODY} bytes"),
                });
            }
            data.extend_from_slice(&chunk);
        }
        Ok((status, error_type, data))
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// `scheme://host[:port]` of `url`, for messages (never a path or query).
pub(crate) fn endpoint_text(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => url.scheme().to_owned(),
    }
}

/// The error an unsuccessful answer stands for. The code comes from `x-amzn-ErrorType` (the
/// modeled exception name, with a `:namespace` suffix at AWS), else from the body's `__type`,
/// `code` or OAuth `error` member, as botocore's REST-JSON parser finds it. Bodies are
/// `{"error": "authorization_pending", "error_description": "..."}` (OIDC) or
/// `{"message": "..."}` (portal).
pub(crate) fn parse_error(
    operation: &'static str,
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
) -> SsoError {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        error: Option<String>,
        error_description: Option<String>,
        message: Option<String>,
        #[serde(rename = "Message")]
        message_upper: Option<String>,
        #[serde(rename = "__type")]
        type_: Option<String>,
        code: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let shape = error_type
        .map(str::to_owned)
        .or(parsed.type_)
        .or(parsed.code)
        .map(|c| {
            let c = c.split(':').next().unwrap_or_default();
            c.rsplit('#').next().unwrap_or_default().to_owned()
        })
        .filter(|c| !c.is_empty());
    let known = |name: &str| -> Option<SsoError> {
        Some(match name {
            "AuthorizationPendingException" | "authorization_pending" => {
                SsoError::AuthorizationPending
            }
            "SlowDownException" | "slow_down" => SsoError::SlowDown,
            "AccessDeniedException" | "access_denied" => SsoError::AccessDenied,
            "ExpiredTokenException" | "expired_token" => SsoError::ExpiredToken,
            "InvalidGrantException" | "invalid_grant" => SsoError::InvalidGrant,
            "InvalidClientException" | "invalid_client" => SsoError::InvalidClient,
            "UnauthorizedException" => SsoError::Unauthorized,
            _ => return None,
        })
    };
    if let Some(e) = shape.as_deref().and_then(known) {
        return e;
    }
    if shape.is_none()
        && let Some(e) = parsed.error.as_deref().and_then(known)
    {
        return e;
    }
    let message = parsed
        .error_description
        .or(parsed.message)
        .or(parsed.message_upper)
        .unwrap_or_default();
    SsoError::Service {
        operation,
        code: one_line(&shape.or(parsed.error).unwrap_or_default(), 100),
        message: one_line(&message, 300),
        status,
    }
}

/// `": CODE: message"` for [`SsoError::Service`], leaving out what the service did not send.
fn code_and_message(code: &str, message: &str) -> String {
    [code, message]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {s}"))
        .collect()
}

/// `text` on one line (control characters replaced by spaces), cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// A JSON body for a request: serialises `value`, whose fields borrow exposed secrets, straight
/// into the bytes sent. The bytes are not kept or logged.
pub(crate) fn json_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("request bodies are plain maps of strings")
}

/// A header value the HTTP stack must treat as sensitive (kept out of its debug output).
pub(crate) fn sensitive_header(
    value: &SecretString,
) -> Result<reqwest::header::HeaderValue, SsoError> {
    let mut v = reqwest::header::HeaderValue::from_str(value.expose_secret()).map_err(|_| {
        SsoError::Setup("the access token holds characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The description of a JSON parse failure without any of the input (serde_json's messages can
/// quote the offending value, which may be a token).
pub(crate) fn json_failure(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "does not have the expected members and types",
        Category::Eof => "ends early",
    };
    format!("the JSON {what} (line {}, column {})", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_endpoints_follow_the_region() {
        let e = SsoEndpoints::aws("eu-west-1").unwrap();
        assert_eq!(e.oidc.as_str(), "https://oidc.eu-west-1.amazonaws.com/");
        assert_eq!(
            e.portal.as_str(),
            "https://portal.sso.eu-west-1.amazonaws.com/"
        );
        let cn = SsoEndpoints::aws("cn-north-1").unwrap();
        assert_eq!(
            cn.oidc.as_str(),
            "https://oidc.cn-north-1.amazonaws.com.cn/"
        );
        assert!(SsoEndpoints::aws("evil.com/x").is_none());
        assert!(SsoEndpoints::aws("").is_none());
        let s: Url = "http://127.0.0.1:9/p/".parse().unwrap();
        let e = SsoEndpoints::aws("us-east-1").unwrap().with_oidc(s.clone());
        assert_eq!(e.oidc, s);
        assert_eq!(
            e.portal.as_str(),
            "https://portal.sso.us-east-1.amazonaws.com/"
        );
    }

    #[test]
    fn operation_urls_append_to_the_base_path() {
        let u = |b: &str, p| operation_url(&b.parse().unwrap(), p).to_string();
        assert_eq!(
            u("https://oidc.us-east-1.amazonaws.com", "/token"),
            "https://oidc.us-east-1.amazonaws.com/token"
        );
        assert_eq!(
            u("http://127.0.0.1:5/prefix/", "/token"),
            "http://127.0.0.1:5/prefix/token"
        );
        assert_eq!(
            u("http://127.0.0.1:5/x?q=1", "/token"),
            "http://127.0.0.1:5/x/token"
        );
    }

    #[test]
    fn errors_parse_as_aws_sends_them() {
        // Header and body as the real service sent them (aws/aws-cli#5878).
        let e = parse_error(
            "CreateToken",
            400,
            Some("AuthorizationPendingException:http://internal.amazon.com/coral/com.amazonaws.sso.oidc/"),
            br#"{"error":"authorization_pending","error_description":"Authorization is still pending"}"#,
        );
        assert!(matches!(e, SsoError::AuthorizationPending), "{e:?}");
        // Without the header, the OAuth code in the body decides.
        for (code, want) in [
            ("slow_down", "SlowDown"),
            ("access_denied", "AccessDenied"),
            ("expired_token", "ExpiredToken"),
            ("invalid_grant", "InvalidGrant"),
            ("invalid_client", "InvalidClient"),
        ] {
            let body = format!(r#"{{"error":"{code}"}}"#);
            let e = parse_error("CreateToken", 400, None, body.as_bytes());
            assert!(format!("{e:?}").starts_with(want), "{code}: {e:?}");
        }
        let e = parse_error(
            "GetRoleCredentials",
            401,
            Some("UnauthorizedException"),
            br#"{"message":"Session token not found or invalid"}"#,
        );
        assert!(matches!(e, SsoError::Unauthorized));
        let e = parse_error(
            "CreateToken",
            400,
            Some("InvalidScopeException:ns"),
            b"{\"error\":\"invalid_scope\",\"error_description\":\"bad\\nscope\"}",
        );
        assert_eq!(
            e.to_string(),
            "IAM Identity Center CreateToken failed (HTTP 400): InvalidScopeException: bad scope"
        );
        let e = parse_error("GetRoleCredentials", 503, None, b"<html>busy</html>");
        assert_eq!(
            e.to_string(),
            "IAM Identity Center GetRoleCredentials failed (HTTP 503)"
        );
        assert!(e.is_transient());
        let e = parse_error(
            "GetRoleCredentials",
            429,
            Some("TooManyRequestsException"),
            b"{}",
        );
        assert!(e.is_transient());
    }

    #[test]
    fn login_hint_only_where_login_helps() {
        assert_eq!(
            SsoError::InvalidGrant.with_login_hint("dev"),
            "IAM Identity Center refused the refresh token: the sign-in session ended or was revoked; run `credvend login dev`"
        );
        let t = SsoError::Timeout {
            endpoint: "https://x".into(),
            secs: 3,
        };
        assert_eq!(t.with_login_hint("dev"), t.to_string());
        assert!(t.is_transient() && !t.needs_login());
        assert!(!SsoError::Unauthorized.is_transient());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let token = Token {
            access_token: SecretString::from("access-secret-value"),
            expires_at: OffsetDateTime::UNIX_EPOCH,
            refresh_token: Some(SecretString::from("refresh-secret-value")),
            registration: Some(Registration {
                client_id: "client-id-1".into(),
                client_secret: SecretString::from("client-secret-value"),
                expires_at: OffsetDateTime::UNIX_EPOCH,
            }),
            region: "us-east-1".into(),
            start_url: "https://example.awsapps.com/start".into(),
        };
        let text = format!("{token:?}");
        for s in [
            "access-secret-value",
            "refresh-secret-value",
            "client-secret-value",
        ] {
            assert!(!text.contains(s), "{text}");
        }
        assert!(text.contains("client-id-1"));
    }

    #[test]
    fn json_failures_never_quote_the_input() {
        let e = serde_json::from_str::<u64>("\"secret-token-value\"").unwrap_err();
        assert!(
            e.to_string().contains("secret-token-value"),
            "serde_json does quote it"
        );
        assert!(!json_failure(&e).contains("secret-token-value"));
    }
}
