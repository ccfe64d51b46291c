//! The whole authorization matrix: every command × not logged in / non-member / member / owner.

mod common;
use common::*;

/// What a role must get for a command: `ok` or an error code.
struct Row {
    /// The request, given the cell's group and a fresh group name; `None` for the upload.
    cmd: fn(&str, &str) -> Option<Verb>,
    expect: [&'static str; 4], // none, non-member, member, owner
}

const ROWS: &[Row] = &[
    Row {
        cmd: |_, new| Some(v::create_group(new)),
        expect: ["not_logged_in", "ok", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::join_group(g)),
        expect: ["not_logged_in", "ok", "already_member", "already_member"],
    },
    Row {
        cmd: |g, _| Some(v::leave_group(g)),
        expect: ["not_logged_in", "not_member", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::list_requests(g)),
        expect: ["not_logged_in", "not_owner", "not_owner", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::accept_request(g, "x")),
        expect: ["not_logged_in", "not_owner", "not_owner", "ok"],
    },
    Row {
        cmd: |_, _| Some(Verb::ListGroups),
        expect: ["not_logged_in", "ok", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::list_files(g)),
        expect: ["not_logged_in", "not_member", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::download_file(g, "f")),
        expect: ["not_logged_in", "not_member", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::peers(g, "f")),
        expect: ["not_logged_in", "not_member", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::have(g, "f", &[0])),
        expect: ["not_logged_in", "not_member", "ok", "ok"],
    },
    Row {
        cmd: |g, _| Some(v::stop_share(g, "f")),
        expect: ["not_logged_in", "not_member", "not_seeder", "ok"],
    },
    // upload_file of f2 in the cell's group.
    Row {
        cmd: |_, _| None,
        expect: ["not_logged_in", "not_member", "ok", "ok"],
    },
    Row {
        cmd: |_, _| Some(Verb::Logout),
        expect: ["not_logged_in", "ok", "ok", "ok"],
    },
];

#[test]
fn every_command_for_every_role() {
    let cl = Cluster::start(1);
    let mut owner = cl.conn(1);
    owner.user("o");
    let mut member = cl.conn(1);
    member.user("m");
    let mut outsider = cl.conn(1);
    outsider.user("n");
    let mut asker = cl.conn(1);
    asker.user("x");
    let mut anon = cl.conn(1);
    let mut cell = 0;
    for row in ROWS {
        for (role, want) in row.expect.iter().enumerate() {
            cell += 1;
            // A fresh group per cell: owner o, member m, pending request from x, file f by o.
            let g = format!("g{cell}");
            owner.ok(&v::create_group(&g));
            member.ok(&v::join_group(&g));
            owner.ok(&v::accept_request(&g, "m"));
            asker.ok(&v::join_group(&g));
            assert_eq!(owner.upload(&g, "f", 1000, 1)[0], "ok new");
            let who: &mut Conn = match role {
                0 => &mut anon,
                1 => &mut outsider,
                2 => &mut member,
                _ => &mut owner,
            };
            let req = (row.cmd)(&g, &format!("new{cell}"));
            let (line, reply) = match &req {
                Some(verb) => (verb.encode(), who.req(verb)[0].clone()),
                None => (
                    format!("upload_file {g} f2"),
                    who.upload(&g, "f2", 10, 7)[0].clone(),
                ),
            };
            let ok = if *want == "ok" {
                reply.starts_with("ok") || reply.starts_with("list")
            } else {
                reply.starts_with(&format!("err {want} "))
            };
            assert!(ok, "role {role} '{line}': got '{reply}', want {want}");
            if req == Some(Verb::Logout) && role > 0 {
                let name = ["", "n", "m", "o"][role];
                who.login(name);
            }
        }
    }
}

#[test]
fn names_outside_the_rules_are_refused_with_a_clear_error() {
    let cl = Cluster::start(1);
    let mut a = cl.conn(1);
    a.user("namer");
    for bad in [
        "create_group a/b",
        "create_group ..",
        "join_group bad$name",
        "create_user spa\u{e9} pw",
    ] {
        let r = a.req(bad);
        assert!(r[0].starts_with("err invalid_name "), "'{bad}' → {r:?}");
        assert!(
            r[0].len() > "err invalid_name ".len() + 10,
            "says why: {r:?}"
        );
    }
    let long = "g".repeat(65);
    a.err(&format!("create_group {long}"), "invalid_name");
    let long_file = "f".repeat(256);
    a.ok(&v::create_group("ok_group"));
    let r = a.upload("ok_group", &long_file, 10, 1);
    assert!(r[0].starts_with("err invalid_name"), "{r:?}");
    a.ok(&Verb::Ping);
}
