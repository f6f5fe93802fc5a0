//! What the daemon's metrics are made of, below the daemon: the OpenMetrics text renderer (pure)
//! and the lock-free latency histogram, with the process-wide one of STS calls that the STS
//! client records into. The daemon's own counters (per profile, per listener) and the metric
//! families built from them are in `daemon::metrics`.
//!
//! It imports nothing from the rest of the crate, so every layer may record into it.

pub(crate) mod histogram;
pub(crate) mod openmetrics;
