//! Which on-demand profiles are in use, remembered across restarts, so that after a restart (an
//! upgrade, a reboot) the profiles people were using are minted at once instead of on their
//! clients' next request.
//!
//! The file (`in-use.json` in the state directory, mode 0600) maps a profile name to when it was
//! last asked for. It is written only when a profile starts being used, at each of its rotations
//! (so the time is at most one rotation old) and when it goes idle; never per request. It holds
//! names and times only. A file that does not parse is ignored with a warning: it only saves a
//! cold start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::creds::{format_aws_time, parse_aws_time};

/// The file's name in the state directory.
pub(crate) const FILE: &str = "in-use.json";

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    version: u32,
    /// Profile name → last use (`YYYY-MM-DDTHH:MM:SSZ`).
    profiles: BTreeMap<String, String>,
}

/// The in-use record of one daemon.
pub(crate) struct Usage {
    path: PathBuf,
    profiles: Mutex<BTreeMap<String, OffsetDateTime>>,
}

impl Usage {
    /// Reads the record from `state_dir` (empty when there is none or it does not parse).
    pub fn load(state_dir: &std::path::Path) -> Usage {
        let path = state_dir.join(FILE);
        let profiles = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), "ignoring the record of profiles in use: {e}");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Usage {
            path,
            profiles: Mutex::new(profiles),
        }
    }

    /// When `profile` was last used, if it was in use when last recorded.
    pub fn last_use(&self, profile: &str) -> Option<OffsetDateTime> {
        self.profiles
            .lock()
            .expect("usage lock")
            .get(profile)
            .copied()
    }

    /// Records that `profile` is in use, last asked for at `at`.
    pub fn record(&self, profile: &str, at: OffsetDateTime) {
        let mut map = self.profiles.lock().expect("usage lock");
        if map.insert(profile.to_owned(), at) != Some(at) {
            self.write(&map);
        }
    }

    /// Records that `profile` went idle.
    pub fn remove(&self, profile: &str) {
        let mut map = self.profiles.lock().expect("usage lock");
        if map.remove(profile).is_some() {
            self.write(&map);
        }
    }

    fn write(&self, map: &BTreeMap<String, OffsetDateTime>) {
        let stored = Stored {
            version: 1,
            profiles: map
                .iter()
                .map(|(k, v)| (k.clone(), format_aws_time(*v)))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).expect("JSON values serialize");
        if let Err(e) = crate::paths::write_private_file(&self.path, &bytes) {
            tracing::warn!(file = %self.path.display(), "cannot record the profiles in use: {e}");
        }
    }
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<String, OffsetDateTime>, String> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if stored.version != 1 {
        return Err(format!("unknown version {}", stored.version));
    }
    stored
        .profiles
        .into_iter()
        .map(|(k, v)| match parse_aws_time(&v) {
            Ok(t) => Ok((k, t)),
            Err(_) => Err(format!("profile `{k}`: not a time")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn records_survive_a_reload_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let at = datetime!(2026-11-30 12:00:00 UTC);
        let usage = Usage::load(dir.path());
        assert_eq!(usage.last_use("dev"), None);
        usage.record("dev", at);
        usage.record("ci", at);
        usage.remove("ci");
        let again = Usage::load(dir.path());
        assert_eq!(again.last_use("dev"), Some(at));
        assert_eq!(again.last_use("ci"), None);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"dev\": \"2026-11-30T12:00:00Z\""), "{text}");
        for bad in [
            "",
            "{",
            r#"{"version":2,"profiles":{}}"#,
            r#"{"version":1,"profiles":{"a":"x"}}"#,
        ] {
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            assert_eq!(Usage::load(dir.path()).last_use("dev"), None, "{bad}");
        }
    }
}
