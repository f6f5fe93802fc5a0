//! Applying a configuration as a diff, atomically: [`plan`] does everything that can fail
//! (resolving chains, binding new listeners, writing ECS token files and ECS-agent ID files, in
//! that order) and changes nothing the daemon serves; [`commit`] cannot fail. Unchanged profiles
//! keep their cells and credentials, unchanged listeners keep their sockets, and a reload that
//! fails anywhere leaves the running configuration exactly as it was. [`rotate_agent_id`] follows
//! the same rule for one profile's ECS-agent ID.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ecs::{EcsHandler, EcsProfile};
use super::ecs_agent::{self, AgentProfile, EcsAgentHandler};
use super::endpoint::Endpoint;
use super::http::{HostPolicy, ServeOptions, serve};
use super::imds::{ImdsHandler, ImdsRole, instance_id};
use super::metrics::ListenerStats;
use super::metrics_http::MetricsHandler;
use super::policy::Policy;
use super::routes::{RouteCounters, RouteTable, Serves};
use super::state::ProfileCell;
use super::{Daemon, State, Unit, refresher, role_name_for};
use crate::config::{EcsListener, ImdsListener, MetricsListener};
use crate::context::Loaded;
use crate::mint::Minter;
use crate::paths;
use crate::problem::{Problem, ProblemCode};
use crate::profile::resolve::{self, Chain, ResolveError, Source};
use crate::scope::Scope;
use crate::shutdown::Trigger;

/// What a listener is, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListenerSpec {
    /// An `[[imds]]` listener.
    Imds(ImdsListener),
    /// The `[ecs]` listener.
    Ecs(EcsListener),
    /// The `[ecs_agent]` listener.
    EcsAgent(EcsListener),
    /// The `[metrics]` listener.
    Metrics(MetricsListener),
}

impl ListenerSpec {
    fn listen(&self) -> SocketAddr {
        match self {
            ListenerSpec::Imds(l) => l.listen,
            ListenerSpec::Ecs(l) | ListenerSpec::EcsAgent(l) => l.listen,
            ListenerSpec::Metrics(l) => l.listen,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ListenerSpec::Imds(_) => "imds",
            ListenerSpec::Ecs(_) => "ecs",
            ListenerSpec::EcsAgent(_) => "ecs-agent",
            ListenerSpec::Metrics(_) => "metrics",
        }
    }
}

/// Identity of a listener across reloads: kind, configured address, and its position among
/// listeners with that kind and address (so `127.0.0.1:0` listeners keep their ports too).
type ListenerKey = (&'static str, SocketAddr, usize);

/// A running listener.
pub(crate) struct Listener {
    key: ListenerKey,
    /// Its configuration.
    pub spec: ListenerSpec,
    /// The bound address.
    pub addr: SocketAddr,
    handler: watch::Sender<Arc<Endpoint>>,
    options: watch::Sender<Arc<ServeOptions>>,
    stop: Trigger,
    /// The accept loop; it ends once its connections have drained.
    pub task: tokio::task::JoinHandle<()>,
    /// Its counters (connections, refusals), kept while the listener keeps its socket.
    pub stats: Arc<ListenerStats>,
}

impl Listener {
    /// `imds`, `ecs`, `ecs-agent` or `metrics` (also the `FileDescriptorName` of its inherited socket).
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    /// Its routes with their counts, and the requests refused for want of a route; `None` for
    /// a listener without routes.
    pub fn routes(&self) -> Option<(Vec<super::routes::RouteStat>, u64)> {
        self.handler.borrow().route_stats()
    }

    /// The profiles it serves (names only: never an ECS token or an ECS-agent ID).
    pub fn profiles(
        &self,
        ecs_tokens: &HashMap<String, SecretString>,
        agent_ids: &HashMap<String, SecretString>,
    ) -> Vec<String> {
        let names = |m: &HashMap<String, SecretString>| {
            let mut v: Vec<String> = m.keys().cloned().collect();
            v.sort();
            v
        };
        match &self.spec {
            ListenerSpec::Imds(l) => l.profiles(),
            ListenerSpec::Ecs(_) => names(ecs_tokens),
            ListenerSpec::EcsAgent(_) => names(agent_ids),
            ListenerSpec::Metrics(_) => Vec::new(),
        }
    }
}

/// A newly bound listener, not serving yet.
struct Bound {
    key: ListenerKey,
    spec: ListenerSpec,
    socket: TcpListener,
    addr: SocketAddr,
    /// The inherited socket it was made from (claimed at commit).
    inherited: Option<usize>,
}

/// Everything a configuration needs that could fail, done.
pub(crate) struct Plan {
    loaded: Loaded,
    /// The chain of every served profile.
    chains: BTreeMap<String, Result<Arc<Chain>, ResolveError>>,
    /// Every configured listener with its key.
    specs: Vec<(ListenerKey, ListenerSpec)>,
    /// Listeners bound for this configuration.
    bound: Vec<Bound>,
    /// The token of every profile the ECS endpoint serves (files written).
    ecs_tokens: HashMap<String, SecretString>,
    /// The ID of every profile the ECS-agent endpoint serves (files written).
    agent_ids: HashMap<String, SecretString>,
    /// The profiles the keyring held keys for, when it could be listed.
    listed_keys: Option<BTreeSet<String>>,
}

/// The profiles the keyring holds keys for; `None` when it cannot be listed. Runs before the
/// daemon's lock is taken: listing the keyring may be slow. Listed once per configuration, for
/// both ECS-style endpoints.
pub(crate) async fn listed_keys(minter: &Minter) -> Option<BTreeSet<String>> {
    let listed = match minter.keystore().await {
        Ok(store) => store.list_profiles().await,
        Err(e) => Err(e),
    };
    match listed {
        Ok(list) => Some(list.into_iter().collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the keyring; the ECS endpoints serve every profile that resolves");
            None
        }
    }
}

/// Profiles the ECS endpoint serves: `[ecs] profiles`, or when that is not given every profile
/// that resolves and whose chain can start (keys in the keyring (`with_keys`, when known), or a
/// process / token file).
pub(crate) fn ecs_profiles(loaded: &Loaded, with_keys: Option<&BTreeSet<String>>) -> Vec<String> {
    served_by(loaded, loaded.config.ecs.as_ref(), with_keys)
}

/// Profiles the ECS-agent endpoint serves, chosen as for `[ecs]` ([`ecs_profiles`]).
pub(crate) fn agent_profiles(loaded: &Loaded, with_keys: Option<&BTreeSet<String>>) -> Vec<String> {
    served_by(loaded, loaded.config.ecs_agent.as_ref(), with_keys)
}

/// The profiles of an `[ecs]`-like section: its list, else every profile that can start.
fn served_by(
    loaded: &Loaded,
    section: Option<&EcsListener>,
    with_keys: Option<&BTreeSet<String>>,
) -> Vec<String> {
    let Some(section) = section else {
        return Vec::new();
    };
    if !section.routes.is_empty() {
        return crate::config::route_profiles(&section.routes);
    }
    if let Some(list) = &section.profiles {
        return list.clone();
    }
    loaded
        .profiles
        .profiles
        .keys()
        .filter(|name| match resolve_in(loaded, name) {
            Ok(chain) => match &chain.source {
                Source::Keys { keys, .. } => with_keys.is_none_or(|k| k.contains(keys)),
                _ => true,
            },
            Err(_) => false,
        })
        .cloned()
        .collect()
}

/// The profiles minted at start-up and kept fresh whether or not anyone asks: those of the
/// `[[imds]]` listeners and their routes (an instance's role is there before anything runs:
/// IMDS clients make one short attempt) and `[refresh]
/// prewarm`. Every other served profile is minted on its first request and goes idle when
/// nobody asks for it within `[refresh] idle_after_seconds`.
pub(crate) fn warm_profiles(config: &crate::config::DaemonConfig) -> BTreeSet<String> {
    config
        .imds
        .iter()
        .flat_map(|l| l.profiles())
        .chain(config.prewarm.iter().cloned())
        .collect()
}

/// The warm profiles of the configuration in effect, sorted: `/healthz` reports on exactly these.
pub(crate) fn prewarmed(state: &State) -> Vec<String> {
    state
        .loaded
        .as_ref()
        .map(|l| warm_profiles(&l.config).into_iter().collect())
        .unwrap_or_default()
}

pub(crate) fn resolve_in(loaded: &Loaded, name: &str) -> Result<Chain, ResolveError> {
    resolve::resolve(&loaded.profiles, name, &loaded.env, &resolve::read_file)
}

/// Every scoped session to serve: those of `[[imds]]` listeners and their routes, and those
/// `credvend exec --policy` asked for (`state.scopes`), by unit name.
fn scoped_units(loaded: &Loaded, state: &State) -> BTreeMap<String, (String, Scope)> {
    let mut out: BTreeMap<String, (String, Scope)> = state.scopes.clone();
    for l in &loaded.config.imds {
        for (unit, profile, scope) in l.scoped() {
            out.insert(unit, (profile, scope));
        }
    }
    out
}

/// The chain of `profile`'s session scoped by `scope`: the profile's chain with the scope's
/// session policy on its last call (a `file://` policy read now).
pub(crate) fn resolve_scoped(
    loaded: &Loaded,
    profile: &str,
    scope: &Scope,
) -> Result<Chain, ResolveError> {
    let chain = resolve_in(loaded, profile)?;
    let read =
        |p: &std::path::Path| resolve::read_file(&crate::paths::expand_tilde(&p.to_string_lossy()));
    let (policy, arns) = scope.document(&read).map_err(|e| ResolveError {
        kind: resolve::ErrorKind::BadValue,
        message: format!(
            "profile `{profile}`, scoped session {}: {e}",
            scope.unit(profile)
        ),
    })?;
    chain.scoped(&scope.id(), policy, arns)
}

/// Resolves, binds and writes token and ID files for `loaded`. Changes nothing the daemon
/// serves; dropping the plan undoes it (new sockets close; a file written stays for next time).
pub(crate) fn plan(
    daemon: &Daemon,
    state: &State,
    loaded: Loaded,
    listed_keys: Option<BTreeSet<String>>,
) -> Result<Plan, String> {
    let mut ecs_profiles = ecs_profiles(&loaded, listed_keys.as_ref());
    if loaded.config.ecs.is_some() {
        // `exec --policy` sessions are served over the ECS endpoint, each with its own token.
        ecs_profiles.extend(state.scopes.keys().cloned());
    }
    let agent_profiles = agent_profiles(&loaded, listed_keys.as_ref());
    let scoped = scoped_units(&loaded, state);
    let config = &loaded.config;
    let mut wanted: BTreeSet<String> = warm_profiles(config);
    wanted.extend(ecs_profiles.iter().cloned());
    wanted.extend(agent_profiles.iter().cloned());
    let chains = wanted
        .into_iter()
        .map(|name| {
            let chain = match scoped.get(&name) {
                Some((profile, scope)) => resolve_scoped(&loaded, profile, scope),
                None => resolve_in(&loaded, &name),
            }
            .map(Arc::new);
            if let Err(e) = &chain {
                tracing::error!(profile = %name, "{e}");
            }
            (name, chain)
        })
        .collect();
    let specs = keyed(
        config
            .imds
            .iter()
            .cloned()
            .map(ListenerSpec::Imds)
            .chain(config.ecs.iter().cloned().map(ListenerSpec::Ecs))
            .chain(config.ecs_agent.iter().cloned().map(ListenerSpec::EcsAgent))
            .chain(config.metrics.iter().cloned().map(ListenerSpec::Metrics)),
    );
    let mut bound: Vec<Bound> = Vec::new();
    for (key, spec) in &specs {
        if !state.listeners.iter().any(|l| l.key == *key) {
            bound.push(bind(state, &bound, *key, spec)?);
        }
    }
    // Last: the only fallible steps that leave something behind (token and ID files, reused
    // later).
    let mut ecs_tokens = HashMap::new();
    for name in ecs_profiles {
        let token = ecs_token(daemon, state, &name)
            .map_err(|e| format!("cannot write the ECS token file of `{name}`: {e}"))?;
        ecs_tokens.insert(name, token);
    }
    let mut agent_ids = HashMap::new();
    for name in agent_profiles {
        let id = agent_id(daemon, state, &name)
            .map_err(|e| format!("cannot write the ECS agent ID file of `{name}`: {e}"))?;
        agent_ids.insert(name, id);
    }
    Ok(Plan {
        loaded,
        chains,
        specs,
        bound,
        ecs_tokens,
        agent_ids,
        listed_keys,
    })
}

fn keyed(specs: impl Iterator<Item = ListenerSpec>) -> Vec<(ListenerKey, ListenerSpec)> {
    let mut out: Vec<(ListenerKey, ListenerSpec)> = Vec::new();
    for s in specs {
        let nth = out
            .iter()
            .filter(|((k, a, _), _)| *k == s.kind() && *a == s.listen())
            .count();
        out.push(((s.kind(), s.listen(), nth), s));
    }
    out
}

/// Binds `spec`, preferring a socket from the service manager (matched by address, then by
/// name) that no other new listener claimed.
fn bind(
    state: &State,
    claimed: &[Bound],
    key: ListenerKey,
    spec: &ListenerSpec,
) -> Result<Bound, String> {
    let want = spec.listen();
    let free = |i: &usize| !claimed.iter().any(|b| b.inherited == Some(*i));
    let inherited = state.inherited.iter().enumerate();
    let pos = inherited
        .clone()
        .filter(|(i, _)| free(i))
        .find(|(_, s)| s.listener.local_addr().ok() == Some(want))
        .or_else(|| {
            inherited
                .filter(|(i, _)| free(i))
                .find(|(_, s)| s.name.as_deref() == Some(spec.kind()))
        })
        .map(|(i, _)| i);
    let socket = match pos {
        Some(i) => from_inherited(&state.inherited[i].listener)?,
        None => bind_new(want, spec.kind())?,
    };
    let addr = socket
        .local_addr()
        .map_err(|e| format!("cannot read the address of the {} socket: {e}", spec.kind()))?;
    Ok(Bound {
        key,
        spec: spec.clone(),
        socket,
        addr,
        inherited: pos,
    })
}

fn from_inherited(listener: &std::net::TcpListener) -> Result<TcpListener, String> {
    let dup = listener
        .try_clone()
        .map_err(|e| format!("inherited socket: {e}"))?;
    dup.set_nonblocking(true)
        .map_err(|e| format!("inherited socket: {e}"))?;
    TcpListener::from_std(dup).map_err(|e| format!("inherited socket: {e}"))
}

fn bind_new(want: SocketAddr, kind: &str) -> Result<TcpListener, String> {
    let socket = if want.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("cannot create a socket for {want}: {e}"))?;
    let _ = socket.set_reuseaddr(true);
    socket.bind(want).map_err(|e| {
        let fix = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need privileges: use systemd socket activation, see README \"169.254.169.254\")"
            }
            std::io::ErrorKind::AddrInUse => {
                " (another program, or another credvend, uses it: pick another port in config.toml)"
            }
            std::io::ErrorKind::AddrNotAvailable => " (no interface has that address)",
            _ => "",
        };
        format!("cannot listen on {want} for {kind}: {e}{fix}")
    })?;
    socket
        .listen(1024)
        .map_err(|e| format!("cannot listen on {want}: {e}"))
}

/// The ECS token of `profile`: the one in use, else the one in its file (kept across
/// restarts), else a new random one written to the file.
fn ecs_token(daemon: &Daemon, state: &State, profile: &str) -> std::io::Result<SecretString> {
    if let Some(t) = state.ecs_tokens.get(profile) {
        return Ok(t.clone());
    }
    let path = paths::ecs_token_file(&daemon.state_dir, profile);
    let existing = std::fs::read_to_string(&path)
        .ok()
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()));
    let token = match existing {
        Some(t) => t,
        None => {
            let mut raw = [0u8; 32];
            getrandom::getrandom(&mut raw).map_err(std::io::Error::other)?;
            let t = hex::encode(raw);
            paths::write_private_file(&path, t.as_bytes())?;
            t
        }
    };
    Ok(SecretString::from(token))
}

/// The ECS-agent ID of `profile`: the one in use, else the one in its file (kept across
/// restarts), else a new random one written to the file.
fn agent_id(daemon: &Daemon, state: &State, profile: &str) -> std::io::Result<SecretString> {
    if let Some(id) = state.agent_ids.get(profile) {
        return Ok(id.clone());
    }
    let path = paths::ecs_agent_id_file(&daemon.state_dir, profile);
    if let Ok(text) = std::fs::read_to_string(&path)
        && ecs_agent::is_id(&text)
    {
        return Ok(SecretString::from(text));
    }
    let id = ecs_agent::new_id()?;
    paths::write_private_file(&path, id.expose_secret().as_bytes())?;
    Ok(id)
}

/// Gives `profile` a new ECS-agent ID: written to its file first (the fallible step, after which
/// a restart serves the new ID too), then put in effect; the old ID is refused from the next
/// request on, keep-alive connections already open included (handlers are read per request).
/// Fails, changing nothing served, when the file cannot be written; `Ok(false)` when the
/// endpoint does not serve `profile`.
pub(crate) fn rotate_agent_id(
    daemon: &Daemon,
    state: &mut State,
    profile: &str,
) -> std::io::Result<bool> {
    if !state.agent_ids.contains_key(profile) {
        return Ok(false);
    }
    let id = ecs_agent::new_id()?;
    let path = paths::ecs_agent_id_file(&daemon.state_dir, profile);
    paths::write_private_file(&path, id.expose_secret().as_bytes())?;
    state.agent_ids.insert(profile.to_owned(), id);
    for l in &state.listeners {
        if let ListenerSpec::EcsAgent(_) = l.spec {
            l.handler
                .send_replace(Arc::new(endpoint(daemon, state, &l.spec, l.addr)));
        }
    }
    tracing::info!(
        profile,
        "new ECS agent ID; the old one is refused from now on"
    );
    Ok(true)
}

/// Puts `plan` into effect. Cannot fail.
pub(crate) fn commit(daemon: &Daemon, state: &mut State, plan: Plan) {
    let policy = Policy {
        settings: plan.loaded.config.refresh,
    };
    let warm = warm_profiles(&plan.loaded.config);
    commit_units(daemon, state, plan.chains, policy, &warm);
    commit_tokens(daemon, state, plan.ecs_tokens);
    commit_agent_ids(daemon, state, plan.agent_ids);
    commit_listeners(daemon, state, &plan.loaded, plan.specs, plan.bound);
    for l in &state.listeners {
        l.options.send_replace(Arc::new(serve_options(
            daemon,
            &plan.loaded,
            &l.spec,
            l.addr,
        )));
        l.handler
            .send_replace(Arc::new(endpoint(daemon, state, &l.spec, l.addr)));
    }
    state.loaded = Some(plan.loaded);
    state.listed_keys = plan.listed_keys;
}

/// Stops profiles no longer served or whose chain changed; the others keep their credentials
/// and learn the (possibly new) refresh policy; new ones start.
fn commit_units(
    daemon: &Daemon,
    state: &mut State,
    chains: BTreeMap<String, Result<Arc<Chain>, ResolveError>>,
    policy: Policy,
    warm: &BTreeSet<String>,
) {
    state.units.retain(|name, unit| {
        let keep = chains
            .get(name)
            .is_some_and(|new| match (new, &unit.chain) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            });
        match (&unit.refresher, keep) {
            (Some(r), true) => {
                r.policy
                    .send_if_modified(|p| std::mem::replace(p, policy) != policy);
                let is_warm = warm.contains(name);
                r.warm
                    .send_if_modified(|w| std::mem::replace(w, is_warm) != is_warm);
            }
            (Some(r), false) => r.stop(),
            (None, _) => {}
        }
        if !keep {
            tracing::info!(profile = %name, "profile removed or changed; its refresher stops");
        }
        keep
    });
    for (name, chain) in chains {
        if state.units.contains_key(&name) {
            continue;
        }
        let unit = match &chain {
            Ok(c) => {
                tracing::info!(profile = %name, chain = %c.describe(), "serving profile");
                let cell = ProfileCell::new(&name);
                let start = refresher::Start {
                    cell: cell.clone(),
                    chain: c.clone(),
                    minter: daemon.minter.clone(),
                    usage: daemon.usage.clone(),
                    policy,
                    warm: warm.contains(&name),
                };
                let refresher = refresher::spawn(start, daemon.shutdown.subscribe());
                Unit {
                    cell,
                    chain,
                    refresher: Some(refresher),
                }
            }
            Err(e) => Unit {
                cell: ProfileCell::broken(
                    &name,
                    Problem::new(ProblemCode::InvalidConfiguration, e.message.clone()),
                ),
                chain,
                refresher: None,
            },
        };
        state.units.insert(name, unit);
    }
}

/// Removes the token files of profiles the ECS endpoint no longer serves.
fn commit_tokens(daemon: &Daemon, state: &mut State, tokens: HashMap<String, SecretString>) {
    for name in state.ecs_tokens.keys() {
        if !tokens.contains_key(name) {
            let _ = std::fs::remove_file(paths::ecs_token_file(&daemon.state_dir, name));
        }
    }
    state.ecs_tokens = tokens;
}

/// Removes the ID files of profiles the ECS-agent endpoint no longer serves (their IDs are
/// refused from now on; serving such a profile again gives it a new ID).
fn commit_agent_ids(daemon: &Daemon, state: &mut State, ids: HashMap<String, SecretString>) {
    for name in state.agent_ids.keys() {
        if !ids.contains_key(name) {
            let _ = std::fs::remove_file(paths::ecs_agent_id_file(&daemon.state_dir, name));
        }
    }
    state.agent_ids = ids;
}

/// Stops removed listeners, keeps the others, starts the new ones.
fn commit_listeners(
    daemon: &Daemon,
    state: &mut State,
    loaded: &Loaded,
    specs: Vec<(ListenerKey, ListenerSpec)>,
    bound: Vec<Bound>,
) {
    state
        .listeners
        .retain_mut(|l| match specs.iter().find(|(k, _)| *k == l.key) {
            Some((_, spec)) => {
                l.spec = spec.clone();
                true
            }
            None => {
                tracing::info!(address = %l.addr, kind = l.kind(), "listener removed");
                l.stop.fire();
                false
            }
        });
    let mut claimed: Vec<usize> = bound.iter().filter_map(|b| b.inherited).collect();
    claimed.sort_unstable();
    for i in claimed.into_iter().rev() {
        state.inherited.remove(i);
    }
    for b in bound {
        let handler = watch::channel(Arc::new(endpoint(daemon, state, &b.spec, b.addr))).0;
        let options = watch::channel(Arc::new(serve_options(daemon, loaded, &b.spec, b.addr))).0;
        let stop = Trigger::child_of(&daemon.shutdown.subscribe());
        let stats = ListenerStats::new();
        let task = tokio::spawn(serve(
            b.socket,
            handler.subscribe(),
            options.subscribe(),
            stop.subscribe(),
            stats.clone(),
        ));
        tracing::info!(address = %b.addr, kind = b.spec.kind(), "listening");
        state.listeners.push(Listener {
            key: b.key,
            spec: b.spec,
            addr: b.addr,
            handler,
            options,
            stop,
            task,
            stats,
        });
    }
}

fn common_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![(hyper::header::SERVER, HeaderValue::from_static("EC2ws"))]
}

fn imds_headers(started: OffsetDateTime) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = common_headers();
    h.push((
        hyper::header::ACCEPT_RANGES,
        HeaderValue::from_static("none"),
    ));
    let lm = started
        .format(&time::format_description::well_known::Rfc2822)
        .map(|s| s.replace("+0000", "GMT"))
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&lm) {
        h.push((hyper::header::LAST_MODIFIED, v));
    }
    h
}

fn serve_options(
    daemon: &Daemon,
    loaded: &Loaded,
    spec: &ListenerSpec,
    addr: SocketAddr,
) -> ServeOptions {
    let (mut allow, mut allow_uids, hosts, hop_limit, headers, routes) = match spec {
        ListenerSpec::Imds(l) => (
            l.allow.clone(),
            l.allow_uids.clone(),
            l.hosts.clone(),
            Some(l.hop_limit),
            imds_headers(daemon.started),
            l.routes.as_slice(),
        ),
        ListenerSpec::Ecs(l) | ListenerSpec::EcsAgent(l) => (
            l.allow.clone(),
            l.allow_uids.clone(),
            l.hosts.clone(),
            None,
            common_headers(),
            l.routes.as_slice(),
        ),
        ListenerSpec::Metrics(l) => (
            l.allow.clone(),
            l.allow_uids.clone(),
            l.hosts.clone(),
            None,
            Vec::new(),
            <&[crate::config::Route]>::default(),
        ),
    };
    // A route admits its peers as an `allow` / `allow_uids` entry would (daemon/routes.rs).
    allow.extend(crate::config::route_nets(routes));
    allow_uids.extend(crate::config::route_uids(routes));
    ServeOptions {
        allow,
        allow_uids,
        hosts: HostPolicy::new(addr, &hosts),
        limits: loaded.config.limits,
        hop_limit,
        common_headers: headers,
    }
}

/// The handler of a listener configured as `spec`, bound at `addr`, over the current units. Its
/// routes keep the counters of the handler it replaces.
fn endpoint(daemon: &Daemon, state: &State, spec: &ListenerSpec, addr: SocketAddr) -> Endpoint {
    let counters = state
        .listeners
        .iter()
        .find(|l| l.addr == addr)
        .and_then(|l| l.handler.borrow().route_counters());
    match spec {
        ListenerSpec::Imds(l) => Endpoint::Imds(imds_handler(daemon, state, l, addr, counters)),
        ListenerSpec::Ecs(_) => Endpoint::Ecs(EcsHandler {
            profiles: state
                .ecs_tokens
                .iter()
                .filter_map(|(name, token)| {
                    Some((
                        name.clone(),
                        EcsProfile {
                            cell: state.units.get(name)?.cell.clone(),
                            token: SecretString::from(token.expose_secret().to_owned()),
                        },
                    ))
                })
                .collect(),
        }),
        ListenerSpec::EcsAgent(l) => Endpoint::EcsAgent(EcsAgentHandler {
            routes: (!l.routes.is_empty())
                .then(|| RouteTable::new(&l.routes, counters.as_ref(), |_| ())),
            profiles: state
                .agent_ids
                .iter()
                .filter_map(|(name, id)| {
                    Some(AgentProfile {
                        cell: state.units.get(name)?.cell.clone(),
                        id: id.clone(),
                    })
                })
                .collect(),
        }),
        ListenerSpec::Metrics(_) => Endpoint::Metrics(MetricsHandler::new(daemon.me.clone())),
    }
}

fn imds_handler(
    daemon: &Daemon,
    state: &State,
    l: &ImdsListener,
    addr: SocketAddr,
    counters: Option<RouteCounters>,
) -> ImdsHandler {
    // `unit` is the profile's, or its scoped session's; the role is named after the profile.
    let role = |unit: &str, role_name: Option<&String>| {
        let profile = crate::scope::base_profile(unit);
        let unit = &state.units[unit];
        ImdsRole {
            cell: unit.cell.clone(),
            role_name: role_name.cloned().unwrap_or_else(|| role_name_for(profile)),
            region: unit
                .chain
                .as_ref()
                .map(|c| c.region.clone())
                .unwrap_or_else(|_| "us-east-1".into()),
        }
    };
    let roles = match &l.profile {
        Some(profile) => Serves::All(role(
            &crate::config::unit_of(profile, l.scope.as_ref()),
            l.role_name.as_ref(),
        )),
        None => Serves::Routes(RouteTable::new(&l.routes, counters.as_ref(), |r| {
            role(&r.unit(), None)
        })),
    };
    let listener_id = addr.to_string();
    ImdsHandler {
        instance_id: instance_id(&listener_id),
        listener_id,
        roles,
        imds_v1: l.imds_v1,
        key: daemon.key.clone(),
        started: daemon.started,
    }
}
