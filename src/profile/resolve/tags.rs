//! Session tags, transitive tag keys and the source identity of a role or federation step: the
//! profile keys, their parsing, and STS's limits checked at load time. Pure, like the rest of
//! resolution.
//!
//! Keys, each read in two spellings (credvend's and aws-vault's, `99designs/aws-vault`
//! `vault/config.go` and `USAGE.md`, so existing configs keep working):
//! - `credvend_session_tags` / `session_tags`: `key=value` pairs separated by commas (or line
//!   breaks, for values written over continuation lines); keys and values are trimmed, a value
//!   may be empty and may contain `=` (the first `=` separates).
//! - `credvend_transitive_session_tags` / `transitive_session_tags`: tag keys, separated the same
//!   way; each must be a key of the profile's session tags.
//! - `credvend_source_identity` / `source_identity`: one value.
//!
//! Each `AssumeRole` sends what the profile defining that role says (nothing falls back to the
//! served profile or `[default]`); `GetFederationToken` what the served profile says.
//!
//! Both spellings of one key in one profile must say the same thing (compared after parsing,
//! order aside); otherwise the profile is refused naming both lines, since either reading would
//! surprise someone.
//!
//! STS's limits, from the STS service model (`botocore/data/sts/2011-06-15/service-2.json`:
//! `tagListType` max 50, `tagKeyType` 1..=128 characters of `[\p{L}\p{Z}\p{N}_.:/=+\-@]`,
//! `tagValueType` 0..=256 of the same, `tagKeyListType` max 50, `sourceIdentityType` 2..=64 of
//! `[\w+=,.@-]`) and its documentation of `AssumeRole` `Tags`: tag keys are case-insensitive
//! (`Department` and `department` are one key), and a session tag with the key of a transitive
//! tag inherited from the calling session makes the call fail. A source identity persists
//! along a chain and cannot change (IAM User Guide, "Monitor and control actions taken with
//! assumed roles"), so a later role may repeat it but not set another. `GetFederationToken` takes
//! `Tags` but neither `TransitiveTagKeys` nor `SourceIdentity`; `AssumeRoleWithWebIdentity`
//! takes none of them (its tags come from the token).

use super::{ErrorKind, ResolveError, Resolver, err};
use crate::profile::file::{Property, Section};

/// The two spellings of the session tags key, credvend's first.
const TAGS: [&str; 2] = ["credvend_session_tags", "session_tags"];
/// The two spellings of the transitive tag keys key.
const TRANSITIVE: [&str; 2] = [
    "credvend_transitive_session_tags",
    "transitive_session_tags",
];
/// The two spellings of the source identity key.
const SOURCE_IDENTITY: [&str; 2] = ["credvend_source_identity", "source_identity"];

/// One session tag, `(key, value)`.
type Tag = (String, String);

/// STS's limits (see the module doc).
const MAX_TAGS: usize = 50;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;

/// The session tags of one `AssumeRole`, checked against STS's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionTags {
    /// `(key, value)`, in the order configured.
    pub tags: Vec<(String, String)>,
    /// Keys of `tags` (spelled as there) that pass on to the sessions this one assumes.
    pub transitive: Vec<String>,
}

impl SessionTags {
    /// A short description for `status`: the keys (never the values), transitive ones marked,
    /// at most a few; empty when there are no tags.
    pub fn describe(&self) -> String {
        const SHOWN: usize = 4;
        if self.tags.is_empty() {
            return String::new();
        }
        let mut keys: Vec<String> = self
            .tags
            .iter()
            .take(SHOWN)
            .map(|(k, _)| {
                if self.transitive.contains(k) {
                    format!("{k} (transitive)")
                } else {
                    k.clone()
                }
            })
            .collect();
        if self.tags.len() > SHOWN {
            keys.push(format!("{} more", self.tags.len() - SHOWN));
        }
        format!("tags: {}", keys.join(", "))
    }
}

/// Whether `c` is allowed in a tag key or value: `[\p{L}\p{Z}\p{N}_.:/=+\-@]` (letters,
/// separators such as the space, numbers, and `_.:/=+-@`).
fn tag_char(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || (c.is_whitespace() && !c.is_control())
        || "_.:/=+-@".contains(c)
}

/// The entries of a list value: split at commas and line breaks, trimmed, empty ones skipped
/// (a trailing comma is harmless).
fn entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// Checks the characters and length of a tag key or value; `what` names it in the message.
fn check_text(text: &str, what: &str, max: usize) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| !tag_char(*c)) {
        return Err(format!(
            "{what} holds {c:?}, which STS does not allow in tags (letters, digits, spaces and _ . : / = + - @)"
        ));
    }
    let n = text.chars().count();
    if n > max {
        return Err(format!(
            "{what} is {n} characters long; STS allows at most {max}"
        ));
    }
    Ok(())
}

/// Parses `key=value,key2=value2`: the message says what is wrong and how to write it.
pub(crate) fn parse_tags(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in entries(value) {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!(
                "entry {entry:?} has no `=`: write key=value pairs separated by commas"
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!(
                "entry {entry:?} has an empty key: write key=value pairs separated by commas"
            ));
        }
        check_text(k, &format!("key {k:?}"), MAX_KEY)?;
        check_text(v, &format!("value of {k:?}"), MAX_VALUE)?;
        if let Some((first, _)) = out.iter().find(|(o, _)| o.eq_ignore_ascii_case(k)) {
            let why = if first == k {
                String::new()
            } else {
                format!(" ({first:?} and {k:?}: STS treats tag keys case-insensitively)")
            };
            return Err(format!("key {k:?} is given twice{why}; keep one"));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    if out.len() > MAX_TAGS {
        return Err(format!(
            "has {} tags; STS allows at most {MAX_TAGS} per session",
            out.len()
        ));
    }
    Ok(out)
}

/// Parses a list of tag keys (`key,key2`).
pub(crate) fn parse_keys(value: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for k in entries(value) {
        check_text(k, &format!("key {k:?}"), MAX_KEY)?;
        if out.iter().any(|o| o.eq_ignore_ascii_case(k)) {
            return Err(format!("key {k:?} is given twice; keep one"));
        }
        out.push(k.to_owned());
    }
    Ok(out)
}

/// Checks a source identity: 2..=64 characters of letters, digits and `_+=,.@-` (STS's
/// `[\w+=,.@-]`, where `\w` is ASCII).
pub(crate) fn parse_source_identity(value: &str) -> Result<String, String> {
    let v = value.trim();
    let ok = (2..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !ok {
        return Err(format!(
            "{v:?} must be 2-64 characters of letters, digits and _+=,.@- (STS's SourceIdentity)"
        ));
    }
    Ok(v.to_owned())
}

/// The text of `key` in `p`, trimmed; `None` when absent or empty. A value written as indented
/// `name = value` lines under an empty `key =` (which the AWS config parser reads as
/// sub-properties) counts as its lines.
fn list_text<'s>(p: &'s Section, key: &str) -> Option<&'s str> {
    let text = match p.properties.get(key)? {
        Property::Value(v) => v.as_str(),
        Property::SubProperties { raw, .. } => raw.as_str(),
    };
    Some(text.trim()).filter(|t| !t.is_empty())
}

/// One setting read in both spellings: the spelling used and its parsed value, or `None`.
struct Spelled<T> {
    key: &'static str,
    value: T,
}

impl<'a> Resolver<'a> {
    /// Reads `keys` (both spellings) of `p` with `parse`; a malformed value is an error naming
    /// its key (so its line), and two spellings that disagree an error naming both lines.
    /// `same` compares two parsed values.
    fn spelled<T>(
        &self,
        p: &Section,
        keys: [&'static str; 2],
        parse: impl Fn(&str) -> Result<T, String>,
        same: impl Fn(&T, &T) -> bool,
    ) -> Result<Option<Spelled<T>>, ResolveError> {
        let mut found: Vec<Spelled<T>> = Vec::new();
        for key in keys {
            if let Some(text) = list_text(p, key) {
                let value = parse(text).map_err(|e| {
                    err(
                        ErrorKind::BadValue,
                        format!("profile `{}`: {key} {e}", p.name),
                    )
                })?;
                found.push(Spelled { key, value });
            }
        }
        if let [a, b] = found.as_slice()
            && !same(&a.value, &b.value)
        {
            let line = |k: &str| p.origin(k).map(|o| format!(" ({o})")).unwrap_or_default();
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{}`: {}{} and {}{} say different things; keep one of them",
                    p.name,
                    a.key,
                    line(a.key),
                    b.key,
                    line(b.key)
                ),
            ));
        }
        Ok(found.into_iter().next())
    }

    fn tags_of(&self, p: &Section) -> Result<Option<Spelled<Vec<Tag>>>, ResolveError> {
        self.spelled(p, TAGS, parse_tags, |a, b| sorted(a) == sorted(b))
    }

    fn transitive_of(&self, p: &Section) -> Result<Option<Spelled<Vec<String>>>, ResolveError> {
        self.spelled(p, TRANSITIVE, parse_keys, |a, b| lower(a) == lower(b))
    }

    fn source_identity_of(&self, p: &Section) -> Result<Option<Spelled<String>>, ResolveError> {
        self.spelled(p, SOURCE_IDENTITY, parse_source_identity, |a, b| a == b)
    }

    /// The session tags and transitive keys of the `AssumeRole` profile `p` defines.
    pub(super) fn session_tags(&self, p: &Section) -> Result<SessionTags, ResolveError> {
        let tags = self.tags_of(p)?;
        let transitive = self.transitive_of(p)?;
        let (tags, tags_key) = match tags {
            Some(s) => (s.value, s.key),
            None => (Vec::new(), TAGS[0]),
        };
        let mut out = SessionTags {
            tags,
            transitive: Vec::new(),
        };
        if let Some(t) = transitive {
            for k in &t.value {
                let Some((tag, _)) = out.tags.iter().find(|(tag, _)| tag.eq_ignore_ascii_case(k))
                else {
                    return Err(err(
                        ErrorKind::BadValue,
                        format!(
                            "profile `{}`: {} names {k:?}, which is not a key of {tags_key}; add the tag or remove the key",
                            p.name, t.key
                        ),
                    ));
                };
                out.transitive.push(tag.clone());
            }
        }
        Ok(out)
    }

    /// The source identity the `AssumeRole` profile `p` defines.
    pub(super) fn source_identity(&self, p: &Section) -> Result<Option<String>, ResolveError> {
        Ok(self.source_identity_of(p)?.map(|s| s.value))
    }

    /// The session tags of the `GetFederationToken` profile `p` defines. Transitive keys and a
    /// source identity are errors: the call takes neither.
    pub(super) fn federation_tags(
        &self,
        p: &Section,
    ) -> Result<Vec<(String, String)>, ResolveError> {
        let transitive = self.transitive_of(p)?.map(|s| s.key);
        if let Some(key) = transitive.or(self.source_identity_of(p)?.map(|s| s.key)) {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{}`: {key} cannot be sent with GetFederationToken, which takes session tags but no TransitiveTagKeys or SourceIdentity (those are AssumeRole's); remove it",
                    p.name
                ),
            ));
        }
        Ok(self.tags_of(p)?.map(|s| s.value).unwrap_or_default())
    }

    /// Refuses what STS would refuse along a chain of roles: a role that sets a session tag with
    /// the key of a transitive tag an earlier role passes on, or a source identity other than
    /// the one an earlier role set (it persists across chained sessions and cannot be changed:
    /// IAM User Guide, "Monitor and control actions taken with assumed roles"). `roles` are in
    /// the order they are assumed, with the sections defining them.
    pub(super) fn chain_keeps_inherited(
        &self,
        roles: &[(&Section, &SessionTags, Option<&str>)],
    ) -> Result<(), ResolveError> {
        let mut inherited: Vec<(&str, &str)> = Vec::new();
        let mut identity: Option<(&str, &str)> = None;
        for (p, tags, source_identity) in roles {
            if let (Some((first, from)), Some(this)) = (identity, source_identity)
                && first != *this
            {
                let key = SOURCE_IDENTITY
                    .into_iter()
                    .find(|key| list_text(p, key).is_some())
                    .unwrap_or(SOURCE_IDENTITY[0]);
                return Err(err(
                    ErrorKind::BadValue,
                    format!(
                        "profile `{}`: {key} {this:?} differs from {first:?}, which profile `{from}` earlier in the chain set, and a source identity cannot change along a chain; remove one of them",
                        p.name
                    ),
                ));
            }
            if identity.is_none() {
                identity = source_identity.map(|s| (s, p.name.as_str()));
            }
            for (k, _) in &tags.tags {
                if let Some((_, from)) = inherited.iter().find(|(t, _)| t.eq_ignore_ascii_case(k)) {
                    let key = TAGS
                        .into_iter()
                        .find(|key| list_text(p, key).is_some())
                        .unwrap_or(TAGS[0]);
                    return Err(err(
                        ErrorKind::BadValue,
                        format!(
                            "profile `{}`: {key} sets {k:?}, which profile `{from}` earlier in the chain passes on as a transitive tag, and STS refuses to override an inherited tag; remove one of them",
                            p.name
                        ),
                    ));
                }
            }
            inherited.extend(
                tags.transitive
                    .iter()
                    .map(|k| (k.as_str(), p.name.as_str())),
            );
        }
        Ok(())
    }
}

fn sorted(tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = tags.to_vec();
    v.sort();
    v
}

fn lower(keys: &[String]) -> Vec<String> {
    let mut v: Vec<String> = keys.iter().map(|k| k.to_lowercase()).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_like_aws_vault_and_keep_their_order() {
        assert_eq!(
            parse_tags("team=dev, Cost Center = a+b/c:d@e ,empty=,eq=x=y,").unwrap(),
            [
                ("team".into(), "dev".into()),
                ("Cost Center".into(), "a+b/c:d@e".into()),
                ("empty".into(), String::new()),
                ("eq".into(), "x=y".into()),
            ]
        );
        assert_eq!(
            parse_tags("\nteam=dev,\nproject = x").unwrap().len(),
            2,
            "continuation lines"
        );
        assert_eq!(
            parse_tags("a=1\nb=2").unwrap().len(),
            2,
            "line breaks separate"
        );
        assert_eq!(
            parse_tags("équipe=développement").unwrap()[0].0,
            "équipe",
            "letters of any script"
        );
        assert!(parse_tags("").unwrap().is_empty());
    }

    #[test]
    fn malformed_tags_say_what_is_wrong() {
        let long_key = "k".repeat(129);
        let long_value = format!("k={}", "v".repeat(257));
        let many: Vec<String> = (0..51).map(|i| format!("k{i}=v")).collect();
        for (value, needle) in [
            ("team", "has no `=`"),
            ("team=dev,project", "\"project\" has no `=`"),
            ("=dev", "empty key"),
            (" = dev", "empty key"),
            ("team=dev,Team=ops", "given twice (\"team\" and \"Team\""),
            ("te;am=x", "holds ';'"),
            ("team=a;b", "value of \"team\" holds ';'"),
            ("team=a,team=b", "key \"team\" is given twice; keep one"),
            ("team=a\tb", "holds '\\t'"),
            (
                &format!("{long_key}=v"),
                "129 characters long; STS allows at most 128",
            ),
            (&long_value, "257 characters long; STS allows at most 256"),
            (&many.join(","), "has 51 tags; STS allows at most 50"),
        ] {
            let e = parse_tags(value).unwrap_err();
            assert!(e.contains(needle), "{value:?}: {e}");
        }
        assert_eq!(
            parse_tags(&format!("{}=v", "k".repeat(128))).unwrap().len(),
            1
        );
        assert_eq!(parse_tags(&many[..50].join(",")).unwrap().len(), 50);
    }

    #[test]
    fn keys_and_source_identity() {
        assert_eq!(parse_keys("a, b ,c,").unwrap(), ["a", "b", "c"]);
        assert!(parse_keys("a,A").unwrap_err().contains("twice"));
        assert!(parse_keys("a;b").unwrap_err().contains("';'"));
        assert_eq!(
            parse_source_identity(" alice@example.com ").unwrap(),
            "alice@example.com"
        );
        for bad in ["a", "has space", "aws:x", "é-accent", &"x".repeat(65)] {
            assert!(parse_source_identity(bad).is_err(), "{bad:?}");
        }
        assert!(parse_source_identity(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn describe_shows_keys_never_values() {
        let t = SessionTags {
            tags: (1..=6)
                .map(|i| (format!("k{i}"), format!("secret-ish-{i}")))
                .collect(),
            transitive: vec!["k2".into()],
        };
        assert_eq!(t.describe(), "tags: k1, k2 (transitive), k3, k4, 2 more");
        assert!(!t.describe().contains("secret-ish"));
        assert_eq!(SessionTags::default().describe(), "");
    }
}
