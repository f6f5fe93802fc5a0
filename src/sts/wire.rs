//! STS query-protocol requests and XML responses. Pure: builds form bodies and parses bodies.
//!
//! Parsing looks elements up by local name, so namespace prefixes and the exact nesting of
//! STS-compatible servers (Ceph RGW, MinIO, moto, LocalStack) do not matter. DTDs are rejected.

use secrecy::{ExposeSecret, SecretString};

use crate::creds::{TemporaryCredentials, account_from_arn, parse_aws_time};

/// The STS API version every request names.
pub const STS_VERSION: &str = "2011-06-15";

/// An MFA device and the one-time code it shows.
#[derive(Clone, Debug)]
pub struct MfaToken {
    /// The device serial number or ARN (`mfa_serial`).
    pub serial: String,
    /// The six-digit code. Short-lived, but still kept out of logs.
    pub code: SecretString,
}

/// Parameters of `GetSessionToken`.
#[derive(Clone, Debug, Default)]
pub struct GetSessionToken {
    /// 900..=129600; STS defaults to 43200.
    pub duration_seconds: Option<u32>,
    /// Makes the session MFA-authenticated.
    pub mfa: Option<MfaToken>,
}

/// Parameters of `AssumeRole`.
#[derive(Clone, Debug, Default)]
pub struct AssumeRole {
    /// ARN of the role.
    pub role_arn: String,
    /// 2..=64 characters of `[\w+=,.@-]`.
    pub role_session_name: String,
    /// 900..=43200, capped by the role and at 3600 when chaining.
    pub duration_seconds: Option<u32>,
    /// The `external_id` the role's trust policy demands.
    pub external_id: Option<String>,
    /// Inline session policy (JSON).
    pub policy: Option<String>,
    /// Managed session policy ARNs.
    pub policy_arns: Vec<String>,
    /// Session tags, `(key, value)`.
    pub tags: Vec<(String, String)>,
    /// Keys of `tags` that pass on to roles this session assumes in turn (role chaining).
    pub transitive_tag_keys: Vec<String>,
    /// MFA, when the role's trust policy requires it and the caller is not MFA-authenticated.
    pub mfa: Option<MfaToken>,
    /// Source identity to stamp on the session.
    pub source_identity: Option<String>,
}

/// Parameters of `GetFederationToken`.
#[derive(Clone, Debug, Default)]
pub struct GetFederationToken {
    /// Federated user name, 2..=32 characters.
    pub name: String,
    /// 900..=129600.
    pub duration_seconds: Option<u32>,
    /// Inline session policy (JSON).
    pub policy: Option<String>,
    /// Managed session policy ARNs.
    pub policy_arns: Vec<String>,
    /// Session tags of the federated user, `(key, value)`.
    pub tags: Vec<(String, String)>,
}

/// Parameters of `AssumeRoleWithWebIdentity` (sent unsigned).
#[derive(Clone, Debug)]
pub struct AssumeRoleWithWebIdentity {
    /// ARN of the role.
    pub role_arn: String,
    /// Session name.
    pub role_session_name: String,
    /// The OIDC token read from `web_identity_token_file`.
    pub web_identity_token: SecretString,
    /// 900..=43200.
    pub duration_seconds: Option<u32>,
    /// Inline session policy (JSON).
    pub policy: Option<String>,
    /// Managed session policy ARNs.
    pub policy_arns: Vec<String>,
}

/// One STS call.
#[derive(Clone, Debug)]
pub enum StsRequest {
    /// `GetSessionToken`.
    GetSessionToken(GetSessionToken),
    /// `AssumeRole`.
    AssumeRole(AssumeRole),
    /// `GetFederationToken`.
    GetFederationToken(GetFederationToken),
    /// `AssumeRoleWithWebIdentity`.
    AssumeRoleWithWebIdentity(AssumeRoleWithWebIdentity),
    /// `GetCallerIdentity`.
    GetCallerIdentity,
}

impl StsRequest {
    /// Whether the request carries a one-time MFA code (which STS accepts only once).
    pub fn carries_mfa_code(&self) -> bool {
        match self {
            StsRequest::GetSessionToken(r) => r.mfa.is_some(),
            StsRequest::AssumeRole(r) => r.mfa.is_some(),
            _ => false,
        }
    }

    /// The `Action` name.
    pub fn action(&self) -> &'static str {
        match self {
            StsRequest::GetSessionToken(_) => "GetSessionToken",
            StsRequest::AssumeRole(_) => "AssumeRole",
            StsRequest::GetFederationToken(_) => "GetFederationToken",
            StsRequest::AssumeRoleWithWebIdentity(_) => "AssumeRoleWithWebIdentity",
            StsRequest::GetCallerIdentity => "GetCallerIdentity",
        }
    }

    /// Whether the request must be SigV4-signed (all but web identity).
    pub fn is_signed(&self) -> bool {
        !matches!(self, StsRequest::AssumeRoleWithWebIdentity(_))
    }

    /// The `application/x-www-form-urlencoded` body. It can hold an MFA code or a web identity
    /// token, hence the secret type.
    ///
    /// The bytes are the ones botocore sends for the same parameters (the differential test
    /// `tests/it/query_botocore.rs` holds us to that): `Action`, `Version`, then the parameters in
    /// the member order of the operation's input shape in the STS service model
    /// (`botocore/data/sts/2011-06-15/service-2.json`), which is the order the AWS CLI sends them
    /// in; lists as `Name.member.N` (`Tags.member.N.Key` / `.Value`, `PolicyArns.member.N.arn`);
    /// empty lists and absent values left out; encoded by [`crate::sigv4::form_encode`].
    pub fn form_body(&self) -> SecretString {
        let mut p = Params::new(self.action());
        match self {
            StsRequest::GetSessionToken(r) => {
                p.opt("DurationSeconds", r.duration_seconds);
                p.mfa(&r.mfa);
            }
            StsRequest::AssumeRole(r) => {
                p.push("RoleArn", &r.role_arn);
                p.push("RoleSessionName", &r.role_session_name);
                p.policy_arns(&r.policy_arns);
                p.opt("Policy", r.policy.as_ref());
                p.opt("DurationSeconds", r.duration_seconds);
                p.tags(&r.tags);
                p.list("TransitiveTagKeys", &r.transitive_tag_keys);
                p.opt("ExternalId", r.external_id.as_ref());
                p.mfa(&r.mfa);
                p.opt("SourceIdentity", r.source_identity.as_ref());
            }
            StsRequest::GetFederationToken(r) => {
                p.push("Name", &r.name);
                p.opt("Policy", r.policy.as_ref());
                p.policy_arns(&r.policy_arns);
                p.opt("DurationSeconds", r.duration_seconds);
                p.tags(&r.tags);
            }
            StsRequest::AssumeRoleWithWebIdentity(r) => {
                p.push("RoleArn", &r.role_arn);
                p.push("RoleSessionName", &r.role_session_name);
                p.push("WebIdentityToken", r.web_identity_token.expose_secret());
                p.policy_arns(&r.policy_arns);
                p.opt("Policy", r.policy.as_ref());
                p.opt("DurationSeconds", r.duration_seconds);
            }
            StsRequest::GetCallerIdentity => {}
        }
        SecretString::from(crate::sigv4::form_encode(&p.0))
    }
}

/// Query-protocol parameters in the order they will be sent.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(action: &str) -> Params {
        Params(vec![
            ("Action".into(), action.into()),
            ("Version".into(), STS_VERSION.into()),
        ])
    }

    fn push(&mut self, key: &str, value: &str) {
        self.0.push((key.into(), value.into()));
    }

    fn opt(&mut self, key: &str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.0.push((key.into(), v.to_string()));
        }
    }

    /// A list of strings: `Key.member.1`, `Key.member.2`, ...
    fn list(&mut self, key: &str, values: &[String]) {
        for (i, v) in values.iter().enumerate() {
            self.0.push((format!("{key}.member.{}", i + 1), v.clone()));
        }
    }

    fn policy_arns(&mut self, arns: &[String]) {
        for (i, arn) in arns.iter().enumerate() {
            self.0
                .push((format!("PolicyArns.member.{}.arn", i + 1), arn.clone()));
        }
    }

    fn tags(&mut self, tags: &[(String, String)]) {
        for (i, (k, v)) in tags.iter().enumerate() {
            self.0
                .push((format!("Tags.member.{}.Key", i + 1), k.clone()));
            self.0
                .push((format!("Tags.member.{}.Value", i + 1), v.clone()));
        }
    }

    fn mfa(&mut self, mfa: &Option<MfaToken>) {
        if let Some(m) = mfa {
            self.push("SerialNumber", &m.serial);
            self.push("TokenCode", m.code.expose_secret());
        }
    }
}

/// What `GetCallerIdentity` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    /// 12-digit account id.
    pub account: String,
    /// ARN of the caller.
    pub arn: String,
    /// Unique id of the caller.
    pub user_id: String,
}

/// The body of an STS error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// `Sender` or `Receiver` (empty when the server omits it).
    pub kind: String,
    /// Error code, e.g. `AccessDenied`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Request id, when present.
    pub request_id: Option<String>,
}

/// A response body that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not well-formed XML (or it carried a DTD).
    #[error("the response is not well-formed XML ({0})")]
    Xml(String),
    /// A required element is absent or empty.
    #[error("the response has no <{0}> element")]
    Missing(&'static str),
    /// `Expiration` is not an RFC 3339 timestamp.
    #[error("the response's Expiration {0:?} is not an RFC 3339 timestamp")]
    BadExpiration(String),
    /// Another element that should hold a timestamp (e.g. IAM's `CreateDate`) does not.
    #[error("the response's <{element}> {value:?} is not an RFC 3339 timestamp")]
    BadTimestamp {
        /// The element's local name.
        element: &'static str,
        /// What it held.
        value: String,
    },
}

/// Parses a response document (DTDs are rejected by roxmltree).
pub(crate) fn parse_doc(body: &str) -> Result<roxmltree::Document<'_>, ParseError> {
    roxmltree::Document::parse(body).map_err(|e| ParseError::Xml(e.to_string()))
}

/// First descendant (or self) of `node` with the local name `name`.
pub(crate) fn find<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    node.descendants()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Trimmed text of the first descendant of `node` called `name`; `None` when absent or empty.
pub(crate) fn text_of(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    let t: String = find(node, name)?
        .children()
        .filter_map(|c| c.text())
        .collect();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn required(node: roxmltree::Node<'_, '_>, name: &'static str) -> Result<String, ParseError> {
    text_of(node, name).ok_or(ParseError::Missing(name))
}

/// Parses the `Credentials` of an `AssumeRole*`, `GetSessionToken` or `GetFederationToken`
/// response, with the account and ARN of the assumed role or federated user when given.
pub fn parse_credentials(body: &str) -> Result<TemporaryCredentials, ParseError> {
    let doc = parse_doc(body)?;
    let root = doc.root_element();
    let creds = find(root, "Credentials").ok_or(ParseError::Missing("Credentials"))?;
    let expiration = required(creds, "Expiration")?;
    let expiration =
        parse_aws_time(&expiration).map_err(|_| ParseError::BadExpiration(expiration.clone()))?;
    let arn = ["AssumedRoleUser", "FederatedUser"]
        .iter()
        .filter_map(|n| find(root, n))
        .find_map(|n| text_of(n, "Arn"));
    Ok(TemporaryCredentials {
        access_key_id: required(creds, "AccessKeyId")?,
        secret_access_key: SecretString::from(required(creds, "SecretAccessKey")?),
        session_token: Some(SecretString::from(required(creds, "SessionToken")?)),
        expiration,
        account_id: arn.as_deref().and_then(account_from_arn),
        arn,
        packed_policy_size: text_of(root, "PackedPolicySize").and_then(|v| v.trim().parse().ok()),
    })
}

/// Parses a `GetCallerIdentity` response.
pub fn parse_caller_identity(body: &str) -> Result<CallerIdentity, ParseError> {
    let doc = parse_doc(body)?;
    let root = doc.root_element();
    let result = find(root, "GetCallerIdentityResult").unwrap_or(root);
    Ok(CallerIdentity {
        account: required(result, "Account")?,
        arn: required(result, "Arn")?,
        user_id: required(result, "UserId")?,
    })
}

/// Parses an error body: the STS shape `ErrorResponse/Error/{Type,Code,Message}` + `RequestId`,
/// and the S3-style `Error/{Code,Message,RequestId}` some compatible servers send. `None` when
/// the body is not an AWS error document.
pub fn parse_error(body: &str) -> Option<ErrorBody> {
    let doc = roxmltree::Document::parse(body).ok()?;
    let root = doc.root_element();
    let error = find(root, "Error")?;
    Some(ErrorBody {
        kind: text_of(error, "Type").unwrap_or_default(),
        code: text_of(error, "Code")?,
        message: text_of(error, "Message").unwrap_or_default(),
        request_id: text_of(root, "RequestId"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSUME_ROLE: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>Alice</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764</SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn parses_assume_role() {
        let c = parse_credentials(ASSUME_ROLE).unwrap();
        assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key.expose_secret(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(c.account_id.as_deref(), Some("123456789012"));
        assert_eq!(
            crate::creds::format_aws_time(c.expiration),
            "2019-11-09T13:34:41Z"
        );
    }

    #[test]
    fn parses_prefixed_namespaces_and_microseconds() {
        let body = r#"<?xml version="1.0"?><s:GetSessionTokenResponse xmlns:s="urn:x"><s:GetSessionTokenResult><s:Credentials>
          <s:SessionToken>tok</s:SessionToken><s:SecretAccessKey>sk</s:SecretAccessKey>
          <s:Expiration>2026-11-22T08:53:52.884340Z</s:Expiration><s:AccessKeyId>AK</s:AccessKeyId>
          </s:Credentials></s:GetSessionTokenResult></s:GetSessionTokenResponse>"#;
        let c = parse_credentials(body).unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert_eq!(c.account_id, None);
    }

    #[test]
    fn missing_fields_and_bad_xml_are_errors() {
        assert_eq!(
            parse_credentials("<A><Credentials><AccessKeyId>x</AccessKeyId></Credentials></A>")
                .unwrap_err(),
            ParseError::Missing("Expiration")
        );
        assert!(matches!(
            parse_credentials("<A><Credentials>").unwrap_err(),
            ParseError::Xml(_)
        ));
        assert!(matches!(
            parse_credentials("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").unwrap_err(),
            ParseError::Xml(_)
        ));
        let bad = ASSUME_ROLE.replace("2019-11-09T13:34:41Z", "tomorrow");
        assert_eq!(
            parse_credentials(&bad).unwrap_err(),
            ParseError::BadExpiration("tomorrow".into())
        );
    }

    #[test]
    fn parses_both_error_shapes() {
        let sts = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>nope</Message></Error>
  <RequestId>rid-1</RequestId></ErrorResponse>"#;
        assert_eq!(
            parse_error(sts).unwrap(),
            ErrorBody {
                kind: "Sender".into(),
                code: "AccessDenied".into(),
                message: "nope".into(),
                request_id: Some("rid-1".into())
            }
        );
        let s3 = "<Error><Code>InvalidClientTokenId</Code><Message>m</Message><RequestId>r</RequestId></Error>";
        let e = parse_error(s3).unwrap();
        assert_eq!(e.code, "InvalidClientTokenId");
        assert_eq!(e.request_id.as_deref(), Some("r"));
        assert_eq!(parse_error("<html>502</html>"), None);
        assert_eq!(parse_error("not xml"), None);
    }

    #[test]
    fn parses_caller_identity() {
        let body = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/Alice</Arn>
  <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        let id = parse_caller_identity(body).unwrap();
        assert_eq!(id.account, "123456789012");
        assert_eq!(id.arn, "arn:aws:iam::123456789012:user/Alice");
    }

    #[test]
    fn form_body_carries_all_assume_role_parameters_in_model_order() {
        let req = StsRequest::AssumeRole(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            role_session_name: "s".into(),
            duration_seconds: Some(3600),
            external_id: Some("ext".into()),
            policy: Some("{}".into()),
            policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
            tags: vec![("team".into(), "a b".into()), ("cost".into(), "1+1".into())],
            transitive_tag_keys: vec!["team".into(), "cost".into()],
            mfa: Some(MfaToken {
                serial: "arn:aws:iam::123456789012:mfa/u".into(),
                code: SecretString::from("123456"),
            }),
            source_identity: Some("me".into()),
        });
        let body = req.form_body();
        assert_eq!(
            body.expose_secret(),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr\
             &RoleSessionName=s\
             &PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FReadOnlyAccess\
             &Policy=%7B%7D&DurationSeconds=3600\
             &Tags.member.1.Key=team&Tags.member.1.Value=a+b\
             &Tags.member.2.Key=cost&Tags.member.2.Value=1%2B1\
             &TransitiveTagKeys.member.1=team&TransitiveTagKeys.member.2=cost\
             &ExternalId=ext\
             &SerialNumber=arn%3Aaws%3Aiam%3A%3A123456789012%3Amfa%2Fu&TokenCode=123456\
             &SourceIdentity=me"
        );
        assert!(
            !format!("{req:?}").contains("123456\""),
            "MFA code must not be in Debug"
        );
    }

    #[test]
    fn form_body_of_federation_token_carries_tags() {
        let req = StsRequest::GetFederationToken(GetFederationToken {
            name: "fed".into(),
            duration_seconds: Some(900),
            policy: Some("{\n  \"Version\": \"2012-10-17\"\n}\n".into()),
            policy_arns: vec![
                "arn:aws:iam::aws:policy/A".into(),
                "arn:aws:iam::aws:policy/B".into(),
            ],
            tags: vec![("project".into(), "x=y&z".into())],
        });
        assert_eq!(
            req.form_body().expose_secret(),
            "Action=GetFederationToken&Version=2011-06-15&Name=fed\
             &Policy=%7B%0A++%22Version%22%3A+%222012-10-17%22%0A%7D%0A\
             &PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FA\
             &PolicyArns.member.2.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FB\
             &DurationSeconds=900&Tags.member.1.Key=project&Tags.member.1.Value=x%3Dy%26z"
        );
    }

    #[test]
    fn form_body_leaves_out_empty_lists_and_absent_values() {
        let req = StsRequest::AssumeRole(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            role_session_name: "s".into(),
            ..AssumeRole::default()
        });
        assert_eq!(
            req.form_body().expose_secret(),
            "Action=AssumeRole&Version=2011-06-15\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr&RoleSessionName=s"
        );
        let req = StsRequest::GetFederationToken(GetFederationToken {
            name: "fed".into(),
            ..GetFederationToken::default()
        });
        assert_eq!(
            req.form_body().expose_secret(),
            "Action=GetFederationToken&Version=2011-06-15&Name=fed"
        );
        assert_eq!(
            StsRequest::GetCallerIdentity.form_body().expose_secret(),
            "Action=GetCallerIdentity&Version=2011-06-15"
        );
    }

    #[test]
    fn form_body_of_session_token_and_web_identity() {
        let req = StsRequest::GetSessionToken(GetSessionToken {
            duration_seconds: Some(43200),
            mfa: Some(MfaToken {
                serial: "GAHT12345678".into(),
                code: SecretString::from("000111"),
            }),
        });
        assert_eq!(
            req.form_body().expose_secret(),
            "Action=GetSessionToken&Version=2011-06-15&DurationSeconds=43200\
             &SerialNumber=GAHT12345678&TokenCode=000111"
        );
        let req = StsRequest::AssumeRoleWithWebIdentity(AssumeRoleWithWebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/w".into(),
            role_session_name: "w s".into(),
            web_identity_token: SecretString::from("a.b-c_d"),
            duration_seconds: Some(3600),
            policy: Some("{}".into()),
            policy_arns: vec!["arn:aws:iam::aws:policy/A".into()],
        });
        assert_eq!(
            req.form_body().expose_secret(),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fw&RoleSessionName=w+s\
             &WebIdentityToken=a.b-c_d&PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FA\
             &Policy=%7B%7D&DurationSeconds=3600"
        );
    }
}
