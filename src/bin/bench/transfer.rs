//! Case C: file transfer and hashing. The *bounds* (what one thread can do with loopback TCP,
//! SHA-1 and the page cache on this machine) are measured here and now; the client's own
//! figures need the client binary and plug in through the functions taking its path.

use crate::procs::TempDir;
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

pub const PIECE: usize = 512 * 1024;
pub const MIB: f64 = 1024.0 * 1024.0;

/// A measured rate.
#[derive(Clone, Debug)]
pub struct Rate {
    pub bytes: u64,
    pub secs: f64,
}

impl Rate {
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.secs
    }
}

/// Deterministic pseudo-random bytes (xorshift), so nothing compresses or dedups.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// C1 bound: a sender thread writes `total` bytes over loopback TCP; this thread receives them
/// into 512 KiB piece buffers, SHA-1s each piece and pwrites it into a new file. Returns the
/// rate and leaves the file (now in the page cache) for the hashing reference.
pub fn download_bound(dir: &TempDir, total: u64) -> Result<(Rate, std::path::PathBuf), String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a loopback port: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    let path = dir.path().join("bound-download");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut data = vec![0u8; 4 << 20];
        fill_random(&mut data, 0x9e37_79b9_7f4a_7c15);
        let mut s = TcpStream::connect(addr).map_err(|e| format!("sender connect: {e}"))?;
        let mut left = total;
        while left > 0 {
            let k = left.min(data.len() as u64) as usize;
            s.write_all(&data[..k])
                .map_err(|e| format!("sender write: {e}"))?;
            left -= k as u64;
        }
        Ok(())
    });
    let (mut rx, _) = listener
        .accept()
        .map_err(|e| format!("accept the sender: {e}"))?;
    let t0 = Instant::now();
    let mut buf = vec![0u8; PIECE];
    let mut off = 0u64;
    let mut digest_xor = [0u8; 20];
    while off < total {
        let want = (total - off).min(PIECE as u64) as usize;
        rx.read_exact(&mut buf[..want])
            .map_err(|e| format!("receiving at offset {off}: {e}"))?;
        let h = Sha1::digest(&buf[..want]);
        for (a, b) in digest_xor.iter_mut().zip(h.iter()) {
            *a ^= b;
        }
        file.write_all_at(&buf[..want], off)
            .map_err(|e| format!("pwrite at {off}: {e}"))?;
        off += want as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box(digest_xor);
    sender
        .join()
        .map_err(|_| "the sender thread panicked".to_string())??;
    Ok((Rate { bytes: total, secs }, path))
}

/// C2 bound: SHA-1 of `total` bytes already in memory, in 512 KiB pieces (a 64 MiB buffer
/// hashed round and round: the bytes stay in RAM, not in cache).
pub fn raw_sha1(total: u64) -> Rate {
    let mut data = vec![0u8; 64 << 20];
    fill_random(&mut data, 0x2545_f491_4f6c_dd1d);
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut acc = 0u8;
    while done < total {
        for piece in data.chunks(PIECE) {
            if done >= total {
                break;
            }
            acc ^= Sha1::digest(piece)[0];
            done += piece.len() as u64;
        }
    }
    std::hint::black_box(acc);
    Rate {
        bytes: done,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// Reference for C2: read a file that is in the page cache in 512 KiB pieces (pread) and SHA-1
/// each, one thread — what the client's hashing should come close to.
pub fn page_cache_sha1(path: &Path) -> Result<Rate, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let mut buf = vec![0u8; PIECE];
    let t0 = Instant::now();
    let mut off = 0u64;
    let mut acc = 0u8;
    while off < len {
        let want = (len - off).min(PIECE as u64) as usize;
        f.read_exact_at(&mut buf[..want], off)
            .map_err(|e| format!("pread at {off}: {e}"))?;
        acc ^= Sha1::digest(&buf[..want])[0];
        off += want as u64;
    }
    std::hint::black_box(acc);
    Ok(Rate {
        bytes: len,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// Whether the client binary exists and is the real thing (its `--help` prints a usage).
pub fn client_works(client_bin: &Path) -> Result<(), String> {
    if !client_bin.is_file() {
        return Err(format!("{} does not exist", client_bin.display()));
    }
    let out = Command::new(client_bin)
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {} --help: {e}", client_bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    if out.status.success() && text.contains("usage") {
        Ok(())
    } else {
        Err(format!(
            "{} --help printed no usage (the client is not finished yet)",
            client_bin.display()
        ))
    }
}

/// The outcome of a case that needs the client.
#[derive(Clone, Debug)]
pub enum Pending {
    /// Not measured; why.
    Pending(String),
}

/// C1: a 1 GiB download from `seeders` seeding clients (each `client ... --serve`), timed from
/// `download_file` until `show_downloads` says `[C]`. Plugs in once the client is finished.
pub fn download_from_seeders(
    client_bin: &Path,
    _tracker_bin: &Path,
    seeders: usize,
    _size: u64,
) -> Result<Rate, Pending> {
    client_works(client_bin).map_err(|why| {
        Pending::Pending(format!(
            "measured by the transfer bench — pending ({seeders} seeder(s)): {why}"
        ))
    })?;
    Err(Pending::Pending(
        "measured by the transfer bench — pending: the client case is not written yet".into(),
    ))
}

/// C2: the client's `upload_file` hashing of a 1 GiB file in the page cache.
pub fn client_hashing(client_bin: &Path, _tracker_bin: &Path) -> Result<Rate, Pending> {
    client_works(client_bin).map_err(|why| {
        Pending::Pending(format!("measured by the transfer bench — pending: {why}"))
    })?;
    Err(Pending::Pending(
        "measured by the transfer bench — pending: the client case is not written yet".into(),
    ))
}

/// C5: client-visible failover: kill the tracker a client is attached to and time until its
/// next command succeeds at the other one.
pub fn client_failover(client_bin: &Path, _tracker_bin: &Path) -> Result<f64, Pending> {
    client_works(client_bin).map_err(|why| {
        Pending::Pending(format!("measured by the transfer bench — pending: {why}"))
    })?;
    Err(Pending::Pending(
        "measured by the transfer bench — pending: the client case is not written yet".into(),
    ))
}
