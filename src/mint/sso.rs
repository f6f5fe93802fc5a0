//! IAM Identity Center in the minter: the access token of each SSO session, and the role
//! credentials (`GetRoleCredentials`) a chain starts with.
//!
//! One [`Slot`] per SSO session (keyed by
//! [`SsoSession::storage_key`](crate::sso::SsoSession::storage_key)), behind its own async mutex:
//! however many profiles share a session, one of them refreshes its token and the others wait and
//! use the new one (single flight, like the MFA session cache). The token comes from memory, else
//! the keyring (where `credvend login` put it), else the AWS CLI's token cache
//! (`~/.aws/sso/cache`, written by `aws sso login`), which is then copied into the keyring. The
//! access token is refreshed with the refresh token when less than [`refresh_window`] is left
//! (botocore's 15 minutes, less for short tokens); the refresher also wakes at that moment
//! ([`Minter::sso_refresh_due`], read from what each use of the slot publishes, so asking never
//! waits) so the refresh happens before expiry, not at the next rotation.
//!
//! No tight loops: a refused refresh (`invalid_grant`, expired registration) marks the slot
//! `refused`, and nothing is sent again until a new token appears (login, keyring, cache file); a
//! transient failure sets `retry_at` (backoff) and the old access token is used while it lasts.
//! Both end in [`MintError::NeedsLogin`] or [`MintError::Sso`], which the refresher schedules.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::{MintError, Minter, RoleStep, Start};
use crate::creds::{TemporaryCredentials, format_aws_time};
use crate::profile::resolve::{Chain, SsoStep};
use crate::sso::{Grant, SignIn, SsoClient, SsoError, cache};
use crate::sts::ClientOptions;

/// botocore refreshes an SSO access token with less than this left (`SSOTokenProvider
/// ._REFRESH_WINDOW`); credvend does too, or earlier for short-lived tokens.
pub(crate) const REFRESH_WINDOW: Duration = Duration::from_secs(15 * 60);

/// An access token with less than this left (or half its refresh window, for short-lived
/// tokens) is not used for `GetRoleCredentials`.
pub(crate) const TOKEN_FLOOR: Duration = Duration::from_secs(30);

/// Refresh attempts of one session are at least this far apart.
pub(crate) const MIN_ATTEMPT_GAP: Duration = Duration::from_secs(10);

/// Longest wait after transient refresh failures.
const RETRY_CAP: Duration = Duration::from_secs(300);

fn td(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// How long before its expiry a sign-in's access token is refreshed: [`REFRESH_WINDOW`], or a
/// quarter of the token's lifetime when that is shorter (a 1 h token refreshes 15 min early, a
/// 40 s one 10 s early). Unknown lifetimes (imported tokens) get the full window.
pub(crate) fn refresh_window(s: &SignIn) -> time::Duration {
    let full = td(REFRESH_WINDOW);
    match s.issued_at {
        Some(issued) => full.min((s.token.expires_at - issued) / 4),
        None => full,
    }
}

/// Below how much time left an access token is no longer used: [`TOKEN_FLOOR`], or half the
/// refresh window of a short-lived token (which would otherwise never be usable).
pub(crate) fn token_floor(s: &SignIn) -> time::Duration {
    td(TOKEN_FLOOR).min(refresh_window(s) / 2)
}

/// The delay before refresh attempt `failures + 1` after `failures` transient failures: 5 s,
/// doubling, at most [`RETRY_CAP`].
pub(crate) fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(5)
        .checked_mul(1 << failures.saturating_sub(1).min(10))
        .unwrap_or(RETRY_CAP)
        .min(RETRY_CAP)
}

/// What the minter knows about one SSO session's sign-in.
#[derive(Default)]
pub(crate) struct Slot {
    /// The sign-in in use.
    sign_in: Option<SignIn>,
    /// Its refresh was refused: only a new token (login, keyring, cache file) helps.
    refused: bool,
    /// Transient refresh failures in a row.
    failures: u32,
    /// No refresh attempt before this (after a transient failure).
    retry_at: Option<OffsetDateTime>,
    /// When a refresh was last attempted.
    last_attempt: Option<OffsetDateTime>,
}

impl Slot {
    /// When the refresher should next wake to refresh this token (`None`: nothing to refresh at
    /// `now`: no sign-in, a refused one, or one without a refresh token or a live registration,
    /// which is used until it ends and never refreshed).
    pub(crate) fn refresh_due(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let s = self.sign_in.as_ref()?;
        if self.refused || !s.token.can_refresh(now) {
            return None;
        }
        let mut due = s.token.expires_at - refresh_window(s);
        if let Some(at) = self.retry_at {
            due = due.max(at);
        }
        if let Some(at) = self.last_attempt {
            due = due.max(at + td(MIN_ATTEMPT_GAP));
        }
        Some(due)
    }
}

/// What the refreshers may read about a session without waiting for its slot.
#[derive(Clone, Copy, Debug, Default)]
struct Published {
    /// [`Slot::refresh_due`] when the slot was last released.
    refresh_due: Option<OffsetDateTime>,
    /// [`Slot::refused`] then.
    refused: bool,
}

/// The IAM Identity Center part of a [`Minter`].
#[derive(Default)]
pub(crate) struct SsoState {
    /// The AWS CLI's token cache directory (`~/.aws/sso/cache`).
    cache_dir: Option<PathBuf>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Each slot's state as of its last release, for the refreshers' wake-up times.
    published: Mutex<HashMap<String, Published>>,
    clients: Mutex<HashMap<Option<PathBuf>, SsoClient>>,
}

impl SsoState {
    /// State reading and writing the AWS CLI's token cache in `cache_dir`.
    pub(crate) fn new(cache_dir: Option<PathBuf>) -> SsoState {
        SsoState {
            cache_dir,
            ..SsoState::default()
        }
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots
            .lock()
            .expect("sso slots")
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Records what the refreshers may know of slot `key` (called whenever it is released).
    fn publish(&self, key: &str, slot: &Slot) {
        let p = Published {
            refresh_due: slot.refresh_due(OffsetDateTime::now_utc()),
            refused: slot.refused,
        };
        self.published
            .lock()
            .expect("sso published")
            .insert(key.to_owned(), p);
    }

    fn published(&self, step: &SsoStep) -> Option<Published> {
        self.published
            .lock()
            .expect("sso published")
            .get(&step.session.storage_key())
            .copied()
    }

    /// The token in the AWS CLI's cache for `step`'s session, when it is for the same start URL.
    fn cached_token(&self, step: &SsoStep) -> Option<crate::sso::Token> {
        let dir = self.cache_dir.as_ref()?;
        match cache::read(dir, &step.session) {
            Ok(Some(t)) if t.start_url == step.session.start_url => Some(t),
            Ok(Some(_)) => {
                tracing::debug!(session = %step.session.label(), "the AWS CLI's cached token is for another start URL; not used");
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }
}

/// `profile` needs `credvend login` because of `reason`.
fn needs_login(chain: &Chain, reason: String) -> MintError {
    MintError::NeedsLogin {
        profile: chain.profile.clone(),
        reason,
    }
}

impl Minter {
    /// Uses the AWS CLI's token cache in `dir` (`~/.aws/sso/cache`): tokens of `aws sso login`
    /// are picked up there, and `--share-cache` sign-ins are written back.
    pub fn with_sso_cache_dir(mut self, dir: Option<PathBuf>) -> Minter {
        self.sso = SsoState::new(dir);
        self
    }

    /// Mints a chain that starts with IAM Identity Center: `GetRoleCredentials`, then `roles`.
    pub(super) async fn sso_chain(
        &self,
        chain: &Chain,
        step: &SsoStep,
        roles: &[RoleStep],
    ) -> Result<TemporaryCredentials, MintError> {
        let creds = self.role_credentials(chain, step).await?;
        match roles.split_first() {
            None => Ok(creds),
            Some((first, rest)) => {
                self.assume_roles(chain, Start::Session(creds), first, rest)
                    .await
            }
        }
    }

    fn sso_client(&self, chain: &Chain, step: &SsoStep) -> Result<SsoClient, MintError> {
        let mut clients = self.sso.clients.lock().expect("sso clients");
        if let Some(c) = clients.get(&step.ca_bundle) {
            return Ok(c.clone());
        }
        let client = SsoClient::new(&ClientOptions {
            ca_bundle: step.ca_bundle.clone(),
            ..self.options.clone()
        })
        .map_err(|e| MintError::Sso {
            profile: chain.profile.clone(),
            source: Box::new(e),
        })?;
        clients.insert(step.ca_bundle.clone(), client.clone());
        Ok(client)
    }

    /// `GetRoleCredentials` with the session's access token. A token the portal no longer takes
    /// (signed out, or expired before its time) is refreshed once and the call repeated.
    async fn role_credentials(
        &self,
        chain: &Chain,
        step: &SsoStep,
    ) -> Result<TemporaryCredentials, MintError> {
        let client = self.sso_client(chain, step)?;
        let call = |token: SecretString| {
            let client = client.clone();
            async move {
                tracing::debug!(profile = %chain.profile, account = %step.account_id, role = %step.role_name, endpoint = %step.endpoints.portal, "calling GetRoleCredentials");
                client
                    .get_role_credentials(
                        &step.endpoints,
                        &token,
                        &step.account_id,
                        &step.role_name,
                    )
                    .await
            }
        };
        let token = self.access_token(chain, step, None).await?;
        let result = match call(token.clone()).await {
            Err(SsoError::Unauthorized) => {
                let fresh = self.access_token(chain, step, Some(&token)).await?;
                call(fresh).await
            }
            other => other,
        };
        result.map_err(|e| match e {
            e if e.needs_login() => needs_login(chain, e.to_string()),
            e => MintError::Sso {
                profile: chain.profile.clone(),
                source: Box::new(e),
            },
        })
    }

    /// The access token of `step`'s session, refreshed when due. `stale`: a token the portal
    /// refused, to be replaced (unless another profile already did).
    async fn access_token(
        &self,
        chain: &Chain,
        step: &SsoStep,
        stale: Option<&SecretString>,
    ) -> Result<SecretString, MintError> {
        let key = step.session.storage_key();
        let slot = self.sso.slot(&key);
        let mut s = slot.lock().await;
        let result = self.access_token_locked(chain, step, &mut s, stale).await;
        self.sso.publish(&key, &s);
        result
    }

    /// [`Minter::access_token`] with the session's slot held.
    async fn access_token_locked(
        &self,
        chain: &Chain,
        step: &SsoStep,
        s: &mut Slot,
        stale: Option<&SecretString>,
    ) -> Result<SecretString, MintError> {
        let now = OffsetDateTime::now_utc();
        self.load_sign_in(chain, step, s, now).await?;
        let label = step.session.label();
        let Some(current) = s.sign_in.clone() else {
            return Err(needs_login(
                chain,
                format!("there is no IAM Identity Center sign-in for {label}"),
            ));
        };
        let token = &current.token;
        let is_stale =
            stale.is_some_and(|t| t.expose_secret() == token.access_token.expose_secret());
        let left = token.expires_at - now;
        let usable = !is_stale && left > token_floor(&current);
        if s.refused {
            return Err(needs_login(
                chain,
                format!("IAM Identity Center refused to refresh the sign-in of {label}"),
            ));
        }
        if usable && left > refresh_window(&current) {
            return Ok(token.access_token.clone());
        }
        if !token.can_refresh(now) {
            return if usable {
                Ok(token.access_token.clone())
            } else {
                Err(needs_login(
                    chain,
                    format!(
                        "the sign-in of {label} ended at {} and cannot be refreshed",
                        format_aws_time(token.expires_at)
                    ),
                ))
            };
        }
        if usable && s.retry_at.is_some_and(|at| at > now) {
            return Ok(token.access_token.clone());
        }
        self.refresh_sign_in(chain, step, s, current, usable, now)
            .await
    }

    /// Refreshes the sign-in held in `s` (`current`); on a transient failure the old token is
    /// returned while `usable`.
    async fn refresh_sign_in(
        &self,
        chain: &Chain,
        step: &SsoStep,
        s: &mut Slot,
        current: SignIn,
        usable: bool,
        now: OffsetDateTime,
    ) -> Result<SecretString, MintError> {
        let label = step.session.label();
        if current.share_cache
            && let Some(newer) = self.newer_in_cache(step, &current)
        {
            // The AWS CLI refreshed the shared sign-in (retiring the refresh token held here).
            tracing::info!(profile = %chain.profile, session = %label, "taking over the newer token the AWS CLI wrote to its cache");
            let token = newer.token.access_token.clone();
            self.keep(step, &newer, false).await;
            s.sign_in = Some(newer);
            return Ok(token);
        }
        s.last_attempt = Some(now);
        let client = self.sso_client(chain, step)?;
        tracing::debug!(profile = %chain.profile, session = %label, endpoint = %step.endpoints.oidc, "refreshing the IAM Identity Center access token");
        match client.refresh(&step.endpoints, &current.token).await {
            Ok(token) => {
                let fresh = SignIn {
                    token,
                    issued_at: Some(now),
                    ..current
                };
                tracing::info!(profile = %chain.profile, session = %label, expires = %format_aws_time(fresh.token.expires_at), "refreshed the IAM Identity Center access token");
                let access = fresh.token.access_token.clone();
                self.keep(step, &fresh, fresh.share_cache).await;
                s.sign_in = Some(fresh);
                s.failures = 0;
                s.retry_at = None;
                Ok(access)
            }
            Err(e) if e.needs_login() => {
                tracing::warn!(profile = %chain.profile, session = %label, "{e}");
                s.refused = true;
                Err(needs_login(chain, e.to_string()))
            }
            Err(e) => {
                s.failures += 1;
                let delay = retry_delay(s.failures);
                s.retry_at = Some(now + td(delay));
                tracing::warn!(profile = %chain.profile, session = %label, failures = s.failures, retry_in = ?delay, "{e}");
                if usable {
                    Ok(current.token.access_token.clone())
                } else {
                    Err(MintError::Sso {
                        profile: chain.profile.clone(),
                        source: Box::new(e),
                    })
                }
            }
        }
    }

    /// Fills `s` from the keyring, then the AWS CLI's cache, unless it holds a usable sign-in.
    async fn load_sign_in(
        &self,
        chain: &Chain,
        step: &SsoStep,
        s: &mut Slot,
        now: OffsetDateTime,
    ) -> Result<(), MintError> {
        let unusable = |s: &Slot| {
            s.refused
                || s.sign_in
                    .as_ref()
                    .is_none_or(|x| !x.usable(now, token_floor(x)))
        };
        if !unusable(s) {
            return Ok(());
        }
        let key = step.session.storage_key();
        let store = self.store(chain).await?;
        let stored = store
            .get_sso(&key)
            .await
            .map_err(|source| MintError::Keystore {
                profile: chain.profile.clone(),
                source,
            })?;
        if let Some(found) = stored
            && s.sign_in
                .as_ref()
                .is_none_or(|cur| !cur.same_token(&found.token))
        {
            *s = Slot {
                sign_in: Some(found),
                ..Slot::default()
            };
        }
        if !unusable(s) {
            return Ok(());
        }
        let Some(token) = self.sso.cached_token(step) else {
            return Ok(());
        };
        let imported = SignIn::imported(token);
        let new = s
            .sign_in
            .as_ref()
            .is_none_or(|cur| !cur.same_token(&imported.token));
        if new && imported.usable(now, token_floor(&imported)) {
            tracing::info!(profile = %chain.profile, session = %step.session.label(), "picked up the sign-in of `aws sso login` from the AWS CLI's token cache; it is kept in the keyring from now on");
            self.keep(step, &imported, false).await;
            *s = Slot {
                sign_in: Some(imported),
                ..Slot::default()
            };
        }
        Ok(())
    }

    /// A token in the AWS CLI's cache newer than `current`'s (for a shared sign-in).
    fn newer_in_cache(&self, step: &SsoStep, current: &SignIn) -> Option<SignIn> {
        let token = self.sso.cached_token(step)?;
        if current.same_token(&token) || token.expires_at <= current.token.expires_at {
            return None;
        }
        let same_registration = match (&token.registration, &current.token.registration) {
            (Some(a), Some(b)) => a.client_id == b.client_id,
            _ => false,
        };
        Some(SignIn {
            token,
            grant: if same_registration {
                current.grant
            } else {
                Grant::Unknown
            },
            scopes: if same_registration {
                current.scopes.clone()
            } else {
                Vec::new()
            },
            issued_at: None,
            share_cache: true,
        })
    }

    /// Stores `sign_in` in the keyring and, when `to_cache`, in the AWS CLI's cache. Failures are
    /// logged: the token in memory keeps working.
    async fn keep(&self, step: &SsoStep, sign_in: &SignIn, to_cache: bool) {
        let key = step.session.storage_key();
        let stored = match self.keys.get().await {
            Ok(store) => store.put_sso(&key, sign_in).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::warn!(session = %step.session.label(), error = %e, "could not store the IAM Identity Center sign-in in the keyring; `credvend login` will be needed after a restart");
        }
        if to_cache
            && let Some(dir) = &self.sso.cache_dir
            && let Err(e) = cache::write(dir, &step.session, &sign_in.token)
        {
            tracing::warn!(session = %step.session.label(), error = %e, "could not update the AWS CLI's token cache");
        }
    }

    /// When the refresher of `chain` should wake to refresh its SSO access token before it
    /// expires (`None`: not an SSO chain, or no refreshable token held). Read from what the last
    /// use of the session published, so it never waits for a refresh in progress: a profile that
    /// asks during one is told "now", and then waits for its result in [`Minter::access_token`].
    pub fn sso_refresh_due(&self, chain: &Chain) -> Option<OffsetDateTime> {
        self.sso.published(chain.sso()?)?.refresh_due
    }

    /// Whether the sign-in `chain` mints with was refused (by a refresh of any profile of its SSO
    /// session): the chain needs `credvend login` even if its own credentials are fresh.
    pub fn sso_refused(&self, chain: &Chain) -> bool {
        chain
            .sso()
            .and_then(|step| self.sso.published(step))
            .is_some_and(|p| p.refused)
    }

    /// The sign-in of session `session_key` changed in the keyring (`credvend login`, `credvend
    /// remove`): forget what is held in memory so the next mint reads the keyring again.
    pub async fn sso_signed_in(&self, session_key: &str) {
        let slot = self.sso.slot(session_key);
        let mut s = slot.lock().await;
        *s = Slot::default();
        self.sso.publish(session_key, &s);
    }

    /// Forgets the sign-in of `step`'s session: memory, keyring, and the AWS CLI's cache file when
    /// it was shared with it.
    pub(super) async fn forget_sso(&self, step: &SsoStep) {
        let key = step.session.storage_key();
        let slot = self.sso.slot(&key);
        let mut s = slot.lock().await;
        let mut shared = s.sign_in.as_ref().is_some_and(|x| x.share_cache);
        *s = Slot::default();
        self.sso.publish(&key, &s);
        if let Ok(store) = self.keys.get().await {
            if let Ok(Some(stored)) = store.get_sso(&key).await {
                shared |= stored.share_cache;
            }
            if let Err(e) = store.delete_sso(&key).await {
                tracing::warn!(error = %e, "could not delete the IAM Identity Center sign-in");
            }
        }
        if shared && let Some(dir) = &self.sso.cache_dir {
            let path = cache::cache_path(dir, &step.session);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "deleted the shared AWS CLI token cache file")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not delete the shared token cache file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sso::{Registration, Token};

    const T0: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);

    fn sign_in(lifetime_s: i64, issued: bool) -> SignIn {
        SignIn {
            token: Token {
                access_token: SecretString::from("a"),
                expires_at: T0 + time::Duration::seconds(lifetime_s),
                refresh_token: Some(SecretString::from("r")),
                registration: Some(Registration {
                    client_id: "c".into(),
                    client_secret: SecretString::from("s"),
                    expires_at: T0 + time::Duration::days(90),
                }),
                region: "us-east-1".into(),
                start_url: "https://d-1.awsapps.com/start".into(),
            },
            grant: Grant::DeviceCode,
            scopes: vec![],
            issued_at: issued.then_some(T0),
            share_cache: false,
        }
    }

    #[test]
    fn refresh_window_is_botocores_or_a_quarter_of_short_tokens() {
        assert_eq!(
            refresh_window(&sign_in(3600, true)),
            time::Duration::minutes(15)
        );
        assert_eq!(
            refresh_window(&sign_in(8 * 3600, true)),
            time::Duration::minutes(15)
        );
        assert_eq!(
            refresh_window(&sign_in(40, true)),
            time::Duration::seconds(10)
        );
        assert_eq!(
            refresh_window(&sign_in(40, false)),
            time::Duration::minutes(15)
        );
    }

    #[test]
    fn refresh_is_due_before_expiry_and_never_in_a_loop() {
        let mut slot = Slot {
            sign_in: Some(sign_in(3600, true)),
            ..Slot::default()
        };
        assert_eq!(slot.refresh_due(T0), Some(T0 + time::Duration::minutes(45)));
        // Just attempted (and failed transiently): not again before the gap and the backoff.
        slot.last_attempt = Some(T0 + time::Duration::minutes(45));
        slot.retry_at = Some(T0 + time::Duration::minutes(45) + td(retry_delay(1)));
        assert_eq!(
            slot.refresh_due(T0),
            Some(T0 + time::Duration::minutes(45) + time::Duration::seconds(10))
        );
        // A token issued already expired still waits the gap after each attempt.
        let mut dead_on_arrival = Slot {
            sign_in: Some(sign_in(0, true)),
            last_attempt: Some(T0),
            ..Slot::default()
        };
        assert_eq!(
            dead_on_arrival.refresh_due(T0),
            Some(T0 + td(MIN_ATTEMPT_GAP))
        );
        // Refused, or nothing to refresh with: the refresher is never woken for it.
        dead_on_arrival.refused = true;
        assert_eq!(dead_on_arrival.refresh_due(T0), None);
        let mut legacy = sign_in(3600, true);
        legacy.token.refresh_token = None;
        let slot = Slot {
            sign_in: Some(legacy),
            ..Slot::default()
        };
        assert_eq!(slot.refresh_due(T0), None);
        let slot = Slot {
            sign_in: Some(sign_in(3600, true)),
            ..Slot::default()
        };
        assert_eq!(
            slot.refresh_due(T0 + time::Duration::days(91)),
            None,
            "the registration expired"
        );
        assert_eq!(Slot::default().refresh_due(T0), None);
    }

    #[test]
    fn transient_failures_back_off_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), RETRY_CAP);
    }
}
