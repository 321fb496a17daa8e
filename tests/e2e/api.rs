//! The clouddeck.io/v1alpha1 API as the apiserver serves it: the generated CRDs install
//! cleanly, the samples apply with their defaults filled in, invalid objects are refused at
//! admission with a message that says what is wrong, and kubectl explains and lists it all.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, TestNamespace, eventually, kubectl, kubectl_ok};

const CRD_NAMES: &[&str] = &[
    "projects.clouddeck.io",
    "deployments.clouddeck.io",
    "domains.clouddeck.io",
    "edgehandlers.clouddeck.io",
    "cronjobs.clouddeck.io",
    "webhooks.clouddeck.io",
    "webhookdeliveries.clouddeck.io",
    "splittests.clouddeck.io",
];

fn crds_dir() -> PathBuf {
    support::repo_root().join("crds")
}

fn samples_dir() -> PathBuf {
    support::repo_root().join("config").join("samples")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Installs the CRDs once per test run and waits until the apiserver serves them.
fn install_crds() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        kubectl_ok(&["apply", "--server-side", "-f", path_str(&crds_dir())]);
        let names: Vec<String> = CRD_NAMES.iter().map(|n| format!("crd/{n}")).collect();
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(names.iter().map(String::as_str));
        kubectl_ok(&args);
    });
}

/// Applies the samples (the kustomization, as a user would, plus the reference delivery).
fn apply_samples(namespace: &str) {
    kubectl_ok(&[
        "apply",
        "--server-side",
        "-n",
        namespace,
        "-k",
        path_str(&samples_dir()),
    ]);
    let delivery = samples_dir().join("webhook_delivery.yaml");
    kubectl_ok(&[
        "apply",
        "--server-side",
        "-n",
        namespace,
        "-f",
        path_str(&delivery),
    ]);
}

fn get_json(namespace: &str, resource: &str) -> Value {
    let out = kubectl_ok(&["get", "-n", namespace, resource, "-o", "json"]);
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

/// User story: "I install CloudDeck's CRDs with `kubectl apply --server-side -f crds/` and
/// the apiserver accepts them without a single warning."
#[tokio::test]
async fn crds_apply_with_server_side_apply_without_warnings() {
    let _shared = support::SHARED_API.read().await;
    let out = kubectl(&["apply", "--server-side", "-f", path_str(&crds_dir())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "applying crds/ failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "applying crds/ printed warnings: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in CRD_NAMES {
        assert!(stdout.contains(name), "{name} not applied: {stdout}");
    }
    install_crds();
}

/// User story: "I apply the samples into my namespace and read them back with the
/// defaults I did not write filled in."
#[tokio::test]
async fn every_sample_applies_and_reads_back_with_defaults() {
    let _shared = support::SHARED_API.read().await;
    // No operator may run meanwhile: it would answer the sample Webhooks with pings
    // (new WebhookDeliveries) and fill in statuses this test reads back unchanged.
    let _serial = support::one_operator_test_at_a_time().await;
    install_crds();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-api-samples").await;
    apply_samples(&ns.name);

    let project = get_json(&ns.name, "projects.clouddeck.io/storefront");
    let spec = &project["spec"];
    assert_eq!(spec["build"]["cache"], true, "build.cache default: {spec}");
    assert_eq!(spec["build"]["strategy"], "dockerfile");
    assert_eq!(spec["runtime"]["port"], 3000);
    assert_eq!(spec["retain"], 5);

    let preview = get_json(&ns.name, "deployments.clouddeck.io/storefront-pr-42");
    assert_eq!(preview["spec"]["target"], "preview");

    let apex = get_json(&ns.name, "domains.clouddeck.io/example-com");
    assert_eq!(apex["spec"]["tls"]["issuerRef"]["kind"], "ClusterIssuer");

    let edge = get_json(&ns.name, "edgehandlers.clouddeck.io/storefront-edge");
    assert_eq!(
        edge["spec"]["rules"][1]["match"]["path"],
        serde_json::json!({ "type": "PathPrefix", "value": "/" }),
        "a rule without a match matches every path"
    );

    let cron = get_json(&ns.name, "cronjobs.clouddeck.io/storefront-revalidate");
    assert_eq!(cron["spec"]["suspend"], false);
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(cron["spec"]["timeoutSeconds"], 300);

    let signed = get_json(&ns.name, "webhooks.clouddeck.io/storefront-events");
    assert_eq!(
        signed["spec"]["retry"]["schedule"],
        serde_json::json!(["5s", "5m", "30m", "2h", "5h", "10h", "10h"]),
        "the Svix-like retry schedule is the default"
    );
    assert_eq!(
        signed["spec"]["disabled"], true,
        "the sample Webhooks send nothing until pointed at a receiver"
    );
    let slack = get_json(&ns.name, "webhooks.clouddeck.io/alerts-to-slack");
    assert_eq!(slack["spec"]["timeoutSeconds"], 15);

    let split = get_json(&ns.name, "splittests.clouddeck.io/checkout-redesign");
    assert_eq!(split["spec"]["override"]["header"], "X-Clouddeck-Variant");
    assert_eq!(split["spec"]["stickiness"]["maxAgeSeconds"], 2_592_000);

    let delivery = get_json(
        &ns.name,
        "webhookdeliveries.clouddeck.io/storefront-events-2b1f0c7e9a",
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(delivery["spec"]["payload"].as_str().unwrap())
            .unwrap()["data"]["deployment"],
        "storefront-3f9c2ab",
        "the payload is kept as sent"
    );

    // The typed client reads every sample back.
    use clouddeck::api::*;
    use kube::Api;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    assert_eq!(
        projects
            .get("storefront")
            .await
            .unwrap()
            .spec
            .runtime
            .replicas,
        3
    );
    let deliveries = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    assert_eq!(
        deliveries
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let splits = Api::<SplitTest>::namespaced(client, &ns.name);
    assert_eq!(
        splits
            .get("checkout-redesign")
            .await
            .unwrap()
            .spec
            .variants
            .len(),
        2
    );
}

/// The manifests under tests/e2e/invalid, each with the message fragment its first line
/// promises (`# expect: <fragment>`).
fn invalid_manifests() -> Vec<(PathBuf, String)> {
    let dir = support::repo_root().join("tests/e2e/invalid");
    let mut cases: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("tests/e2e/invalid exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} lacks a `# expect: ` first line", path.display()))
                .trim()
                .to_string();
            (path, expect)
        })
        .collect();
    cases.sort();
    cases
}

/// User story: "When I apply a wrong manifest, the apiserver refuses it and tells me
/// which field is wrong and why" — for every rule the schema can state.
#[tokio::test]
async fn invalid_manifests_are_refused_at_admission_with_their_message() {
    let _shared = support::SHARED_API.read().await;
    install_crds();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-api-invalid").await;
    let cases = invalid_manifests();
    assert!(cases.len() >= 25, "only {} invalid manifests", cases.len());

    let mut problems = Vec::new();
    for (path, expect) in &cases {
        let out = kubectl(&[
            "apply",
            "--server-side",
            "-n",
            &ns.name,
            "-f",
            path_str(path),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = path.file_name().unwrap().to_string_lossy();
        if out.status.success() {
            problems.push(format!(
                "{name}: accepted, expected refusal with {expect:?}"
            ));
        } else if !stderr.contains(expect.as_str()) {
            problems.push(format!("{name}: expected {expect:?} in: {}", stderr.trim()));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

/// User story: "Whatever environment and resources my Project admits, its pods accept;
/// whatever its pods would refuse, my Project is refused with the reason, not left failing
/// every rollout." Each case goes, as a server-side dry run, both into a Project's
/// `spec.runtime` and into a Pod's container (the apiserver's own pod validation): both
/// must admit it, or both refuse it (the Project with the message given).
#[tokio::test]
async fn runtime_fields_are_refused_exactly_where_a_pod_would_refuse_them() {
    let _shared = support::SHARED_API.read().await;
    install_crds();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-api-runtime").await;
    let secret = |name: &str, key: &str| json!({ "secretKeyRef": { "name": name, "key": key } });
    let env = |var: Value| json!({ "env": [var] });
    let resources = |r: Value| json!({ "resources": r });
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "a Secret key",
            env(json!({ "name": "TOKEN", "valueFrom": secret("api", "token.v1") })),
            None,
        ),
        (
            "a ConfigMap key",
            env(
                json!({ "name": "MODE", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "mode" } } }),
            ),
            None,
        ),
        (
            "a label",
            env(
                json!({ "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } }),
            ),
            None,
        ),
        (
            "the pod IP",
            env(
                json!({ "name": "IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }),
            ),
            None,
        ),
        (
            "the memory limit in Mi",
            env(
                json!({ "name": "MEM", "valueFrom": { "resourceFieldRef": { "resource": "limits.memory", "divisor": "1Mi" } } }),
            ),
            None,
        ),
        (
            "a Secret and a ConfigMap",
            json!({ "envFrom": [{ "secretRef": { "name": "api" } }, { "configMapRef": { "name": "cfg" }, "prefix": "CFG_" }] }),
            None,
        ),
        (
            "requests under limits",
            resources(
                json!({ "requests": { "cpu": "250m", "memory": "128Mi" }, "limits": { "cpu": "1", "memory": "256Mi" } }),
            ),
            None,
        ),
        (
            "an extended resource",
            resources(
                json!({ "requests": { "example.com/gpu": "1" }, "limits": { "example.com/gpu": "1" } }),
            ),
            None,
        ),
        (
            "value and valueFrom",
            env(json!({ "name": "A", "value": "x", "valueFrom": secret("api", "token") })),
            Some("give value or valueFrom, not both"),
        ),
        (
            "two sources",
            env(
                json!({ "name": "A", "valueFrom": { "secretKeyRef": { "name": "a", "key": "k" }, "configMapKeyRef": { "name": "b", "key": "k" } } }),
            ),
            Some("give exactly one of configMapKeyRef, secretKeyRef"),
        ),
        (
            "a key with a slash",
            env(json!({ "name": "A", "valueFrom": secret("api", "a/b") })),
            Some("secretKeyRef.key: Invalid value"),
        ),
        (
            "a Secret name with capitals",
            env(json!({ "name": "A", "valueFrom": secret("My_Secret", "k") })),
            Some("secretKeyRef.name: Invalid value"),
        ),
        (
            "a pod field the downward API does not serve",
            env(
                json!({ "name": "A", "valueFrom": { "fieldRef": { "fieldPath": "spec.containers" } } }),
            ),
            Some("fieldPath must be one of"),
        ),
        (
            "a cpu divisor in Mi",
            env(
                json!({ "name": "A", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu", "divisor": "1Mi" } } }),
            ),
            Some("a cpu divisor must be 1m or 1"),
        ),
        (
            "a resource that is not the container's",
            env(
                json!({ "name": "A", "valueFrom": { "resourceFieldRef": { "resource": "limits.gpu" } } }),
            ),
            Some("resource must be limits.cpu"),
        ),
        (
            "envFrom naming both",
            json!({ "envFrom": [{ "secretRef": { "name": "a" }, "configMapRef": { "name": "b" } }] }),
            Some("give exactly one of configMapRef and secretRef"),
        ),
        (
            "envFrom naming neither",
            json!({ "envFrom": [{ "prefix": "X_" }] }),
            Some("give exactly one of configMapRef and secretRef"),
        ),
        (
            "an envFrom name with a space",
            json!({ "envFrom": [{ "secretRef": { "name": "a b" } }] }),
            Some("secretRef.name: Invalid value"),
        ),
        (
            "a request over its limit",
            resources(json!({ "requests": { "cpu": "2" }, "limits": { "cpu": "1" } })),
            Some("a request must not exceed its limit"),
        ),
        (
            "an unqualified resource name",
            resources(json!({ "requests": { "gpu": "1" } })),
            Some("resource names are cpu, memory, ephemeral-storage"),
        ),
        (
            "an extended resource without its limit",
            resources(json!({ "requests": { "example.com/gpu": "1" } })),
            Some("a domain-qualified (extended) resource takes a whole number"),
        ),
        (
            "a resource claim",
            resources(json!({ "claims": [{ "name": "gpu" }] })),
            Some("claims are not supported"),
        ),
    ];

    let mut problems = Vec::new();
    for (i, (case, runtime, refusal)) in cases.iter().enumerate() {
        let project = json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": format!("runtime-{i}") },
            "spec": { "image": "ghcr.io/acme/web:1", "runtime": runtime },
        });
        let mut container = json!({ "name": "app", "image": "ghcr.io/acme/web:1" });
        for field in ["env", "envFrom", "resources"] {
            if let Some(value) = runtime.get(field) {
                container[field] = value.clone();
            }
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("runtime-{i}") },
            "spec": { "containers": [container] },
        });
        let by_project = support::kubectl_create_dry_run(&ns.name, &project);
        let by_pod = support::kubectl_create_dry_run(&ns.name, &pod);
        let said = String::from_utf8_lossy(&by_project.stderr);
        match refusal {
            None if !by_project.status.success() => {
                problems.push(format!("{case}: the Project was refused: {}", said.trim()))
            }
            Some(message) if by_project.status.success() => problems.push(format!(
                "{case}: the Project was admitted, expected {message:?}"
            )),
            Some(message) if !said.contains(message) => {
                problems.push(format!("{case}: expected {message:?} in: {}", said.trim()))
            }
            _ => {}
        }
        if by_pod.status.success() != refusal.is_none() {
            problems.push(format!(
                "{case}: the pod disagrees (admitted: {}): {}",
                by_pod.status.success(),
                String::from_utf8_lossy(&by_pod.stderr).trim()
            ));
        }
    }
    // Stricter than pod validation, on purpose: the apiserver admits an environment
    // variable reading another container's resources, and the kubelet then cannot start
    // the container (no such container); one runtime serves the application's container
    // and a CronJob's, so no name fits both.
    let other = json!({ "env": [{ "name": "A", "valueFrom": { "resourceFieldRef": {
        "resource": "limits.cpu", "containerName": "sidecar" } } }] });
    let project = json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
        "metadata": { "name": "runtime-other" },
        "spec": { "image": "ghcr.io/acme/web:1", "runtime": other },
    });
    let refused = support::kubectl_create_dry_run(&ns.name, &project);
    let said = String::from_utf8_lossy(&refused.stderr);
    if refused.status.success() || !said.contains("leave containerName out") {
        problems.push(format!("another container's resources: {}", said.trim()));
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases:\n{}",
        problems.len(),
        cases.len() + 1,
        problems.join("\n")
    );
}

/// User story: "A Deployment records what was deployed: its source cannot be edited after
/// the fact, nor a Domain's hostname, nor a delivery's record."
#[tokio::test]
async fn immutable_fields_cannot_change() {
    let _shared = support::SHARED_API.read().await;
    install_crds();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-api-immutable").await;
    apply_samples(&ns.name);

    for (resource, patch, expect) in [
        (
            "deployments.clouddeck.io/storefront-3f9c2ab",
            r#"{"spec":{"source":{"git":{"branch":"main","commit":"0000000"}}}}"#,
            "spec.source is immutable",
        ),
        (
            "deployments.clouddeck.io/storefront-3f9c2ab",
            r#"{"spec":{"projectRef":{"name":"other"}}}"#,
            "spec.projectRef is immutable",
        ),
        (
            "domains.clouddeck.io/example-com",
            r#"{"spec":{"hostname":"example.org"}}"#,
            "spec.hostname is immutable",
        ),
        (
            "webhookdeliveries.clouddeck.io/storefront-events-2b1f0c7e9a",
            r#"{"spec":{"eventType":"deployment.failed"}}"#,
            "spec is immutable",
        ),
    ] {
        let out = kubectl(&[
            "patch",
            "-n",
            &ns.name,
            resource,
            "--type=merge",
            "-p",
            patch,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{resource}: patch {patch} was accepted"
        );
        assert!(
            stderr.contains(expect),
            "{resource}: expected {expect:?} in {stderr}"
        );
    }

    // What may change still changes: a Deployment's target, a Domain's TLS.
    kubectl_ok(&[
        "patch",
        "-n",
        &ns.name,
        "deployments.clouddeck.io/storefront-pr-42",
        "--type=merge",
        "-p",
        r#"{"spec":{"target":"production"}}"#,
    ]);
}

/// User story: "`kubectl explain project.spec.build` tells me what each build setting does."
#[tokio::test]
async fn kubectl_explain_describes_project_build() {
    let _shared = support::SHARED_API.read().await;
    install_crds();
    let text = eventually(
        "kubectl explain to know the Project schema",
        Duration::from_secs(60),
        || async {
            let out = kubectl(&[
                "explain",
                "projects.spec.build",
                "--api-version=clouddeck.io/v1alpha1",
            ]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    for fragment in [
        "strategy",
        "Cloud Native Buildpacks",
        "dockerfile",
        "timeout",
        "15m",
        "cache",
        "envFrom",
    ] {
        assert!(
            text.contains(fragment),
            "explain lacks {fragment:?}:\n{text}"
        );
    }
    let runtime = kubectl_ok(&[
        "explain",
        "projects.spec.runtime.port",
        "--api-version=clouddeck.io/v1alpha1",
    ]);
    assert!(
        runtime.contains("3000"),
        "port's default is explained: {runtime}"
    );
}

/// User story: "`kubectl get clouddeck -n <team>` lists everything CloudDeck manages in my
/// namespace, every kind, with its columns."
#[tokio::test]
async fn kubectl_get_clouddeck_lists_every_kind() {
    let _shared = support::SHARED_API.read().await;
    install_crds();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-api-category").await;
    apply_samples(&ns.name);

    let listing = eventually(
        "`kubectl get clouddeck` to list every kind",
        Duration::from_secs(60),
        || {
            let ns = ns.name.clone();
            async move {
                let out = kubectl(&["get", "clouddeck", "-n", &ns]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let all = [
                    "project.clouddeck.io/storefront",
                    "deployment.clouddeck.io/storefront-3f9c2ab",
                    "domain.clouddeck.io/example-com",
                    "edgehandler.clouddeck.io/storefront-edge",
                    "cronjob.clouddeck.io/storefront-revalidate",
                    "webhook.clouddeck.io/storefront-events",
                    "webhookdelivery.clouddeck.io/storefront-events-2b1f0c7e9a",
                    "splittest.clouddeck.io/checkout-redesign",
                ]
                .iter()
                .all(|name| text.contains(name));
                all.then_some(text)
            }
        },
    )
    .await;
    // The delivery log reads as one: event, webhook, phase, attempts, last status code.
    assert!(
        listing.contains("EVENT") && listing.contains("WEBHOOK") && listing.contains("ATTEMPTS"),
        "{listing}"
    );
    let wide = kubectl_ok(&["get", "whd", "-n", &ns.name, "-o", "wide"]);
    assert!(
        wide.contains("MESSAGE") && wide.contains("LAST STATUS"),
        "{wide}"
    );
    for short in [
        "proj", "cdeploy", "dom", "edge", "cdcron", "wh", "whd", "split",
    ] {
        kubectl_ok(&["get", short, "-n", &ns.name]);
    }
}
