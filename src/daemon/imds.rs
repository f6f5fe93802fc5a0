//! The EC2 instance-metadata (IMDSv2) compatible endpoint, one profile per listener.
//!
//! [`route`] maps a path to what it names (pure, fuzzed); [`ImdsHandler`] applies the token rules
//! and answers from the profile's pre-rendered credentials. Semantics follow
//! `docs/sdk-behaviour.md` sections 2, 3, 4 and 8: token TTL 1..=21600 echoed back, 400/401/403/405/404 exactly as real
//! IMDS, listings without a trailing newline, paths with or without a trailing `/`, `//` collapsed.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{ALLOW, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use time::OffsetDateTime;

use super::http::{Head, Refusal, Reply};
use super::metrics::RefusedReason;
use super::policy::{HTTP_COLD_START_WAIT, Policy};
use super::state::{Asker, ProfileCell};
use super::token::{TTL_RANGE, TokenKey};
use crate::creds::format_aws_time;
use crate::problem::Problem;

/// Header carrying the IMDSv2 session token on GETs.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Header carrying the requested TTL on the token PUT (and echoed in the response).
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/latest/api/token`.
    Token,
    /// A directory listing with fixed content.
    Listing(&'static str),
    /// `iam/security-credentials[-extended]/`: the role name.
    RoleList,
    /// `iam/security-credentials[-extended]/ROLE`.
    Credentials {
        /// Role name asked for.
        role: String,
        /// The extended form (adds `AccountId`).
        extended: bool,
    },
    /// `iam/info`.
    IamInfo,
    /// `placement/region`.
    Region,
    /// `placement/availability-zone`.
    AvailabilityZone,
    /// `instance-id`.
    InstanceId,
    /// `dynamic/instance-identity/document`.
    IdentityDocument,
    /// Anything else.
    NotFound,
}

/// Maps a request path to a [`Route`]. Empty segments are dropped, so trailing slashes and `//`
/// do not matter.
pub fn route(path: &str) -> Route {
    // At most 5 segments name anything; collected without allocating.
    let mut buf = [""; 6];
    let mut n = 0;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if n == buf.len() {
            return Route::NotFound;
        }
        buf[n] = seg;
        n += 1;
    }
    match &buf[..n] {
        [] => Route::Listing("latest"),
        ["latest"] => Route::Listing("dynamic\nmeta-data"),
        ["latest", "api", "token"] => Route::Token,
        ["latest", "meta-data"] => Route::Listing("iam/\ninstance-id\nplacement/"),
        ["latest", "meta-data", "iam"] => Route::Listing("info\nsecurity-credentials/"),
        ["latest", "meta-data", "iam", "info"] => Route::IamInfo,
        [
            "latest",
            "meta-data",
            "iam",
            "security-credentials" | "security-credentials-extended",
        ] => Route::RoleList,
        [
            "latest",
            "meta-data",
            "iam",
            kind @ ("security-credentials" | "security-credentials-extended"),
            role,
        ] => Route::Credentials {
            role: (*role).to_owned(),
            extended: *kind == "security-credentials-extended",
        },
        ["latest", "meta-data", "placement"] => Route::Listing("availability-zone\nregion"),
        ["latest", "meta-data", "placement", "region"] => Route::Region,
        ["latest", "meta-data", "placement", "availability-zone"] => Route::AvailabilityZone,
        ["latest", "meta-data", "instance-id"] => Route::InstanceId,
        ["latest", "dynamic"] => Route::Listing("instance-identity/"),
        ["latest", "dynamic", "instance-identity"] => Route::Listing("document"),
        ["latest", "dynamic", "instance-identity", "document"] => Route::IdentityDocument,
        _ => Route::NotFound,
    }
}

/// Everything one IMDS listener needs to answer.
pub struct ImdsHandler {
    /// Identity the tokens are bound to (the bound address).
    pub listener_id: String,
    /// The served profile's state.
    pub cell: Arc<ProfileCell>,
    /// Role name in the listing.
    pub role_name: String,
    /// Serve tokenless requests.
    pub imds_v1: bool,
    /// Region reported by `placement/*` and the identity document.
    pub region: String,
    /// HMAC key for tokens.
    pub key: Arc<TokenKey>,
    /// `i-…` id, stable per listener.
    pub instance_id: String,
    /// "Launch" time for `pendingTime`.
    pub started: OffsetDateTime,
}

const TEXT: &str = "text/plain";

fn page(status: StatusCode) -> Reply {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    Reply::new(
        status,
        "text/html",
        format!(
            "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
             <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
             \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
             <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
             <head>\n  <title>{code} - {reason}</title>\n </head>\n \
             <body>\n  <h1>{code} - {reason}</h1>\n </body>\n</html>\n"
        ),
    )
}

fn text(body: impl Into<Bytes>) -> Reply {
    Reply::new(StatusCode::OK, TEXT, body)
}

/// The IMDS failure document (`Code` other than `Success`), served with 200 as real IMDS does.
pub fn failure_json(code: &str, message: &str, at: OffsetDateTime) -> Reply {
    let body = serde_json::json!({
        "Code": code,
        "Message": message,
        "LastUpdated": format_aws_time(at),
    });
    text(serde_json::to_vec_pretty(&body).expect("JSON values serialize"))
}

impl ImdsHandler {
    fn now_unix() -> u64 {
        OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
    }

    fn issue_token(&self, head: &Head) -> Reply {
        // A proxy in the way (the SSRF that IMDSv2 exists to stop) shows itself with one of these:
        // EC2 refuses X-Forwarded-For; `Forwarded` (RFC 7239) and `Via` are what other proxies add.
        if let Some(h) = ["x-forwarded-for", "forwarded", "via"]
            .into_iter()
            .find(|h| head.headers.contains_key(*h))
        {
            tracing::warn!(peer = %head.peer, header = h, "refused an IMDS token request that came through a proxy");
            head.audit.count_refused(RefusedReason::ProxiedTokenRequest);
            return page(StatusCode::FORBIDDEN);
        }
        let ttl = head
            .header(TTL_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| TTL_RANGE.contains(t));
        let Some(ttl) = ttl else {
            return page(StatusCode::BAD_REQUEST);
        };
        let token = self.key.issue(&self.listener_id, Self::now_unix(), ttl);
        text(token).with_header(HeaderName::from_static(TTL_HEADER), HeaderValue::from(ttl))
    }

    /// `None` when the request may proceed; otherwise the 401.
    fn check_token(&self, head: &Head) -> Option<Reply> {
        match head.headers.get(TOKEN_HEADER) {
            Some(v) => {
                let ok = v
                    .to_str()
                    .map(|t| {
                        self.key
                            .verify(&self.listener_id, t.trim(), Self::now_unix())
                    })
                    .unwrap_or(false);
                (!ok).then(|| {
                    head.audit.count_refused(RefusedReason::BadToken);
                    page(StatusCode::UNAUTHORIZED)
                })
            }
            None if self.imds_v1 => None,
            None => {
                head.audit.count_refused(RefusedReason::MissingToken);
                Some(page(StatusCode::UNAUTHORIZED))
            }
        }
    }

    async fn credentials(&self, head: &Head, extended: bool) -> Reply {
        let asker = Asker {
            cold_start: HTTP_COLD_START_WAIT,
            audit: Some((&head.audit, "IMDS")),
            user_agent: head.header("user-agent").unwrap_or("-"),
        };
        match self.cell.serve(&asker).await {
            Ok(v) if extended => text(v.imds_extended_json.clone()),
            Ok(v) => text(v.imds_json.clone()),
            Err(problem) => self.failure(&problem),
        }
    }

    fn failure(&self, problem: &Problem) -> Reply {
        failure_json(
            problem.code.as_str(),
            &problem.public_message(&self.cell.name),
            OffsetDateTime::now_utc(),
        )
    }

    fn identity_document(&self) -> Reply {
        let account = self.cell.current().and_then(|v| v.creds.account_id.clone());
        let doc = serde_json::json!({
            "accountId": account,
            "architecture": std::env::consts::ARCH,
            "availabilityZone": format!("{}a", self.region),
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": "ami-00000000000000000",
            "instanceId": self.instance_id,
            "instanceType": "credvend",
            "kernelId": null,
            "pendingTime": format_aws_time(self.started),
            "privateIp": self.listener_id.rsplit_once(':').map(|(ip, _)| ip.trim_matches(['[', ']'])).unwrap_or(""),
            "ramdiskId": null,
            "region": self.region,
            "version": "2017-09-30",
        });
        text(serde_json::to_vec_pretty(&doc).expect("JSON values serialize"))
    }

    fn iam_info(&self) -> Reply {
        let now = OffsetDateTime::now_utc();
        match self
            .cell
            .current()
            .filter(|v| Policy::servable(v.creds.expiration, now))
        {
            Some(v) => {
                let account = v
                    .creds
                    .account_id
                    .clone()
                    .unwrap_or_else(|| "000000000000".into());
                let body = serde_json::json!({
                    "Code": "Success",
                    "LastUpdated": format_aws_time(v.issued),
                    "InstanceProfileArn": format!("arn:aws:iam::{account}:instance-profile/{}", self.role_name),
                    "InstanceProfileId": format!("AIPA{}", &self.instance_id[2..].to_ascii_uppercase()),
                });
                text(serde_json::to_vec_pretty(&body).expect("JSON values serialize"))
            }
            None => self.failure(&self.cell.unavailable()),
        }
    }
}

impl ImdsHandler {
    /// Answers one request that passed the guards.
    pub async fn handle(&self, head: Head) -> Reply {
        let route = route(&head.path);
        if let Some(refused) = self.method_and_token(&route, &head) {
            return refused;
        }
        match route {
            Route::Token => self.issue_token(&head),
            Route::Listing(body) => text(body),
            Route::RoleList => text(self.role_name.clone()),
            Route::Credentials { role, extended } if role == self.role_name => {
                self.credentials(&head, extended).await
            }
            Route::Credentials { .. } | Route::NotFound => page(StatusCode::NOT_FOUND),
            Route::IamInfo => self.iam_info(),
            Route::Region => text(self.region.clone()),
            Route::AvailabilityZone => text(format!("{}a", self.region)),
            Route::InstanceId => text(self.instance_id.clone()),
            Route::IdentityDocument => self.identity_document(),
        }
    }

    /// `None` when the method suits the route and (except on the token PUT) the token rules are
    /// met; otherwise the refusal: 405 with `Allow`, 403 for a PUT elsewhere, 401.
    fn method_and_token(&self, route: &Route, head: &Head) -> Option<Reply> {
        match (route, &head.method) {
            (Route::Token, &Method::PUT) => None,
            (Route::Token, _) => Some(
                page(StatusCode::METHOD_NOT_ALLOWED)
                    .with_header(ALLOW, HeaderValue::from_static("OPTIONS, PUT")),
            ),
            (_, &Method::GET | &Method::HEAD) => self.check_token(head),
            (_, &Method::PUT) => Some(page(StatusCode::FORBIDDEN)),
            _ => Some(
                page(StatusCode::METHOD_NOT_ALLOWED)
                    .with_header(ALLOW, HeaderValue::from_static("GET, HEAD")),
            ),
        }
    }

    /// The answer to a refused request.
    pub fn refuse(&self, refusal: Refusal) -> Reply {
        page(refusal.status())
    }
}

/// A stable `i-` + 17 hex digits id derived from the listener address.
pub fn instance_id(listener: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(listener.as_bytes());
    format!("i-{}", &hex::encode(digest)[..17])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_trailing_and_double_slashes() {
        let creds = Route::Credentials {
            role: "dev".into(),
            extended: false,
        };
        for p in [
            "/latest/meta-data/iam/security-credentials/dev",
            "/latest/meta-data/iam/security-credentials/dev/",
            "//latest/meta-data/iam/security-credentials/dev",
            "/latest//meta-data/iam//security-credentials/dev",
        ] {
            assert_eq!(route(p), creds, "{p}");
        }
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials/"),
            Route::RoleList
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials"),
            Route::RoleList
        );
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials-extended/dev"),
            Route::Credentials {
                role: "dev".into(),
                extended: true
            }
        );
        assert_eq!(
            route("/latest/meta-data/placement/availability-zone/"),
            Route::AvailabilityZone
        );
        assert_eq!(route("/latest/api/token"), Route::Token);
        assert_eq!(route("/latest/api/token/"), Route::Token);
        assert_eq!(route("/latest/user-data"), Route::NotFound);
        assert_eq!(
            route("/latest/meta-data/iam/security-credentials/a/b"),
            Route::NotFound
        );
        assert_eq!(route("/2021-07-15/meta-data/"), Route::NotFound);
    }

    #[test]
    fn listings_have_no_trailing_newline() {
        for p in [
            "/",
            "/latest",
            "/latest/meta-data/",
            "/latest/meta-data/iam/",
            "/latest/dynamic/",
        ] {
            if let Route::Listing(body) = route(p) {
                assert!(!body.ends_with('\n') && !body.ends_with(' '), "{p}");
            } else {
                panic!("{p} is a listing");
            }
        }
    }

    #[test]
    fn instance_ids_look_like_ec2() {
        let id = instance_id("127.0.0.1:9254");
        assert_eq!(id.len(), 19);
        assert!(id.starts_with("i-"));
        assert_eq!(id, instance_id("127.0.0.1:9254"));
        assert_ne!(id, instance_id("127.0.0.1:9255"));
    }
}
