//! Per-profile state shared by the refresher (the only writer) and the HTTP handlers (readers).
//!
//! The current credentials live in a `watch` channel: a handler's read is a read-lock and an `Arc`
//! clone, and the response bodies were rendered once when the credentials arrived, so serving a
//! request does no JSON work, no allocation beyond the response, and never waits for STS.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::creds::{TemporaryCredentials, format_aws_time};

/// Credentials as handed out, with every response body pre-rendered.
pub struct Vended {
    /// The credentials.
    pub creds: TemporaryCredentials,
    /// When they were obtained (IMDS `LastUpdated`).
    pub issued: OffsetDateTime,
    /// The role ARN reported to ECS clients (the configured role, or the identity's ARN).
    pub role_arn: Option<String>,
    /// `GET .../security-credentials/ROLE` body.
    pub imds_json: Bytes,
    /// `GET .../security-credentials-extended/ROLE` body (adds `AccountId`).
    pub imds_extended_json: Bytes,
    /// The ECS endpoint body.
    pub ecs_json: Bytes,
}

impl std::fmt::Debug for Vended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vended")
            .field("creds", &self.creds)
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

impl Vended {
    /// Renders the bodies for `creds`. The expiry is written as whole seconds with `Z`, truncated.
    pub fn new(
        creds: TemporaryCredentials,
        issued: OffsetDateTime,
        role_arn: Option<String>,
    ) -> Vended {
        let token = creds
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default();
        let expiration = format_aws_time(creds.expiration);
        let last_updated = format_aws_time(issued);
        let mut imds = serde_json::json!({
            "Code": "Success",
            "LastUpdated": last_updated,
            "Type": "AWS-HMAC",
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key.expose_secret(),
            "Token": token,
            "Expiration": expiration,
        });
        let imds_json =
            Bytes::from(serde_json::to_vec_pretty(&imds).expect("JSON values serialize"));
        if let Some(account) = &creds.account_id {
            imds["AccountId"] = account.clone().into();
        }
        let imds_extended_json =
            Bytes::from(serde_json::to_vec_pretty(&imds).expect("JSON values serialize"));
        let mut ecs = serde_json::json!({
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key.expose_secret(),
            "Token": token,
            "Expiration": expiration,
        });
        if let Some(account) = &creds.account_id {
            ecs["AccountId"] = account.clone().into();
        }
        if let Some(arn) = role_arn.as_ref().or(creds.arn.as_ref()) {
            ecs["RoleArn"] = arn.clone().into();
        }
        let ecs_json = Bytes::from(serde_json::to_vec(&ecs).expect("JSON values serialize"));
        Vended {
            creds,
            issued,
            role_arn,
            imds_json,
            imds_extended_json,
            ecs_json,
        }
    }
}

/// What a profile is doing, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Minting the first credentials.
    Starting,
    /// Serving credentials; the next rotation is scheduled.
    Fresh,
    /// A rotation is in progress (current credentials still served).
    Refreshing,
    /// Waiting for `credvend login PROFILE`.
    NeedsMfa,
    /// The last attempt failed; retrying with backoff.
    Error,
    /// `credvend lock` forgot the credentials; waiting for `refresh`.
    Locked,
}

/// Why a profile cannot be served, in the words an SDK user sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// IMDS-style `Code`, e.g. `NeedsMfa`, `AssumeRoleUnauthorizedAccess`.
    pub code: String,
    /// One line naming the fix, e.g. "run `credvend login dev`".
    pub message: String,
    /// Whether retrying may succeed without the user doing anything (STS down, throttled).
    pub transient: bool,
    /// When it was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// Status fields the refresher keeps for `status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Current phase.
    pub phase: Phase,
    /// Last failure (kept while credentials are still served after a failed refresh).
    pub last_error: Option<Problem>,
    /// Next scheduled rotation or retry.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_refresh: Option<OffsetDateTime>,
    /// When the last successful mint happened.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_refresh: Option<OffsetDateTime>,
    /// Number of successful mints.
    pub refreshes: u64,
}

/// One served profile.
pub struct ProfileCell {
    /// Profile name.
    pub name: String,
    current: watch::Sender<Option<Arc<Vended>>>,
    status: Mutex<Status>,
    requests: AtomicU64,
}

impl std::fmt::Debug for ProfileCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileCell")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ProfileCell {
    /// A cell with no credentials yet.
    pub fn new(name: &str) -> Arc<ProfileCell> {
        Arc::new(ProfileCell {
            name: name.to_owned(),
            current: watch::channel(None).0,
            status: Mutex::new(Status {
                phase: Phase::Starting,
                last_error: None,
                next_refresh: None,
                last_refresh: None,
                refreshes: 0,
            }),
            requests: AtomicU64::new(0),
        })
    }

    /// The credentials currently held (possibly expired: check before serving).
    pub fn current(&self) -> Option<Arc<Vended>> {
        self.current.borrow().clone()
    }

    /// Waits until credentials exist or `timeout` passes (cold start only).
    pub async fn wait_first(&self, timeout: std::time::Duration) -> Option<Arc<Vended>> {
        tracing::debug!(profile = %self.name, "a request waits for the first credentials");
        let mut rx = self.current.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|c| c.is_some())).await;
        match waited {
            Ok(Ok(v)) => v.clone(),
            _ => None,
        }
    }

    /// Installs new credentials (refresher only).
    pub fn install(&self, vended: Vended, next_refresh: OffsetDateTime) {
        let at = vended.issued;
        self.current.send_replace(Some(Arc::new(vended)));
        let mut s = self.status.lock().expect("status lock");
        s.phase = Phase::Fresh;
        s.last_error = None;
        s.next_refresh = Some(next_refresh);
        s.last_refresh = Some(at);
        s.refreshes += 1;
    }

    /// Records a failure (refresher only); current credentials stay.
    pub fn fail(&self, phase: Phase, problem: Problem, next_refresh: Option<OffsetDateTime>) {
        let mut s = self.status.lock().expect("status lock");
        s.phase = phase;
        s.last_error = Some(problem);
        s.next_refresh = next_refresh;
    }

    /// Moves the next rotation (new refresh settings).
    pub fn set_next_refresh(&self, at: OffsetDateTime) {
        self.status.lock().expect("status lock").next_refresh = Some(at);
    }

    /// Marks a rotation in progress.
    pub fn set_phase(&self, phase: Phase) {
        self.status.lock().expect("status lock").phase = phase;
    }

    /// Forgets the credentials (`credvend lock`).
    pub fn forget(&self) {
        self.current.send_replace(None);
        let mut s = self.status.lock().expect("status lock");
        s.phase = Phase::Locked;
        s.last_error = None;
        s.next_refresh = None;
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Counts one credential response.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Credential responses served so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use time::macros::datetime;

    fn creds() -> TemporaryCredentials {
        TemporaryCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::from("s3cr3t"),
            session_token: Some(SecretString::from("tok")),
            expiration: datetime!(2026-11-22 08:53:52.884340 UTC),
            account_id: Some("123456789012".into()),
            arn: Some("arn:aws:sts::123456789012:assumed-role/r/s".into()),
        }
    }

    #[test]
    fn bodies_have_every_field_sdks_require() {
        let v = Vended::new(
            creds(),
            datetime!(2026-11-22 07:53:52.5 UTC),
            Some("arn:aws:iam::123456789012:role/r".into()),
        );
        let imds: serde_json::Value = serde_json::from_slice(&v.imds_json).unwrap();
        assert_eq!(imds["Code"], "Success");
        assert_eq!(imds["Type"], "AWS-HMAC");
        assert_eq!(imds["Expiration"], "2026-11-22T08:53:52Z");
        assert_eq!(imds["LastUpdated"], "2026-11-22T07:53:52Z");
        assert_eq!(imds["SecretAccessKey"], "s3cr3t");
        assert!(imds.get("AccountId").is_none());
        let ext: serde_json::Value = serde_json::from_slice(&v.imds_extended_json).unwrap();
        assert_eq!(ext["AccountId"], "123456789012");
        let ecs: serde_json::Value = serde_json::from_slice(&v.ecs_json).unwrap();
        assert_eq!(ecs["Token"], "tok");
        assert_eq!(ecs["RoleArn"], "arn:aws:iam::123456789012:role/r");
        assert_eq!(ecs["AccountId"], "123456789012");
        assert!(!format!("{v:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn cold_start_waiters_see_the_first_credentials() {
        let cell = ProfileCell::new("p");
        assert!(
            cell.wait_first(std::time::Duration::from_millis(1))
                .await
                .is_none()
        );
        let c2 = cell.clone();
        let waiter =
            tokio::spawn(async move { c2.wait_first(std::time::Duration::from_secs(30)).await });
        cell.install(
            Vended::new(creds(), OffsetDateTime::now_utc(), None),
            OffsetDateTime::now_utc(),
        );
        assert!(waiter.await.unwrap().is_some());
        assert_eq!(cell.status().phase, Phase::Fresh);
    }
}
