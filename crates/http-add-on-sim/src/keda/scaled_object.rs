//! One ScaledObject's scaling loop: trigger activity (pushed and polled), activation, cooldown,
//! the HPA step and the status, until the ScaledObject is replaced or deleted.

use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::join_all;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::Resolver;
use super::autoscaler::{Autoscaler, MetricReading, ScaleDecision, float_or_int};
use super::hpa::{self, HpaMetric};
use super::scaler_client::{ScalerConn, TriggerPoll};
use super::spec::{ScalingConfig, TriggerMode, scaled_object_resource};
use super::status::{
    Gvkr, REASON_CHECK_FAILED, REASON_TARGET_NOT_FOUND, REASON_TRIGGER_ERROR, Readiness,
    ScaledObjectStatus, conditions,
};

/// What a ScaledObject's loop hands to its successor when the spec changes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Carry {
    /// Replica count of the target when the ScaledObject was first seen.
    pub original_replicas: Option<i32>,
    /// Last time a trigger was active.
    pub last_active: Option<Timestamp>,
}

/// Why a ScaledObject's loop must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The spec changed; a new loop takes over.
    Replaced,
    /// The ScaledObject is gone (restore the original replica count if asked to).
    Deleted,
}

/// Shared by every ScaledObject loop.
pub(crate) struct Context<R> {
    /// Client to the API server.
    pub client: kube::Client,
    /// `scalerAddress` resolver.
    pub resolver: Arc<R>,
}

fn wall_to_instant(at: Timestamp) -> Instant {
    let now = Instant::now();
    let ago = Timestamp::now().duration_since(at);
    match std::time::Duration::try_from(ago) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(_) => now, // in the future: treat as now
    }
}

fn status_field<T: serde::de::DeserializeOwned>(obj: &DynamicObject, field: &str) -> Option<T> {
    obj.data
        .get("status")?
        .get(field)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// How long to wait before retrying a failed status write.
const STATUS_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A finished poll of every trigger: the connections back, when it started, the results.
type PollOutcome<R> = (Vec<ScalerConn<R>>, Instant, Vec<TriggerPoll>);
type PollFuture<R> = Pin<Box<dyn Future<Output = PollOutcome<R>> + Send>>;

async fn poll_all<R: Resolver>(mut conns: Vec<ScalerConn<R>>) -> PollOutcome<R> {
    let started = Instant::now();
    let polls = join_all(conns.iter_mut().map(|c| c.poll())).await;
    (conns, started, polls)
}

/// The live state of one ScaledObject loop.
struct Loop {
    name: String,
    namespace: String,
    so_api: Api<DynamicObject>,
    target_api: Option<Api<DynamicObject>>,
    config: Option<ScalingConfig>,
    autoscaler: Option<Autoscaler>,
    carry: Carry,
    config_error: Option<String>,
    target_error: Option<String>,
    /// Latest activity per trigger (pushed or polled).
    trigger_active: Vec<bool>,
    /// Latest poll error per trigger.
    trigger_error: Vec<Option<String>>,
    /// Whether every trigger answered once.
    trigger_answered: Vec<bool>,
    /// When each trigger's stream last reported; a poll that started earlier is older news.
    pushed_at: Vec<Option<Instant>>,
    /// Whether a poll completed: until then nothing is known about activity, so no cooldown.
    polled: bool,
    /// When to retry a failed status write.
    status_retry_at: Option<Instant>,
    metric_names: Vec<String>,
    written_status: Option<ScaledObjectStatus>,
    /// The ScaledObject as this loop started with it (the HPA's owner).
    object: DynamicObject,
    hpa_api: Api<DynamicObject>,
    hpa_name: String,
    /// The metrics last written to the HPA (`None` until it exists).
    hpa_metrics: Option<Vec<HpaMetric>>,
}

impl Loop {
    fn readiness(&self) -> Readiness {
        if let Some(error) = &self.config_error {
            return Readiness::NotReady(REASON_CHECK_FAILED, error.clone());
        }
        if let Some(error) = &self.target_error {
            return Readiness::NotReady(REASON_TARGET_NOT_FOUND, error.clone());
        }
        if let Some(error) = self.trigger_error.iter().flatten().next() {
            return Readiness::NotReady(REASON_TRIGGER_ERROR, error.clone());
        }
        if self.trigger_answered.iter().all(|a| *a) {
            Readiness::Ready
        } else {
            Readiness::Unknown
        }
    }

    fn status(&self) -> ScaledObjectStatus {
        let active = self.autoscaler.as_ref().is_some_and(Autoscaler::is_active);
        let target = self.config.as_ref().map(|c| &c.target);
        ScaledObjectStatus {
            conditions: conditions(&self.readiness(), active),
            scale_target_kind: target.map(|t| t.kind_label()),
            scale_target_gvkr: target.map(Gvkr::of),
            original_replica_count: self.carry.original_replicas,
            last_active_time: self.carry.last_active.map(|t| format!("{t:.0}")),
            external_metric_names: self.metric_names.clone(),
            hpa_name: self.hpa_metrics.is_some().then(|| self.hpa_name.clone()),
        }
    }

    /// Writes the HPA when the metric specs it is built from were (re)read and differ from
    /// what it holds; until every trigger's specs are known there is nothing to build.
    async fn sync_hpa<R: Resolver>(&mut self, conns: &[ScalerConn<R>]) {
        let Some(config) = &self.config else {
            return;
        };
        let mut metrics = Vec::new();
        for (conn, trigger) in conns.iter().zip(&config.triggers) {
            let Some(specs) = conn.specs() else {
                return;
            };
            metrics.extend(specs.iter().map(|spec| HpaMetric {
                name: format!("s{}-{}", trigger.index, spec.metric_name),
                target: float_or_int(spec.target_size, spec.target_size_float),
                kind: trigger.metric_target,
            }));
        }
        if self.hpa_metrics.as_ref() == Some(&metrics) {
            return;
        }
        let object = hpa::object(&self.object, &self.hpa_name, config, &metrics);
        let params = PatchParams::apply(hpa::FIELD_MANAGER).force();
        match self
            .hpa_api
            .patch(&self.hpa_name, &params, &Patch::Apply(&object))
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %self.namespace, name = %self.name, hpa = %self.hpa_name, metrics = ?metrics.iter().map(|m| &m.name).collect::<Vec<_>>(), "HPA built from the scalers' metric specs");
                self.hpa_metrics = Some(metrics);
            }
            Err(error) => {
                tracing::warn!(namespace = %self.namespace, name = %self.name, %error, "cannot write the HPA");
            }
        }
    }

    async fn write_status(&mut self) {
        let status = self.status();
        if self.written_status.as_ref() == Some(&status) {
            return;
        }
        let patch = Patch::Merge(json!({ "status": status }));
        match self
            .so_api
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.written_status = Some(status);
                self.status_retry_at = None;
            }
            Err(error) => {
                tracing::debug!(namespace = %self.namespace, name = %self.name, %error, "cannot write ScaledObject status");
                self.status_retry_at = Some(Instant::now() + STATUS_RETRY);
            }
        }
    }

    /// Records the combined activity of the triggers; returns whether it changed.
    fn update_activity(&mut self, now: Instant) -> bool {
        let active = self.trigger_active.iter().any(|a| *a);
        let errored = self.trigger_error.iter().any(Option::is_some);
        let Some(autoscaler) = &mut self.autoscaler else {
            return false;
        };
        autoscaler.set_errored(errored);
        let changed = autoscaler.set_active(now, active);
        if autoscaler.last_active() == Some(now) {
            self.carry.last_active = Some(Timestamp::now());
        }
        changed
    }

    /// Reads the target's replicas and applies the autoscaler's decision.
    async fn evaluate(&mut self, now: Instant, metrics: Option<&[MetricReading]>) {
        let (Some(api), Some(config), Some(autoscaler)) =
            (&self.target_api, &self.config, &mut self.autoscaler)
        else {
            return;
        };
        let target = &config.target;
        let current = match api.get_scale(&target.name).await {
            Ok(scale) => scale.spec.and_then(|s| s.replicas).unwrap_or(0),
            Err(error) => {
                tracing::debug!(namespace = %self.namespace, name = %self.name, %error, "cannot read the scale target");
                self.target_error = Some(format!(
                    "cannot read {} {}/scale: {error}",
                    target.kind_label(),
                    target.name
                ));
                return;
            }
        };
        self.target_error = None;
        self.carry.original_replicas.get_or_insert(current);
        let Some(ScaleDecision { replicas, reason }) = autoscaler.decide(now, current, metrics)
        else {
            return;
        };
        tracing::info!(namespace = %self.namespace, name = %self.name, target = %target.name, from = current, to = replicas, ?reason, "scaling");
        if let Err(error) = patch_replicas(api, &target.name, replicas).await {
            tracing::warn!(namespace = %self.namespace, name = %self.name, %error, "cannot scale the target");
        }
    }

    async fn on_poll(&mut self, started: Instant, polls: Vec<TriggerPoll>) {
        let mut readings = Vec::new();
        let mut metrics_ok = true;
        let mut names = Vec::new();
        let indexes: Vec<usize> = self
            .config
            .iter()
            .flat_map(|c| c.triggers.iter().map(|t| t.index))
            .collect();
        for (i, poll) in polls.into_iter().enumerate() {
            let error = match (&poll.active, &poll.metrics) {
                (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if let Some(error) = &error {
                tracing::debug!(namespace = %self.namespace, name = %self.name, trigger = i, %error, "scaler poll failed");
            }
            if self.pushed_at[i].is_none_or(|at| at < started) {
                self.trigger_active[i] = matches!(poll.active, Ok(true));
            }
            self.trigger_answered[i] |= poll.active.is_ok();
            self.trigger_error[i] = error;
            match poll.metrics {
                Ok(r) => {
                    names.extend(
                        r.iter().map(|m| {
                            format!("s{}-{}", indexes.get(i).copied().unwrap_or(i), m.name)
                        }),
                    );
                    readings.extend(r);
                }
                Err(_) => metrics_ok = false,
            }
        }
        if metrics_ok {
            self.metric_names = names;
        }
        self.polled = true;
        let now = Instant::now();
        self.update_activity(now);
        // With a metric missing the HPA cannot compare; it holds still.
        self.evaluate(now, metrics_ok.then_some(readings.as_slice()))
            .await;
        self.write_status().await;
    }
}

/// Scales `name` through its `/scale` subresource.
pub(crate) async fn patch_replicas(
    api: &Api<DynamicObject>,
    name: &str,
    replicas: i32,
) -> kube::Result<()> {
    let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    api.patch_scale(name, &PatchParams::default(), &patch)
        .await
        .map(drop)
}

async fn next_poll<R>(poll: &mut Option<PollFuture<R>>) -> PollOutcome<R> {
    match poll {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Runs one ScaledObject until `stop` says otherwise; returns what the next loop needs.
pub(crate) async fn run_scaled_object<R: Resolver>(
    ctx: Arc<Context<R>>,
    obj: DynamicObject,
    carry: Carry,
    mut stop: oneshot::Receiver<Stop>,
) -> Carry {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let carry = Carry {
        original_replicas: carry
            .original_replicas
            .or_else(|| status_field(&obj, "originalReplicaCount")),
        last_active: carry
            .last_active
            .or_else(|| status_field::<String>(&obj, "lastActiveTime")?.parse().ok()),
    };
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let config = ScalingConfig::from_spec_value(&spec);
    let mut lp = Loop {
        so_api: Api::namespaced_with(ctx.client.clone(), &namespace, &scaled_object_resource()),
        target_api: None,
        config: None,
        autoscaler: None,
        carry,
        config_error: None,
        target_error: None,
        trigger_active: Vec::new(),
        trigger_error: Vec::new(),
        trigger_answered: Vec::new(),
        pushed_at: Vec::new(),
        polled: false,
        status_retry_at: None,
        metric_names: Vec::new(),
        written_status: None,
        hpa_api: Api::namespaced_with(ctx.client.clone(), &namespace, &hpa::resource()),
        hpa_name: hpa::name_for(&name, &spec),
        hpa_metrics: None,
        object: obj.clone(),
        name,
        namespace,
    };
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            tracing::warn!(namespace = %lp.namespace, name = %lp.name, %error, "ScaledObject cannot be used");
            lp.config_error = Some(error.to_string());
            lp.write_status().await;
            return wait_stop(lp, stop).await;
        }
    };
    if !config.trigger_problems.is_empty() {
        // Scaling on some triggers while ignoring others could scale to zero a workload another
        // trigger keeps busy: leave the target alone.
        let problems = config.trigger_problems.join("; ");
        tracing::warn!(namespace = %lp.namespace, name = %lp.name, %problems, "ScaledObject has triggers the stand-in cannot drive");
        lp.config_error = Some(problems);
        lp.write_status().await;
        return wait_stop(lp, stop).await;
    }

    let created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Instant::now, |t| wall_to_instant(t.0));
    let last_active = lp.carry.last_active.map(wall_to_instant);
    lp.autoscaler = Some(Autoscaler::new(&config, created, last_active));
    lp.target_api = Some(Api::namespaced_with(
        ctx.client.clone(),
        &lp.namespace,
        &config.target.resource,
    ));
    let n = config.triggers.len();
    lp.trigger_active = vec![false; n];
    lp.trigger_error = vec![None; n];
    lp.trigger_answered = vec![false; n];
    lp.pushed_at = vec![None; n];

    let (events_tx, mut events) = mpsc::channel(64);
    let mut streams = JoinSet::new();
    let mut conns = Vec::with_capacity(n);
    for (i, trigger) in config.triggers.iter().enumerate() {
        conns.push(ScalerConn::new(
            ctx.resolver.clone(),
            trigger,
            &lp.name,
            &lp.namespace,
        ));
        if trigger.mode == TriggerMode::Push {
            let conn = ScalerConn::new(ctx.resolver.clone(), trigger, &lp.name, &lp.namespace);
            streams.spawn(conn.push_activity(i, events_tx.clone()));
        }
    }
    drop(events_tx);
    let mut ticker = tokio::time::interval(config.polling_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let restore_on_delete = config.restore_on_delete;
    let target_name = config.target.name.clone();
    lp.config = Some(config);

    let mut idle_conns = Some(conns);
    let mut poll: Option<PollFuture<R>> = None;
    let mut handled_deadline: Option<Instant> = None;
    // KEDA rebuilds the HPA (reading the metric specs again) when its labels or annotations
    // change, and re-creates it when it is deleted.
    let hpa_watch = watcher::Config::default().fields(&format!("metadata.name={}", lp.hpa_name));
    let mut hpa_events =
        std::pin::pin!(watcher::watcher(lp.hpa_api.clone(), hpa_watch).default_backoff());
    let mut hpa_seen = None;
    let mut rebuild = false;
    let reason = loop {
        let deadline = lp
            .autoscaler
            .as_ref()
            .and_then(Autoscaler::scale_to_zero_at)
            .filter(|d| lp.polled && handled_deadline != Some(*d));
        let status_retry_at = lp.status_retry_at;
        tokio::select! {
            biased;
            reason = &mut stop => break reason.unwrap_or(Stop::Replaced),
            Some((i, active)) = events.recv() => {
                let now = Instant::now();
                let readiness = lp.readiness();
                lp.trigger_active[i] = active;
                lp.trigger_answered[i] = true;
                // The scaler answers again: a failed poll is no longer news.
                lp.trigger_error[i] = None;
                lp.pushed_at[i] = Some(now);
                if lp.update_activity(now) {
                    lp.evaluate(now, None).await;
                    lp.write_status().await;
                } else if lp.readiness() != readiness {
                    lp.write_status().await;
                }
            }
            (conns, started, polls) = next_poll(&mut poll) => {
                poll = None;
                lp.sync_hpa(&conns).await;
                idle_conns = Some(conns);
                lp.on_poll(started, polls).await;
            }
            Some(event) = hpa_events.next() => match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    let seen = hpa::watched_metadata(&object);
                    if hpa_seen.as_ref().is_some_and(|s| *s != seen) {
                        tracing::info!(namespace = %lp.namespace, name = %lp.name, hpa = %lp.hpa_name, "HPA labels or annotations changed: rebuilding it");
                        rebuild = true;
                    }
                    hpa_seen = Some(seen);
                }
                Ok(Event::Delete(_)) => {
                    hpa_seen = None;
                    lp.hpa_metrics = None;
                    rebuild = true;
                }
                Ok(Event::Init | Event::InitDone) => {}
                Err(error) => tracing::debug!(namespace = %lp.namespace, name = %lp.name, %error, "watching the HPA failed; retrying"),
            },
            _ = ticker.tick(), if idle_conns.is_some() => {
                if let Some(mut conns) = idle_conns.take() {
                    if std::mem::take(&mut rebuild) {
                        conns.iter_mut().for_each(ScalerConn::forget_specs);
                    }
                    poll = Some(Box::pin(poll_all(conns)));
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                handled_deadline = deadline;
                lp.evaluate(Instant::now(), None).await;
                lp.write_status().await;
            }
            () = tokio::time::sleep_until(status_retry_at.unwrap_or_else(Instant::now)), if status_retry_at.is_some() => {
                lp.write_status().await;
            }
        }
    };
    streams.abort_all();
    if reason == Stop::Deleted
        && restore_on_delete
        && let (Some(api), Some(original)) = (&lp.target_api, lp.carry.original_replicas)
    {
        tracing::info!(namespace = %lp.namespace, name = %lp.name, target = %target_name, replicas = original, "restoring the original replica count");
        if let Err(error) = patch_replicas(api, &target_name, original).await {
            tracing::warn!(namespace = %lp.namespace, name = %lp.name, %error, "cannot restore the original replica count");
        }
    }
    lp.carry
}

/// Keeps the (failed) status written until the ScaledObject changes or goes away.
async fn wait_stop(mut lp: Loop, mut stop: oneshot::Receiver<Stop>) -> Carry {
    loop {
        let retry_at = lp.status_retry_at;
        tokio::select! {
            _ = &mut stop => return lp.carry,
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                lp.write_status().await;
            }
        }
    }
}
