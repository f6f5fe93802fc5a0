//! Operating-system plumbing: core dumps off, file-descriptor limit up, systemd readiness
//! notification (`NOTIFY_SOCKET`) and socket activation (`LISTEN_FDS` / `LISTEN_FDNAMES`).

use std::os::fd::FromRawFd;

/// A listening socket handed over by the service manager (systemd or launchd).
#[derive(Debug)]
pub(crate) struct Inherited {
    /// The socket.
    pub listener: std::net::TcpListener,
    /// Its name (`FileDescriptorName=`), if given.
    pub name: Option<String>,
}

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

/// TCP listening sockets passed by systemd socket activation (`LISTEN_PID` must be ours), and a
/// line for each descriptor that was not one (to log once logging is up). The variables are
/// removed so children do not inherit them: call this before any other thread exists.
pub(crate) fn inherited_sockets() -> (Vec<Inherited>, Vec<String>) {
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
        return (Vec::new(), Vec::new());
    }
    let mut out = Vec::new();
    let mut warnings = Vec::new();
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
            warnings.push(format!(
                "ignoring inherited descriptor {fd}: it is not a listening TCP socket"
            ));
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
    (out, warnings)
}

/// The uid of user `name` in the system's user database (`getpwnam_r`), if there is one.
pub(crate) fn uid_by_name(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf` is as long as we say.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// The uid owning the other end of a TCP connection that was made from this machine (in this
/// network namespace): `peer` is the client's address, `local` ours. Linux only; `None` when the
/// client is elsewhere (another host, a container's namespace, or a DNAT'd connection), or the
/// kernel does not answer.
///
/// It asks the kernel's socket-diagnostics interface (`NETLINK_SOCK_DIAG`, what `ss -e` uses) for
/// the one socket whose local address is `peer` and remote address is `local`: an exact hash
/// lookup in the kernel, a handful of syscalls, no privilege needed, and no scan of `/proc`.
pub fn tcp_peer_uid(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        sock_diag::peer_uid(peer, local)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (peer, local);
        None
    }
}

#[cfg(target_os = "linux")]
mod sock_diag {
    use std::io::Read;
    use std::net::{IpAddr, SocketAddr};

    // From linux/netlink.h, linux/sock_diag.h and linux/inet_diag.h.
    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_HDR_LEN: usize = 16;
    /// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then `inet_diag_sockid`.
    const REQ_LEN: usize = 56;
    /// Offset of `idiag_uid` in `struct inet_diag_msg`: family, state, timer, retrans (4 bytes),
    /// `inet_diag_sockid` (48), expires, rqueue, wqueue (12).
    const UID_OFFSET: usize = 64;
    /// Offset of `inet_diag_sockid` in the request, and the length of its ports and addresses.
    const SOCKID: usize = NLMSG_HDR_LEN + 8;
    const ENDPOINTS_LEN: usize = 36;
    const TCP_TIME_WAIT: u8 = 6;

    pub(super) fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
        let request = request(peer, local)?;
        let socket = socket2::Socket::new(
            socket2::Domain::from(libc::AF_NETLINK),
            socket2::Type::DGRAM.cloexec(),
            Some(socket2::Protocol::from(NETLINK_SOCK_DIAG)),
        )
        .ok()?;
        // Non-blocking: this runs on the request path. The kernel handles a sock_diag request
        // inside send and queues the answer before send returns, so the read below finds it;
        // if it ever does not, the answer is "unknown" rather than a wait.
        socket.set_nonblocking(true).ok()?;
        // An unconnected netlink socket sends to the kernel.
        socket.send(&request).ok()?;
        let mut reply = [0u8; 512];
        let n = (&socket).read(&mut reply).ok()?;
        parse(&reply[..n], &request[SOCKID..SOCKID + ENDPOINTS_LEN])
    }

    fn unmapped(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }
    }

    /// The `SOCK_DIAG_BY_FAMILY` request for the TCP socket bound to `peer` and connected to
    /// `local`, or `None` when the two are of different families.
    pub(super) fn request(peer: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
        let (src, dst) = (unmapped(peer.ip()), unmapped(local.ip()));
        let family = match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
            (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
            _ => return None,
        };
        let addr16 = |ip: IpAddr| -> [u8; 16] {
            let mut out = [0u8; 16];
            match ip {
                IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out = v6.octets(),
            }
            out
        };
        let len = NLMSG_HDR_LEN + REQ_LEN;
        let mut m = Vec::with_capacity(len);
        // struct nlmsghdr (host byte order).
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        // struct inet_diag_req_v2.
        m.push(family as u8);
        m.push(libc::IPPROTO_TCP as u8);
        m.push(0); // no extensions
        m.push(0);
        m.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
        // struct inet_diag_sockid: ports and addresses in network byte order.
        m.extend_from_slice(&peer.port().to_be_bytes());
        m.extend_from_slice(&local.port().to_be_bytes());
        m.extend_from_slice(&addr16(src));
        m.extend_from_slice(&addr16(dst));
        m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
        m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
        debug_assert_eq!(m.len(), len);
        Some(m)
    }

    /// The uid in a `SOCK_DIAG_BY_FAMILY` answer, if it describes a live connection with exactly
    /// the `endpoints` asked for (ports and addresses as in the request). Anything else is `None`:
    /// an error answer (no such socket), a listening socket the kernel matched by port alone, a
    /// TIME_WAIT remnant (owned by nobody), or a malformed reply.
    pub(super) fn parse(reply: &[u8], endpoints: &[u8]) -> Option<u32> {
        let u32_at = |at: usize| {
            reply
                .get(at..at + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let len = u32_at(0)? as usize;
        let kind = reply.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]))?;
        if kind != SOCK_DIAG_BY_FAMILY || len > reply.len() || len < NLMSG_HDR_LEN + UID_OFFSET + 4
        {
            return None;
        }
        let msg = NLMSG_HDR_LEN;
        // family, state, timer, retrans, then the socket id.
        if reply[msg + 1] == TCP_TIME_WAIT
            || reply.get(msg + 4..msg + 4 + ENDPOINTS_LEN)? != endpoints
        {
            return None;
        }
        u32_at(msg + UID_OFFSET)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn pair(bind: &str) -> Option<(TcpListener, TcpStream)> {
        let listener = TcpListener::bind(bind).ok()?;
        let client = TcpStream::connect(listener.local_addr().unwrap()).ok()?;
        Some((listener, client))
    }

    #[test]
    fn the_peer_of_a_local_connection_is_this_process_s_uid() {
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Some((listener, client)) = pair(bind) else {
                assert_eq!(bind, "[::1]:0", "IPv4 loopback must work");
                continue; // no IPv6 on this machine
            };
            let (_server, peer) = listener.accept().unwrap();
            let local = listener.local_addr().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(tcp_peer_uid(peer, local), Some(me), "{bind}");
            // Asked the other way round, it is the accepted socket: ours as well.
            assert_eq!(tcp_peer_uid(local, peer), Some(me), "{bind}");
            // A "client" at the listener's own address: the kernel would match the listening
            // socket by port alone, which is not the peer.
            let elsewhere = SocketAddr::new(local.ip(), peer.port().wrapping_add(1).max(1));
            assert_eq!(tcp_peer_uid(local, elsewhere), None, "{bind}");
        }
    }

    #[test]
    fn user_names_resolve() {
        assert_eq!(uid_by_name("root"), Some(0));
        assert_eq!(uid_by_name("credvend-no-such-user"), None);
        assert_eq!(uid_by_name("a\0b"), None);
    }

    #[test]
    fn a_family_mismatch_gives_none_and_mapped_peers_are_asked_as_ipv4() {
        let local: SocketAddr = "127.0.0.1:9254".parse().unwrap();
        let v6: SocketAddr = "[::1]:40000".parse().unwrap();
        assert_eq!(sock_diag::request(v6, local), None);
        assert_eq!(tcp_peer_uid(v6, local), None);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let request = sock_diag::request(mapped, local).unwrap();
        assert_eq!(request[16], libc::AF_INET as u8, "family");
        assert_eq!(&request[24..26], &40000u16.to_be_bytes(), "the peer's port");
        assert_eq!(
            &request[28..32],
            &[127, 0, 0, 1],
            "the peer's address, as IPv4"
        );
    }

    #[test]
    fn error_and_short_answers_parse_to_none() {
        let any = [0u8; 36];
        assert_eq!(sock_diag::parse(&[], &any), None);
        // NLMSG_ERROR (type 2) with ENOENT.
        let mut err = vec![0u8; 36];
        err[..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(sock_diag::parse(&err, &any), None);
        // A diag message cut short before the uid.
        let mut short = vec![0u8; 60];
        short[..4].copy_from_slice(&60u32.to_ne_bytes());
        short[4..6].copy_from_slice(&20u16.to_ne_bytes());
        assert_eq!(sock_diag::parse(&short, &any), None);
    }
}
