//! Build Jobs on the real node, from a real git host: the local git server that
//! `hack/cluster up` runs on the node's address (hack/gitserver, git's own
//! `http-backend`), and the clone image assembled from Debian's git. A test pushes a
//! repository over HTTP as a developer would; CloudDeck's build Job clones it.
//!
//! The builder is rootless BuildKit (`registry.clouddeck.local/buildkit:local`, assembled
//! by hack/lib/node.sh from rootlesskit, buildkitd and buildctl built from their Go
//! modules): a Dockerfile build really runs, pushes to the local registry, and the pods
//! of the Deployment run the digest it reported.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clouddeck::api::{Deployment, Project};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::support::{self, TestNamespace, eventually};

/// The local git server (hack/lib/node.sh: GIT_ADDRESS).
const GIT_HOST: &str = "http://10.213.0.1:8418";
const GIT_IMAGE: &str = "registry.clouddeck.local/git:local";
const BUILDKIT_IMAGE: &str = "registry.clouddeck.local/buildkit:local";
/// Not in the local registry: the build step cannot start, so only the clone runs.
const MISSING_BUILDER: &str = "registry.clouddeck.local/buildkit:not-assembled";
/// The local registry as build pods reach it (they have no name for it): builds push
/// there, and the node pulls from there.
const REGISTRY: &str = "10.213.0.1:5000";

/// Where tests push `name` of `namespace` on the local git server.
pub(crate) fn repository_url(namespace: &str, name: &str) -> String {
    format!("{GIT_HOST}/{namespace}/{name}.git")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.test"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn build_pod(client: &kube::Client, namespace: &str, deployment: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("{deployment}-build")))
        })
}

/// User story: "I push my repository to our git host and create a Deployment of its
/// `main` branch: CloudDeck's build clones exactly the commit I pushed. A Deployment of a
/// branch that does not exist fails, and says how to read the clone's error."
#[tokio::test]
async fn a_build_clones_the_pushed_commit_and_a_missing_branch_fails_it() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-clone").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let url = repository_url(&ns.name, "web");
    let commit = Repo::new().push(
        &url,
        "main",
        &[(
            "Dockerfile",
            "FROM registry.clouddeck.local/busybox:nonroot\nCOPY index.html /srv/\n",
        )],
    );

    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "clone")
        .args([
            "--git-image",
            GIT_IMAGE,
            "--buildkit-image",
            MISSING_BUILDER,
        ])
        .start_leading()
        .await;
    git_project(&client, &ns.name, "web", &url, json!({})).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    for (name, branch) in [("web-main", "main"), ("web-nope", "nope")] {
        support::create(
            &deployments,
            json!({
                "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                "metadata": { "name": name },
                "spec": { "projectRef": { "name": "web" }, "target": "preview",
                          "source": { "git": { "branch": branch } } }
            }),
        )
        .await;
    }

    // The clone step ran in the build pod, and checked out what was pushed.
    let pod = eventually(
        "web-main's clone to finish",
        Duration::from_secs(90),
        || async {
            let pod = build_pod(&client, &ns.name, "web-main").await?;
            let clone = pod
                .status
                .clone()?
                .init_container_statuses?
                .into_iter()
                .next()?;
            clone
                .state?
                .terminated
                .map(|t| (pod.metadata.name.clone().unwrap(), t))
        },
    )
    .await;
    let (pod, clone) = pod;
    assert_eq!(clone.exit_code, 0, "{clone:?}");
    let logs = support::kubectl_ok(&["logs", "-n", &ns.name, &pod, "-c", "clone"]);
    assert_eq!(logs.trim(), format!("cloned main at {commit}"));

    // A branch the repository lacks: the Deployment fails, naming the clone's logs.
    let failed = eventually("web-nope to fail", Duration::from_secs(90), || async {
        let status = deployments.get("web-nope").await.ok()?.status?;
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")?
            .clone();
        Some(stalled)
    })
    .await;
    assert_eq!(failed.reason, "SourceNotFound", "{failed:?}");
    let command = failed
        .message
        .split("logs: ")
        .nth(1)
        .expect("the message names the clone's logs")
        .to_owned();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let logs = support::kubectl_ok(&args);
    assert!(
        logs.contains("couldn't find remote ref refs/heads/nope"),
        "what `{command}` shows: {logs}"
    );
}

/// A git working copy in a temporary directory, with its own commits.
pub(crate) struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub(crate) fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        Repo { dir }
    }

    /// Writes `files` on `branch` (created from the current commit if new), commits them
    /// and pushes the branch to `url`; returns the commit.
    pub(crate) fn push(&self, url: &str, branch: &str, files: &[(&str, &str)]) -> String {
        let dir = self.dir.path();
        git(dir, &["checkout", "-q", "-B", branch]);
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", &format!("change on {branch}")]);
        git(dir, &["push", "-q", url, branch]);
        git(dir, &["rev-parse", "HEAD"])
    }
}

/// An app that answers `/commit` with the commit it was built from (the build argument
/// CloudDeck passes), from the local busybox image.
pub(crate) const APP_DOCKERFILE: &str = r#"FROM registry.clouddeck.local/busybox:nonroot
ARG CLOUDDECK_GIT_COMMIT
USER 0:0
RUN mkdir /srv && echo "$CLOUDDECK_GIT_COMMIT" > /srv/commit && echo ok > /srv/healthz
USER 1000:1000
CMD ["/bin/sh", "-c", "exec httpd -f -p \"$PORT\" -h /srv"]
"#;

pub(crate) async fn start_builder_operator(namespace: &str, lease: &str) -> support::Operator {
    support::Operator::builder(namespace, lease)
        .args(["--git-image", GIT_IMAGE, "--buildkit-image", BUILDKIT_IMAGE])
        .start_leading()
        .await
}

/// A Project `name` building `url` with the dockerfile strategy, pushing to the local
/// registry under the namespace's path.
pub(crate) async fn git_project(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    url: &str,
    build: serde_json::Value,
) {
    support::create(
        &Api::<Project>::namespaced(client.clone(), namespace),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": name },
            "spec": {
                "git": { "url": url, "branch": "main" },
                "registry": { "repository": format!("{REGISTRY}/{namespace}/{name}") },
                "build": build,
                "runtime": { "port": 8080, "replicas": 1, "healthCheckPath": "/healthz" }
            }
        }),
    )
    .await;
}

pub(crate) async fn git_deployment(
    client: &kube::Client,
    namespace: &str,
    project: &str,
    name: &str,
    branch: &str,
    commit: Option<&str>,
) {
    let mut git = json!({ "branch": branch });
    if let Some(commit) = commit {
        git["commit"] = json!(commit);
    }
    support::create(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "projectRef": { "name": project }, "target": "production",
                      "source": { "git": git } }
        }),
    )
    .await;
}

pub(crate) async fn production_is(
    client: &kube::Client,
    namespace: &str,
    project: &str,
    deployment: &str,
) {
    let projects = Api::<Project>::namespaced(client.clone(), namespace);
    eventually(
        &format!("{deployment} in production"),
        Duration::from_secs(180),
        || async {
            let status = projects.get(project).await.ok()?.status?;
            (status.production_deployment.as_deref() == Some(deployment)).then_some(())
        },
    )
    .await;
}

/// What production answers at `path`: the Service the Project's production HTTPRoute
/// sends traffic to (what a gateway would do; there is none on the local cluster yet),
/// asked from the node at its ClusterIP.
async fn production_answer(namespace: &str, project: &str, path: &str) -> String {
    let route = clouddeck::routing::production_route_name(project);
    let backend = support::kubectl_ok(&[
        "get",
        "httproutes.gateway.networking.k8s.io",
        &route,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.rules[0].backendRefs[0].name}",
    ]);
    service_answer(namespace, &backend, path).await
}

async fn service_answer(namespace: &str, service: &str, path: &str) -> String {
    let ip = support::kubectl_ok(&[
        "get",
        "service",
        service,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    // kube-proxy programs a new Service within a second or so of its endpoints.
    let url = format!("http://{ip}{path}");
    eventually(
        &format!("{service} to answer at {url}"),
        Duration::from_secs(30),
        || async {
            let response = reqwest::get(&url).await.ok()?.error_for_status().ok()?;
            Some(response.text().await.ok()?.trim().to_owned())
        },
    )
    .await
}

/// User story: "I push my app (a Dockerfile) and deploy `main`: CloudDeck builds it in the
/// cluster, pushes the image to our registry, and my pods run exactly the image it built;
/// my app answers with the commit I pushed. I push a second commit and deploy it:
/// production answers with the new commit. I roll back: production answers with the old
/// one again, without a rebuild."
#[tokio::test]
async fn a_git_push_is_built_run_promoted_and_rolled_back() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-build").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let url = repository_url(&ns.name, "web");
    let repo = Repo::new();
    let first = repo.push(
        &url,
        "main",
        &[("Dockerfile", APP_DOCKERFILE), ("version", "1")],
    );

    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = start_builder_operator(&ns.name, "build").await;
    git_project(&client, &ns.name, "web", &url, json!({ "cache": false })).await;
    git_deployment(&client, &ns.name, "web", "web-1", "main", Some(&first)).await;
    production_is(&client, &ns.name, "web", "web-1").await;

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let status = deployments.get("web-1").await.unwrap().status.unwrap();
    assert_eq!(status.commit.as_deref(), Some(first.as_str()));
    // The image the build pushed, by digest: <repository>@sha256:….
    let image = status.image_digest.expect("the built image");
    assert!(
        image.starts_with(&format!("{REGISTRY}/{}/web@sha256:", ns.name)),
        "{image}"
    );
    let pods = support::kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &ns.name,
        "-l",
        "clouddeck.io/deployment=web-1,app.kubernetes.io/component=app",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.containerStatuses[0].imageID}{\"\\n\"}{end}",
    ]);
    assert!(!pods.is_empty(), "no pods of web-1");
    for pod in pods.lines() {
        assert_eq!(
            pod,
            format!("{} {image}", crate::node::REAL_NODE),
            "a pod of web-1 runs what the build pushed"
        );
    }
    assert_eq!(production_answer(&ns.name, "web", "/commit").await, first);

    let second = repo.push(&url, "main", &[("version", "2")]);
    git_deployment(&client, &ns.name, "web", "web-2", "main", None).await;
    production_is(&client, &ns.name, "web", "web-2").await;
    let status = deployments.get("web-2").await.unwrap().status.unwrap();
    assert_eq!(
        status.commit.as_deref(),
        Some(second.as_str()),
        "the head of main was built"
    );
    assert_eq!(production_answer(&ns.name, "web", "/commit").await, second);

    support::kubectl_ok(&[
        "patch",
        "projects.clouddeck.io",
        "web",
        "-n",
        &ns.name,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"rollbackTo":"web-1"}}"#,
    ]);
    production_is(&client, &ns.name, "web", "web-1").await;
    let answer = eventually(
        "production to answer with the first commit",
        Duration::from_secs(30),
        || async {
            let answer = production_answer(&ns.name, "web", "/commit").await;
            (answer == first).then_some(answer)
        },
    )
    .await;
    assert_eq!(answer, first);
}

/// User story: "A build whose Dockerfile fails fails my Deployment, and the command the
/// Deployment's status gives me shows the build's own output. A build that runs past the
/// Project's build timeout is stopped, and the Deployment says so."
#[tokio::test]
async fn a_failing_build_shows_its_log_and_a_slow_one_is_stopped() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-badbuild").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let url = repository_url(&ns.name, "web");
    let repo = Repo::new();
    repo.push(
        &url,
        "main",
        &[(
            "Dockerfile",
            "FROM registry.clouddeck.local/busybox:nonroot\nRUN echo the tests are red && exit 3\n",
        )],
    );
    let slow_url = format!("{GIT_HOST}/{}/slow.git", ns.name);
    Repo::new().push(
        &slow_url,
        "main",
        &[(
            "Dockerfile",
            "FROM registry.clouddeck.local/busybox:nonroot\nRUN sleep 600\n",
        )],
    );

    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = start_builder_operator(&ns.name, "bad-build").await;
    git_project(&client, &ns.name, "web", &url, json!({ "cache": false })).await;
    git_project(
        &client,
        &ns.name,
        "slow",
        &slow_url,
        json!({ "cache": false, "timeout": "20s" }),
    )
    .await;
    git_deployment(&client, &ns.name, "web", "web-1", "main", None).await;
    git_deployment(&client, &ns.name, "slow", "slow-1", "main", None).await;

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let stalled = |name: &'static str| {
        let deployments = deployments.clone();
        async move {
            eventually(
                &format!("{name} to fail"),
                Duration::from_secs(180),
                || async {
                    let status = deployments.get(name).await.ok()?.status?;
                    status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Stalled" && c.status == "True")
                        .cloned()
                },
            )
            .await
        }
    };
    let failed = stalled("web-1").await;
    assert_eq!(failed.reason, "BuildFailed", "{failed:?}");
    let command = failed
        .message
        .split("logs: ")
        .nth(1)
        .expect("the message names the build's logs")
        .to_owned();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let logs = support::kubectl_ok(&args);
    assert!(
        logs.contains("the tests are red") && logs.contains("exit code: 3"),
        "what `{command}` shows: {logs}"
    );

    let stopped = stalled("slow-1").await;
    assert_eq!(stopped.reason, "BuildTimedOut", "{stopped:?}");
    assert!(stopped.message.contains("20s"), "{}", stopped.message);
}
