//! Minting: runs a profile's [`Chain`] (keyring, `credential_process`, token file, STS calls) and
//! returns the temporary credentials to serve. IO at the edge; the daemon's refresher and
//! `credvend credential-process` both call [`Minter::mint`].
//!
//! Two caches keep STS traffic to one call per refresh in the common cases:
//! - MFA-authenticated sessions (`GetSessionToken` with a code) are kept in memory and in the
//!   keyring, and reused while they have time left, also across daemon restarts;
//! - intermediate links of a role chain are reused while they have time left, so refreshing the
//!   served role of a chain usually costs a single `AssumeRole` (a link is reused only for the
//!   same source credentials and the same request: session tags, source identity, policies).
//!
//! "Time left" scales with the session: a cached session is reused while it has more than a
//! quarter of its configured length left, capped at [`REUSE_MIN`] for long sessions.
//!
//! IAM Identity Center sign-ins (one access token per SSO session, refreshed under a per-session
//! lock) are in `mint/sso.rs`.

mod process;
mod sso;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;

pub(crate) use process::{ProcessOutput, run_credential_process};

use crate::creds::{LongTermKey, SigningKey, TemporaryCredentials};
use crate::keystore::{KeyStore, KeystoreError, OpenOptions};
use crate::problem::ProblemCode;
use crate::profile::resolve::{
    Chain, FederationStep, FromKeys, MfaStep, RoleStep, SessionStep, Source, StsTarget,
    WebIdentityStep,
};
use crate::sso::SsoError;
use crate::sts::{
    AssumeRole, AssumeRoleWithWebIdentity, ClientOptions, GetFederationToken, GetSessionToken,
    MfaToken, StsClient, StsError, StsRequest,
};

/// A cached session or link is reused only while it has more than this long left (or a quarter
/// of its length, for sessions shorter than an hour).
pub(crate) const REUSE_MIN: Duration = Duration::from_secs(15 * 60);

/// Credentials minted for a profile.
#[derive(Debug)]
pub(crate) struct Minted {
    /// What to serve.
    pub creds: TemporaryCredentials,
    /// The configured role ARN of the served credentials, if any.
    pub role_arn: Option<String>,
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    /// The chain needs an MFA code and no valid MFA session exists.
    #[error("profile `{profile}` needs an MFA code for {serial}: run `credvend login {profile}`")]
    NeedsMfa {
        /// Served profile.
        profile: String,
        /// MFA device.
        serial: String,
    },
    /// `login` for a chain without an MFA device.
    #[error("profile `{profile}` has no mfa_serial in its chain, so it needs no MFA code")]
    NoMfa {
        /// The profile.
        profile: String,
    },
    /// The keyring failed or holds no keys.
    #[error("profile `{profile}`: {source}")]
    Keystore {
        /// Served profile.
        profile: String,
        /// Keyring error (names its fix).
        source: KeystoreError,
    },
    /// An STS call failed.
    #[error("profile `{profile}`: {source}{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Sts {
        /// Served profile.
        profile: String,
        /// The failure.
        source: Box<StsError>,
        /// What to do about it.
        hint: Option<String>,
    },
    /// `credential_process` failed or printed something unusable.
    #[error("profile `{profile}`: credential_process {message}")]
    Process {
        /// Profile defining the process.
        profile: String,
        /// What went wrong (includes the process's stderr).
        message: String,
    },
    /// What was minted expires too soon to be served (already expired, or within
    /// [`MIN_LIFETIME`](crate::creds::MIN_LIFETIME)).
    #[error(
        "profile `{profile}`: {from} returned credentials that expire at {} ({}){}",
        crate::creds::format_aws_time(*expiration),
        lifetime_text(*remaining),
        skew_text(from, *skew)
    )]
    TooShort {
        /// Served profile.
        profile: String,
        /// Where they came from (`STS`, `credential_process`).
        from: &'static str,
        /// Their expiry.
        expiration: OffsetDateTime,
        /// Seconds left by this machine's clock when they arrived (negative: already expired).
        remaining: i64,
        /// STS's clock minus ours, when known.
        skew: Option<i64>,
    },
    /// The web identity token file cannot be read.
    #[error("profile `{profile}`: web_identity_token_file {} cannot be read: {source}", path.display())]
    TokenFile {
        /// Profile.
        profile: String,
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// The chain starts with IAM Identity Center and there is no usable sign-in: none was made,
    /// it ended, or its refresh was refused.
    #[error(
        "profile `{profile}` needs an IAM Identity Center sign-in ({reason}): run `credvend login {profile}`"
    )]
    NeedsLogin {
        /// Served profile.
        profile: String,
        /// Why (one line, no secret).
        reason: String,
    },
    /// An IAM Identity Center call failed for a reason a new sign-in does not cure.
    #[error("profile `{profile}`: {source}")]
    Sso {
        /// Served profile.
        profile: String,
        /// The failure.
        source: Box<SsoError>,
    },
}

impl MintError {
    /// What kind of problem this is.
    pub fn code(&self) -> ProblemCode {
        match self {
            MintError::NeedsMfa { .. } => ProblemCode::NeedsMfa,
            MintError::NoMfa { .. } => ProblemCode::InvalidConfiguration,
            MintError::Keystore {
                source: KeystoreError::NotFound { .. },
                ..
            } => ProblemCode::MissingKeys,
            MintError::Keystore { source, .. } if source.is_transient() => {
                ProblemCode::KeyringUnavailable
            }
            MintError::Keystore { .. } => ProblemCode::KeyringError,
            MintError::Sts { source, .. } => sts_code(source),
            MintError::Process { .. } => ProblemCode::CredentialProcessFailed,
            MintError::TokenFile { .. } => ProblemCode::WebIdentityTokenUnreadable,
            MintError::TooShort { .. } => ProblemCode::CredentialsTooShort,
            MintError::NeedsLogin { .. } => ProblemCode::NeedsLogin,
            MintError::Sso { source, .. } => sso_code(source),
        }
    }

    /// The message on one line.
    pub fn describe(&self) -> String {
        self.to_string().replace('\n', " ")
    }
}

fn lifetime_text(remaining: i64) -> String {
    if remaining <= 0 {
        format!(
            "already expired {} s ago by this machine's clock",
            -remaining
        )
    } else {
        format!("{remaining} s from now by this machine's clock")
    }
}

fn skew_text(from: &str, skew: Option<i64>) -> String {
    if from == "credential_process" {
        return "; check what the helper prints as Expiration (or this machine's clock)".into();
    }
    match skew {
        Some(s) if s.abs() >= 60 => format!(
            "; STS's clock is {} s {} this machine's: correct the clock (e.g. `timedatectl set-ntp true`)",
            s.abs(),
            if s > 0 { "ahead of" } else { "behind" }
        ),
        Some(_) => {
            "; the clocks agree, so the source itself hands out short-lived credentials".into()
        }
        None => "; clock skew? check this machine's clock".into(),
    }
}

fn sts_code(e: &StsError) -> ProblemCode {
    match e {
        StsError::Service(e) if e.action == "AssumeRole" && e.code == "AccessDenied" => {
            ProblemCode::AssumeRoleUnauthorizedAccess
        }
        StsError::Service(e)
            if e.code == "InvalidClientTokenId" || e.code == "SignatureDoesNotMatch" =>
        {
            ProblemCode::InvalidKeys
        }
        e if e.is_throttled() => ProblemCode::StsThrottled,
        e if e.is_retryable() => ProblemCode::StsUnavailable,
        StsError::Service(_) | StsError::Http { .. } => ProblemCode::StsError,
        StsError::Setup(_) => ProblemCode::InvalidConfiguration,
        StsError::Malformed { .. } | StsError::TooLarge { .. } => ProblemCode::StsBadResponse,
        StsError::Transport { .. } | StsError::Timeout { .. } => ProblemCode::StsUnavailable,
    }
}

/// The problem an IAM Identity Center failure is. The portal plays the part STS plays in other
/// chains, so its failures share STS's codes (an unassigned role is the IMDS code for a role that
/// cannot be assumed).
fn sso_code(e: &SsoError) -> ProblemCode {
    match e {
        SsoError::NoAccess { .. } => ProblemCode::AssumeRoleUnauthorizedAccess,
        e if e.needs_login() => ProblemCode::NeedsLogin,
        SsoError::Service { status: 429, .. } => ProblemCode::StsThrottled,
        e if e.is_transient() => ProblemCode::StsUnavailable,
        SsoError::Malformed { .. } => ProblemCode::StsBadResponse,
        SsoError::Setup(_) => ProblemCode::InvalidConfiguration,
        _ => ProblemCode::StsError,
    }
}

/// What to do about an STS failure of a call to `target` signed by `signer`.
fn sts_hint(e: &StsError, signer: Signer<'_>, target: &StsTarget) -> Option<String> {
    match (e.code()?, signer) {
        ("InvalidClientTokenId", Signer::Keys(profile)) => Some(format!(
            "STS does not know the stored access key: store a valid one with `credvend add {profile} --force`"
        )),
        ("SignatureDoesNotMatch", Signer::Keys(profile)) => Some(format!(
            "{}; if it is the secret, store it again with `credvend add {profile} --force`",
            target.endpoint.signature_diagnosis()
        )),
        ("SignatureDoesNotMatch", _) => Some(target.endpoint.signature_diagnosis()),
        ("ExpiredToken", _) => Some("the session expired; credvend mints a new one".into()),
        ("AccessDenied", _) => {
            Some("check the role's trust policy, external_id and MFA requirements".into())
        }
        ("RegionDisabledException", _) => {
            Some("activate STS in that region or choose another region".into())
        }
        _ => None,
    }
}

/// Who signs an STS call, for error hints.
#[derive(Clone, Copy)]
enum Signer<'a> {
    /// The long-term keys stored for this profile.
    Keys(&'a str),
    /// Temporary credentials (a session or a role).
    Session,
    /// Nobody (web identity).
    Unsigned,
}

/// The key store, opened now or on first use. The daemon starts even when the keyring is locked
/// or its bus is not up yet; every use retries opening until it works.
pub(crate) struct Keys {
    opts: OpenOptions,
    store: tokio::sync::Mutex<Option<KeyStore>>,
}

impl Keys {
    /// An already open store.
    pub fn ready(store: KeyStore, opts: OpenOptions) -> Keys {
        Keys {
            opts,
            store: tokio::sync::Mutex::new(Some(store)),
        }
    }

    /// A store opened on first use.
    pub fn lazy(opts: OpenOptions) -> Keys {
        Keys {
            opts,
            store: tokio::sync::Mutex::new(None),
        }
    }

    /// The store, opening it if needed.
    pub async fn get(&self) -> Result<KeyStore, KeystoreError> {
        let mut slot = self.store.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let store = KeyStore::open(self.opts.clone()).await?;
        tracing::info!(keystore = %store.backend(), "keyring opened");
        *slot = Some(store.clone());
        Ok(store)
    }
}

/// What [`Minter`] caches sessions and links under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CacheKey {
    /// The MFA session of a base profile with a device.
    Session { profile: String, serial: String },
    /// The credentials of an intermediate role of a chain.
    Link { profile: String, role_arn: String },
}

impl CacheKey {
    fn session(session: &SessionStep, mfa: &MfaStep) -> CacheKey {
        CacheKey::Session {
            profile: session.profile.clone(),
            serial: mfa.serial.clone(),
        }
    }

    fn profile(&self) -> &str {
        match self {
            CacheKey::Session { profile, .. } | CacheKey::Link { profile, .. } => profile,
        }
    }
}

/// A cached session or link.
struct Cached {
    /// For a link, what it was assumed with (see [`link_source`]): after its source rotates, or
    /// a reload changes its request (tags, policies, duration), the link is stale and gets
    /// replaced.
    source: Option<String>,
    creds: TemporaryCredentials,
}

/// Whether cached credentials of a session configured to last `length` seconds are still worth
/// reusing at `now`: more than a quarter of the length left, at most [`REUSE_MIN`].
fn reusable(c: &TemporaryCredentials, now: OffsetDateTime, length: u32) -> bool {
    let wanted = REUSE_MIN.min(Duration::from_secs(u64::from(length) / 4));
    c.expiration - now > time::Duration::try_from(wanted).unwrap_or(time::Duration::MAX)
}

/// Where a chain's credentials start, before its roles.
enum Start<'a> {
    /// Long-term keys, and who they are for error hints.
    Key(LongTermKey, Signer<'a>),
    /// Temporary credentials.
    Session(TemporaryCredentials),
}

impl Start<'_> {
    fn signing_key(&self) -> (SigningKey<'_>, Signer<'_>) {
        match self {
            Start::Key(k, signer) => (k.signing_key(), *signer),
            Start::Session(c) => (c.signing_key(), Signer::Session),
        }
    }

    fn access_key_id(&self) -> &str {
        match self {
            Start::Key(k, _) => &k.access_key_id,
            Start::Session(c) => &c.access_key_id,
        }
    }
}

/// Runs chains. Cheap to share behind an `Arc`.
pub(crate) struct Minter {
    keys: Keys,
    options: ClientOptions,
    clients: Mutex<HashMap<Option<PathBuf>, StsClient>>,
    /// MFA sessions and intermediate chain links: one entry per session and per intermediate
    /// role of the configuration, replaced when renewed.
    links: Mutex<HashMap<CacheKey, Cached>>,
    /// Serialises MFA session minting (one code prompt or `credvend_mfa_process` at a time).
    session_lock: tokio::sync::Mutex<()>,
    /// Account ids learned with GetCallerIdentity, by served profile.
    accounts: Mutex<HashMap<String, String>>,
    /// IAM Identity Center sign-ins, one per SSO session.
    sso: sso::SsoState,
}

impl Minter {
    /// A minter reading keys from `keys` and calling STS with `options`.
    pub fn new(keys: Keys, options: ClientOptions) -> Minter {
        Minter {
            keys,
            options,
            clients: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            session_lock: tokio::sync::Mutex::new(()),
            accounts: Mutex::new(HashMap::new()),
            sso: sso::SsoState::default(),
        }
    }

    /// The key store (opened on first use).
    pub async fn keystore(&self) -> Result<KeyStore, KeystoreError> {
        self.keys.get().await
    }

    /// Cached credentials under `key` assumed from `source`, worth reusing at `now`.
    fn cached(
        &self,
        key: &CacheKey,
        source: Option<&str>,
        now: OffsetDateTime,
        length: u32,
    ) -> Option<TemporaryCredentials> {
        self.links
            .lock()
            .expect("links")
            .get(key)
            .filter(|c| c.source.as_deref() == source && reusable(&c.creds, now, length))
            .map(|c| c.creds.clone())
    }

    /// Drops every cached session and link of `profiles`.
    fn forget_cached(&self, profiles: &[&str]) {
        self.links
            .lock()
            .expect("links")
            .retain(|k, _| !profiles.contains(&k.profile()));
    }

    fn cache(&self, key: CacheKey, source: Option<String>, creds: &TemporaryCredentials) {
        let creds = creds.clone();
        self.links
            .lock()
            .expect("links")
            .insert(key, Cached { source, creds });
    }

    async fn store(&self, chain: &Chain) -> Result<KeyStore, MintError> {
        self.keys.get().await.map_err(|source| MintError::Keystore {
            profile: chain.profile.clone(),
            source,
        })
    }

    fn client(&self, target: &StsTarget, profile: &str) -> Result<StsClient, MintError> {
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(c) = clients.get(&target.ca_bundle) {
            return Ok(c.clone());
        }
        let client = StsClient::new(ClientOptions {
            ca_bundle: target.ca_bundle.clone(),
            ..self.options.clone()
        })
        .map_err(|source| MintError::Sts {
            profile: profile.to_owned(),
            source: Box::new(source),
            hint: None,
        })?;
        clients.insert(target.ca_bundle.clone(), client.clone());
        Ok(client)
    }

    async fn call(
        &self,
        chain: &Chain,
        target: &StsTarget,
        req: &StsRequest,
        key: Option<(SigningKey<'_>, Signer<'_>)>,
    ) -> Result<TemporaryCredentials, MintError> {
        let client = self.client(target, &chain.profile)?;
        tracing::debug!(profile = %chain.profile, action = req.action(), endpoint = %target.endpoint, "calling STS");
        let (key, signer) = match key {
            Some((k, s)) => (Some(k), s),
            None => (None, Signer::Unsigned),
        };
        client
            .mint(&target.endpoint, req, key)
            .await
            .map_err(|source| MintError::Sts {
                profile: chain.profile.clone(),
                hint: sts_hint(&source, signer, target),
                source: Box::new(source),
            })
    }

    async fn long_term_key(&self, chain: &Chain, profile: &str) -> Result<LongTermKey, MintError> {
        self.store(chain)
            .await?
            .get_key(profile)
            .await
            .map_err(|source| MintError::Keystore {
                profile: chain.profile.clone(),
                source,
            })
    }

    /// The MFA session `session` + `mfa`: from memory, the keyring, `credvend_mfa_process`, or
    /// `code`, in that order. `NeedsMfa` when none of them gives one.
    async fn mfa_session(
        &self,
        chain: &Chain,
        session: &SessionStep,
        mfa: &MfaStep,
        code: Option<SecretString>,
    ) -> Result<TemporaryCredentials, MintError> {
        let key = CacheKey::session(session, mfa);
        // The common case needs no lock: a chain with its session in memory never waits behind
        // another chain's code prompt.
        if code.is_none()
            && let Some(s) = self.cached(&key, None, OffsetDateTime::now_utc(), session.duration)
        {
            return Ok(s);
        }
        let _guard = self.session_lock.lock().await;
        if code.is_none()
            && let Some(s) = self.stored_mfa_session(chain, session, &key).await?
        {
            return Ok(s);
        }
        let code = match (code, &mfa.process) {
            (Some(c), _) => c,
            (None, Some(cmd)) => {
                process::run_mfa_process(cmd)
                    .await
                    .map_err(|message| MintError::Process {
                        profile: session.profile.clone(),
                        message: format!("(credvend_mfa_process) {message}"),
                    })?
            }
            (None, None) => {
                return Err(MintError::NeedsMfa {
                    profile: chain.profile.clone(),
                    serial: mfa.serial.clone(),
                });
            }
        };
        let long_term = self.long_term_key(chain, &session.profile).await?;
        let req = StsRequest::GetSessionToken(GetSessionToken {
            duration_seconds: Some(session.duration),
            mfa: Some(MfaToken {
                serial: mfa.serial.clone(),
                code,
            }),
        });
        let signer = Signer::Keys(&session.profile);
        let minted = self
            .call(
                chain,
                &session.target,
                &req,
                Some((long_term.signing_key(), signer)),
            )
            .await?;
        self.cache(key, None, &minted);
        let stored = match self.keys.get().await {
            Ok(store) => store.put_session(&session.profile, &minted).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::warn!(error = %e, "could not cache the MFA session in the keyring; it will be asked for again after a restart");
        }
        Ok(minted)
    }

    /// An MFA session cached in memory or in the keyring (from before a restart), worth reusing.
    async fn stored_mfa_session(
        &self,
        chain: &Chain,
        session: &SessionStep,
        key: &CacheKey,
    ) -> Result<Option<TemporaryCredentials>, MintError> {
        let now = OffsetDateTime::now_utc();
        if let Some(s) = self.cached(key, None, now, session.duration) {
            return Ok(Some(s));
        }
        match self.store(chain).await?.get_session(&session.profile).await {
            Ok(Some(s)) if reusable(&s, now, session.duration) => {
                tracing::info!(profile = %chain.profile, base = %session.profile, "reusing the MFA session cached in the keyring");
                self.cache(key.clone(), None, &s);
                Ok(Some(s))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cached MFA session");
                Ok(None)
            }
        }
    }

    /// When the MFA session `chain` uses expires, if one is held.
    pub fn mfa_session_expiry(&self, chain: &Chain) -> Option<OffsetDateTime> {
        let (session, mfa) = chain.mfa_session()?;
        self.links
            .lock()
            .expect("links")
            .get(&CacheKey::session(session, mfa))
            .map(|s| s.creds.expiration)
    }

    /// Supplies an MFA code for `chain`: mints (and caches) the MFA session. Returns its expiry.
    pub async fn login(
        &self,
        chain: &Chain,
        code: SecretString,
    ) -> Result<OffsetDateTime, MintError> {
        let Some((session, mfa)) = chain.mfa_session() else {
            return Err(MintError::NoMfa {
                profile: chain.profile.clone(),
            });
        };
        Ok(self
            .mfa_session(chain, session, mfa, Some(code))
            .await?
            .expiration)
    }

    /// Forgets cached sessions, links and IAM Identity Center sign-ins of `chain` (memory and
    /// keyring).
    pub async fn forget(&self, chain: &Chain) {
        self.forget_cached(&chain.profiles());
        if let Some(step) = chain.sso() {
            self.forget_sso(step).await;
        }
        if let Some((s, _)) = chain.mfa_session()
            && let Ok(store) = self.keys.get().await
            && let Err(e) = store.delete_session(&s.profile).await
        {
            tracing::warn!(error = %e, "could not delete the cached MFA session");
        }
    }

    /// Mints credentials for `chain`. Credentials that arrive already expired, or with less than
    /// [`MIN_LIFETIME`](crate::creds::MIN_LIFETIME) left, are a failure: serving them is
    /// pointless and minting again at once would loop.
    pub async fn mint(&self, chain: &Chain) -> Result<Minted, MintError> {
        let result = self
            .mint_inner(chain)
            .await
            .and_then(|m| long_enough(chain, m));
        if let Err(MintError::Sts { source, .. }) = &result
            && source.code() == Some("ExpiredToken")
            && let Some((session, mfa)) = chain.mfa_session()
        {
            // A cached MFA session that STS no longer accepts: drop it, ask for a new code.
            self.links
                .lock()
                .expect("links")
                .remove(&CacheKey::session(session, mfa));
            if let Ok(store) = self.keys.get().await {
                let _ = store.delete_session(&session.profile).await;
            }
        }
        result
    }

    async fn mint_inner(&self, chain: &Chain) -> Result<Minted, MintError> {
        let creds = match &chain.source {
            Source::Keys { keys, then } => self.keys_chain(chain, keys, then).await?,
            Source::Process {
                profile,
                command,
                roles,
            } => self.process_chain(chain, profile, command, roles).await?,
            Source::WebIdentity { step, roles } => {
                let creds = self.web_identity(chain, step).await?;
                match roles.split_first() {
                    None => creds,
                    Some((first, rest)) => {
                        self.assume_roles(chain, Start::Session(creds), first, rest)
                            .await?
                    }
                }
            }
            Source::Sso { step, roles } => self.sso_chain(chain, step, roles).await?,
        };
        Ok(Minted {
            role_arn: chain.leaf_role_arn().map(str::to_owned),
            creds,
        })
    }

    async fn keys_chain(
        &self,
        chain: &Chain,
        keys: &str,
        then: &FromKeys,
    ) -> Result<TemporaryCredentials, MintError> {
        match then {
            FromKeys::Session {
                session,
                mfa: Some(mfa),
            } => {
                let creds = self.mfa_session(chain, session, mfa, None).await?;
                Ok(self.with_account(chain, &session.target, creds).await)
            }
            FromKeys::Session { session, mfa: None } => {
                let key = self.long_term_key(chain, keys).await?;
                let req = StsRequest::GetSessionToken(GetSessionToken {
                    duration_seconds: Some(session.duration),
                    mfa: None,
                });
                let signer = Signer::Keys(keys);
                let mut creds = self
                    .call(
                        chain,
                        &session.target,
                        &req,
                        Some((key.signing_key(), signer)),
                    )
                    .await?;
                creds.arn = None;
                Ok(self.with_account(chain, &session.target, creds).await)
            }
            FromKeys::Federation(f) => {
                let key = self.long_term_key(chain, keys).await?;
                let creds = self.federation(chain, f, &key, keys).await?;
                Ok(self.with_account(chain, &f.target, creds).await)
            }
            FromKeys::Roles { mfa, roles } => {
                let start = match mfa {
                    Some(m) => {
                        Start::Session(self.mfa_session(chain, &m.session, &m.mfa, None).await?)
                    }
                    None => Start::Key(self.long_term_key(chain, keys).await?, Signer::Keys(keys)),
                };
                self.assume_roles(chain, start, &roles.first, &roles.rest)
                    .await
            }
        }
    }

    async fn federation(
        &self,
        chain: &Chain,
        f: &FederationStep,
        key: &LongTermKey,
        keys: &str,
    ) -> Result<TemporaryCredentials, MintError> {
        let req = StsRequest::GetFederationToken(GetFederationToken {
            name: f.name.clone(),
            duration_seconds: Some(f.duration),
            policy: f.policy.clone(),
            policy_arns: f.policy_arns.clone(),
            tags: f.tags.clone(),
        });
        self.call(
            chain,
            &f.target,
            &req,
            Some((key.signing_key(), Signer::Keys(keys))),
        )
        .await
    }

    async fn process_chain(
        &self,
        chain: &Chain,
        profile: &str,
        command: &[String],
        roles: &[RoleStep],
    ) -> Result<TemporaryCredentials, MintError> {
        let output =
            run_credential_process(command)
                .await
                .map_err(|message| MintError::Process {
                    profile: profile.to_owned(),
                    message,
                })?;
        let start = match output {
            ProcessOutput::Temporary(c) => Start::Session(c),
            ProcessOutput::LongTerm(k) => Start::Key(k, Signer::Session),
        };
        match (start, roles.split_first()) {
            (Start::Session(c), None) => Ok(c),
            (Start::Key(..), None) => Err(MintError::Process {
                profile: profile.to_owned(),
                message: "returned long-term keys (no SessionToken) for a profile without a role; \
                          credvend serves only temporary credentials, so give the profile a role_arn \
                          or make the process return a session"
                    .into(),
            }),
            (start, Some((first, rest))) => self.assume_roles(chain, start, first, rest).await,
        }
    }

    async fn web_identity(
        &self,
        chain: &Chain,
        w: &WebIdentityStep,
    ) -> Result<TemporaryCredentials, MintError> {
        let token = tokio::fs::read_to_string(&w.token_file)
            .await
            .map_err(|source| MintError::TokenFile {
                profile: w.profile.clone(),
                path: w.token_file.clone(),
                source,
            })?;
        let req = StsRequest::AssumeRoleWithWebIdentity(AssumeRoleWithWebIdentity {
            role_arn: w.role_arn.clone(),
            role_session_name: w.session_name.clone(),
            web_identity_token: SecretString::from(token.trim().to_owned()),
            duration_seconds: Some(w.duration),
            policy: w.policy.clone(),
            policy_arns: w.policy_arns.clone(),
        });
        self.call(chain, &w.target, &req, None).await
    }

    /// Assumes `first` with `start`, then each of `rest` with the credentials before it,
    /// reusing intermediate links that still have time left.
    async fn assume_roles(
        &self,
        chain: &Chain,
        start: Start<'_>,
        first: &RoleStep,
        rest: &[RoleStep],
    ) -> Result<TemporaryCredentials, MintError> {
        let mut creds = self
            .assume_link(chain, &start, first, rest.is_empty())
            .await?;
        for (i, role) in rest.iter().enumerate() {
            let start = Start::Session(creds);
            creds = self
                .assume_link(chain, &start, role, i + 1 == rest.len())
                .await?;
        }
        Ok(creds)
    }

    /// One `AssumeRole` with `start`; intermediate links come from and go to the cache.
    async fn assume_link(
        &self,
        chain: &Chain,
        start: &Start<'_>,
        role: &RoleStep,
        served: bool,
    ) -> Result<TemporaryCredentials, MintError> {
        let source_id = link_source(start.access_key_id(), role);
        let key = CacheKey::Link {
            profile: role.profile.clone(),
            role_arn: role.role_arn.clone(),
        };
        let now = OffsetDateTime::now_utc();
        if !served && let Some(c) = self.cached(&key, Some(&source_id), now, role.duration) {
            return Ok(c);
        }
        let creds = self
            .call(
                chain,
                &role.target,
                &assume(role),
                Some(start.signing_key()),
            )
            .await?;
        if !served {
            self.cache(key, Some(source_id), &creds);
        }
        Ok(creds)
    }

    /// Fills in the account id of credentials STS returned without one (GetSessionToken,
    /// GetFederationToken), asking GetCallerIdentity at `target` once per profile.
    async fn with_account(
        &self,
        chain: &Chain,
        target: &StsTarget,
        mut creds: TemporaryCredentials,
    ) -> TemporaryCredentials {
        if creds.account_id.is_some() {
            return creds;
        }
        if let Some(a) = self.accounts.lock().expect("accounts").get(&chain.profile) {
            creds.account_id = Some(a.clone());
            return creds;
        }
        let Ok(client) = self.client(target, &chain.profile) else {
            return creds;
        };
        match client
            .caller_identity(&target.endpoint, creds.signing_key())
            .await
        {
            Ok(id) => {
                self.accounts
                    .lock()
                    .expect("accounts")
                    .insert(chain.profile.clone(), id.account.clone());
                creds.account_id = Some(id.account);
                creds.arn.get_or_insert(id.arn);
            }
            Err(e) => {
                tracing::debug!(profile = %chain.profile, error = %e, "could not learn the account id")
            }
        }
        creds
    }
}

/// `minted`, unless it expires too soon to be served.
fn long_enough(chain: &Chain, minted: Minted) -> Result<Minted, MintError> {
    let now = OffsetDateTime::now_utc();
    let remaining = minted.creds.expiration - now;
    if remaining > time::Duration::try_from(crate::creds::MIN_LIFETIME).expect("small") {
        return Ok(minted);
    }
    let from_process =
        matches!(chain.source, Source::Process { ref roles, .. } if roles.is_empty());
    Err(MintError::TooShort {
        profile: chain.profile.clone(),
        from: if from_process {
            "credential_process"
        } else {
            "STS"
        },
        expiration: minted.creds.expiration,
        remaining: remaining.whole_seconds(),
        skew: if from_process {
            None
        } else {
            crate::sts::clock_skew().map(|s| s.seconds)
        },
    })
}

/// What a link is assumed with: the access key id of the credentials before it and a digest of
/// the `AssumeRole` request (no MFA code is ever in a link's request), so that a link cached
/// before a reload changed its session tags, source identity or policies is not reused.
fn link_source(access_key_id: &str, role: &RoleStep) -> String {
    use secrecy::ExposeSecret;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    assume(role).form_body().expose_secret().hash(&mut h);
    format!("{access_key_id}/{:016x}", h.finish())
}

fn assume(role: &RoleStep) -> StsRequest {
    StsRequest::AssumeRole(AssumeRole {
        role_arn: role.role_arn.clone(),
        role_session_name: role.session_name.clone(),
        duration_seconds: Some(role.duration),
        external_id: role.external_id.clone(),
        policy: role.policy.clone(),
        policy_arns: role.policy_arns.clone(),
        tags: role.tags.tags.clone(),
        transitive_tag_keys: role.tags.transitive.clone(),
        source_identity: role.source_identity.clone(),
        mfa: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minter that never opens the keyring (these tests only use its caches).
    fn minter() -> Minter {
        Minter::new(
            Keys::lazy(crate::keystore::OpenOptions::default()),
            ClientOptions::default(),
        )
    }

    /// A short MFA session (900 s, the shortest STS allows) is used until a quarter of it is
    /// left, not thrown away after the first role refresh; a long one until 15 minutes are left.
    #[test]
    fn cached_sessions_are_reused_until_a_quarter_of_their_length_is_left() {
        let m = minter();
        let now = OffsetDateTime::now_utc();
        let session = CacheKey::Session {
            profile: "mfa".into(),
            serial: "arn:aws:iam::123456789012:mfa/u".into(),
        };
        m.cache(
            session.clone(),
            None,
            &TemporaryCredentials::sample("S900", now + time::Duration::seconds(900)),
        );
        let at = |s: i64| now + time::Duration::seconds(s);
        for (elapsed, reused) in [
            (0, true),
            (300, true),
            (600, true),
            (674, true),
            (676, false),
        ] {
            assert_eq!(
                m.cached(&session, None, at(elapsed), 900).is_some(),
                reused,
                "900 s session, {elapsed} s in"
            );
        }
        let long = TemporaryCredentials::sample("S12H", now + time::Duration::hours(12));
        assert!(reusable(&long, at(43_200 - 901), 43_200));
        assert!(!reusable(&long, at(43_200 - 899), 43_200));
    }

    #[test]
    fn the_link_cache_replaces_stale_links_and_forgets_by_whole_profile_name() {
        let m = minter();
        let now = OffsetDateTime::now_utc();
        let creds = |id: &str| TemporaryCredentials::sample(id, now + time::Duration::hours(1));
        let link = |profile: &str| CacheKey::Link {
            profile: profile.into(),
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
        };
        // A link re-assumed after each rotation of its source: one entry, the newest.
        for i in 0..100 {
            m.cache(link("a"), Some(format!("SRC{i}")), &creds(&format!("L{i}")));
        }
        assert_eq!(m.links.lock().unwrap().len(), 1);
        assert!(
            m.cached(&link("a"), Some("SRC98"), now, 3600).is_none(),
            "stale source"
        );
        let hit = m.cached(&link("a"), Some("SRC99"), now, 3600).unwrap();
        assert_eq!(hit.access_key_id, "L99");
        // Profiles named like the old string keys' tags only forget themselves.
        m.cache(link("role"), Some("S".into()), &creds("R"));
        let session = CacheKey::Session {
            profile: "session".into(),
            serial: "arn:aws:iam::123456789012:mfa/u".into(),
        };
        m.cache(session.clone(), None, &creds("S"));
        m.forget_cached(&["role"]);
        assert!(m.cached(&link("role"), Some("S"), now, 3600).is_none());
        assert!(m.cached(&link("a"), Some("SRC99"), now, 3600).is_some());
        assert!(m.cached(&session, None, now, 3600).is_some());
    }

    /// A link cached before a reload changed its session tags, transitive keys or source
    /// identity is not reused: its request is part of what it was made with.
    #[test]
    fn a_link_is_reused_only_for_the_same_request() {
        let role = RoleStep {
            profile: "a".into(),
            role_arn: "arn:aws:iam::123456789012:role/a".into(),
            session_name: "credvend-a".into(),
            duration: 3600,
            external_id: None,
            policy: None,
            policy_arns: Vec::new(),
            tags: crate::profile::resolve::SessionTags {
                tags: vec![("team".into(), "dev".into())],
                transitive: vec!["team".into()],
            },
            source_identity: Some("alice".into()),
            target: StsTarget {
                endpoint: crate::sts::StsEndpoint::custom(
                    "http://127.0.0.1:5000".parse().unwrap(),
                    "us-east-1",
                ),
                ca_bundle: None,
            },
        };
        let same = link_source("ASIA1", &role);
        assert_eq!(same, link_source("ASIA1", &role.clone()));
        assert_ne!(same, link_source("ASIA2", &role));
        let mut other = role.clone();
        other.tags.tags[0].1 = "ops".into();
        assert_ne!(same, link_source("ASIA1", &other));
        let mut other = role.clone();
        other.tags.transitive.clear();
        assert_ne!(same, link_source("ASIA1", &other));
        let mut other = role;
        other.source_identity = None;
        assert_ne!(same, link_source("ASIA1", &other));
    }
}
