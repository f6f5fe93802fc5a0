//! The moto server `scripts/test` starts (SigV4 authentication on), and IAM seeding through it.

use std::time::Duration;

use credvend::creds::LongTermKey;
use credvend::sigv4;
use credvend::sts::{ClientOptions, RetryPolicy, StsClient, StsEndpoint};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

/// Handle on the shared moto server.
#[derive(Clone)]
pub struct Moto {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    admin: LongTermKey,
    http: reqwest::Client,
}

/// A seeded IAM user.
pub struct User {
    pub name: String,
    pub arn: String,
    pub key: LongTermKey,
}

impl Moto {
    /// The moto server started by `scripts/test` (env `MOTO_URL`, `MOTO_ADMIN`).
    pub fn shared() -> Moto {
        let url = std::env::var("MOTO_URL").expect(
            "MOTO_URL is not set: run the tests through scripts/test, which starts moto with auth on",
        );
        let admin = std::env::var("MOTO_ADMIN").expect("MOTO_ADMIN is not set: run scripts/test");
        let (id, secret) = admin.split_once(':').expect("MOTO_ADMIN is ID:SECRET");
        Moto {
            url,
            admin: LongTermKey {
                access_key_id: id.into(),
                secret_access_key: SecretString::from(secret.to_owned()),
            },
            http: super::http_client(),
        }
    }

    /// The admin key `scripts/seed_admin.py` created (allowed everything).
    pub fn admin(&self) -> &LongTermKey {
        &self.admin
    }

    /// The admin user's ARN, as moto's GetCallerIdentity names it.
    pub async fn admin_arn(&self) -> String {
        Moto::client()
            .caller_identity(&self.endpoint(), self.admin.signing_key())
            .await
            .expect("GetCallerIdentity as moto's admin")
            .arn
    }

    /// The STS endpoint of this moto.
    pub fn endpoint(&self) -> StsEndpoint {
        StsEndpoint::custom(self.url.parse().unwrap(), "us-east-1")
    }

    /// An STS client with short timeouts, for tests.
    pub fn client() -> StsClient {
        StsClient::new(ClientOptions {
            timeout: Duration::from_secs(20),
            retry: RetryPolicy {
                max_attempts: 2,
                base: Duration::from_millis(50),
                cap: Duration::from_millis(200),
            },
            ..ClientOptions::default()
        })
        .unwrap()
    }

    /// Sends a signed IAM query-protocol call as the admin user; panics unless it succeeds.
    pub async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(String, String)> = vec![("Version".into(), "2010-05-08".into())];
        form.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let body = sigv4::form_encode(&form);
        let url: reqwest::Url = self.url.parse().unwrap();
        let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let ct = "application/x-www-form-urlencoded; charset=utf-8";
        let signed = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &[("content-type", ct), ("host", &host)],
                payload: body.as_bytes(),
            },
            self.admin.signing_key(),
            &sigv4::Scope {
                region: "us-east-1",
                service: "iam",
                time: OffsetDateTime::now_utc(),
            },
        );
        let resp = self
            .http
            .post(url)
            .header("content-type", ct)
            .header("x-amz-date", signed.amz_date)
            .header("authorization", signed.authorization)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status.is_success(),
            "IAM {params:?} failed: {status} {text}"
        );
        text
    }

    /// Creates a user allowed to call any STS action, with an access key.
    pub async fn user(&self, prefix: &str) -> User {
        self.user_with_policy(prefix, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:*","Resource":"*"}]}"#).await
    }

    /// Creates a user allowed to call any STS action and to manage its own access keys
    /// (`iam:GetUser` and `iam:*AccessKey*`), with an access key. moto evaluates IAM actions
    /// against the resource `*` (it does not work out the user a call is about), so the policy
    /// names `*`; on AWS the same statement would name `arn:aws:iam::*:user/${aws:username}`.
    pub async fn key_rotating_user(&self, prefix: &str) -> User {
        self.user_with_policy(
            prefix,
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"sts:*","Resource":"*"},
                {"Effect":"Allow","Action":["iam:GetUser","iam:*AccessKey*"],"Resource":"*"}]}"#,
        )
        .await
    }

    /// Creates a user with the inline policy `policy` and an access key.
    pub async fn user_with_policy(&self, prefix: &str, policy: &str) -> User {
        let name = super::unique(prefix);
        let created = self
            .iam(&[("Action", "CreateUser"), ("UserName", &name)])
            .await;
        let arn = xml_text(&created, "Arn");
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", &name),
            ("PolicyName", "sts"),
            ("PolicyDocument", policy),
        ])
        .await;
        let key = self
            .iam(&[("Action", "CreateAccessKey"), ("UserName", &name)])
            .await;
        User {
            name,
            arn,
            key: LongTermKey {
                access_key_id: xml_text(&key, "AccessKeyId"),
                secret_access_key: SecretString::from(xml_text(&key, "SecretAccessKey")),
            },
        }
    }

    /// Creates a role trusting `principal_arns` (optionally demanding an external id) that may
    /// call any STS action; returns its ARN.
    pub async fn role(
        &self,
        prefix: &str,
        principal_arns: &[&str],
        external_id: Option<&str>,
    ) -> String {
        let name = super::unique(prefix);
        let condition = external_id
            .map(|id| format!(r#","Condition":{{"StringEquals":{{"sts:ExternalId":"{id}"}}}}"#))
            .unwrap_or_default();
        let principals = principal_arns
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(",");
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":[{principals}]}},"Action":"sts:AssumeRole"{condition}}}]}}"#
        );
        let created = self
            .iam(&[
                ("Action", "CreateRole"),
                ("RoleName", &name),
                ("AssumeRolePolicyDocument", &trust),
                ("MaxSessionDuration", "43200"),
            ])
            .await;
        self.iam(&[
            ("Action", "PutRolePolicy"),
            ("RoleName", &name),
            ("PolicyName", "sts"),
            ("PolicyDocument", r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:*","Resource":"*"}]}"#),
        ])
        .await;
        xml_text(&created, "Arn")
    }

    /// From moto's model dump (`GET /moto-api/data.json`, no authentication): the access keys
    /// moto ever created for `user_name`, as `(access key id, current status)`, sorted. The dump
    /// lists every model instance moto created, deleted ones included: see
    /// [`Moto::admin_access_keys`] for the keys that exist now.
    pub async fn created_access_keys(&self, user_name: &str) -> Vec<(String, String)> {
        let text = self
            .http
            .get(format!("{}/moto-api/data.json", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<(String, String)> = state["iam"]["AccessKey"]
            .as_array()
            .expect("moto's state has iam.AccessKey")
            .iter()
            .filter(|k| k["user_name"] == user_name)
            .map(|k| {
                (
                    k["access_key_id"].as_str().unwrap().to_owned(),
                    k["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        keys.sort();
        keys
    }

    /// The access keys `user_name` has now, as `(access key id, status)`, sorted, listed by the
    /// admin user (not by the client under test).
    pub async fn admin_access_keys(&self, user_name: &str) -> Vec<(String, String)> {
        let xml = self
            .iam(&[("Action", "ListAccessKeys"), ("UserName", user_name)])
            .await;
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let text = |n: roxmltree::Node<'_, '_>, name: &str| {
            n.children()
                .find(|c| c.tag_name().name() == name)
                .and_then(|c| c.text())
                .unwrap()
                .to_owned()
        };
        let mut keys: Vec<(String, String)> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "member")
            .map(|m| (text(m, "AccessKeyId"), text(m, "Status")))
            .collect();
        keys.sort();
        keys
    }

    /// Creates an OIDC provider-trusting role for web identity (moto does not verify tokens).
    pub async fn web_identity_role(&self, prefix: &str) -> String {
        let name = super::unique(prefix);
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::123456789012:oidc-provider/example.com"},"Action":"sts:AssumeRoleWithWebIdentity"}]}"#;
        let created = self
            .iam(&[
                ("Action", "CreateRole"),
                ("RoleName", &name),
                ("AssumeRolePolicyDocument", trust),
            ])
            .await;
        xml_text(&created, "Arn")
    }
}

/// Text of the first element called `name` (test-only helper).
pub fn xml_text(xml: &str, name: &str) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .find(|n| n.tag_name().name() == name)
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        .to_owned()
}

/// Exposes a key's secret for assertions that it never leaks.
pub fn secret_of(key: &LongTermKey) -> String {
    key.secret_access_key.expose_secret().to_owned()
}

/// A moto server of this test's own (for tests that stop it, or that need auth off).
pub struct PrivateMoto {
    pub moto: Moto,
    child: std::process::Child,
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv `scripts/test` creates.
pub fn venv_bin(name: &str) -> String {
    format!("{}/.venv/bin/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl PrivateMoto {
    /// Starts moto on a free loopback port. With `auth`, it is seeded with an admin user and
    /// SigV4 authentication is switched on, as `scripts/test` does for the shared one.
    pub fn start(auth: bool) -> PrivateMoto {
        PrivateMoto::start_on("127.0.0.1", auth)
    }

    /// Like [`PrivateMoto::start`], listening on `host` (an address of one interface, e.g. a
    /// veth inside a test's own network namespace).
    pub fn start_on(host: &str, auth: bool) -> PrivateMoto {
        use std::io::BufRead;
        let mut child = std::process::Command::new(venv_bin("moto_server"))
            .args(["-H", host, "-p", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("moto_server from .venv (run scripts/test)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("moto exited before printing its address")
                .unwrap();
            if let Some(rest) = line.split("Running on ").nth(1) {
                break rest.trim().to_owned();
            }
        };
        // Keep draining moto's request log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let admin = if auth {
            let out = std::process::Command::new(venv_bin("python"))
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/seed_admin.py"
                ))
                .arg(&url)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "seeding moto failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        } else {
            "AKIDNOAUTH:no-auth".to_owned()
        };
        let (id, secret) = admin.split_once(':').unwrap();
        PrivateMoto {
            moto: Moto {
                url,
                admin: LongTermKey {
                    access_key_id: id.into(),
                    secret_access_key: SecretString::from(secret.to_owned()),
                },
                http: super::http_client(),
            },
            child,
        }
    }

    /// Stops the server (its port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
