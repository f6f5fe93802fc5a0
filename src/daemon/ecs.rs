//! The ECS container-credentials endpoint: every served profile under `/credentials/PROFILE`, each
//! guarded by its own random token (sent raw in `Authorization`, as the SDKs do).
//!
//! Status codes follow `docs/sdk-behaviour.md` section 7: 200 with the credentials; 401 without a
//! token, 403 with a wrong one (including another profile's), both before anything about the
//! profile is revealed, each an access line of the connection's audit ([`super::audit`]: peer,
//! uid, path); 404 for other paths; otherwise the problem's own status
//! ([`ProblemCode::ecs_status`](crate::problem::ProblemCode::ecs_status): 503 only for what passes
//! by itself, because the Rust, Go and Java SDKs retry 5xx). Error bodies are
//! `application/json` `{"code","message"}` (Go and Java read these) with `Code`/`Message` copies
//! (the JS SDK reads those).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::http::{Head, Refusal, Reply};
use super::policy::CONTAINER_COLD_START_WAIT;
use super::state::{Asker, ProfileCell, Vended};
use crate::problem::Problem;

/// The 401 message. It names both token variables: clients built before SDKs learned
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (Debian 12's AWS CLI v2, Go SDK v1 clients such as
/// rclone) read only `AWS_CONTAINER_AUTHORIZATION_TOKEN` (docs/container-clients.md).
const NO_TOKEN_MESSAGE: &str = "no Authorization header: set AWS_CONTAINER_AUTHORIZATION_TOKEN to the profile's token \
     (older clients, such as Debian 12's AWS CLI v2 and Go SDK v1 programs like rclone, read only this one) and \
     AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE to its token file; `credvend env PROFILE --container` prints both";

/// Path prefix of the credentials resources.
pub const PATH_PREFIX: &str = "/credentials/";

/// One served profile: its state and its token.
pub struct EcsProfile {
    /// The profile's state.
    pub cell: Arc<ProfileCell>,
    /// The token the container must present.
    pub token: SecretString,
}

/// The ECS endpoint's handler.
pub struct EcsHandler {
    /// Served profiles by name.
    pub profiles: HashMap<String, EcsProfile>,
}

/// An error answer in the shape every SDK reads (also the ECS-agent endpoint's).
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({
        "code": code,
        "message": message,
        "Code": code,
        "Message": message,
    });
    Reply::new(
        status,
        "application/json",
        serde_json::to_vec(&body).expect("JSON values serialize"),
    )
}

/// Decodes `%XX` escapes of a path segment; `None` when the result is not UTF-8.
fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The profile a path names, if it is a credentials path.
pub fn profile_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    decode_segment(rest)
}

/// The URL path serving `profile`.
pub fn path_for(profile: &str) -> String {
    let mut out = String::from(PATH_PREFIX);
    crate::sigv4::uri_encode(profile, &mut out);
    out
}

impl EcsHandler {
    fn authorized(&self, profile: Option<&EcsProfile>, presented: &[u8]) -> bool {
        // Compare against a dummy for unknown profiles so timing does not tell names apart.
        const DUMMY: &[u8] = b"credvend-no-such-profile-token-credvend-no-such-profile-token";
        let expected = profile
            .map(|p| p.token.expose_secret().as_bytes())
            .unwrap_or(DUMMY);
        let equal: bool = expected.ct_eq(presented).into();
        equal && profile.is_some()
    }
}

impl EcsHandler {
    /// Answers one request that passed the guards.
    pub async fn handle(&self, head: Head) -> Reply {
        let Some(name) = profile_of(&head.path) else {
            head.refused("ECS", "-", "UnknownPath");
            return json_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "unknown path; credentials are served under /credentials/PROFILE (see `credvend env PROFILE --container`)",
            );
        };
        let refused = |reason| head.refused("ECS", &name, reason);
        if !matches!(head.method, Method::GET | Method::HEAD) {
            refused("MethodNotAllowed");
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use GET",
            )
            .with_header(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        let Some(presented) = head.headers.get(hyper::header::AUTHORIZATION) else {
            refused("NoToken");
            return json_error(StatusCode::UNAUTHORIZED, "Unauthorized", NO_TOKEN_MESSAGE);
        };
        let profile = self.profiles.get(&name);
        let authorized = self.authorized(profile, presented.as_bytes());
        let Some(profile) = profile.filter(|_| authorized) else {
            refused("WrongToken");
            return json_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "the Authorization token does not match this profile's token (AWS_CONTAINER_AUTHORIZATION_TOKEN or the file AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE names; `credvend env PROFILE --container` prints both)",
            );
        };
        let asker = Asker {
            cold_start: CONTAINER_COLD_START_WAIT,
            audit: Some((&head.audit, "ECS")),
            user_agent: head.header("user-agent").unwrap_or("-"),
        };
        served_reply(&profile.cell.serve(&asker).await, &profile.cell.name)
    }

    /// The answer to a refused request.
    pub fn refuse(&self, refusal: Refusal) -> Reply {
        refusal_reply(refusal)
    }
}

/// The answer to a request that reached profile `name`: its credentials, or the problem with
/// the status and code container clients act on (also the ECS-agent endpoint's).
pub(crate) fn served_reply(served: &Result<Arc<Vended>, Problem>, name: &str) -> Reply {
    match served {
        Ok(v) => Reply::new(StatusCode::OK, "application/json", v.ecs_json.clone()),
        Err(problem) => json_error(
            StatusCode::from_u16(problem.code.ecs_status())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            problem.code.as_str(),
            &problem.public_message(name),
        ),
    }
}

/// The answer to a request the guards refused (also the ECS-agent endpoint's).
pub(crate) fn refusal_reply(refusal: Refusal) -> Reply {
    let code = match refusal.status() {
        StatusCode::BAD_REQUEST => "BadRequest",
        _ => "Forbidden",
    };
    json_error(refusal.status(), code, refusal.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for name in ["dev", "my profile", "a/b", "ünï"] {
            assert_eq!(profile_of(&path_for(name)).as_deref(), Some(name), "{name}");
        }
        assert_eq!(profile_of("/credentials/dev/").as_deref(), Some("dev"));
        assert_eq!(profile_of("/credentials/"), None);
        assert_eq!(profile_of("/credentials/a/b"), None);
        assert_eq!(profile_of("/other/dev"), None);
        assert_eq!(profile_of("/credentials/%ff"), None);
        assert_eq!(profile_of("/credentials/%zz"), None);
        assert_eq!(profile_of("/credentials/%4"), Some("%4".into()));
    }
}
