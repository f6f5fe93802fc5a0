//! The HTTP edge shared by the IMDS and ECS endpoints: an accept loop that never waits for a free
//! slot (the connection budget and who may hold what: [`super::conns`]), a first-byte deadline,
//! hyper HTTP/1.1 with header size and header-read-time limits, the request guards of the
//! security invariants (Host required and allowlisted, browser headers, the peer's uid or
//! address), graceful shutdown.
//!
//! Architecture invariant: nothing here (or in the handlers) calls STS or the keyring. Handlers
//! read pre-rendered bodies from [`super::state::ProfileCell`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::conns::{Access, Peer, Registry, Ticket, access};
use super::metrics::{ConnRefused, ListenerStats, OpenConn};
use crate::config::Limits;
use crate::shutdown::Shutdown;

/// How long a new connection of anyone but the daemon's own user may take to send its first
/// byte. SDKs send their request as soon as they are connected; anything slower is not an SDK,
/// and gets no slot for long. Below the SDKs' 1 s timeouts. (The user's own clients, which may
/// be slow on a loaded machine, are bounded by the header timeout only.)
const FIRST_BYTE: std::time::Duration = std::time::Duration::from_millis(800);

/// The parts of a request the handlers look at.
#[derive(Debug)]
pub struct Head {
    /// Method.
    pub method: Method,
    /// Path (no query).
    pub path: String,
    /// Authority of an absolute-form target (`GET http://host:port/path`). When present it names
    /// the target host instead of `Host` (RFC 9112 section 3.2.2), so the guards check it too.
    pub authority: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Peer address.
    pub peer: SocketAddr,
    /// Who the peer is (its uid on this machine, else its address): what routes match.
    pub who: Peer,
    /// The connection's audit trail.
    pub audit: std::sync::Arc<super::audit::ConnAudit>,
}

impl Head {
    /// A header as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Records this request as refused by `endpoint`'s own checks for `reason` (counted, and an
    /// access line with its User-Agent and path: see `ConnAudit::refused_request`).
    pub fn refused(&self, endpoint: &'static str, profile: &str, reason: &'static str) {
        let user_agent = self.header("user-agent").unwrap_or("-");
        self.audit
            .refused_request(endpoint, profile, user_agent, reason, &self.path);
    }
}

/// A response before the common headers are added.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body (omitted on the wire for HEAD).
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// A reply with a body and content type.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// Why a request was refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request has no `Host` header (HTTP/1.1 requires one).
    NoHost,
    /// The `Host` header names something other than this listener (DNS rebinding).
    ForeignHost,
    /// The request carries browser headers (`Origin`, `Referer`, `Sec-Fetch-*`).
    BrowserRequest,
    /// The peer is outside the allow list (which a reload changed while its connection was open).
    PeerNotAllowed,
    /// A local client running as a user other than the daemon's, not in `allow_uids`.
    UserNotAllowed,
    /// A local client whose user could not be found.
    UserUnknown,
    /// The listener has routes and none names this client (`daemon/routes.rs`).
    NoRoute,
}

impl Refusal {
    /// Text for the response and the log.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoHost => "a request needs a Host header",
            Refusal::ForeignHost => {
                "the Host header does not name this endpoint; requests through other names are refused (DNS rebinding protection)"
            }
            Refusal::BrowserRequest => "requests from web browsers are refused",
            Refusal::PeerNotAllowed => "this address is not in the endpoint's allow list",
            Refusal::UserNotAllowed => {
                "this endpoint serves only the user credvend runs as (and the users its allow_uids names)"
            }
            Refusal::UserUnknown => {
                "the user of this connection could not be determined, so it is refused"
            }
            Refusal::NoRoute => {
                "no route of this endpoint names this client (its address, or its user on this machine), so it gets no credentials"
            }
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// Which `Host` header values a listener accepts.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// Accepts the listener's own address, `localhost`, the AWS link-local metadata names, and the
    /// configured `extra` names; each with or without the listener's port.
    pub fn new(listen: SocketAddr, extra: &[String]) -> HostPolicy {
        let mut names: Vec<String> = vec![
            "localhost".into(),
            "169.254.169.254".into(),
            "169.254.170.2".into(),
            "169.254.170.23".into(),
            "[fd00:ec2::254]".into(),
            "[fd00:ec2::23]".into(),
        ];
        match listen.ip() {
            IpAddr::V4(ip) => names.push(ip.to_string()),
            IpAddr::V6(ip) => names.push(format!("[{ip}]")),
        }
        if listen.ip().is_loopback() || listen.ip().is_unspecified() {
            names.push("127.0.0.1".into());
            names.push("[::1]".into());
        }
        names.extend(extra.iter().map(|n| n.to_ascii_lowercase()));
        HostPolicy { names }
    }

    /// Whether `host` (a `Host` header value) is acceptable. `port` is the listener's port.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let (name, host_port) = split_host_port(host);
        if let Some(p) = host_port
            && p != port
            && !(p == 80
                && matches!(
                    name,
                    "169.254.169.254"
                        | "[fd00:ec2::254]"
                        | "169.254.170.2"
                        | "169.254.170.23"
                        | "[fd00:ec2::23]"
                ))
        {
            // A port other than ours only makes sense through DNAT of the well-known addresses.
            return false;
        }
        self.names.iter().any(|n| n == name)
    }
}

fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        return match host.find("]:") {
            Some(i) => (&host[..=i], host[i + 2..].parse().ok().or(Some(0))),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse().unwrap_or(0))),
        None => (host, None),
    }
}

/// The guards every request passes before routing: no browser headers, and exactly one `Host`
/// naming this listener (as does the authority of an absolute-form target).
pub fn check_request(head: &Head, hosts: &HostPolicy, port: u16) -> Result<(), Refusal> {
    for name in ["origin", "referer"] {
        if head.headers.contains_key(name) {
            return Err(Refusal::BrowserRequest);
        }
    }
    if head
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("sec-fetch-"))
    {
        return Err(Refusal::BrowserRequest);
    }
    if let Some(authority) = &head.authority
        && !hosts.allows(authority, port)
    {
        return Err(Refusal::ForeignHost);
    }
    let mut host_headers = head.headers.get_all(hyper::header::HOST).iter();
    let Some(host) = host_headers.next() else {
        return Err(Refusal::NoHost);
    };
    let ok = host
        .to_str()
        .map(|h| hosts.allows(h, port))
        .unwrap_or(false);
    if !ok || host_headers.next().is_some() {
        return Err(Refusal::ForeignHost);
    }
    Ok(())
}

/// What a listener does with a request that passed the guards.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. May wait briefly on a cold start, never on STS.
    fn handle(&self, head: Head) -> impl std::future::Future<Output = Reply> + Send;
    /// Turns a refusal into this endpoint's error shape.
    fn refuse(&self, refusal: Refusal) -> Reply;
}

/// Settings of one accept loop.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Remote peers allowed.
    pub allow: Vec<IpNet>,
    /// Local users allowed besides the daemon's own.
    pub allow_uids: Vec<u32>,
    /// Accepted `Host` names.
    pub hosts: HostPolicy,
    /// Limits.
    pub limits: Limits,
    /// IP TTL / hop limit for responses, when set.
    pub hop_limit: Option<u8>,
    /// Headers added to every response (e.g. `Server: EC2ws`).
    pub common_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What every connection of one listener shares.
struct Shared<H> {
    /// The handler, read per request so a reload reaches open keep-alive connections too.
    handler: watch::Receiver<Arc<H>>,
    /// The options, read per request for the same reason.
    options: watch::Receiver<Arc<ServeOptions>>,
    /// The listener's port (for the `Host` check).
    port: u16,
    /// The daemon's uid.
    me: u32,
    /// The connection budget.
    registry: Arc<Registry>,
    /// Stops every connection.
    shutdown: Shutdown,
    /// Every connection task holds a clone; when all are gone, draining is done.
    alive: tokio::sync::mpsc::Sender<()>,
    /// The listener's counters (kept across reloads by the listener, not by this loop).
    stats: Arc<ListenerStats>,
}

/// Serves `listener` until `shutdown` fires, then stops accepting, lets in-flight requests
/// finish, and returns once every connection has closed. The handler and options are read per
/// request, so a reload can swap them without rebinding. The loop accepts as fast as
/// connections arrive: a connection that gets no place in the budget is closed at once rather
/// than left in the kernel's queue ahead of real clients. Connections and refusals are counted
/// in `stats`.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: watch::Receiver<Arc<H>>,
    options: watch::Receiver<Arc<ServeOptions>>,
    shutdown: Shutdown,
    stats: Arc<ListenerStats>,
) {
    let max = options.borrow().limits.max_connections;
    let bound = listener.local_addr().ok();
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let me = crate::paths::current_uid();
    let shared = Arc::new(Shared {
        handler,
        options,
        port: bound.map_or(0, |a| a.port()),
        me,
        registry: Registry::new(max, me),
        shutdown: shutdown.clone(),
        alive,
        stats,
    });
    let mut stop = shutdown;
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = stop.wait() => break,
        };
        if let Some((stream, peer)) = accepted {
            admit(&shared, stream, peer);
        }
    }
    // Close the socket before draining: new connections are refused at once rather than queued
    // in the backlog of a listener that will never accept them.
    drop(listener);
    if let Some(address) = bound {
        tracing::info!(%address, "stopped listening");
    }
    drop(shared);
    let _ = drained.recv().await;
}

/// The next connection; `None` after an accept error (EMFILE and friends), having backed off
/// instead of spinning.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            None
        }
    }
}

/// Identifies the peer of a new connection, finds it a place in the budget, and starts serving
/// it; closes it when it may not connect at all or has no place.
fn admit<H: Handler>(shared: &Arc<Shared<H>>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let opts = shared.options.borrow().clone();
    let local = stream.local_addr().ok();
    let who = Peer::identify(peer, local);
    let access = access(who, &opts.allow, &opts.allow_uids, shared.me);
    if access == Access::Closed {
        shared.stats.conn_refused(ConnRefused::NotAllowed);
        tracing::warn!(%peer, "refused a connection from a peer outside the allow list");
        return;
    }
    let Some(ticket) = shared.registry.admit(who, access) else {
        shared.stats.conn_refused(ConnRefused::NoRoom);
        tracing::debug!(%peer, peer_uid = who.uid(), "no room for another connection of this peer; closed");
        return;
    };
    let _ = stream.set_nodelay(true);
    if let Some(ttl) = opts.hop_limit {
        set_hop_limit(&stream, peer, ttl);
    }
    let conn = Conn {
        shared: shared.clone(),
        peer,
        who,
        audit: super::audit::ConnAudit::counted(
            local.unwrap_or(peer),
            peer,
            who.uid(),
            shared.stats.clone(),
        ),
        ticket,
        _open: shared.stats.opened(),
    };
    tokio::spawn(conn.run(stream, opts.limits));
}

/// One client connection.
struct Conn<H> {
    shared: Arc<Shared<H>>,
    peer: SocketAddr,
    who: Peer,
    audit: Arc<super::audit::ConnAudit>,
    ticket: Ticket,
    /// Counts the connection as open until it ends.
    _open: OpenConn,
}

impl<H: Handler> Conn<H> {
    async fn run(self, stream: tokio::net::TcpStream, limits: Limits) {
        let _alive = self.shared.alive.clone();
        let evicted = self.ticket.evicted.clone();
        if self.who.uid() != Some(self.shared.me) {
            let mut first = [0u8; 1];
            tokio::select! {
                first = tokio::time::timeout(FIRST_BYTE, stream.peek(&mut first)) => match first {
                    Ok(Ok(1..)) => {}
                    _ => return,
                },
                _ = evicted.notified() => return,
            }
        }
        let mut shutdown = self.shared.shutdown.clone();
        let this = Arc::new(self);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.answer(req).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = shutdown.wait() => {}
            // Evicted while idle (between requests, or a head still arriving): closed at once.
            // A graceful shutdown would wait out a slow client's header timeout, and under a
            // flood those connections, their buffers and sockets would pile up meanwhile.
            _ = evicted.notified() => return,
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }

    /// Guards, then the handler.
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.ticket.busy();
        let handler = self.shared.handler.borrow().clone();
        let opts = self.shared.options.borrow().clone();
        let (parts, _body) = req.into_parts();
        let head = Head {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
            headers: parts.headers,
            peer: self.peer,
            who: self.who,
            audit: self.audit.clone(),
        };
        let checked = match access(self.who, &opts.allow, &opts.allow_uids, self.shared.me) {
            Access::Allowed => check_request(&head, &opts.hosts, self.shared.port),
            Access::Refused(r) => Err(r),
            Access::Closed => Err(Refusal::PeerNotAllowed),
        };
        let reply = match checked {
            Ok(()) => handler.handle(head).await,
            Err(refusal) => {
                self.audit.refused_peer(refusal, &head.path);
                handler.refuse(refusal)
            }
        };
        self.ticket.idle();
        into_response(reply, &opts.common_headers)
    }
}

fn into_response(reply: Reply, common: &[(HeaderName, HeaderValue)]) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    for (k, v) in common {
        h.insert(k.clone(), v.clone());
    }
    for (k, v) in reply.headers {
        h.insert(k, v);
    }
    resp
}

fn set_hop_limit(stream: &tokio::net::TcpStream, peer: SocketAddr, ttl: u8) {
    let sock = socket2::SockRef::from(stream);
    let result = if peer.is_ipv4() || peer.ip().to_canonical().is_ipv4() {
        sock.set_ttl_v4(u32::from(ttl))
    } else {
        sock.set_unicast_hops_v6(u32::from(ttl))
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not set the response hop limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, host: Option<&str>) -> Head {
        let uri: hyper::Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(hyper::header::HOST, HeaderValue::from_str(h).unwrap());
        }
        Head {
            method: Method::GET,
            path: uri.path().to_owned(),
            authority: uri.authority().map(|a| a.as_str().to_owned()),
            headers,
            peer: "127.0.0.1:40000".parse().unwrap(),
            who: Peer::Local { uid: 0 },
            audit: crate::daemon::audit::ConnAudit::new(
                "127.0.0.1:9254".parse().unwrap(),
                "127.0.0.1:40000".parse().unwrap(),
                Some(0),
            ),
        }
    }

    #[test]
    fn absolute_form_authority_must_name_the_listener() {
        let hosts = HostPolicy::new("127.0.0.1:9254".parse().unwrap(), &[]);
        let check = |target, host| check_request(&head(target, host), &hosts, 9254);
        assert_eq!(check("/latest/meta-data/", Some("127.0.0.1:9254")), Ok(()));
        assert_eq!(
            check("http://127.0.0.1:9254/latest/", Some("127.0.0.1:9254")),
            Ok(())
        );
        assert_eq!(check("http://localhost/latest/", Some("localhost")), Ok(()));
        assert_eq!(check("/latest/", None), Err(Refusal::NoHost));
        assert_eq!(
            check("http://localhost/latest/", None),
            Err(Refusal::NoHost),
            "HTTP/1.1 needs Host even with an absolute target"
        );
        for target in [
            "http://evil.example:9254/latest/",
            "http://evil.example/latest/",
            "http://user@127.0.0.1:9254/latest/",
            "http://127.0.0.1:1/latest/",
        ] {
            assert_eq!(
                check(target, Some("127.0.0.1:9254")),
                Err(Refusal::ForeignHost),
                "{target}"
            );
        }
        assert_eq!(
            check("/latest/", Some("evil.example:9254")),
            Err(Refusal::ForeignHost)
        );
    }
}
