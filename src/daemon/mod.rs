//! The daemon: per-profile credential cells, the refresher that fills them, and the IMDS and ECS
//! endpoints that serve them.

pub mod audit;
pub mod control;
pub mod ecs;
pub mod http;
pub mod imds;
pub mod notify;
pub mod policy;
pub mod refresher;
pub mod server;
pub mod state;
pub mod token;
