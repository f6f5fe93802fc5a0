//! `credvend doctor [--json]`: checks what commonly breaks a setup and names each fix.
//!
//! Each check is a small function that gathers its facts (IO) and hands them to a pure verdict
//! (unit-tested here): the daemon ([`daemon_check`]), its listeners ([`listener_verdict`]), the
//! keyring, each STS endpoint of the served profiles (reachability, trusted TLS, and clock skew
//! against its `Date` header: [`skew_verdict`]), environment variables that take precedence over
//! credvend ([`environment_checks`]), long-term keys left in the shared credentials file
//! ([`credentials_file_check`]) and the configuration ([`profile_checks`]).
//!
//! Network: the daemon's own listeners (on loopback, raw HTTP/1.1 without proxies) and one
//! unsigned `GetCallerIdentity` to each STS endpoint of the served profiles (through the same
//! HTTP client, TLS roots and proxy settings credvend's STS calls use), nothing else. Output never
//! carries a secret: environment variables are reported by name, keys by profile and key id.
//!
//! Exit status: 0 unless a check fails; warnings do not fail.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::context::{Context, SdkEnv};
use crate::control::client::{self as control, ClientError};
use crate::control::proto::{Phase, Reply, Request, StatusReport};
use crate::keystore::{KeyStore, KeystoreError};
use crate::profile::edit;
use crate::profile::file::ProfileSet;
use crate::profile::resolve::{self, Chain, FromKeys, Source, StsTarget};
use crate::sts::ClientOptions;

/// SigV4 refuses requests whose time differs from the service's by more than this.
const MAX_SKEW: time::Duration = time::Duration::minutes(5);
/// A skew worth a warning: SDKs correct small skews, but not every tool does.
const WARN_SKEW: time::Duration = time::Duration::minutes(1);
/// Bound on each probe of a listener or the control socket.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on each STS probe.
const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// `credvend doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the checks as a JSON list of {check, status, detail, fix}
    #[arg(long)]
    json: bool,
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Nothing to do.
    Ok,
    /// Worth a look; does not fail the run.
    Warn,
    /// Breaks credentials for some or all programs.
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// What was checked (`daemon`, `listener imds 127.0.0.1:9254`, ...).
    pub check: String,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (`None` when nothing).
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(
        status: Status,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// `credvend doctor`.
pub async fn doctor(ctx: &Context, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    let (daemon, report) = daemon_check(ctx).await;
    checks.push(daemon);
    if let Some(report) = &report {
        for l in &report.listeners {
            checks.push(listener_check(&l.kind, &l.address, &l.profiles).await);
        }
        checks.extend(served_profile_checks(report));
    }
    checks.push(keyring_check(ctx).await);
    let set = ctx.load_profiles();
    let served = served_profiles(ctx, set.as_ref().ok(), report.as_ref());
    if let Ok(set) = &set {
        for (target, profiles) in sts_targets(ctx, set, &served) {
            checks.push(sts_check(&target, &profiles).await);
        }
    }
    checks.extend(environment_checks(
        &ctx.sdk_env,
        set.as_ref().ok(),
        &served,
        report.as_ref(),
    ));
    checks.push(credentials_file_check(
        &ctx.aws_credentials,
        std::fs::read_to_string(&ctx.aws_credentials),
    ));
    checks.extend(profile_checks(ctx, &set, &served));
    print_report(&checks, args.json)?;
    Ok(if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(checks: &[Check], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(checks)?);
        return Ok(());
    }
    for c in checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        println!("{mark}  {}: {}", c.check, c.detail);
        if let Some(fix) = &c.fix {
            println!("      fix: {fix}");
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    println!(
        "\n{} checks: {fails} failed, {warns} with a warning",
        checks.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The daemon and its listeners.

const START_DAEMON: &str = "start it: `systemctl --user start credvend` (installed by `credvend \
                            install-service`), or `credvend serve` in a terminal";

/// The control socket answers `status`, from a daemon of this user.
async fn daemon_check(ctx: &Context) -> (Check, Option<StatusReport>) {
    let call = control::call(&ctx.state_dir, &Request::Status);
    let answer = match tokio::time::timeout(LOCAL_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => {
            return (
                Check::bad(
                    Status::Fail,
                    "daemon",
                    format!(
                        "the daemon did not answer on {} within {} s",
                        ctx.control_socket().display(),
                        LOCAL_TIMEOUT.as_secs()
                    ),
                    "look at its log (`journalctl --user -u credvend`) and restart it",
                ),
                None,
            );
        }
    };
    match answer {
        Ok(Reply::Status(report)) => (
            Check::ok(
                "daemon",
                format!(
                    "running, pid {} (credvend {}), {} listeners, {} profiles",
                    report.pid,
                    report.version,
                    report.listeners.len(),
                    report.profiles.len()
                ),
            ),
            Some(report),
        ),
        Ok(other) => (
            Check::bad(
                Status::Fail,
                "daemon",
                format!("the daemon answered status with {other:?}"),
                "restart the daemon: it is another version than this CLI",
            ),
            None,
        ),
        Err(e) => {
            let fix = match &e {
                ClientError::NotRunning(_) => START_DAEMON.to_owned(),
                ClientError::Untrusted { fix, .. } => (*fix).to_owned(),
                ClientError::Failed(_) | ClientError::Io { .. } => {
                    "restart the daemon (`systemctl --user restart credvend`)".to_owned()
                }
            };
            (Check::bad(Status::Fail, "daemon", e.to_string(), fix), None)
        }
    }
}

/// Profiles the daemon reports trouble with.
fn served_profile_checks(report: &StatusReport) -> Vec<Check> {
    report
        .profiles
        .iter()
        .filter(|p| matches!(p.phase, Phase::Error | Phase::NeedsMfa))
        .map(|p| {
            let message = p
                .last_error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "no credentials".into());
            let fix = match p.phase {
                Phase::NeedsMfa => format!("run `credvend login {}`", p.name),
                _ => "see the message; `credvend status` shows the profile".to_owned(),
            };
            Check::bad(Status::Warn, format!("profile {}", p.name), message, fix)
        })
        .collect()
}

/// Where to connect to reach a listener bound to `address` from this machine.
fn connect_address(address: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = address.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Some(addr)
}

/// The harmless request a listener of `kind` gets: an IMDSv2 token request (answered 200 with a
/// token), an ECS credentials request without a token (answered 401), an ECS-agent
/// credentials request without an ID (answered 400), or the metrics (answered 200).
fn probe_request(kind: &str, port: u16, profiles: &[String]) -> String {
    let host = format!("localhost:{port}");
    if kind == "metrics" {
        format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    } else if kind == "ecs-agent" {
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            crate::daemon::ecs_agent::PATH_PREFIX
        )
    } else if kind == "imds" {
        format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: {host}\r\n\
             X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
    } else {
        let profile = profiles.first().map(String::as_str).unwrap_or("doctor");
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            crate::daemon::ecs::path_for(profile)
        )
    }
}

/// The status code of an HTTP/1.x response head.
fn status_code(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// The verdict on a listener's answer: `Ok(status)` or the failure's text. Pure.
pub(crate) fn listener_verdict(kind: &str, answer: Result<u16, String>) -> (Status, String) {
    let (want, what) = match kind {
        "imds" => (200, "IMDSv2 token request"),
        "ecs-agent" => (400, "request without an ID"),
        "metrics" => (200, "GET /metrics"),
        _ => (401, "request without a token"),
    };
    match answer {
        Ok(code) if code == want => (Status::Ok, format!("answers ({what}: {want})")),
        Ok(code) => (
            Status::Fail,
            format!("answered HTTP {code} where {want} was expected"),
        ),
        Err(e) => (Status::Fail, e),
    }
}

/// Connects to a listener and sends its harmless request.
async fn listener_check(kind: &str, address: &str, profiles: &[String]) -> Check {
    let name = format!("listener {kind} {address}");
    let Some(addr) = connect_address(address) else {
        return Check::bad(
            Status::Warn,
            name,
            "the daemon reports an address that is not IP:PORT",
            "report this as a bug",
        );
    };
    let answer = tokio::time::timeout(LOCAL_TIMEOUT, async {
        let mut sock = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let request = probe_request(kind, addr.port(), profiles);
        sock.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {addr}: {e}"))?;
        let mut head = vec![0u8; 512];
        let n = sock
            .read(&mut head)
            .await
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
        status_code(&String::from_utf8_lossy(&head[..n]))
            .ok_or_else(|| format!("{addr} did not answer with HTTP"))
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} s", LOCAL_TIMEOUT.as_secs())));
    match listener_verdict(kind, answer) {
        (Status::Ok, detail) => Check::ok(name, detail),
        (status, detail) => Check::bad(
            status,
            name,
            detail,
            "check the listener's address in config.toml and the daemon's log; firewalls must \
             let loopback through",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The keyring.

async fn keyring_check(ctx: &Context) -> Check {
    // Never prompts: an unlock dialog is what the check is about.
    let store = match KeyStore::open(ctx.keystore_options(false)).await {
        Ok(s) => s,
        Err(e) => return keyring_failure(&e),
    };
    match store.list_profiles().await {
        Ok(profiles) if profiles.is_empty() => Check::bad(
            Status::Warn,
            "keyring",
            format!("the {} holds no keys", store.backend()),
            "store a key with `credvend add PROFILE` or `credvend import --remove`",
        ),
        Ok(profiles) => Check::ok(
            "keyring",
            format!(
                "the {} is unlocked and holds keys for {}",
                store.backend(),
                profiles.join(", ")
            ),
        ),
        Err(e) => keyring_failure(&e),
    }
}

fn keyring_failure(e: &KeystoreError) -> Check {
    let fix = match e {
        KeystoreError::Locked => {
            "unlock the default keyring (log in to the desktop session, or Seahorse / your password \
             manager); the daemon never prompts"
        }
        KeystoreError::NoSessionBus(_)
        | KeystoreError::NoSecretService(_)
        | KeystoreError::NoDefaultCollection
        | KeystoreError::NoBackend { .. } => {
            "start a Secret Service provider (gnome-keyring, KeePassXC), or use the kernel keyring: \
             CREDVEND_KEYSTORE=keyutils"
        }
        KeystoreError::Keyutils(_) => "allow the keyctl system call, or use the Secret Service",
        _ => "see the message",
    };
    Check::bad(Status::Fail, "keyring", e.to_string(), fix)
}

// ---------------------------------------------------------------------------------------------
// STS endpoints: reachable, trusted, and in agreement about the time.

/// The profiles the daemon serves (from its status), or would serve (from config.toml) when it
/// does not run.
fn served_profiles(
    ctx: &Context,
    set: Option<&ProfileSet>,
    report: Option<&StatusReport>,
) -> Vec<String> {
    // Scoped sessions (`PROFILE~ID`) are checked as their profile.
    let base = |n: &str| crate::scope::base_profile(n).to_owned();
    if let Some(r) = report {
        let names: BTreeSet<String> = r.profiles.iter().map(|p| base(&p.name)).collect();
        return names.into_iter().collect();
    }
    let Ok(config) = ctx.load_daemon_config() else {
        return Vec::new();
    };
    let mut names: BTreeSet<String> = config
        .imds
        .iter()
        .flat_map(|l| l.profiles())
        .map(|n| base(&n))
        .collect();
    match config.ecs.as_ref().map(|e| e.profiles.clone()) {
        Some(Some(list)) => names.extend(list),
        // Every profile that can be minted for: those that resolve.
        Some(None) => names.extend(set.into_iter().flat_map(|s| {
            s.profiles
                .keys()
                .filter(|n| resolve::resolve(s, n, &ctx.env, &resolve::read_file).is_ok())
                .cloned()
        })),
        None => {}
    }
    names.into_iter().collect()
}

/// Every STS target a chain calls.
fn chain_targets(chain: &Chain) -> Vec<&StsTarget> {
    let mut out: Vec<&StsTarget> = Vec::new();
    match &chain.source {
        Source::Keys { then, .. } => match then {
            FromKeys::Session { session, .. } => out.push(&session.target),
            FromKeys::Federation(f) => out.push(&f.target),
            FromKeys::Roles { mfa, .. } => out.extend(mfa.iter().map(|m| &m.session.target)),
        },
        Source::WebIdentity { step, .. } => out.push(&step.target),
        // The portal is not STS (its endpoint is checked when a sign-in is used).
        Source::Process { .. } | Source::Sso { .. } => {}
    }
    out.extend(chain.roles().into_iter().map(|r| &r.target));
    out
}

/// The distinct STS targets of `served`, each with the profiles using it.
fn sts_targets(
    ctx: &Context,
    set: &ProfileSet,
    served: &[String],
) -> Vec<(StsTarget, Vec<String>)> {
    let mut out: Vec<(StsTarget, Vec<String>)> = Vec::new();
    for name in served {
        let Ok(chain) = resolve::resolve(set, name, &ctx.env, &resolve::read_file) else {
            continue;
        };
        for t in chain_targets(&chain) {
            match out.iter_mut().find(|(known, _)| known == t) {
                Some((_, profiles)) => {
                    if !profiles.contains(name) {
                        profiles.push(name.clone());
                    }
                }
                None => out.push((t.clone(), vec![name.clone()])),
            }
        }
    }
    out
}

/// Parses an HTTP `Date` header (IMF-fixdate, RFC 9110 section 5.6.7). Pure.
pub(crate) fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), format)
        .ok()
        .map(|t| t.assume_utc())
}

/// The verdict on the difference between our clock and STS's (`ours - theirs`). Pure.
pub(crate) fn skew_verdict(skew: time::Duration) -> (Status, String) {
    let secs = skew.whole_seconds();
    let text = match secs {
        0 => "the clock agrees with STS's".to_owned(),
        s if s > 0 => format!("the clock is {s} s ahead of STS's"),
        s => format!("the clock is {} s behind STS's", -s),
    };
    let status = if skew.abs() > MAX_SKEW {
        Status::Fail
    } else if skew.abs() > WARN_SKEW {
        Status::Warn
    } else {
        Status::Ok
    };
    (status, text)
}

/// Whether a transport failure is about TLS trust (so `ca_bundle` is the fix). Pure.
fn is_tls_failure(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer", "ssl"]
        .iter()
        .any(|w| d.contains(w))
}

/// One unsigned `GetCallerIdentity` to `target`: any HTTP answer proves it reachable and its TLS
/// trusted, and carries a `Date`.
async fn sts_check(target: &StsTarget, profiles: &[String]) -> Check {
    let name = match &target.ca_bundle {
        None => format!("sts {}", target.endpoint.url),
        Some(b) => format!("sts {} (ca_bundle {})", target.endpoint.url, b.display()),
    };
    let used_by = format!("(used by {})", profiles.join(", "));
    let client = match crate::sts::query::http_client(&ClientOptions {
        ca_bundle: target.ca_bundle.clone(),
        timeout: STS_TIMEOUT,
        ..ClientOptions::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            return Check::bad(
                Status::Fail,
                name,
                format!("{e} {used_by}"),
                "point ca_bundle (or AWS_CA_BUNDLE) at a readable PEM file",
            );
        }
    };
    let sent = client
        .post(target.endpoint.url.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body("Action=GetCallerIdentity&Version=2011-06-15")
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let detail = crate::sts::query::error_chain(&e);
            let fix = if is_tls_failure(&detail) {
                "the endpoint's certificate is not trusted: set ca_bundle in the profile (or \
                 AWS_CA_BUNDLE) to the PEM bundle of the CA that issued it"
            } else {
                "check the endpoint URL (endpoint_url, AWS_ENDPOINT_URL_STS, region), the network \
                 and HTTPS_PROXY / NO_PROXY"
            };
            return Check::bad(Status::Fail, name, format!("{detail} {used_by}"), fix);
        }
    };
    let now = OffsetDateTime::now_utc();
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let Some(date) = date else {
        return Check::bad(
            Status::Warn,
            name,
            format!("answers, but without a Date header: clock skew not checked {used_by}"),
            "nothing, unless requests fail with SignatureDoesNotMatch / RequestExpired",
        );
    };
    // The Date header has whole seconds: allow for that and for the request's own time.
    let skew = now - date;
    let skew = if skew.abs() <= time::Duration::seconds(2) {
        time::Duration::ZERO
    } else {
        skew
    };
    match skew_verdict(skew) {
        (Status::Ok, text) => {
            Check::ok(name, format!("answers over trusted TLS; {text} {used_by}"))
        }
        (status, text) => Check::bad(
            status,
            name,
            format!("{text} {used_by}"),
            "synchronise the clock (`timedatectl set-ntp true`, or your NTP client): SigV4 \
             refuses requests more than 5 minutes off",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The environment.

/// Whether `url` points at `listener` (an `IP:PORT` the daemon reports). Pure.
fn points_at(url: &str, listener: &str) -> bool {
    let (Ok(url), Some(addr)) = (reqwest::Url::parse(url), connect_address(listener)) else {
        return false;
    };
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_matches = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == addr.ip() || (ip.is_loopback() && addr.ip().is_loopback()),
        Err(_) => host.eq_ignore_ascii_case("localhost") && addr.ip().is_loopback(),
    };
    host_matches && port == addr.port()
}

/// Environment variables that make SDKs take credentials from somewhere other than credvend.
/// Pure: `report` is the running daemon's status (`None` when it does not run).
pub(crate) fn environment_checks(
    env: &SdkEnv,
    set: Option<&ProfileSet>,
    served: &[String],
    report: Option<&StatusReport>,
) -> Vec<Check> {
    let mut out = Vec::new();
    if !env.credential_vars.is_empty() {
        let names = env.credential_vars.join(", ");
        let verb = if env.credential_vars.len() == 1 {
            "is"
        } else {
            "are"
        };
        out.push(Check::bad(
            Status::Fail,
            "environment: credentials",
            format!(
                "{names} {verb} set: every SDK and the AWS CLI use them before anything credvend \
                 serves"
            ),
            format!(
                "unset {} (and use `credvend exec PROFILE -- CMD` or `credvend env PROFILE` \
                 instead)",
                env.credential_vars.join(" ")
            ),
        ));
    }
    if let Some(p) = &env.profile
        && !served.contains(p)
    {
        let defined = set.is_some_and(|s| s.profiles.contains_key(p));
        let (status, detail) = if defined {
            (
                Status::Warn,
                format!(
                    "AWS_PROFILE={p}: SDKs use that profile's own settings, and the daemon \
                         does not serve it"
                ),
            )
        } else {
            (
                Status::Fail,
                format!(
                    "AWS_PROFILE={p} names a profile that is not in the AWS config: SDKs \
                         fail with ProfileNotFound"
                ),
            )
        };
        out.push(Check::bad(
            status,
            "environment: AWS_PROFILE",
            detail,
            format!(
                "unset AWS_PROFILE, or serve `{p}` (config.toml) and point programs at it \
                     with `credvend env {p}`"
            ),
        ));
    }
    let listeners = |kind: &str| -> Vec<&str> {
        report
            .map(|r| {
                r.listeners
                    .iter()
                    .filter(|l| l.kind == kind)
                    .map(|l| l.address.as_str())
                    .collect()
            })
            .unwrap_or_default()
    };
    let stale = [
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            env.container_full_uri.as_deref(),
            "ecs",
            "unset AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, \
             or set them again with `eval \"$(credvend env PROFILE --container)\"`",
        ),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            env.imds_endpoint.as_deref(),
            "imds",
            "unset AWS_EC2_METADATA_SERVICE_ENDPOINT, or set it again with \
             `eval \"$(credvend env PROFILE)\"`",
        ),
    ];
    for (var, value, kind, fix) in stale {
        let Some(url) = value else { continue };
        if listeners(kind).iter().any(|l| points_at(url, l)) {
            continue;
        }
        let why = if report.is_some() {
            format!("no {kind} listener of the running daemon is there")
        } else {
            "the daemon is not running".to_owned()
        };
        out.push(Check::bad(
            Status::Fail,
            format!("environment: {var}"),
            format!("{var}={url} is stale: {why}; SDKs that find it use nothing else"),
            fix,
        ));
    }
    if env.container_relative_uri.is_some() {
        out.push(Check::bad(
            Status::Warn,
            "environment: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set: SDKs ask 169.254.170.2 and ignore \
             AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "unset it outside ECS tasks",
        ));
    }
    if out.is_empty() {
        out.push(Check::ok(
            "environment",
            "no variable takes precedence over credvend",
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Files and configuration.

/// Long-term keys in plaintext in the shared credentials file at `path`, whose text is
/// `contents`. Pure.
pub(crate) fn credentials_file_check(
    path: &std::path::Path,
    contents: std::io::Result<String>,
) -> Check {
    let name = "credentials file";
    let shown = path.display();
    let text = match contents {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(name, format!("{shown} does not exist"));
        }
        Err(e) => {
            return Check::bad(
                Status::Warn,
                name,
                format!("cannot read {shown}: {e}"),
                "check its permissions",
            );
        }
    };
    let found = match edit::find_keys(&text, &[]) {
        Ok(f) => f,
        Err(e) => {
            return Check::bad(
                Status::Warn,
                name,
                format!("{shown}: {e}"),
                "fix the file's syntax",
            );
        }
    };
    let long_term: Vec<String> = found
        .iter()
        .filter(|k| !k.has_session_token)
        .map(|k| format!("{} ({})", k.profile, k.access_key_id))
        .collect();
    if long_term.is_empty() {
        Check::ok(name, format!("no long-term keys in {shown}"))
    } else {
        Check::bad(
            Status::Fail,
            name,
            format!(
                "{shown} holds long-term keys in plaintext: {}",
                long_term.join(", ")
            ),
            "move them into the keyring: `credvend import --remove`",
        )
    }
}

/// The AWS config and config.toml: unreadable files, parser warnings, profiles that do not
/// resolve (a failure for served profiles, a warning for others).
fn profile_checks(
    ctx: &Context,
    set: &Result<ProfileSet, String>,
    served: &[String],
) -> Vec<Check> {
    let mut out = Vec::new();
    if let Err(e) = ctx.load_daemon_config() {
        out.push(Check::bad(
            Status::Fail,
            "config.toml",
            e,
            "fix the file; the daemon keeps its last good configuration until then",
        ));
    }
    let set = match set {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::bad(
                Status::Fail,
                "aws config",
                e.clone(),
                "fix the file named in the message",
            ));
            return out;
        }
    };
    let resolved: Vec<(String, Result<(), String>)> = set
        .profiles
        .keys()
        .map(|name| {
            let r = resolve::resolve(set, name, &ctx.env, &resolve::read_file)
                .map(drop)
                .map_err(|e| e.message);
            (name.clone(), r)
        })
        .collect();
    out.extend(config_verdicts(&set.warnings, &resolved, served));
    out
}

/// Parser warnings and resolution failures as checks. Pure.
pub(crate) fn config_verdicts(
    warnings: &[String],
    resolved: &[(String, Result<(), String>)],
    served: &[String],
) -> Vec<Check> {
    let mut out: Vec<Check> = warnings
        .iter()
        .map(|w| {
            Check::bad(
                Status::Warn,
                "aws config",
                w.clone(),
                "fix or remove the section: the SDKs skip it too",
            )
        })
        .collect();
    for (name, result) in resolved {
        if let Err(message) = result {
            let status = if served.contains(name) {
                Status::Fail
            } else {
                Status::Warn
            };
            out.push(Check::bad(
                status,
                format!("profile {name}"),
                message.clone(),
                "fix the profile as the message says",
            ));
        }
    }
    if out.is_empty() {
        out.push(Check::ok(
            "aws config",
            format!("{} profiles, all resolve", resolved.len()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::ListenerStatus;
    use time::macros::datetime;

    fn env(pairs: &[(&str, &str)]) -> SdkEnv {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SdkEnv::from_lookup(|k| map.get(k).cloned())
    }

    fn report(listeners: &[(&str, &str)]) -> StatusReport {
        StatusReport {
            version: "0".into(),
            pid: 1,
            clock_skew_seconds: None,
            reload_error: None,
            listeners: listeners
                .iter()
                .map(|(kind, address)| ListenerStatus {
                    kind: kind.to_string(),
                    address: address.to_string(),
                    profiles: vec!["dev".into()],
                    routes: Vec::new(),
                    unrouted_refused: None,
                })
                .collect(),
            profiles: Vec::new(),
        }
    }

    #[test]
    fn http_dates_and_skew() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(datetime!(1994-11-06 08:49:37 UTC))
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(skew_verdict(time::Duration::ZERO).0, Status::Ok);
        assert_eq!(skew_verdict(time::Duration::seconds(59)).0, Status::Ok);
        let (s, text) = skew_verdict(time::Duration::seconds(-90));
        assert_eq!(
            (s, text.as_str()),
            (Status::Warn, "the clock is 90 s behind STS's")
        );
        let (s, text) = skew_verdict(time::Duration::seconds(301));
        assert_eq!(
            (s, text.as_str()),
            (Status::Fail, "the clock is 301 s ahead of STS's")
        );
    }

    #[test]
    fn listener_answers() {
        assert_eq!(status_code("HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(status_code("SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(listener_verdict("imds", Ok(200)).0, Status::Ok);
        assert_eq!(listener_verdict("ecs", Ok(401)).0, Status::Ok);
        let (s, d) = listener_verdict("ecs", Ok(200));
        assert_eq!(s, Status::Fail);
        assert!(d.contains("401 was expected"), "{d}");
        assert_eq!(
            listener_verdict("imds", Err("cannot connect".into())),
            (Status::Fail, "cannot connect".into())
        );
        let req = probe_request("ecs", 9255, &["a b".into()]);
        assert!(req.starts_with("GET /credentials/a%20b HTTP/1.1\r\nHost: localhost:9255\r\n"));
        assert!(!req.to_ascii_lowercase().contains("authorization"));
        assert!(probe_request("imds", 1, &[]).starts_with("PUT /latest/api/token "));
        assert!(probe_request("ecs-agent", 80, &["a".into()]).starts_with("GET /v2/credentials/ "));
        assert_eq!(listener_verdict("ecs-agent", Ok(400)).0, Status::Ok);
        assert_eq!(listener_verdict("ecs-agent", Ok(200)).0, Status::Fail);
        assert!(probe_request("metrics", 9256, &[]).starts_with("GET /metrics "));
        assert_eq!(listener_verdict("metrics", Ok(200)).0, Status::Ok);
        assert_eq!(
            connect_address("0.0.0.0:9254"),
            Some("127.0.0.1:9254".parse().unwrap())
        );
    }

    #[test]
    fn credential_variables_fail_and_are_named_not_shown() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ]);
        let checks = environment_checks(&e, None, &[], None);
        assert_eq!(checks.len(), 1);
        let c = &checks[0];
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY")
        );
        assert!(
            c.fix
                .as_ref()
                .unwrap()
                .contains("unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY")
        );
        let text = serde_json::to_string(&checks).unwrap();
        assert!(
            !text.contains("very-secret") && !text.contains("AKIAEXAMPLE"),
            "{text}"
        );
        // Empty values are unset, as in the SDKs.
        let checks = environment_checks(&env(&[("AWS_ACCESS_KEY_ID", "")]), None, &[], None);
        assert_eq!(checks[0].status, Status::Ok);
    }

    #[test]
    fn aws_profile_and_stale_endpoints() {
        let set = crate::profile::file::merge(
            Some(
                crate::profile::file::parse(
                    "[profile other]\nregion = eu-west-1\n",
                    crate::profile::file::FileKind::Config,
                )
                .unwrap(),
            ),
            None,
        );
        let served = vec!["dev".to_owned()];
        let check = |vars: &[(&str, &str)], r: Option<&StatusReport>| {
            environment_checks(&env(vars), Some(&set), &served, r)
        };
        assert_eq!(check(&[("AWS_PROFILE", "dev")], None)[0].status, Status::Ok);
        assert_eq!(
            check(&[("AWS_PROFILE", "other")], None)[0].status,
            Status::Warn
        );
        assert_eq!(
            check(&[("AWS_PROFILE", "nowhere")], None)[0].status,
            Status::Fail
        );

        let live = report(&[("imds", "127.0.0.1:9254"), ("ecs", "0.0.0.0:9255")]);
        let full = "http://127.0.0.1:9255/credentials/dev";
        let ok = check(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", full)], Some(&live));
        assert_eq!(ok[0].status, Status::Ok, "{ok:?}");
        let ok = check(
            &[(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://localhost:9254/",
            )],
            Some(&live),
        );
        assert_eq!(ok[0].status, Status::Ok, "{ok:?}");
        let stale = check(
            &[(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://127.0.0.1:9999/",
            )],
            Some(&live),
        );
        assert_eq!(stale[0].status, Status::Fail);
        assert!(stale[0].detail.contains("no imds listener"), "{stale:?}");
        let stopped = check(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", full)], None);
        assert_eq!(stopped[0].status, Status::Fail);
        assert!(stopped[0].detail.contains("not running"), "{stopped:?}");
        assert!(stopped[0].fix.as_ref().unwrap().contains("--container"));
        assert!(!points_at("not a url", "127.0.0.1:1"));
    }

    #[test]
    fn plaintext_keys_in_the_credentials_file() {
        let path = std::path::Path::new("/home/u/.aws/credentials");
        let text = "[a]\naws_access_key_id = AKIAA\naws_secret_access_key = SECRETA\n\
                    [t]\naws_access_key_id = ASIAT\naws_secret_access_key = S\naws_session_token = T\n";
        let c = credentials_file_check(path, Ok(text.into()));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("a (AKIAA)") && !c.detail.contains("ASIAT"),
            "{c:?}"
        );
        assert!(!c.detail.contains("SECRETA"));
        assert_eq!(
            c.fix.as_deref(),
            Some("move them into the keyring: `credvend import --remove`")
        );
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            credentials_file_check(path, Err(missing)).status,
            Status::Ok
        );
        assert_eq!(
            credentials_file_check(path, Ok("[a]\nregion = x\n".into())).status,
            Status::Ok
        );
    }

    #[test]
    fn unresolvable_profiles_fail_only_when_served() {
        let resolved = vec![
            ("good".to_owned(), Ok(())),
            ("broken".to_owned(), Err("profile `broken`: bad".to_owned())),
            ("unused".to_owned(), Err("profile `unused`: bad".to_owned())),
        ];
        let checks = config_verdicts(&["skipped [x y]".into()], &resolved, &["broken".into()]);
        let by = |name: &str| checks.iter().find(|c| c.check == name).unwrap().status;
        assert_eq!(by("aws config"), Status::Warn);
        assert_eq!(by("profile broken"), Status::Fail);
        assert_eq!(by("profile unused"), Status::Warn);
        assert_eq!(
            config_verdicts(&[], &resolved[..1], &[])[0].status,
            Status::Ok
        );
    }

    #[test]
    fn tls_failures_are_recognised() {
        assert!(is_tls_failure(
            "error sending request: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_tls_failure(
            "error sending request: Connection refused (os error 111)"
        ));
    }
}
