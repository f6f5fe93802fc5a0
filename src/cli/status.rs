//! `credvend status` as text: what each profile serves (key, identity, expiry), what it is doing
//! (an STS call in flight and for how long, the next rotation), what went wrong (the last error,
//! a failed reload, clock skew), in times a person reads at a glance. Pure: report in, text out.

use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::control::proto::{ListenerStatus, Phase, ProfileStatus, RouteStatus, StatusReport};
use crate::creds::format_aws_time;

/// A duration as a person says it: `45 s`, `12 min`, `3 h 05 min`.
fn span(d: time::Duration) -> String {
    let secs = d.whole_seconds().abs();
    if secs < 90 {
        format!("{secs} s")
    } else if secs < 2 * 3600 {
        format!("{} min", (secs + 30) / 60)
    } else {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    }
}

/// `12:34:56Z (in 12 min)` / `(3 min ago)`.
fn when(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = t - now;
    let rel = if d.whole_seconds() == 0 {
        "now".to_owned()
    } else if d.is_negative() {
        format!("{} ago", span(d))
    } else {
        format!("in {}", span(d))
    };
    format!("{} ({rel})", format_aws_time(t))
}

/// The text of `report` at `now`.
pub(crate) fn render(report: &StatusReport, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "credvend {} (pid {})", report.version, report.pid);
    if let Some(skew) = report.clock_skew_seconds.filter(|s| s.abs() >= 60) {
        let _ = writeln!(
            out,
            "clock: STS's clock is {} s {} this machine's (SigV4 fails beyond 300 s): correct the clock",
            skew.abs(),
            if skew > 0 { "ahead of" } else { "behind" }
        );
    }
    if let Some(r) = &report.reload_error {
        let _ = writeln!(
            out,
            "reload: the last one failed at {}; the configuration before it keeps serving: {}",
            when(r.at, now),
            r.message
        );
    }
    let _ = writeln!(out, "listeners:");
    for l in &report.listeners {
        let _ = writeln!(
            out,
            "  {:4}  {:21}  {}",
            l.kind,
            l.address,
            l.profiles.join(", ")
        );
        routes(&mut out, l);
    }
    let _ = writeln!(out, "profiles:");
    for p in &report.profiles {
        profile(&mut out, p, now);
    }
    out
}

/// A routed listener's routes, one line each (`from -> profile: served N, refused M`), then the
/// requests no route named.
fn routes(out: &mut String, l: &ListenerStatus) {
    let who = |r: &RouteStatus| match (&r.from, r.uid) {
        (Some(net), _) => net.clone(),
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => "?".to_owned(),
    };
    let width = l.routes.iter().map(|r| who(r).len()).max().unwrap_or(0);
    for r in &l.routes {
        let _ = writeln!(
            out,
            "        route {:width$} -> {}: served {}, refused {}",
            who(r),
            match &r.unit {
                Some(unit) => format!("{} (scoped session {unit})", r.profile),
                None => r.profile.clone(),
            },
            r.served,
            r.refused
        );
    }
    if let Some(n) = l.unrouted_refused {
        let _ = writeln!(out, "        no route: refused {n}");
    }
}

fn profile(out: &mut String, p: &ProfileStatus, now: OffsetDateTime) {
    if p.phase == Phase::Idle {
        // Many profiles may be idle: one line each.
        let used = match p.last_use {
            Some(t) => format!("last used {}", when(t, now)),
            None => "not used since the daemon started".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {}  idle ({used}; minted on the next request)",
            p.name
        );
        for w in &p.warnings {
            let _ = writeln!(out, "      warning: {w}");
        }
        return;
    }
    let phase = serde_json::to_value(p.phase).unwrap_or_default();
    let _ = writeln!(out, "  {}  {}", p.name, phase.as_str().unwrap_or("?"));
    if let Some(key) = &p.access_key_id {
        let mut line = format!("      serving {key}");
        if let Some(arn) = &p.identity {
            line.push_str(&format!(" as {arn}"));
        }
        if let Some(size) = p.packed_policy_size {
            line.push_str(&format!(
                " (session policies and tags: {size}% of STS's limit)"
            ));
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(exp) = p.expiration {
        let _ = writeln!(out, "      expires {}", when(exp, now));
    }
    match (p.minting_since, p.next_refresh) {
        (Some(since), _) => {
            let _ = writeln!(
                out,
                "      minting now: waiting {} for STS (or the keyring, or the credential process), since {}",
                span(now - since),
                format_aws_time(since)
            );
        }
        (None, Some(next)) if next <= now => {
            let _ = writeln!(out, "      next refresh due now");
        }
        (None, Some(next)) => {
            let _ = writeln!(out, "      next refresh {}", when(next, now));
        }
        (None, None) => {}
    }
    let _ = writeln!(out, "      source: {}", p.source);
    let _ = writeln!(out, "      requests served: {}", p.requests);
    if p.on_demand
        && let Some(t) = p.last_use
    {
        let _ = writeln!(
            out,
            "      last used {} (idle when unused for a while)",
            when(t, now)
        );
    }
    if let Some(err) = &p.last_error {
        let _ = writeln!(
            out,
            "      last error ({}, {}): {}",
            err.code,
            when(err.since, now),
            err.message
        );
    }
    for w in &p.warnings {
        let _ = writeln!(out, "      warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{Phase, ProblemStatus, ReloadError};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-30 12:00:00 UTC);

    fn profile(name: &str) -> ProfileStatus {
        ProfileStatus {
            name: name.into(),
            source: "keyring:u -> AssumeRole(r)".into(),
            phase: Phase::Refreshing,
            last_error: None,
            next_refresh: Some(NOW - time::Duration::seconds(17)),
            last_refresh: None,
            refreshes: 3,
            expiration: Some(NOW + time::Duration::minutes(40)),
            access_key_id: Some("ASIAEXAMPLE".into()),
            identity: Some("arn:aws:sts::123456789012:assumed-role/r/s".into()),
            packed_policy_size: Some(7),
            minting_since: Some(NOW - time::Duration::seconds(42)),
            region: None,
            requests: 5,
            mfa_serial: None,
            ecs_token_file: None,
            ecs_agent_id_file: None,
            on_demand: false,
            last_use: None,
            warnings: vec!["config file line 3: profile `r`: x".into()],
        }
    }

    #[test]
    fn a_hung_sts_call_shows_its_age_and_times_read_naturally() {
        let mut idle = profile("idle");
        idle.phase = Phase::Fresh;
        idle.minting_since = None;
        idle.next_refresh = Some(NOW + time::Duration::minutes(22));
        idle.last_error = Some(ProblemStatus {
            code: "StsUnavailable".into(),
            message: "could not reach STS".into(),
            since: NOW - time::Duration::minutes(3),
        });
        let report = StatusReport {
            version: "0".into(),
            pid: 1,
            clock_skew_seconds: Some(-7200),
            reload_error: Some(ReloadError {
                at: NOW - time::Duration::minutes(2),
                message: "config.toml: bad".into(),
            }),
            listeners: vec![],
            profiles: vec![profile("busy"), idle],
        };
        let text = render(&report, NOW);
        for needle in [
            "STS's clock is 7200 s behind",
            "reload: the last one failed at 2026-11-30T11:58:00Z (2 min ago)",
            "serving ASIAEXAMPLE as arn:aws:sts::123456789012:assumed-role/r/s (session policies and tags: 7% of STS's limit)",
            "expires 2026-11-30T12:40:00Z (in 40 min)",
            "minting now: waiting 42 s for STS",
            "next refresh 2026-11-30T12:22:00Z (in 22 min)",
            "last error (StsUnavailable, 2026-11-30T11:57:00Z (3 min ago)): could not reach STS",
            "warning: config file line 3",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
        assert!(!text.contains("ago)  next"), "{text}");
        assert!(
            !text.contains("next refresh 17"),
            "no refresh 'in the past': {text}"
        );
    }

    #[test]
    fn routes_show_who_gets_what_and_their_counts() {
        use crate::control::proto::{ListenerStatus, RouteStatus};
        let route = |from: Option<&str>, uid, profile: &str, served, refused| RouteStatus {
            from: from.map(str::to_owned),
            uid,
            profile: profile.into(),
            unit: None,
            served,
            refused,
        };
        let report = StatusReport {
            version: "0".into(),
            pid: 1,
            clock_skew_seconds: None,
            reload_error: None,
            listeners: vec![ListenerStatus {
                kind: "imds".into(),
                address: "198.18.0.1:9254".into(),
                profiles: vec!["ci".into(), "dev".into(), "build".into()],
                routes: vec![
                    route(Some("198.18.0.2/32"), None, "ci", 3, 0),
                    route(Some("198.18.0.0/24"), None, "dev", 2, 1),
                    route(None, Some(1001), "build", 0, 0),
                ],
                unrouted_refused: Some(4),
            }],
            profiles: vec![],
        };
        let text = render(&report, NOW);
        for needle in [
            "imds  198.18.0.1:9254        ci, dev, build\n",
            "        route 198.18.0.2/32 -> ci: served 3, refused 0\n",
            "        route 198.18.0.0/24 -> dev: served 2, refused 1\n",
            "        route uid 1001      -> build: served 0, refused 0\n",
            "        no route: refused 4\n",
        ] {
            assert!(text.contains(needle), "{needle:?}\n{text}");
        }
    }
}
