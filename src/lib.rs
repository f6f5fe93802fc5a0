//! credvend: a per-user daemon that vends short-lived AWS credentials.
//!
//! Long-term keys live in the OS keyring; the daemon mints temporary credentials with STS,
//! keeps them in memory, refreshes them in the background, and serves them over an IMDSv2-compatible
//! endpoint and the ECS container-credentials endpoint. See `ARCHITECTURE.md` for the map.
//!
//! Pure core (no IO, property-tested and fuzzed): [`sigv4`], [`sts::wire`], [`sts::endpoint`],
//! [`profile`] (the shared config/credentials file parser and the credentials-file editor).
//! IO edges: [`sts::client`].

pub mod creds;
pub mod profile;
pub mod sigv4;
pub mod sts;
pub mod config;
pub mod daemon;
pub mod paths;
pub mod mint;
pub mod cli;
pub mod logging;
pub mod sys;
