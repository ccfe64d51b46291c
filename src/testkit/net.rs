//! Loopback ports and bounded waits.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

/// Where `free_ports` looks: below Linux's ephemeral range (32768–60999), which the kernel
/// hands to every outgoing connection and to `bind(:0)`. A port chosen there could be taken
/// by some test's client socket before the tracker under test binds it ("Address already in
/// use"); below it, only another `free_ports` could take it, and the counter makes each call
/// in this process return new ports.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Loopback ports that are free now (each checked by binding it), never returned twice by this
/// process, for a process under test to bind. Several test processes on one machine start at
/// different places in the range (by pid).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    let mut out = Vec::with_capacity(n);
    for _ in 0..span {
        if out.len() == n {
            break;
        }
        let k = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORT_RANGE.start + k as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    if out.len() < n {
        return Err(format!(
            "cannot find {n} free loopback ports in {PORT_RANGE:?}"
        ));
    }
    Ok(out)
}

/// `free_ports` as `127.0.0.1:<port>` addresses.
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>, String> {
    Ok(free_ports(n)?
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect())
}

/// Polls `f` every 20 ms until it returns Some, or fails after `limit` naming `what`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    wait_for(&format!("{addr} to accept connections"), limit, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    })
}

/// A blocking TCP connection to `to` from the local address `from`: on loopback, any
/// 127.0.0.0/8 address, so one machine can play several hosts (per-address limits).
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; it is handed to
    // `TcpStream` (which closes it) right after `socket` succeeds.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let src = sockaddr(from, 0);
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dst = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_differ_and_can_be_bound() {
        let ps = free_ports(3).expect("ports");
        assert_eq!(ps.len(), 3);
        assert!(ps[0] != ps[1] && ps[1] != ps[2] && ps[0] != ps[2]);
        let l = TcpListener::bind(("127.0.0.1", ps[0])).expect("bind a port just found free");
        assert!(wait_listening(l.local_addr().expect("addr"), Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn wait_for_gives_up_after_its_limit_and_names_what_it_waited_for() {
        let t = Instant::now();
        let e = wait_for("nothing", Duration::from_millis(50), || None::<()>).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(e.contains("nothing"), "{e}");
        let mut n = 0;
        assert_eq!(
            wait_for("a count", Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Ok(3)
        );
    }
}
