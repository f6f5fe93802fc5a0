//! The EC2 instance-metadata (IMDSv2) compatible endpoint: one profile per listener, or one per
//! route (`routes`, `daemon/routes.rs`), as if each routed container were an instance of its own.
//!
//! [`route`] maps a path to what it names (pure, fuzzed); [`ImdsHandler`] applies the token rules
//! and answers from the profile's pre-rendered credentials. Semantics follow
//! `docs/sdk-behaviour.md` sections 2, 3, 4 and 8: token TTL 1..=21600 echoed back, 400/401/403/405/404 exactly as real
//! IMDS, listings without a trailing newline, paths with or without a trailing `/`, `//` collapsed.
//!
//! On a routed listener the role is chosen per request from the peer: the listing shows the
//! peer's role name, `placement/*` its profile's region; credentials under another route's role
//! name are 404 (as IMDS answers an unknown role) and an access line; a peer no route names gets
//! a token (it names no role) and 403 for everything else. Tokens are not bound to a route, and
//! need not be: a token only proves that its holder asked this listener recently, and what a
//! request gets is decided by who sends it, never by the token. A token leaked from one container
//! to another therefore gives the second container its own role, or nothing.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{ALLOW, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use time::OffsetDateTime;

use super::http::{Head, Refusal, Reply};
use super::metrics::RefusedReason;
use super::policy::{HTTP_COLD_START_WAIT, Policy};
use super::routes::{Pick, Serves};
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

/// What one "instance" sees: every peer of a listener without routes, or one route's peers.
pub(crate) struct ImdsRole {
    /// The served profile's state.
    pub cell: Arc<ProfileCell>,
    /// Role name in the listing.
    pub role_name: String,
    /// Region reported by `placement/*` and the identity document.
    pub region: String,
}

/// Everything one IMDS listener needs to answer.
pub struct ImdsHandler {
    /// Identity the tokens are bound to (the bound address).
    pub listener_id: String,
    /// The role of every admitted peer, or of each route's peers.
    pub(crate) roles: Serves<ImdsRole>,
    /// Serve tokenless requests.
    pub imds_v1: bool,
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
                    head.refused("IMDS", "-", "WrongToken");
                    page(StatusCode::UNAUTHORIZED)
                })
            }
            None if self.imds_v1 => None,
            None => {
                head.refused("IMDS", "-", "NoToken");
                Some(page(StatusCode::UNAUTHORIZED))
            }
        }
    }

    async fn credentials(&self, head: &Head, pick: Pick<'_, ImdsRole>, extended: bool) -> Reply {
        let asker = Asker {
            cold_start: HTTP_COLD_START_WAIT,
            audit: Some((&head.audit, "IMDS")),
            user_agent: head.header("user-agent").unwrap_or("-"),
        };
        let role = pick.target;
        match role.cell.serve(&asker).await {
            Ok(v) => {
                pick.served();
                text(if extended {
                    v.imds_extended_json.clone()
                } else {
                    v.imds_json.clone()
                })
            }
            Err(problem) => {
                pick.refused();
                failure(role, &problem)
            }
        }
    }

    /// Credentials under a role name that is not the peer's: 404, as IMDS answers an unknown
    /// role; on a routed listener also a refusal of the peer's route, and an access line when
    /// the name is another route's role (a client trying a role it was not given).
    fn other_role(&self, head: &Head, pick: Pick<'_, ImdsRole>, asked: &str) -> Reply {
        if pick.counts.is_some() {
            pick.refused();
            if self.roles.targets().any(|r| r.role_name == asked) {
                head.refused("IMDS", &pick.target.cell.name, "OtherRoutesRole");
            }
        }
        page(StatusCode::NOT_FOUND)
    }

    fn identity_document(&self, role: &ImdsRole) -> Reply {
        let account = role.cell.current().and_then(|v| v.creds.account_id.clone());
        let doc = serde_json::json!({
            "accountId": account,
            "architecture": std::env::consts::ARCH,
            "availabilityZone": format!("{}a", role.region),
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
            "region": role.region,
            "version": "2017-09-30",
        });
        text(serde_json::to_vec_pretty(&doc).expect("JSON values serialize"))
    }

    fn iam_info(&self, role: &ImdsRole) -> Reply {
        let now = OffsetDateTime::now_utc();
        match role
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
                    "InstanceProfileArn": format!("arn:aws:iam::{account}:instance-profile/{}", role.role_name),
                    "InstanceProfileId": format!("AIPA{}", &self.instance_id[2..].to_ascii_uppercase()),
                });
                text(serde_json::to_vec_pretty(&body).expect("JSON values serialize"))
            }
            None => failure(role, &role.cell.unavailable()),
        }
    }
}

fn failure(role: &ImdsRole, problem: &Problem) -> Reply {
    failure_json(
        problem.code.as_str(),
        &problem.public_message(&role.cell.name),
        OffsetDateTime::now_utc(),
    )
}

impl ImdsHandler {
    /// Answers one request that passed the guards.
    pub async fn handle(&self, head: Head) -> Reply {
        let route = route(&head.path);
        if let Some(refused) = self.method_and_token(&route, &head) {
            return refused;
        }
        if route == Route::Token {
            return self.issue_token(&head);
        }
        // Everything but the token depends on who asks (on a routed listener).
        let Some(pick) = self.roles.pick(head.who) else {
            head.refused("IMDS", "-", "NoRoute");
            return self.refuse(Refusal::NoRoute);
        };
        let role = pick.target;
        match route {
            Route::Listing(body) => text(body),
            Route::RoleList => text(role.role_name.clone()),
            Route::Credentials {
                role: asked,
                extended,
            } if asked == role.role_name => self.credentials(&head, pick, extended).await,
            Route::Credentials { role: asked, .. } => self.other_role(&head, pick, &asked),
            Route::Token | Route::NotFound => page(StatusCode::NOT_FOUND),
            Route::IamInfo => self.iam_info(role),
            Route::Region => text(role.region.clone()),
            Route::AvailabilityZone => text(format!("{}a", role.region)),
            Route::InstanceId => text(self.instance_id.clone()),
            Route::IdentityDocument => self.identity_document(role),
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

    mod routed {
        use super::super::*;
        use crate::config::{Route as ConfigRoute, RouteFrom};
        use crate::creds::TemporaryCredentials;
        use crate::daemon::audit::ConnAudit;
        use crate::daemon::conns::Peer;
        use crate::daemon::routes::RouteTable;
        use crate::daemon::state::Vended;
        use hyper::header::HeaderMap;

        fn role(profile: &str, key: &str, region: &str) -> ImdsRole {
            let cell = ProfileCell::new(profile);
            let now = OffsetDateTime::now_utc();
            let creds = TemporaryCredentials::sample(key, now + time::Duration::hours(1));
            cell.install(Vended::new(creds, now, None), now);
            ImdsRole {
                cell,
                role_name: profile.into(),
                region: region.into(),
            }
        }

        /// `198.18.0.2` gets `ci`, the rest of `198.18.0.0/24` gets `dev`, uid 1001 `build`.
        fn handler() -> ImdsHandler {
            let routes =
                [("198.18.0.0/24", "dev"), ("198.18.0.2/32", "ci")].map(|(net, profile)| {
                    ConfigRoute {
                        from: RouteFrom::Net(net.parse().unwrap()),
                        profile: profile.into(),
                        scope: None,
                    }
                });
            let mut routes = routes.to_vec();
            routes.push(ConfigRoute {
                from: RouteFrom::Uid(1001),
                profile: "build".into(),
                scope: None,
            });
            let table = RouteTable::new(&routes, None, |r| match r.profile.as_str() {
                "ci" => role("ci", "ASIACI", "eu-west-1"),
                "dev" => role("dev", "ASIADEV", "us-east-2"),
                _ => role("build", "ASIABUILD", "us-east-1"),
            });
            ImdsHandler {
                listener_id: "198.18.0.1:9254".into(),
                roles: Serves::Routes(table),
                imds_v1: false,
                key: Arc::new(TokenKey::from_bytes([7; 32])),
                instance_id: instance_id("198.18.0.1:9254"),
                started: OffsetDateTime::now_utc(),
            }
        }

        fn head(who: Peer, method: Method, path: &str, token: Option<&str>) -> Head {
            let mut headers = HeaderMap::new();
            if let Some(t) = token {
                headers.insert(TOKEN_HEADER, HeaderValue::from_str(t).unwrap());
            }
            headers.insert(TTL_HEADER, HeaderValue::from_static("60"));
            let peer = match who {
                Peer::Remote(ip) => std::net::SocketAddr::new(ip, 40000),
                _ => "198.18.0.1:40000".parse().unwrap(),
            };
            Head {
                method,
                path: path.into(),
                authority: None,
                headers,
                peer,
                who,
                audit: ConnAudit::new("198.18.0.1:9254".parse().unwrap(), peer, who.uid()),
            }
        }

        fn remote(ip: &str) -> Peer {
            Peer::Remote(ip.parse().unwrap())
        }

        async fn get(h: &ImdsHandler, who: Peer, path: &str, token: &str) -> Reply {
            h.handle(head(who, Method::GET, path, Some(token))).await
        }

        async fn token(h: &ImdsHandler, who: Peer) -> String {
            let r = h
                .handle(head(who, Method::PUT, "/latest/api/token", None))
                .await;
            assert_eq!(r.status, StatusCode::OK);
            String::from_utf8(r.body.to_vec()).unwrap()
        }

        fn body(r: &Reply) -> String {
            String::from_utf8_lossy(&r.body).into_owned()
        }

        const LIST: &str = "/latest/meta-data/iam/security-credentials/";

        #[tokio::test]
        async fn each_peer_sees_its_own_role_and_only_it() {
            let h = handler();
            let (ci, dev, build) = (
                remote("198.18.0.2"),
                remote("198.18.0.3"),
                Peer::Local { uid: 1001 },
            );
            for (who, name, key, region) in [
                (ci, "ci", "ASIACI", "eu-west-1"),
                (dev, "dev", "ASIADEV", "us-east-2"),
                (build, "build", "ASIABUILD", "us-east-1"),
            ] {
                let t = token(&h, who).await;
                let r = get(&h, who, LIST, &t).await;
                assert_eq!((r.status, body(&r)), (StatusCode::OK, name.to_owned()));
                let r = get(&h, who, &format!("{LIST}{name}"), &t).await;
                assert!(body(&r).contains(key), "{name}: {}", body(&r));
                let r = get(&h, who, "/latest/meta-data/placement/region", &t).await;
                assert_eq!(body(&r), region);
                let r = get(&h, who, "/latest/meta-data/iam/info", &t).await;
                assert!(body(&r).contains(&format!("instance-profile/{name}")));
            }
            // Another route's role is unknown to this peer, extended form included.
            let t = token(&h, dev).await;
            for path in [
                format!("{LIST}ci"),
                "/latest/meta-data/iam/security-credentials-extended/ci".to_owned(),
            ] {
                let r = get(&h, dev, &path, &t).await;
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
                assert!(!body(&r).contains("ASIACI"));
            }
            let (stats, unrouted) = h.roles.routes().unwrap().stats();
            let counts: Vec<(&str, u64, u64)> = stats
                .iter()
                .map(|s| (s.profile.as_str(), s.served, s.refused))
                .collect();
            assert_eq!(counts, [("dev", 1, 2), ("ci", 1, 0), ("build", 1, 0)]);
            assert_eq!(unrouted, 0);
        }

        #[tokio::test]
        async fn a_token_carries_no_role_and_unrouted_peers_get_only_tokens() {
            let h = handler();
            let ci = remote("198.18.0.2");
            let dev = remote("198.18.0.3");
            // A token ci obtained, presented by dev: dev's role, never ci's.
            let t = token(&h, ci).await;
            let r = get(&h, dev, LIST, &t).await;
            assert_eq!(body(&r), "dev");
            let r = get(&h, dev, &format!("{LIST}ci"), &t).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            // A peer no route names: a token, then 403 whatever it asks, the token a routed peer
            // got included. A local user without a uid route is such a peer too.
            for stranger in [
                remote("198.18.1.9"),
                remote("fd00::1"),
                Peer::Local { uid: 1002 },
                Peer::LocalUnknown,
            ] {
                let own = token(&h, stranger).await;
                for tok in [&own, &t] {
                    for path in [
                        LIST,
                        "/latest/meta-data/",
                        "/latest/meta-data/placement/region",
                    ] {
                        let r = get(&h, stranger, path, tok).await;
                        assert_eq!(r.status, StatusCode::FORBIDDEN, "{stranger:?} {path}");
                    }
                    let r = get(&h, stranger, &format!("{LIST}ci"), tok).await;
                    assert_eq!(r.status, StatusCode::FORBIDDEN);
                    assert!(!body(&r).contains("ASIA"));
                }
            }
            // Without a token, IMDSv2's 401 comes first.
            let r = h
                .handle(head(remote("198.18.1.9"), Method::GET, LIST, None))
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            let (_, unrouted) = h.roles.routes().unwrap().stats();
            assert_eq!(unrouted, 4 * 2 * 4);
        }
    }
}
