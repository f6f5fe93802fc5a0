//! `credvend rotate` against moto with SigV4 authentication on: the key is replaced in IAM and in
//! the keyring, STS accepts the new key, a running daemon keeps serving and mints from the new
//! key; a second key of the user's own stops the rotation and is never deleted.
//!
//! Crash safety, one test per step: the profile's STS and IAM calls go through the counting proxy
//! ([`StsProxy::hold_nth`] holds exactly one call of the sequence), the CLI is killed with SIGKILL
//! while that call waits, the keyring must then hold a key STS accepts and IAM must list at most
//! two keys, and a second run must complete the rotation. A keyring write is followed by a network
//! call, so holding that call stops the CLI right after the write. Releasing the held call
//! `Forward` lets IAM carry it out with nobody reading the answer (the lost-answer case);
//! releasing it `Close` drops it before IAM sees it, which injects a fault (`fault` in the name).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use credvend::creds::LongTermKey;
use credvend::keystore::{Choice, KeyStore, OpenOptions};
use secrecy::SecretString;

use crate::support::daemon::{Setup, stderr, stdout};
use crate::support::http;
use crate::support::moto::{Moto, PrivateMoto, User, secret_of};
use crate::support::sts_proxy::{Mode, StsProxy};
use crate::support::toml::Toml;

/// The setup's keyring, as the CLI sees it.
async fn keyring(setup: &Setup) -> KeyStore {
    KeyStore::open(OpenOptions {
        choice: Choice::Keyutils,
        service: setup.service.clone(),
        prompt_timeout: Duration::ZERO,
    })
    .await
    .unwrap()
}

/// The key stored for `profile`, checked with STS at `moto` (directly, not through a proxy).
async fn stored_key_works(setup: &Setup, moto: &Moto, profile: &str, user: &User) -> LongTermKey {
    let key = keyring(setup).await.get_key(profile).await.unwrap();
    let id = Moto::client()
        .caller_identity(&moto.endpoint(), key.signing_key())
        .await
        .unwrap_or_else(|e| panic!("STS refuses the stored key {}: {e}", key.access_key_id));
    assert_eq!(id.arn, user.arn);
    key
}

/// Polls (bounded) until moto lists `n` keys for `user`: the state, not the time, synchronises.
async fn wait_keys(moto: &Moto, user: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys = moto.admin_access_keys(user).await;
        if keys.len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "IAM never listed {n} keys: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a finished rotation leaves: IAM lists exactly the stored key, STS accepts it, no record.
async fn assert_rotated(setup: &Setup, moto: &Moto, user: &User, printed: &str) -> LongTermKey {
    let key = stored_key_works(setup, moto, "dev", user).await;
    assert_eq!(
        printed.trim(),
        key.access_key_id,
        "stdout is the new key id"
    );
    assert_ne!(key.access_key_id, user.key.access_key_id);
    assert_eq!(
        moto.admin_access_keys(&user.name).await,
        vec![(key.access_key_id.clone(), "Active".to_owned())]
    );
    assert!(
        keyring(setup)
            .await
            .get_rotation("dev")
            .await
            .unwrap()
            .is_none(),
        "the rotation record is gone"
    );
    let err = Moto::client()
        .caller_identity(&moto.endpoint(), user.key.signing_key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "old key: {err}");
    key
}

fn assert_no_secret(text: &str, keys: &[&LongTermKey]) {
    for k in keys {
        assert!(!text.contains(&secret_of(k)), "a secret leaked: {text}");
    }
}

/// `rotate` against moto: IAM ends with only the new key, the keyring holds it, STS accepts it,
/// and the daemon answers every request with credentials while `rotate` runs and while it
/// switches to credentials minted from the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_replaces_the_key_and_the_daemon_keeps_serving() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.key_rotating_user("rot").await;
    let role = moto.role("rot", &[&user.arn], None).await;
    setup.write_aws_config(&format!(
        "[profile dev]\nregion = us-east-1\nendpoint_url = {m}\n\
         [profile role]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role}\nsource_profile = dev\n",
        m = moto.url
    ));
    setup.store_key("dev", &user.key);
    setup.write_toml(&Toml::new().imds("role").build());
    let daemon = setup.start();
    setup
        .wait_status("role", "fresh", |p| p["phase"] == "fresh")
        .await;
    let before = http::imds_creds(daemon.imds(), "role").await;
    assert_eq!(before["Code"], "Success", "{before}");

    // While `rotate` runs, the daemon keeps answering with credentials.
    let mut rotating = setup
        .command(&["rotate", "dev"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut answers = 0;
    loop {
        let during = http::imds_creds(daemon.imds(), "role").await;
        assert_eq!(during["Code"], "Success", "during the rotation: {during}");
        answers += 1;
        if rotating.try_wait().unwrap().is_some() {
            break;
        }
    }
    let out = rotating.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "rotate failed: {err}");
    let new = assert_rotated(&setup, &moto, &user, &stdout(&out)).await;
    for step in [
        "rotating",
        "recorded the rotation in the keyring",
        "created",
        "STS accepts",
        "is now the key of `dev`",
        "deleted the old key",
        "rotation of `dev` complete",
    ] {
        assert!(err.contains(step), "no `{step}` line in:\n{err}");
    }
    assert_no_secret(&format!("{err}{}", stdout(&out)), &[&user.key, &new]);
    assert_no_secret(&daemon.log(), &[&user.key, &new]);

    // `rotate` told the daemon: it mints from the new key at once (the old one is gone in IAM),
    // and serves what it had until then.
    assert!(
        err.contains("the daemon mints new credentials for role"),
        "{err}"
    );
    // And while it switches to credentials minted from the new key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let during = http::imds_creds(daemon.imds(), "role").await;
        assert_eq!(during["Code"], "Success", "while switching: {during}");
        answers += 1;
        let p = setup.profile_status("role").unwrap();
        if p["phase"] == "fresh" && p["refreshes"].as_u64() > Some(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed: {p}");
    }
    eprintln!("{answers} answers while rotating and switching");
    let after = http::imds_creds(daemon.imds(), "role").await;
    assert_eq!(after["Code"], "Success", "{after}");
    assert_ne!(after["AccessKeyId"], before["AccessKeyId"]);
    let minted = credvend::creds::TemporaryCredentials {
        access_key_id: after["AccessKeyId"].as_str().unwrap().to_owned(),
        secret_access_key: SecretString::from(
            after["SecretAccessKey"].as_str().unwrap().to_owned(),
        ),
        session_token: Some(SecretString::from(
            after["Token"].as_str().unwrap().to_owned(),
        )),
        expiration: time::OffsetDateTime::now_utc(),
        account_id: None,
        arn: None,
        packed_policy_size: None,
    };
    let id = Moto::client()
        .caller_identity(&moto.endpoint(), minted.signing_key())
        .await
        .unwrap();
    assert!(id.arn.contains(":assumed-role/"), "{}", id.arn);
    assert_eq!(daemon.terminate().code(), Some(0));
}

#[tokio::test]
async fn rotate_refuses_when_the_user_has_a_second_key_of_its_own() {
    let moto = Moto::shared();
    let setup = Setup::new();
    let user = moto.key_rotating_user("two").await;
    let theirs = moto
        .iam(&[("Action", "CreateAccessKey"), ("UserName", &user.name)])
        .await;
    let theirs = crate::support::moto::xml_text(&theirs, "AccessKeyId");
    setup.write_aws_config(&format!("[profile dev]\nendpoint_url = {}\n", moto.url));
    setup.store_key("dev", &user.key);
    let keys_before = moto.admin_access_keys(&user.name).await;

    let out = setup.cli(&["rotate", "dev"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&theirs)
            && err.contains("already has a second access key")
            && err.contains("never deletes a key it did not make")
            && err.contains("aws iam delete-access-key"),
        "{err}"
    );
    assert_eq!(moto.admin_access_keys(&user.name).await, keys_before);
    assert_eq!(moto.created_access_keys(&user.name).await.len(), 2);
    let key = keyring(&setup).await.get_key("dev").await.unwrap();
    assert_eq!(key.access_key_id, user.key.access_key_id);
    assert!(
        keyring(&setup)
            .await
            .get_rotation("dev")
            .await
            .unwrap()
            .is_none()
    );
}

/// The rotation of `dev` through a proxy in front of the shared moto.
struct Proxied {
    moto: Moto,
    proxy: StsProxy,
    setup: Setup,
    user: User,
}

impl Proxied {
    async fn new(prefix: &str) -> Proxied {
        let moto = Moto::shared();
        let proxy = StsProxy::start(&moto.url).await;
        let setup = Setup::new();
        let user = moto.key_rotating_user(prefix).await;
        setup.write_aws_config(&format!(
            "[profile dev]\nregion = us-east-1\nendpoint_url = {}\n",
            proxy.url()
        ));
        setup.store_key("dev", &user.key);
        Proxied {
            moto,
            proxy,
            setup,
            user,
        }
    }

    fn spawn_rotate(&self) -> Child {
        self.setup
            .command(&["rotate", "dev"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `rotate`, holds the `n`-th `action` call, kills the CLI (SIGKILL) while it waits,
    /// then lets the call proceed as `release` says. Returns what the CLI printed.
    async fn kill_at(&self, action: &str, n: usize, release: Mode) -> String {
        self.proxy.hold_nth(action, n);
        let mut child = self.spawn_rotate();
        let arrived = self
            .proxy
            .wait_count(action, n, Duration::from_secs(30))
            .await;
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            arrived,
            "the CLI never sent {action} #{n}: {}",
            stderr(&out)
        );
        assert!(!out.status.success());
        self.proxy.release(release);
        stderr(&out)
    }

    /// After a kill: the keyring's key works and IAM has at most two keys; returns the key ids
    /// IAM lists.
    async fn assert_safe(&self) -> Vec<String> {
        stored_key_works(&self.setup, &self.moto, "dev", &self.user).await;
        let keys = self.moto.admin_access_keys(&self.user.name).await;
        assert!(keys.len() <= 2, "more than two keys: {keys:?}");
        keys.into_iter().map(|(id, _)| id).collect()
    }

    /// A second run completes the rotation; returns its stderr.
    async fn rerun_completes(&self) -> String {
        let out = self.setup.cli(&["rotate", "dev"]);
        let err = stderr(&out);
        assert!(out.status.success(), "the rerun failed: {err}");
        let new = assert_rotated(&self.setup, &self.moto, &self.user, &stdout(&out)).await;
        assert_no_secret(&err, &[&self.user.key, &new]);
        err
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_killed_while_listing_keys_changes_nothing() {
    let p = Proxied::new("k1").await;
    p.kill_at("ListAccessKeys", 1, Mode::Forward).await;
    assert_eq!(
        p.assert_safe().await,
        vec![p.user.key.access_key_id.clone()]
    );
    assert!(
        keyring(&p.setup)
            .await
            .get_rotation("dev")
            .await
            .unwrap()
            .is_none()
    );
    let err = p.rerun_completes().await;
    assert!(!err.contains("interrupted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rotate_killed_after_the_record_before_create_reaches_iam() {
    let p = Proxied::new("k2").await;
    p.kill_at("CreateAccessKey", 1, Mode::Close).await;
    assert_eq!(
        p.assert_safe().await,
        vec![p.user.key.access_key_id.clone()]
    );
    let record = keyring(&p.setup).await.get_rotation("dev").await.unwrap();
    let record = record.expect("the record was written before CreateAccessKey");
    assert_eq!(record.old_access_key_id, p.user.key.access_key_id);
    assert!(record.new_key.is_none());
    let err = p.rerun_completes().await;
    assert!(
        err.contains("found an interrupted rotation of `dev`")
            && err.contains("the interrupted rotation created no key"),
        "{err}"
    );
    assert_eq!(p.moto.created_access_keys(&p.user.name).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_killed_during_create_deletes_the_orphan_key_on_rerun() {
    let p = Proxied::new("k3").await;
    p.kill_at("CreateAccessKey", 1, Mode::Forward).await;
    // IAM made the key; its answer (and secret) went nowhere.
    wait_keys(&p.moto, &p.user.name, 2).await;
    let listed = p.assert_safe().await;
    let orphan = listed
        .iter()
        .find(|id| **id != p.user.key.access_key_id)
        .unwrap()
        .clone();
    let err = p.rerun_completes().await;
    assert!(
        err.contains(&format!("deleted {orphan} in IAM"))
            && err.contains("its secret never reached credvend"),
        "{err}"
    );
    // Created: the old key, the orphan, the new key; only the new key is left.
    assert_eq!(p.moto.created_access_keys(&p.user.name).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_killed_while_verifying_the_pending_key_finishes_with_it() {
    let p = Proxied::new("k4").await;
    // GetCallerIdentity #1 checks the stored key; #2 verifies the new, pending one.
    p.kill_at("GetCallerIdentity", 2, Mode::Forward).await;
    let listed = p.assert_safe().await;
    assert_eq!(listed.len(), 2);
    let record = keyring(&p.setup).await.get_rotation("dev").await.unwrap();
    let pending = record.and_then(|r| r.new_key).expect("the pending key");
    assert!(listed.contains(&pending.access_key_id));
    let err = p.rerun_completes().await;
    assert!(
        err.contains(&format!("STS accepts {}", pending.access_key_id)),
        "{err}"
    );
    let stored = keyring(&p.setup).await.get_key("dev").await.unwrap();
    assert_eq!(stored.access_key_id, pending.access_key_id);
    assert_eq!(p.moto.created_access_keys(&p.user.name).await.len(), 2);
}

/// IAM is eventually consistent: STS may not know a new key for seconds. When the verification
/// of the new key is answered `InvalidClientTokenId` (injected once by the proxy), `rotate` says
/// so, asks again, and completes with the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rotate_waits_for_the_new_key_to_propagate() {
    let p = Proxied::new("k7").await;
    // GetCallerIdentity #1 checks the stored key; #2 verifies the new one.
    p.proxy.hold_nth("GetCallerIdentity", 2);
    let child = p.spawn_rotate();
    assert!(
        p.proxy
            .wait_count("GetCallerIdentity", 2, Duration::from_secs(30))
            .await
    );
    p.proxy.release(Mode::InvalidToken);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("(IAM propagation); asking again in"), "{err}");
    assert_eq!(p.proxy.count("GetCallerIdentity"), 3, "{err}");
    let new = assert_rotated(&p.setup, &p.moto, &p.user, &stdout(&out)).await;
    assert!(
        err.contains(&format!("STS accepts {}", new.access_key_id)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rotate_killed_after_storing_the_new_key_before_delete_reaches_iam() {
    let p = Proxied::new("k5").await;
    p.kill_at("DeleteAccessKey", 1, Mode::Close).await;
    let listed = p.assert_safe().await;
    assert_eq!(listed.len(), 2, "the old key is not deleted yet");
    let stored = keyring(&p.setup).await.get_key("dev").await.unwrap();
    assert_ne!(
        stored.access_key_id, p.user.key.access_key_id,
        "the new key is stored"
    );
    let err = p.rerun_completes().await;
    assert!(
        err.contains(&format!(
            "deleted the old key {} in IAM",
            p.user.key.access_key_id
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_killed_during_delete_finds_the_old_key_gone_on_rerun() {
    let p = Proxied::new("k6").await;
    p.kill_at("DeleteAccessKey", 1, Mode::Forward).await;
    wait_keys(&p.moto, &p.user.name, 1).await;
    let listed = p.assert_safe().await;
    assert_ne!(listed, vec![p.user.key.access_key_id.clone()]);
    let err = p.rerun_completes().await;
    assert!(err.contains("was already deleted in IAM"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_never_deletes_a_key_made_by_hand_during_the_rotation() {
    let p = Proxied::new("hand").await;
    p.proxy.hold_nth("CreateAccessKey", 1);
    let child = p.spawn_rotate();
    assert!(
        p.proxy
            .wait_count("CreateAccessKey", 1, Duration::from_secs(30))
            .await
    );
    // While credvend's CreateAccessKey waits, the user makes a second key by hand.
    let theirs = p
        .moto
        .iam(&[("Action", "CreateAccessKey"), ("UserName", &p.user.name)])
        .await;
    let theirs = crate::support::moto::xml_text(&theirs, "AccessKeyId");
    p.proxy.release(Mode::Forward);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("LimitExceeded") && err.contains("two access keys"),
        "{err}"
    );
    let mut want = vec![
        (p.user.key.access_key_id.clone(), "Active".to_owned()),
        (theirs.clone(), "Active".to_owned()),
    ];
    want.sort();
    assert_eq!(p.moto.admin_access_keys(&p.user.name).await, want);
    assert!(
        keyring(&p.setup)
            .await
            .get_rotation("dev")
            .await
            .unwrap()
            .is_none()
    );
    // A rerun stops before creating anything, naming the user's key.
    let out = p.setup.cli(&["rotate", "dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&theirs), "{}", stderr(&out));
    assert_eq!(p.moto.admin_access_keys(&p.user.name).await, want);
    stored_key_works(&p.setup, &p.moto, "dev", &p.user).await;
}

/// With an `mfa_serial`, IAM calls are signed with the MFA session cached in the keyring and
/// STS checks with the keys themselves. moto with authentication on refuses credentials from its
/// own GetSessionToken, so this runs against a private moto with authentication off (hence the
/// name) and checks the signatures on the wire through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_signs_iam_calls_with_the_mfa_session_auth_off_moto() {
    let private = PrivateMoto::start(false);
    let moto = private.moto.clone();
    let proxy = StsProxy::start(&moto.url).await;
    let setup = Setup::new();
    let user = moto.key_rotating_user("mfa").await;
    setup.write_aws_config(&format!(
        "[profile dev]\nregion = us-east-1\nendpoint_url = {}\n\
         mfa_serial = arn:aws:iam::123456789012:mfa/dev\n",
        proxy.url()
    ));
    setup.store_key("dev", &user.key);

    let out = setup.cli(&["rotate", "dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `credvend login dev` first"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        proxy.requests().len(),
        0,
        "nothing was sent without a session"
    );

    let session = credvend::creds::TemporaryCredentials {
        access_key_id: "ASIAMFASESSIONEXAMPLE".into(),
        secret_access_key: SecretString::from("mfa-session-secret".to_owned()),
        session_token: Some(SecretString::from("mfa-session-token".to_owned())),
        expiration: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        account_id: None,
        arn: None,
        packed_policy_size: None,
    };
    keyring(&setup)
        .await
        .put_session("dev", &session)
        .await
        .unwrap();
    let out = setup.cli(&["rotate", "dev"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("signing IAM calls with the MFA session"),
        "{err}"
    );
    let new = keyring(&setup).await.get_key("dev").await.unwrap();
    assert_eq!(stdout(&out).trim(), new.access_key_id);
    assert_eq!(
        moto.admin_access_keys(&user.name).await,
        vec![(new.access_key_id.clone(), "Active".to_owned())]
    );
    let requests = proxy.requests();
    for action in ["ListAccessKeys", "CreateAccessKey", "DeleteAccessKey"] {
        let (_, head) = requests.iter().find(|(a, _)| a == action).unwrap();
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("credential=asiamfasessionexample/")
                && head.contains("x-amz-security-token: mfa-session-token"),
            "{action} not signed with the session: {head}"
        );
    }
    let checks: Vec<String> = requests
        .iter()
        .filter(|(a, _)| a == "GetCallerIdentity")
        .map(|(_, h)| h.to_ascii_lowercase())
        .collect();
    assert_eq!(checks.len(), 2);
    assert!(checks[0].contains(&format!(
        "credential={}/",
        user.key.access_key_id.to_ascii_lowercase()
    )));
    assert!(checks[1].contains(&format!(
        "credential={}/",
        new.access_key_id.to_ascii_lowercase()
    )));
    assert!(checks.iter().all(|h| !h.contains("x-amz-security-token")));
    let _ = keyring(&setup).await.delete_session("dev").await;
}
