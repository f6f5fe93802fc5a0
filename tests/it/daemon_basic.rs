//! `credvend serve` end to end against moto: start-up mint, IMDS and ECS credentials, the CLI
//! talking to it.

use crate::support::daemon::Setup;
use crate::support::http;
use crate::support::moto::Moto;

#[tokio::test]
async fn serves_role_credentials_over_imds_and_ecs() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    setup.write_toml("[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n[ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n");
    let daemon = setup.start();
    let token = http::token(daemon.imds(), 60).await;
    let list = http::get(
        daemon.imds(),
        "/latest/meta-data/iam/security-credentials/",
        &token,
    )
    .await;
    assert_eq!(list.body, "role");
    let creds = http::get(
        daemon.imds(),
        "/latest/meta-data/iam/security-credentials/role",
        &token,
    )
    .await;
    let json = creds.json();
    assert_eq!(json["Code"], "Success", "{}", creds.body);
    let ecs_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    let ecs = http::ecs_get(daemon.ecs(), "role", Some(&ecs_token)).await;
    assert_eq!(ecs.status, 200, "{}", ecs.body);
    assert_eq!(
        ecs.json()["AccessKeyId"],
        json["AccessKeyId"],
        "one set of credentials for both endpoints"
    );
    assert_eq!(ecs.json()["RoleArn"], scenario.role_arn.as_str());
    let status = setup.cli(&["status", "--json"]);
    assert!(status.status.success());
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["profiles"][0]["phase"], "fresh");
    assert_eq!(daemon.terminate().code(), Some(0));
}
