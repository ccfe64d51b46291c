//! A temporary directory removed with everything in it when dropped. Our own rather than the
//! `tempfile` crate's so that the bench and the demo (binaries of this package, not tests) need
//! no extra dependency for it.

use std::path::{Path, PathBuf};

/// A fresh directory under the system temporary directory, removed (recursively) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/groupshare-<tag>-<pid>-<random>`: the tag says who made it, should one be left
    /// behind by a process killed before it could clean up.
    pub fn new(tag: &str) -> Result<TempDir, String> {
        let p = std::env::temp_dir().join(format!(
            "groupshare-{tag}-{}-{:x}",
            std::process::id(),
            crate::runtime::seed_u64()
        ));
        std::fs::create_dir_all(&p)
            .map_err(|e| format!("cannot create temporary directory {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_is_fresh_and_gone_with_its_contents_after_drop() {
        let a = TempDir::new("unit").expect("tempdir");
        let b = TempDir::new("unit").expect("tempdir");
        assert_ne!(a.path(), b.path());
        std::fs::create_dir_all(a.path().join("sub")).expect("mkdir");
        std::fs::write(a.path().join("sub/f"), b"x").expect("write");
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
        assert!(b.path().is_dir());
    }
}
