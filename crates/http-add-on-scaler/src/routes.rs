//! The scaling specs of routes: HTTPScaledObjects and InterceptorRoutes in all namespaces,
//! cached by reflectors (targets, rate windows).

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use http_add_on_types::duration::parse_duration;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};

use crate::discovery::WatchBackoff;
use crate::rate::RateConfig;

/// Read-only caches of the route objects.
#[derive(Clone)]
pub struct RouteSpecs {
    http_scaled_objects: Store<HTTPScaledObject>,
    interceptor_routes: Store<InterceptorRoute>,
}

/// A cache has not finished its first list yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} cache has not synced with the API server yet")]
pub struct NotSynced(pub &'static str);

impl RouteSpecs {
    /// Starts the reflectors on `client` (they run until the returned task is aborted).
    pub fn start(client: kube::Client) -> (Self, tokio::task::JoinHandle<()>) {
        let (http_scaled_objects, hso_writer) = reflector::store();
        let (interceptor_routes, ir_writer) = reflector::store();
        let hso = reflect::<HTTPScaledObject>(Api::all(client.clone()), hso_writer);
        let ir = reflect::<InterceptorRoute>(Api::all(client), ir_writer);
        let task = tokio::spawn(async move {
            futures::join!(hso, ir);
        });
        (
            Self {
                http_scaled_objects,
                interceptor_routes,
            },
            task,
        )
    }

    /// Caches already synced with exactly these objects (for unit tests).
    #[cfg(test)]
    pub(crate) fn from_objects(
        http_scaled_objects: Vec<HTTPScaledObject>,
        interceptor_routes: Vec<InterceptorRoute>,
    ) -> Self {
        fn synced<K>(objects: Vec<K>) -> Store<K>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&watcher::Event::Init);
            for object in objects {
                writer.apply_watcher_event(&watcher::Event::InitApply(object));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            store
        }
        Self {
            http_scaled_objects: synced(http_scaled_objects),
            interceptor_routes: synced(interceptor_routes),
        }
    }

    /// The HTTPScaledObject `namespace/name`, if it exists.
    pub fn http_scaled_object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<HTTPScaledObject>>, NotSynced> {
        lookup(
            &self.http_scaled_objects,
            "HTTPScaledObject",
            namespace,
            name,
        )
    }

    /// Whether an HTTPScaledObject or an InterceptorRoute has the route key `namespace/name`.
    pub fn exists(&self, route: &str) -> Result<bool, NotSynced> {
        let Some((namespace, name)) = route.split_once('/') else {
            return Ok(false);
        };
        Ok(self.http_scaled_object(namespace, name)?.is_some()
            || self.interceptor_route(namespace, name)?.is_some())
    }

    /// The InterceptorRoute `namespace/name`, if it exists.
    pub fn interceptor_route(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<InterceptorRoute>>, NotSynced> {
        lookup(
            &self.interceptor_routes,
            "InterceptorRoute",
            namespace,
            name,
        )
    }
}

fn lookup<K>(
    store: &Store<K>,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, NotSynced>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    if store.wait_until_ready().now_or_never().is_none() {
        return Err(NotSynced(kind));
    }
    Ok(store.get(&ObjectRef::new(name).within(namespace)))
}

async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, kind = %K::kind(&()), "watching route objects");
        }
    }
}

/// The rate window of an InterceptorRoute (`None` without a request-rate metric).
pub fn interceptor_route_rate(route: &InterceptorRoute) -> Option<RateConfig> {
    let rr = route.spec.scaling_metric.request_rate.as_ref()?;
    Some(rate_config(&rr.window, &rr.granularity))
}

/// The rate window of an HTTPScaledObject (`None` without a request-rate metric).
pub fn http_scaled_object_rate(hso: &HTTPScaledObject) -> Option<RateConfig> {
    let rr = hso.spec.scaling_metric.as_ref()?.request_rate.as_ref()?;
    Some(rate_config(&rr.window, &rr.granularity))
}

fn rate_config(window: &str, granularity: &str) -> RateConfig {
    let parse = |what: &str, value: &str, default: Duration| {
        parse_duration(value).unwrap_or_else(|error| {
            tracing::warn!(%error, field = what, value, "bad duration in requestRate, using the default");
            default
        })
    };
    let default = RateConfig::default();
    RateConfig {
        window: parse("window", window, default.window),
        granularity: parse("granularity", granularity, default.granularity),
    }
    .sanitized()
}
