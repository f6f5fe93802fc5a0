//! A running daemon serving the `role` profile of [`Setup::role_profile`] (an AssumeRole at the
//! shared moto), with its first credentials minted: the starting point of the HTTP-level
//! conformance and hostile-input tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::daemon::{Daemon, RoleProfile, Setup};
use super::http;
use super::moto::Moto;

/// Path of the role listing.
pub const ROLE_LIST: &str = "/latest/meta-data/iam/security-credentials/";
/// Path of the `role` profile's IMDS credentials.
pub const ROLE_CREDS: &str = "/latest/meta-data/iam/security-credentials/role";

/// One IMDS listener and the ECS endpoint, both serving `role`, on free ports.
pub const ROLE_TOML: &str = "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
     [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n";

/// A daemon with credentials ready. Fields drop in order: the daemon stops before the setup
/// deletes its keyring entries and home.
pub struct Served {
    /// The running `credvend serve`.
    pub daemon: Daemon,
    /// The IAM user and role at moto.
    pub scenario: RoleProfile,
    /// The isolated home.
    pub setup: Setup,
}

impl Served {
    /// Seeds moto, writes `toml` as the daemon config, starts the daemon, and waits until its
    /// first IMDS listener vends credentials.
    pub async fn start(toml: &str) -> Served {
        let setup = Setup::new();
        let scenario = setup.role_profile(&Moto::shared()).await;
        setup.write_toml(toml);
        let daemon = setup.start();
        wait_for_credentials(daemon.imds(), ROLE_CREDS).await;
        Served {
            daemon,
            scenario,
            setup,
        }
    }

    /// The first IMDS listener.
    pub fn imds(&self) -> SocketAddr {
        self.daemon.imds()
    }

    /// The ECS listener.
    pub fn ecs(&self) -> SocketAddr {
        self.daemon.ecs()
    }

    /// The ECS token file of `profile`, as bytes.
    pub fn ecs_token(&self, profile: &str) -> String {
        std::fs::read_to_string(self.setup.state_dir().join(format!("ecs-token-{profile}")))
            .unwrap()
    }
}

/// Polls `path` on the IMDS listener `addr` (with a fresh token each time) until it answers
/// `"Code": "Success"`; panics after 20 s with the last answer. The condition is the
/// synchronisation: the first mint happens in the background after the ready line.
pub async fn wait_for_credentials(addr: SocketAddr, path: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let token = http::token(addr, 60).await;
        let r = http::get(addr, path, &token).await;
        if r.status == 200 {
            let json: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            if json["Code"] == "Success" {
                return json;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no credentials at {addr}{path} within 20 s: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon's resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
