//! Issue 6: the daemon as a service: status, MFA login and reuse across restarts, the control
//! socket's uid check, SIGHUP reload, SIGTERM drain, exec, systemd and launchd files, logs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::daemon::{BIN, Setup, parse_ready, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, PrivateMoto, secret_of, venv_bin};
use crate::support::raw;
use crate::support::served::{ROLE_CREDS, ROLE_TOML, Served};
use crate::support::sts_proxy::StsProxy;

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
    setup.write_toml("[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"mfa\"\n[ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"fresh\", \"flaky\", \"mfa\"]\n");
    let daemon = setup.start();
    let fresh = setup.wait_status("fresh", "fresh", phase_is("fresh"));
    assert!(
        fresh["expiration"].is_string() && fresh["next_refresh"].is_string(),
        "{fresh}"
    );
    assert_eq!(fresh["source"], "keyring:base -> AssumeRole(fresh)");
    setup.wait_status("flaky", "fresh", phase_is("fresh"));
    let mfa = setup.wait_status("mfa", "needs-mfa", phase_is("needs-mfa"));
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
    let flaky = setup.wait_status("flaky", "error", phase_is("error"));
    assert_eq!(flaky["last_error"]["code"], "StsUnavailable", "{flaky}");
    assert!(
        flaky["expiration"].is_string(),
        "the old credentials are still held"
    );
    assert!(flaky["next_refresh"].is_string(), "a retry is scheduled");
    let text = stdout(&setup.cli(&["status"]));
    assert!(
        text.contains("flaky  error") && text.contains("last error:"),
        "{text}"
    );
}

/// Needs-MFA becomes fresh with `login --code`; after a restart the MFA session cached in the
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
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"dev\"\n[ecs]\nenabled = false\n",
    );
    let daemon = setup.start();
    setup.wait_status("dev", "needs-mfa", phase_is("needs-mfa"));
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
    let out = setup.cli(&["login", "dev", "--code", "123456"]);
    assert!(
        out.status.success(),
        "login: {}\n{}",
        stderr(&out),
        daemon.log()
    );
    assert!(
        stderr(&out).contains("MFA session for `dev` valid until"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("123456"));
    setup.wait_status("dev", "fresh", phase_is("fresh"));
    assert_eq!(proxy.count("GetSessionToken"), 1);

    assert_eq!(daemon.terminate().code(), Some(0));
    let _daemon = setup.start();
    let p = setup.wait_status("dev", "fresh", phase_is("fresh"));
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
    setup.write_toml("[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"nobody-has-this\"\n[ecs]\nenabled = false\n");
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

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_serving_and_a_fixed_file_adds_a_listener() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n[ecs]\nenabled = false\n",
    );
    let daemon = setup.start();
    let first = daemon.imds();
    setup.wait_status("role", "fresh", phase_is("fresh"));
    let key_before = http::imds_creds(first, "role").await["AccessKeyId"].clone();

    setup.write_toml("[[imds]\nlisten = ");
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_for_log(
            "reload failed, the previous configuration keeps serving",
            Duration::from_secs(10)
        ),
        "{}",
        daemon.log()
    );
    assert_eq!(http::imds_creds(first, "role").await["Code"], "Success");

    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\nrole_name = \"second\"\n[ecs]\nenabled = false\n",
    );
    daemon.signal(libc::SIGHUP);
    assert!(daemon.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    let status: serde_json::Value =
        serde_json::from_slice(&setup.cli(&["status", "--json"]).stdout).unwrap();
    let addrs: Vec<std::net::SocketAddr> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2);
    assert!(
        addrs.contains(&first),
        "the unchanged listener kept its socket"
    );
    let second = *addrs.iter().find(|a| **a != first).unwrap();
    let token = http::token(second, 60).await;
    assert_eq!(
        http::get(
            second,
            "/latest/meta-data/iam/security-credentials/",
            &token
        )
        .await
        .body,
        "second"
    );
    let r = http::get(
        second,
        "/latest/meta-data/iam/security-credentials/second",
        &token,
    )
    .await;
    assert_eq!(r.json()["Code"], "Success");
    // Unchanged profile: the credentials from before both reloads, on both listeners.
    assert_eq!(r.json()["AccessKeyId"], key_before);
    assert_eq!(
        http::imds_creds(first, "role").await["AccessKeyId"],
        key_before
    );

    // Back to one listener: the second one stops listening, the first keeps serving.
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n[ecs]\nenabled = false\n",
    );
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_for_log("listener removed", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let closed = format!("stopped listening address={second}");
    assert!(
        daemon.wait_for_log(&closed, Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    assert!(
        tokio::net::TcpStream::connect(second).await.is_err(),
        "the removed listener still accepts"
    );
    assert_eq!(http::imds_creds(first, "role").await["Code"], "Success");
}

/// A reload that changes only `[refresh]` keeps every profile's credentials and moves their next
/// rotation: a larger margin means an earlier rotation, and nothing is minted for the reload.
#[tokio::test]
async fn sighup_with_new_refresh_settings_keeps_credentials_and_reschedules() {
    let s = Served::start(ROLE_TOML).await;
    let before = s.setup.wait_status("role", "fresh", phase_is("fresh"));
    let key = http::imds_creds(s.imds(), "role").await["AccessKeyId"].clone();

    // 1 h sessions: the default 35 min margin rotates ~24 min in, 40 min ~19 min in (the 3 min
    // jitter cannot bridge the 5 min between them).
    s.setup
        .write_toml(&format!("{ROLE_TOML}[refresh]\nmargin_seconds = 2400\n"));
    s.daemon.signal(libc::SIGHUP);
    assert!(
        s.daemon
            .wait_for_log("rotation rescheduled", Duration::from_secs(10)),
        "{}",
        s.daemon.log()
    );
    let after = s.setup.profile_status("role").unwrap();
    assert_eq!(http::imds_creds(s.imds(), "role").await["AccessKeyId"], key);
    assert_eq!(after["refreshes"], before["refreshes"]);
    let next = |p: &serde_json::Value| p["next_refresh"].as_str().unwrap().to_owned();
    assert!(
        next(&after) < next(&before),
        "{} is not before {}",
        next(&after),
        next(&before)
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
    setup.wait_status("role", "fresh", phase_is("fresh"));

    let out = setup.cli(&["lock"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.wait_status("role", "locked", phase_is("locked"));
    assert_eq!(
        http::imds_creds(daemon.imds(), "role").await["Code"],
        "CredentialsLocked"
    );

    let out = setup.cli(&["refresh", "role"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.wait_status("role", "fresh", phase_is("fresh"));
    assert_eq!(
        http::imds_creds(daemon.imds(), "role").await["Code"],
        "Success"
    );
}

/// A reload reaches connections that are already open: a keep-alive connection using a Host name
/// that the reload takes out of `hosts` is refused on its next request.
#[tokio::test]
async fn sighup_applies_to_open_keep_alive_connections() {
    let toml = |hosts: &str| {
        format!(
            "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"nobody-has-this\"\nhosts = [{hosts}]\n\
             [ecs]\nenabled = false\n"
        )
    };
    let setup = Setup::new();
    setup.write_toml(&toml("\"creds.test\""));
    let daemon = setup.start();
    let put = raw::request(
        "PUT",
        "/latest/api/token",
        Some("creds.test"),
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    let mut conn = raw::connect(daemon.imds()).await;
    assert_eq!(raw::send_on(&mut conn, &put).await.status(), Some(200));

    setup.write_toml(&toml(""));
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_for_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    assert_eq!(raw::send_on(&mut conn, &put).await.status(), Some(403));
}

/// SIGTERM while requests are inside the handler (waiting on a cold start whose STS hangs):
/// every one of them is answered, and the process exits 0 within 5 s.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    proxy.set_mode(crate::support::sts_proxy::Mode::Hang);
    let setup = Setup::new();
    let user = moto.user("term").await;
    setup.write_aws_config(&format!("[profile slow]\nendpoint_url = {}\n", proxy.url()));
    setup.store_key("slow", &user.key);
    setup.write_toml("[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"slow\"\nimds_v1 = true\n[ecs]\nenabled = false\n");
    let daemon = setup.start();
    let addr = daemon.imds();
    const N: usize = 40;
    let mut requests = Vec::new();
    for _ in 0..N {
        requests.push(tokio::spawn(http::request(
            addr,
            "GET",
            "/latest/meta-data/iam/security-credentials/slow",
            &[],
        )));
    }
    // Every request is inside the handler once the daemon logged it waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon
        .log()
        .matches("a request waits for the first credentials")
        .count()
        < N
    {
        assert!(
            Instant::now() < deadline,
            "requests never reached the handler"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    for r in requests {
        let resp = r.await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["Code"], "CredentialsPending", "{}", resp.body);
    }
    let status = daemon.wait();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn exec_runs_the_aws_cli_and_boto3_and_passes_the_exit_code() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    setup.write_toml("[ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n");
    let _daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh"));
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

fn unit_copies(dir: &Path) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for (src, name) in [
        ("systemd/credvend.service", "credvend.service"),
        ("systemd/credvend.socket", "credvend.socket"),
        ("systemd/credvend-ecs.socket", "credvend-ecs.socket"),
        (
            "systemd/system/credvend-link-local@.socket",
            "credvend-link-local@.socket",
        ),
        (
            "systemd/system/credvend-link-local@.service",
            "credvend-link-local@.service",
        ),
    ] {
        let text = std::fs::read_to_string(root.join(src))
            .unwrap()
            .replace("@CREDVEND@", BIN)
            .replace("/usr/local/bin/credvend", BIN);
        std::fs::write(dir.join(name), text).unwrap();
        out.push(dir.join(name));
    }
    out
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = unit_copies(dir.path());
    let mut args: Vec<String> = units[..3].iter().map(|p| p.display().to_string()).collect();
    args.push(
        dir.path()
            .join("credvend-link-local@alice.socket")
            .display()
            .to_string(),
    );
    args.push(
        dir.path()
            .join("credvend-link-local@alice.service")
            .display()
            .to_string(),
    );
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn launchd_plist_is_a_valid_property_list() {
    let plist = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launchd/dev.credvend.agent.plist"
    );
    let out = std::process::Command::new(venv_bin("python"))
        .args([
            "-c",
            "import plistlib, sys\nd = plistlib.load(open(sys.argv[1], 'rb'))\nassert d['Label'] == 'dev.credvend.agent'\nassert d['ProgramArguments'][1] == 'serve'\nprint('ok')",
            plist,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_service_dry_run_shows_units_with_this_binary_and_changes_nothing() {
    let setup = Setup::new();
    let out = setup.cli(&["install-service", "--dry-run", "--sockets"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("ExecStart={BIN} serve")), "{text}");
    assert!(
        text.contains("Type=notify") && text.contains("LimitCORE=0"),
        "{text}"
    );
    assert!(text.contains("# would run: systemctl --user enable --now credvend.socket credvend-ecs.socket credvend.service"), "{text}");
    assert!(
        !setup.home().join(".config/systemd").exists(),
        "dry run wrote nothing"
    );
}

/// Socket activation exactly as systemd does it, through `systemd-socket-activate`, inside a
/// private network namespace (so the fixed port it needs is ours alone). The daemon serves on the
/// inherited socket (config says port 0; the ready line shows the inherited 9254) and reports
/// READY=1 on NOTIFY_SOCKET.
#[test]
fn socket_activation_serves_inherited_sockets_and_reports_ready() {
    let setup = Setup::new();
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"none\"\n[ecs]\nenabled = false\n",
    );
    let notify_path = setup.home().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let toml = setup.toml_path();
    let mut cmd = std::process::Command::new("unshare");
    setup.apply_env(&mut cmd);
    let script = format!(
        "ip link set lo up && exec systemd-socket-activate -l 127.0.0.1:9254 --fdname=imds -E NOTIFY_SOCKET \
         -E HOME -E CREDVEND_STATE_DIR -E CREDVEND_KEYSTORE -E CREDVEND_KEYRING_SERVICE -E AWS_CONFIG_FILE -E PATH \
         {BIN} --config {} serve",
        toml.display()
    );
    let mut child = cmd
        .env("NOTIFY_SOCKET", &notify_path)
        .args(["-n", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // systemd-socket-activate only starts the service on the first connection: knock from inside
    // the namespace, which also proves the socket is served.
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let out = std::process::Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-n",
                "curl",
                "-s",
                "-m",
                "5",
                "-X",
                "PUT",
                "-H",
                "x-aws-ec2-metadata-token-ttl-seconds: 60",
                "http://127.0.0.1:9254/latest/api/token",
            ])
            .output()
            .unwrap();
        if out.status.success() && out.stdout.len() == 57 {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no answer on the activated socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(body.len(), 57);
    let mut buf = [0u8; 512];
    let mut states = String::new();
    while !states.contains("READY=1") {
        let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
        states.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let ready = parse_ready(&line);
    assert_eq!(
        ready.imds,
        vec!["127.0.0.1:9254".parse().unwrap()],
        "served on the inherited socket"
    );
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

/// The audit line of a vend names the uid that owns the client's socket: this test's own for its
/// request, 65534 for a curl run as nobody.
#[tokio::test]
async fn audit_lines_name_the_client_uid() {
    let s = Served::start(ROLE_TOML).await;
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
    setup.wait_status("role", "fresh", phase_is("fresh"));
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
    setup.wait_status("role", "locked", phase_is("locked"));
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
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"none\"\n[ecs]\nenabled = false\n",
    );
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
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"none\"\n[ecs]\nenabled = false\n",
    );
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
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"dev\"\n[ecs]\nenabled = false\n",
    );
    let _daemon = setup.start();
    let p = setup.wait_status("dev", "fresh", phase_is("fresh"));
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
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n[ecs]\nenabled = false\n",
    );
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh"));
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
    let status = setup.wait_status("role", "counted", |p| p["requests"].as_u64() >= Some(2));
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
