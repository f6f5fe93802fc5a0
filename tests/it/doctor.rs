//! `credvend doctor` with the real binary: a broken setup (plaintext key in the credentials file,
//! `AWS_ACCESS_KEY_ID` in the environment, no daemon) is reported check by check with each fix and
//! a non-zero exit; a healthy one (daemon serving from moto, keys in the keyring, a clean
//! environment) passes. Every profile points at moto, so the STS checks stay on loopback.

use crate::support::daemon::{Setup, stdout};
use crate::support::keyring::{SessionBus, in_own_process};
use crate::support::moto::Moto;
use crate::support::toml::Toml;
use crate::transport::{Helper, moto_port, private_ca};

/// The checks of `doctor --json`.
fn json_checks(setup: &Setup) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = setup.cli(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not a JSON list ({e}): {}", stdout(&out)));
    for c in &checks {
        for field in ["check", "status", "detail"] {
            assert!(c[field].is_string(), "{field} missing in {c}");
        }
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(c.get("fix").is_some(), "fix missing in {c}");
    }
    (out.status.code(), checks)
}

fn find<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
}

#[tokio::test]
async fn doctor_reports_a_plaintext_key_env_credentials_and_a_stopped_daemon() {
    let moto = Moto::shared();
    let setup = Setup::new().with_env("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE");
    setup.write_aws_config(&format!(
        "[profile dev]\nregion = us-east-1\nendpoint_url = {}\n",
        moto.url
    ));
    let secret = "doctor/plaintext+SECRETEXAMPLEKEY";
    std::fs::write(
        setup.aws_credentials_path(),
        format!("[dev]\naws_access_key_id = AKIAFILEEXAMPLE\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();

    let out = setup.cli(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(!text.contains(secret), "a secret leaked: {text}");
    for needle in [
        "FAIL  daemon: ",
        "the credvend daemon is not running",
        "fix: start it: `systemctl --user start credvend`",
        "FAIL  credentials file: ",
        "dev (AKIAFILEEXAMPLE)",
        "fix: move them into the keyring: `credvend import --remove`",
        "FAIL  environment: credentials: ",
        "AWS_ACCESS_KEY_ID is set",
        "fix: unset AWS_ACCESS_KEY_ID",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }

    let (code, checks) = json_checks(&setup);
    assert_eq!(code, Some(1));
    for name in ["daemon", "credentials file", "environment: credentials"] {
        let c = find(&checks, name);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(c["fix"].is_string(), "{c}");
    }
    assert!(!serde_json::to_string(&checks).unwrap().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_a_healthy_setup() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").ecs(&["role"]).build());
    let daemon = setup.start();
    setup
        .wait_status("role", "fresh", |p| p["phase"] == "fresh")
        .await;

    let out = setup.cli(&["--config", setup.toml_path().to_str().unwrap(), "doctor"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("FAIL"), "{text}");

    let out = setup.cli(&[
        "--config",
        setup.toml_path().to_str().unwrap(),
        "doctor",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for name in [
        "daemon".to_owned(),
        format!("listener imds {}", daemon.imds()),
        format!("listener ecs {}", daemon.ecs()),
        "keyring".to_owned(),
        format!("sts {}/", moto.url),
        "environment".to_owned(),
        "credentials file".to_owned(),
        "aws config".to_owned(),
    ] {
        let c = checks
            .iter()
            .find(|c| c["check"] == name.as_str())
            .unwrap_or_else(|| panic!("no check {name} in {names:?}"));
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["fix"].is_null(), "{c}");
    }
    let sts = find(&checks, &format!("sts {}/", moto.url));
    assert!(sts["detail"].as_str().unwrap().contains("clock"), "{sts}");
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// An STS endpoint behind TLS from a private CA: trusted with `ca_bundle`, and without it the
/// check fails naming `ca_bundle` as the fix.
#[tokio::test]
async fn doctor_names_ca_bundle_when_an_sts_endpoint_is_not_trusted() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let (ca, cert, key) = private_ca(setup.home());
    let front = Helper::start(&[
        "tls-front",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        &moto_port(&moto),
    ]);
    let endpoint = format!("https://localhost:{}", front.port);
    setup.write_aws_config(&format!(
        "[profile trusted]\nendpoint_url = {endpoint}\nca_bundle = {}\n\
         [profile system]\nendpoint_url = {endpoint}\n",
        ca.display()
    ));
    let (code, checks) = json_checks(&setup);
    assert_eq!(code, Some(1));
    let trusted = find(
        &checks,
        &format!("sts {endpoint}/ (ca_bundle {})", ca.display()),
    );
    assert_eq!(trusted["status"], "ok", "{trusted}");
    assert!(
        trusted["detail"]
            .as_str()
            .unwrap()
            .contains("(used by trusted)")
    );
    let system = find(&checks, &format!("sts {endpoint}/"));
    assert_eq!(system["status"], "fail", "{system}");
    let detail = system["detail"].as_str().unwrap();
    assert!(
        detail.contains("certificate") && detail.contains("(used by system)"),
        "{detail}"
    );
    assert!(
        system["fix"].as_str().unwrap().contains("ca_bundle"),
        "{system}"
    );
}

/// A locked Secret Service fails the keyring check at once, without an unlock prompt.
#[test]
fn doctor_reports_a_locked_keyring_without_prompting() {
    in_own_process(
        module_path!(),
        "doctor_reports_a_locked_keyring_without_prompting",
        || {
            let bus = SessionBus::locked();
            let setup = Setup::new()
                .with_env("CREDVEND_KEYSTORE", "secret-service")
                .with_env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
            let started = std::time::Instant::now();
            let (code, checks) = json_checks(&setup);
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            assert_eq!(code, Some(1));
            let keyring = find(&checks, "keyring");
            assert_eq!(keyring["status"], "fail", "{keyring}");
            assert!(
                keyring["detail"].as_str().unwrap().contains("locked")
                    && keyring["fix"].as_str().unwrap().contains("unlock"),
                "{keyring}"
            );
            assert!(bus.default_collection_locked());
        },
    );
}
