//! When to rotate, when to retry, and what may still be served. Pure: times in, times out.
//!
//! The numbers come from the SDKs' own refresh windows (`docs/sdk-behaviour.md` section 6): botocore
//! refreshes below 15 minutes left and blocks below 10, the JS SDK and Go's container provider
//! below 5. Credentials handed out with at least 30 minutes left never enter any of those windows,
//! so clients fetch once per rotation instead of once per call.
//!
//! - Rotation starts `lead` before expiry, where `lead = max(margin + head start, lifetime / 2)`:
//!   a 1 h session rotates after ~24 min, a 12 h one after 6 h (long sessions get long margins,
//!   which is time to ride out an STS outage). The head start covers the STS round trip, so the
//!   old credentials still have `margin` left when they are replaced.
//! - `lead` is capped at `lifetime - min_interval`, so a session shorter than the margin (900 s
//!   sessions with the default 35 min margin) rotates at most every `min_interval` instead of in a
//!   loop.
//! - Jitter only moves a rotation earlier, never later.
//! - After a failure: exponential backoff with full jitter, capped, and never later than a quarter of
//!   the remaining lifetime, so several retries happen before the credentials run out.
//! - Credentials are served until `SERVE_FLOOR` before expiry; never after.
//! - A profile waiting for an IAM Identity Center sign-in (`needs-login`) looks for a new one every
//!   `LOGIN_RECHECK`; a refused sign-in is never refreshed again (`mint/sso.rs`), so IAM Identity
//!   Center sees at most a few attempts an hour, whatever happens.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::RefreshSettings;

pub use crate::creds::SERVE_FLOOR;

/// How long an HTTP request on a cold start (no credentials minted yet) waits for the first
/// ones: below the SDKs' 1 s read timeout and Go's 500 ms response-header timeout
/// (`docs/sdk-behaviour.md` section 5).
pub const HTTP_COLD_START_WAIT: Duration = Duration::from_millis(400);

/// The same for the container endpoints (`[ecs]`, `[ecs_agent]`), whose profiles are usually
/// minted on their first request: below the shortest container-client timeout (the JavaScript
/// SDK's 1 s; botocore's is 2 s), and those clients retry a 503 besides
/// (`docs/sdk-behaviour.md` section 7).
pub const CONTAINER_COLD_START_WAIT: Duration = Duration::from_millis(800);

/// How long a CLI request (`credential-process`, `env --static`) waits for the first credentials:
/// a person or a script waits longer than an SDK.
pub const CLI_COLD_START_WAIT: Duration = Duration::from_secs(15);

/// How long before the margin the rotation starts, at most.
const HEAD_START: Duration = Duration::from_secs(60);

/// Largest jitter applied to a rotation time.
const MAX_JITTER: Duration = Duration::from_secs(120);

/// First retry delay after a failed refresh.
pub const RETRY_BASE: Duration = Duration::from_secs(2);

/// Largest retry delay.
pub const RETRY_CAP: Duration = Duration::from_secs(300);

/// How often a `needs-login` profile looks again for a usable sign-in (a `credvend login` whose
/// control request was missed, a new `aws sso login` token in the AWS CLI's cache).
pub const LOGIN_RECHECK: Duration = Duration::from_secs(20 * 60);

fn td(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// The refresh policy of one daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// From `[refresh]`.
    pub settings: RefreshSettings,
}

impl Policy {
    /// How long before expiry the rotation of a session of `lifetime` starts (before jitter).
    pub fn lead(&self, lifetime: Duration) -> Duration {
        let head_start = HEAD_START.min(lifetime / 10);
        let wanted = (self.settings.margin + head_start).max(lifetime / 2);
        let cap = lifetime.saturating_sub(self.settings.min_interval);
        wanted.min(cap)
    }

    /// When to rotate credentials issued at `issued` that expire at `expiration`. `jitter_unit`
    /// is a uniform draw in `0..1`.
    pub fn rotate_at(
        &self,
        issued: OffsetDateTime,
        expiration: OffsetDateTime,
        jitter_unit: f64,
    ) -> OffsetDateTime {
        let lifetime = Duration::try_from(expiration - issued).unwrap_or(Duration::ZERO);
        let lead = self.lead(lifetime);
        let jitter = MAX_JITTER
            .min(lifetime / 20)
            .mul_f64(jitter_unit.clamp(0.0, 1.0));
        let at = expiration - td(lead) - td(jitter);
        let earliest = issued + td(self.settings.min_interval.min(lifetime / 2));
        at.max(earliest)
    }

    /// Delay before retry number `failures` (1 = first retry) when `remaining` is left on the
    /// credentials being served (`None` when there are none).
    pub fn retry_after(
        &self,
        failures: u32,
        remaining: Option<Duration>,
        jitter_unit: f64,
    ) -> Duration {
        let exp = RETRY_BASE
            .checked_mul(1u32 << failures.saturating_sub(1).min(16))
            .unwrap_or(RETRY_CAP)
            .min(RETRY_CAP);
        // Full jitter, but never below half the ceiling so retries cannot hammer STS.
        let delay = exp.mul_f64(0.5 + 0.5 * jitter_unit.clamp(0.0, 1.0));
        match remaining {
            Some(left) => delay.min((left / 4).max(RETRY_BASE)),
            None => delay,
        }
    }

    /// When a profile that needs a sign-in at `now` looks again.
    pub fn login_recheck_at(now: OffsetDateTime) -> OffsetDateTime {
        now + td(LOGIN_RECHECK)
    }

    /// Whether credentials expiring at `expiration` may be served at `now`.
    pub fn servable(expiration: OffsetDateTime, now: OffsetDateTime) -> bool {
        expiration - now > td(SERVE_FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn policy(margin: u64, min_interval: u64) -> Policy {
        Policy {
            settings: RefreshSettings {
                margin: Duration::from_secs(margin),
                min_interval: Duration::from_secs(min_interval),
                idle_after: Duration::from_secs(4 * 3600),
            },
        }
    }

    impl Policy {
        /// The least time left that served credentials are guaranteed to have for a session of
        /// `lifetime` when rotations succeed (used by tests and `status`).
        fn guaranteed_remaining(&self, lifetime: Duration) -> Duration {
            let head_start = HEAD_START.min(lifetime / 10);
            self.lead(lifetime)
                .saturating_sub(head_start)
                .min(self.settings.margin)
        }
    }

    fn mins(m: i64) -> time::Duration {
        time::Duration::minutes(m)
    }

    #[test]
    fn one_hour_session_rotates_with_more_than_35_minutes_left() {
        let p = Policy {
            settings: RefreshSettings::default(),
        };
        for unit in [0.0, 0.5, 1.0] {
            let at = p.rotate_at(T0, T0 + mins(60), unit);
            let left = T0 + mins(60) - at;
            assert!(left >= mins(36), "{left}");
            assert!(left <= mins(38), "{left}");
        }
        assert!(p.guaranteed_remaining(Duration::from_secs(3600)) >= Duration::from_secs(30 * 60));
    }

    #[test]
    fn long_sessions_rotate_at_half_life() {
        let p = Policy {
            settings: RefreshSettings::default(),
        };
        let at = p.rotate_at(T0, T0 + mins(12 * 60), 0.0);
        assert_eq!(at, T0 + mins(6 * 60));
    }

    #[test]
    fn short_sessions_never_loop() {
        // 900 s sessions under the default 35 min margin: rotate after min_interval (5 min).
        let p = Policy {
            settings: RefreshSettings::default(),
        };
        let at = p.rotate_at(T0, T0 + mins(15), 0.0);
        assert_eq!(at, T0 + mins(5));
        // Even a 2-minute session waits a minute.
        let at = p.rotate_at(T0, T0 + mins(2), 1.0);
        assert!(at >= T0 + mins(1), "{at}");
    }

    #[test]
    fn test_margins_rotate_quickly_and_keep_the_margin() {
        // Short sessions with a large margin, like the rotation test (which uses 850 s / 3 s):
        // 900 s sessions, 800 s margin, 5 s min interval.
        let p = policy(800, 5);
        for unit in [0.0, 0.5, 1.0] {
            let at = p.rotate_at(T0, T0 + mins(15), unit);
            let left = T0 + mins(15) - at;
            assert!(left >= time::Duration::seconds(860), "{left}");
            assert!(at >= T0 + time::Duration::seconds(5));
        }
        assert_eq!(
            p.guaranteed_remaining(Duration::from_secs(900)),
            Duration::from_secs(800)
        );
    }

    #[test]
    fn jitter_only_moves_earlier() {
        let p = Policy {
            settings: RefreshSettings::default(),
        };
        let base = p.rotate_at(T0, T0 + mins(60), 0.0);
        for i in 0..=10 {
            assert!(p.rotate_at(T0, T0 + mins(60), f64::from(i) / 10.0) <= base);
        }
    }

    #[test]
    fn retries_back_off_and_respect_remaining_time() {
        let p = Policy {
            settings: RefreshSettings::default(),
        };
        let ceilings: Vec<u64> = (1..=10)
            .map(|n| p.retry_after(n, None, 1.0).as_secs())
            .collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert!(p.retry_after(3, None, 0.0) >= Duration::from_secs(4));
        assert_eq!(
            p.retry_after(10, Some(Duration::from_secs(400)), 1.0),
            Duration::from_secs(100)
        );
        assert_eq!(
            p.retry_after(10, Some(Duration::from_secs(1)), 1.0),
            RETRY_BASE
        );
    }

    #[test]
    fn serve_floor() {
        assert!(Policy::servable(T0 + mins(2), T0));
        assert!(!Policy::servable(T0 + time::Duration::seconds(59), T0));
        assert!(!Policy::servable(T0 - mins(1), T0));
    }

    #[test]
    fn a_refused_sign_in_is_tried_at_most_four_times_an_hour() {
        // The refresher's schedule once a profile is `needs-login`: one wake every
        // `login_recheck_at`, and at most one refresh attempt per wake (in fact none after the
        // refusal: mint/sso.rs keeps a refused sign-in and sends nothing until a new token
        // appears). A shared SSO session does not multiply it: its profiles refresh under one
        // lock and see the same refusal. Count the wakes within one hour of the refusal.
        let refused_at = T0;
        let mut wake = refused_at;
        let mut attempts = 0;
        while wake < refused_at + mins(60) {
            attempts += 1;
            wake = Policy::login_recheck_at(wake);
        }
        assert_eq!(attempts, 3);
        assert!(attempts <= 4, "a few per hour");
        // A transient failure (IAM Identity Center unreachable) is not a refusal: it follows the
        // ordinary backoff, which after its ramp (2 s doubling) retries at most once per half
        // RETRY_CAP (the floor of each delay is half its ceiling): about 30 an hour, never a loop.
        let p = Policy {
            settings: RefreshSettings::default(),
        };
        let mut t = Duration::ZERO;
        let mut tries = 0;
        while t < Duration::from_secs(3600) {
            tries += 1;
            t += p.retry_after(tries, None, 0.0);
        }
        let ramp = 8;
        let bound = ramp + 3600 / (RETRY_CAP.as_secs() / 2) + 1;
        assert!(
            u64::from(tries) <= bound,
            "{tries} retries in an hour (bound {bound})"
        );
    }
}
