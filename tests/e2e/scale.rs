//! Scale, measured (issue #13): how long N Projects take to converge against the time the
//! cluster needs for the same children made without CloudDeck (the floor), how many API
//! requests each Project costs, what a look at every settled object costs, what the
//! operator holds in memory, and what its convergence does to a tenant's own requests.
//! Ignored by default; run it with a release build and quiet logs:
//!
//! ```sh
//! hack/cluster up
//! CLOUDDECK_E2E_LOG=info CLOUDDECK_BENCH_PROJECTS=1000 \
//!   cargo test --release --test e2e scale -- --ignored --nocapture
//! ```
//!
//! Everything runs as it would once installed: the chart is installed (RBAC and its API
//! Priority and Fairness objects; `CLOUDDECK_BENCH_FLOW_CONTROL=false` leaves those out),
//! the operator runs with the chart's environment and its ServiceAccount's token, and the
//! tenant is a ServiceAccount with the built-in `edit` role in its own namespace, creating a
//! ConfigMap every 100 ms while each phase runs. In order, on one cluster:
//!
//! 1. **quiet**: the tenant's requests with nothing else running;
//! 2. **floor**: no operator; the children CloudDeck renders for one Project (its
//!    workload, Service and HTTPRoutes, taken from a Project the operator reconciled
//!    first) are applied N times, with the same concurrency the Projects are created
//!    with, until every workload is available: what a team would pay doing it by hand.
//!    The floor's namespace is then deleted, and gone before the next phase starts, so
//!    that both phases start on the same cluster;
//! 3. **CloudDeck**: the operator leads; N Projects and N production Deployments are
//!    created until every Deployment is Ready (workload available, routes written);
//! 4. **idle**: once the operator's requests have stopped (the work behind the last
//!    Ready Deployment done; how long that took is reported), with `--resync-period 60s`
//!    every settled object is looked at again within the window; the requests it makes and
//!    the reconcile p99 are counted.
//!
//! The floor has no HostnameClaims: taking a hostname safely is CloudDeck's own work.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clouddeck::api::{Deployment, DeploymentPhase, Project};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment as Workload;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch};
use kube::api::{PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource};
use serde_json::{Value, json};

use crate::chart::{Release, chart_env, service_account_kubeconfig};
use crate::idle::counter;
use crate::memory::{mib, rss};
use crate::support::{self, Operator, TestNamespace, eventually};

const IMAGE: &str = "registry.example/acme/hello@sha256:5555555555555555555555555555555555555555555555555555555555555555";
/// Requests in flight while objects are created, in both phases.
const CONCURRENCY: usize = 16;
const RESYNC: &str = "60s";
/// Longer than the resync period: every settled object is looked at again within it.
const IDLE_WINDOW: Duration = Duration::from_secs(75);
/// The name of the Project whose children are the floor's template.
const TEMPLATE: &str = "scaletpl";
const CONVERGENCE: Duration = Duration::from_secs(3_600);

/// Request latencies, sorted.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn pct(&self, p: f64) -> Duration {
        let n = self.0.len();
        if n == 0 {
            return Duration::ZERO;
        }
        self.0[((n as f64 * p) as usize).min(n - 1)]
    }

    fn summary(&self) -> String {
        format!(
            "{:.0} / {:.0} ms",
            self.pct(0.5).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3
        )
    }
}

/// The tenant's requests of one phase: when each was sent, and how long it took.
struct Samples(Vec<(Instant, Duration)>);

impl Samples {
    /// The latencies of the requests whose send time `keep` keeps.
    fn latencies(&self, keep: impl Fn(Instant) -> bool) -> Latencies {
        let mut took: Vec<Duration> = self
            .0
            .iter()
            .filter(|(sent, _)| keep(*sent))
            .map(|(_, took)| *took)
            .collect();
        took.sort();
        Latencies(took)
    }

    fn all(&self) -> Latencies {
        self.latencies(|_| true)
    }

    /// All, then those sent while the benchmark was still creating objects (until
    /// `created`), then the rest: what the creates cost a tenant is the same with or without CloudDeck.
    fn summary(&self, created: Instant) -> String {
        format!(
            "{} (while creating {}; after {})",
            self.all().summary(),
            self.latencies(|sent| sent < created).summary(),
            self.latencies(|sent| sent >= created).summary()
        )
    }
}

/// A tenant creating one ConfigMap every 100 ms in its namespace, timing each create.
struct Tenant {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Duration)>>,
}

impl Tenant {
    fn start(client: &Client, namespace: &str, phase: &str) -> Tenant {
        let stop = Arc::new(AtomicBool::new(false));
        let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let (phase, stopped) = (phase.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let mut took = Vec::new();
            let mut i = 0;
            while !stopped.load(Ordering::Relaxed) {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": { "name": format!("{phase}-{i}") },
                    "data": { "n": i.to_string() }
                }))
                .unwrap();
                let at = Instant::now();
                api.create(&PostParams::default(), &map)
                    .await
                    .expect("the tenant's create");
                took.push((at, at.elapsed()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            took
        });
        Tenant { stop, task }
    }

    async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        Samples(self.task.await.unwrap())
    }
}

/// Waits until `count` objects of `api` satisfy `done`, watching rather than listing (a
/// list of thousands of objects a second would load the apiserver being measured).
async fn all_done<K>(api: Api<K>, count: usize, done: impl Fn(&K) -> bool)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let watch = tokio::spawn(
        reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects()
            .for_each(|_| async {}),
    );
    eventually("every object to be done", CONVERGENCE, || async {
        let ready = reader.state().iter().filter(|o| done(o)).count();
        (ready >= count).then_some(())
    })
    .await;
    watch.abort();
}

/// Creates `objects` through `api`, `CONCURRENCY` at a time.
async fn create_all(client: &Client, namespace: &str, objects: Vec<Value>) {
    futures::stream::iter(objects)
        .map(|object| async move {
            let api = dynamic_api(client, namespace, &object);
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            api.patch(&name, &PatchParams::apply("floor"), &Patch::Apply(&object))
                .await
                .unwrap_or_else(|e| panic!("apply {name}: {e}"));
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

fn dynamic_api(client: &Client, namespace: &str, object: &Value) -> Api<DynamicObject> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// The children the operator made for the Project `TEMPLATE` in `namespace`, as a user
/// would write them: what they say, not what the apiserver or the operator added.
async fn children_of_template(client: &Client, namespace: &str) -> Vec<Value> {
    let mut children = Vec::new();
    for (api_version, kind) in [
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ] {
        let sample = json!({ "apiVersion": api_version, "kind": kind });
        let api = dynamic_api(client, namespace, &sample);
        let listed = api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=clouddeck"))
            .await
            .unwrap();
        for item in listed.items {
            let mut spec = item.data["spec"].clone();
            if kind == "Service" {
                for allocated in ["clusterIP", "clusterIPs"] {
                    spec.as_object_mut().unwrap().remove(allocated);
                }
            }
            children.push(json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {
                    "name": item.metadata.name,
                    "labels": item.metadata.labels,
                    "annotations": item.metadata.annotations,
                },
                "spec": spec,
            }));
        }
    }
    children
}

fn project(name: &str) -> Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
        "metadata": { "name": name },
        "spec": { "image": IMAGE }
    })
}

fn production(project: &str) -> Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
        "metadata": { "name": format!("{project}-live") },
        "spec": { "projectRef": { "name": project }, "target": "production", "source": { "image": IMAGE } }
    })
}

fn ready(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .is_some_and(|s| s.phase == Some(DeploymentPhase::Ready))
}

fn available(w: &Workload) -> bool {
    let wanted = w.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    w.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .is_some_and(|n| n >= wanted)
}

/// CPU time, in seconds, used so far by each process of the cluster ([`CLUSTER`]), by the
/// operator (when given) and this test, and by the whole machine: busy and in all, summed
/// over its cores. Two readings apart say who used the cores in between.
struct CpuTimes {
    processes: Vec<(String, f64)>,
    machine_busy: f64,
    machine_total: f64,
}

/// The processes `hack/cluster` started whose CPU time the benchmark reports (by their pid
/// files): the control plane, and the parts of the real node that watch what the Projects
/// make (the gateway, Traefik, turns every HTTPRoute into its configuration).
const CLUSTER: [&str; 9] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "gateway",
    "kube-proxy",
    "coredns",
    "cert-manager",
];

/// Clock ticks per second in `/proc` (`CLK_TCK`: 100 on Linux).
const TICKS: f64 = 100.0;

fn cpu_times(operator: Option<u32>) -> CpuTimes {
    let process = |pid: u32| -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name's closing parenthesis: utime and stime, the 14th and
        // 15th fields of the line, are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / TICKS)
    };
    let mut processes = Vec::new();
    for name in CLUSTER {
        let pid = std::fs::read_to_string(support::cluster_dir().join(format!("pids/{name}.pid")))
            .ok()
            .and_then(|line| line.split_whitespace().next()?.parse().ok());
        if let Some(seconds) = pid.and_then(process) {
            processes.push((name.to_owned(), seconds));
        }
    }
    if let Some(seconds) = operator.and_then(process) {
        processes.push(("operator".to_owned(), seconds));
    }
    // This test: the tenant, the creates, the watches that wait for Ready.
    if let Some(seconds) = process(std::process::id()) {
        processes.push(("benchmark".to_owned(), seconds));
    }
    // The first line of /proc/stat: user nice system idle iowait irq softirq steal.
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|n| n.parse().unwrap())
        .collect();
    let idle = ticks[3] + ticks[4];
    let total: f64 = ticks.iter().sum();
    CpuTimes {
        processes,
        machine_busy: (total - idle) / TICKS,
        machine_total: total / TICKS,
    }
}

/// Who used the cores between two readings: "machine 87 % busy; kube-apiserver 120 s, …".
fn cpu_used(before: &CpuTimes, after: &CpuTimes) -> String {
    let busy = (after.machine_busy - before.machine_busy)
        / (after.machine_total - before.machine_total).max(f64::EPSILON);
    let mut line = format!("machine {:.0} % busy", busy * 100.0);
    for (name, seconds) in &after.processes {
        if let Some((_, earlier)) = before.processes.iter().find(|(n, _)| n == name) {
            line.push_str(&format!("; {name} {:.0} s", seconds - earlier));
        }
    }
    line
}

/// What `/metrics` says, summed per name prefix.
struct Counters {
    requests: f64,
    by_verb: Vec<(&'static str, f64)>,
    throttled_seconds: f64,
    requests_not_watch: f64,
    reconciles: f64,
    /// `(le, cumulative count)` of every controller's reconcile duration, summed.
    buckets: Vec<(f64, f64)>,
}

/// How long a settling operator may keep sending requests before the idle window opens
/// anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// Waits until the operator's requests (all but watches) stop: fewer than 5 in 10 s.
/// Returns how long that took, or `None` when they did not stop within [`SETTLE_LIMIT`]
/// (then the idle figures include unfinished work).
async fn settle(operator: &Operator) -> Option<Duration> {
    let started = Instant::now();
    let mut last = counters(operator).await.requests_not_watch;
    while started.elapsed() < SETTLE_LIMIT {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = counters(operator).await.requests_not_watch;
        if now - last < 5.0 {
            return Some(started.elapsed());
        }
        last = now;
    }
    None
}

async fn counters(operator: &Operator) -> Counters {
    let mut by_verb = Vec::new();
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        let prefix = format!("clouddeck_api_requests_total{{verb=\"{verb}\"}}");
        by_verb.push((verb, counter(operator, &prefix).await));
    }
    let requests_not_watch = by_verb
        .iter()
        .filter(|(verb, _)| *verb != "watch")
        .map(|(_, n)| n)
        .sum();
    let (_, metrics) = operator.get("/metrics").await.unwrap_or_default();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("clouddeck_reconcile_duration_seconds_bucket{"))
    {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(|le| le.parse::<f64>().unwrap_or(f64::INFINITY))
            .unwrap();
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        match buckets.iter_mut().find(|(at, _)| *at == le) {
            Some((_, sum)) => *sum += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Counters {
        requests: counter(operator, "clouddeck_api_requests_total{").await,
        by_verb,
        throttled_seconds: counter(operator, "clouddeck_api_client_throttled_seconds_total").await,
        requests_not_watch,
        reconciles: counter(operator, "clouddeck_reconciliations_total{").await,
        buckets,
    }
}

/// The upper bound of the histogram bucket that holds the 99th percentile of the
/// reconciles between `before` and `after`.
fn reconcile_p99(before: &Counters, after: &Counters) -> String {
    let delta: Vec<(f64, f64)> = after
        .buckets
        .iter()
        .map(|(le, n)| {
            let earlier = before
                .buckets
                .iter()
                .find(|(at, _)| at == le)
                .map_or(0.0, |b| b.1);
            (*le, n - earlier)
        })
        .collect();
    let Some(total) = delta.last().map(|b| b.1).filter(|n| *n > 0.0) else {
        return "no reconcile".into();
    };
    let (le, _) = delta.iter().find(|(_, n)| *n >= 0.99 * total).unwrap();
    format!("≤ {:.0} ms", le * 1e3)
}

async fn start_operator(
    release: &Release,
    namespace: &str,
    kubeconfig: &Path,
    resync: &str,
) -> Operator {
    let mut builder = Operator::builder(namespace, "clouddeck-leader");
    for (name, value) in chart_env(release) {
        builder = builder.env(&name, &value);
    }
    // To compare rate limits: `CLOUDDECK_BENCH_QPS=200` (the burst is twice that).
    if let Ok(qps) = std::env::var("CLOUDDECK_BENCH_QPS") {
        let burst = (qps.parse::<u32>().expect("CLOUDDECK_BENCH_QPS: a number") * 2).to_string();
        builder = builder
            .env("CLOUDDECK_KUBE_API_QPS", &qps)
            .env("CLOUDDECK_KUBE_API_BURST", &burst);
    }
    builder
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--resync-period",
            resync,
        ])
        .start_leading()
        .await
}

#[tokio::test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn benchmark_convergence_idle_cost_and_tenant_latency() {
    let _serial = support::one_operator_test_at_a_time().await;
    let count: usize = std::env::var("CLOUDDECK_BENCH_PROJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let flow_control = std::env::var("CLOUDDECK_BENCH_FLOW_CONTROL").as_deref() != Ok("false");
    let client = support::client().await;
    let system = TestNamespace::new(&client, "e2e-scale-system").await;
    let release = Release::install(
        &system.name,
        &["--set", &format!("flowControl.enabled={flow_control}")],
    );
    let dir = tempfile::tempdir().unwrap();
    let operator_kubeconfig =
        service_account_kubeconfig(&system.name, &release.fullname(), dir.path());

    let tenant_ns = TestNamespace::new(&client, "e2e-scale-tenant").await;
    support::kubectl_ok(&["create", "serviceaccount", "tenant", "-n", &tenant_ns.name]);
    support::kubectl_ok(&[
        "create",
        "rolebinding",
        "tenant-edit",
        "--clusterrole=edit",
        &format!("--serviceaccount={}:tenant", tenant_ns.name),
        "-n",
        &tenant_ns.name,
    ]);
    let tenant_dir = dir.path().join("tenant");
    std::fs::create_dir(&tenant_dir).unwrap();
    let tenant = support::client_of(&service_account_kubeconfig(
        &tenant_ns.name,
        "tenant",
        &tenant_dir,
    ))
    .await;

    // 1. Quiet.
    let load = Tenant::start(&tenant, &tenant_ns.name, "quiet");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet = load.finish().await;

    // The floor's template: one Project as the operator renders it.
    let template_ns = TestNamespace::new(&client, "e2e-scale-template").await;
    let operator = start_operator(&release, &system.name, &operator_kubeconfig, RESYNC).await;
    support::create(
        &Api::<Project>::namespaced(client.clone(), &template_ns.name),
        project(TEMPLATE),
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &template_ns.name);
    support::create(&deployments, production(TEMPLATE)).await;
    all_done(deployments, 1, ready).await;
    operator.stop().await;
    let template =
        serde_json::to_string(&children_of_template(&client, &template_ns.name).await).unwrap();
    let per_project = serde_json::from_str::<Vec<Value>>(&template).unwrap().len();

    // 2. The floor.
    let floor_ns = TestNamespace::new(&client, "e2e-scale-floor").await;
    let load = Tenant::start(&tenant, &tenant_ns.name, "floor");
    let floor_cpu = cpu_times(None);
    let started = Instant::now();
    let objects: Vec<Value> = (0..count)
        .flat_map(|i| {
            let copy = template.replace(TEMPLATE, &format!("f{i}"));
            serde_json::from_str::<Vec<Value>>(&copy).unwrap()
        })
        .collect();
    create_all(&client, &floor_ns.name, objects).await;
    let floor_created = Instant::now();
    all_done(
        Api::<Workload>::namespaced(client.clone(), &floor_ns.name),
        count,
        available,
    )
    .await;
    let floor = started.elapsed();
    let during_floor = load.finish().await;
    let floor_cpu = cpu_used(&floor_cpu, &cpu_times(None));
    // CloudDeck starts on the cluster the floor started on: without the floor's objects
    // (the gateway, kube-proxy, the apiserver's watchers and the operator's caches would
    // otherwise carry twice as many).
    let started = Instant::now();
    let namespaces = Api::<Namespace>::all(client.clone());
    let floor_name = floor_ns.name.clone();
    drop(floor_ns);
    support::gone_within(&namespaces, &floor_name, CONVERGENCE).await;
    let floor_deleted = started.elapsed();

    // 3. CloudDeck.
    let projects_ns = TestNamespace::new(&client, "e2e-scale-projects").await;
    let operator = start_operator(&release, &system.name, &operator_kubeconfig, RESYNC).await;
    let baseline_rss = rss(operator.pid()).await;
    let before = counters(&operator).await;
    let load = Tenant::start(&tenant, &tenant_ns.name, "clouddeck");
    let clouddeck_cpu = cpu_times(Some(operator.pid()));
    let started = Instant::now();
    let objects: Vec<Value> = (0..count)
        .flat_map(|i| {
            let name = format!("p{i}");
            [project(&name), production(&name)]
        })
        .collect();
    futures::stream::iter(objects)
        .map(|object| {
            let (client, namespace) = (client.clone(), projects_ns.name.clone());
            async move {
                let api = dynamic_api(&client, &namespace, &object);
                let object: DynamicObject = serde_json::from_value(object).unwrap();
                api.create(&PostParams::default(), &object).await.unwrap();
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let clouddeck_created = Instant::now();
    all_done(
        Api::<Deployment>::namespaced(client.clone(), &projects_ns.name),
        count,
        ready,
    )
    .await;
    let converged = started.elapsed();
    let during_clouddeck = load.finish().await;
    let clouddeck_cpu = cpu_used(&clouddeck_cpu, &cpu_times(Some(operator.pid())));
    let after = counters(&operator).await;

    // 4. Idle, once the operator has finished the work behind the last Ready Deployment
    // (Projects' routes, promotions and status, which its rate limit may have held back).
    let tail = settle(&operator).await;
    let settled = counters(&operator).await;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = counters(&operator).await;
    let end_rss = rss(operator.pid()).await;
    let minutes = IDLE_WINDOW.as_secs_f64() / 60.0;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "scale: N = {count} Projects ({per_project} children each in the floor), \
         flow control {flow}, {cores} cores\n\
         | measure | value |\n|---|---|\n\
         | floor: the same children applied directly, all workloads available | {floor:.1} s |\n\
         | CloudDeck: N Projects + N Deployments created, all Ready | {converged:.1} s ({ratio:.2}× the floor) |\n\
         | API requests per Project while converging (all verbs) | {per:.1} ({verbs}) |\n\
         | time the operator's requests waited for its client-side rate limit | {throttled:.0} s |\n\
         | tenant create p50 / p99: quiet | {quiet} |\n\
         | tenant create p50 / p99: during the floor | {during_floor} |\n\
         | tenant create p50 / p99: during CloudDeck's convergence | {during_clouddeck} |\n\
         | CPU during the floor | {floor_cpu} |\n\
         | the floor's namespace deleted (before CloudDeck starts) | {floor_deleted:.0} s |\n\
         | CPU during CloudDeck's convergence | {clouddeck_cpu} |\n\
         | after the last Ready: until the operator's requests settle | {tail} |\n\
         | idle, resync every {RESYNC}: reconciles in {window:.0} s | {reconciles:.0} |\n\
         | idle: API requests per minute (all but watch) | {idle_requests:.1} |\n\
         | idle: reconcile p99 | {idle_p99} |\n\
         | converging: reconcile p99 | {busy_p99} |\n\
         | operator RSS: leading, before / after N Projects | {rss0:.1} / {rss1:.1} MiB |",
        flow = if flow_control { "on" } else { "off" },
        floor = floor.as_secs_f64(),
        converged = converged.as_secs_f64(),
        ratio = converged.as_secs_f64() / floor.as_secs_f64(),
        per = (after.requests - before.requests) / count as f64,
        verbs = after
            .by_verb
            .iter()
            .zip(&before.by_verb)
            .filter(|((_, n), (_, m))| n > m)
            .map(|((verb, n), (_, m))| format!("{verb} {:.1}", (n - m) / count as f64))
            .collect::<Vec<_>>()
            .join(", "),
        throttled = after.throttled_seconds - before.throttled_seconds,
        floor_deleted = floor_deleted.as_secs_f64(),
        quiet = quiet.all().summary(),
        during_floor = during_floor.summary(floor_created),
        during_clouddeck = during_clouddeck.summary(clouddeck_created),
        tail = match tail {
            Some(tail) => format!("{:.0} s", tail.as_secs_f64()),
            None => format!("not within {} s", SETTLE_LIMIT.as_secs()),
        },
        window = IDLE_WINDOW.as_secs_f64(),
        reconciles = idle.reconciles - settled.reconciles,
        idle_requests = (idle.requests_not_watch - settled.requests_not_watch) / minutes,
        idle_p99 = reconcile_p99(&settled, &idle),
        busy_p99 = reconcile_p99(&before, &after),
        rss0 = mib(baseline_rss),
        rss1 = mib(end_rss),
    );
    operator.stop().await;
}
