//! Case C5, tracker side: how long after the leader is SIGKILLed can a logged-in session carry
//! out a write at the other tracker (`hello` with the same instance, `attach <token>`, then a
//! `create_group`)? This is the protocol path a client follows; the client's own detection
//! time comes on top and is measured by the transfer bench once the client exists.

use crate::procs::wait_for;
use crate::servers::{self, instance_id, LineConn, TrackerPair};
use groupshare::protocol::tracker::{Reply, Verb};
use std::time::{Duration, Instant};

/// One round: returns seconds from SIGKILL of the leader to the first committed write at the
/// survivor, then restarts the killed tracker and waits until the pair is whole again.
fn round(pair: &mut TrackerPair, r: usize) -> Result<f64, String> {
    let lead = wait_for("a paired leader", Duration::from_secs(20), || {
        pair.paired_leader()
    })?;
    let other = 3 - lead;
    let inst = instance_id();
    let user = format!("fo{r}x{:x}", groupshare::runtime::seed_u64() & 0xffff);
    let mut c = LineConn::connect(pair.addrs[lead - 1])?;
    let hello = Verb::Hello { instance: inst };
    c.ok(&hello)?;
    c.ok(&servers::create_user(&user))?;
    let (token, secret) = servers::login(&mut c, &user)?;
    let secret = groupshare::auth::scram::lower_hex::<32>(&secret).ok_or("a malformed secret")?;
    let mut tag = c.tag;

    let t0 = Instant::now();
    pair.kill(lead);
    drop(c);
    let deadline = t0 + Duration::from_secs(15);
    let elapsed = loop {
        if Instant::now() > deadline {
            return Err(format!(
                "tracker {other} did not take a write within 15 s of tracker {lead}'s death"
            ));
        }
        let attempt = (|| -> Result<bool, String> {
            let mut c = LineConn::connect(pair.addrs[other - 1])?;
            c.tag = tag;
            if !matches!(c.req(&hello)?, Reply::Ok(_)) {
                return Ok(false);
            }
            // Bound to this connection's channel.
            let proof = groupshare::auth::login::attach_proof(&secret, &token, c.channel_binding());
            let attach = Verb::Attach {
                token: token.clone(),
                proof: groupshare::pieces::to_hex(&proof),
                addr: "127.0.0.1:1".into(),
            };
            if !matches!(c.req(&attach)?, Reply::Ok(_)) {
                return Ok(false);
            }
            let group = format!("fg{r}{user}");
            let reply = c.req(&Verb::CreateGroup { group })?;
            tag = c.tag;
            match reply {
                Reply::Ok(_) => Ok(true),
                r => Err(format!("write after failover refused: {r:?}")),
            }
        })();
        match attempt {
            Ok(true) => break t0.elapsed().as_secs_f64(),
            Ok(false) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) if e.contains("refused:") => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    // Bring the dead one back and wait for the pair.
    pair.spawn_with(lead, crate::servers::BENCH_LIMITS)?;
    wait_for("the pair to re-form", Duration::from_secs(30), || {
        pair.paired_leader()
    })?;
    Ok(elapsed)
}

/// `rounds` failovers, alternating naturally (the survivor leads the re-formed pair).
pub fn tracker_failover(pair: &mut TrackerPair, rounds: usize) -> Result<Vec<f64>, String> {
    (0..rounds).map(|r| round(pair, r)).collect()
}
