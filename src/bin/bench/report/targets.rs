//! The report's "Targets" section: each target beside its bound from the same run, the ratio,
//! met / not met.

use super::*;

pub(super) fn targets(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(
        o,
        "| target | measured | bound (same run) | ratio | verdict |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- |");
    // The single-tracker rows are for information (what replication costs), not targets.
    for row in r
        .load
        .iter()
        .filter(|row| !row.name.contains("single tracker"))
    {
        let what = if row.write {
            format!(
                "{}, depth {}: ≥ Redis `SET` with `appendfsync always`",
                row.name, row.depth
            )
        } else {
            format!("{}, depth {}: ≥ Redis `GET`", row.name, row.depth)
        };
        match &row.redis {
            Some(red) => {
                let ratio = row.tracker.rate() / red.rate();
                let _ = writeln!(
                    o,
                    "| {what} | {} req/s | {} req/s | {:.2} | {} |",
                    thousands(row.tracker.rate()),
                    thousands(red.rate()),
                    ratio,
                    verdict(Some(ratio >= 1.0 && row.tracker.errors == 0))
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "| {what} | {} req/s | Redis not installed | – | {} |",
                    thousands(row.tracker.rate()),
                    verdict(None)
                );
            }
        }
    }
    crate::redis_pair::target_rows(o, r);
    // Each tracker row beside the Redis row measured the same way (silent, or after one
    // request through the channel: TLS for Redis when it has it).
    let redis_rows: Vec<_> = r
        .idle
        .iter()
        .filter(|(w, _)| w.starts_with("Redis"))
        .collect();
    for (k, (what, res)) in r
        .idle
        .iter()
        .filter(|(w, _)| w.starts_with("tracker"))
        .enumerate()
    {
        let redis = redis_rows
            .get(k)
            .and_then(|(_, x)| x.as_ref().ok())
            .map(|x| format!("2,048 B (Redis here: {:.0} B)", x.per_conn()))
            .unwrap_or_else(|| "2,048 B".into());
        match res {
            Ok(x) => {
                let _ = writeln!(
                    o,
                    "| RSS per idle connection, {what} | {:.0} B | {redis} | {:.2} | {} |",
                    x.per_conn(),
                    x.per_conn() / 2048.0,
                    verdict(Some(x.per_conn() <= 2048.0))
                );
            }
            Err(e) => {
                let _ = writeln!(
                    o,
                    "| RSS per idle connection, {what} | failed: {e} | | | {} |",
                    verdict(None)
                );
            }
        }
    }
    // Transfer: ≥ 80% of the bound with ≥ 2 seeders; the downloader's RSS < 64 MiB.
    let mut worst_rss: Option<u64> = None;
    for (seeders, res) in r.downloads.iter() {
        if let Ok(case) = res {
            for run in &case.runs {
                worst_rss = Some(worst_rss.unwrap_or(0).max(run.peak_rss));
            }
        }
        if *seeders < 2 {
            continue;
        }
        match res {
            Ok(case) => {
                let m = case.median();
                let size = size_of(Some(m.rate.bytes));
                let bound = case.bound().map(|b| b.0.mib_s());
                let ratio = bound.map(|b| m.rate.mib_s() / b).unwrap_or(f64::NAN);
                let _ = writeln!(
                    o,
                    "| {size} download from {seeders} seeders: ≥ 80% of the bound (medians of {} runs, alternating with bound runs, all into fresh memory) | {:.0} MiB/s | {} | {ratio:.2} | {} |",
                    case.runs.len(),
                    m.rate.mib_s(),
                    bound.map(|b| format!("{b:.0} MiB/s")).unwrap_or_default(),
                    verdict(bound.map(|_| ratio >= 0.8))
                );
            }
            Err(p) => {
                let _ = writeln!(
                    o,
                    "| download from {seeders} seeders: ≥ 80% of the bound | {} | – | – | {} |",
                    pending_short(p),
                    verdict(None)
                );
            }
        }
    }
    match worst_rss {
        Some(rss) => {
            let _ = writeln!(
                o,
                "| downloading client's peak RSS (VmHWM) < 64 MiB, worst of every download run | {} | 64 MiB | {:.2} | {} |",
                mib(rss),
                rss as f64 / (64u64 << 20) as f64,
                verdict(Some(rss < 64 << 20))
            );
        }
        None => {
            let _ = writeln!(
                o,
                "| downloading client's peak RSS (VmHWM) < 64 MiB | not measured | 64 MiB | – | {} |",
                verdict(None)
            );
        }
    }
    let raw = r.raw_sha1.as_ref();
    let rb = raw
        .map(|b| format!("{:.0} MiB/s raw SHA-1", b.mib_s()))
        .unwrap_or_default();
    match &r.client_hashing {
        Some(Ok(runs)) if !runs.is_empty() => {
            let m = hash_median(runs);
            let ratio = raw.map(|b| m / b.mib_s()).unwrap_or(f64::NAN);
            let _ = writeln!(
                o,
                "| client `upload_file` hashing of {} from the page cache: ≥ 90% of raw SHA-1 (median of {}) | {m:.0} MiB/s | {rb} | {ratio:.2} | {} |",
                size_of(Some(runs[0].rate.bytes)),
                runs.len(),
                verdict(Some(ratio >= 0.9))
            );
        }
        other => {
            let _ = writeln!(
                o,
                "| client `upload_file` hashing from the page cache: ≥ 90% of raw SHA-1 | {} | {rb} | – | {} |",
                match other {
                    Some(Err(p)) => pending_short(p),
                    _ => "not measured".into(),
                },
                verdict(None)
            );
        }
    }
    if let Some(Ok(case)) = &r.flash {
        for round in &case.crowds {
            let ratio = case.ratio(round);
            let _ = writeln!(
                o,
                "| flash crowd, {} downloaders of one seeder capped at {}: slowest ≤ 1.3 × one download alone | {:.2} s | {:.2} s | {ratio:.2} | {} |",
                round.downloaders,
                FLASH_UPLOAD_LIMIT,
                round.slowest(),
                case.single_secs(),
                verdict(Some(ratio <= 1.3))
            );
            let _ = writeln!(
                o,
                "| flash crowd, {} downloaders: the seeder sends ≤ 1.3 copies | {:.2} copies | 1.3 | {:.2} | {} |",
                round.downloaders,
                round.copies(),
                round.copies() / 1.3,
                verdict(Some(round.copies() <= 1.3))
            );
        }
    }
    if let Some(Ok(times)) = &r.tracker_failover {
        let worst = times.iter().cloned().fold(0.0, f64::max);
        let _ = writeln!(
            o,
            "| failover < 1 s — tracker side (SIGKILL of the leader → first committed write at the survivor), worst of {} | {} | 1 s | {:.2} | {} |",
            times.len(),
            ms(worst),
            worst,
            verdict(Some(worst < 1.0))
        );
    }
    o.push_str(&login_row(r));
    match &r.client_failover {
        Some(Ok(f)) => {
            let m = f.median();
            let _ = writeln!(
                o,
                "| failover < 1 s — as a client sees it (SIGKILL of its tracker → its next command answered), median of {} | {} | 1 s | {:.2} | {} |\n",
                f.secs.len(),
                ms(m),
                m,
                verdict(Some(m < 1.0))
            );
        }
        other => {
            let _ = writeln!(
                o,
                "| failover < 1 s — as a client sees it | {} | 1 s | – | {} |\n",
                match other {
                    Some(Err(p)) => pending_short(p),
                    _ => "not measured".into(),
                },
                verdict(None)
            );
        }
    }
}
