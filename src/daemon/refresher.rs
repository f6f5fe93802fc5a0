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
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// The problem recorded for a failed mint.
pub fn problem(e: &MintError) -> Problem {
    Problem {
        code: e.code().to_owned(),
        message: describe(e),
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
    let task = tokio::spawn(run(cell, chain, minter, policy, rx, shutdown));
    Handle { tx, task }
}

async fn run(
    cell: Arc<ProfileCell>,
    chain: Arc<Chain>,
    minter: Arc<Minter>,
    policy: Policy,
    mut rx: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut locked = false;
    loop {
        let mut wake: Option<OffsetDateTime> = None;
        if !locked {
            if cell.current().is_some() {
                cell.set_phase(Phase::Refreshing);
            }
            let started = OffsetDateTime::now_utc();
            match minter.mint(&chain).await {
                Ok(minted) => {
                    failures = 0;
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
        // Wait for the wake time, a command, or shutdown.
        loop {
            let sleep = match wake {
                Some(at) => {
                    let left = at - OffsetDateTime::now_utc();
                    if left <= time::Duration::ZERO {
                        break;
                    }
                    Duration::try_from(left)
                        .unwrap_or(WALL_CLOCK_CHECK)
                        .min(WALL_CLOCK_CHECK)
                }
                None => WALL_CLOCK_CHECK,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
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
