//! What a settled object costs when the operator looks at it again (issue #13: a resync
//! that finds no drift should cost no API request).

use std::time::Duration;

use clouddeck::api::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::support::{self, Operator, TestNamespace, eventually};

const TIMEOUT: Duration = Duration::from_secs(60);
const WRITES: [&str; 4] = ["create", "update", "patch", "delete"];

/// A sum over the lines of `/metrics` that start with `prefix`.
async fn counter(operator: &Operator, prefix: &str) -> f64 {
    let (_, metrics) = operator.get("/metrics").await.unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn requests(operator: &Operator, verb: &str) -> f64 {
    counter(
        operator,
        &format!("clouddeck_api_requests_total{{verb=\"{verb}\"}}"),
    )
    .await
}

async fn deployment_reconciles(operator: &Operator) -> f64 {
    counter(
        operator,
        "clouddeck_reconciliations_total{controller=\"deployment\"",
    )
    .await
}

/// The operator's writes so far, by verb.
async fn writes(operator: &Operator) -> Vec<f64> {
    let mut counts = Vec::new();
    for verb in WRITES {
        counts.push(requests(operator, verb).await);
    }
    counts
}

/// Wakes the Deployment controller for `deployment` and nothing else: a suspended Job it
/// owns (the controller watches its Jobs; no other controller does, and a Ready
/// Deployment that runs an image has no build Job of its own).
fn poke(namespace: &str, deployment: &Deployment) {
    let owner = deployment.controller_owner_ref(&()).unwrap();
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": "poke",
            "labels": { "app.kubernetes.io/managed-by": "clouddeck" },
            "ownerReferences": [owner],
        },
        "spec": {
            "suspend": true,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "noop", "image": "registry.local/e2e/noop:1" }],
            } },
        },
    });
    let out = support::kubectl_create(namespace, &job, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the Deployment controller has reconciled at least once more than `before`,
/// and a moment longer for anything that reconcile would still send.
async fn reconciled_after(operator: &Operator, before: f64) {
    eventually("a Deployment reconcile", TIMEOUT, || async {
        (deployment_reconciles(operator).await > before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// User story: "My Deployment has been Ready for a while. When the operator looks at it
/// again and nothing has changed, it writes nothing to the apiserver; when someone deletes
/// one of its children by hand, the next look puts it back."
#[tokio::test]
async fn a_settled_deployment_costs_no_write_when_looked_at_again() {
    let _serial = support::one_operator_test_at_a_time().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-idle").await;
    let operator = Operator::builder(&ns.name, "idle").start_leading().await;
    for object in [
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                "metadata": { "name": "shop" },
                "spec": { "image": "registry.local/e2e/app:1" } }),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                "metadata": { "name": "shop-1" },
                "spec": { "projectRef": { "name": "shop" }, "target": "production",
                          "source": { "image": "registry.local/e2e/app:1" } } }),
    ] {
        let out = support::kubectl_create(&ns.name, &object, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let deployment = eventually("shop-1 to be Ready", TIMEOUT, || async {
        let d = deployments.get("shop-1").await.ok()?;
        let phase = d.status.as_ref()?.phase?;
        (phase == clouddeck::api::deployment::DeploymentPhase::Ready).then_some(d)
    })
    .await;
    // Settled: no write for a few seconds (the workload's status is still being filled in
    // by the controller-manager just after Ready, and each change wakes the controller).
    eventually("the operator to stop writing", TIMEOUT, || async {
        let before = writes(&operator).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        (writes(&operator).await == before).then_some(())
    })
    .await;

    // Looked at again with nothing changed: reconciled, and not one write.
    let before = (
        writes(&operator).await,
        deployment_reconciles(&operator).await,
    );
    poke(&ns.name, &deployment);
    reconciled_after(&operator, before.1).await;
    let after = writes(&operator).await;
    assert_eq!(
        after, before.0,
        "writes by verb {WRITES:?} before and after a reconcile that found nothing to do"
    );

    // A child deleted by hand is drift: the controller (woken by the deletion) applies it
    // again.
    let services = Api::<Service>::namespaced(client.clone(), &ns.name);
    let first = services.get("shop-1").await.unwrap().metadata.uid;
    services
        .delete("shop-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Service shop-1 back", TIMEOUT, || async {
        let again = services.get_opt("shop-1").await.ok()??;
        (again.metadata.uid != first).then_some(())
    })
    .await;
}
