//! The AWS shared configuration files (`~/.aws/config`, `~/.aws/credentials`): parsing them the
//! way the AWS SDKs do ([`file`](mod@file)) and removing plaintext keys from the credentials file without
//! disturbing anything else in it ([`edit`]).
//!
//! Both modules are pure: they take and return text. Finding and reading the files (and
//! `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`) is the caller's job.

pub(crate) mod check;
pub(crate) mod edit;
pub(crate) mod file;
pub(crate) mod load;
pub(crate) mod resolve;

use file::{FileKind, merge, parse};

/// Fuzz entry point: parses `data` (lossily decoded as UTF-8) as both kinds of file, merges them,
/// and runs [`edit`] over it, checking invariants. Panics only if an invariant breaks.
pub(crate) fn fuzz_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = parse(&text, FileKind::Config);
    let credentials = parse(&text, FileKind::Credentials);
    // Syntax does not depend on the kind of file; only the reading of section names does.
    assert_eq!(config.as_ref().err(), credentials.as_ref().err());
    let set = merge(config.ok(), credentials.ok());
    for section in set.profiles.values().chain(set.services.values()) {
        for (name, property) in &section.properties {
            assert_eq!(section.get(name), property.as_value());
        }
    }
    let _ = format!("{set:?}");
    match edit::remove_keys(&text, &[]) {
        Ok(out) => {
            assert!(out.len() <= text.len());
            let after = parse(&out, FileKind::Credentials).expect("edited file parses");
            let keys = edit::find_keys(&out, &[]).expect("edited file parses");
            assert!(keys.is_empty(), "keys left after remove_keys");
            drop(after);
        }
        Err(e) => assert_eq!(Some(e), parse(&text, FileKind::Credentials).err()),
    }
}
