//! The replicated write path under pipelining, at either tracker: replies leave as soon as
//! their entry is committed (before the next batch's fsync), the follower acknowledges entries
//! before it applies them, and the leader's `commit` rides on later entries. None of that may
//! reorder a client's replies or let a read miss the write in front of it.

mod common;
use common::*;

const CONNS: usize = 4;
const ROUNDS: u64 = 50;

#[test]
fn pipelined_writes_and_reads_at_either_tracker_see_their_own_writes_in_order() {
    let cl = Cluster::start(2);
    for n in [1usize, 2] {
        let mut conns: Vec<Conn> = (0..CONNS)
            .map(|i| {
                let mut c = cl.conn(n);
                c.user(&format!("w{n}u{i}"));
                c
            })
            .collect();
        // Everything at once: each connection's writes and reads share the turns and fsyncs
        // of the other connections'.
        for (i, c) in conns.iter_mut().enumerate() {
            let mut text = String::new();
            for r in 0..ROUNDS {
                let g = format!("t{n}c{i}r{r}");
                text += &format!("{} {}\n", 1000 + 2 * r, v::create_group(&g).text());
                text += &format!("{} {}\n", 1001 + 2 * r, Verb::ListGroups.text());
            }
            c.send_raw(text.as_bytes());
        }
        for (i, c) in conns.iter_mut().enumerate() {
            for r in 0..ROUNDS {
                let g = format!("t{n}c{i}r{r}");
                let (tag, reply) = c.read_typed().expect("the write's reply");
                let text = reply.encode(tag);
                assert_eq!(tag, 1000 + 2 * r, "replies in request order: {text}");
                assert!(text.starts_with(&format!("{tag} ok")), "{g}: {text}");
                let (tag, reply) = c.read_typed().expect("the read's reply");
                let text = reply.encode(tag);
                assert_eq!(tag, 1001 + 2 * r, "replies in request order: {text}");
                assert!(
                    text.lines().skip(1).any(|l| l.split(' ').any(|w| w == g)),
                    "tracker {n}: the list behind the write of {g} misses it: {text}"
                );
            }
        }
    }
    cl.wait_same_digest();
}
