//! Real SDK clients against `credvend serve` and moto: boto3, the AWS CLI and the AWS SDK for
//! Rust find credentials over IMDS and the ECS container endpoint and use them to call STS;
//! credentials rotate under clients without a failed request, a short lifetime, or a second STS
//! call; many concurrent requests cost one STS call on a cold start and on a forced rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::clients::{Client, Sdk, assumed_role_prefix};
use crate::support::daemon::{Daemon, RoleProfile, Setup};
use crate::support::http;
use crate::support::moto::{Moto, venv_bin};
use crate::support::sts_proxy::{Mode, StsProxy};

/// The IMDS path of the served role (the role name is the profile name).
const CREDS_PATH: &str = "/latest/meta-data/iam/security-credentials/role";

/// Hang bound for one credential request: the SDKs' own read timeout. Latency targets belong in
/// benchmarks; this only catches a request that waits for STS or never returns.
const HANG: Duration = Duration::from_secs(1);

/// How a client is pointed at the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT`.
    Imds,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/credentials/role` and
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    EcsTokenFile,
    /// The same through `http://localhost:PORT/...`.
    EcsLocalhost,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` (the token itself) instead of the file.
    EcsTokenEnv,
}

/// A daemon serving profile `role` over IMDS and ECS, backed by the shared moto.
struct Served {
    moto: Moto,
    setup: Setup,
    scenario: RoleProfile,
    daemon: Daemon,
}

async fn serve_role() -> Served {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n",
    );
    let daemon = setup.start();
    Served {
        moto,
        setup,
        scenario,
        daemon,
    }
}

impl Served {
    fn client(&self, via: Via) -> Client {
        let token_file = self.setup.state_dir().join("ecs-token-role");
        let token_file = token_file.to_str().unwrap();
        let ecs = self.daemon.ecs();
        let client = Client::new();
        // ECS cases: nothing may come from (or go to) the default metadata address.
        let client = if via == Via::Imds {
            client
        } else {
            client.env("AWS_EC2_METADATA_DISABLED", "true")
        };
        match via {
            Via::Imds => client.env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                &format!("http://{}", self.daemon.imds()),
            ),
            Via::EcsTokenFile => client
                .env(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    &format!("http://{ecs}/credentials/role"),
                )
                .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file),
            Via::EcsLocalhost => client
                .env(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    &format!("http://localhost:{}/credentials/role", ecs.port()),
                )
                .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file),
            Via::EcsTokenEnv => client
                .env(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    &format!("http://{ecs}/credentials/role"),
                )
                .env(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                    &std::fs::read_to_string(token_file).unwrap(),
                ),
        }
    }

    /// The access key id the daemon serves right now.
    async fn served_key(&self) -> String {
        let token = http::token(self.daemon.imds(), 60).await;
        let r = http::get(self.daemon.imds(), CREDS_PATH, &token).await;
        r.json()["AccessKeyId"].as_str().unwrap().to_owned()
    }
}

/// Runs `sdk` pointed at the daemon `via`, and checks it got the role's credentials from the
/// daemon and used them with STS.
async fn check(sdk: Sdk, via: Via) {
    let s = serve_role().await;
    let audit = match via {
        Via::Imds => "vended credentials over IMDS",
        _ => "vended credentials over ECS",
    };
    let before = s.daemon.log().matches(audit).count();
    let client = s.client(via);
    let who = tokio::task::spawn_blocking({
        let url = s.moto.url.clone();
        move || client.expect_whoami(sdk, &url)
    })
    .await
    .unwrap();
    let prefix = assumed_role_prefix(&s.scenario.role_arn);
    assert!(
        who.arn.starts_with(&prefix),
        "{sdk:?} via {via:?}: GetCallerIdentity returned {}, expected {prefix}...",
        who.arn
    );
    if let Some(key) = &who.access_key_id {
        assert_eq!(
            *key,
            s.served_key().await,
            "{sdk:?} via {via:?} loaded other credentials than the daemon serves"
        );
    }
    if let Some(method) = &who.method {
        let want = if via == Via::Imds {
            "iam-role"
        } else {
            "container-role"
        };
        assert_eq!(method, want, "{sdk:?} via {via:?}: credential provider");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.daemon.log().matches(audit).count() <= before {
        assert!(
            Instant::now() < deadline,
            "{sdk:?} via {via:?}: the daemon logged no `{audit}` for the client:\n{}",
            s.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.daemon.terminate().code(), Some(0));
}

macro_rules! sdk_cases {
    ($($name:ident: $sdk:expr, $via:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            check($sdk, $via).await;
        }
    )*};
}

sdk_cases! {
    sdk_boto3_imds: Sdk::Boto3, Via::Imds;
    sdk_boto3_ecs_token_file: Sdk::Boto3, Via::EcsTokenFile;
    sdk_boto3_ecs_localhost: Sdk::Boto3, Via::EcsLocalhost;
    sdk_boto3_ecs_token_env: Sdk::Boto3, Via::EcsTokenEnv;
    sdk_cli_imds: Sdk::Cli, Via::Imds;
    sdk_cli_ecs_token_file: Sdk::Cli, Via::EcsTokenFile;
    sdk_cli_ecs_localhost: Sdk::Cli, Via::EcsLocalhost;
    sdk_cli_ecs_token_env: Sdk::Cli, Via::EcsTokenEnv;
    sdk_rust_imds: Sdk::Rust, Via::Imds;
    sdk_rust_ecs_token_file: Sdk::Rust, Via::EcsTokenFile;
    sdk_rust_ecs_localhost: Sdk::Rust, Via::EcsLocalhost;
    sdk_rust_ecs_token_env: Sdk::Rust, Via::EcsTokenEnv;
}

// ---------------------------------------------------------------------------------------------
// Rotation

/// A daemon serving `role` over IMDS only, whose STS traffic goes through a counting proxy.
struct Counted {
    moto: Moto,
    proxy: StsProxy,
    setup: Setup,
    scenario: RoleProfile,
}

/// Seeds the role scenario with its profiles' `endpoint_url` pointing at a counting proxy in
/// front of moto. `role_extra` is appended to the `role` profile; `toml_extra` to the daemon
/// config (which has one IMDS listener for `role` and no ECS endpoint).
async fn counted(role_extra: &str, toml_extra: &str) -> Counted {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    // `role_profile` writes `[profile role]` last, so appended lines belong to it.
    let config = std::fs::read_to_string(setup.aws_config_path())
        .unwrap()
        .replace(&moto.url, &proxy.url());
    setup.write_aws_config(&format!("{config}{role_extra}"));
    setup.write_toml(&format!(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n[ecs]\nenabled = false\n{toml_extra}"
    ));
    Counted {
        moto,
        proxy,
        setup,
        scenario,
    }
}

/// What a polling client saw.
#[derive(Debug)]
struct Polled {
    /// Distinct access keys, in the order they appeared.
    keys: Vec<String>,
    /// Requests made.
    requests: usize,
    /// Slowest request.
    max_latency: Duration,
    /// Least lifetime left on any credentials served (from `Expiration`).
    least_left: time::Duration,
}

/// A client with the SDKs' 1 s timeout (installs the rustls provider first).
fn timed_client(timeout: Duration) -> reqwest::Client {
    let _ = crate::support::http_client();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// One IMDS credentials GET: (status, body, latency). Panics when it takes longer than the
/// client's timeout.
async fn get_creds(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
) -> (u16, serde_json::Value, Duration) {
    let t0 = Instant::now();
    let resp = client
        .get(format!("http://{addr}{CREDS_PATH}"))
        .header("x-aws-ec2-metadata-token", token)
        .send()
        .await;
    let resp =
        resp.unwrap_or_else(|e| panic!("credentials request failed after {:?}: {e}", t0.elapsed()));
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("credentials body failed after {:?}: {e}", t0.elapsed()));
    let latency = t0.elapsed();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, json, latency)
}

/// Polls the IMDS credentials of `addr` (about every 20 ms) until `keys` distinct access keys
/// were seen, within `deadline`. Every response must succeed within [`HANG`] and carry
/// credentials with at least `margin` left.
async fn poll_rotations(
    addr: std::net::SocketAddr,
    margin: Duration,
    keys: usize,
    deadline: Duration,
) -> Polled {
    let client = timed_client(HANG);
    let token = http::token(addr, 21600).await;
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polled = Polled {
        keys: Vec::new(),
        requests: 0,
        max_latency: Duration::ZERO,
        least_left: time::Duration::MAX,
    };
    while polled.keys.len() < keys {
        assert!(
            started.elapsed() < deadline,
            "saw only {} access keys within {deadline:?}: {polled:?}",
            polled.keys.len()
        );
        pace.tick().await;
        let (status, json, latency) = get_creds(&client, addr, &token).await;
        let now = OffsetDateTime::now_utc();
        polled.requests += 1;
        polled.max_latency = polled.max_latency.max(latency);
        assert_eq!(status, 200, "request {}: {json}", polled.requests);
        assert_eq!(
            json["Code"], "Success",
            "request {}: {json}",
            polled.requests
        );
        let expiration =
            OffsetDateTime::parse(json["Expiration"].as_str().unwrap(), &Rfc3339).unwrap();
        let left = expiration - now;
        polled.least_left = polled.least_left.min(left);
        assert!(
            left >= margin,
            "request {} got credentials with {left} left, less than the margin {margin:?}: {json}",
            polled.requests
        );
        let key = json["AccessKeyId"].as_str().unwrap();
        if polled.keys.last().map(String::as_str) != Some(key) {
            assert!(
                !polled.keys.iter().any(|k| k == key),
                "an older access key came back: {key} after {:?}",
                polled.keys
            );
            polled.keys.push(key.to_owned());
        }
    }
    polled
}

/// Successful mints so far, read when no rotation is in flight: the proxy's AssumeRole count is
/// the same before and after reading `status`, and the profile is not mid-refresh.
async fn quiet_counts(c: &Counted) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = c.proxy.count("AssumeRole");
        let out = c.setup.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            crate::support::daemon::stderr(&out)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let profile = &report["profiles"][0];
        let after = c.proxy.count("AssumeRole");
        if before == after && profile["phase"] == "fresh" {
            return (after, profile["refreshes"].as_u64().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "no quiet moment between rotations: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Access keys of the daemon's "minted credentials" log lines, in order.
fn minted_keys(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("minted credentials"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("access_key_id="))
                .map(str::to_owned)
        })
        .collect()
}

/// Checks one AssumeRole per rotation: the proxy saw as many AssumeRole calls as the daemon
/// minted credentials, and every key the client saw was minted, in order.
async fn assert_one_call_per_rotation(c: &Counted, daemon: &Daemon, polled: &Polled) {
    let (calls, refreshes) = quiet_counts(c).await;
    assert_eq!(
        calls as u64, refreshes,
        "AssumeRole calls at the proxy vs successful mints"
    );
    assert!(daemon.wait_for_log("minted credentials", Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let minted = loop {
        let minted = minted_keys(&daemon.log());
        if minted.len() as u64 >= refreshes || Instant::now() > deadline {
            break minted;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(minted.len() as u64, refreshes, "{minted:?}");
    let start = minted
        .iter()
        .position(|k| *k == polled.keys[0])
        .expect("the first key seen was minted");
    assert_eq!(
        &minted[start..start + polled.keys.len()],
        polled.keys.as_slice(),
        "the client saw every minted key in order"
    );
    assert_eq!(c.proxy.count("GetSessionToken"), 0);
}

/// 900 s sessions rotating every few seconds: a client polling throughout sees the key change,
/// never a failed response, never less than the margin left, and the proxy sees one AssumeRole
/// per rotation.
///
/// With `lifetime = 900`, `margin_seconds = 850` and `min_interval_seconds = 3`, the policy's
/// lead is capped at `lifetime - min_interval` = 897 s, so each rotation starts 3 s after the
/// previous mint (no jitter can move it earlier than `min_interval`) and served credentials keep
/// about 897 s, above the 850 s margin. (`margin_seconds = 800` would also rotate, but at a
/// jittered 3..40 s.)
#[tokio::test]
async fn sdk_rotation_900s_sessions_rotate_under_a_polling_client() {
    let margin = Duration::from_secs(850);
    let c = counted(
        "duration_seconds = 900\n",
        "[refresh]\nmargin_seconds = 850\nmin_interval_seconds = 3\n",
    )
    .await;
    let daemon = c.setup.start();
    let polled = poll_rotations(daemon.imds(), margin, 3, Duration::from_secs(90)).await;
    println!(
        "900 s sessions: {} requests over {} rotations, max latency {:?}, least left {}",
        polled.requests,
        polled.keys.len() - 1,
        polled.max_latency,
        polled.least_left
    );
    assert_one_call_per_rotation(&c, &daemon, &polled).await;
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// botocore fetching through the daemon while credentials rotate every few seconds never logs
/// "Attempting credential expiration extension", and a polling client sees the same guarantees
/// as above.
///
/// This needs sessions longer than 900 s: botocore extends (and logs) whenever fewer than
/// 15 min + 2..10 min jitter are left (`_evaluate_expiration` with the default chain's 900 s
/// `ec2_credential_refresh_window`), and a 900 s session never has that much. So: 3600 s sessions,
/// `margin_seconds = 3550`, `min_interval_seconds = 3` (rotation every 3 s, ~3597 s left).
#[tokio::test]
async fn sdk_rotation_botocore_logs_no_expiration_extension() {
    let margin = Duration::from_secs(3550);
    let c = counted(
        "duration_seconds = 3600\n",
        "[refresh]\nmargin_seconds = 3550\nmin_interval_seconds = 3\n",
    )
    .await;
    let daemon = c.setup.start();
    let imds = daemon.imds();
    // botocore in its own process, fetching through the daemon across >= 2 rotations.
    let botocore = {
        let client = Client::new().env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &format!("http://{imds}"),
        );
        let url = c.moto.url.clone();
        tokio::task::spawn_blocking(move || {
            client
                .command(
                    &venv_bin("python"),
                    &[
                        concat!(
                            env!("CARGO_MANIFEST_DIR"),
                            "/tests/sdk/python/rotation_watch.py"
                        ),
                        "--keys",
                        "3",
                        "--deadline",
                        "90",
                    ],
                )
                .env("AWS_ENDPOINT_URL_STS", url)
                .output()
                .unwrap()
        })
    };
    let polled = poll_rotations(imds, margin, 3, Duration::from_secs(90)).await;
    let out = botocore.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rotation_watch.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    println!(
        "3600 s sessions: poller {} requests, max latency {:?}, least left {}; botocore: {report}",
        polled.requests, polled.max_latency, polled.least_left
    );
    assert_eq!(
        report["extension_lines"],
        serde_json::json!([]),
        "botocore extended the expiry of credentials it got from the daemon"
    );
    assert!(
        report["log_lines"].as_u64().unwrap() > 0,
        "botocore logs were captured"
    );
    assert!(report["keys"].as_array().unwrap().len() >= 3, "{report}");
    assert!(
        report["least_left"].as_f64().unwrap() >= margin.as_secs_f64() - 1.0,
        "botocore held credentials with less than the margin left: {report}"
    );
    assert!(
        report["arn"]
            .as_str()
            .unwrap()
            .starts_with(&assumed_role_prefix(&c.scenario.role_arn)),
        "{report}"
    );
    assert_one_call_per_rotation(&c, &daemon, &polled).await;
    assert_eq!(daemon.terminate().code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Single flight

/// Concurrent requests per burst.
const BURST: usize = 200;

/// Hang bound for a request of a burst: 200 connections at once on a shared 2-core machine are
/// slower than one, and a cold-start answer waits up to 400 ms by design. A request that waited
/// for the held STS call would still exceed it by far.
const BURST_HANG: Duration = Duration::from_secs(3);

/// Fires `n` concurrent credential GETs; each retries while the daemon answers
/// `CredentialsPending` (what an SDK would do). `pending` counts the requests that were told so
/// at least once. Returns each request's final access key and its slowest attempt.
fn burst(
    addr: std::net::SocketAddr,
    token: &str,
    n: usize,
    pending: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<(String, Duration)>> {
    let client = timed_client(BURST_HANG);
    (0..n)
        .map(|_| {
            let (client, token, pending) = (client.clone(), token.to_owned(), pending.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut slowest = Duration::ZERO;
                let mut told_to_wait = false;
                loop {
                    let (status, json, latency) = get_creds(&client, addr, &token).await;
                    slowest = slowest.max(latency);
                    assert_eq!(status, 200, "{json}");
                    if json["Code"] == "Success" {
                        return (json["AccessKeyId"].as_str().unwrap().to_owned(), slowest);
                    }
                    assert_eq!(json["Code"], "CredentialsPending", "{json}");
                    if !told_to_wait {
                        told_to_wait = true;
                        pending.fetch_add(1, Ordering::SeqCst);
                    }
                    assert!(Instant::now() < deadline, "still pending after 30 s");
                }
            })
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<(String, Duration)>>) -> Vec<(String, Duration)> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A cold start: the first AssumeRole is held at the proxy while 200 concurrent requests arrive
/// (each is told `CredentialsPending` and retries); when it is let through, every request gets
/// the same credentials, and STS saw exactly one AssumeRole.
#[tokio::test]
async fn sdk_single_flight_cold_start() {
    let c = counted("", "").await;
    c.proxy.set_mode(Mode::Hold);
    let daemon = c.setup.start();
    assert!(
        c.proxy
            .wait_count("AssumeRole", 1, Duration::from_secs(20))
            .await,
        "the daemon did not start minting:\n{}",
        daemon.log()
    );
    let token = http::token(daemon.imds(), 21600).await;
    let pending = Arc::new(AtomicUsize::new(0));
    let tasks = burst(daemon.imds(), &token, BURST, pending.clone());
    // Every request has been answered "pending" at least once: all of them hit the daemon
    // while its single STS call was in flight.
    wait_until(
        "every request saw the mint in flight",
        Duration::from_secs(30),
        || pending.load(Ordering::SeqCst) >= BURST,
    )
    .await;
    assert_eq!(c.proxy.count("AssumeRole"), 1);
    c.proxy.set_mode(Mode::Forward);
    let results = join(tasks).await;
    let first = &results[0].0;
    assert!(
        results.iter().all(|(k, _)| k == first),
        "every request got the same credentials"
    );
    println!(
        "cold start: {BURST} requests, {} told to wait, slowest attempt {:?}",
        pending.load(Ordering::SeqCst),
        results.iter().map(|r| r.1).max().unwrap()
    );
    assert_eq!(
        c.proxy.count("AssumeRole"),
        1,
        "one AssumeRole for the cold start"
    );
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// A forced rotation (`credvend refresh role`): while its AssumeRole is held at the proxy, 200
/// concurrent requests are all answered at once from memory with the current credentials; 200
/// more are in flight when it is let through; afterwards every request gets the new credentials,
/// and STS saw exactly one AssumeRole for the rotation.
#[tokio::test]
async fn sdk_single_flight_forced_rotation() {
    let c = counted("", "").await;
    let daemon = c.setup.start();
    let token = http::token(daemon.imds(), 21600).await;
    let none = Arc::new(AtomicUsize::new(0));
    let old = join(burst(daemon.imds(), &token, 1, none.clone())).await[0]
        .0
        .clone();
    assert_eq!(c.proxy.count("AssumeRole"), 1);

    c.proxy.set_mode(Mode::Hold);
    let out = c.setup.cli(&["refresh", "role"]);
    assert!(
        out.status.success(),
        "{}",
        crate::support::daemon::stderr(&out)
    );
    assert!(
        c.proxy
            .wait_count("AssumeRole", 2, Duration::from_secs(20))
            .await
    );
    // The rotation's STS call is in flight: requests are served from memory, none waits.
    let during = join(burst(daemon.imds(), &token, BURST, none.clone())).await;
    assert!(
        during.iter().all(|(k, _)| *k == old),
        "during the rotation every request got the current credentials"
    );
    let slowest_during = during.iter().map(|r| r.1).max().unwrap();
    // 200 more in flight while the call completes.
    let racing = burst(daemon.imds(), &token, BURST, none.clone());
    c.proxy.set_mode(Mode::Forward);
    let racing = join(racing).await;
    let new = {
        let client = timed_client(HANG);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, json, _) = get_creds(&client, daemon.imds(), &token).await;
            let key = json["AccessKeyId"].as_str().unwrap().to_owned();
            if key != old {
                break key;
            }
            assert!(Instant::now() < deadline, "the rotation never completed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(
        racing.iter().all(|(k, _)| *k == old || *k == new),
        "racing requests got the old or the new credentials"
    );
    let after = join(burst(daemon.imds(), &token, BURST, none.clone())).await;
    assert!(after.iter().all(|(k, _)| *k == new));
    assert_eq!(
        none.load(Ordering::SeqCst),
        0,
        "no request was ever told to wait"
    );
    println!(
        "forced rotation: slowest request while STS was held {slowest_during:?}; racing: {} old, {} new",
        racing.iter().filter(|(k, _)| *k == old).count(),
        racing.iter().filter(|(k, _)| *k == new).count()
    );
    assert_eq!(
        c.proxy.count("AssumeRole"),
        2,
        "one AssumeRole at start-up and one for the forced rotation"
    );
    assert_eq!(daemon.terminate().code(), Some(0));
}
