//! Commands that talk to the running daemon over the control socket: `status`, `login`,
//! `refresh`, `lock`, `env`, `exec`, `credential-process` (the last two fall back to minting
//! directly where that makes sense).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::shell_quote;
use crate::context::Context;
use crate::control::client::{self as control, ClientError};
use crate::control::proto::{Credentials, FailureKind, Reply, Request, StatusReport};
use crate::creds::format_aws_time;
use crate::keystore::KeyStore;
use crate::mint::{Keys, Minter};
use crate::profile::resolve::{self, Chain};
use crate::sts::ClientOptions;

/// A profile argument.
#[derive(Debug, clap::Args)]
pub struct ProfileArg {
    /// Profile name
    profile: String,
}

/// `credvend status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

/// `credvend login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Profile to sign in (IAM Identity Center) or to give an MFA code for
    profile: String,
    /// The 6-digit MFA code. Visible to every user of this machine in `ps`: prefer the prompt or
    /// --code-stdin
    #[arg(long, value_name = "N", conflicts_with_all = ["code_stdin", "device_code", "share_cache"])]
    code: Option<String>,
    /// Read the MFA code from the first line of stdin (for scripts: `ykman ... | credvend login P --code-stdin`)
    #[arg(long, conflicts_with_all = ["device_code", "share_cache"])]
    code_stdin: bool,
    /// IAM Identity Center: sign in with a code confirmed in any browser, on any device (the
    /// default without a graphical session)
    #[arg(long)]
    device_code: bool,
    /// IAM Identity Center: also write the sign-in to the AWS CLI's token cache
    /// (~/.aws/sso/cache, mode 0600), and keep it up to date, so the AWS CLI and credvend share it
    #[arg(long)]
    share_cache: bool,
}

/// `credvend refresh`.
#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Profile (default: every profile the daemon serves)
    profile: Option<String>,
}

/// `credvend lock`.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Profile (default: every profile)
    profile: Option<String>,
}

/// `credvend env`.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Profile name
    profile: String,
    /// Point at the container endpoint instead of IMDS: the `[ecs_agent]` listener's
    /// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI when it serves PROFILE, else the ECS endpoint with
    /// the token and the token file
    #[arg(long, conflicts_with = "static_")]
    container: bool,
    /// With --container: give PROFILE a new `[ecs_agent]` ID first; the old one is refused from now on
    #[arg(long, requires = "container")]
    rotate_id: bool,
    /// Print the current temporary credentials themselves (they will not refresh)
    #[arg(long = "static")]
    static_: bool,
}

/// `credvend exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Profile name
    profile: String,
    /// Give the command a scoped-down session: PROFILE's credentials minted with this session
    /// policy (a JSON document, or a file holding one), so the command gets at most the
    /// intersection of the profile's permissions and the policy. Needs a role or federation
    /// profile without credvend_policy of its own, and the ECS endpoint (`[ecs]`). The scoped session is
    /// cached and refreshed like a profile: the same policy again reuses it, until the daemon
    /// restarts. It limits what the command does through its SDK; the command still runs as you
    /// (see README "Least privilege" for containing it).
    #[arg(long, value_name = "FILE|JSON")]
    policy: Option<String>,
    /// A managed policy to scope the session with, as with --policy (repeatable, at most 10)
    #[arg(long = "policy-arn", value_name = "ARN")]
    policy_arn: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Variables that would make an SDK pick credentials other than the daemon's.
const CONFLICTING: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_EC2_METADATA_DISABLED",
];

async fn call(ctx: &Context, req: &Request) -> Result<Reply, ClientError> {
    control::call(&ctx.state_dir, req).await
}

fn unexpected(reply: Reply) -> anyhow::Error {
    anyhow::anyhow!(
        "the daemon answered with an unexpected reply ({reply:?}); is it the same version as this CLI?"
    )
}

async fn daemon_status(ctx: &Context) -> Result<StatusReport, anyhow::Error> {
    match call(ctx, &Request::Status).await? {
        Reply::Status(report) => Ok(report),
        other => Err(unexpected(other)),
    }
}

/// `credvend status`.
pub async fn status(ctx: &Context, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report = daemon_status(ctx).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let text = super::status::render(&report, OffsetDateTime::now_utc());
    print!("{}", super::printable(&text));
    Ok(ExitCode::SUCCESS)
}

fn read_code(args: &LoginArgs, serial: Option<&str>) -> anyhow::Result<SecretString> {
    let code = match &args.code {
        Some(c) => c.trim().to_owned(),
        None if args.code_stdin => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the code from stdin")?;
            line.trim().to_owned()
        }
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("no terminal to prompt on: pass --code-stdin and write the code to stdin");
            }
            let label = match serial {
                Some(s) => format!("MFA code for {s}: "),
                None => "MFA code: ".to_owned(),
            };
            rpassword::prompt_password(label)?.trim().to_owned()
        }
    };
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        bail!("an MFA code is 6 digits");
    }
    Ok(SecretString::from(code))
}

fn local_chain(ctx: &Context, profile: &str) -> anyhow::Result<Chain> {
    let set = ctx.load_profiles().map_err(anyhow::Error::msg)?;
    Ok(resolve::resolve(
        &set,
        profile,
        &ctx.env,
        &resolve::read_file,
    )?)
}

async fn local_minter(ctx: &Context, interactive: bool) -> anyhow::Result<Minter> {
    let opts = ctx.keystore_options(interactive);
    let store = KeyStore::open(opts.clone()).await?;
    Ok(
        Minter::new(Keys::ready(store, opts), ClientOptions::default())
            .with_sso_cache_dir(ctx.sso_cache_dir()),
    )
}

/// `credvend login PROFILE`.
pub async fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<ExitCode> {
    // The daemon may know the profile even when this process cannot resolve it; without a
    // daemon, why it cannot be resolved is the error.
    let chain = local_chain(ctx, &args.profile);
    if let Ok(c) = &chain
        && let Some(step) = c.sso()
    {
        return super::sso::login(ctx, &args.profile, step, args.device_code, args.share_cache)
            .await;
    }
    if args.device_code || args.share_cache {
        bail!(
            "--device-code and --share-cache are for IAM Identity Center profiles; profile `{}` is not one{}",
            args.profile,
            chain
                .as_ref()
                .err()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    if let Ok(c) = &chain
        && c.mfa_serial().is_none()
    {
        bail!(
            "profile `{}` has neither an IAM Identity Center sign-in nor an mfa_serial in its chain, so `credvend login` has nothing to do for it",
            args.profile
        );
    }
    let code = read_code(&args, chain.as_ref().ok().and_then(|c| c.mfa_serial()))?;
    let req = Request::Login {
        profile: args.profile.clone(),
        code,
    };
    let expiry = match call(ctx, &req).await {
        Ok(Reply::LoggedIn { session_expiration }) => session_expiration,
        Ok(other) => return Err(unexpected(other)),
        Err(ClientError::NotRunning(_)) => {
            // No daemon: mint and cache the MFA session directly; the daemon picks it up later.
            let chain = chain?;
            let Request::Login { code, .. } = req else {
                bail!("internal error: login request changed shape");
            };
            let minter = local_minter(ctx, true).await?;
            minter.login(&chain, code).await?
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "credvend: MFA session for `{}` valid until {}",
        args.profile,
        format_aws_time(expiry)
    );
    Ok(ExitCode::SUCCESS)
}

/// `credvend refresh [PROFILE]`.
pub async fn refresh(ctx: &Context, args: RefreshArgs) -> anyhow::Result<ExitCode> {
    let names = match call(
        ctx,
        &Request::Refresh {
            profile: args.profile,
        },
    )
    .await?
    {
        Reply::Refreshing { profiles } => profiles,
        other => return Err(unexpected(other)),
    };
    eprintln!(
        "credvend: minting new credentials for {} (see `credvend status`)",
        if names.is_empty() {
            "no profile".into()
        } else {
            names.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `credvend lock [PROFILE]`.
pub async fn lock(ctx: &Context, args: LockArgs) -> anyhow::Result<ExitCode> {
    let (names, needs_login) = match call(
        ctx,
        &Request::Lock {
            profile: args.profile,
        },
    )
    .await?
    {
        Reply::Locked {
            profiles,
            needs_login,
        } => (profiles, needs_login),
        other => return Err(unexpected(other)),
    };
    if names.is_empty() {
        eprintln!("credvend: no profile had credentials to forget");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "credvend: forgot the temporary credentials of {}",
        names.join(", ")
    );
    let plain: Vec<&String> = names.iter().filter(|n| !needs_login.contains(n)).collect();
    if !plain.is_empty() {
        let list: Vec<&str> = plain.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "credvend: `credvend refresh` mints new ones for {}",
            list.join(", ")
        );
    }
    if !needs_login.is_empty() {
        eprintln!(
            "credvend: {} also lost their MFA session: run `credvend login {}` before they can be served again",
            needs_login.join(", "),
            needs_login[0]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The current temporary credentials: from the daemon when it serves the profile, else minted
/// here.
async fn current_credentials(ctx: &Context, profile: &str) -> anyhow::Result<Credentials> {
    match call(
        ctx,
        &Request::Credentials {
            profile: profile.to_owned(),
        },
    )
    .await
    {
        Ok(Reply::Credentials(c)) => return Ok(c),
        Ok(other) => return Err(unexpected(other)),
        Err(ClientError::NotRunning(_)) => {}
        Err(ClientError::Failed(f)) if f.kind == FailureKind::NotServed => {}
        Err(e) => return Err(e.into()),
    }
    let chain = local_chain(ctx, profile)?;
    let minter = Arc::new(local_minter(ctx, false).await?);
    let c = minter.mint(&chain).await?.creds;
    Ok(Credentials {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: c.session_token.unwrap_or_else(|| SecretString::from("")),
        expiration: c.expiration,
        account_id: c.account_id,
        region: Some(chain.region.clone()),
    })
}

/// The `credential_process` Version 1 document (`Version` is the integer 1, as botocore and the
/// Java SDK require).
fn process_json(c: &Credentials) -> serde_json::Value {
    use secrecy::ExposeSecret;
    let mut out = serde_json::json!({
        "Version": 1,
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key.expose_secret(),
        "SessionToken": c.session_token.expose_secret(),
        "Expiration": format_aws_time(c.expiration),
    });
    if let Some(account) = &c.account_id {
        out["AccountId"] = account.clone().into();
    }
    out
}

/// What `exec` serves its child: the profile, or (with `--policy` / `--policy-arn`) the
/// daemon's scoped session of it.
async fn scoped_unit(ctx: &Context, args: &ExecArgs) -> anyhow::Result<String> {
    if args.policy.is_none() && args.policy_arn.is_empty() {
        return Ok(args.profile.clone());
    }
    let policy = args.policy.as_deref().map(policy_document).transpose()?;
    let req = Request::Scope {
        profile: args.profile.clone(),
        policy,
        policy_arns: args.policy_arn.clone(),
    };
    match call(ctx, &req).await? {
        Reply::Scoped { unit } => Ok(unit),
        other => Err(unexpected(other)),
    }
}

/// The policy document `--policy` names: JSON as given, or the JSON of the file it names
/// (`file://PATH` or `PATH`), as compact JSON.
fn policy_document(arg: &str) -> anyhow::Result<String> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_owned()
    } else {
        let path = arg.strip_prefix("file://").unwrap_or(arg);
        std::fs::read_to_string(path).with_context(|| {
            format!("--policy {arg}: cannot read the policy file (give a JSON document or a file holding one)")
        })?
    };
    crate::scope::compact(&text)
        .with_context(|| format!("--policy {arg}: not a JSON policy document"))
}

/// `credvend credential-process PROFILE`.
pub async fn credential_process(ctx: &Context, args: ProfileArg) -> anyhow::Result<ExitCode> {
    let creds = current_credentials(ctx, &args.profile).await?;
    println!("{}", serde_json::to_string(&process_json(&creds))?);
    Ok(ExitCode::SUCCESS)
}

/// Environment changes (`Some` = set, `None` = unset) pointing an SDK at the daemon. With
/// `container`, [`container_env`] decides the variables; `prefer_agent` as there.
async fn endpoint_env(
    ctx: &Context,
    profile: &str,
    container: bool,
    prefer_agent: bool,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let check = |unit: &str| {
        let req = Request::Check {
            profile: unit.to_owned(),
            container,
        };
        async move {
            match call(ctx, &req).await? {
                Reply::Served => Ok(()),
                other => Err(unexpected(other)),
            }
        }
    };
    let report = daemon_status(ctx).await?;
    let mut vars: Vec<(String, Option<String>)> =
        CONFLICTING.iter().map(|k| (k.to_string(), None)).collect();
    let mut set = |k: &str, v: String| {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_owned(), Some(v)));
    };
    if container {
        check(profile).await?;
        for (k, v) in container_env(&report, profile, prefer_agent)? {
            set(k, v);
        }
    } else {
        let Some((address, unit)) = imds_for(&report, profile) else {
            // Why the profile cannot be served, when that is the reason.
            check(profile).await?;
            bail!(
                "no IMDS listener serves profile `{profile}`: add an [[imds]] listener with profile = \"{profile}\" \
                 to config.toml and reload, or use `credvend env {profile} --container`"
            );
        };
        // Warm what the child will be served: the profile, or the listener's (or this user's
        // route's) scoped session of it.
        check(&unit).await?;
        set(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{address}/"),
        );
    }
    if let Some(region) = report
        .profiles
        .iter()
        .find(|p| p.name == profile)
        .and_then(|p| p.region.clone())
    {
        set("AWS_REGION", region.clone());
        set("AWS_DEFAULT_REGION", region);
    }
    Ok(vars)
}

/// The IMDS listener that serves `profile` to this user, and the unit it serves: a listener of
/// that profile (or of a scoped session of it), or, on a routed listener, this user's uid route.
fn imds_for(report: &StatusReport, profile: &str) -> Option<(String, String)> {
    let me = crate::paths::current_uid();
    report
        .listeners
        .iter()
        .filter(|l| l.kind == "imds")
        .find_map(|l| {
            let unit = if l.routes.is_empty() {
                l.profiles
                    .iter()
                    .find(|u| crate::scope::base_profile(u) == profile)
                    .cloned()
            } else {
                l.routes
                    .iter()
                    .find(|r| r.uid == Some(me) && r.profile == profile)
                    .map(|r| r.unit.clone().unwrap_or_else(|| r.profile.clone()))
            };
            unit.map(|u| (l.address.clone(), u))
        })
}

/// Reads a secret the daemon keeps in a file of its state directory (an ECS token, an ECS-agent
/// ID), checking its shape so that nothing else is ever exported.
fn read_secret_file(path: &str, what: &str) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {path}"))?;
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the {what} file {path} does not hold one; reload the daemon to write it again");
    }
    Ok(SecretString::from(text.to_owned()))
}

/// The container variables for `profile`. When the `[ecs_agent]` listener serves it (and
/// `prefer_agent`, or the ECS endpoint does not serve it), the ECS agent's form:
/// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` alone, which every client sends to
/// `http://169.254.170.2` with no token needed. Otherwise the ECS endpoint:
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with both `AWS_CONTAINER_AUTHORIZATION_TOKEN` and
/// `..._TOKEN_FILE` (the token never rotates, and older clients read only the variable:
/// docs/container-clients.md). Never both URIs: clients disagree on which wins.
fn container_env(
    report: &StatusReport,
    profile: &str,
    prefer_agent: bool,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    use secrecy::ExposeSecret;
    let status = report.profiles.iter().find(|p| p.name == profile);
    let agent = report
        .listeners
        .iter()
        .find(|l| l.kind == "ecs-agent" && l.profiles.iter().any(|p| p == profile));
    let id_file = status.and_then(|p| p.ecs_agent_id_file.as_deref());
    let token_file = status.and_then(|p| p.ecs_token_file.clone());
    if let (Some(agent), Some(id_file)) = (agent, id_file)
        && (prefer_agent || token_file.is_none())
    {
        let id = read_secret_file(id_file, "ECS agent ID")?;
        if agent.address != ECS_AGENT_ADDRESS {
            eprintln!(
                "credvend: note: clients send AWS_CONTAINER_CREDENTIALS_RELATIVE_URI requests to {ECS_AGENT_ADDRESS}; \
                 the [ecs_agent] listener is at {}, so a DNAT rule must lead there (README, \"Containers\")",
                agent.address
            );
        }
        return Ok(vec![(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            crate::daemon::ecs_agent::relative_uri(id.expose_secret()),
        )]);
    }
    let ecs = report.listeners.iter().find(|l| l.kind == "ecs").context(
        "the daemon has no ECS listener: add an [ecs] section to config.toml and reload it",
    )?;
    let token_file = token_file
        .with_context(|| format!("the ECS endpoint does not serve profile `{profile}`: list it in [ecs] profiles of config.toml and reload"))?;
    let token = read_secret_file(&token_file, "ECS token")?;
    let addr: std::net::SocketAddr = ecs.address.parse().context("bad ECS listener address")?;
    let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        if addr.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else {
        eprintln!(
            "credvend: warning: the ECS endpoint listens on {addr}; SDKs accept plain http only on loopback and 169.254.170.2/.23"
        );
        match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        }
    };
    Ok(vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!(
                "http://{host}:{}{}",
                addr.port(),
                crate::daemon::ecs::path_for(profile)
            ),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            token.expose_secret().to_owned(),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file),
    ])
}

/// Where every client sends `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` requests.
const ECS_AGENT_ADDRESS: &str = "169.254.170.2:80";

/// `--rotate-id`: asks the daemon for a new ECS-agent ID for `profile`.
async fn rotate_agent_id(ctx: &Context, profile: &str) -> anyhow::Result<()> {
    let req = Request::RotateAgentId {
        profile: profile.to_owned(),
    };
    match call(ctx, &req).await? {
        Reply::AgentIdRotated { .. } => {
            eprintln!(
                "credvend: new ECS agent ID for `{profile}`; the old one is refused from now on"
            );
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// `credvend env PROFILE`.
pub async fn env(ctx: &Context, args: EnvArgs) -> anyhow::Result<ExitCode> {
    use secrecy::ExposeSecret;
    if args.static_ {
        let c = current_credentials(ctx, &args.profile).await?;
        if c.session_token.expose_secret().is_empty() {
            bail!("refusing to print credentials without a session token");
        }
        let exp = format_aws_time(c.expiration);
        for k in CONFLICTING {
            println!("unset {k}");
        }
        println!("export AWS_ACCESS_KEY_ID={}", shell_quote(&c.access_key_id));
        println!(
            "export AWS_SECRET_ACCESS_KEY={}",
            shell_quote(c.secret_access_key.expose_secret())
        );
        println!(
            "export AWS_SESSION_TOKEN={}",
            shell_quote(c.session_token.expose_secret())
        );
        println!("export AWS_CREDENTIAL_EXPIRATION={}", shell_quote(&exp));
        if let Some(region) = &c.region {
            println!("export AWS_REGION={}", shell_quote(region));
            println!("export AWS_DEFAULT_REGION={}", shell_quote(region));
        }
        eprintln!(
            "credvend: these credentials expire at {exp} and will not refresh; prefer `credvend exec {}` for long jobs",
            args.profile
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.rotate_id {
        rotate_agent_id(ctx, &args.profile).await?;
    }
    for (k, v) in endpoint_env(ctx, &args.profile, args.container, true).await? {
        match v {
            Some(v) => println!("export {k}={}", shell_quote(&v)),
            None => println!("unset {k}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `credvend exec PROFILE -- CMD...`: replaces this process with CMD.
pub fn exec(ctx: Context, args: ExecArgs) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The child runs on this machine: the ECS endpoint on loopback when it serves the profile.
    let vars = rt.block_on(async {
        let served = scoped_unit(&ctx, &args).await?;
        endpoint_env(&ctx, &served, true, false).await
    })?;
    drop(rt);
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    crate::sys::restore_core_limit();
    // Only returns on failure.
    let err = cmd.exec();
    bail!("cannot run `{}`: {err}", args.command[0])
}
