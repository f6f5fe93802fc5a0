//! Credential types shared by every layer, and the one timestamp format SDKs accept.
//!
//! Secrets are `SecretString` from the moment they enter the process (keyring, STS response,
//! `credential_process` output) until they are written into a response body. `Debug` on every type
//! here prints `[REDACTED]` for them.

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Credentials with less than this left are never served (`daemon::policy`).
pub const SERVE_FLOOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Credentials that arrive with less than this left are useless (they would be served for a
/// minute at most), and minting them again at once would loop: they are a mint failure.
pub const MIN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2 * 60);

/// A long-term access key pair, as stored in the keyring.
#[derive(Clone, Debug)]
pub struct LongTermKey {
    /// The access key id (`AKIA...`); not a secret, shown by `list` and in logs.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

/// Temporary credentials minted by STS or returned by a `credential_process`.
#[derive(Clone, Debug)]
pub struct TemporaryCredentials {
    /// The access key id (`ASIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token. `credential_process` may return long-term keys without one; those are
    /// never served by the daemon.
    pub session_token: Option<SecretString>,
    /// When the credentials stop working.
    pub expiration: OffsetDateTime,
    /// The 12-digit account the credentials belong to, when known.
    pub account_id: Option<String>,
    /// The ARN of the identity (assumed role, federated user, or IAM user), when known.
    pub arn: Option<String>,
    /// How much of STS's limit the session policies and tags use, in percent
    /// (`PackedPolicySize`), when STS said.
    pub packed_policy_size: Option<u32>,
}

/// Borrowed credentials for signing one request.
#[derive(Clone, Copy, Debug)]
pub struct SigningKey<'a> {
    /// Access key id.
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_access_key: &'a SecretString,
    /// Session token, sent as `X-Amz-Security-Token`.
    pub session_token: Option<&'a SecretString>,
}

impl LongTermKey {
    /// The key as signing credentials.
    pub fn signing_key(&self) -> SigningKey<'_> {
        SigningKey {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: None,
        }
    }
}

impl TemporaryCredentials {
    /// The credentials as signing credentials.
    pub fn signing_key(&self) -> SigningKey<'_> {
        SigningKey {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: self.session_token.as_ref(),
        }
    }

    /// Time left until expiry (negative once expired).
    pub fn remaining(&self, now: OffsetDateTime) -> time::Duration {
        self.expiration - now
    }

    /// True when both sets hold the same key (used to tell a rotation from a re-read).
    pub fn same_key(&self, other: &TemporaryCredentials) -> bool {
        self.access_key_id == other.access_key_id
            && self.secret_access_key.expose_secret() == other.secret_access_key.expose_secret()
    }
}

/// The `credential_process` Version 1 document for `creds` (`Version` is the integer 1, as
/// botocore and the Java SDK require).
pub fn credential_process_json(creds: &TemporaryCredentials) -> serde_json::Value {
    let mut out = serde_json::json!({
        "Version": 1,
        "AccessKeyId": creds.access_key_id,
        "SecretAccessKey": creds.secret_access_key.expose_secret(),
        "SessionToken": creds.session_token.as_ref().map(|t| t.expose_secret().to_owned()),
        "Expiration": format_aws_time(creds.expiration),
    });
    if let Some(account) = &creds.account_id {
        out["AccountId"] = account.clone().into();
    }
    out
}

/// The 12-digit account id inside an ARN (`arn:aws:sts::123456789012:assumed-role/...`).
pub fn account_from_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
}

/// Formats a timestamp the way every SDK parses it: `YYYY-MM-DDTHH:MM:SSZ`, UTC, whole seconds,
/// truncated (never rounded up past the real expiry).
pub fn format_aws_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .expect("a UTC timestamp in years 0..9999 always formats")
}

/// Parses an RFC 3339 timestamp as STS and `credential_process` send it: with no fraction,
/// milliseconds or microseconds, `Z` or an offset.
pub fn parse_aws_time(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
}

#[cfg(test)]
impl TemporaryCredentials {
    /// Credentials for unit tests: key id `key`, secret `s`, token `t`, account 123456789012.
    pub(crate) fn sample(key: &str, expiration: OffsetDateTime) -> Self {
        TemporaryCredentials {
            access_key_id: key.into(),
            secret_access_key: SecretString::from("s"),
            session_token: Some(SecretString::from("t")),
            expiration,
            account_id: Some("123456789012".into()),
            arn: None,
            packed_policy_size: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_whole_seconds_truncated_with_z() {
        let t = datetime!(2026-11-22 08:53:52.999_999 UTC);
        assert_eq!(format_aws_time(t), "2026-11-22T08:53:52Z");
        let t = datetime!(2026-11-22 10:53:52 +02:00);
        assert_eq!(format_aws_time(t), "2026-11-22T08:53:52Z");
    }

    #[test]
    fn parses_sts_timestamp_variants() {
        for (s, want) in [
            ("2026-11-22T08:53:52Z", datetime!(2026-11-22 08:53:52 UTC)),
            (
                "2011-07-11T19:55:29.611Z",
                datetime!(2011-07-11 19:55:29.611 UTC),
            ),
            (
                "2026-11-22T08:53:52.884340Z",
                datetime!(2026-11-22 08:53:52.884340 UTC),
            ),
            (
                "2026-11-22T09:53:52+01:00",
                datetime!(2026-11-22 08:53:52 UTC),
            ),
        ] {
            assert_eq!(parse_aws_time(s).unwrap(), want, "{s}");
        }
        assert!(parse_aws_time("2026-11-22 08:53:52").is_err());
    }

    #[test]
    fn account_from_arn_takes_the_fifth_field() {
        assert_eq!(
            account_from_arn("arn:aws:sts::123456789012:assumed-role/r/s").as_deref(),
            Some("123456789012")
        );
        assert_eq!(account_from_arn("arn:aws:iam::short:user/x"), None);
        assert_eq!(account_from_arn("nonsense"), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let key = LongTermKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("very-secret-value"),
        };
        let text = format!("{key:?}");
        assert!(!text.contains("very-secret-value"), "{text}");
        assert!(text.contains("AKIDEXAMPLE"));
    }
}
