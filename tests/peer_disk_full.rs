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

mod peer_support;

use groupshare::client::peers::store::part_path;
use groupshare::client::peers::{DownloadState, PeerEvent};
use groupshare::client::report::download_line;
use groupshare::pieces::PIECE_SIZE;
use peer_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SMALL: u64 = 2 * 1024 * 1024;

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
        d.add_sources(id, vec![s.full_info(n)]);
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
        t.add_sources(id, vec![d.full_info(n)]);
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
    d.add_sources(3, vec![s.full_info(nb)]);
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
