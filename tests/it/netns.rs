//! Tests in private network namespaces: the default metadata address 169.254.169.254:80, and
//! "containers" on a bridge (an allow list, a peer outside it, DNAT of the metadata address,
//! ECS's `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` through DNAT of 169.254.170.2, and listener
//! routes giving each container on one bridge its own role).
//!
//! Each test re-executes itself under `unshare -n -m`, so moto, the daemon and every client run
//! in a network namespace of the test's own (only `lo` at first) with a private mount namespace;
//! nothing is added to the machine's namespace and no packet leaves the namespaces the test
//! made. Fixed addresses and ports are fine in there. The "container" namespaces come from
//! `tests/netns/topology.sh` (a veth pair each) and `tests/netns/bridge.sh` (one bridge), the
//! DNAT rules from `scripts/imds-dnat.sh` and `scripts/ecs-agent-dnat.sh` (the commands the
//! README documents).

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use crate::support::clients::{Client, Sdk, Whoami, assumed_role_prefix};
use crate::support::daemon::{Daemon, RoleProfile, Setup};
use crate::support::http;
use crate::support::moto::PrivateMoto;

/// Set (to the test's name) in the re-executed test process inside the namespaces.
const CHILD: &str = "CREDVEND_NETNS_TEST";
/// The namespaces the test started in, for the inner process (and topology.sh) to check it is
/// elsewhere.
const OUTER_NET: &str = "CREDVEND_OUTER_NETNS";
const OUTER_MNT: &str = "CREDVEND_OUTER_MNTNS";

/// The bridge listener of the container tests (inside the test's own namespace).
const BRIDGE_LISTEN: &str = "198.18.1.1:9254";

fn namespace(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("cannot read /proc/self/ns/{kind}: {e}"))
        .display()
        .to_string()
}

/// Panics unless this process is in namespaces other than the ones the test started in, and the
/// network namespace has no interface but `lo` (so it was made for this test).
fn assert_private_namespaces() {
    for (kind, var) in [("net", OUTER_NET), ("mnt", OUTER_MNT)] {
        let outer = std::env::var(var).unwrap_or_default();
        let here = namespace(kind);
        assert!(
            !outer.is_empty() && here != outer,
            "refusing to change the network: not in a private {kind} namespace ({here} vs {outer:?})"
        );
    }
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "refusing to change the network: this namespace has other interfaces"
    );
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the calling test's `body` inside a private network + mount namespace: re-executes this
/// test binary, filtered to `name`, under `unshare -n -m`, and there brings `lo` up and runs
/// `body` on a tokio runtime.
fn in_private_netns<F: Future<Output = ()>>(name: &str, body: impl FnOnce() -> F) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        assert_private_namespaces();
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
        return;
    }
    let test = format!("netns::{name}");
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .env(OUTER_NET, namespace("net"))
        .env(OUTER_MNT, namespace("mnt"))
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux) is missing");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- inside the private namespace:\n{stdout}\n{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed inside `unshare -n -m` ({}); see the output above",
        out.status
    );
}

/// A private moto at `host` with the role scenario and a daemon with `toml`.
async fn serve(host: &str, toml: &str) -> (PrivateMoto, Setup, RoleProfile, Daemon) {
    let moto = PrivateMoto::start_on(host, true);
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto.moto).await;
    setup.write_toml(toml);
    let daemon = setup.start();
    (moto, setup, scenario, daemon)
}

/// The access key the daemon serves on `addr`.
async fn served_key(addr: SocketAddr) -> String {
    http::imds_creds(addr, "role").await["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn whoami(client: Client, sdk: Sdk, sts: &str) -> Result<Whoami, String> {
    let sts = sts.to_owned();
    tokio::task::spawn_blocking(move || client.whoami(sdk, &sts))
        .await
        .unwrap()
}

/// Checks that `who` used the role's credentials as served on `imds`, found over IMDS.
async fn assert_role_over_imds(sdk: Sdk, who: &Whoami, scenario: &RoleProfile, imds: SocketAddr) {
    let prefix = assumed_role_prefix(&scenario.role_arn);
    assert!(
        who.arn.starts_with(&prefix),
        "{sdk:?}: GetCallerIdentity returned {}, expected {prefix}...",
        who.arn
    );
    if let Some(key) = &who.access_key_id {
        assert_eq!(*key, served_key(imds).await, "{sdk:?}: access key");
    }
    if let Some(method) = &who.method {
        assert_eq!(method, "iam-role", "{sdk:?}: credential provider");
    }
}

/// What `credvend env role --container` prints (it must succeed).
fn container_env(setup: &Setup) -> String {
    let out = setup.cli(&["env", "role", "--container"]);
    assert!(
        out.status.success(),
        "{}",
        crate::support::daemon::stderr(&out)
    );
    crate::support::daemon::stdout(&out)
}

/// Checks that `who` signed with the role's session key `served`, found as container
/// credentials.
fn assert_role_over_container(sdk: Sdk, who: &Whoami, scenario: &RoleProfile, served: &str) {
    let prefix = assumed_role_prefix(&scenario.role_arn);
    assert!(
        who.arn.starts_with(&prefix),
        "{sdk:?}: signed by {}, expected a session of {prefix}...",
        who.arn
    );
    if let Some(key) = &who.access_key_id {
        assert_eq!(key, served, "{sdk:?}: access key");
    }
    if let Some(method) = &who.method {
        assert_eq!(method, "container-role", "{sdk:?}: credential provider");
    }
}

/// boto3, the AWS CLI and the Rust SDK with no metadata variable at all find a daemon listening
/// on 169.254.169.254:80 (an address on `lo` of the test's namespace) and call STS on a moto in
/// the same namespace. No `allow` list: the peer address of such local connections is
/// 169.254.169.254 itself, which the daemon recognises as local.
#[test]
fn netns_link_local_default_address() {
    in_private_netns("netns_link_local_default_address", || async {
        run(Command::new("ip").args(["addr", "add", "169.254.169.254/32", "dev", "lo"]));
        let (moto, _setup, scenario, daemon) = serve(
            "127.0.0.1",
            "[[imds]]\nlisten = \"169.254.169.254:80\"\nprofile = \"role\"\n[ecs]\nenabled = false\n",
        )
        .await;
        let imds: SocketAddr = "169.254.169.254:80".parse().unwrap();
        assert_eq!(daemon.imds(), imds);
        for sdk in Sdk::ALL {
            let who = whoami(Client::new(), sdk, &moto.moto.url)
                .await
                .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
            assert_role_over_imds(sdk, &who, &scenario, imds).await;
        }
        assert_eq!(daemon.terminate().code(), Some(0));
    });
}

/// The ECS agent endpoint's own address without root: 169.254.170.2:80 on `lo` (what
/// `credvend-ecs-agent@.socket` sets up), no `allow` list. The container clients with exactly
/// what `env --container` prints (the relative URI) find it and call STS with the role's
/// credentials: the peer address of such local connections is 169.254.170.2 itself, which the
/// daemon recognises as local.
#[test]
fn netns_ecs_agent_on_lo_default_address() {
    in_private_netns("netns_ecs_agent_on_lo_default_address", || async {
        run(Command::new("ip").args(["addr", "add", "169.254.170.2/32", "dev", "lo"]));
        let (moto, setup, scenario, daemon) = serve(
            "127.0.0.1",
            "[ecs]\nenabled = false\n[ecs_agent]\nlisten = \"169.254.170.2:80\"\nprofiles = [\"role\"]\n",
        )
        .await;
        allow_s3(&moto.moto, &scenario).await;
        let agent: SocketAddr = "169.254.170.2:80".parse().unwrap();
        assert_eq!(daemon.ecs_agent(), agent);
        let lines = container_env(&setup);
        let relative = crate::support::clients::shell_env(&lines)
            .into_iter()
            .rev()
            .find(|(k, _)| k == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .and_then(|(_, v)| v)
            .unwrap_or_else(|| panic!("no relative URI: {lines}"));
        let served = crate::support::http::request(agent, "GET", &relative, &[])
            .await
            .json()["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_owned();
        for sdk in Sdk::CONTAINER {
            let client = Client::new()
                .eval(&lines)
                .env("AWS_EC2_METADATA_DISABLED", "true");
            let who = whoami(client, sdk, &moto.moto.url)
                .await
                .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
            assert_role_over_container(sdk, &who, &scenario, &served);
        }
        assert_eq!(daemon.terminate().code(), Some(0));
    });
}

/// Builds the two "container" namespaces (tests/netns/topology.sh).
fn topology() {
    run(Command::new("bash").arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/topology.sh"
    )));
}

/// The daemon of the container tests: IMDS on the bridge address allowing the first container's
/// subnet, plus loopback-only IMDS and ECS listeners.
const CONTAINER_TOML: &str = "[[imds]]\nlisten = \"198.18.1.1:9254\"\nprofile = \"role\"\n\
     allow = [\"198.18.1.0/24\"]\n\
     [[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
     [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n";

/// curl in container `ns`; returns its exit code and stdout.
fn curl(ns: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["-sS", "--max-time", "5"];
    all.extend_from_slice(args);
    let out = Client::new()
        .in_netns(ns)
        .command("curl", &all)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Containers on a bridge: boto3 in the allowed container (198.18.1.2) with only
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` set gets credentials from the bridge listener and calls
/// STS; the container outside the allow list (198.18.2.2, routed to 198.18.1.1) has its
/// connections closed unanswered, and the daemon keeps serving the allowed one; neither
/// container can reach the daemon's 127.0.0.1 listeners.
#[test]
fn netns_bridge_allowlist() {
    in_private_netns("netns_bridge_allowlist", || async {
        topology();
        let (moto, _setup, scenario, daemon) = serve("198.18.1.1", CONTAINER_TOML).await;
        let bridge: SocketAddr = BRIDGE_LISTEN.parse().unwrap();
        assert_eq!(daemon.ready.imds[0], bridge);
        let local = daemon.ready.imds[1];
        assert!(local.ip().is_loopback());
        let endpoint = format!("http://{bridge}");
        let container = |ns: &str| {
            Client::new()
                .in_netns(ns)
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
        };

        let who = whoami(container("cv1"), Sdk::Boto3, &moto.moto.url)
            .await
            .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
        assert_role_over_imds(Sdk::Boto3, &who, &scenario, bridge).await;
        // The container's socket lives in another namespace: its audit line names no uid.
        assert!(
            daemon.wait_for_log("peer=198.18.1.2:", std::time::Duration::from_secs(5)),
            "{}",
            daemon.log()
        );
        let log = daemon.log();
        let vend = log
            .lines()
            .find(|l| l.contains("vended credentials over IMDS") && l.contains("peer=198.18.1.2:"))
            .unwrap_or_else(|| panic!("no audit line for cv1:\n{log}"));
        assert!(!vend.contains("peer_uid="), "{vend}");

        // Outside the allow list: the connection is closed before any HTTP.
        let token_url = format!("{endpoint}/latest/api/token");
        let (code, body) = curl(
            "cv2",
            &[
                "-X",
                "PUT",
                "-H",
                "x-aws-ec2-metadata-token-ttl-seconds: 60",
                &token_url,
            ],
        );
        assert!(
            matches!(code, Some(52 | 56)),
            "cv2 expected an empty reply or a reset, got curl exit {code:?} with {body:?}"
        );
        let refused = whoami(container("cv2"), Sdk::Boto3, &moto.moto.url).await;
        assert!(refused.is_err(), "cv2 got credentials: {refused:?}");
        assert!(
            daemon.wait_for_log(
                "refused a connection from a peer outside the allow list peer=198.18.2.2",
                std::time::Duration::from_secs(5)
            ),
            "{}",
            daemon.log()
        );

        // The daemon keeps serving the allowed container.
        let again = whoami(container("cv1"), Sdk::Boto3, &moto.moto.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_role_over_imds(Sdk::Boto3, &again, &scenario, bridge).await;
        let (code, token) = curl(
            "cv1",
            &[
                "-X",
                "PUT",
                "-H",
                "x-aws-ec2-metadata-token-ttl-seconds: 60",
                &token_url,
            ],
        );
        assert_eq!(code, Some(0));
        assert!(!token.is_empty());

        // 127.0.0.1 in a container is its own loopback: the daemon's loopback listeners are out
        // of reach, and so are they through the bridge address.
        for ns in ["cv1", "cv2"] {
            for port in [local.port(), daemon.ecs().port()] {
                for host in ["127.0.0.1", "198.18.1.1"] {
                    let (code, body) = curl(ns, &[&format!("http://{host}:{port}/")]);
                    assert_eq!(
                        code,
                        Some(7),
                        "{ns} reached {host}:{port} (curl exit {code:?}): {body}"
                    );
                }
            }
        }
        assert_eq!(daemon.terminate().code(), Some(0));
    });
}

/// The allowed container finds the daemon with no environment variable at all: its default
/// route leads to the host, where `scripts/imds-dnat.sh` DNATs 169.254.169.254:80 arriving on its
/// veth to the bridge listener. boto3, the AWS CLI and the Rust SDK all get the role's
/// credentials; after `imds-dnat.sh remove` they find none.
#[test]
fn netns_dnat_link_local() {
    in_private_netns("netns_dnat_link_local", || async {
        topology();
        let dnat = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/imds-dnat.sh");
        run(Command::new("sh").args([dnat, "add", "cvh1", "198.18.1.1", "9254"]));
        let (moto, _setup, scenario, daemon) = serve("198.18.1.1", CONTAINER_TOML).await;
        let bridge: SocketAddr = BRIDGE_LISTEN.parse().unwrap();
        for sdk in Sdk::ALL {
            let who = whoami(Client::new().in_netns("cv1"), sdk, &moto.moto.url)
                .await
                .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
            assert_role_over_imds(sdk, &who, &scenario, bridge).await;
        }
        assert!(
            daemon.wait_for_log("peer=198.18.1.2:", std::time::Duration::from_secs(5)),
            "the container's requests reached the bridge listener from its own address:\n{}",
            daemon.log()
        );
        run(Command::new("sh").args([dnat, "remove"]));
        let gone = whoami(Client::new().in_netns("cv1"), Sdk::Boto3, &moto.moto.url).await;
        assert!(gone.is_err(), "credentials without the DNAT rule: {gone:?}");
        assert_eq!(daemon.terminate().code(), Some(0));
    });
}

/// The ECS-agent listener of the container test, on the bridge address; the container reaches it
/// as 169.254.170.2:80 through `scripts/ecs-agent-dnat.sh`.
const AGENT_LISTEN: &str = "198.18.1.1:9257";

/// Allows the role of `scenario` S3 as well (it may only call STS), for rclone.
async fn allow_s3(moto: &crate::support::moto::Moto, scenario: &RoleProfile) {
    moto.iam(&[
        ("Action", "PutRolePolicy"),
        ("RoleName", scenario.role_name()),
        ("PolicyName", "s3"),
        (
            "PolicyDocument",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
        ),
    ])
    .await;
}

/// ECS's own route, `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, for all five container clients:
/// the daemon's `[ecs_agent]` listener is on the bridge address, and `scripts/ecs-agent-dnat.sh`
/// sends what the container cv1 sends to 169.254.170.2:80 there. `credvend env role --container`
/// (run on the host) prints the relative-URI form and nothing that competes with it; boto3, the
/// AWS CLI v1, the Rust SDK, Debian's AWS CLI v2 and rclone in the container, with exactly those
/// lines (and `AWS_EC2_METADATA_DISABLED=true`), make signed calls moto accepts with the key the
/// daemon serves. A wrong ID gets 400 and a log line naming the container's address and the
/// path, with the ID redacted.
#[test]
fn netns_ecs_agent_relative_uri() {
    in_private_netns("netns_ecs_agent_relative_uri", || async {
        topology();
        let dnat = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ecs-agent-dnat.sh");
        run(Command::new("sh").args([dnat, "add", "cvh1", "198.18.1.1", "9257"]));
        let toml = format!(
            "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
             [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n\
             [ecs_agent]\nlisten = \"{AGENT_LISTEN}\"\nprofiles = [\"role\"]\nallow = [\"198.18.1.0/24\"]\n"
        );
        let (moto, setup, scenario, daemon) = serve("198.18.1.1", &toml).await;
        allow_s3(&moto.moto, &scenario).await;
        let agent: SocketAddr = AGENT_LISTEN.parse().unwrap();
        assert_eq!(daemon.ecs_agent(), agent);
        setup
            .wait_status("role", "fresh", crate::support::daemon::phase_is("fresh"))
            .await;

        let lines = container_env(&setup);
        let vars = crate::support::clients::shell_env(&lines);
        let mut exported: Vec<&str> = vars
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.as_str())
            .collect();
        exported.sort_unstable();
        assert_eq!(
            exported,
            [
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_DEFAULT_REGION",
                "AWS_REGION"
            ],
            "only the relative URI and the region: {lines}"
        );
        for competing in [
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ] {
            assert!(
                lines.contains(&format!("unset {competing}\n")),
                "{competing}: {lines}"
            );
        }
        let relative = vars
            .iter()
            .rev()
            .find(|(k, _)| k == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .and_then(|(_, v)| v.clone())
            .unwrap();
        let id = relative
            .strip_prefix("/v2/credentials/")
            .unwrap_or_else(|| panic!("{relative}"));
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );

        let served = crate::support::http::request(agent, "GET", &relative, &[])
            .await
            .json()["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_owned();
        for sdk in Sdk::CONTAINER {
            let client = Client::new()
                .in_netns("cv1")
                .eval(&lines)
                .env("AWS_EC2_METADATA_DISABLED", "true");
            let who = whoami(client, sdk, &moto.moto.url)
                .await
                .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", daemon.log()));
            assert_role_over_container(sdk, &who, &scenario, &served);
        }
        // The first vend to the container is logged (the test's own request above came from the
        // host). Lines are written by a background thread: wait for it, bounded.
        let vend = "vended credentials over the ECS agent endpoint";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let line = loop {
            let log = daemon.log();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains(vend) && l.contains("peer=198.18.1.2:"))
            {
                break line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no vend to the container logged:\n{log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(
            line.contains(&format!("access_key_id=\"{served}\"")),
            "{line}"
        );

        // A wrong ID: 400, and one log line with the container's address and the redacted path.
        let wrong = format!("{}{}", &id[..63], if id.ends_with('0') { '1' } else { '0' });
        let (code, body) = curl(
            "cv1",
            &[
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                &format!("http://169.254.170.2/v2/credentials/{wrong}"),
            ],
        );
        assert_eq!((code, body.as_str()), (Some(0), "400"));
        let line = daemon.log_line("refused an ECS agent endpoint request");
        assert!(
            line.contains("peer=198.18.1.2:")
                && line.contains("UnknownId /v2/credentials/[REDACTED]"),
            "{line}"
        );
        let log = daemon.log();
        assert!(
            !log.contains(&wrong) && !log.contains(id),
            "an ID in the log"
        );
        run(Command::new("sh").args([dnat, "remove"]));
        assert_eq!(daemon.terminate().code(), Some(0));
    });
}

/// The routed listener of the routes test: two containers, two roles, one address. `cr1`
/// (198.18.0.2) has a route of its own; `cr2` (198.18.0.3) takes the wider /25 (which also
/// contains 198.18.0.2: the longest prefix wins); `cr3` (198.18.0.200) is allowed to connect but
/// no route names it. The `[ecs_agent]` listener routes the same two containers to the same two
/// profiles (no `allow`: its routes are the only peers it admits).
const ROUTED_TOML: &str = "[[imds]]\nlisten = \"198.18.0.1:9254\"\nallow = [\"198.18.0.0/24\"]\n\
     routes = [\n  { from = \"198.18.0.2/32\", profile = \"ci\" },\n  { from = \"198.18.0.0/25\", profile = \"dev\" },\n]\n\
     [ecs]\nenabled = false\n\
     [ecs_agent]\nlisten = \"198.18.0.1:9257\"\n\
     routes = [{ from = \"198.18.0.2/32\", profile = \"ci\" }, { from = \"198.18.0.3/32\", profile = \"dev\" }]\n";

/// An IMDSv2 token from 169.254.169.254 in container `ns`.
fn container_token(ns: &str) -> String {
    let (code, token) = curl(
        ns,
        &[
            "-X",
            "PUT",
            "-H",
            "x-aws-ec2-metadata-token-ttl-seconds: 60",
            "http://169.254.169.254/latest/api/token",
        ],
    );
    assert_eq!(code, Some(0), "{ns}: token PUT");
    token
}

/// GET `path` at 169.254.169.254 in container `ns` with `token`: the status and the body.
fn container_get(ns: &str, path: &str, token: &str) -> (String, String) {
    let (code, out) = curl(
        ns,
        &[
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("x-aws-ec2-metadata-token: {token}"),
            &format!("http://169.254.169.254{path}"),
        ],
    );
    assert_eq!(code, Some(0), "{ns}: GET {path}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.to_owned(), body.to_owned())
}

/// One role per container on one address (issue 16): three "containers" on one bridge
/// (`tests/netns/bridge.sh`), each reaching the daemon's routed listener only as
/// 169.254.169.254:80 (`scripts/imds-dnat.sh` on the bridge). boto3 in each, with no AWS
/// variable at all (a config file with the region and moto's address, no credentials), gets its
/// own route's role: GetCallerIdentity shows the two role ARNs. The unrouted container gets no
/// credentials and an access line naming it; a token obtained in one container gives another
/// its own role, never the first one's; another route's role is 404. On the routed
/// `[ecs_agent]` listener (169.254.170.2 through `scripts/ecs-agent-dnat.sh`) each container
/// gets its own route's profile by its ID and the other's ID is answered as unknown. `status`
/// shows the routes of both listeners and their counts.
#[test]
fn netns_routes_one_role_per_container() {
    in_private_netns("netns_routes_one_role_per_container", || async {
        run(Command::new("bash").arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/netns/bridge.sh"
        )));
        let dnat = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/imds-dnat.sh");
        run(Command::new("sh").args([dnat, "add", "cvbr0", "198.18.0.1", "9254"]));
        let agent_dnat = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ecs-agent-dnat.sh");
        run(Command::new("sh").args([agent_dnat, "add", "cvbr0", "198.18.0.1", "9257"]));
        let moto = PrivateMoto::start_on("198.18.0.1", true);
        let setup = Setup::new();
        let scenario = setup.role_profile(&moto.moto).await;
        let dev_role = moto.moto.role("dev", &[&scenario.user.arn], None).await;
        setup.append_aws_config(&format!(
            "[profile ci]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {ci}\nsource_profile = base\n\
             [profile dev]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {dev_role}\nsource_profile = base\n",
            m = moto.moto.url,
            ci = scenario.role_arn,
        ));
        setup.write_toml(ROUTED_TOML);
        let daemon = setup.start();
        for p in ["ci", "dev"] {
            setup
                .wait_status(p, "fresh", crate::support::daemon::phase_is("fresh"))
                .await;
        }

        let sts = moto.moto.url.clone();
        let boto3 = |ns: &'static str| {
            let sts = sts.clone();
            tokio::task::spawn_blocking(move || {
                let home = tempfile::tempdir().unwrap();
                crate::support::clients::bare_boto3_whoami(
                    &["ip", "netns", "exec", ns],
                    home.path(),
                    &sts,
                    "",
                )
            })
        };
        let mut arns = Vec::new();
        for (ns, role_arn) in [("cr1", &scenario.role_arn), ("cr2", &dev_role)] {
            let who = boto3(ns)
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{ns}: {e}\ndaemon log:\n{}", daemon.log()));
            let prefix = assumed_role_prefix(role_arn);
            assert!(
                who.arn.starts_with(&prefix),
                "{ns}: GetCallerIdentity returned {}, expected {prefix}...",
                who.arn
            );
            assert_eq!(who.method.as_deref(), Some("iam-role"), "{ns}");
            arns.push(who.arn);
        }
        assert_ne!(
            assumed_role_prefix(&scenario.role_arn),
            assumed_role_prefix(&dev_role)
        );

        // The unrouted container: no credentials, and an access line naming it.
        let refused = boto3("cr3").await.unwrap();
        assert!(refused.is_err(), "cr3 got credentials: {refused:?}");
        assert!(
            daemon.wait_for_log("NoRoute", std::time::Duration::from_secs(5)),
            "{}",
            daemon.log()
        );
        let log = daemon.log();
        let line = log
            .lines()
            .find(|l| l.contains("refused an IMDS request") && l.contains("NoRoute"))
            .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
        assert!(line.contains("peer=198.18.0.200:"), "{line}");

        // A token carries no role: cr1's token in cr2 lists cr2's role. cr2 asking for ci's
        // credentials gets IMDS's 404 for an unknown role.
        let list = "/latest/meta-data/iam/security-credentials/";
        let ci_token = container_token("cr1");
        assert_eq!(
            container_get("cr2", list, &ci_token),
            ("200".to_owned(), "dev".to_owned())
        );
        let (status, body) = container_get("cr2", &format!("{list}ci"), &container_token("cr2"));
        assert_eq!(status, "404", "{body}");
        assert!(!body.contains("ASIA"), "{body}");
        assert!(
            daemon.wait_for_log("OtherRoutesRole", std::time::Duration::from_secs(5)),
            "{}",
            daemon.log()
        );
        let (status, _) = container_get("cr3", list, &container_token("cr3"));
        assert_eq!(status, "403");

        // The ECS agent endpoint: each container fetches only its own route's ID; the other
        // container's valid ID is answered as an unknown one; an unrouted peer gets nothing.
        let id = |p: &str| {
            std::fs::read_to_string(setup.state_dir().join(format!("ecs-agent-id-{p}"))).unwrap()
        };
        let (ci_id, dev_id) = (id("ci"), id("dev"));
        let agent = |ns: &str, id: &str| {
            curl(
                ns,
                &[
                    "-w",
                    "\n%{http_code}",
                    &format!("http://169.254.170.2/v2/credentials/{id}"),
                ],
            )
            .1
        };
        for (ns, own, other, role_arn) in [
            ("cr1", &ci_id, &dev_id, &scenario.role_arn),
            ("cr2", &dev_id, &ci_id, &dev_role),
        ] {
            let answer = agent(ns, own);
            let (body, status) = answer.rsplit_once('\n').unwrap();
            assert_eq!(status, "200", "{ns}: {body}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["RoleArn"].as_str(), Some(role_arn.as_str()), "{ns}");
            let answer = agent(ns, other);
            assert!(
                answer.ends_with("\n400") && answer.contains("InvalidIdInRequest"),
                "{ns}: {answer}"
            );
        }
        // cr3 is no route's and the agent listener has no `allow`: closed before any HTTP.
        let (code, body) = curl(
            "cr3",
            &[&format!("http://169.254.170.2/v2/credentials/{ci_id}")],
        );
        assert!(
            matches!(code, Some(52 | 56)),
            "cr3: curl exit {code:?}, {body:?}"
        );
        assert!(
            daemon.wait_for_log("OtherRoutesId", std::time::Duration::from_secs(5)),
            "{}",
            daemon.log()
        );

        // `status` shows each route and its counts.
        let out = setup.cli(&["status", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let listener = &report["listeners"][0];
        let routes = listener["routes"].as_array().unwrap();
        let row = |i: usize| {
            let r = &routes[i];
            (
                r["from"].as_str().unwrap().to_owned(),
                r["profile"].as_str().unwrap().to_owned(),
                r["served"].as_u64().unwrap(),
                r["refused"].as_u64().unwrap(),
            )
        };
        assert_eq!(routes.len(), 2, "{listener}");
        let (from, profile, served, refused) = row(0);
        assert_eq!(
            (from.as_str(), profile.as_str(), refused),
            ("198.18.0.2/32", "ci", 0)
        );
        assert!(served >= 1, "{listener}");
        let (from, profile, served, refused) = row(1);
        assert_eq!(
            (from.as_str(), profile.as_str(), refused),
            ("198.18.0.0/25", "dev", 1)
        );
        assert!(served >= 1, "{listener}");
        assert!(
            listener["unrouted_refused"].as_u64().unwrap() >= 2,
            "{listener}"
        );
        let text = crate::support::daemon::stdout(&setup.cli(&["status"]));
        assert!(
            text.contains("route 198.18.0.2/32 -> ci: served ")
                && text.contains("route 198.18.0.0/25 -> dev: served ")
                && text.contains("no route: refused "),
            "{text}"
        );
        let agent_routes = report["listeners"][1]["routes"].as_array().unwrap();
        assert_eq!(
            agent_routes
                .iter()
                .map(|r| (
                    r["profile"].as_str().unwrap(),
                    r["served"].as_u64().unwrap(),
                    r["refused"].as_u64().unwrap()
                ))
                .collect::<Vec<_>>(),
            [("ci", 1, 1), ("dev", 1, 1)],
            "{report}"
        );
        run(Command::new("sh").args([dnat, "remove"]));
        run(Command::new("sh").args([agent_dnat, "remove"]));
        assert_eq!(daemon.terminate().code(), Some(0));
    });
}
