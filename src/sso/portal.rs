//! The IAM Identity Center access portal (`sso`): role credentials for an access token.
//!
//! `GetRoleCredentials` as botocore's model `sso/2019-06-10` describes it: `GET
//! /federation/credentials?role_name=..&account_id=..` with the access token in the
//! `x-amz-sso_bearer_token` header, unsigned; the answer is `{"roleCredentials": {"accessKeyId",
//! "secretAccessKey", "sessionToken", "expiration"}}` with `expiration` in epoch milliseconds
//! (botocore's `SSOCredentialFetcher._parse_timestamp` divides it by 1000).

use secrecy::SecretString;
use time::OffsetDateTime;
use zeroize::Zeroize;

use super::{
    SsoClient, SsoEndpoints, SsoError, endpoint_text, json_failure, operation_url, parse_error,
    sensitive_header,
};
use crate::creds::TemporaryCredentials;
use crate::sigv4::form_encode;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetRoleCredentialsResponse {
    role_credentials: Option<RoleCredentials>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleCredentials {
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    session_token: Option<SecretString>,
    expiration: Option<i64>,
}

/// The credentials in a 200 answer of `GetRoleCredentials` for `account_id`.
fn parse_role_credentials(
    body: &[u8],
    account_id: &str,
    endpoint: &str,
) -> Result<TemporaryCredentials, SsoError> {
    let malformed = |detail: String| SsoError::Malformed {
        operation: "GetRoleCredentials",
        endpoint: endpoint.to_owned(),
        detail,
    };
    let resp: GetRoleCredentialsResponse =
        serde_json::from_slice(body).map_err(|e| malformed(json_failure(&e)))?;
    let c = resp
        .role_credentials
        .ok_or_else(|| malformed("the answer has no roleCredentials".into()))?;
    let missing = |member: &str| malformed(format!("roleCredentials has no {member}"));
    let expiration_ms = c.expiration.ok_or_else(|| missing("expiration"))?;
    let expiration =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(expiration_ms) * 1_000_000)
            .map_err(|_| missing("valid expiration"))?;
    Ok(TemporaryCredentials {
        access_key_id: c.access_key_id.ok_or_else(|| missing("accessKeyId"))?,
        secret_access_key: c
            .secret_access_key
            .ok_or_else(|| missing("secretAccessKey"))?,
        session_token: Some(c.session_token.ok_or_else(|| missing("sessionToken"))?),
        expiration,
        account_id: Some(account_id.to_owned()),
        arn: None,
        packed_policy_size: None,
    })
}

impl SsoClient {
    /// `GetRoleCredentials`: temporary credentials of `role_name` in `account_id` for the user the
    /// access token belongs to. An expired or signed-out token is [`SsoError::Unauthorized`]; a
    /// role the user is not assigned is [`SsoError::NoAccess`].
    pub async fn get_role_credentials(
        &self,
        endpoints: &SsoEndpoints,
        access_token: &SecretString,
        account_id: &str,
        role_name: &str,
    ) -> Result<TemporaryCredentials, SsoError> {
        const OPERATION: &str = "GetRoleCredentials";
        let mut url = operation_url(&endpoints.portal, "/federation/credentials");
        url.set_query(Some(&form_encode(&[
            ("role_name".to_owned(), role_name.to_owned()),
            ("account_id".to_owned(), account_id.to_owned()),
        ])));
        let req = self
            .http()
            .get(url)
            .header("x-amz-sso_bearer_token", sensitive_header(access_token)?);
        let (status, error_type, mut data) =
            self.exchange(OPERATION, &endpoints.portal, req).await?;
        let result = if status == 200 {
            parse_role_credentials(&data, account_id, &endpoint_text(&endpoints.portal))
        } else {
            match parse_error(OPERATION, status, error_type.as_deref(), &data) {
                SsoError::Service { code, .. } if code == "ForbiddenException" => {
                    Err(SsoError::NoAccess {
                        account_id: account_id.to_owned(),
                        role_name: role_name.to_owned(),
                    })
                }
                e => Err(e),
            }
        };
        // Wipe the response buffer (secret key, session token) before it is freed; copies made
        // while it grew are not covered.
        data.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn role_credentials_parse_with_millisecond_expiry() {
        // The shape of botocore's model (sso/2019-06-10 GetRoleCredentialsResponse).
        let body = br#"{"roleCredentials":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"sk","sessionToken":"st","expiration":1700000000123}}"#;
        let c = parse_role_credentials(body, "123456789012", "https://p").unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key.expose_secret(), "sk");
        assert_eq!(c.session_token.unwrap().expose_secret(), "st");
        assert_eq!(c.expiration.unix_timestamp(), 1_700_000_000);
        assert_eq!(c.expiration.millisecond(), 123);
        assert_eq!(c.account_id.as_deref(), Some("123456789012"));
    }

    #[test]
    fn incomplete_answers_are_malformed_without_quoting() {
        let body = br#"{"roleCredentials":{"accessKeyId":"ASIA","secretAccessKey":"very-secret","expiration":1}}"#;
        let e = parse_role_credentials(body, "1", "https://p").unwrap_err();
        assert_eq!(
            e.to_string(),
            "IAM Identity Center GetRoleCredentials at https://p returned an unreadable response: roleCredentials has no sessionToken"
        );
        let body = br#"{"roleCredentials":{"secretAccessKey":"very-secret","expiration":"soon"}}"#;
        let e = parse_role_credentials(body, "1", "https://p").unwrap_err();
        assert!(
            !e.to_string().contains("very-secret") && !e.to_string().contains("soon"),
            "{e}"
        );
    }
}
