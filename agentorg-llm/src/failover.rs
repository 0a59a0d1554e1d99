//! Failover: an ordered list of models, each behind a breaker.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{ChatRequest, ChatResponse, Model, ModelError};

/// When a provider's breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerPolicy {
    /// Retryable failures in a row that open it.
    pub failures: u32,
    /// How long it stays open: the provider is skipped, then one call
    /// probes it (half-open: a success closes it, a failure opens it
    /// again).
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    /// 3 failures in a row, 30 s.
    fn default() -> Self {
        Self {
            failures: 3,
            cool_down: Duration::from_secs(30),
        }
    }
}

impl BreakerPolicy {
    /// Opens after `failures` in a row (at least 1), for `cool_down`.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cool_down,
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    /// Open until then (skipped), when set; past it, half-open.
    open_until: Option<Instant>,
    /// A half-open probe is in flight: the other calls skip the model.
    probing: bool,
}

/// What a model's breaker lets a call do.
enum Admit {
    /// Call it (closed).
    Call,
    /// Call it as the one probe after the cool-down (half-open).
    Probe,
    /// Skip it: open for this long yet (zero: another call probes it).
    Skip(Duration),
}

/// How an attempt ended, for the breaker.
enum Outcome {
    /// The provider answered (an answer, or a refusal of the request
    /// itself: it is alive).
    Alive,
    /// The provider failed (down, rate limited, timed out, refused the key,
    /// answered garbage); `at_least`: a wait it asked for.
    Failed { at_least: Option<Duration> },
    /// Nothing learnt (the request's own deadline cut the attempt short, or
    /// the call was dropped).
    Unknown,
}

/// A probe in flight: clears the flag however the call ends (a dropped
/// call too), so a cancelled probe does not keep the breaker from probing.
struct ProbeGuard<'a>(&'a Mutex<Breaker>);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        lock(self.0).probing = false;
    }
}

fn lock(m: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `now + d`, or (too large to add) about 30 years on.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(now)
}

/// Whether `e` from one provider is worth trying on the next: it failed,
/// not the request (a refused key or an unreadable answer is that
/// provider's; an invalid request or one too long fails everywhere).
fn fails_over(e: &ModelError) -> bool {
    e.is_retryable()
        || matches!(
            e,
            ModelError::Unauthorized { .. } | ModelError::Decode { .. }
        )
}

/// A [`Model`] over an ordered list of models: each call goes to the first
/// whose breaker lets it; a failure of the provider (rate limited,
/// unavailable, timed out, a refused key, an unreadable answer) moves it to
/// the next; an invalid request or one too long for the context ends it
/// there (it fails the same everywhere). Failures in a row open a model's
/// breaker ([`BreakerPolicy`]; a rate limit's `retry_after` keeps it open
/// at least that long): it is skipped until the cool-down passes, then one
/// call probes it (the others skip it meanwhile) — a success closes it, a
/// failure opens it again. An attempt cut short by the request's own
/// timeout counts against no model. The answer says which model gave it
/// ([`ChatResponse::provider`], the innermost when failovers nest); when
/// none does, [`ModelError::Exhausted`] lists each and why. An empty list
/// answers every call with an empty `Exhausted`.
pub struct Failover {
    models: Vec<(Arc<dyn Model>, Mutex<Breaker>)>,
    policy: BreakerPolicy,
    attempt_timeout: Duration,
    name: String,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl Failover {
    /// Over `models`, in order, with the default breaker and a 60 s
    /// timeout per attempt.
    pub fn new(models: impl IntoIterator<Item = Arc<dyn Model>>) -> Self {
        let models: Vec<_> = models
            .into_iter()
            .map(|m| (m, Mutex::new(Breaker::default())))
            .collect();
        let name = format!(
            "failover({})",
            models
                .iter()
                .map(|(m, _)| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Self {
            models,
            policy: BreakerPolicy::default(),
            attempt_timeout: Duration::from_secs(60),
            name,
        }
    }

    /// Named `name` (its [`Model::name`]; by default
    /// `failover(a, b, …)`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// With this breaker policy.
    pub fn breaker(mut self, policy: BreakerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// With this timeout per attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    fn admit(&self, breaker: &Mutex<Breaker>, now: Instant) -> Admit {
        let mut b = lock(breaker);
        match b.open_until {
            None => Admit::Call,
            Some(until) if now < until => Admit::Skip(until - now),
            Some(_) if b.probing => Admit::Skip(Duration::ZERO),
            Some(_) => {
                b.probing = true;
                Admit::Probe
            }
        }
    }

    fn record(&self, breaker: &Mutex<Breaker>, outcome: Outcome, name: &str) {
        let mut b = lock(breaker);
        let at_least = match outcome {
            Outcome::Alive => {
                *b = Breaker {
                    probing: b.probing,
                    ..Breaker::default()
                };
                return;
            }
            Outcome::Unknown => return,
            Outcome::Failed { at_least } => at_least,
        };
        b.failures = b.failures.saturating_add(1);
        let half_open = b.open_until.is_some();
        let now = Instant::now();
        if half_open || b.failures >= self.policy.failures || at_least.is_some() {
            let mut until = later(now, self.policy.cool_down);
            if let Some(wait) = at_least {
                if !(half_open || b.failures >= self.policy.failures) {
                    until = now;
                }
                until = until.max(later(now, wait));
            }
            b.open_until = Some(until);
            tracing::warn!(model = %name, failures = b.failures, open_for = ?(until - now), "model breaker open: skipped meanwhile");
        }
    }
}

#[async_trait]
impl Model for Failover {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        // A timeout too large to add is no bound.
        let deadline = request
            .timeout
            .and_then(|t| Instant::now().checked_add(t).map(|at| (at, t)));
        let mut tried = Vec::new();
        for (model, breaker) in &self.models {
            let name = model.name();
            let now = Instant::now();
            let mut limit = self.attempt_timeout;
            let mut cut = false;
            if let Some((at, whole)) = deadline {
                if now >= at {
                    tried.push((name.to_owned(), ModelError::Timeout { after: whole }));
                    break;
                }
                if at - now < limit {
                    limit = at - now;
                    cut = true;
                }
            }
            let probe = match self.admit(breaker, now) {
                Admit::Skip(retry_in) => {
                    tried.push((name.to_owned(), ModelError::BreakerOpen { retry_in }));
                    continue;
                }
                Admit::Probe => Some(ProbeGuard(breaker)),
                Admit::Call => None,
            };
            let r = match tokio::time::timeout(limit, model.chat(request)).await {
                Ok(r) => r,
                Err(_) => Err(ModelError::Timeout { after: limit }),
            };
            let outcome = match &r {
                Ok(_) => Outcome::Alive,
                Err(ModelError::Timeout { .. }) if cut => Outcome::Unknown,
                Err(ModelError::RateLimited { retry_after, .. }) => Outcome::Failed {
                    at_least: *retry_after,
                },
                Err(e) if fails_over(e) => Outcome::Failed { at_least: None },
                Err(_) => Outcome::Alive,
            };
            self.record(breaker, outcome, name);
            drop(probe);
            match r {
                Ok(mut answer) => {
                    if answer.provider.is_none() {
                        answer.provider = Some(name.to_owned());
                    }
                    return Ok(answer);
                }
                Err(e) if cut && matches!(e, ModelError::Timeout { .. }) => {
                    // The request's own time is up: no later model has any.
                    tried.push((name.to_owned(), e));
                    break;
                }
                Err(e) if fails_over(&e) => {
                    tracing::info!(model = %name, error = %e, "model failed; trying the next");
                    tried.push((name.to_owned(), e));
                }
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "model refused the request; no failover");
                    return Err(e);
                }
            }
        }
        Err(ModelError::Exhausted { tried })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// Answers with the scripted results, in order (then the last again),
    /// counting its calls; `slow` makes every call take that long.
    struct Scripted {
        name: &'static str,
        script: StdMutex<VecDeque<Result<ChatResponse, ModelError>>>,
        calls: StdMutex<u32>,
        slow: Option<Duration>,
    }

    impl Scripted {
        fn new(name: &'static str, script: Vec<Result<ChatResponse, ModelError>>) -> Arc<Self> {
            Arc::new(Self {
                name,
                script: StdMutex::new(script.into()),
                calls: StdMutex::new(0),
                slow: None,
            })
        }

        fn calls(&self) -> u32 {
            *self.calls.lock().unwrap()
        }
    }

    #[async_trait]
    impl Model for Scripted {
        fn name(&self) -> &str {
            self.name
        }

        async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ModelError> {
            *self.calls.lock().unwrap() += 1;
            if let Some(d) = self.slow {
                tokio::time::sleep(d).await;
            }
            let mut s = self.script.lock().unwrap();
            if s.len() > 1 {
                s.pop_front().unwrap()
            } else {
                s.front().cloned().unwrap()
            }
        }
    }

    fn rate_limited() -> Result<ChatResponse, ModelError> {
        Err(ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            message: "429".into(),
        })
    }

    fn unavailable() -> Result<ChatResponse, ModelError> {
        Err(ModelError::Unavailable {
            message: "503".into(),
        })
    }

    fn ok(text: &str) -> Result<ChatResponse, ModelError> {
        Ok(ChatResponse::text(text))
    }

    fn failover(models: &[Arc<Scripted>]) -> Failover {
        Failover::new(models.iter().map(|m| Arc::clone(m) as Arc<dyn Model>))
    }

    fn req() -> ChatRequest {
        ChatRequest::new().user("hi")
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_and_unavailable_fail_over_to_the_next() {
        for first in [rate_limited(), unavailable()] {
            let a = Scripted::new("a", vec![first]);
            let b = Scripted::new("b", vec![ok("from b")]);
            let answer = failover(&[a.clone(), b.clone()])
                .chat(&req())
                .await
                .unwrap();
            assert_eq!(answer.text.as_deref(), Some("from b"));
            assert_eq!(answer.provider.as_deref(), Some("b"));
            assert_eq!((a.calls(), b.calls()), (1, 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_request_does_not_fail_over() {
        let a = Scripted::new(
            "a",
            vec![Err(ModelError::InvalidRequest {
                message: "400".into(),
            })],
        );
        let b = Scripted::new("b", vec![ok("from b")]);
        let e = failover(&[a.clone(), b.clone()])
            .chat(&req())
            .await
            .unwrap_err();
        assert!(matches!(e, ModelError::InvalidRequest { .. }), "{e}");
        assert!(!e.is_retryable());
        assert_eq!(b.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_keeps_failing_is_skipped_while_its_breaker_is_open() {
        let a = Scripted::new("a", vec![unavailable()]);
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[a.clone(), b.clone()])
            .breaker(BreakerPolicy::new(2, Duration::from_secs(30)));
        for _ in 0..2 {
            model.chat(&req()).await.unwrap();
        }
        assert_eq!(a.calls(), 2);
        // Open: a is skipped, not called.
        for _ in 0..5 {
            assert_eq!(
                model.chat(&req()).await.unwrap().provider.as_deref(),
                Some("b")
            );
        }
        assert_eq!(a.calls(), 2);
        // Not before the cool-down: still skipped.
        tokio::time::advance(Duration::from_secs(29)).await;
        model.chat(&req()).await.unwrap();
        assert_eq!(a.calls(), 2);
        // After it: tried once (half-open); failing again opens it at once.
        tokio::time::advance(Duration::from_secs(2)).await;
        model.chat(&req()).await.unwrap();
        assert_eq!(a.calls(), 3);
        model.chat(&req()).await.unwrap();
        assert_eq!(a.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_success_closes_the_breaker() {
        let a = Scripted::new(
            "a",
            vec![
                unavailable(),
                unavailable(),
                ok("a is back"),
                unavailable(),
                ok("a"),
            ],
        );
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[a.clone(), b.clone()])
            .breaker(BreakerPolicy::new(2, Duration::from_secs(10)));
        for _ in 0..2 {
            assert_eq!(
                model.chat(&req()).await.unwrap().provider.as_deref(),
                Some("b")
            );
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("a")
        );
        // Closed again: one failure (of the two it takes) does not open it.
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("b")
        );
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("a")
        );
        assert_eq!(a.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn one_call_probes_a_half_open_breaker() {
        let mut a = Scripted::new("a", vec![unavailable()]);
        Arc::get_mut(&mut a).unwrap().slow = Some(Duration::from_secs(2));
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = Arc::new(
            failover(&[a.clone(), b.clone()])
                .breaker(BreakerPolicy::new(1, Duration::from_secs(10))),
        );
        model.chat(&req()).await.unwrap();
        assert_eq!(a.calls(), 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let m = Arc::clone(&model);
                tokio::spawn(async move { m.chat(&req()).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap().provider.as_deref(), Some("b"));
        }
        assert_eq!(a.calls(), 2, "one probe, the others skipped it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_in_half_open_closes_the_breaker() {
        let invalid = || {
            Err(ModelError::InvalidRequest {
                message: "400".into(),
            })
        };
        let a = Scripted::new("a", vec![unavailable(), invalid(), ok("a")]);
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[a.clone(), b.clone()])
            .breaker(BreakerPolicy::new(1, Duration::from_secs(10)));
        model.chat(&req()).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        // The probe's request is refused: no failover, and a is alive.
        assert!(model.chat(&req()).await.is_err());
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("a")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_key_fails_over_and_counts_against_the_breaker() {
        let a = Scripted::new(
            "a",
            vec![Err(ModelError::Unauthorized {
                message: "401".into(),
            })],
        );
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[a.clone(), b.clone()])
            .breaker(BreakerPolicy::new(2, Duration::from_secs(10)));
        for _ in 0..4 {
            assert_eq!(
                model.chat(&req()).await.unwrap().provider.as_deref(),
                Some("b")
            );
        }
        assert_eq!(a.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_keeps_the_model_skipped_for_its_retry_after() {
        let a = Scripted::new(
            "a",
            vec![
                Err(ModelError::RateLimited {
                    retry_after: Some(Duration::from_secs(120)),
                    message: "429".into(),
                }),
                ok("a"),
            ],
        );
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[a.clone(), b.clone()]);
        model.chat(&req()).await.unwrap();
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("b")
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("a")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_cut_by_the_request_counts_against_no_model() {
        let mut slow = Scripted::new("slow", vec![ok("in time")]);
        Arc::get_mut(&mut slow).unwrap().slow = Some(Duration::from_secs(5));
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[slow.clone(), b.clone()])
            .breaker(BreakerPolicy::new(1, Duration::from_secs(60)));
        let e = model
            .chat(&req().timeout(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ModelError::Exhausted { tried } if tried.len() == 1),
            "{e}"
        );
        assert_eq!(b.calls(), 0, "no time was left for b");
        // The breaker did not open: the next call without a deadline waits for it.
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("slow")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nested_failovers_keep_the_provider_that_answered() {
        let a = Scripted::new("a", vec![unavailable()]);
        let b = Scripted::new("b", vec![ok("from b")]);
        let inner: Arc<dyn Model> = Arc::new(failover(&[a, b]));
        let outer = Failover::new([inner]);
        assert_eq!(
            outer.chat(&req()).await.unwrap().provider.as_deref(),
            Some("b")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_provider_times_out_and_fails_over() {
        let mut slow = Scripted::new("slow", vec![ok("too late")]);
        Arc::get_mut(&mut slow).unwrap().slow = Some(Duration::from_secs(120));
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[slow.clone(), b.clone()]).attempt_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let answer = model.chat(&req()).await.unwrap();
        assert_eq!(answer.provider.as_deref(), Some("b"));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_timeout_bounds_every_attempt() {
        let mut slow = Scripted::new("slow", vec![ok("too late")]);
        Arc::get_mut(&mut slow).unwrap().slow = Some(Duration::from_secs(120));
        let model = failover(&[slow.clone()]);
        let e = model
            .chat(&req().timeout(Duration::from_secs(3)))
            .await
            .unwrap_err();
        let ModelError::Exhausted { tried } = &e else {
            panic!("{e}");
        };
        assert_eq!(
            tried[0].1,
            ModelError::Timeout {
                after: Duration::from_secs(3)
            }
        );
        assert!(e.is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn every_model_failing_lists_each() {
        let a = Scripted::new("a", vec![rate_limited()]);
        let b = Scripted::new("b", vec![unavailable()]);
        let e = failover(&[a, b]).chat(&req()).await.unwrap_err();
        let ModelError::Exhausted { tried } = &e else {
            panic!("{e}");
        };
        let names: Vec<&str> = tried.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(e.to_string().contains("a: rate limited"), "{e}");
    }
}
