//! The Linux kernel keyring (keyutils), for machines without a Secret Service.
//!
//! Entries are `user` keys described as `SERVICE:ACCOUNT` in the calling user's *persistent*
//! keyring (persistent-keyring(7)), which the kernel keeps per uid independently of login sessions,
//! so a key stored by `credvend add` in one SSH session is found by the daemon started by systemd.
//! Each operation fetches that keyring with `KEYCTL_GET_PERSISTENT`, linking it into the calling
//! thread's process keyring: that makes its keys *possessed*, so no `keyctl session` set-up is
//! needed, and it resets the keyring's expiry timer. The link is made in every blocking task
//! because process keyrings attach to the calling thread, and tokio's blocking pool has many.
//!
//! Keys are kept in kernel memory only: **they are gone after a reboot**, and the persistent
//! keyring itself is dropped after `/proc/sys/kernel/keys/persistent_keyring_expiry` seconds
//! (3 days by default) in which nothing fetched it. Users are told so when they add a key
//! ([`super::Backend::persistence_note`]).
//!
//! Kernels built without persistent keyrings get the user keyring (`@u`) instead, linked into
//! the process keyring the same way; it lives as long as any process of the user does.
//!
//! Key permissions are possessor: all, user: view. Other processes of the same uid can see that a
//! key exists but read it only by possessing it, which they do by linking the persistent keyring
//! as above (or with `keyctl get_persistent @s`): the kernel offers no stronger separation
//! between processes of one user, and neither does the Secret Service.

use linux_keyutils::{
    Key, KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission,
};
use zeroize::Zeroizing;

use super::{KeystoreError, RawStore};

/// Which kernel keyring holds the entries.
#[derive(Clone, Copy, Debug)]
enum Ring {
    /// The per-user persistent keyring.
    Persistent,
    /// The user keyring, where the kernel has no persistent keyrings.
    User,
}

/// The keyutils backend.
pub(crate) struct KeyutilsStore {
    ring: Ring,
}

impl KeyutilsStore {
    /// Finds a usable keyring: the persistent one, else the user keyring.
    pub(crate) fn open() -> Result<KeyutilsStore, KeystoreError> {
        match fetch(Ring::Persistent) {
            Ok(_) => Ok(KeyutilsStore {
                ring: Ring::Persistent,
            }),
            Err(persistent) => {
                fetch(Ring::User).map_err(keyutils_error)?;
                tracing::info!(
                    error = ?persistent,
                    "the kernel has no per-user persistent keyring; using the user keyring, which \
                     lives while any process of this user runs"
                );
                Ok(KeyutilsStore { ring: Ring::User })
            }
        }
    }

    fn ring(&self) -> Result<KeyRing, KeystoreError> {
        fetch(self.ring).map_err(keyutils_error)
    }

    /// The key described `service:account`, if there is one.
    fn find(&self, service: &str, account: &str) -> Result<Option<Key>, KeystoreError> {
        match self.ring()?.search(&description(service, account)) {
            Ok(key) => Ok(Some(key)),
            Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired) => {
                Ok(None)
            }
            Err(e) => Err(keyutils_error(e)),
        }
    }
}

/// Gets the keyring and links it into this thread's process keyring (making it possessed).
fn fetch(ring: Ring) -> Result<KeyRing, KeyError> {
    match ring {
        Ring::Persistent => KeyRing::get_persistent(KeyRingIdentifier::Process),
        Ring::User => {
            let user = KeyRing::from_special_id(KeyRingIdentifier::User, true)?;
            KeyRing::from_special_id(KeyRingIdentifier::Process, true)?.link_keyring(user)?;
            Ok(user)
        }
    }
}

fn description(service: &str, account: &str) -> String {
    format!("{service}:{account}")
}

/// How many links [`KeyRing::get_links`] may return. That call trusts the kernel's reported size
/// without checking it against the buffer, so the buffer must hold every link the keyring can
/// have: the user's key quota bounds it.
fn link_capacity() -> usize {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let file = if root { "root_maxkeys" } else { "maxkeys" };
    std::fs::read_to_string(format!("/proc/sys/kernel/keys/{file}"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 16)
        .clamp(1 << 10, 1 << 20)
}

impl RawStore for KeyutilsStore {
    fn get(
        &self,
        service: &str,
        account: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        match self.find(service, account)? {
            None => Ok(None),
            Some(key) => match key.read_to_vec() {
                Ok(payload) => Ok(Some(Zeroizing::new(payload))),
                // Deleted between the search and the read.
                Err(KeyError::KeyRevoked | KeyError::KeyExpired | KeyError::KeyDoesNotExist) => {
                    Ok(None)
                }
                Err(e) => Err(keyutils_error(e)),
            },
        }
    }

    fn put(
        &self,
        service: &str,
        account: &str,
        _label: &str,
        payload: &[u8],
    ) -> Result<(), KeystoreError> {
        // Adding a key whose type and description exist in the keyring updates it in place.
        let key = self
            .ring()?
            .add_key(&description(service, account), payload)
            .map_err(keyutils_error)?;
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(Permission::VIEW)
            .build();
        key.set_perms(perms).map_err(keyutils_error)
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, KeystoreError> {
        match self.find(service, account)? {
            None => Ok(false),
            // Invalidation removes the key from every keyring at once, not just this link.
            Some(key) => match key.invalidate() {
                Ok(()) => Ok(true),
                Err(KeyError::KeyRevoked | KeyError::KeyExpired | KeyError::KeyDoesNotExist) => {
                    Ok(false)
                }
                Err(e) => Err(keyutils_error(e)),
            },
        }
    }

    fn list(&self, service: &str) -> Result<Vec<String>, KeystoreError> {
        let prefix = description(service, "");
        let links = self
            .ring()?
            .get_links(link_capacity())
            .map_err(keyutils_error)?;
        Ok(links
            .iter()
            .filter_map(|node| node.as_key())
            // Keys that vanished or that we may not view are skipped.
            .filter_map(|key| key.metadata().ok())
            .filter_map(|md| {
                md.get_description()
                    .strip_prefix(&prefix)
                    .map(str::to_owned)
            })
            .collect())
    }
}

fn keyutils_error(e: KeyError) -> KeystoreError {
    KeystoreError::Keyutils(match e {
        KeyError::PermissionDenied | KeyError::Unknown(libc::ENOSYS) => {
            "the keyctl system call is not permitted here (container runtimes block it by \
             default): allow keyctl in the seccomp profile, or use `--keystore secret-service`"
                .into()
        }
        KeyError::AccessDenied => {
            "access to the keyring was denied: run credvend as the user who stored the keys".into()
        }
        KeyError::QuotaExceeded => {
            "this user's kernel key quota is used up (/proc/sys/kernel/keys/maxkeys, maxbytes): \
             remove unused keys (`keyctl show @u`) or raise the quota"
                .into()
        }
        other => format!("keyctl failed ({other:?})"),
    })
}
