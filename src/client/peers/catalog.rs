//! What this client serves: `(group, file)` → where the data is and which pieces are verified.
//! Shares hold every piece; downloads in progress hold the pieces verified so far in their
//! `.part` file. The seeder looks requests up here and nowhere else, so a path never comes
//! from the wire.

use crate::pieces::PieceSet;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    /// Pieces verified on disk at `path`; its length is the file's piece count.
    pub have: PieceSet,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// group → file → entry: nested so a lookup borrows the request's words.
    groups: HashMap<String, HashMap<String, Entry>>,
}

impl Catalog {
    pub fn get(&self, group: &str, file: &str) -> Option<&Entry> {
        self.groups.get(group)?.get(file)
    }

    /// Serves `(group, file)` from `entry`, replacing what was there.
    pub fn insert(&mut self, group: &str, file: &str, entry: Entry) {
        self.groups
            .entry(group.to_string())
            .or_default()
            .insert(file.to_string(), entry);
    }

    pub fn remove(&mut self, group: &str, file: &str) {
        if let Some(files) = self.groups.get_mut(group) {
            files.remove(file);
            if files.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// A download verified piece `i` of the file at `path`: serve it. Ignored if the entry
    /// now points elsewhere (the user shared another copy meanwhile).
    pub fn mark(&mut self, group: &str, file: &str, path: &std::path::Path, i: usize) {
        if let Some(e) = self.groups.get_mut(group).and_then(|f| f.get_mut(file)) {
            if e.path == path {
                e.have.insert(i);
            }
        }
    }
}
