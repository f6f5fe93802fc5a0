//! Minting: runs a profile's [`Chain`] (keyring, `credential_process`, token file, STS calls) and
//! returns the temporary credentials to serve. IO at the edge; the daemon's refresher and
//! `credvend credential-process` both call [`Minter::mint`].
//!
//! Two caches keep STS traffic to one call per refresh in the common cases:
//! - MFA-authenticated sessions (`GetSessionToken` with a code) are kept in memory and in the
//!   keyring, and reused until they are about to expire, also across daemon restarts;
//! - intermediate links of a role chain are reused while they have time left, so refreshing the
//!   served role of a chain usually costs a single `AssumeRole`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;

use crate::creds::{LongTermKey, SigningKey, TemporaryCredentials, parse_aws_time};
use crate::keystore::{KeyStore, KeystoreError, OpenOptions};
use crate::profile::resolve::{Base, Chain, RoleStep, StsTarget};
use crate::sts::{
    AssumeRole, AssumeRoleWithWebIdentity, ClientOptions, GetFederationToken, GetSessionToken,
    MfaToken, StsClient, StsError, StsRequest,
};

/// An MFA session or chain link is reused only while it has at least this long left.
pub const REUSE_MIN: Duration = Duration::from_secs(15 * 60);

/// Longest a `credential_process` or `credvend_mfa_process` may run.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest output read from a `credential_process`.
const PROCESS_OUTPUT_MAX: usize = 64 * 1024;

/// Credentials minted for a profile.
#[derive(Debug)]
pub struct Minted {
    /// What to serve.
    pub creds: TemporaryCredentials,
    /// The configured role ARN of the served credentials, if any.
    pub role_arn: Option<String>,
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The chain needs an MFA code and no valid MFA session exists.
    #[error("profile `{profile}` needs an MFA code for {serial}: run `credvend login {profile}`")]
    NeedsMfa {
        /// Served profile.
        profile: String,
        /// MFA device.
        serial: String,
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
    #[error("profile `{profile}`: {source}{}", hint.map(|h| format!("; {h}")).unwrap_or_default())]
    Sts {
        /// Served profile.
        profile: String,
        /// Profile whose step failed.
        step: String,
        /// The failure.
        source: Box<StsError>,
        /// What to do about it.
        hint: Option<&'static str>,
    },
    /// `credential_process` failed or printed something unusable.
    #[error("profile `{profile}`: credential_process {message}")]
    Process {
        /// Profile defining the process.
        profile: String,
        /// What went wrong (includes the process's stderr).
        message: String,
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
}

impl MintError {
    /// The IMDS `Code` for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            MintError::NeedsMfa { .. } => "NeedsMfa",
            MintError::Keystore {
                source: KeystoreError::NotFound { .. },
                ..
            } => "MissingKeys",
            MintError::Keystore { .. } => "KeyringUnavailable",
            MintError::Sts { source, .. } => match source.as_ref() {
                StsError::Service(e) if e.action == "AssumeRole" && e.code == "AccessDenied" => {
                    "AssumeRoleUnauthorizedAccess"
                }
                StsError::Service(e)
                    if e.code == "InvalidClientTokenId" || e.code == "SignatureDoesNotMatch" =>
                {
                    "InvalidKeys"
                }
                StsError::Service(e) if e.is_retryable() && e.status < 500 => "StsThrottled",
                StsError::Service(_) => "StsError",
                StsError::Setup(_) => "InvalidConfiguration",
                StsError::Malformed { .. } | StsError::TooLarge { .. } => "StsBadResponse",
                StsError::Http { .. } | StsError::Transport { .. } | StsError::Timeout { .. } => {
                    "StsUnavailable"
                }
            },
            MintError::Process { .. } => "CredentialProcessFailed",
            MintError::TokenFile { .. } => "WebIdentityTokenUnreadable",
        }
    }

    /// Whether waiting and retrying may help without the user doing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            MintError::NeedsMfa { .. } => false,
            MintError::Keystore { source, .. } => source.is_transient(),
            MintError::Sts { source, .. } => source.is_retryable(),
            MintError::Process { .. } | MintError::TokenFile { .. } => true,
        }
    }
}

fn sts_hint(e: &StsError, step_is_session_based: bool) -> Option<&'static str> {
    match e.code()? {
        "InvalidClientTokenId" | "SignatureDoesNotMatch" if !step_is_session_based => Some(
            "the stored keys are not valid: store new ones with `credvend add PROFILE --force`",
        ),
        "ExpiredToken" => Some("the session expired; run `credvend login PROFILE` if it needs MFA"),
        "AccessDenied" => Some("check the role's trust policy, external_id and MFA requirements"),
        "RegionDisabledException" => Some("activate STS in that region or choose another region"),
        _ => None,
    }
}

/// The key store, opened now or on first use. The daemon starts even when the keyring is locked
/// or its bus is not up yet; every use retries opening until it works.
pub struct Keys {
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

/// Runs chains. Cheap to share behind an `Arc`.
pub struct Minter {
    keys: Keys,
    options: ClientOptions,
    clients: Mutex<HashMap<Option<PathBuf>, StsClient>>,
    /// MFA sessions and intermediate chain links: one entry per session and per intermediate
    /// role of the configuration, replaced when renewed.
    links: Mutex<HashMap<CacheKey, Cached>>,
    /// Serialises MFA session minting (one code prompt or `credvend_mfa_process` at a time).
    session_locks: tokio::sync::Mutex<()>,
    /// Account ids learned with GetCallerIdentity, by base profile.
    accounts: Mutex<HashMap<String, String>>,
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
    fn profile(&self) -> &str {
        match self {
            CacheKey::Session { profile, .. } | CacheKey::Link { profile, .. } => profile,
        }
    }
}

/// A cached session or link.
struct Cached {
    /// For a link, the access key id it was assumed with: after its source rotates, the link
    /// is stale and gets replaced.
    source: Option<String>,
    creds: TemporaryCredentials,
}

impl Minter {
    /// Cached credentials under `key` assumed from `source`, with time left at `now`.
    fn cached(
        &self,
        key: &CacheKey,
        source: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<TemporaryCredentials> {
        self.links
            .lock()
            .expect("links")
            .get(key)
            .filter(|c| c.source.as_deref() == source && usable(&c.creds, now))
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
}

fn usable(c: &TemporaryCredentials, now: OffsetDateTime) -> bool {
    c.expiration - now > time::Duration::try_from(REUSE_MIN).expect("small")
}

impl Minter {
    /// A minter reading keys from `keys` and calling STS with `options`.
    pub fn new(keys: Keys, options: ClientOptions) -> Minter {
        Minter {
            keys,
            options,
            clients: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            session_locks: tokio::sync::Mutex::new(()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// The key store (opened on first use).
    pub async fn keystore(&self) -> Result<KeyStore, KeystoreError> {
        self.keys.get().await
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
            step: profile.to_owned(),
            source: Box::new(source),
            hint: None,
        })?;
        clients.insert(target.ca_bundle.clone(), client.clone());
        Ok(client)
    }

    async fn call(
        &self,
        chain: &Chain,
        step: &str,
        target: &StsTarget,
        req: &StsRequest,
        key: Option<SigningKey<'_>>,
        session_based: bool,
    ) -> Result<TemporaryCredentials, MintError> {
        let client = self.client(target, &chain.profile)?;
        tracing::debug!(profile = %chain.profile, step, action = req.action(), endpoint = %target.endpoint, "calling STS");
        client
            .mint(&target.endpoint, req, key)
            .await
            .map_err(|source| MintError::Sts {
                profile: chain.profile.clone(),
                step: step.to_owned(),
                hint: sts_hint(&source, session_based),
                source: Box::new(source),
            })
    }

    fn session_key(chain: &Chain) -> Option<CacheKey> {
        let s = chain.session.as_ref()?;
        Some(CacheKey::Session {
            profile: s.profile.clone(),
            serial: s.mfa_serial.clone()?,
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

    /// The MFA session of `chain`: from memory, the keyring, `credvend_mfa_process`, or
    /// `code` — in that order. `NeedsMfa` when none of them gives one.
    async fn mfa_session(
        &self,
        chain: &Chain,
        code: Option<SecretString>,
    ) -> Result<TemporaryCredentials, MintError> {
        let step = chain.session.as_ref().expect("called only for MFA chains");
        let serial = step.mfa_serial.clone().expect("called only for MFA chains");
        let key = Self::session_key(chain).expect("MFA chain");
        // The common case needs no lock: a chain with its session in memory never waits behind
        // another chain's code prompt.
        if code.is_none()
            && let Some(s) = self.cached(&key, None, OffsetDateTime::now_utc())
        {
            return Ok(s);
        }
        let _guard = self.session_locks.lock().await;
        let now = OffsetDateTime::now_utc();
        if code.is_none() {
            if let Some(s) = self.cached(&key, None, now) {
                return Ok(s);
            }
            match self.store(chain).await?.get_session(&step.profile).await {
                Ok(Some(s)) if usable(&s, now) => {
                    tracing::info!(profile = %chain.profile, base = %step.profile, "reusing the MFA session cached in the keyring");
                    self.cache(key, None, &s);
                    return Ok(s);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not read the cached MFA session"),
            }
        }
        let code = match (code, &step.mfa_process) {
            (Some(c), _) => c,
            (None, Some(cmd)) => {
                run_mfa_process(cmd)
                    .await
                    .map_err(|message| MintError::Process {
                        profile: step.profile.clone(),
                        message: format!("(credvend_mfa_process) {message}"),
                    })?
            }
            (None, None) => {
                return Err(MintError::NeedsMfa {
                    profile: chain.profile.clone(),
                    serial,
                });
            }
        };
        let long_term = self.long_term_key(chain, &step.profile).await?;
        let req = StsRequest::GetSessionToken(GetSessionToken {
            duration_seconds: Some(step.duration),
            mfa: Some(MfaToken { serial, code }),
        });
        let session = self
            .call(
                chain,
                &step.profile,
                &step.target,
                &req,
                Some(long_term.signing_key()),
                false,
            )
            .await?;
        self.cache(key, None, &session);
        let stored = match self.keys.get().await {
            Ok(store) => store.put_session(&step.profile, &session).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::warn!(error = %e, "could not cache the MFA session in the keyring; it will be asked for again after a restart");
        }
        Ok(session)
    }

    /// When the MFA session `chain` uses expires, if one is held.
    pub fn mfa_session_expiry(&self, chain: &Chain) -> Option<OffsetDateTime> {
        let key = Self::session_key(chain)?;
        self.links
            .lock()
            .expect("links")
            .get(&key)
            .map(|s| s.creds.expiration)
    }

    /// Supplies an MFA code for `chain`: mints (and caches) the MFA session. Returns its expiry.
    pub async fn login(
        &self,
        chain: &Chain,
        code: SecretString,
    ) -> Result<OffsetDateTime, MintError> {
        if chain.mfa_serial().is_none() {
            return Err(MintError::Process {
                profile: chain.profile.clone(),
                message: "is not involved: this profile has no mfa_serial, so it needs no login"
                    .into(),
            });
        }
        Ok(self.mfa_session(chain, Some(code)).await?.expiration)
    }

    /// Forgets cached sessions and links of `chain` (memory and keyring).
    pub async fn forget(&self, chain: &Chain) {
        self.forget_cached(&chain.profiles());
        if let Some(s) = &chain.session
            && s.mfa_serial.is_some()
            && let Ok(store) = self.keys.get().await
            && let Err(e) = store.delete_session(&s.profile).await
        {
            tracing::warn!(error = %e, "could not delete the cached MFA session");
        }
    }

    /// Mints credentials for `chain`.
    pub async fn mint(&self, chain: &Chain) -> Result<Minted, MintError> {
        let result = self.mint_inner(chain).await;
        if let Err(MintError::Sts { source, .. }) = &result
            && source.code() == Some("ExpiredToken")
            && let Some(key) = Self::session_key(chain)
        {
            // A cached MFA session that STS no longer accepts: drop it, ask for a new code.
            self.links.lock().expect("links").remove(&key);
            if let Some(s) = &chain.session
                && let Ok(store) = self.keys.get().await
            {
                let _ = store.delete_session(&s.profile).await;
            }
        }
        result
    }

    async fn mint_inner(&self, chain: &Chain) -> Result<Minted, MintError> {
        enum Start {
            Key(LongTermKey),
            Session(TemporaryCredentials),
        }
        // 1. Where the chain starts.
        let mut start = match &chain.base {
            Base::Keyring { profile } => match &chain.session {
                Some(s) if s.mfa_serial.is_some() => {
                    Start::Session(self.mfa_session(chain, None).await?)
                }
                _ => Start::Key(self.long_term_key(chain, profile).await?),
            },
            Base::Process { profile, command } => {
                match run_credential_process(command).await.map_err(|message| {
                    MintError::Process {
                        profile: profile.clone(),
                        message,
                    }
                })? {
                    ProcessOutput::Temporary(c) => Start::Session(c),
                    ProcessOutput::LongTerm(k) => Start::Key(k),
                }
            }
            Base::WebIdentity(w) => {
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
                Start::Session(
                    self.call(chain, &w.profile, &w.target, &req, None, true)
                        .await?,
                )
            }
        };

        // 2. A served GetSessionToken / GetFederationToken on long-term keys.
        if chain.roles.is_empty() {
            let creds = match start {
                Start::Session(c) => c,
                Start::Key(key) => {
                    if let Some(f) = &chain.federation {
                        let req = StsRequest::GetFederationToken(GetFederationToken {
                            name: f.name.clone(),
                            duration_seconds: Some(f.duration),
                            policy: f.policy.clone(),
                            policy_arns: f.policy_arns.clone(),
                            ..GetFederationToken::default()
                        });
                        self.call(
                            chain,
                            &f.profile,
                            &f.target,
                            &req,
                            Some(key.signing_key()),
                            false,
                        )
                        .await?
                    } else {
                        let s = chain.session.as_ref();
                        let (step, target, duration) = match (s, &chain.base) {
                            (Some(s), _) => (s.profile.clone(), s.target.clone(), s.duration),
                            (None, Base::Process { profile, .. }) => {
                                // Long-term keys from a process are never served: wrap them in a
                                // session with the process profile's endpoint.
                                return Err(MintError::Process {
                                    profile: profile.clone(),
                                    message: "returned long-term keys (no SessionToken) for a profile without a role; \
                                              credvend serves only temporary credentials, so give the profile a role_arn \
                                              or make the process return a session"
                                        .into(),
                                });
                            }
                            (None, _) => {
                                unreachable!("resolution adds a session step for keyring profiles")
                            }
                        };
                        let req = StsRequest::GetSessionToken(GetSessionToken {
                            duration_seconds: Some(duration),
                            mfa: None,
                        });
                        let mut c = self
                            .call(chain, &step, &target, &req, Some(key.signing_key()), false)
                            .await?;
                        c.arn = None;
                        c
                    }
                }
            };
            let creds = self.with_account(chain, creds).await;
            return Ok(Minted {
                role_arn: chain.leaf_role_arn().map(str::to_owned),
                creds,
            });
        }

        // 3. Roles, reusing intermediate links that still have time left.
        let now = OffsetDateTime::now_utc();
        let last = chain.roles.len() - 1;
        for (i, role) in chain.roles.iter().enumerate() {
            let source_id = match &start {
                Start::Key(k) => k.access_key_id.clone(),
                Start::Session(c) => c.access_key_id.clone(),
            };
            let link_key = CacheKey::Link {
                profile: role.profile.clone(),
                role_arn: role.role_arn.clone(),
            };
            if i < last
                && let Some(c) = self.cached(&link_key, Some(&source_id), now)
            {
                start = Start::Session(c);
                continue;
            }
            let creds = {
                let (key, session_based) = match &start {
                    Start::Key(k) => (k.signing_key(), false),
                    Start::Session(c) => (c.signing_key(), true),
                };
                self.call(
                    chain,
                    &role.profile,
                    &role.target,
                    &assume(role),
                    Some(key),
                    session_based,
                )
                .await?
            };
            if i < last {
                self.cache(link_key, Some(source_id), &creds);
            }
            start = Start::Session(creds);
        }
        let Start::Session(creds) = start else {
            unreachable!("a role step always yields a session")
        };
        Ok(Minted {
            role_arn: chain.leaf_role_arn().map(str::to_owned),
            creds,
        })
    }

    /// Fills in the account id of credentials STS returned without an ARN (GetSessionToken,
    /// credential_process), asking GetCallerIdentity once per profile.
    async fn with_account(
        &self,
        chain: &Chain,
        mut creds: TemporaryCredentials,
    ) -> TemporaryCredentials {
        if creds.account_id.is_some() {
            return creds;
        }
        if let Some(a) = self.accounts.lock().expect("accounts").get(&chain.profile) {
            creds.account_id = Some(a.clone());
            return creds;
        }
        let target = match (&chain.session, &chain.federation) {
            (Some(s), _) => s.target.clone(),
            (None, Some(f)) => f.target.clone(),
            _ => return creds,
        };
        let Ok(client) = self.client(&target, &chain.profile) else {
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

fn assume(role: &RoleStep) -> StsRequest {
    StsRequest::AssumeRole(AssumeRole {
        role_arn: role.role_arn.clone(),
        role_session_name: role.session_name.clone(),
        duration_seconds: Some(role.duration),
        external_id: role.external_id.clone(),
        policy: role.policy.clone(),
        policy_arns: role.policy_arns.clone(),
        ..AssumeRole::default()
    })
}

/// What a `credential_process` printed.
#[derive(Debug)]
pub enum ProcessOutput {
    /// With a session token and expiry.
    Temporary(TemporaryCredentials),
    /// Without a session token.
    LongTerm(LongTermKey),
}

/// Parses `credential_process` Version 1 JSON.
pub fn parse_process_output(stdout: &[u8]) -> Result<ProcessOutput, String> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("printed something that is not JSON ({e})"))?;
    if v.get("Version").and_then(|v| v.as_u64()) != Some(1) {
        return Err("printed JSON without \"Version\": 1 (an integer)".into());
    }
    let field = |name: &str| -> Result<Option<String>, String> {
        match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("printed a {name} that is not a non-empty string")),
        }
    };
    let access_key_id = field("AccessKeyId")?.ok_or("printed no AccessKeyId")?;
    let secret = field("SecretAccessKey")?.ok_or("printed no SecretAccessKey")?;
    let token = field("SessionToken")?;
    let expiration = field("Expiration")?
        .map(|e| {
            parse_aws_time(&e)
                .map_err(|_| format!("printed an Expiration that is not ISO 8601: {e:?}"))
        })
        .transpose()?;
    let account_id = field("AccountId")?;
    match (token, expiration) {
        (Some(t), Some(exp)) => Ok(ProcessOutput::Temporary(TemporaryCredentials {
            access_key_id,
            secret_access_key: SecretString::from(secret),
            session_token: Some(SecretString::from(t)),
            expiration: exp,
            account_id,
            arn: None,
        })),
        (None, _) => Ok(ProcessOutput::LongTerm(LongTermKey {
            access_key_id,
            secret_access_key: SecretString::from(secret),
        })),
        (Some(_), None) => Err("printed a SessionToken without an Expiration; credvend needs the expiry to refresh in time".into()),
    }
}

async fn run_process(command: &[String]) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{}` could not be started: {e}", command[0]))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let run = async {
        let (a, b, status) = tokio::join!(
            read_capped(&mut stdout, PROCESS_OUTPUT_MAX, false),
            read_capped(&mut stderr, PROCESS_OUTPUT_MAX, true),
            child.wait()
        );
        let (out, out_overflowed) = a.map_err(|e| e.to_string())?;
        let (err, _) = b.map_err(|e| e.to_string())?;
        Ok::<_, String>((out, out_overflowed, err, status.map_err(|e| e.to_string())?))
    };
    let (out, out_overflowed, err, status) = tokio::time::timeout(PROCESS_TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "`{}` did not finish within {} s",
                command[0],
                PROCESS_TIMEOUT.as_secs()
            )
        })??;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        let stderr = stderr.trim();
        let tail: String = stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "`{}` failed ({status}){}",
            command[0],
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.replace('\n', " "))
            }
        ));
    }
    if out_overflowed {
        return Err(format!(
            "`{}` printed more than {PROCESS_OUTPUT_MAX} bytes",
            command[0]
        ));
    }
    Ok(out)
}

/// Reads `r` to its end, keeping at most `max` bytes (the first ones, or with `tail` the last
/// ones); says whether there was more. Reading on past the cap keeps the child from blocking on
/// a full pipe.
async fn read_capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    max: usize,
    tail: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut overflowed = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, overflowed));
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > max {
            overflowed = true;
            if tail {
                kept.drain(..kept.len() - max);
            } else {
                kept.truncate(max);
            }
        }
    }
}

/// Runs a `credential_process` (no shell) and parses its output.
pub async fn run_credential_process(command: &[String]) -> Result<ProcessOutput, String> {
    parse_process_output(&run_process(command).await?)
}

async fn run_mfa_process(command: &[String]) -> Result<SecretString, String> {
    let out = run_process(command).await?;
    let code = String::from_utf8_lossy(&out).trim().to_owned();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{}` did not print a 6-digit code", command[0]));
    }
    Ok(SecretString::from(code))
}

/// The one-line failure text for `status` and endpoint errors.
pub fn describe(e: &MintError) -> String {
    e.to_string().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn process_output_versions_and_shapes() {
        let ok = br#"{"Version": 1, "AccessKeyId": "ASIA1", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "2030-01-01T00:00:00Z"}"#;
        assert!(matches!(
            parse_process_output(ok),
            Ok(ProcessOutput::Temporary(_))
        ));
        let long = br#"{"Version": 1, "AccessKeyId": "AKIA1", "SecretAccessKey": "s"}"#;
        assert!(matches!(
            parse_process_output(long),
            Ok(ProcessOutput::LongTerm(_))
        ));
        for (bad, needle) in [
            (&br#"{"Version": "1", "AccessKeyId": "a", "SecretAccessKey": "s"}"#[..], "Version"),
            (br#"{"Version": 2, "AccessKeyId": "a", "SecretAccessKey": "s"}"#, "Version"),
            (br#"{"Version": 1, "SecretAccessKey": "s"}"#, "AccessKeyId"),
            (br#"{"Version": 1, "AccessKeyId": "a", "SecretAccessKey": 5}"#, "SecretAccessKey"),
            (br#"{"Version": 1, "AccessKeyId": "a", "SecretAccessKey": "s", "SessionToken": "t"}"#, "Expiration"),
            (br#"{"Version": 1, "AccessKeyId": "a", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "soon"}"#, "ISO 8601"),
            (b"not json", "not JSON"),
        ] {
            let e = parse_process_output(bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("\"s\""), "no secret in {e}");
        }
    }

    #[test]
    fn the_link_cache_replaces_stale_links_and_forgets_by_whole_profile_name() {
        let m = Minter::new(
            Keys::lazy(crate::keystore::OpenOptions::default()),
            ClientOptions::default(),
        );
        let now = OffsetDateTime::now_utc();
        let creds = |id: &str| TemporaryCredentials {
            access_key_id: id.into(),
            secret_access_key: SecretString::from("s"),
            session_token: Some(SecretString::from("t")),
            expiration: now + time::Duration::hours(1),
            account_id: None,
            arn: None,
        };
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
            m.cached(&link("a"), Some("SRC98"), now).is_none(),
            "stale source"
        );
        let hit = m.cached(&link("a"), Some("SRC99"), now).unwrap();
        assert_eq!(hit.access_key_id, "L99");
        // Profiles named like the old string keys' tags only forget themselves.
        m.cache(link("role"), Some("S".into()), &creds("R"));
        let session = CacheKey::Session {
            profile: "session".into(),
            serial: "arn:aws:iam::123456789012:mfa/u".into(),
        };
        m.cache(session.clone(), None, &creds("S"));
        m.forget_cached(&["role"]);
        assert!(m.cached(&link("role"), Some("S"), now).is_none());
        assert!(m.cached(&link("a"), Some("SRC99"), now).is_some());
        assert!(m.cached(&session, None, now).is_some());
    }

    #[tokio::test]
    async fn process_failures_carry_stderr() {
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "echo 'token expired, run login' >&2; exit 3".into(),
        ];
        let e = run_credential_process(&cmd).await.unwrap_err();
        assert!(e.contains("token expired, run login"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        let e = run_credential_process(&["/nonexistent/tool".into()])
            .await
            .unwrap_err();
        assert!(e.contains("could not be started"), "{e}");
    }

    #[tokio::test]
    async fn chatty_processes_neither_hang_nor_lose_their_last_words() {
        // 1 MiB of stderr (far more than a pipe holds) and then a valid answer.
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero | tr '\\0' x >&2; \
             echo '{\"Version\":1,\"AccessKeyId\":\"AKID\",\"SecretAccessKey\":\"s\"}'"
                .into(),
        ];
        assert!(matches!(
            run_credential_process(&cmd).await,
            Ok(ProcessOutput::LongTerm(_))
        ));
        // Failing after a flood of stderr: the error carries the end of it.
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo ' the real reason' >&2; exit 2"
                .into(),
        ];
        let e = run_credential_process(&cmd).await.unwrap_err();
        assert!(e.contains("the real reason"), "{e}");
        // Too much stdout is reported as such, not as a timeout.
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero | tr '\\0' x".into(),
        ];
        let e = run_credential_process(&cmd).await.unwrap_err();
        assert!(e.contains("printed more than"), "{e}");
    }

    #[tokio::test]
    async fn mfa_process_must_print_six_digits() {
        assert_eq!(
            run_mfa_process(&["echo".into(), "123456".into()])
                .await
                .unwrap()
                .expose_secret(),
            "123456"
        );
        assert!(
            run_mfa_process(&["echo".into(), "12345".into()])
                .await
                .is_err()
        );
    }
}
