//! AWS Signature Version 4 (header form), written from the published specification with `hmac` +
//! `sha2`. Pure: no clock, no IO. The caller passes the time and receives the header values to send.
//!
//! Rules implemented (AWS General Reference, "Create a canonical request"):
//! - canonical URI: path normalised (dot segments removed, repeated `/` collapsed), then every
//!   segment URI-encoded; the path handed in is the one sent on the wire, so an already
//!   percent-encoded path is encoded a second time, as every non-S3 service expects;
//! - canonical query: pairs URI-encoded, sorted by key then value;
//! - canonical headers: lower-case names, values trimmed with inner whitespace runs collapsed,
//!   repeated headers joined with `,`, sorted by name;
//! - payload hash: hex SHA-256 of the body.
//!
//! Also the encoding of query-protocol form bodies ([`form_encode`]), whose exact bytes the
//! payload hash covers and which some servers re-create before checking the signature.

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::creds::SigningKey;

/// The signing algorithm name.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// One HTTP request as it will be sent.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path as sent on the wire (without the query), e.g. `/`.
    pub path: &'a str,
    /// Raw query string without the leading `?` (may be empty).
    pub query: &'a str,
    /// Headers to sign, including `host`. Names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The request body.
    pub payload: &'a [u8],
}

/// The credential scope: which region and service the signature is valid for, and when.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// Signing region, e.g. `us-east-1`.
    pub region: &'a str,
    /// Signing service name, e.g. `sts`.
    pub service: &'a str,
    /// Signing time (UTC is used).
    pub time: OffsetDateTime,
}

/// Header values produced by [`sign`]. The session token, when the key has one, must be sent as
/// `X-Amz-Security-Token` as well; it is part of the signature.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Value for `X-Amz-Date`.
    pub amz_date: String,
    /// Value for `Authorization`.
    pub authorization: String,
}

impl Scope<'_> {
    /// `YYYYMMDDTHHMMSSZ`.
    pub fn amz_date(&self) -> String {
        self.time
            .to_offset(time::UtcOffset::UTC)
            .format(format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .expect("UTC timestamps always format")
    }

    fn date(&self) -> String {
        self.amz_date()[..8].to_owned()
    }

    /// `YYYYMMDD/region/service/aws4_request`.
    pub fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region,
            self.service
        )
    }
}

/// Signs `req`, adding `x-amz-date` (and `x-amz-security-token` when the key carries a session
/// token) to the signed headers. `req.headers` must not already contain either.
pub fn sign(req: &Request<'_>, key: SigningKey<'_>, scope: &Scope<'_>) -> Signed {
    let amz_date = scope.amz_date();
    let mut headers: Vec<(&str, &str)> = req.headers.to_vec();
    headers.push(("x-amz-date", &amz_date));
    if let Some(token) = key.session_token {
        headers.push(("x-amz-security-token", token.expose_secret()));
    }
    let full = Request {
        headers: &headers,
        ..*req
    };
    let authorization = authorization(&full, key, scope);
    Signed {
        amz_date,
        authorization,
    }
}

/// The `Authorization` header value for a request whose headers are already complete (date and
/// token included). This is the form the AWS test suite exercises.
pub fn authorization(req: &Request<'_>, key: SigningKey<'_>, scope: &Scope<'_>) -> String {
    let (creq, signed_headers) = canonical_request_parts(req);
    let sts = string_to_sign(&creq, scope);
    let signature = signature(key, scope, &sts);
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        key.access_key_id,
        scope.credential_scope()
    )
}

/// The canonical request, as in the AWS test suite's `.creq` files.
pub fn canonical_request(req: &Request<'_>) -> String {
    canonical_request_parts(req).0
}

fn canonical_request_parts(req: &Request<'_>) -> (String, String) {
    let (canonical_headers, signed_headers) = canonical_headers(req.headers);
    let creq = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(req.payload)),
    );
    (creq, signed_headers)
}

/// The string to sign, as in the AWS test suite's `.sts` files.
pub fn string_to_sign(canonical_request: &str, scope: &Scope<'_>) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.amz_date(),
        scope.credential_scope(),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Hex signature of `string_to_sign` with the key derived for `scope`.
pub fn signature(key: SigningKey<'_>, scope: &Scope<'_>, string_to_sign: &str) -> String {
    let secret = format!("AWS4{}", key.secret_access_key.expose_secret());
    let k_date = hmac(secret.as_bytes(), scope.date().as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// URI-encodes every byte except the unreserved characters `A-Z a-z 0-9 - _ . ~`.
pub fn uri_encode(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

/// Encodes `pairs` as an `application/x-www-form-urlencoded` query-protocol body, byte for byte
/// as botocore does: its `AWSRequest` turns the serializer's parameter dict into the body with
/// Python's `urllib.parse.urlencode(..., doseq=True)` (`botocore/awsrequest.py`, `_prepare_body`),
/// i.e. `quote_plus` on the UTF-8 bytes of every key and value: `A-Z a-z 0-9 - _ . ~` stay, a
/// space becomes `+`, every other byte becomes `%XX` (upper-case hex).
///
/// The bytes matter beyond taste: STS-compatible servers that re-encode the parsed form before
/// checking the signature (moto does, with botocore's encoder) only accept this exact form.
/// SigV4 canonicalisation does not use this function (it needs [`uri_encode`], `%20` for space).
pub fn form_encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode_component(k.as_ref(), &mut out);
        out.push('=');
        form_encode_component(v.as_ref(), &mut out);
    }
    out
}

/// One key or value of [`form_encode`]: Python's `quote_plus` with no extra safe characters.
fn form_encode_component(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b == b' ' {
            out.push('+');
        } else if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing =
        path.len() > 1 && (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/.."));
    let mut out = String::with_capacity(path.len() + 8);
    for seg in &segments {
        out.push('/');
        uri_encode(seg, &mut out);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let mut ek = String::new();
            uri_encode(&String::from_utf8_lossy(&percent_decode(k)), &mut ek);
            let mut ev = String::new();
            uri_encode(&String::from_utf8_lossy(&percent_decode(v)), &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::new();
    for (n, v) in &merged {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    let signed = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (canonical, signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use time::macros::datetime;

    #[test]
    fn uri_path_is_normalised_and_encoded() {
        for (raw, want) in [
            ("/", "/"),
            ("", "/"),
            ("//example//", "/example/"),
            ("/example/..", "/"),
            ("/example/../foo/", "/foo/"),
            ("/./", "/"),
            ("/example space/", "/example%20space/"),
            ("/a%20b", "/a%2520b"),
            ("/\u{1234}", "/%E1%88%B4"),
        ] {
            assert_eq!(canonical_uri(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn query_pairs_sorted_and_reencoded() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("Param1"), "Param1=");
        assert_eq!(canonical_query("x=a%20b"), "x=a%20b");
        assert_eq!(canonical_query("x=a b"), "x=a%20b");
        assert_eq!(canonical_query("%zz=1"), "%25zz=1");
    }

    #[test]
    fn headers_trimmed_merged_sorted() {
        let (c, s) = canonical_headers(&[
            ("My-Header1", "  a   b   c  "),
            ("Host", "example.amazonaws.com"),
            ("my-header1", "d"),
        ]);
        assert_eq!(c, "host:example.amazonaws.com\nmy-header1:a b c,d\n");
        assert_eq!(s, "host;my-header1");
    }

    #[test]
    fn sign_adds_token_to_signed_headers() {
        let secret = SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let token = SecretString::from("session-token");
        let key = SigningKey {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: &secret,
            session_token: Some(&token),
        };
        let scope = Scope {
            region: "us-east-1",
            service: "sts",
            time: datetime!(2015-08-30 12:36:00 UTC),
        };
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("host", "sts.amazonaws.com")],
            payload: b"Action=GetCallerIdentity&Version=2011-06-15",
        };
        let signed = sign(&req, key, &scope);
        assert_eq!(signed.amz_date, "20150830T123600Z");
        assert!(
            signed
                .authorization
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"),
            "{}",
            signed.authorization
        );
        assert!(!signed.authorization.contains("session-token"));
    }

    #[test]
    fn form_encoding_is_pythons_quote_plus() {
        let body = form_encode(&[
            ("Action", "AssumeRole"),
            ("Policy", "{\"a\": [1]}\n\t"),
            ("RoleSessionName", "a+b=c@d%e&f*g~h"),
            ("Tags.member.1.Value", "\u{e9}\u{1F600} "),
            ("Empty", ""),
        ]);
        assert_eq!(
            body,
            "Action=AssumeRole&Policy=%7B%22a%22%3A+%5B1%5D%7D%0A%09\
             &RoleSessionName=a%2Bb%3Dc%40d%25e%26f%2Ag~h\
             &Tags.member.1.Value=%C3%A9%F0%9F%98%80+&Empty="
        );
    }

    #[test]
    fn uri_encoding_keeps_percent_twenty_for_canonicalisation() {
        let mut out = String::new();
        uri_encode("a b+c", &mut out);
        assert_eq!(out, "a%20b%2Bc");
    }
}
