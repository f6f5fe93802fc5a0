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

/// What to say when the service manager could not be told to start the service: the unit is
/// written; how else to run the daemon.
fn not_started(why: &str) -> String {
    if cfg!(target_os = "macos") {
        return format!(
            "{why}. The launchd agent is written; load it with `launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/dev.credvend.agent.plist`, or run `credvend serve` yourself"
        );
    }
    format!(
        "{why}. The unit is written, but there is no systemd user session to start it in (no user bus: \
         a login without pam_systemd, a container, `su`/`sudo`, WSL without systemd). Either enable one and \
         start the service there (`loginctl enable-linger $USER`, then in a login session \
         `systemctl --user enable --now credvend.service`), or run the daemon yourself: `credvend serve` \
         (in tmux or a terminal, from cron `@reboot`, or under another supervisor)"
    )
}

/// One file to write.
struct Planned {
    /// Destination.
    pub path: PathBuf,
    /// Contents.
    pub contents: String,
}

/// The global options this command was given (flags or their environment variables), for the
/// service to run with the same configuration, state directory and keyring.
fn global_flags(ctx: &Context) -> Vec<String> {
    let mut out = Vec::new();
    if ctx.daemon_config_explicit {
        out.push("--config".into());
        out.push(absolute(&ctx.daemon_config));
    }
    if ctx.keystore != crate::keystore::Choice::Auto {
        out.push("--keystore".into());
        out.push(ctx.keystore.as_str().into());
    }
    if ctx.state_dir_explicit {
        out.push("--state-dir".into());
        out.push(absolute(&ctx.state_dir));
    }
    out
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// One word of a systemd `ExecStart=` line: double-quoted, with `\`, `"`, `%` and `$` escaped
/// (systemd.service(5) "Command lines", systemd.unit(5) "Specifiers").
fn systemd_quote(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The files and commands for this platform.
fn plan(
    ctx: &Context,
    binary: &Path,
    sockets: bool,
) -> anyhow::Result<(Vec<Planned>, Vec<Vec<String>>)> {
    let home = ctx.home.clone().context("HOME is not set")?;
    let mut argv = vec![binary.display().to_string()];
    argv.extend(global_flags(ctx));
    if cfg!(target_os = "macos") {
        let logs = home.join("Library/Logs");
        let path = home.join("Library/LaunchAgents/dev.credvend.agent.plist");
        let uid = crate::paths::current_uid();
        let strings: Vec<String> = argv
            .iter()
            .map(|a| format!("<string>{}</string>", xml_escape(a)))
            .collect();
        let files = vec![Planned {
            contents: PLIST
                .replace("<string>@CREDVEND@</string>", &strings.join("\n    "))
                .replace("@LOGDIR@", &xml_escape(&logs.display().to_string())),
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
        contents: SERVICE.replace(
            "@CREDVEND@",
            &argv
                .iter()
                .map(|a| systemd_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        ),
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
        let out = std::process::Command::new(&c[0])
            .args(&c[1..])
            .stdout(std::process::Stdio::inherit())
            .output();
        // `launchctl bootout` fails when the agent was not loaded yet; that is fine.
        let may_fail = cfg!(target_os = "macos") && i == 0;
        let why = match out {
            Ok(o) if o.status.success() || may_fail => continue,
            Ok(o) => format!(
                "`{}` failed: {}",
                c.join(" "),
                String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")
            ),
            Err(e) => format!("cannot run {}: {e}", c[0]),
        };
        bail!("{}", not_started(&why));
    }
    eprintln!("credvend: the service is installed and running; see `credvend status`");
    Ok(ExitCode::SUCCESS)
}
