//! An IAM client for the access keys of one IAM user: who am I (`GetUser`), which keys exist
//! (`ListAccessKeys`), create one (`CreateAccessKey`), deactivate one (`UpdateAccessKey`), delete
//! one (`DeleteAccessKey`). It is the building block of key rotation (create a new key, verify
//! it, store it, delete the old one); the rotation itself lives with its caller.
//!
//! Wire: the IAM query protocol, API version `2010-05-08`, SigV4 with service name `iam`, sent
//! through the transport the STS client uses (`sts::query`: rustls(ring), timeouts, size cap,
//! error documents). Requests ([`IamRequest::form_body`]) are encoded byte for byte as botocore
//! encodes them (`tests/it/query_botocore.rs` checks that against botocore itself).
//!
//! Endpoints ([`IamEndpoint`]): IAM is global per partition; the endpoint rules of botocore's IAM
//! model (`botocore/data/iam/2010-05-08/endpoint-rule-set-1.json`) send every region of the `aws`
//! partition to `https://iam.amazonaws.com` signed for `us-east-1`, and each other partition to
//! its own host and signing region. A custom `endpoint_url` is used as is and signed for the
//! profile's region, as botocore does (the rule for a set `Endpoint` names no signing region, so
//! the client's region applies).
//!
//! Retries: throttling, 5xx and transport failures are retried with the STS client's backoff,
//! except for `CreateAccessKey`, which is retried only when IAM throttled it (see
//! [`IamClient::create_access_key`]). Secrets: the new key's secret goes from the response
//! straight into a `SecretString`; no error message or log line carries a secret or a response
//! body.

use std::fmt;

use reqwest::Url;
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::creds::{LongTermKey, SigningKey, parse_aws_time};
use crate::sigv4;
use crate::sts::query::{Call, Failure, Transport};
use crate::sts::wire::{self, ParseError};
use crate::sts::{ClientOptions, ServiceError, StsClient, StsEndpoint};

/// The IAM API version every request names.
pub const IAM_VERSION: &str = "2010-05-08";

/// An IAM endpoint URL and the region requests to it are signed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamEndpoint {
    /// Base URL requests are POSTed to.
    pub url: Url,
    /// Region in the SigV4 credential scope.
    pub signing_region: String,
}

/// Partitions other than `aws`: (region prefix, partition's global pseudo-region, IAM host,
/// signing region), from botocore's `partitions.json` (region regexes and
/// `implicitGlobalRegion`) and IAM's endpoint rule set. `tests/it/query_botocore.rs` compares
/// the result with botocore's for every partition.
const PARTITIONS: &[(&str, &str, &str, &str)] = &[
    (
        "cn-",
        "aws-cn-global",
        "iam.cn-north-1.amazonaws.com.cn",
        "cn-north-1",
    ),
    (
        "us-gov-",
        "aws-us-gov-global",
        "iam.us-gov.amazonaws.com",
        "us-gov-west-1",
    ),
    (
        "us-iso-",
        "aws-iso-global",
        "iam.us-iso-east-1.c2s.ic.gov",
        "us-iso-east-1",
    ),
    (
        "us-isob-",
        "aws-iso-b-global",
        "iam.us-isob-east-1.sc2s.sgov.gov",
        "us-isob-east-1",
    ),
    (
        "eu-isoe-",
        "aws-iso-e-global",
        "iam.eu-isoe-west-1.cloud.adc-e.uk",
        "eu-isoe-west-1",
    ),
    (
        "us-isof-",
        "aws-iso-f-global",
        "iam.us-isof-south-1.csp.hci.ic.gov",
        "us-isof-south-1",
    ),
    (
        "eusc-de-",
        "eusc-de-east-1", // no global pseudo-region: the partition's one listed region
        "iam.eusc-de-east-1.amazonaws.eu",
        "eusc-de-east-1",
    ),
];

impl IamEndpoint {
    /// The AWS endpoint serving `region`'s partition; `None` when `region` is not a region name.
    /// Regions of no known partition belong to `aws`, as in botocore.
    pub fn aws(region: &str) -> Option<IamEndpoint> {
        if !StsEndpoint::valid_region(region) {
            return None;
        }
        // The partition regexes all read `^PREFIX\w+\-\d+$`.
        let in_partition = |prefix: &str| {
            region
                .strip_prefix(prefix)
                .and_then(|rest| rest.rsplit_once('-'))
                .is_some_and(|(word, digits)| {
                    !word.is_empty()
                        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !digits.is_empty()
                        && digits.bytes().all(|b| b.is_ascii_digit())
                })
        };
        let (host, signing_region) = PARTITIONS
            .iter()
            .find(|(prefix, global, _, _)| region == *global || in_partition(prefix))
            .map(|(_, _, host, signing)| (*host, *signing))
            .unwrap_or(("iam.amazonaws.com", "us-east-1"));
        Some(IamEndpoint {
            url: Url::parse(&format!("https://{host}/")).ok()?,
            signing_region: signing_region.to_owned(),
        })
    }

    /// A custom endpoint (`endpoint_url`, e.g. moto or LocalStack), signed for `region`.
    pub fn custom(url: Url, region: &str) -> IamEndpoint {
        IamEndpoint {
            url,
            signing_region: region.to_owned(),
        }
    }
}

impl fmt::Display for IamEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// The status of an access key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessKeyStatus {
    /// Usable for API calls.
    Active,
    /// Refused by AWS until reactivated.
    Inactive,
    /// Expired (IAM's model lists it; it is not documented for user access keys).
    Expired,
    /// A status this client does not know, as IAM spelled it.
    Other(String),
}

impl AccessKeyStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            AccessKeyStatus::Active => "Active",
            AccessKeyStatus::Inactive => "Inactive",
            AccessKeyStatus::Expired => "Expired",
            AccessKeyStatus::Other(s) => s,
        }
    }

    fn parse(s: &str) -> AccessKeyStatus {
        match s {
            "Active" => AccessKeyStatus::Active,
            "Inactive" => AccessKeyStatus::Inactive,
            "Expired" => AccessKeyStatus::Expired,
            other => AccessKeyStatus::Other(other.to_owned()),
        }
    }
}

/// What `GetUser` says about a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamUser {
    /// The user name (what `UserName` parameters take).
    pub user_name: String,
    /// The stable unique id (`AIDA...`).
    pub user_id: String,
    /// The user's ARN.
    pub arn: String,
}

/// One entry of `ListAccessKeys` (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKeyInfo {
    /// The access key id.
    pub access_key_id: String,
    /// Active or inactive.
    pub status: AccessKeyStatus,
    /// When the key was created, when IAM says.
    pub create_date: Option<OffsetDateTime>,
    /// The user the key belongs to, when IAM says.
    pub user_name: Option<String>,
}

/// A key `CreateAccessKey` made. `Debug` shows the secret as `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct NewAccessKey {
    /// The key pair; IAM shows the secret only in this one response.
    pub key: LongTermKey,
    /// The user it belongs to.
    pub user_name: String,
    /// When it was created, when IAM says.
    pub create_date: Option<OffsetDateTime>,
}

/// One IAM call. `user_name: None` means "the user whose key signs the request".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IamRequest {
    /// `GetUser`.
    GetUser {
        /// Optional `UserName`.
        user_name: Option<String>,
    },
    /// `ListAccessKeys` (one page).
    ListAccessKeys {
        /// Optional `UserName`.
        user_name: Option<String>,
        /// `Marker` of the page to fetch (from the previous page).
        marker: Option<String>,
    },
    /// `CreateAccessKey`.
    CreateAccessKey {
        /// Optional `UserName`.
        user_name: Option<String>,
    },
    /// `UpdateAccessKey`.
    UpdateAccessKey {
        /// Optional `UserName`.
        user_name: Option<String>,
        /// The key to change.
        access_key_id: String,
        /// Its new status.
        status: AccessKeyStatus,
    },
    /// `DeleteAccessKey`.
    DeleteAccessKey {
        /// Optional `UserName`.
        user_name: Option<String>,
        /// The key to delete.
        access_key_id: String,
    },
}

impl IamRequest {
    /// The `Action` name.
    pub fn action(&self) -> &'static str {
        match self {
            IamRequest::GetUser { .. } => "GetUser",
            IamRequest::ListAccessKeys { .. } => "ListAccessKeys",
            IamRequest::CreateAccessKey { .. } => "CreateAccessKey",
            IamRequest::UpdateAccessKey { .. } => "UpdateAccessKey",
            IamRequest::DeleteAccessKey { .. } => "DeleteAccessKey",
        }
    }

    /// The `application/x-www-form-urlencoded` body: `Action`, `Version`, then the parameters in
    /// the member order of the input shape of IAM's service model
    /// (`botocore/data/iam/2010-05-08/service-2.json`), encoded by [`sigv4::form_encode`]. It
    /// never holds a secret.
    pub fn form_body(&self) -> String {
        let mut p: Vec<(&str, &str)> = vec![("Action", self.action()), ("Version", IAM_VERSION)];
        match self {
            IamRequest::GetUser { user_name } | IamRequest::CreateAccessKey { user_name } => {
                if let Some(u) = user_name {
                    p.push(("UserName", u));
                }
            }
            IamRequest::ListAccessKeys { user_name, marker } => {
                if let Some(u) = user_name {
                    p.push(("UserName", u));
                }
                if let Some(m) = marker {
                    p.push(("Marker", m));
                }
            }
            IamRequest::UpdateAccessKey {
                user_name,
                access_key_id,
                status,
            } => {
                if let Some(u) = user_name {
                    p.push(("UserName", u));
                }
                p.push(("AccessKeyId", access_key_id));
                p.push(("Status", status.as_str()));
            }
            IamRequest::DeleteAccessKey {
                user_name,
                access_key_id,
            } => {
                if let Some(u) = user_name {
                    p.push(("UserName", u));
                }
                p.push(("AccessKeyId", access_key_id));
            }
        }
        sigv4::form_encode(&p)
    }
}

/// Why an IAM call failed. Messages are one line, name the fix where there is one, and never
/// carry a secret or a response body.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    /// IAM answered with an error document.
    #[error("IAM {} failed: {}", .0.action, service_message(.0))]
    Service(ServiceError),
    /// IAM answered with a non-200 status and no error document.
    #[error("IAM {action} at {endpoint} answered HTTP {status} without an AWS error document")]
    Http {
        /// Action.
        action: &'static str,
        /// Endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
    },
    /// The request could not be sent or the response not read.
    #[error("could not reach IAM at {endpoint}: {detail}")]
    Transport {
        /// Endpoint.
        endpoint: String,
        /// What went wrong, from the HTTP stack.
        detail: String,
    },
    /// The whole request took longer than the timeout.
    #[error("IAM at {endpoint} did not answer within {secs} s")]
    Timeout {
        /// Endpoint.
        endpoint: String,
        /// The timeout.
        secs: u64,
    },
    /// The response body exceeded [`crate::sts::client::MAX_BODY`].
    #[error("IAM at {endpoint} sent a response larger than {limit} bytes")]
    TooLarge {
        /// Endpoint.
        endpoint: String,
        /// The cap.
        limit: usize,
    },
    /// A 200 response whose body is not the expected document.
    #[error("IAM {action} at {endpoint} returned an unreadable response: {source}")]
    Malformed {
        /// Action.
        action: &'static str,
        /// Endpoint.
        endpoint: String,
        /// The parse failure.
        source: ParseError,
    },
    /// `CreateAccessKey` failed in a way that does not rule out that IAM created the key (a
    /// timeout, a lost connection, a 5xx, an unreadable 200): the key may exist, and its secret
    /// is lost. It was not retried, so at most one such key exists.
    #[error(
        "IAM CreateAccessKey may have created a key whose secret never arrived ({source}): \
         list the user's access keys and delete any key you do not hold before creating another"
    )]
    CreateOutcomeUnknown {
        /// The failure.
        source: Box<IamError>,
    },
    /// The TLS or HTTP client could not be built (bad `ca_bundle`), or a credential cannot be
    /// sent in a header.
    #[error("{0}")]
    Setup(String),
}

/// The fix for an IAM error code, when the code says what is wrong.
fn hint(action: &str, code: &str) -> Option<String> {
    const POLICY: &str = "iam:GetUser, iam:ListAccessKeys, iam:CreateAccessKey, \
                          iam:UpdateAccessKey and iam:DeleteAccessKey on \
                          arn:aws:iam::*:user/${aws:username}";
    Some(match (action, code) {
        ("CreateAccessKey", "LimitExceeded") => {
            "the IAM user already has two access keys, the most IAM allows: delete one \
             (aws iam delete-access-key --access-key-id ID) and try again"
                .to_owned()
        }
        (_, "AccessDenied" | "AccessDeniedException") => format!(
            "the key's IAM user may not call iam:{action}: give it a policy allowing {POLICY}"
        ),
        ("UpdateAccessKey" | "DeleteAccessKey", "NoSuchEntity") => {
            "no such access key for this user (already deleted, or another user's key): \
             list the user's keys"
                .to_owned()
        }
        (_, "NoSuchEntity") => "no such IAM user: check the user name".to_owned(),
        (_, "ValidationError") => {
            "these credentials are not an IAM user's (a role or federated session): \
             name the user, or use the user's own key"
                .to_owned()
        }
        (_, "InvalidClientTokenId") => {
            "IAM does not know this access key id: it was deleted or mistyped; \
             store the current key again"
                .to_owned()
        }
        (_, "SignatureDoesNotMatch") => {
            "the secret access key does not belong to this access key id: store the key again"
                .to_owned()
        }
        (_, "ExpiredToken" | "TokenRefreshRequired") => {
            "the session token has expired: mint new credentials".to_owned()
        }
        (_, c) if crate::sts::client::is_throttling_code(c) => {
            "IAM is throttling this account's calls: try again in a minute".to_owned()
        }
        _ => return None,
    })
}

fn service_message(e: &ServiceError) -> String {
    let id = e
        .request_id
        .as_ref()
        .map(|r| format!(", request id {r}"))
        .unwrap_or_default();
    match hint(e.action, &e.code) {
        Some(h) => format!("{h} ({}: {}{id})", e.code, e.message),
        None => format!("{}: {}{id}", e.code, e.message),
    }
}

impl IamError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IamError::Service(e) => e.is_retryable(),
            IamError::Http { status, .. } => *status >= 500 || *status == 429,
            IamError::Transport { .. } | IamError::Timeout { .. } => true,
            IamError::TooLarge { .. }
            | IamError::Malformed { .. }
            | IamError::CreateOutcomeUnknown { .. }
            | IamError::Setup(_) => false,
        }
    }

    /// Whether IAM refused the request for its rate (so it was not carried out).
    pub fn is_throttled(&self) -> bool {
        match self {
            IamError::Service(e) => {
                e.status == 429 || crate::sts::client::is_throttling_code(&e.code)
            }
            IamError::Http { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// The IAM error code, when IAM sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            IamError::Service(e) => Some(&e.code),
            IamError::CreateOutcomeUnknown { source } => source.code(),
            _ => None,
        }
    }

    /// Whether IAM certainly did not carry the request out: it refused it (a 4xx, throttling)
    /// or it was never sent. `false` for timeouts, lost connections and 5xx.
    fn is_definite_refusal(&self) -> bool {
        match self {
            IamError::Service(e) => e.status < 500 || self.is_throttled(),
            IamError::Http { status, .. } => *status < 500,
            IamError::Setup(_) => true,
            _ => false,
        }
    }
}

/// Direct element child of `node` with the local name `name`.
fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Trimmed text of the direct child `name`; `None` when absent or empty.
fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    let t: String = child(node, name)?
        .children()
        .filter_map(|c| c.text())
        .collect();
    let trimmed = t.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == t.len() {
        Some(t)
    } else {
        Some(trimmed.to_owned())
    }
}

fn required(node: roxmltree::Node<'_, '_>, name: &'static str) -> Result<String, ParseError> {
    child_text(node, name).ok_or(ParseError::Missing(name))
}

fn create_date(node: roxmltree::Node<'_, '_>) -> Result<Option<OffsetDateTime>, ParseError> {
    child_text(node, "CreateDate")
        .map(|d| {
            parse_aws_time(&d).map_err(|_| ParseError::BadTimestamp {
                element: "CreateDate",
                value: d,
            })
        })
        .transpose()
}

/// Parses a `GetUser` response.
pub(crate) fn parse_user(body: &str) -> Result<IamUser, ParseError> {
    let doc = wire::parse_doc(body)?;
    let user = wire::find(doc.root_element(), "User").ok_or(ParseError::Missing("User"))?;
    Ok(IamUser {
        user_name: required(user, "UserName")?,
        user_id: required(user, "UserId")?,
        arn: required(user, "Arn")?,
    })
}

/// Parses one `ListAccessKeys` page: the keys and the `Marker` of the next page, if truncated.
pub(crate) fn parse_access_keys(
    body: &str,
) -> Result<(Vec<AccessKeyInfo>, Option<String>), ParseError> {
    let doc = wire::parse_doc(body)?;
    let root = doc.root_element();
    let result = wire::find(root, "ListAccessKeysResult").unwrap_or(root);
    let mut keys = Vec::new();
    if let Some(list) = child(result, "AccessKeyMetadata") {
        for member in list
            .children()
            .filter(|n| n.is_element() && n.tag_name().name() == "member")
        {
            keys.push(AccessKeyInfo {
                access_key_id: required(member, "AccessKeyId")?,
                status: AccessKeyStatus::parse(&required(member, "Status")?),
                create_date: create_date(member)?,
                user_name: child_text(member, "UserName"),
            });
        }
    }
    let truncated = child_text(result, "IsTruncated").is_some_and(|t| t == "true");
    let marker = if truncated {
        Some(required(result, "Marker")?)
    } else {
        None
    };
    Ok((keys, marker))
}

/// Parses a `CreateAccessKey` response. An XML syntax error is reported without roxmltree's
/// detail, which may quote characters of the document (and so of the secret).
pub(crate) fn parse_new_key(body: &str) -> Result<NewAccessKey, ParseError> {
    let doc = wire::parse_doc(body)
        .map_err(|_| ParseError::Xml("details withheld: the document holds a secret".into()))?;
    let key =
        wire::find(doc.root_element(), "AccessKey").ok_or(ParseError::Missing("AccessKey"))?;
    let secret = SecretString::from(required(key, "SecretAccessKey")?);
    Ok(NewAccessKey {
        key: LongTermKey {
            access_key_id: required(key, "AccessKeyId")?,
            secret_access_key: secret,
        },
        user_name: required(key, "UserName")?,
        create_date: create_date(key)?,
    })
}

/// Sends IAM requests. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct IamClient {
    transport: Transport,
}

impl IamClient {
    /// Builds a client with its own connections. Fails only when `ca_bundle` is unreadable or
    /// the system trust store cannot be loaded.
    pub fn new(options: ClientOptions) -> Result<IamClient, IamError> {
        Ok(IamClient {
            transport: Transport::new(options).map_err(IamError::Setup)?,
        })
    }

    /// A client sharing `sts`'s connections, options and trust roots.
    pub fn from_sts(sts: &StsClient) -> IamClient {
        IamClient {
            transport: sts.transport().clone(),
        }
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        self.transport.options()
    }

    /// `GetUser`: the user named, or the user whose key signs the request.
    pub async fn get_user(
        &self,
        endpoint: &IamEndpoint,
        key: SigningKey<'_>,
        user_name: Option<&str>,
    ) -> Result<IamUser, IamError> {
        let req = IamRequest::GetUser {
            user_name: user_name.map(str::to_owned),
        };
        let body = self.send(endpoint, &req, key).await?;
        parse_user(&body).map_err(|source| malformed(&req, endpoint, source))
    }

    /// `ListAccessKeys`, every page: the user's access keys (ids, status, creation date).
    pub async fn list_access_keys(
        &self,
        endpoint: &IamEndpoint,
        key: SigningKey<'_>,
        user_name: Option<&str>,
    ) -> Result<Vec<AccessKeyInfo>, IamError> {
        let mut all = Vec::new();
        let mut marker = None;
        // A user has at most two keys; the bound only stops a server that never ends the list.
        for _ in 0..100 {
            let req = IamRequest::ListAccessKeys {
                user_name: user_name.map(str::to_owned),
                marker: marker.take(),
            };
            let body = self.send(endpoint, &req, key).await?;
            let (keys, next) =
                parse_access_keys(&body).map_err(|source| malformed(&req, endpoint, source))?;
            all.extend(keys);
            match next {
                Some(m) => marker = Some(m),
                None => return Ok(all),
            }
        }
        Err(IamError::Malformed {
            action: "ListAccessKeys",
            endpoint: endpoint.to_string(),
            source: ParseError::Missing("IsTruncated"),
        })
    }

    /// `CreateAccessKey`: a new active key for the user; the secret goes straight into a
    /// `SecretString`.
    ///
    /// Not idempotent: each call that reaches IAM creates a key (and a user may have two). So
    /// the request is retried only when IAM throttled it, which means IAM did not carry it out.
    /// After a timeout, a lost connection, a 5xx or an unreadable 200 it is **not** retried, as
    /// the key may have been created; the error is then [`IamError::CreateOutcomeUnknown`], and
    /// the caller should list the user's keys before creating another. IAM is eventually
    /// consistent: a new key can take a few seconds to be accepted everywhere.
    pub async fn create_access_key(
        &self,
        endpoint: &IamEndpoint,
        key: SigningKey<'_>,
        user_name: Option<&str>,
    ) -> Result<NewAccessKey, IamError> {
        let req = IamRequest::CreateAccessKey {
            user_name: user_name.map(str::to_owned),
        };
        let unknown = |e: IamError| {
            if e.is_definite_refusal() {
                e
            } else {
                IamError::CreateOutcomeUnknown {
                    source: Box::new(e),
                }
            }
        };
        let body = self.send(endpoint, &req, key).await.map_err(unknown)?;
        parse_new_key(&body).map_err(|source| unknown(malformed(&req, endpoint, source)))
    }

    /// `UpdateAccessKey`: sets a key `Active` or `Inactive` (an inactive key is refused by AWS
    /// but can be reactivated; a safer first step than deleting).
    pub async fn update_access_key(
        &self,
        endpoint: &IamEndpoint,
        key: SigningKey<'_>,
        user_name: Option<&str>,
        access_key_id: &str,
        status: AccessKeyStatus,
    ) -> Result<(), IamError> {
        let req = IamRequest::UpdateAccessKey {
            user_name: user_name.map(str::to_owned),
            access_key_id: access_key_id.to_owned(),
            status,
        };
        self.send(endpoint, &req, key).await.map(drop)
    }

    /// `DeleteAccessKey`. When an attempt failed in a way that may have deleted the key (a
    /// timeout or 5xx) and the retry then finds no such key, the key counts as deleted.
    pub async fn delete_access_key(
        &self,
        endpoint: &IamEndpoint,
        key: SigningKey<'_>,
        user_name: Option<&str>,
        access_key_id: &str,
    ) -> Result<(), IamError> {
        let req = IamRequest::DeleteAccessKey {
            user_name: user_name.map(str::to_owned),
            access_key_id: access_key_id.to_owned(),
        };
        self.send(endpoint, &req, key).await.map(drop)
    }

    /// Sends `req` with retries (see the module documentation) and returns the 200 body.
    async fn send(
        &self,
        endpoint: &IamEndpoint,
        req: &IamRequest,
        key: SigningKey<'_>,
    ) -> Result<String, IamError> {
        let retry = self.options().retry;
        let create = matches!(req, IamRequest::CreateAccessKey { .. });
        let delete = matches!(req, IamRequest::DeleteAccessKey { .. });
        let mut may_have_run = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(endpoint, req, key).await {
                Err(e) if delete && may_have_run && e.code() == Some("NoSuchEntity") => {
                    return Ok(String::new());
                }
                Err(e)
                    if e.is_retryable()
                        && (!create || e.is_throttled())
                        && attempt < retry.max_attempts =>
                {
                    may_have_run |= !e.is_throttled();
                    let delay = retry.delay(attempt - 1, fastrand::f64());
                    tracing::debug!(action = req.action(), %endpoint, attempt, ?delay, error = %e, "retrying IAM call");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        endpoint: &IamEndpoint,
        req: &IamRequest,
        key: SigningKey<'_>,
    ) -> Result<String, IamError> {
        let action = req.action();
        let body = req.form_body();
        let endpoint_text = || endpoint.to_string();
        self.transport
            .call(&Call {
                url: &endpoint.url,
                signing_region: &endpoint.signing_region,
                service: "iam",
                body: &body,
                key: Some(key),
            })
            .await
            .map_err(|failure| match failure {
                Failure::Service { status, error } => IamError::Service(ServiceError {
                    action,
                    status,
                    kind: error.kind,
                    code: error.code,
                    message: error.message,
                    request_id: error.request_id,
                }),
                Failure::Http { status } => IamError::Http {
                    action,
                    endpoint: endpoint_text(),
                    status,
                },
                Failure::Transport(detail) => IamError::Transport {
                    endpoint: endpoint_text(),
                    detail,
                },
                Failure::Timeout => IamError::Timeout {
                    endpoint: endpoint_text(),
                    secs: self.options().timeout.as_secs(),
                },
                Failure::TooLarge => IamError::TooLarge {
                    endpoint: endpoint_text(),
                    limit: crate::sts::client::MAX_BODY,
                },
                Failure::Setup(detail) => IamError::Setup(detail),
            })
    }
}

fn malformed(req: &IamRequest, endpoint: &IamEndpoint, source: ParseError) -> IamError {
    IamError::Malformed {
        action: req.action(),
        endpoint: endpoint.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use time::macros::datetime;

    // Response samples shaped as in the IAM API Reference (GetUser, ListAccessKeys,
    // CreateAccessKey), with the documentation's example values. GetUser has a decoy `Arn`
    // nested before the user's own, which a lookup by descendant would pick.
    const GET_USER: &str = r#"<GetUserResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetUserResult>
    <User>
      <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId>
      <Path>/division_abc/subdivision_xyz/</Path>
      <UserName>Bob</UserName>
      <PermissionsBoundary>
        <PermissionsBoundaryArn>arn:aws:iam::123456789012:policy/boundary</PermissionsBoundaryArn>
        <Arn>arn:aws:iam::123456789012:policy/decoy</Arn>
      </PermissionsBoundary>
      <Arn>arn:aws:iam::123456789012:user/division_abc/subdivision_xyz/Bob</Arn>
      <CreateDate>2013-10-02T17:01:44Z</CreateDate>
    </User>
  </GetUserResult>
  <ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata>
</GetUserResponse>"#;

    const LIST_KEYS: &str = r#"<ListAccessKeysResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <ListAccessKeysResult>
    <UserName>Bob</UserName>
    <AccessKeyMetadata>
      <member>
        <UserName>Bob</UserName>
        <AccessKeyId>AKIAIOSFODNN7EXAMPLE</AccessKeyId>
        <Status>Active</Status>
        <CreateDate>2012-05-08T23:34:01Z</CreateDate>
      </member>
      <member>
        <UserName>Bob</UserName>
        <AccessKeyId>AKIAI44QH8DHBEXAMPLE</AccessKeyId>
        <Status>Inactive</Status>
      </member>
    </AccessKeyMetadata>
    <IsTruncated>false</IsTruncated>
  </ListAccessKeysResult>
  <ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata>
</ListAccessKeysResponse>"#;

    const CREATE_KEY: &str = r#"<CreateAccessKeyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <CreateAccessKeyResult>
    <AccessKey>
      <UserName>Bob</UserName>
      <AccessKeyId>AKIAIOSFODNN7EXAMPLE</AccessKeyId>
      <Status>Active</Status>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <CreateDate>2024-05-08T23:34:01.123456Z</CreateDate>
    </AccessKey>
  </CreateAccessKeyResult>
  <ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata>
</CreateAccessKeyResponse>"#;

    #[test]
    fn parses_get_user_from_the_user_element_only() {
        let u = parse_user(GET_USER).unwrap();
        assert_eq!(u.user_name, "Bob");
        assert_eq!(u.user_id, "AIDACKCEVSQ6C2EXAMPLE");
        assert_eq!(
            u.arn,
            "arn:aws:iam::123456789012:user/division_abc/subdivision_xyz/Bob"
        );
        assert_eq!(
            parse_user("<GetUserResponse/>").unwrap_err(),
            ParseError::Missing("User")
        );
    }

    #[test]
    fn parses_access_key_pages() {
        let (keys, next) = parse_access_keys(LIST_KEYS).unwrap();
        assert_eq!(next, None);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(keys[0].status, AccessKeyStatus::Active);
        assert_eq!(
            keys[0].create_date,
            Some(datetime!(2012-05-08 23:34:01 UTC))
        );
        assert_eq!(keys[0].user_name.as_deref(), Some("Bob"));
        assert_eq!(keys[1].status, AccessKeyStatus::Inactive);
        assert_eq!(keys[1].create_date, None);

        let truncated = LIST_KEYS.replace(
            "<IsTruncated>false</IsTruncated>",
            "<IsTruncated>true</IsTruncated><Marker>page+2</Marker>",
        );
        assert_eq!(
            parse_access_keys(&truncated).unwrap().1.as_deref(),
            Some("page+2")
        );
        let no_marker = LIST_KEYS.replace("false</IsTruncated>", "true</IsTruncated>");
        assert_eq!(
            parse_access_keys(&no_marker).unwrap_err(),
            ParseError::Missing("Marker")
        );
        let empty = "<ListAccessKeysResponse><ListAccessKeysResult><AccessKeyMetadata/>\
                     <IsTruncated>false</IsTruncated></ListAccessKeysResult></ListAccessKeysResponse>";
        assert_eq!(parse_access_keys(empty).unwrap(), (vec![], None));
        let bad_date = LIST_KEYS.replace("2012-05-08T23:34:01Z", "yesterday");
        assert_eq!(
            parse_access_keys(&bad_date).unwrap_err(),
            ParseError::BadTimestamp {
                element: "CreateDate",
                value: "yesterday".into()
            }
        );
        let odd = LIST_KEYS.replace("Inactive", "Retired");
        assert_eq!(
            parse_access_keys(&odd).unwrap().0[1].status,
            AccessKeyStatus::Other("Retired".into())
        );
    }

    #[test]
    fn parses_a_new_key_into_a_secret() {
        let k = parse_new_key(CREATE_KEY).unwrap();
        assert_eq!(k.key.access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(
            k.key.secret_access_key.expose_secret(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(k.user_name, "Bob");
        assert_eq!(
            k.create_date,
            Some(datetime!(2024-05-08 23:34:01.123456 UTC))
        );
        assert!(!format!("{k:?}").contains("EXAMPLEKEY"));
        // Broken XML: roxmltree's message (which may quote the document) is not passed on.
        let broken = CREATE_KEY.replace("</SecretAccessKey>", "</Secret&AccessKey>");
        let err = parse_new_key(&broken).unwrap_err();
        assert!(!err.to_string().contains("EXAMPLEKEY"), "{err}");
        let no_secret = CREATE_KEY.replace("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY", "");
        assert_eq!(
            parse_new_key(&no_secret).unwrap_err(),
            ParseError::Missing("SecretAccessKey")
        );
    }

    #[test]
    fn endpoints_follow_the_partition() {
        let e = |r: &str| {
            let e = IamEndpoint::aws(r).unwrap();
            (e.url.to_string(), e.signing_region)
        };
        let global = (
            "https://iam.amazonaws.com/".to_owned(),
            "us-east-1".to_owned(),
        );
        assert_eq!(e("eu-west-1"), global);
        assert_eq!(e("us-east-1"), global);
        assert_eq!(e("aws-global"), global);
        assert_eq!(e("local"), global);
        assert_eq!(e("cn-x"), global, "not a region of aws-cn by its regex");
        assert_eq!(
            e("cn-northwest-1"),
            (
                "https://iam.cn-north-1.amazonaws.com.cn/".to_owned(),
                "cn-north-1".to_owned()
            )
        );
        assert_eq!(
            e("us-gov-east-1"),
            (
                "https://iam.us-gov.amazonaws.com/".to_owned(),
                "us-gov-west-1".to_owned()
            )
        );
        assert_eq!(e("us-isob-east-1").1, "us-isob-east-1");
        assert_eq!(e("us-iso-west-1").1, "us-iso-east-1");
        assert!(IamEndpoint::aws("us east 1").is_none());
        let custom = IamEndpoint::custom("http://127.0.0.1:5000".parse().unwrap(), "eu-west-1");
        assert_eq!(custom.signing_region, "eu-west-1");
        assert_eq!(custom.to_string(), "http://127.0.0.1:5000/");
    }

    #[test]
    fn form_bodies_in_model_order() {
        assert_eq!(
            IamRequest::GetUser { user_name: None }.form_body(),
            "Action=GetUser&Version=2010-05-08"
        );
        assert_eq!(
            IamRequest::ListAccessKeys {
                user_name: Some("a b".into()),
                marker: Some("m+/=".into())
            }
            .form_body(),
            "Action=ListAccessKeys&Version=2010-05-08&UserName=a+b&Marker=m%2B%2F%3D"
        );
        assert_eq!(
            IamRequest::UpdateAccessKey {
                user_name: Some("bob".into()),
                access_key_id: "AKIDEXAMPLE".into(),
                status: AccessKeyStatus::Inactive,
            }
            .form_body(),
            "Action=UpdateAccessKey&Version=2010-05-08&UserName=bob&AccessKeyId=AKIDEXAMPLE\
             &Status=Inactive"
        );
        assert_eq!(
            IamRequest::DeleteAccessKey {
                user_name: None,
                access_key_id: "AKIDEXAMPLE".into(),
            }
            .form_body(),
            "Action=DeleteAccessKey&Version=2010-05-08&AccessKeyId=AKIDEXAMPLE"
        );
    }

    fn service(action: &'static str, status: u16, code: &str) -> IamError {
        IamError::Service(ServiceError {
            action,
            status,
            kind: "Sender".into(),
            code: code.into(),
            message: "server says".into(),
            request_id: Some("rid".into()),
        })
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e = service("CreateAccessKey", 409, "LimitExceeded");
        assert_eq!(
            e.to_string(),
            "IAM CreateAccessKey failed: the IAM user already has two access keys, the most IAM \
             allows: delete one (aws iam delete-access-key --access-key-id ID) and try again \
             (LimitExceeded: server says, request id rid)"
        );
        assert!(!e.is_retryable());
        let e = service("ListAccessKeys", 403, "AccessDenied").to_string();
        assert!(e.contains("may not call iam:ListAccessKeys"), "{e}");
        assert!(e.contains("arn:aws:iam::*:user/${aws:username}"), "{e}");
        let e = service("DeleteAccessKey", 404, "NoSuchEntity").to_string();
        assert!(e.contains("no such access key"), "{e}");
        let e = service("GetUser", 404, "NoSuchEntity").to_string();
        assert!(e.contains("no such IAM user"), "{e}");
        let e = service("GetUser", 400, "Throttling");
        assert!(e.to_string().contains("try again in a minute"), "{e}");
        assert!(e.is_retryable() && e.is_throttled());
        let e = service("GetUser", 400, "SomethingNew").to_string();
        assert_eq!(
            e,
            "IAM GetUser failed: SomethingNew: server says, request id rid"
        );
    }

    #[test]
    fn only_refusals_rule_out_a_created_key() {
        assert!(service("CreateAccessKey", 409, "LimitExceeded").is_definite_refusal());
        assert!(service("CreateAccessKey", 400, "Throttling").is_definite_refusal());
        assert!(!service("CreateAccessKey", 503, "ServiceUnavailable").is_definite_refusal());
        assert!(!service("CreateAccessKey", 500, "ServiceFailure").is_definite_refusal());
        let timeout = IamError::Timeout {
            endpoint: "https://iam.amazonaws.com/".into(),
            secs: 20,
        };
        assert!(!timeout.is_definite_refusal());
        let unknown = IamError::CreateOutcomeUnknown {
            source: Box::new(timeout),
        };
        assert!(!unknown.is_retryable());
        let text = unknown.to_string();
        assert!(
            text.contains("did not answer within 20 s")
                && text.contains("list the user's access keys"),
            "{text}"
        );
    }
}
