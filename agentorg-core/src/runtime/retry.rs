//! The one conflict-retry loop of optimistic transactions, and the backoff
//! of retried deliveries.

use std::future::Future;
use std::time::Duration;

use backon::BackoffBuilder;

use super::config::RuntimeConfig;

/// How many times an optimistic transaction is tried before its caller
/// gives up on it (and, for a delivery, runs it again later).
pub const CONFLICT_RETRIES: usize = 16;

/// Runs an optimistic transaction — read, decide, commit with
/// preconditions — until it settles: `attempt` returns `Ok(Some(_))` when
/// done, `Ok(None)` when a precondition failed and it must read and decide
/// again. Gives `Ok(None)` after [`CONFLICT_RETRIES`] conflicts.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agentorg_core::store::StoreError> {
/// use agentorg_core::runtime::optimistic;
/// use agentorg_core::store::{CollectionPath, MemoryStore, Precondition, StateStore, StateStoreExt};
///
/// let store = MemoryStore::new();
/// let key = CollectionPath::new("counters")?.doc("a")?;
/// let n = optimistic(|| async {
///     let (n, pre) = match store.get(&key).await? {
///         Some(doc) => (doc.value["n"].as_u64().unwrap_or(0), Precondition::Version(doc.version)),
///         None => (0, Precondition::MustNotExist),
///     };
///     match store.put(&key, serde_json::json!({"n": n + 1}), pre).await {
///         Ok(_) => Ok(Some(n + 1)),
///         Err(e) if e.is_precondition_failure() => Ok(None),
///         Err(e) => Err(e),
///     }
/// })
/// .await?;
/// assert_eq!(n, Some(1));
/// # Ok(()) }
/// ```
pub async fn optimistic<T, E, F, Fut>(mut attempt: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    for _ in 0..CONFLICT_RETRIES {
        if let Some(done) = attempt().await? {
            return Ok(Some(done));
        }
    }
    Ok(None)
}

/// The delay before attempt `attempt + 1` after a transient failure:
/// exponential from `min_backoff` to `max_backoff`, with jitter if
/// configured.
pub(crate) fn backoff(config: &RuntimeConfig, attempt: u32) -> Duration {
    let mut b = backon::ExponentialBuilder::default()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_factor(2.0)
        .without_max_times();
    if config.jitter {
        b = b.with_jitter();
    }
    let n = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    b.build().nth(n).unwrap_or(config.max_backoff)
}
