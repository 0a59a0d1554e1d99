//! Step timings (`AGENTORG_BENCH_STEPS=1`): a `tracing` layer that
//! timestamps the kernel's step events (target [`STEPS`], see
//! `agentorg::runtime`), the bench's own marks beside them, and a table of
//! each step's offset from the start of its round trip.
//!
//! Recording is on only around [`record`]: elsewhere a step event still
//! reaches the layer, which drops it after an atomic load, and a mark costs
//! that load; without the variable the layer is not installed.
//!
//! With `AGENTORG_BENCH_STEPS_DUMP=FILE` as well, each recorded step event
//! is also appended to FILE as a line `<wall clock, ns since the epoch>
//! <step> <task|result|other> <msg_id or ->`, each recording followed by a
//! line `END`: `benches/support/wire_timeline.py` joins them with a packet
//! capture by message id.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use agentorg::runtime::STEPS;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static ON: AtomicBool = AtomicBool::new(false);
static MARKS: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
/// The recording's step events for `AGENTORG_BENCH_STEPS_DUMP`: wall clock
/// (ns since the epoch), label, message id.
static DUMP: Mutex<Vec<(u128, String, String)>> = Mutex::new(Vec::new());
static DUMP_TO: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// `AGENTORG_BENCH_STEPS_DUMP`, read once.
fn dump_to() -> Option<&'static std::path::Path> {
    DUMP_TO
        .get_or_init(|| std::env::var_os("AGENTORG_BENCH_STEPS_DUMP").map(Into::into))
        .as_deref()
}

/// Whether `AGENTORG_BENCH_STEPS` asks for step timings.
pub fn wanted() -> bool {
    std::env::var_os("AGENTORG_BENCH_STEPS").is_some()
}

/// Installs the bench's subscriber, once: what `AGENTORG_BENCH_LOG` (a
/// tracing filter, `warn` say) lets through to stderr, and the steps
/// layer when [`wanted`].
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let log = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(EnvFilter::from_env("AGENTORG_BENCH_LOG"));
        let steps = wanted().then(|| Steps.with_filter(filter_fn(|m| m.target() == STEPS)));
        let _ = tracing_subscriber::registry()
            .with(log)
            .with(steps)
            .try_init();
    });
}

/// Marks `label` now, while recording.
pub fn mark(label: &str) {
    if ON.load(Ordering::Relaxed) {
        push(label.to_owned());
    }
}

fn push(label: String) {
    let at = Instant::now();
    MARKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((label, at));
}

/// Records the marks and step events of `f`, and returns them.
pub async fn record<F: std::future::Future<Output = ()>>(f: F) -> Vec<(String, Instant)> {
    MARKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    ON.store(true, Ordering::SeqCst);
    f.await;
    ON.store(false, Ordering::SeqCst);
    if let Some(path) = dump_to() {
        use std::io::Write as _;
        let events = std::mem::take(
            &mut *DUMP
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut text = String::new();
        for (at, label, id) in events {
            text.push_str(&format!("{at} {label} {id}\n"));
        }
        text.push_str("END\n");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("AGENTORG_BENCH_STEPS_DUMP: a writable file");
    }
    std::mem::take(
        &mut *MARKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// The offset of each label of `steps` from `start`, per round trip: its
/// first occurrence after that of the label it follows (`steps`: label →
/// the label it follows, `start` or one listed before it; labels not
/// listed are left out). One that follows `start` is looked for until the
/// next start, the others until the start after next (a step may end after
/// the next round trip began: the worker's last ones do). Returns the
/// table: each label's median offset and quartiles, in order.
pub fn table(marks: &[(String, Instant)], start: &str, steps: &[(&str, &str)]) -> String {
    let mut offsets: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut windows = 0;
    let starts: Vec<usize> = (0..marks.len()).filter(|&i| marks[i].0 == start).collect();
    // The last round trip may be cut short: left out.
    for (k, &from) in starts
        .iter()
        .enumerate()
        .take(starts.len().saturating_sub(1))
    {
        let next = starts[k + 1];
        let to = starts.get(k + 2).copied().unwrap_or(marks.len());
        let t0 = marks[from].1;
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (label, _)) in marks.iter().enumerate().take(to).skip(from + 1) {
            let Some(&(_, anchor)) = steps.iter().find(|(l, _)| l == label) else {
                continue;
            };
            let follows = if anchor == start {
                i < next
            } else {
                first.contains_key(anchor)
            };
            if follows && !first.contains_key(label.as_str()) {
                first.insert(label, i);
            }
        }
        windows += 1;
        for (label, i) in first {
            let micros = (marks[i].1 - t0).as_secs_f64() * 1e6;
            offsets.entry(label).or_default().push(micros);
        }
    }
    let mut rows: Vec<(f64, String)> = offsets
        .into_iter()
        .map(|(label, mut v)| {
            v.sort_by(f64::total_cmp);
            let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
            let line = format!(
                "  {:>8.1} µs  (quartiles {:>7.1}–{:>7.1})  {label}{}",
                q(0.5),
                q(0.25),
                q(0.75),
                if v.len() < windows {
                    format!(" [in {} of {windows}]", v.len())
                } else {
                    String::new()
                }
            );
            (q(0.5), line)
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = format!("  {windows} round trips; offsets from `{start}` (median):\n");
    for (_, line) in rows {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Keeps the kernel's step events, labelled `<step> task` or `<step>
/// result` by their subject (the bench's org: the worker's inbox carries
/// tasks, the founder's results; anything else is `<step> other`).
struct Steps;

#[derive(Default)]
struct Fields {
    step: Option<String>,
    subject: Option<String>,
    msg_id: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = || format!("{value:?}").trim_matches('"').to_owned();
        match field.name() {
            "step" => self.step = Some(text()),
            "subject" => self.subject = Some(text()),
            // Only the dump shows it.
            "msg_id" if dump_to().is_some() => self.msg_id = Some(text()),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Steps {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        let wall = dump_to().map(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        });
        let mut fields = Fields::default();
        event.record(&mut fields);
        let kind = match fields.subject.as_deref() {
            Some(s) if s.contains(".agent.founder.inbox.") => "result",
            Some(s) if s.contains(".agent.worker.inbox.") => "task",
            _ => "other",
        };
        let label = format!("{} {kind}", fields.step.as_deref().unwrap_or("?"));
        if let Some(at) = wall {
            let id = fields.msg_id.unwrap_or_else(|| "-".to_owned());
            DUMP.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((at, label.clone(), id));
        }
        push(label);
    }
}
