//! The daemon's answers to control requests: domain state in, `control::proto` wire types out.
//! `status` is in `report.rs`; why a profile is not served, in `why.rs`.

use std::sync::Arc;

use super::Daemon;
use super::policy::CLI_COLD_START_WAIT;
use super::refresher::Command;
use super::state::{Asker, Phase, ProfileCell};
use super::why;
use crate::control::proto::{Credentials, Failure, FailureKind, Reply, Request};
use crate::control::server::Service;
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
            Request::Check { profile, container } => self.check(&profile, container).await,
            Request::KeysChanged { profile, removed } => self.keys_changed(&profile, removed).await,
            Request::SignInChanged { session } => self.sign_in_changed(&session).await,
            Request::RotateAgentId { profile } => self.rotate_agent_id(profile).await,
            Request::Scope {
                profile,
                policy,
                policy_arns,
            } => self.scope(profile, policy, policy_arns).await,
            Request::Metrics => Ok(Reply::Metrics {
                text: self.metrics_text().await,
            }),
        }
    }
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

    /// Why `profile` is not served (over ECS when `container`).
    async fn not_served(&self, profile: &str, container: bool) -> Failure {
        why::not_served(&*self.state.lock().await, profile, container)
    }

    async fn login(&self, profile: &str, code: secrecy::SecretString) -> Result<Reply, Failure> {
        let Some((cell, chain)) = self.unit(profile).await else {
            return Err(self.not_served(profile, false).await);
        };
        let chain = chain.map_err(|e| Failure::new(FailureKind::Unservable, e.message))?;
        // The profile logged in for is about to be used: it mints (others sharing the session
        // mint only if they are in use).
        cell.touch(time::OffsetDateTime::now_utc());
        let expiry = self.minter.login(&chain, code).await.map_err(|e| {
            let kind = match e.code() {
                ProblemCode::InvalidConfiguration => FailureKind::NotApplicable,
                c if c.is_transient() => FailureKind::Unavailable,
                _ => FailureKind::Unservable,
            };
            Failure::new(kind, e.describe())
        })?;
        // Every served profile sharing this MFA session and in use mints now (idle ones stay
        // idle: `mint_or_idle`).
        let session = chain.mfa_session();
        let sharing = self.units_where(|c| c.mfa_session() == session).await;
        for name in sharing {
            self.send(&name, Command::Refresh).await;
        }
        Ok(Reply::LoggedIn {
            session_expiration: expiry,
        })
    }

    /// The served profiles whose chain satisfies `pred`.
    async fn units_where(&self, pred: impl Fn(&Chain) -> bool) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .units
            .iter()
            .filter(|(_, u)| u.chain.as_ref().is_ok_and(|c| pred(c)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The IAM Identity Center sign-in of `session` changed in the keyring: the minter forgets
    /// what it held, and every served profile of that session mints now.
    async fn sign_in_changed(&self, session: &str) -> Result<Reply, Failure> {
        self.minter.sso_signed_in(session).await;
        let sharing: Vec<String> = {
            let state = self.state.lock().await;
            state
                .units
                .iter()
                .filter(|(_, u)| {
                    u.chain
                        .as_ref()
                        .is_ok_and(|c| c.sso().is_some_and(|s| s.session.storage_key() == session))
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut profiles = Vec::new();
        for name in sharing {
            if self.send(&name, Command::Refresh).await {
                profiles.push(name);
            }
        }
        Ok(Reply::Refreshing { profiles })
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
        let names: Vec<String> = {
            let state = self.state.lock().await;
            match &profile {
                Some(name) => {
                    // Named on purpose: an idle profile mints too.
                    if let (Command::Refresh, Some(u)) = (&cmd, state.units.get(name)) {
                        u.cell.touch(time::OffsetDateTime::now_utc());
                    }
                    vec![name.clone()]
                }
                // Idle profiles hold nothing to refresh: they stay idle (but `lock` reaches
                // them: the MFA or SSO sessions they would mint from are forgotten too).
                None => state
                    .units
                    .iter()
                    .filter(|(_, u)| {
                        !matches!(cmd, Command::Refresh) || u.cell.status().phase != Phase::Idle
                    })
                    .map(|(name, _)| name.clone())
                    .collect(),
            }
        };
        let mut done = Vec::new();
        for name in names {
            if self.send(&name, cmd.clone()).await {
                done.push(name);
            } else if let Some(name) = &profile {
                return Err(match self.unit(name).await {
                    None => self.not_served(name, false).await,
                    Some((_, Err(e))) => Failure::new(FailureKind::Unservable, e.message),
                    Some(_) => Failure::new(
                        FailureKind::Unavailable,
                        format!("profile `{name}` is shutting down"),
                    ),
                });
            }
        }
        Ok(match cmd {
            Command::Lock => {
                let mfa = self
                    .units_where(|c| c.mfa_session().is_some() || c.sso().is_some())
                    .await;
                Reply::Locked {
                    needs_login: done.iter().filter(|n| mfa.contains(n)).cloned().collect(),
                    profiles: done,
                }
            }
            Command::Refresh | Command::Forget(_) => Reply::Refreshing { profiles: done },
        })
    }

    async fn credentials(&self, profile: &str) -> Result<Reply, Failure> {
        let Some((cell, chain)) = self.unit(profile).await else {
            return Err(self.not_served(profile, false).await);
        };
        // A CLI caller can wait longer than an SDK on a cold start (the first mint).
        let asker = Asker {
            cold_start: CLI_COLD_START_WAIT,
            audit: None,
            user_agent: "credvend",
        };
        let v = cell.serve(&asker).await.map_err(|p| why::failure(&p))?;
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
            region: chain.ok().map(|c| c.region.clone()),
        }))
    }

    /// Whether `profile` is served (over ECS when `container`) and can be now or soon; else why.
    async fn check(&self, profile: &str, container: bool) -> Result<Reply, Failure> {
        let cell = {
            let state = self.state.lock().await;
            let listed = !container
                || state.ecs_tokens.contains_key(profile)
                || state.agent_ids.contains_key(profile);
            match state.units.get(profile) {
                Some(u) if listed => u.cell.clone(),
                _ => return Err(why::not_served(&state, profile, container)),
            }
        };
        // `exec` and `env` ask before the child starts: an idle profile mints now, so the
        // child's first request is answered from memory.
        if cell.warm(CLI_COLD_START_WAIT).await.is_none()
            && let Some(p) = cell.status().last_error.filter(|p| !p.code.is_transient())
        {
            return Err(why::failure(&p));
        }
        Ok(Reply::Served)
    }

    /// Keys stored for `profile` were added, replaced or removed: every served profile whose
    /// chain starts with them mints again, or forgets what it holds and says why.
    async fn keys_changed(&self, profile: &str, removed: bool) -> Result<Reply, Failure> {
        let affected = self.units_where(|c| c.key_profile() == Some(profile)).await;
        for name in &affected {
            let cmd = if removed {
                let problem = Problem::new(
                    ProblemCode::MissingKeys,
                    format!(
                        "the keys of `{profile}` were removed (`credvend remove {profile}`): run `credvend add {profile}`"
                    ),
                );
                // Stop serving before replying, so that when `credvend remove` returns nothing
                // minted from the removed keys is handed out; the refresher then forgets the
                // rest (its cached sessions) and stops rotating.
                if let Some(unit) = self.state.lock().await.units.get(name) {
                    unit.cell.forget();
                    unit.cell.fail(Phase::Error, problem.clone(), None);
                }
                Command::Forget(problem)
            } else {
                Command::Refresh
            };
            self.send(name, cmd).await;
        }
        // Which profiles the ECS endpoint serves by default depends on the keyring.
        if let Err(e) = self.reapply().await {
            tracing::warn!("could not re-apply the configuration after a key change: {e}");
        }
        Ok(Reply::Affected { profiles: affected })
    }

    /// `scope`: `profile`'s session with a consumer's session policy, served over the ECS
    /// endpoint as a unit of its own (`scope.rs`), minted before the answer.
    async fn scope(
        &self,
        profile: String,
        policy: Option<String>,
        policy_arns: Vec<String>,
    ) -> Result<Reply, Failure> {
        let bad = |m: String| Failure::new(FailureKind::NotApplicable, m);
        if policy
            .as_deref()
            .is_some_and(|p| p.trim_start().starts_with("file://"))
        {
            return Err(bad(
                "send the policy document itself, not a file:// name".into()
            ));
        }
        let scope = crate::scope::Scope::new(policy, policy_arns, "--policy").map_err(bad)?;
        let unit = scope.unit(&profile);
        // A second `exec` with the same policy waits here until the first one's scope is
        // committed (served, its token file written).
        let applying = self.applying.lock().await;
        let new = {
            let mut state = self.state.lock().await;
            let Some(loaded) = state.loaded.as_ref() else {
                return Err(Failure::new(
                    FailureKind::Unavailable,
                    "the daemon is starting; retry",
                ));
            };
            if loaded.config.ecs.is_none() {
                return Err(Failure::new(
                    FailureKind::NotServed,
                    "a scoped session is served over the ECS endpoint, and the daemon has none: add an [ecs] \
                     section to config.toml, then reload",
                ));
            }
            if let Err(e) = super::reconcile::resolve_scoped(loaded, &profile, &scope) {
                return Err(match super::reconcile::resolve_in(loaded, &profile) {
                    Err(_) => why::not_served(&state, &profile, false),
                    Ok(_) => Failure::new(FailureKind::Unservable, e.message),
                });
            }
            state
                .scopes
                .insert(unit.clone(), (profile.clone(), scope))
                .is_none()
        };
        if new {
            tracing::info!(
                profile,
                unit,
                "serving a scoped session for `credvend exec --policy`"
            );
            if let Err(e) = self.reapply_locked().await {
                self.state.lock().await.scopes.remove(&unit);
                return Err(Failure::new(FailureKind::Unavailable, e));
            }
        }
        drop(applying);
        self.check(&unit, true).await?;
        Ok(Reply::Scoped { unit })
    }

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
