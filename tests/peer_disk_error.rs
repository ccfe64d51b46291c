//! A disk error during a download (here: EFBIG from a file-size limit, standing in for a full
//! disk) fails that download only: `Failed` with a reason, `.part` kept, no destination, and
//! the client goes on serving. Its own test binary, because the limit is process-wide.

mod peer_support;

use groupshare::client::peers::store::part_path;
use groupshare::client::peers::DownloadState;
use groupshare::pieces::PIECE_SIZE;
use peer_support::*;
use std::time::{Duration, Instant};

#[test]
fn a_write_error_fails_the_download_and_keeps_the_part_file() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * PIECE_SIZE as usize;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let dest = dir.path().join("dest");
    // A full-length .part made before the limit, so opening it needs no growth; every write
    // past the first piece then fails with EFBIG.
    leave_part(&dest, &vec![0u8; size]);
    // SAFETY: ignoring SIGXFSZ and lowering a resource limit affect only this test process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: PIECE_SIZE,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }

    let mut seeder = Node::new("s");
    let mut down = Node::new("d");
    seeder
        .side
        .share(GROUP, "f", src, size as u64, hashes_of(&data));
    down.side
        .start_download(1, spec("f", &data, dest.clone()), Instant::now())
        .unwrap();
    let peers = down.ticketed(1, vec![seeder.full_info(4)]);
    down.side.add_peers(1, peers);
    // Each turn polls 2 ms, whatever the deadlines.
    drive_with(
        &mut [&mut seeder, &mut down],
        |n| n.turn_for(Duration::from_millis(2)),
        |n| n[1].failed(1).is_some(),
    );
    let reason = down.failed(1).expect("the download failed");
    assert!(reason.contains("cannot write"), "{reason}");
    let status = down.status(1);
    assert!(matches!(status.state, DownloadState::Failed(_)));
    assert!(!down.side.has_active_downloads());
    assert!(part_path(&dest).exists());
    assert!(!dest.exists());
    assert!(status.pieces_done <= 1, "only piece 0 fits under the limit");
}
