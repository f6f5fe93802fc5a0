//! Logging: `tracing-subscriber` to stderr (text or JSON), or straight to journald when systemd
//! connected stderr to the journal (`JOURNAL_STREAM`). Filters come from `CREDVEND_LOG`, then
//! `RUST_LOG`, then the command's default level. Nothing logged anywhere carries a secret: they are
//! `SecretString`s, whose `Debug` prints `[REDACTED]`, and no code formats them for output except
//! the response writers.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn journal_is_stderr() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let meta = std::fs::metadata("/proc/self/fd/2");
    match meta {
        Ok(m) => m.dev().to_string() == dev && m.ino().to_string() == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber. `default` is the level when no variable says otherwise.
pub fn init(format: LogFormat, default: &str) {
    let filter = std::env::var("CREDVEND_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);
    if format == LogFormat::Text
        && journal_is_stderr()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry
            .with(journald.with_syslog_identifier("credvend".into()))
            .try_init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
}
