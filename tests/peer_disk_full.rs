//! A full disk during a download: a 4 MiB file downloaded into a 2 MiB tmpfs. The download
//! ends `Failed` with a reason (`[F] [g] big cannot write ...` in show_downloads), keeps its
//! `.part`, and disturbs nothing else: another download completes, the client keeps seeding.
//! After space is freed (the tmpfs grown), a restarted download first counts the `.part`'s
//! verified pieces, then fetches only the rest.
//!
//! Mounting needs root (tests run as root here). If the mount is refused, the test says why
//! and falls back to an injected write error (a file-size limit, as in peer_disk_error.rs);
//! if that is impossible too it fails — it never passes without exercising a fault. Its own
//! test binary, because the fallback limit is process-wide.

use groupshare::client::peers::hasher::sha1;
use groupshare::client::peers::store::part_path;
use groupshare::client::peers::{
    DownloadId, DownloadSpec, DownloadState, DownloadStatus, PeerEvent, PeerInfo, PeerSide,
};
use groupshare::client::report::download_line;
use groupshare::pieces::{Hash, PieceSet, PIECE_SIZE};
use mio::{Events, Poll};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUP: &str = "g";
const LIMIT: Duration = Duration::from_secs(30);
const SMALL: u64 = 2 * 1024 * 1024;

struct Node {
    name: String,
    poll: Poll,
    events: Events,
    side: PeerSide,
    addr: SocketAddr,
    log: Vec<PeerEvent>,
    sources: HashMap<DownloadId, Vec<PeerInfo>>,
}

impl Node {
    fn new(name: &str) -> Node {
        let poll = Poll::new().unwrap();
        let (side, addr) = PeerSide::new(poll.registry(), "127.0.0.1:0".parse().unwrap()).unwrap();
        Node {
            name: name.to_string(),
            poll,
            events: Events::with_capacity(256),
            side,
            addr,
            log: Vec::new(),
            sources: HashMap::new(),
        }
    }

    fn info(&self, n: usize) -> PeerInfo {
        PeerInfo {
            user: self.name.clone(),
            addr: self.addr,
            have: PieceSet::full(n),
        }
    }

    fn turn(&mut self) {
        let now = Instant::now();
        let timeout = match self.side.next_deadline() {
            Some(d) if d <= now => Duration::ZERO,
            _ => Duration::from_millis(2),
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("poll: {e}"),
        }
        let now = Instant::now();
        for ev in self.events.iter() {
            self.side.handle_event(self.poll.registry(), ev, now);
        }
        let out = self.side.tick(self.poll.registry(), Instant::now());
        for ev in &out {
            if let PeerEvent::NeedPeers { id } = ev {
                if let Some(peers) = self.sources.get(id) {
                    self.side.add_peers(*id, peers.clone(), Instant::now());
                }
            }
        }
        self.log.extend(out);
    }

    fn status(&self, id: DownloadId) -> DownloadStatus {
        self.side
            .downloads()
            .into_iter()
            .find(|d| d.id == id)
            .unwrap()
    }

    fn has(&self, ev: &PeerEvent) -> bool {
        self.log.contains(ev)
    }

    fn failed(&self, id: DownloadId) -> Option<String> {
        self.log.iter().find_map(|e| match e {
            PeerEvent::Failed { id: i, reason } if *i == id => Some(reason.clone()),
            _ => None,
        })
    }

    fn verified(&self, id: DownloadId) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .log
            .iter()
            .filter_map(|e| match e {
                PeerEvent::PiecesVerified { id: i, pieces } if *i == id => Some(pieces.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        v.sort_unstable();
        v
    }
}

fn drive(nodes: &mut [&mut Node], mut done: impl FnMut(&[&mut Node]) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        for n in nodes.iter_mut() {
            n.turn();
        }
        if done(nodes) {
            return true;
        }
    }
    false
}

fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut r = groupshare::runtime::Rng::new(seed);
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(size);
    v
}

fn hashes_of(data: &[u8]) -> Arc<Vec<Hash>> {
    Arc::new(data.chunks(PIECE_SIZE as usize).map(sha1).collect())
}

fn npieces(data: &[u8]) -> usize {
    data.len().div_ceil(PIECE_SIZE as usize)
}

fn share(node: &mut Node, dir: &Path, file: &str, data: &[u8]) {
    let path = dir.join(format!("{}-{file}", node.name));
    std::fs::write(&path, data).unwrap();
    node.side
        .share(GROUP, file, path, data.len() as u64, hashes_of(data));
}

fn spec(file: &str, data: &[u8], dest: PathBuf) -> DownloadSpec {
    DownloadSpec {
        group: GROUP.into(),
        file: file.into(),
        size: data.len() as u64,
        hashes: hashes_of(data),
        dest,
    }
}

/// The fault in force, and how to lift it.
enum Fault {
    /// A tmpfs of `SMALL` bytes mounted here; unmounted on drop, whatever happened.
    Tmpfs(PathBuf),
    /// Fallback: every write past `SMALL` bytes into a file fails with EFBIG.
    FileSizeLimit,
}

impl Fault {
    fn install(small: &Path, part_to_precreate: &Path, size: u64) -> Fault {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SMALL}"), "tmpfs"])
            .arg(small)
            .output();
        match out {
            Ok(o) if o.status.success() => return Fault::Tmpfs(small.to_path_buf()),
            Ok(o) => eprintln!(
                "cannot mount a small tmpfs ({}): {}; falling back to a file-size limit",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => {
                eprintln!("cannot run mount: {e}; falling back to a file-size limit")
            }
        }
        // The .part at full length before the limit, so that opening it needs no growth.
        std::fs::write(part_to_precreate, vec![0u8; size as usize]).unwrap();
        // SAFETY: ignoring SIGXFSZ and lowering a resource limit affect only this process.
        let rc = unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: SMALL,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim)
        };
        assert_eq!(
            rc,
            0,
            "neither a tmpfs mount nor a file-size limit is possible here ({}): \
             this test cannot inject a disk fault",
            std::io::Error::last_os_error()
        );
        Fault::FileSizeLimit
    }

    /// Frees space: the tmpfs grows, or the limit goes.
    fn lift(&self) {
        match self {
            Fault::Tmpfs(p) => {
                let st = Command::new("mount")
                    .args(["-o", "remount,size=16m"])
                    .arg(p)
                    .status()
                    .unwrap();
                assert!(st.success(), "cannot grow the tmpfs");
            }
            Fault::FileSizeLimit => unsafe {
                let lim = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
            },
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Fault::Tmpfs(p) = self {
            // Lazy, so that a file still open (a failed test) cannot keep it mounted.
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

#[test]
fn a_full_disk_fails_one_download_keeps_the_part_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let big = content(8 * PIECE_SIZE as usize, 1); // 4 MiB
    let other = content(3 * PIECE_SIZE as usize + 5, 2);
    let mine = content(2 * PIECE_SIZE as usize + 9, 3);
    let (nb, no, nm) = (npieces(&big), npieces(&other), npieces(&mine));
    let mut s = Node::new("s");
    let mut d = Node::new("d");
    let mut t = Node::new("t");
    share(&mut s, dir.path(), "big", &big);
    share(&mut s, dir.path(), "other", &other);
    // The downloader also seeds a file of its own.
    share(&mut d, dir.path(), "mine", &mine);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let big_dest = small.join("big");
    let fault = Fault::install(&small, &part_path(&big_dest), big.len() as u64);

    let other_dest = dir.path().join("other");
    d.side
        .start_download(1, spec("big", &big, big_dest.clone()), Instant::now())
        .unwrap();
    d.side
        .start_download(2, spec("other", &other, other_dest.clone()), Instant::now())
        .unwrap();
    for (id, n) in [(1, nb), (2, no)] {
        d.sources.insert(id, vec![s.info(n)]);
        d.side.add_peers(id, vec![s.info(n)], Instant::now());
    }
    assert!(
        drive(&mut [&mut d, &mut s], |n| n[0].failed(1).is_some()
            && n[0].has(&PeerEvent::Completed { id: 2 })),
        "{:?}",
        d.side.downloads()
    );
    let reason = d.failed(1).unwrap();
    assert!(reason.contains("cannot write"), "{reason}");
    if let Fault::Tmpfs(_) = fault {
        assert!(reason.contains("No space left"), "{reason}");
    }
    let st = d.status(1);
    assert!(matches!(st.state, DownloadState::Failed(_)));
    let line = download_line(&st);
    assert!(
        line.starts_with("[F] [g] big cannot write"),
        "show_downloads: {line}"
    );
    assert!(part_path(&big_dest).exists(), "the .part is kept");
    assert!(!big_dest.exists());
    // The other download was not disturbed.
    assert_eq!(d.status(2).state, DownloadState::Complete);
    assert!(std::fs::read(&other_dest).unwrap() == other);
    // The downloader still seeds: its own file, and the other download's file.
    let mine_dest = dir.path().join("t-mine");
    let other_dest2 = dir.path().join("t-other");
    t.side
        .start_download(1, spec("mine", &mine, mine_dest.clone()), Instant::now())
        .unwrap();
    t.side
        .start_download(
            2,
            spec("other", &other, other_dest2.clone()),
            Instant::now(),
        )
        .unwrap();
    for (id, n) in [(1, nm), (2, no)] {
        t.sources.insert(id, vec![d.info(n)]);
        t.side.add_peers(id, vec![d.info(n)], Instant::now());
    }
    assert!(drive(&mut [&mut t, &mut d], |n| n[0]
        .has(&PeerEvent::Completed { id: 1 })
        && n[0].has(&PeerEvent::Completed { id: 2 })));
    assert!(std::fs::read(&mine_dest).unwrap() == mine);
    assert!(std::fs::read(&other_dest2).unwrap() == other);
    let written_before = d.verified(1);

    // Space freed; the download is started again and resumes from the .part.
    fault.lift();
    d.log.clear();
    d.side
        .start_download(3, spec("big", &big, big_dest.clone()), Instant::now())
        .unwrap();
    // No sources yet: whatever it counts now comes from the disk, not the network.
    assert!(drive(&mut [&mut d], |n| n[0].status(3).state
        == DownloadState::Downloading));
    let resumed = d.verified(3);
    assert!(
        !resumed.is_empty(),
        "no piece of the .part counted as verified (before the fault: {written_before:?})"
    );
    assert_eq!(resumed, written_before, "exactly the pieces written before");
    assert_eq!(d.status(3).pieces_done, resumed.len());
    d.sources.insert(3, vec![s.info(nb)]);
    d.side.add_peers(3, vec![s.info(nb)], Instant::now());
    assert!(
        drive(&mut [&mut d, &mut s], |n| n[0]
            .has(&PeerEvent::Completed { id: 3 })),
        "{:?}",
        d.side.downloads()
    );
    assert!(std::fs::read(&big_dest).unwrap() == big);
    assert!(!part_path(&big_dest).exists());
    assert_eq!(
        d.side.peer_piece_counts(3),
        vec![("s".to_string(), (nb - resumed.len()) as u64)],
        "only the missing pieces came over the network"
    );
    // Close every file on the tmpfs before it is unmounted.
    drop(d);
    drop(fault);
}

/// A destination directory nobody may write to (a read-only tmpfs; as root, permissions would
/// not stop us): `start_download` refuses at once with a sentence, and creates nothing.
#[test]
fn a_read_only_destination_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(PIECE_SIZE as usize + 1, 4);
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro)
        .output();
    // Fallback: /proc, where not even root creates files.
    let (guard, target) = match out {
        Ok(o) if o.status.success() => (Some(Fault::Tmpfs(ro.clone())), ro.clone()),
        other => {
            eprintln!("cannot mount a read-only tmpfs ({other:?}); using /proc instead");
            (None, PathBuf::from("/proc"))
        }
    };
    let mut d = Node::new("d");
    let dest = target.join("f");
    let err = d
        .side
        .start_download(1, spec("f", &data, dest.clone()), Instant::now())
        .unwrap_err();
    assert!(err.contains("writable"), "{err}");
    assert!(!part_path(&dest).exists() && !dest.exists());
    assert!(d.side.downloads().is_empty());
    drop(d);
    drop(guard);
}
