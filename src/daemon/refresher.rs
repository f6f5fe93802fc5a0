//! One task per served profile: mints at start-up (a *warm* profile: named by an `[[imds]]`
//! listener or `[refresh] prewarm`) or on the first request (the others), rotates before expiry,
//! retries with backoff, obeys `refresh` / `lock` commands, and lets an on-demand profile go idle
//! (credentials dropped, no rotation, no timer) when nobody asked for it within `[refresh]
//! idle_after_seconds`. It is the only code that writes the profile's cell, so "one STS call per
//! refresh however many clients ask" holds by construction.
//!
//! An idle refresher sleeps without a timer: it costs nothing until a request (the cell's
//! demand signal), a command or shutdown wakes it.
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
use super::usage::Usage;
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
    /// Whether the profile is kept fresh whether or not anyone asks (a reload may change it).
    pub warm: watch::Sender<bool>,
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
    /// The profile became warm (minted whether or not anyone asks), or stopped being.
    WarmChanged(bool),
    /// A request found the profile idle.
    Demand,
    /// Nobody asked for the (on-demand) profile within the idle window.
    IdleDue,
    /// The daemon stops (or the handle was dropped).
    Shutdown,
}

/// What a refresher starts with.
pub(crate) struct Start {
    /// The profile's cell.
    pub cell: Arc<ProfileCell>,
    /// How its credentials are made.
    pub chain: Arc<Chain>,
    /// Runs the chain.
    pub minter: Arc<Minter>,
    /// The daemon's record of profiles in use.
    pub usage: Arc<Usage>,
    /// The refresh settings.
    pub policy: Policy,
    /// Minted at start-up and kept fresh whether or not anyone asks.
    pub warm: bool,
}

/// Starts the refresher described by `start`.
pub(crate) fn spawn(start: Start, shutdown: Shutdown) -> Handle {
    let (tx, rx) = mpsc::channel(8);
    let (policy_tx, policy_rx) = watch::channel(start.policy);
    let (warm_tx, warm_rx) = watch::channel(start.warm);
    let refresher = Refresher {
        cell: start.cell,
        chain: start.chain,
        minter: start.minter,
        usage: start.usage,
        policy: start.policy,
        warm: start.warm,
        idle: false,
        failures: 0,
        locked: false,
        wake: None,
        reminded_for: None,
        told_needs_mfa: false,
        told_needs_login: false,
    };
    let watches = Watches {
        policy: policy_rx,
        warm: warm_rx,
    };
    let task = tokio::spawn(refresher.run(rx, watches, shutdown));
    Handle {
        tx,
        policy: policy_tx,
        warm: warm_tx,
        task,
    }
}

/// The settings a reload may change under a running refresher.
struct Watches {
    policy: watch::Receiver<Policy>,
    warm: watch::Receiver<bool>,
}

/// The state of one profile's refresher.
struct Refresher {
    cell: Arc<ProfileCell>,
    chain: Arc<Chain>,
    minter: Arc<Minter>,
    usage: Arc<Usage>,
    policy: Policy,
    /// Kept fresh whether or not anyone asks.
    warm: bool,
    /// Idle: nothing held, nothing scheduled until a request.
    idle: bool,
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
        mut watches: Watches,
        mut shutdown: Shutdown,
    ) {
        watches.policy.borrow_and_update();
        watches.warm.borrow_and_update();
        if let Some(at) = self.usage.last_use(&self.cell.name) {
            self.cell.touch(at);
        }
        self.mint_or_idle().await;
        loop {
            match self
                .next_event(&mut commands, &mut watches, &mut shutdown)
                .await
            {
                Event::Due => self.mint().await,
                Event::IdleDue => self.go_idle(),
                Event::Demand if self.idle && !self.locked => self.mint().await,
                Event::Demand => {}
                Event::Remind(expiry) => self.remind(expiry),
                Event::Command(Command::Refresh) => {
                    self.locked = false;
                    self.mint_or_idle().await;
                }
                Event::Command(Command::Lock) => self.lock().await,
                Event::Command(Command::Forget(problem)) => self.forget(problem).await,
                Event::PolicyChanged(p) => self.reschedule(p),
                Event::WarmChanged(warm) => {
                    self.warm = warm;
                    if warm && self.idle && !self.locked {
                        self.mint().await;
                    }
                }
                Event::Shutdown => return,
            }
        }
    }

    /// Mints when the profile is warm or was used within the idle window; else goes (or stays)
    /// idle. Whether it is idle now does not matter: a `Refresh` after a login, a new key or an
    /// unlock must not mint every idle profile that shares the source.
    async fn mint_or_idle(&mut self) {
        if self.warm || self.used_until() > OffsetDateTime::now_utc() {
            self.mint().await;
        } else {
            self.go_idle();
        }
    }

    /// The end of the idle window that the last use opened (the epoch when never used).
    fn used_until(&self) -> OffsetDateTime {
        let last = self.cell.last_use().unwrap_or(OffsetDateTime::UNIX_EPOCH);
        last + time::Duration::try_from(self.policy.settings.idle_after)
            .unwrap_or(time::Duration::MAX)
    }

    /// When an on-demand profile goes idle if nobody asks for it before (`None`: never; warm,
    /// already idle, or locked).
    fn idle_at(&self) -> Option<OffsetDateTime> {
        if self.warm || self.idle || self.locked {
            return None;
        }
        Some(self.used_until())
    }

    /// Waits for the next event: the wake time, the idle time, a reminder, a request for an
    /// idle profile, a command, new settings, shutdown.
    async fn next_event(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        watches: &mut Watches,
        shutdown: &mut Shutdown,
    ) -> Event {
        loop {
            let now = OffsetDateTime::now_utc();
            let idle_at = self.idle_at();
            if idle_at.is_some_and(|at| at <= now) {
                return Event::IdleDue;
            }
            let remind = self
                .minter
                .mfa_session_expiry(&self.chain)
                .filter(|exp| !self.idle && self.reminded_for != Some(*exp) && *exp > now);
            if let Some(exp) = remind
                && notify::remind_at(exp) <= now
            {
                return Event::Remind(exp);
            }
            let token_due = self.sso_token_due();
            if self.wake.is_some_and(|w| w <= now) || token_due.is_some_and(|t| t <= now) {
                return Event::Due;
            }
            // No timer at all when nothing is scheduled (an idle profile).
            let sleep = [self.wake, remind.map(notify::remind_at), token_due, idle_at]
                .into_iter()
                .flatten()
                .min()
                .map(|at| {
                    Duration::try_from(at - now)
                        .unwrap_or(Duration::ZERO)
                        .min(WALL_CLOCK_CHECK)
                });
            let timer = async {
                match sleep {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timer => {}
                () = self.cell.demanded() => return Event::Demand,
                Ok(()) = watches.policy.changed() => {
                    return Event::PolicyChanged(*watches.policy.borrow_and_update());
                }
                Ok(()) = watches.warm.changed() => {
                    return Event::WarmChanged(*watches.warm.borrow_and_update());
                }
                cmd = commands.recv() => return match cmd {
                    Some(c) => Event::Command(c),
                    None => Event::Shutdown,
                },
                _ = shutdown.wait() => return Event::Shutdown,
            }
        }
    }

    /// Nobody asked for the profile within the idle window: drop what is held, stop rotating.
    fn go_idle(&mut self) {
        let was_used = !self.idle && self.cell.last_use().is_some();
        self.idle = true;
        self.wake = None;
        self.failures = 0;
        self.cell.idle();
        self.usage.remove(&self.cell.name);
        if was_used {
            tracing::info!(
                profile = %self.cell.name,
                idle_after = ?self.policy.settings.idle_after,
                "not asked for within the idle window: credentials dropped, minted again on the next request"
            );
        }
    }

    /// Mints, installs the result or records the failure, and sets the next wake time.
    async fn mint(&mut self) {
        let started = OffsetDateTime::now_utc();
        if !self.warm {
            // Remembered across restarts (the time is at most one rotation old).
            let used = self.cell.last_use().unwrap_or(started);
            self.usage.record(&self.cell.name, used);
        }
        self.idle = false;
        let phase = match (self.cell.current().is_some(), self.cell.status().phase) {
            (true, _) => Phase::Refreshing,
            // Unlocking or waking: clients see "pending" (and wait for it).
            (false, Phase::Locked | Phase::Idle) => Phase::Starting,
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
