//! The control socket (`STATE_DIR/control.sock`, mode 0600 in a 0700 directory): the CLI's way to
//! talk to the running daemon. One JSON request line, one JSON response line, then close.
//! Version 1 of the protocol:
//!
//! ```text
//! -> {"v":1,"cmd":"status"}                         <- {"v":1,"ok":true,"result":{...}}
//! -> {"v":1,"cmd":"login","profile":"dev","code":"123456"}
//! -> {"v":1,"cmd":"refresh","profile":"dev"}
//! -> {"v":1,"cmd":"lock","profile":"dev"}           (profile may be null: every profile)
//! -> {"v":1,"cmd":"credentials","profile":"dev"}    (for `credential-process` and `env --static`)
//!                                                   <- {"v":1,"ok":false,"error":"..."}
//! ```
//!
//! The peer's uid (SO_PEERCRED / getpeereid) must equal the daemon's; others are refused before
//! their request is read. Requests are capped at 64 KiB and 5 s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::policy::Policy;
use super::refresher::Command;
use super::server::{Daemon, ListenerInfo};
use super::state::Status;
use crate::creds::format_aws_time;

/// Protocol version.
pub const VERSION: u32 = 1;
const MAX_REQUEST: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon works on one request. `login` mints with STS: an MFA session and a role,
/// each up to three 20 s attempts with backoff, fit.
const HANDLE_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a client waits for the answer: longer than the daemon works on it, so the client
/// sees the daemon's answer (or its error) rather than giving up first.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(155);
/// How long a `credentials` request waits for the first credentials of a starting profile.
const COLD_START_WAIT: Duration = Duration::from_secs(15);

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Everything `credvend status` shows.
    Status,
    /// Supply an MFA code.
    Login {
        /// Profile.
        profile: String,
        /// The code.
        #[serde(serialize_with = "expose", deserialize_with = "secret")]
        code: SecretString,
    },
    /// Mint now.
    Refresh {
        /// Profile.
        profile: String,
    },
    /// Forget credentials.
    Lock {
        /// Profile, or every profile.
        profile: Option<String>,
    },
    /// The current credentials of a profile (never long-term keys).
    Credentials {
        /// Profile.
        profile: String,
    },
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn secret<'de, D: serde::Deserializer<'de>>(de: D) -> Result<SecretString, D::Error> {
    String::deserialize(de).map(SecretString::from)
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// A response.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Success.
    pub ok: bool,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// One line naming the fix, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One profile in `status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileStatus {
    /// Name.
    pub name: String,
    /// How its credentials are made (`keyring:u -> AssumeRole(a)`), or the configuration error.
    pub source: String,
    /// Phase, last error, next refresh.
    #[serde(flatten)]
    pub status: serde_json::Value,
    /// Expiry of the credentials being served.
    pub expiration: Option<String>,
    /// Access key id being served.
    pub access_key_id: Option<String>,
    /// The profile's region (what `credvend env` exports as AWS_REGION).
    pub region: Option<String>,
    /// Credential responses served.
    pub requests: u64,
    /// MFA device, when the profile needs one.
    pub mfa_serial: Option<String>,
    /// ECS token file, when ECS serves the profile.
    pub ecs_token_file: Option<String>,
}

/// `status` result.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// Daemon version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Listeners.
    pub listeners: Vec<ListenerInfoOwned>,
    /// Profiles.
    pub profiles: Vec<ProfileStatus>,
}

/// A listener as the client sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerInfoOwned {
    /// `imds` or `ecs`.
    pub kind: String,
    /// Address.
    pub address: String,
    /// Profiles.
    pub profiles: Vec<String>,
}

impl From<ListenerInfo> for ListenerInfoOwned {
    fn from(l: ListenerInfo) -> Self {
        ListenerInfoOwned {
            kind: l.kind.to_owned(),
            address: l.address,
            profiles: l.profiles,
        }
    }
}

fn ok(result: serde_json::Value) -> Response {
    Response {
        ok: true,
        result: Some(result),
        error: None,
    }
}

fn fail(error: impl Into<String>) -> Response {
    Response {
        ok: false,
        result: None,
        error: Some(error.into()),
    }
}

/// Binds the control socket at `path` (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "another credvend is running with this state directory ({})",
                path.display()
            ),
        ));
    }
    let _ = std::fs::remove_file(path);
    // Created under a restrictive umask so there is no window with a looser mode.
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control requests until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    mut shutdown: watch::Receiver<bool>,
) {
    let uid = crate::paths::current_uid();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::http::stopped(&mut shutdown) => return,
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid => {}
            Ok(cred) => {
                tracing::warn!(
                    peer_uid = cred.uid(),
                    "refused a control connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot identify a control peer; refused");
                continue;
            }
        }
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(HANDLE_TIMEOUT, handle(stream, daemon)).await {
                tracing::debug!(error = %e, "control request timed out");
            }
        });
    }
}

async fn handle(stream: UnixStream, daemon: Arc<Daemon>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let response = match tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => match parse_request(&line) {
            Ok(req) => execute(req, &daemon).await,
            Err(e) => fail(e),
        },
        _ => fail("no request received"),
    };
    let mut out = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: response,
    })
    .expect("responses serialize");
    out.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(&out)).await;
}

/// Parses one request line (pure; fuzzed).
pub fn parse_request(line: &str) -> Result<Request, String> {
    match serde_json::from_str::<Envelope<Request>>(line) {
        Ok(env) if env.v == VERSION => Ok(env.body),
        Ok(env) => Err(format!(
            "control protocol version {} is not supported (this daemon speaks {VERSION}); restart the daemon after upgrading",
            env.v
        )),
        Err(_) => Err("malformed control request".into()),
    }
}

fn status_value(s: &Status) -> serde_json::Value {
    serde_json::to_value(s).expect("status serializes")
}

async fn execute(req: Request, daemon: &Arc<Daemon>) -> Response {
    match req {
        Request::Status => {
            let mut profiles = Vec::new();
            for (cell, chain) in daemon.profiles().await {
                let current = cell.current();
                profiles.push(ProfileStatus {
                    source: match &chain {
                        Ok(c) => c.describe(),
                        Err(e) => format!("invalid configuration: {e}"),
                    },
                    status: status_value(&cell.status()),
                    expiration: current
                        .as_ref()
                        .map(|v| format_aws_time(v.creds.expiration)),
                    access_key_id: current.as_ref().map(|v| v.creds.access_key_id.clone()),
                    region: chain.as_ref().ok().map(|c| c.region.clone()),
                    requests: cell.requests(),
                    mfa_serial: chain
                        .as_ref()
                        .ok()
                        .and_then(|c| c.mfa_serial().map(str::to_owned)),
                    ecs_token_file: daemon
                        .ecs_token_path(&cell.name)
                        .await
                        .map(|p| p.display().to_string()),
                    name: cell.name.clone(),
                });
            }
            let report = StatusReport {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                listeners: daemon
                    .listeners()
                    .await
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                profiles,
            };
            ok(serde_json::to_value(report).expect("status serializes"))
        }
        Request::Login { profile, code } => {
            let Some((_, chain)) = daemon.profile(&profile).await else {
                return fail(not_served(&profile));
            };
            let chain = match chain {
                Ok(c) => c,
                Err(e) => return fail(e.message),
            };
            match daemon.minter().login(&chain, code).await {
                Ok(expiry) => {
                    // Every served profile sharing this MFA session mints now.
                    for (cell, other) in daemon.profiles().await {
                        if let Ok(other) = other
                            && other.session == chain.session
                        {
                            daemon.command(&cell.name, Command::Refresh).await;
                        }
                    }
                    ok(serde_json::json!({ "session_expiration": format_aws_time(expiry) }))
                }
                Err(e) => fail(crate::mint::describe(&e)),
            }
        }
        Request::Refresh { profile } => {
            if daemon.command(&profile, Command::Refresh).await {
                ok(serde_json::json!({}))
            } else {
                fail(not_served_or_broken(daemon, &profile).await)
            }
        }
        Request::Lock { profile } => {
            let Some(name) = profile else {
                // Every profile that has credentials to forget; a profile whose configuration is
                // broken holds none, and must not stop the others from being locked.
                let mut locked = Vec::new();
                for (cell, _) in daemon.profiles().await {
                    if daemon.command(&cell.name, Command::Lock).await {
                        locked.push(cell.name.clone());
                    }
                }
                return ok(serde_json::json!({ "locked": locked }));
            };
            if !daemon.command(&name, Command::Lock).await {
                return fail(not_served_or_broken(daemon, &name).await);
            }
            ok(serde_json::json!({ "locked": [name] }))
        }
        Request::Credentials { profile } => {
            let Some((cell, _)) = daemon.profile(&profile).await else {
                return fail(not_served(&profile));
            };
            // A CLI caller can wait longer than an SDK on a cold start (the first mint).
            let mut current = cell.current();
            if current.is_none() && cell.status().phase == super::state::Phase::Starting {
                current = cell.wait_first(COLD_START_WAIT).await;
            }
            let now = OffsetDateTime::now_utc();
            match current.filter(|v| Policy::servable(v.creds.expiration, now)) {
                Some(v) => {
                    cell.count_request();
                    ok(crate::creds::credential_process_json(&v.creds))
                }
                None => {
                    let (code, message) = super::imds::unavailable_detail(&cell);
                    fail(format!("{message} ({code})"))
                }
            }
        }
    }
}

fn not_served(profile: &str) -> String {
    format!(
        "the daemon does not serve profile `{profile}`: name it in an [[imds]] listener or in [ecs] profiles of config.toml, then reload (`systemctl --user reload credvend` or SIGHUP)"
    )
}

async fn not_served_or_broken(daemon: &Daemon, profile: &str) -> String {
    match daemon.profile(profile).await {
        None => not_served(profile),
        Some((_, Err(e))) => e.message,
        Some(_) => format!("profile `{profile}` is shutting down"),
    }
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error(
        "the credvend daemon is not running (no {0}); start it with `credvend serve` or `systemctl --user start credvend`"
    )]
    NotRunning(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
    /// Talking to it failed.
    #[error("control socket {path}: {detail}")]
    Io {
        /// Socket path.
        path: String,
        /// What failed.
        detail: String,
    },
}

/// Sends one request to the daemon whose control socket is `path`.
pub async fn call(path: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let shown = path.display().to_string();
    const CLOSED: &str =
        "the daemon closed the connection without answering (is it running as another user?)";
    let io = |e: std::io::Error| ClientError::Io {
        path: shown.clone(),
        detail: match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                CLOSED.to_owned()
            }
            _ => e.to_string(),
        },
    };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(shown));
        }
        Err(e) => return Err(io(e)),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: req,
    })
    .expect("requests serialize");
    line.push(b'\n');
    write.write_all(&line).await.map_err(io)?;
    write.shutdown().await.map_err(io)?;
    let mut answer = String::new();
    let mut reader = BufReader::new(read);
    let read_fut = reader.read_line(&mut answer);
    tokio::time::timeout(ANSWER_TIMEOUT, read_fut)
        .await
        .map_err(|_| ClientError::Io {
            path: shown.clone(),
            detail: format!(
                "the daemon did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
        })?
        .map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::Io {
            path: shown,
            detail: CLOSED.into(),
        });
    }
    let env: Envelope<Response> = serde_json::from_str(&answer).map_err(|e| ClientError::Io {
        path: shown.clone(),
        detail: format!("unreadable answer: {e}"),
    })?;
    match env.body {
        Response {
            ok: true, result, ..
        } => Ok(result.unwrap_or(serde_json::Value::Null)),
        Response { error, .. } => Err(ClientError::Daemon(
            error.unwrap_or_else(|| "unknown error".into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_hide_codes_in_debug() {
        let req = Request::Login {
            profile: "dev".into(),
            code: SecretString::from("123456"),
        };
        let text = serde_json::to_string(&Envelope { v: 1, body: &req }).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"cmd":"login","profile":"dev","code":"123456"}"#
        );
        let back: Envelope<Request> = serde_json::from_str(&text).unwrap();
        assert!(!format!("{:?}", back.body).contains("123456"));
        let lock: Envelope<Request> =
            serde_json::from_str(r#"{"v":1,"cmd":"lock","profile":null}"#).unwrap();
        assert!(matches!(lock.body, Request::Lock { profile: None }));
        assert!(
            serde_json::from_str::<Envelope<Request>>(r#"{"v":1,"cmd":"format-disk"}"#).is_err()
        );
    }
}
