//! Per-profile state shared by the refresher (the only writer) and the HTTP handlers (readers).
//!
//! The current credentials live in a `watch` channel: a handler's read is a read-lock and an `Arc`
//! clone, and the response bodies were rendered once when the credentials arrived, so serving a
//! request does no JSON work, no allocation beyond the response, and never waits for STS.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use super::audit::ConnAudit;
use super::policy::Policy;
use crate::creds::{TemporaryCredentials, format_aws_time};
use crate::problem::{Problem, ProblemCode};

/// Credentials as handed out, with every response body pre-rendered.
pub(crate) struct Vended {
    /// The credentials.
    pub creds: TemporaryCredentials,
    /// When they were obtained (IMDS `LastUpdated`).
    pub issued: OffsetDateTime,
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
            imds_json,
            imds_extended_json,
            ecs_json,
        }
    }
}

/// What a profile is doing, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Minting the first credentials.
    Starting,
    /// Serving credentials; the next rotation is scheduled.
    Fresh,
    /// A rotation is in progress (current credentials still served).
    Refreshing,
    /// Waiting for `credvend login PROFILE`.
    NeedsMfa,
    /// Waiting for `credvend login PROFILE` (an IAM Identity Center sign-in); what is held is
    /// served while valid.
    NeedsLogin,
    /// The last attempt failed; retrying with backoff.
    Error,
    /// `credvend lock` forgot the credentials; waiting for `refresh`.
    Locked,
    /// Minted on demand and not asked for within the idle window: nothing is held and nothing
    /// is rotated until the next request.
    Idle,
}

/// Status fields the refresher keeps for `status`.
#[derive(Clone, Debug)]
pub(crate) struct Status {
    /// Current phase.
    pub phase: Phase,
    /// Last failure (kept while credentials are still served after a failed refresh).
    pub last_error: Option<Problem>,
    /// Next scheduled rotation or retry.
    pub next_refresh: Option<OffsetDateTime>,
    /// When the last successful mint happened.
    pub last_refresh: Option<OffsetDateTime>,
    /// Number of successful mints.
    pub refreshes: u64,
    /// When the mint in progress started (STS, the keyring or a process is being waited for).
    pub minting_since: Option<OffsetDateTime>,
}

/// Who is asking for a profile's credentials, for counting and the audit trail.
pub(crate) struct Asker<'a> {
    /// How long a request may wait for the first credentials of a starting profile.
    pub cold_start: Duration,
    /// The connection's audit trail and the endpoint name (`IMDS`, `ECS`); `None` for the
    /// control socket (the user's own CLI).
    pub audit: Option<(&'a ConnAudit, &'static str)>,
    /// The client's User-Agent.
    pub user_agent: &'a str,
}

/// One served profile.
pub(crate) struct ProfileCell {
    /// Profile name.
    pub name: String,
    current: watch::Sender<Option<Arc<Vended>>>,
    status: Mutex<Status>,
    requests: AtomicU64,
    /// When credentials were last asked for (Unix seconds; 0: never).
    last_use: AtomicI64,
    /// A request found the profile idle: its refresher mints.
    demand: Notify,
    /// A mint attempt ended (credentials installed, or a failure recorded).
    settled: Notify,
    /// Counters of the metrics (`daemon::metrics`): requests refused and failures recorded, by
    /// [`ProblemCode::index`].
    refused: [AtomicU64; ProblemCode::ALL.len()],
    failures: [AtomicU64; ProblemCode::ALL.len()],
    /// When the cell was made: its counters start from 0 then.
    created: OffsetDateTime,
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
                minting_since: None,
            }),
            requests: AtomicU64::new(0),
            last_use: AtomicI64::new(0),
            demand: Notify::new(),
            settled: Notify::new(),
            refused: [const { AtomicU64::new(0) }; ProblemCode::ALL.len()],
            failures: [const { AtomicU64::new(0) }; ProblemCode::ALL.len()],
            created: OffsetDateTime::now_utc(),
        })
    }

    /// A cell that can never be served, for a profile whose configuration is broken.
    pub fn broken(name: &str, problem: Problem) -> Arc<ProfileCell> {
        let cell = ProfileCell::new(name);
        cell.fail(Phase::Error, problem, None);
        cell
    }

    /// The credentials currently held (possibly expired: check before serving).
    pub fn current(&self) -> Option<Arc<Vended>> {
        self.current.borrow().clone()
    }

    /// The credentials to hand `asker`, or why there are none. Waits (at most
    /// `asker.cold_start`) only while the first credentials are being minted (an idle profile
    /// is asked to mint first); never hands out credentials within
    /// [`SERVE_FLOOR`](super::policy::SERVE_FLOOR) of their expiry. Counts and audits the answer.
    pub async fn serve(&self, asker: &Asker<'_>) -> Result<Arc<Vended>, Problem> {
        let current = self.warm(asker.cold_start).await;
        let now = OffsetDateTime::now_utc();
        match current.filter(|v| Policy::servable(v.creds.expiration, now)) {
            Some(v) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                if let Some((audit, endpoint)) = asker.audit {
                    audit.vended(
                        endpoint,
                        &self.name,
                        asker.user_agent,
                        &v.creds.access_key_id,
                    );
                }
                Ok(v)
            }
            None => {
                let problem = self.unavailable();
                self.refused[problem.code.index()].fetch_add(1, Ordering::Relaxed);
                if let Some((audit, endpoint)) = asker.audit {
                    audit.refused(
                        endpoint,
                        &self.name,
                        asker.user_agent,
                        problem.code.as_str(),
                    );
                }
                Err(problem)
            }
        }
    }

    /// Records a use now and returns what is held; an idle profile is asked to mint, and while
    /// the first credentials are being minted this waits for the attempt to end (at most
    /// `timeout`). `exec` and `env` call it before the child starts, so the child's first
    /// request finds credentials.
    pub async fn warm(&self, timeout: Duration) -> Option<Arc<Vended>> {
        self.touch(OffsetDateTime::now_utc());
        if let Some(v) = self.current() {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.current() {
                return Some(v);
            }
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.status().phase {
                Phase::Idle => self.demand.notify_one(),
                Phase::Starting => {}
                // Minted (or failed) since the first look, or nothing to wait for.
                _ => return self.current(),
            }
            tracing::debug!(profile = %self.name, "a request waits for the first credentials");
            let mut rx = self.current.subscribe();
            let waited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    _ = rx.wait_for(|c| c.is_some()) => {}
                    () = &mut settled => {}
                }
            })
            .await;
            if waited.is_err() {
                return self.current();
            }
        }
    }

    /// Records a use of the profile at `at`.
    pub fn touch(&self, at: OffsetDateTime) {
        // Written at most once a second: every other request only reads the shared line.
        let t = at.unix_timestamp();
        if self.last_use.load(Ordering::Relaxed) < t {
            self.last_use.fetch_max(t, Ordering::Relaxed);
        }
    }

    /// When credentials were last asked for.
    pub fn last_use(&self) -> Option<OffsetDateTime> {
        match self.last_use.load(Ordering::Relaxed) {
            0 => None,
            t => OffsetDateTime::from_unix_timestamp(t).ok(),
        }
    }

    /// Waits until a request finds the profile idle (refresher only).
    pub async fn demanded(&self) {
        self.demand.notified().await;
    }

    /// Why nothing can be served now, in full (for the user; HTTP clients get
    /// [`Problem::public_message`]).
    pub fn unavailable(&self) -> Problem {
        let status = self.status();
        let name = &self.name;
        match (status.phase, status.last_error) {
            (_, Some(p)) => p,
            (Phase::Locked, None) => Problem::new(
                ProblemCode::CredentialsLocked,
                format!(
                    "credentials for profile `{name}` were locked; run `credvend refresh {name}`"
                ),
            ),
            (Phase::Starting | Phase::Idle, None) => Problem::new(
                ProblemCode::CredentialsPending,
                format!(
                    "credvend is still minting the first credentials for profile `{name}`; retry shortly (see `credvend status`)"
                ),
            ),
            (_, None) => Problem::new(
                ProblemCode::CredentialsExpired,
                format!(
                    "the credentials for profile `{name}` expired and no new ones could be minted; see `credvend status`"
                ),
            ),
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
        s.minting_since = None;
        drop(s);
        self.settled.notify_waiters();
    }

    /// Records a failure (refresher only); current credentials stay.
    pub fn fail(&self, phase: Phase, problem: Problem, next_refresh: Option<OffsetDateTime>) {
        self.failures[problem.code.index()].fetch_add(1, Ordering::Relaxed);
        let mut s = self.status.lock().expect("status lock");
        s.phase = phase;
        s.last_error = Some(problem);
        s.next_refresh = next_refresh;
        s.minting_since = None;
        drop(s);
        self.settled.notify_waiters();
    }

    /// Moves the next rotation (new refresh settings).
    pub fn set_next_refresh(&self, at: OffsetDateTime) {
        self.status.lock().expect("status lock").next_refresh = Some(at);
    }

    /// Marks a mint in progress (`phase` is `Refreshing` while credentials are held).
    pub fn minting(&self, phase: Phase, since: OffsetDateTime) {
        let mut s = self.status.lock().expect("status lock");
        s.phase = phase;
        s.minting_since = Some(since);
    }

    /// Forgets the credentials (`credvend lock`).
    pub fn forget(&self) {
        self.current.send_replace(None);
        let mut s = self.status.lock().expect("status lock");
        s.phase = Phase::Locked;
        s.last_error = None;
        s.next_refresh = None;
        drop(s);
        self.settled.notify_waiters();
    }

    /// Drops the credentials of a profile nobody uses (refresher only); the next request mints.
    pub fn idle(&self) {
        // The phase first: a request that finds no credentials must find `Idle` and ask for a
        // mint, not an old `Fresh` with nothing to wait for.
        let mut s = self.status.lock().expect("status lock");
        s.phase = Phase::Idle;
        s.last_error = None;
        s.next_refresh = None;
        s.minting_since = None;
        drop(s);
        self.current.send_replace(None);
        self.settled.notify_waiters();
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Credential responses served so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered without credentials so far, by [`ProblemCode::index`].
    pub fn refused_by_code(&self) -> [u64; ProblemCode::ALL.len()] {
        std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Failures recorded so far (failed mints, a code or sign-in needed, a broken configuration,
    /// keys removed), by [`ProblemCode::index`].
    pub fn failures_by_code(&self) -> [u64; ProblemCode::ALL.len()] {
        std::array::from_fn(|i| self.failures[i].load(Ordering::Relaxed))
    }

    /// When the cell was made (its counters started from 0).
    pub fn created(&self) -> OffsetDateTime {
        self.created
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
            packed_policy_size: None,
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
        let asker = |wait| Asker {
            cold_start: wait,
            audit: None,
            user_agent: "-",
        };
        let e = cell
            .serve(&asker(Duration::from_millis(1)))
            .await
            .unwrap_err();
        assert_eq!(e.code, ProblemCode::CredentialsPending);
        let c2 = cell.clone();
        let waiter = tokio::spawn(async move { c2.serve(&asker(Duration::from_secs(30))).await });
        cell.install(
            Vended::new(
                TemporaryCredentials {
                    expiration: OffsetDateTime::now_utc() + time::Duration::hours(1),
                    ..creds()
                },
                OffsetDateTime::now_utc(),
                None,
            ),
            OffsetDateTime::now_utc(),
        );
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(cell.status().phase, Phase::Fresh);
        assert_eq!(cell.requests(), 1);
        assert_eq!(
            cell.refused_by_code()[ProblemCode::CredentialsPending.index()],
            1,
            "the first answer, before any credentials, was a refusal"
        );
        assert_eq!(cell.refused_by_code().iter().sum::<u64>(), 1);
    }

    #[test]
    fn failures_are_counted_by_code() {
        let cell = ProfileCell::broken(
            "p",
            Problem::new(ProblemCode::InvalidConfiguration, "broken"),
        );
        cell.fail(
            Phase::Error,
            Problem::new(ProblemCode::StsUnavailable, "down"),
            None,
        );
        cell.fail(
            Phase::Error,
            Problem::new(ProblemCode::StsUnavailable, "down"),
            None,
        );
        let f = cell.failures_by_code();
        assert_eq!(f[ProblemCode::InvalidConfiguration.index()], 1);
        assert_eq!(f[ProblemCode::StsUnavailable.index()], 2);
        assert_eq!(f.iter().sum::<u64>(), 3);
    }
}
