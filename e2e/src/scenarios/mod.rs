//! The scenario suite (issue "End-to-end suite"), one module per area.

mod basics;
mod ingress_check;
mod metric_change;
pub(crate) mod pending;
mod resilience;
mod routing;
pub(crate) mod scaling;
mod validation;

use std::time::Duration;

use http_add_on_types::queue::QueueCounts;

use crate::http::{HttpClient, Reply};
use crate::runner::Scenario;
use crate::testbed::Testbed;
use crate::wait;

/// Every scenario, in run order.
pub fn all() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(basics::scenarios());
    all.extend(routing::scenarios());
    all.extend(validation::scenarios());
    all.extend(scaling::scenarios());
    all.extend(metric_change::scenarios());
    all.extend(ingress_check::scenarios());
    all.extend(pending::scenarios());
    all.extend(resilience::scenarios());
    all
}

/// Waits until every interceptor knows route `key` (`<ns>/<name>`), via their `/queue`.
pub async fn wait_route_known(tb: &Testbed, key: &str) -> anyhow::Result<()> {
    wait_route(tb, key, true).await
}

/// Waits until every interceptor has forgotten route `key`.
pub async fn wait_route_gone(tb: &Testbed, key: &str) -> anyhow::Result<()> {
    wait_route(tb, key, false).await
}

async fn wait_route(tb: &Testbed, key: &str, known: bool) -> anyhow::Result<()> {
    let http = HttpClient::new(Duration::from_secs(2));
    let admins = tb.control.interceptor_admins();
    let what = if known { "route" } else { "drop" };
    wait::until(
        &format!("every interceptor to {what} {key}"),
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            for admin in &admins {
                let reply = http.get(*admin, "localhost", "/queue", &[]).await?;
                let counts: QueueCounts = serde_json::from_slice(&reply.body)?;
                if counts.contains_key(key) != known {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// Sends `GET path` with `Host: host` through the interceptor until the status is `want`.
pub async fn wait_status(
    tb: &Testbed,
    host: &str,
    path: &str,
    want: u16,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let http = HttpClient::new(Duration::from_secs(30));
    wait::until(
        &format!("{host}{path} to answer {want}"),
        timeout,
        Duration::from_millis(50),
        || async {
            let reply = http.get(tb.proxy, host, path, &[]).await?;
            Ok((reply.status.as_u16() == want).then_some(reply))
        },
    )
    .await
}

/// Fails unless `cond`, with `message`.
pub fn check(cond: bool, message: impl FnOnce() -> String) -> anyhow::Result<()> {
    if cond {
        Ok(())
    } else {
        anyhow::bail!(message())
    }
}
