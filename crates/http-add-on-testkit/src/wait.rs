//! Waiting on a condition with a deadline: the only way tests synchronise with what runs
//! elsewhere (a controller, a watch, another process). The deadline is a hang guard, not a
//! speed assertion: it is generous, and what is fast is measured by benchmarks.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The deadline tests use for anything that should happen "promptly".
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How often a condition is checked again.
const EVERY: Duration = Duration::from_millis(10);

/// Why [`try_until`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The condition did not hold before the deadline.
    #[error("timed out after {after:?} waiting for {what}{}", last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    TimedOut {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
        /// The last error the check returned, if any.
        last: Option<String>,
    },
}

/// Checks `check` until it returns `Some`, and returns that; panics naming `what` once
/// `deadline` has passed.
pub async fn until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let outcome = try_until(what, deadline, || {
        let next = check();
        async move { Ok::<_, std::convert::Infallible>(next.await) }
    })
    .await;
    match outcome {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

/// [`until`] with the default [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until(what, DEADLINE, check).await
}

/// Checks `check` until it returns `Ok(Some)`; an `Err` counts as "not yet" and is reported
/// if the deadline passes. For suites that return errors instead of panicking (e2e).
pub async fn try_until<T, E, F, Fut>(what: &str, deadline: Duration, check: F) -> Result<T, Error>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    try_until_every(what, deadline, EVERY, check).await
}

/// [`try_until`], checking every `every` (for checks that load what they ask, such as a
/// request through the proxy).
pub async fn try_until_every<T, E, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, Error>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let started = Instant::now();
    let mut last = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = Some(format!("{error:#}")),
        }
        if started.elapsed() >= deadline {
            return Err(Error::TimedOut {
                what: what.to_owned(),
                after: deadline,
                last,
            });
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn until_returns_the_first_value() {
        let calls = AtomicU32::new(0);
        let value = until("the third call", DEADLINE, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn try_until_names_what_and_the_last_error() {
        let error = try_until("never", Duration::from_millis(30), || async {
            Err::<Option<()>, _>("refused")
        })
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "timed out after 30ms waiting for never (last error: refused)"
        );
    }
}
