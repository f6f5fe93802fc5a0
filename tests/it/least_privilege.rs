//! Least privilege per consumer: scoped-down sessions for one command (`exec --policy`), for an
//! IMDS listener and for one route of it. Against moto with SigV4 auth on, through the counting
//! STS proxy (moto accepts session policies but does not enforce them: the tests prove what STS
//! is asked for, and that the scoped session is a separate one).

use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, venv_bin};
use crate::support::sts_proxy::{StsProxy, form_param};
use crate::support::toml::Toml;

/// A pretty-printed policy with a marker to find in the STS request.
const POLICY: &str = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\n      \"Sid\": \"credvendScopeTest\",\n      \"Effect\": \"Allow\",\n      \"Action\": \"s3:PutObject\",\n      \"Resource\": \"arn:aws:s3:::ci-bucket/builds/*\"\n    }\n  ]\n}\n";

const READ_ONLY: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";

/// `base` with keys, `dev` a role assumed from it, `sess` a GetSessionToken profile.
async fn setup_roles(moto: &Moto, proxy: &StsProxy, name: &str) -> Setup {
    let setup = Setup::new();
    let user = moto.user(name).await;
    let role_arn = moto.role(name, &[&user.arn], None).await;
    setup.write_aws_config(&format!(
        "[profile base]\nregion = us-east-1\nendpoint_url = {p}\n\
         [profile dev]\nregion = us-east-1\nendpoint_url = {p}\nrole_arn = {role_arn}\nsource_profile = base\n\
         [profile sess]\nregion = us-east-1\nendpoint_url = {p}\n",
        p = proxy.url()
    ));
    setup.store_key("base", &user.key);
    setup.store_key("sess", &user.key);
    setup
}

/// What `exec ARGS -- whoami.py` gave the child: its JSON (arn, access_key_id).
fn exec_whoami(setup: &Setup, moto: &Moto, args: &[&str]) -> serde_json::Value {
    let whoami = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/python/whoami.py");
    let python = venv_bin("python");
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", &python, whoami]);
    let out = setup
        .command(&all)
        .env("AWS_ENDPOINT_URL_STS", &moto.url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `status --json` entry of the scoped session `exec --policy` made of `profile`.
fn scope_of(setup: &Setup, profile: &str) -> serde_json::Value {
    let prefix = format!("{profile}~");
    setup
        .profiles()
        .into_iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no scoped session of {profile}"))
}

/// What boto3's default chain loaded in the child of `exec ARGS` (method, access_key_id), with
/// no STS call of the child's own.
fn exec_keys(setup: &Setup, args: &[&str]) -> serde_json::Value {
    let python = venv_bin("python");
    let load = "import boto3, json; c = boto3.Session().get_credentials(); \
                print(json.dumps({'method': c.method, 'access_key_id': c.get_frozen_credentials().access_key}))";
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", &python, "-c", load]);
    let out = setup
        .command(&all)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `exec --policy FILE`: STS is asked for the policy, the child's credentials are not the
/// profile's, a second `exec` with the same policy reuses the scoped session (no STS call), and
/// the scoped session's ECS token and the profile's never unlock each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_policy_mints_a_separate_scoped_session_and_reuses_it() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = setup_roles(&moto, &proxy, "scope").await;
    let file = setup.home().join("ci-policy.json");
    std::fs::write(&file, POLICY).unwrap();
    setup.write_toml(&Toml::new().ecs(&["dev"]).build());
    let daemon = setup.start();
    let file_arg = file.to_str().unwrap();

    let scoped = exec_whoami(&setup, &moto, &["dev", "--policy", file_arg]);
    assert!(
        scoped["arn"].as_str().unwrap().contains(":assumed-role/"),
        "{scoped}"
    );
    let bodies: Vec<String> = proxy.requests().into_iter().map(|(_, r)| r).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies[0].contains("Action=AssumeRole"), "{}", bodies[0]);
    let sent = form_param(&bodies[0], "Policy").expect("a Policy parameter");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&sent).unwrap(),
        serde_json::from_str::<serde_json::Value>(POLICY).unwrap(),
        "the policy reached STS as the Policy parameter"
    );

    // The profile itself is another session.
    let plain = exec_whoami(&setup, &moto, &["dev"]);
    assert_ne!(plain["access_key_id"], scoped["access_key_id"]);
    assert_eq!(proxy.count("AssumeRole"), 2);
    let dev_body = proxy.requests()[1].1.clone();
    assert_eq!(form_param(&dev_body, "Policy"), None, "{dev_body}");

    // The same policy again (as inline JSON this time): the cached scoped session.
    let again = exec_whoami(&setup, &moto, &["dev", "--policy", POLICY]);
    assert_eq!(again["access_key_id"], scoped["access_key_id"]);
    assert_eq!(
        proxy.count("AssumeRole"),
        2,
        "no STS call for the second exec"
    );

    // Tokens: the scoped unit's and the profile's are separate capabilities.
    let unit = scope_of(&setup, "dev");
    assert!(
        unit["source"]
            .as_str()
            .unwrap()
            .contains("[scoped: session policy"),
        "{unit}"
    );
    let unit_name = unit["name"].as_str().unwrap();
    let unit_token = std::fs::read_to_string(unit["ecs_token_file"].as_str().unwrap()).unwrap();
    let dev_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-dev")).unwrap();
    assert_eq!(
        http::ecs_get(daemon.ecs(), unit_name, Some(&unit_token))
            .await
            .status,
        200
    );
    assert_eq!(
        http::ecs_get(daemon.ecs(), "dev", Some(&unit_token))
            .await
            .status,
        403
    );
    assert_eq!(
        http::ecs_get(daemon.ecs(), unit_name, Some(&dev_token))
            .await
            .status,
        403
    );

    // Managed policies too; each scope is its own session.
    let managed = exec_whoami(&setup, &moto, &["dev", "--policy-arn", READ_ONLY]);
    assert_ne!(managed["access_key_id"], scoped["access_key_id"]);
    let last = proxy.requests().last().unwrap().1.clone();
    assert!(
        last.contains("PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FReadOnlyAccess"),
        "{last}"
    );

    // Four first `exec`s of one new policy at once (`make -j`): each child is served, by one
    // session.
    let parallel = POLICY.replace("credvendScopeTest", "credvendScopeParallel");
    let calls = proxy.count("AssumeRole");
    let keys: Vec<serde_json::Value> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| exec_whoami(&setup, &moto, &["dev", "--policy", &parallel])))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap()["access_key_id"].clone())
            .collect()
    });
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(proxy.count("AssumeRole"), calls + 1);
}

/// A scoped session is refreshed like any profile: with 900 s sessions and a `[refresh]` margin
/// that rotates them 20 s after minting, the scope's next AssumeRole carries the same policy and
/// the scope's ECS token serves the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_session_rotates_with_its_policy() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = setup_roles(&moto, &proxy, "scoperot").await;
    let config = std::fs::read_to_string(setup.aws_config_path()).unwrap();
    let role_line = config.lines().find(|l| l.starts_with("role_arn")).unwrap();
    setup.append_aws_config(&format!(
        "[profile short]\nregion = us-east-1\nendpoint_url = {}\n{role_line}\nsource_profile = base\nduration_seconds = 900\n",
        proxy.url()
    ));
    setup.write_toml(
        &Toml::new()
            .ecs(&["short"])
            .section("[refresh]\nidle_after_seconds = 120\nmargin_seconds = 870\nmin_interval_seconds = 20\n")
            .build(),
    );
    let daemon = setup.start();
    let first = exec_keys(&setup, &["short", "--policy", POLICY]);
    assert_eq!(proxy.count("AssumeRole"), 1);

    assert!(
        proxy
            .wait_count("AssumeRole", 2, std::time::Duration::from_secs(90))
            .await,
        "the scoped session was not refreshed"
    );
    let rotated = proxy
        .requests()
        .into_iter()
        .filter(|(action, _)| action == "AssumeRole")
        .nth(1)
        .unwrap()
        .1;
    assert_eq!(
        form_param(&rotated, "Policy")
            .map(|p| serde_json::from_str::<serde_json::Value>(&p).unwrap()),
        Some(serde_json::from_str::<serde_json::Value>(POLICY).unwrap()),
        "the refresh keeps the policy: {rotated}"
    );
    let name = scope_of(&setup, "short")["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let unit = setup
        .wait_status_within(&name, "rotated", std::time::Duration::from_secs(30), |p| {
            p["refreshes"].as_u64() >= Some(1)
        })
        .await;
    let token = std::fs::read_to_string(unit["ecs_token_file"].as_str().unwrap()).unwrap();
    let served = http::ecs_get(daemon.ecs(), &name, Some(&token)).await;
    assert_eq!(served.status, 200);
    let key = served.json()["AccessKeyId"].as_str().unwrap().to_owned();
    assert_ne!(
        key,
        first["access_key_id"].as_str().unwrap(),
        "the new key is served"
    );
    assert_eq!(Some(key.as_str()), unit["access_key_id"].as_str());
}

/// Scopes that cannot be served are refused with the reason, before any STS call: a
/// GetSessionToken profile, a document that is not JSON, a file that cannot be read, a policy ARN
/// that is not an ARN, no [ecs] endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_policy_refusals_name_the_fix() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = setup_roles(&moto, &proxy, "scopebad").await;
    setup.write_toml(&Toml::new().ecs(&["dev", "sess"]).build());
    let daemon = setup.start();
    let cases: [(&[&str], &str); 4] = [
        (
            &["sess", "--policy", "{}"],
            "not served by AssumeRole or GetFederationToken",
        ),
        (&["dev", "--policy", "{nope"], "not a JSON policy document"),
        (
            &["dev", "--policy", "/nonexistent/p.json"],
            "cannot read the policy file",
        ),
        (&["dev", "--policy-arn", "ReadOnlyAccess"], "is not an ARN"),
    ];
    for (args, want) in cases {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        let out = setup.cli(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(proxy.requests().len(), 0, "nothing reached STS");

    assert!(daemon.terminate().success());
    setup.write_toml(&Toml::new().imds("dev").build());
    let _daemon = setup.start();
    let out = setup.cli(&["exec", "dev", "--policy", "{}", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("add an [ecs] section"),
        "{}",
        stderr(&out)
    );
}

/// A federation profile takes a session policy too: `exec --policy` asks GetFederationToken for
/// a session carrying it (the `Policy` parameter) in a session of its own, not the profile's,
/// and a second run reuses it. A profile that already
/// sets `credvend_policy` is refused, because a second policy would replace the first rather
/// than narrow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_policy_scopes_a_federation_profile_and_refuses_a_second_policy() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("scopefed").await;
    setup.write_aws_config(&format!(
        "[profile fed]\nregion = us-east-1\nendpoint_url = {p}\ncredvend_federation_name = ci-fed\n\
         [profile narrow]\nregion = us-east-1\nendpoint_url = {p}\ncredvend_federation_name = ci-narrow\n\
         credvend_policy = {{\"Version\": \"2012-10-17\", \"Statement\": [{{\"Effect\": \"Allow\", \"Action\": \"s3:*\", \"Resource\": \"*\"}}]}}\n",
        p = proxy.url()
    ));
    setup.store_key("fed", &user.key);
    setup.store_key("narrow", &user.key);
    setup.write_toml(&Toml::new().ecs(&["fed", "narrow"]).build());
    let _daemon = setup.start();

    // moto (auth on) does not accept its own federation tokens, so the child only loads them.
    let scoped = exec_keys(&setup, &["fed", "--policy", POLICY]);
    assert_eq!(scoped["method"], "container-role", "{scoped}");
    let calls: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(action, _)| action == "GetFederationToken")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let sent = form_param(&calls[0], "Policy").expect("a Policy parameter");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&sent).unwrap(),
        serde_json::from_str::<serde_json::Value>(POLICY).unwrap()
    );

    // The profile itself is another session (moto answers every GetFederationToken with the
    // same key id, so the sessions are told apart by the calls, not by their keys).
    let plain = exec_keys(&setup, &["fed"]);
    assert_eq!(plain["method"], "container-role", "{plain}");
    assert_eq!(proxy.count("GetFederationToken"), 2);
    let unscoped = proxy.requests().last().unwrap().1.clone();
    assert_eq!(form_param(&unscoped, "Policy"), None, "{unscoped}");
    let again = exec_keys(&setup, &["fed", "--policy", POLICY]);
    assert_eq!(again["access_key_id"], scoped["access_key_id"]);
    assert_eq!(proxy.count("GetFederationToken"), 2, "reused, no STS call");

    let before = proxy.requests().len();
    let out = setup.cli(&["exec", "narrow", "--policy", POLICY, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already restricts its sessions with credvend_policy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(proxy.requests().len(), before, "nothing reached STS");
}

/// `policy` on an `[[imds]]` listener and on one of its routes: the role served there is minted
/// with that session policy (named after the profile in the listing), and the profile's other
/// listener serves the unscoped session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_and_route_policies_scope_what_imds_serves() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = setup_roles(&moto, &proxy, "scopeimds").await;
    let file = setup.home().join("read-only.json");
    std::fs::write(&file, POLICY).unwrap();
    let me = unsafe { libc::getuid() };
    setup.write_toml(
        &Toml::new()
            .imds_with("dev", &format!("policy = \"file://{}\"\n", file.display()))
            .section(&format!(
                "[[imds]]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ uid = {me}, profile = \"dev\", policy_arns = [\"{READ_ONLY}\"] }}]\n"
            ))
            .imds("dev")
            .build(),
    );
    let daemon = setup.start();
    let [scoped, routed, plain] = [0, 1, 2].map(|i| daemon.ready.imds[i]);
    let mut keys = Vec::new();
    for addr in [scoped, routed, plain] {
        let token = http::token(addr, 60).await;
        let listing = http::get(addr, "/latest/meta-data/iam/security-credentials/", &token).await;
        assert_eq!(listing.body.trim(), "dev");
        let creds = http::imds_creds(addr, "dev").await;
        assert_eq!(creds["Code"], "Success", "{creds}");
        keys.push(creds["AccessKeyId"].as_str().unwrap().to_owned());
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "three separate sessions");
    let bodies: Vec<String> = proxy.requests().into_iter().map(|(_, r)| r).collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("credvendScopeTest"))
            .count(),
        1
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("PolicyArns.member.1.arn"))
            .count(),
        1
    );
    let text = stdout(&setup.cli(&["status"]));
    assert!(text.contains("[scoped: session policy"), "{text}");
    setup.wait_status("dev", "fresh", phase_is("fresh")).await;
}

/// `credvend env dev` (IMDS) where the listener serving `dev` to this user serves a scoped session
/// of it (the listener's `policy`, or this user's route's): it points at that listener and warms
/// the scoped session, never the unscoped profile; `status` names a route's scoped session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_points_at_the_listener_serving_a_scoped_session() {
    let moto = Moto::shared();
    let me = unsafe { libc::getuid() };
    let listener_policy = format!("policy_arns = [\"{READ_ONLY}\"]\n");
    let route = format!(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ uid = {me}, profile = \"dev\", policy_arns = [\"{READ_ONLY}\"] }}]\n"
    );
    for (name, toml) in [
        (
            "scopeenv1",
            Toml::new().imds_with("dev", &listener_policy).build(),
        ),
        ("scopeenv2", Toml::new().section(&route).build()),
    ] {
        let proxy = StsProxy::start(&moto.url).await;
        let setup = setup_roles(&moto, &proxy, name).await;
        setup.write_toml(&toml);
        let daemon = setup.start();
        let out = setup.cli(&["env", "dev"]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&format!(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{}/",
                daemon.ready.imds[0]
            )),
            "{name}: {text}"
        );
        let scoped = proxy
            .requests()
            .iter()
            .filter(|(_, body)| body.contains("PolicyArns.member.1.arn"))
            .count();
        assert_eq!(scoped, 1, "{name}: {:?}", proxy.requests());
        assert_eq!(
            proxy.count("AssumeRole"),
            1,
            "{name}: the unscoped dev was minted"
        );
        if name == "scopeenv2" {
            let status = stdout(&setup.cli(&["status"]));
            assert!(status.contains("dev (scoped session dev~"), "{status}");
        }
    }
}
