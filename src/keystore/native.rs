//! The macOS Keychain and the Windows Credential Manager, through keyring-core's native stores.
//!
//! UNVERIFIED: this module was type-checked for both targets when written but has never run, and
//! CI does not build it (macOS needs Apple's SDK; the rest of the crate is Unix-only, so Windows
//! does not build as a whole); credvend's tests run on Linux only. Known limits: the Windows Credential Manager holds at most 2560 bytes per
//! entry, which a session with a long session token can exceed (reported as a keyring error);
//! Windows target names are `ACCOUNT.SERVICE`, so listing relies on the service containing no `.`
//! (true for `credvend`; session entries use `credvend.session` and are never listed).

use std::sync::Arc;

use keyring_core::Error as CoreError;
use keyring_core::api::CredentialStore;
use zeroize::Zeroizing;

use super::{KeystoreError, RawStore};

/// The platform's native store.
pub(crate) struct NativeStore {
    store: Arc<CredentialStore>,
}

impl NativeStore {
    /// Builds the platform store (the user's default keychain, or the Credential Manager).
    pub(crate) fn open() -> Result<NativeStore, KeystoreError> {
        #[cfg(target_os = "macos")]
        let store: Arc<CredentialStore> =
            apple_native_keyring_store::keychain::Store::new().map_err(core_error)?;
        #[cfg(target_os = "windows")]
        let store: Arc<CredentialStore> =
            windows_native_keyring_store::Store::new().map_err(core_error)?;
        Ok(NativeStore { store })
    }
}

impl RawStore for NativeStore {
    fn get(
        &self,
        service: &str,
        account: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        let entry = self
            .store
            .build(service, account, None)
            .map_err(core_error)?;
        match entry.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(CoreError::NoEntry) => Ok(None),
            Err(e) => Err(core_error(e)),
        }
    }

    fn put(
        &self,
        service: &str,
        account: &str,
        _label: &str,
        payload: &[u8],
    ) -> Result<(), KeystoreError> {
        let entry = self
            .store
            .build(service, account, None)
            .map_err(core_error)?;
        entry.set_secret(payload).map_err(core_error)
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, KeystoreError> {
        let entry = self
            .store
            .build(service, account, None)
            .map_err(core_error)?;
        match entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(CoreError::NoEntry) => Ok(false),
            Err(e) => Err(core_error(e)),
        }
    }

    fn list(&self, service: &str) -> Result<Vec<String>, KeystoreError> {
        #[cfg(target_os = "macos")]
        let spec = std::collections::HashMap::from([("service", service)]);
        #[cfg(target_os = "windows")]
        let spec = std::collections::HashMap::new();
        let entries = self.store.search(&spec).map_err(core_error)?;
        Ok(entries
            .iter()
            .filter_map(|entry| entry.get_specifiers())
            .filter(|(s, _)| s == service)
            .map(|(_, account)| account)
            .collect())
    }
}

/// Maps keyring-core errors variant by variant: some variants carry the raw secret bytes, so
/// their `Debug` output must never be used.
fn core_error(e: CoreError) -> KeystoreError {
    KeystoreError::Platform(match e {
        CoreError::PlatformFailure(inner) => format!("the OS keyring failed: {inner}"),
        CoreError::NoStorageAccess(inner) => {
            format!("the OS keyring cannot be accessed (is it locked?): {inner}")
        }
        CoreError::NoEntry => "no such entry".into(),
        CoreError::BadEncoding(_) | CoreError::BadDataFormat(..) => {
            "the OS keyring returned an entry in an unexpected format".into()
        }
        CoreError::TooLong(what, limit) => {
            format!("the entry's {what} is longer than the OS keyring allows ({limit})")
        }
        CoreError::Invalid(what, why) => format!("invalid {what}: {why}"),
        _ => "the OS keyring reported an unexpected error".into(),
    })
}
