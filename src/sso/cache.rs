//! The SSO token cache of the AWS CLI v2 and botocore (`~/.aws/sso/cache/*.json`): file names,
//! parsing and rendering (pure), reading and writing (IO).
//!
//! The format, as botocore in the test venv reads and writes it (`botocore/utils.py`
//! `SSOTokenLoader`, `botocore/tokens.py` `SSOTokenProvider` and `_sso_json_dumps`; the AWS CLI v2
//! writes the same dict in `awscli/botocore/utils.py` `SSOTokenFetcher`):
//!
//! * one file per sign-in, named by the lowercase hex SHA-1 of the `sso-session` name, or of the
//!   start URL for a legacy profile without `sso_session`, plus `.json`;
//! * a JSON object with `startUrl`, `region`, `accessToken`, `expiresAt`, and, when the token can
//!   be refreshed, `clientId`, `clientSecret`, `registrationExpiresAt`, `refreshToken`, in that
//!   order, written by Python's `json.dumps` (separators `", "` and `": "`, non-ASCII escaped);
//! * timestamps `%Y-%m-%dT%H:%M:%SZ` in UTC. botocore reads them with `dateutil`, which also took
//!   the `...UTC` form older CLI versions wrote and fractional seconds other SDKs write; [`parse`]
//!   accepts those too.
//!
//! [`render`] reproduces botocore's bytes exactly, so a file round-trips unchanged
//! (`tests/it/sso_standin.rs` checks this against a file botocore wrote). The test vector
//! `tests/data/sso/botocore-token-cache.json` is such a file (see `tests/data/sso/SOURCE.md`).

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use time::OffsetDateTime;

use super::{Registration, SsoSession, Token, json_failure};
use crate::creds::{format_aws_time, parse_aws_time};

/// Why a cache file could not be used. Never quotes the file's content.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The text is not a token cache document.
    #[error("not an SSO token cache file: {0}")]
    Invalid(String),
    /// The file could not be read, or is not a token cache document.
    #[error("cannot use the SSO token cache file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The cache key botocore uses: the lowercase hex SHA-1 of the session name, or of the start URL
/// for a legacy configuration.
pub fn cache_key(session: &SsoSession) -> String {
    let input = session.name.as_deref().unwrap_or(&session.start_url);
    hex::encode(Sha1::digest(input.as_bytes()))
}

/// The cache file of `session` in `dir`.
pub fn cache_path(dir: &Path, session: &SsoSession) -> PathBuf {
    dir.join(format!("{}.json", cache_key(session)))
}

/// The AWS CLI's cache directory, `~/.aws/sso/cache` (botocore expands `~` the same way).
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::paths::home_dir().map(|h| h.join(".aws").join("sso").join("cache"))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheIn {
    start_url: Option<String>,
    region: Option<String>,
    access_token: Option<SecretString>,
    expires_at: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    registration_expires_at: Option<String>,
    refresh_token: Option<SecretString>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CacheOut<'a> {
    start_url: &'a str,
    region: &'a str,
    access_token: &'a str,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

/// A cache timestamp: RFC 3339 (`Z` or an offset, any fraction), the `...UTC` suffix older AWS CLI
/// versions wrote with `%Z`, or no zone at all (taken as UTC, as botocore compares it with UTC).
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = parse_aws_time(s) {
        return Some(t);
    }
    let bare = s.strip_suffix("UTC").unwrap_or(s);
    parse_aws_time(&format!("{bare}Z")).ok()
}

/// Parses a cache file. `startUrl`, `region`, `accessToken` and `expiresAt` are required (the AWS
/// CLI always writes them); the registration is taken when `clientId`, `clientSecret` and
/// `registrationExpiresAt` are all present.
pub fn parse(text: &str) -> Result<Token, CacheError> {
    let c: CacheIn =
        serde_json::from_str(text).map_err(|e| CacheError::Invalid(json_failure(&e)))?;
    let missing = |m: &str| CacheError::Invalid(format!("it has no {m}"));
    let bad_time = |m: &str| CacheError::Invalid(format!("its {m} is not a timestamp"));
    let expires_at = c.expires_at.ok_or_else(|| missing("expiresAt"))?;
    let registration = match (c.client_id, c.client_secret, c.registration_expires_at) {
        (Some(client_id), Some(client_secret), Some(at)) => Some(Registration {
            client_id,
            client_secret,
            expires_at: parse_time(&at).ok_or_else(|| bad_time("registrationExpiresAt"))?,
        }),
        _ => None,
    };
    Ok(Token {
        access_token: c.access_token.ok_or_else(|| missing("accessToken"))?,
        expires_at: parse_time(&expires_at).ok_or_else(|| bad_time("expiresAt"))?,
        refresh_token: c.refresh_token,
        registration,
        region: c.region.ok_or_else(|| missing("region"))?,
        start_url: c.start_url.ok_or_else(|| missing("startUrl"))?,
    })
}

/// Renders `token` the way botocore writes it, byte for byte (field order, Python's separators and
/// ASCII escaping, whole-second UTC timestamps).
pub fn render(token: &Token) -> SecretString {
    let reg = token.registration.as_ref();
    let out = CacheOut {
        start_url: &token.start_url,
        region: &token.region,
        access_token: token.access_token.expose_secret(),
        expires_at: format_aws_time(token.expires_at),
        client_id: reg.map(|r| r.client_id.as_str()),
        client_secret: reg.map(|r| r.client_secret.expose_secret()),
        registration_expires_at: reg.map(|r| format_aws_time(r.expires_at)),
        refresh_token: token.refresh_token.as_ref().map(|t| t.expose_secret()),
    };
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, PythonJson);
    serde::Serialize::serialize(&out, &mut ser).expect("a map of strings serialises");
    SecretString::from(String::from_utf8(buf).expect("the formatter writes ASCII"))
}

/// Reads the cache file of `session` in `dir`; `Ok(None)` when there is none.
pub fn read(dir: &Path, session: &SsoSession) -> Result<Option<Token>, CacheError> {
    let path = cache_path(dir, session);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => SecretString::from(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CacheError::File {
                path,
                reason: e.to_string(),
            });
        }
    };
    parse(text.expose_secret())
        .map(Some)
        .map_err(|e| CacheError::File {
            path,
            reason: match e {
                CacheError::Invalid(r) => r,
                other => other.to_string(),
            },
        })
}

/// Writes `token` as the cache file of `session` in `dir` (created with mode 0700 if missing),
/// mode 0600, atomically. Returns the file's path.
pub fn write(dir: &Path, session: &SsoSession, token: &Token) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = cache_path(dir, session);
    crate::paths::write_private_file(&path, render(token).expose_secret().as_bytes())?;
    Ok(path)
}

/// `serde_json` output shaped like Python's `json.dumps` defaults: `", "` between members and
/// elements, `": "` after keys, and everything outside printable ASCII escaped as `\uXXXX`
/// (`ensure_ascii=True`; serde_json already escapes the control characters the same way).
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Written by botocore itself (see tests/data/sso/SOURCE.md).
    const BOTOCORE_FILE: &str = include_str!("../../tests/data/sso/botocore-token-cache.json");

    fn session(name: Option<&str>) -> SsoSession {
        SsoSession {
            name: name.map(Into::into),
            start_url: "https://d-1234567890.awsapps.com/start".into(),
            region: "us-east-1".into(),
            registration_scopes: vec![],
        }
    }

    #[test]
    fn file_names_are_sha1_of_session_or_start_url() {
        // Computed independently: python3 -c 'import hashlib; print(hashlib.sha1(b"my-sso").hexdigest())'
        assert_eq!(
            cache_key(&session(Some("my-sso"))),
            "0ad374308c5a4e22f723adf10145eafad7c4031c"
        );
        assert_eq!(
            cache_key(&session(None)),
            "7487b5b67d5fa1132cf33fa93ae51ef38cc37752"
        );
        let p = cache_path(Path::new("/c"), &session(None));
        assert_eq!(
            p,
            Path::new("/c/7487b5b67d5fa1132cf33fa93ae51ef38cc37752.json")
        );
        assert_eq!(p.extension().unwrap(), "json");
        assert_eq!(p.file_stem().unwrap().len(), 40);
    }

    #[test]
    fn botocore_file_round_trips_byte_for_byte() {
        let token = parse(BOTOCORE_FILE).unwrap();
        assert!(token.refresh_token.is_some());
        assert!(token.registration.is_some());
        assert_eq!(render(&token).expose_secret(), BOTOCORE_FILE.trim_end());
    }

    #[test]
    fn legacy_token_without_registration() {
        let text = r#"{"startUrl": "https://d-1.awsapps.com/start", "region": "eu-west-1", "accessToken": "at", "expiresAt": "2026-01-02T03:04:05UTC"}"#;
        let t = parse(text).unwrap();
        assert_eq!(t.expires_at, datetime!(2026-01-02 03:04:05 UTC));
        assert!(t.registration.is_none() && t.refresh_token.is_none());
        assert_eq!(
            render(&t).expose_secret(),
            r#"{"startUrl": "https://d-1.awsapps.com/start", "region": "eu-west-1", "accessToken": "at", "expiresAt": "2026-01-02T03:04:05Z"}"#
        );
    }

    #[test]
    fn timestamps_in_every_form_writers_use() {
        for s in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05UTC",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05.000Z",
            "2026-01-02T05:04:05+02:00",
        ] {
            assert_eq!(
                parse_time(s),
                Some(datetime!(2026-01-02 03:04:05 UTC)),
                "{s}"
            );
        }
        assert_eq!(parse_time("tomorrow"), None);
    }

    #[test]
    fn errors_name_the_member_never_the_value() {
        let e = parse(r#"{"startUrl": "u", "region": "r", "accessToken": "secret-value"}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an SSO token cache file: it has no expiresAt"
        );
        let e = parse(r#"{"accessToken": 42, "expiresAt": "secret-value"}"#).unwrap_err();
        assert!(
            !e.to_string().contains("secret-value") && !e.to_string().contains("42"),
            "{e}"
        );
        let e = parse(
            r#"{"startUrl": "u", "region": "r", "accessToken": "a", "expiresAt": "secret-value"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an SSO token cache file: its expiresAt is not a timestamp"
        );
    }

    #[test]
    fn python_escaping() {
        let mut t = parse(BOTOCORE_FILE).unwrap();
        t.start_url = "https://exämple.com/\u{1F600}\"\n\u{7f}".into();
        let out = render(&t);
        assert!(
            out.expose_secret()
                .starts_with(r#"{"startUrl": "https://ex\u00e4mple.com/\ud83d\ude00\"\n\u007f", "#),
            "{}",
            out.expose_secret()
        );
        assert_eq!(parse(out.expose_secret()).unwrap().start_url, t.start_url);
    }

    #[test]
    fn write_is_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sso").join("cache");
        let s = session(Some("dev"));
        assert!(read(&dir, &s).unwrap().is_none());
        let token = parse(BOTOCORE_FILE).unwrap();
        let path = write(&dir, &s, &token).unwrap();
        assert_eq!(path, cache_path(&dir, &s));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        let back = read(&dir, &s).unwrap().unwrap();
        assert_eq!(
            back.access_token.expose_secret(),
            token.access_token.expose_secret()
        );
        std::fs::write(&path, "{").unwrap();
        let e = read(&dir, &s).unwrap_err().to_string();
        assert!(e.starts_with("cannot use the SSO token cache file "), "{e}");
    }
}
