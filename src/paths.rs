//! Where things live: the state directory (control socket, IMDS token key, ECS token files,
//! ECS-agent IDs), the daemon config file, and the AWS shared config/credentials files. IO:
//! creates the state directory with mode 0700 and refuses one that another user could have
//! prepared.

use std::path::{Path, PathBuf};

/// Name of the control socket inside the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Name of the IMDS token HMAC key inside the state directory.
pub const TOKEN_KEY: &str = "imds-token.key";

/// A state directory problem, with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// The default state directory: `$XDG_RUNTIME_DIR/credvend`, or `credvend-UID` in the system
/// temp directory when that is unset.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("credvend"),
        None => std::env::temp_dir().join(format!("credvend-{}", current_uid())),
    }
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (mode 0700) if needed and checks that it belongs to us and that no other user
/// can enter it. A directory someone else owns, or one that others could write to, is refused,
/// never reused (the fallback location is in the shared temp directory, where another user could
/// have prepared one).
pub fn ensure_state_dir(dir: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let shown = dir.display();
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => {
            return Err(PathError(format!(
                "cannot create the state directory {shown}: {e} (choose another with --state-dir or CREDVEND_STATE_DIR)"
            )));
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| PathError(format!("cannot inspect the state directory {shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(PathError(format!(
            "the state directory {shown} is not a directory (a symlink or file is in the way); remove it or pass --state-dir"
        )));
    }
    if meta.uid() != current_uid() {
        return Err(PathError(format!(
            "the state directory {shown} belongs to uid {}, not to you (uid {}): someone else may have created it; \
             remove it or pass --state-dir",
            meta.uid(),
            current_uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        // Never reused: while it was open, someone else could have put a socket or a token file
        // in it.
        return Err(PathError(format!(
            "the state directory {shown} has mode {:o}, so other users could have put files in it; \
             remove it (credvend creates it again with mode 0700) or pass --state-dir",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// The home directory (`$HOME`).
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Expands a leading `~` or `~/` to the home directory, as the SDKs do for file settings.
pub fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        return home_dir().unwrap_or_else(|| PathBuf::from(path));
    }
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = home_dir()
    {
        return home.join(rest);
    }
    PathBuf::from(path)
}

/// The AWS shared config file: `AWS_CONFIG_FILE`, default `~/.aws/config`.
pub fn aws_config_file() -> PathBuf {
    match std::env::var("AWS_CONFIG_FILE") {
        Ok(p) if !p.is_empty() => expand_tilde(&p),
        _ => expand_tilde("~/.aws/config"),
    }
}

/// The AWS shared credentials file: `AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`.
pub fn aws_credentials_file() -> PathBuf {
    match std::env::var("AWS_SHARED_CREDENTIALS_FILE") {
        Ok(p) if !p.is_empty() => expand_tilde(&p),
        _ => expand_tilde("~/.aws/credentials"),
    }
}

/// The daemon config file: `$XDG_CONFIG_HOME/credvend/config.toml` (`~/.config/...` when unset;
/// `~/Library/Application Support/credvend/config.toml` on macOS).
pub fn default_daemon_config() -> PathBuf {
    if cfg!(target_os = "macos") {
        return expand_tilde("~/Library/Application Support/credvend/config.toml");
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("credvend/config.toml"),
        None => expand_tilde("~/.config/credvend/config.toml"),
    }
}

/// The ECS token file of `profile` in `state_dir`. Profile names are used as they are when they
/// are plain; anything else is percent-encoded so a name can never escape the directory.
pub fn ecs_token_file(state_dir: &Path, profile: &str) -> PathBuf {
    profile_file(state_dir, "ecs-token-", profile)
}

/// The file holding the ECS-agent capability ID of `profile` in `state_dir` (named like
/// [`ecs_token_file`]).
pub fn ecs_agent_id_file(state_dir: &Path, profile: &str) -> PathBuf {
    profile_file(state_dir, "ecs-agent-id-", profile)
}

/// `state_dir/PREFIX` + `profile`, percent-encoded unless plain.
fn profile_file(state_dir: &Path, prefix: &str, profile: &str) -> PathBuf {
    let mut name = String::from(prefix);
    for (i, b) in profile.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'@' | b'+' | b'=' | b',');
        if plain && !(i == 0 && b == b'.') {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    state_dir.join(name)
}

/// Writes `contents` to `path` with mode 0600 atomically (temp file + rename), no trailing newline
/// added. On failure (a full disk, a directory in the way) the temp file is removed.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_names_cannot_escape() {
        let d = Path::new("/s");
        assert_eq!(ecs_token_file(d, "dev"), Path::new("/s/ecs-token-dev"));
        assert_eq!(
            ecs_token_file(d, "../x"),
            Path::new("/s/ecs-token-%2E.%2Fx")
        );
        assert_eq!(
            ecs_token_file(d, "a b/c"),
            Path::new("/s/ecs-token-a%20b%2Fc")
        );
        assert_eq!(
            ecs_agent_id_file(d, "../x"),
            Path::new("/s/ecs-agent-id-%2E.%2Fx")
        );
    }

    #[test]
    fn state_dir_is_created_private_and_loose_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_state_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure_state_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("mode 755") && e.contains("remove it"), "{e}");
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(ensure_state_dir(&file).is_err());
    }

    #[test]
    fn private_files_are_0600_without_newline() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t");
        write_private_file(&p, b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
