//! The `[metrics]` listener's handler: `GET /metrics` (the daemon's metrics in OpenMetrics text
//! format, [`super::metrics`]) and `GET /healthz` (200 when every prewarmed profile has
//! credentials it can serve now, else 503 naming those that do not).
//!
//! It runs behind the same accept loop and guards as the credential listeners (`Host`, header
//! limits, the peer's uid or address). Nothing it answers holds a secret; `/healthz` names
//! profiles, phases and problem codes, never a problem's message (which may quote what a
//! `credential_process` printed).

use std::fmt::Write;
use std::sync::Weak;

use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, StatusCode};

use super::Daemon;
use super::http::{Head, Refusal, Reply};
use super::metrics::{Freshness, RefusedReason};
use crate::metrics::openmetrics::CONTENT_TYPE;

const TEXT: &str = "text/plain; charset=utf-8";

/// The handler of a `[metrics]` listener. It holds the daemon weakly: the daemon owns its
/// listeners, and with them this handler.
pub(crate) struct MetricsHandler {
    daemon: Weak<Daemon>,
}

/// `/healthz`'s verdict and body. Pure.
pub(crate) fn health(profiles: &[Freshness]) -> (bool, String) {
    let stale: Vec<&str> = profiles
        .iter()
        .filter(|p| !p.fresh)
        .map(|p| p.profile.as_str())
        .collect();
    let mut body = if stale.is_empty() {
        match profiles.len() {
            0 => "ok: no prewarmed profile\n".to_owned(),
            n => format!("ok: {n} prewarmed profile(s) fresh\n"),
        }
    } else {
        format!("unhealthy: not fresh: {}\n", shown(&stale.join(", ")))
    };
    for p in profiles {
        let _ = write!(body, "{}: {}", shown(&p.profile), p.phase);
        if let Some(code) = p.problem {
            let _ = write!(body, " ({code})");
        }
        if let Some(left) = p.remaining {
            let _ = write!(body, ", expires in {left} s");
        }
        body.push('\n');
    }
    (stale.is_empty(), body)
}

/// `s` with control characters escaped (profile names come from a file).
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl MetricsHandler {
    /// A handler answering from `daemon`.
    pub fn new(daemon: Weak<Daemon>) -> MetricsHandler {
        MetricsHandler { daemon }
    }

    /// Answers one request that passed the guards.
    pub async fn handle(&self, head: Head) -> Reply {
        let path = head.path.trim_end_matches('/');
        if !matches!(path, "/metrics" | "/healthz") {
            head.audit.count_refused(RefusedReason::UnknownPath);
            return Reply::new(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: this listener serves GET /metrics and GET /healthz\n",
            );
        }
        if !matches!(head.method, Method::GET | Method::HEAD) {
            head.audit.count_refused(RefusedReason::MethodNotAllowed);
            return Reply::new(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n")
                .with_header(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        let Some(daemon) = self.daemon.upgrade() else {
            return Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "credvend is shutting down\n",
            );
        };
        if path == "/metrics" {
            return Reply::new(StatusCode::OK, CONTENT_TYPE, daemon.metrics_text().await);
        }
        let (healthy, body) = health(&daemon.prewarmed_freshness().await);
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Reply::new(status, TEXT, body)
    }

    /// The answer to a refused request.
    pub fn refuse(&self, refusal: Refusal) -> Reply {
        Reply::new(refusal.status(), TEXT, format!("{}\n", refusal.message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::ProblemCode;

    fn p(name: &str, fresh: bool, phase: &'static str) -> Freshness {
        Freshness {
            profile: name.into(),
            fresh,
            phase,
            remaining: fresh.then_some(3000),
            problem: (!fresh).then_some(ProblemCode::MissingKeys),
        }
    }

    #[test]
    fn healthy_only_when_every_prewarmed_profile_is_fresh() {
        let (ok, body) = health(&[p("dev", true, "fresh")]);
        assert!(ok);
        assert_eq!(
            body,
            "ok: 1 prewarmed profile(s) fresh\ndev: fresh, expires in 3000 s\n"
        );
        let (ok, body) = health(&[p("dev", true, "fresh"), p("ops\x1b", false, "error")]);
        assert!(!ok);
        assert!(
            body.starts_with("unhealthy: not fresh: ops\\u{1b}\n"),
            "{body}"
        );
        assert!(body.contains("ops\\u{1b}: error (MissingKeys)\n"), "{body}");
        let (ok, body) = health(&[]);
        assert!(ok && body == "ok: no prewarmed profile\n");
    }
}
