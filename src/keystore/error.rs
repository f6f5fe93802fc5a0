//! The key store's error type: one line each, naming the fix, never carrying a secret.

use super::{Backend, Choice};

/// Why a key store operation failed.
///
/// Every message is one line that says what to do about it. None of them carries a secret or a
/// payload: platform details are error names and messages from D-Bus, the kernel or the OS
/// keyring API, never the data that was being stored or read.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The store has no long-term key for the profile.
    #[error(
        "no keys for profile `{profile}` in the {backend}{}: run `credvend add {profile}`",
        forgets_hint(*backend)
    )]
    NotFound {
        /// The profile asked for.
        profile: String,
        /// The store that was searched.
        backend: Backend,
    },

    /// The Secret Service's default collection is locked and credvend may not prompt for it.
    #[error(
        "the Secret Service keyring is locked: unlock it (log in to your desktop session, or unlock \
         the default keyring in Seahorse or your password manager) and retry; the credvend daemon \
         never prompts (without a desktop session, use `--keystore keyutils`)"
    )]
    Locked,

    /// No D-Bus session bus could be reached; the detail is libdbus's message.
    #[error(
        "no D-Bus session bus ({0}): run credvend inside a login session, start a Secret Service \
         provider (gnome-keyring, KeePassXC) on a session bus, or use `--keystore keyutils` \
         (also CREDVEND_KEYSTORE=keyutils)"
    )]
    NoSessionBus(String),

    /// The session bus answered but nothing provides `org.freedesktop.secrets` on it.
    #[error(
        "no Secret Service provider on the session bus ({0}): start one (gnome-keyring, \
         KeePassXC with Secret Service integration) or use `--keystore keyutils` \
         (also CREDVEND_KEYSTORE=keyutils)"
    )]
    NoSecretService(String),

    /// The Secret Service runs but has no collection under the alias `default`.
    #[error(
        "the Secret Service has no default keyring: create one (for example the `login` keyring \
         in Seahorse) or use `--keystore keyutils` (also CREDVEND_KEYSTORE=keyutils)"
    )]
    NoDefaultCollection,

    /// The kernel keyring refused an operation; the detail names the cause and the fix.
    #[error("the kernel keyring (keyutils) is not usable: {0}")]
    Keyutils(String),

    /// A keyring entry exists for the profile but is not a long-term key this version can read.
    #[error(
        "the keyring entry for `{profile}` is not a credvend entry this version can read: \
         run `credvend add {profile} --force`"
    )]
    Malformed {
        /// The profile whose entry did not decode.
        profile: String,
    },

    /// The key-rotation record of a profile does not decode.
    #[error(
        "the key-rotation record of `{profile}` in the keyring is not one this version can read: \
         finish the rotation with the credvend version that started it (`credvend rotate {profile}`)"
    )]
    MalformedRotation {
        /// The profile whose record did not decode.
        profile: String,
    },

    /// The profile name cannot be used as a keyring entry name.
    #[error(
        "`{profile}` is not a usable profile name: use a non-empty name of at most 256 characters \
         without control characters or `;`"
    )]
    InvalidProfile {
        /// The rejected name, with control characters escaped.
        profile: String,
    },

    /// The requested store does not exist on this platform.
    #[error("--keystore {choice} is only available on {}", choice.platform())]
    Unsupported {
        /// What was asked for.
        choice: Choice,
    },

    /// `auto` found neither a usable Secret Service nor a usable kernel keyring.
    #[error(
        "no usable keyring (Secret Service: {secret_service}; kernel keyring: {keyutils}): start a \
         Secret Service provider (gnome-keyring, KeePassXC) or allow the keyctl system call"
    )]
    NoBackend {
        /// Why the Secret Service could not be used.
        secret_service: String,
        /// Why the kernel keyring could not be used.
        keyutils: String,
    },

    /// Any other failure of the platform keyring.
    #[error("keyring error: {0}")]
    Platform(String),
}

fn forgets_hint(backend: Backend) -> &'static str {
    match backend {
        Backend::Keyutils => ", which forgets keys at reboot",
        _ => "",
    }
}

impl KeystoreError {
    /// True when retrying later may succeed without anyone changing credvend's configuration or
    /// its stored entries: the keyring is locked, the bus or the Secret Service provider is gone or
    /// slow, or the platform reported something unexpected. The daemon retries these with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KeystoreError::Locked
                | KeystoreError::NoSessionBus(_)
                | KeystoreError::NoSecretService(_)
                | KeystoreError::NoDefaultCollection
                | KeystoreError::Platform(_)
        )
    }

    /// The reason alone, without the fix: for logs and for [`KeystoreError::NoBackend`].
    #[cfg(target_os = "linux")]
    pub(crate) fn reason(&self) -> String {
        match self {
            KeystoreError::NoSessionBus(detail) => format!("no D-Bus session bus ({detail})"),
            KeystoreError::NoSecretService(detail) => format!("no provider ({detail})"),
            KeystoreError::NoDefaultCollection => "no default keyring".into(),
            KeystoreError::Keyutils(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}
