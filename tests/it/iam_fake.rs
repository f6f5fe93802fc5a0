//! The IAM client's fault handling, against the scripted fake server (a mock: every test here
//! is named `fake_iam_*`). What matters for key rotation: `CreateAccessKey` is never repeated
//! once it may have run, the other calls are retried, and no secret reaches an error.

use std::time::Duration;

use credvend::iam::{IamClient, IamEndpoint, IamError};
use secrecy::ExposeSecret;

use crate::support::fake_sts::{FakeSts, Reply, error_xml, fast_retry, key};

const NEW_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzNEWSECRETX";

fn client(timeout: Duration) -> IamClient {
    IamClient::new(fast_retry(timeout)).unwrap()
}

fn endpoint(fake: &FakeSts) -> IamEndpoint {
    IamEndpoint::custom(fake.url().parse().unwrap(), "eu-west-1")
}

fn created_xml() -> String {
    format!(
        "<CreateAccessKeyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
         <CreateAccessKeyResult><AccessKey><UserName>bob</UserName>\
         <AccessKeyId>AKIANEWKEYEXAMPLE</AccessKeyId><Status>Active</Status>\
         <SecretAccessKey>{NEW_SECRET}</SecretAccessKey>\
         <CreateDate>2026-01-02T03:04:05Z</CreateDate></AccessKey></CreateAccessKeyResult>\
         </CreateAccessKeyResponse>"
    )
}

fn keys_page(ids: &[&str], marker: Option<&str>) -> String {
    let members: String = ids
        .iter()
        .map(|id| {
            format!("<member><AccessKeyId>{id}</AccessKeyId><Status>Active</Status></member>")
        })
        .collect();
    let tail = match marker {
        Some(m) => format!("<IsTruncated>true</IsTruncated><Marker>{m}</Marker>"),
        None => "<IsTruncated>false</IsTruncated>".to_owned(),
    };
    format!(
        "<ListAccessKeysResponse><ListAccessKeysResult><AccessKeyMetadata>{members}\
         </AccessKeyMetadata>{tail}</ListAccessKeysResult></ListAccessKeysResponse>"
    )
}

#[tokio::test]
async fn fake_iam_create_access_key_is_not_retried_after_a_5xx() {
    let fake = FakeSts::start(vec![
        Reply::Status(500, error_xml("ServiceFailure", "oops")),
        Reply::Status(200, created_xml()),
    ])
    .await;
    let err = client(Duration::from_secs(10))
        .create_access_key(&endpoint(&fake), key().signing_key(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IamError::CreateOutcomeUnknown { source } if matches!(**source, IamError::Service(_))),
        "{err:?}"
    );
    assert_eq!(err.code(), Some("ServiceFailure"));
    assert!(err.to_string().contains("may have created a key"), "{err}");
    assert_eq!(fake.seen().len(), 1, "CreateAccessKey was repeated");
    // Signed for IAM in the endpoint's region; the body as botocore sends it.
    let seen = &fake.seen()[0];
    assert!(
        seen.head.contains("/eu-west-1/iam/aws4_request"),
        "{}",
        seen.head
    );
    assert_eq!(seen.body, "Action=CreateAccessKey&Version=2010-05-08");
}

#[tokio::test]
async fn fake_iam_create_access_key_is_not_retried_after_a_timeout() {
    let fake = FakeSts::start(vec![Reply::Hang, Reply::Status(200, created_xml())]).await;
    let err = client(Duration::from_millis(300))
        .create_access_key(&endpoint(&fake), key().signing_key(), Some("bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IamError::CreateOutcomeUnknown { source } if matches!(**source, IamError::Timeout { .. })),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 1, "CreateAccessKey was repeated");
}

#[tokio::test]
async fn fake_iam_create_access_key_is_retried_when_throttled() {
    let fake = FakeSts::start(vec![
        Reply::Status(400, error_xml("Throttling", "Rate exceeded")),
        Reply::Status(200, created_xml()),
    ])
    .await;
    let new = client(Duration::from_secs(10))
        .create_access_key(&endpoint(&fake), key().signing_key(), None)
        .await
        .unwrap();
    assert_eq!(new.key.access_key_id, "AKIANEWKEYEXAMPLE");
    assert_eq!(new.key.secret_access_key.expose_secret(), NEW_SECRET);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn fake_iam_unreadable_created_key_is_outcome_unknown_without_the_secret() {
    let broken = created_xml().replace("</SecretAccessKey>", "</Secret&AccessKey>");
    let fake = FakeSts::start(vec![Reply::Status(200, broken)]).await;
    let err = client(Duration::from_secs(10))
        .create_access_key(&endpoint(&fake), key().signing_key(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IamError::CreateOutcomeUnknown { source } if matches!(**source, IamError::Malformed { .. })),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&NEW_SECRET[..12]), "{text}");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn fake_iam_list_access_keys_is_retried_and_follows_markers() {
    let fake = FakeSts::start(vec![
        Reply::Status(503, error_xml("ServiceUnavailable", "later")),
        Reply::Status(200, keys_page(&["AKIAONE"], Some("next page+"))),
        Reply::Status(200, keys_page(&["AKIATWO"], None)),
    ])
    .await;
    let keys = client(Duration::from_secs(10))
        .list_access_keys(&endpoint(&fake), key().signing_key(), Some("bob"))
        .await
        .unwrap();
    let ids: Vec<_> = keys.iter().map(|k| k.access_key_id.as_str()).collect();
    assert_eq!(ids, ["AKIAONE", "AKIATWO"]);
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[2].body,
        "Action=ListAccessKeys&Version=2010-05-08&UserName=bob&Marker=next+page%2B"
    );
}

#[tokio::test]
async fn fake_iam_delete_whose_first_attempt_may_have_run_accepts_no_such_entity() {
    let fake = FakeSts::start(vec![
        Reply::Status(500, error_xml("ServiceFailure", "oops")),
        Reply::Status(
            404,
            error_xml(
                "NoSuchEntity",
                "The Access Key with id AKIAOLD cannot be found.",
            ),
        ),
    ])
    .await;
    client(Duration::from_secs(10))
        .delete_access_key(&endpoint(&fake), key().signing_key(), None, "AKIAOLD")
        .await
        .unwrap();
    assert_eq!(fake.seen().len(), 2);

    // Without a failed attempt before it, NoSuchEntity is an error.
    fake.set_script(vec![Reply::Status(
        404,
        error_xml(
            "NoSuchEntity",
            "The Access Key with id AKIAOLD cannot be found.",
        ),
    )]);
    let err = client(Duration::from_secs(10))
        .delete_access_key(&endpoint(&fake), key().signing_key(), None, "AKIAOLD")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchEntity"));
}
