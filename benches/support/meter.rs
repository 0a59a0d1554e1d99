//! What a stretch of round trips spends apart from criterion: wall time,
//! this process's CPU and, on NATS, the server's (Linux's per-thread
//! `schedstat`), and the printout beside a baseline.

use std::time::{Duration, Instant};

/// CPU time used so far by each thread of process `pid` (this process when
/// `None`), by thread id: the first field of `/proc/<pid>/task/*/schedstat`
/// (nanoseconds on the CPU). Linux only (`None` elsewhere).
fn cpu_times(pid: Option<u32>) -> Option<std::collections::HashMap<String, u64>> {
    let dir = pid.map_or_else(
        || "/proc/self/task".to_owned(),
        |p| format!("/proc/{p}/task"),
    );
    let mut threads = std::collections::HashMap::new();
    for thread in std::fs::read_dir(dir).ok()? {
        let thread = thread.ok()?;
        // A thread may end between the listing and the read.
        if let Ok(stat) = std::fs::read_to_string(thread.path().join("schedstat")) {
            let nanos = stat.split_whitespace().next()?.parse::<u64>().ok()?;
            threads.insert(thread.file_name().to_string_lossy().into_owned(), nanos);
        }
    }
    Some(threads)
}

/// The CPU time process `pid`'s threads used since `before` (threads born
/// since count in full; those that ended since are not counted: the
/// runtime's and the server's threads live on).
fn cpu_since(
    pid: Option<u32>,
    before: &std::collections::HashMap<String, u64>,
) -> Option<Duration> {
    let after = cpu_times(pid)?;
    let nanos = after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Some(Duration::from_nanos(nanos))
}

/// Wall and CPU time over a stretch of round trips, apart from criterion:
/// this process's CPU (both parties, all their tasks) and, on NATS, the
/// server's.
pub struct Meter {
    wall: Instant,
    process: Option<std::collections::HashMap<String, u64>>,
    server: Option<(u32, std::collections::HashMap<String, u64>)>,
}

impl Meter {
    pub fn start(server: Option<u32>) -> Self {
        // The server's first, so that reading it is not counted as its.
        let server = server.and_then(|pid| Some((pid, cpu_times(Some(pid))?)));
        Self {
            process: cpu_times(None),
            server,
            wall: Instant::now(),
        }
    }

    /// Per round trip, over `n`: (wall, this process's CPU, the server's CPU).
    pub fn stop(self, n: u32) -> [Option<Duration>; 3] {
        let wall = self.wall.elapsed() / n;
        let process = self
            .process
            .and_then(|before| cpu_since(None, &before))
            .map(|d| d / n);
        let server = self
            .server
            .and_then(|(pid, before)| cpu_since(Some(pid), &before))
            .map(|d| d / n);
        [Some(wall), process, server]
    }
}

/// `12.3 µs`, or `n/a`.
pub fn micros(d: Option<Duration>) -> String {
    d.map_or_else(
        || "n/a".to_owned(),
        |d| format!("{:.1} µs", d.as_secs_f64() * 1e6),
    )
}

/// `a ÷ b` as `1.23×`, or `n/a`.
fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64()),
        _ => "n/a".to_owned(),
    }
}

/// Prints what a runtime round trip and its baseline's spend, side by side.
pub fn print_spent(
    group: &str,
    n: u32,
    runtime: [Option<Duration>; 3],
    base: (&str, [Option<Duration>; 3]),
) {
    let (name, base) = base;
    println!("{group}: per round trip, {n} round trips each, apart from criterion:");
    for (what, i) in [
        ("wall", 0),
        ("CPU, this process", 1),
        ("CPU, nats-server", 2),
    ] {
        if runtime[i].is_none() && base[i].is_none() {
            continue;
        }
        println!(
            "  {what:<18} runtime {:>10}   {name} {:>10}   ratio {}",
            micros(runtime[i]),
            micros(base[i]),
            ratio(runtime[i], base[i])
        );
    }
}
