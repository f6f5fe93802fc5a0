//! The ECS-agent-compatible endpoint (`[ecs_agent]`): what the ECS agent serves to a task at
//! `http://169.254.170.2` + `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`. Every served profile has one
//! capability ID and its credentials are at `GET /v2/credentials/ID`; the path is the secret, as
//! with ECS, so no `Authorization` header is needed. Every SDK and CLI reads `RELATIVE_URI`, with
//! no host check and no token variable to set, which makes this the container route for clients
//! that refuse a plain-http `FULL_URI` outside loopback (docs/container-clients.md).
//!
//! - **IDs** are 32 random bytes, hex: unguessable, one per profile, never serving another
//!   profile (the ID is the only thing a request names). They persist in the state directory
//!   (`ecs-agent-id-PROFILE`, mode 0600) so containers keep working across daemon restarts;
//!   `credvend env PROFILE --container --rotate-id` replaces one and the old one is refused from
//!   that moment. Lookup compares the presented ID with every profile's in constant time.
//! - **A token, if sent, is ignored.** Clients send `AWS_CONTAINER_AUTHORIZATION_TOKEN` to the
//!   relative endpoint too when it is set (all five measured), so a request carrying one must not
//!   be refused; the ECS agent does not look at it either. It is never compared or logged.
//! - **Answers** follow the ECS agent (`agent/handlers/credentials/handler.go` of
//!   aws/amazon-ecs-agent, `processCredentialsV1V2Request`): the credentials JSON
//!   (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`, `RoleArn`; plus `AccountId`), 400
//!   `NoIdInRequest` without an ID and 400 `InvalidIdInRequest` for an unknown one; 404 for other
//!   paths; otherwise the profile's problem with its own status, as on the ECS endpoint. Each
//!   refusal is an access line of the connection's audit (peer, uid, path with the ID redacted).
//! - **Routes** (`routes` in `[ecs_agent]`, `daemon/routes.rs`): the ID still names the profile,
//!   and the peer's route must name the same one. A peer may fetch only its route's profile: a
//!   valid ID of another route's profile is answered exactly as an unknown ID (400
//!   `InvalidIdInRequest`: the answer does not confirm that the ID exists) with an access line
//!   `OtherRoutesId`; a peer no route names gets 403 (`NoRoute`) for any ID. So a leaked ID is
//!   worth nothing outside the containers its profile is routed to. The request without an ID
//!   (`/v2/credentials/`) is answered 400 for everyone, as before (what `doctor` sends).

use std::sync::Arc;

use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::audit::ENDPOINT_ECS_AGENT;
use super::ecs::{json_error, refusal_reply, served_reply};
use super::http::{Head, Refusal, Reply};
use super::policy::CONTAINER_COLD_START_WAIT;
use super::routes::{RouteTable, Routed};
use super::state::{Asker, ProfileCell};

/// Path prefix of the credentials resources (the ECS agent's v2 credentials path).
pub const PATH_PREFIX: &str = "/v2/credentials/";

/// What replaces an ID in logged paths.
const REDACTED: &str = "[REDACTED]";

/// Path segments at least this long are redacted in logs even outside [`PATH_PREFIX`]: a
/// mistyped path may carry a real ID.
const LONG_SEGMENT: usize = 32;

/// Length of an ID in hex characters.
const ID_HEX_LEN: usize = 64;

/// One served profile: its state and its capability ID.
pub(crate) struct AgentProfile {
    /// The profile's state.
    pub cell: Arc<ProfileCell>,
    /// Its ID (the last segment of its path).
    pub id: SecretString,
}

/// The handler of an `[ecs_agent]` listener.
pub(crate) struct EcsAgentHandler {
    /// Served profiles.
    pub profiles: Vec<AgentProfile>,
    /// Which peer may fetch which profile's ID; `None`: every admitted peer any ID.
    pub routes: Option<RouteTable<()>>,
}

/// A new random ID: 32 bytes from the OS, hex.
pub(crate) fn new_id() -> std::io::Result<SecretString> {
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).map_err(std::io::Error::other)?;
    Ok(SecretString::from(hex::encode(raw)))
}

/// Whether `text` (a file's content) is an ID this module made.
pub(crate) fn is_id(text: &str) -> bool {
    text.len() == ID_HEX_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` of `id`.
pub fn relative_uri(id: &str) -> String {
    format!("{PATH_PREFIX}{id}")
}

/// `path` as it may be logged: the ID of a credentials path, and any long segment elsewhere,
/// replaced by `[REDACTED]`.
pub fn redacted_path(path: &str) -> String {
    if let Some(rest) = path.strip_prefix(PATH_PREFIX) {
        return if rest.is_empty() {
            path.to_owned()
        } else {
            format!("{PATH_PREFIX}{REDACTED}")
        };
    }
    path.split('/')
        .map(|seg| {
            if seg.chars().count() >= LONG_SEGMENT {
                REDACTED
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl EcsAgentHandler {
    /// The profile whose ID is `presented`. Every ID is compared, each in constant time, and the
    /// match is selected without a branch: the time taken depends on the number of profiles,
    /// never on how much of an ID was right or which profile matched.
    fn find(&self, presented: &[u8]) -> Option<&AgentProfile> {
        let mut found = u64::MAX;
        for (i, p) in self.profiles.iter().enumerate() {
            let equal = p.id.expose_secret().as_bytes().ct_eq(presented);
            found.conditional_assign(&(i as u64), equal);
        }
        usize::try_from(found)
            .ok()
            .and_then(|i| self.profiles.get(i))
    }

    /// Answers one request that passed the guards.
    pub async fn handle(&self, head: Head) -> Reply {
        let refused = |reason, profile: &str| head.refused(ENDPOINT_ECS_AGENT, profile, reason);
        let id = match head.path.strip_prefix(PATH_PREFIX) {
            Some(id) => id,
            None if head.path == PATH_PREFIX.trim_end_matches('/') => "",
            None => {
                refused("UnknownPath", "-");
                return json_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "unknown path; credentials are served under /v2/credentials/ID (`credvend env PROFILE --container` prints AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)",
                );
            }
        };
        if !matches!(head.method, Method::GET | Method::HEAD) {
            refused("MethodNotAllowed", "-");
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use GET",
            )
            .with_header(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if id.is_empty() {
            refused("NoId", "-");
            return json_error(
                StatusCode::BAD_REQUEST,
                "NoIdInRequest",
                "CredentialsV2Request: No ID in the request",
            );
        }
        self.credentials(&head, id).await
    }

    /// The credentials `id` names, for a request of `head` (GET or HEAD, an ID given): when the
    /// listener has routes, only those of the peer's route's profile.
    async fn credentials(&self, head: &Head, id: &str) -> Reply {
        let user_agent = head.header("user-agent").unwrap_or("-");
        let refused = |reason, profile: &str| head.refused(ENDPOINT_ECS_AGENT, profile, reason);
        let route: Option<&Routed<()>> = match &self.routes {
            None => None,
            Some(table) => match table.pick(head.who) {
                Some(r) => Some(r),
                None => {
                    refused("NoRoute", "-");
                    return self.refuse(Refusal::NoRoute);
                }
            },
        };
        let unknown = || {
            json_error(
                StatusCode::BAD_REQUEST,
                "InvalidIdInRequest",
                "CredentialsV2Request: ID not found (a rotated ID is refused: `credvend env PROFILE --container` prints the current one)",
            )
        };
        let Some(profile) = self.find(id.as_bytes()) else {
            refused("UnknownId", route.map_or("-", |r| &r.profile));
            route.inspect(|r| r.counts.refused());
            return unknown();
        };
        if let Some(r) = route
            && r.profile != profile.cell.name
        {
            refused("OtherRoutesId", &r.profile);
            r.counts.refused();
            return unknown();
        }
        let asker = Asker {
            cold_start: CONTAINER_COLD_START_WAIT,
            audit: Some((&head.audit, ENDPOINT_ECS_AGENT)),
            user_agent,
        };
        let served = profile.cell.serve(&asker).await;
        if let Some(r) = route {
            match &served {
                Ok(_) => r.counts.served(),
                Err(_) => r.counts.refused(),
            }
        }
        served_reply(&served, &profile.cell.name)
    }

    /// The answer to a refused request.
    pub fn refuse(&self, refusal: Refusal) -> Reply {
        refusal_reply(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::TemporaryCredentials;
    use crate::daemon::audit::ConnAudit;
    use crate::daemon::state::Vended;
    use hyper::header::HeaderMap;
    use time::OffsetDateTime;

    fn cell(name: &str, key: &str) -> Arc<ProfileCell> {
        let cell = ProfileCell::new(name);
        let now = OffsetDateTime::now_utc();
        let creds = TemporaryCredentials::sample(key, now + time::Duration::hours(1));
        cell.install(Vended::new(creds, now, None), now);
        cell
    }

    fn head(path: &str, authorization: Option<&str>) -> Head {
        let mut headers = HeaderMap::new();
        if let Some(a) = authorization {
            headers.insert(
                hyper::header::AUTHORIZATION,
                HeaderValue::from_str(a).unwrap(),
            );
        }
        Head {
            method: Method::GET,
            path: path.to_owned(),
            authority: None,
            headers,
            peer: "127.0.0.1:40000".parse().unwrap(),
            who: crate::daemon::conns::Peer::Local { uid: 0 },
            audit: ConnAudit::new(
                "127.0.0.1:80".parse().unwrap(),
                "127.0.0.1:40000".parse().unwrap(),
                Some(0),
            ),
        }
    }

    fn handler() -> (EcsAgentHandler, String, String) {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        let (ta, tb) = (a.expose_secret().to_owned(), b.expose_secret().to_owned());
        let h = EcsAgentHandler {
            routes: None,
            profiles: vec![
                AgentProfile {
                    cell: cell("a", "ASIAA"),
                    id: a,
                },
                AgentProfile {
                    cell: cell("b", "ASIAB"),
                    id: b,
                },
            ],
        };
        (h, ta, tb)
    }

    #[tokio::test]
    async fn each_id_serves_its_own_profile_and_nothing_else() {
        let (h, a, b) = handler();
        assert!(is_id(&a) && a != b);
        for (id, key) in [(&a, "ASIAA"), (&b, "ASIAB")] {
            let r = h.handle(head(&relative_uri(id), None)).await;
            assert_eq!(r.status, StatusCode::OK);
            let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(json["AccessKeyId"], key);
            // A token sent along is ignored.
            let r = h.handle(head(&relative_uri(id), Some("anything"))).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let near = format!("{}0", &a[..a.len() - 1]);
        let near = if near == a {
            format!("{}1", &a[..a.len() - 1])
        } else {
            near
        };
        for path in [
            relative_uri(&near),
            relative_uri(&a[..32]),
            relative_uri(&format!("{a}{b}")),
            format!("{}/", relative_uri(&a)),
            relative_uri(&a.to_uppercase()),
        ] {
            let r = h.handle(head(&path, None)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(!String::from_utf8_lossy(&r.body).contains("ASIA"));
        }
        for path in ["/v2/credentials/", "/v2/credentials"] {
            let r = h.handle(head(path, None)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(String::from_utf8_lossy(&r.body).contains("NoIdInRequest"));
        }
        for path in ["/", "/credentials/a", &format!("/v3/credentials/{a}")] {
            let r = h.handle(head(path, None)).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn a_routed_peer_fetches_only_its_route_s_profile() {
        use crate::config::{Route, RouteFrom};
        use crate::daemon::conns::Peer;
        let (mut h, a, b) = handler();
        let routes = [
            Route {
                from: RouteFrom::Uid(1001),
                profile: "a".into(),
                scope: None,
            },
            Route {
                from: RouteFrom::Net("198.18.0.0/24".parse().unwrap()),
                profile: "b".into(),
                scope: None,
            },
        ];
        h.routes = Some(RouteTable::new(&routes, None, |_| ()));
        let as_peer = |path: &str, who: Peer| {
            let mut head = head(path, None);
            head.who = who;
            head
        };
        let (pa, pb) = (
            Peer::Local { uid: 1001 },
            Peer::Remote("198.18.0.9".parse().unwrap()),
        );
        for (who, own, other, key) in [(pa, &a, &b, "ASIAA"), (pb, &b, &a, "ASIAB")] {
            let r = h.handle(as_peer(&relative_uri(own), who)).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(String::from_utf8_lossy(&r.body).contains(key));
            // Another route's valid ID is answered as an unknown one.
            let r = h.handle(as_peer(&relative_uri(other), who)).await;
            let unknown = h.handle(as_peer(&relative_uri(&"0".repeat(64)), who)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert_eq!(r.body, unknown.body);
        }
        for stranger in [
            Peer::Local { uid: 0 },
            Peer::Remote("198.18.1.9".parse().unwrap()),
        ] {
            for id in [&a, &b] {
                let r = h.handle(as_peer(&relative_uri(id), stranger)).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN);
                assert!(!String::from_utf8_lossy(&r.body).contains("ASIA"));
            }
            // The request without an ID (doctor's probe) is answered as before.
            let r = h.handle(as_peer(PATH_PREFIX, stranger)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
        }
        let (stats, unrouted) = h.routes.as_ref().unwrap().stats();
        let counts: Vec<(u64, u64)> = stats.iter().map(|s| (s.served, s.refused)).collect();
        assert_eq!(counts, [(1, 2), (1, 2)]);
        assert_eq!(unrouted, 4);
    }

    #[test]
    fn logged_paths_never_hold_an_id() {
        let id = "ab".repeat(32);
        assert_eq!(
            redacted_path(&relative_uri(&id)),
            "/v2/credentials/[REDACTED]"
        );
        assert_eq!(
            redacted_path("/v2/credentials/x"),
            "/v2/credentials/[REDACTED]"
        );
        assert_eq!(redacted_path("/v2/credentials/"), "/v2/credentials/");
        assert_eq!(
            redacted_path(&format!("/v3/credentials/{id}")),
            "/v3/credentials/[REDACTED]"
        );
        assert_eq!(redacted_path("/latest/meta-data/"), "/latest/meta-data/");
    }
}
