//! What this client serves: `(group, file)` → where the data is and which pieces are verified.
//! Shares hold every piece; downloads in progress hold the pieces verified so far in their
//! `.part` file. The seeder looks requests up here and nowhere else, so a path never comes
//! from the wire. A file this client shared itself carries the `Crowd` of downloaders it is
//! super-seeding to; pieces downloads verify are queued here to be announced to watchers.

use super::superseed::Crowd;
use crate::pieces::PieceSet;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    /// Pieces verified on disk at `path`; its length is the file's piece count.
    pub have: PieceSet,
    /// This client shared the file itself (`upload_file` or a share resumed at login), so it
    /// super-seeds it; a finished download serves plainly.
    pub first_seed: bool,
    /// The downloaders watching a super-seeded file; `None` while nobody watches.
    pub crowd: Option<Crowd>,
}

impl Entry {
    /// A whole file this client shared itself.
    pub fn share(path: PathBuf, size: u64, npieces: usize) -> Entry {
        Entry {
            path,
            size,
            have: PieceSet::full(npieces),
            first_seed: true,
            crowd: None,
        }
    }

    /// A download's file: `have` grows as pieces are verified.
    pub fn download(path: PathBuf, size: u64, have: PieceSet) -> Entry {
        Entry {
            path,
            size,
            have,
            first_seed: false,
            crowd: None,
        }
    }

    /// True if watchers of this file are super-seeded.
    pub fn super_seeds(&self) -> bool {
        self.first_seed && self.have.is_full()
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// group → file → entry: nested so a lookup borrows the request's words.
    groups: HashMap<String, HashMap<String, Entry>>,
    /// Pieces downloads verified since the last `take_verified`: their watchers are told.
    verified: Vec<(String, String, usize)>,
}

impl Catalog {
    pub fn get(&self, group: &str, file: &str) -> Option<&Entry> {
        self.groups.get(group)?.get(file)
    }

    pub fn get_mut(&mut self, group: &str, file: &str) -> Option<&mut Entry> {
        self.groups.get_mut(group)?.get_mut(file)
    }

    /// Every super-seeded file with watchers.
    pub fn crowds_mut(&mut self) -> impl Iterator<Item = &mut Crowd> {
        self.groups
            .values_mut()
            .flat_map(|f| f.values_mut())
            .filter_map(|e| e.crowd.as_mut())
    }

    /// When a crowd next has a stalled watcher to act on.
    pub fn crowd_deadline(&self) -> Option<Instant> {
        self.groups
            .values()
            .flat_map(|f| f.values())
            .filter_map(|e| e.crowd.as_ref()?.next_deadline())
            .min()
    }

    /// Pieces verified by downloads since the last call, to announce to their watchers.
    pub fn take_verified(&mut self) -> Vec<(String, String, usize)> {
        std::mem::take(&mut self.verified)
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
            if e.path == path && e.have.insert(i) {
                self.verified.push((group.to_string(), file.to_string(), i));
            }
        }
    }
}
