//! Issue 3 at the command line: `add`, `import`, `list`, `remove` against the real kernel keyring
//! and a real GNOME Keyring, with STS calls to moto (auth on) signed with the stored keys.

use std::path::Path;

use crate::support::daemon::{Setup, stderr, stdout};
use crate::support::keyring::{SessionBus, in_own_process};
use crate::support::moto::{Moto, secret_of};

/// Every file under `dir`, recursively, whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// add (verified by moto) -> list -> an STS call signed with the stored key -> remove, with
/// each step a separate process.
async fn add_list_use_remove(setup: &Setup) {
    let moto = Moto::shared();
    let user = moto.user("k").await;
    setup.write_aws_config(&format!(
        "[profile dev]\nregion = us-east-1\nendpoint_url = {}\n",
        moto.url
    ));
    let secret = secret_of(&user.key);
    let out = setup.cli_stdin(
        &[
            "add",
            "dev",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
        ],
        &format!("{secret}\n"),
    );
    assert!(out.status.success(), "add: {}", stderr(&out));
    setup.remember("dev");
    assert!(
        stderr(&out).contains(&format!("verified {}", user.arn)),
        "{}",
        stderr(&out)
    );

    let out = setup.cli(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dev = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "dev")
        .unwrap();
    assert_eq!(dev["has_keys"], true);
    assert!(!stdout(&out).contains(&secret) && !stderr(&out).contains(&secret));
    let text = setup.cli(&["list"]);
    assert!(!stdout(&text).contains(&secret) && !stderr(&text).contains(&secret));
    assert!(stdout(&text).contains("dev"));

    // A third process reads the key and signs GetSessionToken with it; moto checks the signature.
    let out = setup.cli(&["credential-process", "dev"]);
    assert!(out.status.success(), "credential-process: {}", stderr(&out));
    let creds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(creds["Version"], 1);
    assert!(
        creds["SessionToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_ne!(
        creds["AccessKeyId"],
        user.key.access_key_id.as_str(),
        "never the long-term key"
    );

    assert!(
        files_containing(setup.home(), &secret).is_empty(),
        "secret written to a file"
    );

    let out = setup.cli(&["remove", "dev"]);
    assert!(out.status.success(), "remove: {}", stderr(&out));
    let out = setup.cli(&["credential-process", "dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `credvend add dev`"),
        "{}",
        stderr(&out)
    );
    let out = setup.cli(&["remove", "dev"]);
    assert_eq!(out.status.code(), Some(1), "removing nothing is an error");
}

#[tokio::test]
async fn keyutils_add_list_use_remove() {
    add_list_use_remove(&Setup::new()).await;
}

#[test]
fn secret_service_add_list_use_remove() {
    in_own_process(module_path!(), "secret_service_add_list_use_remove", || {
        let bus = SessionBus::unlocked();
        let setup = Setup::new()
            .with_env("CREDVEND_KEYSTORE", "secret-service")
            .with_env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(add_list_use_remove(&setup));
        // The entry really lived in GNOME Keyring: secret-tool, another client, saw it while it
        // existed; after remove it is gone.
        let out = bus
            .client()
            .command("secret-tool")
            .args(["search", "service", &setup.service])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stdout).contains("dev"));
    });
}

#[tokio::test]
async fn add_refuses_overwrite_and_unverifiable_keys() {
    let moto = Moto::shared();
    let user = moto.user("k").await;
    let setup = Setup::new();
    setup.write_aws_config(&format!("[profile dev]\nendpoint_url = {}\n", moto.url));
    let secret = secret_of(&user.key);
    // A wrong secret fails verification and nothing is stored.
    let out = setup.cli_stdin(
        &[
            "add",
            "dev",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
        ],
        "wrong-secret\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("SignatureDoesNotMatch"),
        "{}",
        stderr(&out)
    );
    // The diagnosis says what was checked (the clock, from STS's Date header; the region and
    // endpoint signed for) and what is left: the secret.
    assert!(
        stderr(&out).contains("STS knows the access key id but not the signature")
            && stderr(&out).contains("the clock is fine (")
            && stderr(&out).contains("signed for region `us-east-1`")
            && stderr(&out).contains("So the secret is probably wrong"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--no-verify"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong-secret"));
    let list: serde_json::Value =
        serde_json::from_slice(&setup.cli(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list["profiles"][0]["has_keys"], false);

    // --from-env works, and a second add needs --force.
    let out = setup
        .command(&["add", "dev", "--from-env"])
        .env("AWS_ACCESS_KEY_ID", &user.key.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    setup.remember("dev");
    let out = setup.cli_stdin(
        &[
            "add",
            "dev",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
        ],
        &format!("{secret}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = setup.cli_stdin(
        &[
            "add",
            "dev",
            "--access-key-id",
            &user.key.access_key_id,
            "--secret-stdin",
            "--force",
        ],
        &format!("{secret}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Temporary keys and usage mistakes.
    let out = setup.cli_stdin(
        &[
            "add",
            "tmp",
            "--access-key-id",
            "ASIAIOSFODNN7EXAMPLE",
            "--secret-stdin",
            "--no-verify",
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("temporary"), "{}", stderr(&out));
    let out = setup.cli(&["add", "dev", "--secret-stdin"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "usage error: --secret-stdin needs --access-key-id"
    );
    let out = setup.cli(&["add", "other"]);
    assert_eq!(out.status.code(), Some(1), "no terminal to prompt on");
    assert!(stderr(&out).contains("--secret-stdin"), "{}", stderr(&out));
}

/// `import --remove` keeps every byte except the moved keys: comments, other profiles, unrelated
/// keys, temporary credentials, CRLF-free layout, no trailing newline.
#[tokio::test]
async fn import_remove_round_trip_is_byte_identical_except_moved_keys() {
    let moto = Moto::shared();
    let a = moto.user("imp").await;
    let b = moto.user("imp").await;
    let setup = Setup::new();
    setup.write_aws_config(&format!(
        "[profile a]\nendpoint_url = {m}\n[profile b]\nendpoint_url = {m}\n",
        m = moto.url
    ));
    let (sa, sb) = (secret_of(&a.key), secret_of(&b.key));
    let before = format!(
        "# my credentials\n\
         ; written by hand\n\
         [a]\n\
         aws_access_key_id = {}\n\
         # the secret\n\
         aws_secret_access_key={sa}\n\
         region = eu-west-1\n\
         \n\
         [temp]\n\
         aws_access_key_id = ASIAIOSFODNN7EXAMPLE\n\
         aws_secret_access_key = tempsecret\n\
         aws_session_token = tok\n\
         \n\
         [b]\n\
         AWS_Access_Key_ID = {}\n\
         output = json\n\
         aws_secret_access_key = {sb} ; trailing comment\n\
         [empty]",
        a.key.access_key_id, b.key.access_key_id
    );
    std::fs::write(setup.aws_credentials_path(), &before).unwrap();
    let out = setup.cli(&["import", "--remove"]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    setup.remember("a");
    setup.remember("b");
    assert!(stderr(&out).contains("skipped `temp`"), "{}", stderr(&out));
    let after = std::fs::read_to_string(setup.aws_credentials_path()).unwrap();
    let expected = "# my credentials\n\
         ; written by hand\n\
         [a]\n\
         # the secret\n\
         region = eu-west-1\n\
         \n\
         [temp]\n\
         aws_access_key_id = ASIAIOSFODNN7EXAMPLE\n\
         aws_secret_access_key = tempsecret\n\
         aws_session_token = tok\n\
         \n\
         [b]\n\
         output = json\n\
         [empty]";
    assert_eq!(after, expected);
    // The keys work from the keyring, and no file under HOME or the state dir holds them.
    for p in ["a", "b"] {
        let out = setup.cli(&["credential-process", p]);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
    }
    for secret in [&sa, &sb] {
        assert!(
            files_containing(setup.home(), secret).is_empty(),
            "a secret is still in a file"
        );
    }
    let backup = setup
        .aws_credentials_path()
        .with_file_name("credentials.credvend-backup");
    let backup_text = std::fs::read_to_string(&backup).unwrap();
    assert!(backup_text.contains("# the secret") && backup_text.contains("moved to the keyring"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A credentials file that is a symlink (as dotfile managers make it): `import --remove` edits
/// the file the link points to and leaves the link in place, so no copy of the key survives.
#[tokio::test]
async fn import_remove_through_a_symlink_edits_its_target() {
    let setup = Setup::new();
    let target = setup.home().join("dotfiles-aws-credentials");
    std::fs::write(
        &target,
        "[x]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = s3cr3t-value\n",
    )
    .unwrap();
    let _ = std::fs::remove_file(setup.aws_credentials_path());
    std::os::unix::fs::symlink(&target, setup.aws_credentials_path()).unwrap();
    let out = setup.cli(&["import", "--remove"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.remember("x");
    let link = std::fs::symlink_metadata(setup.aws_credentials_path()).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "[x]\n");
    assert!(files_containing(setup.home(), "s3cr3t-value").is_empty());
}

/// The backup that `import --remove` writes blanks every secret line it removes: overridden and
/// duplicate `aws_secret_access_key` lines and session tokens too, not only the one in effect.
#[tokio::test]
async fn import_remove_backup_holds_no_secret_line() {
    let setup = Setup::new();
    std::fs::write(
        setup.aws_credentials_path(),
        "[x]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = first-secret\n\
         aws_secret_access_key = duplicate-secret\n[other]\nregion = x\n\
         [x]\naws_secret_access_key = the-one-in-effect\n",
    )
    .unwrap();
    let out = setup.cli(&["import", "--remove"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.remember("x");
    for secret in ["first-secret", "duplicate-secret", "the-one-in-effect"] {
        assert!(
            files_containing(setup.home(), secret).is_empty(),
            "{secret} survives somewhere"
        );
    }
    let backup =
        std::fs::read_to_string(setup.home().join(".aws/credentials.credvend-backup")).unwrap();
    assert_eq!(
        backup.matches("(moved to the keyring by credvend)").count(),
        3,
        "{backup}"
    );
}

/// A full disk while `import --remove` writes: the command fails naming the file, the
/// credentials file is unchanged, and no temporary file is left behind. (A private mount
/// namespace with a full 64 KiB tmpfs holds the files.)
#[test]
fn import_remove_on_a_full_disk_leaves_no_temporary_file() {
    let setup = Setup::new();
    let dir = setup.home().join("small");
    std::fs::create_dir(&dir).unwrap();
    let creds = dir.join("credentials");
    let text =
        "[x]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = s3cr3t-value\n";
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {d} && printf '%s' \"$TEXT\" > {c} && \
         (dd if=/dev/zero of={d}/fill bs=1k count=1000 2>/dev/null; true) && \
         {bin} import --remove; echo \"exit=$?\"; cat {c}; echo '--'; ls -A {d}",
        d = dir.display(),
        c = creds.display(),
        bin = crate::support::daemon::BIN,
    );
    let mut cmd = std::process::Command::new("unshare");
    setup.apply_env(&mut cmd);
    let out = cmd
        .args(["-m", "sh", "-c", &script])
        .env("TEXT", text)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .output()
        .unwrap();
    setup.remember("x");
    let shown = stdout(&out);
    assert!(shown.contains("exit=1"), "{shown}\n{}", stderr(&out));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let (file, listing) = shown.split_once("--").unwrap();
    assert!(file.contains(text), "the file is unchanged: {file}");
    let names: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(
        names,
        ["credentials", "fill"],
        "no temporary file: {names:?}"
    );
}

#[tokio::test]
async fn import_without_remove_keeps_the_file_and_names_profiles() {
    let setup = Setup::new();
    let text =
        "[x]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = s3cr3t-value\n";
    std::fs::write(setup.aws_credentials_path(), text).unwrap();
    let out = setup.cli(&["import", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`nope`"), "{}", stderr(&out));
    let out = setup.cli(&["import", "x"]);
    assert!(out.status.success(), "{}", stderr(&out));
    setup.remember("x");
    assert_eq!(
        std::fs::read_to_string(setup.aws_credentials_path()).unwrap(),
        text
    );
    assert!(stderr(&out).contains("import --remove"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cr3t-value"));
}

#[test]
fn every_command_has_help_that_explains_it() {
    let setup = Setup::new();
    let top = setup.cli(&["--help"]);
    assert!(top.status.success());
    let top = stdout(&top);
    for (cmd, needle) in [
        ("add", "--secret-stdin"),
        ("import", "--remove"),
        ("list", "--json"),
        ("remove", "PROFILE"),
        ("serve", "credvend ready"),
        ("status", "--json"),
        ("metrics", "OpenMetrics"),
        ("login", "--code-stdin"),
        ("refresh", "PROFILE"),
        ("lock", "PROFILE"),
        ("env", "--container"),
        ("exec", "CMD"),
        ("credential-process", "credential_process"),
        ("install-service", "--dry-run"),
    ] {
        assert!(top.contains(cmd), "top-level help lists {cmd}");
        let out = setup.cli(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        let text = stdout(&out);
        assert!(
            text.contains(needle),
            "{cmd} --help mentions {needle}:\n{text}"
        );
        assert!(
            text.lines().next().is_some_and(|l| l.len() > 15),
            "{cmd} --help starts with a description"
        );
    }
    assert_eq!(setup.cli(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn absent_secret_service_is_a_named_error_at_the_cli() {
    in_own_process(
        module_path!(),
        "absent_secret_service_is_a_named_error_at_the_cli",
        || {
            let setup = Setup::new().with_env("CREDVEND_KEYSTORE", "secret-service");
            let started = std::time::Instant::now();
            let out = setup.cli(&["remove", "dev"]);
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            assert_eq!(out.status.code(), Some(1));
            let err = stderr(&out);
            assert!(
                err.contains("no D-Bus session bus") && err.contains("--keystore keyutils"),
                "{err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        },
    );
}

#[test]
fn locked_secret_service_is_a_named_error_at_the_cli() {
    in_own_process(
        module_path!(),
        "locked_secret_service_is_a_named_error_at_the_cli",
        || {
            let bus = SessionBus::locked();
            let setup = Setup::new()
                .with_env("CREDVEND_KEYSTORE", "secret-service")
                .with_env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
            let started = std::time::Instant::now();
            let out = setup.cli_stdin(
                &[
                    "add",
                    "dev",
                    "--access-key-id",
                    "AKIAIOSFODNN7EXAMPLE",
                    "--secret-stdin",
                    "--no-verify",
                ],
                "x\n",
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            assert_eq!(out.status.code(), Some(1));
            assert!(
                stderr(&out).contains("keyring is locked"),
                "{}",
                stderr(&out)
            );
        },
    );
}
