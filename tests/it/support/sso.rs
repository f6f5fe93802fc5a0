//! Starts the IAM Identity Center stand-in (`sso_standin.py`, whose module doc says what it does
//! and why it is honest) next to moto, and drives its test controls.
//!
//! Each test starts its own stand-in: its settings and counters are per process, so tests never
//! see each other's changes.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};

use credvend::sso::SsoEndpoints;
use secrecy::ExposeSecret;

use super::moto::{Moto, venv_bin};

/// One role the portal hands out: `account_id`/`role_name` as the portal names it, and the IAM
/// role the stand-in assumes at moto for it.
#[derive(Clone, Debug)]
pub struct SsoRole {
    /// The account (`sso_account_id`).
    pub account_id: String,
    /// The portal's role name (`sso_role_name`).
    pub role_name: String,
    /// The IAM role at moto, which must trust moto's admin user.
    pub role_arn: String,
}

/// A running stand-in; stopped when dropped.
pub struct SsoStandin {
    /// `http://127.0.0.1:PORT`: both the OIDC service and the portal.
    pub url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    http: reqwest::Client,
}

impl SsoStandin {
    /// Starts the stand-in with `roles`, minting role credentials through `moto`'s AssumeRole.
    pub fn start(moto: &Moto, roles: &[SsoRole]) -> SsoStandin {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/sso_standin.py"
        ))
        .args(["--moto", &moto.url]);
        for r in roles {
            cmd.arg("--role")
                .arg(format!("{}/{}={}", r.account_id, r.role_name, r.role_arn));
        }
        let admin = moto.admin();
        let mut child = cmd
            // The admin key goes through the environment, not the process list.
            .env(
                "MOTO_ADMIN",
                format!(
                    "{}:{}",
                    admin.access_key_id,
                    admin.secret_access_key.expose_secret()
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test venv's python (run scripts/test, which creates .venv)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("sso-standin ready ")
            .unwrap_or_else(|| panic!("the SSO stand-in did not start: {line:?}"))
            .to_owned();
        SsoStandin {
            url,
            stdin: child.stdin.take(),
            child,
            http: super::http_client(),
        }
    }

    /// Both services at the stand-in's URL.
    pub fn endpoints(&self) -> SsoEndpoints {
        SsoEndpoints::custom(self.url.parse().unwrap())
    }

    async fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .http
            .post(format!("{}/_standin/{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status.is_success(),
            "stand-in control {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap()
    }

    /// Calls per operation (`CreateToken`, `CreateToken:refresh_token`, `GetRoleCredentials`,
    /// `AssumeRole`, `error:InvalidGrantException`, ...).
    pub async fn stats(&self) -> HashMap<String, u64> {
        let text = self
            .http
            .get(format!("{}/_standin/stats", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// One counter of [`SsoStandin::stats`] (0 when never counted).
    pub async fn stat(&self, key: &str) -> u64 {
        self.stats().await.get(key).copied().unwrap_or(0)
    }

    /// Changes settings (`auto_approve`, `pending_polls`, `slow_down_polls`, `authorize`,
    /// `access_token_ttl`, `device_code_ttl`, `registration_ttl`, `interval`,
    /// `role_session_seconds`); returns all of them.
    pub async fn settings(&self, changes: serde_json::Value) -> serde_json::Value {
        self.control("settings", changes).await
    }

    /// The one-time secrets of the sign-ins so far: device codes, authorization codes and the
    /// PKCE verifiers that redeemed them.
    pub async fn issued(&self) -> Vec<String> {
        let v = self.control("issued", serde_json::json!({})).await;
        ["device_codes", "auth_codes", "code_verifiers"]
            .iter()
            .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    /// Approves the device sign-in showing `user_code`.
    pub async fn approve(&self, user_code: &str) {
        self.control("approve", serde_json::json!({ "user_code": user_code }))
            .await;
    }

    /// Denies the device sign-in showing `user_code`.
    pub async fn deny(&self, user_code: &str) {
        self.control(
            "approve",
            serde_json::json!({ "user_code": user_code, "deny": true }),
        )
        .await;
    }

    /// Revokes every refresh token; returns how many were live.
    pub async fn revoke_refresh_tokens(&self) -> u64 {
        self.control("revoke-refresh-tokens", serde_json::json!({}))
            .await["revoked"]
            .as_u64()
            .unwrap()
    }

    /// Expires every access token issued so far; returns how many were live.
    pub async fn expire_access_tokens(&self) -> u64 {
        self.control("expire-access-tokens", serde_json::json!({}))
            .await["expired"]
            .as_u64()
            .unwrap()
    }

    /// Forgets clients, tokens and counters; settings back to their defaults.
    pub async fn reset(&self) {
        self.control("reset", serde_json::json!({})).await;
    }
}

impl Drop for SsoStandin {
    fn drop(&mut self) {
        // Closing its stdin ends it (it also does so by itself if this process dies).
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
