//! Hostile input against the real `credvend serve`: DNS rebinding, browser requests, forwarded
//! token requests, oversized heads, slow and idle clients, connection floods, wrong container
//! tokens, garbage bytes and request smuggling. Each case asserts what the daemon did with the
//! bad input (a status, or a closed connection) and that a well-behaved client is served
//! afterwards.
//!
//! Not here: the peer allowlist. Loopback peers are always allowed, so refusing a peer needs a
//! second network namespace (the network-namespace tests).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::support::http;
use crate::support::raw::{self, Outcome};
use crate::support::served::{ROLE_CREDS, ROLE_TOML, Served, rss_kib};

const TOKEN: &str = "x-aws-ec2-metadata-token";
const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// A well-behaved IMDSv2 client and a well-behaved container client both get credentials.
async fn assert_still_serves(s: &Served) {
    let token = http::token(s.imds(), 60).await;
    let r = http::get(s.imds(), ROLE_CREDS, &token).await;
    assert_eq!(r.status, 200, "IMDS after hostile input: {}", r.body);
    assert_eq!(r.json()["Code"], "Success");
    let e = http::ecs_get(s.ecs(), "role", Some(&s.ecs_token("role"))).await;
    assert_eq!(e.status, 200, "ECS after hostile input: {}", e.body);
    assert!(e.json()["AccessKeyId"].is_string());
}

/// `ROLE_TOML` with a `[limits]` section appended.
fn with_limits(limits: &str) -> String {
    format!("{ROLE_TOML}[limits]\n{limits}\n")
}

/// A GET of the IMDS credentials with a token, `Host` as given, and extra headers.
fn imds_get(token: &str, host: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![(TOKEN, token)];
    headers.extend_from_slice(extra);
    raw::request("GET", ROLE_CREDS, host, &headers)
}

/// A GET of the ECS credentials of `role` with its token, `Host` as given, and extra headers.
fn ecs_get(token: &str, host: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![("Authorization", token)];
    headers.extend_from_slice(extra);
    raw::request("GET", "/credentials/role", host, &headers)
}

/// A `Host` naming another site (DNS rebinding: `evil.example` resolving to 127.0.0.1), or our
/// address with another port, or two `Host` headers, is a 403 on both endpoints, token PUT
/// included; the listener's own address, `localhost` and the AWS link-local names are accepted.
#[tokio::test]
async fn hostile_foreign_host_header_is_refused_on_both_endpoints() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let ecs_token = s.ecs_token("role");
    for (addr, port) in [(s.imds(), s.imds().port()), (s.ecs(), s.ecs().port())] {
        let is_imds = addr == s.imds();
        let build = |host: &str| -> Vec<u8> {
            if is_imds {
                imds_get(&token, Some(host), &[])
            } else {
                ecs_get(&ecs_token, Some(host), &[])
            }
        };
        for host in [
            format!("evil.example:{port}"),
            "evil.example".to_owned(),
            format!("localhost.evil.example:{port}"),
            format!("127.0.0.1.evil.example:{port}"),
            "127.0.0.1:1".to_owned(),
            format!("10.0.0.1:{port}"),
            String::new(),
        ] {
            let r = raw::exchange(addr, &build(&host)).await.answered(&host);
            assert_eq!(r.status, 403, "{addr} Host {host:?}: {}", r.text());
            if !is_imds {
                assert_eq!(r.header("content-type"), Some("application/json"));
            }
        }
        let mut twice = build(&addr.to_string());
        let at = twice.len() - 2;
        twice.splice(
            at..at,
            format!("Host: evil.example:{port}\r\n").into_bytes(),
        );
        let r = raw::exchange(addr, &twice).await.answered("two Hosts");
        assert_eq!(r.status, 403, "{addr}: two Host headers");

        let link_local = if is_imds {
            "169.254.169.254"
        } else {
            "169.254.170.2"
        };
        for host in [
            addr.to_string(),
            format!("localhost:{port}"),
            "localhost".to_owned(),
            "LOCALHOST.".to_owned(),
            link_local.to_owned(),
            format!("{link_local}:80"),
            format!("[::1]:{port}"),
        ] {
            let r = raw::exchange(addr, &build(&host)).await.answered(&host);
            assert_eq!(r.status, 200, "{addr} Host {host:?}: {}", r.text());
        }
    }
    let put = raw::request(
        "PUT",
        "/latest/api/token",
        Some(&format!("evil.example:{}", s.imds().port())),
        &[(TTL, "60")],
    );
    let r = raw::exchange(s.imds(), &put).await.answered("token PUT");
    assert_eq!(r.status, 403, "no token through a rebound name");
    assert_still_serves(&s).await;
}

/// An absolute-form request target names its host in the URI, which then overrides `Host`
/// (RFC 9112 section 3.2.2): a foreign authority there is refused like a foreign `Host`, and
/// the listener's own authority is served.
#[tokio::test]
async fn hostile_absolute_form_target_with_foreign_authority_is_refused() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let imds = s.imds();
    let own = imds.to_string();
    let absolute = |authority: &str, method: &str, path: &str, headers: &[(&str, &str)]| {
        raw::request(
            method,
            &format!("http://{authority}{path}"),
            Some(&own),
            headers,
        )
    };
    let evil = format!("evil.example:{}", imds.port());
    for req in [
        absolute(&evil, "GET", ROLE_CREDS, &[(TOKEN, &token)]),
        absolute(&evil, "PUT", "/latest/api/token", &[(TTL, "60")]),
        absolute(
            &format!("user@{own}"),
            "GET",
            ROLE_CREDS,
            &[(TOKEN, &token)],
        ),
    ] {
        let r = raw::exchange(imds, &req).await.answered("absolute form");
        assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&req));
    }
    let ecs = s.ecs();
    let req = raw::request(
        "GET",
        &format!("http://evil.example:{}/credentials/role", ecs.port()),
        Some(&ecs.to_string()),
        &[("Authorization", &s.ecs_token("role"))],
    );
    let r = raw::exchange(ecs, &req).await.answered("ECS absolute form");
    assert_eq!(r.status, 403);

    let ok = absolute(&own, "GET", ROLE_CREDS, &[(TOKEN, &token)]);
    let r = raw::exchange(imds, &ok).await.answered("own authority");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_still_serves(&s).await;
}

/// Requests carrying browser headers (`Origin`, `Referer`, `Sec-Fetch-*`) are refused with 403 on
/// both endpoints, token PUT included, even with valid tokens.
#[tokio::test]
async fn hostile_browser_headers_are_refused_on_both_endpoints() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let ecs_token = s.ecs_token("role");
    let imds_host = s.imds().to_string();
    let ecs_host = s.ecs().to_string();
    for header in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Referer", "http://evil.example/page"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Dest", "empty"),
        ("sec-fetch-user", "?1"),
    ] {
        let put = raw::request(
            "PUT",
            "/latest/api/token",
            Some(&imds_host),
            &[(TTL, "60"), header],
        );
        for (what, addr, req) in [
            ("token PUT", s.imds(), put),
            (
                "IMDS GET",
                s.imds(),
                imds_get(&token, Some(&imds_host), &[header]),
            ),
            (
                "ECS GET",
                s.ecs(),
                ecs_get(&ecs_token, Some(&ecs_host), &[header]),
            ),
        ] {
            let r = raw::exchange(addr, &req).await.answered(what);
            assert_eq!(r.status, 403, "{what} with {header:?}: {}", r.text());
            assert!(!r.text().contains("SecretAccessKey"), "{what}");
        }
    }
    assert_still_serves(&s).await;
}

/// A request without a `Host` header (HTTP/1.1 requires one) gets 400 on both endpoints, and
/// nothing else.
#[tokio::test]
async fn hostile_request_without_host_is_a_400() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let ecs_token = s.ecs_token("role");
    for (addr, req) in [
        (
            s.imds(),
            raw::request(
                "GET",
                ROLE_CREDS,
                None,
                &[("x-aws-ec2-metadata-token", &token)],
            ),
        ),
        (
            s.imds(),
            raw::request("PUT", "/latest/api/token", None, &[(TTL, "60")]),
        ),
        (
            s.ecs(),
            raw::request(
                "GET",
                "/credentials/role",
                None,
                &[("authorization", &ecs_token)],
            ),
        ),
    ] {
        let r = raw::exchange(addr, &req).await.answered("no Host");
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(!String::from_utf8_lossy(&r.body).contains("SecretAccessKey"));
    }
    assert_still_serves(&s).await;
}

/// A token PUT carrying `X-Forwarded-For`, `Forwarded` (RFC 7239) or `Via` (a proxy relaying
/// someone else's request) is a 403, whatever the header's case or value.
#[tokio::test]
async fn hostile_proxy_headers_on_token_put_are_refused() {
    let s = Served::start(ROLE_TOML).await;
    let host = s.imds().to_string();
    for header in [
        ("X-Forwarded-For", "203.0.113.7"),
        ("x-forwarded-for", "127.0.0.1"),
        ("X-FORWARDED-FOR", ""),
        ("Forwarded", "for=203.0.113.7;proto=http"),
        ("forwarded", "for=\"[2001:db8::1]\""),
        ("Via", "1.1 squid"),
        ("VIA", "HTTP/1.1 proxy.example"),
    ] {
        let put = raw::request(
            "PUT",
            "/latest/api/token",
            Some(&host),
            &[(TTL, "60"), header],
        );
        let r = raw::exchange(s.imds(), &put).await.answered("PUT");
        assert_eq!(r.status, 403, "{header:?}");
        assert!(r.header(TTL).is_none());
    }
    assert_still_serves(&s).await;
}

/// Request heads over the default cap (`[limits] max_header_bytes`, 8 KiB), as one huge header,
/// as many ordinary ones, or as too many headers, get 431 on both endpoints; a head just under
/// the cap is served.
#[tokio::test]
async fn hostile_oversized_headers_get_431() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let ecs_token = s.ecs_token("role");
    let big = "a".repeat(9 * 1024);
    let medium = "b".repeat(100);
    let under = "c".repeat(6 * 1024);
    let many: Vec<(String, &str)> = (0..90)
        .map(|i| (format!("X-Pad-{i}"), medium.as_str()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let count: Vec<(String, &str)> = (0..150).map(|i| (format!("X-N-{i}"), "1")).collect();
    let count: Vec<(&str, &str)> = count.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    for addr in [s.imds(), s.ecs()] {
        let host = addr.to_string();
        let build = |extra: &[(&str, &str)]| -> Vec<u8> {
            if addr == s.imds() {
                imds_get(&token, Some(&host), extra)
            } else {
                ecs_get(&ecs_token, Some(&host), extra)
            }
        };
        for (what, req) in [
            ("one 9 KiB header", build(&[("X-Big", &big)])),
            ("90 headers of 100 bytes", build(&many)),
            ("150 headers", build(&count)),
        ] {
            let r = raw::exchange(addr, &req).await.answered(what);
            assert_eq!(r.status, 431, "{addr}: {what}");
        }
        let r = raw::exchange(addr, &build(&[("X-Under", &under)]))
            .await
            .answered("6 KiB header");
        assert_eq!(r.status, 200, "{addr}: a 6 KiB head is under the cap");
    }
    assert_still_serves(&s).await;
}

/// A configured `[limits] max_header_bytes` replaces the default cap.
#[tokio::test]
async fn hostile_configured_header_cap_is_honoured() {
    let s = Served::start(&with_limits("max_header_bytes = 2048")).await;
    let token = http::token(s.imds(), 60).await;
    let host = s.imds().to_string();
    let over = "a".repeat(3 * 1024);
    let r = raw::exchange(
        s.imds(),
        &imds_get(&token, Some(&host), &[("X-Big", &over)]),
    )
    .await
    .answered("3 KiB");
    assert_eq!(r.status, 431);
    let under = "a".repeat(1024);
    let r = raw::exchange(
        s.imds(),
        &imds_get(&token, Some(&host), &[("X-Big", &under)]),
    )
    .await
    .answered("1 KiB");
    assert_eq!(r.status, 200);
    assert_still_serves(&s).await;
}

/// Slowloris: with `[limits] header_timeout_ms = 500`, a client that sends half a request head
/// and stalls, one that trickles a header line every 100 ms, one that sends nothing, one that
/// idles on a kept-alive connection after a request, and one that announces a body it never
/// sends, are all closed by the server (the read sees EOF) within a generous 10 s, on both
/// endpoints; well-behaved clients are served while they hang on.
#[tokio::test]
async fn hostile_slowloris_is_closed_by_the_header_read_timeout() {
    let s = Served::start(&with_limits("header_timeout_ms = 500")).await;
    let mut stalled = Vec::new();
    let mut tricklers = Vec::new();
    for addr in [s.imds(), s.ecs()] {
        let mut half = raw::connect(addr).await;
        half.write_all(format!("GET {ROLE_CREDS} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        stalled.push(("half a head", half));
        stalled.push(("nothing sent", raw::connect(addr).await));
        let mut idle = raw::connect(addr).await;
        let first = raw::send_on(
            &mut idle,
            &raw::request("GET", "/", Some(&addr.to_string()), &[]),
        )
        .await;
        assert!(first.status().is_some(), "the first request is answered");
        stalled.push(("idle after a request", idle));
        // Handlers never read bodies, so a body that never arrives cannot hold the connection
        // either: the request is answered from its head, then the connection is closed.
        let mut body = raw::connect(addr).await;
        let put = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\n{TTL}: 60\r\nContent-Length: 1000000\r\n\r\npartial"
        );
        let answer = raw::send_on(&mut body, put.as_bytes()).await;
        assert!(answer.status().is_some(), "answered before the body");
        stalled.push(("a body that never arrives", body));
        // The trickler paces itself like a real slow client; it stops when a write fails.
        let mut trickle = raw::connect(addr).await;
        tricklers.push(tokio::spawn(async move {
            let start = Instant::now();
            let _ = trickle
                .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
                .await;
            while start.elapsed() < Duration::from_secs(10) {
                if trickle.write_all(b"X-Trickle: 1\r\n").await.is_err() {
                    return Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }));
    }
    // Served while the slow clients hold their connections.
    assert_still_serves(&s).await;
    for (what, mut conn) in stalled {
        assert!(
            raw::closed_within(&mut conn, Duration::from_secs(10)).await,
            "{what}: still open after 10 s"
        );
    }
    for t in tricklers {
        assert!(
            t.await.unwrap().is_some(),
            "a trickling client is cut off within 10 s"
        );
    }
    assert_still_serves(&s).await;
}

/// Connection flood: with `[limits] max_connections = 256`, as many idle connections as the fd
/// limit allows (up to 10,000; the test raises its soft limit first) are opened at once. More
/// than the cap get established (the rest of the kernel backlog), the daemon's RSS stays under
/// 64 MB with them open and after, and once they are closed a well-behaved client gets credentials again.
#[tokio::test]
async fn hostile_connection_flood_keeps_rss_bounded_and_service_recovers() {
    const CAP: usize = 256;
    let s = Served::start(&with_limits(&format!("max_connections = {CAP}"))).await;
    credvend::sys::raise_nofile_limit();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to an initialised struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let target = (lim.rlim_cur as usize).saturating_sub(512).min(10_000);
    assert!(
        target > 2 * CAP,
        "fd limit {} is too low for this test",
        lim.rlim_cur
    );

    let started = Instant::now();
    let addr = s.imds();
    let attempts: Vec<_> = (0..target)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
                    .await
                    .ok()
                    .and_then(Result::ok)
            })
        })
        .collect();
    let mut open: Vec<TcpStream> = Vec::new();
    for a in attempts {
        if let Some(c) = a.await.unwrap() {
            open.push(c);
        }
    }
    let rss = rss_kib(s.daemon.pid());
    eprintln!(
        "{} of {target} connections established in {:?}; daemon RSS {rss} KiB",
        open.len(),
        started.elapsed()
    );
    assert!(
        open.len() > CAP,
        "more connections than max_connections were opened ({})",
        open.len()
    );
    assert!(
        rss < 64 * 1024,
        "daemon RSS {rss} KiB with {} connections",
        open.len()
    );
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    assert_eq!(
        unsafe { libc::kill(s.daemon.pid() as libc::pid_t, 0) },
        0,
        "alive"
    );

    for c in open.drain(..) {
        // Reset instead of FIN: no TIME_WAIT left to crowd other tests' ephemeral ports.
        let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
    }
    tokio::time::timeout(Duration::from_secs(20), assert_still_serves(&s))
        .await
        .expect("served within 20 s of closing the flood");
    let rss = rss_kib(s.daemon.pid());
    assert!(rss < 64 * 1024, "daemon RSS {rss} KiB after the flood");
}

/// Container requests with a wrong token, another profile's token, a token in the query string
/// instead of the header, or no token, are refused (401 without, 403 with a wrong one) and
/// reveal nothing.
#[tokio::test]
async fn hostile_ecs_wrong_other_or_missing_token_is_refused() {
    let s = Served::start(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\", \"base\"]\n",
    )
    .await;
    let role = s.ecs_token("role");
    let base = s.ecs_token("base");
    let host = s.ecs().to_string();
    let query = format!("/credentials/role?token={role}");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "no token",
            ecs_get_path("/credentials/role", &host, None),
            401,
        ),
        ("token in the query", ecs_get_path(&query, &host, None), 401),
        (
            "wrong token",
            ecs_get_path("/credentials/role", &host, Some("0".repeat(64).as_str())),
            403,
        ),
        (
            "base's token",
            ecs_get_path("/credentials/role", &host, Some(&base)),
            403,
        ),
        (
            "role's token on base",
            ecs_get_path("/credentials/base", &host, Some(&role)),
            403,
        ),
        (
            "prefix of the token",
            ecs_get_path("/credentials/role", &host, Some(&role[..32])),
            403,
        ),
    ];
    for (what, req, want) in cases {
        let r = raw::exchange(s.ecs(), &req).await.answered(what);
        assert_eq!(r.status, want, "{what}: {}", r.text());
        assert!(!r.text().contains("SecretAccessKey"), "{what}");
    }
    assert_still_serves(&s).await;
}

fn ecs_get_path(path: &str, host: &str, token: Option<&str>) -> Vec<u8> {
    match token {
        Some(t) => raw::request("GET", path, Some(host), &[("Authorization", t)]),
        None => raw::request("GET", path, Some(host), &[]),
    }
}

/// Garbage on the ports (random binary, an HTTP/2 preface, a TLS ClientHello, a 100 KB request
/// line, malformed heads) gets a 4xx or a closed connection, never a 2xx or 5xx, on both
/// endpoints, and the daemon carries on.
#[tokio::test]
async fn hostile_garbage_bytes_get_4xx_or_close() {
    // A short header timeout closes the cases that are an incomplete head rather than an error.
    let s = Served::start(&with_limits("header_timeout_ms = 1000")).await;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let random: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let tls = [
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 0, 0, 0, 0,
    ]
    .to_vec();
    let long_line =
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes();
    let cases: Vec<(&str, Vec<u8>)> =
        vec![
        ("random binary", random),
        ("HTTP/2 preface", h2),
        ("TLS ClientHello", tls),
        ("100 KB request line", long_line),
        ("NUL in header", b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n".to_vec()),
        ("header without colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n".to_vec()),
        ("bad version", b"GET / HTTP/9.9\r\n\r\n".to_vec()),
        ("space in method", b"G T / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "huge Content-Length",
            b"PUT /latest/api/token HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
        ),
        (
            "bad chunk",
            b"PUT /latest/api/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        ("lone CR LF", b"\r\n\r\n\r\n\r\n".to_vec()),
    ];
    for addr in [s.imds(), s.ecs()] {
        for (what, bytes) in &cases {
            let outcome = raw::exchange(addr, bytes).await;
            match &outcome {
                Outcome::Closed => {}
                Outcome::Answered(r) => assert!(
                    (400..500).contains(&r.status),
                    "{addr} {what}: {} {}",
                    r.status,
                    r.text()
                ),
            }
        }
    }
    assert_still_serves(&s).await;
}

/// A request's body is never parsed as a request (no smuggling): a token PUT whose body is a
/// complete credentials GET gets exactly one answer, and the next request on the connection
/// gets its own answer. Pipelined requests are answered in order.
#[tokio::test]
async fn hostile_request_bodies_are_never_parsed_as_requests() {
    let s = Served::start(ROLE_TOML).await;
    let addr: SocketAddr = s.imds();
    let host = addr.to_string();
    let token = http::token(addr, 60).await;
    let smuggled = String::from_utf8(imds_get(&token, Some(&host), &[])).unwrap();
    let put = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: {host}\r\n{TTL}: 60\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut conn = raw::connect(addr).await;
    let first = raw::send_on(&mut conn, put.as_bytes())
        .await
        .answered("PUT");
    assert_eq!(first.status, 200);
    assert!(!first.text().contains("AccessKeyId"));
    let region = raw::request(
        "GET",
        "/latest/meta-data/placement/region",
        Some(&host),
        &[(TOKEN, &token)],
    );
    match raw::send_on(&mut conn, &region).await {
        // Closing after an unread body is fine; answering the smuggled GET is not.
        Outcome::Closed => {}
        Outcome::Answered(r) => {
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), "us-east-1", "the next answer is the region");
        }
    }

    let mut pipelined = region.clone();
    pipelined.extend_from_slice(&raw::request(
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        Some(&host),
        &[(TOKEN, &token)],
    ));
    pipelined.extend_from_slice(&region);
    let mut conn = raw::connect(addr).await;
    conn.write_all(&pipelined).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let r = raw::read_response(&mut conn, false)
            .await
            .answered("pipelined");
        assert_eq!(r.status, 200);
        bodies.push(r.text());
    }
    assert_eq!(bodies, ["us-east-1", "role", "us-east-1"]);
    assert_still_serves(&s).await;
}

/// Slow and idle clients do not hold up a shutdown: with the default 2 s header timeout, SIGTERM
/// while half-sent heads and idle connections are open on both endpoints still ends the daemon
/// cleanly (bounded at a generous 10 s, which only detects a hang; the design promises 5 s).
#[tokio::test]
async fn hostile_slow_clients_do_not_delay_shutdown() {
    let Served {
        daemon,
        scenario: _scenario,
        setup: _setup,
    } = Served::start(ROLE_TOML).await;
    let mut held = Vec::new();
    for addr in [daemon.imds(), daemon.ecs()] {
        let mut half = raw::connect(addr).await;
        half.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        held.push(half);
        held.push(raw::connect(addr).await);
    }
    let pid = daemon.pid();
    daemon.signal(libc::SIGTERM);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(daemon.wait());
    });
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            // SAFETY: kill(2) on our own child's pid, so it does not outlive the test.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the daemon did not exit within 10 s of SIGTERM");
        });
    assert_eq!(status.code(), Some(0));
    drop(held);
}

/// `token` with its last character replaced by a different one: a near miss.
fn last_char_changed(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    format!("{head}{}", if last == "0" { '1' } else { '0' })
}

/// After serving credentials and refusing wrong tokens on both endpoints, the daemon's log (at
/// debug level) holds none of the secrets: not the secret key or session token it vended, not
/// the ECS token, not an IMDS token, not a wrong token an attacker presented.
#[tokio::test]
async fn hostile_requests_leave_no_secrets_in_the_log() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let creds = http::get(s.imds(), ROLE_CREDS, &token).await.json();
    let ecs_token = s.ecs_token("role");
    let near_miss = last_char_changed(&ecs_token);
    let forged_imds = last_char_changed(&token);
    assert_eq!(
        http::ecs_get(s.ecs(), "role", Some(&near_miss))
            .await
            .status,
        403
    );
    assert_eq!(
        http::get(s.imds(), ROLE_CREDS, &forged_imds).await.status,
        401
    );
    assert_eq!(
        http::ecs_get(s.ecs(), "role", Some(&ecs_token))
            .await
            .status,
        200
    );
    let put = raw::request(
        "PUT",
        "/latest/api/token",
        Some(&s.imds().to_string()),
        &[
            (TTL, "60"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(raw::exchange(s.imds(), &put).await.status(), Some(403));
    // The refusals above are logged; wait for that line rather than for time to pass.
    assert!(
        s.daemon.wait_for_log("refused", Duration::from_secs(10)),
        "refusals are logged"
    );
    let log = s.daemon.log();
    for (what, secret) in [
        (
            "secret access key",
            creds["SecretAccessKey"].as_str().unwrap(),
        ),
        ("session token", creds["Token"].as_str().unwrap()),
        ("ECS token", ecs_token.as_str()),
        ("IMDS token", token.as_str()),
        ("presented ECS token", near_miss.as_str()),
        ("presented IMDS token", forged_imds.as_str()),
    ] {
        assert!(!log.contains(secret), "the log holds the {what}");
    }
    assert!(
        log.contains(creds["AccessKeyId"].as_str().unwrap()),
        "the audit log names the access key id it vended"
    );
}
