//! Shared test support: the shared moto server, the IAM Identity Center stand-in, a scripted fake
//! STS for fault injection, private keyrings, and helpers for unique names and temporary
//! directories.

#![allow(dead_code)]

pub mod clients;
pub mod daemon;
pub mod fake_sts;
pub mod framing;
pub mod http;
pub mod keyring;
pub mod moto;
pub mod raw;
pub mod served;
pub mod sso;
pub mod sts_proxy;
pub mod toml;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this test process and call, for IAM users, roles, keyring services.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u16(..)
    )
}

/// A plain reqwest client for test traffic (installs rustls' ring provider once).
pub fn http_client() -> reqwest::Client {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().no_proxy().build().unwrap()
}
