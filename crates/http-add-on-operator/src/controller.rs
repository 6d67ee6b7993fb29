//! The two controllers: HTTPScaledObject (owns a KEDA ScaledObject) and InterceptorRoute
//! (status only). Both reconcilers are idempotent: they compute the desired state, write only
//! what differs, and record an Event when the `Ready` condition changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_add_on_types::crd::http_scaled_object::{
    FINALIZER, HTTPScaledObjectStatus, SKIP_SCALEDOBJECT_CREATION_ANNOTATION,
};
use http_add_on_types::crd::interceptor_route::InterceptorRouteStatus;
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute, ScaledObject};
use http_add_on_types::routing::RouteConflict;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::{RouteIndex, Subject};
use crate::scaled_object::{
    FIELD_MANAGER, desired_scaled_object, is_controlled_by, needs_apply, skips_scaled_object,
    target_service, target_workload,
};
use crate::status::{Outcome, Reason, ready_condition, ready_state};
use crate::{Error, Result, validate};

/// Controller name of HTTPScaledObjects in metrics and logs.
pub const HSO_CONTROLLER: &str = "httpscaledobject";
/// Controller name of InterceptorRoutes in metrics and logs.
pub const IR_CONTROLLER: &str = "interceptorroute";

/// First retry delay after a failed reconciliation.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Retry delay after `failures` consecutive failures: 1s, 2s, 4s, … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_CAP)
}

/// Shared state of both reconcilers.
pub struct Context {
    client: Client,
    scaler_address: String,
    routes: Arc<RouteIndex>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

fn failure_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

impl Context {
    fn succeeded<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&failure_key(obj));
    }

    async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, event: Event) {
        if let Err(error) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(%error, object = %failure_key(obj), "publishing an event failed");
        }
    }

    /// Publishes an Event when the `Ready` condition's status or reason changes.
    async fn publish_transition<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        previous: &[Condition],
        outcome: &Outcome,
    ) {
        let status = if outcome.reason.is_ready() {
            "True"
        } else {
            "False"
        };
        if ready_state(previous) == Some((status, outcome.reason.as_str())) {
            return;
        }
        let event = Event {
            type_: if outcome.reason.is_ready() {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: outcome.reason.as_str().to_owned(),
            note: Some(truncate(&outcome.message, 1024)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        self.publish(obj, event).await;
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn conflict_message(c: &RouteConflict) -> String {
    format!(
        "host {:?} path {:?} is already claimed by {}, which is older",
        c.host, c.path, c.winner
    )
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = failure_key(&*obj);
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    tracing::warn!(object = %key, %error, failures, retry_in = ?delay, "reconciliation failed");
    Action::requeue(delay)
}

#[tracing::instrument(name = "reconcile HTTPScaledObject", skip_all, fields(
    namespace = hso.metadata.namespace.as_deref().unwrap_or(""),
    name = hso.metadata.name.as_deref().unwrap_or(""),
    ok = tracing::field::Empty,
))]
async fn reconcile_hso(hso: Arc<HTTPScaledObject>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_hso_inner(hso.clone(), &ctx).await;
    tracing::Span::current().record("ok", result.is_ok());
    ctx.metrics
        .reconciled(HSO_CONTROLLER, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&*hso);
    }
    result
}

async fn reconcile_hso_inner(hso: Arc<HTTPScaledObject>, ctx: &Context) -> Result<Action> {
    let ns = hso.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<HTTPScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, hso, |event| async {
        match event {
            Finalizer::Apply(hso) => apply_hso(&hso, &api, ctx).await,
            Finalizer::Cleanup(hso) => {
                // The ScaledObject goes with its owner reference (or stays, when orphaned).
                ctx.routes.forget(Subject::HttpScaledObject(&hso));
                tracing::info!(object = %failure_key(&*hso), "HTTPScaledObject deleted");
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply_hso(
    hso: &HTTPScaledObject,
    api: &Api<HTTPScaledObject>,
    ctx: &Context,
) -> Result<Action> {
    let mut failure = None;
    let outcome = match validate::http_scaled_object(&hso.spec) {
        Err(invalid) => {
            ctx.routes.forget(Subject::HttpScaledObject(hso));
            Outcome::new(Reason::InvalidSpec, invalid.0)
        }
        Ok(()) => {
            // An object losing a route conflict still gets its ScaledObject: scaling is
            // harmless, and the interceptor's precedence decides who serves the contested route.
            let conflict = ctx
                .routes
                .conflict_for(Subject::HttpScaledObject(hso))
                .await;
            match sync_scaled_object(hso, ctx).await {
                Err(error) => {
                    let outcome = Outcome::new(Reason::CreateError, error.to_string());
                    failure = Some(error);
                    outcome
                }
                Ok(message) => match conflict {
                    Some(c) => Outcome::new(Reason::RouteConflict, conflict_message(&c)),
                    None => Outcome::new(Reason::Reconciled, message),
                },
            }
        }
    };
    let previous: &[Condition] = hso.status.as_ref().map_or(&[], |s| &s.conditions);
    let ready = ready_condition(&outcome, hso.metadata.generation, previous);
    let status = HTTPScaledObjectStatus {
        target_workload: Some(target_workload(hso)),
        target_service: Some(target_service(hso)),
        conditions: vec![ready.clone()],
    };
    let current = hso.status.clone().unwrap_or_default();
    let unchanged = current.target_workload == status.target_workload
        && current.target_service == status.target_service
        && current.conditions.iter().find(|c| c.type_ == ready.type_) == Some(&ready);
    if !unchanged {
        let patch = json!({
            "apiVersion": HTTPScaledObject::api_version(&()),
            "kind": HTTPScaledObject::kind(&()),
            "status": status,
        });
        api.patch_status(
            &hso.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    ctx.publish_transition(hso, previous, &outcome).await;
    match failure {
        Some(error) => Err(error),
        None => Ok(Action::await_change()),
    }
}

/// Creates, updates or (for the skip annotation) deletes the ScaledObject of `hso`; returns the
/// message of the `Ready` condition.
async fn sync_scaled_object(hso: &HTTPScaledObject, ctx: &Context) -> Result<String> {
    let ns = hso.namespace().ok_or(Error::NotNamespaced)?;
    let name = hso.name_any();
    let api: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    let live = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::ScaledObject {
            name: format!("{ns}/{name}"),
            source,
        })?;
    if skips_scaled_object(hso) {
        let uid = hso.uid().unwrap_or_default();
        if let Some(live) = live.filter(|so| is_controlled_by(so, &uid)) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(Error::ScaledObject {
                        name: format!("{ns}/{name}"),
                        source,
                    });
                }
            }
            tracing::info!(object = %failure_key(hso), "deleted the owned ScaledObject (skip annotation)");
            let event = Event {
                type_: EventType::Normal,
                reason: "ScaledObjectDeleted".to_owned(),
                note: Some(format!(
                    "deleted ScaledObject {name}: {SKIP_SCALEDOBJECT_CREATION_ANNOTATION} is \"true\""
                )),
                action: "Delete".to_owned(),
                secondary: Some(live.object_ref(&())),
            };
            ctx.publish(hso, event).await;
        }
        return Ok(format!(
            "no ScaledObject: {SKIP_SCALEDOBJECT_CREATION_ANNOTATION} is \"true\""
        ));
    }
    let desired = desired_scaled_object(hso, &ctx.scaler_address);
    if live.as_ref().is_none_or(|live| needs_apply(live, &desired)) {
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|source| Error::ScaledObject {
            name: format!("{ns}/{name}"),
            source,
        })?;
        tracing::info!(object = %failure_key(hso), created = live.is_none(), "applied the ScaledObject");
    }
    Ok(format!("ScaledObject {name} is up to date"))
}

#[tracing::instrument(name = "reconcile InterceptorRoute", skip_all, fields(
    namespace = ir.metadata.namespace.as_deref().unwrap_or(""),
    name = ir.metadata.name.as_deref().unwrap_or(""),
    ok = tracing::field::Empty,
))]
async fn reconcile_ir(ir: Arc<InterceptorRoute>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_ir_inner(&ir, &ctx).await;
    tracing::Span::current().record("ok", result.is_ok());
    ctx.metrics
        .reconciled(IR_CONTROLLER, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&*ir);
    }
    result
}

async fn reconcile_ir_inner(ir: &InterceptorRoute, ctx: &Context) -> Result<Action> {
    let ns = ir.namespace().ok_or(Error::NotNamespaced)?;
    if ir.meta().deletion_timestamp.is_some() {
        ctx.routes.forget(Subject::InterceptorRoute(ir));
        return Ok(Action::await_change());
    }
    let outcome = match validate::interceptor_route(&ir.spec) {
        Err(invalid) => {
            ctx.routes.forget(Subject::InterceptorRoute(ir));
            Outcome::new(Reason::InvalidSpec, invalid.0)
        }
        Ok(()) => match ctx.routes.conflict_for(Subject::InterceptorRoute(ir)).await {
            Some(c) => Outcome::new(Reason::RouteConflict, conflict_message(&c)),
            None => Outcome::new(Reason::Reconciled, "route accepted"),
        },
    };
    let previous: &[Condition] = ir.status.as_ref().map_or(&[], |s| &s.conditions);
    let ready = ready_condition(&outcome, ir.metadata.generation, previous);
    if previous.iter().find(|c| c.type_ == ready.type_) != Some(&ready) {
        let api: Api<InterceptorRoute> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({
            "apiVersion": InterceptorRoute::api_version(&()),
            "kind": InterceptorRoute::kind(&()),
            "status": InterceptorRouteStatus { conditions: vec![ready] },
        });
        api.patch_status(
            &ir.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    ctx.publish_transition(ir, previous, &outcome).await;
    Ok(Action::await_change())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn log_result<T>(
    controller: &'static str,
    result: Result<T, kube::runtime::controller::Error<Error, watcher::Error>>,
) -> futures::future::Ready<()> {
    if let Err(error) = result {
        // Reconcile errors were logged by the error policy; the rest (objects gone from the
        // cache, watch hiccups) are routine.
        tracing::debug!(controller, %error, "controller event");
    }
    futures::future::ready(())
}

/// Runs both controllers (and the route index) until the future is dropped.
pub async fn run(client: Client, config: &Config, metrics: Arc<Metrics>, identity: String) {
    let ns = config.watch_namespace.as_deref();
    let hso_api: Api<HTTPScaledObject> = api(&client, ns);
    let ir_api: Api<InterceptorRoute> = api(&client, ns);
    let so_api: Api<ScaledObject> = api(&client, ns);
    let (routes, parts) = RouteIndex::new(hso_api.clone(), ir_api.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context {
        client,
        scaler_address: config.scaler_address(),
        routes,
        recorder,
        metrics,
        failures: Mutex::default(),
    });
    let hso = Controller::new(hso_api, watcher::Config::default())
        .owns(so_api, watcher::Config::default())
        .reconcile_all_on(parts.hso_trigger)
        .run(reconcile_hso, error_policy, ctx.clone())
        .for_each(|r| log_result(HSO_CONTROLLER, r));
    let ir = Controller::new(ir_api, watcher::Config::default())
        .reconcile_all_on(parts.ir_trigger)
        .run(reconcile_ir, error_policy, ctx)
        .for_each(|r| log_result(IR_CONTROLLER, r));
    tracing::info!(namespace = ns.unwrap_or("<all>"), "controllers started");
    tokio::join!(parts.driver, hso, ir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
    }
}
