//! The official AWS SigV4 test suite (tests/data/sigv4, see its NOTICE/SOURCE), run against our
//! signer: canonical request, string to sign and Authorization header must match byte for byte.

use std::path::{Path, PathBuf};

use credvend::creds::SigningKey;
use credvend::sigv4::{self, Request, Scope};
use secrecy::SecretString;
use time::macros::datetime;

const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sigv4");

struct ParsedReq {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Parses a suite `.req` file: request line, `Name:value` headers, blank line, body.
fn parse_req(text: &str) -> ParsedReq {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b.to_owned()),
        None => (text, String::new()),
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let (method, rest) = request_line.split_once(' ').unwrap();
    let target = rest.rsplit_once(" HTTP/").unwrap().0;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    ParsedReq {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body,
    }
}

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_str().unwrap();
            if path.join(format!("{name}.creq")).exists() {
                out.push(path.clone());
            }
            cases(&path, out);
        }
    }
}

fn secret() -> SecretString {
    SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
}

fn scope() -> Scope<'static> {
    Scope {
        region: "us-east-1",
        service: "service",
        time: datetime!(2015-08-30 12:36:00 UTC),
    }
}

#[test]
fn aws_sigv4_suite_cases_match() {
    let mut dirs = Vec::new();
    cases(Path::new(SUITE), &mut dirs);
    dirs.sort();
    let secret = secret();
    let key = SigningKey {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: &secret,
        session_token: None,
    };
    let mut ran = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_str().unwrap();
        let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap();
        let req = parse_req(&read("req"));
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let request = Request {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &headers,
            payload: req.body.as_bytes(),
        };
        let creq = sigv4::canonical_request(&request);
        assert_eq!(creq, read("creq"), "canonical request of {name}");
        assert_eq!(
            sigv4::string_to_sign(&creq, &scope()),
            read("sts"),
            "string to sign of {name}"
        );
        assert_eq!(
            sigv4::authorization(&request, key, &scope()),
            read("authz"),
            "authorization of {name}"
        );
        ran.push(name.to_owned());
    }
    for required in [
        "get-vanilla",
        "get-vanilla-query-order-key-case",
        "get-utf8",
        "get-space",
        "post-x-www-form-urlencoded",
        "post-x-www-form-urlencoded-parameters",
        "post-sts-header-before",
        "post-sts-header-after",
    ] {
        assert!(
            ran.iter().any(|r| r == required),
            "suite case {required} did not run; ran {ran:?}"
        );
    }
    assert!(
        ran.len() >= 18,
        "only {} suite cases ran: {ran:?}",
        ran.len()
    );
}

/// `get-vanilla-with-session-token` (aws-c-auth layout): the token is a signed header, and
/// [`sigv4::sign`] must produce exactly the suite's Authorization header.
#[test]
fn aws_sigv4_suite_session_token_case_matches_sign() {
    let dir = Path::new(SUITE).join("get-vanilla-with-session-token");
    let context: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("context.json")).unwrap()).unwrap();
    let creds = &context["credentials"];
    let secret = SecretString::from(creds["secret_access_key"].as_str().unwrap().to_owned());
    let token = SecretString::from(creds["token"].as_str().unwrap().to_owned());
    let key = SigningKey {
        access_key_id: creds["access_key_id"].as_str().unwrap(),
        secret_access_key: &secret,
        session_token: Some(&token),
    };
    let signed_text = std::fs::read_to_string(dir.join("header-signed-request.txt")).unwrap();
    let expected = signed_text
        .lines()
        .find_map(|l| l.strip_prefix("Authorization:"))
        .unwrap()
        .trim();
    let signed = sigv4::sign(
        &Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[("Host", "example.amazonaws.com")],
            payload: b"",
        },
        key,
        &scope(),
    );
    assert_eq!(signed.authorization, expected);
    assert_eq!(signed.amz_date, "20150830T123600Z");
}
