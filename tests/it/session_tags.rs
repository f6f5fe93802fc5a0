//! Issue 16 (session tags): the tags, transitive tag keys and source identity of a profile reach
//! STS exactly as botocore encodes them (`Tags.member.N.Key` / `.Value`,
//! `TransitiveTagKeys.member.N`, `SourceIdentity`), in credvend's spelling and in aws-vault's;
//! federation profiles send their tags with `GetFederationToken`; a malformed list is refused at
//! load naming its line while the daemon keeps serving the other profiles. Against moto with
//! SigV4 authentication on, seen through the counting proxy.
//!
//! What moto (5.2) does with these parameters: it accepts them and ignores them. It checks
//! neither STS's limits nor `sts:TagSession` / `sts:SetSourceIdentity` in the role's trust
//! policy, and its `AssumeRole` answer carries no `SourceIdentity` (AWS's echoes it). So these
//! tests prove what is sent, byte for byte, and that a server checking the signature over it
//! accepts the call; the limits are credvend's own load-time checks (`profile/resolve/tags.rs`).

use std::io::Write;
use std::process::{Command, Stdio};

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::moto::Moto;
use crate::support::sts_proxy::StsProxy;
use crate::support::toml::Toml;

/// The form body botocore sends for STS `operation` with `params`
/// (`support/botocore_query.py`, the serializer of the differential test).
fn botocore_body(operation: &str, params: Value) -> String {
    let python = std::env::var("CREDVEND_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/botocore_query.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test venv's python (run scripts/test, which creates .venv)");
    let case = json!([{
        "service": "sts",
        "operation": operation,
        "params": params,
        "region": "us-east-1",
        "endpoint_url": "http://127.0.0.1:5000/",
    }]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the botocore serializer failed");
    let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    theirs[0]["body"].as_str().unwrap().to_owned()
}

/// The bodies of the `action` requests the proxy forwarded, oldest first.
fn bodies(proxy: &StsProxy, action: &str) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|(a, _)| a == action)
        .map(|(_, r)| r.split_once("\r\n\r\n").unwrap().1.to_owned())
        .collect()
}

/// Temporary credentials printed by `credential-process`.
fn creds_of(out: &std::process::Output) -> credvend::creds::TemporaryCredentials {
    assert!(out.status.success(), "credential-process: {}", stderr(out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    credvend::creds::TemporaryCredentials {
        access_key_id: v["AccessKeyId"].as_str().unwrap().into(),
        secret_access_key: SecretString::from(v["SecretAccessKey"].as_str().unwrap().to_owned()),
        session_token: v["SessionToken"]
            .as_str()
            .map(|t| SecretString::from(t.to_owned())),
        expiration: credvend::creds::parse_aws_time(v["Expiration"].as_str().unwrap()).unwrap(),
        account_id: None,
        arn: None,
        packed_policy_size: None,
    }
}

/// The tags both spellings configure: a space in a key, every special character STS allows, an
/// empty value, non-ASCII letters.
const TAGS: &str = "team=dev, cost center = a+b/c:d@e=f_g.h-i ,empty=, équipe=Straße";

/// A role profile with tags, transitive keys and a source identity, written in credvend's
/// spelling and in aws-vault's, sends the same `AssumeRole` body, byte for byte the one botocore
/// sends for those parameters; moto (auth on) accepts it and the daemon serves the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_transitive_keys_and_source_identity_reach_assume_role_as_botocore_sends_them() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("tags").await;
    let role_arn = moto.role("tags", &[&user.arn], None).await;
    let common = format!(
        "region = us-east-1\nendpoint_url = {p}\nrole_arn = {role_arn}\nsource_profile = base\nrole_session_name = tagged\n",
        p = proxy.url()
    );
    setup.write_aws_config(&format!(
        "[profile base]\nregion = us-east-1\nendpoint_url = {p}\n\
         [profile cv]\n{common}credvend_session_tags = {TAGS}\n\
         credvend_transitive_session_tags = team, équipe\ncredvend_source_identity = alice@example.com\n\
         [profile av]\n{common}session_tags = {TAGS}\n\
         transitive_session_tags = team,équipe\nsource_identity = alice@example.com\n",
        p = proxy.url()
    ));
    setup.store_key("base", &user.key);
    setup.write_toml(
        &Toml::new()
            .imds("cv")
            .ecs(&["cv", "av"])
            .prewarm(&["av"])
            .build(),
    );
    let _daemon = setup.start();
    for p in ["cv", "av"] {
        setup.wait_status(p, "fresh", phase_is("fresh")).await;
    }

    let sent = bodies(&proxy, "AssumeRole");
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let expected = botocore_body(
        "AssumeRole",
        json!({
            "RoleArn": role_arn,
            "RoleSessionName": "tagged",
            "DurationSeconds": 3600,
            "Tags": [
                {"Key": "team", "Value": "dev"},
                {"Key": "cost center", "Value": "a+b/c:d@e=f_g.h-i"},
                {"Key": "empty", "Value": ""},
                {"Key": "équipe", "Value": "Straße"},
            ],
            "TransitiveTagKeys": ["team", "équipe"],
            "SourceIdentity": "alice@example.com",
        }),
    );
    assert_eq!(sent[0], expected, "credvend's spelling");
    assert_eq!(sent[1], expected, "aws-vault's spelling");
    for part in [
        "&Tags.member.1.Key=team&Tags.member.1.Value=dev&Tags.member.2.Key=cost+center&",
        "&Tags.member.3.Key=empty&Tags.member.3.Value=&",
        "&TransitiveTagKeys.member.1=team&TransitiveTagKeys.member.2=%C3%A9quipe&",
        "&SourceIdentity=alice%40example.com",
    ] {
        assert!(expected.contains(part), "{part} in {expected}");
    }
    // moto ignores the parameters: no SourceIdentity in its answer (AWS's has one).
    let answers = proxy.responses().join("\n");
    assert!(answers.contains("<AssumeRoleResponse"), "{answers}");
    assert!(
        !answers.contains("SourceIdentity"),
        "moto now echoes SourceIdentity: update the docs"
    );

    // The role is served; `list` shows the tag keys and the source identity, not the values.
    let creds = creds_of(&setup.cli(&["credential-process", "cv"]));
    let arn = Moto::client()
        .caller_identity(&moto.endpoint(), creds.signing_key())
        .await
        .unwrap()
        .arn;
    let role_name = role_arn.rsplit('/').next().unwrap();
    assert!(
        arn.ends_with(&format!(":assumed-role/{role_name}/tagged")),
        "{arn}"
    );
    let list = stdout(&setup.cli(&["list"]));
    assert!(
        list.contains(
            "AssumeRole(cv; tags: team (transitive), cost center, empty, équipe (transitive); source identity: alice@example.com)"
        ),
        "{list}"
    );
    assert!(!list.contains("Straße"), "{list}");
}

/// A malformed tag list is a load error naming its file and line in `list`, in `status` and on
/// the endpoints' profile entry; the daemon keeps serving the other profiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tag_list_is_refused_at_load_naming_its_line() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.user("badtags").await;
    let role_arn = moto.role("badtags", &[&user.arn], None).await;
    let m = &moto.url;
    setup.write_aws_config(&format!(
        "[profile base]\nregion = us-east-1\nendpoint_url = {m}\n\
         [profile good]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role_arn}\nsource_profile = base\n\
         session_tags = team=dev\n\
         [profile bad]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role_arn}\nsource_profile = base\n\
         session_tags = team=dev,project\n"
    ));
    setup.store_key("base", &user.key);
    let want = "config file line 15: profile `bad`: session_tags entry \"project\" has no `=`: write key=value pairs separated by commas";

    let list = stdout(&setup.cli(&["list"]));
    assert!(list.contains(want), "{list}");
    let out = setup.cli(&["credential-process", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(want), "{}", stderr(&out));

    setup.write_toml(&Toml::new().imds("good").ecs(&["good", "bad"]).build());
    let _daemon = setup.start();
    setup.wait_status("good", "fresh", phase_is("fresh")).await;
    let bad = setup.wait_status("bad", "error", phase_is("error")).await;
    assert_eq!(bad["last_error"]["code"], "InvalidConfiguration", "{bad}");
    assert!(
        bad["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains(want),
        "{bad}"
    );
    let status = stdout(&setup.cli(&["status"]));
    assert!(status.contains("line 15"), "{status}");
    let out = setup.cli(&["credential-process", "good"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A federation profile sends its tags with `GetFederationToken` (as botocore would); a source
/// identity or transitive keys there are a load error that says `GetFederationToken` takes
/// neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_profile_sends_its_tags_with_get_federation_token() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("fedtags").await;
    let p = proxy.url();
    setup.write_aws_config(&format!(
        "[profile fed]\nregion = us-east-1\nendpoint_url = {p}\ncredvend_federation_name = fed-tags\n\
         credvend_session_tags = team=dev,project=x\n\
         [profile fed-si]\nregion = us-east-1\nendpoint_url = {p}\ncredvend_federation_name = fed-si\n\
         source_identity = alice\n"
    ));
    setup.store_key("fed", &user.key);
    setup.store_key("fed-si", &user.key);
    let out = setup.cli(&["credential-process", "fed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = bodies(&proxy, "GetFederationToken");
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(
        sent[0],
        botocore_body(
            "GetFederationToken",
            json!({
                "Name": "fed-tags",
                "DurationSeconds": 43200,
                "Tags": [{"Key": "team", "Value": "dev"}, {"Key": "project", "Value": "x"}],
            })
        )
    );
    assert!(sent[0].contains("&Tags.member.2.Key=project&Tags.member.2.Value=x"));

    let out = setup.cli(&["credential-process", "fed-si"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "config file line 10: profile `fed-si`: source_identity cannot be sent with GetFederationToken"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        bodies(&proxy, "GetFederationToken").len(),
        1,
        "nothing sent for it"
    );
}

/// A reload that changes the tags of an intermediate role of a chain reaches STS: the link
/// assumed with the old tags is not reused (its transitive tags would reach the served role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_an_intermediate_roles_tags_assumes_it_again() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.user("chaintags").await;
    let role_a = moto.role("ta", &[&user.arn], None).await;
    let a_name = role_a.rsplit('/').next().unwrap().to_owned();
    let role_b = moto
        .role(
            "tb",
            &[
                &format!("arn:aws:sts::123456789012:assumed-role/{a_name}/credvend-a"),
                &role_a,
            ],
            None,
        )
        .await;
    let config = |team: &str| {
        format!(
            "[profile base]\nregion = us-east-1\nendpoint_url = {p}\n\
             [profile a]\nregion = us-east-1\nendpoint_url = {p}\nrole_arn = {role_a}\nsource_profile = base\n\
             session_tags = team={team}\ntransitive_session_tags = team\n\
             [profile b]\nregion = us-east-1\nendpoint_url = {p}\nrole_arn = {role_b}\nsource_profile = a\n",
            p = proxy.url()
        )
    };
    setup.write_aws_config(&config("dev"));
    setup.store_key("base", &user.key);
    setup.write_toml(&Toml::new().imds("b").ecs(&["b"]).build());
    let daemon = setup.start();
    setup.wait_status("b", "fresh", phase_is("fresh")).await;
    assert_eq!(proxy.count("AssumeRole"), 2, "a, then b");

    setup.write_aws_config(&config("ops"));
    daemon.signal(libc::SIGHUP);
    assert!(
        proxy
            .wait_count("AssumeRole", 4, std::time::Duration::from_secs(30))
            .await,
        "role a was not assumed again with its new tags: {:#?}",
        bodies(&proxy, "AssumeRole")
    );
    let sent = bodies(&proxy, "AssumeRole");
    assert!(sent[0].contains(
        "&Tags.member.1.Key=team&Tags.member.1.Value=dev&TransitiveTagKeys.member.1=team"
    ));
    assert!(
        sent[2].contains(&format!("%3Arole%2F{a_name}&")),
        "{sent:#?}"
    );
    assert!(
        sent[2].contains(
            "&Tags.member.1.Key=team&Tags.member.1.Value=ops&TransitiveTagKeys.member.1=team"
        ),
        "{sent:#?}"
    );
    assert!(
        !sent[3].contains("Tags.member"),
        "b sets no tags of its own"
    );
}
