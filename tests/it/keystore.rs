//! The OS key store against real keyrings: this machine's kernel keyring (unique service names,
//! cleaned up afterwards) and GNOME Keyring on a private session bus per test
//! ([`crate::support::keyring`]). Time limits are enforced from outside the code under test
//! ([`within`]), so a hanging keyring call fails the test instead of stalling it.

use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credvend::creds::{LongTermKey, TemporaryCredentials};
use credvend::keystore::{Backend, Choice, KeyStore, KeystoreError, OpenOptions, RotationRecord};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::support::keyring::{BusClient, NoBus, Provider, SessionBus, in_own_process};
use crate::support::unique;

/// The bound on every failure mode: a locked keyring or a missing bus must be reported by then.
const QUICK: Duration = Duration::from_secs(5);
/// The bound on whole scenarios that make many calls.
const SCENARIO: Duration = Duration::from_secs(60);

/// Runs `fut` on a runtime of its own thread and returns its output; panics if that takes longer
/// than `limit` (the stuck thread is abandoned and dies with the test process).
fn within<T, F>(limit: Duration, fut: F) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(fut));
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => {
            panic!("took longer than {limit:?}: the keyring call hangs")
        }
        Err(RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("the worker sent nothing"))
        }
    }
}

fn opts(choice: Choice, service: &str) -> OpenOptions {
    OpenOptions {
        choice,
        service: service.to_owned(),
        prompt_timeout: Duration::ZERO,
    }
}

async fn open(choice: Choice, service: &str) -> KeyStore {
    KeyStore::open(opts(choice, service))
        .await
        .unwrap_or_else(|e| panic!("opening {choice}: {e}"))
}

fn key(access_key_id: &str, secret: &str) -> LongTermKey {
    LongTermKey {
        access_key_id: access_key_id.into(),
        secret_access_key: SecretString::from(secret.to_owned()),
    }
}

fn session(secret: &str, token: &str) -> TemporaryCredentials {
    TemporaryCredentials {
        access_key_id: "ASIAEXAMPLESESSION".into(),
        secret_access_key: SecretString::from(secret.to_owned()),
        session_token: Some(SecretString::from(token.to_owned())),
        // Whole seconds survive any RFC 3339 round trip exactly.
        expiration: OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())
            .unwrap()
            + time::Duration::hours(12),
        account_id: Some("123456789012".into()),
        arn: Some("arn:aws:iam::123456789012:user/dev".into()),
        packed_policy_size: None,
    }
}

fn assert_same_key(got: &LongTermKey, want: &LongTermKey) {
    assert_eq!(got.access_key_id, want.access_key_id);
    assert_eq!(
        got.secret_access_key.expose_secret(),
        want.secret_access_key.expose_secret()
    );
}

/// Deletes the named entries when dropped, also when the test fails half-way: the kernel keyring
/// outlives the test process.
struct Cleanup {
    store: KeyStore,
    profiles: Vec<String>,
}

impl Cleanup {
    fn new(store: &KeyStore, profiles: &[&String]) -> Cleanup {
        Cleanup {
            store: store.clone(),
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let store = self.store.clone();
        let profiles = std::mem::take(&mut self.profiles);
        // A thread of its own: this may run inside a runtime, which cannot start another.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    for profile in profiles {
                        let _ = store.delete_key(&profile).await;
                        let _ = store.delete_session(&profile).await;
                        let _ = store.delete_rotation(&profile).await;
                    }
                })
        })
        .join();
    }
}

/// The full life of keys and sessions in one store.
async fn round_trip(store: KeyStore) {
    let (dev, ops, mfa_only) = (unique("dev"), unique("ops"), unique("mfa"));
    let _cleanup = Cleanup::new(&store, &[&dev, &ops, &mfa_only]);

    assert!(!store.has_key(&dev).await.unwrap());
    match store.get_key(&dev).await {
        Err(KeystoreError::NotFound { profile, backend }) => {
            assert_eq!(profile, dev);
            assert_eq!(backend, store.backend());
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!store.delete_key(&dev).await.unwrap());
    assert_eq!(store.list_profiles().await.unwrap(), Vec::<String>::new());

    let first = key("AKIAFIRSTEXAMPLE", &unique("wJalr/K7MDENG+bPxRfiCY"));
    store.put_key(&dev, &first).await.unwrap();
    assert!(store.has_key(&dev).await.unwrap());
    assert_same_key(&store.get_key(&dev).await.unwrap(), &first);

    // Putting again replaces, it does not add a second entry.
    let second = key("AKIASECONDEXAMPLE", &unique("second/secret+"));
    store.put_key(&dev, &second).await.unwrap();
    assert_same_key(&store.get_key(&dev).await.unwrap(), &second);

    store
        .put_key(&ops, &key("AKIAOPSEXAMPLE", "ops-secret"))
        .await
        .unwrap();
    let mut want = vec![dev.clone(), ops.clone()];
    want.sort();
    assert_eq!(store.list_profiles().await.unwrap(), want);

    // Sessions: their own entries, never listed as profiles, independent of the key.
    assert!(store.get_session(&dev).await.unwrap().is_none());
    let cached = session(
        &unique("session-secret"),
        &unique("FwoGZXIvYXdzEBYa/token+=="),
    );
    store.put_session(&dev, &cached).await.unwrap();
    store.put_session(&mfa_only, &cached).await.unwrap();
    let got = store
        .get_session(&dev)
        .await
        .unwrap()
        .expect("cached session");
    assert!(got.same_key(&cached));
    assert_eq!(
        got.session_token.as_ref().unwrap().expose_secret(),
        cached.session_token.as_ref().unwrap().expose_secret()
    );
    assert_eq!(got.expiration, cached.expiration);
    assert_eq!(got.account_id, cached.account_id);
    assert_eq!(got.arn, cached.arn);
    assert_eq!(store.list_profiles().await.unwrap(), want);
    assert!(!store.has_key(&mfa_only).await.unwrap());

    // Rotation records: their own entries too, replaced in place, never listed or read as keys.
    assert!(store.get_rotation(&dev).await.unwrap().is_none());
    let mut record = RotationRecord {
        user_name: "alice".into(),
        old_access_key_id: second.access_key_id.clone(),
        started: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        existing_key_ids: vec![second.access_key_id.clone()],
        new_key: None,
    };
    store.put_rotation(&dev, &record).await.unwrap();
    let got = store.get_rotation(&dev).await.unwrap().expect("record");
    assert!(got.new_key.is_none());
    assert_eq!(got.started, record.started);
    assert_eq!(got.existing_key_ids, record.existing_key_ids);
    let pending = key("AKIAPENDINGEXAMPLE", &unique("pending/secret+"));
    record.new_key = Some(pending.clone());
    store.put_rotation(&dev, &record).await.unwrap();
    let got = store.get_rotation(&dev).await.unwrap().expect("record");
    assert_same_key(got.new_key.as_ref().unwrap(), &pending);
    assert_same_key(&store.get_key(&dev).await.unwrap(), &second);
    assert_eq!(store.list_profiles().await.unwrap(), want);
    assert!(store.delete_rotation(&dev).await.unwrap());
    assert!(store.get_rotation(&dev).await.unwrap().is_none());
    assert!(!store.delete_rotation(&dev).await.unwrap());

    assert!(store.delete_session(&dev).await.unwrap());
    assert!(store.get_session(&dev).await.unwrap().is_none());
    assert!(!store.delete_session(&dev).await.unwrap());
    assert_same_key(&store.get_key(&dev).await.unwrap(), &second);

    assert!(store.delete_key(&dev).await.unwrap());
    assert!(matches!(
        store.get_key(&dev).await,
        Err(KeystoreError::NotFound { .. })
    ));
    assert!(!store.delete_key(&dev).await.unwrap());
    assert_eq!(store.list_profiles().await.unwrap(), vec![ops.clone()]);
    assert!(store.delete_key(&ops).await.unwrap());
    assert!(store.delete_session(&mfa_only).await.unwrap());
    assert_eq!(store.list_profiles().await.unwrap(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Another process: a second credvend (this test binary, re-run as a child), keyctl, secret-tool.

/// The child half of the cross-process tests: one keystore operation in a process of its own,
/// described by the environment. Ignored, so it runs only when a test starts it.
#[test]
#[ignore = "helper: the cross-process tests run it in a child process"]
fn probe_child() {
    let Ok(op) = std::env::var("CREDVEND_PROBE_OP") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let choice: Choice = var("CREDVEND_PROBE_CHOICE").parse().unwrap();
    let (service, profile) = (var("CREDVEND_PROBE_SERVICE"), var("CREDVEND_PROBE_PROFILE"));
    let want = key(&var("CREDVEND_PROBE_AKID"), &var("CREDVEND_PROBE_SECRET"));
    within(SCENARIO, async move {
        let store = open(choice, &service).await;
        match op.as_str() {
            "put" => store.put_key(&profile, &want).await.unwrap(),
            "get" => assert_same_key(&store.get_key(&profile).await.unwrap(), &want),
            other => panic!("unknown probe op {other}"),
        }
    });
}

/// Runs [`probe_child`] in a new process and fails unless it succeeds.
fn run_probe(op: &str, choice: Choice, service: &str, profile: &str, key: &LongTermKey) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "keystore::probe_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CREDVEND_PROBE_OP", op)
        .env("CREDVEND_PROBE_CHOICE", choice.as_str())
        .env("CREDVEND_PROBE_SERVICE", service)
        .env("CREDVEND_PROBE_PROFILE", profile)
        .env("CREDVEND_PROBE_AKID", &key.access_key_id)
        .env(
            "CREDVEND_PROBE_SECRET",
            key.secret_access_key.expose_secret(),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "probe {op} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_json(key: &LongTermKey) -> String {
    serde_json::json!({
        "v": 1,
        "access_key_id": key.access_key_id,
        "secret_access_key": key.secret_access_key.expose_secret(),
    })
    .to_string()
}

fn parse_key_json(bytes: &[u8]) -> LongTermKey {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(v["v"], 1, "{v}");
    key(
        v["access_key_id"].as_str().unwrap(),
        v["secret_access_key"].as_str().unwrap(),
    )
}

/// Runs `script` with `keyctl` in a fresh anonymous session keyring that has the persistent
/// keyring linked in: what any other process of this user can do.
fn keyctl(script: &str, description: &str, stdin: Option<&str>) -> Vec<u8> {
    let mut child = Command::new("keyctl")
        .args(["session", "-", "sh", "-c"])
        .arg(format!(
            "set -e; ring=$(keyctl get_persistent @s); {script}"
        ))
        .args(["sh", description])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyctl is missing: install the keyutils package (scripts/test does)");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "keyctl {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn keyctl_read(description: &str) -> Vec<u8> {
    keyctl(
        r#"keyctl pipe "$(keyctl search "$ring" user "$1")""#,
        description,
        None,
    )
}

fn keyctl_write(description: &str, payload: &str) {
    keyctl(
        r#"keyctl padd user "$1" "$ring" >/dev/null"#,
        description,
        Some(payload),
    );
}

fn secret_tool(bus: &BusClient, args: &[&str], stdin: Option<&str>) -> Vec<u8> {
    let mut child = bus
        .command("secret-tool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("secret-tool is missing: install libsecret-tools (scripts/test does)");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "secret-tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------------
// Kernel keyring (keyutils).

#[test]
fn keyutils_round_trip() {
    within(SCENARIO, async {
        let store = open(Choice::Keyutils, &unique("svc")).await;
        assert_eq!(store.backend(), Backend::Keyutils);
        round_trip(store).await;
    });
}

#[test]
fn keyutils_entries_are_shared_between_processes() {
    within(SCENARIO, async {
        let service = unique("svc");
        let store = open(Choice::Keyutils, &service).await;
        let (ours, theirs, child_read, child_wrote) = (
            unique("ours"),
            unique("keyctl"),
            unique("read"),
            unique("wrote"),
        );
        let _cleanup = Cleanup::new(&store, &[&ours, &theirs, &child_read, &child_wrote]);

        // Written here, read by keyctl in a new session.
        let k = key("AKIAOURSEXAMPLE", &unique("ours/secret+"));
        store.put_key(&ours, &k).await.unwrap();
        assert_same_key(
            &parse_key_json(&keyctl_read(&format!("{service}:{ours}"))),
            &k,
        );

        // Written by keyctl, read here.
        let k = key("AKIAKEYCTLEXAMPLE", &unique("keyctl/secret+"));
        keyctl_write(&format!("{service}:{theirs}"), &key_json(&k));
        assert_same_key(&store.get_key(&theirs).await.unwrap(), &k);

        // Written here, read by another credvend process; written there, read here.
        let k = key("AKIAPARENTEXAMPLE", &unique("parent/secret"));
        store.put_key(&child_read, &k).await.unwrap();
        run_probe("get", Choice::Keyutils, &service, &child_read, &k);
        let k = key("AKIACHILDEXAMPLE", &unique("child/secret"));
        run_probe("put", Choice::Keyutils, &service, &child_wrote, &k);
        assert_same_key(&store.get_key(&child_wrote).await.unwrap(), &k);
    });
}

/// A `Write` that appends to a shared buffer, for capturing log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_never_appear_in_debug_errors_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, because the keyring calls run on tokio's blocking threads. Only this test sets one.
    let _ = tracing::subscriber::set_global_default(subscriber);

    let secret = format!("TOPSECRET{}", unique("x"));
    let token = format!("TOKENSECRET{}", unique("x"));
    let (secret2, token2) = (secret.clone(), token.clone());
    within(SCENARIO, async move {
        let service = unique("svc");
        let store = open(Choice::Keyutils, &service).await;
        let profile = unique("dev");
        let _cleanup = Cleanup::new(&store, &[&profile]);
        let mut texts = vec![format!("{store:?}")];

        store
            .put_key(&profile, &key("AKIADEBUGEXAMPLE", &secret))
            .await
            .unwrap();
        texts.push(format!("{:?}", store.get_key(&profile).await.unwrap()));
        store
            .put_session(&profile, &session(&secret, &token))
            .await
            .unwrap();
        texts.push(format!("{:?}", store.get_session(&profile).await.unwrap()));

        // Entries another program wrote, whose JSON errors would quote the secret.
        let quoting =
            format!(r#"{{"v":"{secret}","access_key_id":"AKID","secret_access_key":"{secret}"}}"#);
        keyctl_write(&format!("{service}:{profile}"), &quoting);
        let err = store.get_key(&profile).await.unwrap_err();
        assert!(
            matches!(&err, KeystoreError::Malformed { profile: p } if *p == profile),
            "{err:?}"
        );
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        assert!(store.has_key(&profile).await.unwrap());

        // An unreadable cached session is discarded, not reported.
        keyctl_write(&format!("{service}.session:{profile}"), &quoting);
        assert!(store.get_session(&profile).await.unwrap().is_none());
        assert!(!store.delete_session(&profile).await.unwrap());

        store.delete_key(&profile).await.unwrap();
        let err = store.get_key(&profile).await.unwrap_err();
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));

        for text in texts {
            assert!(
                !text.contains(&secret) && !text.contains(&token),
                "a secret leaked: {text}"
            );
        }
    });
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("discarding an unreadable cached session"),
        "the capture saw no logs: {logs}"
    );
    assert!(
        !logs.contains(&secret2) && !logs.contains(&token2),
        "a secret leaked into the logs: {logs}"
    );
}

#[test]
fn invalid_profile_names_are_refused_before_the_keyring_sees_them() {
    within(SCENARIO, async {
        let store = open(Choice::Keyutils, &unique("svc")).await;
        for bad in ["", "a;b", "line\nbreak"] {
            let err = store.get_key(bad).await.unwrap_err();
            assert!(
                matches!(err, KeystoreError::InvalidProfile { .. }),
                "{err:?}"
            );
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Secret Service (GNOME Keyring on a private bus).

#[test]
fn secret_service_round_trip() {
    in_own_process(module_path!(), "secret_service_round_trip", || {
        let _bus = SessionBus::unlocked();
        within(SCENARIO, async {
            let store = open(Choice::SecretService, &unique("svc")).await;
            assert_eq!(store.backend(), Backend::SecretService);
            round_trip(store).await;
        });
    });
}

#[test]
fn secret_service_entries_are_shared_between_processes() {
    in_own_process(
        module_path!(),
        "secret_service_entries_are_shared_between_processes",
        || {
            let bus = SessionBus::unlocked();
            let tool = bus.client();
            within(SCENARIO, async move {
                let service = unique("svc");
                let store = open(Choice::SecretService, &service).await;
                let (ours, theirs, child_read, child_wrote) = (
                    unique("ours"),
                    unique("tool"),
                    unique("read"),
                    unique("wrote"),
                );

                // Written here, read by secret-tool (libsecret).
                let k = key("AKIAOURSEXAMPLE", &unique("ours/secret+"));
                store.put_key(&ours, &k).await.unwrap();
                let out = secret_tool(
                    &tool,
                    &["lookup", "service", &service, "username", &ours],
                    None,
                );
                assert_same_key(&parse_key_json(&out), &k);

                // Written by secret-tool, read here.
                let k = key("AKIATOOLEXAMPLE", &unique("tool/secret+"));
                let label = ["store", "--label", "by hand"];
                let attrs = ["service", service.as_str(), "username", theirs.as_str()];
                secret_tool(
                    &tool,
                    &[&label[..], &attrs[..]].concat(),
                    Some(&key_json(&k)),
                );
                assert_same_key(&store.get_key(&theirs).await.unwrap(), &k);
                let mut want = vec![ours.clone(), theirs.clone()];
                want.sort();
                assert_eq!(store.list_profiles().await.unwrap(), want);

                // Written here, read by another credvend process; written there, read here.
                let k = key("AKIAPARENTEXAMPLE", &unique("parent/secret"));
                store.put_key(&child_read, &k).await.unwrap();
                run_probe("get", Choice::SecretService, &service, &child_read, &k);
                let k = key("AKIACHILDEXAMPLE", &unique("child/secret"));
                run_probe("put", Choice::SecretService, &service, &child_wrote, &k);
                assert_same_key(&store.get_key(&child_wrote).await.unwrap(), &k);
            });
        },
    );
}

#[test]
fn locked_secret_service_is_reported_quickly_without_prompting() {
    in_own_process(
        module_path!(),
        "locked_secret_service_is_reported_quickly_without_prompting",
        || {
            let bus = SessionBus::locked();
            for choice in [Choice::SecretService, Choice::Auto] {
                let err = within(QUICK, KeyStore::open(opts(choice, &unique("svc")))).unwrap_err();
                assert!(matches!(err, KeystoreError::Locked), "{choice}: {err:?}");
                assert!(err.is_transient());
            }
            assert!(bus.default_collection_locked());
        },
    );
}

#[test]
fn a_bounded_prompt_without_a_desktop_is_locked_at_once() {
    in_own_process(
        module_path!(),
        "a_bounded_prompt_without_a_desktop_is_locked_at_once",
        || {
            let bus = SessionBus::locked();
            let mut options = opts(Choice::SecretService, &unique("svc"));
            options.prompt_timeout = Duration::from_secs(2);
            let err = within(QUICK, KeyStore::open(options)).unwrap_err();
            assert!(matches!(err, KeystoreError::Locked), "{err:?}");
            assert!(bus.default_collection_locked());
        },
    );
}

type Call = fn(KeyStore) -> std::pin::Pin<Box<dyn Future<Output = KeystoreError> + Send>>;

#[test]
fn every_call_on_a_keyring_locked_after_open_fails_quickly() {
    in_own_process(
        module_path!(),
        "every_call_on_a_keyring_locked_after_open_fails_quickly",
        || {
            let bus = SessionBus::unlocked();
            let store = within(
                QUICK,
                KeyStore::open(opts(Choice::SecretService, "credvend")),
            )
            .unwrap();
            let stored = store.clone();
            within(QUICK, async move {
                stored
                    .put_key("dev", &key("AKIALOCKEXAMPLE", "lock-secret"))
                    .await
                    .unwrap()
            });
            bus.lock_default_collection();

            let calls: [(&str, Call); 8] = [
                ("get_key", |s| {
                    Box::pin(async move { s.get_key("dev").await.unwrap_err() })
                }),
                ("has_key", |s| {
                    Box::pin(async move { s.has_key("dev").await.unwrap_err() })
                }),
                ("put_key", |s| {
                    Box::pin(async move { s.put_key("dev", &key("AKIA", "x")).await.unwrap_err() })
                }),
                ("delete_key", |s| {
                    Box::pin(async move { s.delete_key("dev").await.unwrap_err() })
                }),
                ("list_profiles", |s| {
                    Box::pin(async move { s.list_profiles().await.unwrap_err() })
                }),
                ("get_session", |s| {
                    Box::pin(async move { s.get_session("dev").await.unwrap_err() })
                }),
                ("put_session", |s| {
                    Box::pin(
                        async move { s.put_session("dev", &session("x", "y")).await.unwrap_err() },
                    )
                }),
                ("delete_session", |s| {
                    Box::pin(async move { s.delete_session("dev").await.unwrap_err() })
                }),
            ];
            for (name, call) in calls {
                let err = within(QUICK, call(store.clone()));
                assert!(matches!(err, KeystoreError::Locked), "{name}: {err:?}");
            }
            assert!(bus.default_collection_locked());
        },
    );
}

fn assert_no_session_bus() {
    let err = within(
        QUICK,
        KeyStore::open(opts(Choice::SecretService, &unique("svc"))),
    )
    .unwrap_err();
    assert!(matches!(err, KeystoreError::NoSessionBus(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("--keystore keyutils"), "{text}");
}

#[test]
fn no_session_bus_address_is_reported_quickly() {
    in_own_process(
        module_path!(),
        "no_session_bus_address_is_reported_quickly",
        || {
            let _no_bus = NoBus::unset();
            assert_no_session_bus();
        },
    );
}

#[test]
fn a_dead_session_bus_is_reported_quickly() {
    in_own_process(
        module_path!(),
        "a_dead_session_bus_is_reported_quickly",
        || {
            let _no_bus = NoBus::dead_address();
            assert_no_session_bus();
        },
    );
}

#[test]
fn bus_without_secret_service_is_reported_quickly() {
    in_own_process(
        module_path!(),
        "bus_without_secret_service_is_reported_quickly",
        || {
            let _bus = SessionBus::without_provider();
            let err = within(
                QUICK,
                KeyStore::open(opts(Choice::SecretService, &unique("svc"))),
            )
            .unwrap_err();
            assert!(matches!(err, KeystoreError::NoSecretService(_)), "{err:?}");
            assert!(err.to_string().contains("gnome-keyring"), "{err}");
        },
    );
}

#[test]
fn secret_service_without_default_collection_is_reported() {
    in_own_process(
        module_path!(),
        "secret_service_without_default_collection_is_reported",
        || {
            let _bus = SessionBus::start(Provider::NoDefaultCollection);
            let err = within(
                QUICK,
                KeyStore::open(opts(Choice::SecretService, &unique("svc"))),
            )
            .unwrap_err();
            assert!(matches!(err, KeystoreError::NoDefaultCollection), "{err:?}");
        },
    );
}

#[test]
fn auto_without_a_session_bus_falls_back_to_keyutils() {
    in_own_process(
        module_path!(),
        "auto_without_a_session_bus_falls_back_to_keyutils",
        || {
            let _no_bus = NoBus::unset();
            within(QUICK, async {
                let store = open(Choice::Auto, &unique("svc")).await;
                assert_eq!(store.backend(), Backend::Keyutils);
                let profile = unique("dev");
                let _cleanup = Cleanup::new(&store, &[&profile]);
                let k = key("AKIAAUTOEXAMPLE", &unique("auto/secret"));
                store.put_key(&profile, &k).await.unwrap();
                assert_same_key(&store.get_key(&profile).await.unwrap(), &k);
            });
        },
    );
}

fn assert_auto_picks(expected: Backend) {
    let store = within(QUICK, KeyStore::open(opts(Choice::Auto, &unique("svc"))))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.backend(), expected);
}

#[test]
fn auto_without_a_provider_falls_back_to_keyutils() {
    in_own_process(
        module_path!(),
        "auto_without_a_provider_falls_back_to_keyutils",
        || {
            let _bus = SessionBus::without_provider();
            assert_auto_picks(Backend::Keyutils);
        },
    );
}

#[test]
fn auto_without_a_default_collection_falls_back_to_keyutils() {
    in_own_process(
        module_path!(),
        "auto_without_a_default_collection_falls_back_to_keyutils",
        || {
            let _bus = SessionBus::start(Provider::NoDefaultCollection);
            assert_auto_picks(Backend::Keyutils);
        },
    );
}

#[test]
fn auto_prefers_an_unlocked_secret_service() {
    in_own_process(
        module_path!(),
        "auto_prefers_an_unlocked_secret_service",
        || {
            let _bus = SessionBus::unlocked();
            assert_auto_picks(Backend::SecretService);
        },
    );
}

#[test]
fn stores_of_other_platforms_are_unsupported_here() {
    for choice in [Choice::Keychain, Choice::Windows] {
        let err = within(QUICK, KeyStore::open(opts(choice, "credvend"))).unwrap_err();
        assert!(matches!(err, KeystoreError::Unsupported { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("--keystore {choice} is only available on"))
        );
    }
}

#[test]
fn a_desktop_unlock_prompt_never_blocks_the_daemon_and_is_bounded_for_the_cli() {
    in_own_process(
        module_path!(),
        "a_desktop_unlock_prompt_never_blocks_the_daemon_and_is_bounded_for_the_cli",
        || {
            let bus = SessionBus::start(Provider::LockedWithGuiPrompter);
            let prompter_up = || {
                bus.name_has_owner("org.gnome.keyring.SystemPrompter")
                    || bus.name_has_owner("org.gnome.keyring.PrivatePrompter")
            };

            // The daemon (prompt limit 0): reported at once, and no dialog was ever opened.
            for choice in [Choice::SecretService, Choice::Auto] {
                let err = within(QUICK, KeyStore::open(opts(choice, &unique("svc")))).unwrap_err();
                assert!(matches!(err, KeystoreError::Locked), "{choice}: {err:?}");
            }
            assert!(!prompter_up(), "the daemon made an unlock prompt appear");

            // An interactive command with a 2 s limit: the dialog appears, nobody answers, and
            // the call gives up in time instead of waiting for the user forever.
            let mut options = opts(Choice::SecretService, &unique("svc"));
            options.prompt_timeout = Duration::from_secs(2);
            let err = within(QUICK, KeyStore::open(options)).unwrap_err();
            assert!(matches!(err, KeystoreError::Locked), "{err:?}");
            assert!(
                prompter_up(),
                "no unlock prompt appeared: the test proves nothing"
            );
            assert!(bus.default_collection_locked());
        },
    );
}
