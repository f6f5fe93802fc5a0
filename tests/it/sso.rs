//! IAM Identity Center profiles end to end: the real `credvend` binary (daemon and CLI) against the
//! stand-in of `support/sso_standin.py` (proved honest by `sso_standin.rs`) and moto with SigV4
//! authentication on behind it; boto3, botocore and the AWS CLI as the clients.
//!
//! Each test starts its own stand-in, so its counters (`CreateToken:refresh_token`, ...) count
//! only that test's calls; "refresh attempts" below are those counters.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use credvend::keystore::{Choice, KeyStore, OpenOptions};
use credvend::sso::{Grant, SignIn, SsoClient, SsoSession, cache};
use credvend::sts::ClientOptions;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::support::clients::{Client, Sdk, assumed_role_prefix};
use crate::support::daemon::{Daemon, Setup, phase_is, stderr};
use crate::support::http;
use crate::support::moto::Moto;
use crate::support::sso::{SsoRole, SsoStandin};
use crate::support::toml::Toml;

const START_URL: &str = "https://d-0000000000.awsapps.com/start";
const ACCOUNT: &str = "123456789012";
const ROLE_NAME: &str = "Developer";

/// moto, a role the portal hands out as `Developer`, a stand-in of this test's own, and a home
/// whose AWS config has `[sso-session corp]` and the SSO profile `dev` (and `more` profiles of the
/// same session), all endpoints at moto and the stand-in through a `[services]` section.
struct Fixture {
    moto: Moto,
    standin: SsoStandin,
    /// The IAM role behind `Developer`.
    role_arn: String,
    setup: Setup,
}

async fn fixture_with(setup: Setup, more: &[&str]) -> Fixture {
    let moto = Moto::shared();
    let admin = moto.admin_arn().await;
    let role_arn = moto.role("sso-dev", &[&admin], None).await;
    let standin = SsoStandin::start(
        &moto,
        &[SsoRole {
            account_id: ACCOUNT.into(),
            role_name: ROLE_NAME.into(),
            role_arn: role_arn.clone(),
        }],
    );
    let mut config = format!(
        "[sso-session corp]\nsso_start_url = {START_URL}\nsso_region = us-east-1\n\
         sso_registration_scopes = sso:account:access\n\n\
         [services local]\nsts =\n  endpoint_url = {m}\nsso =\n  endpoint_url = {s}\nsso_oidc =\n  endpoint_url = {s}\n\n",
        m = moto.url,
        s = standin.url
    );
    for name in std::iter::once(&"dev").chain(more) {
        config.push_str(&format!(
            "[profile {name}]\nsso_session = corp\nsso_account_id = {ACCOUNT}\nsso_role_name = {ROLE_NAME}\n\
             region = us-east-1\nservices = local\n\n"
        ));
    }
    setup.write_aws_config(&config);
    // `remove dev` at the end deletes the session's sign-in from the keyring.
    setup.remember("dev");
    Fixture {
        moto,
        standin,
        role_arn,
        setup,
    }
}

async fn fixture() -> Fixture {
    fixture_with(Setup::new(), &[]).await
}

/// The session of the fixture's profiles.
fn corp() -> SsoSession {
    SsoSession {
        name: Some("corp".into()),
        start_url: START_URL.into(),
        region: "us-east-1".into(),
        registration_scopes: vec!["sso:account:access".into()],
    }
}

/// The keyring this setup's processes use (the kernel keyring, under the setup's service).
async fn keyring(setup: &Setup) -> KeyStore {
    KeyStore::open(OpenOptions {
        choice: Choice::Keyutils,
        service: setup.service.clone(),
        prompt_timeout: Duration::ZERO,
    })
    .await
    .unwrap()
}

/// The sign-in of session `corp` in the keyring.
async fn stored(setup: &Setup) -> Option<SignIn> {
    keyring(setup).await.get_sso("corp").await.unwrap()
}

/// `credvend login PROFILE --device-code [ARGS]`, which must succeed (the stand-in approves by
/// itself after one pending poll). Returns its stderr.
fn device_login(setup: &Setup, profile: &str, args: &[&str]) -> String {
    let mut all = vec!["login", profile, "--device-code"];
    all.extend(args);
    let out = setup.cli(&all);
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    stderr(&out)
}

/// The access key id IMDS serves for `role` now (`Success` required).
async fn imds_key(daemon: &Daemon, role: &str) -> String {
    let c = http::imds_creds(daemon.imds(), role).await;
    assert_eq!(c["Code"], "Success", "{c}");
    c["AccessKeyId"].as_str().unwrap().to_owned()
}

/// `pred` on the stand-in's counters, polled (bounded by `bound`): the condition, not the time,
/// is the synchronisation.
async fn wait_stats(
    standin: &SsoStandin,
    what: &str,
    bound: Duration,
    pred: impl Fn(&std::collections::HashMap<String, u64>) -> bool,
) {
    let deadline = Instant::now() + bound;
    loop {
        let stats = standin.stats().await;
        if pred(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A directory on `PATH` with fake `notify-send` / `xdg-open` scripts that append their
/// arguments to a file each (`notes`, `opened`).
struct FakeDesktop {
    dir: tempfile::TempDir,
}

impl FakeDesktop {
    fn new() -> FakeDesktop {
        let dir = tempfile::tempdir().unwrap();
        for (program, log) in [("notify-send", "notes"), ("xdg-open", "opened")] {
            let path = dir.path().join(program);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"$@\" >> {}\n",
                    dir.path().join(log).display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeDesktop { dir }
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap()
        )
    }

    /// What the fake program wrote to `log` so far.
    fn read(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }

    /// Waits (bounded) until `log` contains `needle`; returns its text.
    fn wait_for(&self, log: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.read(log);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{log} never had {needle:?}: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A device-code `credvend login` makes an SSO profile fresh; boto3 over IMDS and the AWS CLI
/// over ECS call GetCallerIdentity at moto as the SSO role; a role chained from the SSO profile is
/// served too. Before the sign-in the profile is `needs-login` everywhere (status, IMDS, ECS 403,
/// a desktop notification); `remove` ends the sign-in again.
#[tokio::test]
async fn device_code_login_serves_the_sso_role_and_a_chained_role() {
    let desktop = FakeDesktop::new();
    let f = fixture_with(Setup::new().with_env("PATH", &desktop.path_var()), &[]).await;
    // moto matches the trusted principal against the assumed-role session ARN (the stand-in's
    // sessions are named after its user, `standin-user`).
    let sso_session = format!(
        "arn:aws:sts::{ACCOUNT}:assumed-role/{}/standin-user",
        f.role_arn.rsplit('/').next().unwrap()
    );
    let admin_role = f
        .moto
        .role("sso-admin", &[&sso_session, &f.role_arn], None)
        .await;
    f.setup.append_aws_config(&format!(
        "[profile admin]\nrole_arn = {admin_role}\nsource_profile = dev\nregion = us-east-1\nservices = local\n"
    ));
    f.setup.write_toml(
        &Toml::new()
            .imds("dev")
            .ecs(&["dev", "admin"])
            .prewarm(&["admin"])
            .build(),
    );
    let daemon = f.setup.start();

    // No sign-in yet: needs-login, with the fix named on every channel; nothing was called.
    let p = f
        .setup
        .wait_status("dev", "needs-login", phase_is("needs-login"))
        .await;
    assert_eq!(p["last_error"]["code"], "NeedsLogin", "{p}");
    assert!(
        p["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("run `credvend login dev`"),
        "{p}"
    );
    assert_eq!(p["source"], "sso-session:corp -> GetRoleCredentials(dev)");
    let imds = http::imds_creds(daemon.imds(), "dev").await;
    assert_eq!(imds["Code"], "NeedsLogin", "{imds}");
    assert!(
        imds["Message"]
            .as_str()
            .unwrap()
            .contains("credvend login dev")
    );
    let ecs_token = std::fs::read_to_string(f.setup.state_dir().join("ecs-token-dev")).unwrap();
    let r = http::ecs_get(daemon.ecs(), "dev", Some(&ecs_token)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    desktop.wait_for("notes", "credvend login dev");
    assert!(
        f.standin.stats().await.is_empty(),
        "nothing is sent before a sign-in"
    );

    // No DISPLAY or WAYLAND_DISPLAY (a server, an ssh session): `login` without
    // `--device-code` chooses the device-code flow by itself.
    let out = f.setup.cli(&["login", "dev"]);
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    let out = stderr(&out);
    assert!(
        out.contains("confirm the code") && out.contains(&format!("{}/device", f.standin.url)),
        "{out}"
    );
    assert_eq!(
        f.standin.stat("StartDeviceAuthorization").await,
        1,
        "{:?}",
        f.standin.stats().await
    );
    assert!(
        out.contains("the daemon mints new credentials for"),
        "{out}"
    );
    f.setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    let admin = f
        .setup
        .wait_status("admin", "fresh", phase_is("fresh"))
        .await;
    assert_eq!(
        admin["source"],
        "sso-session:corp -> GetRoleCredentials(dev) -> AssumeRole(admin)"
    );

    // boto3 over IMDS and the AWS CLI over ECS, as the SSO role; boto3 over ECS as the chained role.
    let sso_role = assumed_role_prefix(&f.role_arn);
    let over_imds = Client::new().env(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &format!("http://{}", daemon.imds()),
    );
    let who = over_imds.expect_whoami(Sdk::Boto3, &f.moto.url);
    assert!(who.arn.starts_with(&sso_role), "{}", who.arn);
    let over_ecs = |profile: &str| {
        Client::new()
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("http://{}/credentials/{profile}", daemon.ecs()),
            )
            .env(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                f.setup
                    .state_dir()
                    .join(format!("ecs-token-{profile}"))
                    .to_str()
                    .unwrap(),
            )
    };
    let who = over_ecs("dev").expect_whoami(Sdk::Cli, &f.moto.url);
    assert!(who.arn.starts_with(&sso_role), "{}", who.arn);
    let who = over_ecs("admin").expect_whoami(Sdk::Boto3, &f.moto.url);
    assert!(
        who.arn.starts_with(&assumed_role_prefix(&admin_role)),
        "{}",
        who.arn
    );
    let stats = f.standin.stats().await;
    assert_eq!(stats.get("RegisterClient"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("GetRoleCredentials"), Some(&2), "{stats:?}");

    // The sign-in is in the keyring, refreshable; `remove` deletes it and the daemon is told.
    let s = stored(&f.setup)
        .await
        .expect("the sign-in is in the keyring");
    assert!(s.token.can_refresh(OffsetDateTime::now_utc()));
    assert_eq!(s.grant, Grant::DeviceCode);
    let out = f.setup.cli(&["remove", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed the IAM Identity Center sign-in of sso-session corp"),
        "{}",
        stderr(&out)
    );
    assert!(stored(&f.setup).await.is_none());
    f.setup
        .wait_status("dev", "needs-login", phase_is("needs-login"))
        .await;
    // What was minted is still served while valid.
    imds_key(&daemon, "dev").await;
}

/// The access token is refreshed with the refresh token before it expires, with no user action,
/// and once for three profiles sharing the `sso-session`, however often they mint meanwhile.
#[tokio::test]
async fn access_token_is_refreshed_before_expiry_once_for_three_profiles() {
    let f = fixture_with(Setup::new(), &["dev2", "dev3"]).await;
    // 900 s role sessions rotated every few seconds (margin 850 s, min interval 3 s): the three
    // profiles keep needing the access token, which lives 40 s (refresh window 10 s).
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 40, "role_session_seconds": 900 }))
        .await;
    f.setup.write_toml(
        &Toml::new()
            .section("[refresh]\nmargin_seconds = 850\nmin_interval_seconds = 3\n")
            .ecs(&["dev", "dev2", "dev3"])
            .prewarm(&["dev", "dev2", "dev3"])
            .build(),
    );
    let _daemon = f.setup.start();
    device_login(&f.setup, "dev", &[]);
    let first = stored(&f.setup).await.unwrap();
    // The refreshed token lives long, so one refresh is all this test may see.
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 3600 }))
        .await;
    for name in ["dev", "dev2", "dev3"] {
        f.setup.wait_status(name, "fresh", phase_is("fresh")).await;
    }
    wait_stats(
        &f.standin,
        "refreshed the access token",
        Duration::from_secs(90),
        |s| s.get("CreateToken:refresh_token").copied().unwrap_or(0) >= 1,
    )
    .await;
    // Every profile keeps minting with the new token.
    let mut after = Vec::new();
    for name in ["dev", "dev2", "dev3"] {
        after.push(
            f.setup.profile_status(name).unwrap()["refreshes"]
                .as_u64()
                .unwrap(),
        );
    }
    for (name, before) in ["dev", "dev2", "dev3"].into_iter().zip(after) {
        let p = f
            .setup
            .wait_status(name, "minted twice more", |p| {
                p["refreshes"].as_u64().unwrap() >= before + 2
            })
            .await;
        assert_eq!(p["phase"], "fresh", "{p}");
        assert!(p["last_error"].is_null(), "{p}");
    }
    let stats = f.standin.stats().await;
    assert_eq!(
        stats.get("CreateToken:refresh_token"),
        Some(&1),
        "one refresh for three profiles: {stats:?}"
    );
    assert!(
        stats.get("GetRoleCredentials").copied().unwrap_or(0) >= 9,
        "{stats:?}"
    );
    // Before expiry: the new token was issued while the first one was still valid, and the
    // keyring holds the new one (with the rotated refresh token).
    let second = stored(&f.setup).await.unwrap();
    assert!(!second.same_token(&first.token));
    assert!(
        second.issued_at.unwrap() < first.token.expires_at,
        "refreshed at {:?}, the first token expired at {}",
        second.issued_at,
        first.token.expires_at
    );
    assert_ne!(
        second.token.refresh_token.unwrap().expose_secret(),
        first.token.refresh_token.unwrap().expose_secret()
    );
}

/// With the refresh token revoked, status shows `needs-login` when the refresh is due (for both
/// profiles of the session), the old credentials keep being served, IAM Identity Center sees one
/// refresh attempt (and the next look is scheduled 20 minutes later: at most three an hour), and a
/// new `login` recovers.
#[tokio::test]
async fn revoked_refresh_token_turns_needs_login_until_a_new_login() {
    let desktop = FakeDesktop::new();
    let f = fixture_with(
        Setup::new().with_env("PATH", &desktop.path_var()),
        &["dev2"],
    )
    .await;
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 20 }))
        .await;
    f.setup.write_toml(
        &Toml::new()
            .imds("dev")
            .ecs(&["dev2"])
            .prewarm(&["dev2"])
            .build(),
    );
    let daemon = f.setup.start();
    device_login(&f.setup, "dev", &[]);
    f.setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    let old_key = imds_key(&daemon, "dev").await;
    assert_eq!(f.standin.revoke_refresh_tokens().await, 1);

    // The refresh is due 5 s before the 20 s token ends: refused, so needs-login.
    let p = f
        .setup
        .wait_status_within(
            "dev",
            "needs-login",
            Duration::from_secs(60),
            phase_is("needs-login"),
        )
        .await;
    assert_eq!(p["last_error"]["code"], "NeedsLogin", "{p}");
    let message = p["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("refused") && message.contains("run `credvend login dev`"),
        "{message}"
    );
    let next = OffsetDateTime::parse(
        p["next_refresh"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        next > OffsetDateTime::now_utc() + time::Duration::minutes(15),
        "the next look is about 20 minutes away: {next}"
    );
    desktop.wait_for("notes", "needs an IAM Identity Center sign-in");
    f.setup
        .wait_status("dev2", "needs-login", phase_is("needs-login"))
        .await;
    assert!(p["expiration"].is_string(), "the old credentials are held");
    assert_eq!(imds_key(&daemon, "dev").await, old_key, "and still served");

    // Asking again (a manual refresh) sends nothing more: the refused sign-in is not retried.
    let refusals = || {
        daemon
            .log()
            .matches(
                "profile `dev` needs an IAM Identity Center sign-in (IAM Identity Center refused",
            )
            .count()
    };
    assert_eq!(refusals(), 1, "{}", daemon.log());
    let out = f.setup.cli(&["refresh", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while refusals() < 2 {
        assert!(
            Instant::now() < deadline,
            "the refresh was not answered: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        f.setup.profile_status("dev").unwrap()["phase"],
        "needs-login"
    );
    assert_eq!(
        f.standin.stat("CreateToken:refresh_token").await,
        1,
        "{}",
        daemon.log()
    );
    assert_eq!(f.standin.stat("error:InvalidGrantException").await, 1);
    assert_eq!(imds_key(&daemon, "dev").await, old_key);

    // A new sign-in recovers at once.
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 3600 }))
        .await;
    device_login(&f.setup, "dev", &[]);
    for name in ["dev", "dev2"] {
        f.setup
            .wait_status(name, "fresh after login", |p| {
                p["phase"] == "fresh" && p["refreshes"] == 2
            })
            .await;
    }
    assert_ne!(imds_key(&daemon, "dev").await, old_key);
    assert_eq!(
        f.standin.stat("CreateToken:refresh_token").await,
        1,
        "one refresh attempt over the whole test"
    );
}

/// Runs botocore's own SSO providers (`sso_honesty.py provider`) for session `corp` in `home`.
async fn botocore_provider(f: &Fixture, home: &Path) -> serde_json::Value {
    crate::sso_standin::honesty(
        home,
        &[
            "provider",
            &f.standin.url,
            &f.moto.url,
            ACCOUNT,
            ROLE_NAME,
            &f.role_arn,
            START_URL,
            "corp",
        ],
    )
    .await
}

/// A token cache file as botocore's token provider writes it (it refreshed an expired token and
/// rewrote the file) is picked up by a daemon with nothing in the keyring: no new sign-in, no
/// refresh, the token copied into the keyring, the file left as it was.
#[tokio::test]
async fn token_botocore_wrote_is_picked_up_from_the_cache() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "pending_polls": 0 }))
        .await;
    // A sign-in, its access token made expired, in the cache file of session `corp`.
    let client = SsoClient::new(&ClientOptions::default()).unwrap();
    let ep = f.standin.endpoints();
    let reg = client
        .register_client(&ep, &corp(), &credvend::sso::GrantKind::DeviceCode)
        .await
        .unwrap();
    let auth = client
        .start_device_authorization(&ep, &corp(), &reg)
        .await
        .unwrap();
    let mut token = client
        .wait_for_device_token(&ep, &corp(), &reg, &auth)
        .await
        .unwrap();
    token.expires_at = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let dir = f.setup.home().join(".aws/sso/cache");
    let path = cache::write(&dir, &corp(), &token).unwrap();
    // botocore's SSOTokenProvider refreshes it and rewrites the file.
    let out = botocore_provider(&f, f.setup.home()).await;
    assert_eq!(out["refreshes"], 1, "{out}");
    assert_eq!(out["cache_rewritten"], true, "{out}");
    let written = std::fs::read_to_string(&path).unwrap();
    let refreshes = f.standin.stat("CreateToken:refresh_token").await;

    f.setup.write_toml(&Toml::new().imds("dev").build());
    let daemon = f.setup.start();
    f.setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    let who = Client::new()
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &format!("http://{}", daemon.imds()),
        )
        .expect_whoami(Sdk::Boto3, &f.moto.url);
    assert!(
        who.arn.starts_with(&assumed_role_prefix(&f.role_arn)),
        "{}",
        who.arn
    );
    assert_eq!(f.standin.stat("CreateToken:refresh_token").await, refreshes);
    assert_eq!(f.standin.stat("RegisterClient").await, 1, "no new sign-in");
    let kept = stored(&f.setup).await.expect("copied into the keyring");
    assert_eq!(
        cache::render(&kept.token).expose_secret(),
        written,
        "the keyring holds what botocore wrote"
    );
    assert!(!kept.share_cache);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        written,
        "the file is untouched"
    );
    assert!(
        daemon
            .log()
            .contains("picked up the sign-in of `aws sso login`")
    );
}

/// `login --share-cache` writes the cache file (mode 0600) that botocore's providers read without
/// signing in or refreshing; `lock` forgets the sign-in in the keyring and that shared file.
#[tokio::test]
async fn share_cache_writes_what_botocore_reads_and_lock_forgets_it() {
    let f = fixture().await;
    f.setup.write_toml(&Toml::new().imds("dev").build());
    let _daemon = f.setup.start();
    let out = device_login(&f.setup, "dev", &["--share-cache"]);
    let path = cache::cache_path(&f.setup.home().join(".aws/sso/cache"), &corp());
    assert!(out.contains(path.to_str().unwrap()), "{out}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kept = stored(&f.setup).await.unwrap();
    assert!(kept.share_cache);
    assert_eq!(
        cache::render(&kept.token).expose_secret(),
        std::fs::read_to_string(&path).unwrap()
    );
    f.setup.wait_status("dev", "fresh", phase_is("fresh")).await;

    let out = botocore_provider(&f, f.setup.home()).await;
    assert_eq!(out["refreshes"], 0, "{out}");
    assert_eq!(out["role_credentials_calls"], 1, "{out}");
    assert_eq!(out["cache_rewritten"], false, "{out}");
    assert!(
        out["arn"]
            .as_str()
            .unwrap()
            .starts_with(&assumed_role_prefix(&f.role_arn)),
        "{out}"
    );

    let out = f.setup.cli(&["lock", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.setup
        .wait_status("dev", "locked", phase_is("locked"))
        .await;
    // The refresher forgets the sign-in right after the credentials: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&f.setup).await.is_some() || path.exists() {
        assert!(
            Instant::now() < deadline,
            "lock did not forget the sign-in (keyring: {}, file: {})",
            stored(&f.setup).await.is_some(),
            path.exists()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the keyring (bounded) until the sign-in of `corp` satisfies `pred`.
async fn wait_stored(setup: &Setup, what: &str, pred: impl Fn(&SignIn) -> bool) -> SignIn {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = stored(setup).await
            && pred(&s)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "the keyring never held {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shared sign-in stays one sign-in: the daemon writes each refreshed token back to the AWS
/// CLI's cache (botocore then refreshes with the refresh token found there), and takes over the
/// token botocore wrote instead of refreshing the one botocore's refresh retired.
#[tokio::test]
async fn shared_sign_in_stays_in_step_with_the_aws_cli() {
    let f = fixture().await;
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 40 }))
        .await;
    f.setup.write_toml(&Toml::new().imds("dev").build());
    let daemon = f.setup.start();
    device_login(&f.setup, "dev", &["--share-cache"]);
    let path = cache::cache_path(&f.setup.home().join(".aws/sso/cache"), &corp());
    let first = stored(&f.setup).await.unwrap();

    // The daemon refreshes before expiry and writes the new token back to the file.
    let second = wait_stored(&f.setup, "a refreshed token", |s| {
        !s.same_token(&first.token)
    })
    .await;
    assert!(second.share_cache);
    assert_eq!(f.standin.stat("CreateToken:refresh_token").await, 1);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        cache::render(&second.token).expose_secret(),
        "the cache file holds the refreshed token"
    );

    // botocore finds it within its 15-minute window and refreshes with the refresh token the
    // daemon wrote, which retires the daemon's copy of it.
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 3600 }))
        .await;
    let out = botocore_provider(&f, f.setup.home()).await;
    assert_eq!(out["refreshes"], 1, "{out}");
    assert_eq!(out["cache_rewritten"], true, "{out}");
    let botocore_token = cache::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();

    // When the daemon's refresh is due, it takes over botocore's token instead of presenting
    // the retired refresh token.
    let third = wait_stored(&f.setup, "botocore's token", |s| {
        s.same_token(&botocore_token)
    })
    .await;
    assert!(third.share_cache);
    assert!(
        daemon
            .log()
            .contains("taking over the newer token the AWS CLI wrote to its cache")
    );
    let p = f
        .setup
        .wait_status("dev", "fresh with botocore's token", |p| {
            p["phase"] == "fresh" && p["refreshes"].as_u64().unwrap() >= 3
        })
        .await;
    assert!(p["last_error"].is_null(), "{p}");
    assert_eq!(
        f.standin.stat("CreateToken:refresh_token").await,
        2,
        "the daemon's and botocore's refreshes, nothing refused"
    );
    assert_eq!(f.standin.stat("error:InvalidGrantException").await, 0);
}

/// The default sign-in: the authorization-code flow with PKCE. The CLI prints the URL and opens a
/// browser (a fake `xdg-open` on a fake display); the test plays the browser: fetches the URL and
/// delivers the redirect to the CLI's loopback listener. A second sign-in reuses the registration.
/// At trace level, no authorization code, PKCE verifier or token reaches a log or a file.
#[tokio::test]
async fn auth_code_login_with_the_test_as_browser() {
    let desktop = FakeDesktop::new();
    let f = fixture_with(
        Setup::new()
            .with_env("PATH", &desktop.path_var())
            .with_env("DISPLAY", ":99")
            .with_env("CREDVEND_LOG", "trace"),
        &[],
    )
    .await;
    let mut cli_logs = String::new();
    f.setup.write_toml(&Toml::new().imds("dev").build());
    let daemon = f.setup.start();
    for round in 1..=2 {
        let child = f
            .setup
            .command(&["login", "dev"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The browser was opened with the authorize URL (and the URL was printed).
        let opened = desktop.wait_for("opened", "/authorize?");
        let url = opened.lines().last().unwrap().trim().to_owned();
        assert!(
            url.starts_with(&format!("{}/authorize?", f.standin.url)),
            "{url}"
        );
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let resp = browser.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with("http://127.0.0.1:"), "{location}");
        let page = browser.get(&location).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("Signed in"));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "login: {}", stderr(&out));
        cli_logs.push_str(&stderr(&out));
        assert!(
            stderr(&out).contains(&url),
            "the URL is printed: {}",
            stderr(&out)
        );
        f.setup
            .wait_status("dev", "fresh", |p| {
                p["phase"] == "fresh" && p["refreshes"] == round
            })
            .await;
        // Truncate the record for the next round.
        std::fs::write(desktop.dir.path().join("opened"), "").unwrap();
    }
    let stats = f.standin.stats().await;
    assert_eq!(
        stats.get("CreateToken:authorization_code"),
        Some(&2),
        "{stats:?}"
    );
    assert_eq!(
        stats.get("RegisterClient"),
        Some(&1),
        "the registration is reused: {stats:?}"
    );
    let token = stored(&f.setup).await.unwrap();
    assert_eq!(token.grant, Grant::AuthCode);
    imds_key(&daemon, "dev").await;
    // At trace level, neither the codes, the PKCE verifiers nor the tokens reach a log or a file.
    let mut secrets = f.standin.issued().await;
    assert_eq!(
        secrets.len(),
        4,
        "two codes, two verifiers, no device code: {secrets:?}"
    );
    secrets.push(token.token.access_token.expose_secret().to_owned());
    let logs = format!("{}\n{cli_logs}", daemon.log());
    assert!(logs.contains("TRACE"), "trace level was on");
    let files = files_under(f.setup.home());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a sign-in secret is in the logs"
        );
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret.as_str()),
                "a sign-in secret is in {}",
                file.display()
            );
        }
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&path)),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
    out
}

/// A whole SSO session at trace level (login, IMDS and ECS fetches, a token refresh, status,
/// refresh, lock): no token or secret in any log line, and in no file under the home directory
/// (which holds the state directory) but the keyring's.
#[tokio::test]
async fn no_sso_token_or_secret_in_logs_or_files() {
    let f = fixture_with(Setup::new().with_env("CREDVEND_LOG", "trace"), &[]).await;
    f.standin
        .settings(serde_json::json!({ "access_token_ttl": 20 }))
        .await;
    f.setup
        .write_toml(&Toml::new().imds("dev").ecs(&["dev"]).build());
    let daemon = f.setup.start();
    let mut cli_logs = device_login(&f.setup, "dev", &[]);
    let first = stored(&f.setup).await.unwrap();
    f.setup.wait_status("dev", "fresh", phase_is("fresh")).await;
    let creds = http::imds_creds(daemon.imds(), "dev").await;
    assert_eq!(creds["Code"], "Success");
    let ecs_token = std::fs::read_to_string(f.setup.state_dir().join("ecs-token-dev")).unwrap();
    assert_eq!(
        http::ecs_get(daemon.ecs(), "dev", Some(&ecs_token))
            .await
            .status,
        200
    );
    wait_stats(
        &f.standin,
        "refreshed the access token",
        Duration::from_secs(60),
        |s| s.get("CreateToken:refresh_token").copied().unwrap_or(0) >= 1,
    )
    .await;
    f.setup
        .wait_status("dev", "fresh after the token refresh", |p| {
            p["phase"] == "fresh" && p["refreshes"].as_u64().unwrap() >= 2
        })
        .await;
    let second = stored(&f.setup).await.unwrap();
    assert!(!second.same_token(&first.token));
    for args in [&["status"][..], &["refresh", "dev"], &["list"]] {
        let out = f.setup.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        cli_logs.push_str(&stderr(&out));
    }
    let mut secrets: Vec<(&str, String)> = vec![
        (
            "role secret key",
            creds["SecretAccessKey"].as_str().unwrap().to_owned(),
        ),
        (
            "role session token",
            creds["Token"].as_str().unwrap().to_owned(),
        ),
    ];
    for (when, s) in [("first", &first), ("second", &second)] {
        secrets.push((when, s.token.access_token.expose_secret().to_owned()));
        secrets.push((
            when,
            s.token
                .refresh_token
                .as_ref()
                .unwrap()
                .expose_secret()
                .to_owned(),
        ));
        secrets.push((
            when,
            s.token
                .registration
                .as_ref()
                .unwrap()
                .client_secret
                .expose_secret()
                .to_owned(),
        ));
    }
    let issued = f.standin.issued().await;
    assert!(!issued.is_empty(), "the device code");
    secrets.extend(issued.into_iter().map(|s| ("sign-in code", s)));
    let out = f.setup.cli(&["lock", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    cli_logs.push_str(&stderr(&out));
    f.setup
        .wait_status("dev", "locked", phase_is("locked"))
        .await;

    let logs = format!("{}\n{cli_logs}", daemon.log());
    assert!(logs.contains("TRACE"), "trace level was on");
    assert!(logs.contains("refreshed the IAM Identity Center access token"));
    let files = files_under(f.setup.home());
    assert!(
        files.iter().any(|p| p.ends_with("ecs-token-dev")),
        "the state directory is scanned: {files:?}"
    );
    for (what, secret) in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a {what} secret is in the logs"
        );
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a {what} secret is in {}",
                file.display()
            );
        }
    }
}
