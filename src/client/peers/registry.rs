//! The download registry: one `DownloadRecord` per download (its engine and the facts the app
//! acts on), started, looked up, cancelled and reported through `PeerSide`.

use super::*;

/// One download in the registry: the engine that runs it and what the app decided when it
/// started it.
///
/// This is the client's only download registry. The engine (`download::Download`) holds
/// everything the transfer needs; the record adds the few facts the app acts on (who started
/// it, whether it is still shared) and the description it was started with, so the app keeps
/// no second map keyed by `DownloadId` that would have to agree with this one.
pub struct DownloadRecord {
    /// The user whose session started it: its verified pieces are announced only for that user
    /// (another may log in meanwhile), and the finished file joins that user's shares.
    pub owner: String,
    /// False once the owner ran `stop_share` for the file while it was downloading: its
    /// pieces are no longer announced and the finished file is not shared.
    pub shared: bool,
    /// From the tracker's description, kept to remember the finished file as a share.
    pub size: u64,
    pub hashes: Arc<Vec<Hash>>,
    pub(super) engine: Download,
}

impl DownloadRecord {
    pub fn id(&self) -> DownloadId {
        self.engine.id
    }

    pub fn group(&self) -> &str {
        &self.engine.group
    }

    pub fn file(&self) -> &str {
        &self.engine.file
    }

    /// The final path (the data is in `<dest>.part` until complete).
    pub fn dest(&self) -> &Path {
        self.engine.dest()
    }

    /// Verifying or downloading: not complete, not failed, not cancelled.
    pub fn is_active(&self) -> bool {
        self.engine.is_active()
    }
}

impl PeerSide {
    /// Starts (or resumes from `<dest>.part`) a download. Errors (destination exists, directory
    /// not writable) are sentences for the user. Whether another download already goes to
    /// `spec.dest` is the caller's check, made once when the user names the destination (see
    /// `downloading_to`).
    pub fn start_download(
        &mut self,
        id: DownloadId,
        spec: DownloadSpec,
        now: Instant,
    ) -> Result<(), String> {
        if self.download(id).is_some() {
            return Err(format!("download {id} already exists"));
        }
        let (owner, size, hashes) = (spec.owner.clone(), spec.size, spec.hashes.clone());
        let engine = Download::start(id, spec, now, &mut self.shared.catalog)?;
        self.downloads.push(DownloadRecord {
            owner,
            shared: true,
            size,
            hashes,
            engine,
        });
        Ok(())
    }

    /// The download with this id, running or ended.
    pub fn download(&self, id: DownloadId) -> Option<&DownloadRecord> {
        self.downloads.iter().find(|d| d.id() == id)
    }

    pub fn download_mut(&mut self, id: DownloadId) -> Option<&mut DownloadRecord> {
        self.downloads.iter_mut().find(|d| d.id() == id)
    }

    /// Every download, running or ended, in the order started.
    pub fn records(&self) -> impl Iterator<Item = &DownloadRecord> {
        self.downloads.iter()
    }

    /// The running download whose final path is `dest`, if any: a second one there would
    /// share its `.part`.
    pub fn downloading_to(&self, dest: &Path) -> Option<&DownloadRecord> {
        self.downloads
            .iter()
            .find(|d| d.is_active() && d.dest() == dest)
    }

    pub(super) fn engine_mut(&mut self, id: DownloadId) -> Option<&mut Download> {
        self.download_mut(id).map(|d| &mut d.engine)
    }

    /// Cancels a running download (`show_downloads` then shows `[F]` with `reason`); its
    /// `.part` is kept. False if it was not running.
    pub fn cancel_download(
        &mut self,
        registry: &Registry,
        id: DownloadId,
        reason: String,
        now: Instant,
    ) -> bool {
        let Some(dl) = self.downloads.iter_mut().find(|d| d.id() == id) else {
            return false;
        };
        let mut ctx = self.shared.ctx(registry, now);
        dl.engine.cancel(&mut ctx, reason)
    }

    /// Adds or refreshes the sources of a download (addresses may have changed). The
    /// connections are made by the next `tick` (which has the registry); `next_deadline` says
    /// so.
    pub fn add_peers(&mut self, id: DownloadId, peers: Vec<PeerInfo>) {
        if let Some(dl) = self.engine_mut(id) {
            dl.queue_peers(peers);
        }
    }

    /// Every download in the order started.
    pub fn downloads(&self) -> Vec<DownloadStatus> {
        let now = Instant::now();
        self.downloads
            .iter()
            .map(|d| d.engine.status(now))
            .collect()
    }

    /// True while any download is still running (end of input waits for these).
    pub fn has_active_downloads(&self) -> bool {
        self.downloads.iter().any(DownloadRecord::is_active)
    }

    /// Verified pieces each peer delivered to download `id`, by user (sorted); for tests and
    /// diagnostics. Empty for an unknown id.
    pub fn peer_piece_counts(&self, id: DownloadId) -> Vec<(String, u64)> {
        self.download(id)
            .map(|d| d.engine.peer_piece_counts())
            .unwrap_or_default()
    }

    /// Pieces of download `id` found valid in its resumed `.part`; 0 for an unknown id.
    pub fn earlier_pieces(&self, id: DownloadId) -> u64 {
        self.download(id).map_or(0, |d| d.engine.earlier_pieces())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Poll;

    fn spec(owner: &str, dest: PathBuf) -> DownloadSpec {
        DownloadSpec {
            owner: owner.into(),
            group: "g".into(),
            file: "f".into(),
            size: 10,
            hashes: Arc::new(vec![[7; 20]]),
            claims: PartClaims::new(dest.with_extension("claims")),
            dest,
        }
    }

    #[test]
    fn the_registry_keeps_each_downloads_facts_and_knows_the_running_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let poll = Poll::new().unwrap();
        let registry = poll.registry();
        let (mut side, _) = PeerSide::new(
            registry,
            "127.0.0.1:0".parse().unwrap(),
            Identity::generate().unwrap(),
        )
        .unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let now = Instant::now();
        side.start_download(1, spec("alice", a.clone()), now)
            .unwrap();
        side.start_download(2, spec("bob", b.clone()), now).unwrap();
        assert!(side.start_download(2, spec("bob", b.clone()), now).is_err());

        let one = side.download(1).unwrap();
        assert_eq!(
            (one.id(), one.owner.as_str(), one.shared),
            (1, "alice", true)
        );
        assert_eq!(
            (one.group(), one.file(), one.dest()),
            ("g", "f", a.as_path())
        );
        assert_eq!((one.size, one.hashes.len()), (10, 1));
        let ids: Vec<DownloadId> = side.records().map(DownloadRecord::id).collect();
        assert_eq!(ids, vec![1, 2], "in the order started");

        side.download_mut(2).unwrap().shared = false;
        assert!(!side.download(2).unwrap().shared);
        assert_eq!(side.downloading_to(&b).map(DownloadRecord::id), Some(2));

        // An ended download stays in the registry but no longer holds its destination.
        assert!(side.cancel_download(registry, 2, "stopped".into(), now));
        assert!(side.downloading_to(&b).is_none());
        assert!(!side.download(2).unwrap().is_active());
        assert_eq!(side.downloading_to(&a).map(DownloadRecord::id), Some(1));
        assert!(side.download(3).is_none());
    }
}
