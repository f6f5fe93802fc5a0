//! credvend: a per-user daemon that vends short-lived AWS credentials.
//!
//! Long-term keys live in the OS keyring; the daemon mints temporary credentials with STS,
//! keeps them in memory, refreshes them in the background, and serves them over an IMDSv2-compatible
//! endpoint and the ECS container-credentials endpoint. See `ARCHITECTURE.md` for the map.
//!
//! Pure core (no IO; unit-, property- and fuzz-tested): [`sigv4`], [`sts::wire`],
//! [`sts::endpoint`], [`profile`] (config parser, credentials-file editor, chain resolution),
//! [`config`] (daemon TOML), [`daemon::policy`], [`daemon::imds::route`], [`daemon::token`],
//! [`sso::pkce`], [`sso::cache`] (parse/render), [`sso::oidc::authorize_url`].
//! IO edges: [`sts::client`], [`sso`] (IAM Identity Center OIDC and portal calls), [`keystore`], [`mint`], [`daemon`] (listeners, refresher, control
//! socket), [`cli`], [`sys`].

pub mod cli;
pub mod config;
pub mod creds;
pub mod daemon;
#[doc(hidden)]
pub mod fuzz;
pub mod keystore;
pub mod logging;
pub mod mint;
pub mod paths;
pub mod profile;
pub mod sigv4;
pub mod sso;
pub mod sts;
pub mod sys;
