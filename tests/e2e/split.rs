//! SplitTests on the local control plane: while one runs, the production route sends
//! first-time visitors by weight (each answer setting the sticky cookie), returning
//! visitors by their cookie, and forced ones by the override header or cookie; outside its
//! window production is plain again. (What a visitor gets through a real gateway is the
//! issue "Real traffic"; here the routes the gateway would read are checked.)

use std::time::Duration;

use clouddeck::api::split_test::SplitTestPhase;
use clouddeck::api::webhook_delivery::WebhookDelivery;
use clouddeck::api::{Deployment, DeploymentPhase, EdgeHandler, Project, SplitTest};
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::{self, TestNamespace, create, eventually};

const IMAGE: &str = "registry.example/acme/shop@sha256:4444444444444444444444444444444444444444444444444444444444444444";
const TIMEOUT: Duration = Duration::from_secs(90);

fn rule_names(route: &HttpRoute) -> Vec<String> {
    route
        .spec
        .rules
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.name.clone().unwrap_or_else(|| "app".into()))
        .collect()
}

async fn wait_route(
    routes: &Api<HttpRoute>,
    what: &str,
    want: impl Fn(&HttpRoute) -> bool,
) -> HttpRoute {
    eventually(what, TIMEOUT, || async {
        let route = routes.get("storefront-production").await.ok()?;
        want(&route).then_some(route)
    })
    .await
}

/// The backends of the route's last rule: (Service, weight).
fn app_backends(route: &HttpRoute) -> Vec<(String, Option<i32>)> {
    route
        .spec
        .rules
        .as_ref()
        .unwrap()
        .last()
        .unwrap()
        .backend_refs
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}

async fn wait_ready(tests: &Api<SplitTest>, name: &str, reason: &str) -> SplitTest {
    eventually(&format!("SplitTest {name}: {reason}"), TIMEOUT, || async {
        let test = tests.get(name).await.ok()?;
        let ready = test
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (ready.reason == reason).then_some(test)
    })
    .await
}

async fn events_of(client: &Client, namespace: &str, name: &str) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

fn split_test(name: &str, variants: Value, extra: Value) -> Value {
    let mut spec = json!({ "projectRef": { "name": "storefront" }, "variants": variants });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "SplitTest",
            "metadata": { "name": name }, "spec": spec })
}

fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Project `storefront` with `storefront-1` (production) and `storefront-2` (preview),
/// both Ready.
async fn storefront_with_two_deployments(client: &Client, namespace: &str) {
    create(
        &Api::<Project>::namespaced(client.clone(), namespace),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                "metadata": { "name": "storefront" }, "spec": { "image": IMAGE } }),
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    for (name, target) in [("storefront-1", "production"), ("storefront-2", "preview")] {
        create(
            &deployments,
            json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                    "metadata": { "name": name },
                    "spec": { "projectRef": { "name": "storefront" }, "target": target,
                              "source": { "image": IMAGE } } }),
        )
        .await;
        eventually(&format!("{name} Ready"), TIMEOUT, || async {
            let d = deployments.get(name).await.ok()?;
            (d.status?.phase? == DeploymentPhase::Ready).then_some(())
        })
        .await;
    }
}

/// User story: "I split production 90/10 between the current deployment and a candidate
/// until a stop time: first-time visitors get a variant by weight and a cookie that keeps
/// them on it, the override header or cookie forces one, and when the time is up
/// production is plain again. A test whose candidate has no Ready Deployment, or that my
/// EdgeHandler's rewrite would break, leaves production alone and says why."
#[tokio::test]
async fn a_split_test_splits_production_by_weight_and_cookie_until_its_stop_time() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-split").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "split")
        .start_leading()
        .await;
    support::recording_webhook(&client, &ns.name, "split-events", &["splittest.updated"]).await;
    storefront_with_two_deployments(&client, &ns.name).await;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    wait_route(&routes, "plain production", |r| rule_names(r) == ["app"]).await;

    // 90/10 until 40 s from now.
    let tests = Api::<SplitTest>::namespaced(client.clone(), &ns.name);
    let stop = Timestamp::now() + SignedDuration::from_secs(40);
    let variants = json!([
        { "name": "control", "deployment": "storefront-1", "weight": 90 },
        { "name": "candidate", "deployment": "storefront-2", "weight": 10 }
    ]);
    create(
        &tests,
        split_test(
            "checkout",
            variants.clone(),
            json!({ "stopTime": rfc3339(stop) }),
        ),
    )
    .await;
    let split = wait_route(&routes, "the split production route", |r| {
        rule_names(r).len() == 7
    })
    .await;
    assert_eq!(
        rule_names(&split),
        [
            "split-header-control",
            "split-header-candidate",
            "split-cookie-control",
            "split-cookie-candidate",
            "split-sticky-control",
            "split-sticky-candidate",
            "app"
        ]
    );
    assert_eq!(
        app_backends(&split),
        [
            ("storefront-1".into(), Some(90)),
            ("storefront-2".into(), Some(10))
        ]
    );
    let json = serde_json::to_value(&split).unwrap();
    assert_eq!(
        json["spec"]["rules"][6]["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"]
            [0],
        json!({ "name": "Set-Cookie", "value": "clouddeck-split=candidate; Max-Age=2592000; Path=/; SameSite=Lax" })
    );
    assert_eq!(
        json["spec"]["rules"][1]["matches"][0]["headers"][0],
        json!({ "name": "X-Clouddeck-Variant", "type": "Exact", "value": "candidate" })
    );
    assert_eq!(
        json["spec"]["rules"][5]["backendRefs"][0]["name"],
        "storefront-2"
    );
    // Production is still storefront-1 for everything that reads it.
    assert_eq!(
        clouddeck::routing::backend_service(&split),
        Some("storefront-1")
    );
    let running = wait_ready(&tests, "checkout", "Running").await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Some(SplitTestPhase::Running));
    let weights: Vec<(String, i32)> = status
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    assert_eq!(weights, [("control".into(), 90), ("candidate".into(), 10)]);

    // A second test of the same Project while one runs: the older one keeps production.
    create(&tests, split_test("second", variants.clone(), json!({}))).await;
    let outranked = eventually("the second test held", TIMEOUT, || async {
        let t = tests.get("second").await.ok()?;
        let stalled = t
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled")?;
        (stalled.reason == "Conflict").then_some(stalled.message)
    })
    .await;
    assert!(outranked.contains("\"checkout\""), "{outranked}");
    tests
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();

    // Stop time: production is plain again, the test Stopped, with its Event and webhook.
    wait_route(&routes, "plain production after the stop time", |r| {
        rule_names(r) == ["app"]
    })
    .await;
    let stopped = wait_ready(&tests, "checkout", "Stopped").await;
    assert_eq!(stopped.status.unwrap().phase, Some(SplitTestPhase::Stopped));
    let events = events_of(&client, &ns.name, "checkout").await;
    assert!(
        events.iter().any(|e| e.0 == "Normal" && e.1 == "Running"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.0 == "Normal" && e.1 == "Stopped"),
        "{events:?}"
    );
    let deliveries = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    eventually(
        "splittest.updated for Running and Stopped",
        TIMEOUT,
        || async {
            let list = deliveries.list(&ListParams::default()).await.ok()?.items;
            let phases: Vec<String> = list
                .iter()
                .filter(|d| d.spec.event_type == "splittest.updated")
                .filter_map(|d| {
                    let payload: Value = serde_json::from_str(&d.spec.payload).ok()?;
                    payload["data"]["phase"].as_str().map(str::to_owned)
                })
                .collect();
            (phases.contains(&"Running".into()) && phases.contains(&"Stopped".into())).then_some(())
        },
    )
    .await;

    // A candidate with no Ready Deployment: production stays plain, the test says why.
    create(
        &tests,
        split_test(
            "missing",
            json!([
                { "name": "control", "deployment": "storefront-1", "weight": 50 },
                { "name": "ghost", "deployment": "storefront-9", "weight": 50 }
            ]),
            json!({}),
        ),
    )
    .await;
    let waiting = wait_ready(&tests, "missing", "WaitingForVariants").await;
    let message = &waiting
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("none for ghost"), "{message}");
    let events = events_of(&client, &ns.name, "missing").await;
    assert!(
        events.iter().any(|e| e.0 == "Warning"
            && e.1 == "VariantUnavailable"
            && e.2.contains("storefront-9")),
        "{events:?}"
    );
    assert_eq!(
        rule_names(&routes.get("storefront-production").await.unwrap()),
        ["app"]
    );
    tests
        .delete("missing", &DeleteParams::default())
        .await
        .unwrap();

    // An EdgeHandler rewrite on production would lose a returning visitor's variant on its
    // paths: the test is held, naming the rule, and production keeps the edge rule only.
    create(
        &Api::<EdgeHandler>::namespaced(client.clone(), &ns.name),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "EdgeHandler",
                "metadata": { "name": "docs" },
                "spec": { "projectRef": { "name": "storefront" },
                          "rules": [{ "name": "docs-moved",
                                      "match": { "path": { "type": "PathPrefix", "value": "/docs" } },
                                      "rewrite": { "path": { "replacePrefixMatch": "/documentation" } } }] } }),
    )
    .await;
    create(&tests, split_test("held", variants, json!({}))).await;
    let held = eventually("the test held by the edge rule", TIMEOUT, || async {
        let t = tests.get("held").await.ok()?;
        let stalled = t
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled")?;
        (stalled.reason == "EdgeRuleConflict").then_some(stalled.message)
    })
    .await;
    assert!(
        held.contains("rule \"docs-moved\"") && held.contains("EdgeHandler \"docs\""),
        "{held}"
    );
    let route = wait_route(&routes, "production with the edge rule only", |r| {
        rule_names(r).len() == 2
    })
    .await;
    assert_eq!(rule_names(&route), ["edge-docs-0", "app"]);
}

/// User story: "A split test scheduled for later leaves production alone until it starts."
#[tokio::test]
async fn a_scheduled_split_test_waits_for_its_start_time() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-split-later").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "split")
        .start_leading()
        .await;
    storefront_with_two_deployments(&client, &ns.name).await;
    let tests = Api::<SplitTest>::namespaced(client.clone(), &ns.name);
    let start = Timestamp::now() + SignedDuration::from_secs(15);
    create(
        &tests,
        split_test(
            "later",
            json!([
                { "name": "a", "deployment": "storefront-1", "weight": 50 },
                { "name": "b", "deployment": "storefront-2", "weight": 50 }
            ]),
            json!({ "startTime": rfc3339(start) }),
        ),
    )
    .await;
    let scheduled = wait_ready(&tests, "later", "Scheduled").await;
    assert_eq!(
        scheduled.status.unwrap().phase,
        Some(SplitTestPhase::Scheduled)
    );
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    let plain = wait_route(&routes, "plain production", |r| rule_names(r) == ["app"]).await;
    assert_eq!(app_backends(&plain).len(), 1);
    // Once the start time passes, without any change to anything, production is split.
    let split = wait_route(&routes, "production split after the start time", |r| {
        rule_names(r).len() == 7
    })
    .await;
    assert!(Timestamp::now() >= start, "split before its start time");
    assert_eq!(app_backends(&split).len(), 2);
    wait_ready(&tests, "later", "Running").await;
}
