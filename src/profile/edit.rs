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
//! - Seen as lines separated by line endings, each removed line takes one separator with it:
//!   normally its own line ending, but for a last line without one, the line ending before it. So
//!   a file without a final newline still has none afterwards (unless a blank line preceded the
//!   removed last line: that blank line then becomes the empty remainder after the final newline).
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
/// Uses the same parsing rules as [`super::file`] (case-insensitive keys, inline comments, etc.).
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

/// Line numbers of the key properties of `profiles` (every section and every duplicate line of
/// them): all their lines, and the first lines of the secret ones (continuation lines follow).
struct KeyLines {
    all: BTreeSet<usize>,
    secret_first: BTreeSet<usize>,
    secret_rest: BTreeSet<usize>,
}

fn key_lines(text: &str, profiles: &[String]) -> Result<KeyLines, ParseError> {
    let (parsed, set) = credentials_set(text)?;
    let targets: BTreeSet<&str> = complete_profiles(&set, profiles)
        .into_iter()
        .map(|section| section.name.as_str())
        .collect();
    let properties: Vec<&file::RawProperty> = parsed
        .sections()
        .iter()
        .filter(|s| s.kind == SectionKind::Profile && targets.contains(s.name.as_str()))
        .flat_map(|s| &s.properties)
        .filter(|p| REMOVED.contains(&p.name.as_str()))
        .collect();
    Ok(KeyLines {
        all: properties.iter().flat_map(|p| p.lines()).collect(),
        secret_first: properties
            .iter()
            .filter(|p| p.name != ACCESS_KEY_ID)
            .map(|p| p.line)
            .collect(),
        secret_rest: properties
            .iter()
            .filter(|p| p.name != ACCESS_KEY_ID)
            .flat_map(|p| p.continuation_lines.iter().copied())
            .collect(),
    })
}

/// `text` without the key lines of `profiles` (access key id, secret, session token), every other
/// byte unchanged. Touches exactly the profiles [`find_keys`] reports for the same arguments.
pub fn remove_keys(text: &str, profiles: &[String]) -> Result<String, ParseError> {
    let removed = key_lines(text, profiles)?.all;
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

/// What a blanked secret reads in [`blank_secrets`]' output.
pub const BLANKED: &str = "(moved to the keyring by credvend)";

/// `text` with the value of every secret line that [`remove_keys`] would remove (each
/// `aws_secret_access_key` and `aws_session_token` of `profiles`, duplicates and overridden
/// sections included) replaced by [`BLANKED`], and their continuation lines dropped; every other
/// line unchanged. For a backup that keeps the file's shape but no secret.
pub fn blank_secrets(text: &str, profiles: &[String]) -> Result<String, ParseError> {
    let lines = key_lines(text, profiles)?;
    let mut out = String::with_capacity(text.len());
    for line in file::lines(text) {
        if lines.secret_first.contains(&line.number) {
            let name = line.content.split_once('=').map_or("", |(n, _)| n);
            let ending = if line.full.ends_with("\r\n") {
                "\r\n"
            } else if line.full.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            out.push_str(&format!("{name}= {BLANKED}{ending}"));
        } else if !lines.secret_rest.contains(&line.number) {
            out.push_str(line.full);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn backups_blank_every_secret_line_removed() {
        let text = "[a]\naws_access_key_id = AKIAA\naws_secret_access_key = OLDSECRET\n\
                    aws_secret_access_key = SECRETA\n[b]\naws_access_key_id = AKIAB\n\
                    aws_secret_access_key = SECRETB\n[a]\naws_secret_access_key = LATERSECRET\n\
                    aws_session_token = TOKEN\n  more-token\nregion = x\n";
        let out = blank_secrets(text, &["a".into()]).unwrap();
        for gone in ["OLDSECRET", "SECRETA", "LATERSECRET", "TOKEN", "more-token"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("SECRETB"), "other profiles untouched");
        assert!(out.contains("aws_access_key_id = AKIAA"));
        assert!(out.contains("region = x"));
        assert_eq!(out.matches(BLANKED).count(), 4, "{out}");
    }

    #[test]
    fn acceptance_comments_profiles_unrelated_keys() {
        let input = format!(
            "# my credentials\n\
             [default]\n\
             aws_access_key_id = AKIADEFAULT\n\
             ; old key below\n\
             aws_secret_access_key = {SECRET} # inline comment\n\
             region = eu-west-1\n\
             \n\
             [dev]\n\
             output = json\n\
             AWS_Access_Key_ID=AKIADEV\n\
             AWS_SECRET_ACCESS_KEY=dev/secret=with=equals\n\
             aws_session_token = TOKEN\n\
             \tcontinued-token\n\
             s3 =\n  max_concurrent_requests = 10\n\
             \n\
             [only-id]\n\
             aws_access_key_id = AKIALONELY\n"
        );
        let found = find_keys(&input, &[]).unwrap();
        let summary: Vec<_> = found
            .iter()
            .map(|k| {
                (
                    k.profile.as_str(),
                    k.access_key_id.as_str(),
                    k.secret_access_key.expose_secret(),
                    k.has_session_token,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("default", "AKIADEFAULT", SECRET, false),
                ("dev", "AKIADEV", "dev/secret=with=equals", true),
            ]
        );
        let out = remove_keys(&input, &[]).unwrap();
        assert_eq!(
            out,
            "# my credentials\n\
             [default]\n\
             ; old key below\n\
             region = eu-west-1\n\
             \n\
             [dev]\n\
             output = json\n\
             s3 =\n  max_concurrent_requests = 10\n\
             \n\
             [only-id]\n\
             aws_access_key_id = AKIALONELY\n"
        );
    }

    #[test]
    fn selected_profiles_only_and_order_kept() {
        let input = "[a]\naws_access_key_id=A\naws_secret_access_key=SA\n[b]\naws_access_key_id=B\naws_secret_access_key=SB\n";
        let found = find_keys(input, &names(&["b", "missing", "b"])).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].profile, "b");
        assert_eq!(
            remove_keys(input, &names(&["b"])).unwrap(),
            "[a]\naws_access_key_id=A\naws_secret_access_key=SA\n[b]\n"
        );
        // Profile names are case-sensitive.
        assert!(find_keys(input, &names(&["B"])).unwrap().is_empty());
        assert_eq!(remove_keys(input, &names(&["B"])).unwrap(), input);
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        let input = "[a]\r\nregion = x\r\naws_access_key_id = A\r\naws_secret_access_key = S";
        assert_eq!(remove_keys(input, &[]).unwrap(), "[a]\r\nregion = x");
        let input = "[a]\r\naws_access_key_id = A\r\naws_secret_access_key = S\r\nregion = x";
        assert_eq!(remove_keys(input, &[]).unwrap(), "[a]\r\nregion = x");
        let input = "[a]\naws_access_key_id = A\naws_secret_access_key = S";
        assert_eq!(remove_keys(input, &[]).unwrap(), "[a]");
    }

    #[test]
    fn duplicate_sections_and_keys_all_removed_last_wins() {
        let input = "[a]\naws_access_key_id = OLD\n[b]\nx = 1\n[a]\naws_access_key_id = NEW\naws_secret_access_key = S\naws_access_key_id = NEWEST\n";
        let found = find_keys(input, &[]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].access_key_id, "NEWEST");
        assert_eq!(remove_keys(input, &[]).unwrap(), "[a]\n[b]\nx = 1\n[a]\n");
    }

    #[test]
    fn ignored_sections_are_not_touched() {
        // `[profile a]` is not a profile in the credentials file, so an SDK would not use it.
        let input = "[profile a]\naws_access_key_id = A\naws_secret_access_key = S\n";
        assert!(find_keys(input, &[]).unwrap().is_empty());
        assert_eq!(remove_keys(input, &[]).unwrap(), input);
        // Empty values do not make a pair.
        let input = "[a]\naws_access_key_id =\naws_secret_access_key = S\n";
        assert!(find_keys(input, &[]).unwrap().is_empty());
        assert_eq!(remove_keys(input, &[]).unwrap(), input);
    }

    #[test]
    fn unchanged_when_nothing_matches_and_bom_kept() {
        for input in ["", "\n", "# only\r\n", "\u{feff}[a]\nx = 1"] {
            assert_eq!(remove_keys(input, &[]).unwrap(), input);
        }
        let input = "\u{feff}[a]\naws_access_key_id = A\naws_secret_access_key = S\n";
        assert_eq!(remove_keys(input, &[]).unwrap(), "\u{feff}[a]\n");
    }

    #[test]
    fn secret_never_in_debug_or_errors() {
        let input = format!("[a]\naws_access_key_id = A\naws_secret_access_key = {SECRET}\n");
        let found = find_keys(&input, &[]).unwrap();
        let shown = format!("{found:?} {found:#?}");
        assert!(!shown.contains("wJalr"), "{shown}");
        assert!(shown.contains("REDACTED"));

        // A malformed line holding the secret: the error names the line, not its text.
        let broken = format!("[a]\naws_access_key_id = A\n{SECRET}\n");
        for err in [
            find_keys(&broken, &[]).unwrap_err(),
            remove_keys(&broken, &[]).unwrap_err(),
        ] {
            let shown = format!("{err} {err:?}");
            assert!(shown.starts_with("line 3: Expected an '=' sign"), "{shown}");
            assert!(!shown.contains("wJalr"), "{shown}");
        }
    }

    /// One line of a generated credentials file.
    #[derive(Debug, Clone)]
    enum Item {
        /// One of the three removable keys (index into `REMOVED`), its spelling, a value and
        /// whether a continuation line follows.
        Key(usize, bool, String, bool),
        Other(&'static str, String),
        Comment,
        Blank,
    }

    fn item() -> impl Strategy<Value = Item> {
        let value = "[A-Za-z0-9/+=]{0,6}";
        prop_oneof![
            4 => (0..3usize, any::<bool>(), value, prop::bool::weighted(0.1))
                .prop_map(|(k, upper, v, cont)| Item::Key(k, upper, v, cont)),
            2 => (prop::sample::select(vec!["region", "output", "Region"]), value)
                .prop_map(|(k, v)| Item::Other(k, v)),
            1 => Just(Item::Comment),
            1 => Just(Item::Blank),
        ]
    }

    fn credentials_file() -> impl Strategy<Value = String> {
        let section = (
            prop::sample::select(vec!["default", "dev", "Dev", "profile dev", "x y"]),
            prop::collection::vec(item(), 0..7),
        );
        (
            prop::collection::vec(section, 0..6),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(sections, crlf, final_newline)| {
                let mut lines = vec!["# header comment".to_owned()];
                for (name, items) in sections {
                    lines.push(format!("[{name}]"));
                    for item in items {
                        match item {
                            Item::Key(k, upper, v, cont) => {
                                let key = if upper {
                                    REMOVED[k].to_ascii_uppercase()
                                } else {
                                    REMOVED[k].to_owned()
                                };
                                lines.push(format!("{key} = {v}"));
                                if cont {
                                    lines.push("  more = x".to_owned());
                                }
                            }
                            Item::Other(k, v) => lines.push(format!("{k}={v} ; note")),
                            Item::Comment => lines.push("; aws_secret_access_key = no".into()),
                            Item::Blank => lines.push(String::new()),
                        }
                    }
                }
                let eol = if crlf { "\r\n" } else { "\n" };
                let mut text = lines.join(eol);
                if final_newline {
                    text.push_str(eol);
                }
                text
            })
    }

    /// The lines of `text`, seen as separated (not terminated) by line endings, so a text
    /// ending with a newline ends with an empty line. In this view [`remove_keys`] deletes whole
    /// lines together with one line separator each.
    fn separated_lines(text: &str) -> Vec<&str> {
        text.split('\n').map(|l| l.trim_end_matches('\r')).collect()
    }

    /// Whether `small` is `big` with some whole lines deleted.
    fn is_line_subsequence(small: &str, big: &str) -> bool {
        let trim = separated_lines;
        let (small, big) = (trim(small), trim(big));
        let mut big = big.iter();
        small.iter().all(|line| big.any(|b| b == line))
    }

    proptest! {
        #[test]
        fn remove_keys_removes_exactly_the_keys(
            text in credentials_file(),
            only_dev in any::<bool>(),
        ) {
            let profiles = if only_dev { names(&["dev"]) } else { Vec::new() };
            let targets: Vec<String> = find_keys(&text, &profiles)
                .unwrap()
                .into_iter()
                .map(|k| k.profile)
                .collect();
            let out = remove_keys(&text, &profiles).unwrap();

            let before = file::merge(None, Some(file::parse(&text, FileKind::Credentials).unwrap()));
            let after = file::merge(None, Some(file::parse(&out, FileKind::Credentials).unwrap()));
            let mut expected = before.profiles.clone();
            for name in &targets {
                let section = expected.get_mut(name).unwrap();
                for key in REMOVED {
                    section.properties.remove(key);
                }
            }
            prop_assert_eq!(&after.profiles, &expected);
            prop_assert!(find_keys(&out, &profiles).unwrap().is_empty());

            // Only whole lines went away, with one separator each.
            prop_assert!(is_line_subsequence(&out, &text));
            if text.ends_with('\n') {
                prop_assert!(out.is_empty() || out.ends_with('\n'));
            }
            prop_assert_eq!(out.contains("\r\n"), text.contains("\r\n") && out.contains('\n'));
            if targets.is_empty() {
                prop_assert_eq!(&out, &text);
            }
            // No more lines went away than there are key and continuation lines.
            let removed_lines = separated_lines(&text).len() - separated_lines(&out).len();
            let key_lines = separated_lines(&text)
                .into_iter()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    REMOVED.iter().any(|k| l.starts_with(k)) || l.starts_with("  more")
                })
                .count();
            prop_assert!(removed_lines <= key_lines);
        }
    }
}
