//! Logging: `tracing-subscriber` lines (text or JSON) on stderr, written by a background thread
//! (`tracing-appender`) so that logging never blocks a request: a slow journal, a full pipe or a
//! flood of audit lines costs dropped lines, not latency. When systemd connected stderr to the
//! journal (`JOURNAL_STREAM`), lines carry syslog priority prefixes (`<3>`..`<7>`) and no
//! timestamps, so journald records their level. Filters come from `CREDVEND_LOG`, then `RUST_LOG`,
//! then the command's default level. Nothing logged anywhere carries a secret: they are
//! `SecretString`s, whose `Debug` prints `[REDACTED]`, and no code formats them for output except
//! the response writers.

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the background log writer alive; dropping it flushes what is queued.
pub type Guard = tracing_appender::non_blocking::WorkerGuard;

/// Prefixes each line with its syslog priority, for journald's stream parser.
struct SyslogPrefixed<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
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

/// Installs the global subscriber. `default` is the level when no variable says otherwise. Keep
/// the returned guard until the process ends.
pub fn init(format: LogFormat, default: &str) -> Guard {
    let filter = std::env::var("CREDVEND_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let journal = journal_is_stderr();
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // 4096 queued lines: enough for bursts; more is dropped rather than delaying requests (the
    // default queue of 128k lines would also cost ~4 MB of resident memory).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(true)
        .finish(std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    let _ = match (format, journal) {
        (LogFormat::Json, _) => registry.with(fmt.json().flatten_event(true)).try_init(),
        (LogFormat::Text, true) => registry
            .with(
                fmt.event_format(SyslogPrefixed(
                    tracing_subscriber::fmt::format()
                        .without_time()
                        .with_target(false)
                        .with_ansi(false),
                )),
            )
            .try_init(),
        (LogFormat::Text, false) => registry.with(fmt).try_init(),
    };
    guard
}
