//! Issue 4: profiles of the AWS config resolved to chains and minted against moto (auth on),
//! through `credvend credential-process` and the AWS CLI.

use credvend::sts::StsEndpoint;

use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::moto::{Moto, PrivateMoto, secret_of, venv_bin};
use crate::support::toml::Toml;

/// Temporary credentials printed by `credential-process`, as signing material.
fn creds_of(out: &std::process::Output) -> credvend::creds::TemporaryCredentials {
    assert!(
        out.status.success(),
        "credential-process failed: {}",
        stderr(out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Version"], 1, "Version is the integer 1");
    credvend::creds::TemporaryCredentials {
        access_key_id: v["AccessKeyId"].as_str().unwrap().into(),
        secret_access_key: secrecy::SecretString::from(
            v["SecretAccessKey"].as_str().unwrap().to_owned(),
        ),
        session_token: v["SessionToken"]
            .as_str()
            .map(|t| secrecy::SecretString::from(t.to_owned())),
        expiration: credvend::creds::parse_aws_time(v["Expiration"].as_str().unwrap()).unwrap(),
        account_id: None,
        arn: None,
        packed_policy_size: None,
    }
}

async fn identity(endpoint: &StsEndpoint, creds: &credvend::creds::TemporaryCredentials) -> String {
    Moto::client()
        .caller_identity(endpoint, creds.signing_key())
        .await
        .unwrap()
        .arn
}

/// user keys -> role A -> role B (with external_id): B's identity.
async fn three_link_chain(moto: &Moto, setup: &Setup, external_id: &str) -> (String, String) {
    let user = moto.user("chain").await;
    let role_a = moto.role("a", &[&user.arn], None).await;
    let a_name = role_a.rsplit('/').next().unwrap().to_owned();
    // Role B trusts sessions of role A (moto matches the assumed-role session ARN).
    let role_b = moto
        .role(
            "b",
            &[
                &format!("arn:aws:sts::123456789012:assumed-role/{a_name}/credvend-a"),
                &role_a,
            ],
            Some("ext-ok"),
        )
        .await;
    setup.write_aws_config(&format!(
        "[profile user]\nendpoint_url = {m}\nregion = us-east-1\n\
         [profile a]\nrole_arn = {role_a}\nsource_profile = user\nendpoint_url = {m}\n\
         [profile b]\nrole_arn = {role_b}\nsource_profile = a\nexternal_id = {external_id}\nendpoint_url = {m}\n",
        m = moto.url
    ));
    setup.store_key("user", &user.key);
    (role_a, role_b)
}

#[tokio::test]
async fn three_link_chain_yields_the_last_roles_identity() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let (_, role_b) = three_link_chain(&moto, &setup, "ext-ok").await;
    let out = setup.cli(&["credential-process", "b"]);
    let creds = creds_of(&out);
    let arn = identity(&moto.endpoint(), &creds).await;
    let b_name = role_b.rsplit('/').next().unwrap();
    assert!(
        arn.contains(&format!(":assumed-role/{b_name}/credvend-b")),
        "{arn}"
    );
    let list = stdout(&setup.cli(&["list"]));
    assert!(
        list.contains("keyring:user -> AssumeRole(a) -> AssumeRole(b)"),
        "{list}"
    );
}

#[tokio::test]
async fn wrong_external_id_is_rejected_with_the_sts_message() {
    let moto = Moto::shared();
    let setup = Setup::new();
    three_link_chain(&moto, &setup, "ext-wrong").await;
    let out = setup.cli(&["credential-process", "b"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(err.contains("STS AssumeRole failed"), "{err}");
    assert!(
        err.contains("external_id"),
        "the hint names external_id: {err}"
    );
}

/// The AWS CLI, configured with `credential_process = credvend credential-process b`, gets role
/// B's identity.
#[tokio::test]
async fn aws_cli_uses_credvend_as_credential_process() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let (_, role_b) = three_link_chain(&moto, &setup, "ext-ok").await;
    setup.append_aws_config(&format!(
        "[profile via-credvend]\nregion = us-east-1\ncredential_process = {} credential-process b\n",
        crate::support::daemon::BIN
    ));
    let mut cmd = std::process::Command::new(venv_bin("aws"));
    setup.apply_env(&mut cmd);
    let out = cmd
        .env("AWS_PROFILE", "via-credvend")
        .args([
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            &moto.url,
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "aws: {}", stderr(&out));
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b_name = role_b.rsplit('/').next().unwrap();
    assert!(
        id["Arn"]
            .as_str()
            .unwrap()
            .contains(&format!(":assumed-role/{b_name}/")),
        "{id}"
    );
}

#[tokio::test]
async fn source_profile_cycle_is_reported_at_load_naming_the_profiles() {
    let setup = Setup::new();
    setup.write_aws_config(
        "[profile a]\nrole_arn = arn:aws:iam::123456789012:role/a\nsource_profile = b\n\
         [profile b]\nrole_arn = arn:aws:iam::123456789012:role/b\nsource_profile = a\n",
    );
    let out = setup.cli(&["credential-process", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("source_profile loop: a -> b -> a"),
        "{}",
        stderr(&out)
    );
    let list = stdout(&setup.cli(&["list"]));
    assert!(list.contains("source_profile loop"), "{list}");
    // The daemon reports it for the served profile instead of crashing.
    setup.write_toml(&Toml::new().imds("a").build());
    let daemon = setup.start();
    let status: serde_json::Value =
        serde_json::from_slice(&setup.cli(&["status", "--json"]).stdout).unwrap();
    let a = &status["profiles"][0];
    assert_eq!(a["phase"], "error");
    assert_eq!(a["last_error"]["code"], "InvalidConfiguration");
    assert!(
        a["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("a -> b -> a")
    );
    drop(daemon);
}

/// Web identity is sent unsigned. moto with authentication on cannot take an unsigned request
/// (KeyError on the missing Authorization header, HTTP 500), so this runs on a private moto with
/// authentication off.
#[tokio::test]
async fn web_identity_token_file_works_unsigned() {
    let private = PrivateMoto::start(false);
    let moto = &private.moto;
    let role = moto.web_identity_role("wi").await;
    let setup = Setup::new();
    let token_file = setup.home().join("token.jwt");
    std::fs::write(&token_file, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.\n").unwrap();
    setup.write_aws_config(&format!(
        "[profile wi]\nrole_arn = {role}\nweb_identity_token_file = {}\nendpoint_url = {}\n",
        token_file.display(),
        moto.url
    ));
    let creds = creds_of(&setup.cli(&["credential-process", "wi"]));
    let arn = identity(&moto.endpoint(), &creds).await;
    assert!(arn.contains(":assumed-role/"), "{arn}");
}

/// A role whose source profile is a `credential_process` printing the user's long-term keys, and
/// a profile served straight from a process printing temporary credentials.
#[tokio::test]
async fn credential_process_profiles_produce_credentials() {
    let moto = Moto::shared();
    let user = moto.user("proc").await;
    let role = moto.role("pr", &[&user.arn], None).await;
    let setup = Setup::new();
    let script = setup.home().join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '{{\"Version\": 1, \"AccessKeyId\": \"%s\", \"SecretAccessKey\": \"%s\"}}' '{}' '{}'\n",
            user.key.access_key_id,
            secret_of(&user.key)
        ),
    )
    .unwrap();
    let failing = setup.home().join("fail.sh");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'token expired: run sso login' >&2\nexit 4\n",
    )
    .unwrap();
    for f in [&script, &failing] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    setup.write_aws_config(&format!(
        "[profile proc]\ncredential_process = {}\n\
         [profile viaproc]\nrole_arn = {role}\nsource_profile = proc\nendpoint_url = {m}\n\
         [profile broken]\ncredential_process = {} --flag \"two words\"\n",
        script.display(),
        failing.display(),
        m = moto.url
    ));
    let creds = creds_of(&setup.cli(&["credential-process", "viaproc"]));
    let arn = identity(&moto.endpoint(), &creds).await;
    assert!(
        arn.contains(&format!(
            ":assumed-role/{}/",
            role.rsplit('/').next().unwrap()
        )),
        "{arn}"
    );

    let out = setup.cli(&["credential-process", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("token expired: run sso login"),
        "stderr of the process is in the error: {}",
        stderr(&out)
    );

    let out = setup.cli(&["credential-process", "proc"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "long-term keys from a process are never served"
    );
    assert!(!stdout(&out).contains(&secret_of(&user.key)));

    // Served by the daemon: the user's status shows the helper's output, HTTP clients do not get it.
    setup.write_toml(&Toml::new().imds("broken").build());
    let daemon = setup.start();
    let status = setup
        .wait_status("broken", "error", phase_is("error"))
        .await;
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("token expired: run sso login"),
        "{status}"
    );
    let served = crate::support::http::imds_creds(daemon.imds(), "broken").await;
    assert_eq!(served["Code"], "CredentialProcessFailed");
    let message = served["Message"].as_str().unwrap();
    assert!(message.contains("credvend status"), "{message}");
    assert!(!message.contains("sso login"), "{message}");
}

#[tokio::test]
async fn federation_profile_mints_get_federation_token() {
    let moto = Moto::shared();
    let user = moto.user("fed").await;
    let setup = Setup::new();
    let policy = setup.home().join("policy.json");
    std::fs::write(&policy, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#).unwrap();
    setup.write_aws_config(&format!(
        "[profile fed]\ncredvend_federation_name = fed-user\ncredvend_policy = file://{}\nendpoint_url = {}\n",
        policy.display(),
        moto.url
    ));
    setup.store_key("fed", &user.key);
    let out = setup.cli(&["credential-process", "fed"]);
    let creds = creds_of(&out);
    assert!(creds.session_token.is_some());
    assert_eq!(setup.cli(&["list"]).status.code(), Some(0));
    assert!(stdout(&setup.cli(&["list"])).contains("GetFederationToken(fed-user)"));
}

/// Two profiles pointed at two moto servers, one with `endpoint_url`, one through a
/// `[services]` section: each user exists in only one of them, so a call routed to the wrong
/// one fails.
#[tokio::test]
async fn endpoint_url_and_services_sections_route_to_their_servers() {
    let one = Moto::shared();
    let mut private = PrivateMoto::start(true);
    let two = private.moto.clone();
    let u1 = one.user("ep").await;
    let u2 = two.user("ep").await;
    let setup = Setup::new();
    setup.write_aws_config(&format!(
        "[profile first]\nendpoint_url = {}\n\
         [profile second]\nservices = local-two\nendpoint_url = http://127.0.0.1:9\n\
         [services local-two]\nsts =\n  endpoint_url = {}\n",
        one.url, two.url
    ));
    setup.store_key("first", &u1.key);
    setup.store_key("second", &u2.key);
    for p in ["first", "second"] {
        let out = setup.cli(&["credential-process", p]);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
    }
    // AWS_ENDPOINT_URL_STS overrides both (and is wrong for `second`).
    let out = setup
        .command(&["credential-process", "second"])
        .env("AWS_ENDPOINT_URL_STS", &one.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("InvalidClientTokenId"),
        "{}",
        stderr(&out)
    );
    private.stop();
}

#[test]
fn bad_config_gives_one_clear_message_each() {
    let setup = Setup::new();
    setup.write_aws_config(
        "[profile ghost-source]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = nowhere\n\
         [profile wi-no-role]\nweb_identity_token_file = /tmp/x\n\
         [profile too-long]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = too-long\nduration_seconds = 50000\n\
         [profile no-token]\nrole_arn = arn:aws:iam::123456789012:role/r\nweb_identity_token_file = /nonexistent/credvend/token\n",
    );
    for (profile, needle) in [
        (
            "ghost-source",
            "source_profile = nowhere names a profile that is not defined",
        ),
        ("wi-no-role", "web_identity_token_file needs role_arn"),
        (
            "too-long",
            "duration_seconds = 50000 is outside 900..=43200",
        ),
        ("no-token", "/nonexistent/credvend/token cannot be read"),
        ("undefined", "profile `undefined` is not defined"),
    ] {
        let out = setup.cli(&["credential-process", profile]);
        assert_eq!(out.status.code(), Some(1), "{profile}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{profile}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{profile}: one line: {err}");
        assert!(stdout(&out).is_empty());
    }
}

/// The web identity token file is read again at every refresh: unreadable, the refresh fails
/// naming the file; readable again, the next refresh succeeds. (moto with authentication off, as
/// above: web identity is unsigned.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_token_file_is_reread_at_every_refresh() {
    let private = PrivateMoto::start(false);
    let moto = &private.moto;
    let role = moto.web_identity_role("wr").await;
    let setup = Setup::new();
    let token_file = setup.home().join("token.jwt");
    std::fs::write(&token_file, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").unwrap();
    setup.write_aws_config(&format!(
        "[profile wi]\nrole_arn = {role}\nweb_identity_token_file = {}\nendpoint_url = {}\n",
        token_file.display(),
        moto.url
    ));
    setup.write_toml(&Toml::new().imds("wi").build());
    let _daemon = setup.start();
    setup.wait_status("wi", "fresh", phase_is("fresh")).await;
    std::fs::remove_file(&token_file).unwrap();
    assert!(setup.cli(&["refresh", "wi"]).status.success());
    let p = setup.wait_status("wi", "error", phase_is("error")).await;
    assert_eq!(p["last_error"]["code"], "WebIdentityTokenUnreadable");
    assert!(
        p["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("token.jwt"),
        "{p}"
    );
    std::fs::write(&token_file, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ5In0.").unwrap();
    assert!(setup.cli(&["refresh", "wi"]).status.success());
    setup
        .wait_status("wi", "fresh again", |p| {
            p["phase"] == "fresh" && p["last_error"].is_null()
        })
        .await;
}
