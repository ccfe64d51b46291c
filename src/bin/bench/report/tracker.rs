//! The report's tracker sections: "A. Tracker throughput and latency" and "B. Idle
//! connections".

use super::*;

pub(super) fn stats_cells(st: &Stats) -> String {
    format!(
        "{} | {} | {}",
        thousands(st.rate()),
        us(st.p50_us),
        us(st.p99_us)
    )
}

pub(super) fn part_a(o: &mut String, s: &Settings, r: &Results) {
    let _ = writeln!(
        o,
        "## A. Tracker throughput and latency\n\n\
         {} concurrent connections from one load-generator thread (one `mio::Poll`, non-blocking \
         sockets), each keeping *depth* requests in flight; {:.1} s warm-up, then {:.1} s \
         measured. Throughput counts replies completed in the measured window; latency is from \
         queueing a request to parsing its whole reply, for requests sent in the window. The \
         trackers are real processes (`target/release/tracker … -q`), a paired leader and \
         follower; every connection said `hello`, created its user and logged in first. A write \
         is `create_group g<unique>`: it is answered only once the entry is fsynced in both \
         trackers' journals. Redis runs the same load: `GET` of a 10-byte value on an instance \
         without persistence, and `SET` of a new key on an instance with `appendonly yes`, \
         `appendfsync always` (fsync before the reply, batched per event-loop turn — the same \
         batching the tracker does). Every tracker connection speaks inside its Noise channel \
         (AES-256-GCM); Redis' load connections speak TLS 1.3 (rustls in the load generator, \
         a throwaway CA made with `openssl`, the suite OpenSSL picks: AES-256-GCM) when the \
         installed `redis-server` serves TLS, as the Redis line of the table above says, \
         else plain TCP.\n",
        s.conns,
        s.warmup.as_secs_f64(),
        s.measure.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "| case | depth | tracker req/s | p50 | p99 | Redis req/s | p50 | p99 | tracker / Redis |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in &r.load {
        let red = match &row.redis {
            Some(x) => format!("{} | {:.2}", stats_cells(x), row.tracker.rate() / x.rate()),
            None => "skipped | | | –".into(),
        };
        let _ = writeln!(
            o,
            "| {}{} | {} | {} | {} |",
            row.name,
            if row.tracker.errors > 0 {
                format!(" ({} error replies)", row.tracker.errors)
            } else {
                String::new()
            },
            row.depth,
            stats_cells(&row.tracker),
            red
        );
    }
    let _ = writeln!(
        o,
        "\nEach Redis case runs right after its tracker case (same depth, same connection \
         count), so both see the same state of the shared machine.\n"
    );
    crate::redis_pair::section(o, r);
}

pub(super) fn part_b(o: &mut String, r: &Results) {
    let _ = writeln!(
        o,
        "## B. Idle connections\n\n\
         A separate process (`bench --hold-idle`) opens the connections and holds them; the \
         server's VmRSS (/proc/<pid>/status) is read before and after (once the server holds a \
         descriptor for each). Kernel socket memory is not in RSS, for either server. Latency: \
         sequential `ping` (Redis: `PING`) from one fresh connection, before and while the idle \
         connections are open. Each row uses a freshly started server. A tracker connection \
         that has done its handshake holds the channel's keys (two AES-256-GCM key schedules \
         and GHASH tables, about 1.4 KB of the figure); Redis' connections are measured over \
         the same transport as in part A.\n"
    );
    let _ = writeln!(
        o,
        "| server, connections | count | RSS before | RSS after | per connection | ping p50 / p99 before | during | p99 during / before |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (what, res) in &r.idle {
        match res {
            Ok(x) => {
                let _ = writeln!(
                    o,
                    "| {what} | {} | {} | {} | {:.0} B | {} / {} | {} / {} | {:.2} |",
                    thousands(x.n as f64),
                    mib(x.rss_before),
                    mib(x.rss_after),
                    x.per_conn(),
                    us(x.lat_before.0),
                    us(x.lat_before.1),
                    us(x.lat_during.0),
                    us(x.lat_during.1),
                    ratio(x)
                );
            }
            Err(e) => {
                let _ = writeln!(o, "| {what} | failed: {e} | | | | | | |");
            }
        }
    }
    let _ = writeln!(o);
}

pub(super) fn ratio(x: &IdleResult) -> f64 {
    x.lat_during.1 / x.lat_before.1
}
