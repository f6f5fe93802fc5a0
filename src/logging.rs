//! Logging: `tracing-subscriber` lines (text or JSON) on stderr, written by a background thread
//! (`tracing-appender`) so that logging never blocks a request: a slow journal, a full pipe or a
//! flood of audit lines costs dropped lines, not latency. When systemd connected stderr to the
//! journal (`JOURNAL_STREAM`), lines carry syslog priority prefixes (`<3>`..`<7>`) and no
//! timestamps, so journald records their level. Filters come from `CREDVEND_LOG`, then `RUST_LOG`,
//! then the command's default level. Nothing logged anywhere carries a secret: they are
//! `SecretString`s, whose `Debug` prints `[REDACTED]`, and no code formats them for output except
//! the response writers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line; `target` tells audit lines (`credvend::audit`) from the rest.
    Json,
}

/// Keeps the background log writers alive; dropping it flushes what is queued.
pub struct Guard {
    _main: tracing_appender::non_blocking::WorkerGuard,
    _audit: tracing_appender::non_blocking::WorkerGuard,
}

/// The target of audit lines, which are never dropped (`daemon/audit.rs` keeps them few).
pub const AUDIT_TARGET: &str = "credvend::audit";

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

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// One formatting layer writing to `writer`, in the format asked for.
fn layer(
    format: LogFormat,
    journal: bool,
    ansi: bool,
    writer: tracing_appender::non_blocking::NonBlocking,
) -> Boxed {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    match (format, journal) {
        // JSON lines name their target, so a log pipeline can pick out `credvend::audit`.
        (LogFormat::Json, _) => Box::new(fmt.with_target(true).json().flatten_event(true)),
        (LogFormat::Text, true) => Box::new(
            fmt.event_format(SyslogPrefixed(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            )),
        ),
        (LogFormat::Text, false) => Box::new(fmt),
    }
}

/// Installs the global subscriber. `default` is the level when no variable says otherwise. Keep
/// the returned guard until the process ends.
///
/// Two writer threads share stderr. Ordinary lines go through a bounded, lossy queue: a stalled
/// journal or an undrained pipe costs lines, never request latency. Audit lines
/// ([`AUDIT_TARGET`]) go through their own queue that never drops and ignore the level filter;
/// with `report_drops` a thread records, on the audit path, how many ordinary lines were dropped.
pub fn init(format: LogFormat, default: &str, report_drops: bool) -> Guard {
    let filter = std::env::var("CREDVEND_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let journal = journal_is_stderr();
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // 4096 queued lines: enough for bursts; more is dropped rather than delaying requests (the
    // default queue of 128k lines would also cost ~4 MB of resident memory).
    let (main, main_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(true)
        .finish(std::io::stderr());
    let dropped = main.error_counter();
    let (audit, audit_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(16 * 1024)
        .lossy(false)
        .finish(std::io::stderr());
    let not_audit = filter_fn(|m| m.target() != AUDIT_TARGET);
    let only_audit = filter_fn(|m| m.target() == AUDIT_TARGET);
    // The watch sits behind the main layer's filter: it sees exactly the lines that went to the
    // lossy queue, right after each was queued or dropped.
    let watch = report_drops.then(|| DropWatch::spawn(dropped)).flatten();
    let layers: Vec<Boxed> = vec![
        layer(format, journal, ansi, main)
            .and_then(watch)
            .with_filter(filter.and(not_audit))
            .boxed(),
        layer(format, journal, ansi, audit)
            .with_filter(only_audit)
            .boxed(),
    ];
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Guard {
        _main: main_guard,
        _audit: audit_guard,
    }
}

/// Records, on the audit path, how many ordinary log lines were dropped.
///
/// The reporting thread sleeps until a line is dropped (an idle daemon has no timer to wake it)
/// and then reports at most once per [`DropWatch::EVERY`]. A drop is noticed when the next
/// ordinary line is logged, which under the load that causes drops is immediately.
struct DropWatch {
    counter: tracing_appender::non_blocking::ErrorCounter,
    /// The total the reporter has seen; the layer wakes it only when the counter moved past it.
    seen: Arc<AtomicUsize>,
    reporter: std::thread::Thread,
}

impl DropWatch {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Starts the reporting thread; `None` if the thread cannot be started.
    fn spawn(counter: tracing_appender::non_blocking::ErrorCounter) -> Option<Self> {
        let seen = Arc::new(AtomicUsize::new(0));
        let (thread_counter, thread_seen) = (counter.clone(), seen.clone());
        let handle = std::thread::Builder::new()
            .name("credvend-log-drops".into())
            .spawn(move || Self::report(&thread_counter, &thread_seen))
            .ok()?;
        Some(Self {
            counter,
            seen,
            reporter: handle.thread().clone(),
        })
    }

    fn report(counter: &tracing_appender::non_blocking::ErrorCounter, seen: &AtomicUsize) {
        loop {
            std::thread::park();
            let now = counter.dropped_lines();
            let reported = seen.swap(now, Ordering::Relaxed);
            if now > reported {
                tracing::warn!(
                    target: AUDIT_TARGET,
                    dropped = now - reported,
                    total_dropped = now,
                    "{} log lines were dropped because the log reader fell behind",
                    now - reported
                );
                std::thread::sleep(Self::EVERY);
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for DropWatch {
    fn on_event(&self, _: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if self.counter.dropped_lines() > self.seen.load(Ordering::Relaxed) {
            self.reporter.unpark();
        }
    }
}
