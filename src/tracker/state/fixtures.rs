//! Shared by the state's unit tests: a few users, tokens and operation builders, and the small
//! world most tests start from.

use super::{Refusal, State};
use crate::pieces::PIECE_SIZE;
use crate::tracker::op::{Op, Token};

/// A well-formed verifier (its keys are arbitrary: the state never checks a proof).
pub(super) const PW: &str = "scram-sha256$4096$00112233445566778899aabbccddeeff$\
                            0000000000000000000000000000000000000000000000000000000000000000$\
                            1111111111111111111111111111111111111111111111111111111111111111";
pub(super) const ADDR: &str = "127.0.0.1:7000";

pub(super) fn tok(n: u8) -> Token {
    format!("{n:032x}")
}

pub(super) fn ok(st: &mut State, op: Op) -> String {
    match st.apply(None, &op) {
        Ok(r) => {
            assert_eq!(st.check_invariants(), Ok(()), "after {}", op.encode());
            r.words().to_string()
        }
        Err(e) => panic!("{} refused: {e:?}", op.encode()),
    }
}

pub(super) fn refused(st: &mut State, op: Op) -> Refusal {
    let before = st.clone();
    match st.apply(None, &op) {
        Ok(r) => panic!("{} accepted: {r:?}", op.encode()),
        Err(e) => {
            assert_eq!(*st, before, "a refused op changed the state");
            e
        }
    }
}

pub(super) fn create_user(user: &str) -> Op {
    Op::CreateUser {
        user: user.into(),
        verifier: PW.into(),
    }
}

pub(super) fn login(n: u8, user: &str, tracker: u8) -> Op {
    Op::Login {
        token: tok(n),
        user: user.into(),
        addr: format!("127.0.0.1:{}", 7000 + u16::from(n)),
        tracker,
        secret: secret(n),
        key: "ab".repeat(32),
    }
}

/// The session secret `login(n, ..)` gives its session.
pub(super) fn secret(n: u8) -> String {
    format!("{n:064x}")
}

pub(super) fn create_group(n: u8, group: &str) -> Op {
    Op::CreateGroup {
        token: tok(n),
        group: group.into(),
    }
}

pub(super) fn join(n: u8, group: &str) -> Op {
    Op::JoinGroup {
        token: tok(n),
        group: group.into(),
    }
}

pub(super) fn leave(n: u8, group: &str) -> Op {
    Op::LeaveGroup {
        token: tok(n),
        group: group.into(),
    }
}

pub(super) fn accept(n: u8, group: &str, user: &str) -> Op {
    Op::AcceptRequest {
        token: tok(n),
        group: group.into(),
        user: user.into(),
    }
}

/// Content variant `c` of a 3-piece file.
pub(super) fn upload(n: u8, group: &str, file: &str, c: u8) -> Op {
    Op::Upload {
        token: tok(n),
        group: group.into(),
        file: file.into(),
        size: 2 * PIECE_SIZE + 1,
        hashes: vec![[c; 20], [c + 1; 20], [c + 2; 20]],
    }
}

pub(super) fn have(n: u8, group: &str, file: &str, pieces: &[usize]) -> Op {
    Op::Have {
        token: tok(n),
        group: group.into(),
        file: file.into(),
        pieces: pieces.to_vec(),
    }
}

pub(super) fn stop(n: u8, group: &str, file: &str) -> Op {
    Op::StopShare {
        token: tok(n),
        group: group.into(),
        file: file.into(),
    }
}

/// alice (token 1, tracker 1) owns g; bob (token 2, tracker 2) is a member; carol
/// (token 3, tracker 1) is logged in but not a member.
pub(super) fn world() -> State {
    let mut st = State::new();
    for u in ["alice", "bob", "carol"] {
        ok(&mut st, create_user(u));
    }
    ok(&mut st, login(1, "alice", 1));
    ok(&mut st, login(2, "bob", 2));
    ok(&mut st, login(3, "carol", 1));
    ok(&mut st, create_group(1, "g"));
    ok(&mut st, join(2, "g"));
    ok(&mut st, accept(1, "g", "bob"));
    st
}

pub(super) fn round_trip(st: &State) -> State {
    let lines = st.snapshot_lines();
    match State::from_snapshot_lines(lines.iter().map(String::as_str)) {
        Ok(back) => back,
        Err(e) => panic!("snapshot refused: {e}\n{}", lines.join("\n")),
    }
}
