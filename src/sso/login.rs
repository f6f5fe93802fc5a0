//! One whole sign-in, as `credvend login` runs it for an IAM Identity Center profile: reuse the
//! client registration of the previous sign-in when it fits (same flow, scopes and start URL, more
//! than a day left; the AWS CLI caches its registrations the same way), else `RegisterClient`;
//! then the device-code flow, or the authorization-code flow with PKCE and a [`Loopback`]
//! listener for the browser's redirect. What the user must see (the URL and code, or the URL to
//! open) is handed to the caller, which prints it and may open a browser; nothing here prompts or
//! touches storage.

use std::time::Duration;

use reqwest::Url;
use time::OffsetDateTime;

use super::loopback::Loopback;
use super::oidc::{AuthorizeRequest, LOOPBACK_REDIRECT_URI};
use super::{
    Grant, GrantKind, REFRESH_SCOPE, Registration, SignIn, SsoClient, SsoEndpoints, SsoError,
    SsoSession, Token,
};

/// Which sign-in to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// RFC 8628: the user opens a URL on any device and confirms a code.
    DeviceCode,
    /// RFC 7636 + RFC 8252: a browser on this machine signs in and redirects to a local port.
    AuthCode,
}

impl Flow {
    fn grant(self) -> Grant {
        match self {
            Flow::DeviceCode => Grant::DeviceCode,
            Flow::AuthCode => Grant::AuthCode,
        }
    }
}

/// What the user must see during a sign-in.
#[derive(Debug)]
pub enum Prompt<'a> {
    /// Device flow: open `verification_uri` anywhere and confirm `user_code` (or open
    /// `complete`, which has the code filled in).
    Device {
        /// The verification page.
        verification_uri: &'a str,
        /// The code to confirm.
        user_code: &'a str,
        /// The page with the code filled in, when the service sent one.
        complete: Option<&'a str>,
    },
    /// Authorization-code flow: open `url` in a browser on this machine.
    Browser {
        /// The authorize URL.
        url: &'a Url,
    },
}

/// The scopes a registration for `grant` asks for: the session's `sso_registration_scopes`; the
/// authorization-code flow asks for `sso:account:access` when none are configured (as the AWS CLI
/// does), the device flow for none.
pub fn registration_scopes(session: &SsoSession, grant: Grant) -> Vec<String> {
    if session.registration_scopes.is_empty() && grant == Grant::AuthCode {
        vec![REFRESH_SCOPE.to_owned()]
    } else {
        session.registration_scopes.clone()
    }
}

/// The registration of `previous` when a sign-in of `flow` for `session` may reuse it at `now`.
pub fn reusable_registration(
    previous: Option<&SignIn>,
    session: &SsoSession,
    flow: Flow,
    now: OffsetDateTime,
) -> Option<Registration> {
    let p = previous?;
    let reg = p.token.registration.as_ref()?;
    let fits = p.grant == flow.grant()
        && p.scopes == registration_scopes(session, flow.grant())
        && p.token.start_url == session.start_url
        && reg.expires_at - now > time::Duration::days(1);
    fits.then(|| reg.clone())
}

/// Signs in to `session`: the [`SignIn`] to keep (not shared with the AWS CLI's cache; the caller
/// decides that). `show` receives what the user must see. The authorization-code flow waits at
/// most `browser_timeout` for the redirect.
pub async fn sign_in(
    client: &SsoClient,
    endpoints: &SsoEndpoints,
    session: &SsoSession,
    previous: Option<&SignIn>,
    flow: Flow,
    browser_timeout: Duration,
    show: &mut (dyn FnMut(Prompt<'_>) + Send),
) -> Result<SignIn, SsoError> {
    let kind = match flow {
        Flow::DeviceCode => GrantKind::DeviceCode,
        Flow::AuthCode => GrantKind::AuthCode {
            redirect_uri: LOOPBACK_REDIRECT_URI.to_owned(),
            issuer_url: session.start_url.clone(),
        },
    };
    let reused = reusable_registration(previous, session, flow, OffsetDateTime::now_utc());
    let was_reused = reused.is_some();
    let mut registration = match reused {
        Some(r) => r,
        None => client.register_client(endpoints, session, &kind).await?,
    };
    let mut result = run(
        client,
        endpoints,
        session,
        &registration,
        flow,
        browser_timeout,
        show,
    )
    .await;
    if was_reused && matches!(result, Err(SsoError::InvalidClient)) {
        // The service forgot the registration before its announced expiry: register again.
        registration = client.register_client(endpoints, session, &kind).await?;
        result = run(
            client,
            endpoints,
            session,
            &registration,
            flow,
            browser_timeout,
            show,
        )
        .await;
    }
    let token = result?;
    Ok(SignIn {
        token,
        grant: flow.grant(),
        scopes: registration_scopes(session, flow.grant()),
        issued_at: Some(OffsetDateTime::now_utc()),
        share_cache: false,
    })
}

async fn run(
    client: &SsoClient,
    endpoints: &SsoEndpoints,
    session: &SsoSession,
    registration: &Registration,
    flow: Flow,
    browser_timeout: Duration,
    show: &mut (dyn FnMut(Prompt<'_>) + Send),
) -> Result<Token, SsoError> {
    match flow {
        Flow::DeviceCode => {
            let auth = client
                .start_device_authorization(endpoints, session, registration)
                .await?;
            show(Prompt::Device {
                verification_uri: &auth.verification_uri,
                user_code: &auth.user_code,
                complete: auth.verification_uri_complete.as_deref(),
            });
            client
                .wait_for_device_token(endpoints, session, registration, &auth)
                .await
        }
        Flow::AuthCode => {
            let listener = Loopback::bind().await.map_err(|e| {
                SsoError::Setup(format!(
                    "cannot listen on 127.0.0.1 for the browser's redirect: {e}"
                ))
            })?;
            let req =
                AuthorizeRequest::new(endpoints, session, registration, &listener.redirect_uri());
            show(Prompt::Browser { url: &req.url });
            let code = listener.wait_for_code(&req.state, browser_timeout).await?;
            client
                .create_token_auth_code(
                    endpoints,
                    session,
                    registration,
                    &code,
                    &req.verifier,
                    &req.redirect_uri,
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn session(scopes: &[&str]) -> SsoSession {
        SsoSession {
            name: Some("corp".into()),
            start_url: "https://d-1.awsapps.com/start".into(),
            region: "us-east-1".into(),
            registration_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn previous(grant: Grant, scopes: &[&str], reg_left: time::Duration) -> SignIn {
        let now = OffsetDateTime::now_utc();
        SignIn {
            token: Token {
                access_token: SecretString::from("a"),
                expires_at: now,
                refresh_token: None,
                registration: Some(Registration {
                    client_id: "cid".into(),
                    client_secret: SecretString::from("cs"),
                    expires_at: now + reg_left,
                }),
                region: "us-east-1".into(),
                start_url: "https://d-1.awsapps.com/start".into(),
            },
            grant,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            issued_at: None,
            share_cache: false,
        }
    }

    #[test]
    fn auth_code_registrations_default_to_the_refresh_scope() {
        assert_eq!(
            registration_scopes(&session(&[]), Grant::AuthCode),
            [REFRESH_SCOPE]
        );
        assert!(registration_scopes(&session(&[]), Grant::DeviceCode).is_empty());
        assert_eq!(
            registration_scopes(&session(&["a", "b"]), Grant::AuthCode),
            ["a", "b"]
        );
    }

    #[test]
    fn registrations_are_reused_only_when_they_fit() {
        let now = OffsetDateTime::now_utc();
        let s = session(&[REFRESH_SCOPE]);
        let p = previous(
            Grant::DeviceCode,
            &[REFRESH_SCOPE],
            time::Duration::days(30),
        );
        assert!(reusable_registration(Some(&p), &s, Flow::DeviceCode, now).is_some());
        assert!(reusable_registration(Some(&p), &s, Flow::AuthCode, now).is_none());
        assert!(reusable_registration(None, &s, Flow::DeviceCode, now).is_none());
        let other_scopes = previous(Grant::DeviceCode, &[], time::Duration::days(30));
        assert!(reusable_registration(Some(&other_scopes), &s, Flow::DeviceCode, now).is_none());
        let ending = previous(
            Grant::DeviceCode,
            &[REFRESH_SCOPE],
            time::Duration::hours(2),
        );
        assert!(reusable_registration(Some(&ending), &s, Flow::DeviceCode, now).is_none());
        let imported = previous(Grant::Unknown, &[REFRESH_SCOPE], time::Duration::days(30));
        assert!(reusable_registration(Some(&imported), &s, Flow::DeviceCode, now).is_none());
        let mut moved = s.clone();
        moved.start_url = "https://d-2.awsapps.com/start".into();
        assert!(reusable_registration(Some(&p), &moved, Flow::DeviceCode, now).is_none());
    }
}
