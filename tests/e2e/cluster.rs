//! The local control plane itself: what every other e2e test stands on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};

use crate::operator::run_to_failure;
use crate::support::{self, TestNamespace, eventually};

fn condition_true(conditions: Option<&Vec<k8s_openapi::api::core::v1::NodeCondition>>) -> bool {
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// User story: "I run `hack/cluster up` and `kubectl get nodes` shows a Ready node."
#[tokio::test]
async fn the_kwok_node_is_ready() {
    let client = support::client().await;
    let node = Api::<Node>::all(client)
        .get("kwok-node-0")
        .await
        .expect("kwok node exists");
    let status = node.status.expect("node has status");
    assert!(
        condition_true(status.conditions.as_ref()),
        "kwok-node-0 is not Ready: {status:?}"
    );
    assert!(support::kubectl_ok(&["get", "nodes"]).contains("Ready"));
}

/// User story: "A plain apps/v1 Deployment gets a Pod that is scheduled and becomes Ready",
/// proving apiserver, controller-manager, scheduler and kwok all work together.
#[tokio::test]
async fn a_plain_deployment_gets_a_ready_pod() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-cluster").await;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "hello" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "hello" } },
            "template": {
                "metadata": { "labels": { "app": "hello" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.example/hello:1" }] }
            }
        }
    }))
    .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");

    eventually(
        "the Deployment to report 1 ready replica",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("hello").await.ok()?;
                (d.status?.ready_replicas? == 1).then_some(())
            }
        },
    )
    .await;

    let pods = Api::<Pod>::namespaced(client, &ns.name)
        .list(&ListParams::default().labels("app=hello"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);
    let pod = &pods.items[0];
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("kwok-node-0")
    );
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
}

/// Process ids whose command line mentions `needle`: how we find anything a cluster left.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) && !cmdline.contains("cargo") {
                found.push(pid);
            }
        }
    }
    found
}

struct DownOnDrop(std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = hack_cluster(&self.0, "down");
        }
    }
}

fn hack_cluster(state_dir: &Path, command: &str) -> std::process::Output {
    // A second cluster beside the shared one: its own state directory and ports, and no
    // real node (one machine holds one: kubelets share directories outside their root).
    Command::new(support::repo_root().join("hack/cluster"))
        .arg(command)
        .env("CLOUDDECK_CLUSTER_DIR", state_dir)
        .env("CLOUDDECK_REAL_NODE", "0")
        .env("CLOUDDECK_APISERVER_PORT", "26443")
        .env("CLOUDDECK_ETCD_PORT", "22379")
        .env("CLOUDDECK_CONTROLLER_MANAGER_PORT", "30257")
        .env("CLOUDDECK_SCHEDULER_PORT", "30259")
        .env("CLOUDDECK_KWOK_PORT", "30247")
        .output()
        .expect("run hack/cluster")
}

fn assert_ok(output: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// The pid `hack/cluster` recorded for `component` (its pid file: the pid, then the
/// binary it started).
fn recorded_pid(state_dir: &Path, component: &str) -> u32 {
    std::fs::read_to_string(state_dir.join("pids").join(format!("{component}.pid")))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("a pid")
        .parse()
        .unwrap()
}

/// User story: "`hack/cluster up` twice, `down` twice, and `up` after a killed run all
/// behave, and `down` leaves no process of the control plane behind."
#[test]
fn up_and_down_are_idempotent_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster");
    let needle = state.to_str().unwrap().to_owned();
    // Should an assertion fail half-way, its control plane must not outlive the test (it
    // would hold this test's ports for the next run).
    let _down = DownOnDrop(state.clone());

    assert_ok(&hack_cluster(&state, "up"), "first up");
    let apiserver = recorded_pid(&state, "kube-apiserver");
    assert!(Path::new(&format!("/proc/{apiserver}")).exists());

    // User story: "I start the operator before installing the CRDs and it tells me the
    // exact command to run." This fresh cluster has no CloudDeck CRDs.
    let kubeconfig = state.join("kubeconfig");
    let (status, stderr) = run_to_failure(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(!status.success());
    let first_crd = clouddeck::api::crds().remove(0).metadata.name.unwrap();
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: CRD {first_crd} is not installed; run: kubectl apply --server-side -f crds/"
        )
    );

    let second = assert_ok(&hack_cluster(&state, "up"), "second up");
    assert!(
        second.contains("already up"),
        "second up should keep the running cluster:\n{second}"
    );
    assert_eq!(
        recorded_pid(&state, "kube-apiserver"),
        apiserver,
        "second up restarted the apiserver"
    );

    // A run that was killed: the apiserver dies, everything else is left running.
    Command::new("kill")
        .args(["-KILL", &apiserver.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let status = hack_cluster(&state, "status");
    assert!(
        !status.status.success(),
        "status should report the dead apiserver"
    );
    let third = assert_ok(&hack_cluster(&state, "up"), "up after a killed run");
    assert!(third.contains("cleaning up an earlier run"), "{third}");
    let status = hack_cluster(&state, "status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    assert_ok(&hack_cluster(&state, "down"), "first down");
    assert_eq!(
        processes_mentioning(&needle),
        Vec::<u32>::new(),
        "down left processes behind"
    );
    assert!(!state.exists(), "down should remove the state directory");
    assert_ok(&hack_cluster(&state, "down"), "second down");
}
