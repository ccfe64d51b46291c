//! Loopback ports and bounded waits.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

/// Loopback ports that were free a moment ago: held together so that they differ, then
/// released for the process under test to bind (a small race that tests accept).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read a bound port: {e}"))
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
