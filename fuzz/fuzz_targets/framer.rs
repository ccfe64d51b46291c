//! Line framing: arbitrary bytes in arbitrary chunks never panic, never yield a line over the
//! limit, never buffer past it.
#![no_main]
use groupshare::net::framer::{Frame, LineFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let limit = usize::from(limit).max(1);
    let mut f = LineFramer::new(limit);
    for chunk in rest.chunks(usize::from(rest.first().copied().unwrap_or(7)).max(1)) {
        let room = f.room();
        f.push(&chunk[..chunk.len().min(room)]);
        loop {
            match f.next_line() {
                Frame::Line(l) => assert!(l.len() < limit),
                Frame::NeedMore | Frame::TooLong => break,
            }
        }
        assert!(f.pending() <= limit);
        f.compact();
    }
});
