//! The IAM Identity Center OIDC service (`sso-oidc`): client registration, the device-code and
//! authorization-code (PKCE) sign-ins, and the refresh of an access token.
//!
//! Requests follow botocore's model `sso-oidc/2019-06-10` (REST-JSON, unsigned): `POST
//! /client/register`, `POST /device_authorization`, `POST /token`. The un-modeled browser step of
//! the authorization-code flow is `GET /authorize?...` at the same host, with the parameters the
//! AWS CLI v2 sends (aws-cli v2 `awscli/botocore/utils.py`, `SSOTokenFetcherAuth`). The pure part
//! is [`authorize_url`] and [`callback_code`]; the rest are [`SsoClient`] methods.

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroize;

use super::pkce::{self, CodeVerifier};
use super::{
    REFRESH_SCOPE, Registration, SsoClient, SsoEndpoints, SsoError, SsoSession, Token,
    endpoint_text, json_body, json_failure, operation_url, parse_error,
};
use crate::sigv4::form_encode;

/// The OAuth grant type of the device flow (RFC 8628 3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The redirect URI registered for the authorization-code flow: loopback without a port, which
/// the service matches against any port (RFC 8252 7.3), as the AWS CLI registers it.
pub const LOOPBACK_REDIRECT_URI: &str = "http://127.0.0.1/oauth/callback";

/// The redirect URI of one sign-in, with the port the local listener got.
pub fn loopback_redirect_uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/oauth/callback")
}

/// Which sign-in a registration is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantKind {
    /// The device-code flow: the user approves a code in any browser.
    DeviceCode,
    /// The authorization-code flow with PKCE: a browser on this machine redirects to a local
    /// listener.
    AuthCode {
        /// The redirect URI to register ([`LOOPBACK_REDIRECT_URI`]).
        redirect_uri: String,
        /// The issuer: the session's start URL, as the AWS CLI sends it.
        issuer_url: String,
    },
}

/// A started device sign-in (`StartDeviceAuthorization`).
#[derive(Clone, Debug)]
pub struct DeviceAuthorization {
    /// The device code the token request presents.
    pub device_code: SecretString,
    /// The code the user confirms in the browser (`ABCD-EFGH`).
    pub user_code: String,
    /// The page where the user enters the code.
    pub verification_uri: String,
    /// The page with the code filled in.
    pub verification_uri_complete: Option<String>,
    /// How long the device code stays valid.
    pub expires_in: Duration,
    /// How long to wait between token requests (5 s when the service does not say, RFC 8628 3.2).
    pub interval: Duration,
}

/// The URL the browser opens for the authorization-code flow: `{oidc}/authorize` with
/// `response_type=code`, `client_id`, `redirect_uri`, `state`, `code_challenge_method=S256`,
/// `scopes` (space-separated; `sso:account:access` when none are configured) and
/// `code_challenge`, in the AWS CLI's order, percent-encoded (a space is `%20`).
pub fn authorize_url(
    oidc: &Url,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &str,
    code_challenge: &str,
) -> Url {
    let scopes = if scopes.is_empty() {
        REFRESH_SCOPE.to_owned()
    } else {
        scopes.join(" ")
    };
    let pairs: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge_method", "S256"),
        ("scopes", &scopes),
        ("code_challenge", code_challenge),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut url = operation_url(oidc, "/authorize");
    url.set_query(Some(&form_encode(&pairs)));
    url
}

/// One authorization-code sign-in in progress: the URL to open and what the token request and the
/// redirect check need.
#[derive(Debug)]
pub struct AuthorizeRequest {
    /// The URL for the browser.
    pub url: Url,
    /// The `state` the redirect must carry back.
    pub state: String,
    /// The PKCE verifier for the token request.
    pub verifier: CodeVerifier,
    /// The redirect URI with the listener's port (the token request repeats it).
    pub redirect_uri: String,
}

impl AuthorizeRequest {
    /// A new request with a fresh `state` and verifier, redirecting to `redirect_uri`.
    pub fn new(
        endpoints: &SsoEndpoints,
        session: &SsoSession,
        registration: &Registration,
        redirect_uri: &str,
    ) -> AuthorizeRequest {
        let state = pkce::random_state();
        let verifier = CodeVerifier::generate();
        let url = authorize_url(
            &endpoints.oidc,
            &registration.client_id,
            redirect_uri,
            &session.registration_scopes,
            &state,
            &verifier.challenge(),
        );
        AuthorizeRequest {
            url,
            state,
            verifier,
            redirect_uri: redirect_uri.to_owned(),
        }
    }
}

/// The authorization code in the query of the redirect the browser delivered, after checking that
/// its `state` is `expected_state`. `error=access_denied` is [`SsoError::AccessDenied`].
pub fn callback_code(query: &str, expected_state: &str) -> Result<SecretString, SsoError> {
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = String::new();
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "code" => code = Some(SecretString::from(v)),
            "state" => state = Some(v),
            "error" => error = Some(v),
            "error_description" => description = v,
            _ => {}
        }
    }
    let bad = |detail: &str| SsoError::Malformed {
        operation: "Authorize",
        endpoint: "the browser redirect".into(),
        detail: detail.to_owned(),
    };
    if state.as_deref() != Some(expected_state) {
        return Err(bad(
            "its state does not match this sign-in (a stale or forged redirect)",
        ));
    }
    match (error, code) {
        (Some(e), _) if e == "access_denied" => Err(SsoError::AccessDenied),
        (Some(e), _) => Err(SsoError::Service {
            operation: "Authorize",
            code: e,
            message: description
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect(),
            status: 302,
        }),
        (None, Some(code)) if !code.expose_secret().is_empty() => Ok(code),
        _ => Err(bad("it carries no authorization code")),
    }
}

/// The pairs of an `application/x-www-form-urlencoded` query, decoded by `Url`'s parser.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let mut u = Url::parse("http://h/").expect("a fixed URL parses");
    u.set_query(Some(query));
    u.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RegisterClientRequest<'a> {
    client_name: &'a str,
    client_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_types: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_uris: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer_url: Option<&'a str>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterClientResponse {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    client_secret_expires_at: Option<i64>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StartDeviceAuthorizationRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    start_url: &'a str,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartDeviceAuthorizationResponse {
    device_code: Option<SecretString>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    verification_uri_complete: Option<String>,
    expires_in: Option<u64>,
    interval: Option<u64>,
}

#[derive(serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateTokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_verifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateTokenResponse {
    access_token: Option<SecretString>,
    expires_in: Option<i64>,
    refresh_token: Option<SecretString>,
}

impl SsoClient {
    /// POSTs a JSON body to the OIDC operation at `path`; parses a 200 answer as `T`.
    async fn oidc_call<T: serde::de::DeserializeOwned>(
        &self,
        endpoints: &SsoEndpoints,
        operation: &'static str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, SsoError> {
        let req = self
            .http()
            .post(operation_url(&endpoints.oidc, path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, error_type, mut data) = self.exchange(operation, &endpoints.oidc, req).await?;
        let result = if status == 200 {
            serde_json::from_slice(&data).map_err(|e| SsoError::Malformed {
                operation,
                endpoint: endpoint_text(&endpoints.oidc),
                detail: json_failure(&e),
            })
        } else {
            Err(parse_error(operation, status, error_type.as_deref(), &data))
        };
        // Wipe the response buffer (it may hold tokens) before it is freed; copies made while it
        // grew are not covered.
        data.zeroize();
        result
    }

    /// `RegisterClient`: registers credvend as a public client for `grant`, with the session's
    /// scopes (the device flow sends none when none are configured, as the AWS CLI does; the
    /// authorization-code flow defaults to `sso:account:access`).
    pub async fn register_client(
        &self,
        endpoints: &SsoEndpoints,
        session: &SsoSession,
        grant: &GrantKind,
    ) -> Result<Registration, SsoError> {
        let client_name = match &session.name {
            Some(name) => format!("credvend-client-{name}"),
            None => format!(
                "credvend-client-{}",
                OffsetDateTime::now_utc().unix_timestamp()
            ),
        };
        let default_scopes = [REFRESH_SCOPE.to_owned()];
        const AUTH_CODE_GRANTS: [&str; 2] = ["authorization_code", "refresh_token"];
        let req = match grant {
            GrantKind::DeviceCode => RegisterClientRequest {
                client_name: &client_name,
                client_type: "public",
                scopes: (!session.registration_scopes.is_empty())
                    .then_some(&session.registration_scopes[..]),
                grant_types: None,
                redirect_uris: None,
                issuer_url: None,
            },
            GrantKind::AuthCode {
                redirect_uri,
                issuer_url,
            } => RegisterClientRequest {
                client_name: &client_name,
                client_type: "public",
                scopes: Some(if session.registration_scopes.is_empty() {
                    &default_scopes[..]
                } else {
                    &session.registration_scopes[..]
                }),
                grant_types: Some(&AUTH_CODE_GRANTS),
                redirect_uris: Some([redirect_uri]),
                issuer_url: Some(issuer_url),
            },
        };
        let resp: RegisterClientResponse = self
            .oidc_call(
                endpoints,
                "RegisterClient",
                "/client/register",
                json_body(&req),
            )
            .await?;
        let missing = |member: &str| SsoError::Malformed {
            operation: "RegisterClient",
            endpoint: endpoint_text(&endpoints.oidc),
            detail: format!("the answer has no {member}"),
        };
        let expires = resp
            .client_secret_expires_at
            .ok_or_else(|| missing("clientSecretExpiresAt"))?;
        Ok(Registration {
            client_id: resp.client_id.ok_or_else(|| missing("clientId"))?,
            client_secret: resp.client_secret.ok_or_else(|| missing("clientSecret"))?,
            expires_at: OffsetDateTime::from_unix_timestamp(expires)
                .map_err(|_| missing("valid clientSecretExpiresAt"))?,
        })
    }

    /// `StartDeviceAuthorization` for the session's start URL.
    pub async fn start_device_authorization(
        &self,
        endpoints: &SsoEndpoints,
        session: &SsoSession,
        registration: &Registration,
    ) -> Result<DeviceAuthorization, SsoError> {
        let req = StartDeviceAuthorizationRequest {
            client_id: &registration.client_id,
            client_secret: registration.client_secret.expose_secret(),
            start_url: &session.start_url,
        };
        let resp: StartDeviceAuthorizationResponse = self
            .oidc_call(
                endpoints,
                "StartDeviceAuthorization",
                "/device_authorization",
                json_body(&req),
            )
            .await?;
        let missing = |member: &str| SsoError::Malformed {
            operation: "StartDeviceAuthorization",
            endpoint: endpoint_text(&endpoints.oidc),
            detail: format!("the answer has no {member}"),
        };
        Ok(DeviceAuthorization {
            device_code: resp.device_code.ok_or_else(|| missing("deviceCode"))?,
            user_code: resp.user_code.ok_or_else(|| missing("userCode"))?,
            verification_uri: resp
                .verification_uri
                .ok_or_else(|| missing("verificationUri"))?,
            verification_uri_complete: resp.verification_uri_complete,
            expires_in: Duration::from_secs(resp.expires_in.ok_or_else(|| missing("expiresIn"))?),
            interval: Duration::from_secs(resp.interval.unwrap_or(5)),
        })
    }

    /// One `CreateToken` with the device code: the token once the user approved, else
    /// [`SsoError::AuthorizationPending`] / [`SsoError::SlowDown`] / [`SsoError::AccessDenied`] /
    /// [`SsoError::ExpiredToken`].
    pub async fn create_token_device(
        &self,
        endpoints: &SsoEndpoints,
        session: &SsoSession,
        registration: &Registration,
        device_code: &SecretString,
    ) -> Result<Token, SsoError> {
        let req = CreateTokenRequest {
            client_id: &registration.client_id,
            client_secret: registration.client_secret.expose_secret(),
            grant_type: DEVICE_CODE_GRANT,
            device_code: Some(device_code.expose_secret()),
            ..CreateTokenRequest::default()
        };
        self.create_token(endpoints, &req, session, registration, None)
            .await
    }

    /// Polls `CreateToken` until the user approves the device sign-in: waits the announced
    /// interval (at least 1 s) between attempts and 5 s more after each `slow_down` (RFC 8628
    /// 3.5); gives up with [`SsoError::ExpiredToken`] when the device code's lifetime is over.
    /// Other errors end the wait.
    pub async fn wait_for_device_token(
        &self,
        endpoints: &SsoEndpoints,
        session: &SsoSession,
        registration: &Registration,
        auth: &DeviceAuthorization,
    ) -> Result<Token, SsoError> {
        let deadline = tokio::time::Instant::now() + auth.expires_in;
        let mut interval = auth.interval.max(Duration::from_secs(1));
        loop {
            match self
                .create_token_device(endpoints, session, registration, &auth.device_code)
                .await
            {
                Err(SsoError::AuthorizationPending) => {}
                Err(SsoError::SlowDown) => interval += Duration::from_secs(5),
                other => return other,
            }
            if tokio::time::Instant::now() + interval >= deadline {
                return Err(SsoError::ExpiredToken);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// `CreateToken` with the authorization code the redirect delivered, the PKCE verifier and the
    /// redirect URI of the authorize request.
    pub async fn create_token_auth_code(
        &self,
        endpoints: &SsoEndpoints,
        session: &SsoSession,
        registration: &Registration,
        code: &SecretString,
        verifier: &CodeVerifier,
        redirect_uri: &str,
    ) -> Result<Token, SsoError> {
        let req = CreateTokenRequest {
            client_id: &registration.client_id,
            client_secret: registration.client_secret.expose_secret(),
            grant_type: "authorization_code",
            code: Some(code.expose_secret()),
            redirect_uri: Some(redirect_uri),
            code_verifier: Some(verifier.secret().expose_secret()),
            ..CreateTokenRequest::default()
        };
        self.create_token(endpoints, &req, session, registration, None)
            .await
    }

    /// `CreateToken` with the refresh token: a new access token. The service may send a new
    /// refresh token, which replaces the old one; when it sends none the old one stays (RFC 6749
    /// 6). Fails with [`SsoError::NotRefreshable`] without a call when the token has no refresh
    /// token or its registration has expired.
    pub async fn refresh(
        &self,
        endpoints: &SsoEndpoints,
        token: &Token,
    ) -> Result<Token, SsoError> {
        let now = OffsetDateTime::now_utc();
        let (Some(refresh_token), Some(registration)) = (&token.refresh_token, &token.registration)
        else {
            return Err(SsoError::NotRefreshable);
        };
        if registration.is_expired(now) {
            return Err(SsoError::NotRefreshable);
        }
        let req = CreateTokenRequest {
            client_id: &registration.client_id,
            client_secret: registration.client_secret.expose_secret(),
            grant_type: "refresh_token",
            refresh_token: Some(refresh_token.expose_secret()),
            ..CreateTokenRequest::default()
        };
        let session = SsoSession {
            name: None,
            start_url: token.start_url.clone(),
            region: token.region.clone(),
            registration_scopes: Vec::new(),
        };
        self.create_token(endpoints, &req, &session, registration, Some(refresh_token))
            .await
    }

    async fn create_token(
        &self,
        endpoints: &SsoEndpoints,
        req: &CreateTokenRequest<'_>,
        session: &SsoSession,
        registration: &Registration,
        old_refresh_token: Option<&SecretString>,
    ) -> Result<Token, SsoError> {
        // The clock is read before the call, so the expiry is never later than the service's.
        let now = OffsetDateTime::now_utc();
        let resp: CreateTokenResponse = self
            .oidc_call(endpoints, "CreateToken", "/token", json_body(req))
            .await?;
        let missing = |member: &str| SsoError::Malformed {
            operation: "CreateToken",
            endpoint: endpoint_text(&endpoints.oidc),
            detail: format!("the answer has no {member}"),
        };
        let expires_in = resp
            .expires_in
            .filter(|s| *s >= 0)
            .ok_or_else(|| missing("valid expiresIn"))?;
        Ok(Token {
            access_token: resp.access_token.ok_or_else(|| missing("accessToken"))?,
            expires_at: now + time::Duration::seconds(expires_in),
            refresh_token: resp.refresh_token.or_else(|| old_refresh_token.cloned()),
            registration: Some(registration.clone()),
            region: session.region.clone(),
            start_url: session.start_url.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_has_the_cli_parameters_in_order() {
        let oidc: Url = "https://oidc.us-east-1.amazonaws.com".parse().unwrap();
        let url = authorize_url(
            &oidc,
            "client-1",
            "http://127.0.0.1:4321/oauth/callback",
            &[],
            "st-1",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        );
        assert_eq!(
            url.as_str(),
            "https://oidc.us-east-1.amazonaws.com/authorize?response_type=code&client_id=client-1\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A4321%2Foauth%2Fcallback&state=st-1\
             &code_challenge_method=S256&scopes=sso%3Aaccount%3Aaccess\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let two = authorize_url(&oidc, "c", "r", &["a:b".into(), "c".into()], "s", "x");
        // Spaces as `+`, as Python's `urlencode` (the AWS CLI v2) writes them.
        assert!(two.as_str().contains("&scopes=a%3Ab+c&"), "{two}");
        let pairs: Vec<(String, String)> = two
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert!(pairs.contains(&("scopes".into(), "a:b c".into())));
    }

    #[test]
    fn authorize_request_challenge_matches_its_verifier() {
        let endpoints = SsoEndpoints::aws("eu-west-1").unwrap();
        let session = SsoSession {
            name: Some("s".into()),
            start_url: "https://d-1.awsapps.com/start".into(),
            region: "eu-west-1".into(),
            registration_scopes: vec![],
        };
        let reg = Registration {
            client_id: "cid".into(),
            client_secret: SecretString::from("cs"),
            expires_at: OffsetDateTime::UNIX_EPOCH,
        };
        let req = AuthorizeRequest::new(&endpoints, &session, &reg, &loopback_redirect_uri(80));
        let q: std::collections::HashMap<String, String> = req
            .url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(q["code_challenge"], req.verifier.challenge());
        assert_eq!(q["state"], req.state);
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:80/oauth/callback");
        assert_eq!(req.url.path(), "/authorize");
        assert!(!format!("{req:?}").contains(req.verifier.secret().expose_secret()));
    }

    #[test]
    fn callback_checks_state_and_errors() {
        let code = callback_code("code=abc&state=s1", "s1").unwrap();
        assert_eq!(code.expose_secret(), "abc");
        assert!(matches!(
            callback_code("code=abc&state=s2", "s1"),
            Err(SsoError::Malformed { .. })
        ));
        assert!(matches!(
            callback_code("code=abc", "s1"),
            Err(SsoError::Malformed { .. })
        ));
        assert!(matches!(
            callback_code("error=access_denied&state=s1", "s1"),
            Err(SsoError::AccessDenied)
        ));
        let e = callback_code(
            "error=invalid_request&error_description=no%0Achallenge&state=s1",
            "s1",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "IAM Identity Center Authorize failed (HTTP 302): invalid_request: nochallenge"
        );
        assert!(matches!(
            callback_code("state=s1", "s1"),
            Err(SsoError::Malformed { .. })
        ));
    }

    #[test]
    fn register_requests_match_the_cli() {
        let scopes = vec![REFRESH_SCOPE.to_owned()];
        let grants = ["authorization_code", "refresh_token"];
        let device = RegisterClientRequest {
            client_name: "credvend-client-s",
            client_type: "public",
            scopes: None,
            grant_types: None,
            redirect_uris: None,
            issuer_url: None,
        };
        assert_eq!(
            String::from_utf8(json_body(&device)).unwrap(),
            r#"{"clientName":"credvend-client-s","clientType":"public"}"#
        );
        let auth = RegisterClientRequest {
            scopes: Some(&scopes),
            grant_types: Some(&grants),
            redirect_uris: Some([LOOPBACK_REDIRECT_URI]),
            issuer_url: Some("https://d-1.awsapps.com/start"),
            ..device
        };
        assert_eq!(
            String::from_utf8(json_body(&auth)).unwrap(),
            r#"{"clientName":"credvend-client-s","clientType":"public","scopes":["sso:account:access"],"grantTypes":["authorization_code","refresh_token"],"redirectUris":["http://127.0.0.1/oauth/callback"],"issuerUrl":"https://d-1.awsapps.com/start"}"#
        );
    }

    #[test]
    fn token_answers_tolerate_nulls_and_unknown_members() {
        let r: CreateTokenResponse = serde_json::from_str(
            r#"{"accessToken":"a","expiresIn":3600,"tokenType":"Bearer","idToken":null,"refreshToken":null}"#,
        )
        .unwrap();
        assert!(r.refresh_token.is_none());
        assert_eq!(r.access_token.unwrap().expose_secret(), "a");
    }
}
