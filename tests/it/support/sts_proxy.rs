//! A counting, fault-injecting front for moto: forwards each request's bytes unchanged (so SigV4
//! signatures, which cover the Host header, stay valid), counts STS actions and records the
//! answers. Fault modes make
//! it a mock; tests that use them say `fault` in their name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the next requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward to moto.
    Forward,
    /// Answer 500 with an STS error document.
    Fail500,
    /// Answer 400 Throttling.
    Throttle,
    /// Answer 403 InvalidClientTokenId, as STS does for a key IAM has not propagated yet.
    InvalidToken,
    /// Answer 200 with a body that is not XML.
    Garbage,
    /// Accept and never answer.
    Hang,
    /// Close the connection without answering.
    Close,
    /// Answer 200 with credentials that expired an hour ago, from a server whose clock (its
    /// `Date` header) is two hours behind ours.
    Expired,
    /// Count each request on arrival, then hold it until the mode changes, and treat it by the
    /// new mode (so a test can keep an STS call in flight for as long as it needs).
    Hold,
}

/// One request to hold whatever the mode: the `n`-th (1-based) request of `action`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HoldAt {
    action: String,
    n: usize,
}

/// The proxy; stops when dropped. It runs on a runtime thread of its own, so a test that blocks
/// its own thread (waiting for a `credvend` child process) cannot starve it.
pub struct StsProxy {
    /// Listening address.
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    responses: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    mode: Arc<watch::Sender<Mode>>,
    hold_at: Arc<Mutex<Option<HoldAt>>>,
    released: Arc<watch::Sender<Option<Mode>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for StsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("?")
        .to_owned()
}

async fn read_request(sock: &mut TcpStream) -> Option<super::framing::Message> {
    super::framing::read_message(sock, &mut Vec::new(), |_| true).await
}

/// An AssumeRole answer whose credentials expired an hour ago, sent with a `Date` two hours
/// behind.
fn expired_answer() -> String {
    use time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let expired = (now - time::Duration::hours(1)).format(&Rfc3339).unwrap();
    let date = (now - time::Duration::hours(2))
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    let body = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
         <Credentials><AccessKeyId>ASIAEXPIRED00EXAMPLE</AccessKeyId><SecretAccessKey>expired</SecretAccessKey>\
         <SessionToken>expired-token</SessionToken><Expiration>{expired}</Expiration></Credentials>\
         <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>\
         </AssumeRoleResult><ResponseMetadata><RequestId>proxy</RequestId></ResponseMetadata></AssumeRoleResponse>"
    );
    format!(
        "HTTP/1.1 200 OK\r\ndate: {date}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl StsProxy {
    /// Starts a proxy in front of `upstream` (e.g. moto's `http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> StsProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let responses = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(watch::channel(Mode::Forward).0);
        let hold_at: Arc<Mutex<Option<HoldAt>>> = Arc::new(Mutex::new(None));
        let released = Arc::new(watch::channel(None::<Mode>).0);
        let (c, r, m) = (counts.clone(), responses.clone(), mode.clone());
        let (q, h, rel) = (requests.clone(), hold_at.clone(), released.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve = async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (c, r, m) = (c.clone(), r.clone(), m.clone());
                let (q, h, rel) = (q.clone(), h.clone(), rel.clone());
                tokio::spawn(async move {
                    // One request per connection: answers say `connection: close`.
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    let action = action_of(&req.body);
                    q.lock().unwrap().push((
                        action.clone(),
                        format!("{}\r\n\r\n{}", req.head, String::from_utf8_lossy(&req.body)),
                    ));
                    let nth = {
                        let mut counts = c.lock().unwrap();
                        let n = counts.entry(action.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let held = h.lock().unwrap().as_ref()
                        == Some(&HoldAt {
                            action: action.clone(),
                            n: nth,
                        });
                    let mode = if held {
                        let mut rx = rel.subscribe();
                        let Ok(mode) = rx.wait_for(Option::is_some).await else {
                            return;
                        };
                        mode.expect("released")
                    } else {
                        let mut rx = m.subscribe();
                        let Ok(mode) = rx.wait_for(|m| *m != Mode::Hold).await else {
                            return;
                        };
                        *mode
                    };
                    let canned = |status: &str, body: &str| {
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let err = |code: &str| {
                        format!(
                            "<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>injected</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"
                        )
                    };
                    match mode {
                        Mode::Forward => {
                            let Ok(mut up) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            // Ask moto to close after answering so the copy below ends.
                            let text = req.head.replacen("\r\n", "\r\nconnection: close\r\n", 1);
                            let mut out = text.into_bytes();
                            out.extend_from_slice(b"\r\n\r\n");
                            out.extend_from_slice(&req.body);
                            if up.write_all(&out).await.is_err() {
                                return;
                            }
                            // Copy the answer through, recording each chunk before the
                            // client can see it.
                            let slot = {
                                let mut r = r.lock().unwrap();
                                r.push(String::new());
                                r.len() - 1
                            };
                            let mut chunk = [0u8; 8192];
                            loop {
                                match up.read(&mut chunk).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        r.lock().unwrap()[slot]
                                            .push_str(&String::from_utf8_lossy(&chunk[..n]));
                                        if sock.write_all(&chunk[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                        Mode::Fail500 => {
                            let _ = sock
                                .write_all(
                                    canned("500 Internal Server Error", &err("InternalFailure"))
                                        .as_bytes(),
                                )
                                .await;
                        }
                        Mode::Throttle => {
                            let _ = sock
                                .write_all(canned("400 Bad Request", &err("Throttling")).as_bytes())
                                .await;
                        }
                        Mode::InvalidToken => {
                            let _ = sock
                                .write_all(
                                    canned("403 Forbidden", &err("InvalidClientTokenId"))
                                        .as_bytes(),
                                )
                                .await;
                        }
                        Mode::Garbage => {
                            let _ = sock
                                .write_all(canned("200 OK", "<<<not xml").as_bytes())
                                .await;
                        }
                        Mode::Expired => {
                            let _ = sock.write_all(expired_answer().as_bytes()).await;
                        }
                        Mode::Hang => std::future::pending::<()>().await,
                        Mode::Close | Mode::Hold => {}
                    }
                });
            }
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        StsProxy {
            addr,
            counts,
            responses,
            requests,
            mode,
            hold_at,
            released,
            stop: Some(stop),
        }
    }

    /// The proxy's URL, to use as `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen for `action`.
    pub fn count(&self, action: &str) -> usize {
        self.counts
            .lock()
            .unwrap()
            .get(action)
            .copied()
            .unwrap_or(0)
    }

    /// The raw upstream answers forwarded so far (status line, headers and body), oldest first;
    /// whatever a client has received is already in here.
    pub fn responses(&self) -> Vec<String> {
        self.responses.lock().unwrap().clone()
    }

    /// The requests seen so far (request line, headers, blank line, body), with their action,
    /// oldest first.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// Holds the `n`-th (1-based, counting from the proxy's start) request of `action` on
    /// arrival, whatever the mode, until [`StsProxy::release`]; every other request follows the
    /// mode. So a test can stop a client at exactly one call of a sequence.
    pub fn hold_nth(&self, action: &str, n: usize) {
        *self.hold_at.lock().unwrap() = Some(HoldAt {
            action: action.to_owned(),
            n,
        });
    }

    /// Lets the request held by [`StsProxy::hold_nth`] proceed as `mode` says (`Forward`:
    /// upstream sees it; `Close`: it is dropped unanswered, upstream never sees it).
    pub fn release(&self, mode: Mode) {
        self.released.send_replace(Some(mode));
    }

    /// Sets the fault mode (held requests then proceed by the new mode).
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Waits (bounded) until at least `n` requests for `action` have arrived; the count, not
    /// the time, is the synchronisation. False on timeout.
    pub async fn wait_count(&self, action: &str, n: usize, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.count(action) >= n {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.count(action) >= n
    }
}

/// The value of `name` in the form-encoded body of `request` (as [`StsProxy::requests`] returns
/// it), percent- and `+`-decoded; `None` when the body has no such parameter.
pub fn form_param(request: &str, name: &str) -> Option<String> {
    let body = request.split_once("\r\n\r\n").map_or(request, |(_, b)| b);
    let raw = body
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("a percent escape"));
            }
            b => out.push(b),
        }
    }
    Some(String::from_utf8(out).expect("UTF-8"))
}
