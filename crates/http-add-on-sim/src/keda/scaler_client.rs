//! The KEDA side of the external-scaler gRPC protocol: one connection per trigger, unary polls
//! (`IsActive`, `GetMetricSpec`, `GetMetrics`) and the `StreamIsActive` push stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_add_on_types::proto::externalscaler::external_scaler_client::ExternalScalerClient;
use http_add_on_types::proto::externalscaler::{GetMetricsRequest, MetricSpec, ScaledObjectRef};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::Resolver;
use super::autoscaler::{MetricReading, float_or_int};
use super::spec::{ExternalTrigger, MetricTarget};

/// Time to establish a TCP connection to a scaler.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a unary call (or opening the stream) may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// First delay before reopening a failed `StreamIsActive` stream.
pub(crate) const STREAM_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two attempts to open the stream.
pub(crate) const STREAM_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a call to a scaler failed.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// `scalerAddress` could not be resolved.
    #[error("cannot resolve scalerAddress {address:?}: {reason}")]
    Resolve {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The resolved address does not make a valid URI.
    #[error("invalid scaler endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
    /// The scaler answered with an error or could not be reached.
    #[error("scaler call failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// The scaler did not answer in time.
    #[error("scaler call timed out after {0:?}")]
    Timeout(Duration),
}

/// The result of polling one trigger.
#[derive(Debug)]
pub(crate) struct TriggerPoll {
    /// `IsActive`.
    pub active: Result<bool, ScalerError>,
    /// `GetMetrics` for the metrics of the HPA (read by `GetMetricSpec` when it was built).
    pub metrics: Result<Vec<MetricReading>, ScalerError>,
}

/// The delay after `backoff`: doubled, capped at [`STREAM_BACKOFF_MAX`].
pub(crate) fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).clamp(STREAM_BACKOFF_MIN, STREAM_BACKOFF_MAX)
}

/// A (lazily connected) client for one trigger's scaler.
pub(crate) struct ScalerConn<R> {
    resolver: Arc<R>,
    address: String,
    metric_target: MetricTarget,
    scaled_object_ref: ScaledObjectRef,
    client: Option<ExternalScalerClient<Channel>>,
    /// The metric specs the HPA was built from: read by `GetMetricSpec` once, then kept until
    /// [`ScalerConn::forget_specs`] (KEDA re-reads them only when it rebuilds the HPA).
    specs: Option<Vec<MetricSpec>>,
}

async fn timed<T>(call: impl Future<Output = Result<T, tonic::Status>>) -> Result<T, ScalerError> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ScalerError::Timeout(RPC_TIMEOUT)),
    }
}

impl<R: Resolver> ScalerConn<R> {
    /// A client for `trigger` of the ScaledObject `namespace/name`.
    pub fn new(resolver: Arc<R>, trigger: &ExternalTrigger, name: &str, namespace: &str) -> Self {
        let scaler_metadata: HashMap<String, String> = trigger
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            resolver,
            address: trigger.scaler_address.clone(),
            metric_target: trigger.metric_target,
            scaled_object_ref: ScaledObjectRef {
                name: name.into(),
                namespace: namespace.into(),
                scaler_metadata,
            },
            client: None,
            specs: None,
        }
    }

    /// The metric specs the HPA holds, once read.
    pub fn specs(&self) -> Option<&[MetricSpec]> {
        self.specs.as_deref()
    }

    /// Drops the HPA's metric specs: the next poll reads them again (KEDA rebuilding the HPA).
    pub fn forget_specs(&mut self) {
        self.specs = None;
    }

    async fn client(&mut self) -> Result<ExternalScalerClient<Channel>, ScalerError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        // An IP literal needs no name resolution, as with a real gRPC dialer.
        let addr = match self.address.parse() {
            Ok(addr) => addr,
            Err(_) => self
                .resolver
                .resolve(&self.address)
                .await
                .map_err(|reason| ScalerError::Resolve {
                    address: self.address.clone(),
                    reason,
                })?,
        };
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        let client = ExternalScalerClient::new(channel);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection so the next call resolves and connects afresh.
    fn reset(&mut self) {
        self.client = None;
    }

    async fn is_active(&mut self) -> Result<bool, ScalerError> {
        let mut client = self.client().await?;
        let response = timed(client.is_active(self.scaled_object_ref.clone())).await?;
        Ok(response.into_inner().result)
    }

    async fn metrics(&mut self) -> Result<Vec<MetricReading>, ScalerError> {
        let mut client = self.client().await?;
        let specs = match &self.specs {
            Some(specs) => specs.clone(),
            None => {
                let specs = timed(client.get_metric_spec(self.scaled_object_ref.clone()))
                    .await?
                    .into_inner()
                    .metric_specs;
                self.specs = Some(specs.clone());
                specs
            }
        };
        let mut readings = Vec::with_capacity(specs.len());
        for spec in specs {
            let request = GetMetricsRequest {
                scaled_object_ref: Some(self.scaled_object_ref.clone()),
                metric_name: spec.metric_name.clone(),
            };
            let values = timed(client.get_metrics(request))
                .await?
                .into_inner()
                .metric_values;
            // The HPA sums every value returned for an external metric.
            let value = values
                .iter()
                .map(|v| float_or_int(v.metric_value, v.metric_value_float))
                .sum();
            readings.push(MetricReading {
                name: spec.metric_name,
                value,
                target: float_or_int(spec.target_size, spec.target_size_float),
                kind: self.metric_target,
            });
        }
        Ok(readings)
    }

    /// `IsActive`, then the metrics, as KEDA's polling loop does for every trigger.
    pub async fn poll(&mut self) -> TriggerPoll {
        let active = self.is_active().await;
        let metrics = self.metrics().await;
        if active.is_err() || metrics.is_err() {
            self.reset();
        }
        TriggerPoll { active, metrics }
    }

    async fn open_stream(
        &mut self,
    ) -> Result<
        tonic::Streaming<http_add_on_types::proto::externalscaler::IsActiveResponse>,
        ScalerError,
    > {
        let mut client = self.client().await?;
        Ok(
            timed(client.stream_is_active(self.scaled_object_ref.clone()))
                .await?
                .into_inner(),
        )
    }

    /// Holds a `StreamIsActive` stream, sending `(index, active)` for every message, and reopens
    /// it with a capped exponential backoff; returns when `events` is closed.
    pub async fn push_activity(mut self, index: usize, events: mpsc::Sender<(usize, bool)>) {
        let mut backoff = STREAM_BACKOFF_MIN;
        loop {
            match self.open_stream().await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            backoff = STREAM_BACKOFF_MIN;
                            if events.send((index, message.result)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::debug!(address = %self.address, "StreamIsActive ended");
                            break;
                        }
                        Err(status) => {
                            tracing::debug!(address = %self.address, %status, "StreamIsActive failed");
                            break;
                        }
                    }
                },
                Err(error) => {
                    tracing::debug!(address = %self.address, %error, "cannot open StreamIsActive")
                }
            }
            self.reset();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = events.closed() => return,
            }
            backoff = next_backoff(backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_backoff_doubles_up_to_the_cap() {
        let mut delays = vec![STREAM_BACKOFF_MIN];
        for _ in 0..10 {
            delays.push(next_backoff(*delays.last().unwrap()));
        }
        assert_eq!(delays[..4], [100, 200, 400, 800].map(Duration::from_millis));
        assert_eq!(delays[5], Duration::from_millis(3200));
        assert_eq!(delays[6], STREAM_BACKOFF_MAX, "6.4 s is capped");
        assert!(delays.iter().all(|d| *d <= STREAM_BACKOFF_MAX));
        assert_eq!(*delays.last().unwrap(), STREAM_BACKOFF_MAX);
        assert_eq!(next_backoff(Duration::ZERO), STREAM_BACKOFF_MIN);
    }
}
