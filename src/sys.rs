//! Operating-system plumbing: core dumps off, file-descriptor limit up, systemd readiness
//! notification (`NOTIFY_SOCKET`) and socket activation (`LISTEN_FDS` / `LISTEN_FDNAMES`).

use std::os::fd::FromRawFd;

use crate::daemon::server::Inherited;

/// Disables core dumps (soft RLIMIT_CORE = 0) and, on Linux, marks the process non-dumpable so no
/// other process of the same user can ptrace it or read its memory through /proc.
pub fn harden_process() {
    let mut original = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut original) } == 0 {
        let _ = ORIGINAL_CORE_LIMIT.set((original.rlim_cur, original.rlim_max));
    }
    // Soft limit 0 stops core dumps; the hard limit stays so `exec` can give it back.
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: original.rlim_max,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes an integer argument; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

static ORIGINAL_CORE_LIMIT: std::sync::OnceLock<(libc::rlim_t, libc::rlim_t)> =
    std::sync::OnceLock::new();

/// Gives back the core-dump limit [`harden_process`] took away, for the program `exec` starts.
pub fn restore_core_limit() {
    if let Some(&(cur, max)) = ORIGINAL_CORE_LIMIT.get() {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit with a valid pointer to an initialised struct.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
        }
    }
}

/// Raises the soft open-files limit to the hard limit (capped), so the connection cap and not
/// the default 1024 descriptors bounds the server.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers to initialised structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = lim.rlim_max.min(65_536);
            if want > lim.rlim_cur {
                lim.rlim_cur = want;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}

/// Sends `state` (e.g. `READY=1`) to the service manager when `NOTIFY_SOCKET` is set.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        #[cfg(target_os = "linux")]
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        let _ = bytes;
        sock.send_to(state.as_bytes(), &path)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// TCP listening sockets passed by systemd socket activation (`LISTEN_PID` must be ours). The
/// variables are removed so children do not inherit them.
pub fn inherited_sockets() -> Vec<Inherited> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    // SAFETY: removing variables before any thread reads the environment concurrently; this
    // runs at start-up, before the runtime starts.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !pid_ok {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..count.clamp(0, 64) {
        let fd = 3 + i;
        // SAFETY: systemd passes these descriptors to us; we take ownership exactly once.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
        let is_tcp_listener = socket.r#type().ok() == Some(socket2::Type::STREAM)
            && socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some()
            && socket.is_listener().unwrap_or(false);
        if !is_tcp_listener {
            tracing::warn!(
                fd,
                "ignoring an inherited descriptor that is not a listening TCP socket"
            );
            std::mem::forget(socket);
            continue;
        }
        let _ = socket.set_cloexec(true);
        out.push(Inherited {
            listener: socket.into(),
            name: names
                .get(i as usize)
                .filter(|n| !n.is_empty() && *n != "unknown")
                .cloned(),
        });
    }
    out
}
