//! The local listener of the authorization-code sign-in: the browser's redirect from IAM Identity
//! Center comes back here (`http://127.0.0.1:PORT/oauth/callback?code=...&state=...`, RFC 8252
//! 7.3: a loopback redirect on a port of the client's choosing, which is why the registration names
//! the URI without a port).
//!
//! It binds a port of its own on 127.0.0.1 (port 0), answers the one redirect that carries this
//! sign-in's `state` with a short page, and ignores everything else a browser may send (a favicon
//! request, a stale tab of an earlier sign-in). Requests are read with a size cap and a time limit
//! each; the code is never logged and the request buffer is wiped.

use std::time::Duration;

use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroize;

use super::SsoError;
use super::oidc::{callback_code, loopback_redirect_uri};

/// The path the redirect URI names.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// Largest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;

/// How long one browser connection may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// A bound listener waiting for the browser.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    port: u16,
}

/// What one request from the browser was.
enum Received {
    /// The redirect of this sign-in: the code, or why the service refused.
    Done(Result<SecretString, SsoError>),
    /// Something else (answered and ignored).
    Other,
}

impl Loopback {
    /// Binds 127.0.0.1 on a free port.
    pub async fn bind() -> std::io::Result<Loopback> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        Ok(Loopback { listener, port })
    }

    /// The redirect URI of this listener (`http://127.0.0.1:PORT/oauth/callback`).
    pub fn redirect_uri(&self) -> String {
        loopback_redirect_uri(self.port)
    }

    /// Waits up to `timeout` for the redirect carrying `state`; returns its authorization code.
    /// An `error=access_denied` redirect is [`SsoError::AccessDenied`]; no redirect in time is
    /// [`SsoError::BrowserTimeout`].
    pub async fn wait_for_code(
        &self,
        state: &str,
        timeout: Duration,
    ) -> Result<SecretString, SsoError> {
        let wait = async {
            loop {
                let Ok((conn, _)) = self.listener.accept().await else {
                    continue;
                };
                if let Ok(Received::Done(result)) =
                    tokio::time::timeout(READ_LIMIT, answer(conn, state)).await
                {
                    return result;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(SsoError::BrowserTimeout {
                secs: timeout.as_secs(),
            }))
    }
}

/// Reads one request on `conn` and answers it.
async fn answer(mut conn: TcpStream, state: &str) -> Received {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
    buf.zeroize();
    let target = complete
        .then(|| request_target(&head))
        .flatten()
        .map(str::to_owned);
    head.zeroize();
    let Some(mut target) = target else {
        respond(
            &mut conn,
            "400 Bad Request",
            "credvend could not read this request.",
        )
        .await;
        return Received::Other;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let received = if path != CALLBACK_PATH {
        respond(&mut conn, "404 Not Found", "Nothing here.").await;
        Received::Other
    } else {
        match callback_code(query, state) {
            Ok(code) => {
                respond(
                    &mut conn,
                    "200 OK",
                    "Signed in to IAM Identity Center. You can close this window and return to credvend.",
                )
                .await;
                Received::Done(Ok(code))
            }
            // Another sign-in's redirect (a stale tab): not ours to end.
            Err(SsoError::Malformed { .. }) => {
                respond(
                    &mut conn,
                    "400 Bad Request",
                    "This sign-in link is not the one credvend is waiting for; use the newest one.",
                )
                .await;
                Received::Other
            }
            Err(e) => {
                respond(
                    &mut conn,
                    "200 OK",
                    "The sign-in did not succeed; see the credvend command for why.",
                )
                .await;
                Received::Done(Err(e))
            }
        }
    };
    target.zeroize();
    received
}

/// The request target of a `GET` request head.
fn request_target(head: &[u8]) -> Option<&str> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (method == "GET" && target.starts_with('/')).then_some(target)
}

/// Writes a small plain page and closes.
async fn respond(conn: &mut TcpStream, status: &str, text: &str) {
    let body =
        format!("<!doctype html><meta charset=\"utf-8\"><title>credvend</title><p>{text}</p>\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nreferrer-policy: no-referrer\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    async fn get(port: u16, target: &str) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn takes_only_the_redirect_of_this_sign_in() {
        let lb = Loopback::bind().await.unwrap();
        assert!(lb.redirect_uri().starts_with("http://127.0.0.1:"));
        assert!(lb.redirect_uri().ends_with(CALLBACK_PATH));
        let port = lb.port;
        let browser = tokio::spawn(async move {
            let a = get(port, "/favicon.ico").await;
            let b = get(port, "/oauth/callback?code=old&state=other").await;
            let c = get(port, "/oauth/callback?code=the-code&state=s1").await;
            (a, b, c)
        });
        let code = lb
            .wait_for_code("s1", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(code.expose_secret(), "the-code");
        let (a, b, c) = browser.await.unwrap();
        assert!(a.starts_with("HTTP/1.1 404"), "{a}");
        assert!(b.starts_with("HTTP/1.1 400"), "{b}");
        assert!(
            c.starts_with("HTTP/1.1 200") && c.contains("Signed in"),
            "{c}"
        );
    }

    #[tokio::test]
    async fn denial_and_timeout() {
        let lb = Loopback::bind().await.unwrap();
        let port = lb.port;
        let browser =
            tokio::spawn(
                async move { get(port, "/oauth/callback?error=access_denied&state=s").await },
            );
        let e = lb
            .wait_for_code("s", Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(e, SsoError::AccessDenied), "{e:?}");
        assert!(browser.await.unwrap().starts_with("HTTP/1.1 200"));
        let e = lb
            .wait_for_code("s", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, SsoError::BrowserTimeout { .. }), "{e:?}");
    }

    #[test]
    fn only_get_targets() {
        assert_eq!(
            request_target(b"GET /oauth/callback?x=1 HTTP/1.1\r\n\r\n"),
            Some("/oauth/callback?x=1")
        );
        assert_eq!(request_target(b"POST / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"GET http://x/ HTTP/1.1\r\n\r\n"), None);
    }
}
