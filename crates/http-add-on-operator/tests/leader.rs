//! Leader election: two operator instances, only the leader writes, the other takes over.

mod common;

use common::*;
use http_add_on_operator::Operator;
use http_add_on_operator::controller::HSO_CONTROLLER;
use http_add_on_types::crd::HTTPScaledObject;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

async fn candidate(client: kube::Client, identity: &str) -> Operator {
    let mut config = config();
    config.leader_election = Some(fast_lease(identity));
    Operator::start(client, config)
        .await
        .expect("operator starts")
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("http-add-on.keda.sh")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test]
async fn only_the_leader_writes_and_the_other_takes_over_on_shutdown() {
    let sim = cluster().await;
    let leases: Api<Lease> = Api::namespaced(sim.client(), "keda");
    let first = candidate(sim.client(), "first").await;
    first.wait_until_leading().await;
    let second = candidate(sim.client(), "second").await;
    assert_eq!(holder(&leases).await.as_deref(), Some("first"));

    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("one", &["one.test"]))
        .await
        .unwrap();
    hso_with_reason(&hsos, "one", "Reconciled").await;
    assert!(first.metrics().reconcile_count(HSO_CONTROLLER) > 0);
    assert!(!second.is_leading());
    assert_eq!(
        second.metrics().reconcile_count(HSO_CONTROLLER),
        0,
        "the follower never reconciles"
    );

    first.shutdown().await;
    tokio::time::timeout(DEADLINE, second.wait_until_leading())
        .await
        .expect("the second instance takes over");
    assert_eq!(holder(&leases).await.as_deref(), Some("second"));
    hsos.create(&PostParams::default(), &hso("two", &["two.test"]))
        .await
        .unwrap();
    hso_with_reason(&hsos, "two", "Reconciled").await;
    assert!(second.metrics().reconcile_count(HSO_CONTROLLER) > 0);
    second.shutdown().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_its_lease_expires() {
    let sim = cluster().await;
    let leases: Api<Lease> = Api::namespaced(sim.client(), "keda");
    let first = candidate(sim.client(), "first").await;
    first.wait_until_leading().await;
    let second = candidate(sim.client(), "second").await;
    first.abort();
    // The lease still names the crashed leader until it expires.
    assert_eq!(holder(&leases).await.as_deref(), Some("first"));
    tokio::time::timeout(DEADLINE, second.wait_until_leading())
        .await
        .expect("the second instance takes over after expiry");
    let lease = leases
        .get("http-add-on.keda.sh")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("second"));
    assert_eq!(lease.lease_transitions, Some(1));
    assert_eq!(lease.lease_duration_seconds, Some(2));
    let hsos: Api<HTTPScaledObject> = Api::default_namespaced(sim.client());
    hsos.create(&PostParams::default(), &hso("app", &[]))
        .await
        .unwrap();
    hso_with_reason(&hsos, "app", "Reconciled").await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_steps_down_and_recovers() {
    let sim = cluster().await;
    let leases: Api<Lease> = Api::namespaced(sim.client(), "keda");
    let op = candidate(sim.client(), "only").await;
    op.wait_until_leading().await;
    // Someone else grabs the lease (as another replica would after a partition).
    let mut lease = leases.get("http-add-on.keda.sh").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    leases
        .replace("http-add-on.keda.sh", &PostParams::default(), &lease)
        .await
        .unwrap();
    eventually("the operator to step down", || async {
        (!op.is_leading()).then_some(())
    })
    .await;
    // While the intruder keeps renewing, the operator stays a follower; once it stops, the
    // operator takes the lease back after expiry.
    tokio::time::timeout(DEADLINE, op.wait_until_leading())
        .await
        .expect("the operator leads again after the intruder's lease expires");
    assert_eq!(holder(&leases).await.as_deref(), Some("only"));
    op.shutdown().await;
}
