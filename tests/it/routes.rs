//! Listener routes for local users (issue 16): one loopback IMDS listener, a role per uid. The
//! second local account is uid 65534 (`setpriv`, as in `trust.rs`); the daemon's own user is
//! the test's. Containers routed by address are in `netns.rs`
//! (`netns_routes_one_role_per_container`); the matching rules are unit-tested in
//! `src/daemon/routes.rs`.

use std::process::Command;
use std::time::Duration;

use crate::support::clients::{Client, Sdk, assumed_role_prefix, bare_boto3_whoami};
use crate::support::daemon::{Setup, phase_is, stderr, stdout};
use crate::support::moto::Moto;

const NOBODY: u32 = 65534;

fn me() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

fn setpriv(uid: u32) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
    ]
}

/// `curl` as `uid`: the HTTP status of a token PUT, then of a GET of each of `paths` with that
/// token (`none` when the PUT was refused).
fn curl_as(uid: u32, imds: &str, paths: &[&str]) -> Vec<String> {
    let mut script = format!(
        "t=$(curl -s -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' -w '\\n%{{http_code}}' {imds}/latest/api/token); \
         s=\"${{t##*\n}}\"; echo \"$s\"; if [ \"$s\" = 200 ]; then t=\"${{t%\n*}}\"; else t=none; fi; "
    );
    for p in paths {
        script.push_str(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}\\n' -H \"x-aws-ec2-metadata-token: $t\" {imds}{p}; "
        ));
    }
    let argv = setpriv(uid);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    stdout(&out).lines().map(str::to_owned).collect()
}

const LIST: &str = "/latest/meta-data/iam/security-credentials/";

/// A loopback IMDS listener routed by uid: another local user (65534) named by a `uid` route
/// gets its route's role (boto3 run as that user, no AWS variable, finds the listener through
/// `ec2_metadata_service_endpoint` in its config file: GetCallerIdentity shows the role), while
/// the daemon's own user, which no route names, gets a token and 403 with an access line naming
/// its uid, and a third user, which nothing admits, 403 for everything. After a reload that
/// gives the daemon's user a route of its own, `credvend env` points at the listener, boto3 gets
/// that route's role, the other user is refused the daemon user's role (404), and `status`
/// shows both routes with counts that survived the reload.
#[tokio::test]
async fn routes_by_uid_give_each_local_user_its_own_role() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    let build_role = moto.role("build", &[&scenario.user.arn], None).await;
    setup.append_aws_config(&format!(
        "[profile build]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {build_role}\nsource_profile = base\n",
        m = moto.url,
    ));
    let toml = |routes: &str| {
        format!("[[imds]]\nlisten = \"127.0.0.1:0\"\nroutes = [{routes}]\n[ecs]\nenabled = false\n")
    };
    setup.write_toml(&toml("{ uid = \"nobody\", profile = \"build\" }"));
    let daemon = setup.start();
    setup.wait_status("build", "fresh", phase_is("fresh")).await;
    let imds = format!("http://{}", daemon.imds());

    // The routed user: its role, with boto3 run as that user.
    let home = tempfile::tempdir().unwrap();
    let argv = setpriv(NOBODY);
    let prefix: Vec<&str> = argv.iter().map(String::as_str).collect();
    let extra = format!("ec2_metadata_service_endpoint = {imds}/\n");
    let who = bare_boto3_whoami(&prefix, home.path(), &moto.url, &extra)
        .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
    assert!(
        who.arn.starts_with(&assumed_role_prefix(&build_role)),
        "uid {NOBODY} got {}, expected a session of {build_role}",
        who.arn
    );
    assert_eq!(who.method.as_deref(), Some("iam-role"));

    // The daemon's own user has no route: a token, then 403 and an access line.
    assert_eq!(
        curl_as(me(), &imds, &[LIST, &format!("{LIST}build")]),
        ["200", "403", "403"]
    );
    assert!(
        daemon.wait_for_log("NoRoute", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused an IMDS request") && l.contains("NoRoute"))
        .unwrap();
    assert!(line.contains(&format!("peer_uid={}", me())), "{line}");
    // A user nothing admits is refused before routing, as without routes.
    assert_eq!(curl_as(65533, &imds, &[LIST]), ["403", "403"]);

    // The daemon's user gets a route too.
    setup.write_toml(&toml(&format!(
        "{{ uid = \"nobody\", profile = \"build\" }}, {{ uid = {}, profile = \"role\" }}",
        me()
    )));
    daemon.signal(libc::SIGHUP);
    assert!(daemon.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    setup.wait_status("role", "fresh", phase_is("fresh")).await;
    let out = setup.cli(&["env", "role"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stdout(&out);
    assert!(
        lines.contains(&format!("AWS_EC2_METADATA_SERVICE_ENDPOINT={imds}/")),
        "{lines}"
    );
    let client = Client::new().eval(&lines);
    let url = moto.url.clone();
    let who = tokio::task::spawn_blocking(move || client.whoami(Sdk::Boto3, &url))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
    assert!(
        who.arn
            .starts_with(&assumed_role_prefix(&scenario.role_arn)),
        "{}",
        who.arn
    );
    // The other user may not have the daemon user's role.
    assert_eq!(
        curl_as(NOBODY, &imds, &[LIST, &format!("{LIST}role")]),
        ["200", "200", "404"]
    );

    let out = setup.cli(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listener = &report["listeners"][0];
    let routes = listener["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{listener}");
    assert_eq!(
        (routes[0]["uid"].as_u64(), routes[0]["profile"].as_str()),
        (Some(u64::from(NOBODY)), Some("build"))
    );
    assert!(routes[0]["served"].as_u64().unwrap() >= 1, "{listener}");
    assert_eq!(routes[0]["refused"], 1, "{listener}");
    assert_eq!(
        (routes[1]["uid"].as_u64(), routes[1]["profile"].as_str()),
        (Some(u64::from(me())), Some("role"))
    );
    assert!(routes[1]["served"].as_u64().unwrap() >= 1, "{listener}");
    assert_eq!(listener["unrouted_refused"], 2, "{listener}");
    let text = stdout(&setup.cli(&["status"]));
    assert!(
        text.contains(&format!("route uid {NOBODY} -> build: served "))
            && text.contains("no route: refused 2"),
        "{text}"
    );
}
