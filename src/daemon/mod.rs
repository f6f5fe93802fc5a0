//! The daemon: per-profile credential cells and the refreshers that fill them, the IMDS, ECS and
//! ECS-agent listeners that serve them, and the control commands.
//!
//! `Daemon::apply` turns a loaded configuration into running parts in two steps
//! (`reconcile`): `plan` does everything that can fail and changes nothing the daemon serves;
//! `commit` cannot fail. `commands` answers the control socket.

pub(crate) mod audit;
pub(crate) mod commands;
pub(crate) mod conns;
pub(crate) mod ecs;
pub(crate) mod ecs_agent;
pub(crate) mod endpoint;
pub(crate) mod http;
pub(crate) mod imds;
pub(crate) mod metrics;
pub(crate) mod metrics_http;
pub(crate) mod notify;
pub(crate) mod policy;
pub(crate) mod reconcile;
pub(crate) mod refresher;
pub(crate) mod report;
pub(crate) mod routes;
pub(crate) mod state;
pub mod token;
pub(crate) mod usage;
pub(crate) mod why;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;

use crate::context::Loaded;
use crate::mint::Minter;
use crate::profile::resolve::{Chain, ResolveError};
use crate::shutdown::Trigger;
use crate::sys::Inherited;
use reconcile::Listener;
use state::ProfileCell;
use token::TokenKey;

/// A served profile.
pub(crate) struct Unit {
    /// Its state, shared with the handlers.
    pub cell: Arc<ProfileCell>,
    /// How its credentials are made, or why they cannot be.
    pub chain: Result<Arc<Chain>, ResolveError>,
    /// Its refresher (none when the chain does not resolve).
    pub refresher: Option<refresher::Handle>,
}

/// Everything the daemon runs, changed only by [`Daemon::apply`] (under the lock).
pub(crate) struct State {
    /// The configuration last applied.
    loaded: Option<Loaded>,
    /// Served profiles by name.
    units: BTreeMap<String, Unit>,
    /// Running listeners.
    listeners: Vec<Listener>,
    /// The ECS token of every profile the ECS endpoint serves.
    ecs_tokens: HashMap<String, SecretString>,
    /// The capability ID of every profile the ECS-agent endpoint serves.
    agent_ids: HashMap<String, SecretString>,
    /// Sockets from the service manager not yet claimed by a listener.
    inherited: Vec<Inherited>,
    /// The profiles the keyring held keys for at the last apply, when it could be listed.
    listed_keys: Option<std::collections::BTreeSet<String>>,
    /// When and why the last reload failed, if the configuration serving is not the newest.
    reload_error: Option<(OffsetDateTime, String)>,
    /// The scoped sessions `credvend exec --policy` asked for: unit name → (profile, scope).
    /// Served over the ECS endpoint until the daemon stops (idle when unused).
    scopes: BTreeMap<String, (String, crate::scope::Scope)>,
}

/// The running daemon.
pub(crate) struct Daemon {
    /// Itself, for handlers that answer from the daemon's state (the metrics listener).
    me: std::sync::Weak<Daemon>,
    state_dir: PathBuf,
    key: Arc<TokenKey>,
    minter: Arc<Minter>,
    /// Which on-demand profiles are in use (remembered across restarts).
    usage: Arc<usage::Usage>,
    started: OffsetDateTime,
    shutdown: Trigger,
    /// Held across a whole apply (and a scope's insertion with its apply), so that a re-apply
    /// cannot interleave with a reload and a scope is committed before anyone else sees it.
    applying: tokio::sync::Mutex<()>,
    state: tokio::sync::Mutex<State>,
}

impl Daemon {
    /// A daemon with no configuration applied yet.
    pub fn new(
        state_dir: PathBuf,
        key: TokenKey,
        minter: Arc<Minter>,
        inherited: Vec<Inherited>,
    ) -> Arc<Daemon> {
        Arc::new_cyclic(|me| Daemon {
            me: me.clone(),
            usage: Arc::new(usage::Usage::load(&state_dir)),
            state_dir,
            key: Arc::new(key),
            minter,
            started: OffsetDateTime::now_utc(),
            shutdown: Trigger::new(),
            applying: tokio::sync::Mutex::new(()),
            state: tokio::sync::Mutex::new(State {
                loaded: None,
                units: BTreeMap::new(),
                listeners: Vec::new(),
                ecs_tokens: HashMap::new(),
                agent_ids: HashMap::new(),
                inherited,
                listed_keys: None,
                reload_error: None,
                scopes: BTreeMap::new(),
            }),
        })
    }

    /// Applies `loaded`: the initial start-up and every reload. On error nothing has changed.
    pub async fn apply(&self, loaded: Loaded) -> Result<(), String> {
        let _applying = self.applying.lock().await;
        self.apply_locked(loaded, true).await
    }

    /// [`Daemon::apply`] with `applying` held; `reload`: a new configuration (whose success
    /// clears the record of a failed reload), not the one in effect again.
    async fn apply_locked(&self, loaded: Loaded, reload: bool) -> Result<(), String> {
        let keys = reconcile::listed_keys(&self.minter).await;
        let mut state = self.state.lock().await;
        match reconcile::plan(self, &state, loaded, keys) {
            Ok(plan) => {
                reconcile::commit(self, &mut state, plan);
                if reload {
                    state.reload_error = None;
                }
                Ok(())
            }
            Err(e) => {
                state.reload_error = Some((OffsetDateTime::now_utc(), e.clone()));
                Err(e)
            }
        }
    }

    /// Records a reload that failed before it reached [`Daemon::apply`] (a file that does not
    /// parse), for `status`.
    pub async fn reload_failed(&self, message: &str) {
        self.state.lock().await.reload_error = Some((OffsetDateTime::now_utc(), message.into()));
    }

    /// Applies the configuration in effect again (after keys were added or removed: which
    /// profiles the ECS endpoint serves depends on the keyring).
    pub async fn reapply(&self) -> Result<(), String> {
        let _applying = self.applying.lock().await;
        self.reapply_locked().await
    }

    /// [`Daemon::reapply`] with `applying` held. A failed reload stays on record: the
    /// configuration in effect is still not the file's.
    async fn reapply_locked(&self) -> Result<(), String> {
        let loaded = self.state.lock().await.loaded.clone();
        match loaded {
            Some(l) => self.apply_locked(l, false).await,
            None => Ok(()),
        }
    }

    /// The ready line: `credvend ready imds=ADDR[,ADDR] ecs=ADDR [ecs-agent=ADDR]
    /// [metrics=ADDR] control=PATH` (`ecs-agent=` and `metrics=` only when those listeners are
    /// configured).
    pub async fn ready_line(&self, control: &Path) -> String {
        let state = self.state.lock().await;
        let join = |kind: &str| {
            let v: Vec<String> = state
                .listeners
                .iter()
                .filter(|l| l.kind() == kind)
                .map(|l| l.addr.to_string())
                .collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(",")
            }
        };
        let agent = match join("ecs-agent").as_str() {
            "none" => String::new(),
            addr => format!(" ecs-agent={addr}"),
        };
        let metrics = match join("metrics").as_str() {
            "none" => String::new(),
            addr => format!(" metrics={addr}"),
        };
        format!(
            "credvend ready imds={} ecs={}{agent}{metrics} control={}",
            join("imds"),
            join("ecs"),
            control.display()
        )
    }

    /// Stops accepting, lets in-flight requests finish (up to `grace`), stops the refreshers.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.fire();
        let tasks: Vec<_> = {
            let mut state = self.state.lock().await;
            for u in state.units.values() {
                if let Some(r) = &u.refresher {
                    r.stop();
                }
            }
            state.listeners.drain(..).map(|l| l.task).collect()
        };
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("some connections did not finish within {grace:?}; closing them");
        }
    }
}

/// The role name IMDS lists for a profile: the profile name made path-safe.
pub(crate) fn role_name_for(profile: &str) -> String {
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
