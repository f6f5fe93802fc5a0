//! The versioned JSON kept in each keyring entry. Pure: no IO.
//!
//! A long-term key is `{"v":1,"access_key_id":"…","secret_access_key":"…"}`; a cached session adds
//! `session_token`, `expiration` (RFC 3339), `account_id` and `arn`. A key-rotation record is
//! `{"v":1,"rotation":{"user_name":"…","old_access_key_id":"…","started":"RFC 3339",
//! "existing_key_ids":["…"]}}`, plus `new_access_key_id` / `new_secret_access_key` once IAM made
//! the new key (the `rotation` object keeps it from ever decoding as a key or a session, and the
//! other way round). Encoded payloads live in
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
}
