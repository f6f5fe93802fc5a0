//! The one HTTP/1.1 framing reader of the test support: a message head up to the blank line, then
//! a body of `Content-Length` bytes. Used by the raw client (`raw.rs`) and by the test-side
//! servers (`sts_proxy.rs`, `fake_sts.rs`).

use tokio::io::{AsyncRead, AsyncReadExt};

/// One message off the wire.
#[derive(Debug)]
pub struct Message {
    /// The start line and header lines, without the blank line.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Message {
    /// Header lines as lower-cased names and trimmed values.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Reads one message from `r`, starting with the bytes already in `pending`; bytes read past
/// its end stay in `pending` (pipelined messages). `has_body` says from the head whether a body
/// follows at all (not after a HEAD request, not with 204/304). `None` on EOF or a read error
/// before the message is complete.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    pending: &mut Vec<u8>,
    has_body: impl Fn(&str) -> bool,
) -> Option<Message> {
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        fill(r, pending).await?;
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let len = if has_body(&head) {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().parse().expect("numeric Content-Length"))
            .unwrap_or(0)
    } else {
        0
    };
    while pending.len() < head_end + 4 + len {
        fill(r, pending).await?;
    }
    let rest = pending.split_off(head_end + 4 + len);
    let body = pending[head_end + 4..].to_vec();
    *pending = rest;
    Some(Message { head, body })
}

async fn fill<R: AsyncRead + Unpin>(r: &mut R, pending: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match r.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            pending.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
