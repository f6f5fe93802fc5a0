//! The STS client against moto with SigV4 authentication switched on.

use credvend::sts::{
    AssumeRole, AssumeRoleWithWebIdentity, GetFederationToken, GetSessionToken, StsError,
    StsRequest,
};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::support::moto::{Moto, PrivateMoto};

fn assume(role_arn: &str, external_id: Option<&str>) -> StsRequest {
    StsRequest::AssumeRole(AssumeRole {
        role_arn: role_arn.into(),
        role_session_name: "credvend-test".into(),
        duration_seconds: Some(3600),
        external_id: external_id.map(Into::into),
        ..AssumeRole::default()
    })
}

#[tokio::test]
async fn assume_role_with_user_key_yields_assumed_role_identity() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let role = moto.role("r", &[&user.arn], None).await;
    let client = Moto::client();
    let creds = client
        .mint(
            &moto.endpoint(),
            &assume(&role, None),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap();
    assert!(creds.expiration > OffsetDateTime::now_utc());
    assert!(creds.session_token.is_some());
    let role_name = role.rsplit('/').next().unwrap();
    assert_eq!(creds.account_id.as_deref(), Some("123456789012"));
    // The temporary credentials sign with X-Amz-Security-Token, and moto checks the token.
    let id = client
        .caller_identity(&moto.endpoint(), creds.signing_key())
        .await
        .unwrap();
    assert!(
        id.arn.starts_with(&format!(
            "arn:aws:sts::123456789012:assumed-role/{role_name}/credvend-test"
        )),
        "{}",
        id.arn
    );
}

#[tokio::test]
async fn role_chaining_signs_with_session_token() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let role_a = moto.role("a", &[&user.arn], None).await;
    let client = Moto::client();
    let a = client
        .mint(
            &moto.endpoint(),
            &assume(&role_a, None),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap();
    let a_session = client
        .caller_identity(&moto.endpoint(), a.signing_key())
        .await
        .unwrap()
        .arn;
    let role_b = moto.role("b", &[&a_session, &role_a], Some("ext-42")).await;
    let b = client
        .mint(
            &moto.endpoint(),
            &assume(&role_b, Some("ext-42")),
            Some(a.signing_key()),
        )
        .await
        .unwrap();
    let id = client
        .caller_identity(&moto.endpoint(), b.signing_key())
        .await
        .unwrap();
    assert!(id.arn.contains(&format!(
        ":assumed-role/{}/",
        role_b.rsplit('/').next().unwrap()
    )));
}

#[tokio::test]
async fn wrong_secret_is_a_typed_signature_error_with_message_and_request_id() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let mut key = user.key.clone();
    key.secret_access_key = SecretString::from("definitely-not-the-secret".to_owned());
    let err = Moto::client()
        .caller_identity(&moto.endpoint(), key.signing_key())
        .await
        .unwrap_err();
    let StsError::Service(e) = &err else {
        panic!("not a service error: {err}")
    };
    assert_eq!(e.code, "SignatureDoesNotMatch");
    assert_eq!(e.status, 403);
    assert!(
        e.message.contains("signature we calculated does not match"),
        "{}",
        e.message
    );
    assert!(
        e.request_id.as_deref().is_some_and(|r| !r.is_empty()),
        "{e:?}"
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("definitely-not-the-secret"));
}

#[tokio::test]
async fn unknown_key_is_invalid_client_token_id() {
    let moto = Moto::shared();
    let key = credvend::creds::LongTermKey {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: SecretString::from("x".to_owned()),
    };
    let err = Moto::client()
        .caller_identity(&moto.endpoint(), key.signing_key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err}");
}

#[tokio::test]
async fn caller_outside_trust_policy_is_denied() {
    let moto = Moto::shared();
    let trusted = moto.user("trusted").await;
    let outsider = moto.user("outsider").await;
    let role = moto.role("r", &[&trusted.arn], None).await;
    let err = Moto::client()
        .mint(
            &moto.endpoint(),
            &assume(&role, None),
            Some(outsider.key.signing_key()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDenied"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn wrong_external_id_is_denied() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let role = moto.role("r", &[&user.arn], Some("right")).await;
    let client = Moto::client();
    let err = client
        .mint(
            &moto.endpoint(),
            &assume(&role, Some("wrong")),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDenied"), "{err}");
    client
        .mint(
            &moto.endpoint(),
            &assume(&role, Some("right")),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn session_and_federation_tokens_are_minted() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let client = Moto::client();
    let session = client
        .mint(
            &moto.endpoint(),
            &StsRequest::GetSessionToken(GetSessionToken {
                duration_seconds: Some(3600),
                mfa: None,
            }),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap();
    assert!(session.expiration > OffsetDateTime::now_utc());
    let fed = client
        .mint(
            &moto.endpoint(),
            &StsRequest::GetFederationToken(GetFederationToken {
                name: "fed-user".into(),
                duration_seconds: Some(3600),
                policy: Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#.into()),
                ..GetFederationToken::default()
            }),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap();
    assert!(
        fed.arn
            .as_deref()
            .is_some_and(|a| a.contains(":federated-user/fed-user")),
        "{:?}",
        fed.arn
    );
}

/// AssumeRoleWithWebIdentity is unsigned, as real STS expects. moto with authentication on
/// cannot take any unsigned request (it raises KeyError on the missing Authorization header and
/// answers 500), so this one test runs against a private moto with authentication off.
#[tokio::test]
async fn web_identity_is_unsigned_and_works() {
    let private = PrivateMoto::start(false);
    let moto = &private.moto;
    let role = moto.web_identity_role("wi").await;
    let client = Moto::client();
    let creds = client
        .mint(
            &moto.endpoint(),
            &StsRequest::AssumeRoleWithWebIdentity(AssumeRoleWithWebIdentity {
                role_arn: role.clone(),
                role_session_name: "wi-session".into(),
                web_identity_token: SecretString::from("eyJhbGciOiJub25lIn0.e30.".to_owned()),
                duration_seconds: Some(3600),
                policy: None,
                policy_arns: vec![],
            }),
            None,
        )
        .await
        .unwrap();
    let id = client
        .caller_identity(&moto.endpoint(), creds.signing_key())
        .await
        .unwrap();
    assert!(id.arn.contains(":assumed-role/"), "{}", id.arn);
    assert_eq!(creds.account_id.as_deref(), Some("123456789012"));
}

/// A session policy as a user writes it in a `credvend_policy` file: pretty-printed with tabs,
/// spaces, newlines, a trailing newline, and characters the form encoding must escape.
const PRETTY_POLICY: &str = "{\n\t\"Version\": \"2012-10-17\",\n\t\"Statement\": [\n\t\t{\n\
    \t\t\t\"Sid\": \"ReadTheBucket\",\n\t\t\t\"Effect\": \"Allow\",\n\
    \t\t\t\"Action\": [\"s3:Get*\", \"s3:List*\"],\n\
    \t\t\t\"Resource\": \"arn:aws:s3:::bucket+a&b=c%d~e/*\"\n\t\t},\n\
    \x20   {\"Effect\": \"Allow\", \"Action\": \"sts:GetCallerIdentity\", \"Resource\": \"*\"}\n\t]\n}\n";

/// moto checks the signature over its own (botocore's) re-encoding of the parsed form, so a
/// body encoded any other way (`%20` for a space) fails with SignatureDoesNotMatch.
#[tokio::test]
async fn assume_role_with_pretty_printed_policy_and_session_tags_is_accepted() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let role = moto.role("r", &[&user.arn], None).await;
    let client = Moto::client();
    let req = StsRequest::AssumeRole(AssumeRole {
        role_arn: role.clone(),
        role_session_name: "pretty-policy".into(),
        duration_seconds: Some(900),
        policy: Some(PRETTY_POLICY.into()),
        policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
        tags: vec![
            ("team".into(), "data platform".into()),
            ("cost-center".into(), "a+b=c".into()),
        ],
        transitive_tag_keys: vec!["team".into()],
        source_identity: Some("alice@example.com".into()),
        ..AssumeRole::default()
    });
    let creds = client
        .mint(&moto.endpoint(), &req, Some(user.key.signing_key()))
        .await
        .unwrap();
    let id = client
        .caller_identity(&moto.endpoint(), creds.signing_key())
        .await
        .unwrap();
    assert!(
        id.arn.ends_with(&format!(
            ":assumed-role/{}/pretty-policy",
            role.rsplit('/').next().unwrap()
        )),
        "{}",
        id.arn
    );
}

/// GetFederationToken with the same policy and session tags. moto does not accept the
/// credentials its own GetFederationToken mints, so only the call itself is checked.
#[tokio::test]
async fn federation_token_with_pretty_printed_policy_and_tags_is_accepted() {
    let moto = Moto::shared();
    let user = moto.user("u").await;
    let fed = Moto::client()
        .mint(
            &moto.endpoint(),
            &StsRequest::GetFederationToken(GetFederationToken {
                name: "fed-pretty".into(),
                duration_seconds: Some(900),
                policy: Some(PRETTY_POLICY.into()),
                policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
                tags: vec![("project".into(), "blue sky".into())],
            }),
            Some(user.key.signing_key()),
        )
        .await
        .unwrap();
    assert!(
        fed.arn
            .as_deref()
            .is_some_and(|a| a.ends_with(":federated-user/fed-pretty")),
        "{:?}",
        fed.arn
    );
    assert!(fed.session_token.is_some());
}
