//! `status`: the daemon's state as the control protocol's [`StatusReport`].

use std::sync::Arc;

use super::routes::RouteStat;
use super::state::{Phase, ProfileCell, Status};
use super::{Daemon, State};
use crate::config::RouteFrom;
use crate::control::proto::{
    self, ListenerStatus, ProblemStatus, ProfileStatus, ReloadError, RouteStatus, StatusReport,
};
use crate::paths;
use crate::profile::resolve::{Chain, ResolveError};

impl Daemon {
    /// Everything `credvend status` shows.
    pub(crate) async fn status(&self) -> StatusReport {
        let state = self.state.lock().await;
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            clock_skew_seconds: crate::sts::clock_skew().map(|s| s.seconds),
            reload_error: state.reload_error.as_ref().map(|(at, m)| ReloadError {
                at: *at,
                message: m.clone(),
            }),
            listeners: state
                .listeners
                .iter()
                .map(|l| {
                    let (routes, unrouted) = l.routes().unzip();
                    ListenerStatus {
                        kind: l.kind().to_owned(),
                        address: l.addr.to_string(),
                        profiles: l.profiles(&state.ecs_tokens, &state.agent_ids),
                        routes: routes
                            .unwrap_or_default()
                            .into_iter()
                            .map(route_status)
                            .collect(),
                        unrouted_refused: unrouted,
                    }
                })
                .collect(),
            profiles: state
                .units
                .iter()
                .map(|(name, u)| self.profile_status(&state, name, &u.cell, &u.chain))
                .collect(),
        }
    }

    fn profile_status(
        &self,
        state: &State,
        name: &str,
        cell: &ProfileCell,
        chain: &Result<Arc<Chain>, ResolveError>,
    ) -> ProfileStatus {
        let current = cell.current();
        let creds = current.as_ref().map(|v| &v.creds);
        let Status {
            phase,
            last_error,
            next_refresh,
            last_refresh,
            refreshes,
            minting_since,
        } = cell.status();
        ProfileStatus {
            name: name.to_owned(),
            source: match chain {
                Ok(c) => c.describe(),
                Err(e) => format!("invalid configuration: {e}"),
            },
            phase: wire_phase(phase),
            last_error: last_error.map(|p| ProblemStatus {
                code: p.code.as_str().to_owned(),
                message: p.message,
                since: p.since,
            }),
            next_refresh,
            last_refresh,
            refreshes,
            expiration: creds.map(|c| c.expiration),
            access_key_id: creds.map(|c| c.access_key_id.clone()),
            identity: creds.and_then(|c| c.arn.clone()),
            packed_policy_size: creds.and_then(|c| c.packed_policy_size),
            minting_since,
            region: chain.as_ref().ok().map(|c| c.region.clone()),
            requests: cell.requests(),
            on_demand: !state
                .loaded
                .as_ref()
                .is_some_and(|l| super::reconcile::warm_profiles(&l.config).contains(name)),
            last_use: cell.last_use(),
            mfa_serial: chain
                .as_ref()
                .ok()
                .and_then(|c| c.mfa_serial().map(str::to_owned)),
            ecs_token_file: state.ecs_tokens.contains_key(name).then(|| {
                paths::ecs_token_file(&self.state_dir, name)
                    .display()
                    .to_string()
            }),
            ecs_agent_id_file: state.agent_ids.contains_key(name).then(|| {
                paths::ecs_agent_id_file(&self.state_dir, name)
                    .display()
                    .to_string()
            }),
            warnings: state
                .loaded
                .as_ref()
                .map(|l| {
                    crate::profile::check::check_profile(&l.profiles, name)
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn route_status(r: RouteStat) -> RouteStatus {
    let (from, uid) = match r.from {
        RouteFrom::Net(net) => (Some(net.to_string()), None),
        RouteFrom::Uid(uid) => (None, Some(uid)),
    };
    RouteStatus {
        from,
        uid,
        unit: (r.unit != r.profile).then_some(r.unit),
        profile: r.profile,
        served: r.served,
        refused: r.refused,
    }
}

fn wire_phase(p: Phase) -> proto::Phase {
    match p {
        Phase::Starting => proto::Phase::Starting,
        Phase::Fresh => proto::Phase::Fresh,
        Phase::Refreshing => proto::Phase::Refreshing,
        Phase::NeedsMfa => proto::Phase::NeedsMfa,
        Phase::NeedsLogin => proto::Phase::NeedsLogin,
        Phase::Error => proto::Phase::Error,
        Phase::Locked => proto::Phase::Locked,
        Phase::Idle => proto::Phase::Idle,
    }
}
