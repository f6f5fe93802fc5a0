//! The STS client's fault handling, against a scripted fake STS (a mock, named `fake_sts`).

use std::time::Duration;

use credvend::sts::{
    ClientOptions, GetSessionToken, MfaToken, RetryPolicy, StsClient, StsEndpoint, StsError,
    StsRequest,
};
use secrecy::SecretString;

use crate::support::fake_sts::{FakeSts, Reply, caller_identity_xml, error_xml, fast_retry, key};

fn client(timeout: Duration) -> StsClient {
    StsClient::new(fast_retry(timeout)).unwrap()
}

fn endpoint(fake: &FakeSts) -> StsEndpoint {
    StsEndpoint::custom(fake.url().parse().unwrap(), "us-east-1")
}

#[tokio::test]
async fn fake_sts_500_then_200_is_retried_and_succeeds() {
    let fake = FakeSts::start(vec![
        Reply::Status(500, error_xml("InternalFailure", "try again")),
        Reply::Status(200, caller_identity_xml()),
    ])
    .await;
    let id = client(Duration::from_secs(10))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap();
    assert_eq!(id.account, "123456789012");
    assert_eq!(fake.seen().len(), 2);
    // Each attempt is signed afresh and carries the action.
    for seen in fake.seen() {
        assert!(
            seen.head
                .to_lowercase()
                .contains("authorization: aws4-hmac-sha256")
        );
        assert!(seen.body.contains("Action=GetCallerIdentity"));
    }
}

#[tokio::test]
async fn fake_sts_throttling_is_retried_until_attempts_run_out() {
    let fake = FakeSts::start(vec![Reply::Status(
        400,
        error_xml("Throttling", "Rate exceeded"),
    )])
    .await;
    let err = client(Duration::from_secs(10))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("Throttling"));
    assert_eq!(fake.seen().len(), 4, "max_attempts = 4");
    // The delays between those attempts come from this schedule, which grows until its cap.
    let policy = client(Duration::from_secs(1)).options().retry;
    let ceilings: Vec<_> = (0..4).map(|r| policy.ceiling(r)).collect();
    assert!(
        ceilings
            .windows(2)
            .all(|w| w[0] < w[1] || w[1] == policy.cap),
        "{ceilings:?}"
    );
}

/// A request carrying an MFA code is not repeated after a 5xx (STS may have used the code up),
/// but is after throttling (STS did not carry it out).
#[tokio::test]
async fn fake_sts_mfa_code_requests_are_retried_only_when_throttled() {
    let req = StsRequest::GetSessionToken(GetSessionToken {
        duration_seconds: None,
        mfa: Some(MfaToken {
            serial: "arn:aws:iam::123456789012:mfa/u".into(),
            code: SecretString::from("123456".to_owned()),
        }),
    });
    for (status, code, attempts) in [(500, "InternalFailure", 1), (400, "Throttling", 4)] {
        let fake = FakeSts::start(vec![Reply::Status(status, error_xml(code, "no"))]).await;
        let err = client(Duration::from_secs(10))
            .send(&endpoint(&fake), &req, Some(key().signing_key()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code));
        assert_eq!(fake.seen().len(), attempts, "{code}");
    }
}

#[tokio::test]
async fn fake_sts_throttling_then_success_recovers() {
    let fake = FakeSts::start(vec![
        Reply::Status(400, error_xml("Throttling", "Rate exceeded")),
        Reply::Status(400, error_xml("Throttling", "Rate exceeded")),
        Reply::Status(200, caller_identity_xml()),
    ])
    .await;
    client(Duration::from_secs(10))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap();
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn fake_sts_403_is_not_retried() {
    let fake = FakeSts::start(vec![Reply::Status(403, error_xml("AccessDenied", "no"))]).await;
    let err = client(Duration::from_secs(10))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDenied"));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn fake_sts_response_that_never_finishes_times_out() {
    let fake = FakeSts::start(vec![Reply::HangMidBody]).await;
    let client = StsClient::new(ClientOptions {
        timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    })
    .unwrap();
    let err = client
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn fake_sts_hang_before_headers_times_out_on_every_attempt() {
    let fake = FakeSts::start(vec![Reply::Hang]).await;
    let err = client(Duration::from_millis(300))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Timeout { .. }), "{err:?}");
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn fake_sts_10mb_body_is_a_clean_error() {
    let fake = FakeSts::start(vec![Reply::Huge(10 * 1024 * 1024)]).await;
    let err = client(Duration::from_secs(10))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::TooLarge { .. }), "{err:?}");
    assert_eq!(fake.seen().len(), 1, "an oversized body is not retried");
}

#[tokio::test]
async fn fake_sts_malformed_xml_is_a_clean_error() {
    for body in [
        "<GetCallerIdentityResponse><Unclosed>",
        "",
        "{\"json\": true}",
        "<A><B/></A>",
    ] {
        let fake = FakeSts::start(vec![Reply::Status(200, body.into())]).await;
        let err = client(Duration::from_secs(10))
            .caller_identity(&endpoint(&fake), key().signing_key())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StsError::Malformed { .. }),
            "{body:?}: {err:?}"
        );
    }
    let fake = FakeSts::start(vec![Reply::Status(502, "<html>bad gateway</html>".into())]).await;
    let err = client(Duration::from_secs(10))
        .caller_identity(&endpoint(&fake), key().signing_key())
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Http { status: 502, .. }), "{err:?}");
    assert_eq!(fake.seen().len(), 4, "a bare 502 is transient");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error_naming_it() {
    // Bind then drop, so the port is closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ep = StsEndpoint::custom(format!("http://{addr}/").parse().unwrap(), "us-east-1");
    let err = client(Duration::from_secs(5))
        .caller_identity(&ep, key().signing_key())
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
