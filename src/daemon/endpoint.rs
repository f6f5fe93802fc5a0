//! What a listener serves: one of the endpoint handlers, behind one type so that every listener
//! runs the same accept loop ([`super::http::serve`]) and a reload can swap its handler.

use super::ecs::EcsHandler;
use super::ecs_agent::EcsAgentHandler;
use super::http::{Handler, Head, Refusal, Reply};
use super::imds::ImdsHandler;
use super::metrics_http::MetricsHandler;
use super::routes::{RouteCounters, RouteStat};

/// A listener's handler.
pub(crate) enum Endpoint {
    /// The IMDS endpoint of one profile.
    Imds(ImdsHandler),
    /// The ECS container-credentials endpoint.
    Ecs(EcsHandler),
    /// The ECS-agent-compatible endpoint (`/v2/credentials/ID`).
    EcsAgent(EcsAgentHandler),
    /// The metrics listener (`/metrics`, `/healthz`).
    Metrics(MetricsHandler),
}

impl Handler for Endpoint {
    async fn handle(&self, head: Head) -> Reply {
        match self {
            Endpoint::Imds(h) => h.handle(head).await,
            Endpoint::Ecs(h) => h.handle(head).await,
            Endpoint::EcsAgent(h) => h.handle(head).await,
            Endpoint::Metrics(h) => h.handle(head).await,
        }
    }

    fn refuse(&self, refusal: Refusal) -> Reply {
        match self {
            Endpoint::Imds(h) => h.refuse(refusal),
            Endpoint::Ecs(h) => h.refuse(refusal),
            Endpoint::EcsAgent(h) => h.refuse(refusal),
            Endpoint::Metrics(h) => h.refuse(refusal),
        }
    }
}

impl Endpoint {
    /// The routes' counters, for the handler that replaces this one; `None` without routes.
    pub fn route_counters(&self) -> Option<RouteCounters> {
        match self {
            Endpoint::Imds(h) => h.roles.routes().map(|t| t.counters()),
            Endpoint::EcsAgent(h) => h.routes.as_ref().map(|t| t.counters()),
            Endpoint::Ecs(_) | Endpoint::Metrics(_) => None,
        }
    }

    /// Each route with its counts, and the requests refused for want of a route; `None`
    /// without routes.
    pub fn route_stats(&self) -> Option<(Vec<RouteStat>, u64)> {
        match self {
            Endpoint::Imds(h) => h.roles.routes().map(|t| t.stats()),
            Endpoint::EcsAgent(h) => h.routes.as_ref().map(|t| t.stats()),
            Endpoint::Ecs(_) | Endpoint::Metrics(_) => None,
        }
    }
}
