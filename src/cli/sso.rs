//! `credvend login PROFILE` for an IAM Identity Center profile, and what `remove` does to a
//! sign-in. The CLI signs in, never the daemon: the authorization-code flow with a browser on this
//! machine by default, the device-code flow with `--device-code` or without a graphical session.
//! The sign-in goes into the keyring (and, with `--share-cache`, the AWS CLI's token cache), then
//! the daemon is told to read it and mint every profile of that SSO session.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::context::Context;
use crate::control::client::{self as control, ClientError};
use crate::control::proto::{Reply, Request};
use crate::creds::format_aws_time;
use crate::keystore::KeyStore;
use crate::profile::resolve::{self, SsoStep};
use crate::sso::login::{self, Flow, Prompt};
use crate::sso::{SsoClient, SsoSession, cache};
use crate::sts::ClientOptions;

/// How long the authorization-code flow waits for the browser to come back.
const BROWSER_WAIT: Duration = Duration::from_secs(10 * 60);

/// Whether this machine has no graphical session to open a browser in (Linux without `DISPLAY`
/// and `WAYLAND_DISPLAY`). macOS always has one.
fn headless() -> bool {
    !cfg!(target_os = "macos")
        && ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .all(|v| std::env::var_os(v).is_none_or(|s| s.is_empty()))
}

/// The program that opens a URL in the user's browser, when there is one on `PATH`.
fn opener() -> Option<std::path::PathBuf> {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Opens `url` in a browser, without waiting for it; false when there is no way to.
fn open_browser(url: &str) -> bool {
    if headless() {
        return false;
    }
    let Some(program) = opener() else {
        return false;
    };
    std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Prints what the user must do.
fn show(prompt: Prompt<'_>) {
    match prompt {
        Prompt::Device {
            verification_uri,
            user_code,
            complete,
        } => {
            eprintln!(
                "credvend: to sign in, open this page in a browser (on any device):\n  {verification_uri}\n\
                 and confirm the code:\n  {user_code}"
            );
            if let Some(c) = complete {
                eprintln!("or open this link, which has the code filled in:\n  {c}");
            }
            eprintln!("credvend: waiting for the sign-in to be approved…");
        }
        Prompt::Browser { url } => {
            let opened = open_browser(url.as_str());
            eprintln!(
                "credvend: {} sign in with IAM Identity Center at:\n  {url}\n\
                 (on another device, run `credvend login --device-code` instead)",
                if opened {
                    "your browser opens the sign-in page; if it does not,"
                } else {
                    "open this page in a browser on this machine and"
                }
            );
            eprintln!("credvend: waiting for the browser to come back…");
        }
    }
}

/// `credvend login PROFILE` for a profile whose chain starts with IAM Identity Center.
pub(super) async fn login(
    ctx: &Context,
    profile: &str,
    step: &SsoStep,
    device_code: bool,
    share_cache: bool,
) -> anyhow::Result<ExitCode> {
    let store = KeyStore::open(ctx.keystore_options(true)).await?;
    let key = step.session.storage_key();
    let previous = store.get_sso(&key).await?;
    let flow = if device_code || headless() {
        Flow::DeviceCode
    } else {
        Flow::AuthCode
    };
    let client = SsoClient::new(&ClientOptions {
        ca_bundle: step.ca_bundle.clone(),
        ..ClientOptions::default()
    })?;
    eprintln!(
        "credvend: signing in to IAM Identity Center ({}) for profile `{profile}`",
        step.session.label()
    );
    let mut sign_in = login::sign_in(
        &client,
        &step.endpoints,
        &step.session,
        previous.as_ref(),
        flow,
        BROWSER_WAIT,
        &mut show,
    )
    .await?;
    sign_in.share_cache = share_cache;
    store.put_sso(&key, &sign_in).await?;
    if share_cache {
        let dir = ctx
            .sso_cache_dir()
            .context("--share-cache: no home directory (HOME is not set)")?;
        let path = cache::write(&dir, &step.session, &sign_in.token).with_context(|| {
            format!(
                "cannot write the AWS CLI's token cache in {}",
                dir.display()
            )
        })?;
        eprintln!(
            "credvend: shared the sign-in with the AWS CLI (mode 0600): {}",
            path.display()
        );
    }
    let until = format_aws_time(sign_in.token.expires_at);
    if sign_in.token.refresh_token.is_some() {
        eprintln!(
            "credvend: signed in; the access token is valid until {until} and is refreshed automatically"
        );
    } else {
        eprintln!(
            "credvend: signed in until {until}; this sign-in cannot be refreshed (use an [sso-session] \
             with sso_registration_scopes = sso:account:access for that), so run `credvend login {profile}` again then"
        );
    }
    tell_daemon(ctx, &key).await;
    Ok(ExitCode::SUCCESS)
}

/// Tells a running daemon that the sign-in of `session_key` changed. Not having a daemon is fine:
/// it reads the keyring when it starts.
async fn tell_daemon(ctx: &Context, session_key: &str) {
    let req = Request::SignInChanged {
        session: session_key.to_owned(),
    };
    match control::call(&ctx.state_dir, &req).await {
        Ok(Reply::Refreshing { profiles }) if profiles.is_empty() => {
            eprintln!("credvend: the daemon serves no profile of this SSO session");
        }
        Ok(Reply::Refreshing { profiles }) => {
            eprintln!(
                "credvend: the daemon mints new credentials for {}",
                profiles.join(", ")
            );
        }
        Ok(_) => {}
        Err(ClientError::NotRunning(_)) => {
            eprintln!("credvend: the daemon is not running; it uses this sign-in when it starts");
        }
        Err(e) => eprintln!("credvend: warning: could not tell the daemon: {e}"),
    }
}

/// The SSO session `profile`'s chain starts with, when it resolves to one.
fn session_of(ctx: &Context, profile: &str) -> Option<SsoSession> {
    let set = ctx.load_profiles().ok()?;
    let chain = resolve::resolve(&set, profile, &ctx.env, &resolve::read_file).ok()?;
    chain.sso().map(|s| s.session.clone())
}

/// `credvend remove PROFILE` for an IAM Identity Center profile: deletes the sign-in of its SSO
/// session (and the AWS CLI's cache file when it was shared with it) and tells the daemon.
/// Returns the session's label when there was a sign-in to delete.
pub(super) async fn remove_sign_in(
    ctx: &Context,
    store: &KeyStore,
    profile: &str,
) -> anyhow::Result<Option<String>> {
    let Some(session) = session_of(ctx, profile) else {
        return Ok(None);
    };
    let key = session.storage_key();
    let shared = store.get_sso(&key).await?.is_some_and(|s| s.share_cache);
    let had = store.delete_sso(&key).await?;
    if shared && let Some(dir) = ctx.sso_cache_dir() {
        let path = cache::cache_path(&dir, &session);
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!(
                "credvend: deleted the token cache file shared with the AWS CLI: {}",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("credvend: warning: cannot delete {}: {e}", path.display()),
        }
    }
    tell_daemon_quietly(ctx, &key).await;
    Ok(had.then(|| session.label()))
}

/// [`tell_daemon`] without the chatter: a failure is only a warning.
async fn tell_daemon_quietly(ctx: &Context, session_key: &str) {
    let req = Request::SignInChanged {
        session: session_key.to_owned(),
    };
    match control::call(&ctx.state_dir, &req).await {
        Ok(_) | Err(ClientError::NotRunning(_)) => {}
        Err(e) => eprintln!("credvend: warning: could not tell the daemon: {e}"),
    }
}
