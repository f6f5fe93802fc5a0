//! Why the daemon does not serve a profile: one answer for every command (`env`, `exec`,
//! `refresh`, `login`, `credential-process`) and for the endpoints' error bodies, from the
//! configuration in effect. In order: the profile is not in the AWS config (with a "did you
//! mean"), its configuration is broken (the line and the fix), the keyring holds no keys for it
//! (`credvend add`), config.toml does not name it; for a served profile, what stops it now (an
//! MFA code, a lock, removed keys).

use super::State;
use crate::control::proto::{Failure, FailureKind};
use crate::problem::Problem;
use crate::profile::resolve::Source;

const RELOAD: &str = "then reload (`systemctl --user reload credvend` or SIGHUP)";

/// Why `profile` is not served (over the ECS endpoint when `container`).
pub(crate) fn not_served(state: &State, profile: &str, container: bool) -> Failure {
    let unservable = |m: String| Failure::new(FailureKind::Unservable, m);
    let Some(loaded) = state.loaded.as_ref() else {
        return Failure::new(FailureKind::Unavailable, "the daemon is starting; retry");
    };
    let chain = match super::reconcile::resolve_in(loaded, profile) {
        Ok(chain) => chain,
        Err(e) => return unservable(e.message),
    };
    if let (Source::Keys { keys, .. }, Some(listed)) = (&chain.source, &state.listed_keys)
        && !listed.contains(keys)
    {
        return unservable(if keys == profile {
            format!("profile `{profile}` has no keys in the keyring: run `credvend add {profile}`")
        } else {
            format!(
                "profile `{profile}` starts with the keys of `{keys}`, which the keyring does not hold: run `credvend add {keys}`"
            )
        });
    }
    let not_served = |m: String| Failure::new(FailureKind::NotServed, m);
    let has_ecs = loaded.config.ecs.is_some() || loaded.config.ecs_agent.is_some();
    match (has_ecs, container) {
        (false, true) => not_served(format!(
            "the daemon has no ECS endpoint: add an [ecs] (or [ecs_agent]) section to config.toml, {RELOAD}"
        )),
        (true, true) => not_served(format!(
            "the ECS endpoint does not serve profile `{profile}`: list it in [ecs] profiles of config.toml (or remove that list to serve every profile), {RELOAD}"
        )),
        (_, false) => not_served(format!(
            "the daemon does not serve profile `{profile}`: name it in an [[imds]] listener or in [ecs] profiles of config.toml, {RELOAD}"
        )),
    }
}

/// The failure for a served profile that has nothing servable because of `problem`.
pub(crate) fn failure(problem: &Problem) -> Failure {
    let kind = if problem.code.is_transient() {
        FailureKind::Unavailable
    } else {
        FailureKind::Unservable
    };
    Failure::new(kind, format!("{} ({})", problem.message, problem.code))
}
