//! Real AWS SDK clients as separate processes: boto3 (`tests/sdk/python/whoami.py`), the AWS CLI
//! v1 (both from `.venv`), and the AWS SDK for Rust (`tests/sdk/rust`, built by `scripts/test`).
//!
//! Each runs isolated from the machine: the environment is cleared except `PATH`, `HOME` is a
//! fresh directory, `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE` are empty files there, the
//! region is `us-east-1`, and no access key is in the environment. So the only place a client can
//! find credentials is what the test points it at (or, with nothing set, the default metadata
//! address).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use super::moto::venv_bin;

/// A real SDK client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sdk {
    /// boto3 / botocore.
    Boto3,
    /// The AWS CLI v1.
    Cli,
    /// `aws-config` + `aws-sdk-sts` (crates.io).
    Rust,
}

impl Sdk {
    /// Every client.
    pub const ALL: [Sdk; 3] = [Sdk::Boto3, Sdk::Cli, Sdk::Rust];
}

/// Where `scripts/test` builds the Rust SDK client; `CREDVEND_SDK_RUST_CLIENT` overrides.
pub fn rust_client_path() -> PathBuf {
    match std::env::var_os("CREDVEND_SDK_RUST_CLIENT") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/sdk-rust/debug/credvend-sdk-rust-client"
        )),
    }
}

fn rust_client() -> PathBuf {
    let path = rust_client_path();
    assert!(
        path.is_file(),
        "the Rust SDK client is missing at {}: run the tests through scripts/test, which builds it \
         (or: CARGO_TARGET_DIR=target/sdk-rust cargo build --manifest-path tests/sdk/rust/Cargo.toml)",
        path.display()
    );
    path
}

/// What a client reported after loading credentials and calling GetCallerIdentity.
#[derive(Clone, Debug)]
pub struct Whoami {
    /// The caller identity ARN STS returned.
    pub arn: String,
    /// The access key id the client loaded (the CLI does not say).
    pub access_key_id: Option<String>,
    /// The provider that supplied the credentials, where the client says (boto3's `method`).
    pub method: Option<String>,
}

/// An isolated client environment.
pub struct Client {
    dir: TempDir,
    env: Vec<(String, String)>,
    netns: Option<String>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A fresh home with empty AWS files; region `us-east-1`.
    pub fn new() -> Client {
        let dir = tempfile::Builder::new()
            .prefix("credvend-client")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("config"), "").unwrap();
        std::fs::write(dir.path().join("credentials"), "").unwrap();
        Client {
            dir,
            env: Vec::new(),
            netns: None,
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Client {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Runs the clients inside the named network namespace (`ip netns exec NAME`).
    pub fn in_netns(mut self, name: &str) -> Client {
        self.netns = Some(name.into());
        self
    }

    /// `program ARGS` with this client's isolated environment (and network namespace).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_CONFIG_FILE", self.dir.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("credentials"),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `sdk`: load credentials, call GetCallerIdentity at `sts` (moto). `Err` carries the
    /// client's exit status and output.
    pub fn whoami(&self, sdk: Sdk, sts: &str) -> Result<Whoami, String> {
        let out = match sdk {
            Sdk::Boto3 => self
                .command(
                    &venv_bin("python"),
                    &[concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/tests/sdk/python/whoami.py"
                    )],
                )
                .env("AWS_ENDPOINT_URL_STS", sts)
                .output(),
            Sdk::Cli => self
                .command(
                    &venv_bin("aws"),
                    &[
                        "sts",
                        "get-caller-identity",
                        "--endpoint-url",
                        sts,
                        "--output",
                        "json",
                    ],
                )
                .output(),
            Sdk::Rust => self
                .command(rust_client().to_str().unwrap(), &[])
                .env("AWS_ENDPOINT_URL_STS", sts)
                .output(),
        }
        .unwrap_or_else(|e| panic!("cannot run the {sdk:?} client: {e}"));
        if !out.status.success() {
            return Err(describe(sdk, &out));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed = match sdk {
            Sdk::Boto3 => serde_json::from_str::<serde_json::Value>(&stdout)
                .ok()
                .map(|v| Whoami {
                    arn: v["arn"].as_str().unwrap_or_default().to_owned(),
                    access_key_id: v["access_key_id"].as_str().map(str::to_owned),
                    method: v["method"].as_str().map(str::to_owned),
                }),
            Sdk::Cli => serde_json::from_str::<serde_json::Value>(&stdout)
                .ok()
                .map(|v| Whoami {
                    arn: v["Arn"].as_str().unwrap_or_default().to_owned(),
                    access_key_id: None,
                    method: None,
                }),
            Sdk::Rust => {
                let field = |name: &str| {
                    stdout
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                        .map(str::to_owned)
                };
                field("arn").map(|arn| Whoami {
                    arn,
                    access_key_id: field("access_key_id"),
                    method: None,
                })
            }
        };
        parsed.ok_or_else(|| format!("unexpected output: {}", describe(sdk, &out)))
    }

    /// Like [`Client::whoami`], panicking with the client's output on failure.
    pub fn expect_whoami(&self, sdk: Sdk, sts: &str) -> Whoami {
        self.whoami(sdk, sts)
            .unwrap_or_else(|e| panic!("{sdk:?} failed: {e}"))
    }
}

fn describe(sdk: Sdk, out: &Output) -> String {
    format!(
        "{sdk:?} exited {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The start of the assumed-role ARN GetCallerIdentity returns for sessions of `role_arn`:
/// `arn:aws:sts::ACCOUNT:assumed-role/NAME/`.
pub fn assumed_role_prefix(role_arn: &str) -> String {
    let account = role_arn.split(':').nth(4).expect("an IAM role ARN");
    let name = role_arn.rsplit('/').next().unwrap();
    format!("arn:aws:sts::{account}:assumed-role/{name}/")
}
