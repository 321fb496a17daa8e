//! What a settled object costs when the operator looks at it again (issue #13: a resync
//! that finds no drift costs no API request).

use std::time::Duration;

use clouddeck::api::deployment::DeploymentPhase;
use clouddeck::api::webhook::Webhook;
use clouddeck::api::webhook_delivery::WebhookDelivery;
use clouddeck::api::{CronJob, Deployment, Domain, Project};
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::batch::v1::CronJob as BatchCronJob;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use kube::{Client, Resource};
use serde_json::json;

use crate::support::{self, Operator, TestNamespace, eventually};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Every verb but `watch` (the operator's watches stay open whatever it does).
const VERBS: [&str; 6] = ["get", "list", "create", "update", "patch", "delete"];

/// A sum over the lines of `/metrics` that start with `prefix`.
pub(crate) async fn counter(operator: &Operator, prefix: &str) -> f64 {
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

async fn reconciles(operator: &Operator, controller: &str) -> f64 {
    counter(
        operator,
        &format!("clouddeck_reconciliations_total{{controller=\"{controller}\""),
    )
    .await
}

/// The operator's requests so far, by verb.
async fn requests_by_verb(operator: &Operator) -> Vec<f64> {
    let mut counts = Vec::new();
    for verb in VERBS {
        counts.push(requests(operator, verb).await);
    }
    counts
}

/// Wakes the Deployment controller for `deployment` and nothing else: a suspended Job it
/// owns (the controller watches its Jobs; no other controller does, and a Ready
/// Deployment that runs an image has no build Job of its own).
fn poke_deployment(namespace: &str, deployment: &Deployment) {
    let owner = deployment.controller_owner_ref(&()).unwrap();
    support::kubectl_create_ok(
        namespace,
        &json!({
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
        }),
    );
}

/// Wakes the controller of `owner` (a Project or a Domain) and nothing else: an HTTPRoute
/// `name` it owns that is none of its children (a Project's is neither its production
/// route nor a branch alias; no parent, so no gateway serves it), which it leaves alone.
fn poke_with_route<K: Resource<DynamicType = ()>>(namespace: &str, owner: &K, name: &str) {
    let owner = owner.controller_owner_ref(&()).unwrap();
    support::kubectl_create_ok(
        namespace,
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {
                "name": name,
                "labels": { "app.kubernetes.io/managed-by": "clouddeck" },
                "ownerReferences": [owner],
            },
            "spec": { "hostnames": [format!("{name}.idle.example")] },
        }),
    );
}

/// Waits until no object of a kind the operator reconciles is left in another namespace
/// (earlier tests' namespaces are deleted in the background): this operator would
/// reconcile them too, and their requests would be counted with ours.
async fn alone_in_the_cluster(client: &Client, namespace: &str) {
    async fn elsewhere<K>(client: &Client, namespace: &str) -> Option<Vec<String>>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
        K: std::fmt::Debug,
    {
        let all = Api::<kube::api::PartialObjectMeta<K>>::all(client.clone());
        let items = all.list_metadata(&Default::default()).await.ok()?.items;
        Some(
            items
                .into_iter()
                .filter(|o| o.metadata.namespace.as_deref() != Some(namespace))
                .map(|o| format!("{}/{}", K::kind(&()), o.metadata.name.unwrap_or_default()))
                .collect(),
        )
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let left = [
            elsewhere::<Project>(client, namespace).await,
            elsewhere::<Deployment>(client, namespace).await,
            elsewhere::<CronJob>(client, namespace).await,
            elsewhere::<Domain>(client, namespace).await,
            elsewhere::<Webhook>(client, namespace).await,
            elsewhere::<WebhookDelivery>(client, namespace).await,
        ];
        if left.iter().all(|l| l.as_ref().is_some_and(Vec::is_empty)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "other tests' objects still there after 180 s: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wakes the CronJob controller for the CronJob whose batch CronJob is `batch` and
/// nothing else: a suspended Job labelled as one of its runs (no run ever starts here:
/// the schedule is once a year).
fn poke_cron_job(namespace: &str, batch: &str) {
    support::kubectl_create_ok(
        namespace,
        &json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": "poke-cron",
                "labels": {
                    "app.kubernetes.io/managed-by": "clouddeck",
                    "clouddeck.io/cronjob": batch,
                },
            },
            "spec": {
                "suspend": true,
                "template": { "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "noop", "image": "registry.local/e2e/noop:1" }],
                } },
            },
        }),
    );
}

/// Waits until `controller` has reconciled at least once more than `before`, and a moment
/// longer for anything that reconcile would still send.
async fn reconciled_after(operator: &Operator, controller: &str, before: f64) {
    eventually(&format!("a {controller} reconcile"), TIMEOUT, || async {
        (reconciles(operator, controller).await > before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Runs `poke` and returns the requests by verb that `controller`'s reconcile made.
async fn cost_of_a_look(
    operator: &Operator,
    controller: &str,
    poke: impl FnOnce(),
) -> Vec<(&'static str, f64)> {
    let before = (
        requests_by_verb(operator).await,
        reconciles(operator, controller).await,
    );
    poke();
    reconciled_after(operator, controller, before.1).await;
    let after = requests_by_verb(operator).await;
    VERBS
        .iter()
        .zip(after.iter().zip(&before.0))
        .map(|(verb, (a, b))| (*verb, a - b))
        .filter(|(_, n)| *n != 0.0)
        .collect()
}

/// Deletes `name` and waits until a new object of that name (another uid) is there.
async fn deleted_and_back<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let first = api.get(name).await.unwrap().meta().uid.clone();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(
        &format!("{name} deleted and applied again"),
        TIMEOUT,
        || async {
            let again = api.get_opt(name).await.ok()??;
            (again.meta().uid != first).then_some(())
        },
    )
    .await;
}

/// User story: "My Project has served a Ready Deployment for a while, with a CronJob
/// calling it and a Domain serving it. When the operator looks at any of them again and
/// nothing has changed, it asks the apiserver nothing (a Domain: only whether its
/// hostname is still ours) and writes nothing; when someone deletes one of their children
/// by hand, the next look puts it back."
#[tokio::test]
async fn a_settled_project_costs_no_request_when_looked_at_again() {
    let _serial = support::one_operator_test_at_a_time().await;
    // Any other test's objects would be reconciled by this operator too, and counted.
    let _alone = support::SHARED_API.write().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-idle").await;
    alone_in_the_cluster(&client, &ns.name).await;
    let operator = Operator::builder(&ns.name, "idle").start_leading().await;
    support::kubectl_create_ok(
        &ns.name,
        &json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                 "metadata": { "name": "shop" },
                 "spec": { "image": "registry.local/e2e/app:1" } }),
    );
    support::kubectl_create_ok(
        &ns.name,
        &json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                 "metadata": { "name": "shop-1" },
                 "spec": { "projectRef": { "name": "shop" }, "target": "production",
                           "source": { "image": "registry.local/e2e/app:1" } } }),
    );
    support::kubectl_create_ok(
        &ns.name,
        &json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
                 "metadata": { "name": "nightly" },
                 "spec": { "projectRef": { "name": "shop" }, "schedule": "0 0 1 1 *",
                           "http": { "path": "/api/cron" } } }),
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    let cron_jobs = Api::<CronJob>::namespaced(client.clone(), &ns.name);
    let deployment = eventually("shop-1 to be Ready", TIMEOUT, || async {
        let d = deployments.get("shop-1").await.ok()?;
        let phase = d.status.as_ref()?.phase?;
        (phase == DeploymentPhase::Ready).then_some(d)
    })
    .await;
    let project = eventually("shop to serve shop-1", TIMEOUT, || async {
        let p = projects.get("shop").await.ok()?;
        let serving = p.status.as_ref()?.production_deployment.as_deref()?;
        (serving == "shop-1").then_some(p)
    })
    .await;
    eventually("nightly to run against shop-1", TIMEOUT, || async {
        let c = cron_jobs.get("nightly").await.ok()?;
        (c.status?.deployment.as_deref() == Some("shop-1")).then_some(())
    })
    .await;
    // Settled: no request for a few seconds (the workload's status is still being filled
    // in by the controller-manager just after Ready, and each change wakes the controller).
    eventually("the operator to go quiet", TIMEOUT, || async {
        let before = requests_by_verb(&operator).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        (requests_by_verb(&operator).await == before).then_some(())
    })
    .await;

    // Looked at again with nothing changed: reconciled, and not one request.
    let deployment_look = cost_of_a_look(&operator, "deployment", || {
        poke_deployment(&ns.name, &deployment)
    })
    .await;
    let project_look = cost_of_a_look(&operator, "project", || {
        poke_with_route(&ns.name, &project, "poke")
    })
    .await;
    let batch = clouddeck::controllers::cron_job::render::batch_name("nightly");
    let cron_look = cost_of_a_look(&operator, "cronjob", || poke_cron_job(&ns.name, &batch)).await;
    assert_eq!(
        (deployment_look, project_look, cron_look),
        (vec![], vec![], vec![]),
        "requests by verb of a Deployment, a Project and a CronJob reconcile that found \
         nothing to do"
    );
    // And the operator says what woke each controller.
    for (kind, source) in [
        ("Deployment", "Job"),
        ("Project", "HTTPRoute"),
        ("CronJob", "Job"),
    ] {
        let line = format!(
            "clouddeck_reconcile_triggers_total{{kind=\"{kind}\",trigger=\"related\",source=\"{source}\"}}"
        );
        assert!(counter(&operator, &line).await >= 1.0, "{line}");
    }

    // A Domain under the Project's own hostname (its key owns it: no DNS), with a
    // certificate from a CA Issuer of the namespace and a listener the gateway reports on.
    crate::domains::local_ca_issuer(&ns.name, "idle-ca");
    let hostname = project.status.as_ref().unwrap().hostname.clone().unwrap();
    support::kubectl_create_ok(
        &ns.name,
        &json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
                 "metadata": { "name": "www" },
                 "spec": { "hostname": format!("www.{hostname}"),
                           "projectRef": { "name": "shop" },
                           "tls": { "issuerRef": { "name": "idle-ca", "kind": "Issuer" } } } }),
    );
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    let domain = eventually("www to be Ready", 2 * TIMEOUT, || async {
        let d = domains.get("www").await.ok()?;
        let ready = clouddeck::api::conditions::is_true(&d.status.as_ref()?.conditions, "Ready");
        ready.then_some(d)
    })
    .await;
    // (The gateway may never report on the listener: the Domain looks every 5 s until the
    // report's grace period, a minute, is over.)
    eventually("the operator to go quiet again", 2 * TIMEOUT, || async {
        let before = requests_by_verb(&operator).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        (requests_by_verb(&operator).await == before).then_some(())
    })
    .await;
    // Looked at again: its route, Certificate and listener are as it left them, so nothing
    // is written. What it still reads is deliberate: whether the namespace holds the
    // hostname is the apiserver's word, never a cache's (the claim and its holder), and
    // the production route it follows is read fresh (a promotion must be followed).
    let domain_look = cost_of_a_look(&operator, "domain", || {
        poke_with_route(&ns.name, &domain, "poke-domain")
    })
    .await;
    assert_eq!(
        domain_look,
        vec![("get", 3.0)],
        "requests by verb of a Domain reconcile that found nothing to do"
    );

    // A child deleted by hand is drift: its controller (woken by the deletion) applies it
    // again, the Deployment's Service and the Project's production route alike.
    let services = Api::<Service>::namespaced(client.clone(), &ns.name);
    deleted_and_back(&services, "shop-1").await;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    deleted_and_back(&routes, &clouddeck::routing::production_route_name("shop")).await;
    let batches = Api::<BatchCronJob>::namespaced(client.clone(), &ns.name);
    deleted_and_back(&batches, &batch).await;
}
