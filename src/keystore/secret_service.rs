//! The freedesktop Secret Service (GNOME Keyring, KeePassXC, KWallet's bridge) over D-Bus.
//!
//! Built directly on `dbus-secret-service` rather than a keyring-core store, because the store
//! crate waits for unlock prompts without a limit: with a GUI prompter reachable, a locked
//! collection made it hang forever. Here every connection carries a prompt limit
//! ([`SecretService::connect_with_max_prompt_timeout`]; zero never shows a prompt), the default
//! collection's `Locked` property is checked before anything else, and each D-Bus call times out
//! after 2 s inside the crate. So every call either answers or fails within seconds.
//!
//! Each operation opens its own connection (a few milliseconds), so a provider or bus that
//! restarts at the same address is picked up without restarting the daemon. The address comes from
//! `DBUS_SESSION_BUS_ADDRESS` (else `$XDG_RUNTIME_DIR/bus`), and libdbus reads it only once per
//! process and keeps the answer, failures included: a process that found no bus will not find one
//! that appears later at a new address. The crate cannot be handed an address either, which is why
//! the tests give each bus a process of its own.
//!
//! Entries are items in the default collection (alias `default`) with the attributes
//! `service` and `username`, the same scheme `secret-tool` and the keyring crates use, so
//! `secret-tool lookup service credvend username dev` shows a stored entry.
//!
//! Secrets travel over the session with the `plain` algorithm, on purpose: the session bus is a
//! local socket readable only by this user, and any process of the same user can ask the Secret
//! Service for the secret anyway, so the Diffie-Hellman transport would protect against nobody and
//! cost a crypto dependency.

use std::collections::HashMap;
use std::time::Duration;

use dbus_secret_service::{Collection, EncryptionType, Error as SsError, SecretService};
use zeroize::Zeroizing;

use super::{KeystoreError, RawStore};

/// D-Bus error names that mean "nothing owns `org.freedesktop.secrets`".
const NO_PROVIDER: [&str; 2] = [
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
];
/// D-Bus error names that mean "the provider did not answer in time".
const NO_ANSWER: [&str; 3] = [
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
];
/// D-Bus error names that mean the bus connection itself is gone.
const NO_BUS: [&str; 2] = [
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.NoServer",
];
/// The Secret Service's own "locked" error.
const IS_LOCKED: &str = "org.freedesktop.Secret.Error.IsLocked";

/// The Secret Service backend: stateless apart from the prompt limit.
pub(crate) struct SecretServiceStore {
    /// Seconds an unlock prompt may stay up; 0 never prompts.
    prompt_secs: u64,
}

impl SecretServiceStore {
    /// Connects once to check that a bus, a provider and an unlocked (or, with a prompt limit,
    /// unlockable) default collection are there.
    pub(crate) fn open(prompt_timeout: Duration) -> Result<SecretServiceStore, KeystoreError> {
        let secs = prompt_timeout.as_secs() + u64::from(prompt_timeout.subsec_nanos() > 0);
        let store = SecretServiceStore { prompt_secs: secs };
        let ss = store.connect()?;
        store.default_collection(&ss)?;
        Ok(store)
    }

    fn connect(&self) -> Result<SecretService, KeystoreError> {
        SecretService::connect_with_max_prompt_timeout(EncryptionType::Plain, self.prompt_secs)
            .map_err(connect_error)
    }

    /// The default collection, unlocked: prompting (within the limit) if allowed, else `Locked`.
    fn default_collection<'a>(
        &self,
        ss: &'a SecretService,
    ) -> Result<Collection<'a>, KeystoreError> {
        let collection = ss.get_default_collection().map_err(|e| match e {
            SsError::NoResult => KeystoreError::NoDefaultCollection,
            e => op_error(e),
        })?;
        if collection.is_locked().map_err(op_error)? {
            if self.prompt_secs == 0 {
                return Err(KeystoreError::Locked);
            }
            collection.unlock().map_err(op_error)?;
            if collection.is_locked().map_err(op_error)? {
                return Err(KeystoreError::Locked);
            }
        }
        Ok(collection)
    }
}

fn attributes<'a>(service: &'a str, account: Option<&'a str>) -> HashMap<&'a str, &'a str> {
    let mut attrs = HashMap::from([("service", service)]);
    if let Some(account) = account {
        attrs.insert("username", account);
    }
    attrs
}

impl RawStore for SecretServiceStore {
    fn get(
        &self,
        service: &str,
        account: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        let ss = self.connect()?;
        let collection = self.default_collection(&ss)?;
        let items = collection
            .search_items(attributes(service, Some(account)))
            .map_err(op_error)?;
        match items.first() {
            None => Ok(None),
            Some(item) => Ok(Some(Zeroizing::new(item.get_secret().map_err(op_error)?))),
        }
    }

    fn put(
        &self,
        service: &str,
        account: &str,
        label: &str,
        payload: &[u8],
    ) -> Result<(), KeystoreError> {
        let ss = self.connect()?;
        let collection = self.default_collection(&ss)?;
        // `replace` updates the item with exactly these attributes instead of adding a second one.
        collection
            .create_item(
                label,
                attributes(service, Some(account)),
                payload,
                true,
                "text/plain",
            )
            .map_err(op_error)?;
        Ok(())
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, KeystoreError> {
        let ss = self.connect()?;
        let collection = self.default_collection(&ss)?;
        let items = collection
            .search_items(attributes(service, Some(account)))
            .map_err(op_error)?;
        for item in &items {
            item.delete().map_err(op_error)?;
        }
        Ok(!items.is_empty())
    }

    fn list(&self, service: &str) -> Result<Vec<String>, KeystoreError> {
        let ss = self.connect()?;
        let collection = self.default_collection(&ss)?;
        let items = collection
            .search_items(attributes(service, None))
            .map_err(op_error)?;
        let mut accounts = Vec::with_capacity(items.len());
        for item in items {
            let mut attrs = item.get_attributes().map_err(op_error)?;
            if attrs.get("service").map(String::as_str) == Some(service)
                && let Some(account) = attrs.remove("username")
            {
                accounts.push(account);
            }
        }
        Ok(accounts)
    }
}

/// `name: message` of a D-Bus error, for details in messages. D-Bus errors from the bus and the
/// Secret Service describe the failure, never the secret being sent.
fn dbus_detail(e: &dbus::Error) -> String {
    match (e.name(), e.message()) {
        (_, Some(msg)) if !msg.is_empty() => msg.to_owned(),
        (Some(name), _) => name.to_owned(),
        _ => "unknown D-Bus error".to_owned(),
    }
}

/// Errors while connecting to the bus and opening a Secret Service session.
fn connect_error(e: SsError) -> KeystoreError {
    match e {
        SsError::Dbus(d) => {
            let name = d.name().unwrap_or_default();
            if NO_PROVIDER.contains(&name) {
                KeystoreError::NoSecretService(dbus_detail(&d))
            } else if NO_ANSWER.contains(&name) {
                KeystoreError::Platform(format!(
                    "the Secret Service did not answer ({})",
                    dbus_detail(&d)
                ))
            } else {
                // Everything else at this stage is libdbus failing to find or reach the bus:
                // no address and no X11 display to autolaunch one, a dead socket, bad address.
                KeystoreError::NoSessionBus(dbus_detail(&d))
            }
        }
        SsError::Unavailable => KeystoreError::NoSecretService("not available".into()),
        other => op_error(other),
    }
}

/// Errors from operations on an open session.
fn op_error(e: SsError) -> KeystoreError {
    match e {
        SsError::Locked | SsError::Prompt => KeystoreError::Locked,
        SsError::Unavailable => KeystoreError::NoSecretService("not available".into()),
        SsError::Dbus(d) => {
            let name = d.name().unwrap_or_default();
            if name == IS_LOCKED {
                KeystoreError::Locked
            } else if NO_PROVIDER.contains(&name) {
                KeystoreError::NoSecretService(dbus_detail(&d))
            } else if NO_BUS.contains(&name) {
                KeystoreError::NoSessionBus(dbus_detail(&d))
            } else if NO_ANSWER.contains(&name) {
                KeystoreError::Platform(format!(
                    "the Secret Service did not answer ({})",
                    dbus_detail(&d)
                ))
            } else {
                KeystoreError::Platform(format!("Secret Service: {}", dbus_detail(&d)))
            }
        }
        // The remaining variants (crypto, parse, object path, no result, content type) carry
        // descriptions of the failure, not payloads.
        other => KeystoreError::Platform(format!("Secret Service: {other}")),
    }
}
