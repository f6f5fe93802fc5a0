//! Who is at the other end of a connection, whether they may get credentials, and how many of a
//! listener's connections they may hold.
//!
//! - [`Peer::identify`]: a client on this machine is known by the uid owning its socket
//!   ([`crate::sys::tcp_peer_uid`]); a client elsewhere (a container's or VM's namespace, a
//!   DNAT'd connection) by its address.
//! - [`access`]: local clients are served only when they run as the daemon's user or a uid the
//!   listener's `allow_uids` names; remote clients only from the `allow` CIDRs. A local client
//!   whose uid cannot be found is refused (fail closed).
//! - [`Registry`]: the connection budget. Each peer gets a share of it (the daemon's own user the
//!   whole budget, other allowed peers a quarter, refused peers a handful: enough to be told
//!   403); a peer over its share loses its own oldest idle connection, and when the budget is
//!   full the oldest idle connection of another user or address goes (the daemon's own user's
//!   only when nobody else has an idle one). A peer can therefore crowd out only itself, and
//!   memory stays bounded however many connections arrive.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use tokio::sync::Notify;

use super::http::Refusal;

/// A client, as identified when its connection is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A process on this machine (in this network namespace), by the uid owning its socket.
    Local {
        /// The uid.
        uid: u32,
    },
    /// A connection from this machine whose socket's owner could not be found.
    LocalUnknown,
    /// A client elsewhere, by address.
    Remote(IpAddr),
}

impl Peer {
    /// Identifies the client at `peer` connected to our `local` address.
    pub fn identify(peer: SocketAddr, local: Option<SocketAddr>) -> Peer {
        let ip = peer.ip().to_canonical();
        let uid = local.and_then(|l| crate::sys::tcp_peer_uid(peer, l));
        match uid {
            Some(uid) => Peer::Local { uid },
            None if ip.is_loopback() || local.is_some_and(|l| l.ip().to_canonical() == ip) => {
                Peer::LocalUnknown
            }
            None => Peer::Remote(ip),
        }
    }

    /// The uid, for a local client.
    pub fn uid(self) -> Option<u32> {
        match self {
            Peer::Local { uid } => Some(uid),
            _ => None,
        }
    }

    fn key(self) -> PeerKey {
        match self {
            Peer::Local { uid } => PeerKey::Uid(uid),
            Peer::LocalUnknown => PeerKey::Unknown,
            Peer::Remote(ip) => PeerKey::Addr(ip),
        }
    }
}

/// What a listener does with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Served.
    Allowed,
    /// Answered with a refusal (and an audit line), never with credentials.
    Refused(Refusal),
    /// Not even answered: the connection is closed before anything is read (remote peers
    /// outside the allow list).
    Closed,
}

/// Whether `peer` may use a listener whose settings are `allow` and `allow_uids`; `me` is the
/// daemon's uid.
pub(crate) fn access(peer: Peer, allow: &[IpNet], allow_uids: &[u32], me: u32) -> Access {
    match peer {
        Peer::Local { uid } if uid == me || allow_uids.contains(&uid) => Access::Allowed,
        Peer::Local { .. } => Access::Refused(Refusal::UserNotAllowed),
        Peer::LocalUnknown => Access::Refused(Refusal::UserUnknown),
        Peer::Remote(ip) if allow.iter().any(|net| net.contains(&ip)) => Access::Allowed,
        Peer::Remote(_) => Access::Closed,
    }
}

/// The key a peer's connections are counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    Uid(u32),
    Unknown,
    Addr(IpAddr),
}

/// Connections a refused peer may hold: enough to read its refusals, no more.
const REFUSED_SHARE: usize = 4;

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Registry {
    max: usize,
    me: u32,
    /// What idle times count from.
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Slot>,
    per_key: HashMap<PeerKey, usize>,
}

#[derive(Debug)]
struct Slot {
    key: PeerKey,
    /// Since when the connection waits for a request, shared with its ticket (see [`Ticket`]).
    idle_since: Arc<AtomicU64>,
    evict: Arc<Notify>,
}

/// A connection's place in the budget; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    registry: Arc<Registry>,
    id: u64,
    /// Nanoseconds from the registry's epoch (plus one) since which the connection waits for a
    /// request; 0 while it answers one. An atomic the connection sets without the registry's
    /// lock: twice per request, on every connection of the listener.
    idle_since: Arc<AtomicU64>,
    /// Notified when the connection must close to make room.
    pub evicted: Arc<Notify>,
}

impl Registry {
    /// A budget of `max` connections for a daemon running as `me`.
    pub fn new(max: usize, me: u32) -> Arc<Registry> {
        Arc::new(Registry {
            max: max.max(1),
            me,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn share(&self, peer: Peer, access: Access) -> usize {
        match (peer, access) {
            (Peer::Local { uid }, Access::Allowed) if uid == self.me => self.max,
            (_, Access::Allowed) => (self.max / 4).max(8),
            _ => REFUSED_SHARE,
        }
    }

    /// A place for a new connection of `peer` (with `access`), making room by evicting idle
    /// connections; `None` when there is none to be had.
    pub fn admit(self: &Arc<Self>, peer: Peer, access: Access) -> Option<Ticket> {
        let key = peer.key();
        let share = self.share(peer, access);
        let mut inner = self.inner.lock().expect("registry lock");
        if inner.per_key.get(&key).copied().unwrap_or(0) >= share
            && !inner.evict_oldest_idle(|k| k == key)
        {
            return None;
        }
        let mine = PeerKey::Uid(self.me);
        if inner.conns.len() >= self.max
            && !inner.evict_oldest_idle(|k| k != mine)
            && !inner.evict_oldest_idle(|_| true)
        {
            return None;
        }
        inner.next += 1;
        let id = inner.next;
        let evict = Arc::new(Notify::new());
        let idle_since = Arc::new(AtomicU64::new(self.now()));
        inner.conns.insert(
            id,
            Slot {
                key,
                idle_since: idle_since.clone(),
                evict: evict.clone(),
            },
        );
        *inner.per_key.entry(key).or_default() += 1;
        Some(Ticket {
            registry: self.clone(),
            id,
            idle_since,
            evicted: evict,
        })
    }

    /// Now, as an idle stamp (never 0).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Connections held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().expect("registry lock").conns.len()
    }
}

impl Inner {
    /// Evicts the connection idle the longest among those whose key passes `which`. The slot
    /// leaves the budget at once; the connection closes when its task sees the notification.
    fn evict_oldest_idle(&mut self, which: impl Fn(PeerKey) -> bool) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, s)| which(s.key))
            .filter_map(|(id, s)| match s.idle_since.load(Ordering::Relaxed) {
                0 => None,
                t => Some((t, *id)),
            })
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(slot) = self.remove(id) {
            slot.evict.notify_one();
        }
        true
    }

    fn remove(&mut self, id: u64) -> Option<Slot> {
        let slot = self.conns.remove(&id)?;
        if let Some(n) = self.per_key.get_mut(&slot.key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&slot.key);
            }
        }
        Some(slot)
    }
}

impl Ticket {
    /// The connection is answering a request: not evictable.
    pub fn busy(&self) {
        self.idle_since.store(0, Ordering::Relaxed);
    }

    /// The connection waits for a request: evictable.
    pub fn idle(&self) {
        self.idle_since
            .store(self.registry.now(), Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.registry.inner.lock() {
            inner.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn local(uid: u32) -> Peer {
        Peer::Local { uid }
    }

    #[test]
    fn only_the_daemon_s_user_and_allowed_uids_or_addresses_are_served() {
        let allow: Vec<IpNet> = vec!["198.18.1.0/24".parse().unwrap()];
        assert_eq!(access(local(ME), &[], &[], ME), Access::Allowed);
        assert_eq!(
            access(local(65534), &[], &[], ME),
            Access::Refused(Refusal::UserNotAllowed)
        );
        assert_eq!(access(local(65534), &[], &[65534], ME), Access::Allowed);
        assert_eq!(
            access(Peer::LocalUnknown, &allow, &[65534], ME),
            Access::Refused(Refusal::UserUnknown)
        );
        let remote = |ip: &str| Peer::Remote(ip.parse().unwrap());
        assert_eq!(
            access(remote("198.18.1.2"), &allow, &[], ME),
            Access::Allowed
        );
        assert_eq!(
            access(remote("198.18.2.2"), &allow, &[], ME),
            Access::Closed
        );
    }

    #[test]
    fn a_flooding_peer_crowds_out_only_itself() {
        let r = Registry::new(40, ME);
        let flood = local(65534);
        // The flooder gets a quarter of the budget; each extra connection evicts its own oldest.
        let mut held: Vec<Ticket> = (0..200)
            .filter_map(|_| r.admit(flood, Access::Allowed))
            .collect();
        assert_eq!(r.len(), 10);
        held.retain(|t| r.inner.lock().unwrap().conns.contains_key(&t.id));
        assert_eq!(held.len(), 10, "the newest ten survive");
        // The daemon's own user still gets in, up to the whole budget.
        let mine: Vec<Ticket> = (0..30)
            .map(|_| r.admit(local(ME), Access::Allowed).expect("room"))
            .collect();
        assert_eq!(r.len(), 40);
        // Full: the next one of ours evicts the flooder's oldest idle connection.
        let one_more = r.admit(local(ME), Access::Allowed);
        assert!(one_more.is_some());
        assert_eq!(r.len(), 40);
        drop(mine);
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn busy_connections_are_not_evicted_and_refused_peers_hold_a_handful() {
        let r = Registry::new(8, ME);
        let a = r.admit(local(7), Access::Allowed).unwrap();
        let b = r.admit(local(7), Access::Allowed).unwrap();
        a.busy();
        b.busy();
        // Share 8 (the minimum); the budget is 8: fill it with busy ones.
        let rest: Vec<Ticket> = (0..6)
            .map(|_| {
                let t = r.admit(local(7), Access::Allowed).unwrap();
                t.busy();
                t
            })
            .collect();
        assert!(
            r.admit(local(ME), Access::Allowed).is_none(),
            "nothing idle to evict"
        );
        drop(rest);
        let refused = Access::Refused(Refusal::UserNotAllowed);
        let got: Vec<Ticket> = (0..10).filter_map(|_| r.admit(local(9), refused)).collect();
        assert_eq!(
            got.len(),
            10,
            "each new one evicts the refused peer's oldest"
        );
        assert_eq!(r.len(), 2 + REFUSED_SHARE);
    }
}
