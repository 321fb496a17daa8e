//! CronJobs against the local control plane with the operator binary running: the batch
//! CronJob it compiles, a failed run, and a promotion.
//!
//! The run's pod and the kubelet: like the build pods of `pipeline.rs`, the test holds
//! kwok back (`pod-complete.stage.kwok.x-k8s.io/delay: 1h`, set on the Job's pod template
//! so kwok can never complete the pod first), waits until kwok reports the pod Running,
//! then writes its final status itself — the curl container `terminated`
//! with exit code 1 (what `curl -f` exits with on an HTTP error answer is 22; any non-zero
//! fails the run) and phase Failed. The Job controller of the real controller-manager then
//! marks the Job Failed; everything from there is the operator.

use std::time::Duration;

use clouddeck::api::webhook_delivery::WebhookDelivery;
use clouddeck::api::{CronJob, Deployment, Project};
use k8s_openapi::api::batch::v1::CronJob as BatchCronJob;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;

use crate::support::{self, TestNamespace, create, eventually};

const IMAGE: &str = "registry.example/acme/hello@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const TIMEOUT: Duration = Duration::from_secs(45);

fn production_deployment(name: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "projectRef": { "name": "cronshop" }, "target": "production", "source": { "image": image } }
    })
}

async fn wait_production(projects: &Api<Project>, want: &str) {
    eventually(
        &format!("Project shop to serve {want} in production"),
        TIMEOUT,
        || async {
            let status = projects.get("cronshop").await.ok()?.status?;
            (status.production_deployment.as_deref() == Some(want)).then_some(())
        },
    )
    .await;
}

/// The URL the batch CronJob's runs call (the last curl argument), once it names `want`.
async fn wait_run_url(batch: &Api<BatchCronJob>, name: &str, want: &str) -> BatchCronJob {
    eventually(
        &format!("batch CronJob {name} to call {want}"),
        TIMEOUT,
        || async {
            let cron = batch.get(name).await.ok()?;
            let pod = cron.spec.job_template.spec.clone()?.template.spec?;
            let url = pod.containers.first()?.args.clone()?.pop()?;
            (url == want).then_some(cron)
        },
    )
    .await
}

/// Starts the run `job` of the batch CronJob `cron` in `namespace` the way
/// `kubectl create job --from=cronjob/<cron> <job>` does (kubectl renders it), with kwok
/// held back on its pod.
fn start_run_by_hand(namespace: &str, cron: &str, job: &str) {
    let rendered = support::kubectl_ok(&[
        "create",
        "job",
        "-n",
        namespace,
        &format!("--from=cronjob/{cron}"),
        job,
        "--dry-run=client",
        "-o",
        "json",
    ]);
    let mut job: serde_json::Value = serde_json::from_str(&rendered).unwrap();
    job["spec"]["template"]["metadata"]["annotations"]["pod-complete.stage.kwok.x-k8s.io/delay"] =
        json!("1h");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), job.to_string()).unwrap();
    support::kubectl_ok(&[
        "create",
        "-n",
        namespace,
        "-f",
        file.path().to_str().unwrap(),
    ]);
}

/// Acts as the kubelet for the pod of the run `job`: once kwok runs it, terminates its
/// container with exit code 1.
async fn fail_run_pod(client: &Client, namespace: &str, job: &str) {
    let pod = support::terminate_job_pod(client, namespace, job, "http", 1, "").await;
    let labels = pod.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("clouddeck.io/cronjob").map(String::as_str),
        Some("nightly"),
        "the run's pod carries the CronJob's label: {labels:?}"
    );
}

/// The CronJob `nightly`'s delivery log entries of `event_type`.
async fn deliveries(log: &Api<WebhookDelivery>, event_type: &str) -> Vec<WebhookDelivery> {
    log.list(&ListParams::default().labels("clouddeck.io/webhook=cron-events"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.spec.event_type == event_type)
        .collect()
}

/// User story: "I schedule a POST to /api/cron of my production deployment, in my time
/// zone. CloudDeck runs it against whatever production serves; when a run fails I get a
/// Warning Event on my CronJob telling me how to read the run's output, the CronJob says
/// when it last failed, and my webhook gets exactly one `cronjob.failed`. After the next
/// promotion the runs call the new production deployment."
#[tokio::test]
async fn a_cron_job_calls_production_reports_a_failed_run_and_follows_promotion() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-cron").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "cron")
        .start_leading()
        .await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let crons = Api::<CronJob>::namespaced(client.clone(), &ns.name);
    let batch = Api::<BatchCronJob>::namespaced(client.clone(), &ns.name);

    create(
        &projects,
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "cronshop" },
            "spec": { "image": IMAGE }
        }),
    )
    .await;
    create(&deployments, production_deployment("shop-1", IMAGE)).await;
    wait_production(&projects, "shop-1").await;

    // A subscriber to cron job events, recording in the delivery log.
    support::recording_webhook(&client, &ns.name, "cron-events", &["cronjob.*"]).await;

    // Never due during the test: midnight on January 1st.
    create(
        &crons,
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
            "metadata": { "name": "nightly" },
            "spec": {
                "projectRef": { "name": "cronshop" },
                "schedule": "0 0 1 1 *",
                "timeZone": "Europe/Berlin",
                "timeoutSeconds": 60,
                "http": { "path": "/api/cron", "method": "POST" }
            }
        }),
    )
    .await;
    let first_url = format!("http://shop-1.{}.svc:80/api/cron", ns.name);
    let compiled = wait_run_url(&batch, "nightly", &first_url).await;
    assert_eq!(compiled.spec.schedule, "0 0 1 1 *");
    assert_eq!(compiled.spec.time_zone.as_deref(), Some("Europe/Berlin"));
    let args = compiled
        .spec
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[..5], ["-fsS", "-X", "POST", "--max-time", "60"]);
    let ready = eventually("CronJob nightly to be Ready", TIMEOUT, || async {
        let status = crons.get("nightly").await.ok()?.status?;
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")?
            .clone();
        (status.deployment.as_deref() == Some("shop-1")).then_some(ready)
    })
    .await;
    assert_eq!(ready.reason, "Scheduled");
    assert!(
        ready.message.contains("Europe/Berlin") && ready.message.contains(&first_url),
        "{}",
        ready.message
    );

    // A run, the way `kubectl create job --from=cronjob/...` starts one by hand, fails.
    start_run_by_hand(&ns.name, "nightly", "nightly-by-hand");
    fail_run_pod(&client, &ns.name, "nightly-by-hand").await;

    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let warning = eventually("a JobFailed Event on CronJob nightly", TIMEOUT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.kind.as_deref() == Some("CronJob")
                    && e.involved_object.api_version.as_deref() == Some("clouddeck.io/v1alpha1")
                    && e.involved_object.name.as_deref() == Some("nightly")
                    && e.reason.as_deref() == Some("JobFailed")
            })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.message.unwrap_or_default();
    assert!(
        note.contains("nightly-by-hand")
            && note.contains(&format!("kubectl logs -n {} job/nightly-by-hand", ns.name)),
        "{note}"
    );
    let status = crons.get("nightly").await.unwrap().status.unwrap();
    assert!(status.last_failure_time.is_some(), "{status:?}");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "LastRunFailed")
    );

    let log = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    let failed = deliveries(&log, "cronjob.failed").await;
    assert_eq!(failed.len(), 1, "exactly one cronjob.failed delivery");
    let data = &failed[0].spec.payload_json()["data"];
    assert_eq!(data["cronJob"], "nightly");
    assert_eq!(data["job"], "nightly-by-hand");
    assert_eq!(data["project"], "cronshop");

    // A promotion moves the runs to the new production deployment.
    let second = IMAGE.replace("sha256:1111", "sha256:2222");
    create(&deployments, production_deployment("shop-2", &second)).await;
    wait_production(&projects, "shop-2").await;
    wait_run_url(
        &batch,
        "nightly",
        &format!("http://shop-2.{}.svc:80/api/cron", ns.name),
    )
    .await;
    eventually("CronJob nightly to target shop-2", TIMEOUT, || async {
        let status = crons.get("nightly").await.ok()?.status?;
        (status.deployment.as_deref() == Some("shop-2")).then_some(())
    })
    .await;
    // The reconciles since reported nothing twice.
    assert_eq!(deliveries(&log, "cronjob.failed").await.len(), 1);
}
