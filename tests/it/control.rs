//! The control socket and the commands that use it: `status`, `login` (and MFA sessions kept
//! across restarts), `lock`/`refresh`, `credential-process`, `exec`; only the daemon's own uid is
//! answered, and the CLI talks only to a daemon of its own uid.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::daemon::{BIN, Setup, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, PrivateMoto, venv_bin};
use crate::support::sts_proxy::StsProxy;
use crate::support::toml::Toml;

/// `status --json` shows a fresh profile, a profile whose STS went away (moto stopped: the last
/// credentials are still served while the error is reported), and a profile waiting for MFA.
#[tokio::test]
async fn status_json_reflects_fresh_erroring_and_needs_mfa_profiles() {
    let mut private = PrivateMoto::start(true);
    let moto = private.moto.clone();
    let user = moto.user("st").await;
    let role = moto.role("st", &[&user.arn], None).await;
    let setup = Setup::new();
    setup.write_aws_config(&format!(
        "[profile base]\nendpoint_url = {m}\n\
         [profile fresh]\nrole_arn = {role}\nsource_profile = base\nendpoint_url = {m}\n\
         [profile flaky]\nrole_arn = {role}\nsource_profile = base\nendpoint_url = {m}\n\
         [profile mfa]\nmfa_serial = arn:aws:iam::123456789012:mfa/st\nendpoint_url = {m}\n",
        m = moto.url
    ));
    setup.store_key("base", &user.key);
    setup.store_key("mfa", &user.key);
    setup.write_toml("[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"mfa\"\n[ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"fresh\", \"flaky\", \"mfa\"]\n[refresh]\nprewarm = [\"fresh\", \"flaky\"]\n");
    let daemon = setup.start();
    let fresh = setup.wait_status("fresh", "fresh", phase_is("fresh")).await;
    assert!(
        fresh["expiration"].is_string() && fresh["next_refresh"].is_string(),
        "{fresh}"
    );
    assert_eq!(fresh["source"], "keyring:base -> AssumeRole(fresh)");
    setup.wait_status("flaky", "fresh", phase_is("fresh")).await;
    let mfa = setup
        .wait_status("mfa", "needs-mfa", phase_is("needs-mfa"))
        .await;
    assert_eq!(mfa["last_error"]["code"], "NeedsMfa");
    assert!(
        mfa["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("run `credvend login mfa`")
    );
    assert_eq!(mfa["mfa_serial"], "arn:aws:iam::123456789012:mfa/st");

    // The IMDS answer names the fix too.
    let token = http::token(daemon.imds(), 60).await;
    let r = http::get(
        daemon.imds(),
        "/latest/meta-data/iam/security-credentials/mfa",
        &token,
    )
    .await;
    assert_eq!(r.json()["Code"], "NeedsMfa");
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("credvend login mfa")
    );

    private.stop();
    let out = setup.cli(&["refresh", "flaky"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let flaky = setup.wait_status("flaky", "error", phase_is("error")).await;
    assert_eq!(flaky["last_error"]["code"], "StsUnavailable", "{flaky}");
    assert!(
        flaky["expiration"].is_string(),
        "the old credentials are still held"
    );
    assert!(flaky["next_refresh"].is_string(), "a retry is scheduled");
    let text = stdout(&setup.cli(&["status"]));
    assert!(
        text.contains("flaky  error") && text.contains("last error (StsUnavailable"),
        "{text}"
    );
}

/// Needs-MFA becomes fresh with `login` typed at its terminal prompt (without a terminal it names
/// `--code-stdin`); after a restart the MFA session cached in the
/// keyring is reused: no second GetSessionToken, no new code. A desktop notification (a fake
/// `notify-send` on PATH) tells the user when the code is needed.
#[tokio::test]
async fn login_turns_needs_mfa_into_fresh_and_the_session_survives_a_restart() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let user = moto.user("mfa").await;
    let bin_dir = tempfile::tempdir().unwrap();
    let notes = bin_dir.path().join("notes");
    let fake = bin_dir.path().join("notify-send");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", notes.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let setup = Setup::new().with_env("PATH", &path);
    setup.write_aws_config(&format!(
        "[profile dev]\nmfa_serial = arn:aws:iam::123456789012:mfa/dev\nendpoint_url = {}\n",
        proxy.url()
    ));
    setup.store_key("dev", &user.key);
    setup.write_toml(&Toml::new().imds("dev").build());
    let daemon = setup.start();
    setup
        .wait_status("dev", "needs-mfa", phase_is("needs-mfa"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&notes)
        .unwrap_or_default()
        .contains("credvend login dev")
    {
        assert!(Instant::now() < deadline, "no desktop notification");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        proxy.count("GetSessionToken"),
        0,
        "nothing is minted without a code"
    );

    let out = setup.cli(&["login", "dev", "--code", "12345"]);
    assert_eq!(out.status.code(), Some(1), "a code has 6 digits");
    // No code and no terminal to prompt on: the fix is named.
    let out = setup.cli_stdin(&["login", "dev"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no terminal to prompt on: pass --code-stdin"),
        "{}",
        stderr(&out)
    );
    // The code typed at the prompt on a terminal (a pty from `script`), out of sight of `ps`.
    // (Whether it is echoed cannot be told here: `script` types it before the prompt turns
    // echo off.)
    let line = format!("{} login dev", env!("CARGO_BIN_EXE_credvend"));
    let mut script = std::process::Command::new("script");
    setup.apply_env(&mut script);
    let out = script
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"123456\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let typed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "login at the prompt: {typed}\n{}",
        daemon.log()
    );
    assert!(
        typed.contains("MFA code for arn:aws:iam::123456789012:mfa/dev: "),
        "{typed}"
    );
    assert!(
        typed.contains("MFA session for `dev` valid until"),
        "{typed}"
    );
    setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    assert_eq!(proxy.count("GetSessionToken"), 1);

    assert_eq!(daemon.terminate().code(), Some(0));
    let _daemon = setup.start();
    let p = setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    assert_eq!(
        proxy.count("GetSessionToken"),
        1,
        "the cached MFA session was reused: {p}"
    );
    setup.remember("dev");
}

/// The socket is 0600 in a 0700 directory; even when someone loosens both, the daemon refuses a
/// peer of another uid (SO_PEERCRED).
#[tokio::test]
async fn control_socket_refuses_other_uids() {
    let setup = Setup::new();
    setup.write_toml(&Toml::new().imds("nobody-has-this").build());
    let daemon = setup.start();
    let sock = &daemon.ready.control;
    assert_eq!(
        std::fs::metadata(sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(setup.state_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let as_nobody = |setup: &Setup| {
        let mut cmd = std::process::Command::new("setpriv");
        setup.apply_env(&mut cmd);
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "status",
        ])
        .output()
        .unwrap()
    };
    // The CLI of another user refuses the daemon before sending anything: it is not theirs.
    let out = as_nobody(&setup);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refusing to use") && stderr(&out).contains("not to you"),
        "{}",
        stderr(&out)
    );

    // Loosen everything on the way to the socket and talk to it directly, past any client-side
    // check: the daemon's peer-uid check still refuses.
    for dir in [setup.home(), &setup.state_dir()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let raw = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(concat!(
            "import socket, sys\n",
            "s = socket.socket(socket.AF_UNIX)\n",
            "s.connect(sys.argv[1])\n",
            "try:\n",
            "    s.sendall(b'{\"v\":2,\"cmd\":\"status\"}\\n')\n",
            "    print(repr(s.recv(4096)))\n",
            "except (BrokenPipeError, ConnectionResetError):\n",
            "    print(repr(b''))\n",
        ))
        .arg(sock)
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout).trim(),
        "b''",
        "the daemon closes without answering"
    );
    assert!(daemon.wait_for_log(
        "refused a control connection from another user",
        Duration::from_secs(5)
    ));
    std::fs::set_permissions(setup.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(
        setup.cli(&["status"]).status.success(),
        "the owner is still served"
    );
}

/// `lock` with no profile locks every profile that holds credentials, even when another one's
/// configuration is broken; a locked profile tells clients so (not its last error), and
/// `refresh` brings it back.
#[tokio::test]
async fn lock_all_skips_broken_profiles_and_refresh_unlocks() {
    let setup = Setup::new();
    setup.role_profile(&Moto::shared()).await;
    setup.append_aws_config(
        "[profile broken]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = nowhere\n",
    );
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"broken\"\n[ecs]\nenabled = false\n",
    );
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;

    let out = setup.cli(&["lock"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup
        .wait_status("role", "locked", phase_is("locked"))
        .await;
    assert_eq!(
        http::imds_creds(daemon.imds(), "role").await["Code"],
        "CredentialsLocked"
    );

    let out = setup.cli(&["refresh", "role"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    assert_eq!(
        http::imds_creds(daemon.imds(), "role").await["Code"],
        "Success"
    );
}

/// `login` without a daemon, for a profile that cannot be resolved, says why.
#[test]
fn login_without_a_daemon_names_what_is_wrong_with_the_profile() {
    let setup = Setup::new();
    setup.write_aws_config(
        "[profile dev]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = nowhere\n",
    );
    let out = setup.cli(&["login", "dev", "--code", "123456"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("source_profile = nowhere"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_without_a_daemon_says_how_to_start_it() {
    let setup = Setup::new();
    let out = setup.cli(&["exec", "dev", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("daemon is not running"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("credvend serve"), "{}", stderr(&out));
}

/// `credvend_mfa_process` supplies the code: the profile mints without `credvend login`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_process_supplies_the_code() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let user = moto.user("mp").await;
    let setup = Setup::new();
    let script = setup.home().join("code.sh");
    std::fs::write(&script, "#!/bin/sh\necho 654321\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    setup.write_aws_config(&format!(
        "[profile dev]\nmfa_serial = arn:aws:iam::123456789012:mfa/dev\ncredvend_mfa_process = {}\nendpoint_url = {}\n",
        script.display(),
        proxy.url()
    ));
    setup.store_key("dev", &user.key);
    setup.write_toml(&Toml::new().imds("dev").build());
    let _daemon = setup.start();
    let p = setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    assert_eq!(p["source"], "keyring:dev -> GetSessionToken(MFA)");
    assert_eq!(proxy.count("GetSessionToken"), 1);
    setup.remember("dev");
}

/// The daemon serves `credential-process` from its cache (the same key IMDS serves), and the
/// process runs with core dumps off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_asks_the_running_daemon_and_core_dumps_are_off() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").build());
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let token = http::token(daemon.imds(), 60).await;
    let served = http::get(
        daemon.imds(),
        "/latest/meta-data/iam/security-credentials/role",
        &token,
    )
    .await
    .json();
    let out = setup.cli(&["credential-process", "role"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cp["AccessKeyId"], served["AccessKeyId"],
        "the daemon's cached credentials"
    );
    let status = setup
        .wait_status("role", "counted", |p| p["requests"].as_u64() >= Some(2))
        .await;
    assert!(status["requests"].as_u64().unwrap() >= 2);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().nth(4),
        Some("0"),
        "soft core limit: {core}"
    );
}

#[tokio::test]
async fn exec_runs_the_aws_cli_and_boto3_and_passes_the_exit_code() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").ecs(&["role"]).build());
    let _daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let empty = setup.home().join("empty");
    std::fs::write(&empty, "").unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["exec", "role", "--"];
        all.extend_from_slice(args);
        setup
            .command(&all)
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env("AWS_ACCESS_KEY_ID", "AKIASHOULDBEREMOVED")
            .output()
            .unwrap()
    };
    let out = run(&[
        &venv_bin("aws"),
        "sts",
        "get-caller-identity",
        "--endpoint-url",
        &moto.url,
        "--output",
        "text",
        "--query",
        "Arn",
    ]);
    assert!(out.status.success(), "aws: {}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(":assumed-role/{}/", scenario.role_name())),
        "{}",
        stdout(&out)
    );
    let script = format!(
        "import boto3, sys\nsts = boto3.client('sts', endpoint_url='{}')\nprint(sts.get_caller_identity()['Arn'])\nsys.exit(3)\n",
        moto.url
    );
    let out = run(&[&venv_bin("python"), "-c", &script]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "boto3 script exit code passes through: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains(":assumed-role/"), "{}", stdout(&out));
    let out = run(&[
        "sh",
        "-c",
        "test -z \"$AWS_ACCESS_KEY_ID\" && test -n \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" && kill -TERM $$",
    ]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGTERM),
        "signals pass through"
    );
    let out = run(&["/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot run"), "{}", stderr(&out));
}
