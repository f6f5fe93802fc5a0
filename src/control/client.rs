//! The CLI side of the control socket. It trusts only a daemon of its own uid: before anything
//! is sent (an MFA code, a request for credentials) it checks that the state directory belongs to
//! the user and nobody else can enter it, that the socket belongs to the user, and that the
//! process listening on it runs as the user (SO_PEERCRED). Anything else is refused with a
//! message naming the path and the fix: without `XDG_RUNTIME_DIR` the state directory falls
//! back to the shared temp directory, where another user could have prepared one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::proto::{self, Answer, Envelope, Failure, Reply, Request};
use crate::paths::{CONTROL_SOCKET, current_uid};

/// How long a client waits for the answer: longer than the daemon works on a request
/// ([`super::server::HANDLE_TIMEOUT`]), so the client sees the daemon's answer (or its error)
/// rather than giving up first.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(155);

/// Why the CLI got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No daemon listens on the socket.
    #[error(
        "the credvend daemon is not running (no {0}); start it with `credvend serve` or `systemctl --user start credvend`"
    )]
    NotRunning(String),
    /// The socket or its directory could belong to someone else: nothing was sent.
    #[error("refusing to use {path}: {why}; {fix}")]
    Untrusted {
        /// The path found wanting.
        path: String,
        /// What is wrong with it.
        why: String,
        /// What to do.
        fix: &'static str,
    },
    /// The daemon answered with a failure.
    #[error("{0}")]
    Failed(Failure),
    /// Talking to it failed.
    #[error("control socket {path}: {detail}")]
    Io {
        /// Socket path.
        path: String,
        /// What failed.
        detail: String,
    },
}

const FIX_DIR: &str = "remove it, or use a state directory only you can open (set XDG_RUNTIME_DIR, or pass --state-dir / CREDVEND_STATE_DIR)";

fn untrusted(path: &Path, why: String, fix: &'static str) -> ClientError {
    ClientError::Untrusted {
        path: path.display().to_string(),
        why,
        fix,
    }
}

/// Checks that `dir` is a directory of ours that nobody else can enter. `Ok(false)` when it does
/// not exist (no daemon).
fn trust_dir(dir: &Path) -> Result<bool, ClientError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(untrusted(dir, format!("cannot inspect it ({e})"), FIX_DIR)),
    };
    let me = current_uid();
    if !meta.is_dir() {
        return Err(untrusted(
            dir,
            "the state directory is not a directory (a symlink or file is in its place)".into(),
            FIX_DIR,
        ));
    }
    if meta.uid() != me {
        return Err(untrusted(
            dir,
            format!(
                "the state directory belongs to uid {}, not to you (uid {me}), so whatever answers in it may be someone else's",
                meta.uid()
            ),
            FIX_DIR,
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(untrusted(
            dir,
            format!(
                "the state directory has mode {:o}: other users could have put a socket in it",
                meta.mode() & 0o777
            ),
            "remove it and restart the daemon (it recreates it with mode 0700), or pass --state-dir",
        ));
    }
    Ok(true)
}

/// Checks the socket file; `Ok(false)` when it does not exist (no daemon).
fn trust_socket(socket: &Path) -> Result<bool, ClientError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(untrusted(
                socket,
                format!("cannot inspect it ({e})"),
                FIX_DIR,
            ));
        }
    };
    let me = current_uid();
    if !meta.file_type().is_socket() || meta.uid() != me {
        return Err(untrusted(
            socket,
            format!(
                "it is not a socket of yours (owner uid {}, you are uid {me})",
                meta.uid()
            ),
            FIX_DIR,
        ));
    }
    Ok(true)
}

/// Connects to the daemon of `state_dir`, having checked that it is ours.
async fn connect(state_dir: &Path) -> Result<(UnixStream, PathBuf), ClientError> {
    let socket = state_dir.join(CONTROL_SOCKET);
    let shown = socket.display().to_string();
    if !trust_dir(state_dir)? || !trust_socket(&socket)? {
        return Err(ClientError::NotRunning(shown));
    }
    let stream = match UnixStream::connect(&socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(shown));
        }
        Err(e) => {
            return Err(ClientError::Io {
                path: shown,
                detail: e.to_string(),
            });
        }
    };
    let peer = stream.peer_cred().map_err(|e| ClientError::Io {
        path: shown.clone(),
        detail: format!("cannot identify the daemon: {e}"),
    })?;
    if peer.uid() != current_uid() {
        return Err(untrusted(
            &socket,
            format!(
                "the process listening on it runs as uid {}, not as you (uid {})",
                peer.uid(),
                current_uid()
            ),
            FIX_DIR,
        ));
    }
    Ok((stream, socket))
}

/// Sends one request to the daemon of `state_dir` and returns its answer.
pub(crate) async fn call(state_dir: &Path, req: &Request) -> Result<Reply, ClientError> {
    const CLOSED: &str = "the daemon closed the connection without answering";
    let (stream, socket) = connect(state_dir).await?;
    let shown = socket.display().to_string();
    let io = |e: std::io::Error| ClientError::Io {
        path: shown.clone(),
        detail: match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                CLOSED.to_owned()
            }
            _ => e.to_string(),
        },
    };
    let (read, mut write) = stream.into_split();
    write.write_all(&proto::line(req)).await.map_err(io)?;
    write.shutdown().await.map_err(io)?;
    let mut answer = String::new();
    let mut reader = BufReader::new(read);
    tokio::time::timeout(ANSWER_TIMEOUT, reader.read_line(&mut answer))
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
    let env: Envelope<Answer> = serde_json::from_str(&answer).map_err(|e| ClientError::Io {
        path: shown.clone(),
        detail: format!("unreadable answer ({e}); is the daemon the same version as this CLI?"),
    })?;
    match env.body {
        Answer::Ok(reply) => Ok(reply),
        Answer::Err(f) => Err(ClientError::Failed(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_or_missing_state_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert!(!trust_dir(&dir).unwrap(), "missing: no daemon");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(trust_dir(&dir).unwrap());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o733)).unwrap();
        let e = trust_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains("mode 733") && e.contains(&dir.display().to_string()),
            "{e}"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(trust_dir(&link).is_err());
        let file = dir.join(CONTROL_SOCKET);
        std::fs::write(&file, "").unwrap();
        assert!(
            trust_socket(&file)
                .unwrap_err()
                .to_string()
                .contains("not a socket")
        );
    }
}
