//! The piece store of a download: `<dest>.part`, written and read one whole piece at a time
//! at its offset (pwrite/pread), and checked piece by piece when a download resumes.

use super::hasher::sha1;
use crate::pieces::{piece_len, Hash, PIECE_SIZE};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The temporary file beside `dest`: the destination path with `.part` appended.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".part");
    PathBuf::from(s)
}

#[derive(Debug)]
pub struct PartFile {
    file: File,
    size: u64,
}

impl PartFile {
    /// Opens `path`, creating it if needed, at length `size`. Returns whether it existed
    /// (a resume: its pieces must be checked before they count).
    pub fn open(path: &Path, size: u64) -> io::Result<(PartFile, bool)> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != size {
            file.set_len(size)?;
        }
        Ok((PartFile { file, size }, existed))
    }

    /// Writes one verified piece at its offset.
    pub fn write_piece(&self, index: usize, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len() as u64, piece_len(self.size, index as u64));
        self.file.write_all_at(data, index as u64 * PIECE_SIZE)
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
        {
            let (part, existed) = PartFile::open(&path, size).unwrap();
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
        let (part, existed) = PartFile::open(&path, size).unwrap();
        assert!(existed);
        let mut buf = Vec::new();
        let good: Vec<usize> = (0..5)
            .filter(|&i| part.check_piece(i, &hashes[i], &mut buf).unwrap())
            .collect();
        assert_eq!(good, vec![0, 2, 4]);
    }
}
