//! Cost grows with use, not with the config file: profiles other than the `[[imds]]` ones and
//! `[refresh] prewarm` are minted on their first request, kept fresh while used, dropped when
//! idle, and remembered across restarts; `exec` warms its profile before the child starts.
//! Against moto with SigV4 auth on, through the counting STS proxy.

use std::io::Write as _;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::support::clients::{Client, Sdk};
use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::moto::Moto;
use crate::support::sts_proxy::{Mode, StsProxy};
use crate::support::toml::Toml;

/// An AWS config with `base` (keys in the keyring) and `n` role profiles `r000`.. assumed from it,
/// each with 900 s sessions named after the profile (so the proxy's log says whose call it was).
fn role_profiles(endpoint: &str, role_arn: &str, n: usize) -> String {
    let mut config = format!("[profile base]\nregion = us-east-1\nendpoint_url = {endpoint}\n");
    for i in 0..n {
        config.push_str(&format!(
            "[profile r{i:03}]\nregion = us-east-1\nendpoint_url = {endpoint}\nrole_arn = {role_arn}\nsource_profile = base\nduration_seconds = 900\nrole_session_name = s{i:03}\n"
        ));
    }
    config
}

/// `[refresh]` settings under which every minted 900 s session rotates exactly 20 s after it was
/// minted (lead capped at lifetime - min_interval; jitter cannot move it earlier than that).
const ROTATE_EVERY_20S: &str =
    "[refresh]\nidle_after_seconds = 60\nmargin_seconds = 870\nmin_interval_seconds = 20\n";

/// AssumeRole calls the proxy saw for the profile whose sessions are named `session`.
fn assumed(proxy: &StsProxy, session: &str) -> usize {
    let field = format!("RoleSessionName={session}");
    proxy
        .requests()
        .iter()
        .filter(|(action, req)| action == "AssumeRole" && req.contains(&field))
        .count()
}

/// The variables that point a container client at the ECS endpoint for `profile`, written by
/// hand (`credvend env --container` would warm the profile, and this request must be the first).
fn ecs_client(setup: &Setup, ecs: std::net::SocketAddr, profile: &str) -> Client {
    Client::new()
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("http://{ecs}/credentials/{profile}"),
        )
        .env(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            setup
                .state_dir()
                .join(format!("ecs-token-{profile}"))
                .to_str()
                .unwrap(),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// 200 role profiles and no client: only the IMDS listener's profile is minted (one STS call);
/// the first boto3 request over ECS for another one gets credentials (one more call); while in
/// use it rotates (every 20 s here); a minute after its last use it is idle: nothing held, no
/// rotation scheduled, `status` says so, and it makes no further STS call while the prewarmed
/// profile rotates twice more (two of the intervals it would have rotated in). No other profile
/// is ever minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_profiles_cost_one_sts_call_until_used_and_go_idle_after_use() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("lazy").await;
    let role_arn = moto.role("lazy", &[&user.arn], None).await;
    setup.write_aws_config(&role_profiles(&proxy.url(), &role_arn, 200));
    setup.store_key("base", &user.key);
    setup.write_toml(
        &Toml::new()
            .imds("r000")
            .ecs_all()
            .section(ROTATE_EVERY_20S)
            .build(),
    );
    let daemon = setup.start();
    setup.wait_status("r000", "fresh", phase_is("fresh")).await;
    setup.wait_status("r150", "idle", phase_is("idle")).await;
    let r150 = setup.profile_status("r150").unwrap();
    assert_eq!(r150["on_demand"], true, "{r150}");
    assert_eq!(
        proxy.count("AssumeRole"),
        assumed(&proxy, "s000"),
        "only r000 is minted"
    );
    assert_eq!(
        proxy.requests().len(),
        proxy.count("AssumeRole"),
        "no other STS call: {:?}",
        proxy.requests()
    );

    // The first request for r150 mints it and is answered.
    let who = ecs_client(&setup, daemon.ecs(), "r150").expect_whoami(Sdk::Boto3, &moto.url);
    assert!(who.arn.contains(":assumed-role/"), "{}", who.arn);
    assert!(assumed(&proxy, "s150") >= 1);
    let used = setup.wait_status("r150", "fresh", phase_is("fresh")).await;
    assert!(
        used["last_use"].is_string() && used["next_refresh"].is_string(),
        "{used}"
    );
    let in_use = std::fs::read_to_string(setup.state_dir().join("in-use.json")).unwrap();
    assert!(in_use.contains("\"r150\""), "{in_use}");
    // In use, it rotates.
    setup
        .wait_status_within("r150", "rotated", Duration::from_secs(60), |p| {
            p["refreshes"].as_u64() >= Some(2)
        })
        .await;

    // A minute without requests: idle.
    let idle = setup
        .wait_status_within("r150", "idle", Duration::from_secs(120), phase_is("idle"))
        .await;
    let calls_at_idle = assumed(&proxy, "s150");
    assert!(
        idle["access_key_id"].is_null() && idle["next_refresh"].is_null(),
        "{idle}"
    );
    assert!(daemon.wait_for_log(
        "not asked for within the idle window",
        Duration::from_secs(5)
    ));
    let in_use = std::fs::read_to_string(setup.state_dir().join("in-use.json")).unwrap();
    assert!(!in_use.contains("\"r150\""), "{in_use}");
    let text = stdout(&setup.cli(&["status"]));
    assert!(text.contains("r150  idle (last used"), "{text}");
    assert!(
        text.contains("r151  idle (not used since the daemon started"),
        "{text}"
    );
    // r000 rotates twice more (at least 20 s, a whole interval of r150's): r150 does not.
    let r000 = assumed(&proxy, "s000");
    assert!(
        proxy
            .wait_count(
                "AssumeRole",
                proxy.count("AssumeRole") + 2,
                Duration::from_secs(90)
            )
            .await
    );
    assert!(assumed(&proxy, "s000") >= r000 + 2);
    assert_eq!(
        assumed(&proxy, "s150"),
        calls_at_idle,
        "an idle profile rotated"
    );
    // Nobody else was ever minted.
    let others = proxy.count("AssumeRole") - assumed(&proxy, "s000") - assumed(&proxy, "s150");
    assert_eq!(others, 0, "{:?}", proxy.requests());
    assert_eq!(proxy.requests().len(), proxy.count("AssumeRole"));
    // `refresh` with no profile leaves idle profiles idle.
    assert!(setup.cli(&["refresh"]).status.success());
    let before = setup.profile_status("r000").unwrap()["refreshes"]
        .as_u64()
        .unwrap();
    setup
        .wait_status("r000", "fresh again", |p| {
            p["refreshes"].as_u64() > Some(before) && p["phase"] == "fresh"
        })
        .await;
    assert_eq!(setup.profile_status("r150").unwrap()["phase"], "idle");
    assert_eq!(assumed(&proxy, "s150"), calls_at_idle);
}

/// What refreshes every profile sharing a source (a new key stored with `add`, `lock` then
/// `refresh`) mints the profiles in use and leaves idle ones idle: one STS call for the
/// prewarmed profile each time, none for the 20 idle ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_and_unlock_leave_idle_profiles_idle() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("lazykeys").await;
    let role_arn = moto.role("lazykeys", &[&user.arn], None).await;
    setup.write_aws_config(&role_profiles(&proxy.url(), &role_arn, 21));
    setup.store_key("base", &user.key);
    setup.write_toml(&Toml::new().imds("r000").ecs_all().build());
    let _daemon = setup.start();
    setup.wait_status("r000", "fresh", phase_is("fresh")).await;
    setup.wait_status("r020", "idle", phase_is("idle")).await;
    assert_eq!(proxy.count("AssumeRole"), 1);

    // The same key stored again: the daemon re-reads it and refreshes what uses it.
    let out = setup.cli_stdin(
        &[
            "add",
            "base",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
            "--no-verify",
            "--force",
        ],
        &format!("{}\n", user.key.secret_access_key.expose_secret()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    setup
        .wait_status("r000", "re-minted with the new key", |p| {
            p["refreshes"] == 2 && p["phase"] == "fresh"
        })
        .await;
    // `lock`, then `refresh`: the prewarmed profile mints, idle ones go back to idle.
    assert!(setup.cli(&["lock"]).status.success());
    setup
        .wait_status("r020", "locked", phase_is("locked"))
        .await;
    assert!(setup.cli(&["refresh"]).status.success());
    setup
        .wait_status("r000", "unlocked", |p| {
            p["refreshes"] == 3 && p["phase"] == "fresh"
        })
        .await;
    for i in 1..21 {
        let name = format!("r{i:03}");
        setup
            .wait_status(&name, "idle again", phase_is("idle"))
            .await;
    }
    assert_eq!(proxy.count("AssumeRole"), 3, "{:?}", proxy.requests());
}

/// `exec` of an idle profile mints before the child starts: with STS then holding every call,
/// the child's first request is still answered, with the credentials minted for the `exec`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_an_idle_profile_is_answered_from_memory() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("lazyexec").await;
    let role_arn = moto.role("lazyexec", &[&user.arn], None).await;
    setup.write_aws_config(&role_profiles(&proxy.url(), &role_arn, 2));
    setup.store_key("base", &user.key);
    setup.write_toml(&Toml::new().ecs(&["r001"]).build());
    let _daemon = setup.start();
    setup.wait_status("r001", "idle", phase_is("idle")).await;
    assert_eq!(proxy.requests().len(), 0);

    // The child waits for the test's go before its first request.
    let fifo = setup.home().join("go");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let script = format!(
        "read go < {fifo}; exec {python} {whoami}",
        fifo = fifo.display(),
        python = crate::support::moto::venv_bin("python"),
        whoami = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/python/whoami.py"),
    );
    let child = setup
        .command(&["exec", "r001", "--", "sh", "-c", &script])
        .env("AWS_ENDPOINT_URL_STS", &moto.url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let minted = setup.wait_status("r001", "fresh", phase_is("fresh")).await;
    proxy.set_mode(Mode::Hold);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    proxy.set_mode(Mode::Forward);
    assert!(out.status.success(), "{}", stderr(&out));
    let who: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["access_key_id"], minted["access_key_id"], "{who}");
    assert_eq!(proxy.count("AssumeRole"), 1);
}

/// A profile in use when the daemon stopped is minted at start-up by the next one (so its
/// clients find it warm); one never used stays idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_in_use_are_warmed_after_a_restart() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("lazyrestart").await;
    let role_arn = moto.role("lazyrestart", &[&user.arn], None).await;
    setup.write_aws_config(&role_profiles(&proxy.url(), &role_arn, 3));
    setup.store_key("base", &user.key);
    setup.write_toml(&Toml::new().ecs(&["r000", "r001", "r002"]).build());
    let daemon = setup.start();
    let out = setup.cli(&["credential-process", "r001"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.wait_status("r001", "fresh", phase_is("fresh")).await;
    assert!(daemon.terminate().success());

    let _daemon = setup.start();
    let warmed = setup.wait_status("r001", "fresh", phase_is("fresh")).await;
    assert_eq!(warmed["requests"], 0, "minted with no request: {warmed}");
    assert!(warmed["last_use"].is_string(), "{warmed}");
    for p in ["r000", "r002"] {
        assert_eq!(setup.profile_status(p).unwrap()["phase"], "idle");
    }
    assert_eq!(proxy.count("AssumeRole"), 2);
}
