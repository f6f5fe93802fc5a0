//! Desktop notifications for the moments a user must act: a profile needs an MFA code or an IAM
//! Identity Center sign-in now, or its MFA session ends within [`AHEAD`]. `notify-send` on Linux desktops, `osascript` on macOS;
//! silently nothing where neither exists (servers). Never blocks the caller.

use std::time::Duration;

use time::OffsetDateTime;

/// How long before an MFA session ends the user is told.
pub const AHEAD: Duration = Duration::from_secs(10 * 60);

/// When to remind the user about an MFA session ending at `expiry`.
pub fn remind_at(expiry: OffsetDateTime) -> OffsetDateTime {
    expiry - time::Duration::try_from(AHEAD).expect("small")
}

fn in_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Shows `body` under `title`, if this machine has a way to.
pub fn desktop(title: &str, body: &str) {
    let cmd = if cfg!(target_os = "macos") {
        let script = format!(
            "display notification {:?} with title {:?}",
            body.replace('"', "'"),
            title.replace('"', "'")
        );
        in_path("osascript").map(|p| (p, vec!["-e".to_owned(), script]))
    } else {
        in_path("notify-send").map(|p| {
            (
                p,
                vec![
                    "--app-name=credvend".to_owned(),
                    "--urgency=normal".to_owned(),
                    title.to_owned(),
                    body.to_owned(),
                ],
            )
        })
    };
    let Some((program, args)) = cmd else {
        tracing::debug!("no notify-send/osascript: notification not shown: {title}: {body}");
        return;
    };
    tokio::spawn(async move {
        let child = tokio::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut c) => {
                if tokio::time::timeout(Duration::from_secs(5), c.wait())
                    .await
                    .is_err()
                {
                    tracing::debug!("notification helper did not finish within 5 s");
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not run the notification helper"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn reminder_is_ten_minutes_ahead() {
        assert_eq!(
            remind_at(datetime!(2026-01-01 12:00 UTC)),
            datetime!(2026-01-01 11:50 UTC)
        );
    }
}
