//! The tracker's key checked before anything is sent: `TrackerTrust` (pins from
//! tracker_info, keys remembered on first use) and the link's approval of the key a handshake
//! proved.

use super::*;

/// Who the trackers are and how their keys are checked: the tracker_info entries (with their
/// pins), the known_trackers file for trust on first use, and this process's own key.
pub struct TrackerTrust {
    /// One per tracker, tracker 1 first.
    pub entries: Vec<TrackerEntry>,
    /// The tracker_info file's name, for messages that send a person to edit it.
    pub info_file: String,
    /// Remembered keys; `None` checks pins only and trusts an unpinned key without
    /// remembering it (the link's own unit tests).
    pub known: Option<KnownTrackers>,
    /// This client's static key for this run: proven to the trackers, which publish it to
    /// downloaders.
    pub identity: Identity,
}

impl TrackerTrust {
    /// Unpinned trackers, nothing remembered (tests).
    pub fn unpinned(addrs: &[SocketAddr], identity: Identity) -> TrackerTrust {
        TrackerTrust {
            entries: addrs
                .iter()
                .enumerate()
                .map(|(i, &addr)| TrackerEntry {
                    addr,
                    pin: None,
                    line: i + 1,
                })
                .collect(),
            info_file: "tracker_info".into(),
            known: None,
            identity,
        }
    }

    /// Accepts or refuses the key `tracker` proved; `Ok(Some(note))` on first use.
    pub(super) fn check(
        &mut self,
        tracker: usize,
        key: &[u8; 32],
    ) -> Result<Option<String>, String> {
        let entry = &self.entries[tracker];
        let fp = Fingerprint::of(key);
        match &mut self.known {
            Some(known) => match known.verify(entry, &self.info_file, &fp)? {
                Trust::FirstUse => Ok(Some(format!(
                    "note: first connection to tracker {} ({}): trusting its key {fp}, remembered in {}; \
                     to pin it, put the fingerprint after the address in {}",
                    tracker + 1,
                    entry.addr,
                    known.path().display(),
                    self.info_file
                ))),
                Trust::Pinned | Trust::Known => Ok(None),
            },
            None => match known_trackers::decide(entry.pin.as_ref(), None, &fp) {
                known_trackers::Decision::PinMismatch => Err(format!(
                    "refusing tracker {}: it proved key {fp}, but {} line {} pins another",
                    entry.addr, self.info_file, entry.line
                )),
                _ => Ok(None),
            },
        }
    }
}

impl TrackerLink {
    /// The handshake ended: the tracker's key must be the pinned or remembered one (or is
    /// remembered now) before `hello` and anything after it leave. False when refused (the
    /// connection is then dropped and the other tracker tried, the person told once).
    pub(super) fn approve_tracker_key(&mut self, registry: &Registry, now: Instant) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let Some(key) = conn.stream.remote_static().copied() else {
            self.fail(registry, now, true);
            return false;
        };
        match self.trust.check(self.current, &key) {
            Ok(note) => {
                if let Some(note) = note {
                    self.events.push(LinkEvent::Notice(note));
                }
                conn.stream.approve();
                true
            }
            Err(why) => {
                log::warn!("{why}");
                if !self.refused.contains(&(self.current, key)) {
                    self.refused.push((self.current, key));
                    self.events
                        .push(LinkEvent::Notice(format!("warning: {why}")));
                }
                // Nothing was sent after the handshake: the wrong tracker never saw a request.
                self.fail(registry, now, true);
                false
            }
        }
    }
}
