//! Latency probe for `scripts/bench`: CONNECTIONS keep-alive connections, each sending one GET
//! every PACE_US microseconds (paced, so the machine keeps headroom and scheduler noise stays
//! small), for SECONDS. Every request's start time and latency is written to OUT as
//! `unix_micros latency_micros` lines, so rotations can be matched against the requests in flight.
//!
//! `latency_probe ADDR PATH HEADER_LINE CONNECTIONS PACE_US SECONDS OUT`
//! (HEADER_LINE like `x-aws-ec2-metadata-token: ...`, or `-` for none)

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert_eq!(
        a.len(),
        8,
        "usage: latency_probe ADDR PATH HEADER_LINE CONNECTIONS PACE_US SECONDS OUT"
    );
    let (addr, path, header) = (a[1].clone(), a[2].clone(), a[3].clone());
    let conns: usize = a[4].parse().unwrap();
    let pace = Duration::from_micros(a[5].parse().unwrap());
    let secs: u64 = a[6].parse().unwrap();
    let out = a[7].clone();
    let extra = if header == "-" {
        String::new()
    } else {
        format!("{header}\r\n")
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n").into_bytes();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let samples = rt.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (addr, req) = (addr.clone(), req.clone());
            tasks.push(tokio::spawn(async move {
                let mut sock = TcpStream::connect(&addr).await.unwrap();
                sock.set_nodelay(true).unwrap();
                let mut buf = Vec::new();
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(pace);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < deadline {
                    tick.tick().await;
                    let wall = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_micros();
                    let started = Instant::now();
                    sock.write_all(&req).await.unwrap();
                    let status = read_response(&mut sock, &mut buf).await.unwrap();
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buf));
                    samples.push((wall, started.elapsed().as_micros()));
                }
                samples
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for (ts, lat) in samples {
        writeln!(f, "{ts} {lat}").unwrap();
    }
}
