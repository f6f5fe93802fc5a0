//! One task per served profile: mints at start-up, rotates before expiry, retries with backoff,
//! obeys `refresh` / `lock` commands. It is the only code that writes the profile's cell, so
//! "one STS call per refresh however many clients ask" holds by construction.
//!
//! Timers use the wall clock, checked at least once a minute: tokio's monotonic clock stops while
//! a laptop sleeps, and a rotation due during the sleep must happen right after waking.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use super::notify;
use super::policy::Policy;
use super::state::{Phase, Problem, ProfileCell, Vended};
use crate::mint::{MintError, Minter, describe};
use crate::profile::resolve::Chain;

/// Longest single sleep; the wall clock is re-read after each.
const WALL_CLOCK_CHECK: Duration = Duration::from_secs(60);

/// Commands for a refresher.
#[derive(Debug)]
pub enum Command {
    /// Mint now (also ends a `lock`).
    Refresh,
    /// Forget the credentials and cached sessions; mint again only on `Refresh`.
    Lock,
}

/// A running refresher's handle.
pub struct Handle {
    /// Commands.
    pub tx: mpsc::Sender<Command>,
    /// The refresh policy; a reload that changes `[refresh]` sends the new one here and the
    /// refresher reschedules the credentials it holds instead of minting again.
    pub policy: watch::Sender<Policy>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// The problem recorded for a failed mint.
pub fn problem(e: &MintError) -> Problem {
    Problem {
        code: e.code().to_owned(),
        message: describe(e),
        transient: e.is_transient(),
        since: OffsetDateTime::now_utc(),
    }
}

/// Starts the refresher of `cell` for `chain`.
pub fn spawn(
    cell: Arc<ProfileCell>,
    chain: Arc<Chain>,
    minter: Arc<Minter>,
    policy: Policy,
    shutdown: watch::Receiver<bool>,
) -> Handle {
    let (tx, rx) = mpsc::channel(8);
    let (policy, policy_rx) = watch::channel(policy);
    let task = tokio::spawn(run(cell, chain, minter, policy_rx, rx, shutdown));
    Handle { tx, policy, task }
}

async fn run(
    cell: Arc<ProfileCell>,
    chain: Arc<Chain>,
    minter: Arc<Minter>,
    mut policy_rx: watch::Receiver<Policy>,
    mut rx: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut locked = false;
    // The MFA session expiry the user was last reminded about, and whether they were told that a
    // code is needed now (once per episode).
    let mut reminded_for: Option<OffsetDateTime> = None;
    let mut told_needs_mfa = false;
    loop {
        let policy = *policy_rx.borrow_and_update();
        let mut wake: Option<OffsetDateTime> = None;
        if !locked {
            match (cell.current().is_some(), cell.status().phase) {
                (true, _) => cell.set_phase(Phase::Refreshing),
                // Unlocking: clients see "pending" (and wait for it) rather than "locked".
                (false, Phase::Locked) => cell.set_phase(Phase::Starting),
                (false, _) => {}
            }
            let started = OffsetDateTime::now_utc();
            match minter.mint(&chain).await {
                Ok(minted) => {
                    failures = 0;
                    told_needs_mfa = false;
                    let next = policy.rotate_at(started, minted.creds.expiration, fastrand::f64());
                    tracing::info!(
                        profile = %cell.name,
                        access_key_id = %minted.creds.access_key_id,
                        expiration = %crate::creds::format_aws_time(minted.creds.expiration),
                        next_refresh = %crate::creds::format_aws_time(next),
                        "minted credentials"
                    );
                    cell.install(Vended::new(minted.creds, started, minted.role_arn), next);
                    wake = Some(next);
                }
                Err(e @ MintError::NeedsMfa { .. }) => {
                    tracing::warn!(profile = %cell.name, "{e}");
                    cell.fail(Phase::NeedsMfa, problem(&e), None);
                    if !told_needs_mfa {
                        told_needs_mfa = true;
                        notify::desktop(
                            "credvend: MFA code needed",
                            &format!(
                                "Profile {} needs an MFA code: run `credvend login {}`",
                                cell.name, cell.name
                            ),
                        );
                    }
                    // Keep serving what is left; a new code arrives with `login` + `Refresh`.
                }
                Err(e) => {
                    failures += 1;
                    let now = OffsetDateTime::now_utc();
                    let remaining = cell
                        .current()
                        .and_then(|v| Duration::try_from(v.creds.expiration - now).ok());
                    let delay = policy.retry_after(failures, remaining, fastrand::f64());
                    let next = now + time::Duration::try_from(delay).unwrap_or(time::Duration::MAX);
                    tracing::warn!(profile = %cell.name, failures, retry_in = ?delay, "{e}");
                    cell.fail(Phase::Error, problem(&e), Some(next));
                    wake = Some(next);
                }
            }
        }
        // Wait for the wake time, a command, or shutdown; remind about an ending MFA session on
        // the way.
        loop {
            let now = OffsetDateTime::now_utc();
            let remind = minter
                .mfa_session_expiry(&chain)
                .filter(|exp| reminded_for != Some(*exp) && *exp > now);
            if let Some(exp) = remind
                && notify::remind_at(exp) <= now
            {
                reminded_for = Some(exp);
                let at = crate::creds::format_aws_time(exp);
                tracing::info!(profile = %cell.name, session_expiration = %at, "the MFA session ends soon");
                notify::desktop(
                    "credvend: MFA session ending",
                    &format!(
                        "The MFA session of profile {} ends at {at}: run `credvend login {}`",
                        cell.name, cell.name
                    ),
                );
                continue;
            }
            if wake.is_some_and(|w| w <= now) {
                break;
            }
            let next_event = match (wake, remind.map(notify::remind_at)) {
                (Some(w), Some(r)) => Some(w.min(r)),
                (w, r) => w.or(r),
            };
            let sleep = match next_event {
                Some(at) => Duration::try_from(at - now)
                    .unwrap_or(Duration::ZERO)
                    .min(WALL_CLOCK_CHECK),
                None => WALL_CLOCK_CHECK,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                Ok(()) = policy_rx.changed() => {
                    let policy = *policy_rx.borrow_and_update();
                    // Reschedule what is held; a pending retry keeps its own schedule.
                    if !locked
                        && failures == 0
                        && let Some(v) = cell.current()
                    {
                        let next = policy.rotate_at(v.issued, v.creds.expiration, fastrand::f64());
                        tracing::info!(
                            profile = %cell.name,
                            next_refresh = %crate::creds::format_aws_time(next),
                            "refresh settings changed; rotation rescheduled"
                        );
                        cell.set_next_refresh(next);
                        wake = Some(next);
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Refresh) => {
                        locked = false;
                        break;
                    }
                    Some(Command::Lock) => {
                        locked = true;
                        wake = None;
                        cell.forget();
                        minter.forget(&chain).await;
                        tracing::info!(profile = %cell.name, "locked: credentials forgotten");
                    }
                    None => return,
                },
                _ = super::http::stopped(&mut shutdown) => return,
            }
        }
    }
}
