//! The daemon's metrics: counters kept where the facts happen, and the metric families built
//! from them when someone asks ([`Daemon::metrics_text`]: `credvend metrics` and `GET /metrics`
//! of the `[metrics]` listener).
//!
//! Where each fact is counted (relaxed atomics only: no lock and no allocation on the request
//! path):
//! - per profile, in [`ProfileCell`](super::state::ProfileCell): requests served and refused (by
//!   problem code) in `ProfileCell::serve`, the one path every endpoint and the control socket
//!   take; failures (by problem code) in `ProfileCell::fail`, where every failure is recorded;
//!   refreshes, phase and expiry are what the cell already holds;
//! - per listener, in [`ListenerStats`]: connections accepted, refused and open (`http.rs`), and
//!   requests refused by [`RefusedReason`], counted by the connection's audit trail
//!   ([`super::audit::ConnAudit`]), through which every refusal already passes;
//! - STS call latency per action, process-wide, in `crate::metrics::histogram` (recorded by the
//!   STS client for every attempt).
//!
//! No metric carries a secret, a token, an ECS-agent ID or an access key id: labels are profile
//! names, listener kinds and addresses, problem codes, refusal reasons and STS action names.
//! Counters restart from 0 when a profile's cell is replaced (its chain changed on a reload: the
//! profile counters' `_created` sample says when) or a listener is bound anew (which `rate()`
//! takes for a counter reset). Series that are 0 for most users are left out rather than listed:
//! failures and refusals per profile only for problem codes that occurred, STS latency only for
//! actions called; each listener lists every refusal reason, so that a first refusal is an
//! increase from 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::http::Refusal;
use super::policy::Policy;
use super::state::Phase;
use super::{Daemon, State};
use crate::metrics::histogram;
use crate::metrics::openmetrics::{Family, Kind, Labels, Point, render};
use crate::problem::ProblemCode;

/// Why a listener answered a request without what it asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefusedReason {
    /// No `Host` header.
    NoHost,
    /// A `Host` (or absolute-form authority) naming something else.
    ForeignHost,
    /// Browser headers.
    BrowserRequest,
    /// A remote peer no longer in the allow list.
    PeerNotAllowed,
    /// A local user other than the daemon's, not in `allow_uids`.
    UserNotAllowed,
    /// A local client whose user could not be found.
    UserUnknown,
    /// No IMDSv2 token / no ECS `Authorization`.
    MissingToken,
    /// An invalid or expired IMDSv2 token / a wrong ECS token.
    BadToken,
    /// An IMDS token request that came through a proxy.
    ProxiedTokenRequest,
    /// An ECS-agent request without an ID.
    NoId,
    /// An ECS-agent request with an unknown ID.
    UnknownId,
    /// A path the endpoint does not serve (where it counts that as a refusal).
    UnknownPath,
    /// A method the path does not take (where it counts that as a refusal).
    MethodNotAllowed,
    /// The listener has routes and none names the peer (`daemon/routes.rs`).
    NoRoute,
    /// The peer asked for the role (or ID) of another route than its own.
    OtherRoute,
    /// The profile had no credentials to give (its problem code is counted per profile).
    NoCredentials,
    /// A refusal recorded under a code this list does not know.
    Other,
}

impl RefusedReason {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [RefusedReason; 17] = [
        RefusedReason::NoHost,
        RefusedReason::ForeignHost,
        RefusedReason::BrowserRequest,
        RefusedReason::PeerNotAllowed,
        RefusedReason::UserNotAllowed,
        RefusedReason::UserUnknown,
        RefusedReason::MissingToken,
        RefusedReason::BadToken,
        RefusedReason::ProxiedTokenRequest,
        RefusedReason::NoId,
        RefusedReason::UnknownId,
        RefusedReason::UnknownPath,
        RefusedReason::MethodNotAllowed,
        RefusedReason::NoRoute,
        RefusedReason::OtherRoute,
        RefusedReason::NoCredentials,
        RefusedReason::Other,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::NoHost => "no_host",
            RefusedReason::ForeignHost => "foreign_host",
            RefusedReason::BrowserRequest => "browser_request",
            RefusedReason::PeerNotAllowed => "peer_not_allowed",
            RefusedReason::UserNotAllowed => "user_not_allowed",
            RefusedReason::UserUnknown => "user_unknown",
            RefusedReason::MissingToken => "missing_token",
            RefusedReason::BadToken => "bad_token",
            RefusedReason::ProxiedTokenRequest => "proxied_token_request",
            RefusedReason::NoId => "no_id",
            RefusedReason::UnknownId => "unknown_id",
            RefusedReason::UnknownPath => "unknown_path",
            RefusedReason::MethodNotAllowed => "method_not_allowed",
            RefusedReason::NoRoute => "no_route",
            RefusedReason::OtherRoute => "other_route",
            RefusedReason::NoCredentials => "no_credentials",
            RefusedReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The reason of a refusal before routing.
    pub fn of_refusal(r: Refusal) -> RefusedReason {
        match r {
            Refusal::NoHost => RefusedReason::NoHost,
            Refusal::ForeignHost => RefusedReason::ForeignHost,
            Refusal::BrowserRequest => RefusedReason::BrowserRequest,
            Refusal::PeerNotAllowed => RefusedReason::PeerNotAllowed,
            Refusal::UserNotAllowed => RefusedReason::UserNotAllowed,
            Refusal::UserUnknown => RefusedReason::UserUnknown,
            Refusal::NoRoute => RefusedReason::NoRoute,
        }
    }

    /// The reason of an endpoint refusal from the short code its access line carries
    /// (`ConnAudit::refused_request`).
    pub fn of_audit_code(code: &str) -> RefusedReason {
        match code {
            "NoToken" => RefusedReason::MissingToken,
            "WrongToken" => RefusedReason::BadToken,
            "NoId" => RefusedReason::NoId,
            "UnknownId" => RefusedReason::UnknownId,
            "UnknownPath" => RefusedReason::UnknownPath,
            "MethodNotAllowed" => RefusedReason::MethodNotAllowed,
            "NoRoute" => RefusedReason::NoRoute,
            "OtherRoutesRole" | "OtherRoutesId" => RefusedReason::OtherRoute,
            _ => RefusedReason::Other,
        }
    }
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnRefused {
    /// A remote peer outside the `allow` list.
    NotAllowed,
    /// No room in the connection budget for that peer.
    NoRoom,
}

/// The counters of one listener, shared by its accept loop and its connections' audit trails.
#[derive(Debug)]
pub(crate) struct ListenerStats {
    accepted: AtomicU64,
    closed_not_allowed: AtomicU64,
    closed_no_room: AtomicU64,
    open: AtomicU64,
    refused: [AtomicU64; RefusedReason::ALL.len()],
}

/// An open connection, counted as such until dropped.
#[derive(Debug)]
pub(crate) struct OpenConn(Arc<ListenerStats>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for ListenerStats {
    fn default() -> Self {
        ListenerStats {
            accepted: AtomicU64::new(0),
            closed_not_allowed: AtomicU64::new(0),
            closed_no_room: AtomicU64::new(0),
            open: AtomicU64::new(0),
            refused: [const { AtomicU64::new(0) }; RefusedReason::ALL.len()],
        }
    }
}

impl ListenerStats {
    /// Counters starting now.
    pub fn new() -> Arc<ListenerStats> {
        Arc::new(ListenerStats::default())
    }

    /// A connection was accepted and admitted; it counts as open while the guard lives.
    pub fn opened(self: &Arc<Self>) -> OpenConn {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConn(self.clone())
    }

    /// A connection was closed at once.
    pub fn conn_refused(&self, why: ConnRefused) {
        match why {
            ConnRefused::NotAllowed => &self.closed_not_allowed,
            ConnRefused::NoRoom => &self.closed_no_room,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused.
    pub fn refused(&self, reason: RefusedReason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests refused so far for `reason`.
    #[cfg(test)]
    fn refused_count(&self, reason: RefusedReason) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }
}

/// The `phase` state set's states, as `status` spells them.
const PHASES: [(Phase, &str); 8] = [
    (Phase::Starting, "starting"),
    (Phase::Fresh, "fresh"),
    (Phase::Refreshing, "refreshing"),
    (Phase::NeedsMfa, "needs-mfa"),
    (Phase::NeedsLogin, "needs-login"),
    (Phase::Error, "error"),
    (Phase::Locked, "locked"),
    (Phase::Idle, "idle"),
];

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(n, v)| (*n, (*v).to_owned())).collect()
}

fn counter(total: u64, created: OffsetDateTime) -> Point {
    Point::Counter {
        total,
        created: Some(unix(created)),
    }
}

/// The families of the served profiles.
fn profile_families(state: &State, now: OffsetDateTime) -> Vec<Family> {
    let mut phase = Family::new(
        "credvend_profile_phase",
        Kind::StateSet,
        "What each served profile is doing (as credvend status shows it).",
    );
    let mut expiry = Family::new(
        "credvend_profile_expiry_timestamp_seconds",
        Kind::Gauge,
        "When the credentials held for the profile expire (Unix time); absent while none are held.",
    )
    .unit("seconds");
    let mut remaining = Family::new(
        "credvend_profile_expiry_remaining_seconds",
        Kind::Gauge,
        "Seconds until the credentials held for the profile expire; absent while none are held.",
    )
    .unit("seconds");
    let mut refreshes = Family::new(
        "credvend_profile_refreshes",
        Kind::Counter,
        "Successful mints of the profile's credentials.",
    );
    let mut failures = Family::new(
        "credvend_profile_failures",
        Kind::Counter,
        "Failures recorded for the profile, by problem code (only codes that occurred).",
    );
    let mut served = Family::new(
        "credvend_profile_requests_served",
        Kind::Counter,
        "Requests answered with the profile's credentials (every endpoint and the control socket).",
    );
    let mut refused = Family::new(
        "credvend_profile_requests_refused",
        Kind::Counter,
        "Requests for the profile answered without credentials, by problem code (only codes that occurred).",
    );
    for (name, unit) in &state.units {
        let cell = &unit.cell;
        let created = cell.created();
        let status = cell.status();
        let states = PHASES.iter().map(|(p, s)| (*s, *p == status.phase));
        phase.push(
            labels(&[("profile", name)]),
            Point::StateSet(states.collect()),
        );
        if let Some(v) = cell.current() {
            let exp = v.creds.expiration;
            expiry.push(labels(&[("profile", name)]), Point::Gauge(unix(exp)));
            let left = (exp - now).as_seconds_f64().floor();
            remaining.push(labels(&[("profile", name)]), Point::Gauge(left));
        }
        refreshes.push(
            labels(&[("profile", name)]),
            counter(status.refreshes, created),
        );
        served.push(
            labels(&[("profile", name)]),
            counter(cell.requests(), created),
        );
        by_code(&mut failures, name, cell.failures_by_code(), created);
        by_code(&mut refused, name, cell.refused_by_code(), created);
    }
    vec![
        phase, expiry, remaining, refreshes, failures, served, refused,
    ]
}

/// One counter per problem code that occurred.
fn by_code(
    family: &mut Family,
    profile: &str,
    counts: [u64; ProblemCode::ALL.len()],
    created: OffsetDateTime,
) {
    for (code, n) in ProblemCode::ALL.iter().zip(counts) {
        if n > 0 {
            family.push(
                labels(&[("profile", profile), ("code", code.as_str())]),
                counter(n, created),
            );
        }
    }
}

/// The families of the listeners.
fn listener_families(state: &State) -> Vec<Family> {
    let mut accepted = Family::new(
        "credvend_listener_connections_accepted",
        Kind::Counter,
        "Connections accepted and admitted.",
    );
    let mut closed = Family::new(
        "credvend_listener_connections_refused",
        Kind::Counter,
        "Connections closed as soon as they were accepted: a remote peer outside the allow list, or no room in the connection budget.",
    );
    let mut open = Family::new(
        "credvend_listener_connections_open",
        Kind::Gauge,
        "Connections open now.",
    );
    let mut refused = Family::new(
        "credvend_listener_requests_refused",
        Kind::Counter,
        "Requests refused, by reason (no_credentials: the profile had nothing to give).",
    );
    for l in &state.listeners {
        let s = &l.stats;
        let address = l.addr.to_string();
        let id = [("listener", l.kind()), ("address", address.as_str())];
        let with = |k: &'static str, v: &str| {
            let mut out = labels(&id);
            out.push((k, v.to_owned()));
            out
        };
        let total = |a: &AtomicU64| Point::Counter {
            total: a.load(Ordering::Relaxed),
            created: None,
        };
        accepted.push(labels(&id), total(&s.accepted));
        closed.push(with("reason", "not_allowed"), total(&s.closed_not_allowed));
        closed.push(with("reason", "no_room"), total(&s.closed_no_room));
        open.push(
            labels(&id),
            Point::Gauge(s.open.load(Ordering::Relaxed) as f64),
        );
        for reason in RefusedReason::ALL {
            refused.push(
                with("reason", reason.as_str()),
                total(&s.refused[reason.index()]),
            );
        }
    }
    vec![accepted, closed, open, refused]
}

/// STS call latency and clock skew.
fn sts_families() -> Vec<Family> {
    let mut latency = Family::new(
        "credvend_sts_request_duration_seconds",
        Kind::Histogram,
        "Time of each STS HTTP attempt (retries counted separately), by action (actions called at least once).",
    )
    .unit("seconds");
    for (action, snap) in histogram::sts_latency() {
        if snap.count() == 0 {
            continue;
        }
        latency.push(
            labels(&[("action", action)]),
            Point::Histogram {
                buckets: snap.buckets,
                sum: snap.sum,
            },
        );
    }
    let mut skew = Family::new(
        "credvend_sts_clock_skew_seconds",
        Kind::Gauge,
        "STS's clock minus this machine's, from the Date header of the last STS answer; absent before one.",
    )
    .unit("seconds");
    if let Some(s) = crate::sts::clock_skew() {
        skew.push(Vec::new(), Point::Gauge(s.seconds as f64));
    }
    vec![latency, skew]
}

/// The daemon's own facts.
fn daemon_families(state: &State, started: OffsetDateTime) -> Vec<Family> {
    let mut build = Family::new("credvend_build", Kind::Info, "The running credvend.");
    build.push(
        labels(&[("version", env!("CARGO_PKG_VERSION"))]),
        Point::Info,
    );
    let mut start = Family::new(
        "credvend_start_time_seconds",
        Kind::Gauge,
        "When the daemon started (Unix time).",
    )
    .unit("seconds");
    start.push(Vec::new(), Point::Gauge(unix(started)));
    let mut reload = Family::new(
        "credvend_config_last_reload_successful",
        Kind::Gauge,
        "1 when the configuration serving is the newest, 0 after a reload failed (credvend status says why).",
    );
    let ok = if state.reload_error.is_none() {
        1.0
    } else {
        0.0
    };
    reload.push(Vec::new(), Point::Gauge(ok));
    vec![build, start, reload]
}

/// Every family, in the order they are exposed.
fn families(state: &State, started: OffsetDateTime, now: OffsetDateTime) -> Vec<Family> {
    let mut all = daemon_families(state, started);
    all.extend(profile_families(state, now));
    all.extend(listener_families(state));
    all.extend(sts_families());
    all
}

/// Whether a profile's credentials can be served now, and what it is doing (for `/healthz`).
pub(crate) struct Freshness {
    /// The profile.
    pub profile: String,
    /// Credentials are held and servable (not within the serving floor of their expiry).
    pub fresh: bool,
    /// Its phase, as `status` spells it (`not-served` when the daemon has no such profile).
    pub phase: &'static str,
    /// Seconds left on what is held.
    pub remaining: Option<i64>,
    /// The recorded problem's code, if any.
    pub problem: Option<ProblemCode>,
}

impl Daemon {
    /// The metrics, in OpenMetrics text format.
    pub(crate) async fn metrics_text(&self) -> String {
        let now = OffsetDateTime::now_utc();
        let families = {
            let state = self.state.lock().await;
            families(&state, self.started, now)
        };
        render(&families)
    }

    /// The freshness of every prewarmed profile ([`super::reconcile::prewarmed`]).
    pub(crate) async fn prewarmed_freshness(&self) -> Vec<Freshness> {
        let now = OffsetDateTime::now_utc();
        let state = self.state.lock().await;
        super::reconcile::prewarmed(&state)
            .into_iter()
            .map(|profile| match state.units.get(&profile) {
                None => Freshness {
                    profile,
                    fresh: false,
                    phase: "not-served",
                    remaining: None,
                    problem: None,
                },
                Some(u) => {
                    let status = u.cell.status();
                    let held = u.cell.current().map(|v| v.creds.expiration);
                    Freshness {
                        profile,
                        fresh: held.is_some_and(|e| Policy::servable(e, now)),
                        phase: PHASES
                            .iter()
                            .find(|(p, _)| *p == status.phase)
                            .map_or("unknown", |(_, s)| *s),
                        remaining: held.map(|e| (e - now).whole_seconds()),
                        problem: status.last_error.map(|p| p.code),
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::openmetrics::{is_label_name, is_metric_name};

    #[test]
    fn reasons_are_listed_at_their_index_with_label_safe_names() {
        for (i, r) in RefusedReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            assert!(is_metric_name(r.as_str()), "{r:?}");
        }
        for code in [
            "NoToken",
            "WrongToken",
            "NoId",
            "UnknownId",
            "UnknownPath",
            "MethodNotAllowed",
        ] {
            assert_ne!(RefusedReason::of_audit_code(code), RefusedReason::Other);
        }
        assert_eq!(RefusedReason::of_audit_code("?"), RefusedReason::Other);
    }

    #[test]
    fn listener_counters_count() {
        let s = ListenerStats::new();
        let a = s.opened();
        let b = s.opened();
        drop(a);
        s.conn_refused(ConnRefused::NoRoom);
        s.refused(RefusedReason::BadToken);
        s.refused(RefusedReason::BadToken);
        assert_eq!(s.accepted.load(Ordering::Relaxed), 2);
        assert_eq!(s.open.load(Ordering::Relaxed), 1);
        assert_eq!(s.closed_no_room.load(Ordering::Relaxed), 1);
        assert_eq!(s.refused_count(RefusedReason::BadToken), 2);
        drop(b);
        assert_eq!(s.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn phases_and_labels_are_valid_names() {
        assert!(PHASES.iter().all(|(_, s)| !s.is_empty()));
        for l in ["profile", "code", "listener", "address", "reason", "action"] {
            assert!(is_label_name(l));
        }
    }
}
