//! Everything a command needs from its surroundings, resolved once from flags and the process
//! environment (the "hiargs" step): where the files are, which keyring to use, the AWS
//! environment variables that affect profiles. Nothing below the CLI reads the environment
//! again.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::DaemonConfig;
use crate::keystore::{self, Choice, OpenOptions};
use crate::paths;
use crate::profile::file::ProfileSet;
use crate::profile::resolve::Env;

/// Resolved settings shared by every command.
#[derive(Clone, Debug)]
pub(crate) struct Context {
    /// `config.toml`.
    pub daemon_config: PathBuf,
    /// Whether `--config` named it (then it must exist).
    pub daemon_config_explicit: bool,
    /// The AWS config file (`AWS_CONFIG_FILE`, default `~/.aws/config`).
    pub aws_config: PathBuf,
    /// The AWS credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`).
    pub aws_credentials: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Whether `--state-dir` (or `CREDVEND_STATE_DIR`) named it.
    pub state_dir_explicit: bool,
    /// `--keystore`.
    pub keystore: Choice,
    /// `CREDVEND_KEYRING_SERVICE`: entries filed under another service name (tests, or several
    /// independent setups for one user).
    pub keyring_service: Option<String>,
    /// AWS environment variables that affect profiles.
    pub env: Env,
    /// AWS environment variables `rotate` and `doctor` look at.
    pub sdk_env: SdkEnv,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`, default `~/.config` (where `install-service` puts systemd user units).
    pub config_home: Option<PathBuf>,
}

/// AWS environment variables beyond those that shape profiles ([`Env`]): where IAM calls go (for
/// `rotate`), and what would make an SDK take credentials from somewhere other than credvend (for
/// `doctor`). Of the credential variables only their presence is kept, never their values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SdkEnv {
    /// `AWS_ENDPOINT_URL_IAM`.
    pub endpoint_url_iam: Option<String>,
    /// `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`.
    pub ignore_configured_endpoint_urls: Option<String>,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Which of [`SdkEnv::CREDENTIAL_VARS`] are set (non-empty).
    pub credential_vars: Vec<&'static str>,
    /// `AWS_PROFILE`.
    pub profile: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub container_full_uri: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
    pub container_relative_uri: Option<String>,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub imds_endpoint: Option<String>,
}

impl SdkEnv {
    /// Variables holding credentials themselves; every SDK takes them before any other source.
    pub const CREDENTIAL_VARS: [&'static str; 3] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];

    /// The variables of this process (empty values count as unset, as in the SDKs).
    pub fn from_process() -> SdkEnv {
        SdkEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// The variables as `lookup` reports them (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> SdkEnv {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        SdkEnv {
            endpoint_url_iam: get("AWS_ENDPOINT_URL_IAM"),
            endpoint_url: get("AWS_ENDPOINT_URL"),
            ignore_configured_endpoint_urls: get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            credential_vars: SdkEnv::CREDENTIAL_VARS
                .into_iter()
                .filter(|k| get(k).is_some())
                .collect(),
            profile: get("AWS_PROFILE"),
            container_full_uri: get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            container_relative_uri: get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            imds_endpoint: get("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
        }
    }
}

/// Both configuration files, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    /// `config.toml`.
    pub config: DaemonConfig,
    /// The AWS config and credentials files, merged.
    pub profiles: Arc<ProfileSet>,
    /// Environment captured at start-up.
    pub env: Env,
}

impl Context {
    /// Resolves flags (`None` = not given) against the process environment.
    pub fn from_process(
        config: Option<PathBuf>,
        keystore: Choice,
        state_dir: Option<PathBuf>,
    ) -> Context {
        Context {
            daemon_config_explicit: config.is_some(),
            daemon_config: config.unwrap_or_else(paths::default_daemon_config),
            aws_config: paths::aws_config_file(),
            aws_credentials: paths::aws_credentials_file(),
            state_dir_explicit: state_dir.is_some(),
            state_dir: state_dir.unwrap_or_else(paths::default_state_dir),
            keystore,
            keyring_service: std::env::var("CREDVEND_KEYRING_SERVICE")
                .ok()
                .filter(|s| !s.is_empty()),
            env: Env::from_process(),
            sdk_env: SdkEnv::from_process(),
            home: paths::home_dir(),
            config_home: std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| paths::home_dir().map(|h| h.join(".config"))),
        }
    }

    /// How to open the key store. `interactive` commands let a desktop keyring show its unlock
    /// prompt (bounded); the daemon never prompts.
    pub fn keystore_options(&self, interactive: bool) -> OpenOptions {
        let mut opts = OpenOptions {
            choice: self.keystore,
            prompt_timeout: if interactive {
                keystore::cli_prompt_timeout()
            } else {
                std::time::Duration::ZERO
            },
            ..OpenOptions::default()
        };
        if let Some(service) = &self.keyring_service {
            opts.service = service.clone();
        }
        opts
    }

    /// The AWS CLI's SSO token cache, `~/.aws/sso/cache` (botocore's path).
    pub fn sso_cache_dir(&self) -> Option<PathBuf> {
        self.home
            .as_ref()
            .map(|h| h.join(".aws").join("sso").join("cache"))
    }

    /// `STATE_DIR/control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join(paths::CONTROL_SOCKET)
    }

    /// The AWS config and credentials files, merged.
    pub fn load_profiles(&self) -> Result<ProfileSet, String> {
        crate::profile::load::load_profiles(&self.aws_config, &self.aws_credentials)
    }

    /// `config.toml` (defaults when it is missing and was not named explicitly).
    pub fn load_daemon_config(&self) -> Result<DaemonConfig, String> {
        let path = &self.daemon_config;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                DaemonConfig::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.daemon_config_explicit => {
                Ok(DaemonConfig::default())
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Both files; one line naming the file on failure.
    pub fn load(&self) -> Result<Loaded, String> {
        let config = self.load_daemon_config()?;
        let profiles = self.load_profiles()?;
        for w in &profiles.warnings {
            tracing::warn!("AWS config: {w}");
        }
        for name in profiles.profiles.keys() {
            for w in crate::profile::check::check_profile(&profiles, name) {
                tracing::warn!("AWS config: {w}");
            }
        }
        Ok(Loaded {
            config,
            profiles: Arc::new(profiles),
            env: self.env.clone(),
        })
    }
}
