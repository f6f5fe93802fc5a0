//! A lock-free latency histogram with fixed buckets, and the process-wide one of STS calls per
//! action ([`record_sts_call`], recorded by `sts::client` for every attempt; read by the
//! daemon's metrics).
//!
//! Observing is two relaxed atomic additions: no lock, no allocation. The buckets are not
//! cumulative in memory; [`Histogram::snapshot`] adds them up, and derives the count from them so
//! that `_count` always equals the `+Inf` bucket, as the format requires, even while
//! observations arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds, with their canonical text (OpenMetrics "Canonical
/// Numbers": Go's `%g` with `.0` added to whole numbers). From a loopback STS stand-in's few
/// milliseconds to the STS client's 20 s timeout.
pub(crate) const BOUNDS: [(&str, f64); 12] = [
    ("0.005", 0.005),
    ("0.01", 0.01),
    ("0.025", 0.025),
    ("0.05", 0.05),
    ("0.1", 0.1),
    ("0.25", 0.25),
    ("0.5", 0.5),
    ("1.0", 1.0),
    ("2.5", 2.5),
    ("5.0", 5.0),
    ("10.0", 10.0),
    ("20.0", 20.0),
];

/// Observations in [`BOUNDS`] buckets plus one for everything above the last.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Snapshot {
    /// `(le, observations <= le)`, the last being `("+Inf", count)`.
    pub buckets: Vec<(&'static str, u64)>,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl Snapshot {
    /// Observations in total.
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BOUNDS.partition_point(|(_, bound)| *bound < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The cumulative buckets and the sum.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(BOUNDS.len() + 1);
        let les = BOUNDS.iter().map(|(le, _)| *le).chain(["+Inf"]);
        for (le, b) in les.zip(&self.buckets) {
            total += b.load(Ordering::Relaxed);
            buckets.push((le, total));
        }
        Snapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The STS actions timed, in the order the metrics list them.
pub(crate) const STS_ACTIONS: [&str; 5] = [
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "GetCallerIdentity",
    "GetFederationToken",
    "GetSessionToken",
];

static STS_LATENCY: [Histogram; STS_ACTIONS.len()] = [const { Histogram::new() }; 5];

/// Records one STS HTTP attempt of `action` that took `took` (whatever its outcome). Actions
/// outside [`STS_ACTIONS`] are not recorded.
pub(crate) fn record_sts_call(action: &str, took: Duration) {
    if let Some(i) = STS_ACTIONS.iter().position(|a| *a == action) {
        STS_LATENCY[i].observe(took);
    }
}

/// Every STS action with its latency histogram so far.
pub(crate) fn sts_latency() -> Vec<(&'static str, Snapshot)> {
    STS_ACTIONS
        .iter()
        .zip(&STS_LATENCY)
        .map(|(a, h)| (*a, h.snapshot()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_increasing_and_spelled_canonically() {
        for w in BOUNDS.windows(2) {
            assert!(w[0].1 < w[1].1);
        }
        for (text, v) in BOUNDS {
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
            // Whole numbers carry `.0`; others are the shortest form.
            let want = if v.fract() == 0.0 {
                format!("{v:.1}")
            } else {
                format!("{v}")
            };
            assert_eq!(text, want);
        }
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(5)); // exactly on a bound: le is inclusive
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_millis(900));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), BOUNDS.len() + 1);
        let at = |le: &str| s.buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(at("0.005"), 1);
        assert_eq!(at("0.01"), 2);
        assert_eq!(at("0.5"), 2);
        assert_eq!(at("1.0"), 3);
        assert_eq!(at("20.0"), 3);
        assert_eq!(at("+Inf"), 4);
        assert_eq!(s.count(), 4);
        assert!((s.sum - 60.912).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn sts_actions_are_recorded_by_name() {
        let before = sts_latency();
        record_sts_call("GetFederationToken", Duration::from_millis(30));
        record_sts_call("NotAnAction", Duration::from_millis(30));
        let after = sts_latency();
        let count =
            |v: &[(&str, Snapshot)], a: &str| v.iter().find(|(n, _)| *n == a).unwrap().1.count();
        assert_eq!(
            count(&after, "GetFederationToken"),
            count(&before, "GetFederationToken") + 1
        );
        assert_eq!(after.len(), STS_ACTIONS.len());
    }
}
