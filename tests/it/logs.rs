//! Logs and the audit trail: who got which key, no secret at any level, JSON and journald formats.

use std::time::Duration;

use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, secret_of};
use crate::support::served::{ROLE_CREDS, Served};
use crate::support::toml::Toml;

/// A request refused for its IMDS session token (none, or a forged one) gets 401 and an access
/// line at WARN naming the client's address, uid, the reason and the path; the token itself is
/// not logged.
#[tokio::test]
async fn imds_token_refusals_are_logged_with_peer_uid_and_path() {
    let s = Served::start(&Toml::new().imds("role").build()).await;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let forged = format!("1{:016x}{}", u64::MAX, "0".repeat(40));
    let none = http::request(s.imds(), "GET", ROLE_CREDS, &[]).await;
    assert_eq!(none.status, 401);
    let wrong = http::request(
        s.imds(),
        "GET",
        ROLE_CREDS,
        &[("x-aws-ec2-metadata-token", &forged)],
    )
    .await;
    assert_eq!(wrong.status, 401);
    for reason in ["NoToken", "WrongToken"] {
        let line = s.daemon.log_line(&format!("{reason} {ROLE_CREDS}"));
        assert!(
            line.contains("WARN")
                && line.contains("refused an IMDS request")
                && line.contains("peer=127.0.0.1:")
                && line.contains(&format!("peer_uid={me}")),
            "{line}"
        );
    }
    assert!(!s.daemon.log().contains(&forged));
}

/// The audit line of a vend names the uid that owns the client's socket: this test's own for its
/// request, 65534 for a curl run as nobody (whom `allow_uids` lets in).
#[tokio::test]
async fn audit_lines_name_the_client_uid() {
    let s = Served::start(
        &Toml::new()
            .imds_with("role", "allow_uids = [\"nobody\"]\n")
            .ecs(&["role"])
            .build(),
    )
    .await;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    assert_eq!(http::imds_creds(s.imds(), "role").await["Code"], "Success");

    let base = format!("http://{}", s.imds());
    let script = format!(
        "t=$(curl -sf -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' {base}/latest/api/token) \
         && curl -sf -H \"x-aws-ec2-metadata-token: $t\" {base}{ROLE_CREDS}"
    );
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl as nobody: {}", stderr(&out));
    assert!(stdout(&out).contains("\"Success\""), "{}", stdout(&out));

    let vend_line = |uid: u32| {
        let log = s.daemon.log();
        log.lines()
            .find(|l| {
                l.contains("vended credentials over IMDS")
                    && l.contains(&format!("peer_uid={uid} "))
            })
            .map(str::to_owned)
    };
    assert!(
        s.daemon
            .wait_for_log("peer_uid=65534", Duration::from_secs(10)),
        "{}",
        s.daemon.log()
    );
    let nobody = vend_line(65534).expect("an audit line for nobody's curl");
    assert!(nobody.contains("user_agent=\"curl/"), "{nobody}");
    let ours =
        vend_line(me).unwrap_or_else(|| panic!("no audit line with our uid: {}", s.daemon.log()));
    assert!(!ours.contains("curl/"), "{ours}");
}

/// A whole session at trace level: add, serve, IMDS and ECS fetches, status, credential-process,
/// refresh, lock. No secret appears in any log (the access key ids may).
#[tokio::test]
async fn trace_level_logs_hold_no_secrets() {
    let moto = Moto::shared();
    let setup = Setup::new().with_env("CREDVEND_LOG", "trace");
    let scenario = setup.role_profile(&moto).await;
    setup.write_toml("[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n[ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n");
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let token = http::token(daemon.imds(), 60).await;
    let creds = http::get(
        daemon.imds(),
        "/latest/meta-data/iam/security-credentials/role",
        &token,
    )
    .await
    .json();
    let ecs_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    assert_eq!(
        http::ecs_get(daemon.ecs(), "role", Some(&ecs_token))
            .await
            .status,
        200
    );
    let mut cli_logs = String::new();
    for args in [
        &["status"][..],
        &["credential-process", "role"],
        &["refresh", "role"],
        &["lock", "role"],
        &["list"],
    ] {
        let out = setup.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        cli_logs.push_str(&stderr(&out));
    }
    setup
        .wait_status("role", "locked", phase_is("locked"))
        .await;
    let logs = format!("{}\n{cli_logs}", daemon.log());
    assert!(
        logs.contains("TRACE") || logs.contains("trace"),
        "trace level was on"
    );
    for (what, secret) in [
        ("long-term secret", secret_of(&scenario.user.key)),
        (
            "temporary secret",
            creds["SecretAccessKey"].as_str().unwrap().to_owned(),
        ),
        ("session token", creds["Token"].as_str().unwrap().to_owned()),
        ("ECS token", ecs_token),
        ("IMDS token", token),
    ] {
        assert!(!logs.contains(&secret), "the {what} is in the logs");
    }
    assert!(
        logs.contains(creds["AccessKeyId"].as_str().unwrap()),
        "key ids are logged (audit)"
    );
}

#[tokio::test]
async fn json_log_format_is_one_object_per_line() {
    let setup = Setup::new();
    setup.write_toml(&Toml::new().imds("none").build());
    let daemon = setup.start_with(&["--log-format", "json"]);
    assert!(daemon.wait_for_log("credvend ready", Duration::from_secs(10)));
    for line in daemon.log().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

/// Under systemd (`JOURNAL_STREAM` naming our stderr), lines carry syslog priority prefixes and
/// no timestamps, so journald records their levels.
#[test]
fn journal_stream_lines_carry_syslog_priorities() {
    use std::os::unix::fs::MetadataExt;
    let setup = Setup::new();
    setup.write_toml(&Toml::new().imds("none").build());
    let log = setup.home().join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = setup
        .command(&["--config", setup.toml_path().to_str().unwrap(), "serve"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(std::process::Stdio::piped())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("credvend ready"));
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("credvend ready")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<3>") || l.starts_with("<4>")),
        "the unresolvable profile is an error/warning: {text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "every line has a priority: {text}"
    );
    assert!(
        text.lines().all(|l| !l[3..]
            .trim_start()
            .starts_with(|c: char| c.is_ascii_digit())),
        "no timestamps: {text}"
    );
    assert!(!text.contains("\u{1b}["), "no colours: {text}");
}
