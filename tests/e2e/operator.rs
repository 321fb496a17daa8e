//! `clouddeck run` as a platform team runs it: replicas elect a leader through a Lease,
//! report their role on /readyz and /metrics, hand over on SIGTERM, and refuse to start
//! with one clear line when the cluster is not usable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::support::{self, Operator, TestNamespace};

const BINARY: &str = env!("CARGO_BIN_EXE_clouddeck");
/// Lease timing of the test replicas (set by `support::Operator`): short, so that a
/// takeover happens within seconds.
const LEASE_DURATION: Duration = Duration::from_secs(5);

async fn leader_gauge(replica: &Operator) -> Option<String> {
    let (_, metrics) = replica.get("/metrics").await?;
    metrics
        .lines()
        .find(|l| l.starts_with("clouddeck_leader "))
        .map(str::to_owned)
}

/// `clouddeck_api_requests_total{verb}` of a replica (0 when not reported).
async fn api_requests(replica: &Operator, verb: &str) -> f64 {
    let (_, metrics) = replica.get("/metrics").await.unwrap_or_default();
    let prefix = format!("clouddeck_api_requests_total{{verb=\"{verb}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

/// User story: "I run two replicas of the operator. One leads and the other stands by, and
/// /readyz tells me which is which. When Kubernetes stops the leader (SIGTERM, e.g. during
/// a rollout), it exits cleanly and the standby takes over within the lease duration."
#[tokio::test]
async fn a_standby_takes_over_when_the_leader_stops() {
    let _serial = support::one_operator_test_at_a_time().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-operator").await;
    let lease_name = format!("clouddeck-leader-{}", ns.name);
    let leases = Api::<Lease>::namespaced(client.clone(), &ns.name);

    let mut first = Operator::builder(&ns.name, &lease_name)
        .args(["--lease-identity", "replica-first"])
        .start();
    first
        .wait_ready_as("ok: leader", Duration::from_secs(60))
        .await;
    assert_eq!(
        lease_holder(&leases, &lease_name).await.as_deref(),
        Some("replica-first"),
        "{}",
        first.logs()
    );
    assert_eq!(
        leader_gauge(&first).await.as_deref(),
        Some("clouddeck_leader 1")
    );
    assert_eq!(first.get("/healthz").await, Some((200, "ok".into())));

    // The second replica takes its identity from POD_NAME, as the downward API sets it.
    let second = Operator::builder(&ns.name, &lease_name)
        .env("POD_NAME", "replica-second")
        .start();
    second
        .wait_ready_as("ok: standby", Duration::from_secs(60))
        .await;
    assert_eq!(
        leader_gauge(&second).await.as_deref(),
        Some("clouddeck_leader 0")
    );
    // The leader's controllers list and watch, counted by verb; a standby runs none, and
    // its Lease requests go through a client of their own.
    assert!(api_requests(&first, "list").await >= 1.0);
    assert!(api_requests(&first, "watch").await >= 1.0);
    assert_eq!(api_requests(&second, "list").await, 0.0);
    assert_eq!(api_requests(&second, "watch").await, 0.0);
    // Standing by for longer than a lease period does not steal the Lease.
    tokio::time::sleep(LEASE_DURATION + Duration::from_secs(1)).await;
    assert_eq!(
        lease_holder(&leases, &lease_name).await.as_deref(),
        Some("replica-first")
    );
    assert_eq!(
        second.get("/readyz").await,
        Some((200, "ok: standby".into())),
        "{}",
        second.logs()
    );

    let stopped_at = Instant::now();
    first.terminate();
    let status = first.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "the leader exits 0 on SIGTERM, got {status}; logs:\n{}",
        first.logs()
    );
    assert!(
        first.logs().contains("released the Lease"),
        "the leader releases the Lease; logs:\n{}",
        first.logs()
    );

    // Takeover: at most one lease duration (the standby's wait for the old claim) plus slack.
    let takeover = LEASE_DURATION + Duration::from_secs(5);
    let holder = tokio::time::timeout(takeover, async {
        loop {
            if lease_holder(&leases, &lease_name).await.as_deref() == Some("replica-second") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        holder.is_ok(),
        "the standby did not take the Lease within {takeover:?}; logs:\n{}",
        second.logs()
    );
    second
        .wait_ready_as("ok: leader", Duration::from_secs(5))
        .await;
    assert_eq!(
        leader_gauge(&second).await.as_deref(),
        Some("clouddeck_leader 1")
    );
    eprintln!("takeover took {:?} after SIGTERM", stopped_at.elapsed());
}

/// Runs `clouddeck run` with logs off and returns its exit status and stderr.
pub(crate) fn run_to_failure(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(BINARY)
        .args([
            "run",
            "--log-level",
            "off",
            "--listen-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("clouddeck run kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n\
             users:\n- name: u\n  user: {{token: not-a-secret}}\n"
        ),
    )
    .unwrap();
    path
}

fn assert_one_error_line(stderr: &str, starts_with: &str) {
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with(starts_with),
        "expected {starts_with:?}, got:\n{stderr}"
    );
}

/// User story: "I point the operator at a cluster it cannot reach (or at no kubeconfig at
/// all) and it tells me so in one line and exits non-zero, no stack trace."
#[test]
fn an_unusable_kubeconfig_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = write_kubeconfig(
        dir.path(),
        &format!("https://127.0.0.1:{}", support::free_port()),
    );
    let (status, stderr) = run_to_failure(&["--kubeconfig", unreachable.to_str().unwrap()]);
    assert!(!status.success());
    assert_one_error_line(
        &stderr,
        "error: cannot talk to the Kubernetes API server at https://127.0.0.1:",
    );

    let (status, stderr) = run_to_failure(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert!(!status.success());
    assert_one_error_line(&stderr, "error: cannot load a Kubernetes configuration");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}
