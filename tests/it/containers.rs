//! Issue 8 outside namespaces: `credvend env` for tools that read only the environment, and the
//! start-up refusal of exposed listeners without an allow list. (The bridge, allow-list and DNAT
//! tests are in netns.rs.)

use crate::support::daemon::{Setup, stderr, stdout};
use crate::support::moto::{Moto, secret_of, venv_bin};
use crate::support::toml::Toml;

/// `eval "$(credvend env role --static)"` lets the AWS CLI call STS; the long-term key never
/// appears, and stderr warns that the credentials will not refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_static_evaluated_in_a_shell_lets_the_aws_cli_call_sts() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").ecs(&["role"]).build());
    let _daemon = setup.start();
    for profile in ["role", "base"] {
        // `role` comes from the daemon; `base` (not served) is minted directly (GetSessionToken).
        let out = setup.cli(&["env", profile, "--static"]);
        assert!(out.status.success(), "{profile}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text.contains(&scenario.user.key.access_key_id),
            "{profile}: long-term key id printed"
        );
        assert!(
            !text.contains(&secret_of(&scenario.user.key)),
            "{profile}: long-term secret printed"
        );
        assert!(!stderr(&out).contains(&secret_of(&scenario.user.key)));
        assert!(
            text.contains("export AWS_SESSION_TOKEN=")
                && text.contains("export AWS_CREDENTIAL_EXPIRATION=")
        );
        assert!(
            stderr(&out).contains("will not refresh"),
            "{}",
            stderr(&out)
        );
    }
    let empty = setup.home().join("empty");
    std::fs::write(&empty, "").unwrap();
    let script = format!(
        "set -e; eval \"$({bin} env role --static 2>/dev/null)\"; exec {aws} sts get-caller-identity --endpoint-url {m} --query Arn --output text",
        bin = crate::support::daemon::BIN,
        aws = venv_bin("aws"),
        m = moto.url
    );
    let mut cmd = std::process::Command::new("bash");
    setup.apply_env(&mut cmd);
    let out = cmd
        .args(["-c", &script])
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(":assumed-role/{}/", scenario.role_name())),
        "{}",
        stdout(&out)
    );
}

/// `credvend env` (IMDS) and `--container` print lines a shell can eval: they point at the
/// daemon's listeners and unset every variable that would take precedence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_points_at_the_listeners_and_unsets_competing_variables() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    setup.write_toml(&Toml::new().imds("role").ecs(&["role"]).build());
    let daemon = setup.start();
    let imds = stdout(&setup.cli(&["env", "role"]));
    assert!(
        imds.contains(&format!(
            "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{}/",
            daemon.imds()
        )),
        "{imds}"
    );
    assert!(
        imds.contains("unset AWS_ACCESS_KEY_ID") && imds.contains("unset AWS_PROFILE"),
        "{imds}"
    );
    assert!(imds.contains("export AWS_REGION=us-east-1"), "{imds}");
    let ecs = stdout(&setup.cli(&["env", "role", "--container"]));
    assert!(
        ecs.contains(&format!(
            "export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:{}/credentials/role",
            daemon.ecs().port()
        )),
        "{ecs}"
    );
    assert!(
        ecs.contains(&format!(
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
            setup.state_dir().join("ecs-token-role").display()
        )),
        "{ecs}"
    );
    // The token itself too: the AWS CLI v2 of Debian 12 and Go SDK v1 clients read only it.
    let token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    assert!(
        ecs.contains(&format!(
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN={token}\n"
        )),
        "{ecs}"
    );
    assert!(
        ecs.contains("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        "{ecs}"
    );
    let out = setup.cli(&["env", "base"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("the daemon does not serve profile `base`: name it in an [[imds]] listener"),
        "{}",
        stderr(&out)
    );
}

/// A listener on a non-loopback address without `allow` stops `credvend serve` at start-up
/// with a message naming the fix.
#[test]
fn serve_refuses_an_exposed_listener_without_an_allow_list() {
    let setup = Setup::new();
    setup.write_toml("[[imds]]\nlisten = \"0.0.0.0:0\"\nprofile = \"dev\"\n");
    let out = setup
        .command(&["--config", setup.toml_path().to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not a loopback address") && err.contains("allow = ["),
        "{err}"
    );
    assert!(stdout(&out).is_empty(), "no ready line");
}
