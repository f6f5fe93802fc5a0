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

/// A connection to the daemon. Bytes read past the end of one response (pipelined answers
/// arriving together) are kept for the next [`read_response`].
pub struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Conn {
    /// Writes `bytes` as they are.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

/// Connects to `addr` (bounded by [`HANG`]).
pub async fn connect(addr: SocketAddr) -> Conn {
    let stream = tokio::time::timeout(HANG, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} hung"))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    Conn {
        stream,
        pending: Vec::new(),
    }
}

/// Sends `bytes` on a fresh connection and reads one response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut c = connect(addr).await;
    send_on(&mut c, bytes).await
}

/// Sends `bytes` on `c` and reads one response (a HEAD request gets no body).
pub async fn send_on(c: &mut Conn, bytes: &[u8]) -> Outcome {
    // The server may close before taking everything (e.g. oversized heads); what it answered
    // before closing is still read.
    let _ = c.write_all(bytes).await;
    read_response(c, bytes.starts_with(b"HEAD ")).await
}

/// Reads one response from `c`; `Closed` on EOF or reset before it is complete.
pub async fn read_response(c: &mut Conn, head_request: bool) -> Outcome {
    tokio::time::timeout(HANG, read_response_unbounded(c, head_request))
        .await
        .expect("the daemon neither answered nor closed the connection (hang)")
}

async fn read_response_unbounded(c: &mut Conn, head_request: bool) -> Outcome {
    let status = |head: &str| -> u16 {
        let line = head.split("\r\n").next().unwrap_or_default();
        line.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"))
    };
    let has_body = |head: &str| !head_request && !matches!(status(head), 204 | 304);
    match super::framing::read_message(&mut c.stream, &mut c.pending, has_body).await {
        None => Outcome::Closed,
        Some(m) => Outcome::Answered(RawResp {
            status: status(&m.head),
            headers: m.headers(),
            body: m.body,
        }),
    }
}

/// Waits until the server closes `c` (EOF or reset), discarding anything it sends; `false` if
/// it is still open after `limit`.
pub async fn closed_within(c: &mut Conn, limit: Duration) -> bool {
    let drain = async {
        let mut chunk = [0u8; 4096];
        while let Ok(1..) = c.stream.read(&mut chunk).await {}
        c.pending.clear();
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}
