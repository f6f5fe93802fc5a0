//! Differential test of the query-protocol request bodies: generated STS and IAM requests
//! serialized by us and by a real botocore client (`support/botocore_query.py`, from the test
//! venv) must be the same bytes: parameter names and order, list numbering, `+` for space,
//! which characters stay unescaped, UTF-8 percent-encoding, control characters. For IAM the
//! endpoint URL and signing region are compared too (every partition, and custom endpoints).
//!
//! Servers that check the signature over their own re-encoding of the parsed form (moto does,
//! with botocore's encoder) accept only these bytes; `sts_moto.rs` and `iam_moto.rs` show it.

use std::io::Write;
use std::process::{Command, Stdio};

use credvend::iam::{AccessKeyStatus, IamEndpoint, IamRequest};
use credvend::sts::{
    AssumeRole, AssumeRoleWithWebIdentity, GetFederationToken, GetSessionToken, MfaToken,
    StsRequest,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

fn python() -> String {
    std::env::var("CREDVEND_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

/// Strings that stress the encoder: every special character the brief names, control
/// characters, non-ASCII (2-, 3- and 4-byte UTF-8), and arbitrary strings.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9+=,.@_-]{2,64}",
        "[ \t\n\r+&=%~*/:;,.!?'\"(){}<>#@\\\\\\[\\]^`|$a-z0-9\u{0}-\u{1f}\u{7f}éß€😀\u{a0}\u{2028}]{1,60}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        "[ -~]{0,80}",
    ]
}

/// A JSON policy as people write it in a `credvend_policy` file: pretty-printed with spaces or
/// tabs, newlines, a trailing newline, and values holding special characters.
fn policy() -> impl Strategy<Value = String> {
    let pretty = (
        proptest::collection::vec(("[a-zA-Z:*]{1,12}", text()), 1..4),
        prop_oneof![Just("  "), Just("    "), Just("\t")],
        any::<bool>(),
    )
        .prop_map(|(statements, indent, trailing)| {
            let doc = json!({
                "Version": "2012-10-17",
                "Statement": statements.iter().map(|(action, resource)| json!({
                    "Effect": "Allow",
                    "Action": format!("s3:{action}"),
                    "Resource": resource,
                })).collect::<Vec<_>>(),
            });
            let mut out = serde_json::to_string_pretty(&doc)
                .unwrap()
                .replace("  ", indent);
            if trailing {
                out.push('\n');
            }
            out
        });
    prop_oneof![pretty, text()]
}

fn tags() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..4)
}

fn arns() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof!["arn:aws:iam::aws:policy/[A-Za-z0-9+=,.@_-]{1,30}", text()],
        0..3,
    )
}

fn mfa() -> impl Strategy<Value = Option<MfaToken>> {
    proptest::option::of((text(), "[0-9]{6}").prop_map(|(serial, code)| MfaToken {
        serial,
        code: SecretString::from(code),
    }))
}

fn sts_request() -> impl Strategy<Value = StsRequest> {
    let assume_role = (
        (text(), text(), proptest::option::of(900u32..43_200)),
        (proptest::option::of(text()), proptest::option::of(policy())),
        (arns(), tags(), proptest::collection::vec(text(), 0..3)),
        (mfa(), proptest::option::of(text())),
    )
        .prop_map(
            |(
                (role_arn, role_session_name, duration_seconds),
                (external_id, policy),
                (policy_arns, tags, transitive_tag_keys),
                (mfa, source_identity),
            )| {
                StsRequest::AssumeRole(AssumeRole {
                    role_arn,
                    role_session_name,
                    duration_seconds,
                    external_id,
                    policy,
                    policy_arns,
                    tags,
                    transitive_tag_keys,
                    mfa,
                    source_identity,
                })
            },
        );
    let federation = (
        text(),
        proptest::option::of(900u32..129_600),
        proptest::option::of(policy()),
        arns(),
        tags(),
    )
        .prop_map(|(name, duration_seconds, policy, policy_arns, tags)| {
            StsRequest::GetFederationToken(GetFederationToken {
                name,
                duration_seconds,
                policy,
                policy_arns,
                tags,
            })
        });
    let session =
        (proptest::option::of(900u32..129_600), mfa()).prop_map(|(duration_seconds, mfa)| {
            StsRequest::GetSessionToken(GetSessionToken {
                duration_seconds,
                mfa,
            })
        });
    let web_identity = (
        (text(), text(), "[A-Za-z0-9._-]{4,300}"),
        (
            proptest::option::of(900u32..43_200),
            proptest::option::of(policy()),
            arns(),
        ),
    )
        .prop_map(
            |((role_arn, role_session_name, token), (duration_seconds, policy, policy_arns))| {
                StsRequest::AssumeRoleWithWebIdentity(AssumeRoleWithWebIdentity {
                    role_arn,
                    role_session_name,
                    web_identity_token: SecretString::from(token),
                    duration_seconds,
                    policy,
                    policy_arns,
                })
            },
        );
    prop_oneof![
        4 => assume_role,
        3 => federation,
        1 => session,
        2 => web_identity,
        1 => Just(StsRequest::GetCallerIdentity),
    ]
}

fn iam_request() -> impl Strategy<Value = IamRequest> {
    let user = || proptest::option::of(text());
    let status = prop_oneof![
        Just(AccessKeyStatus::Active),
        Just(AccessKeyStatus::Inactive)
    ];
    prop_oneof![
        user().prop_map(|user_name| IamRequest::GetUser { user_name }),
        (user(), proptest::option::of(text()))
            .prop_map(|(user_name, marker)| IamRequest::ListAccessKeys { user_name, marker }),
        user().prop_map(|user_name| IamRequest::CreateAccessKey { user_name }),
        (user(), "AKIA[A-Z0-9]{16}", status).prop_map(|(user_name, access_key_id, status)| {
            IamRequest::UpdateAccessKey {
                user_name,
                access_key_id,
                status,
            }
        }),
        (user(), "AKIA[A-Z0-9]{16}").prop_map(|(user_name, access_key_id)| {
            IamRequest::DeleteAccessKey {
                user_name,
                access_key_id,
            }
        }),
    ]
}

/// Where an IAM request goes: a region of every partition, pseudo-regions, unknown regions,
/// or a custom endpoint.
fn iam_region() -> impl Strategy<Value = (String, Option<String>)> {
    let region = prop_oneof![
        Just("us-east-1".to_owned()),
        Just("eu-west-1".to_owned()),
        Just("aws-global".to_owned()),
        Just("cn-north-1".to_owned()),
        Just("cn-northwest-1".to_owned()),
        Just("aws-cn-global".to_owned()),
        Just("us-gov-east-1".to_owned()),
        Just("aws-us-gov-global".to_owned()),
        Just("us-iso-west-1".to_owned()),
        Just("us-isob-east-1".to_owned()),
        Just("eu-isoe-west-1".to_owned()),
        Just("us-isof-east-1".to_owned()),
        Just("eusc-de-east-1".to_owned()),
        Just("local".to_owned()),
        Just("cn-x".to_owned()),
        "[a-z]{2,4}-[a-z]{4,9}-[1-9]",
    ];
    (
        region,
        proptest::option::of(prop_oneof![
            (1024u16..65535).prop_map(|p| format!("http://127.0.0.1:{p}/")),
            Just("https://iam.example.com/".to_owned()),
        ]),
    )
}

/// The parameters botocore takes for `req`, by the STS model's member names.
fn sts_params(req: &StsRequest) -> Value {
    let mut p = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        p.insert(k.to_owned(), v);
    };
    let tags = |t: &[(String, String)]| {
        Value::from(
            t.iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect::<Vec<_>>(),
        )
    };
    let arns = |a: &[String]| Value::from(a.iter().map(|a| json!({"arn": a})).collect::<Vec<_>>());
    match req {
        StsRequest::AssumeRole(r) => {
            put("RoleArn", r.role_arn.clone().into());
            put("RoleSessionName", r.role_session_name.clone().into());
            if let Some(d) = r.duration_seconds {
                put("DurationSeconds", d.into());
            }
            if let Some(e) = &r.external_id {
                put("ExternalId", e.clone().into());
            }
            if let Some(x) = &r.policy {
                put("Policy", x.clone().into());
            }
            if !r.policy_arns.is_empty() {
                put("PolicyArns", arns(&r.policy_arns));
            }
            if !r.tags.is_empty() {
                put("Tags", tags(&r.tags));
            }
            if !r.transitive_tag_keys.is_empty() {
                put("TransitiveTagKeys", r.transitive_tag_keys.clone().into());
            }
            if let Some(m) = &r.mfa {
                put("SerialNumber", m.serial.clone().into());
                put("TokenCode", m.code.expose_secret().into());
            }
            if let Some(s) = &r.source_identity {
                put("SourceIdentity", s.clone().into());
            }
        }
        StsRequest::GetFederationToken(r) => {
            put("Name", r.name.clone().into());
            if let Some(d) = r.duration_seconds {
                put("DurationSeconds", d.into());
            }
            if let Some(x) = &r.policy {
                put("Policy", x.clone().into());
            }
            if !r.policy_arns.is_empty() {
                put("PolicyArns", arns(&r.policy_arns));
            }
            if !r.tags.is_empty() {
                put("Tags", tags(&r.tags));
            }
        }
        StsRequest::GetSessionToken(r) => {
            if let Some(d) = r.duration_seconds {
                put("DurationSeconds", d.into());
            }
            if let Some(m) = &r.mfa {
                put("SerialNumber", m.serial.clone().into());
                put("TokenCode", m.code.expose_secret().into());
            }
        }
        StsRequest::AssumeRoleWithWebIdentity(r) => {
            put("RoleArn", r.role_arn.clone().into());
            put("RoleSessionName", r.role_session_name.clone().into());
            put(
                "WebIdentityToken",
                r.web_identity_token.expose_secret().into(),
            );
            if let Some(d) = r.duration_seconds {
                put("DurationSeconds", d.into());
            }
            if let Some(x) = &r.policy {
                put("Policy", x.clone().into());
            }
            if !r.policy_arns.is_empty() {
                put("PolicyArns", arns(&r.policy_arns));
            }
        }
        StsRequest::GetCallerIdentity => {}
    }
    Value::Object(p)
}

/// The parameters botocore takes for `req`, by the IAM model's member names.
fn iam_params(req: &IamRequest) -> Value {
    let mut p = serde_json::Map::new();
    let user = |p: &mut serde_json::Map<String, Value>, u: &Option<String>| {
        if let Some(u) = u {
            p.insert("UserName".into(), u.clone().into());
        }
    };
    match req {
        IamRequest::GetUser { user_name } | IamRequest::CreateAccessKey { user_name } => {
            user(&mut p, user_name)
        }
        IamRequest::ListAccessKeys { user_name, marker } => {
            user(&mut p, user_name);
            if let Some(m) = marker {
                p.insert("Marker".into(), m.clone().into());
            }
        }
        IamRequest::UpdateAccessKey {
            user_name,
            access_key_id,
            status,
        } => {
            user(&mut p, user_name);
            p.insert("AccessKeyId".into(), access_key_id.clone().into());
            p.insert("Status".into(), status.as_str().into());
        }
        IamRequest::DeleteAccessKey {
            user_name,
            access_key_id,
        } => {
            user(&mut p, user_name);
            p.insert("AccessKeyId".into(), access_key_id.clone().into());
        }
    }
    Value::Object(p)
}

/// What botocore sends for each case.
fn botocore(cases: &[Value]) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/botocore_query.py"
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
        .write_all(serde_json::to_string(cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the botocore serializer failed");
    let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), cases.len());
    theirs
}

#[test]
fn generated_sts_requests_encode_byte_for_byte_as_botocore() {
    let mut runner = TestRunner::deterministic();
    let reqs: Vec<StsRequest> = (0..600)
        .map(|_| sts_request().new_tree(&mut runner).unwrap().current())
        .collect();
    let cases: Vec<Value> = reqs
        .iter()
        .map(|r| {
            json!({
                "service": "sts",
                "operation": r.action(),
                "params": sts_params(r),
                "region": "us-east-1",
                "endpoint_url": "http://127.0.0.1:5000/",
            })
        })
        .collect();
    let theirs = botocore(&cases);
    let mut seen = std::collections::BTreeSet::new();
    for (i, (req, theirs)) in reqs.iter().zip(&theirs).enumerate() {
        seen.insert(req.action());
        let ours = req.form_body();
        assert_eq!(
            ours.expose_secret(),
            theirs["body"].as_str().unwrap(),
            "case {i} ({}) differs",
            req.action()
        );
    }
    assert_eq!(seen.len(), 5, "every action was generated: {seen:?}");
    // The generated values did hold what the encoding must get right: space, newline, tab,
    // `+ & = % ~ *`, 2- and 4-byte UTF-8, and every list parameter.
    let all: String = theirs.iter().map(|t| t["body"].as_str().unwrap()).collect();
    for needle in [
        "+",
        "%0A",
        "%09",
        "%2B",
        "%26",
        "%3D",
        "%25",
        "~",
        "%2A",
        "%C3%A9",
        "%F0%9F%98%80",
        "Tags.member.3.Value=",
        "TransitiveTagKeys.member.2=",
        "PolicyArns.member.2.arn=",
        "SourceIdentity=",
        "ExternalId=",
        "TokenCode=",
    ] {
        assert!(
            all.contains(needle),
            "no generated body contains {needle:?}"
        );
    }
}

#[test]
fn generated_iam_requests_encode_and_resolve_as_botocore() {
    let mut runner = TestRunner::deterministic();
    let reqs: Vec<(IamRequest, (String, Option<String>))> = (0..400)
        .map(|_| {
            (iam_request(), iam_region())
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect();
    let cases: Vec<Value> = reqs
        .iter()
        .map(|(r, (region, endpoint_url))| {
            json!({
                "service": "iam",
                "operation": r.action(),
                "params": iam_params(r),
                "region": region,
                "endpoint_url": endpoint_url,
            })
        })
        .collect();
    let theirs = botocore(&cases);
    for (i, ((req, (region, endpoint_url)), theirs)) in reqs.iter().zip(&theirs).enumerate() {
        assert_eq!(
            req.form_body(),
            theirs["body"].as_str().unwrap(),
            "case {i} ({}) differs",
            req.action()
        );
        let endpoint = match endpoint_url {
            Some(url) => IamEndpoint::custom(url.parse().unwrap(), region),
            None => IamEndpoint::aws(region).unwrap(),
        };
        assert_eq!(
            endpoint.url.as_str(),
            theirs["url"].as_str().unwrap(),
            "case {i}: endpoint of {region} / {endpoint_url:?}"
        );
        assert_eq!(
            endpoint.signing_region,
            theirs["signing_region"].as_str().unwrap(),
            "case {i}: signing region of {region} / {endpoint_url:?}"
        );
    }
}
