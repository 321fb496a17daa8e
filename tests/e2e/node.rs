//! The local cluster's real node (hack/lib/node.sh): a kubelet with containerd and runc,
//! next to the kwok node. What kwok only pretends, these tests see happen: a container's
//! own output, its exit code, an HTTP answer from inside a pod, a probe that is really
//! run, a user-namespaced pod (what rootless image builds need), images pulled from the
//! local registry, and a CloudDeck Project's image running there.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::{self, TestNamespace, eventually};

pub(crate) const REAL_NODE: &str = "clouddeck-node-0";
/// Built on this machine from Debian's busybox-static by hack/lib/node.sh and pushed to
/// the local registry, which containerd reaches under this name; nothing comes from
/// outside the machine.
pub(crate) const BUSYBOX: &str = "registry.clouddeck.local/busybox:local";
/// The same, with `USER 1000` in its config: what the restricted Pod Security Standard
/// asks of an image whose pods set `runAsNonRoot` and no user.
const BUSYBOX_NONROOT: &str = "registry.clouddeck.local/busybox:nonroot";

/// A pod for the real node: it tolerates the node's taint and selects it, and runs as
/// the restricted Pod Security Standard asks.
fn real_node_pod(name: &str, restart_policy: &str, containers: serde_json::Value) -> Pod {
    let mut containers = containers;
    for container in containers.as_array_mut().expect("containers is a list") {
        container["image"] = json!(BUSYBOX);
        // Always: every test pulls from the local registry, as a real cluster would.
        container["imagePullPolicy"] = json!("Always");
        container["securityContext"] = json!({
            "runAsUser": 1000, "runAsNonRoot": true, "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" }
        });
    }
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": { "clouddeck.io/node": "real" },
            "tolerations": [{ "key": "clouddeck.io/real-node", "operator": "Exists", "effect": "NoSchedule" }],
            "restartPolicy": restart_policy,
            // busybox's PID 1 ignores SIGTERM: do not wait 30 s for it on deletion.
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
        }
    }))
    .expect("a valid pod")
}

async fn wait_for_pod(pods: &Api<Pod>, name: &str, what: &str, done: fn(&Pod) -> bool) -> Pod {
    eventually(what, Duration::from_secs(60), || async {
        pods.get(name).await.ok().filter(done)
    })
    .await
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// User story: "`kubectl get nodes` shows a real node next to the kwok one, running
/// containerd, and it is tainted so that only pods that ask for it land there."
#[tokio::test]
async fn the_real_node_is_ready_and_tainted() {
    let node = Api::<Node>::all(support::client().await)
        .get(REAL_NODE)
        .await
        .expect("the real node is registered (hack/cluster up starts it)");
    let status = node.status.expect("node status");
    assert!(
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{REAL_NODE} is not Ready: {:?}",
        status.conditions
    );
    let runtime = status
        .node_info
        .expect("node info")
        .container_runtime_version;
    assert!(runtime.starts_with("containerd://2."), "runtime: {runtime}");
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "clouddeck.io/real-node" && t.effect == "NoSchedule"),
        "taints: {taints:?}"
    );
}

/// User story: "A pod on the real node runs its container: I read what it printed with
/// `kubectl logs`, run a command in it with `kubectl exec`, and it answers HTTP; its
/// readiness probe is really run."
#[tokio::test]
async fn a_container_runs_logs_execs_and_serves_http() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-node").await;
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    let pod = real_node_pod(
        "web",
        "Always",
        json!([{
            "name": "web",
            "command": ["/bin/sh", "-c",
                "echo \"hello from $(hostname) as $(id -u)\" > /tmp/index.html; echo serving; exec httpd -f -p 8080 -h /tmp"],
            "ports": [{ "containerPort": 8080 }],
            "readinessProbe": { "httpGet": { "path": "/index.html", "port": 8080 }, "periodSeconds": 1 }
        }]),
    );
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let pod = wait_for_pod(&pods, "web", "pod web to be Ready", ready).await;
    let status = pod.status.expect("status");
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(REAL_NODE)
    );

    let ip = status.pod_ip.expect("a pod IP from the node's bridge");
    let body = reqwest::get(format!("http://{ip}:8080/index.html"))
        .await
        .expect("the pod answers HTTP")
        .text()
        .await
        .expect("a body");
    // The hostname is the pod's name, the user the one its securityContext names: the
    // answer comes from inside the container.
    assert_eq!(body.trim(), "hello from web as 1000");

    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, "web"]);
    assert!(logs.contains("serving"), "logs: {logs:?}");
    let uid = support::kubectl_ok(&["exec", "-n", &ns.name, "web", "--", "id", "-u"]);
    assert_eq!(uid.trim(), "1000");
}

/// User story: "A container that fails shows its exit code and its last words", which a
/// failed build or cron run on a real cluster reports; kwok can only pretend it.
#[tokio::test]
async fn a_failing_container_reports_its_exit_code() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-node").await;
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    let pod = real_node_pod(
        "fails",
        "Never",
        json!([{ "name": "main", "command": ["/bin/sh", "-c", "echo about to fail; exit 3"] }]),
    );
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let pod = wait_for_pod(&pods, "fails", "pod fails to fail", |p| {
        phase(p) == "Failed"
    })
    .await;
    let terminated = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .expect("the container terminated");
    assert_eq!(terminated.exit_code, 3);
    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, "fails"]);
    assert_eq!(logs.trim(), "about to fail");
}

/// User story: "A pod with `hostUsers: false` runs in its own user namespace": root in
/// the container is not root on the node. Rootless image builds depend on it, and
/// Debian's runc 1.1 could not do it.
#[tokio::test]
async fn a_user_namespaced_pod_runs() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-node").await;
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    let mut pod = real_node_pod(
        "userns",
        "Never",
        json!([{ "name": "main", "command": ["/bin/cat", "/proc/self/uid_map"] }]),
    );
    pod.spec.as_mut().expect("spec").host_users = Some(false);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    wait_for_pod(&pods, "userns", "pod userns to succeed", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let map = support::kubectl_ok(&["logs", "-n", &ns.name, "userns"]);
    // One line: "<id inside> <id on the host> <count>". Without a user namespace it is
    // the identity map "0 0 4294967295".
    let fields: Vec<u64> = map
        .split_whitespace()
        .map(|f| f.parse().expect("uid_map numbers"))
        .collect();
    assert_eq!(fields.len(), 3, "uid_map: {map:?}");
    assert_eq!(fields[0], 0, "uid_map: {map:?}");
    assert!(
        fields[1] >= 65536 && fields[2] == 65536,
        "not a user namespace of its own: {map:?}"
    );
}

/// Annotations that send every pod of a namespace to the real node (the apiserver's
/// PodNodeSelector and PodTolerationRestriction admission plugins, enabled by
/// hack/cluster): CloudDeck's own pods land there without CloudDeck rendering anything
/// different from what it renders for users.
pub(crate) async fn pin_to_real_node(client: &kube::Client, namespace: &str) {
    let patch = json!({ "metadata": { "annotations": {
        "scheduler.alpha.kubernetes.io/node-selector": "clouddeck.io/node=real",
        "scheduler.alpha.kubernetes.io/defaultTolerations":
            r#"[{"key":"clouddeck.io/real-node","operator":"Exists","effect":"NoSchedule"}]"#,
    } } });
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            namespace,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("annotate the namespace");
}

fn deployment_phase(d: &clouddeck::api::Deployment) -> Option<clouddeck::api::DeploymentPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

/// User story: "I deploy an image from our registry and my app really runs: its
/// readiness probe passes, the Deployment goes Ready, and its pod answers HTTP with what
/// my command serves. An image the registry does not have fails the Deployment with the
/// kubelet's own pull error, and production stays where it was."
///
/// Everything between the Deployment and the answer is real: the operator's workload,
/// the scheduler, the kubelet, containerd pulling from the local registry, runc, the
/// probe.
#[tokio::test]
async fn a_projects_image_really_runs_and_a_missing_image_fails() {
    use clouddeck::api::{Deployment, DeploymentPhase, Project};
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-realapp").await;
    pin_to_real_node(&client, &ns.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "real-node")
        .start_leading()
        .await;

    support::create(
        &Api::<Project>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "hello" },
            "spec": {
                "image": BUSYBOX,
                "runtime": {
                    "port": 8080, "replicas": 1, "healthCheckPath": "/healthz",
                    "command": ["/bin/sh", "-c", SERVE]
                }
            }
        }),
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let deployment = |name: &str, image: &str| {
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "projectRef": { "name": "hello" }, "target": "production",
                      "source": { "image": image } }
        })
    };
    support::create(&deployments, deployment("hello-1", BUSYBOX)).await;
    eventually("hello-1 to be Ready", Duration::from_secs(90), || async {
        let d = deployments.get("hello-1").await.ok()?;
        (deployment_phase(&d) == Some(DeploymentPhase::Ready)).then_some(())
    })
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let pod = pods
        .list(&kube::api::ListParams::default().labels("clouddeck.io/deployment=hello-1"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .next()
        .expect("hello-1 has a pod");
    let name = pod.metadata.name.clone().expect("pod name");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(REAL_NODE)
    );
    let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
    let body = reqwest::get(format!("http://{ip}:8080/index.html"))
        .await
        .expect("the app answers")
        .text()
        .await
        .expect("a body");
    assert_eq!(body.trim(), format!("hello from {name}"));

    let missing = "registry.clouddeck.local/acme/missing:1";
    support::create(&deployments, deployment("hello-2", missing)).await;
    let failed = eventually("hello-2 to fail", Duration::from_secs(90), || async {
        let d = deployments.get("hello-2").await.ok()?;
        (deployment_phase(&d) == Some(DeploymentPhase::Failed)).then_some(d)
    })
    .await;
    let ready = failed
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ImagePullFailed")
    );
    assert!(ready.message.contains(missing), "{}", ready.message);
    let project = Api::<Project>::namespaced(client.clone(), &ns.name)
        .get("hello")
        .await
        .expect("project");
    assert_eq!(
        project
            .status
            .and_then(|s| s.production_deployment)
            .as_deref(),
        Some("hello-1"),
        "production stays where it was"
    );
}

/// What the Projects of these tests run (busybox httpd on $PORT, from /tmp): `/healthz`,
/// `/index.html` saying which pod answered, `/cgi-bin/call` that records each request in
/// /tmp/calls, and `/cgi-bin/fail` that answers 500. (busybox httpd passes a CGI's
/// answer on as it is when it starts with a status line.)
const SERVE: &str = r#"echo ok > /tmp/healthz; echo "hello from $(hostname)" > /tmp/index.html
mkdir -p /tmp/cgi-bin
printf '#!/bin/sh\necho "$REQUEST_METHOD $REQUEST_URI" >> /tmp/calls\nprintf "HTTP/1.1 200 OK\\r\\n\\r\\ncalled\\n"\n' > /tmp/cgi-bin/call
printf '#!/bin/sh\nprintf "HTTP/1.1 500 Internal Server Error\\r\\n\\r\\nfailed\\n"\n' > /tmp/cgi-bin/fail
chmod +x /tmp/cgi-bin/call /tmp/cgi-bin/fail
exec httpd -f -p "$PORT" -h /tmp"#;

/// A Project of `image` serving [`SERVE`] on $PORT, with production `<project>-1` Ready,
/// in a namespace pinned to the real node.
async fn real_project(client: &kube::Client, namespace: &str, project: &str, image: &str) {
    let deployment = format!("{project}-1");
    real_project_of(client, namespace, project, image, &deployment).await;
}

/// A busybox Project serving [`SERVE`], with production `deployment` Ready (its pods'
/// names, which `/index.html` answers with, start with `deployment`).
pub(crate) async fn real_project_named(
    client: &kube::Client,
    namespace: &str,
    project: &str,
    deployment: &str,
) {
    real_project_of(client, namespace, project, BUSYBOX, deployment).await;
}

/// A Deployment `name` of `project` running `image`, with `target` (production or
/// preview).
pub(crate) async fn image_deployment(
    client: &kube::Client,
    namespace: &str,
    project: &str,
    name: &str,
    target: &str,
    image: &str,
) {
    support::create(
        &Api::<clouddeck::api::Deployment>::namespaced(client.clone(), namespace),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "projectRef": { "name": project }, "target": target,
                      "source": { "image": image } }
        }),
    )
    .await;
}

async fn real_project_of(
    client: &kube::Client,
    namespace: &str,
    project: &str,
    image: &str,
    deployment: &str,
) {
    use clouddeck::api::Project;
    support::create(
        &Api::<Project>::namespaced(client.clone(), namespace),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": project },
            "spec": {
                "image": image,
                "runtime": {
                    "port": 8080, "replicas": 1, "healthCheckPath": "/healthz",
                    "command": ["/bin/sh", "-c", SERVE]
                }
            }
        }),
    )
    .await;
    image_deployment(client, namespace, project, deployment, "production", image).await;
    let projects = Api::<Project>::namespaced(client.clone(), namespace);
    eventually(
        &format!("{deployment} in production"),
        Duration::from_secs(90),
        || async {
            let status = projects.get(project).await.ok()?.status?;
            (status.production_deployment.as_deref() == Some(deployment)).then_some(())
        },
    )
    .await;
}

/// User story: "My CronJob's command runs in my production image, with my app's
/// environment; when it fails I get a Warning Event on my CronJob, and the command
/// `kubectl logs job/...` it names shows what my command printed."
///
/// On kwok a failed run is simulated; here the command really runs in the image, as the
/// image's own (non-root) user, under the restricted Pod Security Standard.
#[tokio::test]
async fn a_cron_command_really_runs_and_its_failure_names_its_output() {
    use clouddeck::api::CronJob;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-realcron").await;
    pin_to_real_node(&client, &ns.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "real-cron")
        .start_leading()
        .await;
    real_project(&client, &ns.name, "cron", BUSYBOX_NONROOT).await;

    // Never due during the test: midnight on January 1st. The run is started by hand.
    support::create(
        &Api::<CronJob>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
            "metadata": { "name": "nightly" },
            "spec": {
                "projectRef": { "name": "cron" },
                "schedule": "0 0 1 1 *",
                "timeoutSeconds": 60,
                "command": ["/bin/sh", "-c", "echo \"nightly as $(id -u) with PORT=$PORT\"; exit 4"]
            }
        }),
    )
    .await;
    run_now(&client, &ns.name, "nightly").await;

    let warning = cron_event(&client, &ns.name, "JobFailed", "nightly").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.message.unwrap_or_default();
    let command = format!("kubectl logs -n {} job/nightly-by-hand", ns.name);
    assert!(note.contains(&command), "{note}");

    // What the Event tells the user to run shows the command's own output.
    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, "job/nightly-by-hand"]);
    assert_eq!(logs.trim(), "nightly as 1000 with PORT=8080");
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&kube::api::ListParams::default().labels("job-name=nightly-by-hand"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .next()
        .expect("the run's pod is kept");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(REAL_NODE)
    );
    let exit_code = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .map(|t| t.exit_code);
    assert_eq!(exit_code, Some(4));
}

/// The first Event `reason` on CronJob `name`, waited for up to 90 s.
async fn cron_event(
    client: &kube::Client,
    namespace: &str,
    reason: &str,
    name: &str,
) -> k8s_openapi::api::core::v1::Event {
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), namespace);
    eventually(
        &format!("a {reason} Event on CronJob {name}"),
        Duration::from_secs(90),
        || async {
            events
                .list(&kube::api::ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
        },
    )
    .await
}

/// The image of CronJob `http` runs: Debian's curl, assembled by hack/lib/node.sh.
const CURL: &str = "registry.clouddeck.local/curl:local";

/// Starts the run of batch CronJob `name` now (`kubectl create job --from`), once the
/// operator has made it; returns the Job's name.
async fn run_now(client: &kube::Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::batch::v1::CronJob as BatchCronJob;
    let batch = Api::<BatchCronJob>::namespaced(client.clone(), namespace);
    eventually(
        &format!("the batch CronJob {name}"),
        Duration::from_secs(45),
        || async { batch.get(name).await.ok() },
    )
    .await;
    let job = format!("{name}-by-hand");
    support::kubectl_ok(&[
        "create",
        "job",
        "-n",
        namespace,
        &format!("--from=cronjob/{name}"),
        &job,
    ]);
    job
}

/// User story: "My CronJob calls /cgi-bin/call of my production deployment
/// every night; the request really reaches my app over the cluster's Service. When my
/// endpoint answers 500, the run fails: I get a Warning Event and a `cronjob.failed`
/// webhook."
///
/// The run is curl in its own pod on the real node, resolving the production Service's
/// name through CoreDNS and reaching the pod through kube-proxy.
#[tokio::test]
async fn a_cron_http_call_really_reaches_production_and_a_500_fails_the_run() {
    use clouddeck::api::CronJob;
    use clouddeck::api::webhook_delivery::WebhookDelivery;
    use k8s_openapi::api::batch::v1::Job;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-realhttp").await;
    pin_to_real_node(&client, &ns.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "real-http")
        .args(["--http-call-image", CURL])
        .start_leading()
        .await;
    real_project(&client, &ns.name, "api", BUSYBOX_NONROOT).await;
    support::recording_webhook(&client, &ns.name, "cron-events", &["cronjob.failed"]).await;

    let cron_jobs = Api::<CronJob>::namespaced(client.clone(), &ns.name);
    for (name, path) in [("nightly", "/cgi-bin/call"), ("broken", "/cgi-bin/fail")] {
        support::create(
            &cron_jobs,
            json!({
                "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
                "metadata": { "name": name },
                "spec": {
                    "projectRef": { "name": "api" },
                    // Never due during the test: each run is started by hand.
                    "schedule": "0 0 1 1 *",
                    "timeoutSeconds": 30,
                    "http": { "path": path, "method": "GET" }
                }
            }),
        )
        .await;
    }

    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
    let finished = |job: Job| {
        let status = job.status?;
        (status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0) > 0).then_some(status)
    };
    let nightly = run_now(&client, &ns.name, "nightly").await;
    let status = eventually(
        "the nightly run to finish",
        Duration::from_secs(90),
        || async { jobs.get(&nightly).await.ok().and_then(finished) },
    )
    .await;
    assert_eq!(status.succeeded, Some(1), "{status:?}");
    let calls = support::kubectl_ok(&[
        "exec",
        "-n",
        &ns.name,
        "deployment.apps/api-1",
        "--",
        "cat",
        "/tmp/calls",
    ]);
    assert_eq!(
        calls.trim(),
        "GET /cgi-bin/call",
        "what production received"
    );

    let broken = run_now(&client, &ns.name, "broken").await;
    let warning = cron_event(&client, &ns.name, "JobFailed", "broken").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    // curl's own words, through what the Event tells the user to run.
    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, &format!("job/{broken}")]);
    assert!(logs.contains("500"), "the run's output: {logs}");
    let log = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    eventually(
        "a cronjob.failed delivery",
        Duration::from_secs(30),
        || async {
            log.list(&kube::api::ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|d| d.spec.event_type == "cronjob.failed")
        },
    )
    .await;
}

/// User story: "My pods reach each other by Service name, as on any cluster": CoreDNS
/// answers `<service>.<namespace>.svc.cluster.local` with the ClusterIP, kube-proxy
/// carries a pod's request to that ClusterIP to a ready pod behind it, and a name outside
/// the cluster gets no answer (nothing is looked up off the machine).
#[tokio::test]
async fn pods_reach_a_service_by_name() {
    use k8s_openapi::api::core::v1::Service;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-svc").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let mut web = real_node_pod(
        "web",
        "Always",
        json!([{
            "name": "web",
            "command": ["/bin/sh", "-c",
                "echo \"hello from $(hostname)\" > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"],
            "ports": [{ "containerPort": 8080 }],
            "readinessProbe": { "httpGet": { "path": "/index.html", "port": 8080 }, "periodSeconds": 1 }
        }]),
    );
    web.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    pods.create(&PostParams::default(), &web)
        .await
        .expect("create pod web");
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .unwrap();
    let service = Api::<Service>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    wait_for_pod(&pods, "web", "pod web to be Ready", ready).await;

    let name = format!("web.{}.svc.cluster.local", ns.name);
    // nc, not wget: Debian's static busybox wget crashes looking up the "http" service
    // (static glibc cannot load its NSS modules).
    let script = format!(
        "nslookup {name}; echo ---; \
         printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 80 | tail -n 1; echo ---; \
         nslookup -timeout=2 example.com && echo example.com resolved; true"
    );
    let client_pod = real_node_pod(
        "client",
        "Never",
        json!([{ "name": "client", "command": ["/bin/sh", "-c", script] }]),
    );
    pods.create(&PostParams::default(), &client_pod)
        .await
        .expect("create pod client");
    wait_for_pod(&pods, "client", "pod client to finish", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, "client"]);
    let parts: Vec<&str> = logs.split("---\n").collect();
    assert_eq!(parts.len(), 3, "logs: {logs}");
    assert!(
        parts[0].contains(&format!("Address: {cluster_ip}")),
        "{name} should resolve to {cluster_ip}: {logs}"
    );
    assert_eq!(parts[1].trim(), "hello from web", "logs: {logs}");
    assert!(!parts[2].contains("example.com resolved"), "logs: {logs}");

    // The ClusterIP from the node itself, as a node-local agent would reach it.
    let body = reqwest::get(format!("http://{cluster_ip}/index.html"))
        .await
        .expect("the ClusterIP answers on the node")
        .text()
        .await
        .expect("a body");
    assert_eq!(body.trim(), "hello from web");
}

/// The operator's image, assembled from the release binary (`cargo build --release`,
/// which `make test` runs first) and pushed to the local registry by
/// `hack/cluster operator-image`: `registry.clouddeck.local/clouddeck:e2e@sha256:…`.
fn operator_image() -> String {
    let root = support::repo_root();
    let binary = root.join("target/release/clouddeck");
    let out = std::process::Command::new(root.join("hack/cluster"))
        .args(["operator-image", binary.to_str().unwrap()])
        .arg("registry.clouddeck.local/clouddeck:e2e")
        .output()
        .expect("run hack/cluster operator-image");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hack/cluster operator-image failed (is target/release/clouddeck built?): {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_owned()
}

/// User story: "I `helm install` the chart with our operator image into a namespace that
/// enforces the restricted Pod Security Standard: two replicas really run it, Ready; one
/// of them holds the leader Lease; Prometheus inside the cluster scrapes `/metrics`."
///
/// The image is the release binary, non-root, on a minimal base; the pods reach the
/// apiserver through the `kubernetes` Service, as in any cluster.
#[tokio::test]
async fn the_chart_runs_the_operator_image_on_the_real_node() {
    use crate::chart::{Release, label_restricted};
    let _shared = support::SHARED_API.read().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-image").await;
    pin_to_real_node(&client, &ns.name).await;
    label_restricted(&ns.name);
    // Two operators that watch the whole cluster: no other test's operator at the same time.
    let _serial = support::one_operator_test_at_a_time().await;
    let image = operator_image();
    let (repository, tag) = image
        .split_once(':')
        .expect("the image reference has a tag");
    let digest = image.rsplit_once('@').expect("a digest").1.to_owned();
    let release = Release::install(
        &ns.name,
        &[
            "--wait",
            "--timeout",
            "180s",
            "--set",
            "rbac.deliveryPolicy=false",
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            &format!("image.tag={tag}"),
        ],
    );

    let pods = support::kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &ns.name,
        "-l",
        &format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=operator",
            ns.name
        ),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].imageID}{\"\\n\"}{end}",
    ]);
    let pods: Vec<Vec<&str>> = pods.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    for pod in &pods {
        assert_eq!(pod[1..3], [REAL_NODE, "True"], "{pods:?}");
        assert!(pod[3].ends_with(&digest), "runs {}, not {digest}", pod[3]);
    }
    let events = support::kubectl_ok(&["get", "events", "-n", &ns.name]);
    assert!(!events.contains("violates PodSecurity"), "{events}");

    // One replica leads: the Lease names one of the two pods.
    let holder = eventually("a leader", Duration::from_secs(60), || async {
        let holder = support::kubectl_ok(&[
            "get",
            "lease",
            "clouddeck-leader",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        (!holder.is_empty()).then_some(holder)
    })
    .await;
    assert!(
        pods.iter().any(|pod| pod[0] == holder),
        "the Lease is held by {holder}, not by a pod of the release: {pods:?}"
    );

    // /metrics, scraped from a pod through the metrics Service, as Prometheus would.
    let service = format!("{}-metrics", release.fullname());
    let cluster_ip = support::kubectl_ok(&[
        "get",
        "service",
        &service,
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    // And the deny responder (the same image, `clouddeck responder`), as a gateway sends
    // it the requests of a `deny` rule: it answers with the status the rule names.
    let responder_ip = support::kubectl_ok(&[
        "get",
        "service",
        &format!("{}-responder", release.fullname()),
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    // Up to five tries a second apart: a Service just made may not be in every node's
    // rules yet (a run of the full suite once scraped nothing at the first try).
    let scrape = format!(
        "for try in 1 2 3 4 5; do \
           n=$(printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 8080 | grep -c '^clouddeck_'); \
           [ \"$n\" -gt 0 ] && break; sleep 1; \
         done; echo \"$n\"; \
         for try in 1 2 3 4 5; do \
           line=$(printf 'GET /admin HTTP/1.0\\r\\nX-Clouddeck-Deny-Status: 451\\r\\n\\r\\n' | nc -w 5 {responder_ip} 80 | head -1); \
           [ -n \"$line\" ] && break; sleep 1; \
         done; echo \"$line\""
    );
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let mut scraper = real_node_pod(
        "scraper",
        "Never",
        json!([{ "name": "scraper", "command": ["/bin/sh", "-c", scrape] }]),
    );
    // The namespace enforces `restricted`, which wants a non-root image user as well.
    scraper.spec.as_mut().unwrap().containers[0].image = Some(BUSYBOX_NONROOT.to_owned());
    pods_api
        .create(&PostParams::default(), &scraper)
        .await
        .expect("create pod scraper");
    wait_for_pod(&pods_api, "scraper", "the scraper to finish", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, "scraper"]);
    let mut lines = logs.lines();
    let series: u32 = lines.next().unwrap_or_default().trim().parse().unwrap_or(0);
    assert!(series > 0, "no clouddeck_ series from /metrics: {logs:?}");
    let denied = lines.next().unwrap_or_default();
    assert!(
        denied.starts_with("HTTP/1.") && denied.contains(" 451 "),
        "the responder answered {denied:?}, not 451: {logs:?}"
    );
}

/// User story: "A run whose container cannot start (here: the platform's curl image is
/// missing from the registry) is reported as soon as the kubelet says so, not when the
/// run's timeout passes ten minutes later."
#[tokio::test]
async fn a_cron_run_that_cannot_start_is_reported_at_once() {
    use clouddeck::api::CronJob;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-blocked").await;
    pin_to_real_node(&client, &ns.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "blocked")
        .args(["--http-call-image", "registry.clouddeck.local/curl:missing"])
        .start_leading()
        .await;
    real_project(&client, &ns.name, "api", BUSYBOX_NONROOT).await;
    support::create(
        &Api::<CronJob>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
            "metadata": { "name": "nightly" },
            "spec": {
                "projectRef": { "name": "api" },
                "schedule": "0 0 1 1 *",
                "timeoutSeconds": 600,
                "http": { "path": "/index.html", "method": "GET" }
            }
        }),
    )
    .await;
    let job = run_now(&client, &ns.name, "nightly").await;

    let blocked = cron_event(&client, &ns.name, "RunBlocked", "nightly").await;
    assert_eq!(blocked.type_.as_deref(), Some("Warning"));
    let note = blocked.message.unwrap_or_default();
    assert!(
        note.starts_with(&format!("run {job} cannot start: ")) && note.contains("curl:missing"),
        "{note}"
    );
    assert!(note.contains("timeout (600s)"), "{note}");
}
