//! EdgeHandlers on the local control plane: their rules go into every route of their
//! Project, several merge by name, and what cannot be applied as written is Stalled naming
//! the rule and field, with the routes left as they were. (What a visitor gets through a
//! real gateway is the issue "Real traffic"; here the routes the gateway would read are
//! checked.)

use std::time::Duration;

use clouddeck::api::{Deployment, DeploymentPhase, EdgeHandler, Project};
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::Event;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::{self, TestNamespace, create, eventually};

const IMAGE: &str = "registry.example/acme/shop@sha256:3333333333333333333333333333333333333333333333333333333333333333";
const TIMEOUT: Duration = Duration::from_secs(90);

/// The rules of a route, as (rule name, first filter type, backend names) per rule.
fn route_rules(route: &HttpRoute) -> Vec<(String, String, Vec<String>)> {
    let value = serde_json::to_value(route).unwrap();
    value["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let name = rule["name"].as_str().unwrap_or("app").to_owned();
            let filter = rule["filters"][0]["type"].as_str().unwrap_or("").to_owned();
            let backends = rule["backendRefs"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|b| {
                            let ns = b["namespace"]
                                .as_str()
                                .map(|n| format!("{n}/"))
                                .unwrap_or_default();
                            format!("{ns}{}", b["name"].as_str().unwrap())
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name, filter, backends)
        })
        .collect()
}

async fn rule_names(routes: &Api<HttpRoute>, name: &str) -> Vec<String> {
    match routes.get(name).await {
        Ok(route) => route_rules(&route).into_iter().map(|r| r.0).collect(),
        Err(_) => Vec::new(),
    }
}

async fn wait_rules(routes: &Api<HttpRoute>, name: &str, want: &[&str]) -> HttpRoute {
    eventually(
        &format!("route {name} to have the rules {want:?}"),
        TIMEOUT,
        || async {
            let route = routes.get(name).await.ok()?;
            let names: Vec<String> = route_rules(&route).into_iter().map(|r| r.0).collect();
            (names == want).then_some(route)
        },
    )
    .await
}

fn condition(handler: &EdgeHandler, type_: &str) -> Option<(String, String, String)> {
    let c = handler
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until EdgeHandler `name` is Stalled (and not Ready) for `reason`; its message.
async fn wait_stalled(handlers: &Api<EdgeHandler>, name: &str, reason: &str) -> String {
    eventually(
        &format!("EdgeHandler {name} to be Stalled: {reason}"),
        TIMEOUT,
        || async {
            let handler = handlers.get(name).await.ok()?;
            let (status, stalled, message) = condition(&handler, "Stalled")?;
            let ready = condition(&handler, "Ready")?;
            (status == "True" && stalled == reason && ready.0 == "False").then_some(message)
        },
    )
    .await
}

async fn warning_about(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

fn handler(name: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "EdgeHandler",
        "metadata": { "name": name },
        "spec": { "projectRef": { "name": "storefront" }, "rules": rules }
    })
}

/// User story: "I apply the sample EdgeHandler to my storefront: old blog URLs redirect and
/// every response gets security headers, on production and on every preview. A second
/// EdgeHandler denies /admin on production only. A third, whose rule the gateway would
/// apply before mine, and one with a broken regular expression, are refused with the rule
/// named, and change nothing."
#[tokio::test]
async fn edge_rules_go_into_every_route_of_the_project_in_order() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-edge").await;
    // The operator's own namespace, where the chart puts the responder.
    let system = TestNamespace::new(&client, "e2e-edge-system").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let responder = format!("{}/clouddeck-responder:80", system.name);
    let _operator = support::Operator::builder(&ns.name, "edge")
        .args(["--deny-responder", &responder])
        .start_leading()
        .await;
    create(
        &Api::<Project>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "storefront" },
            "spec": { "image": IMAGE }
        }),
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    create(
        &deployments,
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": "storefront-1" },
            "spec": { "projectRef": { "name": "storefront" }, "target": "production",
                      "source": { "image": IMAGE } }
        }),
    )
    .await;
    eventually("storefront-1 to be Ready", TIMEOUT, || async {
        let d = deployments.get("storefront-1").await.ok()?;
        (d.status?.phase? == DeploymentPhase::Ready).then_some(())
    })
    .await;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    wait_rules(&routes, "storefront-production", &["app"]).await;

    // The sample, as shipped.
    support::apply_samples(&ns.name, &["edge_handler.yaml"]);
    let handlers = Api::<EdgeHandler>::namespaced(client.clone(), &ns.name);
    let sample = ["edge-storefront-edge-0", "edge-storefront-edge-1", "app"];
    for route in ["storefront-production", "storefront-1"] {
        let rendered = wait_rules(&routes, route, &sample).await;
        let rules = route_rules(&rendered);
        assert_eq!(rules[0].1, "RequestRedirect");
        assert!(
            rules[0].2.is_empty(),
            "a redirect has no backend: {rules:?}"
        );
        assert_eq!(rules[1].1, "ResponseHeaderModifier");
        assert_eq!(rules[1].2, ["storefront-1"]);
        assert_eq!(rules[2].2, ["storefront-1"]);
        let json = serde_json::to_value(&rendered).unwrap();
        let redirect = &json["spec"]["rules"][0];
        assert_eq!(
            redirect["matches"][0]["path"],
            json!({ "type": "PathPrefix", "value": "/blog" })
        );
        assert_eq!(
            redirect["filters"][0]["requestRedirect"],
            json!({ "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/articles" }, "statusCode": 301 })
        );
    }
    let ready = eventually("the sample EdgeHandler to be Ready", TIMEOUT, || async {
        let h = handlers.get("storefront-edge").await.ok()?;
        (condition(&h, "Ready")?.0 == "True").then_some(h)
    })
    .await;
    let status = ready.status.unwrap();
    assert_eq!(status.rule_count, Some(2));
    assert_eq!(status.routes, ["storefront-1", "storefront-production"]);
    let out = support::kubectl_ok(&["get", "edgehandlers", "-n", &ns.name]);
    assert!(
        out.contains("storefront-edge") && out.contains("True"),
        "{out}"
    );

    // A second handler, named to come first: /admin denied with 403, on production only.
    create(
        &handlers,
        handler(
            "storefront-admin",
            json!([{ "name": "no-admin", "appliesTo": ["Production"],
                     "match": { "path": { "type": "PathPrefix", "value": "/admin" } },
                     "deny": { "statusCode": 403 } }]),
        ),
    )
    .await;
    let production = wait_rules(
        &routes,
        "storefront-production",
        &[
            "edge-storefront-admin-0",
            "edge-storefront-edge-0",
            "edge-storefront-edge-1",
            "app",
        ],
    )
    .await;
    let rules = route_rules(&production);
    assert_eq!(rules[0].1, "RequestHeaderModifier");
    assert_eq!(rules[0].2, [format!("{}/clouddeck-responder", system.name)]);
    let json = serde_json::to_value(&production).unwrap();
    assert_eq!(
        json["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["set"],
        json!([{ "name": "X-Clouddeck-Deny-Status", "value": "403" }])
    );
    // The preview keeps the rules that apply to it.
    assert_eq!(rule_names(&routes, "storefront-1").await, sample);
    // The namespace's routes may reach the responder: a grant in its namespace.
    let grants = Api::<ReferenceGrant>::namespaced(client.clone(), &system.name);
    let grant = eventually("the deny ReferenceGrant", TIMEOUT, || async {
        grants
            .list(
                &ListParams::default().labels(&format!("clouddeck.io/from-namespace={}", ns.name)),
            )
            .await
            .ok()?
            .items
            .pop()
    })
    .await;
    assert_eq!(grant.spec.from[0].namespace, ns.name);
    assert_eq!(grant.spec.from[0].kind, "HTTPRoute");
    assert_eq!(
        grant.spec.to[0].name.as_deref(),
        Some("clouddeck-responder")
    );

    // A third, after the sample by name, whose rule the gateway would rank above the
    // sample's /blog redirect (a longer prefix): refused whole, the routes unchanged.
    create(
        &handlers,
        handler(
            "zz-archive",
            json!([{ "name": "archive-header", "match": { "path": { "type": "PathPrefix", "value": "/blog/archive" } },
                     "headers": { "response": { "set": [{ "name": "X-Archive", "value": "1" }] } } }]),
        ),
    )
    .await;
    let message = wait_stalled(&handlers, "zz-archive", "RuleOrder").await;
    assert!(
        message.starts_with("spec.rules[0].match: ")
            && message.contains("rule \"legacy-blog\"")
            && message.contains("EdgeHandler \"storefront-edge\""),
        "{message}"
    );
    let warnings = eventually("a Warning Event on zz-archive", TIMEOUT, || async {
        let w = warning_about(&client, &ns.name, "zz-archive").await;
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(warnings[0].0, "RuleOrder");

    // A regular expression that does not compile: Stalled, naming the field.
    create(
        &handlers,
        handler(
            "zz-regex",
            json!([{ "match": { "path": { "type": "RegularExpression", "value": "/(unclosed" } },
                     "deny": {} }]),
        ),
    )
    .await;
    let message = wait_stalled(&handlers, "zz-regex", "InvalidSpec").await;
    assert!(
        message.starts_with("spec.rules[0].match.path.value: "),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rule_names(&routes, "storefront-production").await.len(), 4);
    let sample_status = handlers
        .get("storefront-edge")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        sample_status.rule_count,
        Some(2),
        "the refused ones take nothing from it"
    );

    // Deleting the deny handler takes its rule out again.
    handlers
        .delete("storefront-admin", &DeleteParams::default())
        .await
        .unwrap();
    wait_rules(&routes, "storefront-production", &sample).await;
}

/// User story: "An EdgeHandler for a Project that does not exist (a typo) says so, and
/// goes Ready once the Project is created."
#[tokio::test]
async fn an_edge_handler_waits_for_its_project() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-edge-wait").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "edge")
        .start_leading()
        .await;
    let handlers = Api::<EdgeHandler>::namespaced(client.clone(), &ns.name);
    create(
        &handlers,
        handler(
            "headers",
            json!([{ "headers": { "request": { "remove": ["X-Debug"] } } }]),
        ),
    )
    .await;
    let message = wait_stalled(&handlers, "headers", "ProjectNotFound").await;
    assert!(message.contains("\"storefront\""), "{message}");

    // Without a deny responder (this operator has none), a deny rule cannot be served.
    create(
        &handlers,
        handler(
            "deny",
            json!([{ "match": { "path": { "type": "Exact", "value": "/x" } }, "deny": {} }]),
        ),
    )
    .await;
    create(
        &Api::<Project>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "storefront" },
            "spec": { "image": IMAGE }
        }),
    )
    .await;
    let ready = eventually("the EdgeHandler to be Ready", TIMEOUT, || async {
        let h = handlers.get("headers").await.ok()?;
        (condition(&h, "Ready")?.0 == "True").then_some(h)
    })
    .await;
    let (_, _, message) = condition(&ready, "Ready").unwrap();
    assert!(
        message.contains("no route serves the Project yet"),
        "{message}"
    );
    let message = wait_stalled(&handlers, "deny", "NoDenyResponder").await;
    assert!(message.starts_with("spec.rules[0].deny: "), "{message}");
}
