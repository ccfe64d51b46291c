//! Throughput and memory of one download from two seeders, in process over loopback.
//! Ignored by default (it writes hundreds of MiB); run it with
//! `cargo test --release --test peer_throughput -- --ignored --nocapture`
//! (`GS_BENCH_MIB` sets the size, default 512).

use groupshare::client::peers::hasher::sha1;
use groupshare::client::peers::{DownloadSpec, PeerEvent, PeerInfo, PeerSide};
use groupshare::pieces::{Hash, PieceSet, PIECE_SIZE};
use groupshare::testkit::tickets;
use mio::{Events, Poll};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The reference bound, under the same conditions: one thread receiving loopback TCP into a
/// 512 KiB buffer, SHA-1 of each piece, pwrite into a fresh file (a sender thread feeds it).
fn bound_mb_s(dir: &std::path::Path, size: usize) -> f64 {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).unwrap();
        let b = vec![1u8; PIECE_SIZE as usize];
        for _ in 0..size / PIECE_SIZE as usize {
            s.write_all(&b).unwrap();
        }
    });
    let (mut s, _) = l.accept().unwrap();
    let out = std::fs::File::create(dir.join("bound")).unwrap();
    out.set_len(size as u64).unwrap();
    let mut b = vec![0u8; PIECE_SIZE as usize];
    let t = Instant::now();
    for i in 0..size / PIECE_SIZE as usize {
        s.read_exact(&mut b).unwrap();
        std::hint::black_box(sha1(&b));
        out.write_all_at(&b, (i as u64) * PIECE_SIZE).unwrap();
    }
    sender.join().unwrap();
    let r = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(out);
    let _ = std::fs::remove_file(dir.join("bound"));
    r
}

#[test]
#[ignore]
fn one_download_from_two_seeders() {
    let mib: usize = std::env::var("GS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let size = mib * 1024 * 1024;
    let dir = tempfile::tempdir_in(".").unwrap();
    // The source is made once and kept in target/ so that repeated runs (and profiles)
    // measure only the download.
    let src = std::path::PathBuf::from(format!("target/peer-bench-{mib}.src"));
    let mut hashes: Vec<Hash> = Vec::new();
    let fresh = std::fs::metadata(&src)
        .map(|m| m.len() != size as u64)
        .unwrap_or(true);
    let mut f = (fresh).then(|| std::io::BufWriter::new(std::fs::File::create(&src).unwrap()));
    let mut r = groupshare::runtime::Rng::new(99);
    let mut piece = vec![0u8; PIECE_SIZE as usize];
    for _ in 0..size / PIECE_SIZE as usize {
        for c in piece.chunks_mut(8) {
            c.copy_from_slice(&r.next_u64().to_le_bytes());
        }
        hashes.push(sha1(&piece));
        if let Some(f) = &mut f {
            f.write_all(&piece).unwrap();
        }
    }
    drop(f);
    let hashes = Arc::new(hashes);
    let n = hashes.len();
    // The seeders run in threads of their own (a benchmark convenience: each is a separate
    // client in real life), so the number measures the downloader's loop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut addrs = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = std::sync::mpsc::channel();
        let (src, hashes, stop) = (src.clone(), hashes.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            let id = groupshare::net::identity::Identity::generate().unwrap();
            let key = groupshare::pieces::to_hex(id.public());
            let (mut side, addr) =
                PeerSide::new(poll.registry(), "127.0.0.1:0".parse().unwrap(), id).unwrap();
            tickets::admit_test_tickets(&mut side);
            side.share("g", "f", src, size as u64, hashes);
            tx.send((addr, key)).unwrap();
            let mut events = Events::with_capacity(256);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(10)))
                    .unwrap();
                let now = Instant::now();
                for ev in events.iter() {
                    side.handle_event(poll.registry(), ev, now);
                }
                side.tick(poll.registry(), now);
            }
        }));
        addrs.push(rx.recv().unwrap());
    }
    let mut poll = Poll::new().unwrap();
    let id = groupshare::net::identity::Identity::generate().unwrap();
    let me = *id.public();
    let (mut side, _) = PeerSide::new(poll.registry(), "127.0.0.1:0".parse().unwrap(), id).unwrap();
    let before = bound_mb_s(dir.path(), size);
    let dest = dir.path().join("dest");
    let t0 = Instant::now();
    side.start_download(
        1,
        DownloadSpec {
            owner: "me".into(),
            group: "g".into(),
            file: "f".into(),
            size: size as u64,
            hashes,
            dest: dest.clone(),
            claims: groupshare::client::peers::PartClaims::new(dir.path().join("claims")),
        },
        t0,
    )
    .unwrap();
    let peers: Vec<PeerInfo> = (0..2)
        .map(|i| PeerInfo {
            user: format!("s{i}"),
            addr: addrs[i].0,
            have: PieceSet::full(n),
            ticket: Some(tickets::test_ticket("me", &me, "g", "f")),
            key: addrs[i].1.clone(),
        })
        .collect();
    side.add_peers(1, peers);
    let mut events = Events::with_capacity(256);
    let mut done = false;
    while !done && t0.elapsed() < Duration::from_secs(120) {
        let now = Instant::now();
        let timeout = side
            .next_deadline()
            .map(|d| d.saturating_duration_since(now));
        poll.poll(&mut events, timeout.or(Some(Duration::from_millis(100))))
            .unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            side.handle_event(poll.registry(), ev, now);
        }
        for ev in side.tick(poll.registry(), Instant::now()) {
            if ev == (PeerEvent::Completed { id: 1 }) {
                done = true;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(done);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), size as u64);
    let _ = std::fs::remove_file(&dest);
    let after = bound_mb_s(dir.path(), size);
    let rate = size as f64 / secs / 1e6;
    println!(
        "{mib} MiB in {secs:.2} s: {rate:.0} MB/s = {:.0}% of the bound ({before:.0} MB/s before, \
         {after:.0} after); peak RSS {} MiB; pieces per seeder {:?}",
        100.0 * rate / before.max(after),
        vm_hwm_kib() / 1024,
        side.peer_piece_counts(1)
    );
}
