//! `credvend metrics`: the running daemon's metrics in OpenMetrics text format, fetched over the
//! control socket (the same text as `GET /metrics` of the `[metrics]` listener).

use std::process::ExitCode;

use crate::context::Context;
use crate::control::client as control;
use crate::control::proto::{Reply, Request};

/// `credvend metrics`.
pub async fn metrics(ctx: &Context) -> anyhow::Result<ExitCode> {
    match control::call(&ctx.state_dir, &Request::Metrics).await? {
        Reply::Metrics { text } => {
            print!("{}", super::printable(&text));
            Ok(ExitCode::SUCCESS)
        }
        other => anyhow::bail!(
            "the daemon answered with an unexpected reply ({other:?}); is it the same version as this CLI?"
        ),
    }
}
