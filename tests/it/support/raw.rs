//! HTTP/1.1 over a plain TCP socket, byte for byte: for requests no well-behaved client library
//! would send (foreign `Host`, absolute-form targets, bare LF, garbage, pipelining) and for
//! checking what exactly comes back on the wire (header names, `Content-Length`, closed
//! connections). Every read is bounded, so a hang fails the test instead of stalling it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest time any single exchange may take before the test calls it a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// A response as it came off the wire.
#[derive(Debug)]
pub struct RawResp {
    /// Status code.
    pub status: u16,
    /// Header lines in wire order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body (empty for HEAD).
    pub body: Vec<u8>,
}

impl RawResp {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the server did with a request.
#[derive(Debug)]
pub enum Outcome {
    /// It answered.
    Answered(RawResp),
    /// It closed (or reset) the connection without a complete answer.
    Closed,
}

impl Outcome {
    /// The response; panics (naming `what`) when the connection was closed instead.
    pub fn answered(self, what: &str) -> RawResp {
        match self {
            Outcome::Answered(r) => r,
            Outcome::Closed => panic!("{what}: the connection was closed without an answer"),
        }
    }

    /// The status, or `None` when the connection was closed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answered(r) => Some(r.status),
            Outcome::Closed => None,
        }
    }
}

/// Builds a request head. `host` is sent as given (`None`: no `Host` header at all).
pub fn request(
    method: &str,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    if let Some(h) = host {
        out.push_str(&format!("Host: {h}\r\n"));
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Connects to `addr` (bounded by [`HANG`]).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(HANG, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} hung"))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// Sends `bytes` on a fresh connection and reads one response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut s = connect(addr).await;
    send_on(&mut s, bytes).await
}

/// Sends `bytes` on `s` and reads one response (a HEAD request gets no body).
pub async fn send_on(s: &mut TcpStream, bytes: &[u8]) -> Outcome {
    // The server may close before taking everything (e.g. oversized heads); what it answered
    // before closing is still read.
    let _ = s.write_all(bytes).await;
    read_response(s, bytes.starts_with(b"HEAD ")).await
}

/// Reads one response from `s`; `Closed` on EOF or reset before it is complete.
pub async fn read_response(s: &mut TcpStream, head_request: bool) -> Outcome {
    tokio::time::timeout(HANG, read_response_unbounded(s, head_request))
        .await
        .expect("the daemon neither answered nor closed the connection (hang)")
}

async fn read_response_unbounded(s: &mut TcpStream, head_request: bool) -> Outcome {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or(0);
    let want = if head_request || status == 204 || status == 304 {
        0
    } else {
        len
    };
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < want {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(want);
    Outcome::Answered(RawResp {
        status,
        headers,
        body,
    })
}

/// Waits until the server closes `s` (EOF or reset), discarding anything it sends; `false` if
/// it is still open after `limit`.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let drain = async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}
