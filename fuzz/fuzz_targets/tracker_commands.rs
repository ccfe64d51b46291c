//! The tracker's command handling without sockets: request lines are parsed; those that parse
//! into writes become operations applied to a state, whose invariants must hold after every
//! step; operations also round-trip through their journal encoding.
#![no_main]
use groupshare::protocol::tracker::{parse, Verb};
use groupshare::tracker::op::{Entry, Op};
use groupshare::tracker::state::State;
use libfuzzer_sys::fuzz_target;

const TOKENS: [&str; 3] = [
    "00000000000000000000000000000001",
    "00000000000000000000000000000002",
    "00000000000000000000000000000003",
];

fuzz_target!(|data: &[u8]| {
    let mut state = State::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let _ = Entry::decode(&String::from_utf8_lossy(line));
        let Ok(req) = parse(line) else { continue };
        let token = TOKENS[i % 3].to_string();
        let op = match req.verb {
            Verb::CreateUser { user, .. } => Op::CreateUser {
                user,
                pw_hash: "pbkdf2-sha256$1$00$00".into(),
            },
            Verb::Login { user, addr, .. } => Op::Login {
                token,
                user,
                addr,
                tracker: 1,
                secret: "00".repeat(32),
                key: "ab".repeat(32),
            },
            Verb::CreateGroup { group } => Op::CreateGroup { token, group },
            Verb::JoinGroup { group } => Op::JoinGroup { token, group },
            Verb::LeaveGroup { group } => Op::LeaveGroup { token, group },
            Verb::AcceptRequest { group, user } => Op::AcceptRequest { token, group, user },
            Verb::Have { group, file, pieces } => Op::Have {
                token,
                group,
                file,
                pieces,
            },
            Verb::StopShare { group, file } => Op::StopShare { token, group, file },
            Verb::Logout => Op::Logout { token },
            _ => continue,
        };
        let encoded = op.encode();
        if let Ok(back) = Op::decode(&encoded) {
            assert_eq!(back, op);
        }
        let _ = state.apply(None, &op);
        if let Err(e) = state.check_invariants() {
            panic!("invariant broken after {encoded}: {e}");
        }
    }
});
