//! The piece store of a download: `<dest>.part`, written and read one whole piece at a time
//! at its offset (pwrite/pread), and checked piece by piece when a download resumes.
//!
//! Durability: each piece's writeback starts as soon as it is written
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so the `fdatasync` before
//! the rename into place has little left to do; after the rename the directory is fsynced.
//! A power loss therefore never leaves a destination file whose data is not on disk.
//!
//! Ownership: a `.part` beside the destination may belong to another program (a browser's
//! partial download). This client only ever writes a `.part` it claimed itself: a claim is a
//! small file in the user's state directory naming the `.part` and its inode, written when the
//! `.part` is created and removed once the download is renamed into place. An unclaimed
//! `.part`, or one whose inode changed, is refused, and a `.part` that is a symbolic link is
//! never followed.

use super::hasher::sha1;
use crate::pieces::{piece_len, to_hex, Hash, PIECE_SIZE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The temporary file beside `dest`: the destination path with `.part` appended.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".part");
    PathBuf::from(s)
}

/// The `.part` files this client's user made, as claim files in one directory
/// (`<state>/<user>/parts/`), one per `.part`, named by the SHA-1 of its absolute path.
#[derive(Clone, Debug)]
pub struct PartClaims {
    dir: PathBuf,
}

/// What a claim file holds: `<dev> <ino> <birth-ns> <absolute path>`. The birth time tells a
/// new file from an old one that had the same inode number (file systems reuse them at once);
/// where the file system keeps none it is 0 and the inode alone decides.
#[derive(Debug, PartialEq, Eq)]
struct Claim {
    dev: u64,
    ino: u64,
    born: u128,
}

impl Claim {
    fn of(meta: &fs::Metadata) -> Claim {
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Claim {
            dev: meta.dev(),
            ino: meta.ino(),
            born,
        }
    }
}

impl PartClaims {
    pub fn new(dir: PathBuf) -> Self {
        PartClaims { dir }
    }

    /// The claim file of `part`, and the absolute path it is keyed by (the same `.part` named
    /// from another working directory is the same claim).
    fn claim_path(&self, part: &Path) -> (PathBuf, PathBuf) {
        let abs = std::path::absolute(part).unwrap_or_else(|_| part.to_path_buf());
        (
            self.dir.join(to_hex(&sha1(abs.as_os_str().as_bytes()))),
            abs,
        )
    }

    fn read(&self, part: &Path) -> Option<Claim> {
        let (path, part) = self.claim_path(part);
        let text = fs::read(path).ok()?;
        let mut words = text.splitn(4, |&b| b == b' ');
        let dev = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
        let ino = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
        let born = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
        // The path is stored so a person can read what the claim is for; a claim for another
        // path (a hash collision) is not ours.
        (words.next()? == part.as_os_str().as_bytes()).then_some(Claim { dev, ino, born })
    }

    /// True if `part`, as `meta` describes it, is the file this client created.
    fn owns(&self, part: &Path, meta: &fs::Metadata) -> bool {
        self.read(part) == Some(Claim::of(meta))
    }

    /// Records that this client created `part` (durably: the claim must survive a crash
    /// that the `.part` survives, or the resume would be refused).
    fn claim(&self, part: &Path, meta: &fs::Metadata) -> io::Result<()> {
        let (path, part) = self.claim_path(part);
        let c = Claim::of(meta);
        let mut text = format!("{} {} {} ", c.dev, c.ino, c.born).into_bytes();
        text.extend_from_slice(part.as_os_str().as_bytes());
        write_durably(&path, &text)
    }

    /// Forgets `part` (renamed into place, or removed).
    pub fn release(&self, part: &Path) {
        let _ = fs::remove_file(self.claim_path(part).0);
    }
}

/// Writes `data` to `path` so that a crash or power loss leaves the old or the new content:
/// a temporary file in the same directory (0600), fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // The client's state: private to its user (0700), like every file in it (0600).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        // Left by a crashed process with our pid (perhaps with other permissions): made anew,
        // so the mode below is the one it has from its first byte.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync of a directory, so that a rename or a new name in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[derive(Debug)]
pub struct PartFile {
    file: File,
    size: u64,
}

impl PartFile {
    /// Opens `path`, creating it if needed, at length `size`. Returns whether it existed
    /// (a resume: its pieces must be checked before they count). An existing `path` must be a
    /// regular file that `claims` says this client created.
    pub fn open(path: &Path, size: u64, claims: &PartClaims) -> io::Result<(PartFile, bool)> {
        let refuse = |why: &str| io::Error::new(io::ErrorKind::AlreadyExists, why.to_string());
        let existing = match fs::symlink_metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let file = match &existing {
            Some(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(
                    "it is a symbolic link, which this client never follows",
                ))
            }
            Some(meta) if !meta.is_file() => return Err(refuse("it is not a regular file")),
            Some(meta) if !claims.owns(path, meta) => {
                return Err(refuse(
                    "it exists and this client did not create it (another program's partial \
                     download?); move it away or choose another destination",
                ))
            }
            Some(meta) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)?;
                // Replaced between the check and the open: not the file we claimed.
                let now = file.metadata()?;
                if Claim::of(&now) != Claim::of(meta) {
                    return Err(refuse("it was replaced while being opened"));
                }
                file
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)?;
                if let Err(e) = claims.claim(path, &file.metadata()?) {
                    drop(file);
                    let _ = fs::remove_file(path);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot record the download in the state directory: {e}"),
                    ));
                }
                file
            }
        };
        if file.metadata()?.len() != size {
            file.set_len(size)?;
        }
        Ok((PartFile { file, size }, existing.is_some()))
    }

    /// Writes one verified piece at its offset and starts its writeback (without waiting), so
    /// that `sync` at the end has little left to write.
    pub fn write_piece(&self, index: usize, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len() as u64, piece_len(self.size, index as u64));
        let offset = index as u64 * PIECE_SIZE;
        self.file.write_all_at(data, offset)?;
        // SAFETY: sync_file_range on a descriptor we own, over the range just written. Only a
        // hint: a file system that does not support it loses nothing, `sync` still flushes.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset as libc::off64_t,
                data.len() as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        Ok(())
    }

    /// Waits until every written piece is on disk (before the rename into place).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Reads piece `index` into `buf` (resized to the piece's length).
    pub fn read_piece(&self, index: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        let len = piece_len(self.size, index as u64) as usize;
        buf.resize(len, 0);
        self.file.read_exact_at(buf, index as u64 * PIECE_SIZE)
    }

    /// True if piece `index` on disk matches `hash` (the resume check, one piece).
    pub fn check_piece(&self, index: usize, hash: &Hash, buf: &mut Vec<u8>) -> io::Result<bool> {
        self.read_piece(index, buf)?;
        Ok(sha1(buf) == *hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_path_appends_part() {
        assert_eq!(
            part_path(Path::new("/a/b.iso")),
            PathBuf::from("/a/b.iso.part")
        );
    }

    #[test]
    fn resume_check_finds_exactly_the_good_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let size = PIECE_SIZE * 4 + 1;
        let data: Vec<u8> = (0..size as usize).map(|i| (i * 7 % 256) as u8).collect();
        let hashes: Vec<Hash> = data.chunks(PIECE_SIZE as usize).map(sha1).collect();
        let path = dir.path().join("x.part");
        let claims = PartClaims::new(dir.path().join("claims"));
        {
            let (part, existed) = PartFile::open(&path, size, &claims).unwrap();
            assert!(!existed);
            for i in [0usize, 2, 4] {
                let s = i * PIECE_SIZE as usize;
                part.write_piece(i, &data[s..(s + PIECE_SIZE as usize).min(data.len())])
                    .unwrap();
            }
            // A piece with one wrong byte is not good.
            let mut bad = data[PIECE_SIZE as usize..2 * PIECE_SIZE as usize].to_vec();
            bad[100] ^= 1;
            part.write_piece(1, &bad).unwrap();
        }
        let (part, existed) = PartFile::open(&path, size, &claims).unwrap();
        assert!(existed);
        let mut buf = Vec::new();
        let good: Vec<usize> = (0..5)
            .filter(|&i| part.check_piece(i, &hashes[i], &mut buf).unwrap())
            .collect();
        assert_eq!(good, vec![0, 2, 4]);
    }

    #[test]
    fn a_part_this_client_did_not_create_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let claims = PartClaims::new(dir.path().join("claims"));
        let path = dir.path().join("movie.part");
        std::fs::write(&path, b"a browser's partial download").unwrap();
        let err = PartFile::open(&path, 1 << 20, &claims).unwrap_err();
        assert!(err.to_string().contains("did not create it"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"a browser's partial download"
        );
    }

    #[test]
    fn a_claimed_part_resumes_until_it_is_replaced_or_released() {
        let dir = tempfile::tempdir().unwrap();
        let claims = PartClaims::new(dir.path().join("claims"));
        let path = dir.path().join("x.part");
        let (part, existed) = PartFile::open(&path, 10, &claims).unwrap();
        assert!(!existed);
        drop(part);
        let (_, existed) = PartFile::open(&path, 10, &claims).unwrap();
        assert!(existed, "our own .part resumes");
        // Another program puts a new file under the same name: a new inode, not ours.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"other").unwrap();
        assert!(PartFile::open(&path, 10, &claims).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"other");
        // Released (the download finished): the name is free again, and a new file there is
        // someone else's.
        std::fs::remove_file(&path).unwrap();
        let (part, _) = PartFile::open(&path, 10, &claims).unwrap();
        drop(part);
        claims.release(&path);
        assert!(PartFile::open(&path, 10, &claims).is_err());
    }

    #[test]
    fn a_symlinked_part_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let claims = PartClaims::new(dir.path().join("claims"));
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let path = dir.path().join("x.part");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = PartFile::open(&path, 1 << 20, &claims).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn durable_writes_replace_whole_files_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f");
        write_durably(&path, b"one").unwrap();
        write_durably(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }
}
