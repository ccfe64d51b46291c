//! Local paths the user names: the file `upload_file` shares and the destination of
//! `download_file`. Both are checked here, once, when the command is given, so a mistake is
//! an error before anything is asked of the tracker.

use crate::client::shares;
use crate::names::{self, NameKind};
use std::path::{Path, PathBuf};

/// Checks a path given to `upload_file`: exists, regular, readable, and its file name obeys
/// the naming rules. Returns the absolute path, file name, size and modification time.
pub fn check_upload_path(path: &Path) -> Result<(PathBuf, String, u64, u128), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown} does not exist"),
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} cannot be read (permission denied)")
        }
        _ => format!("cannot read {shown}: {e}"),
    })?;
    if meta.is_dir() {
        return Err(format!(
            "{shown} is a directory; only regular files can be shared"
        ));
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} cannot be read (permission denied)")
        }
        _ => format!("cannot read {shown}: {e}"),
    })?;
    let abs = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve {shown}: {e}"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{shown} has no usable file name"))?
        .to_string();
    names::check(NameKind::File, &name)
        .map_err(|e| format!("{e} (rename the file to share it)"))?;
    let (size, mtime) = shares::stamp(&meta);
    Ok((abs, name, size, mtime))
}

/// Where a download of `file` to `dest` goes: into `dest` if it is a directory, otherwise at
/// `dest`. An existing file there, or a missing parent directory, is an error.
pub fn resolve_destination(dest: &Path, file: &str) -> Result<PathBuf, String> {
    let target = if dest.is_dir() {
        dest.join(file)
    } else {
        dest.to_path_buf()
    };
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(format!(
            "{} already exists; choose another destination",
            target.display()
        ));
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(format!("the directory {} does not exist", parent.display()));
    }
    let parent = std::fs::canonicalize(&parent)
        .map_err(|e| format!("cannot use {}: {e}", parent.display()))?;
    Ok(parent.join(target.file_name().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_is_resolved_and_existing_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let got = resolve_destination(d, "f.bin").unwrap();
        assert_eq!(got, std::fs::canonicalize(d).unwrap().join("f.bin"));
        let got = resolve_destination(&d.join("other name"), "f.bin").unwrap();
        assert!(got.ends_with("other name"));
        std::fs::write(d.join("f.bin"), b"x").unwrap();
        assert!(resolve_destination(d, "f.bin")
            .unwrap_err()
            .contains("already exists"));
        assert!(resolve_destination(&d.join("f.bin"), "g")
            .unwrap_err()
            .contains("already exists"));
        assert!(resolve_destination(&d.join("nodir/x"), "g")
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn upload_paths_are_checked_locally() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check_upload_path(&d.join("nope"))
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_upload_path(d).unwrap_err().contains("directory"));
        std::fs::write(d.join("bad name"), b"x").unwrap();
        assert!(check_upload_path(&d.join("bad name"))
            .unwrap_err()
            .contains("file name"));
        std::fs::write(d.join("ok.txt"), b"hello").unwrap();
        let (abs, name, size, _) = check_upload_path(&d.join("ok.txt")).unwrap();
        assert!(abs.is_absolute());
        assert_eq!((name.as_str(), size), ("ok.txt", 5));
    }
}
