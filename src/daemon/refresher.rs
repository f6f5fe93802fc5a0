//! One task per served profile: mints at start-up, rotates before expiry, retries with backoff,
//! obeys `refresh` / `lock` commands. It is the only code that writes the profile's cell, so
//! "one STS call per refresh however many clients ask" holds by construction.
//!
//! The task is a loop over a closed set of [`Event`]s; [`Refresher::next_event`] is the only
//! place that waits. Timers use the wall clock, checked at least once a minute: tokio's
//! monotonic clock stops while a laptop sleeps, and a rotation due during the sleep must happen
//! right after waking.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use super::notify;
use super::policy::Policy;
use super::state::{Phase, ProfileCell, Vended};
use crate::creds::format_aws_time;
use crate::mint::{MintError, Minter};
use crate::problem::Problem;
use crate::profile::resolve::Chain;
use crate::shutdown::Shutdown;

/// Longest single sleep; the wall clock is re-read after each.
const WALL_CLOCK_CHECK: Duration = Duration::from_secs(60);

/// Commands for a refresher.
#[derive(Clone, Debug)]
pub(crate) enum Command {
    /// Mint now (also ends a `lock`).
    Refresh,
    /// Forget the credentials and cached sessions; mint again only on `Refresh`.
    Lock,
    /// Like `Lock`, with the reason recorded as the profile's problem (its keys were removed).
    Forget(Problem),
}

/// A running refresher's handle.
pub(crate) struct Handle {
    /// Commands.
    pub tx: mpsc::Sender<Command>,
    /// The refresh policy; a reload that changes `[refresh]` sends the new one here and the
    /// refresher reschedules the credentials it holds instead of minting again.
    pub policy: watch::Sender<Policy>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Stops the task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Everything that can wake a refresher.
#[derive(Debug)]
enum Event {
    /// The scheduled rotation or retry is due.
    Due,
    /// The MFA session ending at this time is about to end: remind the user.
    Remind(OffsetDateTime),
    /// A command from the control socket.
    Command(Command),
    /// New `[refresh]` settings.
    PolicyChanged(Policy),
    /// The daemon stops (or the handle was dropped).
    Shutdown,
}

/// Starts the refresher of `cell` for `chain`.
pub(crate) fn spawn(
    cell: Arc<ProfileCell>,
    chain: Arc<Chain>,
    minter: Arc<Minter>,
    policy: Policy,
    shutdown: Shutdown,
) -> Handle {
    let (tx, rx) = mpsc::channel(8);
    let (policy_tx, policy_rx) = watch::channel(policy);
    let refresher = Refresher {
        cell,
        chain,
        minter,
        policy,
        failures: 0,
        locked: false,
        wake: None,
        reminded_for: None,
        told_needs_mfa: false,
        told_needs_login: false,
    };
    let task = tokio::spawn(refresher.run(rx, policy_rx, shutdown));
    Handle {
        tx,
        policy: policy_tx,
        task,
    }
}

/// The state of one profile's refresher.
struct Refresher {
    cell: Arc<ProfileCell>,
    chain: Arc<Chain>,
    minter: Arc<Minter>,
    policy: Policy,
    /// Failed attempts since the last success (drives the backoff).
    failures: u32,
    /// `credvend lock` is in force: mint only on `Refresh`.
    locked: bool,
    /// When to mint next (`None`: only on a command).
    wake: Option<OffsetDateTime>,
    /// The MFA session expiry the user was last reminded about.
    reminded_for: Option<OffsetDateTime>,
    /// Whether the user was told that a code is needed now (once per episode).
    told_needs_mfa: bool,
    /// Whether the user was told that a sign-in is needed now (once per episode).
    told_needs_login: bool,
}

impl Refresher {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut policy: watch::Receiver<Policy>,
        mut shutdown: Shutdown,
    ) {
        policy.borrow_and_update();
        self.mint().await;
        loop {
            match self
                .next_event(&mut commands, &mut policy, &mut shutdown)
                .await
            {
                Event::Due => self.mint().await,
                Event::Remind(expiry) => self.remind(expiry),
                Event::Command(Command::Refresh) => {
                    self.locked = false;
                    self.mint().await;
                }
                Event::Command(Command::Lock) => self.lock().await,
                Event::Command(Command::Forget(problem)) => self.forget(problem).await,
                Event::PolicyChanged(p) => self.reschedule(p),
                Event::Shutdown => return,
            }
        }
    }

    /// Waits for the next event: the wake time, a reminder, a command, new settings, shutdown.
    async fn next_event(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        policy: &mut watch::Receiver<Policy>,
        shutdown: &mut Shutdown,
    ) -> Event {
        loop {
            let now = OffsetDateTime::now_utc();
            let remind = self
                .minter
                .mfa_session_expiry(&self.chain)
                .filter(|exp| self.reminded_for != Some(*exp) && *exp > now);
            if let Some(exp) = remind
                && notify::remind_at(exp) <= now
            {
                return Event::Remind(exp);
            }
            let token_due = self.sso_token_due();
            if self.wake.is_some_and(|w| w <= now) || token_due.is_some_and(|t| t <= now) {
                return Event::Due;
            }
            let next = [self.wake, remind.map(notify::remind_at), token_due]
                .into_iter()
                .flatten()
                .min();
            let sleep = next
                .map(|at| Duration::try_from(at - now).unwrap_or(Duration::ZERO))
                .unwrap_or(WALL_CLOCK_CHECK)
                .min(WALL_CLOCK_CHECK);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                Ok(()) = policy.changed() => {
                    return Event::PolicyChanged(*policy.borrow_and_update());
                }
                cmd = commands.recv() => return match cmd {
                    Some(c) => Event::Command(c),
                    None => Event::Shutdown,
                },
                _ = shutdown.wait() => return Event::Shutdown,
            }
        }
    }

    /// Mints, installs the result or records the failure, and sets the next wake time.
    async fn mint(&mut self) {
        let started = OffsetDateTime::now_utc();
        let phase = match (self.cell.current().is_some(), self.cell.status().phase) {
            (true, _) => Phase::Refreshing,
            // Unlocking: clients see "pending" (and wait for it) rather than "locked".
            (false, Phase::Locked) => Phase::Starting,
            (false, p) => p,
        };
        self.cell.minting(phase, started);
        match self.minter.mint(&self.chain).await {
            Ok(minted) => {
                self.failures = 0;
                self.told_needs_mfa = false;
                self.told_needs_login = false;
                let next = self
                    .policy
                    .rotate_at(started, minted.creds.expiration, fastrand::f64());
                tracing::info!(
                    profile = %self.cell.name,
                    access_key_id = %minted.creds.access_key_id,
                    expiration = %format_aws_time(minted.creds.expiration),
                    next_refresh = %format_aws_time(next),
                    "minted credentials"
                );
                self.cell
                    .install(Vended::new(minted.creds, started, minted.role_arn), next);
                self.wake = Some(next);
            }
            Err(e @ MintError::NeedsMfa { .. }) => self.needs_mfa(&e),
            Err(e @ MintError::NeedsLogin { .. }) => self.needs_login(&e),
            Err(e) => self.failed(&e),
        }
    }

    /// No MFA session: keep serving what is left; a new code arrives with `login` + `Refresh`.
    fn needs_mfa(&mut self, e: &MintError) {
        tracing::warn!(profile = %self.cell.name, "{e}");
        self.cell
            .fail(Phase::NeedsMfa, Problem::new(e.code(), e.describe()), None);
        self.wake = None;
        if !self.told_needs_mfa {
            self.told_needs_mfa = true;
            let name = &self.cell.name;
            notify::desktop(
                "credvend: MFA code needed",
                &format!("Profile {name} needs an MFA code: run `credvend login {name}`"),
            );
        }
    }

    /// When the IAM Identity Center access token this profile mints with is due for its refresh,
    /// while the profile is healthy (a failing one retries on its own backoff). Now, when another
    /// profile of the SSO session found the sign-in refused and this one does not show it yet.
    fn sso_token_due(&self) -> Option<OffsetDateTime> {
        if self.failures > 0 || self.locked || self.wake.is_none() {
            return None;
        }
        if self.minter.sso_refused(&self.chain) {
            let shown = self.cell.status().phase == Phase::NeedsLogin;
            return (!shown).then(OffsetDateTime::now_utc);
        }
        self.minter.sso_refresh_due(&self.chain)
    }

    /// No usable IAM Identity Center sign-in: keep serving what is left, look again every
    /// `LOGIN_RECHECK` (a refused sign-in costs no call then); `login` + `Refresh` ends it.
    fn needs_login(&mut self, e: &MintError) {
        tracing::warn!(profile = %self.cell.name, "{e}");
        let next = Policy::login_recheck_at(OffsetDateTime::now_utc());
        self.cell.fail(
            Phase::NeedsLogin,
            Problem::new(e.code(), e.describe()),
            Some(next),
        );
        self.wake = Some(next);
        if !self.told_needs_login {
            self.told_needs_login = true;
            let name = &self.cell.name;
            notify::desktop(
                "credvend: sign-in needed",
                &format!(
                    "Profile {name} needs an IAM Identity Center sign-in: run `credvend login {name}`"
                ),
            );
        }
    }

    /// A failed mint: retry with backoff, sooner when what is served runs out.
    fn failed(&mut self, e: &MintError) {
        self.failures += 1;
        let now = OffsetDateTime::now_utc();
        let remaining = self
            .cell
            .current()
            .and_then(|v| Duration::try_from(v.creds.expiration - now).ok());
        let mut delay = self
            .policy
            .retry_after(self.failures, remaining, fastrand::f64());
        if e.code() == crate::problem::ProblemCode::CredentialsTooShort {
            // Asking again soon gets the same: wait at least the minimum interval.
            delay = delay.max(self.policy.settings.min_interval);
        }
        let next = now + time::Duration::try_from(delay).unwrap_or(time::Duration::MAX);
        tracing::warn!(profile = %self.cell.name, failures = self.failures, retry_in = ?delay, "{e}");
        self.cell.fail(
            Phase::Error,
            Problem::new(e.code(), e.describe()),
            Some(next),
        );
        self.wake = Some(next);
    }

    /// `credvend lock`: forget the credentials and cached sessions until `Refresh`.
    async fn lock(&mut self) {
        self.locked = true;
        self.wake = None;
        self.cell.forget();
        self.minter.forget(&self.chain).await;
        tracing::info!(profile = %self.cell.name, "locked: credentials forgotten");
    }

    /// The keys the chain starts with are gone: forget everything and say so until `Refresh`.
    async fn forget(&mut self, problem: Problem) {
        self.locked = true;
        self.wake = None;
        self.cell.forget();
        self.cell.fail(Phase::Error, problem, None);
        self.minter.forget(&self.chain).await;
        tracing::info!(profile = %self.cell.name, "keys removed: credentials forgotten");
    }

    /// New refresh settings: reschedule what is held; a pending retry keeps its own schedule.
    fn reschedule(&mut self, policy: Policy) {
        self.policy = policy;
        if self.locked || self.failures > 0 {
            return;
        }
        if let Some(v) = self.cell.current() {
            let next = policy.rotate_at(v.issued, v.creds.expiration, fastrand::f64());
            tracing::info!(
                profile = %self.cell.name,
                next_refresh = %format_aws_time(next),
                "refresh settings changed; rotation rescheduled"
            );
            self.cell.set_next_refresh(next);
            self.wake = Some(next);
        }
    }

    /// The MFA session ends soon: tell the user once.
    fn remind(&mut self, expiry: OffsetDateTime) {
        self.reminded_for = Some(expiry);
        let at = format_aws_time(expiry);
        let name = &self.cell.name;
        tracing::info!(profile = %name, session_expiration = %at, "the MFA session ends soon");
        notify::desktop(
            "credvend: MFA session ending",
            &format!("The MFA session of profile {name} ends at {at}: run `credvend login {name}`"),
        );
    }
}
