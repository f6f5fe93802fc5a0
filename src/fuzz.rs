//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpora on
//! stable Rust. Each takes arbitrary bytes and must never panic, whatever they hold.

use crate::config::DaemonConfig;
use crate::control::proto;
use crate::daemon::{ecs, http, imds, token};
use crate::profile::{file, resolve};
use crate::sts::wire;

/// STS response parsing: success documents of every shape, errors, caller identity.
pub fn sts_xml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = wire::parse_credentials(&text);
    let _ = wire::parse_caller_identity(&text);
    let _ = wire::parse_error(&text);
}

/// The AWS config parser and chain resolution of every profile it finds (no file access).
pub fn aws_config(data: &[u8]) {
    crate::profile::fuzz_files(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = file::parse(&text, file::FileKind::Config) {
        let set = file::merge(Some(parsed), None);
        let no_files = |_: &std::path::Path| Err(std::io::Error::other("no files while fuzzing"));
        for name in set.profiles.keys() {
            if let Ok(chain) = resolve::resolve(&set, name, &resolve::Env::default(), &no_files) {
                let _ = chain.describe();
                let _ = chain.profiles();
            }
        }
    }
}

/// The daemon's TOML config.
pub fn daemon_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DaemonConfig::parse_with(text, "fuzz.toml", &|_| Some(1000));
    }
}

/// The request router and the pre-routing guards: the first line is the path, the following
/// `name: value` lines are headers (the Host header included).
pub fn http_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let _ = imds::route(path);
    let _ = ecs::profile_of(path);
    let policy = http::HostPolicy::new(
        "127.0.0.1:9254".parse().expect("constant"),
        &["host.docker.internal".into()],
    );
    let key = token::TokenKey::from_bytes([1; 32]);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => {
                let _ = policy.allows(value, 9254);
            }
            imds::TOKEN_HEADER => {
                let _ = key.verify("127.0.0.1:9254", value, 1_000_000);
            }
            _ => {}
        }
    }
}

/// The control protocol's request parser.
pub fn control_request(data: &[u8]) {
    let _ = proto::parse_request(&String::from_utf8_lossy(data));
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("sts_xml", sts_xml),
    ("aws_config", aws_config),
    ("daemon_config", daemon_config),
    ("http_request", http_request),
    ("control_request", control_request),
];
