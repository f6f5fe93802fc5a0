//! The STS client's transport: HTTPS with a private CA through `ca_bundle` / `AWS_CA_BUNDLE`
//! (and refusal of an unknown issuer), and the proxy variables (`HTTP_PROXY`, `HTTPS_PROXY` with
//! CONNECT, `NO_PROXY`). moto sits behind a TLS front and a forward proxy
//! (tests/it/support/net_helper.py) that relay bytes unchanged.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::support::daemon::{Setup, stderr};
use crate::support::moto::{Moto, venv_bin};

const HELPER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/support/net_helper.py"
);

/// A running net_helper.py.
pub(crate) struct Helper {
    child: Child,
    /// Its listening port.
    pub(crate) port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    /// Starts `net_helper.py ARGS` and waits for its ready line.
    pub(crate) fn start(args: &[&str]) -> Helper {
        let mut child = Command::new(venv_bin("python"))
            .arg(HELPER)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .strip_prefix("ready ")
            .expect("ready line")
            .parse()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Helper { child, port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (bounded) until a line equal to `want` was printed.
    fn saw(&self, want: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.lines().iter().any(|l| l == want) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a certificate for localhost / 127.0.0.1 signed by it:
/// (ca.pem, server.pem, server.key).
pub(crate) fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=credvend test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// The port of `moto`'s URL.
pub(crate) fn moto_port(moto: &Moto) -> String {
    moto.url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_bundle_trusts_a_private_ca_and_an_unknown_issuer_is_refused() {
    let moto = Moto::shared();
    let user = moto.user("tls").await;
    let setup = Setup::new();
    let (ca, cert, key) = private_ca(setup.home());
    let front = Helper::start(&[
        "tls-front",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        &moto_port(&moto),
    ]);
    let endpoint = format!("https://localhost:{}", front.port);
    let not_pem = setup.home().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    setup.write_aws_config(&format!(
        "[profile trusted]\nendpoint_url = {endpoint}\nca_bundle = {}\n\
         [profile system]\nendpoint_url = {endpoint}\n\
         [profile broken]\nendpoint_url = {endpoint}\nca_bundle = {}\n",
        ca.display(),
        not_pem.display()
    ));
    for p in ["trusted", "system", "broken"] {
        setup.store_key(p, &user.key);
    }
    let out = setup.cli(&["credential-process", "trusted"]);
    assert!(out.status.success(), "TLS with ca_bundle: {}", stderr(&out));

    let out = setup.cli(&["credential-process", "system"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );

    let out = setup
        .command(&["credential-process", "system"])
        .env("AWS_CA_BUNDLE", &ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "AWS_CA_BUNDLE: {}", stderr(&out));

    let out = setup.cli(&["credential-process", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds no certificates"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_are_honoured() {
    let moto = Moto::shared();
    let user = moto.user("px").await;
    let proxy = Helper::start(&["proxy"]);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let base = Setup::new();
    let (ca, cert, key) = private_ca(base.home());
    let front = Helper::start(&[
        "tls-front",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        &moto_port(&moto),
    ]);
    base.write_aws_config(&format!(
        "[profile plain]\nendpoint_url = {}\n[profile tls]\nendpoint_url = https://localhost:{}\nca_bundle = {}\n",
        moto.url,
        front.port,
        ca.display()
    ));
    base.store_key("plain", &user.key);
    base.store_key("tls", &user.key);
    let run = |profile: &str, env: &[(&str, &str)]| {
        let mut cmd = base.command(&["credential-process", profile]);
        cmd.env("NO_PROXY", "");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{profile} {env:?}: {}", stderr(&out));
    };
    run("plain", &[("HTTP_PROXY", &proxy_url)]);
    assert!(
        proxy.saw(&format!("FORWARD 127.0.0.1:{}", moto_port(&moto))),
        "{:?}",
        proxy.lines()
    );
    run("tls", &[("HTTPS_PROXY", &proxy_url)]);
    assert!(
        proxy.saw(&format!("CONNECT localhost:{}", front.port)),
        "{:?}",
        proxy.lines()
    );
    // The proxy prints before relaying, so every line of the runs above is in by now.
    let seen = proxy.lines().len();
    run(
        "plain",
        &[
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    run(
        "tls",
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "localhost")],
    );
    assert_eq!(
        proxy.lines().len(),
        seen,
        "NO_PROXY bypasses the proxy: {:?}",
        proxy.lines()
    );
}
