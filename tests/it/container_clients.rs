//! Five real clients of the ECS container endpoint against `credvend serve` and moto: boto3, the
//! AWS CLI v1, the AWS SDK for Rust, Debian's AWS CLI v2 (`/usr/bin/aws`) and Debian's rclone
//! (Go SDK v1). Each gets exactly what `credvend env role --container` prints, applied as `eval`
//! would: `AWS_CONTAINER_CREDENTIALS_FULL_URI` (the daemon's ECS listener) with both
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (the CLI v2
//! and rclone read only the first, see docs/container-clients.md), the region, and `unset` of
//! every competing variable. Each fetches the profile's role credentials from the daemon and
//! makes a signed call that moto, with SigV4 authentication on, accepts: GetCallerIdentity for
//! the SDKs and CLIs, S3 `mkdir` + `lsd` for rclone, which has no STS command.
//!
//! Besides those lines the clients only get `AWS_EC2_METADATA_DISABLED=true` (after them: `env`
//! unsets it): should the container provider fail, no client may fall back to the
//! instance-metadata address, which is off this machine. The same five clients with
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, in a network namespace: `netns.rs`,
//! `netns_ecs_agent_relative_uri`.

use std::time::{Duration, Instant};

use crate::support::clients::{Client, Sdk, assumed_role_prefix, shell_env};
use crate::support::daemon::{stderr, stdout};
use crate::support::http;
use crate::support::moto::Moto;
use crate::support::served::{ROLE_TOML, Served};

/// The audit message of a credentials answer on the ECS endpoint.
const VENDED: &str = "vended credentials over ECS";

/// A client with exactly what `credvend env role --container` prints for `s`, checked to be the
/// full-URI form with both token variables.
fn container_client(s: &Served) -> Client {
    let out = s.setup.cli(&["env", "role", "--container"]);
    assert!(out.status.success(), "credvend env: {}", stderr(&out));
    let lines = stdout(&out);
    let vars = shell_env(&lines);
    let value = |k: &str| {
        vars.iter()
            .rev()
            .find(|(name, _)| name == k)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(
        value("AWS_CONTAINER_CREDENTIALS_FULL_URI").as_deref(),
        Some(format!("http://127.0.0.1:{}/credentials/role", s.ecs().port()).as_str()),
        "{lines}"
    );
    assert_eq!(
        value("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        Some(s.ecs_token("role")),
        "{lines}"
    );
    let file = value("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").expect("the token file");
    assert_eq!(std::fs::read_to_string(file).unwrap(), s.ecs_token("role"));
    assert_eq!(
        value("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        None,
        "{lines}"
    );
    Client::new()
        .eval(&lines)
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// The access key id the ECS endpoint serves for `role` right now.
async fn served_key(s: &Served) -> String {
    let token = s.ecs_token("role");
    let r = http::request(
        s.ecs(),
        "GET",
        "/credentials/role",
        &[("authorization", &token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["AccessKeyId"].as_str().unwrap().to_owned()
}

/// Allows the role of `s` S3 as well (the scenario's role may only call STS), for rclone.
async fn allow_s3(moto: &Moto, s: &Served) {
    moto.iam(&[
        ("Action", "PutRolePolicy"),
        ("RoleName", s.scenario.role_name()),
        ("PolicyName", "s3"),
        (
            "PolicyDocument",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
        ),
    ])
    .await;
}

/// Runs `sdk` with the container variables `credvend env role --container` prints for a daemon
/// serving `role`, and checks that it used the role's credentials as the daemon serves them,
/// fetched from the ECS endpoint.
async fn check(sdk: Sdk) {
    let moto = Moto::shared();
    let s = Served::start(ROLE_TOML).await;
    allow_s3(&moto, &s).await;
    let client = container_client(&s);
    let who = tokio::task::spawn_blocking({
        let url = moto.url.clone();
        move || client.expect_whoami(sdk, &url)
    })
    .await
    .unwrap();

    let prefix = assumed_role_prefix(&s.scenario.role_arn);
    assert!(
        who.arn.starts_with(&prefix),
        "{sdk:?}: moto says the call was signed by {}, expected a session of {prefix}...",
        who.arn
    );
    // The daemon's audit trail: the first ECS answer is the client's (`Served::start` waits on
    // IMDS, and our own ECS request comes after), and it carried exactly the served key.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = s.daemon.log();
        let line = log.lines().find(|l| l.contains(VENDED)).map(str::to_owned);
        if let Some(line) = line {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "{sdk:?}: the daemon logged no `{VENDED}` for the client:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let served = served_key(&s).await;
    if let Some(key) = &who.access_key_id {
        assert_eq!(*key, served, "{sdk:?} signed with other credentials");
    }
    if let Some(method) = &who.method {
        assert_eq!(method, "container-role", "{sdk:?}: credential provider");
    }
    assert!(
        line.contains(&format!(r#"access_key_id="{served}""#)),
        "{sdk:?}: audit line {line}"
    );
    println!("{sdk:?}: {} signed by {}; {line}", who.arn, served);
}

macro_rules! container_cases {
    ($($name:ident: $sdk:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            check($sdk).await;
        }
    )*};
}

container_cases! {
    container_clients_boto3: Sdk::Boto3;
    container_clients_cli_v1: Sdk::Cli;
    container_clients_rust: Sdk::Rust;
    container_clients_cli_v2: Sdk::CliV2;
    container_clients_rclone: Sdk::Rclone;
}
