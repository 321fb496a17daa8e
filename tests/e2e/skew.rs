//! Version skew: objects stored under an older, looser schema than the running operator's.
//!
//! Every other way a tenant could store an object the operator cannot read is closed at
//! admission (integers are bounded, strings the code parses are checked by the schema), so
//! the objects here are written the way they reach a real cluster: while the CRDs were
//! looser (an earlier release, or a hand-edited CRD), then the CRDs are put back. One such
//! object of each kind must not stop its controller, nor any other controller that reads
//! that kind, after an operator restart.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::support::{self, Operator, TestNamespace, eventually};

const TIMEOUT: Duration = Duration::from_secs(60);

/// More than any 32-bit field holds: an earlier schema without a maximum let it in.
const TOO_BIG: i64 = 1 << 32;

/// One object of each kind as a looser schema stored it, and the schema change that let
/// it in (a JSON pointer under the kind's `spec` schema, and what stood there instead).
struct Skewed {
    kind: &'static str,
    plural: &'static str,
    /// Under `.spec.versions[0].schema.openAPIV3Schema.properties.spec`.
    pointer: &'static str,
    looser: Value,
    object: Value,
    /// What the InvalidObject Event says is wrong.
    reported: &'static str,
}

fn skewed() -> Vec<Skewed> {
    let project = json!({ "name": "shop" });
    vec![
        Skewed {
            kind: "Project",
            plural: "projects",
            pointer: "/properties/previewRetain",
            looser: json!({ "type": "integer" }),
            object: json!({ "image": "registry.local/e2e/app:1", "previewRetain": TOO_BIG }),
            reported: "spec.previewRetain: invalid value: integer `4294967296`",
        },
        Skewed {
            kind: "Deployment",
            plural: "deployments",
            // A target an earlier release had.
            pointer: "/properties/target",
            looser: json!({ "type": "string" }),
            object: json!({ "projectRef": project, "target": "staging",
                            "source": { "image": "registry.local/e2e/app:2" } }),
            reported: "spec.target: unknown variant `staging`",
        },
        Skewed {
            kind: "Domain",
            plural: "domains",
            // A field that became required.
            pointer: "/required",
            looser: json!(["hostname"]),
            object: json!({ "hostname": "old.skew.example" }),
            reported: "spec: missing field `projectRef`",
        },
        Skewed {
            kind: "Webhook",
            plural: "webhooks",
            pointer: "/properties/timeoutSeconds",
            looser: json!({ "type": "integer" }),
            object: json!({ "url": "http://127.0.0.1:9/old", "events": ["deployment.ready"],
                            "format": "slack", "timeoutSeconds": TOO_BIG }),
            reported: "spec.timeoutSeconds: invalid value: integer `4294967296`",
        },
        Skewed {
            kind: "CronJob",
            plural: "cronjobs",
            pointer: "/properties/timeoutSeconds",
            looser: json!({ "type": "integer" }),
            object: json!({ "projectRef": project, "schedule": "0 0 1 1 *",
                            "http": { "path": "/old" }, "timeoutSeconds": TOO_BIG }),
            reported: "spec.timeoutSeconds: invalid value: integer `4294967296`",
        },
    ]
}

impl Skewed {
    fn name(&self) -> String {
        format!("old-{}", self.kind.to_lowercase())
    }

    fn manifest(&self) -> Value {
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": self.kind,
            "metadata": { "name": self.name() }, "spec": self.object
        })
    }
}

/// The CRDs of `crds/`, with each skewed kind's schema loosened, as one YAML stream.
fn looser_crds(cases: &[Skewed]) -> String {
    let mut out = String::new();
    for crd in clouddeck::api::crds() {
        let mut crd = serde_json::to_value(&crd).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        for case in cases.iter().filter(|c| c.kind == kind) {
            let spec = crd
                .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
                .unwrap();
            *spec
                .pointer_mut(case.pointer)
                .unwrap_or_else(|| panic!("{kind} has no {} in its spec schema", case.pointer)) =
                case.looser.clone();
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).unwrap());
    }
    out
}

/// Applies `crds/` (the same field manager as every test's install, so no conflict) and
/// waits until the apiserver refuses each skewed object again.
fn restore_crds(cases: &[Skewed], namespace: &str) {
    let crds = support::repo_root().join("crds");
    support::kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().unwrap(),
    ]);
    let deadline = std::time::Instant::now() + TIMEOUT;
    for case in cases {
        let mut probe = case.manifest();
        probe["metadata"]["name"] = json!("probe");
        while support::kubectl_create_dry_run(namespace, &probe)
            .status
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the {} CRD still admits the old shape",
                case.kind
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Puts the CRDs back however the test ends.
struct Restore<'a> {
    cases: &'a [Skewed],
    namespace: String,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        restore_crds(self.cases, &self.namespace);
    }
}

/// Stores every skewed object: the looser CRDs are applied first and again for as long as
/// another test's operator start puts `crds/` back in between.
async fn store_under_looser_crds(cases: &[Skewed], namespace: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), looser_crds(cases)).unwrap();
    for case in cases {
        eventually(
            &format!("the looser CRDs to admit the old {}", case.kind),
            TIMEOUT,
            || async {
                support::kubectl_ok(&[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    file.path().to_str().unwrap(),
                ]);
                support::kubectl_create(namespace, &case.manifest(), None)
                    .status
                    .success()
                    .then_some(())
            },
        )
        .await;
    }
}

fn dynamic(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "clouddeck.io".into(),
        version: "v1alpha1".into(),
        api_version: "clouddeck.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Waits until the operator has reconciled the current generation of `name`.
async fn reconciled(api: &Api<DynamicObject>, name: &str) {
    eventually(
        &format!("{name} to be reconciled at its generation"),
        TIMEOUT,
        || async {
            let obj = api.get(name).await.ok()?;
            let observed = obj.data["status"]["observedGeneration"].as_i64()?;
            (Some(observed) == obj.meta().generation).then_some(())
        },
    )
    .await;
}

/// User story: "After an upgrade, objects that an older, looser CRD let in (a Project, a
/// Deployment, a Domain, a Webhook and a CronJob) are each reported as invalid, and every
/// other object of my namespace, old or new, is still reconciled."
#[tokio::test]
async fn objects_stored_under_a_looser_schema_stop_no_controller() {
    let _serial = support::one_operator_test_at_a_time().await;
    let _alone = support::SHARED_API.write().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-skew").await;
    let api = |kind: &str, plural: &str| dynamic(&client, &ns.name, kind, plural);
    let operator = Operator::builder(&ns.name, "skew").start_leading().await;

    // What the namespace had before: a Project in production, a Domain, a Webhook and a
    // CronJob, all reconciled.
    let valid = [
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                "metadata": { "name": "shop" },
                "spec": { "image": "registry.local/e2e/app:1" } }),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                "metadata": { "name": "shop-1" },
                "spec": { "projectRef": { "name": "shop" }, "target": "production",
                          "source": { "image": "registry.local/e2e/app:1" } } }),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
                "metadata": { "name": "www" },
                "spec": { "hostname": "www.skew.example", "projectRef": { "name": "shop" } } }),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Webhook",
                "metadata": { "name": "hook" },
                "spec": { "url": "http://127.0.0.1:9/hook", "events": ["deployment.ready"],
                          "format": "slack" } }),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
                "metadata": { "name": "nightly" },
                "spec": { "projectRef": { "name": "shop" }, "schedule": "0 0 1 1 *",
                          "http": { "path": "/api/cron" } } }),
    ];
    let plural = |kind: &str| format!("{}s", kind.to_lowercase());
    for object in &valid {
        support::kubectl_create_ok(&ns.name, object);
    }
    for object in &valid {
        let kind = object["kind"].as_str().unwrap();
        reconciled(
            &api(kind, &plural(kind)),
            object["metadata"]["name"].as_str().unwrap(),
        )
        .await;
    }

    // An older, looser schema lets one object of each kind in; then the CRDs are put back.
    let cases = skewed();
    {
        let _restore = Restore {
            cases: &cases,
            namespace: ns.name.clone(),
        };
        store_under_looser_crds(&cases, &ns.name).await;
    }

    // The restart lists every object afresh: every cache must still sync.
    drop(operator);
    let operator = Operator::builder(&ns.name, "skew").start_leading().await;
    operator.wait_ready_as("ok: leader", TIMEOUT).await;

    // Each old object is reported, on the object (naming the field) and in the metric.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns.name);
    for case in &cases {
        let name = case.name();
        eventually(
            &format!("an InvalidObject Event for the old {}", case.kind),
            TIMEOUT,
            || async {
                let events = events.list(&ListParams::default()).await.ok()?;
                events.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some("InvalidObject")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                        && e.note.as_deref().is_some_and(|n| n.contains(case.reported))
                })
            },
        )
        .await;
    }
    // The counter is this process's own: the restarted operator found them all.
    for case in &cases {
        let line = format!(
            r#"clouddeck_invalid_objects_total{{kind="{}"}} "#,
            case.kind
        );
        eventually(&format!("{line}>= 1"), TIMEOUT, || async {
            let (_, metrics) = operator.get("/metrics").await?;
            let count = metrics
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .and_then(|n| n.parse::<f64>().ok())?;
            (count >= 1.0).then_some(())
        })
        .await;
    }

    // And the rest of the namespace is reconciled as before: changes to the old objects'
    // neighbours (each kind's controller, and the Project's, which reads Deployments that
    // name it, the old one among them) and a new Deployment that takes over production.
    let merge = |spec: Value| Patch::Merge(json!({ "spec": spec }));
    let changes = [
        ("Project", "shop", json!({ "previewRetain": 7 })),
        ("Domain", "www", json!({ "branch": "main" })),
        ("Webhook", "hook", json!({ "timeoutSeconds": 5 })),
        ("CronJob", "nightly", json!({ "schedule": "0 0 2 1 *" })),
    ];
    for (kind, name, spec) in &changes {
        api(kind, &plural(kind))
            .patch(name, &PatchParams::default(), &merge(spec.clone()))
            .await
            .unwrap();
    }
    support::kubectl_create_ok(
        &ns.name,
        &json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                 "metadata": { "name": "shop-2" },
                 "spec": { "projectRef": { "name": "shop" }, "target": "production",
                           "source": { "image": "registry.local/e2e/app:2" } } }),
    );
    for (kind, name, _) in &changes {
        reconciled(&api(kind, &plural(kind)), name).await;
    }
    reconciled(&api("Deployment", "deployments"), "shop-2").await;
    eventually("Project shop to serve shop-2", TIMEOUT, || async {
        let shop = api("Project", "projects").get("shop").await.ok()?;
        (shop.data["status"]["productionDeployment"] == "shop-2").then_some(())
    })
    .await;
    // The old objects are still there, untouched: nothing was lost.
    for case in &cases {
        let old = api(case.kind, case.plural).get(&case.name()).await.unwrap();
        assert!(
            old.data.get("status").is_none(),
            "{}: {:?}",
            case.kind,
            old.data
        );
        assert!(old.finalizers().is_empty(), "{}", case.kind);
    }
}
