//! `credvend serve`: loads both configuration files, runs one refresher per served profile, binds
//! the listeners, and applies a new configuration as a diff (SIGHUP): unchanged profiles keep
//! their cells and credentials, unchanged listeners keep their sockets, and nothing changes at all
//! unless the whole new configuration loads and every new listener binds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};

use super::ecs::{EcsHandler, EcsProfile};
use super::http::{HostPolicy, ServeOptions, serve};
use super::imds::{ImdsHandler, instance_id};
use super::policy::Policy;
use super::refresher::{self, Command};
use super::state::{Phase, Problem, ProfileCell};
use super::token::TokenKey;
use crate::config::{DaemonConfig, EcsListener, ImdsListener};
use crate::mint::Minter;
use crate::paths;
use crate::profile::file::{FileKind, ProfileSet, merge, parse};
use crate::profile::resolve::{self, Base, Chain, Env, ResolveError};

/// Both configuration files, parsed.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// `config.toml`.
    pub config: DaemonConfig,
    /// The AWS config and credentials files, merged.
    pub profiles: Arc<ProfileSet>,
    /// Environment captured at load.
    pub env: Env,
}

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// `config.toml` path.
    pub daemon_config: PathBuf,
    /// Whether the path was given explicitly (then it must exist).
    pub daemon_config_explicit: bool,
    /// AWS config file.
    pub aws_config: PathBuf,
    /// AWS credentials file.
    pub aws_credentials: PathBuf,
}

impl Sources {
    /// The default locations, honouring `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`.
    pub fn new(daemon_config: Option<PathBuf>) -> Sources {
        Sources {
            daemon_config_explicit: daemon_config.is_some(),
            daemon_config: daemon_config.unwrap_or_else(paths::default_daemon_config),
            aws_config: paths::aws_config_file(),
            aws_credentials: paths::aws_credentials_file(),
        }
    }

    /// Reads and parses everything; one line naming the file on failure.
    pub fn load(&self) -> Result<Loaded, String> {
        let config = match std::fs::read_to_string(&self.daemon_config) {
            Ok(text) => DaemonConfig::parse(&text, &self.daemon_config.display().to_string())
                .map_err(|e| e.to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.daemon_config_explicit => {
                DaemonConfig::default()
            }
            Err(e) => return Err(format!("cannot read {}: {e}", self.daemon_config.display())),
        };
        let profiles = load_profiles(&self.aws_config, &self.aws_credentials)?;
        Ok(Loaded {
            config,
            profiles: Arc::new(profiles),
            env: Env::from_process(),
        })
    }
}

/// Reads and merges the AWS config and credentials files (missing files are empty).
pub fn load_profiles(config: &Path, credentials: &Path) -> Result<ProfileSet, String> {
    let read = |path: &Path, kind| -> Result<Option<crate::profile::file::ParsedFile>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => parse(&text, kind)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    };
    let set = merge(
        read(config, FileKind::Config)?,
        read(credentials, FileKind::Credentials)?,
    );
    for w in &set.warnings {
        tracing::warn!("AWS config: {w}");
    }
    Ok(set)
}

/// A served profile.
struct Served {
    cell: Arc<ProfileCell>,
    chain: Result<Arc<Chain>, ResolveError>,
    refresher: Option<refresher::Handle>,
}

impl Served {
    fn stop(&self) {
        if let Some(r) = &self.refresher {
            r.task.abort();
        }
    }
}

/// What a listener is, for matching across reloads.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Spec {
    Imds(ImdsListener),
    Ecs(EcsListener),
}

impl Spec {
    fn listen(&self) -> SocketAddr {
        match self {
            Spec::Imds(l) => l.listen,
            Spec::Ecs(l) => l.listen,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Spec::Imds(_) => "imds",
            Spec::Ecs(_) => "ecs",
        }
    }
}

/// Identity of a listener across reloads: kind, configured address, and its position among
/// listeners with that kind and address (so `127.0.0.1:0` listeners keep their ports too).
type ListenerKey = (&'static str, SocketAddr, usize);

fn keys(specs: &[Spec]) -> Vec<ListenerKey> {
    let mut out: Vec<ListenerKey> = Vec::with_capacity(specs.len());
    for s in specs {
        let nth = out
            .iter()
            .filter(|(k, a, _)| *k == s.kind() && *a == s.listen())
            .count();
        out.push((s.kind(), s.listen(), nth));
    }
    out
}

enum HandlerTx {
    Imds(watch::Sender<Arc<ImdsHandler>>),
    Ecs(watch::Sender<Arc<EcsHandler>>),
}

struct Listener {
    key: ListenerKey,
    spec: Spec,
    addr: SocketAddr,
    handler: HandlerTx,
    options: watch::Sender<Arc<ServeOptions>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A listening socket handed over by the service manager (systemd or launchd).
#[derive(Debug)]
pub struct Inherited {
    /// The socket.
    pub listener: std::net::TcpListener,
    /// Its name (`FileDescriptorName=`), if given.
    pub name: Option<String>,
}

/// Per-listener status for `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ListenerInfo {
    /// `imds` or `ecs`.
    pub kind: &'static str,
    /// Bound address.
    pub address: String,
    /// Served profile (IMDS) or profiles (ECS).
    pub profiles: Vec<String>,
}

/// The running daemon.
pub struct Daemon {
    state_dir: PathBuf,
    key: Arc<TokenKey>,
    minter: Arc<Minter>,
    started: OffsetDateTime,
    shutdown: watch::Sender<bool>,
    inner: Mutex<Inner>,
}

struct Inner {
    loaded: Option<Loaded>,
    served: BTreeMap<String, Served>,
    listeners: Vec<Listener>,
    ecs_tokens: HashMap<String, SecretString>,
    inherited: Vec<Inherited>,
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

impl Daemon {
    /// A daemon with no configuration applied yet.
    pub fn new(
        state_dir: PathBuf,
        key: TokenKey,
        minter: Arc<Minter>,
        inherited: Vec<Inherited>,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            state_dir,
            key: Arc::new(key),
            minter,
            started: OffsetDateTime::now_utc(),
            shutdown: watch::channel(false).0,
            inner: Mutex::new(Inner {
                loaded: None,
                served: BTreeMap::new(),
                listeners: Vec::new(),
                ecs_tokens: HashMap::new(),
                inherited,
            }),
        })
    }

    /// The minter (for `login`).
    pub fn minter(&self) -> &Arc<Minter> {
        &self.minter
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Profiles the ECS endpoint serves when `[ecs] profiles` is not given: every profile that
    /// resolves and whose chain can start (keys in the keyring, or a process / token file).
    async fn auto_ecs_profiles(&self, loaded: &Loaded) -> Vec<String> {
        let listed = match self.minter.keystore().await {
            Ok(store) => store.list_profiles().await,
            Err(e) => Err(e),
        };
        let with_keys: Option<BTreeSet<String>> = match listed {
            Ok(list) => Some(list.into_iter().collect()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the keyring; the ECS endpoint serves every profile that resolves");
                None
            }
        };
        loaded
            .profiles
            .profiles
            .keys()
            .filter(|name| {
                match resolve::resolve(&loaded.profiles, name, &loaded.env, &resolve::read_file) {
                    Ok(chain) => match &chain.base {
                        Base::Keyring { profile } => {
                            with_keys.as_ref().is_none_or(|k| k.contains(profile))
                        }
                        _ => true,
                    },
                    Err(_) => false,
                }
            })
            .cloned()
            .collect()
    }

    fn ecs_token(&self, inner: &mut Inner, profile: &str) -> std::io::Result<SecretString> {
        if let Some(t) = inner.ecs_tokens.get(profile) {
            return Ok(t.clone());
        }
        let path = paths::ecs_token_file(&self.state_dir, profile);
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
        let token = SecretString::from(token);
        inner.ecs_tokens.insert(profile.to_owned(), token.clone());
        Ok(token)
    }

    async fn bind(&self, inner: &mut Inner, spec: &Spec) -> Result<TcpListener, String> {
        let want = spec.listen();
        // A socket from the service manager: matched by address, else by name.
        let pos = inner
            .inherited
            .iter()
            .position(|i| i.listener.local_addr().ok() == Some(want))
            .or_else(|| {
                inner
                    .inherited
                    .iter()
                    .position(|i| i.name.as_deref() == Some(spec.kind()))
            });
        if let Some(pos) = pos {
            let inherited = inner.inherited.remove(pos);
            inherited
                .listener
                .set_nonblocking(true)
                .map_err(|e| format!("inherited socket: {e}"))?;
            return TcpListener::from_std(inherited.listener)
                .map_err(|e| format!("inherited socket: {e}"));
        }
        let socket = if want.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("cannot create a socket for {want}: {e}"))?;
        let _ = socket.set_reuseaddr(true);
        socket.bind(want).map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (ports below 1024 need privileges: use systemd socket activation, see README \"169.254.169.254\")"
            } else if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another program, or another credvend, uses it: pick another port in config.toml)"
            } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                " (no interface has that address)"
            } else {
                ""
            };
            format!("cannot listen on {want} for {}: {e}{fix}", spec.kind())
        })?;
        socket
            .listen(1024)
            .map_err(|e| format!("cannot listen on {want}: {e}"))
    }

    fn serve_options(&self, loaded: &Loaded, spec: &Spec, addr: SocketAddr) -> ServeOptions {
        let (allow, hosts, hop_limit, headers) = match spec {
            Spec::Imds(l) => (
                l.allow.clone(),
                l.hosts.clone(),
                Some(l.hop_limit),
                imds_headers(self.started),
            ),
            Spec::Ecs(l) => (l.allow.clone(), l.hosts.clone(), None, common_headers()),
        };
        ServeOptions {
            allow,
            hosts: HostPolicy::new(addr, &hosts),
            limits: loaded.config.limits,
            hop_limit,
            common_headers: headers,
        }
    }

    fn imds_handler(
        &self,
        served: &BTreeMap<String, Served>,
        l: &ImdsListener,
        addr: SocketAddr,
    ) -> ImdsHandler {
        let s = &served[&l.profile];
        let region = s
            .chain
            .as_ref()
            .map(|c| c.region.clone())
            .unwrap_or_else(|_| "us-east-1".into());
        let listener_id = addr.to_string();
        ImdsHandler {
            instance_id: instance_id(&listener_id),
            listener_id,
            cell: s.cell.clone(),
            role_name: l
                .role_name
                .clone()
                .unwrap_or_else(|| role_name_for(&l.profile)),
            imds_v1: l.imds_v1,
            region,
            key: self.key.clone(),
            started: self.started,
        }
    }

    /// Applies `loaded`: the initial start-up and every reload. On error nothing has changed.
    pub async fn apply(self: &Arc<Self>, loaded: Loaded) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        let config = &loaded.config;

        // 1. Which profiles are served, and their chains.
        let ecs_profiles: Vec<String> = match &config.ecs {
            None => Vec::new(),
            Some(e) => match &e.profiles {
                Some(list) => list.clone(),
                None => self.auto_ecs_profiles(&loaded).await,
            },
        };
        let mut wanted: BTreeSet<String> = config.imds.iter().map(|l| l.profile.clone()).collect();
        wanted.extend(ecs_profiles.iter().cloned());
        let chains: BTreeMap<String, Result<Arc<Chain>, ResolveError>> = wanted
            .iter()
            .map(|name| {
                let chain =
                    resolve::resolve(&loaded.profiles, name, &loaded.env, &resolve::read_file)
                        .map(Arc::new);
                if let Err(e) = &chain {
                    tracing::error!(profile = %name, "{e}");
                }
                (name.clone(), chain)
            })
            .collect();

        // 2. Listeners: keep those whose address is unchanged, bind the new ones first.
        let mut specs: Vec<Spec> = config.imds.iter().cloned().map(Spec::Imds).collect();
        if let Some(e) = &config.ecs {
            specs.push(Spec::Ecs(e.clone()));
        }
        let spec_keys = keys(&specs);
        let mut fresh: Vec<(ListenerKey, Spec, TcpListener)> = Vec::new();
        for (spec, key) in specs.iter().zip(&spec_keys) {
            if !inner.listeners.iter().any(|l| l.key == *key) {
                match self.bind(&mut inner, spec).await {
                    Ok(l) => fresh.push((*key, spec.clone(), l)),
                    Err(e) => return Err(e),
                }
            }
        }

        // 3. ECS tokens for every ECS profile (files are created before the ready line).
        let mut ecs_tokens = HashMap::new();
        for name in &ecs_profiles {
            let token = self
                .ecs_token(&mut inner, name)
                .map_err(|e| format!("cannot write the ECS token file of `{name}`: {e}"))?;
            ecs_tokens.insert(name.clone(), token);
        }

        // --- From here on nothing fails: commit. ---
        let policy = Policy {
            settings: config.refresh,
        };
        let mut served = std::mem::take(&mut inner.served);
        // Stop profiles no longer served, or whose chain changed; the others keep their
        // credentials and learn the (possibly new) refresh policy.
        let names: Vec<String> = served.keys().cloned().collect();
        for name in names {
            let keep = chains
                .get(&name)
                .is_some_and(|new| match (new, &served[&name].chain) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                });
            if keep {
                if let Some(r) = &served[&name].refresher {
                    r.policy
                        .send_if_modified(|p| std::mem::replace(p, policy) != policy);
                }
            } else {
                let old = served.remove(&name).expect("listed");
                old.stop();
                tracing::info!(profile = %name, "profile removed or changed; its refresher stops");
            }
        }
        for (name, chain) in chains {
            if served.contains_key(&name) {
                continue;
            }
            let cell = ProfileCell::new(&name);
            let refresher = match &chain {
                Ok(c) => {
                    tracing::info!(profile = %name, chain = %c.describe(), "serving profile");
                    Some(refresher::spawn(
                        cell.clone(),
                        c.clone(),
                        self.minter.clone(),
                        policy,
                        self.shutdown.subscribe(),
                    ))
                }
                Err(e) => {
                    cell.fail(
                        Phase::Error,
                        Problem {
                            code: "InvalidConfiguration".into(),
                            message: e.message.clone(),
                            transient: false,
                            since: OffsetDateTime::now_utc(),
                        },
                        None,
                    );
                    None
                }
            };
            served.insert(
                name,
                Served {
                    cell,
                    chain,
                    refresher,
                },
            );
        }
        for (name, _) in inner.ecs_tokens.clone() {
            if !ecs_tokens.contains_key(&name) {
                let _ = std::fs::remove_file(paths::ecs_token_file(&self.state_dir, &name));
                inner.ecs_tokens.remove(&name);
            }
        }

        // Listeners: stop removed ones, update kept ones, start new ones.
        let old = std::mem::take(&mut inner.listeners);
        let mut listeners = Vec::new();
        for l in old {
            match spec_keys
                .iter()
                .position(|k| *k == l.key)
                .map(|i| &specs[i])
            {
                Some(spec) => {
                    let mut l = l;
                    l.spec = spec.clone();
                    listeners.push(l);
                }
                None => {
                    tracing::info!(address = %l.addr, kind = l.spec.kind(), "listener removed");
                    let _ = l.stop.send(true);
                }
            }
        }
        for (key, spec, tcp) in fresh {
            let addr = tcp.local_addr().map_err(|e| e.to_string())?;
            let options = watch::channel(Arc::new(self.serve_options(&loaded, &spec, addr))).0;
            let (stop, stop_rx) = watch::channel(false);
            let mut global = self.shutdown.subscribe();
            let stop_tx = stop.clone();
            tokio::spawn(async move {
                super::http::stopped(&mut global).await;
                let _ = stop_tx.send(true);
            });
            let (handler, task) = match &spec {
                Spec::Imds(l) => {
                    let h = watch::channel(Arc::new(self.imds_handler(&served, l, addr))).0;
                    let task =
                        tokio::spawn(serve(tcp, h.subscribe(), options.subscribe(), stop_rx));
                    (HandlerTx::Imds(h), task)
                }
                Spec::Ecs(_) => {
                    let h =
                        watch::channel(Arc::new(self.ecs_handler(&served, &ecs_tokens, addr))).0;
                    let task =
                        tokio::spawn(serve(tcp, h.subscribe(), options.subscribe(), stop_rx));
                    (HandlerTx::Ecs(h), task)
                }
            };
            tracing::info!(address = %addr, kind = spec.kind(), "listening");
            listeners.push(Listener {
                key,
                spec,
                addr,
                handler,
                options,
                stop,
                task,
            });
        }
        for l in &listeners {
            l.options
                .send_replace(Arc::new(self.serve_options(&loaded, &l.spec, l.addr)));
            match (&l.handler, &l.spec) {
                (HandlerTx::Imds(tx), Spec::Imds(spec)) => {
                    tx.send_replace(Arc::new(self.imds_handler(&served, spec, l.addr)));
                }
                (HandlerTx::Ecs(tx), Spec::Ecs(_)) => {
                    tx.send_replace(Arc::new(self.ecs_handler(&served, &ecs_tokens, l.addr)));
                }
                _ => unreachable!("listeners are matched by kind"),
            }
        }
        inner.listeners = listeners;
        inner.served = served;
        inner.loaded = Some(loaded);
        Ok(())
    }

    fn ecs_handler(
        &self,
        served: &BTreeMap<String, Served>,
        tokens: &HashMap<String, SecretString>,
        addr: SocketAddr,
    ) -> EcsHandler {
        EcsHandler {
            listener_id: addr.to_string(),
            profiles: tokens
                .iter()
                .filter_map(|(name, token)| {
                    Some((
                        name.clone(),
                        EcsProfile {
                            cell: served.get(name)?.cell.clone(),
                            token: SecretString::from(token.expose_secret().to_owned()),
                        },
                    ))
                })
                .collect(),
        }
    }

    /// Bound listeners.
    pub async fn listeners(&self) -> Vec<ListenerInfo> {
        let inner = self.inner.lock().await;
        inner
            .listeners
            .iter()
            .map(|l| ListenerInfo {
                kind: l.spec.kind(),
                address: l.addr.to_string(),
                profiles: match &l.spec {
                    Spec::Imds(s) => vec![s.profile.clone()],
                    Spec::Ecs(_) => {
                        let mut v: Vec<String> = inner.ecs_tokens.keys().cloned().collect();
                        v.sort();
                        v
                    }
                },
            })
            .collect()
    }

    /// The ready line: `credvend ready imds=ADDR[,ADDR] ecs=ADDR control=PATH`.
    pub async fn ready_line(&self, control: &Path) -> String {
        let listeners = self.listeners().await;
        let join = |kind: &str| {
            let v: Vec<String> = listeners
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| l.address.clone())
                .collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(",")
            }
        };
        format!(
            "credvend ready imds={} ecs={} control={}",
            join("imds"),
            join("ecs"),
            control.display()
        )
    }

    /// A served profile's cell and chain.
    pub async fn profile(
        &self,
        name: &str,
    ) -> Option<(Arc<ProfileCell>, Result<Arc<Chain>, ResolveError>)> {
        let inner = self.inner.lock().await;
        inner
            .served
            .get(name)
            .map(|s| (s.cell.clone(), s.chain.clone()))
    }

    /// Every served profile, by name.
    pub async fn profiles(&self) -> Vec<(Arc<ProfileCell>, Result<Arc<Chain>, ResolveError>)> {
        let inner = self.inner.lock().await;
        inner
            .served
            .values()
            .map(|s| (s.cell.clone(), s.chain.clone()))
            .collect()
    }

    /// Sends `cmd` to the refresher of `name`. False when the profile is not served or has no
    /// refresher (broken configuration).
    pub async fn command(&self, name: &str, cmd: Command) -> bool {
        let tx = {
            let inner = self.inner.lock().await;
            inner
                .served
                .get(name)
                .and_then(|s| s.refresher.as_ref().map(|r| r.tx.clone()))
        };
        match tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        }
    }

    /// The ECS token file of `name`, when ECS serves it.
    pub async fn ecs_token_path(&self, name: &str) -> Option<PathBuf> {
        let inner = self.inner.lock().await;
        inner
            .ecs_tokens
            .contains_key(name)
            .then(|| paths::ecs_token_file(&self.state_dir, name))
    }

    /// Stops accepting, lets in-flight requests finish (up to `grace`), stops the refreshers.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.send_replace(true);
        let tasks: Vec<_> = {
            let mut inner = self.inner.lock().await;
            for s in inner.served.values() {
                s.stop();
            }
            inner.listeners.drain(..).map(|l| l.task).collect()
        };
        let all = futures_join(tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("some connections did not finish within {grace:?}; closing them");
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// The role name IMDS lists for a profile: the profile name made path-safe.
pub fn role_name_for(profile: &str) -> String {
    profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}
