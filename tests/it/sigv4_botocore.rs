//! Differential property test: random STS requests signed by our signer and by botocore's
//! `SigV4Auth` (from the test venv) must carry identical Authorization headers.

use std::io::Write;
use std::process::{Command, Stdio};

use credvend::creds::SigningKey;
use credvend::sigv4;
use credvend::sts::{
    AssumeRole, GetFederationToken, GetSessionToken, MfaToken, StsEndpoint, StsRequest,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

fn python() -> String {
    std::env::var("CREDVEND_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

#[derive(Debug, Clone)]
struct Case {
    req: StsRequest,
    host: String,
    region: String,
    access_key_id: String,
    secret: String,
    token: Option<String>,
    time: i64,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9+=,.@_-]{2,64}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        "[ -~]{0,80}",
    ]
}

fn request() -> impl Strategy<Value = StsRequest> {
    let mfa = proptest::option::of(
        ("[a-z0-9:/-]{5,40}", "[0-9]{6}").prop_map(|(serial, code)| MfaToken {
            serial,
            code: SecretString::from(code),
        }),
    );
    prop_oneof![
        Just(StsRequest::GetCallerIdentity),
        (proptest::option::of(900u32..129_600), mfa.clone()).prop_map(|(duration_seconds, mfa)| {
            StsRequest::GetSessionToken(GetSessionToken {
                duration_seconds,
                mfa,
            })
        }),
        (
            text(),
            text(),
            proptest::option::of(900u32..43_200),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec((text(), text()), 0..3),
            mfa,
        )
            .prop_map(
                |(
                    role_arn,
                    role_session_name,
                    duration_seconds,
                    external_id,
                    policy,
                    policy_arns,
                    tags,
                    mfa,
                )| {
                    StsRequest::AssumeRole(AssumeRole {
                        role_arn,
                        role_session_name,
                        duration_seconds,
                        external_id,
                        policy,
                        policy_arns,
                        tags,
                        mfa,
                        ..AssumeRole::default()
                    })
                }
            ),
        (text(), proptest::option::of(text())).prop_map(|(name, policy)| {
            StsRequest::GetFederationToken(GetFederationToken {
                name,
                duration_seconds: Some(3600),
                policy,
                ..GetFederationToken::default()
            })
        }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        request(),
        prop_oneof![
            Just("sts.amazonaws.com".to_owned()),
            "sts\\.[a-z]{2}-[a-z]{4,9}-[1-3]\\.amazonaws\\.com",
            (1024u16..65535).prop_map(|p| format!("127.0.0.1:{p}")),
            (1024u16..65535).prop_map(|p| format!("[::1]:{p}")),
        ],
        "[a-z]{2}-[a-z]{4,9}-[1-3]",
        "AKIA[A-Z0-9]{16}",
        "[A-Za-z0-9/+]{40}",
        proptest::option::of("[A-Za-z0-9/+=]{20,300}"),
        0i64..4_000_000_000,
    )
        .prop_map(
            |(req, host, region, access_key_id, secret, token, time)| Case {
                req,
                host,
                region,
                access_key_id,
                secret,
                token,
                time,
            },
        )
}

#[tokio::test]
async fn random_sts_requests_sign_identically_to_botocore() {
    let mut runner = TestRunner::deterministic();
    let cases: Vec<Case> = (0..400)
        .map(|_| case().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut ours = Vec::new();
    let mut input = Vec::new();
    for c in &cases {
        let endpoint =
            StsEndpoint::custom(format!("http://{}/", c.host).parse().unwrap(), &c.region);
        let time = OffsetDateTime::from_unix_timestamp(c.time).unwrap();
        let body = c.req.form_body();
        let secret = SecretString::from(c.secret.clone());
        let token = c.token.clone().map(SecretString::from);
        let key = SigningKey {
            access_key_id: &c.access_key_id,
            secret_access_key: &secret,
            session_token: token.as_ref(),
        };
        let host = endpoint.host_header();
        let signed = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &[
                    (
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    ),
                    ("host", &host),
                ],
                payload: body.expose_secret().as_bytes(),
            },
            key,
            &sigv4::Scope {
                region: &c.region,
                service: "sts",
                time,
            },
        );
        ours.push(signed.authorization);
        input.push(serde_json::json!({
            "url": endpoint.url.as_str(),
            "body": body.expose_secret(),
            "region": c.region,
            "access_key_id": c.access_key_id,
            "secret": c.secret,
            "token": c.token,
            "time": sigv4::Scope { region: "", service: "", time }.amz_date(),
        }));
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/botocore_sign.py"
    );
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test venv's python (run scripts/test, which creates .venv)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "botocore signer failed");
    let theirs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), cases.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "case {i} differs: {:?}", cases[i].req.action());
    }
}
