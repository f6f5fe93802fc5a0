//! Settings in the AWS config that would be ignored in silence: keys with no effect on a profile
//! of that kind, `credvend_*` keys credvend does not know, settings that conflict. Each is a
//! warning naming the file and line (for `list`, `status` and the daemon's log); none stops a
//! profile from being served (mistakes that do are `resolve` errors). Pure.
//!
//! Also [`suggest`]: the "did you mean" for a mistyped name.

use std::fmt;

use super::file::{Origin, ProfileSet, Section};

/// The `credvend_*` keys credvend reads.
pub(crate) const CREDVEND_KEYS: &[&str] = &[
    "credvend_federation_name",
    "credvend_policy",
    "credvend_policy_arns",
    "credvend_mfa_process",
    "credvend_session_duration_seconds",
    "credvend_session_tags",
    "credvend_transitive_session_tags",
    "credvend_source_identity",
];

/// The session tag keys, both spellings (see `resolve/tags.rs`).
const TAG_KEYS: [&str; 6] = [
    "credvend_session_tags",
    "session_tags",
    "credvend_transitive_session_tags",
    "transitive_session_tags",
    "credvend_source_identity",
    "source_identity",
];

/// A setting that will not do what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Warning {
    /// Where it is.
    pub origin: Option<Origin>,
    /// What is wrong and what to do (one line).
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Some(o) => write!(f, "{o}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The warnings about profile `name` of `set` (none when it is not in the set).
pub(crate) fn check_profile(set: &ProfileSet, name: &str) -> Vec<Warning> {
    let Some(p) = set.profiles.get(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let has = |key: &str| p.get(key).is_some_and(|v| !v.trim().is_empty());
    let mut warn = |key: &str, message: String| {
        out.push(Warning {
            origin: p.origin(key),
            message: format!("profile `{name}`: {message}"),
        });
    };
    for key in p.properties.keys().filter(|k| k.starts_with("credvend_")) {
        if !CREDVEND_KEYS.contains(&key.as_str()) {
            let hint = suggest(key, CREDVEND_KEYS.iter().copied())
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            warn(
                key,
                format!("{key} is not a credvend setting and is ignored{hint}"),
            );
        }
    }
    if !has("role_arn") {
        for key in ["source_profile", "external_id", "role_session_name"] {
            if has(key) {
                warn(key, format!("{key} has no effect without role_arn"));
            }
        }
    }
    for w in kind_conflicts(p, &has) {
        warn(w.0, w.1);
    }
    out
}

/// Keys that the kind of profile `p` ignores.
fn kind_conflicts(p: &Section, has: &dyn Fn(&str) -> bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let own_keys =
        !has("role_arn") && !has("credential_process") && !has("web_identity_token_file");
    if own_keys && has("duration_seconds") && has("credvend_session_duration_seconds") {
        out.push((
            "duration_seconds",
            "duration_seconds is ignored: credvend_session_duration_seconds sets this session's length"
                .to_owned(),
        ));
    }
    let chained = has("role_arn")
        && p.get("source_profile")
            .is_some_and(|s| s.trim() != p.name && !s.trim().is_empty());
    if chained && has("credvend_session_duration_seconds") {
        out.push((
            "credvend_session_duration_seconds",
            "credvend_session_duration_seconds has no effect on a role profile: set it on the profile whose keys the chain starts with"
                .to_owned(),
        ));
    }
    if has("role_arn") && has("credential_process") && has("source_profile") {
        out.push((
            "credential_process",
            "credential_process is ignored: role_arn with source_profile assumes the role with the source profile's credentials"
                .to_owned(),
        ));
    }
    if has("web_identity_token_file") && has("source_profile") {
        out.push((
            "source_profile",
            "source_profile is ignored: the role is assumed with the web identity token".to_owned(),
        ));
    }
    if let Some(why) = tags_ignored_because(has) {
        for key in TAG_KEYS.into_iter().filter(|k| has(k)) {
            out.push((key, format!("{key} has no effect: {why}")));
        }
    }
    if has("credential_process") && !has("role_arn") && has("duration_seconds") {
        out.push((
            "duration_seconds",
            "duration_seconds has no effect: credential_process decides how long its credentials last"
                .to_owned(),
        ));
    }
    out
}

/// Why a profile of this kind sends no session tags, or `None` when it does: only `AssumeRole`
/// (a profile with `role_arn`, not a web identity one) and `GetFederationToken` take them (and
/// `resolve` refuses what `GetFederationToken` cannot take).
fn tags_ignored_because(has: &dyn Fn(&str) -> bool) -> Option<&'static str> {
    if has("role_arn") {
        return has("web_identity_token_file").then_some(
            "AssumeRoleWithWebIdentity takes its session tags from the token, not from the config",
        );
    }
    if has("credvend_federation_name") {
        return None;
    }
    Some(if has("sso_account_id") || has("sso_role_name") {
        "IAM Identity Center sets the tags of its role sessions; add role_arn to assume a role with them"
    } else if has("credential_process") {
        "credential_process credentials are served as they are; add role_arn to assume a role with them"
    } else {
        "this profile is served through GetSessionToken, which takes no session tags or source identity; add role_arn or credvend_federation_name"
    })
}

/// The candidate closest to `word` when it is a plausible typo of it: at most two edits apart
/// (one for short names), and closer than to any other candidate.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    let mut best: Option<(usize, &str)> = None;
    let mut tie = false;
    for c in candidates.filter(|c| *c != word) {
        let d = distance(word, c);
        match best {
            Some((bd, _)) if d > bd => {}
            Some((bd, _)) if d == bd => tie = true,
            _ => {
                best = Some((d, c));
                tie = false;
            }
        }
    }
    best.filter(|(d, _)| *d <= limit && !tie).map(|(_, c)| c)
}

/// Optimal string alignment distance (Levenshtein with transpositions), case-sensitive.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::file::{FileKind, merge, parse};

    fn warnings(config: &str, name: &str) -> Vec<String> {
        let set = merge(Some(parse(config, FileKind::Config).unwrap()), None);
        check_profile(&set, name)
            .into_iter()
            .map(|w| w.to_string())
            .collect()
    }

    #[test]
    fn typos_get_suggestions_and_ties_get_none() {
        let names = ["dev", "prod", "staging"];
        assert_eq!(suggest("dve", names.iter().copied()), Some("dev"));
        assert_eq!(suggest("prdo", names.iter().copied()), Some("prod"));
        assert_eq!(suggest("stagign", names.iter().copied()), Some("staging"));
        assert_eq!(suggest("xyz", names.iter().copied()), None);
        assert_eq!(suggest("dev", names.iter().copied()), None, "exact match");
        assert_eq!(suggest("ab", ["ac", "ad"].into_iter()), None, "a tie");
    }

    #[test]
    fn settings_without_effect_are_named_with_their_line() {
        let cfg = "[profile base]\nregion = us-east-1\nduration_seconds = 900\n\
                   credvend_session_duration_seconds = 3600\ncredvend_polcy = {}\n\
                   [profile fed]\nsource_profile = base\ncredvend_federation_name = fed-user\n\
                   [profile role]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = base\n\
                   credvend_session_duration_seconds = 900\n";
        let base = warnings(cfg, "base");
        assert_eq!(base.len(), 2, "{base:#?}");
        assert!(base[0].starts_with("config file line 5: ") && base[0].contains("did you mean"));
        assert!(base[1].starts_with("config file line 3: ") && base[1].contains("ignored"));
        let fed = warnings(cfg, "fed");
        assert_eq!(
            fed,
            ["config file line 7: profile `fed`: source_profile has no effect without role_arn"]
        );
        let role = warnings(cfg, "role");
        assert!(
            role[0].contains("line 12") && role[0].contains("set it on the profile"),
            "{role:?}"
        );
        assert!(warnings(cfg, "nope").is_empty());
    }

    #[test]
    fn session_tags_on_a_profile_that_sends_none_are_warned_about() {
        let cfg = "[profile keys]\nsession_tags = team=dev\ncredvend_source_identity = alice\n\
                   [profile wi]\nrole_arn = arn:aws:iam::123456789012:role/r\nweb_identity_token_file = /t\n\
                   credvend_session_tags = team=dev\n\
                   [profile proc]\ncredential_process = x\ntransitive_session_tags = team\n\
                   [profile role]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = keys\n\
                   session_tags = team=dev\ncredvend_sesion_tags = x=y\n\
                   [profile fed]\ncredvend_federation_name = fed\nsession_tags = team=dev\n";
        let keys = warnings(cfg, "keys");
        assert_eq!(keys.len(), 2, "{keys:#?}");
        assert!(
            keys[1].starts_with("config file line 3: profile `keys`: credvend_source_identity has no effect: this profile is served through GetSessionToken"),
            "{keys:#?}"
        );
        assert!(
            keys[0].starts_with("config file line 2: profile `keys`: session_tags has no effect")
        );
        let wi = warnings(cfg, "wi");
        assert!(
            wi[0].contains("line 7") && wi[0].contains("AssumeRoleWithWebIdentity"),
            "{wi:?}"
        );
        let proc = warnings(cfg, "proc");
        assert!(
            proc[0].contains("line 10") && proc[0].contains("credential_process"),
            "{proc:?}"
        );
        let role = warnings(cfg, "role");
        assert_eq!(role.len(), 1, "{role:?}");
        assert!(
            role[0].contains("did you mean credvend_session_tags?"),
            "{role:?}"
        );
        assert!(warnings(cfg, "fed").is_empty());
    }
}
