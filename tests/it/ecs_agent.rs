//! Issue 15 outside network namespaces: the `[ecs_agent]` listener's capability IDs (one per
//! profile, kept across restarts, rotated by `credvend env PROFILE --container --rotate-id`),
//! what `env --container` and `exec` export, and the log lines of refused container requests on
//! both container endpoints. (The five clients over `RELATIVE_URI` in a "container":
//! `netns.rs`, `netns_ecs_agent_relative_uri`.)

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::clients::shell_env;
use crate::support::daemon::{Daemon, Setup, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::Moto;
use crate::support::served::{ROLE_TOML, Served};

/// IMDS and ECS for `role`, and the ECS-agent listener (on a free loopback port) for `role` and
/// `base`.
const AGENT_TOML: &str = "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
     [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n\
     [ecs_agent]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\", \"base\"]\n\
     [refresh]\nprewarm = [\"base\"]\n";

/// The message of an ECS-agent refusal.
const REFUSED: &str = "refused an ECS agent endpoint request";

/// `credvend ARGS` in `setup`, which must succeed; its stdout.
fn cli_ok(setup: &Setup, args: &[&str]) -> String {
    let out = setup.cli(args);
    assert!(out.status.success(), "credvend {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The value `lines` (shell lines of `credvend env`) give `name` in the end.
fn exported(lines: &str, name: &str) -> Option<String> {
    shell_env(lines)
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v)
}

/// The relative URI `credvend env role --container` prints, checked to be the only container
/// variable it sets.
fn relative_uri(setup: &Setup, extra: &[&str]) -> String {
    let mut args = vec!["env", "role", "--container"];
    args.extend_from_slice(extra);
    let lines = cli_ok(setup, &args);
    for other in [
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ] {
        assert_eq!(exported(&lines, other), None, "{other}: {lines}");
    }
    let uri = exported(&lines, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .unwrap_or_else(|| panic!("no relative URI: {lines}"));
    let id = uri.strip_prefix("/v2/credentials/").unwrap();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{uri}"
    );
    uri
}

/// GET `path` on the agent listener `addr` (with a token it must ignore, as clients send one
/// when `AWS_CONTAINER_AUTHORIZATION_TOKEN` is set); status and body.
async fn agent_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = http::request(addr, "GET", path, &[("authorization", "ignored")]).await;
    (r.status, r.body)
}

/// The access key the agent listener serves under `path` (200 required).
async fn agent_key(addr: SocketAddr, path: &str) -> String {
    let (status, body) = agent_get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    for field in ["SecretAccessKey", "Token", "Expiration"] {
        assert!(json[field].is_string(), "{field} in {body}");
    }
    json["AccessKeyId"].as_str().unwrap().to_owned()
}

/// Asserts that `path` is refused with 400 `InvalidIdInRequest`, logged with the ID redacted.
async fn assert_refused(daemon: &Daemon, addr: SocketAddr, path: &str) {
    let before = daemon.log().matches(REFUSED).count();
    let (status, body) = agent_get(addr, path).await;
    assert_eq!(status, 400, "{path}: {body}");
    assert!(body.contains("InvalidIdInRequest"), "{body}");
    assert!(!body.contains("AccessKeyId"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon.log().matches(REFUSED).count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line for the refusal:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = daemon.log();
    let line = log.lines().rfind(|l| l.contains(REFUSED)).unwrap();
    assert!(
        line.contains("peer=127.0.0.1:")
            && line.contains(&format!("peer_uid={}", my_uid()))
            && line.contains("UnknownId /v2/credentials/[REDACTED]"),
        "{line}"
    );
}

/// An ID serves its own profile only; `--rotate-id` gives a new one and the old one is refused
/// at once (logged, redacted); after a restart the old one is still refused and the new one
/// served. The ID lives in a 0600 file and never appears in `status` or the log; `status` names
/// the profiles the agent serves. `--rotate-id` on a profile the agent does not serve fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_agent_ids_rotate_and_survive_a_restart() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(AGENT_TOML);
    let daemon = setup.start();
    let agent = daemon.ecs_agent();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    setup.wait_status("base", "fresh", phase_is("fresh")).await;

    let old = relative_uri(&setup, &[]);
    let role_key = agent_key(agent, &old).await;
    let id_file = setup.state_dir().join("ecs-agent-id-role");
    assert_eq!(
        format!(
            "/v2/credentials/{}",
            std::fs::read_to_string(&id_file).unwrap()
        ),
        old
    );
    let mode = std::fs::metadata(&id_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let base_id = std::fs::read_to_string(setup.state_dir().join("ecs-agent-id-base")).unwrap();
    let base = format!("/v2/credentials/{base_id}");
    assert_ne!(base, old);
    let base_key = agent_key(agent, &base).await;
    assert_ne!(base_key, role_key, "each ID serves its own profile");
    assert_eq!(
        role_key,
        http::imds_creds(daemon.imds(), "role").await["AccessKeyId"]
    );

    let status = cli_ok(&setup, &["status", "--json"]);
    assert!(!status.contains(&old[16..]) && !status.contains(&base_id));
    let report: serde_json::Value = serde_json::from_str(&status).unwrap();
    let listener = report["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "ecs-agent")
        .unwrap();
    assert_eq!(listener["profiles"], serde_json::json!(["base", "role"]));

    let out = setup.cli(&["env", "role", "--container", "--rotate-id"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("new ECS agent ID"),
        "{}",
        stderr(&out)
    );
    let new = exported(&stdout(&out), "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").unwrap();
    assert_ne!(new, old);
    assert_eq!(
        relative_uri(&setup, &[]),
        new,
        "env prints the new ID from now on"
    );
    assert_refused(&daemon, agent, &old).await;
    assert_eq!(agent_key(agent, &new).await, role_key);
    assert_eq!(agent_key(agent, &base).await, base_key, "base keeps its ID");

    let out = setup.cli(&["env", "nope", "--container", "--rotate-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not serve profile `nope`"),
        "{}",
        stderr(&out)
    );

    let log = daemon.log();
    assert_eq!(daemon.terminate().code(), Some(0));
    let daemon = setup.start();
    let agent = daemon.ecs_agent();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    assert_refused(&daemon, agent, &old).await;
    agent_key(agent, &new).await;
    agent_key(agent, &base).await;
    assert_eq!(relative_uri(&setup, &[]), new);
    let log = log + &daemon.log();
    for id in [&old[16..], &new[16..], &base_id] {
        assert!(!log.contains(id), "an ID in the log");
    }
}

/// `exec` runs its command on this machine: the ECS endpoint on loopback (with the token and
/// the token file) when it serves the profile, even when the agent serves it too; the agent's
/// relative URI for a profile only the agent serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_prefers_the_ecs_endpoint_and_passes_both_token_variables() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(AGENT_TOML);
    let daemon = setup.start();
    let env = cli_ok(&setup, &["exec", "role", "--", "env"]);
    let token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    let has = |k: &str, v: &str| env.lines().any(|l| l == format!("{k}={v}"));
    assert!(
        has(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("http://127.0.0.1:{}/credentials/role", daemon.ecs().port())
        ),
        "{env}"
    );
    assert!(has("AWS_CONTAINER_AUTHORIZATION_TOKEN", &token), "{env}");
    assert!(
        has(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            setup.state_dir().join("ecs-token-role").to_str().unwrap()
        ),
        "{env}"
    );
    assert!(
        !env.contains("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        "{env}"
    );
    let env = cli_ok(&setup, &["exec", "base", "--", "env"]);
    let id = std::fs::read_to_string(setup.state_dir().join("ecs-agent-id-base")).unwrap();
    assert!(
        has_line(
            &env,
            &format!("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/{id}")
        ),
        "{env}"
    );
    assert!(!env.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{env}");
    assert!(!env.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN"), "{env}");
}

/// This process's uid (the daemon's too).
fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// Refused ECS requests are logged (an access line per connection, with the peer, its uid and
/// the path): without a token, 401 naming both token variables; with a wrong one, 403.
#[tokio::test]
async fn ecs_refusals_are_logged_with_peer_uid_and_path() {
    let s = Served::start(ROLE_TOML).await;
    let r = http::ecs_get(s.ecs(), "role", None).await;
    assert_eq!(r.status, 401);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN ")
            && message.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        "{message}"
    );
    let wrong = "0".repeat(64);
    assert_eq!(
        http::ecs_get(s.ecs(), "role", Some(&wrong)).await.status,
        403
    );
    // An agent-style path sent to the ECS endpoint by mistake: 404, its ID redacted in the log.
    let id = "ab".repeat(32);
    assert_eq!(
        http::request(s.ecs(), "GET", &format!("/v2/credentials/{id}"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        http::request(s.ecs(), "POST", "/credentials/role", &[])
            .await
            .status,
        405
    );
    let uid = my_uid();
    for (reason, path) in [
        ("NoToken", "/credentials/role"),
        ("WrongToken", "/credentials/role"),
        ("UnknownPath", "/v2/credentials/[REDACTED]"),
        ("MethodNotAllowed", "/credentials/role"),
    ] {
        let line = s.daemon.log_line(&format!("{reason} {path}"));
        assert!(
            line.contains("refused an ECS request")
                && line.contains("peer=127.0.0.1:")
                && line.contains(&format!("peer_uid={uid}"))
                && line.contains(if reason == "UnknownPath" {
                    "profile=\"-\""
                } else {
                    "profile=\"role\""
                })
                && line.contains("WARN"),
            "{line}"
        );
    }
    assert!(!s.daemon.log().contains(&wrong));
    assert!(!s.daemon.log().contains(&id));
}
