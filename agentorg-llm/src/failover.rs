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
    /// How long it stays open: the provider is skipped, then tried again
    /// once (half-open: a success closes it, a failure opens it again).
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
    open_until: Option<Instant>,
}

/// A [`Model`] over an ordered list of models: each call goes to the first
/// whose breaker is not open; a retryable error (rate limited, unavailable,
/// timeout) moves it to the next; any other error ends it there (an invalid
/// request fails the same everywhere). Retryable failures in a row open a
/// model's breaker ([`BreakerPolicy`]): it is skipped until the cool-down
/// passes, then tried once. The answer says which model gave it
/// ([`ChatResponse::provider`]); when none does, [`ModelError::Exhausted`]
/// lists each and why.
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

    /// Whether `breaker` is open now.
    fn is_open(&self, breaker: &Mutex<Breaker>, now: Instant) -> bool {
        let b = breaker.lock().unwrap_or_else(PoisonError::into_inner);
        b.open_until.is_some_and(|until| now < until)
    }

    fn record(&self, breaker: &Mutex<Breaker>, ok: bool, name: &str) {
        let mut b = breaker.lock().unwrap_or_else(PoisonError::into_inner);
        if ok {
            *b = Breaker::default();
            return;
        }
        b.failures = b.failures.saturating_add(1);
        let half_open = b.open_until.is_some();
        if half_open || b.failures >= self.policy.failures {
            // A cool-down too large to add keeps it open for ever.
            b.open_until = Some(
                Instant::now()
                    .checked_add(self.policy.cool_down)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30)),
            );
            tracing::warn!(model = %name, failures = b.failures, cool_down = ?self.policy.cool_down, "model breaker open: skipped for the cool-down");
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
            let now = Instant::now();
            if self.is_open(breaker, now) {
                let skipped = ModelError::Unavailable {
                    message: "skipped: its breaker is open".to_owned(),
                };
                tried.push((model.name().to_owned(), skipped));
                continue;
            }
            let mut limit = self.attempt_timeout;
            if let Some((at, whole)) = deadline {
                if now >= at {
                    tried.push((
                        model.name().to_owned(),
                        ModelError::Timeout { after: whole },
                    ));
                    break;
                }
                limit = limit.min(at - now);
            }
            let r = match tokio::time::timeout(limit, model.chat(request)).await {
                Ok(r) => r,
                Err(_) => Err(ModelError::Timeout { after: limit }),
            };
            match r {
                Ok(mut answer) => {
                    self.record(breaker, true, model.name());
                    answer.provider = Some(model.name().to_owned());
                    return Ok(answer);
                }
                Err(e) if e.is_retryable() => {
                    tracing::info!(model = %model.name(), error = %e, "model failed; trying the next");
                    self.record(breaker, false, model.name());
                    tried.push((model.name().to_owned(), e));
                }
                Err(e) => return Err(e),
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
        let a = Scripted::new("a", vec![unavailable(), ok("a is back")]);
        let b = Scripted::new("b", vec![ok("from b")]);
        let model = failover(&[a.clone(), b.clone()])
            .breaker(BreakerPolicy::new(1, Duration::from_secs(10)));
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("b")
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("a")
        );
        assert_eq!(
            model.chat(&req()).await.unwrap().provider.as_deref(),
            Some("a")
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
