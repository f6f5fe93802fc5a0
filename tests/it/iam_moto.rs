//! The IAM access-key client against moto with SigV4 authentication switched on: the calls a
//! key rotation makes, signed with the user's own key, checked against moto's state (its model
//! dump `/moto-api/data.json` for what was created and each key's status, the admin's
//! `ListAccessKeys` for what exists now) and against STS accepting or refusing the keys.

use credvend::creds::LongTermKey;
use credvend::iam::{AccessKeyStatus, IamClient, IamEndpoint, IamError};
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::support::moto::{Moto, secret_of};

fn endpoint(moto: &Moto) -> IamEndpoint {
    IamEndpoint::custom(moto.url.parse().unwrap(), "us-east-1")
}

fn client() -> IamClient {
    IamClient::from_sts(&Moto::client())
}

fn assert_no_secret(err: &IamError, keys: &[&LongTermKey]) {
    let text = format!("{err} {err:?}");
    for k in keys {
        assert!(!text.contains(&secret_of(k)), "a secret leaked: {text}");
    }
}

#[tokio::test]
async fn rotation_calls_create_verify_and_delete_keys() {
    let moto = Moto::shared();
    let user = moto.key_rotating_user("rot").await;
    let iam = client();
    let ep = endpoint(&moto);
    let old = &user.key;

    let me = iam.get_user(&ep, old.signing_key(), None).await.unwrap();
    assert_eq!(me.user_name, user.name);
    assert_eq!(me.arn, user.arn);
    assert!(!me.user_id.is_empty());

    let keys = iam
        .list_access_keys(&ep, old.signing_key(), None)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].access_key_id, old.access_key_id);
    assert_eq!(keys[0].status, AccessKeyStatus::Active);
    assert_eq!(keys[0].user_name.as_deref(), Some(user.name.as_str()));
    let age = OffsetDateTime::now_utc() - keys[0].create_date.expect("CreateDate");
    assert!(age.whole_hours().abs() < 24, "created {age} ago");

    let new = iam
        .create_access_key(&ep, old.signing_key(), None)
        .await
        .unwrap();
    assert_eq!(new.user_name, user.name);
    assert_ne!(new.key.access_key_id, old.access_key_id);
    assert!(new.key.secret_access_key.expose_secret().len() >= 20);
    assert!(new.create_date.is_some());
    assert!(
        !format!("{new:?}").contains(new.key.secret_access_key.expose_secret()),
        "Debug shows the new secret"
    );
    let mut want = vec![
        (old.access_key_id.clone(), "Active".to_owned()),
        (new.key.access_key_id.clone(), "Active".to_owned()),
    ];
    want.sort();
    assert_eq!(moto.created_access_keys(&user.name).await, want);
    assert_eq!(moto.admin_access_keys(&user.name).await, want);

    // The new key works (moto checks the signature against the secret we received).
    let id = Moto::client()
        .caller_identity(&moto.endpoint(), new.key.signing_key())
        .await
        .unwrap();
    assert_eq!(id.arn, user.arn);

    let listed = iam
        .list_access_keys(&ep, new.key.signing_key(), Some(&user.name))
        .await
        .unwrap();
    let mut ids: Vec<_> = listed.iter().map(|k| k.access_key_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, want.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());

    // Delete the old key with the new one; the old key is then unknown to moto.
    iam.delete_access_key(&ep, new.key.signing_key(), None, &old.access_key_id)
        .await
        .unwrap();
    assert_eq!(
        moto.admin_access_keys(&user.name).await,
        vec![(new.key.access_key_id.clone(), "Active".to_owned())]
    );
    let err = Moto::client()
        .caller_identity(&moto.endpoint(), old.signing_key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err}");
    let err = iam
        .get_user(&ep, old.signing_key(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err}");
    assert!(
        err.to_string().contains("does not know this access key id"),
        "{err}"
    );
    assert_no_secret(&err, &[old, &new.key]);

    // Deleting it again: no such key, and the message says so.
    let err = iam
        .delete_access_key(&ep, new.key.signing_key(), None, &old.access_key_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchEntity"), "{err}");
    assert!(err.to_string().contains("no such access key"), "{err}");
}

#[tokio::test]
async fn a_third_key_is_limit_exceeded_with_the_fix_named() {
    let moto = Moto::shared();
    let user = moto.key_rotating_user("lim").await;
    let iam = client();
    let ep = endpoint(&moto);
    let second = iam
        .create_access_key(&ep, user.key.signing_key(), Some(&user.name))
        .await
        .unwrap();
    let err = iam
        .create_access_key(&ep, user.key.signing_key(), Some(&user.name))
        .await
        .unwrap_err();
    let IamError::Service(e) = &err else {
        panic!("not a service error: {err}")
    };
    assert_eq!(e.code, "LimitExceeded");
    assert_eq!(e.action, "CreateAccessKey");
    let text = err.to_string();
    assert!(
        text.contains("already has two access keys") && text.contains("delete one"),
        "{text}"
    );
    assert!(!err.is_retryable());
    assert_no_secret(&err, &[&user.key, &second.key]);
    assert_eq!(moto.created_access_keys(&user.name).await.len(), 2);
    assert_eq!(moto.admin_access_keys(&user.name).await.len(), 2);
}

#[tokio::test]
async fn a_key_can_be_deactivated() {
    let moto = Moto::shared();
    let user = moto.key_rotating_user("inact").await;
    let iam = client();
    let ep = endpoint(&moto);
    let second = iam
        .create_access_key(&ep, user.key.signing_key(), None)
        .await
        .unwrap();
    iam.update_access_key(
        &ep,
        second.key.signing_key(),
        None,
        &user.key.access_key_id,
        AccessKeyStatus::Inactive,
    )
    .await
    .unwrap();
    let mut want = vec![
        (user.key.access_key_id.clone(), "Inactive".to_owned()),
        (second.key.access_key_id.clone(), "Active".to_owned()),
    ];
    want.sort();
    assert_eq!(moto.created_access_keys(&user.name).await, want);
    assert_eq!(moto.admin_access_keys(&user.name).await, want);
    let listed = iam
        .list_access_keys(&ep, second.key.signing_key(), None)
        .await
        .unwrap();
    let old = listed
        .iter()
        .find(|k| k.access_key_id == user.key.access_key_id)
        .unwrap();
    assert_eq!(old.status, AccessKeyStatus::Inactive);
}

#[tokio::test]
async fn a_user_without_iam_permissions_is_told_which_policy_to_add() {
    let moto = Moto::shared();
    let user = moto.user("noiam").await;
    let err = client()
        .list_access_keys(&endpoint(&moto), user.key.signing_key(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDenied"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("iam:ListAccessKeys") && text.contains("iam:CreateAccessKey"),
        "{text}"
    );
    assert_eq!(moto.created_access_keys(&user.name).await.len(), 1);
}

#[tokio::test]
async fn unknown_user_and_wrong_secret_are_typed_errors() {
    let moto = Moto::shared();
    let user = moto.key_rotating_user("err").await;
    let iam = client();
    let ep = endpoint(&moto);
    let err = iam
        .get_user(&ep, user.key.signing_key(), Some("no-such-user-anywhere"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchEntity"), "{err}");
    assert!(err.to_string().contains("no such IAM user"), "{err}");

    let mut wrong = user.key.clone();
    wrong.secret_access_key = secrecy::SecretString::from("not-the-secret".to_owned());
    let err = iam
        .get_user(&ep, wrong.signing_key(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err}");
    assert!(!err.is_retryable());
    assert_no_secret(&err, &[&user.key, &wrong]);
}
