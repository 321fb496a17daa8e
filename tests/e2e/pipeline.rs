//! The build → roll out → route → promote → roll back pipeline of Projects and Deployments,
//! against the local control plane with the operator binary running.
//!
//! The build pod and the kubelet. kwok makes pods Running and Ready; CloudDeck's own kwok
//! stage (hack/kwok/build-pushed.yaml) ends a build pod reporting a placeholder digest.
//! These tests need chosen digests and failing builds, so they act as the kubelet for
//! build pods: their operator runs with `--build-pod-annotations
//! pod-complete.stage.kwok.x-k8s.io/delay=1h`, so every build pod is created with kwok held
//! back (annotating the pod once it exists raced kwok under load); the tests wait until
//! kwok reports it Running, then write its final status themselves — the build
//! container `terminated` with exit code 0 and the `{"digest":…,"commit":…}` message (or a
//! non-zero exit code for a failed build) and the pod phase. Everything else — the Job
//! controller, the Deployment controller, scheduling, ReplicaSets, pods of the workload,
//! garbage collection — is the real control plane and kwok. One test leaves builds to the
//! kwok stage: the samples' story.

use std::collections::BTreeMap;
use std::time::Duration;

use clouddeck::api::{Deployment, DeploymentPhase, Project};
use clouddeck::hostnames::HostnameClaim;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment as Workload;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::support::{self, TestNamespace, create, eventually};

const DIGEST: &str = "sha256:4c1f0d4f3ad1b4e7c2d2b0f4f0d6e6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d";
const COMMIT: &str = "3f9c2ab7d1e04b5c9a8f6e2d1c0b9a8f7e6d5c4b";
const IMAGE: &str = "registry.example/acme/hello@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const TIMEOUT: Duration = Duration::from_secs(90);
/// Keeps kwok from completing a build pod: the tests play its kubelet.
const KWOK_HOLD: &str = "pod-complete.stage.kwok.x-k8s.io/delay=1h";

/// The operator of one test: `clouddeck run` with its own Lease, started once it leads,
/// and holding the suite-wide guard so no other test's operator reconciles at the same
/// time (every operator watches the whole cluster). On a failing test it prints what the
/// namespace holds; the operator prints its log.
struct Pipeline {
    namespace: String,
    operator: Option<support::Operator>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Pipeline {
    async fn start(namespace: &str) -> Self {
        let serial = support::one_operator_test_at_a_time().await;
        let mut pipeline = Pipeline {
            namespace: namespace.to_owned(),
            operator: None,
            _serial: serial,
        };
        pipeline.restart().await;
        pipeline
    }

    /// Kills the operator (SIGKILL, no clean shutdown) if it runs, and starts a new one.
    async fn restart(&mut self) {
        drop(self.operator.take());
        // A short reservation: a Project name a test before this one held (in a namespace
        // since deleted) is free again soon, so tests may assert `<name>.<base>`.
        let operator = support::Operator::builder(&self.namespace, "pipeline")
            .args(["--build-pod-annotations", KWOK_HOLD])
            .args(["--hostname-reservation", "20s"])
            .start_leading()
            .await;
        self.operator = Some(operator);
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let objects = support::kubectl(&[
                "get",
                "projects.clouddeck.io,deployments.clouddeck.io,httproutes,deployments.apps,jobs,pods",
                "-n",
                &self.namespace,
                "-o",
                "yaml",
            ]);
            eprintln!(
                "--- objects ---\n{}",
                String::from_utf8_lossy(&objects.stdout)
            );
        }
    }
}

fn git_project(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
        "metadata": { "name": name },
        "spec": {
            "git": { "url": "https://git.example/acme/web.git", "branch": "main" },
            "registry": { "repository": "registry.example/acme/web" },
            "runtime": { "port": 8080, "replicas": 2, "healthCheckPath": "/healthz" }
        }
    })
}

/// Creates the git Project `web` and returns the API of the namespace's Deployments.
async fn with_git_project(client: &kube::Client, namespace: &str) -> Api<Deployment> {
    create(
        &Api::<Project>::namespaced(client.clone(), namespace),
        git_project("web"),
    )
    .await;
    Api::<Deployment>::namespaced(client.clone(), namespace)
}

fn image_project(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
        "metadata": { "name": name },
        "spec": { "image": IMAGE, "retain": 3, "keepWarm": 1 }
    })
}

/// Creates the image Project `hello` and its preview Deployment `hello-1`, and returns the
/// API of the namespace's Deployments.
async fn with_image_deployment(client: &Client, namespace: &str) -> Api<Deployment> {
    create(
        &Api::<Project>::namespaced(client.clone(), namespace),
        image_project("hello"),
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    create(
        &deployments,
        deployment("hello-1", "hello", "preview", json!({ "image": IMAGE })),
    )
    .await;
    deployments
}

fn deployment(
    name: &str,
    project: &str,
    target: &str,
    source: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "projectRef": { "name": project }, "target": target, "source": source }
    })
}

/// A git Deployment of Project `web` building `COMMIT` of `branch`.
fn git_deployment(name: &str, target: &str, branch: &str) -> serde_json::Value {
    deployment(
        name,
        "web",
        target,
        json!({ "git": { "branch": branch, "commit": COMMIT } }),
    )
}

/// A git Deployment of Project `web` building the head of `branch`.
fn git_head_deployment(name: &str, target: &str, branch: &str) -> serde_json::Value {
    deployment(name, "web", target, json!({ "git": { "branch": branch } }))
}

/// The termination message of a build that pushed `DIGEST` for `COMMIT`.
fn built() -> String {
    format!(r#"{{"digest":"{DIGEST}","commit":"{COMMIT}"}}"#)
}

/// The Ready condition of `d`, which every Deployment with a status has.
fn ready_condition(d: Deployment) -> Condition {
    d.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
}

fn phase(d: &Deployment) -> Option<DeploymentPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

async fn wait_phase(api: &Api<Deployment>, name: &str, want: DeploymentPhase) -> Deployment {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let found = api.get(name).await.ok();
        if let Some(d) = &found
            && phase(d) == Some(want)
        {
            return d.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for Deployment {name} to be {want:?}; last status: {:?}",
            found.and_then(|d| d.status)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Acts as the kubelet for the build pod of `job` (which kwok leaves alone): terminates the
/// build container with `exit_code` and `message` as its termination message. Returns the
/// pod's name.
async fn finish_build_pod(
    client: &Client,
    namespace: &str,
    job: &str,
    exit_code: i32,
    message: &str,
) -> String {
    let pod = support::terminate_job_pod(client, namespace, job, "build", exit_code, message).await;
    assert_eq!(
        pod.annotations()
            .get("pod-complete.stage.kwok.x-k8s.io/delay")
            .map(String::as_str),
        Some("1h"),
        "the operator puts --build-pod-annotations on build pods"
    );
    pod.metadata.name.unwrap()
}

async fn route_backend(routes: &Api<HttpRoute>, name: &str) -> Option<String> {
    let route = routes.get(name).await.ok()?;
    Some(
        route
            .spec
            .rules?
            .first()?
            .backend_refs
            .as_ref()?
            .first()?
            .name
            .clone(),
    )
}

async fn events(client: &Client, namespace: &str, object: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(object))
        .collect()
}

/// User story: "I deploy a prebuilt image and get a Ready Deployment with its own URL,
/// served by an HTTPRoute on the platform's Gateway — no build."
#[tokio::test]
async fn an_image_deployment_becomes_ready_with_a_preview_route() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-image").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_image_deployment(&client, &ns.name).await;

    let ready = wait_phase(&deployments, "hello-1", DeploymentPhase::Ready).await;
    let status = ready.status.unwrap();
    let url = status.url.expect("a URL");
    assert!(
        url.starts_with("https://hello-") && url.ends_with(".clouddeck.localhost"),
        "{url}"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(
        status.build_pod.is_none(),
        "an image deployment is not built"
    );

    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    let route = routes.get("hello-1").await.expect("preview HTTPRoute");
    assert_eq!(
        route.spec.hostnames.as_ref().unwrap()[0],
        url.trim_start_matches("https://")
    );
    let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
    assert_eq!(
        (parent.name.as_str(), parent.namespace.as_deref()),
        ("clouddeck", Some("clouddeck-system"))
    );
    assert_eq!(
        route_backend(&routes, "hello-1").await.as_deref(),
        Some("hello-1")
    );

    let workload = Api::<Workload>::namespaced(client.clone(), &ns.name)
        .get("hello-1")
        .await
        .unwrap();
    let labels = workload.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "clouddeck");
    assert_eq!(labels["clouddeck.io/project"], "hello");
    assert_eq!(labels["clouddeck.io/deployment"], "hello-1");
    let pod = workload.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(IMAGE));
    assert!(
        Api::<Job>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let out = support::kubectl_ok(&["get", "deployments.clouddeck.io", "-n", &ns.name]);
    assert!(out.contains("Ready") && out.contains(&url), "{out}");
}

/// User story: "My namespace's quota allows no Service, so my Deployment cannot be rolled
/// out. The operator keeps trying, and I see one Warning Event on the Deployment whose
/// count goes up, not a new Event per try; once the quota is lifted it goes Ready."
#[tokio::test]
async fn a_failure_that_repeats_is_one_warning_event_with_a_count() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-series").await;
    let quotas =
        Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(client.clone(), &ns.name);
    create(
        &quotas,
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": { "name": "no-services" },
            "spec": { "hard": { "services": "0" } }
        }),
    )
    .await;
    // Until the controller-manager has counted the namespace, the quota refuses with
    // another message ("status unknown"): the series starts once it has.
    eventually("the quota to be counted", TIMEOUT, || async {
        let hard = quotas.get("no-services").await.ok()?.status?.hard?;
        hard.contains_key("services").then_some(())
    })
    .await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_image_deployment(&client, &ns.name).await;

    let refused = |e: &Event| {
        e.type_.as_deref() == Some("Warning")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("exceeded quota"))
    };
    // Retries back off 1, 2, 4, 8 s…: a count of 3 comes within about 10 s.
    let series = eventually("a Warning counted three times", TIMEOUT, || async {
        let warnings: Vec<Event> = events(&client, &ns.name, "hello-1")
            .await
            .into_iter()
            .filter(refused)
            .collect();
        let count = warnings.first()?.series.as_ref()?.count?;
        (count >= 3).then_some(warnings)
    })
    .await;
    assert_eq!(series.len(), 1, "one Event for every try: {series:?}");
    let event = &series[0];
    assert_eq!(event.reason.as_deref(), Some("KubeError"));
    assert_eq!(event.reporting_component.as_deref(), Some("clouddeck"));
    let message = event.message.as_deref().unwrap_or_default();
    assert!(message.contains("no-services"), "{message}");

    quotas
        .delete("no-services", &DeleteParams::default())
        .await
        .unwrap();
    wait_phase(&deployments, "hello-1", DeploymentPhase::Ready).await;
    let warnings = events(&client, &ns.name, "hello-1").await;
    assert_eq!(
        warnings.iter().filter(|e| refused(e)).count(),
        1,
        "still one Event for all the tries"
    );
}

/// User story: "I deploy a commit of my git repository; it is queued, built in the cluster
/// by a Job, rolled out pinned to the pushed digest and Ready — and the operator never
/// starts a second build Job for it."
#[tokio::test]
async fn a_git_deployment_is_built_and_rolled_out_by_digest() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-build").await;
    let pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_git_project(&client, &ns.name).await;
    create(&deployments, git_deployment("web-1", "production", "main")).await;

    // Record every phase the Deployment goes through.
    let watcher = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let mut seen: Vec<DeploymentPhase> = Vec::new();
            for _ in 0..600 {
                if let Ok(d) = deployments.get("web-1").await
                    && let Some(p) = phase(&d)
                    && seen.last() != Some(&p)
                {
                    seen.push(p);
                    if p == DeploymentPhase::Ready {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };

    let building = wait_phase(&deployments, "web-1", DeploymentPhase::Building).await;
    let pod = finish_build_pod(&client, &ns.name, "web-1-build", 0, &built()).await;
    let ready = wait_phase(&deployments, "web-1", DeploymentPhase::Ready).await;
    let phases = watcher.await.unwrap();
    assert_eq!(
        phases,
        [
            DeploymentPhase::Queued,
            DeploymentPhase::Building,
            DeploymentPhase::Deploying,
            DeploymentPhase::Ready
        ],
        "phases seen"
    );
    assert!(
        building
            .status
            .as_ref()
            .unwrap()
            .timings
            .as_ref()
            .unwrap()
            .build_started_at
            .is_some()
    );

    let status = ready.status.unwrap();
    assert_eq!(
        status.image_digest.as_deref(),
        Some(format!("registry.example/acme/web@{DIGEST}").as_str())
    );
    assert_eq!(status.build_pod.as_deref(), Some(pod.as_str()));
    assert_eq!(status.commit.as_deref(), Some(COMMIT));
    let timings = status.timings.unwrap();
    assert!(timings.build_finished_at.is_some() && timings.ready_at.is_some());

    let workload = Api::<Workload>::namespaced(client.clone(), &ns.name)
        .get("web-1")
        .await
        .unwrap();
    let spec = workload.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("registry.example/acme/web@{DIGEST}").as_str())
    );
    Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("web-1")
        .await
        .expect("a Service");

    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), 1, "exactly one build Job");
    let job_pod = jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(job_pod.automount_service_account_token, Some(false));

    let reasons: Vec<String> = events(&client, &ns.name, "web-1")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["BuildStarted", "BuildSucceeded", "RolloutStarted", "Ready"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event in {reasons:?}"
        );
    }
    // A production deployment that is Ready is promoted.
    let project = eventually(
        "the Project to name its production deployment",
        TIMEOUT,
        || async {
            let p = Api::<Project>::namespaced(client.clone(), &ns.name)
                .get("web")
                .await
                .ok()?;
            (p.status.as_ref()?.production_deployment.as_deref() == Some("web-1")).then_some(p)
        },
    )
    .await;
    // `web.clouddeck.localhost`, unless the `web` of a test before this one is still
    // being deleted with its namespace (then `web-<id>`: see the namesake test).
    let status = project.status.unwrap();
    let hostname = status.hostname.expect("status.hostname");
    assert!(hostname.starts_with("web") && hostname.ends_with(".clouddeck.localhost"));
    assert_eq!(status.production_url, Some(format!("https://{hostname}")));

    // The operator counted one successful build and one successful rollout.
    let operator = pipeline.operator.as_ref().unwrap();
    let (_, metrics) = operator.get("/metrics").await.expect("GET /metrics");
    for line in [
        r#"clouddeck_builds_total{outcome="succeeded"} 1"#,
        r#"clouddeck_rollouts_total{outcome="succeeded"} 1"#,
        r#"clouddeck_build_duration_seconds_count{outcome="succeeded"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
}

/// User story: "My build fails; the Deployment says Failed, tells me why and where the
/// logs are, and a Warning Event records it."
#[tokio::test]
async fn a_failing_build_fails_the_deployment_with_a_warning_event() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-fail").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_git_project(&client, &ns.name).await;
    create(
        &deployments,
        git_head_deployment("web-bad", "preview", "broken"),
    )
    .await;

    let pod = finish_build_pod(&client, &ns.name, "web-bad-build", 1, "").await;
    let failed = wait_phase(&deployments, "web-bad", DeploymentPhase::Failed).await;
    let status = failed.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BuildFailed")
    );
    assert!(
        ready.message.contains("exit code 1") && ready.message.contains(&pod),
        "{}",
        ready.message
    );

    let warning = eventually("a BuildFailed Warning Event", TIMEOUT, || async {
        events(&client, &ns.name, "web-bad")
            .await
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("BuildFailed") && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
    assert!(warning.message.unwrap_or_default().contains("kubectl logs"));
    let described = support::kubectl_ok(&[
        "describe",
        "deployments.clouddeck.io",
        "-n",
        &ns.name,
        "web-bad",
    ]);
    assert!(described.contains("BuildFailed"), "{described}");
}

/// Issue #10: "a build pod refused by admission fails the Deployment at once with that
/// reason, never a wait until the build timeout". A namespace enforcing the `baseline` Pod
/// Security level refuses rootless BuildKit's Unconfined profiles; the `buildpacks`
/// strategy passes it.
#[tokio::test]
async fn a_build_pod_that_pod_security_refuses_fails_the_deployment_at_once() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-psa").await;
    support::kubectl_ok(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    let _pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_git_project(&client, &ns.name).await;
    let started = tokio::time::Instant::now();
    create(&deployments, git_deployment("web-1", "preview", "main")).await;

    let failed = wait_phase(&deployments, "web-1", DeploymentPhase::Failed).await;
    let took = started.elapsed();
    let ready = ready_condition(failed);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BuildPodRefused")
    );
    assert!(
        ready.message.contains("violates PodSecurity") && ready.message.contains("baseline"),
        "{}",
        ready.message
    );
    assert!(took < Duration::from_secs(20), "failed only after {took:?}");
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no build Job is left waiting");
    eventually("a BuildPodRefused Warning Event", TIMEOUT, || async {
        events(&client, &ns.name, "web-1")
            .await
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("BuildPodRefused")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;

    // The strategy that needs only `restricted` is admitted in the same namespace.
    Api::<Project>::namespaced(client.clone(), &ns.name)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "build": { "strategy": "buildpacks" } } })),
        )
        .await
        .unwrap();
    create(&deployments, git_deployment("web-2", "preview", "main")).await;
    finish_build_pod(&client, &ns.name, "web-2-build", 0, &built()).await;
    wait_phase(&deployments, "web-2", DeploymentPhase::Ready).await;
}

/// User story: "I deploy an image the cluster cannot pull: the Deployment fails with
/// `ImagePullFailed`, says which pod and image, raises a Warning Event — and production
/// stays on what it served."
///
/// The node is kwok's: CloudDeck's own kwok stage (hack/kwok/pod-image-pull-failed.yaml)
/// plays the kubelet that cannot resolve `registry.invalid`.
#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_deployment() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-pull").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    create(&projects, image_project("pull")).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    create(
        &deployments,
        deployment("pull-1", "pull", "production", json!({ "image": IMAGE })),
    )
    .await;
    wait_phase(&deployments, "pull-1", DeploymentPhase::Ready).await;

    let unpullable = IMAGE.replace("registry.example/", "registry.invalid/");
    create(
        &deployments,
        deployment(
            "pull-2",
            "pull",
            "production",
            json!({ "image": unpullable }),
        ),
    )
    .await;
    let failed = wait_phase(&deployments, "pull-2", DeploymentPhase::Failed).await;
    let ready = ready_condition(failed);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ImagePullFailed")
    );
    assert!(
        ready.message.contains(&unpullable) && ready.message.contains("ErrImagePull"),
        "{}",
        ready.message
    );
    let warning = eventually("an ImagePullFailed Warning Event", TIMEOUT, || async {
        events(&client, &ns.name, "pull-2")
            .await
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("ImagePullFailed")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
    assert!(warning.message.unwrap_or_default().contains("pull-2"));
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    assert_eq!(
        route_backend(&routes, "pull-production").await.as_deref(),
        Some("pull-1"),
        "production stays where it was"
    );
}

/// User story: "My app asks for more CPU than any node has: once the Project's progress
/// deadline passes the Deployment fails with `RolloutStalled`, and the message says the
/// scheduler could not place its pod, and why."
///
/// The deadline is the real kube-controller-manager's; the reason is the real scheduler's.
#[tokio::test]
async fn a_rollout_that_makes_no_progress_fails_and_says_why() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-stall").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let mut project = image_project("greedy");
    project["spec"]["runtime"] = json!({
        "progressDeadlineSeconds": 10,
        "resources": { "requests": { "cpu": "1000" } },
    });
    create(
        &Api::<Project>::namespaced(client.clone(), &ns.name),
        project,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    create(
        &deployments,
        deployment("greedy-1", "greedy", "preview", json!({ "image": IMAGE })),
    )
    .await;

    let failed = wait_phase(&deployments, "greedy-1", DeploymentPhase::Failed).await;
    let ready = ready_condition(failed);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RolloutStalled")
    );
    assert!(
        ready.message.contains("no progress for 10s")
            && ready.message.contains("cannot be scheduled")
            && ready.message.contains("Insufficient cpu"),
        "{}",
        ready.message
    );
    eventually("a RolloutStalled Warning Event", TIMEOUT, || async {
        events(&client, &ns.name, "greedy-1")
            .await
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("RolloutStalled")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
}

/// User story: "A second production deployment is promoted and the production route moves
/// to it; the first is kept; setting `spec.rollbackTo` moves production back in seconds,
/// with no rebuild."
#[tokio::test]
async fn promotion_moves_production_and_rollback_moves_it_back() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-promote").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    create(&projects, image_project("shop")).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    let production_backend = |want: &'static str| {
        let routes = routes.clone();
        async move {
            eventually(
                &format!("the production route to point at {want}"),
                TIMEOUT,
                || async {
                    (route_backend(&routes, "shop-production").await.as_deref() == Some(want))
                        .then_some(())
                },
            )
            .await
        }
    };

    create(
        &deployments,
        deployment("shop-1", "shop", "production", json!({ "image": IMAGE })),
    )
    .await;
    wait_phase(&deployments, "shop-1", DeploymentPhase::Ready).await;
    production_backend("shop-1").await;
    let route = routes.get("shop-production").await.unwrap();
    assert_eq!(route.spec.hostnames.unwrap(), ["shop.clouddeck.localhost"]);

    let second = IMAGE.replace("sha256:1111", "sha256:2222");
    create(
        &deployments,
        deployment("shop-2", "shop", "production", json!({ "image": second })),
    )
    .await;
    wait_phase(&deployments, "shop-2", DeploymentPhase::Ready).await;
    production_backend("shop-2").await;
    // The route moves first and the Project status follows in the same reconcile.
    eventually("the Project status to name shop-2", TIMEOUT, || async {
        let status = projects.get("shop").await.ok()?.status?;
        (status.production_deployment.as_deref() == Some("shop-2")).then_some(())
    })
    .await;
    assert_eq!(
        phase(&deployments.get("shop-1").await.unwrap()),
        Some(DeploymentPhase::Ready),
        "the first is kept"
    );

    let started = std::time::Instant::now();
    let rollback = json!({ "spec": { "rollbackTo": "shop-1" } });
    projects
        .patch("shop", &PatchParams::default(), &Patch::Merge(&rollback))
        .await
        .unwrap();
    production_backend("shop-1").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "rollback took {:?}",
        started.elapsed()
    );
    let rolled_back = eventually("a RolledBack Event", TIMEOUT, || async {
        events(&client, &ns.name, "shop")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RolledBack"))
    })
    .await;
    assert_eq!(rolled_back.type_.as_deref(), Some("Normal"));
    let reasons: Vec<String> = events(&client, &ns.name, "shop-2")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "Promoted"), "{reasons:?}");

    // Rolling back to something that cannot serve is refused and production stays put.
    let bad = json!({ "spec": { "rollbackTo": "shop-404" } });
    projects
        .patch("shop", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap();
    let stalled = eventually(
        "the Project to stall on spec.rollbackTo",
        TIMEOUT,
        || async {
            let p = projects.get("shop").await.ok()?;
            p.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Stalled" && c.status == "True")
        },
    )
    .await;
    assert!(
        stalled.message.starts_with("spec.rollbackTo:"),
        "{}",
        stalled.message
    );
    assert_eq!(
        route_backend(&routes, "shop-production").await.as_deref(),
        Some("shop-1")
    );
}

/// User story: "My feature branch's alias URL serves its latest Ready deployment; when the
/// branch's deployments are deleted the alias goes too, instead of pointing at nothing."
#[tokio::test]
async fn a_branch_alias_goes_with_the_last_deployment_of_its_branch() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-alias").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_git_project(&client, &ns.name).await;
    create(
        &deployments,
        git_deployment("web-pr-1", "preview", "feature/x"),
    )
    .await;
    finish_build_pod(&client, &ns.name, "web-pr-1-build", 0, &built()).await;
    wait_phase(&deployments, "web-pr-1", DeploymentPhase::Ready).await;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    eventually("the feature/x alias to serve web-pr-1", TIMEOUT, || async {
        (route_backend(&routes, "web-git-feature-x").await.as_deref() == Some("web-pr-1"))
            .then_some(())
    })
    .await;

    deployments
        .delete("web-pr-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the feature/x alias to be deleted", TIMEOUT, || async {
        routes
            .get_opt("web-git-feature-x")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        routes.get_opt("web-production").await.unwrap().is_none(),
        "a preview never made a production route"
    );
}

/// User story: "Every push to a pull request makes a preview; only the newest
/// `previewRetain` of each branch keep running, so previews cost a bounded amount."
#[tokio::test]
async fn previews_beyond_preview_retain_are_pruned() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-previews").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let mut project = image_project("pr");
    project["spec"]["previewRetain"] = json!(1);
    create(
        &Api::<Project>::namespaced(client.clone(), &ns.name),
        project,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    for name in ["pr-1", "pr-2"] {
        create(
            &deployments,
            deployment(name, "pr", "preview", json!({ "image": IMAGE })),
        )
        .await;
        wait_phase(&deployments, name, DeploymentPhase::Ready).await;
    }
    eventually("pr-1 to be pruned", TIMEOUT, || async {
        deployments
            .get_opt("pr-1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let pruned = eventually("a Pruned Event", TIMEOUT, || async {
        events(&client, &ns.name, "pr")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Pruned"))
    })
    .await;
    assert!(
        pruned
            .message
            .unwrap_or_default()
            .contains("spec.previewRetain"),
        "the Event names the field"
    );
    assert_eq!(
        phase(&deployments.get("pr-2").await.unwrap()),
        Some(DeploymentPhase::Ready),
        "the newest preview keeps running"
    );
}

/// User story: "I run `make dev`: the sample Project's git Deployments are built, rolled
/// out and Ready, and production is promoted." On kwok the build is CloudDeck's own kwok
/// stage (hack/kwok/build-pushed.yaml), which ends a build pod reporting a placeholder
/// digest; this operator does not hold kwok back.
#[tokio::test]
async fn the_sample_git_deployments_build_and_go_ready_on_the_local_cluster() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-samples-ready").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "samples")
        .start_leading()
        .await;
    support::apply_samples(
        &ns.name,
        &["secrets.yaml", "project.yaml", "deployment.yaml"],
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let placeholder = format!("@sha256:{}", "0".repeat(64));
    for name in ["storefront-3f9c2ab", "storefront-pr-42"] {
        let ready = wait_phase(&deployments, name, DeploymentPhase::Ready).await;
        let digest = ready.status.unwrap().image_digest.unwrap_or_default();
        assert!(digest.ends_with(&placeholder), "{name}: {digest}");
    }
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    eventually("storefront's production", TIMEOUT, || async {
        let status = projects.get("storefront").await.ok()?.status?;
        (status.production_deployment.as_deref() == Some("storefront-3f9c2ab")).then_some(())
    })
    .await;
}

/// User story: "Two teams both call their Project `docs`. The older one keeps
/// `docs.<base domain>`; the younger one is told it is served under `docs-<hash>.<base
/// domain>` — without learning who holds the name. When the older team deletes and
/// re-creates its Project (a GitOps replace), it gets `docs.<base domain>` back: the
/// younger one never takes over its production hostname."
#[tokio::test]
async fn namesake_projects_in_two_namespaces_get_distinct_hostnames() {
    let client = support::client().await;
    let first = TestNamespace::new(&client, "e2e-namesake-a").await;
    let second = TestNamespace::new(&client, "e2e-namesake-b").await;
    let _pipeline = Pipeline::start(&first.name).await;
    let hostname_of = |api: Api<Project>| async move {
        eventually("the Project's status.hostname", TIMEOUT, || async {
            api.get("docs").await.ok()?.status?.hostname
        })
        .await
    };

    let older = Api::<Project>::namespaced(client.clone(), &first.name);
    let created = create(&older, image_project("docs")).await;
    assert_eq!(hostname_of(older.clone()).await, "docs.clouddeck.localhost");
    // Creation times have a one-second resolution; make "older" unambiguous.
    let born = created.metadata.creation_timestamp.unwrap().0;
    while k8s_openapi::jiff::Timestamp::now().as_second() <= born.as_second() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let younger = Api::<Project>::namespaced(client.clone(), &second.name);
    create(&younger, image_project("docs")).await;
    let own = format!(
        "{}.clouddeck.localhost",
        clouddeck::hostnames::scheme::candidate_keys("docs", &second.name)[1]
    );
    assert_eq!(hostname_of(younger.clone()).await, own);
    let told = eventually("a HostnameAssigned Event", TIMEOUT, || async {
        events(&client, &second.name, "docs")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("HostnameAssigned"))
    })
    .await;
    let note = told.message.unwrap_or_default();
    assert!(
        note.contains(&own) && note.contains("docs.clouddeck.localhost"),
        "{note}"
    );
    assert!(
        !note.contains(&first.name),
        "leaks the other namespace: {note}"
    );

    // The younger one's production route carries its own hostname.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &second.name);
    create(
        &deployments,
        deployment("docs-1", "docs", "production", json!({ "image": IMAGE })),
    )
    .await;
    wait_phase(&deployments, "docs-1", DeploymentPhase::Ready).await;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &second.name);
    let hostnames = |name: &'static str| {
        let routes = routes.clone();
        async move {
            routes
                .get(name)
                .await
                .ok()
                .and_then(|r| r.spec.hostnames)
                .unwrap_or_default()
        }
    };
    let serves = |name: &'static str, want: String| {
        let hostnames = &hostnames;
        async move {
            eventually(&format!("{name} to serve {want}"), TIMEOUT, || async {
                (hostnames(name).await == [want.clone()]).then_some(())
            })
            .await
        }
    };
    serves("docs-production", own.clone()).await;
    // Its preview is generated from its own key too.
    let preview = deployments
        .get("docs-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .url
        .unwrap();
    let key = own.split('.').next().unwrap();
    assert!(
        preview.starts_with(&format!("https://{key}--")),
        "{preview}"
    );

    // The older team replaces its Project (delete, then create): the name stays theirs.
    older
        .delete("docs", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the older Project to be gone", TIMEOUT, || async {
        older.get_opt("docs").await.ok()?.is_none().then_some(())
    })
    .await;
    create(&older, image_project("docs")).await;
    assert_eq!(hostname_of(older.clone()).await, "docs.clouddeck.localhost");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        hostname_of(younger.clone()).await,
        own,
        "the younger one stays where it is"
    );
    serves("docs-production", own.clone()).await;
    let claim = Api::<HostnameClaim>::all(client.clone())
        .get("docs.clouddeck.localhost")
        .await
        .expect("the claim on docs.clouddeck.localhost");
    assert_eq!(claim.spec.namespace, first.name);
    assert!(claim.spec.released_at.is_none());
}

/// User story: "I delete a Project and everything CloudDeck made for it goes away: its
/// Deployments, their workloads, Services and routes, and the production route."
#[tokio::test]
async fn deleting_the_project_removes_what_it_created() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-delete").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    create(&projects, image_project("gone")).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    create(
        &deployments,
        deployment("gone-1", "gone", "production", json!({ "image": IMAGE })),
    )
    .await;
    wait_phase(&deployments, "gone-1", DeploymentPhase::Ready).await;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    eventually("the production route", TIMEOUT, || async {
        routes.get("gone-production").await.ok()
    })
    .await;

    projects
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    let managed = ListParams::default().labels("clouddeck.io/project=gone");
    eventually(
        "everything of the Project to be garbage-collected",
        Duration::from_secs(120),
        || async {
            let left: BTreeMap<&str, usize> = BTreeMap::from([
                (
                    "deployments.clouddeck.io",
                    deployments
                        .list(&ListParams::default())
                        .await
                        .ok()?
                        .items
                        .len(),
                ),
                ("httproutes", routes.list(&managed).await.ok()?.items.len()),
                (
                    "deployments.apps",
                    Api::<Workload>::namespaced(client.clone(), &ns.name)
                        .list(&managed)
                        .await
                        .ok()?
                        .items
                        .len(),
                ),
                (
                    "services",
                    Api::<Service>::namespaced(client.clone(), &ns.name)
                        .list(&managed)
                        .await
                        .ok()?
                        .items
                        .len(),
                ),
            ]);
            left.values().all(|n| *n == 0).then_some(())
        },
    )
    .await;
}

/// User story: "The operator is killed in the middle of a build and comes back: the build
/// goes on, and there is still exactly one build Job for the Deployment."
#[tokio::test]
async fn an_operator_killed_mid_build_leaves_exactly_one_build_job() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-restart").await;
    let mut pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_git_project(&client, &ns.name).await;
    create(&deployments, git_deployment("web-1", "production", "main")).await;
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
    eventually("the build Job", TIMEOUT, || async {
        jobs.get("web-1-build").await.ok()
    })
    .await;
    pipeline.restart().await; // SIGKILL mid-build, then a new operator

    finish_build_pod(&client, &ns.name, "web-1-build", 0, &built()).await;
    let ready = wait_phase(&deployments, "web-1", DeploymentPhase::Ready).await;
    assert!(
        ready
            .status
            .unwrap()
            .image_digest
            .unwrap()
            .ends_with(DIGEST)
    );
    let all = jobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        all.len(),
        1,
        "one build Job, not {:?}",
        all.iter()
            .map(|j| j.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=web-1-build"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1, "one build pod");
}

/// User story: "I push twice in a row to production's branch: the older build, still
/// running, is superseded and its build stopped; the newer one ships."
#[tokio::test]
async fn a_newer_deployment_of_the_branch_supersedes_a_running_build() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-supersede").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let deployments = with_git_project(&client, &ns.name).await;
    create(
        &deployments,
        git_head_deployment("web-1", "production", "main"),
    )
    .await;
    wait_phase(&deployments, "web-1", DeploymentPhase::Queued).await;
    // Creation times have one-second resolution: make the second one clearly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create(
        &deployments,
        git_head_deployment("web-2", "production", "main"),
    )
    .await;

    let superseded = wait_phase(&deployments, "web-1", DeploymentPhase::Superseded).await;
    let ready = superseded
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "Superseded");
    assert!(ready.message.contains("web-2"), "{}", ready.message);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
    eventually(
        "the superseded build Job to be deleted",
        TIMEOUT,
        || async {
            jobs.get_opt("web-1-build")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    finish_build_pod(&client, &ns.name, "web-2-build", 0, &built()).await;
    wait_phase(&deployments, "web-2", DeploymentPhase::Ready).await;
}

/// User story: "Old production deployments beyond `keepWarm` cost nothing: they are scaled
/// to zero. Rolling back to one scales it up first, then moves production to it."
#[tokio::test]
async fn rollback_to_a_cold_deployment_scales_it_up_before_moving_production() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-cold").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    let mut project = image_project("cold");
    project["spec"]["keepWarm"] = json!(0);
    create(&projects, project).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let workloads = Api::<Workload>::namespaced(client.clone(), &ns.name);
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);

    create(
        &deployments,
        deployment("cold-1", "cold", "production", json!({ "image": IMAGE })),
    )
    .await;
    wait_phase(&deployments, "cold-1", DeploymentPhase::Ready).await;
    let second = IMAGE.replace("sha256:1111", "sha256:3333");
    create(
        &deployments,
        deployment("cold-2", "cold", "production", json!({ "image": second })),
    )
    .await;
    eventually("production on cold-2", TIMEOUT, || async {
        (route_backend(&routes, "cold-production").await.as_deref() == Some("cold-2")).then_some(())
    })
    .await;
    eventually("cold-1 scaled to zero on standby", TIMEOUT, || async {
        let w = workloads.get("cold-1").await.ok()?;
        let d = deployments.get("cold-1").await.ok()?;
        let ready = d
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (w.spec?.replicas == Some(0) && ready.reason == "Standby" && ready.status == "True")
            .then_some(())
    })
    .await;

    let rollback = json!({ "spec": { "rollbackTo": "cold-1" } });
    projects
        .patch("cold", &PatchParams::default(), &Patch::Merge(&rollback))
        .await
        .unwrap();
    eventually("production back on cold-1", TIMEOUT, || async {
        (route_backend(&routes, "cold-production").await.as_deref() == Some("cold-1")).then_some(())
    })
    .await;
    // Production moved only once cold-1 ran again.
    let w = workloads.get("cold-1").await.unwrap();
    assert_eq!(w.spec.unwrap().replicas, Some(1));
    assert!(w.status.unwrap().available_replicas.unwrap_or_default() >= 1);
    // And the one it left waits on standby in turn.
    eventually("cold-2 scaled to zero", TIMEOUT, || async {
        (workloads.get("cold-2").await.ok()?.spec?.replicas == Some(0)).then_some(())
    })
    .await;
}

/// User story: "Builds push to the platform's registry at `<registry>/<namespace>/<project>`.
/// Someone in another team points their Project's `spec.registry.repository` at my path in
/// that registry to overwrite my images or poison my build cache. Their Deployment is
/// Stalled naming the field, and no build runs."
#[tokio::test]
async fn a_repository_in_another_namespaces_path_of_the_platform_registry_is_refused() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-registry").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "pipeline")
        .args(["--build-pod-annotations", KWOK_HOLD])
        .args(["--default-registry", "registry.e2e.local/builds"])
        .start_leading()
        .await;
    let mut project = git_project("web");
    project["spec"]["registry"]["repository"] = json!("registry.e2e.local/builds/victim/web");
    create(
        &Api::<Project>::namespaced(client.clone(), &ns.name),
        project,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    create(&deployments, git_deployment("web-1", "preview", "main")).await;

    let stalled = eventually("the Deployment to stall", TIMEOUT, || async {
        let d = deployments.get("web-1").await.ok()?;
        d.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
    })
    .await;
    assert!(
        stalled.message.starts_with("spec.registry.repository:")
            && stalled
                .message
                .contains(&format!("registry.e2e.local/builds/{}/", ns.name)),
        "{}",
        stalled.message
    );
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "a build ran");
}

/// User story: "Flux and other kstatus-based tools tell a working Deployment from a
/// finished one and a failed one": the real kstatus library (sigs.k8s.io/cli-utils,
/// built by hack/cluster as `kstatus`) reads live objects as Current when Ready, Failed
/// when a build, a pull or a Project's production has failed for good, InProgress while
/// a rollout is under way. Before, a failure read as Current: healthy.
#[tokio::test]
async fn kstatus_reads_ready_failed_and_working_objects_right() {
    // Project names of their own: a namesake's hostname stays reserved for its namespace
    // a while after the test, and other tests here want `shop`'s.
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-kstatus").await;
    let _pipeline = Pipeline::start(&ns.name).await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    create(&projects, image_project("ks-web")).await;
    create(&projects, image_project("ks-lonely")).await;
    let mut greedy = image_project("ks-greedy");
    greedy["spec"]["runtime"] = json!({
        "progressDeadlineSeconds": 600,
        "resources": { "requests": { "cpu": "1000" } },
    });
    create(&projects, greedy).await;
    let unpullable = IMAGE.replace("registry.example/", "registry.invalid/");
    for (name, project, image) in [
        ("ks-web-1", "ks-web", IMAGE.to_owned()),
        ("ks-web-2", "ks-web", unpullable),
        ("ks-greedy-1", "ks-greedy", IMAGE.to_owned()),
    ] {
        let d = deployment(name, project, "production", json!({ "image": image }));
        create(&deployments, d).await;
    }
    wait_phase(&deployments, "ks-web-1", DeploymentPhase::Ready).await;
    wait_phase(&deployments, "ks-web-2", DeploymentPhase::Failed).await;
    wait_phase(&deployments, "ks-greedy-1", DeploymentPhase::Deploying).await;

    let want = [
        ("Project/ks-web", "Current"),
        ("Project/ks-lonely", "Failed"),
        ("Project/ks-greedy", "InProgress"),
        ("Deployment/ks-web-1", "Current"),
        ("Deployment/ks-web-2", "Failed"),
        ("Deployment/ks-greedy-1", "InProgress"),
    ];
    let read = eventually("kstatus to read every object as meant", TIMEOUT, || {
        let ns = ns.name.clone();
        async move {
            let objects = support::kubectl_ok(&[
                "get",
                "-n",
                &ns,
                "projects.clouddeck.io,deployments.clouddeck.io",
                "-o",
                "json",
            ]);
            let read = kstatus(&objects);
            want.iter()
                .all(|(object, status)| read.get(*object).map(|s| s.0.as_str()) == Some(status))
                .then_some(read)
        }
    })
    .await;
    let (_, message) = &read["Project/ks-lonely"];
    assert!(
        message.contains("no Ready production Deployment"),
        "{message}"
    );
}

/// What the kstatus library computes for each object of a `kubectl get -o json` List:
/// `Kind/name` → (status, message).
fn kstatus(objects: &str) -> std::collections::HashMap<String, (String, String)> {
    let out = support::run_with_stdin(
        &mut std::process::Command::new(support::cluster_dir().join("bin/kstatus")),
        objects.as_bytes(),
    );
    assert!(
        out.status.success(),
        "kstatus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let object = fields.next().unwrap_or_default().to_owned();
            let status = fields.next().unwrap_or_default().to_owned();
            let message = fields.next().unwrap_or_default().to_owned();
            (object, (status, message))
        })
        .collect()
}
