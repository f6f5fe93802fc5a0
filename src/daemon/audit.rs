//! The audit trail: which client got which credentials, from which listener.
//!
//! One line per client connection and answer: the first credential response (or "no
//! credentials" answer) on a connection is logged in full — listener, profile, peer address,
//! User-Agent, access key id — and identical answers that follow on the same keep-alive connection
//! are counted, then summarised in one line when the connection closes or the answer changes
//! (a new key after a rotation is a new line). For a client on this machine the full line also
//! names the uid that owns the client's socket (`peer_uid`, Linux; see
//! [`crate::sys::tcp_peer_uid`]). A client in a tight loop thus cannot flood the log
//! or slow the daemon, while every key a client received is still on record.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// What was answered.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    event: &'static str,
    profile: String,
    user_agent: String,
    /// The access key id vended, or the failure code.
    what: String,
}

/// Audit state of one client connection.
#[derive(Debug)]
pub struct ConnAudit {
    listener: SocketAddr,
    peer: SocketAddr,
    /// The uid of the client process's socket, looked up once, at the first answer.
    peer_uid: OnceLock<Option<u32>>,
    last: Mutex<Option<(Answer, u64)>>,
}

impl ConnAudit {
    /// State for a new connection from `peer` to `listener`.
    pub fn new(listener: SocketAddr, peer: SocketAddr) -> Arc<ConnAudit> {
        Arc::new(ConnAudit {
            listener,
            peer,
            peer_uid: OnceLock::new(),
            last: Mutex::new(None),
        })
    }

    /// Records credentials with key `key_id` of `profile` vended over `endpoint` (`IMDS`/`ECS`).
    pub fn vended(&self, endpoint: &'static str, profile: &str, user_agent: &str, key_id: &str) {
        let event = if endpoint == "IMDS" {
            "vended credentials over IMDS"
        } else {
            "vended credentials over ECS"
        };
        self.record(event, profile, user_agent, key_id);
    }

    /// Records an answer without credentials (`code` says why).
    pub fn refused(&self, endpoint: &'static str, profile: &str, user_agent: &str, code: &str) {
        let event = if endpoint == "IMDS" {
            "no credentials to vend over IMDS"
        } else {
            "no credentials to vend over ECS"
        };
        self.record(event, profile, user_agent, code);
    }

    fn record(&self, event: &'static str, profile: &str, user_agent: &str, what: &str) {
        let peer_uid = *self
            .peer_uid
            .get_or_init(|| crate::sys::tcp_peer_uid(self.peer, self.listener));
        let mut last = self.last.lock().expect("audit lock");
        if let Some((a, repeats)) = last.as_mut()
            && a.event == event
            && a.profile == profile
            && a.user_agent == user_agent
            && a.what == what
        {
            *repeats += 1;
            return;
        }
        if let Some((prev, repeats)) = last.take() {
            self.summarise(&prev, repeats);
        }
        tracing::info!(
            target: "credvend::audit",
            listener = %self.listener,
            profile,
            peer = %self.peer,
            peer_uid,
            user_agent,
            access_key_id = what,
            "{event}"
        );
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
                target: "credvend::audit",
                listener = %self.listener,
                profile = %a.profile,
                peer = %self.peer,
                access_key_id = %a.what,
                repeats,
                "the same answer again {repeats} times on this connection"
            );
        }
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

    #[test]
    fn repeats_fold_into_one_summary_and_new_keys_get_new_lines() {
        let buf = Buf::default();
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || b.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let a = ConnAudit::new(
                "127.0.0.1:9254".parse().unwrap(),
                "127.0.0.1:5000".parse().unwrap(),
            );
            for _ in 0..5 {
                a.vended("IMDS", "dev", "aws-cli/1", "ASIAONE");
            }
            a.vended("IMDS", "dev", "aws-cli/1", "ASIATWO");
            a.refused("IMDS", "dev", "aws-cli/1", "StsUnavailable");
            a.refused("IMDS", "dev", "aws-cli/1", "StsUnavailable");
            drop(a);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].contains("vended credentials over IMDS")
                && lines[0].contains("ASIAONE")
                && lines[0].contains("aws-cli/1")
        );
        assert!(lines[1].contains("again 4 times"), "{}", lines[1]);
        assert!(lines[2].contains("ASIATWO"));
        assert!(lines[3].contains("no credentials to vend") && lines[3].contains("StsUnavailable"));
        assert!(lines[4].contains("again 1 times"), "{}", lines[4]);
    }
}
