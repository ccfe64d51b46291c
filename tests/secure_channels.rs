//! The secure channels with the real binaries: a capture of the loopback traffic of a whole
//! session holds nothing readable; a client refuses a tracker whose key changed or does not
//! match its pin, before sending it anything; the files that hold secrets are private; the
//! operator's `--status` speaks the channel.

mod common;

use common::{test_data, Client, Cluster, TRACKER};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Captures TCP payloads on `lo` whose source or destination port is one of `ports`, from an
/// AF_PACKET socket, in a thread, until dropped.
struct Capture {
    payload: Arc<Mutex<Vec<u8>>>,
    packets: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    fn start(ports: HashSet<u16>) -> Capture {
        let fd = open_packet_socket();
        let payload = Arc::new(Mutex::new(Vec::new()));
        let packets = Arc::new(Mutex::new(0usize));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, n, s) = (payload.clone(), packets.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            let start = Instant::now();
            // Bounded by the flag and by a generous deadline.
            while !s.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(300) {
                // SAFETY: reading into a buffer we own, of the length given.
                let got = unsafe {
                    libc::recv(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if got <= 0 {
                    continue; // the receive timeout: look at the flag again
                }
                if let Some(data) = tcp_payload(&buf[..got as usize], &ports) {
                    p.lock().expect("lock").extend_from_slice(data);
                    *n.lock().expect("lock") += 1;
                }
            }
        });
        Capture {
            payload,
            packets,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<u8>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("capture thread");
        }
        let bytes = std::mem::take(&mut *self.payload.lock().expect("lock"));
        let n = *self.packets.lock().expect("lock");
        (bytes, n)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_packet_socket() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        panic!(
            "cannot open an AF_PACKET socket to capture loopback traffic ({e}): this test needs \
             root or CAP_NET_RAW (CI runs as root); it is not skipped, because a capture that \
             never ran proves nothing"
        );
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    assert!(ifindex > 0, "no loopback interface");
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding our socket to a correctly sized sockaddr_ll.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind to lo: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    let big: libc::c_int = 32 << 20;
    // SAFETY: setsockopt with correctly sized values.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        // Root may exceed rmem_max: no packet of a fast download is dropped for lack of room.
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    owned
}

/// The TCP payload of an Ethernet/IPv4 frame to or from one of `ports`.
fn tcp_payload<'a>(frame: &'a [u8], ports: &HashSet<u16>) -> Option<&'a [u8]> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 6 || ihl < 20 || total > ip.len() || total < ihl + 20 {
        return None;
    }
    let tcp = &ip[ihl..total];
    let src = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dst = u16::from_be_bytes([tcp[2], tcp[3]]);
    if !ports.contains(&src) && !ports.contains(&dst) {
        return None;
    }
    let off = usize::from(tcp[12] >> 4) * 4;
    tcp.get(off..)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether any 32 consecutive bytes of `data` appear in `hay`: every such run holds a 16-byte
/// chunk of `data` at a multiple of 16, so looking those up at every offset of `hay` finds it.
fn shares_a_run(hay: &[u8], data: &[u8]) -> bool {
    let chunks: HashSet<&[u8]> = data.chunks_exact(16).collect();
    hay.windows(16).any(|w| chunks.contains(w))
}

#[test]
fn a_whole_session_crosses_loopback_with_nothing_readable() {
    let c = Cluster::start(2);
    let peer_ports = common::free_ports(2);
    let mut ports: HashSet<u16> = c.addrs.iter().map(|a| a.port()).collect();
    ports.extend(peer_ports.iter().copied());
    let capture = Capture::start(ports);

    let (pw_a, pw_b) = ("Sup3r-Secret-Alice-Pw", "Sup3r-Secret-Bob-Pw");
    let data = test_data(3 * 512 * 1024 + 777, 91);
    let mut a = c.client_with("alice", &[&format!("127.0.0.1:{}", peer_ports[0])], &[]);
    let mut b = c.client_with("bob", &[&format!("127.0.0.1:{}", peer_ports[1])], &[]);
    a.run(&format!("create_user alice {pw_a}"), "created user alice");
    a.run(&format!("login alice {pw_a}"), "logged in as alice");
    a.run("create_group g", "created group g");
    b.run(&format!("create_user bob {pw_b}"), "created user bob");
    b.run(&format!("login bob {pw_b}"), "logged in as bob");
    b.run("join_group g", "asked to join");
    a.run("accept_request g bob", "now a member");
    let src = c.path().join("secret.bin");
    std::fs::write(&src, &data).expect("write the file");
    a.run(
        &format!("upload_file {} g", src.display()),
        "uploaded secret.bin to g",
    );
    let dest = c.path().join("down");
    std::fs::create_dir(&dest).expect("mkdir");
    b.run(
        &format!("download_file g secret.bin {}", dest.display()),
        "downloading secret.bin",
    );
    b.expect_err("note: download of secret.bin complete");
    assert_eq!(std::fs::read(dest.join("secret.bin")).expect("read"), data);
    b.run("logout", "logged out");
    a.run("logout", "logged out");
    std::thread::sleep(Duration::from_millis(300));
    let (seen, packets) = capture.finish();

    // The capture saw the session: at least the file's length went by (encrypted).
    assert!(
        seen.len() >= data.len(),
        "the capture saw only {} bytes in {packets} packets for a {}-byte download",
        seen.len(),
        data.len()
    );
    for pw in [pw_a, pw_b] {
        assert!(
            !contains(&seen, pw.as_bytes()),
            "a password crossed in clear"
        );
    }
    // The session tokens and secrets, from the tracker's own journal segments.
    let journal: String = std::fs::read_dir(c.data_dir(1))
        .expect("the data directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let tokens: Vec<&str> = journal
        .split_whitespace()
        .filter(|w| (w.len() == 32 || w.len() == 64) && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(!tokens.is_empty(), "the journal names the sessions");
    for t in tokens {
        assert!(
            !contains(&seen, t.as_bytes()),
            "a session token crossed in clear"
        );
    }
    for word in ["create_user", "login", "secret.bin", "piece "] {
        assert!(
            !contains(&seen, word.as_bytes()),
            "{word:?} crossed in clear"
        );
    }
    assert!(!shares_a_run(&seen, &data), "file bytes crossed in clear");
}

/// Waits for a stderr line containing every one of `words`.
fn expect_err_with(c: &mut Client, words: &[&str]) -> String {
    let line = c.expect(false, words[0], Duration::from_secs(20));
    for w in words {
        assert!(line.contains(w), "{w:?} missing from {line:?}");
    }
    line
}

#[test]
fn a_client_refuses_a_tracker_whose_key_changed_and_one_that_fails_its_pin() {
    let mut c = Cluster::new(1);
    c.spawn(1);
    c.wait_serving(1);
    let mut a = c.client("alice");
    expect_err_with(
        &mut a,
        &["note: first connection to tracker 1", "known_trackers"],
    );
    a.run("create_user alice pw", "created user alice");
    drop(a);

    // A new key at the same address: a new data directory (or an impostor).
    c.kill(1);
    std::fs::remove_file(c.data_dir(1).join("identity.key")).expect("remove the key");
    c.spawn(1);
    c.wait_serving(1);
    let mut a = c.client("alice");
    let warn = expect_err_with(
        &mut a,
        &["warning: refusing tracker", "known_trackers", "delete line"],
    );
    assert!(!warn.contains("error:"), "{warn}");
    // Nothing reaches the tracker: the user made here does not exist there.
    a.send("create_user mallory pw");
    std::thread::sleep(Duration::from_millis(500));
    let mut probe = c.conn(1);
    probe.err(
        &groupshare::testkit::conn::v::login("mallory", "pw", "127.0.0.1:1"),
        "bad_credentials",
    );
    drop(a);

    // A pin that does not match, with no memory of the tracker: refused, naming the pin's file.
    let info = c.dir.path().join("info");
    let wrong = format!("{} SHA256:{}\n", c.addrs[0], "00".repeat(32));
    std::fs::write(&info, wrong).expect("pin");
    let mut fresh = c.client("carol");
    expect_err_with(
        &mut fresh,
        &["warning: refusing tracker", "pins", "info line 1"],
    );

    // The right pin, written by the tracker itself (as `make run-tracker1` does): accepted.
    let out = std::process::Command::new(TRACKER)
        .arg(&info)
        .arg("1")
        .arg("--data-dir")
        .arg(c.data_dir(1))
        .arg("--write-pin")
        .output()
        .expect("--write-pin");
    assert!(out.status.success(), "{out:?}");
    let pinned = std::fs::read_to_string(&info).expect("info");
    assert!(pinned.contains(" SHA256:"), "{pinned}");
    let mut dave = c.client("dave");
    dave.run("create_user dave pw", "created user dave");
    assert!(dave.errors().is_empty(), "{:?}", dave.errors());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").mode() & 0o777
}

#[test]
fn secrets_on_disk_are_private() {
    let c = Cluster::start(2);
    let mut a = c.client("alice");
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group g", "created group g");
    let src = c.path().join("f.bin");
    std::fs::write(&src, test_data(1000, 3)).expect("write");
    a.run(
        &format!("upload_file {} g", src.display()),
        "uploaded f.bin",
    );
    a.sync();
    for n in [1, 2] {
        let dir = c.data_dir(n);
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        let mut files = 0;
        for e in std::fs::read_dir(&dir).expect("data dir") {
            let p = e.expect("entry").path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            files += 1;
        }
        assert!(files >= 2, "identity.key and journal at least");
        assert!(dir.join("identity.key").exists());
    }
    let state = c.state_dir("alice");
    assert_eq!(mode(&state), 0o700);
    let mut stack = vec![state];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("state dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 2, "known_trackers and the shares list at least");

    // A cluster key the tracker makes itself is 0600 too; a readable one is refused.
    let dir = tempfile::tempdir().expect("tmp");
    let info = dir.path().join("info");
    let ports = common::free_ports(2);
    std::fs::write(
        &info,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .expect("info");
    let mut t = std::process::Command::new(TRACKER)
        .arg(&info)
        .arg("1")
        .arg("-q")
        .spawn()
        .expect("tracker");
    let key = dir.path().join(".cluster.key");
    let start = Instant::now();
    while !key.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = t.kill();
    let _ = t.wait();
    assert_eq!(mode(&key), 0o600);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let out = std::process::Command::new(TRACKER)
        .arg(&info)
        .arg("1")
        .output()
        .expect("tracker");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn status_prints_role_position_and_digest_over_the_channel() {
    let c = Cluster::start(2);
    let mut conn = c.conn(1);
    conn.user("alice");
    c.wait_same_digest();
    let mut lines = Vec::new();
    for n in ["1", "2"] {
        let out = std::process::Command::new(TRACKER)
            .arg(c.dir.path().join("info"))
            .arg(n)
            .arg("--status")
            .output()
            .expect("--status");
        assert!(out.status.success(), "{out:?}");
        lines.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let roles: Vec<bool> = lines
        .iter()
        .map(|l| l.contains("role leader-paired"))
        .collect();
    assert_eq!(roles.iter().filter(|r| **r).count(), 1, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("role follower")),
        "{lines:?}"
    );
    let digest = |l: &str| {
        l.split("digest ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .map(str::to_string)
    };
    assert_eq!(digest(&lines[0]), digest(&lines[1]), "{lines:?}");
    assert!(lines[0].contains("log position ") && lines[0].contains("key SHA256:"));
}
