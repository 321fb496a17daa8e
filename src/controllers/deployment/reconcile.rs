//! One reconcile of a CloudDeck Deployment: read (its Project) → validate → render →
//! apply (server-side) → status and Events.

use std::time::Duration;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment as Workload;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::DeploymentContext;
use super::render;
use super::status::{self, BuildState, Finished, Observed, RolloutState, Stop};
use crate::api::conditions;
use crate::api::deployment::{
    Deployment, DeploymentPhase, DeploymentStatus, GitRevision, PhaseTimings,
};
use crate::api::hostname_claim::HolderKind;
use crate::api::project::{BuildSpec, GitSource, Project};
use crate::api::validation::{self, InvalidField};
use crate::build::{self, BuildConfig, BuildJobInput, build_job_name, parse_termination_message};
use crate::controllers::driver::reconciler;
use crate::controllers::edge_handler::plan_of;
use crate::controllers::error::{ReconcileError, Result};
use crate::controllers::events::publish;
use crate::controllers::project::status as project_status;
use crate::controllers::{
    CACHE_GRACE, Context, FIELD_MANAGER, applied, delete_if_present, just_made, stall,
    stall_invalid, write_status,
};
use crate::hostnames::{self, Authority, Claimant};
use crate::labels::{CANCEL, COMPONENT_LABEL, DEPLOYMENT_LABEL, STANDBY, SUPERSEDED_BY};
use crate::routing;
use crate::telemetry::OutcomeLabels;

reconciler!(DeploymentContext, Deployment, reconcile_and_prune);

/// Reconciles `deployment`, then forgets what was applied to children that are gone.
async fn reconcile_and_prune(
    deployment: &Deployment,
    deployments: &DeploymentContext,
) -> Result<Action> {
    let result = reconcile_deployment(deployment, deployments).await;
    deployments.prune_applied();
    result
}

/// What a Deployment deploys, once validated against its Project.
enum Plan<'a> {
    Build {
        git: &'a GitSource,
        revision: &'a GitRevision,
        build: Option<&'a BuildSpec>,
        repository: String,
    },
    Image(String),
}

async fn reconcile_deployment(
    deployment: &Deployment,
    deployments: &DeploymentContext,
) -> Result<Action> {
    let ctx = &deployments.ctx;
    let client = &ctx.client;
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let previous = deployment.status.as_ref().and_then(|s| s.phase);
    if status::is_terminal(previous) {
        if matches!(
            previous,
            Some(DeploymentPhase::Superseded | DeploymentPhase::Canceled)
        ) {
            delete_build_job(client, &namespace, &name).await?;
        }
        return Ok(Action::await_change());
    }

    // Read, then validate.
    let Some(project) = project_of(deployments, deployment).await? else {
        return Ok(Action::requeue(CACHE_GRACE));
    };
    adopt_by_project(ctx, deployment, &project).await?;
    let Some(key) = preview_key(deployments, deployment, &project).await? else {
        return Ok(waiting_for_key(&project));
    };
    let plan = match plan(deployment, &project, &ctx.config.build) {
        Ok(plan) => plan,
        Err(invalid) => return Err(stall_invalid(ctx, deployment, invalid).await),
    };

    // Build, unless the image is known; then roll out and route.
    let mut status = deployment.status.clone().unwrap_or_default();
    let stop = stop_of(deployment);
    let (image, build) = match stop {
        None => build_image(ctx, deployment, &project, &plan, &mut status).await?,
        Some(_) => (known_image(&plan, &status), None),
    };
    if status.commit.is_none() {
        status.commit = deployment
            .spec
            .source
            .git
            .as_ref()
            .and_then(|g| g.commit.clone());
    }
    // Only a Deployment that was Ready waits on standby; the Project controller sets it.
    let standby = previous == Some(DeploymentPhase::Ready)
        && deployment
            .annotations()
            .get(STANDBY)
            .is_some_and(|v| v == "true");
    let rollout = match (&image, &stop) {
        (Some(image), None) => {
            Some(roll_out(deployments, deployment, &project, (image, &key), standby).await?)
        }
        _ => None,
    };

    let base = &ctx.config.routing.base_domain;
    let observed = Observed {
        stop,
        build,
        rollout,
        url: routing::url(&render::preview_hostname(deployment, &key, base)),
        standby,
    };
    let phase = report(ctx, deployment, &project, &observed, status).await?;
    Ok(match phase {
        DeploymentPhase::Queued | DeploymentPhase::Building => {
            Action::requeue(Duration::from_secs(30))
        }
        // Image pull failures show on pods, which are not watched: look again soon.
        DeploymentPhase::Deploying => Action::requeue(Duration::from_secs(5)),
        DeploymentPhase::Ready => Action::requeue(ctx.config.resync_period),
        _ => Action::await_change(),
    })
}

/// The Deployment's Project, or Stalled (`ProjectNotFound`) until it exists.
/// The Deployment's Project: from the cache, else from the API. `None` while a Deployment
/// made moments ago waits for its Project to reach the cache (the Project's event wakes
/// it); a Project that does not exist is `Stalled` (`ProjectNotFound`).
async fn project_of(
    deployments: &DeploymentContext,
    deployment: &Deployment,
) -> Result<Option<Project>> {
    let ctx = &deployments.ctx;
    let namespace = deployment.namespace().unwrap_or_default();
    let project_name = &deployment.spec.project_ref.name;
    if let Some(project) = deployments.cached_project(&namespace, project_name) {
        return Ok(Some(project));
    }
    if just_made(&deployment.metadata, Timestamp::now()) {
        return Ok(None);
    }
    if let Some(project) = deployments.read_project(&namespace, project_name).await? {
        return Ok(Some(project));
    }
    let message = format!(
        "spec.projectRef.name: Project {project_name:?} does not exist in namespace {namespace}"
    );
    stall(ctx, deployment, "ProjectNotFound", &message).await?;
    Err(ReconcileError::MissingReference(message))
}

/// The key of the Project's hostname, which the preview hostname is generated from; until
/// the Project holds one there is nothing this Deployment may be served under: `None` while
/// the Project controller has not taken it yet, Stalled (`ProjectHasNoHostname`) when the
/// Project is stalled for want of one.
async fn preview_key(
    deployments: &DeploymentContext,
    deployment: &Deployment,
    project: &Project,
) -> Result<Option<String>> {
    let ctx = &deployments.ctx;
    if let Some(key) = deployments.known_key(project) {
        return Ok(Some(key));
    }
    if let Some(key) = project_key(&ctx.client, project, &ctx.config.routing.base_domain).await? {
        deployments.remember_key(project, &key);
        return Ok(Some(key));
    }
    let stalled_for_hostname = project
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::STALLED))
        .is_some_and(|c| {
            // Stalled for want of a production Deployment is no hostname problem.
            c.status == "True" && c.reason != project_status::NO_PRODUCTION_DEPLOYMENT
        });
    if !stalled_for_hostname {
        return Ok(None);
    }
    let message = format!(
        "spec.projectRef.name: Project {} holds no hostname (see its status)",
        project.name_any()
    );
    stall(ctx, deployment, "ProjectHasNoHostname", &message).await?;
    Err(ReconcileError::MissingReference(message))
}

/// When to look again at a Deployment whose Project holds no key yet. Until the Project's
/// status names a hostname, never: the Project controller writes it once it holds the key,
/// and that change wakes the Project's Deployments (they watch Projects). Polling instead
/// cost every waiting Deployment a reconcile every 2 s: with 5,000 new Projects, about a
/// thousand a second that found nothing (issue #13). A status that names a hostname whose
/// claim does not name the Project (yet) is looked at again soon: a claim's change wakes
/// no Deployment.
fn waiting_for_key(project: &Project) -> Action {
    let named = project
        .status
        .as_ref()
        .is_some_and(|s| s.hostname.is_some());
    if named {
        Action::requeue(Duration::from_secs(2))
    } else {
        Action::await_change()
    }
}

/// Why the Deployment is to stop, if it is: canceled by its user, or superseded.
fn stop_of(deployment: &Deployment) -> Option<Stop> {
    let annotations = deployment.annotations();
    if annotations.get(CANCEL).is_some_and(|v| v == "true") {
        return Some(Stop::Canceled);
    }
    annotations
        .get(SUPERSEDED_BY)
        .map(|newer| Stop::SupersededBy(newer.clone()))
}

/// The image to run, when it is known without a build: given, or built before.
fn known_image(plan: &Plan<'_>, status: &DeploymentStatus) -> Option<String> {
    match plan {
        Plan::Image(image) => Some(image.clone()),
        Plan::Build { .. } => status.image_digest.clone(),
    }
}

/// The image to run and the build's state: a known image as it is, else the build Job run
/// (or looked at) now, its pod, commit and digest recorded in `status`.
async fn build_image(
    ctx: &Context,
    deployment: &Deployment,
    project: &Project,
    plan: &Plan<'_>,
    status: &mut DeploymentStatus,
) -> Result<(Option<String>, Option<BuildState>)> {
    let Plan::Build {
        git,
        revision,
        build,
        repository,
    } = plan
    else {
        return Ok((known_image(plan, status), None));
    };
    if let Some(image) = &status.image_digest {
        return Ok((Some(image.clone()), None));
    }
    let name = deployment.name_any();
    let owner = deployment
        .controller_owner_ref(&())
        .expect("a Deployment read from the API has a name and uid");
    let input = BuildJobInput {
        meta: render::child_meta(deployment, &build_job_name(&name), "build", &owner),
        git,
        revision,
        build: *build,
        repository,
        tag: &name,
        push_secret: project
            .spec
            .registry
            .as_ref()
            .and_then(|r| r.push_secret_ref.as_ref())
            .map(|s| s.name.as_str()),
        config: &ctx.config.build,
    };
    let namespace = deployment.namespace().unwrap_or_default();
    let (state, pod, commit) =
        run_build(&ctx.client, &namespace, &input)
            .await
            .map_err(|e| match e {
                BuildError::Invalid(invalid) => ReconcileError::InvalidSpec(invalid),
                BuildError::Kube(err) => ReconcileError::from(err),
            })?;
    status.build_pod = pod.or(status.build_pod.take());
    status.commit = commit.or(status.commit.take());
    let image = match &state {
        BuildState::Succeeded { digest } => Some(render::pinned_image(repository, digest)),
        _ => None,
    };
    if image.is_some() {
        status.image_digest = image.clone();
    }
    Ok((image, Some(state)))
}

/// Applies the workload, Service and preview route, and reads how the rollout goes. Each
/// child is sent only if it would change (see `controllers::applied`): a resync of a
/// settled Deployment writes nothing.
async fn roll_out(
    deployments: &DeploymentContext,
    deployment: &Deployment,
    project: &Project,
    (image, key): (&str, &str),
    standby: bool,
) -> Result<RolloutState> {
    let ctx = &deployments.ctx;
    let client = &ctx.client;
    let namespace = deployment.namespace().unwrap_or_default();
    let owner = deployment
        .controller_owner_ref(&())
        .expect("a Deployment read from the API has a name and uid");
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let replicas = render::replicas(deployment, project, standby);
    let workload = render::workload(deployment, project, image, replicas, &owner);
    let service = render::service(deployment, &owner);
    let edge = plan_of(
        &deployments.edge_handlers,
        &namespace,
        &deployment.spec.project_ref.name,
        &ctx.config.routing,
    );
    let route = render::preview_route(deployment, key, &ctx.config.routing, &edge, &owner);
    let applied = &deployments.applied;
    let workloads = Api::<Workload>::namespaced(client.clone(), &namespace);
    let returned = applied::apply(
        &workloads,
        &deployments.workloads,
        applied,
        &apply,
        &workload,
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), &namespace);
    applied::apply(&services, &deployments.services, applied, &apply, &service).await?;
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &namespace);
    applied::apply(&routes, &deployments.routes, applied, &apply, &route).await?;
    // The rollout as the apply returned it, or as the watch last saw it (each change of the
    // workload's status wakes this reconcile).
    match returned.or_else(|| deployments.workload(&workload)) {
        Some(live) => observe_rollout(client, &namespace, &deployment.name_any(), &live).await,
        None => Ok(RolloutState::Progressing {
            available: 0,
            desired: replicas,
        }),
    }
}

/// Records what was observed: the next phase and its timings in the status, webhook events
/// before the status that records the change (a crash in between publishes again, and the
/// deliveries' deterministic names make that a no-op), the status, metrics and Events.
async fn report(
    ctx: &Context,
    deployment: &Deployment,
    project: &Project,
    observed: &Observed,
    mut status: DeploymentStatus,
) -> Result<DeploymentPhase> {
    let client = &ctx.client;
    let previous = deployment.status.as_ref().and_then(|s| s.phase);
    let step = status::next(previous, observed);
    let now = Time(Timestamp::now());
    let mut timings = status.timings.clone().unwrap_or_default();
    if timings.queued_at.is_none() {
        timings.queued_at = deployment.metadata.creation_timestamp.clone();
    }
    let before = timings.clone();
    status::stamp(&mut timings, previous, step.phase, &now);
    status::apply_condition(
        &mut status.conditions,
        deployment.metadata.generation,
        now,
        &step,
    );
    status.phase = Some(step.phase);
    status.observed_generation = deployment.metadata.generation;
    status.url = Some(observed.url.clone());
    status.timings = Some(timings);
    let (_, reason, message) = &step.condition;
    let publisher = ctx.publisher();
    for event in render::platform_events(
        deployment, project, previous, step.phase, &status, message, reason,
    ) {
        publisher
            .publish(&event)
            .await
            .map_err(ReconcileError::publish)?;
    }
    write_status(ctx, deployment, &status).await?;
    record_finished(ctx, previous, &step, &before, status.timings.as_ref());
    for event in &step.events {
        publish(
            &ctx.recorder,
            deployment,
            event.type_,
            event.reason,
            "Reconcile",
            &event.message,
        )
        .await;
    }
    if matches!(
        step.phase,
        DeploymentPhase::Superseded | DeploymentPhase::Canceled
    ) {
        let namespace = deployment.namespace().unwrap_or_default();
        delete_build_job(client, &namespace, &deployment.name_any()).await?;
    }
    Ok(step.phase)
}

/// Checks the Deployment against its Project and the operator configuration.
fn plan<'a>(
    deployment: &'a Deployment,
    project: &'a Project,
    config: &BuildConfig,
) -> Result<Plan<'a>, InvalidField> {
    let name = deployment.name_any();
    if !is_dns_1035_label(&name) {
        // Refused at admission since the rule was added; one admitted before stays here.
        return Err(InvalidField::new(
            "metadata.name",
            crate::api::DEPLOYMENT_NAME_MESSAGE,
        ));
    }
    let project_name = project.name_any();
    validation::project(&project.spec).map_err(|e| {
        InvalidField::new(
            e.field.clone(),
            format!("{} (in Project {project_name})", e.message),
        )
    })?;
    if let Some(image) = &deployment.spec.source.image {
        return Ok(Plan::Image(image.clone()));
    }
    let Some(revision) = &deployment.spec.source.git else {
        return Err(InvalidField::new(
            "spec.source",
            "names neither git nor image",
        ));
    };
    let Some(git) = &project.spec.git else {
        return Err(InvalidField::new(
            "spec.source.git",
            format!(
                "Project {project_name} runs a prebuilt image and has no git repository: deploy spec.source.image instead"
            ),
        ));
    };
    if let Some(registry) = &project.spec.registry
        && let Err(message) = render::check_own_repository(
            &registry.repository,
            project.metadata.namespace.as_deref().unwrap_or_default(),
            config.default_registry.as_deref(),
        )
    {
        return Err(InvalidField::new(
            "spec.registry.repository",
            format!("{message} (in Project {project_name})"),
        ));
    }
    let Some(repository) = render::repository(project, config.default_registry.as_deref()) else {
        return Err(InvalidField::new(
            "spec.registry",
            format!(
                "Project {project_name} names no registry to push builds to, and the operator has no default registry"
            ),
        ));
    };
    Ok(Plan::Build {
        git,
        revision,
        build: project.spec.build.as_ref(),
        repository,
    })
}

fn is_dns_1035_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

enum BuildError {
    Invalid(InvalidField),
    Kube(kube::Error),
}

impl From<kube::Error> for BuildError {
    fn from(err: kube::Error) -> Self {
        BuildError::Kube(err)
    }
}

/// Creates the build Job once (deterministic name: a restarted operator finds it and never
/// starts a second build) and reads where it is: (state, build pod, built commit).
async fn run_build(
    client: &Client,
    namespace: &str,
    input: &BuildJobInput<'_>,
) -> Result<(BuildState, Option<String>, Option<String>), BuildError> {
    let jobs = Api::<Job>::namespaced(client.clone(), namespace);
    let job_name = input.meta.name.clone().unwrap_or_default();
    let job = match jobs.get_opt(&job_name).await? {
        Some(job) => job,
        None => {
            // The template of an existing Job is immutable: apply only to create.
            let desired = build::build_job(input).map_err(BuildError::Invalid)?;
            if let Some(message) = admission_refusal(client, namespace, &desired).await? {
                let state = BuildState::Failed {
                    reason: "BuildPodRefused",
                    message,
                };
                return Ok((state, None, None));
            }
            jobs.patch(
                &job_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await?
        }
    };
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await?;
    let pod = pods
        .items
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone());
    Ok(observe_build(&job, pod, namespace))
}

/// Asks the apiserver, with a dry-run create, whether the pod `job` would create is
/// admitted: Pod Security admission (and any policy or webhook) judges pods, not Jobs, so a
/// refused build pod would otherwise only show as a Job that never starts, and the build
/// would wait for its deadline. Returns the refusal, meant for the user.
async fn admission_refusal(
    client: &Client,
    namespace: &str,
    job: &Job,
) -> Result<Option<String>, BuildError> {
    let Some(template) = job.spec.as_ref().map(|spec| &spec.template) else {
        return Ok(None);
    };
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.generate_name = Some(format!("{}-", job.name_any()));
    let pod = Pod {
        metadata: meta,
        spec: template.spec.clone(),
        status: None,
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&params, &pod)
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if refused_by_admission(status.code, &status.message) => {
            Ok(Some(format!(
                "the build pod is refused in namespace {namespace}: {} (see docs/pipeline.md, Pod Security)",
                status.message
            )))
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            // The operator's own role lacks the dry-run create (an older install): build
            // without the early check rather than fail every build.
            warn!(error = %status.message, "cannot check build pods at admission; grant create on pods (dry-run only)");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether an apiserver answer to a pod create is admission refusing the pod itself (Pod
/// Security, a ValidatingAdmissionPolicy, a webhook), rather than RBAC refusing the
/// operator or a transient failure.
pub fn refused_by_admission(code: u16, message: &str) -> bool {
    match code {
        // RBAC says "... cannot create resource \"pods\" ..."; admission says why the pod is
        // not allowed (Pod Security: "violates PodSecurity").
        403 => !message.contains("cannot create resource"),
        400 | 422 => true,
        _ => false,
    }
}

/// Reads the build's state from its Job and Pod.
pub fn observe_build(
    job: &Job,
    pod: Option<&Pod>,
    namespace: &str,
) -> (BuildState, Option<String>, Option<String>) {
    let pod_name = pod.map(ResourceExt::name_any);
    let job_status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        job_status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
            .cloned()
    };
    let statuses = pod.and_then(|p| p.status.as_ref());
    let terminated = |init: bool, name: &str| {
        let list = if init {
            statuses.and_then(|s| s.init_container_statuses.as_ref())
        } else {
            statuses.and_then(|s| s.container_statuses.as_ref())
        };
        list.into_iter()
            .flatten()
            .find(|c| c.name == name)
            .and_then(|c| c.state.as_ref()?.terminated.clone())
    };
    let logs = |container: &str| match &pod_name {
        Some(pod) => format!("; logs: kubectl logs -n {namespace} {pod} -c {container}"),
        None => String::new(),
    };
    if condition("Complete").is_some() || condition("SuccessCriteriaMet").is_some() {
        let result = terminated(false, build::job::BUILD_CONTAINER)
            .and_then(|t| t.message)
            .and_then(|m| parse_termination_message(&m));
        return match result {
            Some(result) => (
                BuildState::Succeeded {
                    digest: result.digest,
                },
                pod_name,
                result.commit,
            ),
            None => (
                BuildState::NoResult {
                    pod: pod_name.clone(),
                },
                pod_name,
                None,
            ),
        };
    }
    if let Some(failed) = condition("Failed").or_else(|| condition("FailureTarget")) {
        if failed.reason.as_deref() == Some("DeadlineExceeded") {
            let deadline = job
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .unwrap_or_default();
            let message = format!(
                "the build ran longer than its timeout ({deadline}s, spec.build.timeout of the Project){}",
                logs("build")
            );
            return (
                BuildState::Failed {
                    reason: "BuildTimedOut",
                    message,
                },
                pod_name,
                None,
            );
        }
        if let Some(clone) =
            terminated(true, build::job::CLONE_CONTAINER).filter(|t| t.exit_code != 0)
        {
            let message = format!(
                "cloning the source failed (exit code {}): check the Project's spec.git url, branch, commit and credentials{}",
                clone.exit_code,
                logs("clone")
            );
            return (
                BuildState::Failed {
                    reason: "SourceNotFound",
                    message,
                },
                pod_name,
                None,
            );
        }
        let exit = terminated(false, build::job::BUILD_CONTAINER)
            .map(|t| format!(" (exit code {})", t.exit_code))
            .unwrap_or_default();
        let message = format!("the build failed{exit}{}", logs("build"));
        return (
            BuildState::Failed {
                reason: "BuildFailed",
                message,
            },
            pod_name,
            None,
        );
    }
    let running = job_status.ready.unwrap_or_default() > 0
        || statuses
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| matches!(p, "Running" | "Succeeded" | "Failed"));
    if running {
        (
            BuildState::Running {
                pod: pod_name.clone(),
            },
            pod_name,
            None,
        )
    } else {
        (BuildState::Pending, pod_name, None)
    }
}

/// Reads the rollout's state from the applied workload and, when it is not available,
/// from its pods: image pull errors only show there, and a rollout that stalled says why
/// when the scheduler could not place its pods.
async fn observe_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    workload: &Workload,
) -> Result<RolloutState> {
    let state = rollout_state(workload);
    // A stalled rollout is about to fail for good: its pods always say why. One that is
    // progressing is worth a look only once it has gone a while without progress.
    let look = match state {
        RolloutState::Available => false,
        RolloutState::Stalled { .. } => true,
        _ => !progressed_lately(workload, Timestamp::now()),
    };
    if !look {
        return Ok(state);
    }
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(
            &ListParams::default()
                .labels(&format!("{DEPLOYMENT_LABEL}={name},{COMPONENT_LABEL}=app")),
        )
        .await?
        .items;
    Ok(with_pod_diagnosis(state, &pods))
}

/// How long a rollout may go without progress before its pods are looked at.
const PODS_LOOKED_AT_AFTER: i64 = 5;

/// Whether the rollout progressed (a new ReplicaSet, a pod became ready) within the last
/// few seconds, or Kubernetes has not seen the latest workload yet: its pods are then not
/// worth a request yet (most rollouts are available a moment later; one that is stuck is
/// looked at on the next requeue).
pub fn progressed_lately(workload: &Workload, now: Timestamp) -> bool {
    let Some(status) = &workload.status else {
        return true;
    };
    if status.observed_generation.unwrap_or_default()
        < workload.metadata.generation.unwrap_or_default()
    {
        return true;
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.status == "True")
        .and_then(|c| c.last_update_time.as_ref())
        .is_some_and(|at| now.as_second() - at.0.as_second() < PODS_LOOKED_AT_AFTER)
}

/// Adds what the pods tell to a rollout that is not available: an image that cannot be
/// pulled fails it at once; an unschedulable pod explains a stalled rollout (while it
/// progresses, a node may still come, e.g. from a cluster autoscaler).
pub fn with_pod_diagnosis(state: RolloutState, pods: &[Pod]) -> RolloutState {
    match state {
        RolloutState::Progressing { .. } => match image_pull_failure(pods) {
            Some(message) => RolloutState::ImagePullFailed { message },
            None => state,
        },
        RolloutState::Stalled { message } => RolloutState::Stalled {
            message: match unschedulable(pods) {
                Some(why) => format!("{message}; {why}"),
                None => message,
            },
        },
        other => other,
    }
}

fn image_pull_failure(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())?;
        statuses.iter().find_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref().unwrap_or_default();
            matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
            )
            .then(|| {
                format!(
                    "pod {} cannot pull image {}: {reason}: {}",
                    pod.name_any(),
                    container.image,
                    waiting
                        .message
                        .as_deref()
                        .unwrap_or("check the image name and the registry's pull credentials")
                )
            })
        })
    })
}

fn unschedulable(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let scheduled = pod
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        Some(format!(
            "pod {} cannot be scheduled: {}",
            pod.name_any(),
            scheduled
                .message
                .as_deref()
                .unwrap_or("no node fits its requests")
        ))
    })
}

/// Ready when the current generation is rolled out and every replica is updated and
/// available; stalled when Kubernetes reports the progress deadline passed.
pub fn rollout_state(workload: &Workload) -> RolloutState {
    let desired = workload.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = workload.status.clone().unwrap_or_default();
    let current = status.observed_generation.unwrap_or_default()
        >= workload.metadata.generation.unwrap_or_default();
    if let Some(progressing) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && progressing.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return RolloutState::Stalled {
            message: format!(
                "the rollout made no progress for {}s: {}",
                workload
                    .spec
                    .as_ref()
                    .and_then(|s| s.progress_deadline_seconds)
                    .unwrap_or(render::DEFAULT_PROGRESS_DEADLINE_SECONDS),
                progressing
                    .message
                    .as_deref()
                    .unwrap_or("pods did not become ready")
            ),
        };
    }
    let available = status.available_replicas.unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or_default();
    if current && updated >= desired && available >= desired {
        RolloutState::Available
    } else {
        RolloutState::Progressing { available, desired }
    }
}

/// Makes the Project an owner (not the controller) of the Deployment, so deleting the
/// Project deletes its Deployments and, through theirs, everything they created.
async fn adopt_by_project(ctx: &Context, deployment: &Deployment, project: &Project) -> Result<()> {
    let uid = project.metadata.uid.clone().unwrap_or_default();
    if deployment.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    let owner = OwnerReference {
        api_version: "clouddeck.io/v1alpha1".into(),
        kind: "Project".into(),
        name: project.name_any(),
        uid,
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    let patch = json!({
        "apiVersion": "clouddeck.io/v1alpha1",
        "kind": "Deployment",
        "metadata": { "name": deployment.name_any(), "ownerReferences": [owner] }
    });
    let namespace = deployment.namespace().unwrap_or_default();
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
    let returned = api
        .patch(
            &deployment.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    let version = returned.meta().resource_version.as_deref();
    ctx.written.record(deployment.meta(), "owner", version);
    Ok(())
}

/// Counts the build or rollout a phase change finished.
fn record_finished(
    ctx: &Context,
    previous: Option<DeploymentPhase>,
    step: &status::Step,
    before: &PhaseTimings,
    after: Option<&PhaseTimings>,
) {
    let Some(after) = after else { return };
    let metrics = &ctx.metrics.pipeline;
    for done in status::finished(previous, step.phase, before, after, step.condition.1) {
        let (count, duration, outcome, seconds) = match done {
            Finished::Build(outcome, seconds) => {
                (&metrics.builds, &metrics.build_duration, outcome, seconds)
            }
            Finished::Rollout(outcome, seconds) => (
                &metrics.rollouts,
                &metrics.rollout_duration,
                outcome,
                seconds,
            ),
        };
        let labels = OutcomeLabels { outcome };
        count.get_or_create(&labels).inc();
        if let Some(seconds) = seconds {
            duration.get_or_create(&labels).observe(seconds);
        }
    }
}

/// Reports a spec or reference problem: `Stalled` naming the field, and a Warning Event.
/// The key `project` holds, read from its status and checked against the claim: only a
/// key whose claim names this very Project (namespace and uid) generates hostnames.
async fn project_key(client: &Client, project: &Project, base: &str) -> Result<Option<String>> {
    let Some(hostname) = project.status.as_ref().and_then(|s| s.hostname.clone()) else {
        return Ok(None);
    };
    let Authority::Key(key) = hostnames::authority(&hostname, base) else {
        return Ok(None);
    };
    let me = Claimant::of(project, HolderKind::Project);
    Ok(hostnames::holds(client, &hostname, &me)
        .await?
        .then_some(key))
}

async fn delete_build_job(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let jobs = Api::<Job>::namespaced(client.clone(), namespace);
    delete_if_present(&jobs, &build_job_name(name)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_waits_for_its_project_s_key_without_polling_until_a_hostname_is_named() {
        let mut project: Project = serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "web", "namespace": "team" },
            "spec": { "image": "registry.example/web:1" }
        }))
        .unwrap();
        assert_eq!(waiting_for_key(&project), Action::await_change());
        project.status =
            Some(serde_json::from_value(json!({ "hostname": "k3y.clouddeck.example" })).unwrap());
        assert_eq!(
            waiting_for_key(&project),
            Action::requeue(Duration::from_secs(2))
        );
    }

    fn job(conditions: serde_json::Value, ready: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": { "name": "web-1-build" },
            "spec": { "activeDeadlineSeconds": 900, "template": { "spec": { "containers": [] } } },
            "status": { "conditions": conditions, "ready": ready }
        }))
        .unwrap()
    }

    fn pod(build_state: serde_json::Value, clone_exit: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-1-build-abcde" },
            "status": {
                "phase": "Running",
                "initContainerStatuses": [{ "name": "clone", "image": "git", "imageID": "", "ready": false, "restartCount": 0,
                    "state": { "terminated": { "exitCode": clone_exit } } }],
                "containerStatuses": [{ "name": "build", "image": "bk", "imageID": "", "ready": false, "restartCount": 0,
                    "state": build_state }]
            }
        }))
        .unwrap()
    }

    const DIGEST: &str = "sha256:4c1f0d4f3ad1b4e7c2d2b0f4f0d6e6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d";

    #[test]
    fn a_complete_job_yields_the_digest_from_the_termination_message() {
        let job = job(json!([{ "type": "Complete", "status": "True" }]), 0);
        let message = format!(r#"{{"digest":"{DIGEST}","commit":"abcdef1"}}"#);
        let pod = pod(
            json!({ "terminated": { "exitCode": 0, "message": message } }),
            0,
        );
        let (state, pod_name, commit) = observe_build(&job, Some(&pod), "team");
        assert_eq!(
            state,
            BuildState::Succeeded {
                digest: DIGEST.into()
            }
        );
        assert_eq!(pod_name.as_deref(), Some("web-1-build-abcde"));
        assert_eq!(commit.as_deref(), Some("abcdef1"));
    }

    #[test]
    fn admission_refusals_are_told_from_rbac_and_outages() {
        let psa = r#"pods "web-1-build-x" is forbidden: violates PodSecurity "baseline:latest": seccompProfile (pod or container "build" must not set securityContext.seccompProfile.type to "Unconfined")"#;
        assert!(refused_by_admission(403, psa));
        assert!(refused_by_admission(
            422,
            "admission webhook denied the request"
        ));
        let rbac = r#"pods is forbidden: User "system:serviceaccount:clouddeck-system:clouddeck" cannot create resource "pods" in API group "" in the namespace "team-a""#;
        assert!(!refused_by_admission(403, rbac));
        assert!(!refused_by_admission(500, "etcdserver: request timed out"));
        assert!(!refused_by_admission(429, "too many requests"));
    }

    #[test]
    fn failures_say_what_to_do() {
        let failed = job(
            json!([{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded" }]),
            0,
        );
        let (state, ..) = observe_build(
            &failed,
            Some(&pod(json!({ "terminated": { "exitCode": 1 } }), 0)),
            "team",
        );
        let BuildState::Failed { reason, message } = state else {
            panic!("{state:?}")
        };
        assert_eq!(reason, "BuildFailed");
        assert!(
            message.contains("exit code 1")
                && message.contains("kubectl logs -n team web-1-build-abcde -c build"),
            "{message}"
        );

        let (state, ..) = observe_build(&failed, Some(&pod(json!({ "waiting": {} }), 128)), "team");
        assert!(
            matches!(
                state,
                BuildState::Failed {
                    reason: "SourceNotFound",
                    ..
                }
            ),
            "{state:?}"
        );

        let timed_out = job(
            json!([{ "type": "Failed", "status": "True", "reason": "DeadlineExceeded" }]),
            0,
        );
        let (state, ..) = observe_build(&timed_out, None, "team");
        assert!(
            matches!(
                state,
                BuildState::Failed {
                    reason: "BuildTimedOut",
                    ..
                }
            ),
            "{state:?}"
        );
    }

    #[test]
    fn pending_then_running() {
        assert_eq!(
            observe_build(&job(json!([]), 0), None, "team").0,
            BuildState::Pending
        );
        let (state, ..) = observe_build(
            &job(json!([]), 1),
            Some(&pod(json!({ "running": {} }), 0)),
            "team",
        );
        assert_eq!(
            state,
            BuildState::Running {
                pod: Some("web-1-build-abcde".into())
            }
        );
    }

    fn workload(generation: i64, status: serde_json::Value) -> Workload {
        serde_json::from_value(json!({
            "metadata": { "name": "web-1", "generation": generation },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn rollout_is_available_only_when_current_updated_and_available() {
        let done = workload(
            2,
            json!({ "observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2 }),
        );
        assert_eq!(rollout_state(&done), RolloutState::Available);
        let stale = workload(
            3,
            json!({ "observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2 }),
        );
        assert!(matches!(
            rollout_state(&stale),
            RolloutState::Progressing { .. }
        ));
        let half = workload(
            2,
            json!({ "observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1 }),
        );
        assert_eq!(
            rollout_state(&half),
            RolloutState::Progressing {
                available: 1,
                desired: 2
            }
        );
        let stuck = workload(
            2,
            json!({ "observedGeneration": 2, "conditions": [
            { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-1-x has timed out progressing." }
        ] }),
        );
        assert!(matches!(
            rollout_state(&stuck),
            RolloutState::Stalled { .. }
        ));
    }

    #[test]
    fn pods_are_looked_at_only_once_a_rollout_stopped_progressing() {
        let now: Timestamp = "2026-12-04T12:00:10Z".parse().unwrap();
        let progressing_at = |at: &str| {
            workload(
                2,
                json!({ "observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1,
                    "conditions": [{ "type": "Progressing", "status": "True",
                        "reason": "ReplicaSetUpdated", "lastUpdateTime": at }] }),
            )
        };
        assert!(progressed_lately(
            &progressing_at("2026-12-04T12:00:08Z"),
            now
        ));
        assert!(!progressed_lately(
            &progressing_at("2026-12-04T12:00:01Z"),
            now
        ));
        let unseen = workload(3, json!({ "observedGeneration": 2 }));
        assert!(
            progressed_lately(&unseen, now),
            "not rolled out yet: no pods to see"
        );
        let no_condition = workload(2, json!({ "observedGeneration": 2 }));
        assert!(!progressed_lately(&no_condition, now));
        let timed_out_just_now = workload(
            2,
            json!({ "observedGeneration": 2, "conditions": [{ "type": "Progressing",
                "status": "False", "reason": "ProgressDeadlineExceeded",
                "lastUpdateTime": "2026-12-04T12:00:09Z" }] }),
        );
        assert!(
            !progressed_lately(&timed_out_just_now, now),
            "a deadline passing is no progress"
        );
    }

    fn app_pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-1-7d9f-x2" },
            "spec": { "containers": [] },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn pods_explain_a_rollout_that_is_not_available() {
        let progressing = RolloutState::Progressing {
            available: 0,
            desired: 1,
        };
        let pulling = app_pod(json!({ "containerStatuses": [{
            "name": "app", "image": "registry.invalid/a/b@sha256:00", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "no such host" } },
        }] }));
        let RolloutState::ImagePullFailed { message } =
            with_pod_diagnosis(progressing.clone(), std::slice::from_ref(&pulling))
        else {
            panic!("an image pull failure fails the rollout at once")
        };
        assert_eq!(
            message,
            "pod web-1-7d9f-x2 cannot pull image registry.invalid/a/b@sha256:00: \
             ImagePullBackOff: no such host"
        );

        let pending = app_pod(json!({ "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu.",
        }] }));
        // While it progresses a node may still come: no verdict yet.
        assert_eq!(
            with_pod_diagnosis(progressing, std::slice::from_ref(&pending)),
            RolloutState::Progressing {
                available: 0,
                desired: 1
            }
        );
        let stalled = RolloutState::Stalled {
            message: "the rollout made no progress for 30s: timed out".into(),
        };
        assert_eq!(
            with_pod_diagnosis(stalled.clone(), &[pending]),
            RolloutState::Stalled {
                message: "the rollout made no progress for 30s: timed out; pod web-1-7d9f-x2 \
                          cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."
                    .into()
            }
        );
        assert_eq!(with_pod_diagnosis(stalled.clone(), &[]), stalled);
        assert_eq!(
            with_pod_diagnosis(RolloutState::Available, &[pulling]),
            RolloutState::Available
        );
    }

    #[test]
    fn names_must_be_service_names() {
        assert!(is_dns_1035_label("web-1"));
        assert!(!is_dns_1035_label("1web"));
        assert!(!is_dns_1035_label("web.1"));
        assert!(!is_dns_1035_label(&"a".repeat(64)));
    }
}
