//! The practical limit for `scripts/bench`: a minimal hyper HTTP/1.1 server that answers every
//! request with the same bytes and headers credvend's IMDS credentials path sends, and does
//! nothing else (no routing, no token check, no guards).
//!
//! `minimal_hyper BODY_FILE` binds 127.0.0.1:0 and prints `ready ADDR`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT_RANGES, CONTENT_TYPE, HeaderValue, SERVER};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: minimal_hyper BODY_FILE");
    let body = Bytes::from(std::fs::read(path).expect("body file"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("ready {}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let mut resp = Response::new(Full::new(body.clone()));
                        let h = resp.headers_mut();
                        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                        h.insert(SERVER, HeaderValue::from_static("EC2ws"));
                        h.insert(ACCEPT_RANGES, HeaderValue::from_static("none"));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
