//! The report's "C. Transfer, hashing, failover" section.

use super::*;

pub(super) fn part_c(o: &mut String, r: &Results) {
    let _ = writeln!(
        o,
        "## C. Transfer, hashing, failover\n\n\
         The bounds are measured now. *Download bound*: a sender thread writes the bytes over \
         loopback TCP inside the peers' secure channel (Noise, AES-256-GCM); one receiving \
         thread decrypts them into 512 KiB piece buffers, SHA-1s each piece (`sha1` crate) and \
         pwrites it into a new file (no fsync); its CPU time is that \
         thread's (`CLOCK_THREAD_CPUTIME_ID`). It is measured once up front and again right \
         before every client download. Writing 1 GiB into the page cache costs this VM about \
         six times more in fresh memory than in pages freed a moment ago (`dd`: 1.2–1.3 s \
         against 0.2 s), and it hands freed pages back to its host about 2 s after a large \
         free — in the middle of whichever run follows, so runs that start right after a \
         delete are fast or slow by phase. Every measured write, bound or download, therefore \
         starts 3 s after the previous 1 GiB copy was deleted, alternating: bound, delete, \
         wait, download, delete, wait, bound, …: both write into fresh memory, as a download \
         on a real machine does. Each download is compared with the median of the bound runs \
         interleaved with it; both move with the machine's dirty-page writeback. *Raw SHA-1*: the same 512 KiB pieces hashed from \
         a 64 MiB buffer in memory, round and round. *Page-cache SHA-1 (reference)*: the \
         downloaded file read back with pread in 512 KiB pieces and hashed.\n\n\
         The client rows drive the real binaries (`target/release/client`, \
         `target/release/tracker`) through their standard input, as a script would, on a fresh \
         tracker pair. The file is generated once and read once (so it is in the page cache); \
         seeder *k* is a separate client process, user `seed<k>`, that ran `upload_file` on its \
         own path to the same bytes (a hard link: same content, same name, so one more seeder). \
         Each download is a fresh client process and user: `download_file` is sent and the \
         time runs until the client's `note: download of data.bin complete` line arrives (the \
         moment `show_downloads` turns to `[C]`; checked right after); its CPU time is \
         utime + stime from `/proc/<pid>/stat` (10 ms ticks) over that interval, its peak RSS \
         VmHWM from `/proc/<pid>/status` at the end. The downloader then exits (logging out, \
         so it is no source for the next run) and its copy is deleted. Client hashing is each \
         seeder's `upload_file`, from sending the command to its `uploaded …` line (piece \
         hashing plus the tracker round trips that register the file). Client failover: a \
         fresh client started with the paired leader's address as its `IP:PORT` (\"prefer that \
         tracker\"), logged in with a group; the leader is SIGKILLed, `list_groups` sent at \
         once, and the time runs from the kill to the listing's first line on standard \
         output; the killed tracker is restarted and the pair re-formed (`digest`: \
         leader-paired + follower) before the next round.\n"
    );
    let _ = writeln!(o, "| case | measured | bound | ratio | target |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- |");
    let bound = r.download_bound.as_ref();
    let bound_ok = bound.and_then(|b| b.as_ref().ok());
    let bound_txt = match bound {
        Some(Ok(b)) => format!(
            "{:.0} MiB/s ({} MiB in {:.2} s), receiving thread's CPU {}",
            b.mib_s(),
            b.bytes >> 20,
            b.secs,
            r.download_bound_cpu
                .map(|c| format!("{c:.2} s"))
                .unwrap_or_else(|| "–".into())
        ),
        Some(Err(e)) => format!("failed: {e}"),
        None => String::new(),
    };
    let _ = writeln!(o, "| C1 bound: loopback TCP → decrypt → 512 KiB buffers → SHA-1 → pwrite, one thread (first run, before the page-cache reference) | {bound_txt} | – | – | – |");
    let mut resident_notes = Vec::new();
    for (n, res) in &r.downloads {
        let informative = if *n >= 2 {
            ""
        } else {
            " (informative with 1 seeder)"
        };
        match res {
            Ok(case) => {
                let m = case.median();
                let runs: Vec<String> = case
                    .runs
                    .iter()
                    .map(|x| format!("{:.0}", x.rate.mib_s()))
                    .collect();
                let bruns: Vec<String> = case
                    .bounds
                    .iter()
                    .map(|x| format!("{:.0}", x.0.mib_s()))
                    .collect();
                let cb = case.bound();
                let size = size_of(Some(m.rate.bytes));
                let _ = writeln!(
                    o,
                    "| C1 {size} download from {n} seeder(s): rate, median of {} | {:.0} MiB/s ({:.2} s; runs: {} MiB/s){} | {} (bound runs: {} MiB/s) | {} | ≥ 0.80 of the bound{informative} |",
                    case.runs.len(),
                    m.rate.mib_s(),
                    m.rate.secs,
                    runs.join(", "),
                    if m.shown_complete { "" } else { " — `show_downloads` did not say `[C]` right after the note" },
                    cb.map(|b| format!("{:.0} MiB/s", b.0.mib_s())).unwrap_or_default(),
                    bruns.join(", "),
                    cb.map(|b| format!("{:.2}", m.rate.mib_s() / b.0.mib_s()))
                        .unwrap_or_else(|| "–".into()),
                );
                let _ = writeln!(
                    o,
                    "| C1 … {n} seeder(s): downloading client's CPU (utime + stime), median run | {:.2} s ({:.0} MiB per CPU-second); the seeders together: {:.2} s | {} (bound's receiving thread, median bound run) | {} | – |",
                    m.cpu_secs,
                    m.rate.bytes as f64 / MIB_F / m.cpu_secs.max(0.01),
                    m.seeders_cpu_secs,
                    cb.map(|b| format!("{:.2} s", b.1)).unwrap_or_default(),
                    cb.map(|b| format!("{:.2}", m.cpu_secs / b.1))
                        .unwrap_or_else(|| "–".into()),
                );
                let worst = case.runs.iter().map(|x| x.peak_rss).max().unwrap_or(0);
                let _ = writeln!(
                    o,
                    "| C1 … {n} seeder(s): downloading client's peak RSS (VmHWM), worst run | {} | 64 MiB | {:.2} | < 64 MiB |",
                    mib(worst),
                    worst as f64 / (64u64 << 20) as f64
                );
                resident_notes.push(format!("{n}: {:.0} %", case.source_resident * 100.0));
            }
            Err(p) => {
                let _ = writeln!(
                    o,
                    "| C1 download from {n} seeder(s) | {} | {} | – | ≥ 0.80 of the bound{informative} |",
                    pending_short(p),
                    short_rate(bound_ok)
                );
            }
        }
    }
    let raw = r.raw_sha1.as_ref();
    let _ = writeln!(
        o,
        "| C2 bound: raw SHA-1 in memory, 512 KiB pieces | {} | – | – | – |",
        raw.map(|b| format!(
            "{:.0} MiB/s ({} MiB in {:.2} s)",
            b.mib_s(),
            b.bytes >> 20,
            b.secs
        ))
        .unwrap_or_default()
    );
    if let Some(pc) = &r.page_cache_sha1 {
        let _ = writeln!(
            o,
            "| C2 reference: pread from the page cache + SHA-1, one thread | {} | {} | {} | – |",
            match pc {
                Ok(x) => format!("{:.0} MiB/s", x.mib_s()),
                Err(e) => format!("failed: {e}"),
            },
            short_rate(raw),
            pc.as_ref()
                .ok()
                .zip(raw)
                .map(|(a, b)| format!("{:.2}", a.mib_s() / b.mib_s()))
                .unwrap_or_else(|| "–".into())
        );
    }
    match &r.client_hashing {
        Some(Ok(runs)) if !runs.is_empty() => {
            let m = hash_median(runs);
            let list: Vec<String> = runs
                .iter()
                .map(|h| {
                    format!(
                        "{:.0} MiB/s in {:.2} s, CPU {:.2} s, {:.0} % cached",
                        h.rate.mib_s(),
                        h.rate.secs,
                        h.cpu_secs,
                        h.resident * 100.0
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "| C2 client `upload_file` of {} in the page cache, median of {} | {m:.0} MiB/s ({}) | {} | {} | ≥ 0.90 of raw SHA-1 |",
                size_of(Some(runs[0].rate.bytes)),
                runs.len(),
                list.join("; "),
                short_rate(raw),
                raw.map(|b| format!("{:.2}", m / b.mib_s()))
                    .unwrap_or_else(|| "–".into())
            );
        }
        Some(Ok(_)) | None => {}
        Some(Err(p)) => {
            let _ = writeln!(
                o,
                "| C2 client `upload_file` hashing in the page cache | {} | {} | – | ≥ 0.90 of raw SHA-1 |",
                pending_short(p),
                short_rate(raw)
            );
        }
    }
    match &r.tracker_failover {
        Some(Ok(t)) => {
            let list: Vec<String> = t.iter().map(|x| ms(*x)).collect();
            let _ = writeln!(o, "| C5 failover, tracker side: SIGKILL of the leader → `hello` + `attach` + a committed `create_group` at the survivor (each round; the killed one is restarted and re-pairs in between) | {} | 1 s | {:.2} (worst) | < 1 s |", list.join(", "), t.iter().cloned().fold(0.0, f64::max));
        }
        Some(Err(e)) => {
            let _ = writeln!(
                o,
                "| C5 failover, tracker side | failed: {} | 1 s | – | < 1 s |",
                e.lines().next().unwrap_or("")
            );
        }
        None => {}
    }
    match &r.client_failover {
        Some(Ok(f)) => {
            let m = f.median();
            let list: Vec<String> = f.secs.iter().map(|x| ms(*x)).collect();
            let _ = writeln!(
                o,
                "| C5 failover as a client sees it: SIGKILL of its tracker → `list_groups` answered, median of {} | {} (rounds: {}; `note: switched to tracker N` in {} of {}) | 1 s | {:.2} | < 1 s |",
                f.secs.len(),
                ms(m),
                list.join(", "),
                f.switched_notes,
                f.secs.len(),
                m
            );
        }
        Some(Err(p)) => {
            let _ = writeln!(
                o,
                "| C5 failover as a client sees it | {} | 1 s | – | < 1 s |",
                pending_short(p)
            );
        }
        None => {}
    }
    let _ = writeln!(o);
    if !resident_notes.is_empty() {
        let _ = writeln!(
            o,
            "Page cache: the seeders' file was in the page cache during the downloads (share of \
             its pages resident, by `mincore`, before each case's first run — seeders {}), so \
             the seeders read from memory, not disk; the downloader writes its copy into the \
             page cache too (no fsync), exactly like the bound. These figures are loopback + \
             memory figures, not disk figures; the cache was not dropped (a shared machine).\n",
            resident_notes.join(", ")
        );
    }
}
