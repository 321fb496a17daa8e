//! Memory per object, measured (issue #10: "memory per WebhookDelivery and per Project is
//! measured by a benchmark, and the chart's memory request/limit is set from that
//! figure"). Ignored by default; run it with a release build:
//!
//! ```sh
//! hack/cluster up
//! CLOUDDECK_BENCH_OBJECTS=2000 cargo test --release --test e2e memory -- --ignored --nocapture
//! ```
//!
//! The baseline is the same operator process before the objects exist: its resident set
//! (VmRSS) once it leads with synced caches. Each step creates N objects, waits until the
//! operator has reconciled every one (each has a status), lets it settle, and reads the
//! resident set again; the growth divided by N is the cost of one object, everything the
//! operator keeps for it included (caches, queues, allocator slack).

use std::time::Duration;

use clouddeck::api::Project;
use clouddeck::api::webhook_delivery::WebhookDelivery;
use clouddeck::delivery::OriginKey;
use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::support::{self, TestNamespace, eventually};

/// The operator's resident set, in bytes: the lowest of a few readings a moment apart
/// (a reading taken mid-allocation overstates it).
pub(crate) async fn rss(pid: u32) -> u64 {
    let mut lowest = u64::MAX;
    for _ in 0..5 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        lowest = lowest.min(kib * 1024);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    lowest
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Creates `count` objects from `make(i)` with a few requests in flight.
async fn create_all<K>(api: &Api<K>, count: usize, make: impl Fn(usize) -> K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let objects: Vec<K> = (0..count).map(make).collect();
    futures::stream::iter(objects)
        .map(|object| async move {
            api.create(&PostParams::default(), &object).await.unwrap();
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Waits until every object `api` lists (at least `count`) has a status.
async fn all_reconciled<K>(api: &Api<K>, count: usize, has_status: impl Fn(&K) -> bool)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(
        "every object to be reconciled",
        Duration::from_secs(900),
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            (list.items.len() >= count && list.items.iter().all(&has_status)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn benchmark_memory_per_delivery_and_per_project() {
    let _serial = support::one_operator_test_at_a_time().await;
    let count: usize = std::env::var("CLOUDDECK_BENCH_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-memory").await;
    let operator = support::Operator::builder(&ns.name, "memory")
        .start_leading()
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = rss(operator.pid()).await;

    // WebhookDeliveries as the operator writes them (sealed), each with a 2 KiB payload,
    // for a Webhook that does not exist: each is settled (Failed, "does not exist") once.
    let origin = OriginKey::load_or_create(&client, &ns.name).await.unwrap();
    let deliveries = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    let filler = "x".repeat(2048);
    create_all(&deliveries, count, |i| {
        let delivery: WebhookDelivery = serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": { "name": format!("bench-{i}"), "namespace": ns.name },
            "spec": {
                "webhookRef": { "name": "absent" },
                "eventType": "deployment.ready",
                "webhookId": format!("msg_bench_{i}"),
                "timestamp": "2026-12-03T00:00:00Z",
                "payload": json!({ "type": "deployment.ready", "data": { "n": i, "filler": filler } }).to_string()
            }
        }))
        .unwrap();
        origin.sealed(delivery)
    })
    .await;
    all_reconciled(&deliveries, count, |d| {
        d.status.as_ref().is_some_and(|s| s.phase.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let with_deliveries = rss(operator.pid()).await;

    // Projects of a prebuilt image: each takes a hostname claim and gets a status.
    let projects_ns = TestNamespace::new(&client, "e2e-memory-projects").await;
    let projects = Api::<Project>::namespaced(client.clone(), &projects_ns.name);
    create_all(&projects, count, |i| {
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": format!("mem{i}"), "namespace": projects_ns.name },
            "spec": { "image": "registry.example/acme/hello:1" }
        }))
        .unwrap()
    })
    .await;
    all_reconciled(&projects, count, |p| {
        p.status.as_ref().is_some_and(|s| s.hostname.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let with_projects = rss(operator.pid()).await;

    let per_delivery = with_deliveries.saturating_sub(baseline) / count as u64;
    let per_project = with_projects.saturating_sub(with_deliveries) / count as u64;
    eprintln!(
        "memory: N = {count}\n\
         | state | operator RSS |\n|---|---|\n\
         | baseline: leading, caches synced, no objects | {:.1} MiB |\n\
         | + {count} WebhookDeliveries (2 KiB payloads), settled | {:.1} MiB |\n\
         | + {count} Projects, reconciled | {:.1} MiB |\n\
         per WebhookDelivery: {:.1} KiB; per Project: {:.1} KiB",
        mib(baseline),
        mib(with_deliveries),
        mib(with_projects),
        per_delivery as f64 / 1024.0,
        per_project as f64 / 1024.0,
    );
    operator.stop().await;
}
