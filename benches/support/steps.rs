//! Step timings (`AGENTORG_BENCH_STEPS=1`): a `tracing` layer that
//! timestamps the kernel's step events (target [`STEPS`], see
//! `agentorg::runtime`), the bench's own marks beside them, and a table of
//! each step's offset from the start of its round trip.
//!
//! Recording is on only around [`record`]: elsewhere a step event still
//! reaches the layer, which drops it after an atomic load, and a mark costs
//! that load; without the variable the layer is not installed.

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
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "step" {
            self.step = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "step" => self.step = Some(format!("{value:?}").trim_matches('"').to_owned()),
            "subject" => self.subject = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Steps {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let kind = match fields.subject.as_deref() {
            Some(s) if s.contains(".agent.founder.inbox.") => "result",
            Some(s) if s.contains(".agent.worker.inbox.") => "task",
            _ => "other",
        };
        push(format!("{} {kind}", fields.step.as_deref().unwrap_or("?")));
    }
}
