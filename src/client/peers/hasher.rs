//! SHA-1 of pieces, and the incremental hashing of a file being shared (`upload_file`): a few
//! pieces per tick, so the loop keeps serving while a large file is hashed.

use crate::pieces::{piece_count, piece_len, Hash, MAX_PIECES, PIECE_SIZE};
use sha1::{Digest, Sha1};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

pub fn sha1(data: &[u8]) -> Hash {
    Sha1::digest(data).into()
}

/// What one step of a hashing job found.
#[derive(Debug, PartialEq)]
pub enum HashStep {
    More,
    Done { size: u64, hashes: Arc<Vec<Hash>> },
    Failed(String),
}

#[derive(Debug)]
pub struct HashJob {
    pub id: u64,
    path: PathBuf,
    file: File,
    size: u64,
    next: u64,
    hashes: Vec<Hash>,
}

impl HashJob {
    /// Opens the file; refuses what cannot be shared (a directory, a file over 256 GiB).
    pub fn open(id: u64, path: PathBuf) -> std::io::Result<Self> {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let size = meta.len();
        if piece_count(size) > MAX_PIECES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is larger than the 256 GiB limit", path.display()),
            ));
        }
        Ok(HashJob {
            id,
            path,
            file,
            size,
            next: 0,
            hashes: Vec::with_capacity(piece_count(size) as usize),
        })
    }

    /// The file, and how many of its bytes are hashed so far (for the terminal's status line).
    pub fn progress(&self) -> (&std::path::Path, u64, u64) {
        let done = (self.next * PIECE_SIZE).min(self.size);
        (&self.path, done, self.size)
    }

    /// Hashes pieces until about `budget` bytes were read, using `buf` as scratch space.
    pub fn step(&mut self, buf: &mut Vec<u8>, budget: u64) -> HashStep {
        let total = piece_count(self.size);
        let mut spent = 0u64;
        while self.next < total && spent < budget {
            let len = piece_len(self.size, self.next) as usize;
            buf.resize(PIECE_SIZE as usize, 0);
            if let Err(e) = self
                .file
                .read_exact_at(&mut buf[..len], self.next * PIECE_SIZE)
            {
                return HashStep::Failed(format!(
                    "cannot read {} (it may have changed while being hashed): {e}",
                    self.path.display()
                ));
            }
            self.hashes.push(sha1(&buf[..len]));
            self.next += 1;
            spent += len as u64;
        }
        if self.next < total {
            return HashStep::More;
        }
        match self.file.metadata() {
            Ok(m) if m.len() == self.size => HashStep::Done {
                size: self.size,
                hashes: Arc::new(std::mem::take(&mut self.hashes)),
            },
            Ok(_) => HashStep::Failed(format!(
                "{} changed size while being hashed",
                self.path.display()
            )),
            Err(e) => HashStep::Failed(format!("cannot read {}: {e}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_every_piece_across_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(PIECE_SIZE as usize * 2 + 1))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let mut job = HashJob::open(1, path).unwrap();
        let mut buf = Vec::new();
        assert_eq!(job.step(&mut buf, 1), HashStep::More);
        assert_eq!(job.step(&mut buf, 1), HashStep::More);
        let want: Vec<Hash> = data.chunks(PIECE_SIZE as usize).map(sha1).collect();
        assert_eq!(
            job.step(&mut buf, 1),
            HashStep::Done {
                size: data.len() as u64,
                hashes: Arc::new(want)
            }
        );
    }

    #[test]
    fn an_empty_file_has_no_hashes_and_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e");
        std::fs::write(&path, b"").unwrap();
        let mut job = HashJob::open(1, path).unwrap();
        assert_eq!(
            job.step(&mut Vec::new(), 1 << 20),
            HashStep::Done {
                size: 0,
                hashes: Arc::new(vec![])
            }
        );
        assert!(HashJob::open(2, dir.path().to_path_buf()).is_err());
    }

    #[test]
    fn a_file_that_shrinks_while_hashed_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; PIECE_SIZE as usize * 2]).unwrap();
        let mut job = HashJob::open(1, path.clone()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(job.step(&mut buf, 1), HashStep::More);
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(job.step(&mut buf, 1), HashStep::Failed(_)));
    }
}
