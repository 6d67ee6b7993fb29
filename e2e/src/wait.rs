//! Waiting on conditions with deadlines (never a bare sleep as synchronisation).

use std::future::Future;
use std::time::Duration;

use http_add_on_testkit::wait::try_until_every;

/// Polls `check` every `every` until it returns `Some`, failing after `timeout` with `what`
/// (and the last error `check` returned). The test kit's [`try_until_every`], as an
/// `anyhow` error. For conditions only observable by polling an external system (e.g. an
/// HTTP answer).
pub async fn until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    Ok(try_until_every(what, timeout, every, check).await?)
}
