//! Trust boundaries, tried as an attacker with a second local account (uid 65534, by `setpriv`)
//! and a misbehaving STS would: the CLI talks only to its own user's daemon; the loopback
//! listeners serve only the daemon's user (and `allow_uids`); a connection flood from another
//! user does not stop service; credentials that arrive expired do not send the daemon into a
//! loop; the audit trail keeps every first vend even when the log reader is slow.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, venv_bin};
use crate::support::served::{ROLE_CREDS, Served, rss_kib};
use crate::support::sts_proxy::{Mode, StsProxy};
use crate::support::toml::Toml;

const NOBODY: u32 = 65534;

fn me() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    cmd
}

/// The attacker (uid 65534): makes directory `dir` (mode 0700) with a listening `control.sock`
/// in it that appends to `record` whatever reaches it. Returns once it listens.
fn recording_listener(dir: &std::path::Path, record: &std::path::Path) -> std::process::Child {
    let listener = concat!(
        "import os, socket, sys\n",
        "d, rec = sys.argv[1], sys.argv[2]\n",
        "os.mkdir(d, 0o700)\n",
        "s = socket.socket(socket.AF_UNIX)\n",
        "s.bind(os.path.join(d, 'control.sock'))\n",
        "s.listen(16)\n",
        "print('listening', flush=True)\n",
        "while True:\n",
        "    c, _ = s.accept()\n",
        "    open(rec, 'a').write('connection\\n')\n",
        "    c.settimeout(1)\n",
        "    try:\n",
        "        open(rec, 'a').write(repr(c.recv(65536)) + '\\n')\n",
        "    except OSError:\n",
        "        pass\n",
        "    c.close()\n",
    );
    let mut attacker = as_nobody("/usr/bin/python3")
        .args(["-c", listener])
        .arg(dir)
        .arg(record)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(attacker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    attacker
}

/// Without `XDG_RUNTIME_DIR` the state directory falls back to `$TMPDIR/credvend-UID`. Another
/// user who made that directory first, with a socket listening in it, gets nothing from any
/// command: each refuses with a message naming the path, and nothing connects to the socket.
/// `serve` refuses the directory too.
#[tokio::test]
async fn trust_a_squatted_fallback_state_dir_is_refused_by_every_command() {
    let setup = Setup::new();
    setup.write_aws_config(
        "[profile p]\nregion = us-east-1\nmfa_serial = arn:aws:iam::123456789012:mfa/p\n",
    );
    let tmp = setup.home().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(setup.home(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let squatted = tmp.join(format!("credvend-{}", me()));
    let record = tmp.join("received");
    // The attacker: a directory of its own, mode 0700, with a listening control socket that
    // records whatever reaches it.
    let mut attacker = recording_listener(&squatted, &record);

    let victim = |args: &[&str], stdin: &str| {
        let mut cmd = setup.command(args);
        cmd.env_remove("CREDVEND_STATE_DIR")
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", &tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let shown = squatted.display().to_string();
    for (args, stdin) in [
        (&["credential-process", "p"][..], ""),
        (&["login", "p", "--code-stdin"], "123456\n"),
        (&["env", "p"], ""),
        (&["env", "p", "--container"], ""),
        (&["env", "p", "--static"], ""),
        (&["exec", "p", "--", "true"], ""),
        (&["status"], ""),
        (&["lock"], ""),
        (&["refresh", "p"], ""),
    ] {
        let out = victim(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("refusing to use") && err.contains(&shown) && err.contains("not to you"),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?} printed {}", stdout(&out));
    }
    let out = victim(&["serve"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&shown) && stderr(&out).contains("not to you"),
        "{}",
        stderr(&out)
    );
    let _ = attacker.kill();
    let _ = attacker.wait();
    assert!(
        !record.exists(),
        "the attacker's socket received: {}",
        std::fs::read_to_string(&record).unwrap_or_default()
    );
}

/// In the user's own state directory (mode 0700), a control socket that is not the daemon's: a
/// socket file owned by another uid is refused before connecting; one owned by the user but
/// listened on by another uid's process (SO_PEERCRED) is refused before anything is sent.
#[tokio::test]
async fn trust_a_control_socket_of_another_uid_is_refused_in_the_own_state_dir() {
    let setup = Setup::new();
    let tmp = setup.home().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(setup.home(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let record = tmp.join("received");
    let mut attacker = recording_listener(&tmp.join("attacker"), &record);
    let state = setup.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = state.join("control.sock");
    std::fs::rename(tmp.join("attacker").join("control.sock"), &socket).unwrap();

    // Still owned by the attacker.
    let out = setup.cli(&["credential-process", "p"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "it is not a socket of yours (owner uid {NOBODY}, you are uid {})",
            me()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!record.exists(), "nothing connected to it");

    // The file made the user's: the process behind it is still the attacker's.
    std::os::unix::fs::chown(&socket, Some(me()), Some(me())).unwrap();
    for args in [&["credential-process", "p"][..], &["status"]] {
        let out = setup.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "the process listening on it runs as uid {NOBODY}, not as you"
            )),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    // Both commands connected (that is how they learnt the listener's uid); wait until the
    // attacker recorded what each sent before judging it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let received = loop {
        let received = std::fs::read_to_string(&record).unwrap_or_default();
        if received.lines().count() >= 4 {
            break received;
        }
        assert!(
            Instant::now() < deadline,
            "the attacker recorded: {received}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = attacker.kill();
    let _ = attacker.wait();
    assert_eq!(
        received.lines().collect::<Vec<_>>(),
        ["connection", "b''", "connection", "b''"],
        "the attacker's socket received something"
    );
}

/// The loopback IMDS and ECS listeners answer another local user with 403 (and an audit line
/// naming the uid); with `allow_uids` naming that user, with credentials.
#[tokio::test]
async fn trust_loopback_listeners_serve_only_the_daemon_user_unless_allowed() {
    let s = Served::start(&Toml::new().imds("role").ecs(&["role"]).build()).await;
    let token = s.ecs_token("role");
    let curl_as_nobody = |s: &Served| {
        let imds = format!("http://{}", s.imds());
        let ecs = format!("http://{}/credentials/role", s.ecs());
        let script = format!(
            "curl -s -o /dev/null -w '%{{http_code}}\\n' -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' {imds}/latest/api/token; \
             t=$(curl -sf -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' {imds}/latest/api/token); \
             curl -s -o /dev/null -w '%{{http_code}}\\n' -H \"x-aws-ec2-metadata-token: $t\" {imds}{ROLE_CREDS}; \
             curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'Authorization: {token}' {ecs}"
        );
        let out = as_nobody("sh").args(["-c", &script]).output().unwrap();
        stdout(&out).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(curl_as_nobody(&s), ["403", "403", "403"]);
    assert!(
        s.daemon
            .wait_for_log("UserNotAllowed", Duration::from_secs(10)),
        "{}",
        s.daemon.log()
    );
    let refusal = s
        .daemon
        .log()
        .lines()
        .find(|l| l.contains("refused a request") && l.contains("UserNotAllowed"))
        .map(str::to_owned)
        .unwrap();
    assert!(refusal.contains(&format!("peer_uid={NOBODY}")), "{refusal}");
    // The daemon's own user is served as before.
    assert_eq!(http::imds_creds(s.imds(), "role").await["Code"], "Success");

    s.setup.write_toml(
        &Toml::new()
            .imds_with("role", "allow_uids = [\"nobody\"]\n")
            .ecs_with(&["role"], "allow_uids = [65534]\n")
            .build(),
    );
    s.daemon.signal(libc::SIGHUP);
    assert!(
        s.daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(10))
    );
    assert_eq!(curl_as_nobody(&s), ["200", "200", "200"]);
}

/// While another user (allowed to fetch, so it gets a share of the connections) holds 5,000
/// idle and 2,000 slowloris connections to each listener, botocore with its 1 s timeout fetches
/// credentials 20 times in a row over IMDS and ECS without a failure, and the daemon stays
/// under 64 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_a_connection_flood_from_another_user_does_not_stop_service() {
    let toml = Toml::new()
        .imds_with("role", "allow_uids = [65534]\n")
        .ecs_with(&["role"], "allow_uids = [65534]\n")
        .build();
    let s = Served::start(&toml).await;
    let token = s.ecs_token("role");
    let mut flood = Command::new(venv_bin("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/flood.py"
        ))
        .args(["--uid", &NOBODY.to_string()])
        .args(["--target", &s.imds().to_string()])
        .args(["--target", &s.ecs().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let held: usize = ready
        .strip_prefix("ready ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{ready:?}"));
    // The flood really is one: connected at once, more than three times what the daemon gives
    // another user (a quarter of each listener's 1,024 connections), so it has to shed.
    eprintln!("the flood holds {held} connections");
    assert!(
        held > 3 * 2 * 256,
        "the flood opened only {held} connections"
    );

    let out = Command::new(venv_bin("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/fetch_loop.py"
        ))
        .args(["--count", "20"])
        .args(["--imds", &format!("http://{}/", s.imds())])
        .args(["--ecs", &format!("http://{}/credentials/role", s.ecs())])
        .args(["--token", &token])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let rss = rss_kib(s.daemon.pid());
    assert!(
        flood.try_wait().unwrap().is_none(),
        "the flood stopped before the fetches ended"
    );
    drop(flood.stdin.take());
    let _ = flood.wait();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    eprintln!("fetches under the flood: {result}; RSS {rss} KiB");
    assert_eq!(result["failures"], serde_json::json!([]), "{result}");
    assert_eq!(result["ok"], 40, "{result}");
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
}

/// STS answering with credentials that are already expired (from a server whose clock is two
/// hours behind), and a `credential_process` printing an expired time: at most 10 attempts in
/// 60 s, `status` names the problem and the clock skew, and the valid credentials from before
/// keep being served. (The 60 s wait is the window being measured, not a synchronisation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sts_and_process_returning_expired_credentials_do_not_loop() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("exp").await;
    let role_arn = moto.role("exp", &[&user.arn], None).await;
    let counter = setup.home().join("process-runs");
    let script = setup.home().join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> {c}\nif [ $(wc -l < {c}) -eq 1 ]; then exp=$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%SZ); \
             else exp=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ); fi\n\
             echo '{{\"Version\": 1, \"AccessKeyId\": \"ASIAPROCESS00EXAMPLE\", \"SecretAccessKey\": \"s\", \"SessionToken\": \"t\", \"Expiration\": \"'$exp'\"}}'\n",
            c = counter.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    setup.write_aws_config(&format!(
        "[profile base]\nregion = us-east-1\nendpoint_url = {p}\n\
         [profile role]\nregion = us-east-1\nendpoint_url = {p}\nrole_arn = {role_arn}\nsource_profile = base\n\
         [profile proc]\ncredential_process = {}\n",
        script.display(),
        p = proxy.url()
    ));
    setup.store_key("base", &user.key);
    setup.write_toml(
        &Toml::new()
            .imds("role")
            .ecs(&["role", "proc"])
            .prewarm(&["proc"])
            .build(),
    );
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    setup.wait_status("proc", "fresh", phase_is("fresh")).await;
    let served = http::imds_creds(daemon.imds(), "role").await["AccessKeyId"].clone();

    proxy.set_mode(Mode::Expired);
    let before = proxy.count("AssumeRole");
    assert!(setup.cli(&["refresh"]).status.success());
    let window = Instant::now();
    let role = setup
        .wait_status("role", "the error", |p| p["phase"] == "error")
        .await;
    let proc_ = setup
        .wait_status("proc", "the error", |p| p["phase"] == "error")
        .await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(window.elapsed())).await;

    let sts_calls = proxy.count("AssumeRole") - before;
    let runs = std::fs::read_to_string(&counter).unwrap().lines().count() - 1;
    assert!(
        (1..=10).contains(&sts_calls),
        "{sts_calls} STS calls in 60 s"
    );
    assert!((1..=10).contains(&runs), "{runs} process runs in 60 s");
    assert_eq!(role["last_error"]["code"], "CredentialsTooShort", "{role}");
    let msg = role["last_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("already expired") && msg.contains("clock"),
        "{msg}"
    );
    assert_eq!(
        proc_["last_error"]["code"], "CredentialsTooShort",
        "{proc_}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&setup.cli(&["status", "--json"]).stdout).unwrap();
    let skew = status["clock_skew_seconds"].as_i64().unwrap();
    assert!((-7300..-7100).contains(&skew), "{skew}");
    let human = stdout(&setup.cli(&["status"]));
    assert!(human.contains("behind this machine's"), "{human}");
    assert_eq!(
        http::imds_creds(daemon.imds(), "role").await["AccessKeyId"],
        served,
        "the valid credentials from before are still served"
    );
    let ecs = http::ecs_get(
        daemon.ecs(),
        "proc",
        Some(&std::fs::read_to_string(setup.state_dir().join("ecs-token-proc")).unwrap()),
    )
    .await;
    assert_eq!(ecs.json()["AccessKeyId"], "ASIAPROCESS00EXAMPLE");
}

/// Under a flood of requests from another (allowed) user, with the daemon's stderr read at 2 ms
/// per line (a journal that cannot keep up), ordinary lines are being dropped (the drop count is
/// recorded); a marked fetch by that user made while they are, still appears as an audit line
/// (target `credvend::audit`, JSON logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_keeps_first_vends_under_a_flood_and_a_slow_log_reader() {
    use std::os::unix::process::CommandExt;
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(
        &Toml::new()
            .imds("role")
            .ecs_with(&["role"], "allow_uids = [65534]\n")
            .build(),
    );
    let daemon = setup.start_with_slow_log(&["--log-format", "json"], Duration::from_millis(2));
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    let url = format!("http://{}/credentials/role", daemon.ecs());
    // Requests with a wrong token, each on a connection of its own (a warning line each:
    // refusals are folded per connection), from uid 65534, until stopped.
    let flood = format!(
        "for i in $(seq 1 40); do \
           while :; do curl -s -o /dev/null -H 'Connection: close' -H 'Authorization: wrong' $(for j in $(seq 1 100); do echo {url}; done); done & \
         done; wait"
    );
    // `timeout`: should this test process die without running its guard, the flood still ends.
    let flooder = as_nobody("timeout")
        .args(["300", "sh", "-c", &flood])
        .process_group(0)
        .spawn()
        .unwrap();
    let stop_flood = KillGroup(flooder);
    assert!(
        daemon.wait_for_log("log lines were dropped", Duration::from_secs(120)),
        "the flood never made the daemon drop lines"
    );
    let marker = format!("marker-{}", std::process::id());
    let fetch = as_nobody("curl")
        .args([
            "-sf",
            "-A",
            &marker,
            "-H",
            &format!("Authorization: {token}"),
            &url,
        ])
        .output()
        .unwrap();
    assert!(fetch.status.success(), "{}", stderr(&fetch));
    drop(stop_flood);
    assert!(
        daemon.wait_for_log(&marker, Duration::from_secs(120)),
        "the marked fetch never reached the log"
    );
    let audit: Vec<serde_json::Value> = daemon
        .log()
        .lines()
        .filter(|l| l.contains(&marker))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["target"] == "credvend::audit")
        .collect();
    assert_eq!(
        audit.len(),
        1,
        "one audit line for the marked fetch: {audit:?}"
    );
    assert_eq!(audit[0]["message"], "vended credentials over ECS");
    assert_eq!(audit[0]["peer_uid"], 65534);
}

/// A child started as a process-group leader; its whole group is killed and the child reaped
/// when this is dropped (also when the test fails).
struct KillGroup(std::process::Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// A profile name from the AWS config (a file other tools and users write) carrying a terminal
/// escape sequence: `status` and the errors of `refresh` print it escaped, `list` leaves it out,
/// none prints it raw.
#[tokio::test]
async fn trust_escape_sequences_in_profile_names_are_printed_escaped() {
    let setup = Setup::new();
    let evil = "dev\u{1b}[2J\u{1b}[31m\u{7}";
    setup.write_aws_config(&format!(
        "[profile {evil}]\nregion = us-east-1\nmfa_serial = arn:aws:iam::123456789012:mfa/x\n"
    ));
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"dev\\u001b[2J\\u001b[31m\\u0007\"\n",
    );
    let _daemon = setup.start();
    for args in [&["status"][..], &["list"], &["refresh", evil]] {
        let out = setup.cli(args);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{args:?} printed a raw control character: {text:?}"
        );
        // (`list` does not show it: such a name is not a profile the config parser accepts.)
        assert!(
            args == ["list"] || text.contains("dev\\u{1b}[2J"),
            "{args:?}: {text:?}"
        );
    }
}
