//! Bounded cold-start holding (`coldStart.maxPendingRequests`, upstream 0.16): a burst to an
//! app at zero replicas is held up to the limit per interceptor, the rest answered at once.

use std::time::Duration;

use futures::FutureExt;
use http_add_on_testkit::build;
use http_add_on_types::crd::{InterceptorRoute, ScaledObject};
use serde_json::json;

use super::scaling::user_route;
use super::{check, wait_route_known};
use crate::app::{self, App};
use crate::http::HttpClient;
use crate::runner::Scenario;
use crate::testbed::Testbed;

/// Requests each interceptor holds for the route.
const LIMIT: usize = 2;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "pending-limit",
        timeout: Duration::from_secs(90),
        exclusive: false,
        run: |tb, ns| pending_limit(tb, ns).boxed(),
    }]
}

/// The InterceptorRoute of [`pending_limit`]: [`user_route`] with a pending limit.
pub(crate) fn limited_route(ns: &str, host: &str) -> [serde_json::Value; 2] {
    let [mut route, scaled_object] =
        user_route(ns, host, json!({"concurrency": {"targetValue": 10}}), 1, 1);
    build::merge(
        &mut route,
        json!({"spec": {"coldStart": {"maxPendingRequests": LIMIT, "overflow": "Reject"}}}),
    );
    [route, scaled_object]
}

/// A burst to a cold app (which takes seconds to start) through every interceptor: at most
/// `LIMIT` per interceptor are held and answered 200 once the app is up; every other request
/// is a 503 with `Retry-After` at once; none fails otherwise. Then the app serves normally.
async fn pending_limit(tb: Testbed, ns: String) -> anyhow::Result<()> {
    let app = App::new(&ns, "app").startup_delay("4s");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let [route, scaled_object] = limited_route(&ns, &host);
    app::apply::<InterceptorRoute>(&tb, &ns, "app", route).await?;
    app::apply::<ScaledObject>(&tb, &ns, "app", scaled_object).await?;
    wait_route_known(&tb, &format!("{ns}/app")).await?;

    let interceptors = tb.control.interceptor_count();
    let burst = LIMIT * interceptors + 6;
    let http = HttpClient::new(Duration::from_secs(60));
    let paths: Vec<String> = (0..burst).map(|i| format!("/{i}")).collect();
    let replies =
        futures::future::join_all(paths.iter().map(|p| http.get(tb.proxy, &host, p, &[]))).await;
    let mut held = 0;
    let mut rejected = 0;
    for reply in replies {
        let reply = reply?;
        match reply.status.as_u16() {
            200 => {
                check(reply.cold_start() == Some(true), || {
                    format!("a held request was not cold: {reply:?}")
                })?;
                held += 1;
            }
            503 => {
                check(reply.headers.contains_key("retry-after"), || {
                    format!("a rejection without Retry-After: {reply:?}")
                })?;
                rejected += 1;
            }
            _ => anyhow::bail!("unexpected answer {}: {}", reply.status, reply.text()),
        }
    }
    check(
        held >= 1 && held <= LIMIT * interceptors && held + rejected == burst,
        || {
            format!(
                "{burst} requests through {interceptors} interceptors with a limit of {LIMIT}: \
                 {held} held and answered, {rejected} rejected"
            )
        },
    )?;
    let warm = http.get(tb.proxy, &host, "/warm", &[]).await?;
    check(
        warm.status == 200 && warm.cold_start() == Some(false),
        || format!("warm request: {} {}", warm.status, warm.text()),
    )?;
    Ok(())
}
