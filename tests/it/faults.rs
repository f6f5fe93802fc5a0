//! Issue 7, fault injection: STS down, hanging, throttling, answering garbage; the keyring
//! locked at start; the daemon killed mid-refresh. STS faults come from the counting proxy in
//! front of moto switched to a fault mode (a mock, hence `fault` in the names).

use std::time::{Duration, Instant};

use crate::support::daemon::Setup;
use crate::support::http;
use crate::support::keyring::{SessionBus, in_own_process};
use crate::support::moto::Moto;
use crate::support::sts_proxy::{Mode, StsProxy};
use crate::support::toml::Toml;

/// A role profile whose STS calls go through `proxy`.
async fn proxied_role(moto: &Moto, proxy: &StsProxy, setup: &Setup) -> String {
    let user = moto.user("f").await;
    let role = moto.role("f", &[&user.arn], None).await;
    setup.write_aws_config(&format!(
        "[profile base]\nendpoint_url = {p}\n[profile role]\nrole_arn = {role}\nsource_profile = base\nendpoint_url = {p}\n",
        p = proxy.url()
    ));
    setup.store_key("base", &user.key);
    role
}

/// For each fault — STS down (connection closed), 500s, Throttling, malformed XML — a refresh
/// fails, the current credentials keep being served, the error is in `status` with a retry
/// scheduled, retries back off, and the next refresh after STS recovers succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sts_failures_keep_serving_current_credentials_and_recover() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    proxied_role(&moto, &proxy, &setup).await;
    setup.write_toml(&Toml::new().imds("role").build());
    let daemon = setup.start();
    setup
        .wait_status("role", "fresh", |p| p["phase"] == "fresh")
        .await;
    let before = http::imds_creds(daemon.imds(), "role").await;
    assert_eq!(before["Code"], "Success");

    for (mode, code) in [
        (Mode::Close, "StsUnavailable"),
        (Mode::Fail500, "StsUnavailable"),
        (Mode::Throttle, "StsThrottled"),
        (Mode::Garbage, "StsBadResponse"),
    ] {
        proxy.set_mode(mode);
        let calls_before = proxy.count("AssumeRole");
        assert!(setup.cli(&["refresh", "role"]).status.success());
        let p = setup
            .wait_status("role", "error", |p| p["phase"] == "error")
            .await;
        let err = &p["last_error"];
        assert_eq!(err["code"], code, "{mode:?}: {p:#}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .starts_with("profile `role`: "),
            "{p:#}"
        );
        assert!(
            p["next_refresh"].is_string(),
            "{mode:?}: a retry is scheduled"
        );
        // Transient faults were retried inside the call (3 attempts) before giving up.
        let attempts = proxy.count("AssumeRole") - calls_before;
        if mode == Mode::Garbage {
            assert_eq!(attempts, 1, "a malformed answer is not retried at once");
        } else {
            assert!(attempts >= 2, "{mode:?}: retried ({attempts} attempts)");
        }
        let during = http::imds_creds(daemon.imds(), "role").await;
        assert_eq!(during["Code"], "Success", "{mode:?}: still served");
        assert_eq!(
            during["AccessKeyId"], before["AccessKeyId"],
            "{mode:?}: the same credentials"
        );
    }
    // Backoff: after several consecutive failures the scheduled retry is further out than the
    // first one (RETRY_BASE 2 s doubling), but never past a quarter of the remaining lifetime.
    let p = setup.profile_status("role").unwrap();
    let next = credvend::creds::parse_aws_time(p["next_refresh"].as_str().unwrap()).unwrap();
    let exp = credvend::creds::parse_aws_time(p["expiration"].as_str().unwrap()).unwrap();
    assert!(next < exp, "retries happen before expiry");

    proxy.set_mode(Mode::Forward);
    assert!(setup.cli(&["refresh", "role"]).status.success());
    setup
        .wait_status("role", "fresh again", |p| {
            p["phase"] == "fresh" && p["last_error"].is_null()
        })
        .await;
    let after = http::imds_creds(daemon.imds(), "role").await;
    assert_ne!(
        after["AccessKeyId"], before["AccessKeyId"],
        "recovered with new credentials"
    );
}

/// While STS hangs on a refresh, requests are answered from memory at once (bounded here by 1 s,
/// the SDKs' own timeout; the tight latency figures are in scripts/bench).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sts_hanging_does_not_delay_requests() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    proxied_role(&moto, &proxy, &setup).await;
    setup.write_toml(&Toml::new().imds("role").build());
    let daemon = setup.start();
    setup
        .wait_status("role", "fresh", |p| p["phase"] == "fresh")
        .await;
    proxy.set_mode(Mode::Hang);
    let hung_before = proxy.count("AssumeRole");
    assert!(setup.cli(&["refresh", "role"]).status.success());
    setup
        .wait_status("role", "refreshing", |p| p["phase"] == "refreshing")
        .await;
    assert!(
        proxy.count("AssumeRole") > hung_before,
        "the refresh is stuck on STS"
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let c = http::imds_creds(daemon.imds(), "role").await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(c["Code"], "Success");
    }
    println!("slowest request while STS hangs: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}

/// The keyring is locked when the daemon starts: the daemon still starts, `status` and IMDS
/// name the problem, and once the keyring is unlocked the next refresh recovers.
#[test]
fn fault_keyring_locked_at_start_recovers_once_unlocked() {
    in_own_process(
        module_path!(),
        "fault_keyring_locked_at_start_recovers_once_unlocked",
        || {
            let bus = SessionBus::unlocked();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
            let moto = Moto::shared();
            let user = moto.user("lk").await;
            let role = moto.role("lk", &[&user.arn], None).await;
            let setup = Setup::new()
                .with_env("CREDVEND_KEYSTORE", "secret-service")
                .with_env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
            setup.write_aws_config(&format!(
                "[profile base]\nendpoint_url = {m}\n[profile role]\nrole_arn = {role}\nsource_profile = base\nendpoint_url = {m}\n",
                m = moto.url
            ));
            setup.store_key("base", &user.key);
            setup.write_toml(&Toml::new().imds("role").build());
            bus.lock_default_collection();
            let daemon = setup.start();
            let p = setup.wait_status("role", "error", |p| p["phase"] == "error").await;
            assert_eq!(p["last_error"]["code"], "KeyringUnavailable", "{p:#}");
            assert!(p["last_error"]["message"].as_str().unwrap().contains("locked"), "{p:#}");
            let c = http::imds_creds(daemon.imds(), "role").await;
            assert_eq!(c["Code"], "KeyringUnavailable");
            assert!(c["Message"].as_str().unwrap().contains("unlock"), "{c}");

            bus.unlock_default_collection();
            assert!(setup.cli(&["refresh", "role"]).status.success());
            setup.wait_status("role", "fresh", |p| p["phase"] == "fresh").await;
            assert_eq!(http::imds_creds(daemon.imds(), "role").await["Code"], "Success");
        });
        },
    );
}

/// `kill -9` while a refresh is stuck on STS: the restarted daemon serves, and an IMDS token
/// issued before the kill is still accepted (same listener address, key kept in the state dir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill_9_during_refresh_then_restart_serves_and_old_tokens_work() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    proxied_role(&moto, &proxy, &setup).await;
    setup.write_toml(&Toml::new().imds("role").build());
    let daemon = setup.start();
    let addr = daemon.imds();
    setup
        .wait_status("role", "fresh", |p| p["phase"] == "fresh")
        .await;
    let token = http::token(addr, 21600).await;
    proxy.set_mode(Mode::Hang);
    assert!(setup.cli(&["refresh", "role"]).status.success());
    setup
        .wait_status("role", "refreshing", |p| p["phase"] == "refreshing")
        .await;
    daemon.signal(libc::SIGKILL);
    let status = daemon.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    proxy.set_mode(Mode::Forward);
    // The same address again, so the listener identity (and so the token) is the same.
    setup.write_toml(&format!(
        "[[imds]]\nlisten = \"{addr}\"\nprofile = \"role\"\n[ecs]\nenabled = false\n"
    ));
    let restarted = setup.start();
    assert_eq!(restarted.imds(), addr);
    setup
        .wait_status("role", "fresh", |p| p["phase"] == "fresh")
        .await;
    let r = http::get(
        addr,
        "/latest/meta-data/iam/security-credentials/role",
        &token,
    )
    .await;
    assert_eq!(r.status, 200, "the pre-kill token is accepted: {}", r.body);
    assert_eq!(r.json()["Code"], "Success");
}
