//! Real AWS SDK clients as separate processes: boto3 (`tests/sdk/python/whoami.py`), the AWS CLI
//! v1 (both from `.venv`), the AWS SDK for Rust (`tests/sdk/rust`, built by `scripts/test`), and
//! two Debian packages `scripts/test` installs: `awscli` (the AWS CLI v2, 2.9.x, at
//! `/usr/bin/aws`) and `rclone` (built on the Go SDK v1, used here as an S3 client).
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
    /// Debian's AWS CLI v2 at [`AWS_V2`].
    CliV2,
    /// Debian's rclone (Go SDK v1): an S3 remote from the environment, no STS.
    Rclone,
}

impl Sdk {
    /// The three SDK clients every IMDS and ECS test runs.
    pub const ALL: [Sdk; 3] = [Sdk::Boto3, Sdk::Cli, Sdk::Rust];
    /// Every client of the container endpoint: [`Sdk::ALL`] and the two Debian packages.
    pub const CONTAINER: [Sdk; 5] = [Sdk::Boto3, Sdk::Cli, Sdk::Rust, Sdk::CliV2, Sdk::Rclone];
}

/// Debian's AWS CLI v2 (package `awscli`). Called by path: the venv's CLI v1 comes first on
/// `PATH` when the venv is active.
pub const AWS_V2: &str = "/usr/bin/aws";

/// Debian's rclone (package `rclone`).
pub const RCLONE: &str = "/usr/bin/rclone";

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
    /// The access key id the client loaded (boto3, Rust) or signed with (rclone); the CLIs do
    /// not say.
    pub access_key_id: Option<String>,
    /// The provider that supplied the credentials, where the client says (boto3's `method`).
    pub method: Option<String>,
}

/// An isolated client environment.
pub struct Client {
    dir: TempDir,
    /// Changes applied in order over the isolated base: `Some` sets, `None` removes.
    env: Vec<(String, Option<String>)>,
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
        self.env.push((k.into(), Some(v.into())));
        self
    }

    /// Removes an environment variable (of the base, or set before).
    pub fn unset(mut self, k: &str) -> Client {
        self.env.push((k.into(), None));
        self
    }

    /// Applies shell lines as `credvend env` prints them (`export K=V`, `unset K`), in order,
    /// as `eval` would.
    pub fn eval(mut self, lines: &str) -> Client {
        for (k, v) in shell_env(lines) {
            self.env.push((k, v));
        }
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
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Runs Debian's AWS CLI v2 (`/usr/bin/aws ARGS`) in this client's environment.
    pub fn aws_v2(&self, args: &[&str]) -> Output {
        self.command(AWS_V2, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {AWS_V2} (install the awscli package): {e}"))
    }

    /// Runs `rclone ARGS` in this client's environment, with the remote `m:` defined by the
    /// environment alone: S3 at `endpoint` (path-style, as `provider = Other` implies), credentials
    /// from the AWS credential chain (`env_auth`), no rclone config file.
    pub fn rclone(&self, endpoint: &str, args: &[&str]) -> Output {
        self.rclone_command(endpoint, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {RCLONE} (install the rclone package): {e}"))
    }

    fn rclone_command(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut cmd = self.command(RCLONE, args);
        cmd.env("RCLONE_CONFIG", self.dir.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_M_TYPE", "s3")
            // `AWS` would force virtual-host addressing (bucket.127.0.0.1:PORT), which a local
            // endpoint cannot serve.
            .env("RCLONE_CONFIG_M_PROVIDER", "Other")
            .env("RCLONE_CONFIG_M_ENV_AUTH", "true")
            .env("RCLONE_CONFIG_M_ENDPOINT", endpoint);
        cmd
    }

    /// rclone's signed calls at `s3` (moto): `mkdir` of a fresh bucket, then `lsd` of the
    /// account, which must list it. The access key is the one in the `Authorization` header of
    /// the listing (rclone's `--dump headers,auth`); the ARN is moto's record of that key
    /// ([`arn_of_key`]). Failures are bounded: one try, two low-level tries.
    fn rclone_whoami(&self, s3: &str) -> Result<Whoami, String> {
        let bucket = super::unique("cv-rclone");
        let bounded = ["--retries", "1", "--low-level-retries", "2"];
        let target = format!("m:{bucket}");
        let mut mkdir = vec!["mkdir", target.as_str()];
        mkdir.extend(bounded);
        let out = self.rclone(s3, &mkdir);
        if !out.status.success() {
            return Err(describe(Sdk::Rclone, &out));
        }
        let mut lsd = vec!["lsd", "m:", "--dump", "headers,auth"];
        lsd.extend(bounded);
        let out = self.rclone(s3, &lsd);
        if !out.status.success() {
            return Err(describe(Sdk::Rclone, &out));
        }
        let listed = String::from_utf8_lossy(&out.stdout);
        if !listed
            .lines()
            .any(|l| l.split_whitespace().last() == Some(&bucket))
        {
            return Err(format!(
                "rclone lsd did not list {bucket}: {}",
                describe(Sdk::Rclone, &out)
            ));
        }
        let dump = String::from_utf8_lossy(&out.stderr);
        let key = dump
            .lines()
            .filter_map(|l| l.strip_prefix("Authorization: "))
            .find_map(|a| a.split("Credential=").nth(1)?.split('/').next())
            .map(str::to_owned)
            .ok_or_else(|| "no Authorization header in rclone's request dump".to_owned())?;
        let arn = arn_of_key(s3, &key)
            .ok_or_else(|| format!("moto has no principal for the access key {key}"))?;
        Ok(Whoami {
            arn,
            access_key_id: Some(key),
            method: None,
        })
    }

    /// Runs `sdk`: load credentials, make a signed call at `sts` (moto) and say who it was:
    /// GetCallerIdentity for the SDKs and CLIs; for rclone, which has no STS, S3 calls whose
    /// signer moto names (see [`Client::rclone`]). `Err` carries the client's exit status and
    /// output.
    pub fn whoami(&self, sdk: Sdk, sts: &str) -> Result<Whoami, String> {
        let cli = |program: &str| {
            self.command(
                program,
                &[
                    "sts",
                    "get-caller-identity",
                    "--endpoint-url",
                    sts,
                    "--output",
                    "json",
                ],
            )
            .output()
        };
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
            Sdk::Cli => cli(&venv_bin("aws")),
            Sdk::CliV2 => cli(AWS_V2),
            Sdk::Rust => self
                .command(rust_client().to_str().unwrap(), &[])
                .env("AWS_ENDPOINT_URL_STS", sts)
                .output(),
            Sdk::Rclone => return self.rclone_whoami(sts),
        }
        .unwrap_or_else(|e| panic!("cannot run the {sdk:?} client: {e}"));
        if !out.status.success() {
            return Err(describe(sdk, &out));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed =
            match sdk {
                Sdk::Boto3 => serde_json::from_str::<serde_json::Value>(&stdout)
                    .ok()
                    .map(|v| Whoami {
                        arn: v["arn"].as_str().unwrap_or_default().to_owned(),
                        access_key_id: v["access_key_id"].as_str().map(str::to_owned),
                        method: v["method"].as_str().map(str::to_owned),
                    }),
                Sdk::Cli | Sdk::CliV2 => serde_json::from_str::<serde_json::Value>(&stdout)
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
                Sdk::Rclone => unreachable!("rclone returned above"),
            };
        parsed.ok_or_else(|| format!("unexpected output: {}", describe(sdk, &out)))
    }

    /// Like [`Client::whoami`], panicking with the client's output on failure.
    pub fn expect_whoami(&self, sdk: Sdk, sts: &str) -> Whoami {
        self.whoami(sdk, sts)
            .unwrap_or_else(|e| panic!("{sdk:?} failed: {e}"))
    }
}

/// The variables `export K=V` and `unset K` lines set (`Some`) and remove (`None`), in order;
/// values unquoted as a POSIX shell does (single quotes, backslash escapes outside them).
/// Panics on any other line: `credvend env` prints nothing else on stdout.
pub fn shell_env(text: &str) -> Vec<(String, Option<String>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            if let Some(name) = line.strip_prefix("unset ") {
                return (name.trim().to_owned(), None);
            }
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
                .unwrap_or_else(|| panic!("not an export or unset line: {line:?}"));
            (name.to_owned(), Some(unquote(value)))
        })
        .collect()
}

fn unquote(value: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '\'') => quoted = false,
            (true, c) => out.push(c),
            (false, '\'') => quoted = true,
            (false, '\\') => out.extend(chars.next()),
            (false, c) => out.push(c),
        }
    }
    out
}

fn describe(sdk: Sdk, out: &Output) -> String {
    format!(
        "{sdk:?} exited {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The principal moto (at `moto`) knows for `access_key_id`: the assumed-role session ARN of a
/// key minted by AssumeRole, or the IAM user's ARN of a user's key; from moto's unauthenticated
/// state dump `GET /moto-api/data.json` (`sts.AssumedRole`, `iam.AccessKey`, `iam.User`).
pub fn arn_of_key(moto: &str, access_key_id: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sSf",
            "--noproxy",
            "*",
            &format!("{moto}/moto-api/data.json"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("curl is missing (scripts/test installs it)");
    assert!(
        out.status.success(),
        "GET {moto}/moto-api/data.json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let list =
        |service: &str, kind: &str| data[service][kind].as_array().cloned().unwrap_or_default();
    if let Some(session) = list("sts", "AssumedRole")
        .iter()
        .find(|r| r["access_key_id"] == access_key_id)
    {
        return session["arn"].as_str().map(str::to_owned);
    }
    let user = list("iam", "AccessKey")
        .iter()
        .find(|k| k["access_key_id"] == access_key_id)?["user_name"]
        .as_str()?
        .to_owned();
    list("iam", "User")
        .iter()
        .find(|u| u["name"] == user.as_str())?["arn"]
        .as_str()
        .map(str::to_owned)
}

/// The start of the assumed-role ARN GetCallerIdentity returns for sessions of `role_arn`:
/// `arn:aws:sts::ACCOUNT:assumed-role/NAME/`.
pub fn assumed_role_prefix(role_arn: &str) -> String {
    let account = role_arn.split(':').nth(4).expect("an IAM role ARN");
    let name = role_arn.rsplit('/').next().unwrap();
    format!("arn:aws:sts::{account}:assumed-role/{name}/")
}

/// boto3 (`tests/sdk/python/whoami.py`) with no AWS variable at all, as in an unmodified image:
/// the environment holds only `PATH` and `HOME`; `HOME/.aws/config` (written here, readable by
/// every user) has a `[default]` profile with the region, `endpoint_url = sts` and the `extra`
/// lines, and no credentials. `prefix` runs it (`ip netns exec NS`, `setpriv --reuid=...`).
/// So credentials can only come from the default metadata address (or what `extra` sets, such as
/// `ec2_metadata_service_endpoint`).
pub fn bare_boto3_whoami(
    prefix: &[&str],
    home: &std::path::Path,
    sts: &str,
    extra: &str,
) -> Result<Whoami, String> {
    use std::os::unix::fs::PermissionsExt;
    let aws = home.join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        format!("[default]\nregion = us-east-1\nendpoint_url = {sts}\n{extra}"),
    )
    .unwrap();
    for dir in [home, aws.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(aws.join("config"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let python = venv_bin("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/python/whoami.py");
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&python);
            c
        }
        None => Command::new(&python),
    };
    let out = cmd
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run boto3 with {prefix:?}: {e}"));
    if !out.status.success() {
        return Err(describe(Sdk::Boto3, &out));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unexpected output ({e}): {}", describe(Sdk::Boto3, &out)))?;
    Ok(Whoami {
        arn: v["arn"].as_str().unwrap_or_default().to_owned(),
        access_key_id: v["access_key_id"].as_str().map(str::to_owned),
        method: v["method"].as_str().map(str::to_owned),
    })
}
