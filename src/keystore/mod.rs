//! The OS keyring: the only place long-term AWS keys (and cached MFA sessions and IAM Identity
//! Center sign-ins) are kept.
//!
//! [`KeyStore`] is a cheap, clonable handle over one backend:
//!
//! | platform | backend | module |
//! |---|---|---|
//! | Linux with a desktop session | Secret Service over D-Bus (GNOME Keyring, KeePassXC, …) | `secret_service` |
//! | Linux without one | the kernel keyring (keyutils): keys last until reboot | `keyutils` |
//! | macOS | the login Keychain | `native` |
//! | Windows | the Credential Manager | `native` |
//!
//! `--keystore auto` (the default) picks the Secret Service on Linux when a session bus, a provider
//! and a default collection answer, and the kernel keyring otherwise. A *locked* Secret Service is
//! not a reason to fall back: that would split a user's keys between two stores, so it is reported
//! as [`KeystoreError::Locked`] instead.
//!
//! Every keyring call blocks (D-Bus round trips, syscalls, OS APIs), so each method runs it in
//! [`tokio::task::spawn_blocking`]. Nothing here prompts unless [`OpenOptions::prompt_timeout`] allows
//! it, and then only for that long. A platform without a backend fails to compile rather than
//! falling back to an in-memory store.
//!
//! Entries are named by a *service* (`credvend` by default) and an *account* (the profile name).
//! Long-term keys live under the service itself; cached MFA sessions under `{service}.session`;
//! the record of a key rotation in progress ([`RotationRecord`], with the new key once IAM made
//! it) under `{service}.rotation`, and IAM Identity Center sign-ins under `{service}.sso`, one per
//! SSO session (account: the `sso-session` name, or the SHA-1 of the start URL for a legacy
//! profile; see [`SsoSession::storage_key`](crate::sso::SsoSession::storage_key)). Payloads are
//! versioned JSON (see `payload`).

mod error;
mod payload;

#[cfg(target_os = "linux")]
mod keyutils;
#[cfg(any(target_os = "macos", target_os = "windows"))]
mod native;
#[cfg(target_os = "linux")]
mod secret_service;

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
compile_error!(
    "credvend has no OS keyring backend for this platform (only Linux, macOS and Windows are \
     supported); it will not fall back to storing keys in memory or in a file"
);

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use time::OffsetDateTime;

use crate::creds::{LongTermKey, TemporaryCredentials};
use crate::sso::SignIn;

pub use error::KeystoreError;

/// A key rotation of one profile in progress (`credvend rotate`), kept in the keyring next to the
/// profile's key so that a rotation interrupted at any point can be finished or undone by the next
/// run. `Debug` shows the new key's secret as `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct RotationRecord {
    /// The IAM user whose keys rotate.
    pub user_name: String,
    /// The key stored for the profile when the rotation started (the one to delete at the end).
    pub old_access_key_id: String,
    /// When the rotation was recorded, just before `CreateAccessKey` was sent.
    pub started: OffsetDateTime,
    /// Every access key the user had just before (from `ListAccessKeys`): keys not in this list
    /// were created after the rotation started.
    pub existing_key_ids: Vec<String>,
    /// The key `CreateAccessKey` returned, once it has (still *pending*: not yet verified and
    /// not yet the profile's key).
    pub new_key: Option<LongTermKey>,
}

/// Which store the user asked for (`--keystore`, `CREDVEND_KEYSTORE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The platform's natural store; on Linux the Secret Service when usable, else keyutils.
    Auto,
    /// The freedesktop Secret Service (Linux).
    SecretService,
    /// The Linux kernel keyring.
    Keyutils,
    /// The macOS Keychain.
    Keychain,
    /// The Windows Credential Manager.
    Windows,
}

impl Choice {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [Choice; 5] = [
        Choice::Auto,
        Choice::SecretService,
        Choice::Keyutils,
        Choice::Keychain,
        Choice::Windows,
    ];

    /// The spelling used by `--keystore` and `CREDVEND_KEYSTORE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::Auto => "auto",
            Choice::SecretService => "secret-service",
            Choice::Keyutils => "keyutils",
            Choice::Keychain => "keychain",
            Choice::Windows => "windows",
        }
    }

    /// The operating system that has this store.
    fn platform(self) -> &'static str {
        match self {
            Choice::Auto => "every supported platform",
            Choice::SecretService | Choice::Keyutils => "Linux",
            Choice::Keychain => "macOS",
            Choice::Windows => "Windows",
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--keystore` named no known store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown keystore `{0}`: use one of auto, secret-service, keyutils, keychain, windows")]
pub struct ParseChoiceError(String);

impl FromStr for Choice {
    type Err = ParseChoiceError;

    fn from_str(s: &str) -> Result<Choice, ParseChoiceError> {
        Choice::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseChoiceError(s.to_owned()))
    }
}

/// The store a [`KeyStore`] actually uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The freedesktop Secret Service, default collection.
    SecretService,
    /// The Linux kernel keyring: the per-user persistent keyring, or the user keyring where the
    /// kernel has no persistent keyrings. Kept in kernel memory only.
    Keyutils,
    /// The macOS Keychain.
    Keychain,
    /// The Windows Credential Manager.
    Windows,
}

impl Backend {
    /// A one-line note for users storing keys in this backend, when it behaves surprisingly.
    /// `credvend add` prints it. Only the kernel keyring has one: it forgets keys at reboot.
    pub fn persistence_note(self) -> Option<&'static str> {
        match self {
            Backend::Keyutils => Some(
                "note: the kernel keyring keeps keys in memory only: they are gone after a reboot \
                 (or after about 3 days without any credvend use); run `credvend add` again then",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::SecretService => "Secret Service",
            Backend::Keyutils => "kernel keyring (keyutils)",
            Backend::Keychain => "macOS Keychain",
            Backend::Windows => "Windows Credential Manager",
        })
    }
}

/// How to open a [`KeyStore`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Which store to use.
    pub choice: Choice,
    /// The service name entries are filed under; `credvend` unless a test isolates itself.
    /// Cached sessions use `{service}.session`, rotation records `{service}.rotation`. Must be
    /// non-empty and free of `:` and `;`.
    pub service: String,
    /// How long the Secret Service may show an unlock prompt for a locked keyring.
    /// Zero (the default, and what the daemon uses) never prompts: a locked keyring is
    /// [`KeystoreError::Locked`]. Rounded up to whole seconds. See [`cli_prompt_timeout`].
    pub prompt_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            choice: Choice::Auto,
            service: "credvend".into(),
            prompt_timeout: Duration::ZERO,
        }
    }
}

/// The prompt timeout an interactive command should use: 60 s when a graphical session is
/// visible (`DISPLAY` or `WAYLAND_DISPLAY` is set), so a desktop user can unlock the keyring,
/// and zero otherwise. The daemon always uses zero.
pub fn cli_prompt_timeout() -> Duration {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if graphical {
        Duration::from_secs(60)
    } else {
        Duration::ZERO
    }
}

/// One backend's blocking operations on raw payloads. `service` and `account` are validated
/// before they get here; payloads are opaque bytes.
trait RawStore: Send + Sync {
    /// The payload stored under (service, account), if any.
    fn get(
        &self,
        service: &str,
        account: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError>;
    /// Creates or replaces the entry. `label` is a human-readable name where the store shows one.
    fn put(
        &self,
        service: &str,
        account: &str,
        label: &str,
        payload: &[u8],
    ) -> Result<(), KeystoreError>;
    /// Deletes the entry; true if there was one.
    fn delete(&self, service: &str, account: &str) -> Result<bool, KeystoreError>;
    /// The accounts that have an entry under `service`, in any order.
    fn list(&self, service: &str) -> Result<Vec<String>, KeystoreError>;
}

struct Inner {
    backend: Backend,
    service: String,
    session_service: String,
    rotation_service: String,
    sso_service: String,
    store: Box<dyn RawStore>,
}

/// A handle on the OS keyring. Cloning is cheap and clones share the backend.
///
/// Every method is async and runs the blocking keyring call on tokio's blocking pool.
/// `Debug` shows the backend and service only.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("backend", &self.inner.backend)
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the chosen store and checks that it answers, so a missing bus, a locked keyring or a
    /// blocked `keyctl` shows up here rather than at the first read.
    ///
    /// With [`Choice::Auto`] on Linux this is the Secret Service when a session bus, a provider and
    /// a default collection answer, and otherwise the kernel keyring (logged once at info level,
    /// with the reason). A locked Secret Service is [`KeystoreError::Locked`], not a fallback.
    pub async fn open(opts: OpenOptions) -> Result<KeyStore, KeystoreError> {
        check_service(&opts.service)?;
        let service = opts.service.clone();
        let (backend, store) = blocking(move || open_backend(&opts)).await?;
        Ok(KeyStore {
            inner: Arc::new(Inner {
                backend,
                session_service: format!("{service}.session"),
                rotation_service: format!("{service}.rotation"),
                sso_service: format!("{service}.sso"),
                service,
                store,
            }),
        })
    }

    /// The store in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The long-term key stored for `profile`; [`KeystoreError::NotFound`] if there is none.
    pub async fn get_key(&self, profile: &str) -> Result<LongTermKey, KeystoreError> {
        let raw = self.raw_get(profile, Kind::Key).await?;
        let Some(raw) = raw else {
            return Err(KeystoreError::NotFound {
                profile: profile.to_owned(),
                backend: self.backend(),
            });
        };
        payload::decode_key(&raw).ok_or_else(|| KeystoreError::Malformed {
            profile: profile.to_owned(),
        })
    }

    /// Stores (or replaces) the long-term key for `profile`. Both halves must be non-empty.
    pub async fn put_key(&self, profile: &str, key: &LongTermKey) -> Result<(), KeystoreError> {
        check_profile(profile)?;
        if key.access_key_id.is_empty() || key.secret_access_key.expose_secret().is_empty() {
            return Err(KeystoreError::Platform(format!(
                "refusing to store an empty access key id or secret for `{profile}`"
            )));
        }
        self.raw_put(profile, Kind::Key, payload::encode_key(key))
            .await?;
        tracing::debug!(profile, backend = %self.backend(), "stored long-term key");
        Ok(())
    }

    /// Whether an entry exists for `profile` (whether or not it decodes).
    pub async fn has_key(&self, profile: &str) -> Result<bool, KeystoreError> {
        Ok(self.raw_get(profile, Kind::Key).await?.is_some())
    }

    /// Deletes the long-term key for `profile`; true if there was one.
    pub async fn delete_key(&self, profile: &str) -> Result<bool, KeystoreError> {
        self.raw_delete(profile, Kind::Key).await
    }

    /// The profiles that have a stored long-term key, sorted and without duplicates. Cached
    /// sessions are not listed.
    pub async fn list_profiles(&self) -> Result<Vec<String>, KeystoreError> {
        let inner = self.inner.clone();
        let mut profiles = blocking(move || inner.store.list(&inner.service)).await?;
        profiles.sort();
        profiles.dedup();
        Ok(profiles)
    }

    /// The cached MFA-backed session for `profile`, as stored, expired or not (the caller decides
    /// whether it is still useful). An entry that does not decode (written by another version) is
    /// deleted, logged at warn level and reported as `None`: the cache is disposable.
    pub async fn get_session(
        &self,
        profile: &str,
    ) -> Result<Option<TemporaryCredentials>, KeystoreError> {
        let Some(raw) = self.raw_get(profile, Kind::Session).await? else {
            return Ok(None);
        };
        match payload::decode_session(&raw) {
            Some(creds) => Ok(Some(creds)),
            None => {
                tracing::warn!(
                    profile,
                    backend = %self.backend(),
                    "discarding an unreadable cached session from the keyring"
                );
                self.raw_delete(profile, Kind::Session).await?;
                Ok(None)
            }
        }
    }

    /// Caches session credentials for `profile`, replacing any earlier ones.
    pub async fn put_session(
        &self,
        profile: &str,
        creds: &TemporaryCredentials,
    ) -> Result<(), KeystoreError> {
        let payload = payload::encode_session(creds).ok_or_else(|| {
            KeystoreError::Platform(format!(
                "the session for `{profile}` has an expiry that cannot be stored"
            ))
        })?;
        self.raw_put(profile, Kind::Session, payload).await?;
        tracing::debug!(profile, backend = %self.backend(), "cached session");
        Ok(())
    }

    /// Deletes the cached session for `profile`; true if there was one.
    pub async fn delete_session(&self, profile: &str) -> Result<bool, KeystoreError> {
        self.raw_delete(profile, Kind::Session).await
    }

    /// The record of a key rotation of `profile` in progress, if any. Unlike a cached session,
    /// an entry that does not decode is an error ([`KeystoreError::MalformedRotation`]), never
    /// discarded: it may hold the only copy of a new key's secret.
    pub async fn get_rotation(
        &self,
        profile: &str,
    ) -> Result<Option<RotationRecord>, KeystoreError> {
        let Some(raw) = self.raw_get(profile, Kind::Rotation).await? else {
            return Ok(None);
        };
        payload::decode_rotation(&raw)
            .map(Some)
            .ok_or_else(|| KeystoreError::MalformedRotation {
                profile: profile.to_owned(),
            })
    }

    /// Writes (or replaces) the rotation record of `profile`. Replacing is atomic in both Linux
    /// backends: a reader sees the old record or the new one.
    pub async fn put_rotation(
        &self,
        profile: &str,
        record: &RotationRecord,
    ) -> Result<(), KeystoreError> {
        let payload = payload::encode_rotation(record).ok_or_else(|| {
            KeystoreError::Platform(format!(
                "the rotation of `{profile}` has a start time that cannot be stored"
            ))
        })?;
        self.raw_put(profile, Kind::Rotation, payload).await?;
        tracing::debug!(profile, backend = %self.backend(), "stored the rotation record");
        Ok(())
    }

    /// Deletes the rotation record of `profile`; true if there was one.
    pub async fn delete_rotation(&self, profile: &str) -> Result<bool, KeystoreError> {
        self.raw_delete(profile, Kind::Rotation).await
    }

    /// The IAM Identity Center sign-in stored under `session_key`
    /// ([`SsoSession::storage_key`](crate::sso::SsoSession::storage_key)), as stored, expired or
    /// not. An entry that does not decode is deleted, logged at warn level and reported as `None`
    /// (the user signs in again).
    pub async fn get_sso(&self, session_key: &str) -> Result<Option<SignIn>, KeystoreError> {
        let Some(raw) = self.raw_get(session_key, Kind::Sso).await? else {
            return Ok(None);
        };
        match payload::decode_sign_in(&raw) {
            Some(s) => Ok(Some(s)),
            None => {
                tracing::warn!(
                    session = session_key,
                    backend = %self.backend(),
                    "discarding an unreadable IAM Identity Center sign-in from the keyring"
                );
                self.raw_delete(session_key, Kind::Sso).await?;
                Ok(None)
            }
        }
    }

    /// Stores the sign-in of `session_key`, replacing any earlier one.
    pub async fn put_sso(&self, session_key: &str, sign_in: &SignIn) -> Result<(), KeystoreError> {
        let payload = payload::encode_sign_in(sign_in).ok_or_else(|| {
            KeystoreError::Platform(format!(
                "the IAM Identity Center sign-in of `{session_key}` has a time that cannot be stored"
            ))
        })?;
        self.raw_put(session_key, Kind::Sso, payload).await?;
        tracing::debug!(session = session_key, backend = %self.backend(), "stored IAM Identity Center sign-in");
        Ok(())
    }

    /// Deletes the sign-in of `session_key`; true if there was one.
    pub async fn delete_sso(&self, session_key: &str) -> Result<bool, KeystoreError> {
        self.raw_delete(session_key, Kind::Sso).await
    }

    async fn raw_get(
        &self,
        profile: &str,
        kind: Kind,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        check_profile(profile)?;
        let (inner, account) = (self.inner.clone(), profile.to_owned());
        blocking(move || inner.store.get(inner.service_for(kind), &account)).await
    }

    async fn raw_put(
        &self,
        profile: &str,
        kind: Kind,
        payload: Zeroizing<Vec<u8>>,
    ) -> Result<(), KeystoreError> {
        check_profile(profile)?;
        let (inner, account) = (self.inner.clone(), profile.to_owned());
        blocking(move || {
            let service = inner.service_for(kind);
            let label = match kind {
                Kind::Key => format!("{}: {account}", inner.service),
                Kind::Session => format!("{}: {account} (cached session)", inner.service),
                Kind::Rotation => {
                    format!("{}: {account} (key rotation in progress)", inner.service)
                }
                Kind::Sso => format!("{}: {account} (IAM Identity Center sign-in)", inner.service),
            };
            inner.store.put(service, &account, &label, &payload)
        })
        .await
    }

    async fn raw_delete(&self, profile: &str, kind: Kind) -> Result<bool, KeystoreError> {
        check_profile(profile)?;
        let (inner, account) = (self.inner.clone(), profile.to_owned());
        blocking(move || inner.store.delete(inner.service_for(kind), &account)).await
    }
}

/// The kinds of entry.
#[derive(Clone, Copy)]
enum Kind {
    Key,
    Session,
    Rotation,
    Sso,
}

impl Inner {
    fn service_for(&self, kind: Kind) -> &str {
        match kind {
            Kind::Key => &self.service,
            Kind::Session => &self.session_service,
            Kind::Rotation => &self.rotation_service,
            Kind::Sso => &self.sso_service,
        }
    }
}

/// Runs a blocking keyring call on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, KeystoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, KeystoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(KeystoreError::Platform(
            "the keyring call panicked (this is a credvend bug)".into(),
        )),
        Err(_) => Err(KeystoreError::Platform(
            "the keyring call was cancelled because the runtime is shutting down".into(),
        )),
    }
}

fn check_service(service: &str) -> Result<(), KeystoreError> {
    let ok = !service.is_empty()
        && service.len() <= 128
        && !service
            .chars()
            .any(|c| c.is_control() || c == ':' || c == ';');
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::Platform(format!(
            "`{}` is not a usable keyring service name: use a short name without `:` or `;`",
            service.escape_debug()
        )))
    }
}

/// Profile names become D-Bus strings and keyutils descriptions (which the kernel reports back
/// `;`-separated), so control characters and `;` are refused. `;` starts a comment in the AWS
/// config file, so no real profile name contains one.
fn check_profile(profile: &str) -> Result<(), KeystoreError> {
    let ok = !profile.is_empty()
        && profile.chars().count() <= 256
        && !profile.chars().any(|c| c.is_control() || c == ';');
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::InvalidProfile {
            profile: profile.escape_debug().to_string(),
        })
    }
}

#[cfg(target_os = "linux")]
fn open_backend(opts: &OpenOptions) -> Result<(Backend, Box<dyn RawStore>), KeystoreError> {
    use keyutils::KeyutilsStore;
    use secret_service::SecretServiceStore;

    match opts.choice {
        Choice::SecretService => Ok((
            Backend::SecretService,
            Box::new(SecretServiceStore::open(opts.prompt_timeout)?),
        )),
        Choice::Keyutils => Ok((Backend::Keyutils, Box::new(KeyutilsStore::open()?))),
        Choice::Auto => match SecretServiceStore::open(opts.prompt_timeout) {
            Ok(store) => Ok((Backend::SecretService, Box::new(store))),
            Err(
                ss @ (KeystoreError::NoSessionBus(_)
                | KeystoreError::NoSecretService(_)
                | KeystoreError::NoDefaultCollection),
            ) => {
                let store = KeyutilsStore::open().map_err(|ku| KeystoreError::NoBackend {
                    secret_service: ss.reason(),
                    keyutils: ku.reason(),
                })?;
                tracing::info!(
                    reason = %ss.reason(),
                    "the Secret Service is not usable; using the kernel keyring (keyutils), \
                     which keeps keys only until reboot"
                );
                Ok((Backend::Keyutils, Box::new(store)))
            }
            Err(other) => Err(other),
        },
        choice @ (Choice::Keychain | Choice::Windows) => Err(KeystoreError::Unsupported { choice }),
    }
}

#[cfg(target_os = "macos")]
fn open_backend(opts: &OpenOptions) -> Result<(Backend, Box<dyn RawStore>), KeystoreError> {
    match opts.choice {
        Choice::Auto | Choice::Keychain => {
            Ok((Backend::Keychain, Box::new(native::NativeStore::open()?)))
        }
        choice => Err(KeystoreError::Unsupported { choice }),
    }
}

#[cfg(target_os = "windows")]
fn open_backend(opts: &OpenOptions) -> Result<(Backend, Box<dyn RawStore>), KeystoreError> {
    match opts.choice {
        Choice::Auto | Choice::Windows => {
            Ok((Backend::Windows, Box::new(native::NativeStore::open()?)))
        }
        choice => Err(KeystoreError::Unsupported { choice }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_their_flag_spelling() {
        for c in Choice::ALL {
            assert_eq!(c.to_string().parse::<Choice>(), Ok(c));
        }
        assert_eq!("secret-service".parse(), Ok(Choice::SecretService));
        let err = "gnome".parse::<Choice>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown keystore `gnome`: use one of auto, secret-service, keyutils, keychain, windows"
        );
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e = KeystoreError::NotFound {
            profile: "dev".into(),
            backend: Backend::SecretService,
        };
        assert_eq!(
            e.to_string(),
            "no keys for profile `dev` in the Secret Service: run `credvend add dev`"
        );
        let e = KeystoreError::NotFound {
            profile: "dev".into(),
            backend: Backend::Keyutils,
        };
        assert_eq!(
            e.to_string(),
            "no keys for profile `dev` in the kernel keyring (keyutils), which forgets keys at \
             reboot: run `credvend add dev`"
        );
        let e = KeystoreError::Malformed {
            profile: "dev".into(),
        };
        assert_eq!(
            e.to_string(),
            "the keyring entry for `dev` is not a credvend entry this version can read: run \
             `credvend add dev --force`"
        );
        let e = KeystoreError::Unsupported {
            choice: Choice::Keychain,
        };
        assert_eq!(
            e.to_string(),
            "--keystore keychain is only available on macOS"
        );
        for e in [
            KeystoreError::Locked,
            KeystoreError::NoSessionBus("x".into()),
            KeystoreError::NoSecretService("x".into()),
            KeystoreError::NoDefaultCollection,
        ] {
            let text = e.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(e.is_transient());
        }
        assert!(
            KeystoreError::NoSessionBus("x".into())
                .to_string()
                .contains("--keystore keyutils")
        );
        assert!(
            !KeystoreError::Malformed {
                profile: "p".into()
            }
            .is_transient()
        );
    }

    #[test]
    fn profile_names_are_checked() {
        for good in [
            "default",
            "dev",
            "a.b-c_d@e:f",
            "profile with spaces",
            "ünïcode",
        ] {
            assert!(check_profile(good).is_ok(), "{good}");
        }
        for bad in ["", "a;b", "a\nb", "a\0b", &"x".repeat(257)] {
            let e = check_profile(bad).unwrap_err();
            assert!(!e.to_string().contains('\n'));
        }
        assert!(check_service("credvend").is_ok());
        assert!(check_service("a:b").is_err() && check_service("").is_err());
    }

    #[test]
    fn only_keyutils_has_a_persistence_note() {
        assert!(
            Backend::Keyutils
                .persistence_note()
                .unwrap()
                .contains("reboot")
        );
        assert!(Backend::SecretService.persistence_note().is_none());
    }
}
