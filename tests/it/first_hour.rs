//! The first hour of a new user, against moto with SigV4 auth on: the shapes users write
//! (pretty-printed policies, the shortest and longest durations, typos) work the first time, and
//! every refusal names the real cause and its fix. (moto with auth on does not accept credentials
//! minted by its own GetSessionToken or GetFederationToken; tests that must use such credentials
//! run that step against a second moto with auth off and say so in their names.)

use std::time::Duration;

use secrecy::SecretString;

use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, PrivateMoto, secret_of};
use crate::support::sts_proxy::{Mode, StsProxy};
use crate::support::toml::Toml;

/// Temporary credentials from `credential-process` output.
fn creds_of(json: &serde_json::Value) -> credvend::creds::TemporaryCredentials {
    credvend::creds::TemporaryCredentials {
        access_key_id: json["AccessKeyId"].as_str().unwrap().to_owned(),
        secret_access_key: SecretString::from(json["SecretAccessKey"].as_str().unwrap().to_owned()),
        session_token: Some(SecretString::from(
            json["SessionToken"].as_str().unwrap().to_owned(),
        )),
        expiration: credvend::creds::parse_aws_time(json["Expiration"].as_str().unwrap()).unwrap(),
        account_id: None,
        arn: None,
        packed_policy_size: None,
    }
}

fn credential_process(setup: &Setup, profile: &str) -> serde_json::Value {
    let out = setup.cli(&["credential-process", profile]);
    assert!(out.status.success(), "{profile}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

const PRETTY_POLICY: &str = "{\n\t\"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\n      \"Effect\": \"Allow\",\n      \"Action\": [\"sts:GetCallerIdentity\", \"s3:GetObject\"],\n      \"Resource\": \"arn:aws:s3:::bucket/a+b & c=d%e/*\"\n    }\n  ]\n}\n";

/// A pretty-printed `file://` policy (spaces, newlines, tabs, a trailing newline) and an inline
/// one written over continuation lines reach STS (signed, auth on) for AssumeRole, and the minted
/// credentials call GetCallerIdentity as the role.
#[tokio::test]
async fn pretty_printed_policies_reach_sts_for_assume_role() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.user("pol").await;
    let role_arn = moto.role("pol", &[&user.arn], None).await;
    let file = setup.home().join("policy.json");
    std::fs::write(&file, PRETTY_POLICY).unwrap();
    setup.write_aws_config(&format!(
        "[profile base]\nregion = us-east-1\nendpoint_url = {m}\n\
         [profile pol-file]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role_arn}\nsource_profile = base\n\
         credvend_policy = file://{f}\n\
         [profile pol-inline]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role_arn}\nsource_profile = base\n\
         credvend_policy = {{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{{ \"Effect\": \"Allow\",\n    \"Action\": \"sts:*\", \"Resource\": \"*\" }}]\n  }}\n",
        m = moto.url,
        f = file.display()
    ));
    setup.store_key("base", &user.key);
    for profile in ["pol-file", "pol-inline"] {
        let minted = creds_of(&credential_process(&setup, profile));
        let id = Moto::client()
            .caller_identity(&moto.endpoint(), minted.signing_key())
            .await
            .unwrap();
        assert!(id.arn.contains(":assumed-role/"), "{profile}: {}", id.arn);
    }
}

/// GetFederationToken with a pretty-printed policy is accepted by STS (signed, auth on), and
/// its credentials call GetCallerIdentity (against a second moto with auth off: moto never accepts
/// its own federation tokens).
#[tokio::test]
async fn pretty_printed_policy_reaches_sts_for_federation_then_a_second_moto_with_auth_off() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.user("fed").await;
    let file = setup.home().join("policy.json");
    std::fs::write(&file, PRETTY_POLICY).unwrap();
    setup.write_aws_config(&format!(
        "[profile fed]\nregion = us-east-1\nendpoint_url = {}\ncredvend_federation_name = fed-user\n\
         credvend_policy = file://{}\n",
        moto.url,
        file.display()
    ));
    setup.store_key("fed", &user.key);
    let minted = creds_of(&credential_process(&setup, "fed"));
    let auth_off = PrivateMoto::start(false);
    let id = Moto::client()
        .caller_identity(&auth_off.moto.endpoint(), minted.signing_key())
        .await
        .unwrap();
    assert!(!id.account.is_empty());
    // `credvend add` checks the key of a federation profile with a policy (no --no-verify).
    let out = setup.cli_stdin(
        &[
            "add",
            "fed",
            "--force",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
        ],
        &format!("{}\n", secret_of(&user.key)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("verified"), "{}", stderr(&out));
}

/// A 900 s MFA session (`credvend_session_duration_seconds = 900`, the shortest STS allows):
/// `login` makes the role profile fresh and its credentials are served from that session (the
/// role is assumed at a second moto with auth off: moto does not accept its own GetSessionToken
/// credentials).
#[tokio::test]
async fn a_900_second_mfa_session_is_used_then_a_second_moto_with_auth_off_for_the_role() {
    let moto = Moto::shared();
    let auth_off = PrivateMoto::start(false);
    let setup = Setup::new();
    let user = moto.user("mfa900").await;
    setup.write_aws_config(&format!(
        "[profile u]\nregion = us-east-1\nendpoint_url = {m}\nmfa_serial = arn:aws:iam::123456789012:mfa/u\n\
         credvend_session_duration_seconds = 900\n\
         [profile r]\nregion = us-east-1\nendpoint_url = {off}\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = u\n",
        m = moto.url,
        off = auth_off.moto.url
    ));
    setup.store_key("u", &user.key);
    setup.write_toml(&Toml::new().imds("r").build());
    let daemon = setup.start();
    setup
        .wait_status("r", "needs-mfa", phase_is("needs-mfa"))
        .await;
    let out = setup.cli_stdin(&["login", "r", "--code-stdin"], "123456\n");
    assert!(out.status.success(), "{}", stderr(&out));
    setup.wait_status("r", "fresh", phase_is("fresh")).await;
    let served = http::imds_creds(daemon.imds(), "r").await;
    assert_eq!(served["Code"], "Success", "{served}");
}

/// A GetSessionToken profile with `duration_seconds = 900` rotates by itself (here every few
/// seconds, with `[refresh] min_interval_seconds = 5`), and STS gets 900.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_900_second_session_profile_rotates_by_itself() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("s900").await;
    setup.write_aws_config(&format!(
        "[profile s]\nregion = us-east-1\nendpoint_url = {}\nduration_seconds = 900\n",
        proxy.url()
    ));
    setup.store_key("s", &user.key);
    setup.write_toml(
        &Toml::new()
            .imds("s")
            .section("[refresh]\nmin_interval_seconds = 5\n")
            .build(),
    );
    let _daemon = setup.start();
    setup
        .wait_status("s", "rotated twice", |p| p["refreshes"].as_u64() >= Some(3))
        .await;
    let bodies: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(a, _)| a == "GetSessionToken")
        .map(|(_, r)| r)
        .collect();
    assert!(bodies.len() >= 3);
    assert!(
        bodies.iter().all(|b| b.contains("DurationSeconds=900")),
        "{bodies:?}"
    );
}

/// Every duration the configuration accepts works end to end, shortest to longest, for
/// sessions, roles and federation: each profile is minted with what it asked for, served, and
/// scheduled to rotate inside its lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_duration_works_from_shortest_to_longest() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("dur").await;
    let role_arn = moto.role("dur", &[&user.arn], None).await;
    let p = proxy.url();
    let mut config = String::new();
    let cases = [
        ("sess-min", "duration_seconds = 900", 900),
        (
            "sess-max",
            "credvend_session_duration_seconds = 129600",
            129_600,
        ),
        (
            "role-min",
            "role_arn = R\nsource_profile = base\nduration_seconds = 900",
            900,
        ),
        (
            "role-max",
            "role_arn = R\nsource_profile = base\nduration_seconds = 43200",
            43_200,
        ),
        (
            "fed-min",
            "credvend_federation_name = fedmin\nduration_seconds = 900",
            900,
        ),
        (
            "fed-max",
            "credvend_federation_name = fedmax\nduration_seconds = 129600",
            129_600,
        ),
    ];
    config.push_str(&format!(
        "[profile base]\nregion = us-east-1\nendpoint_url = {p}\n"
    ));
    for (name, lines, _) in &cases {
        config.push_str(&format!(
            "[profile {name}]\nregion = us-east-1\nendpoint_url = {p}\n{}\n",
            lines.replace("R", &role_arn)
        ));
    }
    setup.write_aws_config(&config);
    setup.store_key("base", &user.key);
    for (name, _, _) in &cases {
        if !name.starts_with("role") {
            setup.store_key(name, &user.key);
        }
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    setup.write_toml(&Toml::new().ecs(&names).prewarm(&names).build());
    let _daemon = setup.start();
    for (name, _, seconds) in &cases {
        let p = setup.wait_status(name, "fresh", phase_is("fresh")).await;
        let exp = credvend::creds::parse_aws_time(p["expiration"].as_str().unwrap()).unwrap();
        let next = credvend::creds::parse_aws_time(p["next_refresh"].as_str().unwrap()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(
            next > now && next < exp,
            "{name}: next {next} outside now..{exp}"
        );
        let lifetime = (exp - now).whole_seconds();
        assert!(
            (lifetime - seconds).abs() < 120,
            "{name}: served for {lifetime} s, asked {seconds}"
        );
    }
    let bodies: Vec<String> = proxy.requests().into_iter().map(|(_, r)| r).collect();
    for (_, _, seconds) in &cases {
        assert!(
            bodies
                .iter()
                .any(|b| b.contains(&format!("DurationSeconds={seconds}"))),
            "{seconds} never reached STS"
        );
    }
}

/// The four reasons a profile is not served each get their own message naming the fix, from
/// `exec`, `env --container`, `refresh` and `login`, and in the IMDS and ECS error bodies: not in
/// the AWS config, a typo (with a suggestion), no keys in the keyring, not listed in config.toml.
#[tokio::test]
async fn each_reason_a_profile_is_not_served_names_its_fix() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.user("why").await;
    let mfa = "mfa_serial = arn:aws:iam::123456789012:mfa/x";
    setup.write_aws_config(&format!(
        "[profile dev]\nregion = us-east-1\nendpoint_url = {m}\n\
         [profile nokey]\nregion = us-east-1\nendpoint_url = {m}\n{mfa}\n\
         [profile nokey2]\nregion = us-east-1\nendpoint_url = {m}\n\
         [profile other]\nregion = us-east-1\nendpoint_url = {m}\n{mfa}\n",
        m = moto.url
    ));
    setup.store_key("dev", &user.key);
    setup.store_key("other", &user.key);
    setup.write_toml(
        &Toml::new()
            .imds("dve")
            .imds("nokey2")
            .imds("ghost")
            .ecs(&["dev", "nokey2", "dve"])
            .build(),
    );
    let daemon = setup.start();
    setup
        .wait_status("nokey2", "failed", phase_is("error"))
        .await;
    let cases = [
        (
            "ghost",
            "is not defined in the AWS config",
            "is not defined in the AWS config",
        ),
        ("dve", "did you mean `dev`?", "did you mean `dev`?"),
        (
            "nokey",
            "run `credvend add nokey`",
            "run `credvend add nokey`",
        ),
        (
            "other",
            "list it in [ecs] profiles",
            "name it in an [[imds]] listener",
        ),
    ];
    for (profile, container_fix, fix) in cases {
        for (args, stdin, want) in [
            (vec!["exec", profile, "--", "true"], "", container_fix),
            (vec!["env", profile, "--container"], "", container_fix),
            (vec!["refresh", profile], "", fix),
            (vec!["login", profile, "--code-stdin"], "123456\n", fix),
        ] {
            let out = setup.cli_stdin(&args, stdin);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        }
    }
    // The IMDS listener configured with the typo says so, with the suggestion.
    let typo = http::imds_creds(daemon.ready.imds[0], "dve").await;
    assert!(
        typo["Message"]
            .as_str()
            .unwrap()
            .contains("did you mean `dev`?"),
        "{typo}"
    );
    let nokey = http::imds_creds(daemon.ready.imds[1], "nokey2").await;
    assert_eq!(nokey["Code"], "MissingKeys", "{nokey}");
    assert!(
        nokey["Message"]
            .as_str()
            .unwrap()
            .contains("credvend add nokey2"),
        "{nokey}"
    );
    let ghost = http::imds_creds(daemon.ready.imds[2], "ghost").await;
    assert!(
        ghost["Message"]
            .as_str()
            .unwrap()
            .contains("is not defined in the AWS config"),
        "{ghost}"
    );
    for (profile, fix) in [
        ("nokey2", "credvend add nokey2"),
        ("dve", "did you mean `dev`?"),
    ] {
        let token = std::fs::read_to_string(setup.state_dir().join(format!("ecs-token-{profile}")))
            .unwrap();
        let ecs = http::ecs_get(daemon.ecs(), profile, Some(&token)).await;
        assert!(ecs.status >= 400, "{profile}: {}", ecs.status);
        let message = ecs.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(fix), "{profile}: {message}");
    }
    // A profile the ECS endpoint does not serve has no token: it is refused like a wrong one,
    // without telling a client which profile names exist.
    let token = std::fs::read_to_string(setup.state_dir().join("ecs-token-dev")).unwrap();
    let other = http::ecs_get(daemon.ecs(), "other", Some(&token)).await;
    assert_eq!(other.status, 403);
    assert!(!other.body.contains("other"), "{}", other.body);
}

/// `credvend remove carol` tells the running daemon: by the time it returns the ECS endpoint refuses
/// carol and the role chained from her keys, and `status` says why; `add` brings them back.
#[tokio::test]
async fn remove_stops_the_daemon_serving_the_profile_and_its_dependants() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.user("carol").await;
    let role_arn = moto.role("carol", &[&user.arn], None).await;
    setup.write_aws_config(&format!(
        "[profile carol]\nregion = us-east-1\nendpoint_url = {m}\n\
         [profile carol-role]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role_arn}\nsource_profile = carol\n",
        m = moto.url
    ));
    setup.store_key("carol", &user.key);
    setup.write_toml(
        &Toml::new()
            .ecs(&["carol", "carol-role"])
            .prewarm(&["carol", "carol-role"])
            .build(),
    );
    let daemon = setup.start();
    let token = |p: &str| {
        std::fs::read_to_string(setup.state_dir().join(format!("ecs-token-{p}"))).unwrap()
    };
    for p in ["carol", "carol-role"] {
        setup.wait_status(p, "fresh", phase_is("fresh")).await;
        assert_eq!(
            http::ecs_get(daemon.ecs(), p, Some(&token(p))).await.status,
            200
        );
    }
    let out = setup.cli(&["remove", "carol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the daemon stops serving"),
        "{}",
        stderr(&out)
    );
    // The daemon stops serving before it answers `remove`, so the refusal is there at once.
    for p in ["carol", "carol-role"] {
        let r = http::ecs_get(daemon.ecs(), p, Some(&token(p))).await;
        assert_eq!(r.status, 403, "{p} still served after remove: {}", r.body);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("were removed"),
            "{}",
            r.body
        );
        let s = setup.profile_status(p).unwrap();
        assert_eq!(s["last_error"]["code"], "MissingKeys", "{s}");
        assert!(
            s["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains("credvend add carol")
        );
    }
    setup.store_key("carol", &user.key);
    for p in ["carol", "carol-role"] {
        setup.wait_status(p, "fresh again", phase_is("fresh")).await;
    }
}

/// Settings that would be ignored in silence are warned about, with their line, in `list`,
/// `status` and the log; `credvend_session_duration_seconds` works on a GetSessionToken profile;
/// the MFA session lasts as long whichever profile logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_settings_are_named_and_session_lengths_do_not_depend_on_who_asks() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("warn").await;
    setup.write_aws_config(&format!(
        "[profile sess]\nregion = us-east-1\nendpoint_url = {p}\ncredvend_session_duration_seconds = 7200\n\
         [profile fed]\nregion = us-east-1\nendpoint_url = {p}\nsource_profile = sess\ncredvend_federation_name = fed-user\ncredvend_polcy = {{}}\n\
         [profile u]\nregion = us-east-1\nendpoint_url = {p}\nmfa_serial = arn:aws:iam::123456789012:mfa/u\n\
         duration_seconds = 3600\ncredvend_session_duration_seconds = 1800\n\
         [profile r]\nregion = us-east-1\nendpoint_url = {p}\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = u\n",
        p = proxy.url()
    ));
    for p in ["sess", "fed", "u"] {
        setup.store_key(p, &user.key);
    }
    let list = stdout(&setup.cli(&["list"]));
    assert!(
        list.contains("warning: config file line 8: profile `fed`: source_profile has no effect without role_arn"),
        "{list}"
    );
    assert!(
        list.contains("line 10: profile `fed`: credvend_polcy")
            && list.contains("did you mean credvend_policy?"),
        "{list}"
    );
    assert!(
        list.contains("line 15: profile `u`: duration_seconds is ignored"),
        "{list}"
    );

    // MFA: the session's length comes from the base profile, whichever profile logs in.
    for p in ["r", "u"] {
        let out = setup.cli_stdin(&["login", p, "--code-stdin"], "123456\n");
        assert!(out.status.success(), "{p}: {}", stderr(&out));
    }
    let sessions: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(a, _)| a == "GetSessionToken")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions.iter().all(|b| b.contains("DurationSeconds=1800")),
        "{sessions:?}"
    );

    setup.write_toml(&Toml::new().imds("sess").ecs(&["fed"]).build());
    let daemon = setup.start();
    setup.wait_status("sess", "fresh", phase_is("fresh")).await;
    assert!(
        proxy
            .requests()
            .iter()
            .any(|(a, r)| a == "GetSessionToken" && r.contains("DurationSeconds=7200")),
        "credvend_session_duration_seconds reached STS for a GetSessionToken profile"
    );
    let fed = setup.profile_status("fed").unwrap();
    assert!(
        fed["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("line 8")),
        "{fed}"
    );
    assert!(daemon.wait_for_log("source_profile has no effect", Duration::from_secs(5)));
}

/// Smaller first-hour papercuts, each of which used to go wrong: `env --static` exports the
/// region (so an environment-only AWS CLI run works); `lock` says which profiles need `login`
/// again; `status` shows the minted identity, an STS call in flight with its age, and the last
/// failed reload; errors name the profile (no literal `PROFILE`) and say things once; `add` says
/// when STS could not be reached and when the profile is not in the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_papercuts() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("pc").await;
    let role_arn = moto.role("pc", &[&user.arn], None).await;
    setup.write_aws_config(&format!(
        "[profile base]\nregion = eu-west-3\nendpoint_url = {p}\n\
         [profile role]\nregion = eu-west-3\nendpoint_url = {p}\nrole_arn = {role_arn}\nsource_profile = base\n\
         [profile m]\nregion = eu-west-3\nendpoint_url = {p}\nmfa_serial = arn:aws:iam::123456789012:mfa/m\n\
         [profile nokey]\nregion = eu-west-3\nendpoint_url = {p}\n\
         [profile unreachable]\nregion = eu-west-3\nendpoint_url = http://127.0.0.1:9\n",
        p = proxy.url()
    ));
    setup.store_key("base", &user.key);
    setup.store_key("m", &user.key);
    // Errors: each cause once, the real profile name in the fix.
    let out = setup.cli(&["credential-process", "nokey"]);
    assert_eq!(
        stderr(&out).matches("credvend add nokey").count(),
        1,
        "{}",
        stderr(&out)
    );
    let out = setup.cli_stdin(
        &[
            "add",
            "unreachable",
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
            "--secret-stdin",
        ],
        "secret\n",
    );
    assert!(
        stderr(&out).contains("could not check it") && stderr(&out).contains("did not answer"),
        "{}",
        stderr(&out)
    );
    let out = setup.cli_stdin(
        &[
            "add",
            "nowhere",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
            "--force",
        ],
        &format!("{}\n", secret_of(&user.key)),
    );
    assert!(
        stderr(&out).contains("is not in the AWS config"),
        "{}",
        stderr(&out)
    );

    setup.write_toml(&Toml::new().imds("role").ecs(&["role", "m"]).build());
    let daemon = setup.start();
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    // env --static: the region too, and the AWS CLI needs nothing else.
    let env = stdout(&setup.cli(&["env", "role", "--static"]));
    assert!(env.contains("export AWS_REGION=eu-west-3"), "{env}");
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "{env}\n{} sts get-caller-identity --endpoint-url {} --output json",
            crate::support::moto::venv_bin("aws"),
            moto.url
        ))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", setup.home())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    let out = sh.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(":assumed-role/"), "{}", stdout(&out));

    // status: who the credentials are, and an STS call in flight with its age.
    let text = stdout(&setup.cli(&["status"]));
    assert!(
        text.contains(":assumed-role/") && text.contains("serving ASIA"),
        "{text}"
    );
    proxy.set_mode(Mode::Hold);
    assert!(setup.cli(&["refresh", "role"]).status.success());
    let p = setup
        .wait_status("role", "minting", |p| p["minting_since"].is_string())
        .await;
    assert_eq!(p["phase"], "refreshing");
    let text = stdout(&setup.cli(&["status"]));
    assert!(text.contains("minting now: waiting"), "{text}");
    proxy.set_mode(Mode::Forward);
    setup
        .wait_status("role", "fresh", |p| {
            p["phase"] == "fresh" && p["minting_since"].is_null()
        })
        .await;

    // A failed reload shows in status, not only in the log.
    std::fs::write(setup.toml_path(), "[[imds]\n").unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(daemon.wait_for_log("reload failed", Duration::from_secs(10)));
    let text = stdout(&setup.cli(&["status"]));
    assert!(
        text.contains("reload: the last one failed at") && text.contains(":1:"),
        "{text}"
    );

    // lock: which profiles need login again.
    let out = setup.cli(&["lock"]);
    assert!(
        stderr(&out).contains("`credvend refresh` mints new ones for role"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("m also lost their MFA session: run `credvend login m`"),
        "{}",
        stderr(&out)
    );
}
