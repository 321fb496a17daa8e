//! Shared harness for the end-to-end tests: the local control plane's kubeconfig and
//! kubectl, throwaway namespaces, and polling with a deadline.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directory where `hack/cluster up` keeps its state (kubeconfig, pids, logs, bin links).
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("CLOUDDECK_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cluster"))
}

/// The admin kubeconfig of the local control plane. Panics with the command to run when
/// the control plane is not up: an e2e test must never pass without a cluster.
pub fn kubeconfig_path() -> PathBuf {
    let path = cluster_dir().join("kubeconfig");
    assert!(
        path.exists(),
        "no local control plane: {} is missing. Run `hack/cluster up` (or `make test`).",
        path.display()
    );
    path
}

pub async fn client() -> Client {
    client_of(&kubeconfig_path()).await
}

/// A client of the identity and server that the kubeconfig at `path` names.
pub async fn client_of(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("build client")
}

/// The kubectl built with the control plane (the machine's own may be outside version skew).
pub fn kubectl_path() -> PathBuf {
    cluster_dir().join("bin").join("kubectl")
}

/// Runs kubectl against the local control plane and returns its output, whatever the exit.
pub fn kubectl(args: &[&str]) -> Output {
    Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .output()
        .expect("run kubectl")
}

/// Runs kubectl and panics with its stderr unless it succeeds; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace for one test, deleted when dropped so tests do not see each other's objects.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let suffix = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                & 0xffffff
        );
        let name = format!("{prefix}-{suffix}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "clouddeck.io/e2e": "true" } }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // kubectl rather than the async client: by the time a #[tokio::test] drops this,
        // its runtime is shutting down and a spawned deletion would never run.
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Waits (up to a minute) until `name` no longer exists in `api`.
pub async fn gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    gone_within(api, name, Duration::from_secs(60)).await
}

/// Waits (up to `timeout`) until `name` no longer exists in `api`.
pub async fn gone_within<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} to be gone"), timeout, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Serialises the tests that run controllers. Every `clouddeck run` watches the whole
/// cluster, so two tests' operators would both reconcile each other's objects; a test that
/// starts operators holds this guard for its whole body.
pub async fn one_operator_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    // tokio's Mutex: held across awaits, shared by the tests' separate runtimes, and not
    // poisoned by a failing test.
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The API as the other tests leave it. A test that writes CloudDeck objects without an
/// operator of its own, or relies on admission refusing an object, holds this for
/// reading; a test that needs the cluster to itself holds it for writing: the version-skew
/// test (it loosens the CRDs for a moment) and the idle test (it counts every request
/// the operator makes, which any other test's objects would add to).
pub static SHARED_API: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `clouddeck run` process against the local control plane, killed when dropped (its
/// log is printed if the test is failing). Built with [`Operator::builder`].
pub struct Operator {
    child: std::process::Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct OperatorBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Operator {
    /// An operator with its own Lease (`lease_namespace`/`lease_name`), short lease timings,
    /// debug logs, and settings that keep every lookup on loopback: DNS verification asks
    /// 127.0.0.1:9 (nothing answers) unless a test passes its own `--dns-server`, and
    /// webhooks to loopback are refused unless a test allows them.
    pub fn builder(lease_namespace: &str, lease_name: &str) -> OperatorBuilder {
        let args = [
            "--lease-namespace",
            lease_namespace,
            "--lease-name",
            lease_name,
            "--lease-duration",
            "5s",
            "--lease-renew-before",
            "2s",
            "--log-level",
            &std::env::var("CLOUDDECK_E2E_LOG").unwrap_or_else(|_| "info,clouddeck=debug".into()),
        ];
        OperatorBuilder {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("CLOUDDECK_DNS_SERVER".into(), "127.0.0.1:9".into())],
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        Some((resp.status().as_u16(), resp.text().await.ok()?))
    }

    /// Waits until `/readyz` answers 200 with `body` (`ok: leader` or `ok: standby`).
    pub async fn wait_ready_as(&self, body: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((200, text)) = self.get("/readyz").await
                && text == body
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for /readyz to answer 200 {body:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends SIGTERM (what the kubelet sends).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, panicking with its log after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "operator did not exit within {timeout:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) {
        self.terminate();
        let status = self.wait_exit(Duration::from_secs(20)).await;
        assert!(
            status.success(),
            "operator exited with {status}; logs:\n{}",
            self.logs()
        );
    }
}

impl OperatorBuilder {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Applies the CRDs (idempotent) and starts the process on a free port.
    pub fn start(self) -> Operator {
        kubectl_ok(&[
            "apply",
            "--server-side",
            "-f",
            repo_root().join("crds").to_str().unwrap(),
        ]);
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("clouddeck.log");
        let child = Command::new(env!("CARGO_BIN_EXE_clouddeck"))
            .args(["run", "--listen-addr", &format!("127.0.0.1:{port}")])
            .args(&self.args)
            .env("KUBECONFIG", kubeconfig_path())
            .env_remove("POD_NAME")
            .envs(self.env)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start clouddeck run");
        Operator {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// Starts the operator and waits until it leads.
    pub async fn start_leading(self) -> Operator {
        let operator = self.start();
        operator
            .wait_ready_as("ok: leader", Duration::from_secs(60))
            .await;
        operator
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- operator log ---\n{}", self.logs());
        }
    }
}

/// Plays the kubelet for the one pod of Job `job` (kwok runs it but must have been held
/// back from completing it, e.g. by `pod-complete.stage.kwok.x-k8s.io/delay: 1h` on the
/// pod template): waits until it runs, then terminates its container `container` with
/// `exit_code` and `message` (the termination message) and the matching pod phase.
/// Returns the pod, as it was when it ran.
pub async fn terminate_job_pod(
    client: &Client,
    namespace: &str,
    job: &str,
    container: &str,
    exit_code: i32,
    message: &str,
) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{ListParams, Patch, PatchParams};

    let timeout = Duration::from_secs(90);
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let running = eventually(&format!("the pod of Job {job} to run"), timeout, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|pod| {
                let status = pod.status.as_ref();
                let ready = status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                status.and_then(|s| s.phase.as_deref()) == Some("Running") && ready
            })
    })
    .await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let (phase, reason) = if exit_code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let status = serde_json::json!({ "status": {
        "phase": phase,
        "containerStatuses": [{
            "name": container, "image": container, "imageID": "", "ready": false,
            "restartCount": 0, "started": false,
            "state": { "terminated": {
                "exitCode": exit_code, "reason": reason, "message": message,
                "startedAt": now, "finishedAt": now
            } }
        }]
    } });
    let name = running.metadata.name.clone().unwrap_or_default();
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the pod's status");
    running
}

/// `kubectl apply` of the named files of `config/samples` into `namespace`.
pub fn apply_samples(namespace: &str, files: &[&str]) {
    let samples = repo_root().join("config/samples");
    let paths: Vec<String> = files
        .iter()
        .map(|f| samples.join(f).to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["apply", "-n", namespace];
    for path in &paths {
        args.extend(["-f", path.as_str()]);
    }
    kubectl_ok(&args);
}

/// Creates the object `value` (JSON of a `K`) through `api`.
pub async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&kube::api::PostParams::default(), &obj)
        .await
        .expect("create")
}

/// Creates a Project `name` that runs a prebuilt image (nothing is deployed) and returns the
/// hostname it holds once the operator has given it one (`status.hostname`): what the
/// namespace's Domains under the base domain may be named under.
pub async fn project_hostname(client: &Client, namespace: &str, name: &str) -> String {
    let projects = Api::<clouddeck::api::Project>::namespaced(client.clone(), namespace);
    create(
        &projects,
        serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": name },
            "spec": { "image": "registry.local/e2e/app:1" }
        }),
    )
    .await;
    eventually(
        &format!("Project {name} to hold a hostname"),
        Duration::from_secs(60),
        || async { projects.get(name).await.ok()?.status?.hostname },
    )
    .await
}

/// A Webhook `name` subscribed to `events`, signed with a Secret `signing` it creates,
/// pointing at a loopback URL where nothing listens: the egress policy refuses it (nothing
/// is sent), and the delivery log still records each event.
pub async fn recording_webhook(client: &Client, namespace: &str, name: &str, events: &[&str]) {
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "signing",
        "-n",
        namespace,
        "--from-literal=secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]);
    let webhooks = Api::<clouddeck::api::webhook::Webhook>::namespaced(client.clone(), namespace);
    create(
        &webhooks,
        serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Webhook",
            "metadata": { "name": name },
            "spec": {
                "url": "http://127.0.0.1:9/hook", "events": events,
                "secretRefs": [{ "name": "signing", "key": "secret" }]
            }
        }),
    )
    .await;
}

/// `kubectl create` of `object` in `namespace`, as the admin or impersonating `user`.
pub fn kubectl_create(namespace: &str, object: &serde_json::Value, user: Option<&str>) -> Output {
    let user = user.map(|u| format!("--as={u}"));
    kubectl_stdin(
        &["create", "-n", namespace, "-f", "-"],
        user.as_deref(),
        object,
    )
}

/// `kubectl create` of `object` in `namespace` as the admin, which must succeed.
pub fn kubectl_create_ok(namespace: &str, object: &serde_json::Value) {
    let out = kubectl_create(namespace, object, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl create --dry-run=server` of `object`: would the apiserver admit it?
pub fn kubectl_create_dry_run(namespace: &str, object: &serde_json::Value) -> Output {
    kubectl_stdin(
        &["create", "--dry-run=server", "-n", namespace, "-f", "-"],
        None,
        object,
    )
}

fn kubectl_stdin(args: &[&str], extra: Option<&str>, object: &serde_json::Value) -> Output {
    let mut kubectl = Command::new(kubectl_path());
    kubectl
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .args(extra);
    run_with_stdin(&mut kubectl, object.to_string().as_bytes())
}

/// Runs `command` with `input` on its standard input; its output is captured.
pub fn run_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("run {command:?}: {err}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
