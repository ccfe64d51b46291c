//! A flash crowd with the real binaries: one seeder behind an upload limit, several downloaders
//! starting together. The seeder offers each downloader different pieces first
//! (super-seeding), downloaders tell each other of new pieces on their connections (`has`), so
//! every downloader gets part of the file from the others. Asserts what happens, not how fast.

mod common;

use common::{sources, test_data, Client, Cluster};
use std::path::PathBuf;

const PIECE: usize = 512 * 1024;

fn member(c: &Cluster, owner: &mut Client, name: &str, extra: &[&str]) -> Client {
    let mut m = c.client_with(name, &["127.0.0.1:0"], extra);
    m.run(&format!("create_user {name} pw"), "created user");
    m.run(&format!("login {name} pw"), "logged in as");
    m.run("join_group g", "asked to join");
    owner.run(&format!("accept_request g {name}"), "now a member");
    m
}

#[test]
fn a_crowd_of_downloaders_trades_pieces_and_every_copy_is_whole() {
    const N: usize = 4;
    const PIECES: usize = 32;
    let c = Cluster::start(2);
    let data = test_data(PIECES * PIECE, 21);
    let mut a = c.client_with("alice", &["127.0.0.1:0"], &["--upload-limit", "8M"]);
    a.run("create_user alice pw", "created user");
    a.run("login alice pw", "logged in as");
    a.run("create_group g", "created group g");
    let mut crowd: Vec<Client> = (0..N)
        .map(|k| member(&c, &mut a, &format!("d{k}"), &[]))
        .collect();
    let src = c.path().join("files-alice");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("crowd.bin"), &data).unwrap();
    a.run(
        &format!("upload_file {} g", src.join("crowd.bin").display()),
        &format!("to g ({} bytes", data.len()),
    );

    let dirs: Vec<PathBuf> = (0..N)
        .map(|k| {
            let d = c.path().join(format!("down-d{k}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    // All together: the commands go out before any answer is awaited.
    for (d, dir) in crowd.iter_mut().zip(&dirs) {
        d.send(&format!("download_file g crowd.bin {}", dir.display()));
    }
    let mut from_alice = 0;
    for (k, (d, dir)) in crowd.iter_mut().zip(&dirs).enumerate() {
        let note = d.expect_err("note: download of crowd.bin complete");
        let from = sources(&note);
        assert_eq!(
            from.values().sum::<u64>(),
            PIECES as u64,
            "every piece counted once: {note}"
        );
        let others: u64 = from
            .iter()
            .filter(|(who, _)| who.as_str() != "alice")
            .map(|(_, n)| n)
            .sum();
        assert!(
            others > 0,
            "d{k} got every piece from the seeder, none from the crowd: {note}"
        );
        from_alice += from.get("alice").copied().unwrap_or(0);
        assert_eq!(std::fs::read(dir.join("crowd.bin")).unwrap(), data);
        assert!(d.errors().is_empty(), "d{k}: {:?}", d.errors());
    }
    // Each downloader fetching the whole file from the seeder would be N copies; the crowd
    // shares the work, so the seeder sends far fewer.
    assert!(
        from_alice < (N * PIECES / 2) as u64,
        "the seeder sent {from_alice} pieces for {N} downloaders of {PIECES}"
    );
}
