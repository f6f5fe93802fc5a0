//! OS keyrings for the keystore tests: a private D-Bus session bus per test, with GNOME Keyring
//! unlocked, locked, without a default collection, or absent; and [`in_own_process`], which every
//! test using one must run in.
//!
//! The Secret Service backend finds its bus through `DBUS_SESSION_BUS_ADDRESS`, and libdbus reads
//! that variable once per process and keeps the answer (the crate cannot be handed an address).
//! So a test that talks to a bus of its own needs a process of its own: nextest gives it one, and
//! under plain `cargo test`, where tests share a process, [`in_own_process`] re-runs the test in a
//! fresh process of this binary. The fixtures refuse to start anywhere else.
//!
//! Nothing here touches the machine's own session: each bus has its own config with no service
//! activation, and GNOME Keyring gets a temporary HOME and XDG directories. Everything started is
//! killed on drop.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use dbus::blocking::Connection;
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
use tempfile::TempDir;

/// Set (to the test's name) in the process [`in_own_process`] starts.
const OWN_PROCESS: &str = "CREDVEND_TEST_OWN_PROCESS";

/// Runs `body` in a fresh process of this test binary that runs only this test: the test named
/// `test` in module `module` (pass `module_path!()`). In that process, runs `body` directly.
pub fn in_own_process(module: &str, test: &str, body: impl FnOnce()) {
    // module_path!() starts with the crate name, which libtest's test names do not.
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = if module.is_empty() {
        test.to_owned()
    } else {
        format!("{module}::{test}")
    };
    if std::env::var(OWN_PROCESS).as_deref() == Ok(name.as_str()) {
        return body();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS, &name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // Through print!, so libtest captures the child's output like the test's own.
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process ({}); its output is above",
        out.status,
    );
}

fn assert_own_process() {
    assert!(
        std::env::var_os(OWN_PROCESS).is_some(),
        "tests that start a session bus must run inside support::keyring::in_own_process: libdbus \
         keeps the first bus address a process uses"
    );
}

/// Sets or removes environment variables of this process.
fn set_env(vars: &[(&str, Option<&str>)]) {
    for (name, value) in vars {
        // SAFETY: this process runs a single test (in_own_process), which sets the environment
        // before anything in it reads the variables.
        unsafe {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }
}

const SECRETS: &str = "org.freedesktop.secrets";
const SECRETS_PATH: &str = "/org/freedesktop/secrets";
const SERVICE_IFACE: &str = "org.freedesktop.Secret.Service";
const COLLECTION_IFACE: &str = "org.freedesktop.Secret.Collection";
/// The password GNOME Keyring's login collection is created and unlocked with.
pub const PASSWORD: &str = "credvend-test-password";

/// What runs on a [`SessionBus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// GNOME Keyring with an unlocked default (login) collection.
    Unlocked,
    /// GNOME Keyring whose default collection exists but is locked.
    Locked,
    /// As `Locked`, on a desktop: an X display (Xvfb) and GNOME's prompter (gcr-prompter, started
    /// by D-Bus activation), so an unlock prompt really appears and waits for a user. This is
    /// where a client without a prompt limit hangs.
    LockedWithGuiPrompter,
    /// GNOME Keyring started without `--unlock` on an empty data directory: no default collection.
    NoDefaultCollection,
    /// A bus with no Secret Service provider at all.
    None,
}

/// A private session bus (and maybe GNOME Keyring), exported to this process as
/// `DBUS_SESSION_BUS_ADDRESS` while it lives.
pub struct SessionBus {
    /// The bus address, `unix:path=…`.
    pub address: String,
    dir: TempDir,
    dbus: Child,
    _dbus_stdout: BufReader<ChildStdout>,
    keyring: Option<Child>,
    xvfb: Option<Xvfb>,
}

impl SessionBus {
    /// A bus with an unlocked GNOME Keyring.
    pub fn unlocked() -> SessionBus {
        SessionBus::start(Provider::Unlocked)
    }

    /// A bus with a GNOME Keyring whose default collection is locked.
    pub fn locked() -> SessionBus {
        SessionBus::start(Provider::Locked)
    }

    /// A bus with no Secret Service provider.
    pub fn without_provider() -> SessionBus {
        SessionBus::start(Provider::None)
    }

    /// Starts the bus and the provider, waits until the provider answers, and exports the
    /// address to this process.
    pub fn start(provider: Provider) -> SessionBus {
        assert_own_process();
        let dir = tempfile::Builder::new()
            .prefix("credvend-bus")
            .tempdir()
            .unwrap();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.path().join("run"))
            .unwrap();
        let gui = provider == Provider::LockedWithGuiPrompter;
        let xvfb = gui.then(|| Xvfb::start(dir.path()));

        // Only the prompter can be activated (and only with a display): nothing else is started
        // on demand, not even the machine's own gnome-keyring.
        let services = dir.path().join("services");
        std::fs::create_dir(&services).unwrap();
        if gui {
            for name in [
                "org.gnome.keyring.SystemPrompter",
                "org.gnome.keyring.PrivatePrompter",
            ] {
                std::fs::write(
                    services.join(format!("{name}.service")),
                    format!("[D-BUS Service]\nName={name}\nExec={GCR_PROMPTER}\n"),
                )
                .unwrap();
            }
        }
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().join("bus").display(),
                services.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new("dbus-daemon");
        cmd.arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"]);
        // Activated services (the prompter) inherit the bus's environment.
        isolate(
            &mut cmd,
            dir.path(),
            xvfb.as_ref().map(|x| x.display.as_str()),
        );
        let mut dbus = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(dir.path(), "dbus-daemon.log"))
            .spawn()
            .expect("dbus-daemon is missing: install the dbus-daemon package (scripts/test does)");
        let mut dbus_stdout = BufReader::new(dbus.stdout.take().unwrap());
        let mut address = String::new();
        // dbus-daemon prints its address once it listens, or exits.
        dbus_stdout.read_line(&mut address).unwrap();
        let address = address.trim().to_owned();
        if address.is_empty() {
            let _ = dbus.kill();
            let _ = dbus.wait();
            panic!(
                "dbus-daemon did not start: {}",
                read_log(dir.path(), "dbus-daemon.log")
            );
        }

        let mut bus = SessionBus {
            address,
            dir,
            dbus,
            _dbus_stdout: dbus_stdout,
            keyring: None,
            xvfb,
        };
        if provider != Provider::None {
            bus.start_keyring(provider);
        }
        if matches!(provider, Provider::Locked | Provider::LockedWithGuiPrompter) {
            bus.lock_default_collection();
        }
        let runtime = bus.dir.path().join("run");
        set_env(&[
            ("DBUS_SESSION_BUS_ADDRESS", Some(bus.address.as_str())),
            ("XDG_RUNTIME_DIR", Some(runtime.to_str().unwrap())),
            ("DISPLAY", None),
            ("WAYLAND_DISPLAY", None),
        ]);
        bus
    }

    fn start_keyring(&mut self, provider: Provider) {
        let home = self.dir.path();
        let mut cmd = Command::new("gnome-keyring-daemon");
        cmd.args(["--foreground", "--components=secrets"]);
        if provider != Provider::NoDefaultCollection {
            cmd.arg("--unlock");
        }
        let display = self.xvfb.as_ref().map(|x| x.display.as_str());
        isolate(&mut cmd, self.dir.path(), display);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(log_file(home, "gnome-keyring.out"))
            .stderr(log_file(home, "gnome-keyring.log"))
            .spawn()
            .expect("gnome-keyring-daemon is missing: install gnome-keyring (scripts/test does)");
        {
            let mut stdin = child.stdin.take().unwrap();
            if provider != Provider::NoDefaultCollection {
                stdin.write_all(PASSWORD.as_bytes()).unwrap();
            }
        } // EOF: gnome-keyring reads the password up to it.
        self.keyring = Some(child);
        self.wait_for_provider(provider != Provider::NoDefaultCollection);
    }

    /// Polls (bounded) until `org.freedesktop.secrets` is owned and, if asked, the `default`
    /// alias names a collection. Readiness only: the tests themselves never wait on timers.
    fn wait_for_provider(&mut self, want_default: bool) {
        let conn = self.connect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.provider_ready(&conn, want_default) {
                return;
            }
            if let Some(status) = self.keyring.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "gnome-keyring-daemon exited ({status}): {}",
                    read_log(self.dir.path(), "gnome-keyring.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not answer on the bus within 15 s: {}",
                read_log(self.dir.path(), "gnome-keyring.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn provider_ready(&self, conn: &Connection, want_default: bool) -> bool {
        let bus = conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(2),
        );
        let owned: Result<(bool,), _> =
            bus.method_call("org.freedesktop.DBus", "NameHasOwner", (SECRETS,));
        if !matches!(owned, Ok((true,))) {
            return false;
        }
        !want_default || self.default_collection(conn).is_some()
    }

    /// A new connection to this bus.
    pub fn connect(&self) -> Connection {
        let mut channel = dbus::channel::Channel::open_private(&self.address).unwrap();
        channel.register().unwrap();
        Connection::from(channel)
    }

    fn default_collection(&self, conn: &Connection) -> Option<dbus::Path<'static>> {
        let service = conn.with_proxy(SECRETS, SECRETS_PATH, Duration::from_secs(2));
        let (path,): (dbus::Path<'static>,) = service
            .method_call(SERVICE_IFACE, "ReadAlias", ("default",))
            .ok()?;
        (&*path != "/").then_some(path)
    }

    /// Locks the default collection through the Secret Service's own `Lock` call (no prompt).
    pub fn lock_default_collection(&self) {
        let conn = self.connect();
        let path = self
            .default_collection(&conn)
            .expect("no default collection");
        let service = conn.with_proxy(SECRETS, SECRETS_PATH, Duration::from_secs(2));
        let (_locked, prompt): (Vec<dbus::Path<'static>>, dbus::Path<'static>) = service
            .method_call(SERVICE_IFACE, "Lock", (vec![path],))
            .unwrap();
        assert_eq!(&*prompt, "/", "GNOME Keyring asked for a prompt to lock");
        assert!(
            self.default_collection_locked(),
            "the collection did not lock"
        );
    }

    /// Unlocks the default collection with the login password, as a desktop session does at
    /// login (GNOME Keyring's private `UnlockWithMasterPassword`, which Seahorse uses too: no
    /// prompt).
    pub fn unlock_default_collection(&self) {
        use dbus::arg::{RefArg, Variant};
        let conn = self.connect();
        let path = self
            .default_collection(&conn)
            .expect("no default collection");
        let service = conn.with_proxy(SECRETS, SECRETS_PATH, Duration::from_secs(2));
        let (_out, session): (Variant<Box<dyn RefArg>>, dbus::Path<'static>) = service
            .method_call(SERVICE_IFACE, "OpenSession", ("plain", Variant("")))
            .unwrap();
        let secret = (
            session,
            Vec::<u8>::new(),
            PASSWORD.as_bytes().to_vec(),
            "text/plain",
        );
        let () = service
            .method_call(
                "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface",
                "UnlockWithMasterPassword",
                (path, secret),
            )
            .unwrap();
        assert!(
            !self.default_collection_locked(),
            "the collection did not unlock"
        );
    }

    /// The `Locked` property of the default collection.
    pub fn default_collection_locked(&self) -> bool {
        let conn = self.connect();
        let path = self
            .default_collection(&conn)
            .expect("no default collection");
        conn.with_proxy(SECRETS, path, Duration::from_secs(2))
            .get(COLLECTION_IFACE, "Locked")
            .unwrap()
    }

    /// What a client process needs to talk to this bus; `Send`, unlike the bus itself.
    pub fn client(&self) -> BusClient {
        BusClient {
            address: self.address.clone(),
            home: self.dir.path().to_owned(),
        }
    }

    /// Whether `name` has an owner on this bus.
    pub fn name_has_owner(&self, name: &str) -> bool {
        let conn = self.connect();
        let bus = conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(2),
        );
        let (owned,): (bool,) = bus
            .method_call("org.freedesktop.DBus", "NameHasOwner", (name,))
            .unwrap();
        owned
    }

    /// The pid of the process that owns `name` on this bus, if any.
    fn owner_pid(&self, name: &str) -> Option<u32> {
        let conn = self.connect();
        let bus = conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(2),
        );
        let (pid,): (u32,) = bus
            .method_call(
                "org.freedesktop.DBus",
                "GetConnectionUnixProcessID",
                (name,),
            )
            .ok()?;
        Some(pid)
    }
}

/// The GNOME prompter that D-Bus activation starts on a desktop.
pub const GCR_PROMPTER: &str = "/usr/libexec/gcr-prompter";

/// Points `cmd` at the temporary home `home`, away from any real session, with `display` as the
/// only X display.
fn isolate<'c>(cmd: &'c mut Command, home: &Path, display: Option<&str>) -> &'c mut Command {
    cmd.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("GNOME_KEYRING_CONTROL")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET");
    match display {
        Some(display) => cmd.env("DISPLAY", display),
        None => cmd.env_remove("DISPLAY"),
    }
}

/// A virtual X server on a display number it picks itself (`-displayfd`), so parallel tests
/// never collide.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(dir: &Path) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "800x600x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(dir, "xvfb.log"))
            .spawn()
            .expect("Xvfb is missing: install the xvfb package (scripts/test does)");
        let mut line = String::new();
        // Xvfb writes the display number once it accepts connections, or exits.
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let number = line.trim();
        if number.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Xvfb did not start: {}", read_log(dir, "xvfb.log"));
        }
        Xvfb {
            display: format!(":{number}"),
            child,
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM, so Xvfb removes its /tmp/.X*-lock and socket.
        terminate(&mut self.child);
    }
}

/// Stops a child with SIGTERM and reaps it.
fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

/// Starts client programs (e.g. `secret-tool`) on a [`SessionBus`].
#[derive(Clone, Debug)]
pub struct BusClient {
    address: String,
    home: PathBuf,
}

impl BusClient {
    /// A command that talks to the bus, isolated from any real session like the provider.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        self.isolate(&mut cmd);
        cmd
    }

    fn isolate<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        isolate(cmd, &self.home, None).env("DBUS_SESSION_BUS_ADDRESS", &self.address)
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        // The prompter was started by the bus, not by us: find it by its bus name.
        if self.xvfb.is_some() {
            for name in [
                "org.gnome.keyring.SystemPrompter",
                "org.gnome.keyring.PrivatePrompter",
            ] {
                if let Some(pid) = self.owner_pid(name) {
                    // SAFETY: kill(2) with a pid the bus reported for its client.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    // Let the bus reap it before the bus goes (bounded; no zombie left behind).
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let proc = PathBuf::from(format!("/proc/{pid}"));
                    while proc.exists() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        if let Some(mut keyring) = self.keyring.take() {
            terminate(&mut keyring);
        }
        terminate(&mut self.dbus);
        // Xvfb (a field) goes last, after everything that used the display.
    }
}

/// No session bus at all, for as long as it lives: `DBUS_SESSION_BUS_ADDRESS`, `DISPLAY` and
/// `WAYLAND_DISPLAY` unset and `XDG_RUNTIME_DIR` an empty directory, so libdbus finds nothing
/// and cannot autolaunch one.
pub struct NoBus {
    _dir: TempDir,
}

impl NoBus {
    /// No address in the environment (libdbus: "Unable to autolaunch a dbus-daemon without a
    /// $DISPLAY for X11").
    pub fn unset() -> NoBus {
        NoBus::with_address(None)
    }

    /// An address whose socket does not exist (a bus that went away).
    pub fn dead_address() -> NoBus {
        NoBus::with_address(Some("gone"))
    }

    fn with_address(socket: Option<&str>) -> NoBus {
        assert_own_process();
        let dir = tempfile::Builder::new()
            .prefix("credvend-nobus")
            .tempdir()
            .unwrap();
        let address = socket.map(|s| format!("unix:path={}", dir.path().join(s).display()));
        set_env(&[
            ("DBUS_SESSION_BUS_ADDRESS", address.as_deref()),
            ("XDG_RUNTIME_DIR", Some(dir.path().to_str().unwrap())),
            ("DISPLAY", None),
            ("WAYLAND_DISPLAY", None),
        ]);
        NoBus { _dir: dir }
    }
}

fn log_file(dir: &Path, name: &str) -> File {
    File::create(dir.join(name)).unwrap()
}

fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}
