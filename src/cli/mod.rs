//! The `credvend` command line: flags (clap) turned into one validated `Context`, then one
//! function per command. Errors are `anyhow` here and only here; every message is one line that
//! names the fix. Exit codes: 0 success, 1 operational error, 2 usage error.

mod client;
mod doctor;
mod keys;
mod metrics;
mod rotate;
mod serve;
mod service;
mod sso;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::context::Context;
use crate::keystore::{Choice, KeyStore};
use crate::logging::LogFormat;

const ABOUT: &str = "Vend short-lived AWS credentials from keys kept in the OS keyring.";

const LONG_ABOUT: &str = "\
Vend short-lived AWS credentials from keys kept in the OS keyring.

Long-term keys live only in the keyring (`credvend add`, `credvend import`). The daemon
(`credvend serve`, normally run by systemd or launchd) mints temporary credentials with STS for the
profiles of your AWS config, refreshes them in the background, and serves them over an
IMDSv2-compatible endpoint and the ECS container-credentials endpoint, where every AWS SDK and the
AWS CLI find them by themselves (`credvend env`, `credvend exec`).

Files:
  AWS profiles     AWS_CONFIG_FILE (default ~/.aws/config), AWS_SHARED_CREDENTIALS_FILE
  daemon settings  --config (default $XDG_CONFIG_HOME/credvend/config.toml; missing = defaults)
  state            --state-dir (default $XDG_RUNTIME_DIR/credvend): control.sock, ECS token files

Exit codes: 0 success, 1 operational error (the message names the fix), 2 usage error.";

/// Global options and the command.
#[derive(Debug, Parser)]
#[command(name = "credvend", version, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
pub(crate) struct Cli {
    /// Daemon settings file (TOML) [default: $XDG_CONFIG_HOME/credvend/config.toml]
    #[arg(long, global = true, value_name = "FILE", env = "CREDVEND_CONFIG")]
    config: Option<PathBuf>,

    /// Where long-term keys are stored: auto picks the platform's keyring (on Linux the Secret
    /// Service, or the kernel keyring when no Secret Service answers)
    #[arg(
        long,
        global = true,
        value_name = "STORE",
        env = "CREDVEND_KEYSTORE",
        default_value = "auto"
    )]
    keystore: Choice,

    /// Directory for the control socket and token files [default: $XDG_RUNTIME_DIR/credvend]
    #[arg(long, global = true, value_name = "DIR", env = "CREDVEND_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a long-term access key pair for PROFILE in the keyring
    #[command(
        long_about = "Store a long-term access key pair for PROFILE in the keyring.\n\n\
        Without flags, prompts for the access key id and (without echo) the secret. The key is checked \
        with STS GetCallerIdentity before it is stored, against the profile's STS endpoint \
        (endpoint_url / region of the AWS config), unless --no-verify is given. Existing keys are \
        replaced only with --force."
    )]
    Add(keys::AddArgs),
    /// Move keys from the plaintext shared credentials file into the keyring
    #[command(
        long_about = "Move keys from the plaintext shared credentials file (AWS_SHARED_CREDENTIALS_FILE, \
        default ~/.aws/credentials) into the keyring: all profiles with keys, or the PROFILEs named.\n\n\
        Without --remove the file is left as it is. With --remove the key lines of the imported profiles \
        are deleted from the file and every other line, comment and byte is kept; a copy of the original \
        with the secrets blanked is written next to it (mode 0600) first. Temporary credentials \
        (profiles with aws_session_token) are skipped."
    )]
    Import(keys::ImportArgs),
    /// List profiles of the AWS config and whether the keyring holds keys for them
    List(keys::ListArgs),
    /// Delete the stored keys (and any cached MFA session or unfinished key rotation) of PROFILE,
    /// or the IAM Identity Center sign-in of its SSO session
    #[command(
        long_about = "Delete the stored keys (and any cached MFA session or unfinished key rotation) of \
        PROFILE from the keyring; a running daemon is told at once and stops using them.\n\n\
        For an IAM Identity Center profile (sso_session or sso_start_url), delete the sign-in of its SSO \
        session instead: it is shared by every profile of that session, so all of them need `credvend \
        login` again. A token cache file written with `login --share-cache` is deleted too."
    )]
    Remove(keys::RemoveArgs),
    /// Run the daemon in the foreground (systemd and launchd run exactly this)
    #[command(
        long_about = "Run the daemon in the foreground (systemd and launchd run exactly this).\n\n\
        Mints credentials at start-up for the profiles of [[imds]] listeners, of [refresh] prewarm and \
        those in use before a restart; every other served profile is minted on its first request and \
        goes idle (credentials dropped, no rotation) after [refresh] idle_after_seconds without one. \
        Then prints one line when every \
        listener is bound:\n\n  credvend ready imds=ADDR ecs=ADDR [ecs-agent=ADDR] [metrics=ADDR] control=PATH\n\n\
        and tells systemd READY=1 when run under it. SIGTERM/SIGINT: stop accepting, finish in-flight \
        requests, exit. SIGHUP: reload both config files; a broken file is reported and the running \
        configuration keeps serving."
    )]
    Serve,
    /// Show what the running daemon is doing
    Status(client::StatusArgs),
    /// Print the running daemon's metrics (OpenMetrics text)
    #[command(
        long_about = "Print the running daemon's metrics in OpenMetrics text format (the same text its \
        [metrics] listener serves at GET /metrics), fetched over the control socket.\n\n\
        Per profile (label profile): phase (a state set), credentials expiry (Unix time) and seconds \
        left, successful refreshes, failures by problem code, requests served, requests refused by \
        problem code. Per listener (labels listener, address): connections accepted, refused and \
        open; requests refused by reason (missing_token, bad_token, user_not_allowed, unknown_id, \
        no_credentials...). STS call latency by action (a histogram), STS clock skew, start time, \
        version, whether the last reload succeeded. No metric holds a secret, token, ID or access \
        key id.\n\n\
        [metrics] in config.toml (off by default) serves GET /metrics and GET /healthz (200 when every \
        prewarmed profile (those of the [[imds]] listeners and their routes, and [refresh] prewarm) \
        has credentials it can serve, else 503 naming those that do not) on 127.0.0.1:9256, with the same access rules as the other listeners (allow, allow_uids, \
        hosts)."
    )]
    Metrics,
    /// Sign in to IAM Identity Center for PROFILE, or give the daemon an MFA code for it
    #[command(
        long_about = "Sign in to IAM Identity Center for PROFILE, or give the daemon an MFA code for it.\n\n\
        IAM Identity Center profiles (sso_session or sso_start_url): runs the sign-in the AWS CLI v2 runs. \
        By default a browser on this machine opens the sign-in page (the URL is printed too) and comes \
        back to a local port (authorization code with PKCE); with --device-code, or without a graphical \
        session, open the printed URL on any device and confirm the printed code. The sign-in (access \
        token, refresh token, client registration) is kept in the keyring, the daemon refreshes the \
        access token by itself and mints every profile of that SSO session. --share-cache also writes \
        it to the AWS CLI's token cache (~/.aws/sso/cache), so `aws` uses the same sign-in.\n\n\
        MFA profiles: the code is prompted for on the terminal (no echo), or read from stdin with \
        --code-stdin (--code N also works, but the code is then visible to every user of the machine in \
        `ps` while the command runs). The daemon mints one MFA-authenticated session (GetSessionToken) \
        and assumes the profile's roles from it until the session expires (12 h by default); the session \
        is cached in the keyring, so it survives daemon restarts. Without a running daemon the session is \
        minted and cached directly."
    )]
    Login(client::LoginArgs),
    /// Mint new credentials now (for PROFILE, even an idle one; or for every profile in use)
    Refresh(client::RefreshArgs),
    /// Forget temporary credentials (of PROFILE, or of every profile)
    #[command(
        long_about = "Forget temporary credentials (of PROFILE, or of every profile): the served \
        credentials, cached MFA sessions and IAM Identity Center sign-ins (memory and keyring; a token \
        cache file shared with the AWS CLI by `login --share-cache` too). `credvend refresh PROFILE` \
        mints again; MFA and IAM Identity Center profiles then need `credvend login`."
    )]
    Lock(client::LockArgs),
    /// Print shell `export` lines that point SDKs at the daemon
    #[command(
        long_about = "Print shell lines that point AWS SDKs at the daemon for PROFILE; use as \
        `eval \"$(credvend env dev)\"`.\n\n\
        Default: the IMDS endpoint serving PROFILE (AWS_EC2_METADATA_SERVICE_ENDPOINT).\n\
        --container: when the [ecs_agent] listener serves PROFILE, its AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
        (/v2/credentials/ID, which every client fetches from http://169.254.170.2 with no token); otherwise \
        the ECS endpoint: AWS_CONTAINER_CREDENTIALS_FULL_URI with both AWS_CONTAINER_AUTHORIZATION_TOKEN and \
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (older clients read only the first). The other container \
        variables are unset, so no client mixes the two forms.\n\
        --container --rotate-id: first give PROFILE a new [ecs_agent] ID; the old one is refused from then \
        on (also after a daemon restart), so containers holding it stop getting credentials.\n\
        --static: the current temporary credentials themselves, for tools that read only the environment; \
        they do not refresh. Long-term keys are never printed."
    )]
    Env(client::EnvArgs),
    /// Run CMD with the container endpoint of PROFILE in its environment
    #[command(
        long_about = "Run CMD with the container endpoint of PROFILE in its environment, so it \
        keeps getting fresh credentials however long it runs: the ECS endpoint \
        (AWS_CONTAINER_CREDENTIALS_FULL_URI with AWS_CONTAINER_AUTHORIZATION_TOKEN and \
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) when it serves PROFILE, since CMD runs on this machine; \
        else the [ecs_agent] listener's AWS_CONTAINER_CREDENTIALS_RELATIVE_URI. credvend replaces itself \
        with CMD: exit status and signals are CMD's own."
    )]
    Exec(client::ExecArgs),
    /// Print credential_process Version 1 JSON for PROFILE
    #[command(
        long_about = "Print credential_process Version 1 JSON for PROFILE, for \
        `credential_process = credvend credential-process NAME` in an AWS config. Asks the daemon when \
        it runs and serves PROFILE, else mints directly."
    )]
    CredentialProcess(client::ProfileArg),
    /// Install and start the systemd user service (or launchd agent)
    InstallService(service::InstallArgs),
    /// Replace the key stored for PROFILE with a new key of the same IAM user
    #[command(
        long_about = "Replace the long-term key stored for PROFILE with a new key of the same IAM user, \
        and delete the old key in IAM.\n\n\
        Steps, one output line each: check the stored key with STS GetCallerIdentity; list the user's \
        keys (a second key of the user's own stops the rotation: IAM allows two, and credvend never \
        deletes a key it did not make); record the rotation in the keyring; CreateAccessKey; keep the \
        new key in the keyring as pending; verify it with STS GetCallerIdentity, waiting up to 30 s \
        for IAM to propagate it; make it PROFILE's key; DeleteAccessKey the old key; drop the record. \
        The new key id is printed on stdout; no secret is ever printed.\n\n\
        Safe to interrupt at any point: the keyring always holds a key that works and the user never \
        has more than two keys. Run the command again after an interruption: it finishes the \
        interrupted rotation, deleting a key its CreateAccessKey made but never answered.\n\n\
        When PROFILE's chain has an mfa_serial, the IAM calls are signed with the MFA session that \
        `credvend login PROFILE` cached in the keyring (for IAM policies that require MFA); run it \
        first. IAM endpoint: AWS_ENDPOINT_URL_IAM, AWS_ENDPOINT_URL, the profile's [services] \
        `iam = endpoint_url`, its endpoint_url, else IAM's own. The IAM user needs iam:ListAccessKeys, \
        iam:CreateAccessKey and iam:DeleteAccessKey on itself. A running daemon picks the new key up \
        at its next mint, without a restart."
    )]
    Rotate(rotate::RotateArgs),
    /// Check what commonly breaks a setup, and name each fix
    #[command(
        long_about = "Check what commonly breaks a setup, and name each fix.\n\n\
        Checks: the daemon answers on the control socket (and is yours); each of its listeners \
        answers (an IMDSv2 token request, an ECS request without a token); the keyring opens without \
        prompting and lists its profiles; each STS endpoint of the served profiles answers over \
        trusted TLS, and the clock agrees with its Date header (SigV4 refuses more than 5 minutes \
        of skew); environment variables that take precedence over credvend (AWS_ACCESS_KEY_ID, \
        AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, an AWS_PROFILE credvend does not serve, a stale \
        AWS_CONTAINER_CREDENTIALS_FULL_URI or AWS_EC2_METADATA_SERVICE_ENDPOINT); long-term keys \
        left in the shared credentials file; profiles that do not resolve and AWS config warnings.\n\n\
        Network: only the daemon's own listeners and the STS endpoints of configured profiles (one \
        unsigned request each). Never prints a secret.\n\n\
        Exit status 0 when no check fails (warnings do not fail). --json prints the same as a list of \
        {\"check\", \"status\": ok|warn|fail, \"detail\", \"fix\"}."
    )]
    Doctor(doctor::DoctorArgs),
}

/// Entry point: parses, runs, maps errors to exit codes.
pub fn main() -> ExitCode {
    crate::sys::harden_process();
    let cli = Cli::parse();
    // Taken before any other thread exists (the log writer is one): socket activation variables
    // are removed from the environment so children never see them.
    let inherited = match cli.command {
        Command::Serve => crate::sys::inherited_sockets(),
        _ => (Vec::new(), Vec::new()),
    };
    let default_level = match cli.command {
        Command::Serve => "info",
        _ => {
            // Printing commands end quietly when their reader goes away (`credvend list | head`).
            // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            "warn"
        }
    };
    let serving = matches!(cli.command, Command::Serve);
    let _log_guard = crate::logging::init(cli.log_format, default_level, serving);
    let ctx = Context::from_process(cli.config, cli.keystore, cli.state_dir);
    let result = match cli.command {
        Command::Serve => serve::run(ctx, inherited),
        Command::Exec(args) => client::exec(ctx, args),
        other => runtime().and_then(|rt| rt.block_on(dispatch(ctx, other))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("credvend: {}", printable(&one_line(&e)));
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn dispatch(ctx: Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add(a) => keys::add(&ctx, a).await,
        Command::Import(a) => keys::import(&ctx, a).await,
        Command::List(a) => keys::list(&ctx, a).await,
        Command::Remove(a) => keys::remove(&ctx, a).await,
        Command::Status(a) => client::status(&ctx, a).await,
        Command::Metrics => metrics::metrics(&ctx).await,
        Command::Login(a) => client::login(&ctx, a).await,
        Command::Refresh(a) => client::refresh(&ctx, a).await,
        Command::Lock(a) => client::lock(&ctx, a).await,
        Command::Env(a) => client::env(&ctx, a).await,
        Command::CredentialProcess(a) => client::credential_process(&ctx, a).await,
        Command::InstallService(a) => service::install(&ctx, a).await,
        Command::Rotate(a) => rotate::rotate(&ctx, a).await,
        Command::Doctor(a) => doctor::doctor(&ctx, a).await,
        Command::Serve | Command::Exec(_) => unreachable!("handled in main"),
    }
}

/// Opens the key store now.
async fn open_keystore(ctx: &Context, interactive: bool) -> anyhow::Result<KeyStore> {
    Ok(KeyStore::open(ctx.keystore_options(interactive)).await?)
}

/// `s` with control characters (other than newlines) shown as `\u{..}`: text from the daemon or
/// from files (profile names, messages) must not drive the terminal (escape sequences that
/// retitle it, move the cursor or hide text).
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// An error and its causes on one line, each cause only once: most of credvend's errors already
/// say what their source says, and repeating it ("no keys ...: no keys ...") hides the message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ntext"), "plain\ntext");
        assert_eq!(
            printable("a\u{1b}]0;owned\u{7}b"),
            "a\\u{1b}]0;owned\\u{7}b"
        );
        assert_eq!(printable("x\ry"), "x\\u{d}y");
    }

    #[test]
    fn errors_print_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("no keys for `x`: run `credvend add x`")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("profile `x`: {0}")]
        struct Outer(#[source] Inner);
        let e = anyhow::Error::new(Outer(Inner)).context("minting failed");
        assert_eq!(
            one_line(&e),
            "minting failed: profile `x`: no keys for `x`: run `credvend add x`"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc/def"), "abc/def");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
