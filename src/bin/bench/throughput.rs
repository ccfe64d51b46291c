//! Part A, tracker throughput and latency: the tracker pair's reads and replicated writes at
//! each depth beside the Redis anchors (`RedisSide`), the single tracker, `--only-writes` and
//! the `--profile-load` helper.

use super::*;

/// `--only-writes`: the leader's replicated `create_group` at depth 1 and 16 against the Redis
/// primary + replica anchor and the single Redis with `appendfsync always`, for iterating on
/// the write path. The machine is shared and noisy, so each Redis case runs twice right before
/// the tracker case it bounds and the second run is kept (the first warms the machine up to
/// the same state); one line per depth goes to standard output.
pub(super) fn run_writes(s: &Settings) -> Result<(), String> {
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let kit = servers::RedisKit::new(servers::find_redis().ok_or("redis-server is not on PATH")?);
    eprintln!("bench:   Redis over {}", kit.transport());
    let mut redis = RedisSide::start(s, &kit)?;
    let mut anchor = redis_pair::RedisPair::start(s, &kit)?;
    let mut pair = servers::TrackerPair::start(&tracker_bin, "w")?;
    let lead = pair.leader;
    let mut leader = Conns::new(pair.logged_in(lead, "l", s.conns)?, 4)?;
    println!(
        "| depth | tracker req/s | p50 | p99 | Redis pair req/s | tracker / pair | Redis AOF req/s | tracker / AOF |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for depth in [1, 16] {
        eprintln!("bench:   depth {depth}: Redis pair twice, Redis AOF twice, tracker");
        let _ = anchor.run(s.plan(depth))?;
        let pair_st = anchor.run(s.plan(depth))?;
        let _ = redis.run(s.plan(depth), true)?;
        let aof_st = redis.run(s.plan(depth), true)?;
        let st = leader
            .run(Proto::Tracker, s.plan(depth), |c, tag, out| {
                tracker_write(out, tag, format!("w{depth}c{c}t{tag}"))
            })
            .map_err(|e| format!("{e}\n{}", pair.log_tail()))?;
        pair.check_alive()?;
        if st.errors > 0 {
            return Err(format!(
                "{} error replies, first: {}",
                st.errors,
                st.first_error.unwrap_or_default()
            ));
        }
        println!(
            "| {depth} | {} | {} | {} | {} | {:.2} | {} | {:.2} |",
            report::thousands(st.rate()),
            report::us(st.p50_us),
            report::us(st.p99_us),
            report::thousands(pair_st.rate()),
            st.rate() / pair_st.rate(),
            report::thousands(aof_st.rate()),
            st.rate() / aof_st.rate(),
        );
    }
    Ok(())
}

/// Redis' side of part A: a plain instance for reads, an AOF-always one for writes, with their
/// connections, run right after the matching tracker case so both see the same machine.
pub(super) struct RedisSide {
    _plain: servers::Redis,
    _aof: servers::Redis,
    reads: Conns,
    writes: Conns,
}

impl RedisSide {
    fn start(s: &Settings, kit: &servers::RedisKit) -> Result<RedisSide, String> {
        let plain = servers::Redis::start(kit, false)?;
        // One small key, about the size of the tracker's `list_groups` reply.
        plain.command("SET bench bench-1-r0")?;
        let aof = servers::Redis::start(kit, true)?;
        let cfg = aof.command("CONFIG GET appendfsync")?;
        if !cfg.contains("always") {
            return Err(format!("Redis did not take appendfsync always: {cfg:?}"));
        }
        Ok(RedisSide {
            reads: Conns::new(plain.conns(s.conns)?, 1)?,
            writes: Conns::new(aof.conns(s.conns)?, 1)?,
            _plain: plain,
            _aof: aof,
        })
    }

    fn run(&mut self, plan: Plan, write: bool) -> Result<Stats, String> {
        if write {
            self.writes.run(Proto::Redis, plan, |c, tag, out| {
                out.extend_from_slice(format!("SET g{c}x{tag} 1\r\n").as_bytes())
            })
        } else {
            self.reads.run(Proto::Redis, plan, |_, _, out| {
                out.extend_from_slice(b"GET bench\r\n")
            })
        }
    }
}

pub(super) fn part_a(
    s: &Settings,
    tracker_bin: &std::path::Path,
    redis_kit: Option<&servers::RedisKit>,
    r: &mut Results,
) -> Result<(), String> {
    let mut redis = match redis_kit {
        Some(kit) => Some(RedisSide::start(s, kit)?),
        None => None,
    };
    let mut anchor = match redis_kit {
        Some(kit) => match redis_pair::RedisPair::start(s, kit) {
            Ok(p) => Some(p),
            Err(e) => {
                r.notes.push(format!(
                    "the Redis primary + replica anchor could not start: {e}"
                ));
                None
            }
        },
        None => None,
    };
    let mut pair = servers::TrackerPair::start(tracker_bin, "a")?;
    part_a_tracker(s, &mut pair, redis.as_mut(), anchor.as_mut(), r)
        .map_err(|e| format!("{e}\n{}", pair.log_tail()))?;
    drop(pair);
    drop(anchor);
    let mut single = servers::TrackerPair::start_single(tracker_bin, "a1")?;
    part_a_single(s, &mut single, redis.as_mut(), r)
        .map_err(|e| format!("{e}\n{}", single.log_tail()))
}

/// Durable writes on one tracker alone: what replication costs (for information, no target).
pub(super) fn part_a_single(
    s: &Settings,
    single: &mut servers::TrackerPair,
    mut redis: Option<&mut RedisSide>,
    r: &mut Results,
) -> Result<(), String> {
    let mut conns = Conns::new(single.logged_in(1, "s", s.conns)?, servers::FIRST_FREE_TAG)?;
    for depth in [1, 16] {
        let name = "durable write (`create_group`), single tracker (no replication)";
        eprintln!("bench:   {name}, depth {depth}");
        let st = conns.run(Proto::Tracker, s.plan(depth), |c, tag, out| {
            tracker_write(out, tag, format!("s{c}t{tag}"))
        })?;
        single.check_alive()?;
        let red = match redis.as_deref_mut() {
            Some(side) => Some(side.run(s.plan(depth), true)?),
            None => None,
        };
        r.load.push(LoadRow {
            name: name.to_string(),
            depth,
            write: true,
            tracker: st,
            redis: red,
        });
    }
    Ok(())
}

pub(super) fn part_a_tracker(
    s: &Settings,
    pair: &mut servers::TrackerPair,
    mut redis: Option<&mut RedisSide>,
    mut anchor: Option<&mut redis_pair::RedisPair>,
    r: &mut Results,
) -> Result<(), String> {
    // One group, so list_groups has a one-line answer (comparable to a small GET).
    let (lead, foll) = (pair.leader, 3 - pair.leader);
    r.notes.push(format!(
        "Part A: the freshly started pair chose tracker {lead} as leader (tracker 2 leads when \
         its first dial is refused: it then serves alone at once and its log is longer)."
    ));
    let mut owner = servers::LineConn::connect(pair.addrs[lead - 1])?;
    owner.ok(&servers::hello())?;
    owner.ok(&servers::create_user("owner"))?;
    servers::login(&mut owner, "owner")?;
    owner.ok(&Verb::CreateGroup {
        group: "bench".into(),
    })?;

    let first = servers::FIRST_FREE_TAG;
    let mut leader = Conns::new(pair.logged_in(lead, "l", s.conns)?, first)?;
    // Opened when its first case comes: a logged-in connection silent for 25 s is taken for a
    // vanished client and closed, and the leader's cases take longer than that.
    let mut follower: Option<Conns> = None;
    let cases: [(&str, usize, bool, usize); 6] = [
        ("small read (`list_groups`), leader", 1, false, lead),
        ("small read (`list_groups`), leader", 16, false, lead),
        ("durable write (`create_group`), leader", 1, true, lead),
        ("durable write (`create_group`), leader", 16, true, lead),
        ("durable write (`create_group`), follower", 1, true, foll),
        ("durable write (`create_group`), follower", 16, true, foll),
    ];
    for (i, (name, depth, write, at)) in cases.into_iter().enumerate() {
        eprintln!("bench:   {name}, depth {depth}");
        let conns = if at == lead {
            &mut leader
        } else {
            match &mut follower {
                Some(f) => f,
                None => follower.insert(Conns::new(pair.logged_in(foll, "f", s.conns)?, first)?),
            }
        };
        let st = if write {
            conns.run(Proto::Tracker, s.plan(depth), |c, tag, out| {
                tracker_write(out, tag, format!("g{i}c{c}t{tag}"))
            })?
        } else {
            conns.run(Proto::Tracker, s.plan(depth), tracker_read)?
        };
        pair.check_alive()?;
        if st.errors > 0 {
            r.notes.push(format!(
                "{name}, depth {depth}: {} error replies, first: {}",
                st.errors,
                st.first_error.clone().unwrap_or_default()
            ));
        }
        let red = match redis.as_deref_mut() {
            Some(side) => Some(side.run(s.plan(depth), write)?),
            None => None,
        };
        r.load.push(LoadRow {
            name: name.to_string(),
            depth,
            write,
            tracker: st,
            redis: red,
        });
        if let Some(a) = anchor.as_deref_mut().filter(|_| write && at == lead) {
            eprintln!("bench:   Redis primary + replica, SET + WAIT 1 0, depth {depth}");
            let stats = a.run(s.plan(depth))?;
            r.redis_pair.push(redis_pair::AnchorRow { depth, stats });
        }
    }
    Ok(())
}

/// `bench --profile-load <read|write> <depth> <secs>`: one tracker case for `secs` seconds on
/// a fresh pair, with the trackers' pids on stderr, so `perf record -p` can be attached to it.
pub(super) fn profile_load(args: &[String]) -> Result<(), String> {
    let [kind, depth, secs] = args else {
        return Err("usage: bench --profile-load <read|write> <depth> <secs>".into());
    };
    let depth: usize = depth.parse().map_err(|e| format!("depth: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("secs: {e}"))?;
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let pair = servers::TrackerPair::start(&tracker_bin, "profile")?;
    let lead = pair.leader;
    let mut owner = servers::LineConn::connect(pair.addrs[lead - 1])?;
    owner.ok(&servers::hello())?;
    owner.ok(&servers::create_user("owner"))?;
    servers::login(&mut owner, "owner")?;
    owner.ok(&Verb::CreateGroup {
        group: "bench".into(),
    })?;
    let mut conns = Conns::new(pair.logged_in(lead, "l", 50)?, servers::FIRST_FREE_TAG)?;
    eprintln!(
        "leader pid {} follower pid {}",
        pair.pid(lead),
        pair.pid(3 - lead)
    );
    let plan = Plan {
        depth,
        warmup: Duration::from_millis(300),
        measure: Duration::from_secs_f64(secs),
    };
    let st = if kind == "write" {
        conns.run(Proto::Tracker, plan, |c, tag, out| {
            tracker_write(out, tag, format!("p{c}t{tag}"))
        })?
    } else {
        conns.run(Proto::Tracker, plan, tracker_read)?
    };
    eprintln!(
        "{kind} depth {depth}: {:.0} req/s p50 {:.0} µs p99 {:.0} µs, {} errors",
        st.rate(),
        st.p50_us,
        st.p99_us,
        st.errors
    );
    Ok(())
}
