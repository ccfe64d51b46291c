//! The state's invariants, checked after every operation in tests and after every snapshot
//! load, and the property test that random operations keep them.

use super::State;
use crate::auth::scram::Verifier;
use crate::names::{self, NameKind};
use crate::pieces::{self, MAX_PIECES};
use crate::tracker::op;
use std::collections::BTreeSet;

impl State {
    /// Everything the state promises about itself: names valid; owners, members and
    /// requesters are users; no one is both member and requester; sharers are members with
    /// piece sets of the file's size; every file has a seeder; the session index matches the
    /// sessions; the dedup table is within its bound and in step with its order. `apply` keeps
    /// them (tested below); a loaded snapshot is refused unless they hold.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.usage != super::Usage::of(self.groups.values()) {
            return Err("the quota usage counts do not match the groups".to_string());
        }
        for (u, h) in &self.users {
            names::check(NameKind::User, u)?;
            if Verifier::parse(h).is_none() {
                return Err(format!("user {u} has a malformed password verifier"));
            }
        }
        for (gname, g) in &self.groups {
            names::check(NameKind::Group, gname)?;
            let members: BTreeSet<&String> = g.members.iter().collect();
            if members.len() != g.members.len() {
                return Err(format!("group {gname} lists a member twice"));
            }
            if !members.contains(&g.owner) {
                return Err(format!("the owner of group {gname} is not a member"));
            }
            if let Some(m) = g.members.iter().find(|m| !self.users.contains_key(*m)) {
                return Err(format!("member {m} of group {gname} is not a user"));
            }
            let requests: BTreeSet<&String> = g.requests.iter().collect();
            if requests.len() != g.requests.len() {
                return Err(format!("group {gname} has a duplicate request"));
            }
            if let Some(r) = g.requests.iter().find(|r| members.contains(r)) {
                return Err(format!("member {r} of group {gname} also has a request"));
            }
            if let Some(r) = g.requests.iter().find(|r| !self.users.contains_key(*r)) {
                return Err(format!("requester {r} of group {gname} is not a user"));
            }
            for (fname, f) in &g.files {
                names::check(NameKind::File, fname)?;
                let n = pieces::piece_count(f.size);
                if n > MAX_PIECES || f.hashes.len() as u64 != n {
                    return Err(format!("file {fname} in {gname} has the wrong hash count"));
                }
                for (u, set) in &f.sharers {
                    if !members.contains(u) {
                        return Err(format!("sharer {u} of {fname} is not in group {gname}"));
                    }
                    if set.len() != f.hashes.len() {
                        return Err(format!("piece set of {u} for {fname} has the wrong size"));
                    }
                    if set.is_empty() && !set.is_full() {
                        return Err(format!("{u} shares no pieces of {fname}"));
                    }
                }
                if f.seeders() == 0 {
                    return Err(format!("file {fname} in {gname} has no seeder"));
                }
            }
        }
        if self.user_sessions.len() != self.sessions.len() {
            return Err("the session index is out of step with the sessions".to_string());
        }
        for (t, s) in &self.sessions {
            if !op::is_token(t) {
                return Err("a session token is malformed".to_string());
            }
            if !op::is_secret(&s.secret) {
                return Err("a session secret is malformed".to_string());
            }
            if !self.users.contains_key(&s.user) {
                return Err(format!("a session belongs to unknown user {}", s.user));
            }
            if self.user_sessions.get(&s.user) != Some(t) {
                return Err(format!("the session index is wrong for user {}", s.user));
            }
            op::check_addr(&s.addr)?;
            if let Some(n) = s.tracker {
                op::check_tracker(n)?;
            }
        }
        self.dedup.check()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{create_user, round_trip, tok, world, ADDR};
    use super::*;
    use crate::pieces::PIECE_SIZE;
    use crate::tracker::op::{Op, Origin};
    use proptest::prelude::*;

    #[test]
    fn a_broken_state_is_caught() {
        let mut st = world();
        assert_eq!(st.check_invariants(), Ok(()));
        if let Some(g) = st.groups.get_mut("g") {
            g.owner = "carol".into();
        }
        assert!(st.check_invariants().is_err(), "owner not a member");
        let mut st = world();
        if let Some(g) = st.groups.get_mut("g") {
            g.requests.push("bob".into());
        }
        assert!(st.check_invariants().is_err(), "member with a request");
        let mut st = world();
        st.user_sessions.remove("bob");
        assert!(st.check_invariants().is_err(), "session index out of step");
    }

    // The proptest world: a small alphabet so random operations collide often.
    const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
    const GROUPS: [&str; 2] = ["g0", "g1"];
    const FILES: [&str; 2] = ["f0", "f1"];

    fn arb_op() -> impl Strategy<Value = Op> {
        let user = || prop::sample::select(&USERS[..]).prop_map(String::from);
        let group = || prop::sample::select(&GROUPS[..]).prop_map(String::from);
        let file = || prop::sample::select(&FILES[..]).prop_map(String::from);
        let token = || (0u8..4).prop_map(tok);
        prop_oneof![
            2 => user().prop_map(|u| create_user(&u)),
            3 => (token(), user(), 1u8..=2).prop_map(|(t, u, tr)| Op::Login {
                secret: format!("{:064x}", t.len()),
                token: t,
                user: u,
                addr: ADDR.into(),
                tracker: tr,
                key: "ab".repeat(32),
            }),
            1 => (token(), 1u8..=2).prop_map(|(t, tr)| Op::Attach {
                token: t,
                addr: ADDR.into(),
                tracker: tr,
                key: "ab".repeat(32),
            }),
            1 => token().prop_map(|t| Op::Logout { token: t }),
            1 => (1u8..=2).prop_map(|tracker| Op::Detach { tracker }),
            2 => (token(), group()).prop_map(|(t, g)| Op::CreateGroup { token: t, group: g }),
            2 => (token(), group()).prop_map(|(t, g)| Op::JoinGroup { token: t, group: g }),
            1 => (token(), group()).prop_map(|(t, g)| Op::LeaveGroup { token: t, group: g }),
            3 => (token(), group(), user())
                .prop_map(|(t, g, u)| Op::AcceptRequest { token: t, group: g, user: u }),
            3 => (token(), group(), file(), 0u8..3).prop_map(|(t, g, f, c)| {
                if c == 2 {
                    Op::Upload { token: t, group: g, file: f, size: 0, hashes: vec![] }
                } else {
                    Op::Upload {
                        token: t,
                        group: g,
                        file: f,
                        size: 2 * PIECE_SIZE + 1,
                        hashes: vec![[c; 20], [c + 1; 20], [c + 2; 20]],
                    }
                }
            }),
            3 => (token(), group(), file(), prop::collection::btree_set(0usize..4, 1..3))
                .prop_map(|(t, g, f, p)| Op::Have {
                    token: t,
                    group: g,
                    file: f,
                    pieces: p.into_iter().collect(),
                }),
            2 => (token(), group(), file())
                .prop_map(|(t, g, f)| Op::StopShare { token: t, group: g, file: f }),
            1 => (0u64..5, any::<bool>()).prop_map(|(term, solo)| Op::Term { term, solo }),
            // Small limits, so that quotas are hit (and refusals checked) within a run.
            1 => (1u64..6, 1u64..4, 1u64..12).prop_map(|(n, per, pieces)| Op::Limits(
                crate::tracker::state::Limits {
                    users: n,
                    groups: n,
                    files: n,
                    pieces,
                    groups_per_user: per,
                    files_per_group: per,
                    requests_per_group: per,
                }
            )),
            // A split's writes applied again as their user (healing), sessions carried over.
            2 => (user(), token(), group(), 0u8..3).prop_map(|(u, t, g, k)| Op::Redo {
                user: u,
                op: Box::new(match k {
                    0 => Op::CreateGroup { token: t, group: g },
                    1 => Op::JoinGroup { token: t, group: g },
                    _ => Op::LeaveGroup { token: t, group: g },
                }),
            }),
            1 => (user(), token(), 1u8..=2).prop_map(|(u, t, tr)| Op::Redo {
                user: u.clone(),
                op: Box::new(Op::Login {
                    secret: format!("{:064x}", t.len()),
                    key: "ab".repeat(32),
                    token: t,
                    user: u,
                    addr: ADDR.into(),
                    tracker: tr,
                }),
            }),
            1 => (prop::option::of(0u64..3), prop::option::of(user())).prop_map(|(i, u)| {
                Op::Notice { instance: i, user: u, text: "a write was undone".into() }
            }),
            1 => (prop::option::of(0u64..3), prop::option::of(user()))
                .prop_map(|(instance, user)| Op::NoticeSeen { instance, user }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_operations_keep_the_invariants(
            ops in prop::collection::vec((arb_op(), prop::option::of(0u64..3)), 1..80),
        ) {
            let mut st = State::new();
            let mut twin = State::new();
            for (i, (op, inst)) in ops.iter().enumerate() {
                let origin = inst.map(|instance| Origin { instance, tag: i as u64 });
                let before = st.clone();
                let r = st.apply(origin, op);
                prop_assert_eq!(st.check_invariants(), Ok(()), "after {}", op.encode());
                if r.is_err() {
                    prop_assert_eq!(&st, &before, "refused {} changed the state", op.encode());
                }
                // Determinism: a replica applying the decoded text agrees.
                let decoded = Op::decode(&op.encode());
                prop_assert_eq!(decoded.as_ref(), Ok(op));
                prop_assert_eq!(twin.apply(origin, op), r);
                let back = round_trip(&st);
                prop_assert_eq!(back.digest(), st.digest());
                prop_assert_eq!(&back, &st);
            }
            prop_assert_eq!(twin.digest(), st.digest());
        }
    }
}
