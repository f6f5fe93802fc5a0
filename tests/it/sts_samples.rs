//! STS response samples from AWS SDK test suites (tests/data/sts, see SOURCE.md) parse.

use credvend::sts::wire;

fn sample(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/sts/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn sdk_samples_parse() {
    let c = wire::parse_credentials(&sample("AssumeRole.smithy-rs.xml")).unwrap();
    assert!(c.access_key_id.starts_with("ASIA"), "{}", c.access_key_id);
    assert!(c.arn.is_some());
    let c = wire::parse_credentials(&sample("AssumeRoleWithWebIdentity.aws-c-auth.xml")).unwrap();
    assert!(!c.access_key_id.is_empty());
    for f in [
        "ErrorResponse.AccessDenied.aws-sdk-kotlin.xml",
        "ErrorResponse.RegionDisabled.aws-sdk-kotlin.xml",
    ] {
        let e = wire::parse_error(&sample(f)).unwrap();
        assert!(!e.code.is_empty() && !e.message.is_empty(), "{f}: {e:?}");
    }
}
