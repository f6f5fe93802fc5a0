//! Commands that talk to the running daemon over the control socket: `status`, `login`,
//! `refresh`, `lock`, `env`, `exec`, `credential-process` (the last two fall back to minting
//! directly where that makes sense).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::{Context, shell_quote};
use crate::creds::format_aws_time;
use crate::daemon::control::{self, ClientError, Request, StatusReport};
use crate::daemon::server::load_profiles;
use crate::keystore::KeyStore;
use crate::mint::{Keys, Minter};
use crate::profile::resolve::{self, Chain, Env};
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
    /// Profile that needs the code
    profile: String,
    /// The 6-digit code (prompted for when absent)
    #[arg(long, value_name = "N")]
    code: Option<String>,
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
    /// Point at the ECS container endpoint and token file instead of IMDS
    #[arg(long, conflicts_with = "static_")]
    container: bool,
    /// Print the current temporary credentials themselves (they will not refresh)
    #[arg(long = "static")]
    static_: bool,
}

/// `credvend exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Profile name
    profile: String,
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

async fn daemon_status(ctx: &Context) -> Result<StatusReport, ClientError> {
    let value = control::call(&ctx.control_socket(), &Request::Status).await?;
    serde_json::from_value(value).map_err(|e| ClientError::Io {
        path: ctx.control_socket().display().to_string(),
        detail: format!("unreadable status: {e}"),
    })
}

fn ago_or_in(t: &str, now: OffsetDateTime) -> String {
    let Ok(t) = crate::creds::parse_aws_time(t) else {
        return t.to_owned();
    };
    let d = t - now;
    let (sign, d) = if d.is_negative() {
        ("ago", -d)
    } else {
        ("in", d)
    };
    let mins = d.whole_minutes();
    let text = if mins >= 120 {
        format!("{}h{:02}m", mins / 60, mins % 60)
    } else if mins >= 1 {
        format!("{mins}m")
    } else {
        format!("{}s", d.whole_seconds())
    };
    if sign == "in" {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// `credvend status`.
pub async fn status(ctx: &Context, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report = daemon_status(ctx).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = OffsetDateTime::now_utc();
    println!("credvend {} (pid {})", report.version, report.pid);
    println!("listeners:");
    for l in &report.listeners {
        println!(
            "  {:4}  {:21}  {}",
            l.kind,
            l.address,
            l.profiles.join(", ")
        );
    }
    println!("profiles:");
    for p in &report.profiles {
        let phase = p.status["phase"].as_str().unwrap_or("?");
        let mut line = format!("  {}  {phase}", p.name);
        if let Some(exp) = &p.expiration {
            line.push_str(&format!("  expires {exp} ({})", ago_or_in(exp, now)));
        }
        if let Some(next) = p.status["next_refresh"].as_str() {
            line.push_str(&format!("  next refresh {}", ago_or_in(next, now)));
        }
        line.push_str(&format!("  requests {}", p.requests));
        println!("{line}");
        println!("      source: {}", p.source);
        if let Some(err) = p.status["last_error"]["message"].as_str() {
            println!("      last error: {err}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_code(args: &LoginArgs, serial: Option<&str>) -> anyhow::Result<SecretString> {
    let code = match &args.code {
        Some(c) => c.trim().to_owned(),
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("no terminal to prompt on: pass --code N");
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

fn local_chain(profile: &str) -> anyhow::Result<Chain> {
    let set = load_profiles(
        &crate::paths::aws_config_file(),
        &crate::paths::aws_credentials_file(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(resolve::resolve(
        &set,
        profile,
        &Env::from_process(),
        &resolve::read_file,
    )?)
}

async fn local_minter(ctx: &Context, interactive: bool) -> anyhow::Result<Minter> {
    let opts = ctx.keystore_options(interactive);
    let store = KeyStore::open(opts.clone()).await?;
    Ok(Minter::new(
        Keys::ready(store, opts),
        ClientOptions::default(),
    ))
}

/// `credvend login PROFILE`.
pub async fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<ExitCode> {
    // The daemon may know the profile even when this process cannot resolve it; without a
    // daemon, why it cannot be resolved is the error.
    let chain = local_chain(&args.profile);
    if let Ok(c) = &chain
        && c.mfa_serial().is_none()
    {
        bail!(
            "profile `{}` has no mfa_serial in its chain, so it needs no MFA code",
            args.profile
        );
    }
    let code = read_code(&args, chain.as_ref().ok().and_then(|c| c.mfa_serial()))?;
    let req = Request::Login {
        profile: args.profile.clone(),
        code,
    };
    let expiry = match control::call(&ctx.control_socket(), &req).await {
        Ok(v) => v["session_expiration"].as_str().unwrap_or("?").to_owned(),
        Err(ClientError::NotRunning(_)) => {
            // No daemon: mint and cache the MFA session directly; the daemon picks it up later.
            let chain = chain?;
            let Request::Login { code, .. } = req else {
                unreachable!()
            };
            let minter = local_minter(ctx, true).await?;
            let expiry = minter.login(&chain, code).await?;
            format_aws_time(expiry)
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "credvend: MFA session for `{}` valid until {expiry}",
        args.profile
    );
    Ok(ExitCode::SUCCESS)
}

/// `credvend refresh PROFILE`.
pub async fn refresh(ctx: &Context, args: ProfileArg) -> anyhow::Result<ExitCode> {
    control::call(
        &ctx.control_socket(),
        &Request::Refresh {
            profile: args.profile.clone(),
        },
    )
    .await?;
    eprintln!(
        "credvend: refreshing `{}` (see `credvend status`)",
        args.profile
    );
    Ok(ExitCode::SUCCESS)
}

/// `credvend lock [PROFILE]`.
pub async fn lock(ctx: &Context, args: LockArgs) -> anyhow::Result<ExitCode> {
    let v = control::call(
        &ctx.control_socket(),
        &Request::Lock {
            profile: args.profile,
        },
    )
    .await?;
    let names: Vec<String> = serde_json::from_value(v["locked"].clone()).unwrap_or_default();
    eprintln!(
        "credvend: forgot the temporary credentials of {}; `credvend refresh PROFILE` mints new ones",
        if names.is_empty() {
            "no profile".into()
        } else {
            names.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The current temporary credentials as Version 1 JSON: from the daemon when it serves the
/// profile, else minted here.
async fn current_credentials(ctx: &Context, profile: &str) -> anyhow::Result<serde_json::Value> {
    match control::call(
        &ctx.control_socket(),
        &Request::Credentials {
            profile: profile.to_owned(),
        },
    )
    .await
    {
        Ok(v) => return Ok(v),
        Err(ClientError::NotRunning(_)) => {}
        Err(ClientError::Daemon(msg)) if msg.contains("does not serve profile") => {}
        Err(e) => return Err(e.into()),
    }
    let chain = local_chain(profile)?;
    let minter = Arc::new(local_minter(ctx, false).await?);
    let minted = minter.mint(&chain).await?;
    Ok(crate::creds::credential_process_json(&minted.creds))
}

/// `credvend credential-process PROFILE`.
pub async fn credential_process(ctx: &Context, args: ProfileArg) -> anyhow::Result<ExitCode> {
    let creds = current_credentials(ctx, &args.profile).await?;
    println!("{}", serde_json::to_string(&creds)?);
    Ok(ExitCode::SUCCESS)
}

/// Environment changes (`Some` = set, `None` = unset) pointing an SDK at the daemon.
async fn endpoint_env(
    ctx: &Context,
    profile: &str,
    container: bool,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let report = daemon_status(ctx).await?;
    let mut vars: Vec<(String, Option<String>)> =
        CONFLICTING.iter().map(|k| (k.to_string(), None)).collect();
    let mut set = |k: &str, v: String| {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_owned(), Some(v)));
    };
    if container {
        let ecs = report.listeners.iter().find(|l| l.kind == "ecs").context(
            "the daemon has no ECS listener: add an [ecs] section to config.toml and reload it",
        )?;
        let token = report
            .profiles
            .iter()
            .find(|p| p.name == profile)
            .and_then(|p| p.ecs_token_file.clone())
            .with_context(|| format!("the ECS endpoint does not serve profile `{profile}`: list it in [ecs] profiles of config.toml and reload"))?;
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
        set(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!(
                "http://{host}:{}{}",
                addr.port(),
                crate::daemon::ecs::path_for(profile)
            ),
        );
        set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token);
    } else {
        let imds = report
            .listeners
            .iter()
            .find(|l| l.kind == "imds" && l.profiles.iter().any(|p| p == profile))
            .with_context(|| {
                format!(
                    "no IMDS listener serves profile `{profile}`: add an [[imds]] listener with profile = \"{profile}\" \
                     to config.toml and reload, or use `credvend env {profile} --container`"
                )
            })?;
        set(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{}/", imds.address),
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

/// `credvend env PROFILE`.
pub async fn env(ctx: &Context, args: EnvArgs) -> anyhow::Result<ExitCode> {
    if args.static_ {
        let c = current_credentials(ctx, &args.profile).await?;
        let get = |k: &str| c[k].as_str().map(str::to_owned);
        let (Some(id), Some(secret), Some(token), Some(exp)) = (
            get("AccessKeyId"),
            get("SecretAccessKey"),
            get("SessionToken"),
            get("Expiration"),
        ) else {
            bail!(
                "the daemon returned incomplete credentials for `{}`",
                args.profile
            );
        };
        if !id.starts_with("ASIA") && token.is_empty() {
            bail!("refusing to print credentials without a session token");
        }
        for k in CONFLICTING {
            println!("unset {k}");
        }
        println!("export AWS_ACCESS_KEY_ID={}", shell_quote(&id));
        println!("export AWS_SECRET_ACCESS_KEY={}", shell_quote(&secret));
        println!("export AWS_SESSION_TOKEN={}", shell_quote(&token));
        println!("export AWS_CREDENTIAL_EXPIRATION={}", shell_quote(&exp));
        eprintln!(
            "credvend: these credentials expire at {exp} and will not refresh; prefer `credvend exec {}` for long jobs",
            args.profile
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (k, v) in endpoint_env(ctx, &args.profile, args.container).await? {
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
    let vars = rt.block_on(endpoint_env(&ctx, &args.profile, true))?;
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
