//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: acquire when the
//! lease is free, released or expired; renew every retry period; every write is optimistic
//! (it carries the `resourceVersion` that was read), so two candidates never both win.
//!
//! Expiry is judged on the local clock: a lease counts as expired when its record has not
//! changed for `leaseDurationSeconds` since this replica first saw that record — clocks of
//! different nodes are never compared.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::config::LeaderElectionConfig;

/// The result of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Held,
    /// Another replica holds a valid lease.
    HeldBy(String),
    /// Another writer changed the lease between our read and write; try again.
    Conflict,
}

/// One candidate's view of the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    /// The last record seen (resourceVersion) and when we first saw it.
    observed: Option<(String, Instant)>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// A candidate for the Lease `config.lease_name` that `api` (namespaced) reaches.
    pub fn new(api: Api<Lease>, config: LeaderElectionConfig) -> Self {
        Self {
            api,
            config,
            observed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Acquires the lease if it is free or expired, or renews it if we hold it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let name = self.config.lease_name.clone();
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created, true);
                    Ok(Attempt::Held)
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease, false);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if let (Some(holder), false) = (&holder, mine) {
            let duration = spec
                .lease_duration_seconds
                .map_or(self.config.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1))
                });
            let seen_since = self
                .observed
                .as_ref()
                .map_or_else(Instant::now, |(_, t)| *t);
            if seen_since.elapsed() < duration {
                return Ok(Attempt::HeldBy(holder.clone()));
            }
            tracing::info!(%holder, "lease expired; taking over");
        }
        let mut new_spec = spec.clone();
        if !mine {
            new_spec.holder_identity = Some(self.config.identity.clone());
            new_spec.acquire_time = Some(now.clone());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.renew_time = Some(now);
        new_spec.lease_duration_seconds = Some(self.lease_seconds());
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated, true);
                Ok(Attempt::Held)
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (if we hold it) so another replica can take over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let name = self.config.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else changed it: it is not ours to release any more.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Notes the lease record; a new record restarts the expiry clock.
    fn observe(&mut self, lease: &Lease, ours: bool) {
        let rv = lease.resource_version().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv);
        if changed || ours {
            self.observed = Some((rv, Instant::now()));
        }
    }
}
