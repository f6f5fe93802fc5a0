//! The versioned JSON kept in each keyring entry. Pure: no IO.
//!
//! A long-term key is `{"v":1,"access_key_id":"…","secret_access_key":"…"}`; a cached session adds
//! `session_token`, `expiration` (RFC 3339), `account_id` and `arn`. A key-rotation record is
//! `{"v":1,"rotation":{"user_name":"…","old_access_key_id":"…","started":"RFC 3339",
//! "existing_key_ids":["…"]}}`, plus `new_access_key_id` / `new_secret_access_key` once IAM made
//! the new key (the `rotation` object keeps it from ever decoding as a key or a session, and the
//! other way round). An IAM Identity Center sign-in is `{"v":1,"start_url","region",
//! "access_token","expires_at","issued_at"?,"refresh_token"?,"registration"?:{"client_id",
//! "client_secret","expires_at","grant","scopes"},"share_cache"}`: everything one refresh changes,
//! in one entry. Encoded payloads live in
//! zeroized buffers, secrets are decoded straight into [`SecretString`], and a payload that does not
//! decode yields `None` rather than a parser error: serde's messages quote the offending value, which
//! may be a secret.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use super::RotationRecord;
use crate::creds::{LongTermKey, TemporaryCredentials};
use crate::sso::{Grant, Registration, SignIn, Token};

/// The payload version this build writes and reads.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct KeyOut<'a> {
    v: u32,
    access_key_id: &'a str,
    secret_access_key: &'a str,
}

#[derive(Deserialize)]
struct KeyIn {
    v: u32,
    access_key_id: String,
    secret_access_key: SecretString,
}

#[derive(Serialize)]
struct SessionOut<'a> {
    v: u32,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<&'a str>,
    expiration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<&'a str>,
}

#[derive(Deserialize)]
struct SessionIn {
    v: u32,
    access_key_id: String,
    secret_access_key: SecretString,
    #[serde(default)]
    session_token: Option<SecretString>,
    expiration: String,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    arn: Option<String>,
}

/// Serialises into a buffer sized up front, so no partial copy of a secret is left behind by a
/// reallocation, and that is zeroed when dropped.
fn to_json<T: Serialize>(value: &T, secret_len: usize) -> Zeroizing<Vec<u8>> {
    // JSON escapes at most double the length of the characters AWS uses in keys and tokens.
    let mut buf = Zeroizing::new(Vec::with_capacity(2 * secret_len + 512));
    serde_json::to_writer(&mut *buf, value).expect("serialising strings into a Vec cannot fail");
    buf
}

/// Encodes a long-term key.
pub(crate) fn encode_key(key: &LongTermKey) -> Zeroizing<Vec<u8>> {
    let secret = key.secret_access_key.expose_secret();
    to_json(
        &KeyOut {
            v: VERSION,
            access_key_id: &key.access_key_id,
            secret_access_key: secret,
        },
        key.access_key_id.len() + secret.len(),
    )
}

/// Decodes a long-term key; `None` when the payload is not a version-1 key entry.
pub(crate) fn decode_key(bytes: &[u8]) -> Option<LongTermKey> {
    let k: KeyIn = serde_json::from_slice(bytes).ok()?;
    let usable = k.v == VERSION
        && !k.access_key_id.is_empty()
        && !k.secret_access_key.expose_secret().is_empty();
    usable.then_some(LongTermKey {
        access_key_id: k.access_key_id,
        secret_access_key: k.secret_access_key,
    })
}

/// Encodes cached session credentials; `None` when the expiry cannot be written as RFC 3339
/// (a year outside 0..=9999).
pub(crate) fn encode_session(creds: &TemporaryCredentials) -> Option<Zeroizing<Vec<u8>>> {
    let expiration = creds.expiration.format(&Rfc3339).ok()?;
    let secret = creds.secret_access_key.expose_secret();
    let token = creds.session_token.as_ref().map(|t| t.expose_secret());
    Some(to_json(
        &SessionOut {
            v: VERSION,
            access_key_id: &creds.access_key_id,
            secret_access_key: secret,
            session_token: token,
            expiration,
            account_id: creds.account_id.as_deref(),
            arn: creds.arn.as_deref(),
        },
        creds.access_key_id.len() + secret.len() + token.map_or(0, str::len),
    ))
}

/// Decodes cached session credentials; `None` when the payload is not a version-1 session entry.
pub(crate) fn decode_session(bytes: &[u8]) -> Option<TemporaryCredentials> {
    let s: SessionIn = serde_json::from_slice(bytes).ok()?;
    if s.v != VERSION
        || s.access_key_id.is_empty()
        || s.secret_access_key.expose_secret().is_empty()
    {
        return None;
    }
    let expiration = OffsetDateTime::parse(&s.expiration, &Rfc3339).ok()?;
    Some(TemporaryCredentials {
        access_key_id: s.access_key_id,
        secret_access_key: s.secret_access_key,
        session_token: s.session_token,
        expiration,
        account_id: s.account_id,
        arn: s.arn,
        packed_policy_size: None,
    })
}

#[derive(Serialize)]
struct RotationOut<'a> {
    v: u32,
    rotation: RotationFieldsOut<'a>,
}

#[derive(Serialize)]
struct RotationFieldsOut<'a> {
    user_name: &'a str,
    old_access_key_id: &'a str,
    started: String,
    existing_key_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    new_access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_secret_access_key: Option<&'a str>,
}

#[derive(Deserialize)]
struct RotationIn {
    v: u32,
    rotation: RotationFieldsIn,
}

#[derive(Deserialize)]
struct RotationFieldsIn {
    user_name: String,
    old_access_key_id: String,
    started: String,
    existing_key_ids: Vec<String>,
    #[serde(default)]
    new_access_key_id: Option<String>,
    #[serde(default)]
    new_secret_access_key: Option<SecretString>,
}

/// Encodes a key-rotation record; `None` when its start cannot be written as RFC 3339.
pub(crate) fn encode_rotation(record: &RotationRecord) -> Option<Zeroizing<Vec<u8>>> {
    let started = record.started.format(&Rfc3339).ok()?;
    let new_id = record.new_key.as_ref().map(|k| k.access_key_id.as_str());
    let new_secret = record
        .new_key
        .as_ref()
        .map(|k| k.secret_access_key.expose_secret());
    let ids_len: usize = record.existing_key_ids.iter().map(String::len).sum();
    Some(to_json(
        &RotationOut {
            v: VERSION,
            rotation: RotationFieldsOut {
                user_name: &record.user_name,
                old_access_key_id: &record.old_access_key_id,
                started,
                existing_key_ids: &record.existing_key_ids,
                new_access_key_id: new_id,
                new_secret_access_key: new_secret,
            },
        },
        record.user_name.len()
            + ids_len
            + new_id.map_or(0, str::len)
            + new_secret.map_or(0, str::len),
    ))
}

/// Decodes a key-rotation record; `None` when the payload is not a version-1 record (a new key
/// needs both its id and its secret).
pub(crate) fn decode_rotation(bytes: &[u8]) -> Option<RotationRecord> {
    let r: RotationIn = serde_json::from_slice(bytes).ok()?;
    let f = r.rotation;
    if r.v != VERSION || f.user_name.is_empty() || f.old_access_key_id.is_empty() {
        return None;
    }
    let new_key = match (f.new_access_key_id, f.new_secret_access_key) {
        (None, None) => None,
        (Some(id), Some(secret)) if !id.is_empty() && !secret.expose_secret().is_empty() => {
            Some(LongTermKey {
                access_key_id: id,
                secret_access_key: secret,
            })
        }
        _ => return None,
    };
    Some(RotationRecord {
        user_name: f.user_name,
        old_access_key_id: f.old_access_key_id,
        started: OffsetDateTime::parse(&f.started, &Rfc3339).ok()?,
        existing_key_ids: f.existing_key_ids,
        new_key,
    })
}

#[derive(Serialize)]
struct RegistrationOut<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    expires_at: String,
    grant: &'a str,
    scopes: &'a [String],
}

#[derive(Serialize)]
struct SignInOut<'a> {
    v: u32,
    start_url: &'a str,
    region: &'a str,
    access_token: &'a str,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration: Option<RegistrationOut<'a>>,
    share_cache: bool,
}

#[derive(Deserialize)]
struct RegistrationIn {
    client_id: String,
    client_secret: SecretString,
    expires_at: String,
    #[serde(default)]
    grant: String,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct SignInIn {
    v: u32,
    start_url: String,
    region: String,
    access_token: SecretString,
    expires_at: String,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    registration: Option<RegistrationIn>,
    #[serde(default)]
    share_cache: bool,
}

/// Encodes an IAM Identity Center sign-in; `None` when a time cannot be written as RFC 3339.
pub(crate) fn encode_sign_in(s: &SignIn) -> Option<Zeroizing<Vec<u8>>> {
    let t = &s.token;
    let reg = match &t.registration {
        Some(r) => Some(RegistrationOut {
            client_id: &r.client_id,
            client_secret: r.client_secret.expose_secret(),
            expires_at: r.expires_at.format(&Rfc3339).ok()?,
            grant: s.grant.as_str(),
            scopes: &s.scopes,
        }),
        None => None,
    };
    let issued_at = match s.issued_at {
        Some(at) => Some(at.format(&Rfc3339).ok()?),
        None => None,
    };
    let access = t.access_token.expose_secret();
    let refresh = t.refresh_token.as_ref().map(|r| r.expose_secret());
    let secret_len = access.len()
        + refresh.map_or(0, str::len)
        + reg
            .as_ref()
            .map_or(0, |r| r.client_secret.len() + r.client_id.len());
    Some(to_json(
        &SignInOut {
            v: VERSION,
            start_url: &t.start_url,
            region: &t.region,
            access_token: access,
            expires_at: t.expires_at.format(&Rfc3339).ok()?,
            issued_at,
            refresh_token: refresh,
            registration: reg,
            share_cache: s.share_cache,
        },
        secret_len + t.start_url.len() + 4 * 64,
    ))
}

/// Decodes an IAM Identity Center sign-in; `None` when the payload is not a version-1 one.
pub(crate) fn decode_sign_in(bytes: &[u8]) -> Option<SignIn> {
    let s: SignInIn = serde_json::from_slice(bytes).ok()?;
    if s.v != VERSION || s.access_token.expose_secret().is_empty() || s.start_url.is_empty() {
        return None;
    }
    let time = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
    let (registration, grant, scopes) = match s.registration {
        Some(r) => (
            Some(Registration {
                client_id: r.client_id,
                client_secret: r.client_secret,
                expires_at: time(&r.expires_at)?,
            }),
            Grant::parse(&r.grant),
            r.scopes,
        ),
        None => (None, Grant::Unknown, Vec::new()),
    };
    let issued_at = match s.issued_at {
        Some(t) => Some(time(&t)?),
        None => None,
    };
    Some(SignIn {
        token: Token {
            access_token: s.access_token,
            expires_at: time(&s.expires_at)?,
            refresh_token: s.refresh_token,
            registration,
            region: s.region,
            start_url: s.start_url,
        },
        grant,
        scopes,
        issued_at,
        share_cache: s.share_cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key() -> LongTermKey {
        LongTermKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        }
    }

    fn session() -> TemporaryCredentials {
        TemporaryCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::from("session/secret+value"),
            session_token: Some(SecretString::from("FwoGZXIvYXdzEBYaD+token/with==")),
            expiration: datetime!(2026-11-22 08:53:52.884340 UTC),
            account_id: Some("123456789012".into()),
            arn: Some("arn:aws:iam::123456789012:user/dev".into()),
            packed_policy_size: None,
        }
    }

    #[test]
    fn key_has_the_documented_shape_and_round_trips() {
        let bytes = encode_key(&key());
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "v": 1,
                "access_key_id": "AKIDEXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
            })
        );
        let back = decode_key(&bytes).unwrap();
        assert_eq!(back.access_key_id, "AKIDEXAMPLE");
        assert_eq!(
            back.secret_access_key.expose_secret(),
            key().secret_access_key.expose_secret()
        );
    }

    #[test]
    fn session_has_the_documented_shape_and_round_trips() {
        let bytes = encode_session(&session()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["expiration"], "2026-11-22T08:53:52.88434Z");
        assert_eq!(json["session_token"], "FwoGZXIvYXdzEBYaD+token/with==");
        assert_eq!(json["account_id"], "123456789012");
        let back = decode_session(&bytes).unwrap();
        let want = session();
        assert!(back.same_key(&want));
        assert_eq!(back.expiration, want.expiration);
        assert_eq!(
            back.session_token.unwrap().expose_secret(),
            want.session_token.unwrap().expose_secret()
        );
        assert_eq!(back.account_id, want.account_id);
        assert_eq!(back.arn, want.arn);
    }

    #[test]
    fn session_without_optional_fields_round_trips() {
        let mut s = session();
        s.session_token = None;
        s.account_id = None;
        s.arn = None;
        let bytes = encode_session(&s).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json.get("session_token").is_none());
        let back = decode_session(&bytes).unwrap();
        assert!(back.session_token.is_none() && back.account_id.is_none() && back.arn.is_none());
    }

    #[test]
    fn foreign_or_future_payloads_are_rejected() {
        for bad in [
            &b"hunter2"[..],
            b"",
            b"{}",
            br#"{"v":2,"access_key_id":"AK","secret_access_key":"SK"}"#,
            br#"{"v":1,"access_key_id":"","secret_access_key":"SK"}"#,
            br#"{"v":1,"access_key_id":"AK","secret_access_key":""}"#,
            br#"{"v":1,"access_key_id":"AK"}"#,
            br#"{"v":"1","access_key_id":"AK","secret_access_key":"SK"}"#,
        ] {
            assert!(
                decode_key(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(decode_session(bad).is_none());
        }
        // A key entry is not a session entry (no expiration) and vice versa is tolerated only
        // because a session carries every key field; the two live under different services.
        assert!(decode_session(&encode_key(&key())).is_none());
        let bad_expiry =
            br#"{"v":1,"access_key_id":"AK","secret_access_key":"SK","expiration":"tomorrow"}"#;
        assert!(decode_session(bad_expiry).is_none());
    }

    fn record(new_key: Option<LongTermKey>) -> RotationRecord {
        RotationRecord {
            user_name: "dev".into(),
            old_access_key_id: "AKIDOLDEXAMPLE".into(),
            started: datetime!(2026-11-22 08:53:52 UTC),
            existing_key_ids: vec!["AKIDOLDEXAMPLE".into()],
            new_key,
        }
    }

    #[test]
    fn rotation_record_has_the_documented_shape_and_round_trips() {
        let bytes = encode_rotation(&record(None)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "rotation": {
                "user_name": "dev",
                "old_access_key_id": "AKIDOLDEXAMPLE",
                "started": "2026-11-22T08:53:52Z",
                "existing_key_ids": ["AKIDOLDEXAMPLE"],
            }})
        );
        let back = decode_rotation(&bytes).unwrap();
        assert_eq!(back.old_access_key_id, "AKIDOLDEXAMPLE");
        assert_eq!(back.started, datetime!(2026-11-22 08:53:52 UTC));
        assert_eq!(back.existing_key_ids, ["AKIDOLDEXAMPLE"]);
        assert!(back.new_key.is_none());

        let bytes = encode_rotation(&record(Some(key()))).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["rotation"]["new_access_key_id"], "AKIDEXAMPLE");
        let back = decode_rotation(&bytes).unwrap().new_key.unwrap();
        assert_eq!(back.access_key_id, "AKIDEXAMPLE");
        assert_eq!(
            back.secret_access_key.expose_secret(),
            key().secret_access_key.expose_secret()
        );
        assert!(!format!("{:?}", record(Some(key()))).contains("EXAMPLEKEY"));
    }

    #[test]
    fn rotation_records_keys_and_sessions_never_pass_for_each_other() {
        let rotation = encode_rotation(&record(Some(key()))).unwrap();
        assert!(decode_key(&rotation).is_none());
        assert!(decode_session(&rotation).is_none());
        assert!(decode_rotation(&encode_key(&key())).is_none());
        assert!(decode_rotation(&encode_session(&session()).unwrap()).is_none());
        for bad in [
            &br#"{"v":2,"rotation":{"user_name":"u","old_access_key_id":"A","started":"2026-11-22T08:53:52Z","existing_key_ids":[]}}"#[..],
            br#"{"v":1,"rotation":{"user_name":"u","old_access_key_id":"A","started":"soon","existing_key_ids":[]}}"#,
            br#"{"v":1,"rotation":{"user_name":"u","old_access_key_id":"A","started":"2026-11-22T08:53:52Z","existing_key_ids":[],"new_access_key_id":"N"}}"#,
            br#"{"v":1,"rotation":{"user_name":"","old_access_key_id":"A","started":"2026-11-22T08:53:52Z","existing_key_ids":[]}}"#,
        ] {
            assert!(
                decode_rotation(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unknown_fields_from_newer_writers_are_ignored() {
        let bytes = br#"{"v":1,"access_key_id":"AK","secret_access_key":"SK","comment":"x"}"#;
        assert_eq!(decode_key(bytes).unwrap().access_key_id, "AK");
    }

    fn sign_in() -> SignIn {
        SignIn {
            token: Token {
                access_token: SecretString::from("aoa-access\"token"),
                expires_at: datetime!(2026-11-22 08:53:52 UTC),
                refresh_token: Some(SecretString::from("aor-refresh")),
                registration: Some(Registration {
                    client_id: "client-1".into(),
                    client_secret: SecretString::from("client-secret"),
                    expires_at: datetime!(2027-02-20 08:53:52 UTC),
                }),
                region: "eu-west-1".into(),
                start_url: "https://d-1.awsapps.com/start".into(),
            },
            grant: Grant::AuthCode,
            scopes: vec!["sso:account:access".into()],
            issued_at: Some(datetime!(2026-11-22 07:53:52 UTC)),
            share_cache: true,
        }
    }

    #[test]
    fn sign_in_has_the_documented_shape_and_round_trips() {
        let bytes = encode_sign_in(&sign_in()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "v": 1,
                "start_url": "https://d-1.awsapps.com/start",
                "region": "eu-west-1",
                "access_token": "aoa-access\"token",
                "expires_at": "2026-11-22T08:53:52Z",
                "issued_at": "2026-11-22T07:53:52Z",
                "refresh_token": "aor-refresh",
                "registration": {
                    "client_id": "client-1",
                    "client_secret": "client-secret",
                    "expires_at": "2027-02-20T08:53:52Z",
                    "grant": "authorization_code",
                    "scopes": ["sso:account:access"]
                },
                "share_cache": true
            })
        );
        let back = decode_sign_in(&bytes).unwrap();
        let want = sign_in();
        assert!(back.same_token(&want.token));
        assert_eq!(back.token.expires_at, want.token.expires_at);
        assert_eq!(
            back.token.refresh_token.unwrap().expose_secret(),
            "aor-refresh"
        );
        let reg = back.token.registration.unwrap();
        assert_eq!(reg.client_secret.expose_secret(), "client-secret");
        assert_eq!(back.grant, Grant::AuthCode);
        assert_eq!(back.scopes, want.scopes);
        assert_eq!(back.issued_at, want.issued_at);
        assert!(back.share_cache);
    }

    #[test]
    fn sign_in_without_refresh_or_registration_round_trips() {
        let mut s = sign_in();
        s.token.refresh_token = None;
        s.token.registration = None;
        s.issued_at = None;
        s.share_cache = false;
        let bytes = encode_sign_in(&s).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json.get("registration").is_none() && json.get("refresh_token").is_none());
        let back = decode_sign_in(&bytes).unwrap();
        assert!(back.token.registration.is_none() && back.token.refresh_token.is_none());
        assert_eq!(back.grant, Grant::Unknown);
        assert!(!back.share_cache && back.issued_at.is_none());
        // Other entry kinds, and newer versions, are not sign-ins.
        assert!(decode_sign_in(&encode_key(&key())).is_none());
        assert!(decode_sign_in(br#"{"v":2,"start_url":"u","region":"r","access_token":"a","expires_at":"2026-01-01T00:00:00Z"}"#).is_none());
        assert!(
            decode_sign_in(
                br#"{"v":1,"start_url":"u","region":"r","access_token":"a","expires_at":"soon"}"#
            )
            .is_none()
        );
    }
}
