//! The daemon under a service manager: SIGTERM drain, systemd and launchd files,
//! `install-service`, socket activation.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::daemon::{BIN, Setup, parse_ready, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, venv_bin};
use crate::support::sts_proxy::StsProxy;
use crate::support::toml::Toml;

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
            "requests never reached the handler: {}",
            daemon.log()
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
        (
            "systemd/system/credvend-ecs-agent@.socket",
            "credvend-ecs-agent@.socket",
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
    args.push(
        dir.path()
            .join("credvend-ecs-agent@alice.socket")
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
    // The binary quoted, with the options this command ran with (here from CREDVEND_KEYSTORE
    // and CREDVEND_STATE_DIR), so the service uses the same keyring and state directory.
    let exec = format!(
        "ExecStart=\"{BIN}\" \"--keystore\" \"keyutils\" \"--state-dir\" \"{}\" serve",
        setup.state_dir().display()
    );
    assert!(text.contains(&exec), "{exec}\n{text}");
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

/// Without a systemd user session (no user bus, as here) `install-service` writes the unit,
/// exits 1, and says what to do instead: enable a user session, or run `credvend serve`.
#[test]
fn install_service_without_a_user_bus_explains_the_alternatives() {
    let setup = Setup::new();
    let out = setup
        .command(&["install-service"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "no systemd user session",
        "loginctl enable-linger",
        "`credvend serve`",
        "The unit is written",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(
        setup
            .home()
            .join(".config/systemd/user/credvend.service")
            .exists()
    );
}

/// `curl -s -m 5 ARGS` in the network namespace of process `pid`.
fn curl_in(pid: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("nsenter")
        .args(["-t", pid, "-n", "curl", "-s", "-m", "5"])
        .args(args)
        .output()
        .unwrap()
}

/// Socket activation exactly as systemd does it, through `systemd-socket-activate`, inside a
/// private network namespace (so the fixed port it needs is ours alone). The daemon serves on the
/// inherited sockets, matched by their names (config says port 0; the ready line shows the
/// inherited 127.0.0.1:9254 for IMDS and 169.254.170.2:80 for the ECS agent endpoint, as the
/// shipped socket units hand them over), and reports READY=1 on NOTIFY_SOCKET.
#[test]
fn socket_activation_serves_inherited_sockets_and_reports_ready() {
    let setup = Setup::new();
    // The ECS agent listener as `credvend-ecs-agent@.socket` hands it over: 169.254.170.2:80 on
    // `lo`, named `ecs-agent` (the config's port-0 address matches neither socket: the names do).
    setup.write_toml(&format!(
        "{}[ecs_agent]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"none\"]\n",
        Toml::new().imds("none").build()
    ));
    let notify_path = setup.home().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let toml = setup.toml_path();
    let mut cmd = std::process::Command::new("unshare");
    setup.apply_env(&mut cmd);
    let script = format!(
        "ip link set lo up && ip address replace 169.254.170.2/32 dev lo && \
         exec systemd-socket-activate -l 127.0.0.1:9254 -l 169.254.170.2:80 --fdname=imds:ecs-agent -E NOTIFY_SOCKET \
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
        let out = curl_in(
            &pid,
            &[
                "-X",
                "PUT",
                "-H",
                "x-aws-ec2-metadata-token-ttl-seconds: 60",
                "http://127.0.0.1:9254/latest/api/token",
            ],
        );
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
    assert_eq!(
        ready.ecs_agent,
        Some("169.254.170.2:80".parse().unwrap()),
        "the ECS agent listener on its inherited socket"
    );
    // It answers there (an unknown ID: 400 from the daemon, not a refused peer).
    let out = curl_in(
        &pid,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://169.254.170.2/v2/credentials/0000",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}
