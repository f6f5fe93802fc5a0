//! The daemon's answers to control requests (`status`, `login`, `refresh`, `lock`,
//! `credentials`, `rotate-agent-id`): domain state in, [`proto`] wire types out.

use std::sync::Arc;

use super::policy::CLI_COLD_START_WAIT;
use super::refresher::Command;
use super::state::{Asker, Phase, ProfileCell, Status};
use super::{Daemon, State};
use crate::control::proto::{
    self, Credentials, Failure, FailureKind, ListenerStatus, ProblemStatus, ProfileStatus, Reply,
    Request, StatusReport,
};
use crate::control::server::Service;
use crate::paths;
use crate::problem::{Problem, ProblemCode};
use crate::profile::resolve::{Chain, ResolveError};

impl Service for Daemon {
    async fn handle(&self, req: Request) -> Result<Reply, Failure> {
        match req {
            Request::Status => Ok(Reply::Status(self.status().await)),
            Request::Login { profile, code } => self.login(&profile, code).await,
            Request::Refresh { profile } => self.command(profile, Command::Refresh).await,
            Request::Lock { profile } => self.command(profile, Command::Lock).await,
            Request::Credentials { profile } => self.credentials(&profile).await,
            Request::RotateAgentId { profile } => self.rotate_agent_id(profile).await,
        }
    }
}

/// The refusal for a profile the daemon does not serve.
fn not_served(profile: &str) -> Failure {
    Failure::new(
        FailureKind::NotServed,
        format!(
            "the daemon does not serve profile `{profile}`: name it in an [[imds]] listener or in [ecs] profiles of config.toml, then reload (`systemctl --user reload credvend` or SIGHUP)"
        ),
    )
}

fn broken(e: &ResolveError) -> Failure {
    Failure::new(FailureKind::Unservable, e.message.clone())
}

fn problem_failure(p: &Problem) -> Failure {
    let kind = if p.code.is_transient() {
        FailureKind::Unavailable
    } else {
        FailureKind::Unservable
    };
    Failure::new(kind, format!("{} ({})", p.message, p.code))
}

impl Daemon {
    /// A served profile's cell and chain.
    async fn unit(
        &self,
        name: &str,
    ) -> Option<(Arc<ProfileCell>, Result<Arc<Chain>, ResolveError>)> {
        let state = self.state.lock().await;
        state
            .units
            .get(name)
            .map(|u| (u.cell.clone(), u.chain.clone()))
    }

    async fn status(&self) -> StatusReport {
        let state = self.state.lock().await;
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            clock_skew_seconds: crate::sts::clock_skew().map(|s| s.seconds),
            listeners: state
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    kind: l.kind().to_owned(),
                    address: l.addr.to_string(),
                    profiles: l.profiles(&state.ecs_tokens, &state.agent_ids),
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
        let Status {
            phase,
            last_error,
            next_refresh,
            last_refresh,
            refreshes,
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
            expiration: current.as_ref().map(|v| v.creds.expiration),
            access_key_id: current.as_ref().map(|v| v.creds.access_key_id.clone()),
            region: chain.as_ref().ok().map(|c| c.region.clone()),
            requests: cell.requests(),
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
        }
    }

    async fn login(&self, profile: &str, code: secrecy::SecretString) -> Result<Reply, Failure> {
        let (_, chain) = self
            .unit(profile)
            .await
            .ok_or_else(|| not_served(profile))?;
        let chain = chain.map_err(|e| broken(&e))?;
        let expiry = self.minter.login(&chain, code).await.map_err(|e| {
            let kind = match e.code() {
                ProblemCode::InvalidConfiguration => FailureKind::NotApplicable,
                c if c.is_transient() => FailureKind::Unavailable,
                _ => FailureKind::Unservable,
            };
            Failure::new(kind, e.describe())
        })?;
        // Every served profile sharing this MFA session mints now.
        let session = chain.mfa_session();
        let sharing: Vec<String> = {
            let state = self.state.lock().await;
            state
                .units
                .iter()
                .filter(|(_, u)| u.chain.as_ref().is_ok_and(|c| c.mfa_session() == session))
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in sharing {
            self.send(&name, Command::Refresh).await;
        }
        Ok(Reply::LoggedIn {
            session_expiration: expiry,
        })
    }

    /// Sends `cmd` to the refresher of `name`; false when it has none (broken configuration).
    async fn send(&self, name: &str, cmd: Command) -> bool {
        let tx = {
            let state = self.state.lock().await;
            state
                .units
                .get(name)
                .and_then(|u| u.refresher.as_ref().map(|r| r.tx.clone()))
        };
        match tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        }
    }

    /// `refresh` / `lock` of one profile, or of every profile that has a refresher (a profile
    /// whose configuration is broken holds nothing and must not stop the others).
    async fn command(&self, profile: Option<String>, cmd: Command) -> Result<Reply, Failure> {
        let names: Vec<String> = match &profile {
            Some(name) => vec![name.clone()],
            None => self.state.lock().await.units.keys().cloned().collect(),
        };
        let mut done = Vec::new();
        for name in names {
            if self.send(&name, cmd).await {
                done.push(name);
            } else if let Some(name) = &profile {
                return Err(match self.unit(name).await {
                    None => not_served(name),
                    Some((_, Err(e))) => broken(&e),
                    Some(_) => Failure::new(
                        FailureKind::Unavailable,
                        format!("profile `{name}` is shutting down"),
                    ),
                });
            }
        }
        Ok(match cmd {
            Command::Refresh => Reply::Refreshing { profiles: done },
            Command::Lock => Reply::Locked { profiles: done },
        })
    }

    async fn credentials(&self, profile: &str) -> Result<Reply, Failure> {
        let (cell, _) = self
            .unit(profile)
            .await
            .ok_or_else(|| not_served(profile))?;
        // A CLI caller can wait longer than an SDK on a cold start (the first mint).
        let asker = Asker {
            cold_start: CLI_COLD_START_WAIT,
            audit: None,
            user_agent: "credvend",
        };
        let v = cell.serve(&asker).await.map_err(|p| problem_failure(&p))?;
        Ok(Reply::Credentials(Credentials {
            access_key_id: v.creds.access_key_id.clone(),
            secret_access_key: v.creds.secret_access_key.clone(),
            session_token: v
                .creds
                .session_token
                .clone()
                .unwrap_or_else(|| secrecy::SecretString::from("")),
            expiration: v.creds.expiration,
            account_id: v.creds.account_id.clone(),
        }))
    }
}

impl Daemon {
    /// `rotate-agent-id`: a new ECS-agent ID for `profile`, the old one refused at once.
    async fn rotate_agent_id(&self, profile: String) -> Result<Reply, Failure> {
        let mut state = self.state.lock().await;
        match super::reconcile::rotate_agent_id(self, &mut state, &profile) {
            Ok(true) => Ok(Reply::AgentIdRotated { profile }),
            Ok(false) => Err(Failure::new(
                FailureKind::NotServed,
                format!(
                    "the [ecs_agent] listener does not serve profile `{profile}`: add an [ecs_agent] section to config.toml \
                     (its `profiles` naming `{profile}`, or none for every profile), then reload"
                ),
            )),
            Err(e) => Err(Failure::new(
                FailureKind::Unavailable,
                format!(
                    "cannot write the new ECS agent ID of `{profile}` ({e}); the old ID is still served"
                ),
            )),
        }
    }
}

fn wire_phase(p: Phase) -> proto::Phase {
    match p {
        Phase::Starting => proto::Phase::Starting,
        Phase::Fresh => proto::Phase::Fresh,
        Phase::Refreshing => proto::Phase::Refreshing,
        Phase::NeedsMfa => proto::Phase::NeedsMfa,
        Phase::Error => proto::Phase::Error,
        Phase::Locked => proto::Phase::Locked,
    }
}
