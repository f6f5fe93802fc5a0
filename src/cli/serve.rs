//! `credvend serve`: start-up order, the ready line, signals (TERM/INT drain and exit, HUP
//! reloads).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::context::Context;
use crate::control::server as control;
use crate::daemon::Daemon;
use crate::daemon::token::TokenKey;
use crate::keystore::KeyStore;
use crate::mint::{Keys, Minter};
use crate::paths;
use crate::shutdown::Trigger;
use crate::sts::ClientOptions;
use crate::sys::Inherited;

/// How long in-flight requests get to finish after SIGTERM (the design promises exit within 5 s).
const DRAIN: Duration = Duration::from_secs(4);

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) fn run(
    ctx: Context,
    (inherited, warnings): (Vec<Inherited>, Vec<String>),
) -> anyhow::Result<ExitCode> {
    crate::sys::raise_nofile_limit();
    for w in warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("credvend")
        .build()?;
    let result = rt.block_on(serve(ctx, inherited));
    // Do not wait on a keyring call stuck in a blocking thread: the exit is promised within 5 s.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

async fn serve(ctx: Context, inherited: Vec<Inherited>) -> anyhow::Result<ExitCode> {
    paths::ensure_state_dir(&ctx.state_dir)?;
    let loaded = ctx.load().map_err(anyhow::Error::msg)?;
    let key =
        TokenKey::load_or_create(&ctx.state_dir.join(paths::TOKEN_KEY)).with_context(|| {
            format!(
                "cannot create the IMDS token key in {}",
                ctx.state_dir.display()
            )
        })?;
    let opts = ctx.keystore_options(false);
    let keys = match KeyStore::open(opts.clone()).await {
        Ok(store) => {
            tracing::info!(keystore = %store.backend(), "long-term keys are read from the keyring");
            Keys::ready(store, opts)
        }
        Err(e) => {
            // Serve anyway: profiles report the problem, and every refresh retries the keyring.
            tracing::error!("{e}");
            Keys::lazy(opts)
        }
    };
    let minter = Arc::new(
        Minter::new(keys, ClientOptions::default()).with_sso_cache_dir(ctx.sso_cache_dir()),
    );
    let daemon = Daemon::new(ctx.state_dir.clone(), key, minter, inherited);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    daemon.apply(loaded).await.map_err(anyhow::Error::msg)?;
    let socket = ctx.control_socket();
    let control_listener = control::bind(&socket)
        .with_context(|| format!("cannot bind the control socket {}", socket.display()))?;
    let control_stop = Trigger::new();
    let control_task = tokio::spawn(control::serve(
        control_listener,
        daemon.clone(),
        control_stop.subscribe(),
    ));

    let ready = daemon.ready_line(&socket).await;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    tracing::info!("{ready}");
    crate::sys::notify("READY=1\nSTATUS=serving");

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                crate::sys::notify("RELOADING=1");
                match ctx.load() {
                    Ok(loaded) => match daemon.apply(loaded).await {
                        Ok(()) => tracing::info!("configuration reloaded"),
                        Err(e) => tracing::error!("reload failed, the previous configuration keeps serving: {e}"),
                    },
                    Err(e) => {
                        tracing::error!("reload failed, the previous configuration keeps serving: {e}");
                        daemon.reload_failed(&e).await;
                    }
                }
                crate::sys::notify("READY=1\nSTATUS=serving");
            }
        }
    }
    crate::sys::notify("STOPPING=1");
    control_stop.fire();
    daemon.shutdown(DRAIN).await;
    control_task.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(ExitCode::SUCCESS)
}
