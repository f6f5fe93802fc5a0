//! Metrics and health, against moto with auth on: what `curl` gets from the `[metrics]` listener
//! (and `credvend metrics` prints) is valid OpenMetrics by `prometheus_client`'s parser, shows the
//! expiry of the credentials served and refusal counts that grow with each refusal; `/healthz`
//! follows the freshness of the IMDS listener's profile; the listener obeys the same guards as
//! the credential listeners (another user, a foreign `Host`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::daemon::{stderr, stdout};
use crate::support::http;
use crate::support::moto::venv_bin;
use crate::support::served::Served;
use crate::support::toml::Toml;

/// The content type OpenMetrics 1.0 prescribes for its text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An IMDS listener and the ECS endpoint serving `role`, and the metrics listener.
fn toml(metrics_extra: &str) -> String {
    Toml::new()
        .imds("role")
        .ecs(&["role"])
        .section(&format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n{metrics_extra}"
        ))
        .build()
}

/// What `curl` gets: status, content type, body. `prefix` runs curl through another program
/// (`setpriv` as another user).
fn curl_as(prefix: &[&str], url: &str, headers: &[&str]) -> (u16, String, String) {
    let (program, mut args): (&str, Vec<&str>) = match prefix.split_first() {
        Some((p, rest)) => (p, rest.to_vec()),
        None => ("curl", Vec::new()),
    };
    if !prefix.is_empty() {
        args.push("curl");
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(["-sS", "-w", "\n%{http_code} %{content_type}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().unwrap();
    let written = stdout(&out);
    let (body, tail) = written
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl {url}: {written:?} {}", stderr(&out)));
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("curl {url}: {written:?} {}", stderr(&out)));
    (code, ctype.to_owned(), body.to_owned())
}

fn curl(addr: SocketAddr, path: &str) -> (u16, String, String) {
    curl_as(&[], &format!("http://{addr}{path}"), &[])
}

/// One sample as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: serde_json::Value,
}

/// Parses `text` with prometheus_client's OpenMetrics parser (through the venv's python);
/// panics with the parser's complaint when it is not valid OpenMetrics.
fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new(venv_bin("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/openmetrics_parse.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .and_then(|s| s.value.as_f64())
}

/// Scrapes the metrics listener with curl and parses what it got.
fn scrape(addr: SocketAddr) -> (String, Vec<Sample>) {
    let (status, ctype, text) = curl(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(ctype, OPENMETRICS);
    let samples = parse(&text);
    (text, samples)
}

fn refused(samples: &[Sample], listener: &str, reason: &str) -> f64 {
    value(
        samples,
        "credvend_listener_requests_refused_total",
        &[("listener", listener), ("reason", reason)],
    )
    .unwrap_or_else(|| panic!("no {listener}/{reason} refusal counter"))
}

/// The Done-when line: curl of the metrics listener parses as OpenMetrics, shows the expiry of
/// the served credentials, and a refused-request count that grows by one with each refusal (an
/// IMDS request without a token, an ECS request with a wrong token). `credvend metrics` prints
/// the same, parseable too. No secret, token or key id appears anywhere in it.
#[tokio::test]
async fn metrics_curl_parses_as_openmetrics_with_expiry_and_growing_refusals() {
    let s = Served::start(&toml("")).await;
    let m = s.daemon.metrics();
    let creds = http::imds_creds(s.imds(), "role").await;
    let expiration = OffsetDateTime::parse(creds["Expiration"].as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp() as f64;

    let (_, before) = scrape(m);
    let role = [("profile", "role")];
    let expiry = value(&before, "credvend_profile_expiry_timestamp_seconds", &role)
        .expect("the expiry of role");
    assert_eq!(expiry.floor(), expiration, "the expiry of what IMDS served");
    let left = value(&before, "credvend_profile_expiry_remaining_seconds", &role).unwrap();
    assert!(left > 60.0 && left <= 3600.0, "{left}");
    let fresh = [("profile", "role"), ("credvend_profile_phase", "fresh")];
    assert_eq!(value(&before, "credvend_profile_phase", &fresh), Some(1.0));
    assert!(value(&before, "credvend_profile_refreshes_total", &role).unwrap() >= 1.0);
    let sts = [("action", "AssumeRole")];
    assert!(
        value(&before, "credvend_sts_request_duration_seconds_count", &sts).unwrap() >= 1.0,
        "the AssumeRole of role was timed"
    );
    let family_of = |name: &str| {
        before
            .iter()
            .find(|x| x.name == name)
            .map(|x| (x.family.clone(), x.kind.clone()))
    };
    assert_eq!(
        family_of("credvend_sts_request_duration_seconds_bucket"),
        Some((
            "credvend_sts_request_duration_seconds".into(),
            "histogram".into()
        ))
    );
    assert_eq!(
        family_of("credvend_profile_phase").map(|f| f.1),
        Some("stateset".into())
    );

    // Refusals: an IMDS credentials request without a token, an ECS one with a wrong token.
    let served_before = value(&before, "credvend_profile_requests_served_total", &role).unwrap();
    let r = http::request(
        s.imds(),
        "GET",
        "/latest/meta-data/iam/security-credentials/role",
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http::ecs_get(s.ecs(), "role", Some("not-the-token")).await;
    assert_eq!(r.status, 403);
    let token = s.ecs_token("role");
    let ecs = http::ecs_get(s.ecs(), "role", Some(&token)).await.json();

    let (text, after) = scrape(m);
    assert_eq!(
        refused(&after, "imds", "missing_token"),
        refused(&before, "imds", "missing_token") + 1.0
    );
    assert_eq!(
        refused(&after, "ecs", "bad_token"),
        refused(&before, "ecs", "bad_token") + 1.0
    );
    assert_eq!(
        value(&after, "credvend_profile_requests_served_total", &role).unwrap(),
        served_before + 1.0,
        "the one ECS request with the right token"
    );
    for secret in [
        creds["AccessKeyId"].as_str().unwrap(),
        creds["SecretAccessKey"].as_str().unwrap(),
        creds["Token"].as_str().unwrap(),
        ecs["AccessKeyId"].as_str().unwrap(),
        &token,
    ] {
        assert!(!text.contains(secret), "a secret or key id in the metrics");
    }

    // `credvend metrics` prints the same exposition (nothing was asked for in between).
    let out = s.setup.cli(&["metrics"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = parse(&stdout(&out));
    assert_eq!(
        refused(&printed, "imds", "missing_token"),
        refused(&after, "imds", "missing_token")
    );
    assert_eq!(
        value(&printed, "credvend_profile_expiry_timestamp_seconds", &role),
        Some(expiry)
    );
}

/// `/healthz` is 200 while the IMDS listener's profile has credentials to serve, and 503 naming
/// it once it has none (its keys removed); the failure is counted by code, the phase shows it,
/// and a request answered without credentials is counted by the profile's code and as the
/// listener's `no_credentials`.
#[tokio::test]
async fn metrics_healthz_is_503_when_the_imds_profile_fails() {
    let s = Served::start(&toml("")).await;
    let m = s.daemon.metrics();
    let (status, ctype, body) = curl(m, "/healthz");
    assert_eq!((status, ctype.as_str()), (200, "text/plain; charset=utf-8"));
    assert!(
        body.starts_with("ok: 1 prewarmed profile(s) fresh\nrole: fresh"),
        "{body}"
    );

    let out = s.setup.cli(&["remove", "base"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `remove` returns once the daemon stopped serving what the keys minted.
    let (status, _, body) = curl(m, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("unhealthy: not fresh: role\n") && body.contains("(MissingKeys)"),
        "{body}"
    );
    let token = http::token(s.imds(), 60).await;
    let r = http::get(
        s.imds(),
        "/latest/meta-data/iam/security-credentials/role",
        &token,
    )
    .await;
    assert_eq!(r.json()["Code"], "MissingKeys");
    let (_, samples) = scrape(m);
    let failed = [("profile", "role"), ("code", "MissingKeys")];
    assert_eq!(
        value(&samples, "credvend_profile_requests_refused_total", &failed),
        Some(1.0)
    );
    assert_eq!(refused(&samples, "imds", "no_credentials"), 1.0);
    assert!(value(&samples, "credvend_profile_failures_total", &failed).unwrap() >= 1.0);
    let error = [("profile", "role"), ("credvend_profile_phase", "error")];
    assert_eq!(value(&samples, "credvend_profile_phase", &error), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "credvend_profile_expiry_timestamp_seconds",
            &[("profile", "role")]
        ),
        None,
        "nothing held, no expiry"
    );
}

/// The metrics listener is guarded like the others: another local user gets 403 (counted as
/// `user_not_allowed`) until `allow_uids` names it, and a foreign `Host` is refused. `doctor`
/// probes it like any listener.
#[tokio::test]
async fn metrics_listener_refuses_another_user_and_foreign_hosts() {
    let s = Served::start(&toml("")).await;
    let m = s.daemon.metrics();
    let url = format!("http://{m}/metrics");
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let (status, _, body) = curl_as(&nobody, &url, &[]);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("credvend_"), "{body}");
    let (status, _, _) = curl_as(&[], &url, &["Host: evil.example"]);
    assert_eq!(status, 403);
    let (_, samples) = scrape(m);
    assert_eq!(refused(&samples, "metrics", "user_not_allowed"), 1.0);
    assert_eq!(refused(&samples, "metrics", "foreign_host"), 1.0);

    let out = s.setup.cli(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == format!("listener metrics {m}"))
        .unwrap_or_else(|| panic!("no metrics listener check: {checks:#}"));
    assert_eq!(probe["status"], "ok", "{probe}");

    s.setup.write_toml(&toml("allow_uids = [65534]\n"));
    s.daemon.signal(libc::SIGHUP);
    assert!(
        s.daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        s.daemon.log()
    );
    let (status, ctype, body) = curl_as(&nobody, &url, &[]);
    assert_eq!((status, ctype.as_str()), (200, OPENMETRICS), "{body}");
    parse(&body);
}
