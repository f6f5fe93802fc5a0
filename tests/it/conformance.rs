//! HTTP-level conformance of the IMDS and ECS endpoints with the SDK contract
//! (`docs/sdk-behaviour.md` sections 2, 3, 4, 7 and 8), against the real `credvend serve` backed by
//! moto. Each `must_pass_NN_*` test is the server side of item NN of the must-pass list in
//! `docs/must-pass.md`; the other tests cover the rest of the contract (v1 mode, tokens across restarts
//! and listeners, 404s, HEAD, the failure shapes).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use credvend::daemon::token::TokenKey;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::daemon::{Setup, phase_is};
use crate::support::http;
use crate::support::moto::Moto;
use crate::support::raw;
use crate::support::served::{ROLE_CREDS, ROLE_LIST, ROLE_TOML, Served, wait_for_credentials};
use crate::support::sts_proxy::{Mode, StsProxy};

const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "x-aws-ec2-metadata-token";
const TOKEN_PATH: &str = "/latest/api/token";

/// `YYYY-MM-DDTHH:MM:SSZ` exactly: no fraction, no offset (the shape botocore's static-stability
/// step, the Rust SDK's offset ban and the JS SDK's regex all accept).
fn is_whole_second_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The IMDS HMAC key the daemon keeps in its state directory.
fn token_key(setup: &Setup) -> TokenKey {
    let bytes = std::fs::read(setup.state_dir().join("imds-token.key")).unwrap();
    TokenKey::from_bytes(bytes.try_into().expect("a 32-byte key"))
}

fn now_unix() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp() as u64
}

/// TTLs at both ends of 1..=21600 get 200, the token as a `text/plain` body, and the TTL echoed
/// in `X-aws-ec2-metadata-token-ttl-seconds` (the Rust SDK fails without it, Go drops to v1).
#[tokio::test]
async fn must_pass_01_token_put_echoes_ttl() {
    let s = Served::start(ROLE_TOML).await;
    for ttl in ["1", "300", "21600"] {
        let r = http::request(s.imds(), "PUT", TOKEN_PATH, &[(TTL, ttl)]).await;
        assert_eq!(r.status, 200, "TTL {ttl}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("text/plain"), "TTL {ttl}");
        assert_eq!(r.header(TTL), Some(ttl), "TTL {ttl} is echoed");
        assert!(
            !r.body.is_empty() && r.body.bytes().all(|b| b.is_ascii_graphic()),
            "the token is one header-safe word: {:?}",
            r.body
        );
    }
    // The longest-lived token is a working token.
    let token = http::token(s.imds(), 21600).await;
    assert_eq!(http::get(s.imds(), ROLE_LIST, &token).await.status, 200);
}

/// A missing, empty, non-numeric, zero or too large TTL is a 400 (EC2 semantics).
#[tokio::test]
async fn must_pass_02_bad_ttl_is_400() {
    let s = Served::start(ROLE_TOML).await;
    let missing = http::request(s.imds(), "PUT", TOKEN_PATH, &[]).await;
    assert_eq!(missing.status, 400, "missing TTL: {}", missing.body);
    for bad in [
        "",
        "abc",
        "0",
        "21601",
        "-1",
        "1.5",
        "60s",
        "99999999999999999999999",
    ] {
        let r = http::request(s.imds(), "PUT", TOKEN_PATH, &[(TTL, bad)]).await;
        assert_eq!(r.status, 400, "TTL {bad:?}: {}", r.body);
        assert!(r.header(TTL).is_none(), "no TTL echoed for {bad:?}");
    }
}

/// A token PUT carrying `X-Forwarded-For` is a 403, a PUT anywhere but the token path is a 403,
/// and a GET on the token path is a 405 with `Allow: OPTIONS, PUT`.
#[tokio::test]
async fn must_pass_03_put_guards_and_token_get_405() {
    let s = Served::start(ROLE_TOML).await;
    let forwarded = http::request(
        s.imds(),
        "PUT",
        TOKEN_PATH,
        &[(TTL, "60"), ("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(forwarded.status, 403, "{}", forwarded.body);
    for path in [
        "/latest/meta-data/",
        "/latest/api/token2",
        "/2021-03-23/api/token",
        "/latest/api/",
    ] {
        let r = http::request(s.imds(), "PUT", path, &[(TTL, "60")]).await;
        assert_eq!(r.status, 403, "PUT {path}: {}", r.body);
    }
    let token = http::token(s.imds(), 60).await;
    for method in ["GET", "HEAD"] {
        let r = http::request(s.imds(), method, TOKEN_PATH, &[(TOKEN, &token)]).await;
        assert_eq!(r.status, 405, "{method} on the token path");
        assert_eq!(r.header("allow"), Some("OPTIONS, PUT"), "{method}");
    }
}

/// In `required` mode (the default) a GET without a token, with an invalid one, with a tampered
/// one, or with one whose expiry has passed is a 401; a valid token gets 200. The expired token
/// is minted with the daemon's own key (from its state directory), so no test has to sleep
/// through a TTL; a fresh token minted the same way is accepted, which shows the expired one is
/// refused for its expiry alone.
#[tokio::test]
async fn must_pass_04_required_mode_401s_missing_invalid_and_expired_tokens() {
    let s = Served::start(ROLE_TOML).await;
    let addr = s.imds();
    let listener = addr.to_string();
    let key = token_key(&s.setup);
    let now = now_unix();
    let expired = key.issue(&listener, now - 3600, 60);
    let just_expired = key.issue(&listener, now - 1, 1);
    let fresh = key.issue(&listener, now, 600);
    let mut tampered = fresh.clone();
    tampered.replace_range(1..17, &format!("{:016x}", now + 999_999));

    for path in [ROLE_LIST, ROLE_CREDS, "/latest/meta-data/placement/region"] {
        let none = http::request(addr, "GET", path, &[]).await;
        assert_eq!(none.status, 401, "no token: {path}");
        for (what, t) in [
            ("garbage", "not-a-token"),
            ("expired an hour ago", expired.as_str()),
            ("expired a second ago", just_expired.as_str()),
            ("tampered expiry", tampered.as_str()),
        ] {
            let r = http::get(addr, path, t).await;
            assert_eq!(r.status, 401, "{what} token: {path}");
        }
        let ok = http::get(addr, path, &fresh).await;
        assert_eq!(ok.status, 200, "a valid token: {path}: {}", ok.body);
    }
    let token = http::token(addr, 60).await;
    let creds = http::get(addr, ROLE_CREDS, &token).await;
    assert_eq!(creds.status, 200);
    assert_eq!(creds.json()["Code"], "Success");
}

/// The role listing is exactly the role name: one line, no trailing newline or whitespace
/// (botocore would ask for `role\n`, the Rust SDK panics).
#[tokio::test]
async fn must_pass_05_role_listing_is_exactly_the_role_name() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    for path in [
        ROLE_LIST,
        "/latest/meta-data/iam/security-credentials",
        "/latest/meta-data/iam/security-credentials-extended/",
    ] {
        let r = raw::exchange(
            s.imds(),
            &raw::request("GET", path, Some(&s.imds().to_string()), &[(TOKEN, &token)]),
        )
        .await
        .answered(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, b"role", "{path}: {:?}", r.text());
        assert_eq!(r.header("content-length"), Some("4"), "{path}");
    }
}

/// Listings and leaves answer identically with or without a trailing `/`, and `//` in the path
/// is collapsed (Java with a trailing-slash endpoint sends `//latest/...`).
#[tokio::test]
async fn must_pass_06_trailing_slash_and_double_slash_are_equivalent() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let cases = [
        "/latest/meta-data",
        "/latest/meta-data/iam",
        "/latest/meta-data/iam/security-credentials",
        "/latest/meta-data/iam/security-credentials/role",
        "/latest/meta-data/iam/security-credentials-extended/role",
        "/latest/meta-data/placement",
        "/latest/meta-data/placement/region",
        "/latest/meta-data/placement/availability-zone",
        "/latest/meta-data/instance-id",
        "/latest/dynamic/instance-identity/document",
    ];
    for path in cases {
        let plain = http::get(s.imds(), path, &token).await;
        assert_eq!(plain.status, 200, "{path}: {}", plain.body);
        for variant in [
            format!("{path}/"),
            format!("/{path}"),
            format!("/{path}/"),
            path.replacen("/latest/", "/latest//", 1),
        ] {
            let r = http::get(s.imds(), &variant, &token).await;
            assert_eq!(r.status, 200, "{variant}");
            assert_eq!(r.body, plain.body, "{variant} answers as {path}");
            assert_eq!(r.header("content-type"), plain.header("content-type"));
        }
    }
}

/// The credentials document has `Code: Success`, `Type: AWS-HMAC`, `LastUpdated` and the four
/// credential fields as strings; `Expiration` is whole seconds with `Z`, and it is the instant
/// the credentials really expire: moto's `Expiration` (microseconds, read from the STS answer
/// through a recording proxy) truncated to the second, the same as `credvend status` and the
/// ECS endpoint report. The credentials also have at least 30 minutes left (item 8's server
/// side).
#[tokio::test]
async fn must_pass_07_credentials_json_shape_and_real_expiration() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    let config = std::fs::read_to_string(setup.aws_config_path()).unwrap();
    setup.write_aws_config(&config.replace(&moto.url, &proxy.url()));
    setup.write_toml(ROLE_TOML);
    let daemon = setup.start();
    let before = OffsetDateTime::now_utc();
    let json = wait_for_credentials(daemon.imds(), ROLE_CREDS).await;

    assert_eq!(json["Code"], "Success");
    assert_eq!(json["Type"], "AWS-HMAC");
    for field in [
        "LastUpdated",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    ] {
        let v = json[field].as_str();
        assert!(
            v.is_some_and(|v| !v.is_empty()),
            "{field} is a non-empty string"
        );
    }
    let expiration = json["Expiration"].as_str().unwrap();
    assert!(is_whole_second_utc(expiration), "{expiration}");
    assert!(is_whole_second_utc(json["LastUpdated"].as_str().unwrap()));

    let assumed = proxy
        .responses()
        .into_iter()
        .find(|r| r.contains("<AssumeRoleResponse"))
        .expect("the daemon's AssumeRole went through the proxy");
    let minted = assumed
        .split("<Expiration>")
        .nth(1)
        .and_then(|r| r.split("</Expiration>").next())
        .expect("an Expiration in moto's answer");
    let minted = OffsetDateTime::parse(minted, &Rfc3339).unwrap();
    let served = OffsetDateTime::parse(expiration, &Rfc3339).unwrap();
    assert_eq!(
        served,
        minted.replace_nanosecond(0).unwrap(),
        "served {expiration} is moto's {minted} truncated to the second"
    );
    assert!(
        served - before >= time::Duration::minutes(30),
        "at least 30 minutes left: {expiration}"
    );

    let out = setup.cli(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["profiles"][0]["expiration"], expiration);
    let ecs_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    let ecs = http::ecs_get(daemon.ecs(), "role", Some(&ecs_token)).await;
    assert_eq!(ecs.json()["Expiration"], expiration);
    assert_eq!(ecs.json()["AccessKeyId"], json["AccessKeyId"]);
}

/// `security-credentials-extended/` lists the same role and serves the same document plus
/// `AccountId`, with a token, and never 401/403/5xx (Java and Go would not fall back).
#[tokio::test]
async fn must_pass_09_extended_path_adds_account_id() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let list = http::get(
        s.imds(),
        "/latest/meta-data/iam/security-credentials-extended/",
        &token,
    )
    .await;
    assert_eq!((list.status, list.body.as_str()), (200, "role"));
    let legacy = http::get(s.imds(), ROLE_CREDS, &token).await.json();
    let ext = http::get(
        s.imds(),
        "/latest/meta-data/iam/security-credentials-extended/role",
        &token,
    )
    .await;
    assert_eq!(ext.status, 200, "{}", ext.body);
    assert_eq!(ext.header("content-type"), Some("text/plain"));
    let mut ext = ext.json();
    assert_eq!(ext["AccountId"], "123456789012");
    ext.as_object_mut().unwrap().remove("AccountId");
    assert_eq!(ext, legacy, "the rest is the legacy document");
}

/// Region discovery: `placement/region`, `placement/availability-zone` with and without the
/// trailing slash botocore uses (the zone minus its last letter is the region), and the
/// identity document with the same `region` and an RFC 3339 `pendingTime`.
#[tokio::test]
async fn must_pass_14_region_and_identity_document() {
    let s = Served::start(ROLE_TOML).await;
    let token = http::token(s.imds(), 60).await;
    let region = http::get(s.imds(), "/latest/meta-data/placement/region", &token).await;
    assert_eq!((region.status, region.body.as_str()), (200, "us-east-1"));
    for path in [
        "/latest/meta-data/placement/availability-zone",
        "/latest/meta-data/placement/availability-zone/",
    ] {
        let az = http::get(s.imds(), path, &token).await;
        assert_eq!(az.status, 200, "{path}");
        assert_eq!(
            &az.body[..az.body.len() - 1],
            "us-east-1",
            "{path}: {}",
            az.body
        );
        assert!(az.body.ends_with(|c: char| c.is_ascii_lowercase()));
    }
    let doc = http::get(
        s.imds(),
        "/latest/dynamic/instance-identity/document",
        &token,
    )
    .await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["region"], "us-east-1");
    let pending = doc["pendingTime"]
        .as_str()
        .expect("pendingTime is a string");
    let pending = OffsetDateTime::parse(pending, &Rfc3339)
        .unwrap_or_else(|e| panic!("pendingTime {pending:?} is not RFC 3339: {e}"));
    assert!(pending <= OffsetDateTime::now_utc());
    assert_eq!(doc["availabilityZone"], "us-east-1a");
    assert!(doc["instanceId"].as_str().unwrap().starts_with("i-"));
}

/// Every IMDS answer carries `Server: EC2ws`, metadata is `text/plain`, `Content-Length` is
/// present and right (no chunking), `Accept-Ranges: none` and an HTTP-date `Last-Modified` are
/// there as on EC2, and a request with `Connection: close` is answered and then
/// the connection is closed.
#[tokio::test]
async fn must_pass_15_response_headers_and_connection_close() {
    let s = Served::start(ROLE_TOML).await;
    let host = s.imds().to_string();
    let token = http::token(s.imds(), 60).await;
    let put = raw::request("PUT", TOKEN_PATH, Some(&host), &[(TTL, "60")]);
    let mut requests = vec![("token PUT", put)];
    for path in [
        "/latest/meta-data/",
        ROLE_LIST,
        ROLE_CREDS,
        "/latest/meta-data/placement/region",
        "/latest/dynamic/instance-identity/document",
    ] {
        requests.push((
            path,
            raw::request("GET", path, Some(&host), &[(TOKEN, &token)]),
        ));
    }
    for (what, req) in requests {
        let r = raw::exchange(s.imds(), &req).await.answered(what);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.header("server"), Some("EC2ws"), "{what}");
        assert_eq!(r.header("content-type"), Some("text/plain"), "{what}");
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str()),
            "{what}"
        );
        assert!(
            r.header("transfer-encoding").is_none(),
            "{what}: no chunking"
        );
        assert_eq!(r.header("accept-ranges"), Some("none"), "{what}");
        let modified = r.header("last-modified").expect("Last-Modified");
        assert!(
            modified.ends_with(" GMT")
                && OffsetDateTime::parse(
                    &modified.replace(" GMT", " +0000"),
                    &time::format_description::well_known::Rfc2822
                )
                .is_ok(),
            "{what}: Last-Modified {modified:?} is an HTTP date"
        );
    }
    // Error answers carry the Server header too.
    let denied = raw::exchange(s.imds(), &raw::request("GET", ROLE_LIST, Some(&host), &[]))
        .await
        .answered("tokenless GET");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("server"), Some("EC2ws"));

    let mut conn = raw::connect(s.imds()).await;
    let r = raw::send_on(
        &mut conn,
        &raw::request(
            "GET",
            ROLE_CREDS,
            Some(&host),
            &[(TOKEN, &token), ("Connection", "close")],
        ),
    )
    .await
    .answered("Connection: close");
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["Code"],
        "Success"
    );
    assert!(
        raw::closed_within(&mut conn, std::time::Duration::from_secs(5)).await,
        "the daemon closes after answering a Connection: close request"
    );
}

/// The ECS endpoint serves `AWS_CONTAINER_CREDENTIALS_FULL_URI` as SDKs build it: through
/// `127.0.0.1` and through `localhost` (the JS `fromContainerMetadata` fallback only allows
/// those), with a query string that is accepted and does not change the answer.
#[tokio::test]
async fn must_pass_16_ecs_full_uri_with_ip_localhost_and_query() {
    let s = Served::start(ROLE_TOML).await;
    let token = s.ecs_token("role");
    let port = s.ecs().port();
    let client = crate::support::http_client();
    let mut keys = Vec::new();
    for url in [
        format!("http://127.0.0.1:{port}/credentials/role"),
        format!("http://127.0.0.1:{port}/credentials/role?x=1&y"),
        format!("http://localhost:{port}/credentials/role"),
        format!("http://localhost:{port}/credentials/role?x=1&y=%2F"),
    ] {
        let r = client
            .get(&url)
            .header("authorization", &token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let json: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        keys.push(json["AccessKeyId"].as_str().unwrap().to_owned());
    }
    // And with the Host header a client resolving localhost to 127.0.0.1 sends.
    let r = raw::exchange(
        s.ecs(),
        &raw::request(
            "GET",
            "/credentials/role?q",
            Some(&format!("localhost:{port}")),
            &[("Authorization", &token)],
        ),
    )
    .await
    .answered("Host: localhost");
    assert_eq!(r.status, 200);
    keys.dedup();
    assert_eq!(
        keys.len(),
        1,
        "one set of credentials whatever the URI form"
    );
}

/// The token file holds the `Authorization` value byte for byte: no trailing newline, mode 0600,
/// at least 32 bytes. The exact bytes are accepted; any other value (a byte more or less, a
/// literal `\n`, a value folded onto a second line by a CR LF inside it) is refused. A bare LF
/// after the token cannot be told apart on the wire: HTTP/1.1 ends the header line there, so
/// the daemon sees the exact token; the SDKs refuse to send such a value in the first place.
#[tokio::test]
async fn must_pass_17_ecs_authorization_equals_token_file_bytes() {
    let s = Served::start(ROLE_TOML).await;
    let path = s.setup.state_dir().join("ecs-token-role");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() >= 32, "at least 32 bytes");
    assert!(
        !bytes.ends_with(b"\n") && !bytes.ends_with(b"\r") && !bytes.ends_with(b" "),
        "no trailing newline or space"
    );
    assert!(bytes.iter().all(u8::is_ascii_graphic), "header-safe");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = String::from_utf8(bytes).unwrap();
    let ok = http::ecs_get(s.ecs(), "role", Some(&token)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    for wrong in [
        format!("{token}0"),
        token[..token.len() - 1].to_owned(),
        format!("{token}\\n"),
        token.to_ascii_uppercase(),
        format!("Bearer {token}"),
    ] {
        let r = http::ecs_get(s.ecs(), "role", Some(&wrong)).await;
        assert_eq!(r.status, 403, "{wrong:?}");
    }
    // A newline inside the header value, as a client that did not strip it would send it:
    // CR LF followed by a space would fold the value onto the next line.
    let host = s.ecs().to_string();
    let folded = format!(
        "GET /credentials/role HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n \r\n\r\n"
    );
    let outcome = raw::exchange(s.ecs(), folded.as_bytes()).await;
    assert_ne!(
        outcome.status(),
        Some(200),
        "a folded value is not the token"
    );
}

/// Wrong or missing container authorization is 401/403 with `Content-Type: application/json`
/// exactly and a `{"code","message"}` body; one profile's token never unlocks another profile.
#[tokio::test]
async fn must_pass_18_ecs_refusals_are_json_and_tokens_are_per_profile() {
    let s = Served::start(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\", \"base\"]\n",
    )
    .await;
    let role = s.ecs_token("role");
    let base = s.ecs_token("base");
    assert_ne!(role, base, "each profile has its own token");
    let cases = [
        ("role", None, 401),
        ("role", Some(""), 403),
        ("role", Some("wrong"), 403),
        ("role", Some(base.as_str()), 403),
        ("base", Some(role.as_str()), 403),
        ("nosuchprofile", Some(role.as_str()), 403),
        ("nosuchprofile", None, 401),
    ];
    for (profile, token, want) in cases {
        let r = http::ecs_get(s.ecs(), profile, token).await;
        assert_eq!(r.status, want, "{profile} with {token:?}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let json = r.json();
        assert!(json["code"].is_string(), "{}", r.body);
        assert!(json["message"].is_string(), "{}", r.body);
        assert!(
            !r.body.contains(&role) && !r.body.contains(&base),
            "no token in an error"
        );
    }
    let ok = http::ecs_get(s.ecs(), "role", Some(&role)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("application/json"));
    let json = ok.json();
    assert_eq!(json["RoleArn"], s.scenario.role_arn.as_str());
    assert_eq!(json["AccountId"], "123456789012");
}

/// The container document has the four credential fields as strings, an `Expiration` the JS
/// SDK's strict RFC 3339 `...Z` parser takes, and `AccountId` and `RoleArn` (item 19's server
/// side).
#[tokio::test]
async fn must_pass_19_ecs_json_has_account_id_and_role_arn() {
    let s = Served::start(ROLE_TOML).await;
    let r = http::ecs_get(s.ecs(), "role", Some(&s.ecs_token("role"))).await;
    assert_eq!(r.status, 200);
    let json = r.json();
    for field in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(
            json[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {}",
            r.body
        );
    }
    assert!(is_whole_second_utc(json["Expiration"].as_str().unwrap()));
    assert_eq!(json["AccountId"], "123456789012");
    assert_eq!(json["RoleArn"], s.scenario.role_arn.as_str());
    assert!(
        json.get("Code").is_none(),
        "no IMDS Code on the container document"
    );
}

/// With `imds_v1 = true`, tokenless GETs are served (item 12's server side), a present but
/// invalid token is still a 401, and a valid token still works.
#[tokio::test]
async fn imds_v1_mode_serves_tokenless_gets_and_401s_invalid_tokens() {
    let s = Served::start(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\nimds_v1 = true\n\
         [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n",
    )
    .await;
    let list = http::request(s.imds(), "GET", ROLE_LIST, &[]).await;
    assert_eq!((list.status, list.body.as_str()), (200, "role"));
    let creds = http::request(s.imds(), "GET", ROLE_CREDS, &[]).await;
    assert_eq!(creds.status, 200);
    assert_eq!(creds.json()["Code"], "Success");
    let bad = http::get(s.imds(), ROLE_CREDS, "invalid").await;
    assert_eq!(bad.status, 401);
    let expired = token_key(&s.setup).issue(&s.imds().to_string(), now_unix() - 120, 60);
    assert_eq!(http::get(s.imds(), ROLE_CREDS, &expired).await.status, 401);
    let token = http::token(s.imds(), 60).await;
    assert_eq!(http::get(s.imds(), ROLE_CREDS, &token).await.status, 200);
}

/// Item 10's server side: a token minted before a restart is accepted after it (same listener
/// address, key kept in the state directory), so a Rust SDK client holding it gets fresh
/// credentials, not 401s it would answer with stale ones.
#[tokio::test]
async fn token_minted_before_restart_is_accepted_after_it() {
    let Served {
        daemon,
        scenario: _scenario,
        setup,
    } = Served::start(ROLE_TOML).await;
    let addr = daemon.imds();
    let token = http::token(addr, 21600).await;
    assert_eq!(http::get(addr, ROLE_LIST, &token).await.status, 200);
    assert_eq!(daemon.terminate().code(), Some(0));

    setup.write_toml(&ROLE_TOML.replacen("127.0.0.1:0", &addr.to_string(), 1));
    let daemon = setup.start();
    assert_eq!(daemon.imds(), addr, "the same listener");
    let list = http::get(addr, ROLE_LIST, &token).await;
    assert_eq!(list.status, 200, "the old token is accepted: {}", list.body);
    wait_for_credentials(addr, ROLE_CREDS).await;
    let creds = http::get(addr, ROLE_CREDS, &token).await;
    assert_eq!(creds.status, 200);
    assert_eq!(creds.json()["Code"], "Success");
}

/// Tokens are bound to their listener: a token from one IMDS listener of a daemon is a 401 on
/// another listener of the same daemon (same key, same profile).
#[tokio::test]
async fn token_of_one_listener_is_refused_by_another() {
    let s = Served::start(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"role\"\n\
         [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"role\"]\n",
    )
    .await;
    let (a, b) = (s.daemon.ready.imds[0], s.daemon.ready.imds[1]);
    assert_ne!(a, b);
    let ta = http::token(a, 60).await;
    let tb = http::token(b, 60).await;
    assert_eq!(http::get(a, ROLE_LIST, &ta).await.status, 200);
    assert_eq!(http::get(b, ROLE_LIST, &tb).await.status, 200);
    assert_eq!(http::get(b, ROLE_LIST, &ta).await.status, 401);
    assert_eq!(http::get(a, ROLE_CREDS, &tb).await.status, 401);
}

/// Unknown paths (and another role's name, and dot segments, which are not resolved) are 404
/// with the XHTML "404 - Not Found" page of real IMDS, so Java and Go fall back where they would.
/// Sent raw: a URL library would resolve `..` and `%2e%2e` before they reach the daemon.
#[tokio::test]
async fn unknown_paths_are_404_with_xhtml_body() {
    let s = Served::start(ROLE_TOML).await;
    let host = s.imds().to_string();
    let token = http::token(s.imds(), 60).await;
    for path in [
        "/latest/user-data",
        "/latest/meta-data/nope",
        "/latest/meta-data/iam/security-credentials/otherrole",
        "/latest/meta-data/iam/security-credentials/role/extra",
        "/2021-07-15/meta-data/",
        "/latest/meta-data/iam/security-credentials/%2e%2e",
        "/latest/meta-data/iam/security-credentials/../security-credentials/role",
    ] {
        let r = raw::exchange(
            s.imds(),
            &raw::request("GET", path, Some(&host), &[(TOKEN, &token)]),
        )
        .await
        .answered(path);
        let body = r.text();
        assert_eq!(r.status, 404, "{path}: {body}");
        assert!(
            body.contains("<html xmlns=\"http://www.w3.org/1999/xhtml\"")
                && body.contains("404 - Not Found"),
            "{path}: {body}"
        );
        assert_eq!(r.header("content-type"), Some("text/html"));
    }
}

/// HEAD answers like GET without a body, on IMDS metadata, IMDS credentials and ECS.
#[tokio::test]
async fn head_requests_work_on_both_endpoints() {
    let s = Served::start(ROLE_TOML).await;
    let host = s.imds().to_string();
    let token = http::token(s.imds(), 60).await;
    for path in [ROLE_LIST, ROLE_CREDS, "/latest/meta-data/placement/region"] {
        let get = raw::exchange(
            s.imds(),
            &raw::request("GET", path, Some(&host), &[(TOKEN, &token)]),
        )
        .await
        .answered(path);
        let mut conn = raw::connect(s.imds()).await;
        let head = raw::send_on(
            &mut conn,
            &raw::request("HEAD", path, Some(&host), &[(TOKEN, &token)]),
        )
        .await
        .answered(path);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert_eq!(head.header("content-length"), get.header("content-length"));
        // No body follows on the wire: the next answer on the connection parses cleanly.
        let next = raw::send_on(
            &mut conn,
            &raw::request("GET", path, Some(&host), &[(TOKEN, &token)]),
        )
        .await
        .answered("GET after HEAD");
        assert_eq!(next.status, 200);
        assert_eq!(next.body, get.body);
    }
    let head = raw::exchange(
        s.ecs(),
        &raw::request(
            "HEAD",
            "/credentials/role",
            Some(&s.ecs().to_string()),
            &[("Authorization", &s.ecs_token("role"))],
        ),
    )
    .await
    .answered("ECS HEAD");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// A profile whose long-term key is missing from the keyring never yields `Success`: IMDS
/// answers the failure document real IMDS uses (`Code` other than `Success`, a `Message` naming
/// the fix, `LastUpdated`), and ECS a 403 JSON error (only the user can fix it, so not a 5xx
/// that SDKs would retry).
#[tokio::test]
async fn missing_keys_give_imds_failure_document_and_ecs_403() {
    let moto = Moto::shared();
    let setup = Setup::new();
    setup.write_aws_config(&format!(
        "[profile nokeys]\nregion = us-east-1\nendpoint_url = {}\n",
        moto.url
    ));
    setup.write_toml(
        "[[imds]]\nlisten = \"127.0.0.1:0\"\nprofile = \"nokeys\"\n\
         [ecs]\nlisten = \"127.0.0.1:0\"\nprofiles = [\"nokeys\"]\n",
    );
    let daemon = setup.start();
    setup
        .wait_status("nokeys", "error", phase_is("error"))
        .await;
    let token = http::token(daemon.imds(), 60).await;
    for path in [
        "/latest/meta-data/iam/security-credentials/nokeys",
        "/latest/meta-data/iam/security-credentials-extended/nokeys",
    ] {
        let r = http::get(daemon.imds(), path, &token).await;
        assert_eq!(r.status, 200, "{path}: real IMDS answers failures with 200");
        let json = r.json();
        assert_ne!(json["Code"], "Success", "{}", r.body);
        assert_eq!(json["Code"], "MissingKeys", "{}", r.body);
        let message = json["Message"].as_str().unwrap_or_default();
        assert!(message.contains("credvend add nokeys"), "{message}");
        assert!(is_whole_second_utc(json["LastUpdated"].as_str().unwrap()));
        for field in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
            assert!(json.get(field).is_none(), "no {field} in a failure");
        }
    }
    let ecs_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-nokeys")).unwrap();
    let r = http::ecs_get(daemon.ecs(), "nokeys", Some(&ecs_token)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["code"], "MissingKeys");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("credvend add nokeys")
    );
}

/// Fault injection (a proxy answering every STS call with 500): with nothing valid to serve,
/// IMDS answers a failure document, never `Success`, and ECS a 503 JSON error (transient, so
/// SDKs that retry 5xx are right to).
#[tokio::test]
async fn fault_sts_500_gives_imds_failure_document_and_ecs_503() {
    let moto = Moto::shared();
    let proxy = StsProxy::start(&moto.url).await;
    proxy.set_mode(Mode::Fail500);
    let setup = Setup::new();
    setup.role_profile(&moto).await;
    let config = std::fs::read_to_string(setup.aws_config_path()).unwrap();
    setup.write_aws_config(&config.replace(&moto.url, &proxy.url()));
    setup.write_toml(ROLE_TOML);
    let daemon = setup.start();
    setup.wait_status("role", "error", phase_is("error")).await;
    let token = http::token(daemon.imds(), 60).await;
    let r = http::get(daemon.imds(), ROLE_CREDS, &token).await;
    assert_eq!(r.status, 200);
    let json = r.json();
    assert_ne!(json["Code"], "Success", "{}", r.body);
    assert!(json["Message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(is_whole_second_utc(json["LastUpdated"].as_str().unwrap()));
    assert!(json.get("AccessKeyId").is_none());
    let ecs_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    let ecs = http::ecs_get(daemon.ecs(), "role", Some(&ecs_token)).await;
    assert_eq!(ecs.status, 503, "{}", ecs.body);
    assert_eq!(ecs.header("content-type"), Some("application/json"));
    assert!(ecs.json()["code"].is_string() && ecs.json()["message"].is_string());
}

/// An error only the user can fix (the role does not trust the user: AccessDenied) is a 403 on
/// ECS, so SDKs stop retrying; compare the 503 of a failing STS above.
#[tokio::test]
async fn a_role_that_refuses_the_user_gives_ecs_403() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let scenario = setup.role_profile(&moto).await;
    let stranger = moto.user("stranger").await;
    let strangers_role = moto.role("strangers", &[&stranger.arn], None).await;
    let config = std::fs::read_to_string(setup.aws_config_path()).unwrap();
    setup.write_aws_config(&config.replace(&scenario.role_arn, &strangers_role));
    setup.write_toml(ROLE_TOML);
    let daemon = setup.start();
    setup.wait_status("role", "error", phase_is("error")).await;
    let ecs_token = std::fs::read_to_string(setup.state_dir().join("ecs-token-role")).unwrap();
    let ecs = http::ecs_get(daemon.ecs(), "role", Some(&ecs_token)).await;
    assert_eq!(ecs.status, 403, "{}", ecs.body);
    assert_eq!(
        ecs.json()["code"],
        "AssumeRoleUnauthorizedAccess",
        "{}",
        ecs.body
    );
    // The access line names the refusal as the answer, never as an access key id.
    assert!(daemon.wait_for_log(
        "answer=\"AssumeRoleUnauthorizedAccess\"",
        Duration::from_secs(5)
    ));
    assert!(
        !daemon.log().contains("access_key_id=\"AssumeRole"),
        "{}",
        daemon.log()
    );
}

/// An IPv6 loopback listener works like an IPv4 one: tokens, credentials, the `[::1]` Host the
/// SDKs send, and the ECS endpoint (which `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://[::1]:PORT`
/// reaches in every SDK).
#[tokio::test]
async fn ipv6_loopback_listeners_serve_imds_and_ecs() {
    let s = Served::start(
        "[[imds]]\nlisten = \"[::1]:0\"\nprofile = \"role\"\n\
         [ecs]\nlisten = \"[::1]:0\"\nprofiles = [\"role\"]\n",
    )
    .await;
    assert!(s.imds().is_ipv6() && s.ecs().is_ipv6());
    let token = http::token(s.imds(), 60).await;
    let creds = http::get(s.imds(), ROLE_CREDS, &token).await;
    assert_eq!(creds.json()["Code"], "Success");
    let ecs = http::ecs_get(s.ecs(), "role", Some(&s.ecs_token("role"))).await;
    assert_eq!(ecs.status, 200);
    assert_eq!(ecs.json()["AccessKeyId"], creds.json()["AccessKeyId"]);
    let evil = raw::exchange(
        s.imds(),
        &raw::request(
            "GET",
            ROLE_CREDS,
            Some(&format!("evil.example:{}", s.imds().port())),
            &[(TOKEN, &token)],
        ),
    )
    .await
    .answered("foreign Host over IPv6");
    assert_eq!(evil.status, 403);
}
