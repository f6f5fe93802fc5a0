//! A scripted fake STS for fault injection (a mock: tests using it say `fake_sts` in their name).
//!
//! Raw TCP + hand-written HTTP/1.1 so it can misbehave in ways a real server library would not let
//! it: hang before the headers, stop in the middle of a body, send 10 MB.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use credvend::creds::LongTermKey;
use credvend::sts::{ClientOptions, RetryPolicy};
use secrecy::SecretString;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The long-term key the clients under test sign with (the fake checks no signature).
pub fn key() -> LongTermKey {
    LongTermKey {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("fake-secret".to_owned()),
    }
}

/// Client options with `timeout` and four attempts, backing off 10..40 ms, so retry tests are
/// quick.
pub fn fast_retry(timeout: std::time::Duration) -> ClientOptions {
    ClientOptions {
        timeout,
        retry: RetryPolicy {
            max_attempts: 4,
            base: std::time::Duration::from_millis(10),
            cap: std::time::Duration::from_millis(40),
        },
        ..ClientOptions::default()
    }
}

/// What the fake does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer with this status and body.
    Status(u16, String),
    /// Never answer.
    Hang,
    /// Send headers promising a body, part of it, then stall forever.
    HangMidBody,
    /// A 200 with a body of this many bytes.
    Huge(usize),
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The raw request head.
    pub head: String,
    /// The body.
    pub body: String,
}

/// The fake server; dropped servers stop accepting.
pub struct FakeSts {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSts {
    /// Starts the fake on a free loopback port. Replies are used in order; when the script runs
    /// out, the last reply repeats.
    pub async fn start(script: Vec<Reply>) -> FakeSts {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (script.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let Some(m) =
                        super::framing::read_message(&mut sock, &mut Vec::new(), |_| true).await
                    else {
                        return;
                    };
                    let (head, body) = (m.head, String::from_utf8_lossy(&m.body).into_owned());
                    r.lock().unwrap().push(Seen { head, body });
                    let reply = {
                        let mut q = s.lock().unwrap();
                        if q.len() > 1 {
                            q.pop_front().unwrap()
                        } else {
                            q.front().cloned().unwrap_or(Reply::Hang)
                        }
                    };
                    match reply {
                        Reply::Status(code, body) => {
                            let resp = format!(
                                "HTTP/1.1 {code} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                        }
                        Reply::Hang => std::future::pending::<()>().await,
                        Reply::HangMidBody => {
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: 1000\r\n\r\n<GetCallerIdentityResponse>")
                                .await;
                            std::future::pending::<()>().await
                        }
                        Reply::Huge(n) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: {n}\r\n\r\n"
                            );
                            let _ = sock.write_all(head.as_bytes()).await;
                            let block = vec![b'x'; 64 * 1024];
                            let mut left = n;
                            while left > 0 {
                                let k = left.min(block.len());
                                if sock.write_all(&block[..k]).await.is_err() {
                                    return;
                                }
                                left -= k;
                            }
                        }
                    }
                });
            }
        });
        FakeSts {
            addr,
            script,
            seen,
            task,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Replaces the remaining script.
    pub fn set_script(&self, script: Vec<Reply>) {
        *self.script.lock().unwrap() = VecDeque::from(script);
    }
}

/// A well-formed `GetCallerIdentity` response.
pub fn caller_identity_xml() -> String {
    "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
     <Arn>arn:aws:iam::123456789012:user/fake</Arn><UserId>AIDAFAKE</UserId><Account>123456789012</Account>\
     </GetCallerIdentityResult><ResponseMetadata><RequestId>fake-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
        .to_owned()
}

/// An STS error document.
pub fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>fake-err</RequestId></ErrorResponse>"
    )
}
