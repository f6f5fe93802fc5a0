//! IAM Identity Center, with the stand-in of `support/sso_standin.py` playing the two services
//! and moto (SigV4 authentication on) behind it.
//!
//! First the honesty proof of the stand-in: AWS's own Python SDK (boto3's `sso-oidc` and `sso`
//! clients, botocore's `SSOTokenProvider` and `SSOProvider`) works against it and gets role
//! credentials moto accepts (`support/sso_honesty.py`); botocore's token cache files and
//! credvend's are interchangeable. Then credvend's client (`credvend::sso`) against it: both
//! sign-ins, refresh, revocation, expiry, and the role credentials at moto.

use std::path::Path;

use credvend::sso::oidc::{AuthorizeRequest, LOOPBACK_REDIRECT_URI, callback_code};
use credvend::sso::{GrantKind, REFRESH_SCOPE, SsoClient, SsoError, SsoSession, Token, cache};
use credvend::sts::ClientOptions;
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::moto::{Moto, venv_bin};
use crate::support::sso::{SsoRole, SsoStandin};

const START_URL: &str = "https://d-0000000000.awsapps.com/start";
const ACCOUNT: &str = "123456789012";

struct Fixture {
    moto: Moto,
    standin: SsoStandin,
    role: SsoRole,
    client: SsoClient,
}

/// moto's shared server, a role trusting its admin (whom the stand-in assumes roles as), and a
/// stand-in of this test's own that hands the role out as `Developer`.
async fn fixture() -> Fixture {
    let moto = Moto::shared();
    let admin = moto.admin_arn().await;
    let role = SsoRole {
        account_id: ACCOUNT.into(),
        role_name: "Developer".into(),
        role_arn: moto.role("sso-dev", &[&admin], None).await,
    };
    let standin = SsoStandin::start(&moto, std::slice::from_ref(&role));
    let client = SsoClient::new(&ClientOptions::default()).unwrap();
    Fixture {
        moto,
        standin,
        role,
        client,
    }
}

fn session(name: Option<&str>, scopes: &[&str]) -> SsoSession {
    SsoSession {
        name: name.map(Into::into),
        start_url: START_URL.into(),
        region: "us-east-1".into(),
        registration_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The device sign-in from registration to token, the user approving at the stand-in.
async fn device_sign_in(f: &Fixture, s: &SsoSession) -> Token {
    let ep = f.standin.endpoints();
    let reg = f
        .client
        .register_client(&ep, s, &GrantKind::DeviceCode)
        .await
        .unwrap();
    let auth = f
        .client
        .start_device_authorization(&ep, s, &reg)
        .await
        .unwrap();
    f.client
        .wait_for_device_token(&ep, s, &reg, &auth)
        .await
        .unwrap()
}

/// Role credentials for `token`, checked at moto: GetCallerIdentity must name the assumed role.
async fn assert_role_credentials_work(f: &Fixture, token: &Token) {
    let creds = f
        .client
        .get_role_credentials(
            &f.standin.endpoints(),
            &token.access_token,
            ACCOUNT,
            &f.role.role_name,
        )
        .await
        .unwrap();
    assert_eq!(creds.account_id.as_deref(), Some(ACCOUNT));
    let now = OffsetDateTime::now_utc();
    assert!(
        creds.expiration > now + time::Duration::minutes(50),
        "{:?}",
        creds.expiration
    );
    let id = Moto::client()
        .caller_identity(&f.moto.endpoint(), creds.signing_key())
        .await
        .unwrap();
    let iam_role_name = f.role.role_arn.rsplit('/').next().unwrap();
    assert!(
        id.arn.starts_with(&format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{iam_role_name}/"
        )),
        "{}",
        id.arn
    );
}

/// Runs `sso_honesty.py` with a scratch `$HOME` and nothing of this process's AWS environment.
pub(crate) async fn honesty(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(venv_bin("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/sso_honesty.py"
        ))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "sso_honesty.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// botocore's SSO credential provider (`sso_honesty.py provider`) for `f`'s role, with the
/// legacy profile shape (`session` None) or an `sso-session` of that name.
async fn provider(f: &Fixture, home: &Path, session: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "provider",
        &f.standin.url,
        &f.moto.url,
        ACCOUNT,
        &f.role.role_name,
        &f.role.role_arn,
        START_URL,
    ];
    args.extend(session);
    honesty(home, &args).await
}

#[tokio::test]
async fn botocore_clients_and_providers_work_against_the_standin() {
    let f = fixture().await;
    let home = tempfile::tempdir().unwrap();
    let wire = honesty(
        home.path(),
        &[
            "wire",
            &f.standin.url,
            &f.moto.url,
            ACCOUNT,
            &f.role.role_name,
            &f.role.role_arn,
        ],
    )
    .await;
    for step in [
        "device_flow",
        "device_errors",
        "refresh",
        "auth_code",
        "portal",
    ] {
        assert_eq!(wire[step], "ok", "{wire}");
    }
    let stats = f.standin.stats().await;
    for op in [
        "error:AuthorizationPendingException",
        "error:SlowDownException",
        "error:ExpiredTokenException",
        "error:AccessDeniedException",
        "error:InvalidGrantException",
        "error:InvalidClientException",
        "error:UnauthorizedException",
        "CreateToken:authorization_code",
        "Authorize",
        "ListAccounts",
        "ListAccountRoles",
        "Logout",
    ] {
        assert!(
            stats.get(op).copied().unwrap_or(0) >= 1,
            "{op} never happened: {stats:?}"
        );
    }

    // botocore's SSOTokenProvider finds the sign-in `wire` left under sha1("honesty"), refreshes
    // its expired access token through the stand-in and rewrites the file; SSOProvider gets role
    // credentials that moto accepts.
    let provider = provider(&f, home.path(), Some("honesty")).await;
    assert_eq!(provider["refreshes"], 1, "{provider}");
    assert_eq!(provider["role_credentials_calls"], 1, "{provider}");
    assert_eq!(provider["cache_rewritten"], true, "{provider}");

    // The file botocore wrote is where credvend looks for it, parses, and renders back unchanged.
    let dir = home.path().join(".aws/sso/cache");
    let s = session(Some("honesty"), &[REFRESH_SCOPE]);
    assert_eq!(
        cache::cache_path(&dir, &s).to_str().unwrap(),
        provider["cache_file"].as_str().unwrap()
    );
    let written = std::fs::read_to_string(cache::cache_path(&dir, &s)).unwrap();
    let token = cache::parse(&written).unwrap();
    assert_eq!(cache::render(&token).expose_secret(), written);
    assert!(token.can_refresh(OffsetDateTime::now_utc()));
    assert!(!token.is_expired(OffsetDateTime::now_utc()));
    // ...and its tokens work with credvend's client: role credentials, and a refresh.
    assert_role_credentials_work(&f, &token).await;
    let refreshed = f
        .client
        .refresh(&f.standin.endpoints(), &token)
        .await
        .unwrap();
    assert_role_credentials_work(&f, &refreshed).await;
}

#[tokio::test]
async fn botocore_uses_the_cache_files_credvend_writes() {
    let f = fixture().await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".aws/sso/cache");
    f.standin
        .settings(serde_json::json!({ "pending_polls": 0 }))
        .await;

    // Legacy profile: no session name, no scopes, so no refresh token; the file is named by the
    // start URL and read by botocore's SSOTokenLoader.
    let legacy = session(None, &[]);
    let token = device_sign_in(&f, &legacy).await;
    assert!(token.refresh_token.is_none());
    assert!(!token.can_refresh(OffsetDateTime::now_utc()));
    cache::write(&dir, &legacy, &token).unwrap();
    let out = provider(&f, home.path(), None).await;
    assert_eq!(out["refreshes"], 0, "{out}");
    assert_eq!(out["cache_rewritten"], false, "{out}");

    // sso-session: an expired access token credvend wrote; botocore refreshes it with the
    // registration credvend wrote (clientId, clientSecret, registrationExpiresAt).
    let named = session(Some("credvend-written"), &[REFRESH_SCOPE]);
    let mut token = device_sign_in(&f, &named).await;
    assert!(token.refresh_token.is_some());
    token.expires_at = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let path = cache::write(&dir, &named, &token).unwrap();
    let out = provider(&f, home.path(), Some("credvend-written")).await;
    assert_eq!(out["refreshes"], 1, "{out}");
    assert_eq!(out["cache_rewritten"], true, "{out}");
    // botocore's rewrite parses, and renders back byte for byte.
    let rewritten = std::fs::read_to_string(&path).unwrap();
    let back = cache::parse(&rewritten).unwrap();
    assert_eq!(cache::render(&back).expose_secret(), rewritten);
    assert_ne!(
        back.access_token.expose_secret(),
        token.access_token.expose_secret()
    );
}

#[tokio::test]
async fn device_sign_in_gets_role_credentials_moto_accepts() {
    let f = fixture().await;
    let s = session(Some("dev"), &[REFRESH_SCOPE]);
    let started = OffsetDateTime::now_utc();
    let token = device_sign_in(&f, &s).await;
    let done = OffsetDateTime::now_utc();
    // One authorization_pending answer (the stand-in's default), then the token.
    assert_eq!(f.standin.stat("CreateToken:device_code").await, 2);
    assert_eq!(
        f.standin.stat("error:AuthorizationPendingException").await,
        1
    );
    assert!(token.refresh_token.is_some());
    let reg = token.registration.as_ref().unwrap();
    assert!(reg.expires_at > started + time::Duration::days(89));
    // expiresIn (3600) counted from the moment the last token request was sent.
    assert!(token.expires_at >= started + time::Duration::minutes(60));
    assert!(token.expires_at <= done + time::Duration::minutes(60));
    assert_eq!(
        (token.region.as_str(), token.start_url.as_str()),
        ("us-east-1", START_URL)
    );
    assert_role_credentials_work(&f, &token).await;
    assert_eq!(f.standin.stat("AssumeRole").await, 1);
    // Debug shows no secret.
    let shown = format!("{token:?}");
    assert!(!shown.contains(token.access_token.expose_secret()));
    assert!(!shown.contains(token.refresh_token.as_ref().unwrap().expose_secret()));
    assert!(!shown.contains(reg.client_secret.expose_secret()));
}

#[tokio::test]
async fn device_sign_in_approved_by_the_user() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "auto_approve": false }))
        .await;
    let s = session(Some("dev"), &[REFRESH_SCOPE]);
    let ep = f.standin.endpoints();
    let reg = f
        .client
        .register_client(&ep, &s, &GrantKind::DeviceCode)
        .await
        .unwrap();
    let auth = f
        .client
        .start_device_authorization(&ep, &s, &reg)
        .await
        .unwrap();
    assert!(
        auth.verification_uri_complete
            .as_deref()
            .unwrap()
            .contains(&auth.user_code)
    );
    let e = f
        .client
        .create_token_device(&ep, &s, &reg, &auth.device_code)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SsoError::AuthorizationPending) && e.is_transient(),
        "{e:?}"
    );
    f.standin.approve(&auth.user_code).await;
    let token = f
        .client
        .create_token_device(&ep, &s, &reg, &auth.device_code)
        .await
        .unwrap();
    assert_role_credentials_work(&f, &token).await;
}

#[tokio::test]
async fn device_sign_in_refusals() {
    let f = fixture().await;
    let ep = f.standin.endpoints();
    let s = session(Some("dev"), &[REFRESH_SCOPE]);
    let reg = f
        .client
        .register_client(&ep, &s, &GrantKind::DeviceCode)
        .await
        .unwrap();

    f.standin
        .settings(serde_json::json!({ "slow_down_polls": 1 }))
        .await;
    let auth = f
        .client
        .start_device_authorization(&ep, &s, &reg)
        .await
        .unwrap();
    let e = f
        .client
        .create_token_device(&ep, &s, &reg, &auth.device_code)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::SlowDown) && e.is_transient(), "{e:?}");

    f.standin
        .settings(serde_json::json!({ "auto_approve": false }))
        .await;
    let auth = f
        .client
        .start_device_authorization(&ep, &s, &reg)
        .await
        .unwrap();
    f.standin.deny(&auth.user_code).await;
    let e = f
        .client
        .wait_for_device_token(&ep, &s, &reg, &auth)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SsoError::AccessDenied) && e.needs_login(),
        "{e:?}"
    );

    f.standin
        .settings(serde_json::json!({ "device_code_ttl": 0 }))
        .await;
    let auth = f
        .client
        .start_device_authorization(&ep, &s, &reg)
        .await
        .unwrap();
    let e = f
        .client
        .create_token_device(&ep, &s, &reg, &auth.device_code)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::ExpiredToken), "{e:?}");

    let mut wrong = reg.clone();
    wrong.client_secret = "not-the-secret".to_owned().into();
    let e = f
        .client
        .start_device_authorization(&ep, &s, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::InvalidClient), "{e:?}");

    // A registration that has expired: the service refuses it, and refresh does not even try.
    f.standin
        .settings(serde_json::json!({ "registration_ttl": 0, "device_code_ttl": 600 }))
        .await;
    let old = f
        .client
        .register_client(&ep, &s, &GrantKind::DeviceCode)
        .await
        .unwrap();
    assert!(old.is_expired(OffsetDateTime::now_utc()));
    let e = f
        .client
        .start_device_authorization(&ep, &s, &old)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::InvalidClient), "{e:?}");
    let refreshes = f.standin.stat("CreateToken:refresh_token").await;
    let token = Token {
        access_token: "a".to_owned().into(),
        expires_at: OffsetDateTime::now_utc(),
        refresh_token: Some("r".to_owned().into()),
        registration: Some(old),
        region: "us-east-1".into(),
        start_url: START_URL.into(),
    };
    let e = f.client.refresh(&ep, &token).await.unwrap_err();
    assert!(
        matches!(e, SsoError::NotRefreshable) && e.needs_login(),
        "{e:?}"
    );
    assert_eq!(f.standin.stat("CreateToken:refresh_token").await, refreshes);
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_retires_the_old_one() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "pending_polls": 0 }))
        .await;
    let ep = f.standin.endpoints();
    let token = device_sign_in(&f, &session(Some("dev"), &[REFRESH_SCOPE])).await;
    let refreshed = f.client.refresh(&ep, &token).await.unwrap();
    assert_ne!(
        refreshed.access_token.expose_secret(),
        token.access_token.expose_secret()
    );
    let (old_rt, new_rt) = (
        token.refresh_token.as_ref().unwrap(),
        refreshed.refresh_token.as_ref().unwrap(),
    );
    assert_ne!(new_rt.expose_secret(), old_rt.expose_secret());
    assert_eq!(
        refreshed.registration.as_ref().unwrap().client_id,
        token.registration.as_ref().unwrap().client_id
    );
    assert_role_credentials_work(&f, &refreshed).await;
    // The retired refresh token is refused; the new one keeps working.
    let e = f.client.refresh(&ep, &token).await.unwrap_err();
    assert!(matches!(e, SsoError::InvalidGrant), "{e:?}");
    f.client.refresh(&ep, &refreshed).await.unwrap();
    assert_eq!(f.standin.stat("CreateToken:refresh_token").await, 3);
}

#[tokio::test]
async fn refresh_after_revocation_is_invalid_grant() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "pending_polls": 0 }))
        .await;
    let token = device_sign_in(&f, &session(Some("dev"), &[REFRESH_SCOPE])).await;
    assert_eq!(f.standin.revoke_refresh_tokens().await, 1);
    let e = f
        .client
        .refresh(&f.standin.endpoints(), &token)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::InvalidGrant), "{e:?}");
    assert!(e.needs_login() && !e.is_transient());
    assert_eq!(
        e.with_login_hint("work"),
        "IAM Identity Center refused the refresh token: the sign-in session ended or was revoked; run `credvend login work`"
    );
    // The access token itself still works until it expires.
    assert_role_credentials_work(&f, &token).await;
}

#[tokio::test]
async fn expired_access_token_is_unauthorized_until_refreshed() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "pending_polls": 0 }))
        .await;
    let ep = f.standin.endpoints();
    let token = device_sign_in(&f, &session(Some("dev"), &[REFRESH_SCOPE])).await;
    assert_eq!(f.standin.expire_access_tokens().await, 1);
    let e = f
        .client
        .get_role_credentials(&ep, &token.access_token, ACCOUNT, &f.role.role_name)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SsoError::Unauthorized) && e.needs_login(),
        "{e:?}"
    );
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(token.access_token.expose_secret()), "{text}");
    }
    assert_eq!(f.standin.stat("AssumeRole").await, 0);
    // A refresh cures it.
    let refreshed = f.client.refresh(&ep, &token).await.unwrap();
    assert_role_credentials_work(&f, &refreshed).await;

    // Tokens issued already expired (access_token_ttl 0) are refused the same way.
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 0 }))
        .await;
    let short = f.client.refresh(&ep, &refreshed).await.unwrap();
    assert!(short.is_expired(OffsetDateTime::now_utc()));
    let e = f
        .client
        .get_role_credentials(&ep, &short.access_token, ACCOUNT, &f.role.role_name)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::Unauthorized), "{e:?}");
}

#[tokio::test]
async fn unassigned_role_is_no_access() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "pending_polls": 0 }))
        .await;
    let token = device_sign_in(&f, &session(Some("dev"), &[REFRESH_SCOPE])).await;
    let e = f
        .client
        .get_role_credentials(
            &f.standin.endpoints(),
            &token.access_token,
            ACCOUNT,
            "Admin",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::NoAccess { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "IAM Identity Center gives this user no access to role Admin in account 123456789012; check sso_account_id and sso_role_name"
    );
    assert_eq!(f.standin.stat("error:ForbiddenException").await, 1);

    // After a reset the stand-in knows no client and no token, and has counted nothing.
    f.standin.reset().await;
    assert!(f.standin.stats().await.is_empty());
    let e = f
        .client
        .get_role_credentials(
            &f.standin.endpoints(),
            &token.access_token,
            ACCOUNT,
            &f.role.role_name,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::Unauthorized), "{e:?}");
    let e = f
        .client
        .refresh(&f.standin.endpoints(), &token)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::InvalidClient), "{e:?}");
}

/// Reads one HTTP request on `listener` (the browser delivering the redirect), answers 200, and
/// returns the request target's query.
async fn receive_redirect(listener: tokio::net::TcpListener) -> String {
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the browser closed the connection early");
        head.extend_from_slice(&buf[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let head = String::from_utf8(head).unwrap();
    let target = head.split(' ').nth(1).unwrap().to_owned();
    assert!(target.starts_with("/oauth/callback?"), "{target}");
    target.split_once('?').unwrap().1.to_owned()
}

#[tokio::test]
async fn auth_code_sign_in_with_the_test_as_browser() {
    let f = fixture().await;
    let ep = f.standin.endpoints();
    let s = session(Some("dev"), &[]);
    let reg = f
        .client
        .register_client(
            &ep,
            &s,
            &GrantKind::AuthCode {
                redirect_uri: LOOPBACK_REDIRECT_URI.into(),
                issuer_url: START_URL.into(),
            },
        )
        .await
        .unwrap();
    // The local listener credvend would run for the redirect; registered without a port, used
    // with the one it got.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let redirect_uri = credvend::sso::oidc::loopback_redirect_uri(port);
    let req = AuthorizeRequest::new(&ep, &s, &reg, &redirect_uri);
    assert!(
        req.url
            .as_str()
            .starts_with(&format!("{}/authorize?", f.standin.url))
    );

    // The browser: GET the authorize URL without following the redirect...
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let resp = browser.get(req.url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{redirect_uri}?")),
        "{location}"
    );
    // ...then deliver the redirect to the listener.
    let received = tokio::spawn(receive_redirect(listener));
    let delivered = browser.get(&location).send().await.unwrap();
    assert_eq!(delivered.status(), 200);
    let query = received.await.unwrap();

    // A redirect with another sign-in's state is refused before any token request.
    assert!(matches!(
        callback_code(&query, "another-state"),
        Err(SsoError::Malformed { .. })
    ));
    let code = callback_code(&query, &req.state).unwrap();
    let token = f
        .client
        .create_token_auth_code(&ep, &s, &reg, &code, &req.verifier, &req.redirect_uri)
        .await
        .unwrap();
    // The authorization-code registration asked for sso:account:access, so it can refresh.
    assert!(token.can_refresh(OffsetDateTime::now_utc()));
    assert_role_credentials_work(&f, &token).await;
    // A code is single-use.
    let e = f
        .client
        .create_token_auth_code(&ep, &s, &reg, &code, &req.verifier, &req.redirect_uri)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::InvalidGrant), "{e:?}");

    // A code presented with another verifier is refused (PKCE).
    let req2 = AuthorizeRequest::new(&ep, &s, &reg, &redirect_uri);
    let resp = browser.get(req2.url.clone()).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap();
    let code2 = callback_code(location.split_once('?').unwrap().1, &req2.state).unwrap();
    let e = f
        .client
        .create_token_auth_code(&ep, &s, &reg, &code2, &req.verifier, &req2.redirect_uri)
        .await
        .unwrap_err();
    assert!(matches!(e, SsoError::InvalidGrant), "{e:?}");

    // The user denies: the redirect carries error=access_denied.
    f.standin
        .settings(serde_json::json!({ "authorize": "deny" }))
        .await;
    let req3 = AuthorizeRequest::new(&ep, &s, &reg, &redirect_uri);
    let resp = browser.get(req3.url.clone()).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap();
    let e = callback_code(location.split_once('?').unwrap().1, &req3.state).unwrap_err();
    assert!(matches!(e, SsoError::AccessDenied), "{e:?}");
}
