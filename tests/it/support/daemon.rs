//! Running the real `credvend` binary: an isolated home (AWS config files, state directory,
//! keyutils entries under a service name of its own), the CLI, and `credvend serve` with its
//! ready line parsed (listeners bind port 0).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credvend::creds::LongTermKey;
use secrecy::ExposeSecret;
use tempfile::TempDir;

use super::moto::{Moto, User};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_credvend");

/// An isolated environment for credvend processes.
pub struct Setup {
    /// The home directory (everything lives under it).
    pub dir: TempDir,
    /// Keyring service name of this setup (kernel keyring).
    pub service: String,
    stored: Mutex<Vec<String>>,
    extra_env: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// A fresh home with empty AWS files and a private state directory.
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("credvend-it")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/config"), "").unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), "").unwrap();
        Setup {
            dir,
            service: super::unique("it"),
            stored: Mutex::new(Vec::new()),
            extra_env: Vec::new(),
        }
    }

    /// Adds an environment variable for every process started from this setup.
    pub fn with_env(mut self, k: &str, v: &str) -> Setup {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The AWS config file.
    pub fn aws_config_path(&self) -> PathBuf {
        self.dir.path().join(".aws/config")
    }

    /// The AWS credentials file.
    pub fn aws_credentials_path(&self) -> PathBuf {
        self.dir.path().join(".aws/credentials")
    }

    /// The daemon config file.
    pub fn toml_path(&self) -> PathBuf {
        self.dir.path().join("credvend.toml")
    }

    /// Writes the AWS config file.
    pub fn write_aws_config(&self, text: &str) {
        std::fs::write(self.aws_config_path(), text).unwrap();
    }

    /// Appends to the AWS config file.
    pub fn append_aws_config(&self, text: &str) {
        let mut s = std::fs::read_to_string(self.aws_config_path()).unwrap();
        s.push_str(text);
        self.write_aws_config(&s);
    }

    /// Writes the daemon config.
    pub fn write_toml(&self, text: &str) {
        std::fs::write(self.toml_path(), text).unwrap();
    }

    /// Applies this setup's environment to `cmd` (and nothing of the caller's AWS_* variables).
    pub fn apply_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("AWS_CONFIG_FILE", self.aws_config_path())
            .env("AWS_SHARED_CREDENTIALS_FILE", self.aws_credentials_path())
            .env("CREDVEND_STATE_DIR", self.state_dir())
            .env("CREDVEND_KEYSTORE", "keyutils")
            .env("CREDVEND_KEYRING_SERVICE", &self.service)
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("CREDVEND_LOG", "credvend=debug,info")
            .env("NO_PROXY", "*");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// A `credvend` command in this setup.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        self.apply_env(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// Runs `credvend ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, "")
    }

    /// Runs `credvend ARGS` with `stdin` as its standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Stores `key` for `profile` with `credvend add` (no STS check), remembering to delete it.
    pub fn store_key(&self, profile: &str, key: &LongTermKey) {
        let out = self.cli_stdin(
            &[
                "add",
                profile,
                "--access-key-id",
                &key.access_key_id,
                "--secret-stdin",
                "--no-verify",
            ],
            &format!("{}\n", key.secret_access_key.expose_secret()),
        );
        assert!(
            out.status.success(),
            "add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.stored.lock().unwrap().push(profile.to_owned());
    }

    /// Remembers that `profile` has keyring entries to delete at the end.
    pub fn remember(&self, profile: &str) {
        self.stored.lock().unwrap().push(profile.to_owned());
    }

    /// A user and a role trusting it at `moto`, with the user's key stored for profile
    /// `base` and a profile `role` that assumes the role. Both profiles point at moto.
    pub async fn role_profile(&self, moto: &Moto) -> RoleProfile {
        let user = moto.user("u").await;
        let role_arn = moto.role("r", &[&user.arn], None).await;
        self.append_aws_config(&format!(
            "[profile base]\nregion = us-east-1\nendpoint_url = {m}\n\
             [profile role]\nregion = us-east-1\nendpoint_url = {m}\nrole_arn = {role_arn}\nsource_profile = base\n",
            m = moto.url
        ));
        self.store_key("base", &user.key);
        RoleProfile { user, role_arn }
    }

    /// The entry of `name` in `credvend status --json`, when the daemon answers and serves it.
    pub fn profile_status(&self, name: &str) -> Option<serde_json::Value> {
        self.profiles().into_iter().find(|p| p["name"] == name)
    }

    /// `credvend status --json` (`Null` when the daemon does not answer).
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.cli(&["status", "--json"]).stdout)
            .unwrap_or(serde_json::Value::Null)
    }

    /// The profiles `status --json` lists (none when the daemon does not answer).
    pub fn profiles(&self) -> Vec<serde_json::Value> {
        self.status_json()["profiles"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The names of the profiles `status --json` lists.
    pub fn profile_names(&self) -> Vec<String> {
        self.profiles()
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Polls `credvend status --json` (bounded, 30 s) until `pred` holds for profile `name`; the
    /// condition, not the time, is the synchronisation. Async, so that test-side servers on the
    /// same runtime (an STS proxy) keep running meanwhile. The one status poller of the suite.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_status_within(name, what, Duration::from_secs(30), pred)
            .await
    }

    /// [`Setup::wait_status`] with another bound, for conditions that take a known while (a
    /// token lifetime set short by the test).
    pub async fn wait_status_within(
        &self,
        name: &str,
        what: &str,
        bound: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + bound;
        loop {
            let entry = self.profile_status(name);
            if let Some(p) = &entry
                && pred(p)
            {
                return p.clone();
            }
            assert!(
                Instant::now() < deadline,
                "profile {name} never became {what}: {entry:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `credvend serve` with this setup's config and waits for the ready line.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    /// Starts `credvend serve` with extra arguments before `serve`.
    pub fn start_with(&self, global_args: &[&str]) -> Daemon {
        Daemon::spawn(self.serve_command(global_args), None)
    }

    /// Starts `credvend serve` with its stderr read slowly: `per_line` between lines, like a
    /// journal that cannot keep up.
    pub fn start_with_slow_log(&self, global_args: &[&str], per_line: Duration) -> Daemon {
        Daemon::spawn(self.serve_command(global_args), Some(per_line))
    }

    /// The `credvend [global_args] [--config FILE] serve` command of this setup.
    pub fn serve_command(&self, global_args: &[&str]) -> Command {
        let mut args: Vec<&str> = global_args.to_vec();
        let toml = self.toml_path();
        let toml = toml.to_str().unwrap();
        if self.toml_path().exists() {
            args.extend(["--config", toml]);
        }
        args.push("serve");
        self.command(&args)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let stored = std::mem::take(&mut *self.stored.lock().unwrap());
        for profile in stored {
            let _ = self.cli(&["remove", &profile]);
        }
    }
}

/// The role scenario of [`Setup::role_profile`].
pub struct RoleProfile {
    /// The IAM user whose key is stored for `base`.
    pub user: User,
    /// The role `role` assumes.
    pub role_arn: String,
}

impl RoleProfile {
    /// The role's name.
    pub fn role_name(&self) -> &str {
        self.role_arn.rsplit('/').next().unwrap()
    }
}

/// What `credvend serve` printed in its ready line.
#[derive(Clone, Debug)]
pub struct Ready {
    /// IMDS listeners.
    pub imds: Vec<SocketAddr>,
    /// ECS listener.
    pub ecs: Option<SocketAddr>,
    /// ECS-agent listener.
    pub ecs_agent: Option<SocketAddr>,
    /// Metrics listener.
    pub metrics: Option<SocketAddr>,
    /// Control socket.
    pub control: PathBuf,
}

/// A running `credvend serve`.
pub struct Daemon {
    child: Child,
    /// The ready line.
    pub ready: Ready,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn spawn(mut cmd: Command, slow: Option<Duration>) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(pause) = slow {
                    std::thread::sleep(pause);
                }
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let n = stdout.read_line(&mut line).unwrap();
        if n == 0 {
            let status = child.wait().unwrap();
            let _ = reader.join();
            panic!(
                "credvend serve exited ({status}) before its ready line:\n{}",
                log.lock().unwrap()
            );
        }
        std::thread::spawn(move || for _ in stdout.lines() {});
        let ready = parse_ready(&line);
        Daemon { child, ready, log }
    }

    /// The first IMDS listener.
    pub fn imds(&self) -> SocketAddr {
        self.ready.imds[0]
    }

    /// The ECS listener.
    pub fn ecs(&self) -> SocketAddr {
        self.ready.ecs.expect("an ECS listener")
    }

    /// The ECS-agent listener.
    pub fn ecs_agent(&self) -> SocketAddr {
        self.ready.ecs_agent.expect("an ECS agent listener")
    }

    /// The metrics listener.
    pub fn metrics(&self) -> SocketAddr {
        self.ready.metrics.expect("a metrics listener")
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Waits (bounded) until the log contains `needle`; the condition, not the time, is the
    /// synchronisation.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The first log line containing `needle`, waited for (bounded: 5 s); panics with the log
    /// when it never comes.
    pub fn log_line(&self, needle: &str) -> String {
        assert!(
            self.wait_for_log(needle, Duration::from_secs(5)),
            "no log line with {needle:?}:\n{}",
            self.log()
        );
        self.log()
            .lines()
            .find(|l| l.contains(needle))
            .expect("found above")
            .to_owned()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// Waits for the process to exit (after a signal sent by the test).
    pub fn wait(mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A [`Setup::wait_status`] predicate: the profile is in `phase`.
pub fn phase_is(phase: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |p| p["phase"] == phase
}

/// Parses `credvend ready imds=A[,B] ecs=C [ecs-agent=D] [metrics=E] control=P`.
pub fn parse_ready(line: &str) -> Ready {
    assert!(
        line.starts_with("credvend ready "),
        "not a ready line: {line:?}"
    );
    let mut imds = Vec::new();
    let mut ecs = None;
    let mut ecs_agent = None;
    let mut metrics = None;
    let mut control = PathBuf::new();
    for field in line.trim().split(' ').skip(2) {
        let (k, v) = field.split_once('=').unwrap();
        match k {
            "imds" if v != "none" => imds = v.split(',').map(|a| a.parse().unwrap()).collect(),
            "ecs" if v != "none" => ecs = Some(v.parse().unwrap()),
            "ecs-agent" => ecs_agent = Some(v.parse().unwrap()),
            "metrics" => metrics = Some(v.parse().unwrap()),
            "control" => control = PathBuf::from(v),
            _ => {}
        }
    }
    Ready {
        imds,
        ecs,
        ecs_agent,
        metrics,
        control,
    }
}

/// Text of a process's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Text of a process's stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
