//! `credvend install-service`: writes the systemd user unit (Linux) or launchd agent (macOS)
//! with the path of this binary, then enables and starts it. `--dry-run` prints what would be
//! written and run, and changes nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::context::Context;

/// `credvend install-service`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Print the files and commands instead of writing and running them
    #[arg(long)]
    dry_run: bool,
    /// Also install the socket units (systemd socket activation of the IMDS and ECS listeners)
    #[arg(long)]
    sockets: bool,
}

const SERVICE: &str = include_str!("../../systemd/credvend.service");
const IMDS_SOCKET: &str = include_str!("../../systemd/credvend.socket");
const ECS_SOCKET: &str = include_str!("../../systemd/credvend-ecs.socket");
const PLIST: &str = include_str!("../../launchd/dev.credvend.agent.plist");

/// One file to write.
struct Planned {
    /// Destination.
    pub path: PathBuf,
    /// Contents.
    pub contents: String,
}

/// The files and commands for this platform.
fn plan(
    ctx: &Context,
    binary: &Path,
    sockets: bool,
) -> anyhow::Result<(Vec<Planned>, Vec<Vec<String>>)> {
    let home = ctx.home.clone().context("HOME is not set")?;
    let bin = binary.display().to_string();
    if cfg!(target_os = "macos") {
        let logs = home.join("Library/Logs");
        let path = home.join("Library/LaunchAgents/dev.credvend.agent.plist");
        let uid = crate::paths::current_uid();
        let files = vec![Planned {
            contents: PLIST
                .replace("@CREDVEND@", &bin)
                .replace("@LOGDIR@", &logs.display().to_string()),
            path: path.clone(),
        }];
        let cmds = vec![
            vec![
                "launchctl".into(),
                "bootout".into(),
                format!("gui/{uid}/dev.credvend.agent"),
            ],
            vec![
                "launchctl".into(),
                "bootstrap".into(),
                format!("gui/{uid}"),
                path.display().to_string(),
            ],
        ];
        return Ok((files, cmds));
    }
    let dir = ctx
        .config_home
        .clone()
        .unwrap_or_else(|| home.join(".config"))
        .join("systemd/user");
    let mut files = vec![Planned {
        path: dir.join("credvend.service"),
        contents: SERVICE.replace("@CREDVEND@", &bin),
    }];
    let mut units = vec!["credvend.service".to_owned()];
    if sockets {
        files.push(Planned {
            path: dir.join("credvend.socket"),
            contents: IMDS_SOCKET.to_owned(),
        });
        files.push(Planned {
            path: dir.join("credvend-ecs.socket"),
            contents: ECS_SOCKET.to_owned(),
        });
        units = vec![
            "credvend.socket".into(),
            "credvend-ecs.socket".into(),
            "credvend.service".into(),
        ];
    }
    let mut enable = vec![
        "systemctl".into(),
        "--user".into(),
        "enable".into(),
        "--now".into(),
    ];
    enable.extend(units);
    let cmds = vec![
        vec!["systemctl".into(), "--user".into(), "daemon-reload".into()],
        enable,
    ];
    Ok((files, cmds))
}

/// Runs `credvend install-service`.
pub async fn install(ctx: &Context, args: InstallArgs) -> anyhow::Result<ExitCode> {
    let binary = std::env::current_exe().context("cannot find the path of this binary")?;
    let (files, cmds) = plan(ctx, &binary, args.sockets)?;
    if args.dry_run {
        for f in &files {
            println!("# would write {}\n{}", f.path.display(), f.contents);
        }
        for c in &cmds {
            println!("# would run: {}", c.join(" "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    for f in &files {
        if let Some(parent) = f.path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&f.path, &f.contents)
            .with_context(|| format!("cannot write {}", f.path.display()))?;
        eprintln!("credvend: wrote {}", f.path.display());
    }
    for (i, c) in cmds.iter().enumerate() {
        let status = std::process::Command::new(&c[0])
            .args(&c[1..])
            .status()
            .with_context(|| format!("cannot run {}", c[0]))?;
        // `launchctl bootout` fails when the agent was not loaded yet; that is fine.
        let may_fail = cfg!(target_os = "macos") && i == 0;
        if !status.success() && !may_fail {
            bail!(
                "`{}` failed ({status}); the unit files are written, run it yourself once the problem is fixed",
                c.join(" ")
            );
        }
    }
    eprintln!("credvend: the service is installed and running; see `credvend status`");
    Ok(ExitCode::SUCCESS)
}
