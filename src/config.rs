//! The daemon's own settings (`config.toml`): listeners and refresh margins. Pure: parses and
//! validates text; [`crate::paths`] decides where the file lives.
//!
//! A missing file means [`DaemonConfig::default`]: one IMDS listener on `127.0.0.1:9254` serving
//! the `default` profile and the ECS endpoint on `127.0.0.1:9255` serving every profile. The
//! ECS-agent-compatible listener (`[ecs_agent]`, `169.254.170.2:80` by default) runs only when the
//! file has that section: its address needs privileges or socket activation; so does the metrics
//! listener (`[metrics]`, `127.0.0.1:9256` by default).
//!
//! **Routes** (`routes = [{ from = "198.18.0.2/32", profile = "ci" }, { uid = "builder", profile
//! = "build" }]` on `[[imds]]` and `[ecs_agent]`) give each peer of one listener its own profile.
//! This module only parses and validates them (a CIDR without host bits, or a user; no two
//! routes for the same network or user; `routes` instead of `profile` / `profiles`); which route
//! a peer takes is decided by `daemon/routes.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::scope::Scope;

/// Default IMDS listen address.
pub const DEFAULT_IMDS_LISTEN: &str = "127.0.0.1:9254";
/// Default ECS listen address.
pub const DEFAULT_ECS_LISTEN: &str = "127.0.0.1:9255";
/// Default address of the ECS-agent-compatible listener: where every SDK sends
/// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` requests.
pub const DEFAULT_ECS_AGENT_LISTEN: &str = "169.254.170.2:80";
/// Default address of the metrics listener (`[metrics]`, off unless the section exists).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9256";

/// The whole daemon configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// IMDS listeners; each serves one profile.
    pub imds: Vec<ImdsListener>,
    /// The ECS container-credentials listener, serving many profiles.
    pub ecs: Option<EcsListener>,
    /// The ECS-agent-compatible listener (`[ecs_agent]`): `GET /v2/credentials/ID`, the ID being
    /// a per-profile capability; the same settings as `[ecs]`.
    pub ecs_agent: Option<EcsListener>,
    /// When to rotate credentials.
    pub refresh: RefreshSettings,
    /// `[refresh] prewarm`: profiles minted at start-up and kept fresh whether or not anyone asks
    /// (besides those of the `[[imds]]` listeners); the others are minted on first use.
    pub prewarm: Vec<String>,
    /// Connection and request limits shared by every listener.
    pub limits: Limits,
    /// The metrics listener (`[metrics]`): `GET /metrics` and `GET /healthz`.
    pub metrics: Option<MetricsListener>,
}

/// The `[metrics]` listener. The same access rules as the credential listeners: loopback unless
/// `allow` names the peers, and only the daemon's user unless `allow_uids` names others (a
/// Prometheus running as another user needs its uid there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Peers allowed besides loopback; required for a non-loopback `listen`.
    pub allow: Vec<IpNet>,
    /// Local users besides the daemon's own who may read it.
    pub allow_uids: Vec<u32>,
    /// Extra names accepted in the `Host` header.
    pub hosts: Vec<String>,
}

/// One `[[imds]]` listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsListener {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The profile whose credentials this "instance" has, for every peer the listener admits;
    /// `None` exactly when `routes` is not empty (then the routes name the profiles).
    pub profile: Option<String>,
    /// Which peer gets which profile (empty: `profile` for everyone).
    pub routes: Vec<Route>,
    /// Serve tokenless (IMDSv1) requests too.
    pub imds_v1: bool,
    /// Peers allowed besides loopback; required for a non-loopback `listen`.
    pub allow: Vec<IpNet>,
    /// Local users besides the daemon's own who may get credentials here.
    pub allow_uids: Vec<u32>,
    /// Extra names accepted in the `Host` header (e.g. `host.docker.internal`).
    pub hosts: Vec<String>,
    /// IP TTL of responses (EC2 uses 1 so that only the instance itself gets tokens).
    pub hop_limit: u8,
    /// Role name shown in the listing; defaults to the profile name (routed roles are always
    /// named after their profiles).
    pub role_name: Option<String>,
    /// The session policy `profile`'s credentials are minted with here (`policy` /
    /// `policy_arns`; `scope.rs`); routes carry their own.
    pub scope: Option<Scope>,
}

impl ImdsListener {
    /// Every unit the listener serves: its `profile` (or that profile's scoped session), or
    /// each route's (once, in order).
    pub fn profiles(&self) -> Vec<String> {
        match &self.profile {
            Some(p) => vec![unit_of(p, self.scope.as_ref())],
            None => route_profiles(&self.routes),
        }
    }

    /// Every scoped session the listener serves: (unit, profile, scope).
    pub fn scoped(&self) -> Vec<(String, String, Scope)> {
        let own = self.profile.iter().zip(&self.scope);
        let routed = self
            .routes
            .iter()
            .filter_map(|r| Some((&r.profile, r.scope.as_ref()?)));
        own.chain(routed)
            .map(|(p, s)| (s.unit(p), p.clone(), s.clone()))
            .collect()
    }
}

/// The unit serving `profile` with `scope` (the profile itself without one).
pub(crate) fn unit_of(profile: &str, scope: Option<&Scope>) -> String {
    match scope {
        Some(s) => s.unit(profile),
        None => profile.to_owned(),
    }
}

/// The units `routes` name (a profile, or its scoped session), each once, in order.
pub fn route_profiles(routes: &[Route]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in routes {
        let unit = r.unit();
        if !out.contains(&unit) {
            out.push(unit);
        }
    }
    out
}

/// Which peers a route is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteFrom {
    /// Clients in another network namespace (a container, a VM) whose address is in this
    /// network. Never written with host bits (`198.18.0.5/24` is refused at load).
    Net(IpNet),
    /// Processes on this machine running as this uid (the uid owning the client's socket).
    Uid(u32),
}

impl std::fmt::Display for RouteFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteFrom::Net(net) => write!(f, "{net}"),
            RouteFrom::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// One entry of a listener's `routes`: the peers it is for, the profile they get, and the
/// session policy it is minted with for them (`policy` / `policy_arns`, on `[[imds]]` routes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Who.
    pub from: RouteFrom,
    /// The profile they get.
    pub profile: String,
    /// Its scope for them.
    pub scope: Option<Scope>,
}

impl Route {
    /// The unit the route's peers get: the profile, or its scoped session.
    pub fn unit(&self) -> String {
        unit_of(&self.profile, self.scope.as_ref())
    }
}

/// The `[ecs]` listener, and the `[ecs_agent]` one (same settings, another default address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Profiles served (`[ecs]`: under `/credentials/PROFILE`; `[ecs_agent]`: each under its
    /// ID); `None` means every profile of the AWS config that credvend can mint for.
    pub profiles: Option<Vec<String>>,
    /// Peers allowed besides loopback.
    pub allow: Vec<IpNet>,
    /// Local users besides the daemon's own who may get credentials here.
    pub allow_uids: Vec<u32>,
    /// Extra names accepted in the `Host` header.
    pub hosts: Vec<String>,
    /// Which peer may fetch which profile's ID (`[ecs_agent]` only; empty: any admitted peer any
    /// ID). When not empty, `profiles` is `None`: the routes name the profiles served.
    pub routes: Vec<Route>,
}

/// `[refresh]`: rotation margins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshSettings {
    /// Served credentials keep at least this long whenever the session length allows.
    pub margin: Duration,
    /// Never rotate one profile more often than this.
    pub min_interval: Duration,
    /// A profile minted on demand that nobody asked for in this long goes idle: its credentials
    /// are dropped and it is not rotated until the next request.
    pub idle_after: Duration,
}

/// Shortest `[refresh] idle_after_seconds` accepted.
pub const MIN_IDLE_AFTER: Duration = Duration::from_secs(60);

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            margin: Duration::from_secs(35 * 60),
            min_interval: Duration::from_secs(5 * 60),
            idle_after: Duration::from_secs(4 * 3600),
        }
    }
}

/// `[limits]`: bounded resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per listener, shared out among the peers (`daemon/conns.rs`); beyond it
    /// the oldest idle connections of other peers are closed.
    pub max_connections: usize,
    /// Largest request head (request line + headers), bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Time a client has to send a request head, and the longest a keep-alive connection stays
    /// idle between requests.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_header_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(2),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            imds: vec![ImdsListener {
                listen: DEFAULT_IMDS_LISTEN.parse().expect("constant"),
                profile: Some("default".into()),
                routes: Vec::new(),
                imds_v1: false,
                allow: Vec::new(),
                allow_uids: Vec::new(),
                hosts: Vec::new(),
                hop_limit: 1,
                role_name: None,
                scope: None,
            }],
            ecs: Some(EcsListener {
                listen: DEFAULT_ECS_LISTEN.parse().expect("constant"),
                profiles: None,
                allow: Vec::new(),
                allow_uids: Vec::new(),
                hosts: Vec::new(),
                routes: Vec::new(),
            }),
            ecs_agent: None,
            refresh: RefreshSettings::default(),
            prewarm: Vec::new(),
            limits: Limits::default(),
            metrics: None,
        }
    }
}

/// A config file that cannot be used, with what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    imds: Option<Vec<RawImds>>,
    #[serde(default)]
    ecs: Option<RawEcs>,
    #[serde(default)]
    ecs_agent: Option<RawEcs>,
    #[serde(default)]
    refresh: Option<RawRefresh>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_uids: Vec<UserSpec>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImds {
    listen: Option<String>,
    profile: Option<String>,
    #[serde(default)]
    imds_v1: bool,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_uids: Vec<UserSpec>,
    #[serde(default)]
    hosts: Vec<String>,
    hop_limit: Option<u8>,
    role_name: Option<String>,
    routes: Option<Vec<RawRoute>>,
    policy: Option<String>,
    policy_arns: Option<Vec<String>>,
}

/// One entry of `routes`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    from: Option<String>,
    uid: Option<UserSpec>,
    profile: String,
    policy: Option<String>,
    policy_arns: Option<Vec<String>>,
}

/// The scope of `policy` / `policy_arns` as written (`None` when neither is).
fn parse_scope(
    policy: Option<String>,
    policy_arns: Option<Vec<String>>,
    what: &str,
) -> Result<Option<Scope>, ConfigError> {
    if policy.is_none() && policy_arns.is_none() {
        return Ok(None);
    }
    Scope::new(policy, policy_arns.unwrap_or_default(), what)
        .map(Some)
        .map_err(ConfigError)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEcs {
    listen: Option<String>,
    profiles: Option<Vec<String>>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_uids: Vec<UserSpec>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    routes: Option<Vec<RawRoute>>,
}

fn yes() -> bool {
    true
}

/// A TOML error as one readable line: `FILE:LINE:COLUMN: what`, with the offending line quoted
/// (the parser's own text spans several lines with a snippet and a caret).
fn toml_error(source: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return ConfigError(format!("{source}: {message}"));
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let shown = text.lines().nth(line - 1).unwrap_or("").trim();
    ConfigError(format!(
        "{source}:{line}:{column}: {message} (in `{}`)",
        shown.chars().take(80).collect::<String>()
    ))
}

/// A user in `allow_uids`: a number or a name.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserSpec {
    Uid(u32),
    Name(String),
}

/// Finds the uid of a user name (`getpwnam`); the parser takes it as a parameter so that it
/// stays pure and testable.
pub type UserLookup<'a> = &'a dyn Fn(&str) -> Option<u32>;

fn parse_uids(
    values: Vec<UserSpec>,
    lookup: UserLookup<'_>,
    what: &str,
) -> Result<Vec<u32>, ConfigError> {
    values
        .into_iter()
        .map(|v| user_uid(v, lookup, &format!("{what}: allow_uids entry")))
        .collect()
}

/// The uid of a user given by number or name; `what` names the entry in the message.
fn user_uid(v: UserSpec, lookup: UserLookup<'_>, what: &str) -> Result<u32, ConfigError> {
    match v {
        UserSpec::Uid(uid) => Ok(uid),
        UserSpec::Name(name) => lookup(&name).ok_or_else(|| {
            ConfigError(format!(
                "{what} {name:?} is not a user on this machine (use a user name or a numeric uid)"
            ))
        }),
    }
}

/// A route's `from`: a CIDR, or one address (a /32 or /128). A CIDR with host bits set is refused
/// rather than widened: `198.18.0.5/24` is either a typo for `/32` or for `198.18.0.0/24`, and
/// guessing wrong would hand a whole subnet a role.
fn parse_route_net(text: &str, what: &str) -> Result<IpNet, ConfigError> {
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            ConfigError(format!(
                "{what}: from = {text:?} is not a CIDR (e.g. \"198.18.0.0/24\", \"fd00::/64\") or IP address"
            ))
        })?;
    if net.trunc() != net {
        return Err(ConfigError(format!(
            "{what}: from = {text:?} has host bits set: write \"{}/{}\" for that one address or \"{}\" for its network",
            net.addr(),
            net.max_prefix_len(),
            net.trunc()
        )));
    }
    Ok(net)
}

/// Validates `routes` (`what` names the listener): each entry has exactly one of `from` / `uid`,
/// a non-empty profile, and no two entries are for the same network or user (the most specific
/// route wins, so two equally specific ones would be ambiguous).
fn parse_routes(
    raw: Vec<RawRoute>,
    users: UserLookup<'_>,
    what: &str,
) -> Result<Vec<Route>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError(format!(
            "{what}: routes is empty: add routes, or remove it and set `profile`"
        )));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("{what}: routes #{}", i + 1);
        let from = match (r.from, r.uid) {
            (Some(text), None) => RouteFrom::Net(parse_route_net(&text, &at)?),
            (None, Some(user)) => RouteFrom::Uid(user_uid(user, users, &format!("{at}: uid"))?),
            _ => {
                return Err(ConfigError(format!(
                    "{at}: give exactly one of `from` (a CIDR, for containers and VMs) and `uid` (a local user)"
                )));
            }
        };
        if r.profile.trim().is_empty() {
            return Err(ConfigError(format!("{at}: profile must not be empty")));
        }
        if let Some(j) = routes.iter().position(|o| o.from == from) {
            return Err(ConfigError(format!(
                "{at}: routes #{} is for {from} too; the most specific route wins, so two for the same {} are ambiguous: keep one",
                j + 1,
                if matches!(from, RouteFrom::Uid(_)) {
                    "user"
                } else {
                    "network"
                }
            )));
        }
        let scope = parse_scope(r.policy, r.policy_arns, &at)?;
        routes.push(Route {
            from,
            profile: r.profile,
            scope,
        });
    }
    Ok(routes)
}

/// The networks of `routes`' `from` entries: peers a listener admits besides its `allow` list.
pub fn route_nets(routes: &[Route]) -> impl Iterator<Item = IpNet> + '_ {
    routes.iter().filter_map(|r| match r.from {
        RouteFrom::Net(net) => Some(net),
        RouteFrom::Uid(_) => None,
    })
}

/// The uids of `routes`' `uid` entries: local users a listener admits besides `allow_uids`.
pub fn route_uids(routes: &[Route]) -> impl Iterator<Item = u32> + '_ {
    routes.iter().filter_map(|r| match r.from {
        RouteFrom::Uid(uid) => Some(uid),
        RouteFrom::Net(_) => None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    margin_seconds: Option<u64>,
    min_interval_seconds: Option<u64>,
    idle_after_seconds: Option<u64>,
    prewarm: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    header_timeout_ms: Option<u64>,
}

fn parse_listen(
    value: Option<String>,
    default: &str,
    what: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().map_err(|_| {
        ConfigError(format!(
            "{what}: listen = {text:?} is not an IP:PORT address (e.g. \"127.0.0.1:9254\"; port 0 picks a free port)"
        ))
    })
}

fn parse_allow(values: Vec<String>, what: &str) -> Result<Vec<IpNet>, ConfigError> {
    values
        .into_iter()
        .map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "{what}: allow entry {v:?} is not a CIDR (e.g. \"172.17.0.0/16\") or IP address"
                    ))
                })
        })
        .collect()
}

/// The link-local addresses AWS clients look for by default (IMDS, ECS, EKS Pod Identity). Bound
/// on `lo` they are local-only without an `allow` list: their clients connect from the address
/// itself.
pub const METADATA_ADDRESSES: &[&str] = &[
    "169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::254",
    "fd00:ec2::23",
];

/// A non-loopback listener must name the remote peers it admits: an `allow` list, or routes
/// `from` networks (each an explicit grant).
fn check_exposure(
    listen: SocketAddr,
    allow: &[IpNet],
    routes: &[Route],
    what: &str,
) -> Result<(), ConfigError> {
    let metadata = METADATA_ADDRESSES
        .iter()
        .any(|a| a.parse::<IpAddr>().ok() == Some(listen.ip()));
    if !listen.ip().is_loopback()
        && !metadata
        && allow.is_empty()
        && route_nets(routes).next().is_none()
    {
        return Err(ConfigError(format!(
            "{what}: listen = \"{listen}\" is not a loopback address, so it needs an `allow` list of the \
             peers that may connect (e.g. allow = [\"172.17.0.0/16\"] for Docker's default bridge) or routes \
             `from` their networks, or use a 127.0.0.1 address"
        )));
    }
    Ok(())
}

/// One `[[imds]]` section (`what` names it in messages).
fn parse_imds(r: RawImds, what: &str, users: UserLookup<'_>) -> Result<ImdsListener, ConfigError> {
    let listen = parse_listen(r.listen, DEFAULT_IMDS_LISTEN, what)?;
    let allow = parse_allow(r.allow, what)?;
    let (profile, routes) = match (r.profile, r.routes) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{what}: give `profile` or `routes`, not both: with routes, a peer no route names is refused \
                 (for a default, add a route from \"0.0.0.0/0\"; the most specific route wins)"
            )));
        }
        (_, Some(_)) if r.role_name.is_some() => {
            return Err(ConfigError(format!(
                "{what}: role_name applies to `profile`; routed roles are named after their profiles: remove role_name"
            )));
        }
        (_, Some(_)) if r.policy.is_some() || r.policy_arns.is_some() => {
            return Err(ConfigError(format!(
                "{what}: with routes, give each route its own `policy` / `policy_arns`"
            )));
        }
        (None, Some(raw)) => (None, parse_routes(raw, users, what)?),
        (profile, None) => {
            let profile = profile.unwrap_or_else(|| "default".into());
            if profile.trim().is_empty() {
                return Err(ConfigError(format!("{what}: profile must not be empty")));
            }
            (Some(profile), Vec::new())
        }
    };
    check_exposure(listen, &allow, &routes, what)?;
    let hop_limit = r.hop_limit.unwrap_or(1);
    if hop_limit == 0 {
        return Err(ConfigError(format!(
            "{what}: hop_limit must be 1..=255 (1 = only directly attached peers)"
        )));
    }
    if let Some(name) = &r.role_name
        && (name.is_empty() || name.contains(['/', '\n', '\r', ' ']))
    {
        return Err(ConfigError(format!(
            "{what}: role_name {name:?} must be a non-empty name without '/', spaces or newlines"
        )));
    }
    Ok(ImdsListener {
        listen,
        profile,
        routes,
        imds_v1: r.imds_v1,
        allow,
        allow_uids: parse_uids(r.allow_uids, users, what)?,
        hosts: r.hosts,
        hop_limit,
        role_name: r.role_name,
        scope: parse_scope(r.policy, r.policy_arns, what)?,
    })
}

/// An `[ecs]` or `[ecs_agent]` section (`what` names it in messages; `routes_allowed` only for
/// the latter); `None` when disabled.
fn parse_ecs(
    r: RawEcs,
    default_listen: &str,
    what: &str,
    routes_allowed: bool,
    users: UserLookup<'_>,
) -> Result<Option<EcsListener>, ConfigError> {
    if !r.enabled {
        return Ok(None);
    }
    let listen = parse_listen(r.listen, default_listen, what)?;
    let allow = parse_allow(r.allow, what)?;
    let routes = match r.routes {
        None => Vec::new(),
        Some(_) if !routes_allowed => {
            return Err(ConfigError(format!(
                "{what}: routes are for [[imds]] and [ecs_agent]; on the ECS endpoint each profile's token \
                 already decides who gets it: remove `routes`"
            )));
        }
        Some(_) if r.profiles.is_some() => {
            return Err(ConfigError(format!(
                "{what}: give `profiles` or `routes`, not both: with routes, the routes name the profiles served"
            )));
        }
        Some(raw) => {
            let routes = parse_routes(raw, users, what)?;
            if routes.iter().any(|r| r.scope.is_some()) {
                return Err(ConfigError(format!(
                    "{what}: `policy` / `policy_arns` on [ecs_agent] routes are not supported; scope the role with an \
                     [[imds]] route, or `credvend exec PROFILE --policy` for one command"
                )));
            }
            routes
        }
    };
    check_exposure(listen, &allow, &routes, what)?;
    Ok(Some(EcsListener {
        listen,
        profiles: r.profiles,
        allow,
        allow_uids: parse_uids(r.allow_uids, users, what)?,
        hosts: r.hosts,
        routes,
    }))
}

/// The `[metrics]` section; `None` when disabled.
fn parse_metrics(
    r: RawMetrics,
    what: &str,
    users: UserLookup<'_>,
) -> Result<Option<MetricsListener>, ConfigError> {
    if !r.enabled {
        return Ok(None);
    }
    let listen = parse_listen(r.listen, DEFAULT_METRICS_LISTEN, what)?;
    let allow = parse_allow(r.allow, what)?;
    check_exposure(listen, &allow, &[], what)?;
    Ok(Some(MetricsListener {
        listen,
        allow,
        allow_uids: parse_uids(r.allow_uids, users, what)?,
        hosts: r.hosts,
    }))
}

impl DaemonConfig {
    /// Parses and validates `config.toml` text. `source` names the file in messages; user names
    /// in `allow_uids` are looked up in the system's user database.
    pub fn parse(text: &str, source: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse_with(text, source, &crate::sys::uid_by_name)
    }

    /// [`DaemonConfig::parse`] with the user lookup given (tests, fuzzing).
    pub fn parse_with(
        text: &str,
        source: &str,
        users: UserLookup<'_>,
    ) -> Result<DaemonConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(source, text, &e))?;
        let defaults = DaemonConfig::default();
        let imds = match raw.imds {
            None => defaults.imds.clone(),
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, r)| parse_imds(r, &format!("{source}: [[imds]] #{}", i + 1), users))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let ecs = match raw.ecs {
            None => defaults.ecs.clone(),
            Some(r) => parse_ecs(
                r,
                DEFAULT_ECS_LISTEN,
                &format!("{source}: [ecs]"),
                false,
                users,
            )?,
        };
        let ecs_agent = match raw.ecs_agent {
            None => None,
            Some(r) => parse_ecs(
                r,
                DEFAULT_ECS_AGENT_LISTEN,
                &format!("{source}: [ecs_agent]"),
                true,
                users,
            )?,
        };
        let metrics = match raw.metrics {
            None => None,
            Some(r) => parse_metrics(r, &format!("{source}: [metrics]"), users)?,
        };
        let mut seen = std::collections::HashSet::new();
        for addr in imds
            .iter()
            .map(|l| l.listen)
            .chain(ecs.iter().map(|e| e.listen))
            .chain(ecs_agent.iter().map(|e| e.listen))
            .chain(metrics.iter().map(|m| m.listen))
        {
            if addr.port() != 0 && !seen.insert(addr) {
                return Err(ConfigError(format!(
                    "{source}: two listeners use {addr}; give each its own port"
                )));
            }
        }
        let mut refresh = defaults.refresh;
        let mut prewarm = Vec::new();
        if let Some(r) = raw.refresh {
            if let Some(m) = r.idle_after_seconds {
                if m < MIN_IDLE_AFTER.as_secs() {
                    return Err(ConfigError(format!(
                        "{source}: [refresh] idle_after_seconds must be at least {} (keep it above your sessions' length, \
                         or a profile in use goes idle between two fetches of its clients)",
                        MIN_IDLE_AFTER.as_secs()
                    )));
                }
                refresh.idle_after = Duration::from_secs(m);
            }
            prewarm = r.prewarm.unwrap_or_default();
            if let Some(m) = r.margin_seconds {
                refresh.margin = Duration::from_secs(m);
            }
            if let Some(m) = r.min_interval_seconds {
                if m == 0 {
                    return Err(ConfigError(format!(
                        "{source}: [refresh] min_interval_seconds must be at least 1"
                    )));
                }
                refresh.min_interval = Duration::from_secs(m);
            }
        }
        let mut limits = defaults.limits;
        if let Some(l) = raw.limits {
            if let Some(v) = l.max_connections {
                limits.max_connections = v.max(1);
            }
            if let Some(v) = l.max_header_bytes {
                limits.max_header_bytes = v.clamp(1024, 1024 * 1024);
            }
            if let Some(v) = l.header_timeout_ms {
                limits.header_timeout = Duration::from_millis(v.max(1));
            }
        }
        Ok(DaemonConfig {
            imds,
            ecs,
            ecs_agent,
            refresh,
            prewarm,
            limits,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(
            DaemonConfig::parse("", "c").unwrap(),
            DaemonConfig::default()
        );
    }

    #[test]
    fn full_file_parses() {
        let c = DaemonConfig::parse(
            r#"
[[imds]]
listen = "127.0.0.1:0"
profile = "dev"
imds_v1 = true

[[imds]]
listen = "172.17.0.1:9254"
profile = "prod"
allow = ["172.17.0.0/16", "10.0.0.5"]
hosts = ["host.docker.internal"]
hop_limit = 2

[ecs]
listen = "127.0.0.1:0"
profiles = ["dev", "prod"]

[refresh]
margin_seconds = 600
min_interval_seconds = 5
idle_after_seconds = 60
prewarm = ["ci"]
"#,
            "c",
        )
        .unwrap();
        assert_eq!(c.refresh.idle_after, Duration::from_secs(60));
        assert_eq!(c.prewarm, ["ci"]);
        let short = DaemonConfig::parse("[refresh]\nidle_after_seconds = 59\n", "c").unwrap_err();
        assert!(short.to_string().contains("at least 60"), "{short}");
        assert_eq!(c.imds.len(), 2);
        assert!(c.imds[0].imds_v1);
        assert_eq!(c.imds[1].allow.len(), 2);
        assert_eq!(c.imds[1].hop_limit, 2);
        assert_eq!(c.ecs.as_ref().unwrap().profiles.as_ref().unwrap().len(), 2);
        assert_eq!(c.refresh.margin, Duration::from_secs(600));
    }

    #[test]
    fn non_loopback_without_allow_is_rejected_naming_the_fix() {
        let e =
            DaemonConfig::parse("[[imds]]\nlisten = \"0.0.0.0:9254\"\n", "cfg.toml").unwrap_err();
        assert!(e.0.contains("cfg.toml: [[imds]] #1"), "{e}");
        assert!(e.0.contains("allow"), "{e}");
        let e = DaemonConfig::parse("[ecs]\nlisten = \"192.168.1.2:9255\"\n", "c").unwrap_err();
        assert!(e.0.contains("[ecs]"), "{e}");
    }

    #[test]
    fn metadata_addresses_need_no_allow_list() {
        let c = DaemonConfig::parse("[[imds]]\nlisten = \"169.254.169.254:80\"\n", "c").unwrap();
        assert!(c.imds[0].allow.is_empty());
        assert!(DaemonConfig::parse("[[imds]]\nlisten = \"[fd00:ec2::254]:80\"\n", "c").is_ok());
        assert!(DaemonConfig::parse("[[imds]]\nlisten = \"169.254.1.1:80\"\n", "c").is_err());
    }

    #[test]
    fn mistakes_are_named() {
        for (text, want) in [
            ("[[imds]]\nlisten = \"localhost:80\"\n", "not an IP:PORT"),
            ("[[imds]]\nallow = [\"nonsense\"]\n", "not a CIDR"),
            ("[[imds]]\nprofil = \"x\"\n", "unknown field"),
            ("[[imds]]\nhop_limit = 0\n", "hop_limit"),
            (
                "[[imds]]\nlisten = \"127.0.0.1:9\"\n[ecs]\nlisten = \"127.0.0.1:9\"\n",
                "two listeners",
            ),
            ("imds = 3", "invalid type"),
            ("[[imds]\n", "c:1:"),
            (
                "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofil = \"x\"\n",
                "c:3:1: unknown field `profil`",
            ),
        ] {
            let e = DaemonConfig::parse(text, "c").unwrap_err();
            assert!(e.0.contains(want), "{text:?}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn allow_uids_take_numbers_and_names() {
        let users = |name: &str| (name == "alice").then_some(1001);
        let c = DaemonConfig::parse_with(
            "[[imds]]\nallow_uids = [65534, \"alice\"]\n[ecs]\nallow_uids = [0]\n",
            "c",
            &users,
        )
        .unwrap();
        assert_eq!(c.imds[0].allow_uids, [65534, 1001]);
        assert_eq!(c.ecs.unwrap().allow_uids, [0]);
        let e = DaemonConfig::parse_with("[[imds]]\nallow_uids = [\"bob\"]\n", "c", &users)
            .unwrap_err();
        assert!(e.0.contains("\"bob\" is not a user"), "{e}");
    }

    #[test]
    fn metrics_is_off_unless_configured_and_guarded_like_the_others() {
        assert_eq!(DaemonConfig::parse("", "c").unwrap().metrics, None);
        let m = DaemonConfig::parse("[metrics]\n", "c")
            .unwrap()
            .metrics
            .unwrap();
        assert_eq!(m.listen, "127.0.0.1:9256".parse().unwrap());
        assert!(m.allow.is_empty() && m.allow_uids.is_empty());
        let users = |name: &str| (name == "prometheus").then_some(120);
        let m = DaemonConfig::parse_with(
            "[metrics]\nlisten = \"10.0.0.1:9256\"\nallow = [\"10.0.0.0/8\"]\nallow_uids = [\"prometheus\"]\n",
            "c",
            &users,
        )
        .unwrap()
        .metrics
        .unwrap();
        assert_eq!((m.allow.len(), m.allow_uids[0]), (1, 120));
        let e = DaemonConfig::parse("[metrics]\nlisten = \"0.0.0.0:9256\"\n", "cfg").unwrap_err();
        assert!(
            e.0.contains("cfg: [metrics]") && e.0.contains("allow"),
            "{e}"
        );
        let e = DaemonConfig::parse(
            "[ecs]\nlisten = \"127.0.0.1:9\"\n[metrics]\nlisten = \"127.0.0.1:9\"\n",
            "c",
        )
        .unwrap_err();
        assert!(e.0.contains("two listeners"), "{e}");
        assert_eq!(
            DaemonConfig::parse("[metrics]\nenabled = false\n", "c")
                .unwrap()
                .metrics,
            None
        );
        let e = DaemonConfig::parse("[metrics]\npath = \"/m\"\n", "c").unwrap_err();
        assert!(e.0.contains("unknown field"), "{e}");
    }

    #[test]
    fn ecs_can_be_disabled() {
        let c = DaemonConfig::parse("[ecs]\nenabled = false\n", "c").unwrap();
        assert_eq!(c.ecs, None);
    }

    #[test]
    fn ecs_agent_is_off_unless_configured_and_defaults_to_the_ecs_address() {
        assert_eq!(DaemonConfig::parse("", "c").unwrap().ecs_agent, None);
        let c = DaemonConfig::parse("[ecs_agent]\n", "c").unwrap();
        let agent = c.ecs_agent.unwrap();
        assert_eq!(agent.listen, "169.254.170.2:80".parse().unwrap());
        assert_eq!(agent.profiles, None);
        assert!(c.ecs.is_some(), "[ecs] keeps its default");
        let c = DaemonConfig::parse(
            "[ecs_agent]\nlisten = \"172.17.0.1:9257\"\nprofiles = [\"dev\"]\nallow = [\"172.17.0.0/16\"]\n\
             hosts = [\"h\"]\nallow_uids = [7]\n",
            "c",
        )
        .unwrap();
        let agent = c.ecs_agent.unwrap();
        assert_eq!(agent.profiles.unwrap(), ["dev"]);
        assert_eq!(
            (agent.allow.len(), agent.hosts.len(), agent.allow_uids[0]),
            (1, 1, 7)
        );
        assert_eq!(
            DaemonConfig::parse("[ecs_agent]\nenabled = false\n", "c")
                .unwrap()
                .ecs_agent,
            None
        );
        let e =
            DaemonConfig::parse("[ecs_agent]\nlisten = \"172.17.0.1:9257\"\n", "cfg").unwrap_err();
        assert!(
            e.0.contains("cfg: [ecs_agent]") && e.0.contains("allow"),
            "{e}"
        );
        let e = DaemonConfig::parse(
            "[ecs]\nlisten = \"127.0.0.1:9\"\n[ecs_agent]\nlisten = \"127.0.0.1:9\"\n",
            "c",
        )
        .unwrap_err();
        assert!(e.0.contains("two listeners"), "{e}");
    }

    fn routes_of(text: &str) -> Result<Vec<Route>, ConfigError> {
        let users = |name: &str| (name == "builder").then_some(1001);
        DaemonConfig::parse_with(text, "c", &users).map(|c| c.imds[0].routes.clone())
    }

    #[test]
    fn routes_take_cidrs_addresses_and_users() {
        let text = "[[imds]]\nlisten = \"198.18.0.1:9254\"\nroutes = [\n\
                    { from = \"198.18.0.2/32\", profile = \"ci\" },\n\
                    { from = \"198.18.0.0/24\", profile = \"dev\" },\n\
                    { from = \"198.18.0.7\", profile = \"ci\" },\n\
                    { from = \"fd00:cafe::/64\", profile = \"dev\" },\n\
                    { uid = \"builder\", profile = \"build\" },\n\
                    { uid = 0, profile = \"root\" },\n]\n";
        let users = |name: &str| (name == "builder").then_some(1001);
        let c = DaemonConfig::parse_with(text, "c", &users).unwrap();
        let l = &c.imds[0];
        assert_eq!(l.profile, None);
        let net = |s: &str| RouteFrom::Net(s.parse().unwrap());
        assert_eq!(
            l.routes.iter().map(|r| r.from).collect::<Vec<_>>(),
            [
                net("198.18.0.2/32"),
                net("198.18.0.0/24"),
                net("198.18.0.7/32"),
                net("fd00:cafe::/64"),
                RouteFrom::Uid(1001),
                RouteFrom::Uid(0)
            ]
        );
        assert_eq!(l.profiles(), ["ci", "dev", "build", "root"]);
        assert!(
            l.allow.is_empty(),
            "routes admit their peers without an allow list"
        );
        let c = DaemonConfig::parse_with(
            "[ecs_agent]\nlisten = \"198.18.0.1:9257\"\nroutes = [{ from = \"198.18.0.2/32\", profile = \"ci\" }]\n",
            "c",
            &users,
        )
        .unwrap();
        let agent = c.ecs_agent.unwrap();
        assert_eq!((agent.profiles, agent.routes.len()), (None, 1));
    }

    #[test]
    fn listeners_and_routes_take_session_policies() {
        let text = "[[imds]]\nprofile = \"dev\"\npolicy = \"file://~/p.json\"\n\
                    [[imds]]\nlisten = \"127.0.0.1:0\"\nroutes = [{ uid = \"builder\", profile = \"dev\", \
                    policy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"] }]\n";
        let users = |name: &str| (name == "builder").then_some(1001);
        let c = DaemonConfig::parse_with(text, "c", &users).unwrap();
        let own = c.imds[0].profiles();
        let routed = c.imds[1].profiles();
        assert!(
            own[0].starts_with("dev~") && routed[0].starts_with("dev~"),
            "{own:?} {routed:?}"
        );
        assert_ne!(own, routed, "two scopes, two sessions");
        assert_eq!(c.imds[1].scoped()[0].1, "dev");
        for (text, want) in [
            (
                "[[imds]]\nprofile = \"dev\"\npolicy = \"{nope\"\n",
                "the policy is not JSON",
            ),
            ("[[imds]]\npolicy_arns = [\"ReadOnly\"]\n", "is not an ARN"),
            (
                "[[imds]]\npolicy = \"{}\"\nroutes = [{ uid = 0, profile = \"a\" }]\n",
                "give each route its own `policy`",
            ),
            (
                "[ecs_agent]\nlisten = \"127.0.0.1:0\"\nroutes = [{ uid = 0, profile = \"a\", policy = \"{}\" }]\n",
                "on [ecs_agent] routes are not supported",
            ),
        ] {
            let e = DaemonConfig::parse_with(text, "c", &users).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn route_mistakes_are_named_with_the_fix() {
        for (text, want) in [
            (
                "[[imds]]\nroutes = [{ from = \"198.18.0.0/33\", profile = \"a\" }]\n",
                "[[imds]] #1: routes #1: from = \"198.18.0.0/33\" is not a CIDR",
            ),
            (
                "[[imds]]\nroutes = [{ from = \"198.18.0.5/24\", profile = \"a\" }]\n",
                "has host bits set: write \"198.18.0.5/32\" for that one address or \"198.18.0.0/24\" for its network",
            ),
            (
                "[[imds]]\nroutes = [{ from = \"fd00::5/64\", profile = \"a\" }]\n",
                "\"fd00::5/128\"",
            ),
            (
                "[[imds]]\nroutes = [{ uid = \"nobody-here\", profile = \"a\" }]\n",
                "routes #1: uid \"nobody-here\" is not a user on this machine",
            ),
            (
                "[[imds]]\nroutes = [{ profile = \"a\" }]\n",
                "give exactly one of `from`",
            ),
            (
                "[[imds]]\nroutes = [{ from = \"10.0.0.1\", uid = 0, profile = \"a\" }]\n",
                "give exactly one of `from`",
            ),
            (
                "[[imds]]\nroutes = [{ uid = 0, profile = \" \" }]\n",
                "profile must not be empty",
            ),
            ("[[imds]]\nroutes = []\n", "routes is empty"),
            (
                "[[imds]]\nroutes = [{ from = \"10.0.0.0/8\", profile = \"a\" }, { from = \"10.0.0.0/8\", profile = \"b\" }]\n",
                "routes #2: routes #1 is for 10.0.0.0/8 too",
            ),
            (
                "[[imds]]\nroutes = [{ from = \"10.0.0.1/32\", profile = \"a\" }, { from = \"10.0.0.1\", profile = \"a\" }]\n",
                "ambiguous",
            ),
            (
                "[[imds]]\nroutes = [{ uid = 0, profile = \"a\" }, { uid = \"builder\", profile = \"b\" }, { uid = 1001, profile = \"c\" }]\n",
                "routes #3: routes #2 is for uid 1001 too",
            ),
            (
                "[[imds]]\nprofile = \"a\"\nroutes = [{ uid = 0, profile = \"b\" }]\n",
                "give `profile` or `routes`, not both",
            ),
            (
                "[[imds]]\nrole_name = \"x\"\nroutes = [{ uid = 0, profile = \"b\" }]\n",
                "remove role_name",
            ),
            (
                "[ecs]\nroutes = [{ uid = 0, profile = \"b\" }]\n",
                "[ecs]: routes are for [[imds]] and [ecs_agent]",
            ),
            (
                "[ecs_agent]\nprofiles = [\"a\"]\nroutes = [{ uid = 0, profile = \"b\" }]\n",
                "give `profiles` or `routes`, not both",
            ),
            (
                "[[imds]]\nlisten = \"198.18.0.1:9254\"\nroutes = [{ uid = 0, profile = \"b\" }]\n",
                "or routes `from` their networks",
            ),
        ] {
            let e = routes_of(text).unwrap_err();
            assert!(e.0.contains(want), "{text:?}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e:?}");
        }
        assert!(routes_of("[[imds]]\nroutes = [{ from = \"0.0.0.0/0\", profile = \"a\" }, { from = \"::/0\", profile = \"a\" }]\n").is_ok());
    }
}
