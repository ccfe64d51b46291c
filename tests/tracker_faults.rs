//! Writers against both trackers while either is killed (SIGKILL) and restarted at random
//! moments: at the end both trackers hold the same state and every write a client was told
//! succeeded is in it.

mod common;
use common::*;
use groupshare::protocol::tracker::GroupLine;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One writer: logs in at `home` (or the other tracker when `home` is down), creates groups
/// with unique names, and records those acknowledged with `ok`.
fn writer(
    addrs: Vec<std::net::SocketAddr>,
    home: usize,
    name: String,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    let mut target = home;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if conn.is_none() {
            let c = Conn::connect(addrs[target]).ok().and_then(|mut c| {
                let hello = c.try_req(&v::hello(rand_u64())).ok()?;
                if !hello[0].starts_with("ok") {
                    return None;
                }
                let r = c.try_req(&v::login(&name, "pw", "127.0.0.1:1")).ok()?;
                r[0].starts_with("ok").then_some(c)
            });
            if c.is_none() {
                target = 1 - target;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            conn = c;
        }
        n += 1;
        let group = format!("{name}-{n}");
        let Some(c) = conn.as_mut() else { continue };
        match c.try_req(&v::create_group(&group)) {
            Ok(r) if r[0] == "ok" => {
                acked.lock().expect("lock").insert(group);
            }
            Ok(_) => {}
            Err(_) => conn = None, // outcome unknown: not counted
        }
    }
}

#[test]
fn random_kills_lose_no_acknowledged_write_and_leave_identical_state() {
    let seed = rand_u64();
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut cl = Cluster::start(2);
    {
        let mut setup = cl.conn(1);
        setup.ok(&v::create_user("w1", "pw"));
        setup.ok(&v::create_user("w2", "pw"));
    }
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [(0usize, "w1"), (1, "w2")]
        .into_iter()
        .map(|(home, name)| {
            let (addrs, acked, stop) = (cl.addrs.clone(), acked.clone(), stop.clone());
            let name = name.to_string();
            std::thread::spawn(move || writer(addrs, home, name, acked, stop))
        })
        .collect();
    for _cycle in 0..6 {
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        let victim = 1 + rng.below(2) as usize;
        cl.kill(victim);
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        cl.spawn(victim);
        cl.wait_paired();
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    cl.wait_paired();
    cl.wait_same_digest();
    let acked = acked.lock().expect("lock").clone();
    eprintln!("{} acknowledged writes", acked.len());
    assert!(
        acked.len() > 20,
        "the writers made progress: {}",
        acked.len()
    );
    for n in 1..=2 {
        let mut c = cl.conn(n);
        c.ok(&v::create_user(&format!("checker{n}"), "pw"));
        c.ok(&v::login(&format!("checker{n}"), "pw", "127.0.0.1:1"));
        let Reply::List { lines, .. } = c.typed(&Verb::ListGroups) else {
            panic!("list_groups at tracker {n} was refused");
        };
        let groups: BTreeSet<String> = lines
            .iter()
            .map(|l| GroupLine::parse(l).map(|g| g.group).unwrap_or_default())
            .collect();
        let missing: Vec<&String> = acked.difference(&groups).collect();
        assert!(
            missing.is_empty(),
            "tracker {n} lost acknowledged writes: {missing:?}"
        );
    }
    cl.wait_same_digest();
}
