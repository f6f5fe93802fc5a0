//! SIGHUP: reloading both configuration files as a diff, atomically.

use std::time::Duration;

use crate::support::daemon::{Setup, phase_is};
use crate::support::http;
use crate::support::moto::Moto;
use crate::support::raw;
use crate::support::served::{ROLE_TOML, Served};
use crate::support::toml::Toml;

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_serving_and_a_fixed_file_adds_a_listener() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").build());
    let daemon = setup.start();
    let first = daemon.imds();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
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
    // The failure stays on record through what re-applies the configuration in effect (a key
    // stored: which profiles the ECS endpoint serves depends on the keyring; `add` returns after
    // the daemon re-applied).
    let reload_error = || {
        let out = setup.cli(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["reload_error"].clone()
    };
    assert!(reload_error().is_object(), "{}", reload_error());
    setup.store_key(
        "other",
        &credvend::creds::LongTermKey {
            access_key_id: "AKIAOTHEREXAMPLE".into(),
            secret_access_key: secrecy::SecretString::from("other-secret"),
        },
    );
    assert!(reload_error().is_object(), "{}", reload_error());

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
    setup.write_toml(&Toml::new().imds("role").build());
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
    let before = s
        .setup
        .wait_status("role", "fresh", phase_is("fresh"))
        .await;
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

/// With `[ecs_agent]`, the last fallible step of a reload is writing a new profile's agent ID
/// file: when it fails (a directory squats its path), the ECS token step before it has already
/// succeeded, and still nothing changes: the new profile is served on neither endpoint, and the
/// agent endpoint serves its profile under the same ID.
#[tokio::test]
async fn sighup_failing_at_the_agent_id_write_keeps_everything_served_before() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    let agent = |profiles: &str| {
        format!("[ecs_agent]\nlisten = \"127.0.0.1:0\"\nprofiles = [{profiles}]\n")
    };
    setup.write_toml(&format!(
        "{}{}",
        Toml::new().imds("role").ecs(&["role"]).build(),
        agent("\"role\"")
    ));
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let id = std::fs::read_to_string(setup.state_dir().join("ecs-agent-id-role")).unwrap();
    let path = format!("/v2/credentials/{id}");
    let before = http::request(daemon.ecs_agent(), "GET", &path, &[]).await;
    assert_eq!(before.status, 200);

    std::fs::create_dir(setup.state_dir().join("ecs-agent-id-newp")).unwrap();
    setup.write_toml(&format!(
        "{}{}",
        Toml::new().imds("role").ecs(&["role", "newp"]).build(),
        agent("\"role\", \"newp\"")
    ));
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_for_log(
            "reload failed, the previous configuration keeps serving: cannot write the ECS agent ID file of `newp`",
            Duration::from_secs(10)
        ),
        "{}",
        daemon.log()
    );
    assert_eq!(setup.profile_names(), ["role"]);
    // The token file written before the failing step is left for a later reload to reuse, but
    // does not open the endpoint to `newp`.
    let token = std::fs::read_to_string(setup.state_dir().join("ecs-token-newp"))
        .expect("the ECS token step ran before the failing one");
    assert_eq!(
        http::ecs_get(daemon.ecs(), "newp", Some(&token))
            .await
            .status,
        403
    );
    let after = http::request(daemon.ecs_agent(), "GET", &path, &[]).await;
    assert_eq!(after.status, 200, "the same ID still serves");
    assert_eq!(after.json()["AccessKeyId"], before.json()["AccessKeyId"]);
}

/// A reload whose last fallible step fails (the token file of a newly served ECS profile cannot
/// be written: a directory squats its path) changes nothing: every listener and profile served
/// before is still served, with the same keys and tokens, and no half-written file is left.
#[tokio::test]
async fn sighup_failing_at_the_last_step_keeps_everything_served_before() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").ecs(&["role"]).build());
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let listeners_before = setup.status_json()["listeners"].clone();
    let imds_key = http::imds_creds(daemon.imds(), "role").await["AccessKeyId"].clone();
    let token_file = setup.state_dir().join("ecs-token-role");
    let ecs_token = std::fs::read_to_string(&token_file).unwrap();
    let ecs_key = http::ecs_get(daemon.ecs(), "role", Some(&ecs_token))
        .await
        .json()["AccessKeyId"]
        .clone();

    // The new configuration binds one more listener (which works) and serves one more ECS
    // profile, whose token file cannot be written.
    std::fs::create_dir(setup.state_dir().join("ecs-token-newp")).unwrap();
    setup.write_toml(
        &Toml::new()
            .imds("role")
            .imds_with("role", "role_name = \"second\"\n")
            .ecs(&["role", "newp"])
            .build(),
    );
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_for_log(
            "reload failed, the previous configuration keeps serving: cannot write the ECS token file of `newp`",
            Duration::from_secs(10)
        ),
        "{}",
        daemon.log()
    );

    assert_eq!(
        setup.status_json()["listeners"],
        listeners_before,
        "no listener added or lost"
    );
    assert_eq!(setup.profile_names(), ["role"]);
    assert_eq!(
        http::imds_creds(daemon.imds(), "role").await["AccessKeyId"],
        imds_key,
        "the same credentials over IMDS"
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), ecs_token);
    assert_eq!(
        http::ecs_get(daemon.ecs(), "role", Some(&ecs_token))
            .await
            .json()["AccessKeyId"],
        ecs_key,
        "the same token and credentials over ECS"
    );
    let leftovers: Vec<String> = std::fs::read_dir(setup.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
