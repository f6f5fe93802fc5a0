//! The audit trail: which client got which credentials, from which listener, and who was
//! refused.
//!
//! Two kinds of lines, on two paths (see `logging.rs`):
//! - **audit** (target `credvend::audit`, never dropped): the first time each key goes to each
//!   client identity (the uid owning the socket of a client on this machine, else its address)
//!   on a listener for a profile, and the first few distinct User-Agents of that client for that
//!   key. Their number is bounded by clients × keys, so they can be written losslessly even when
//!   the log reader is slow, without letting a flood slow the daemon.
//! - **access** (target `credvend::access`, dropped rather than delaying a request when the log
//!   reader falls behind; the number dropped is recorded on the audit path): everything else,
//!   folded per connection. The first answer on a connection is logged in full; identical
//!   answers that follow on the same keep-alive connection are counted and summarised in one line
//!   when the connection closes or the answer changes. Refusals (a user or host not allowed, no
//!   credentials to give, a missing or wrong IMDS session token or ECS token, an unknown ECS-agent
//!   ID, an unknown path or method on the container endpoints) are access lines, at WARN.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use super::http::Refusal;
use super::metrics::{ListenerStats, RefusedReason};

/// The endpoint name of the ECS-agent-compatible listener in audit calls (`IMDS`, `ECS`, this).
pub(crate) const ENDPOINT_ECS_AGENT: &str = "ECS agent";

/// Distinct User-Agents per client and key recorded on the lossless path.
const USER_AGENTS_KEPT: usize = 8;
/// Entries of the first-vend ledger before it starts over (each later vend is then "first"
/// once more: a repeated line, never a missing one).
const LEDGER_MAX: usize = 65_536;
/// User-Agents are compared (and logged) up to this length.
const USER_AGENT_MAX: usize = 128;

/// Who a client is, for the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Identity {
    Uid(u32),
    Addr(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LedgerKey {
    listener: SocketAddr,
    profile: String,
    who: Identity,
    access_key_id: String,
}

/// First vends seen: for each (listener, profile, client, key), the User-Agents recorded.
fn ledger() -> &'static Mutex<HashMap<LedgerKey, Vec<String>>> {
    static LEDGER: OnceLock<Mutex<HashMap<LedgerKey, Vec<String>>>> = OnceLock::new();
    LEDGER.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether this vend goes on the lossless path: a new client/key pair, or one of its first few
/// User-Agents.
fn first_vend(key: LedgerKey, user_agent: &str) -> bool {
    let mut ledger = ledger().lock().expect("audit ledger");
    if ledger.len() >= LEDGER_MAX && !ledger.contains_key(&key) {
        ledger.clear();
    }
    let agents = ledger.entry(key).or_default();
    if agents.iter().any(|a| a == user_agent) || agents.len() >= USER_AGENTS_KEPT {
        return false;
    }
    agents.push(user_agent.to_owned());
    true
}

/// What was answered.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    event: &'static str,
    profile: String,
    user_agent: String,
    /// The access key id vended, the failure code, or the refusal.
    what: String,
}

/// Audit state of one client connection.
#[derive(Debug)]
pub(crate) struct ConnAudit {
    listener: SocketAddr,
    peer: SocketAddr,
    /// The uid owning the client's socket, when the client runs on this machine.
    peer_uid: Option<u32>,
    last: Mutex<Option<(Answer, u64)>>,
    /// The listener's counters: every refusal recorded here is counted there too.
    stats: Arc<ListenerStats>,
}

impl ConnAudit {
    /// State for a new connection from `peer` (owned by `peer_uid`) to `listener`, with counters
    /// of its own (tests; the accept loop uses [`ConnAudit::counted`]).
    #[cfg(test)]
    pub fn new(listener: SocketAddr, peer: SocketAddr, peer_uid: Option<u32>) -> Arc<ConnAudit> {
        ConnAudit::counted(listener, peer, peer_uid, ListenerStats::new())
    }

    /// State for a new connection from `peer` (owned by `peer_uid`) to `listener`, counting its
    /// refusals in the listener's `stats`.
    pub fn counted(
        listener: SocketAddr,
        peer: SocketAddr,
        peer_uid: Option<u32>,
        stats: Arc<ListenerStats>,
    ) -> Arc<ConnAudit> {
        Arc::new(ConnAudit {
            listener,
            peer,
            peer_uid,
            last: Mutex::new(None),
            stats,
        })
    }

    /// Counts a refusal that has no access line of its own: a proxied IMDS token request (the
    /// handler logs it itself), an unknown path or method on the metrics listener.
    pub fn count_refused(&self, reason: RefusedReason) {
        self.stats.refused(reason);
    }

    fn identity(&self) -> Identity {
        match self.peer_uid {
            Some(uid) => Identity::Uid(uid),
            None => Identity::Addr(self.peer.ip().to_canonical()),
        }
    }

    /// Records credentials with key `key_id` of `profile` vended over `endpoint` (`IMDS`, `ECS`,
    /// [`ENDPOINT_ECS_AGENT`]).
    pub fn vended(&self, endpoint: &'static str, profile: &str, user_agent: &str, key_id: &str) {
        let event = match endpoint {
            "IMDS" => "vended credentials over IMDS",
            ENDPOINT_ECS_AGENT => "vended credentials over the ECS agent endpoint",
            _ => "vended credentials over ECS",
        };
        let user_agent = truncate(user_agent);
        // The same answer as this connection's last one: its first vend was decided then, so
        // the daemon-wide ledger (a lock and two allocations) stays off the hot path.
        if self.repeat(event, profile, user_agent, key_id) {
            return;
        }
        let key = LedgerKey {
            listener: self.listener,
            profile: profile.to_owned(),
            who: self.identity(),
            access_key_id: key_id.to_owned(),
        };
        if first_vend(key, user_agent) {
            tracing::info!(
                target: "credvend::audit",
                listener = %self.listener,
                profile,
                peer = %self.peer,
                peer_uid = self.peer_uid,
                user_agent,
                access_key_id = key_id,
                "{event}"
            );
        }
        self.record(event, profile, user_agent, key_id);
    }

    /// Records an answer without credentials (`code` says why).
    pub fn refused(&self, endpoint: &'static str, profile: &str, user_agent: &str, code: &str) {
        let event = match endpoint {
            "IMDS" => "no credentials to vend over IMDS",
            ENDPOINT_ECS_AGENT => "no credentials to vend over the ECS agent endpoint",
            _ => "no credentials to vend over ECS",
        };
        self.stats.refused(RefusedReason::NoCredentials);
        self.record(event, profile, truncate(user_agent), code);
    }

    /// Records a request refused before routing: a user, host or browser not allowed.
    pub fn refused_peer(&self, refusal: Refusal, path: &str) {
        self.stats.refused(RefusedReason::of_refusal(refusal));
        let what = format!("{refusal:?} {}", truncate(path));
        self.record("refused a request", "-", "-", &what);
    }

    /// Records a request an endpoint refused by its own checks: a missing or wrong IMDS session
    /// token or ECS token, an unknown ECS-agent ID, a path or method it does not serve, a client
    /// no route names or asking for another route's role or ID. `reason` is a short code
    /// (`NoToken`, `WrongToken`, `UnknownId`...), `profile` the one the path names (`-` when
    /// none); `path` is logged with ECS-agent IDs and other long segments redacted. Like every
    /// access line it is written once per connection, repeats folded.
    pub fn refused_request(
        &self,
        endpoint: &'static str,
        profile: &str,
        user_agent: &str,
        reason: &'static str,
        path: &str,
    ) {
        self.stats.refused(RefusedReason::of_audit_code(reason));
        let event = match endpoint {
            ENDPOINT_ECS_AGENT => "refused an ECS agent endpoint request",
            "IMDS" => "refused an IMDS request",
            _ => "refused an ECS request",
        };
        // Redacted on every endpoint: a client pointed at the wrong listener may send an ECS
        // agent ID in its path.
        let what = format!(
            "{reason} {}",
            truncate(&super::ecs_agent::redacted_path(path))
        );
        self.record(event, profile, truncate(user_agent), &what);
    }

    /// Counts the answer as a repeat of the connection's last one, if it is.
    fn repeat(&self, event: &'static str, profile: &str, user_agent: &str, what: &str) -> bool {
        let mut last = self.last.lock().expect("audit lock");
        match last.as_mut() {
            Some((a, repeats))
                if a.event == event
                    && a.profile == profile
                    && a.user_agent == user_agent
                    && a.what == what =>
            {
                *repeats += 1;
                true
            }
            _ => false,
        }
    }

    fn record(&self, event: &'static str, profile: &str, user_agent: &str, what: &str) {
        if self.repeat(event, profile, user_agent, what) {
            return;
        }
        let mut last = self.last.lock().expect("audit lock");
        if let Some((prev, repeats)) = last.take() {
            self.summarise(&prev, repeats);
        }
        if event.starts_with("vended") {
            tracing::info!(
                target: "credvend::access",
                listener = %self.listener,
                profile,
                peer = %self.peer,
                peer_uid = self.peer_uid,
                user_agent,
                access_key_id = what,
                "{event}"
            );
        } else {
            tracing::warn!(
                target: "credvend::access",
                listener = %self.listener,
                profile,
                peer = %self.peer,
                peer_uid = self.peer_uid,
                user_agent,
                answer = what,
                "{event}"
            );
        }
        *last = Some((
            Answer {
                event,
                profile: profile.to_owned(),
                user_agent: user_agent.to_owned(),
                what: what.to_owned(),
            },
            0,
        ));
    }

    fn summarise(&self, a: &Answer, repeats: u64) {
        if repeats > 0 {
            tracing::info!(
                target: "credvend::access",
                listener = %self.listener,
                profile = %a.profile,
                peer = %self.peer,
                peer_uid = self.peer_uid,
                answer = %a.what,
                repeats,
                "the same answer again {repeats} times on this connection"
            );
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(USER_AGENT_MAX) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl Drop for ConnAudit {
    fn drop(&mut self) {
        if let Some((a, repeats)) = self.last.get_mut().ok().and_then(Option::take) {
            self.summarise(&a, repeats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn captured(f: impl FnOnce()) -> Vec<String> {
        let buf = Buf::default();
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || b.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn repeats_fold_into_one_summary_and_new_keys_get_new_lines() {
        let lines = captured(|| {
            let a = ConnAudit::new(
                "127.0.0.1:9254".parse().unwrap(),
                "127.0.0.1:5000".parse().unwrap(),
                Some(4242),
            );
            for _ in 0..5 {
                a.vended("IMDS", "dev", "aws-cli/1", "ASIAONE");
            }
            a.vended("IMDS", "dev", "aws-cli/1", "ASIATWO");
            a.refused("IMDS", "dev", "aws-cli/1", "StsUnavailable");
            a.refused("IMDS", "dev", "aws-cli/1", "StsUnavailable");
            drop(a);
        });
        let access: Vec<&String> = lines.iter().filter(|l| l.contains("access:")).collect();
        assert_eq!(access.len(), 5, "{lines:#?}");
        assert!(
            access[0].contains("vended credentials over IMDS") && access[0].contains("ASIAONE")
        );
        assert!(access[1].contains("again 4 times"), "{}", access[1]);
        assert!(access[2].contains("ASIATWO"));
        assert!(
            access[3].contains("no credentials to vend") && access[3].contains("StsUnavailable")
        );
        assert!(access[4].contains("again 1 times"), "{}", access[4]);
        let audit: Vec<&String> = lines.iter().filter(|l| l.contains("audit:")).collect();
        assert_eq!(audit.len(), 2, "one first vend per key: {lines:#?}");
        assert!(audit[0].contains("ASIAONE") && audit[0].contains("peer_uid=4242"));
        assert!(audit[1].contains("ASIATWO"));
    }

    #[test]
    fn endpoint_refusals_are_one_line_per_connection_with_peer_uid_and_path() {
        let lines = captured(|| {
            let a = ConnAudit::new(
                "127.0.0.1:9255".parse().unwrap(),
                "127.0.0.1:5001".parse().unwrap(),
                Some(4243),
            );
            for _ in 0..3 {
                a.refused_request("ECS", "dev", "curl", "NoToken", "/credentials/dev");
            }
            a.refused_request(
                ENDPOINT_ECS_AGENT,
                "-",
                "curl",
                "UnknownId",
                "/v2/credentials/[REDACTED]",
            );
            drop(a);
        });
        let access: Vec<&String> = lines.iter().filter(|l| l.contains("access:")).collect();
        assert_eq!(access.len(), 3, "{lines:#?}");
        assert!(
            access[0].contains("refused an ECS request")
                && access[0].contains("peer=127.0.0.1:5001")
                && access[0].contains("peer_uid=4243")
                && access[0].contains("NoToken /credentials/dev"),
            "{}",
            access[0]
        );
        assert!(access[1].contains("again 2 times"), "{}", access[1]);
        assert!(
            access[2].contains("refused an ECS agent endpoint request")
                && access[2].contains("UnknownId /v2/credentials/[REDACTED]"),
            "{}",
            access[2]
        );
    }

    #[test]
    fn first_vends_are_per_client_and_key_with_a_few_user_agents() {
        let lines = captured(|| {
            for port in 6000..6010 {
                let a = ConnAudit::new(
                    "127.0.0.1:9999".parse().unwrap(),
                    format!("127.0.0.1:{port}").parse().unwrap(),
                    Some(77),
                );
                a.vended("ECS", "p", "flood", "ASIAKEY");
            }
            let a = ConnAudit::new(
                "127.0.0.1:9999".parse().unwrap(),
                "127.0.0.1:7000".parse().unwrap(),
                Some(77),
            );
            for i in 0..20 {
                a.vended("ECS", "p", &format!("agent-{i}"), "ASIAKEY");
            }
        });
        let audit: Vec<&String> = lines.iter().filter(|l| l.contains("audit:")).collect();
        assert_eq!(audit.len(), USER_AGENTS_KEPT, "{audit:#?}");
        assert!(audit[0].contains("flood"));
        assert!(audit[1].contains("agent-0"));
    }
}
