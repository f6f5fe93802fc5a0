//! credvend: a per-user daemon that vends short-lived AWS credentials.
//!
//! Long-term keys live in the OS keyring; the daemon mints temporary credentials with STS,
//! keeps them in memory, refreshes them in the background, and serves them over an IMDSv2-compatible
//! endpoint and the ECS container-credentials endpoint. See `ARCHITECTURE.md` for the map.
//!
//! Pure core (no IO, property-tested and fuzzed): [`sigv4`], [`sts::wire`], [`sts::endpoint`].
//! IO edges: [`sts::client`], [`keystore`] (the OS keyring).

pub mod creds;
pub mod keystore;
pub mod sigv4;
pub mod sts;
