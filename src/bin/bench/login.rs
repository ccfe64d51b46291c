//! Case C7: what a password login costs the tracker. The tracker never derives a key: it
//! checks the client's SCRAM proof with a few HMACs (`Verifier::check`), so its CPU per login
//! should stay under 50 µs, against about a millisecond for the PBKDF2 it used to run itself.
//! Measured as the tracker process's utime + stime (/proc) over rounds in which `users`
//! connections each run `login_begin` + `login`, pipelined across connections (logouts
//! between rounds are outside the measured intervals); plus the proof check alone in this
//! process, and the client's key derivation at the default count.

use crate::clients::cpu_secs;
use crate::servers::{self, LineConn, TrackerPair};
use crate::Settings;
use groupshare::auth::login as proofs;
use groupshare::auth::scram::{self, ClientKeys};
use groupshare::protocol::tracker::{Reply, Verb};
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct LoginCost {
    pub logins: usize,
    /// CPU of the tracker the clients talk to (the leader), per login, µs.
    pub leader_us: f64,
    /// CPU of the follower (applying the replicated login), per login, µs.
    pub follower_us: f64,
    /// Logins per second of wall time over the measured phases.
    pub per_sec: f64,
    /// `Verifier::check` alone, µs.
    pub check_us: f64,
    /// `ClientKeys::derive` at `scram::DEFAULT_ITERATIONS` in this build, ms.
    pub derive_default_ms: f64,
}

/// `users` connections, `rounds` login rounds each.
pub fn measure(pair: &TrackerPair, users: usize, rounds: usize) -> Result<LoginCost, String> {
    let lead = pair.leader;
    let (lead_pid, foll_pid) = (pair.pid(lead), pair.pid(3 - lead));
    let mut conns = Vec::with_capacity(users);
    for i in 0..users {
        let mut c = LineConn::connect(pair.addrs[lead - 1])?;
        c.ok(&servers::hello())?;
        c.ok(&servers::create_user(&format!("lc{i}")))?;
        conns.push(c);
    }
    let (mut leader_cpu, mut follower_cpu, mut wall) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        let (l0, f0, t0) = (cpu_secs(lead_pid)?, cpu_secs(foll_pid)?, Instant::now());
        let mut begins = Vec::with_capacity(users);
        for (i, c) in conns.iter_mut().enumerate() {
            let begin = servers::login_begin(&format!("lc{i}"))?;
            c.send(&begin)?;
            begins.push(begin);
        }
        let mut msgs = Vec::with_capacity(users);
        for (c, begin) in conns.iter_mut().zip(&begins) {
            let words = match c.read_reply()? {
                Reply::Ok(w) => w,
                r => return Err(format!("login_begin refused: {r:?}")),
            };
            let (login, msg) = servers::login_for(begin, &words, c.channel_binding())?;
            c.send(&login)?;
            msgs.push(msg);
        }
        for c in conns.iter_mut() {
            if !matches!(c.read_reply()?, Reply::Ok(_)) {
                return Err("a login was refused".to_string());
            }
        }
        wall += t0.elapsed().as_secs_f64();
        leader_cpu += cpu_secs(lead_pid)? - l0;
        follower_cpu += cpu_secs(foll_pid)? - f0;
        for c in conns.iter_mut() {
            c.send(&Verb::Logout)?;
        }
        for c in conns.iter_mut() {
            c.read_reply()?;
        }
    }
    let logins = users * rounds;
    let n = logins as f64;
    Ok(LoginCost {
        logins,
        leader_us: leader_cpu / n * 1e6,
        follower_us: follower_cpu / n * 1e6,
        per_sec: n / wall.max(1e-9),
        check_us: check_us()?,
        derive_default_ms: derive_ms(scram::DEFAULT_ITERATIONS),
    })
}

/// The tracker's whole proof check, timed alone.
fn check_us() -> Result<f64, String> {
    let salt = [3u8; scram::SALT_LEN];
    let keys = ClientKeys::derive("pw", &salt, scram::MIN_ITERATIONS);
    let v = keys.verifier(salt, scram::MIN_ITERATIONS);
    let msg = proofs::auth_message("u", "c", "s", &salt, scram::MIN_ITERATIONS, None);
    let proof = keys.proof(&msg);
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        if v.check(std::hint::black_box(&msg), &proof).is_none() {
            return Err("the proof check failed".to_string());
        }
    }
    Ok(t.elapsed().as_secs_f64() / n as f64 * 1e6)
}

fn derive_ms(iterations: u32) -> f64 {
    let t = Instant::now();
    std::hint::black_box(ClientKeys::derive("correct horse", &[9; 16], iterations));
    t.elapsed().as_secs_f64() * 1e3
}

/// C7 on a fresh pair.
pub fn cost(s: &Settings, tracker_bin: &Path) -> Result<LoginCost, String> {
    let pair = crate::servers::TrackerPair::start(tracker_bin, "c7")?;
    let (users, rounds) = if s.quick { (500, 2) } else { (2_000, 5) };
    measure(&pair, users, rounds).map_err(|e| format!("{e}\n{}", pair.log_tail()))
}

/// `--only-login`: C7 alone, its row printed in the report's format.
pub fn run_alone(s: &Settings) -> Result<(), String> {
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let r = crate::Results {
        login: Some(cost(s, &tracker_bin)),
        ..crate::Results::default()
    };
    print!("{}", crate::report::login_row(&r));
    Ok(())
}
