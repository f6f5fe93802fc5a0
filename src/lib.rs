//! credvend: a per-user daemon that vends short-lived AWS credentials.
//!
//! Long-term keys live in the OS keyring; the daemon mints temporary credentials with STS,
//! keeps them in memory, refreshes them in the background, and serves them over an
//! IMDSv2-compatible endpoint and the ECS container-credentials endpoint. `ARCHITECTURE.md` has
//! the map; in short:
//!
//! - pure core (no IO; unit-, property- and fuzz-tested): [`sigv4`], [`sts::wire`],
//!   [`sts::endpoint`], `profile` (config parser, credentials-file editor, chain resolution),
//!   `config` (daemon TOML), `problem`, `daemon::policy`, `daemon::imds::route`,
//!   [`daemon::token`], `control::proto`, [`sso::pkce`], [`sso::cache`] (parse/render),
//!   `metrics::openmetrics` (the metrics text format);
//! - IO edges: [`sts::client`], [`iam`] (access keys), [`sso`] (IAM Identity Center OIDC and
//!   portal calls), [`keystore`], `mint`, `daemon` (listeners, refreshers, reconciliation),
//!   `control` (the control socket), `cli`, `sys`.
//!
//! Dependencies point one way: `cli` → `daemon` → `mint` → `sts` / `keystore` / `profile`;
//! nothing outside `daemon` imports it (except `cli`, which starts it), and `control::proto`
//! imports no domain type.

pub mod cli;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod control;
pub mod creds;
pub mod daemon;
#[doc(hidden)]
pub mod fuzz;
pub mod iam;
pub mod keystore;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod mint;
pub(crate) mod paths;
pub(crate) mod problem;
pub(crate) mod profile;
pub(crate) mod scope;
pub(crate) mod shutdown;
pub mod sigv4;
pub mod sso;
pub mod sts;
pub mod sys;
