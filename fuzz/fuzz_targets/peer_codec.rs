//! The client's peer protocol (PROTOCOL.md §3) at the edge: arbitrary request and reply lines
//! never panic; whatever parses stays within the protocol's bounds and re-encodes to a line
//! that parses to the same message.
#![no_main]
use groupshare::names::{self, NameKind};
use groupshare::pieces::{MAX_PIECES, PIECE_SIZE};
use groupshare::protocol::peer::{Ranges, Reply, Request, MAX_RANGES_CHARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Some(req) = Request::parse(line) {
            let (group, file, index) = match &req {
                Request::Want { group, file, pass } | Request::Watch { group, file, pass } => {
                    if let Some(p) = pass {
                        assert!(names::is_valid(NameKind::User, &p.downloader));
                    }
                    (group, file, 0)
                }
                Request::Get { group, file, index } => (group, file, *index),
                Request::Has(r) => {
                    ranges_in_bounds(r);
                    assert_eq!(Request::parse(req.encode().as_bytes()).as_ref(), Some(&req));
                    continue;
                }
            };
            // Names from the wire are never paths: the seeder looks them up, nothing more.
            assert!(names::is_valid(NameKind::Group, group), "{group:?}");
            assert!(names::is_valid(NameKind::File, file), "{file:?}");
            assert!(!file.contains('/') && file != ".." && file != ".");
            assert!((index as u64) < MAX_PIECES);
            let line = req.encode();
            assert!(!line.contains('\n'));
            assert_eq!(Request::parse(line.as_bytes()).as_ref(), Some(&req));
        }
        if let Some(reply) = Reply::parse(line) {
            match &reply {
                Reply::Have { have } => assert!(have.len() as u64 <= MAX_PIECES),
                Reply::Piece { index, len } => {
                    assert!((*index as u64) < MAX_PIECES);
                    assert!(*len as u64 <= PIECE_SIZE);
                }
                Reply::Err(reason) => assert!(!reason.is_empty() && !reason.contains('\n')),
                Reply::Has(r) => ranges_in_bounds(r),
            }
            let line = reply.encode();
            assert_eq!(Reply::parse(line.as_bytes()).as_ref(), Some(&reply));
        }
    }
});

/// A `has` range list from the wire: bounded, and only digits and separators, so it can never
/// name a path; the receiver checks the indices against its piece count.
fn ranges_in_bounds(r: &Ranges) {
    assert!(!r.0.is_empty() && r.0.len() <= MAX_RANGES_CHARS);
    assert!(r.0.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b','));
    let _ = r.to_set(1024);
}
