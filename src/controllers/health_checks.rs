//! How GitOps tools read every end state of every kind, checked against the controllers'
//! own status functions: the kstatus rules (Flux, cli-utils appliers, `kubectl wait`-style
//! tooling) as `sigs.k8s.io/cli-utils` defines them, and the Argo CD health script
//! `config/argocd/health.lua`, run in a Lua interpreter. The e2e test `kstatus::` runs
//! the real kstatus library against live objects.
//!
//! `config/argocd/health-checks.yaml` (the script in argocd-cm form, one key per kind) is
//! generated here: `CLOUDDECK_UPDATE_CONFIG=1 cargo test --lib health_checks` rewrites it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::conditions::Conditions;
use crate::api::deployment::DeploymentPhase;
use crate::api::webhook_delivery::WebhookDeliveryStatus;
use crate::controllers::cron_job::status as cron_job;
use crate::controllers::deployment::status::{self as deployment, BuildState, Observed};
use crate::controllers::deployment::status::{RolloutState, Stop};
use crate::controllers::domain::status::{self as domain, Ownership, Serving};
use crate::controllers::edge_handler::{self, status::Observed as EdgeObserved};
use crate::controllers::project::status as project;
use crate::controllers::split_test::{
    self,
    status::{Observed as SplitObserved, Running as SplitRunning},
};
use crate::controllers::webhook_delivery::status::{self as delivery, AttemptResult};
use crate::delivery::schedule::RetrySchedule;
use crate::dns::verification::{Verification, VerificationRecord};

const SCRIPT: &str = include_str!("../../config/argocd/health.lua");
const GENERATION: i64 = 4;

/// kstatus's reading (`sigs.k8s.io/cli-utils/pkg/kstatus/status`, generic rules for
/// custom resources): a newer generation than the status observed is InProgress; then
/// the first of `Reconciling=True` (InProgress) or `Stalled=True` (Failed); else Current.
fn kstatus(object: &Value) -> &'static str {
    let status = &object["status"];
    if let Some(observed) = status["observedGeneration"].as_i64()
        && Some(observed) != object["metadata"]["generation"].as_i64()
    {
        return "InProgress";
    }
    for condition in status["conditions"].as_array().into_iter().flatten() {
        match (condition["type"].as_str(), condition["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return "InProgress",
            (Some("Stalled"), Some("True")) => return "Failed",
            _ => {}
        }
    }
    "Current"
}

/// What the Argo CD health script says of `object`: (status, message).
fn argo_health(object: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    let obj = mlua::LuaSerdeExt::to_value(&lua, object).expect("object as a Lua table");
    lua.globals().set("obj", obj).expect("set obj");
    let hs: mlua::Table = lua.load(SCRIPT).eval().expect("the health script runs");
    (
        hs.get("status").expect("hs.status"),
        hs.get("message").expect("hs.message"),
    )
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

fn object(kind: &str, conditions: Vec<Condition>) -> Value {
    json!({
        "apiVersion": "clouddeck.io/v1alpha1",
        "kind": kind,
        "metadata": { "name": "x", "namespace": "team", "generation": GENERATION },
        "status": { "observedGeneration": GENERATION, "conditions": conditions },
    })
}

fn deployment_state(previous: Option<DeploymentPhase>, observed: Observed) -> Value {
    let step = deployment::next(previous, &observed);
    let mut list = Vec::new();
    deployment::apply_condition(&mut list, Some(GENERATION), now(), &step);
    object("Deployment", list)
}

fn observed(build: Option<BuildState>, rollout: Option<RolloutState>) -> Observed {
    Observed {
        stop: None,
        build,
        rollout,
        url: "https://web-1.apps.example".into(),
        standby: false,
    }
}

fn project_state(serving: Option<(&str, &str)>, in_progress: bool) -> Value {
    let mut list = Vec::new();
    project::set_conditions(&mut list, Some(GENERATION), now(), serving, in_progress);
    object("Project", list)
}

fn cron_job_state(state: cron_job::State) -> Value {
    let mut list = Vec::new();
    cron_job::set_conditions(&mut list, Some(GENERATION), now(), "team", &state);
    object("CronJob", list)
}

fn domain_state(ownership: Ownership, serving: Option<Serving>) -> Value {
    let record = VerificationRecord::for_domain("shop.example.com", "uid-1");
    let verified = domain::verified_condition(&ownership, "shop.example.com", &record, false);
    let mut list = Vec::new();
    domain::set_conditions(
        &mut Conditions::at(&mut list, Some(GENERATION), now()),
        &verified,
        serving.as_ref(),
        (None, None),
    );
    object("Domain", list)
}

fn delivery_state(edit: impl FnOnce(&mut WebhookDeliveryStatus, Timestamp)) -> Value {
    let mut status = WebhookDeliveryStatus::default();
    edit(&mut status, now().0);
    object("WebhookDelivery", status.conditions)
}

fn answer(code: u16) -> AttemptResult {
    AttemptResult {
        status: Some(code),
        latency: None,
        response_body: None,
        error: None,
        retry_after: None,
    }
}

fn settled(code: u16, attempts: usize) -> Value {
    let schedule = RetrySchedule::new(vec![std::time::Duration::from_secs(5); attempts]);
    delivery_state(|status, at| {
        delivery::claim(status, Some(GENERATION), None, at);
        delivery::settle(status, &answer(code), &schedule, 0.0, Some(GENERATION), at);
    })
}

/// The Webhook controller's decision is inline in its reconcile; these are the helpers
/// it calls for each outcome.
fn edge_state(observed: &edge_handler::status::Observed) -> Value {
    let status = edge_handler::status::next_status(&Default::default(), Some(GENERATION), observed);
    object("EdgeHandler", status.conditions)
}

fn split_state(observed: &split_test::status::Observed) -> Value {
    let status = split_test::status::next_status(&Default::default(), Some(GENERATION), observed);
    object("SplitTest", status.conditions)
}

fn webhook_state(decide: impl FnOnce(&mut Conditions<'_>)) -> Value {
    let mut list = Vec::new();
    decide(&mut Conditions::at(&mut list, Some(GENERATION), now()));
    object("Webhook", list)
}

/// Every end state of every kind with what kstatus and Argo CD must make of it.
fn end_states() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    use DeploymentPhase::*;
    let failed_build = BuildState::Failed {
        reason: "BuildFailed",
        message: "exit code 1".into(),
    };
    let stalled_rollout = RolloutState::Stalled {
        message: "no progress for 600s".into(),
    };
    let building = BuildState::Running {
        pod: Some("web-1-build".into()),
    };
    let progressing = RolloutState::Progressing {
        available: 0,
        desired: 1,
    };
    let mut canceled = observed(Some(building.clone()), None);
    canceled.stop = Some(Stop::Canceled);
    let mut superseded = observed(Some(building.clone()), None);
    superseded.stop = Some(Stop::SupersededBy("web-2".into()));
    let mut standby = observed(None, Some(RolloutState::Available));
    standby.standby = true;
    let record_missing = Ownership::Unverified(Verification::RecordMissing);
    let taken = Ownership::Taken {
        namespace: "other".into(),
        name: "shop".into(),
        same_namespace: false,
    };
    vec![
        (
            "Deployment ready",
            deployment_state(
                Some(Deploying),
                observed(None, Some(RolloutState::Available)),
            ),
            "Current",
            "Healthy",
        ),
        (
            "Deployment on standby",
            deployment_state(Some(Ready), standby),
            "Current",
            "Healthy",
        ),
        (
            "Deployment building",
            deployment_state(Some(Queued), observed(Some(building.clone()), None)),
            "InProgress",
            "Progressing",
        ),
        (
            "Deployment rolling out",
            deployment_state(Some(Deploying), observed(None, Some(progressing))),
            "InProgress",
            "Progressing",
        ),
        (
            "Deployment whose build failed",
            deployment_state(Some(Building), observed(Some(failed_build), None)),
            "Failed",
            "Degraded",
        ),
        (
            "Deployment whose rollout stalled",
            deployment_state(Some(Deploying), observed(None, Some(stalled_rollout))),
            "Failed",
            "Degraded",
        ),
        (
            "Deployment canceled",
            deployment_state(Some(Building), canceled),
            "Current",
            "Suspended",
        ),
        (
            "Deployment superseded",
            deployment_state(Some(Building), superseded),
            "Current",
            "Suspended",
        ),
        (
            "Project serving",
            project_state(Some(("web-1", "https://web.apps.example")), false),
            "Current",
            "Healthy",
        ),
        (
            "Project waiting for its first production Deployment",
            project_state(None, true),
            "InProgress",
            "Progressing",
        ),
        (
            "Project with no production Deployment",
            project_state(None, false),
            "Failed",
            "Degraded",
        ),
        (
            "CronJob scheduled",
            cron_job_state(cron_job::State::Scheduled {
                schedule: "*/5 * * * *",
                time_zone: "UTC",
                target: "GET /tasks/sweep".into(),
                suspended: false,
                last_failure: None,
            }),
            "Current",
            "Healthy",
        ),
        (
            "CronJob waiting for its Project",
            cron_job_state(cron_job::State::ProjectNotFound { project: "web" }),
            "InProgress",
            "Progressing",
        ),
        (
            "Domain serving",
            domain_state(
                Ownership::Verified,
                Some(Serving::Deployment("web-1".into())),
            ),
            "Current",
            "Healthy",
        ),
        (
            "Domain waiting for its TXT record",
            domain_state(record_missing, None),
            "InProgress",
            "Progressing",
        ),
        (
            "Domain whose hostname another namespace owns",
            domain_state(taken, None),
            "Failed",
            "Degraded",
        ),
        (
            "WebhookDelivery delivered",
            settled(200, 3),
            "Current",
            "Healthy",
        ),
        (
            "WebhookDelivery retrying",
            settled(500, 3),
            "InProgress",
            "Progressing",
        ),
        (
            "WebhookDelivery out of attempts",
            settled(500, 0),
            "Failed",
            "Degraded",
        ),
        (
            "WebhookDelivery to an endpoint gone (410)",
            settled(410, 3),
            "Failed",
            "Degraded",
        ),
        (
            "WebhookDelivery given up (Webhook deleted)",
            delivery_state(|status, at| {
                delivery::give_up(status, "WebhookGone", "gone", Some(GENERATION), at)
            }),
            "Failed",
            "Degraded",
        ),
        (
            "EdgeHandler in every route",
            edge_state(&EdgeObserved::Applied {
                rules: 2,
                digest: "d",
                routes: vec![("web-production".into(), Some("d".into()))],
            }),
            "Current",
            "Healthy",
        ),
        (
            "EdgeHandler going into the routes",
            edge_state(&EdgeObserved::Applied {
                rules: 2,
                digest: "d",
                routes: vec![("web-production".into(), None)],
            }),
            "InProgress",
            "Progressing",
        ),
        (
            "EdgeHandler the gateway would reorder",
            edge_state(&EdgeObserved::Refused(&crate::routing::edge::Refusal {
                reason: "RuleOrder",
                field: "spec.rules[1].match".into(),
                message: "reordered".into(),
            })),
            "Failed",
            "Degraded",
        ),
        (
            "SplitTest scheduled",
            split_state(&SplitObserved::Scheduled {
                start: Timestamp::from_second(1_900_000_000).unwrap(),
            }),
            "Current",
            "Healthy",
        ),
        (
            "SplitTest waiting for a variant's Deployment",
            split_state(&SplitObserved::Running {
                resolved: &[],
                outcome: SplitRunning::WaitingForVariants,
            }),
            "InProgress",
            "Progressing",
        ),
        (
            "SplitTest held by another test of the Project",
            split_state(&SplitObserved::Running {
                resolved: &[],
                outcome: SplitRunning::Outranked { by: "older" },
            }),
            "Failed",
            "Degraded",
        ),
        (
            "SplitTest stopped",
            split_state(&SplitObserved::Stopped {
                why: "spec.stopTime has passed",
            }),
            "Current",
            "Suspended",
        ),
        (
            "Webhook subscribed",
            webhook_state(|c| c.ready("Subscribed", "delivering deployment.ready")),
            "Current",
            "Healthy",
        ),
        (
            "Webhook disabled",
            webhook_state(|c| c.ended("Disabled", "spec.disabled is true")),
            "Current",
            "Suspended",
        ),
        (
            "Webhook with an invalid subscription",
            webhook_state(|c| c.stalled("InvalidSpec", "spec.events[0]: unknown event")),
            "Failed",
            "Degraded",
        ),
    ]
}

#[test]
fn kstatus_reads_every_end_state_as_meant() {
    for (what, object, want, _) in end_states() {
        assert_eq!(kstatus(&object), want, "{what}: {object:#}");
    }
}

#[test]
fn the_argo_cd_health_script_reads_every_end_state_as_meant() {
    for (what, object, _, want) in end_states() {
        let (status, message) = argo_health(&object);
        assert_eq!(status, want, "{what}: {object:#}");
        assert!(!message.is_empty(), "{what}: a message says why");
    }
}

#[test]
fn the_argo_cd_health_script_waits_for_the_operator() {
    let fresh = json!({ "kind": "SplitTest", "metadata": { "name": "x", "generation": 1 } });
    assert_eq!(argo_health(&fresh).0, "Progressing");
    let mut edited = project_state(Some(("web-1", "https://web.apps.example")), false);
    edited["metadata"]["generation"] = json!(GENERATION + 1);
    assert_eq!(argo_health(&edited).0, "Progressing");
    assert_eq!(kstatus(&edited), "InProgress");
    let mut degraded = webhook_state(|c| c.ready("Subscribed", "delivering"));
    let mut list: Vec<Condition> =
        serde_json::from_value(degraded["status"]["conditions"].take()).unwrap();
    Conditions::at(&mut list, Some(GENERATION), now()).set(
        crate::api::conditions::DEGRADED,
        crate::api::conditions::Status::True,
        "DeliveriesFailing",
        "the last 5 delivery attempts failed",
    );
    degraded["status"]["conditions"] = json!(list);
    assert_eq!(argo_health(&degraded).0, "Degraded");
}

/// The script in argocd-cm form, one key per user-facing kind.
fn argocd_cm_patch() -> String {
    let mut out = String::from(
        "# Argo CD health checks for CloudDeck's kinds: merge into the argocd-cm ConfigMap,\n\
         #   kubectl -n argocd patch configmap argocd-cm --type merge \\\n\
         #     --patch-file config/argocd/health-checks.yaml\n\
         # Generated from config/argocd/health.lua by\n\
         #   CLOUDDECK_UPDATE_CONFIG=1 cargo test --lib health_checks\n\
         data:\n",
    );
    let kinds = crate::api::crds()
        .into_iter()
        .filter(|crd| crd.spec.scope == "Namespaced")
        .map(|crd| (crd.spec.group, crd.spec.names.kind));
    for (group, kind) in kinds {
        out.push_str(&format!(
            "  resource.customizations.health.{group}_{kind}: |\n"
        ));
        for line in SCRIPT.lines() {
            match line {
                "" => out.push('\n'),
                line => out.push_str(&format!("    {line}\n")),
            }
        }
    }
    out
}

#[test]
fn the_argocd_cm_patch_carries_the_script_for_every_namespaced_kind() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/argocd/health-checks.yaml"
    );
    let want = argocd_cm_patch();
    if std::env::var_os("CLOUDDECK_UPDATE_CONFIG").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is out of date: CLOUDDECK_UPDATE_CONFIG=1 cargo test --lib health_checks"
    );
    let parsed: Value = serde_yaml::from_str(&have).unwrap();
    let scripts = parsed["data"].as_object().unwrap();
    assert_eq!(scripts.len(), 8, "every kind a user applies");
    assert!(scripts.values().all(|s| s.as_str() == Some(SCRIPT)));
}
