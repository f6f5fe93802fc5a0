//! The daemon side of the control socket: bind, accept peers of the daemon's own uid only,
//! read one request line (64 KiB, 5 s), hand it to the [`Service`], write the answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::proto::{self, Answer, Failure, FailureKind, Reply, Request};
use crate::shutdown::Shutdown;

const MAX_REQUEST: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon works on one request. `login` mints with STS: an MFA session and a role,
/// each up to three 20 s attempts with backoff, fit.
pub(crate) const HANDLE_TIMEOUT: Duration = Duration::from_secs(150);

/// What answers control requests (the daemon).
pub(crate) trait Service: Send + Sync + 'static {
    /// Answers one request.
    fn handle(
        &self,
        req: Request,
    ) -> impl std::future::Future<Output = Result<Reply, Failure>> + Send;
}

/// Binds the control socket at `path` (replacing a stale one) with mode 0600. The state
/// directory (mode 0700, checked by the caller) keeps others out before the mode is set.
pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
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
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control requests until `shutdown`.
pub(crate) async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    mut shutdown: Shutdown,
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
            _ = shutdown.wait() => return,
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid => {}
            Ok(cred) => {
                tracing::warn!(
                    peer_uid = cred.uid(),
                    peer_pid = cred.pid(),
                    "refused a control connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot identify a control peer; refused");
                continue;
            }
        }
        let service = service.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(HANDLE_TIMEOUT, answer(stream, service))
                .await
                .is_err()
            {
                tracing::debug!("control request timed out");
            }
        });
    }
}

async fn answer<S: Service>(stream: UnixStream, service: Arc<S>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let answer: Answer = match tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => match proto::parse_request(&line) {
            Ok(req) => service.handle(req).await.into(),
            Err(e) => Answer::Err(e),
        },
        _ => Answer::Err(Failure::new(FailureKind::BadRequest, "no request received")),
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(&proto::line(&answer))).await;
}
