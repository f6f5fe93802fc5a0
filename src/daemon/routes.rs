//! Listener routes: which profile each peer of one listener gets (`routes` on `[[imds]]` and
//! `[ecs_agent]`, parsed and validated by [`crate::config`]), so that every container on a bridge
//! can use plain 169.254.169.254 and still get its own role.
//!
//! - **Who a peer is** comes from [`Peer`] (`daemon/conns.rs`), decided once per connection: a
//!   client in another network namespace (a container, a VM, a DNAT'd connection) by its
//!   address, a client on this machine by the uid owning its socket.
//! - **Matching** ([`best`]): a remote peer takes the `from` route with the longest prefix that
//!   contains its address (v4 and v6 alike; v4-mapped v6 peers count as v4); a local peer takes
//!   the `uid` route of its uid, and never a `from` route: every local user can connect from
//!   loopback or the bridge address, so a local client's address says nothing about who it is.
//!   No match: the peer is refused (the handler answers 403 and writes an access line). Two
//!   routes for the same network or user are refused at load, and two different networks of one
//!   prefix length cannot both contain an address, so the winner is always unique.
//! - **Access** stays with `conns.rs`: a route's network or uid admits its peers exactly as an
//!   `allow` / `allow_uids` entry would (the listener's options are widened by them in
//!   `reconcile`), so a remote peer no route and no `allow` entry names is closed unanswered as
//!   before; what routes add is the per-request choice of profile, made again on every request
//!   (a reload that changes the routes reaches open keep-alive connections at once).
//! - **Counts**: every route counts the credential requests it served and refused, and the
//!   listener the requests refused for want of a route; counters live in `Arc`s that a reload
//!   hands on to the same route (same `from`, same profile), as profiles keep their cells.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::conns::Peer;
use crate::config::{Route, RouteFrom};

/// The index of the route `peer` takes among `froms`, if any (see the module doc). Pure.
pub(crate) fn best<'a>(
    froms: impl IntoIterator<Item = &'a RouteFrom>,
    peer: Peer,
) -> Option<usize> {
    let mut found: Option<(usize, u8)> = None;
    for (i, from) in froms.into_iter().enumerate() {
        let specificity = match (from, peer) {
            (RouteFrom::Uid(uid), Peer::Local { uid: who }) if *uid == who => u8::MAX,
            (RouteFrom::Net(net), Peer::Remote(ip)) if net.contains(&ip) => net.prefix_len(),
            _ => continue,
        };
        if found.is_none_or(|(_, s)| specificity > s) {
            found = Some((i, specificity));
        }
    }
    found.map(|(i, _)| i)
}

/// Requests of one route (or of a listener's unrouted peers).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    served: AtomicU64,
    refused: AtomicU64,
}

impl Counts {
    /// Credentials handed out.
    pub fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused: no credentials to give, another route's role or ID, no route.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// `(served, refused)` so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// One route of a running listener.
#[derive(Debug)]
pub(crate) struct Routed<T> {
    /// Its peers.
    pub from: RouteFrom,
    /// The profile they get.
    pub profile: String,
    /// What serves them: the profile, or its scoped session (the route's `policy`).
    pub unit: String,
    /// Its requests.
    pub counts: Arc<Counts>,
    /// What the handler serves them (IMDS: the role; ECS agent: nothing more than the profile).
    pub target: T,
}

/// The counters of a listener's routes, handed from one handler to its replacement.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    routes: Vec<(RouteFrom, String, Arc<Counts>)>,
    unrouted: Arc<Counts>,
}

/// A route as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteStat {
    /// Its peers.
    pub from: RouteFrom,
    /// The profile they get.
    pub profile: String,
    /// What serves them: the profile, or its scoped session.
    pub unit: String,
    /// Credentials handed out.
    pub served: u64,
    /// Requests refused.
    pub refused: u64,
}

/// The routes of a running listener.
#[derive(Debug)]
pub(crate) struct RouteTable<T> {
    routes: Vec<Routed<T>>,
    unrouted: Arc<Counts>,
}

impl<T> RouteTable<T> {
    /// The table of `routes`, each with `target(route)`, keeping the counters `previous` had for
    /// the same route.
    pub fn new(
        routes: &[Route],
        previous: Option<&RouteCounters>,
        mut target: impl FnMut(&Route) -> T,
    ) -> RouteTable<T> {
        let kept = |r: &Route| {
            previous
                .and_then(|p| {
                    p.routes
                        .iter()
                        .find(|(from, profile, _)| *from == r.from && *profile == r.profile)
                })
                .map(|(_, _, c)| c.clone())
                .unwrap_or_default()
        };
        RouteTable {
            routes: routes
                .iter()
                .map(|r| Routed {
                    from: r.from,
                    profile: r.profile.clone(),
                    unit: r.unit(),
                    counts: kept(r),
                    target: target(r),
                })
                .collect(),
            unrouted: previous.map(|p| p.unrouted.clone()).unwrap_or_default(),
        }
    }

    /// The route `peer` takes; `None` (counted as a refusal of the listener) when no route names
    /// it.
    pub fn pick(&self, peer: Peer) -> Option<&Routed<T>> {
        let found = best(self.routes.iter().map(|r| &r.from), peer).map(|i| &self.routes[i]);
        if found.is_none() {
            self.unrouted.refused();
        }
        found
    }

    /// Every route's target.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|r| &r.target)
    }

    /// The counters, for the handler that replaces this one.
    pub fn counters(&self) -> RouteCounters {
        RouteCounters {
            routes: self
                .routes
                .iter()
                .map(|r| (r.from, r.profile.clone(), r.counts.clone()))
                .collect(),
            unrouted: self.unrouted.clone(),
        }
    }

    /// Each route with its counts, in configuration order, and the requests refused for want of
    /// a route.
    pub fn stats(&self) -> (Vec<RouteStat>, u64) {
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let (served, refused) = r.counts.get();
                RouteStat {
                    from: r.from,
                    profile: r.profile.clone(),
                    unit: r.unit.clone(),
                    served,
                    refused,
                }
            })
            .collect();
        (routes, self.unrouted.get().1)
    }
}

/// What a listener serves its peers: one target for every peer it admits, or a target per route.
#[derive(Debug)]
pub(crate) enum Serves<T> {
    /// Every admitted peer gets this.
    All(T),
    /// Each peer gets its route's target; a peer no route names, nothing.
    Routes(RouteTable<T>),
}

/// What one peer gets, and where its requests are counted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pick<'a, T> {
    /// What it is served.
    pub target: &'a T,
    /// Its route's counters (`None` on a listener without routes: profiles count for
    /// themselves).
    pub counts: Option<&'a Counts>,
}

impl<T> Pick<'_, T> {
    /// Counts credentials handed out on the peer's route.
    pub fn served(&self) {
        if let Some(c) = self.counts {
            c.served();
        }
    }

    /// Counts a refusal on the peer's route.
    pub fn refused(&self) {
        if let Some(c) = self.counts {
            c.refused();
        }
    }
}

impl<T> Serves<T> {
    /// What `peer` gets; `None` when the listener is routed and no route names it (counted).
    pub fn pick(&self, peer: Peer) -> Option<Pick<'_, T>> {
        match self {
            Serves::All(target) => Some(Pick {
                target,
                counts: None,
            }),
            Serves::Routes(table) => table.pick(peer).map(|r| Pick {
                target: &r.target,
                counts: Some(&r.counts),
            }),
        }
    }

    /// Every target (one, or each route's).
    pub fn targets(&self) -> Box<dyn Iterator<Item = &T> + '_> {
        match self {
            Serves::All(target) => Box::new(std::iter::once(target)),
            Serves::Routes(table) => Box::new(table.targets()),
        }
    }

    /// The routes, when the listener has any.
    pub fn routes(&self) -> Option<&RouteTable<T>> {
        match self {
            Serves::All(_) => None,
            Serves::Routes(table) => Some(table),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> RouteFrom {
        RouteFrom::Net(s.parse().unwrap())
    }

    fn remote(ip: &str) -> Peer {
        Peer::Remote(ip.parse().unwrap())
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order() {
        let froms = [
            net("198.18.0.0/24"),
            net("198.18.0.2/32"),
            net("198.18.0.0/25"),
            net("0.0.0.0/0"),
        ];
        assert_eq!(best(&froms, remote("198.18.0.2")), Some(1));
        assert_eq!(best(&froms, remote("198.18.0.3")), Some(2));
        assert_eq!(best(&froms, remote("198.18.0.200")), Some(0));
        assert_eq!(best(&froms, remote("10.0.0.1")), Some(3));
        let mut reversed = froms;
        reversed.reverse();
        assert_eq!(best(&reversed, remote("198.18.0.2")), Some(2));
        assert_eq!(best(&reversed, remote("198.18.0.3")), Some(1));
        assert_eq!(best(&froms[..3], remote("10.0.0.1")), None);
    }

    #[test]
    fn v6_routes_match_v6_peers_only() {
        let froms = [net("fd00:cafe::/64"), net("fd00:cafe::2/128"), net("::/0")];
        assert_eq!(best(&froms, remote("fd00:cafe::2")), Some(1));
        assert_eq!(best(&froms, remote("fd00:cafe::3")), Some(0));
        assert_eq!(best(&froms, remote("fd00:beef::3")), Some(2));
        assert_eq!(best(&froms, remote("198.18.0.2")), None);
        assert_eq!(best(&[net("198.18.0.0/15")], remote("fd00::1")), None);
    }

    #[test]
    fn local_peers_are_routed_by_uid_only_and_unknown_ones_never() {
        let froms = [net("0.0.0.0/0"), net("127.0.0.0/8"), RouteFrom::Uid(1001)];
        assert_eq!(best(&froms, Peer::Local { uid: 1001 }), Some(2));
        assert_eq!(best(&froms, Peer::Local { uid: 1002 }), None);
        assert_eq!(best(&froms, Peer::LocalUnknown), None);
        assert_eq!(
            best(&froms, remote("127.0.0.1")),
            Some(1),
            "only remote peers by address"
        );
        assert_eq!(best(&[RouteFrom::Uid(0)], remote("10.0.0.1")), None);
    }

    fn route(from: RouteFrom, profile: &str) -> Route {
        Route {
            from,
            profile: profile.into(),
            scope: None,
        }
    }

    #[test]
    fn counts_follow_the_route_across_a_reload_and_unrouted_requests_are_counted() {
        let routes = [
            route(net("198.18.0.2/32"), "ci"),
            route(net("198.18.0.0/24"), "dev"),
        ];
        let t = RouteTable::new(&routes, None, |r| r.profile.clone());
        let ci = t.pick(remote("198.18.0.2")).unwrap();
        assert_eq!(ci.target, "ci");
        ci.counts.served();
        t.pick(remote("198.18.0.9")).unwrap().counts.refused();
        assert!(t.pick(remote("198.18.1.9")).is_none());
        let (stats, unrouted) = t.stats();
        assert_eq!((stats[0].served, stats[1].refused, unrouted), (1, 1, 1));

        // `dev` now goes to another profile: its counts start over; `ci`'s stay.
        let changed = [
            route(net("198.18.0.2/32"), "ci"),
            route(net("198.18.0.0/24"), "prod"),
        ];
        let t2 = RouteTable::new(&changed, Some(&t.counters()), |r| r.profile.clone());
        let (stats, unrouted) = t2.stats();
        assert_eq!(
            stats
                .iter()
                .map(|s| (s.profile.as_str(), s.served, s.refused))
                .collect::<Vec<_>>(),
            [("ci", 1, 0), ("prod", 0, 0)]
        );
        assert_eq!(unrouted, 1);
    }

    #[test]
    fn an_unrouted_listener_serves_everyone_and_counts_nothing() {
        let s = Serves::All("dev");
        let p = s.pick(Peer::LocalUnknown).unwrap();
        assert_eq!(*p.target, "dev");
        assert!(p.counts.is_none() && s.routes().is_none());
        let routed = Serves::Routes(RouteTable::new(
            &[route(RouteFrom::Uid(7), "build")],
            None,
            |r| r.profile.clone(),
        ));
        assert!(routed.pick(Peer::Local { uid: 8 }).is_none());
        assert_eq!(routed.pick(Peer::Local { uid: 7 }).unwrap().target, "build");
        assert_eq!(routed.targets().count(), 1);
    }
}
