//! Finding long-term keys in the plaintext shared credentials file and removing them from it
//! byte for byte (for `credvend import [--remove]`).
//!
//! The file is read with exactly the rules of [`super::file`] (credentials-file flavour), so the
//! keys found are the keys an SDK would use. Removal deletes whole lines: each key property line
//! (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`, in any letter case) with
//! its continuation lines, in every section of the chosen profiles. Every other byte stays as it
//! was: other profiles, comments (also those between a key and its continuation lines), blank
//! lines, unrelated keys and their order, `\n` or `\r\n` line endings, a byte order mark.
//!
//! Decisions:
//! - A profile's `[name]` line is kept even when no property is left under it, so comments below
//!   it stay in place and the profile still exists for the SDKs (e.g. with `region` set in the
//!   config file).
//! - If the file has no final newline and its last line is removed, the line ending before that
//!   line goes with it, so the result still has no final newline.
//! - Only profiles with both an access key id and a secret (both non-empty) are found or touched;
//!   naming a profile that lacks either is not an error here: it is simply absent from the result,
//!   and the caller reports it.

use std::collections::BTreeSet;

use secrecy::SecretString;

use super::file::{self, FileKind, ParseError, ProfileSet, SectionKind};

/// Property name of the access key id.
pub const ACCESS_KEY_ID: &str = "aws_access_key_id";
/// Property name of the secret access key.
pub const SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
/// Property name of the session token.
pub const SESSION_TOKEN: &str = "aws_session_token";

/// The properties [`remove_keys`] removes.
const REMOVED: [&str; 3] = [ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN];

/// A key pair found in the credentials file. `Debug` redacts the secret.
#[derive(Debug)]
pub struct FoundKey {
    /// The profile (section) name, case as written.
    pub profile: String,
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: SecretString,
    /// The profile also has a non-empty `aws_session_token`, i.e. the pair is temporary
    /// credentials rather than a long-term key.
    pub has_session_token: bool,
}

/// The profiles (from `profiles`, or all when it is empty) that have both keys, in the order
/// asked (deduplicated) or, for all, sorted by name.
fn complete_profiles<'a>(set: &'a ProfileSet, profiles: &[String]) -> Vec<&'a file::Section> {
    let complete = |name: &str| {
        set.profile(name).filter(|section| {
            [ACCESS_KEY_ID, SECRET_ACCESS_KEY]
                .iter()
                .all(|key| section.get(key).is_some_and(|v| !v.is_empty()))
        })
    };
    if profiles.is_empty() {
        set.profiles
            .keys()
            .filter_map(|name| complete(name))
            .collect()
    } else {
        let mut seen = BTreeSet::new();
        profiles
            .iter()
            .filter(|name| seen.insert(name.as_str()))
            .filter_map(|name| complete(name))
            .collect()
    }
}

fn credentials_set(text: &str) -> Result<(file::ParsedFile, ProfileSet), ParseError> {
    let parsed = file::parse(text, FileKind::Credentials)?;
    let set = file::merge(None, Some(parsed.clone()));
    Ok((parsed, set))
}

/// Keys of `profiles` (all profiles with both keys when empty) found in credentials-file text.
/// Uses the same parsing rules as [`file`] (case-insensitive keys, inline comments, etc.).
/// Profiles named but lacking a complete, non-empty pair are left out of the result.
pub fn find_keys(text: &str, profiles: &[String]) -> Result<Vec<FoundKey>, ParseError> {
    let (_, set) = credentials_set(text)?;
    Ok(complete_profiles(&set, profiles)
        .into_iter()
        .map(|section| FoundKey {
            profile: section.name.clone(),
            access_key_id: section.get(ACCESS_KEY_ID).unwrap_or_default().to_owned(),
            secret_access_key: SecretString::from(
                section
                    .get(SECRET_ACCESS_KEY)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            has_session_token: section.get(SESSION_TOKEN).is_some_and(|v| !v.is_empty()),
        })
        .collect())
}

/// `text` without the key lines of `profiles` (access key id, secret, session token), every other
/// byte unchanged. Touches exactly the profiles [`find_keys`] reports for the same arguments.
pub fn remove_keys(text: &str, profiles: &[String]) -> Result<String, ParseError> {
    let (parsed, set) = credentials_set(text)?;
    let targets: BTreeSet<&str> = complete_profiles(&set, profiles)
        .into_iter()
        .map(|section| section.name.as_str())
        .collect();
    let removed: BTreeSet<usize> = parsed
        .sections()
        .iter()
        .filter(|s| s.kind == SectionKind::Profile && targets.contains(s.name.as_str()))
        .flat_map(|s| &s.properties)
        .filter(|p| REMOVED.contains(&p.name.as_str()))
        .flat_map(|p| p.lines())
        .collect();

    let mut out = String::with_capacity(text.len());
    let mut removed_unterminated_last = false;
    for line in file::lines(text) {
        if removed.contains(&line.number) {
            removed_unterminated_last = !line.full.ends_with('\n');
        } else {
            out.push_str(line.full);
        }
    }
    if removed_unterminated_last {
        let trimmed = out
            .strip_suffix("\r\n")
            .or_else(|| out.strip_suffix('\n'))
            .map(str::len);
        if let Some(len) = trimmed {
            out.truncate(len);
        }
    }
    Ok(out)
}
