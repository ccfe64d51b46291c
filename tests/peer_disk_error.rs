//! A disk error during a download (here: EFBIG from a file-size limit, standing in for a full
//! disk) fails that download only: `Failed` with a reason, `.part` kept, no destination, and
//! the client goes on serving. Its own test binary, because the limit is process-wide.

use groupshare::client::peers::hasher::sha1;
use groupshare::client::peers::store::part_path;
use groupshare::client::peers::{DownloadSpec, DownloadState, PeerEvent, PeerInfo, PeerSide};
use groupshare::pieces::{PieceSet, PIECE_SIZE};
use mio::{Events, Poll};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_write_error_fails_the_download_and_keeps_the_part_file() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * PIECE_SIZE as usize;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let hashes = Arc::new(
        data.chunks(PIECE_SIZE as usize)
            .map(sha1)
            .collect::<Vec<_>>(),
    );
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let dest = dir.path().join("dest");
    // A full-length .part made before the limit, so opening it needs no growth; every write
    // past the first piece then fails with EFBIG.
    std::fs::write(part_path(&dest), vec![0u8; size]).unwrap();
    // SAFETY: ignoring SIGXFSZ and lowering a resource limit affect only this test process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: PIECE_SIZE,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }

    let mut polls = [Poll::new().unwrap(), Poll::new().unwrap()];
    let (mut seeder, seeder_addr) =
        PeerSide::new(polls[0].registry(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let (mut down, _) = PeerSide::new(polls[1].registry(), "127.0.0.1:0".parse().unwrap()).unwrap();
    seeder.share("g", "f", src, size as u64, hashes.clone());
    let spec = DownloadSpec {
        group: "g".into(),
        file: "f".into(),
        size: size as u64,
        hashes,
        dest: dest.clone(),
    };
    down.start_download(1, spec, Instant::now()).unwrap();
    let peer = PeerInfo {
        user: "s".into(),
        addr: seeder_addr,
        have: PieceSet::full(4),
    };
    down.add_peers(1, vec![peer], Instant::now());
    let mut events = Events::with_capacity(64);
    let mut failed = None;
    let start = Instant::now();
    while failed.is_none() && start.elapsed() < Duration::from_secs(30) {
        for (i, side) in [&mut seeder, &mut down].into_iter().enumerate() {
            polls[i]
                .poll(&mut events, Some(Duration::from_millis(2)))
                .unwrap();
            for ev in events.iter() {
                side.handle_event(polls[i].registry(), ev, Instant::now());
            }
            for ev in side.tick(polls[i].registry(), Instant::now()) {
                if let PeerEvent::Failed { id: 1, reason } = ev {
                    failed = Some(reason);
                }
            }
        }
    }
    let reason = failed.expect("the download failed");
    assert!(reason.contains("cannot write"), "{reason}");
    let status = &down.downloads()[0];
    assert!(matches!(status.state, DownloadState::Failed(_)));
    assert!(!down.has_active_downloads());
    assert!(part_path(&dest).exists());
    assert!(!dest.exists());
    assert!(status.pieces_done <= 1, "only piece 0 fits under the limit");
}
