//! The desired children of a CloudDeck Deployment, as pure functions of the Deployment,
//! its Project and the operator configuration: metadata (labels, owner), the apps/v1
//! Deployment and Service that run it, the build Job and the preview HTTPRoute.

use std::collections::BTreeMap;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::{Deployment as Workload, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::deployment::{Deployment, DeploymentPhase, DeploymentStatus, Target};
use crate::api::edge_handler::ServedHostname;
use crate::api::project::Project;
use crate::config::RoutingConfig;
use crate::controllers::pod::{self, RunAs};
use crate::delivery::PlatformEvent;
use crate::labels::{COMPONENT_LABEL, DEPLOYMENT_LABEL, MANAGED_BY, MANAGER, PROJECT_LABEL};
use crate::routing::{self, SERVICE_PORT, edge::EdgePlan};

/// How long a rollout may make no progress before it counts as stalled.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 300;

/// The labels every child of a Deployment carries; `component` tells the build pod from
/// the application's pods.
pub fn labels(project: &str, deployment: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (PROJECT_LABEL.to_owned(), project.to_owned()),
        (DEPLOYMENT_LABEL.to_owned(), deployment.to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

/// Metadata of a child: name, the Deployment's namespace, the standard labels and the
/// Deployment as controller owner (so garbage collection removes the child with it).
pub fn child_meta(
    deployment: &Deployment,
    name: &str,
    component: &str,
    owner: &OwnerReference,
) -> ObjectMeta {
    let dep_name = deployment.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: deployment.metadata.namespace.clone(),
        labels: Some(labels(
            &deployment.spec.project_ref.name,
            &dep_name,
            component,
        )),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Replicas of a Deployment's workload: the Project's count in production, one for a
/// preview, none while it waits on standby for a rollback (beyond `spec.keepWarm`).
pub fn replicas(deployment: &Deployment, project: &Project, standby: bool) -> i32 {
    if standby {
        return 0;
    }
    match deployment.spec.target {
        Target::Production => project.spec.runtime.replicas,
        Target::Preview => 1,
    }
}

/// The image a Deployment's workload runs: its `spec.source.image`, or the image its
/// build pushed, pinned by digest. `None` while a build has not finished.
pub fn running_image(deployment: &Deployment) -> Option<String> {
    deployment.spec.source.image.clone().or_else(|| {
        deployment
            .status
            .as_ref()
            .and_then(|s| s.image_digest.clone())
    })
}

/// The apps/v1 Deployment running `image` with the Project's runtime settings and
/// `replicas` (see [`replicas`]).
pub fn workload(
    deployment: &Deployment,
    project: &Project,
    image: &str,
    replicas: i32,
    owner: &OwnerReference,
) -> Workload {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let meta = child_meta(deployment, &name, "app", owner);
    let pod_labels = meta.labels.clone();
    let runtime = &project.spec.runtime;
    let probe = |failures: i32, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(runtime.health_check_path.clone()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let container = Container {
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: runtime.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(3, 5)),
        liveness_probe: Some(probe(6, 10)),
        command: non_empty(&runtime.command),
        args: non_empty(&runtime.args),
        ..pod::runtime_container("app", image, runtime, RunAs::ImageUser)
    };
    let selector = BTreeMap::from([
        (DEPLOYMENT_LABEL.to_owned(), name.clone()),
        (COMPONENT_LABEL.to_owned(), "app".to_owned()),
    ]);
    Workload {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            progress_deadline_seconds: Some(
                runtime
                    .progress_deadline_seconds
                    .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
            ),
            revision_history_limit: Some(2),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: pod_labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod::pod_spec(container, false)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Service in front of the workload, on [`SERVICE_PORT`].
pub fn service(deployment: &Deployment, owner: &OwnerReference) -> Service {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: child_meta(deployment, &name, "app", owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([
                (DEPLOYMENT_LABEL.to_owned(), name.clone()),
                (COMPONENT_LABEL.to_owned(), "app".to_owned()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The preview hostname of a Deployment: `<key>--<short id>.<base domain>`, with the key
/// its Project holds (see [`crate::hostnames`]).
pub fn preview_hostname(deployment: &Deployment, key: &str, base_domain: &str) -> String {
    let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
    crate::hostnames::scheme::preview_hostname(key, uid, base_domain)
}

/// The preview HTTPRoute: the Deployment's own hostname to its Service.
pub fn preview_route(
    deployment: &Deployment,
    key: &str,
    routing: &RoutingConfig,
    edge: &EdgePlan,
    owner: &OwnerReference,
) -> HttpRoute {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let meta = child_meta(deployment, &name, "route", owner);
    let hostname = preview_hostname(deployment, key, &routing.base_domain);
    routing::project_route(
        meta,
        &hostname,
        &routing::Serving::Service(&name),
        routing,
        edge,
        ServedHostname::Preview,
    )
}

/// The image a git Deployment runs: the pushed repository pinned by the digest.
pub fn pinned_image(repository: &str, digest: &str) -> String {
    format!("{repository}@{digest}")
}

/// The repository a Project's images are pushed to: its own registry, else
/// `<default>/<namespace>/<project>`.
pub fn repository(project: &Project, default_registry: Option<&str>) -> Option<String> {
    if let Some(registry) = &project.spec.registry {
        return Some(registry.repository.clone());
    }
    let namespace = project.metadata.namespace.as_deref().unwrap_or("default");
    let name = project.metadata.name.as_deref().unwrap_or_default();
    default_registry.map(|base| format!("{}/{namespace}/{name}", base.trim_end_matches('/')))
}

/// Refuses a Project's own `spec.registry.repository` that lies under the operator's
/// default registry outside this namespace's path `<default>/<namespace>/`: builds push
/// there (and read their cache from there) with the platform's access, so such a path
/// would overwrite another team's images or poison its build cache.
pub fn check_own_repository(
    repository: &str,
    namespace: &str,
    default_registry: Option<&str>,
) -> Result<(), String> {
    let Some(default) = default_registry else {
        return Ok(());
    };
    let default = default.trim_end_matches('/').to_ascii_lowercase();
    let repository = repository.to_ascii_lowercase();
    let under_default = repository == default || repository.starts_with(&format!("{default}/"));
    let own = format!("{default}/{namespace}/");
    if under_default && !repository.starts_with(&own) {
        return Err(format!(
            "{repository} is in the operator's default registry but outside this namespace's \
             path {own}: use a repository under it, or leave spec.registry out"
        ));
    }
    Ok(())
}

/// The webhook events a phase change publishes (`deployment.created` on the first one,
/// `deployment.building|ready|failed`, and an `alert.*` for a failure); none when the
/// phase stays. Each id is `<uid>/<event type>`, so publishing
/// again after a crash or a retried reconcile creates no second delivery.
pub fn platform_events(
    deployment: &Deployment,
    project: &Project,
    previous: Option<DeploymentPhase>,
    next: DeploymentPhase,
    status: &DeploymentStatus,
    message: &str,
    failure_reason: &str,
) -> Vec<PlatformEvent> {
    if previous == Some(next) {
        return Vec::new();
    }
    let name = deployment.name_any();
    let event = |event_type: &str, summary: String| {
        let mut event = PlatformEvent::new(
            event_type,
            format!("{}/{event_type}", deployment.uid().unwrap_or_default()),
            &deployment.namespace().unwrap_or_default(),
            summary,
        )
        .with_project(
            &project.name_any(),
            project.metadata.labels.clone().unwrap_or_default(),
        )
        .with("deployment", name.clone())
        .with(
            "target",
            serde_json::to_value(deployment.spec.target).unwrap_or_default(),
        )
        .with("phase", serde_json::to_value(next).unwrap_or_default());
        if let Some(git) = &deployment.spec.source.git {
            event = event.with("branch", git.branch.clone());
        }
        if let Some(commit) = status.commit.as_ref().or(deployment
            .spec
            .source
            .git
            .as_ref()
            .and_then(|g| g.commit.as_ref()))
        {
            event = event.with("commit", commit.clone());
        }
        for (key, value) in [("url", &status.url), ("image", &status.image_digest)] {
            if let Some(value) = value {
                event = event.with(key, value.clone());
            }
        }
        event
    };
    let project_name = project.name_any();
    let mut events = Vec::new();
    if previous.is_none() {
        events.push(event(
            "deployment.created",
            format!("{project_name}: deployment {name} created"),
        ));
    }
    match next {
        DeploymentPhase::Building => events.push(event(
            "deployment.building",
            format!("{project_name}: deployment {name} is building"),
        )),
        DeploymentPhase::Ready => events.push(event(
            "deployment.ready",
            format!("{project_name}: deployment {name} is ready"),
        )),
        DeploymentPhase::Failed => {
            let alert = if failure_reason.starts_with("Build") {
                "alert.build_failed"
            } else {
                "alert.rollout_stalled"
            };
            let summary = format!("{project_name}: deployment {name} failed: {message}");
            for event_type in ["deployment.failed", alert] {
                events.push(
                    event(event_type, summary.clone())
                        .with("reason", failure_reason.to_owned())
                        .with("message", message.to_owned()),
                );
            }
        }
        DeploymentPhase::Queued
        | DeploymentPhase::Deploying
        | DeploymentPhase::Canceled
        | DeploymentPhase::Superseded => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn project() -> Project {
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "web", "namespace": "team" },
            "spec": {
                "git": { "url": "https://github.com/acme/web.git" },
                "runtime": {
                    "port": 8080, "replicas": 3, "healthCheckPath": "/healthz",
                    "command": ["node", "server.js"],
                    "env": [{ "name": "MODE", "value": "prod" }],
                    "envFrom": [{ "secretRef": { "name": "web-env" } }]
                }
            }
        }))
        .unwrap()
    }

    pub(crate) fn deployment(target: &str) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": "web-1", "namespace": "team", "uid": "7f3c9a21-0b4e-4c1d-9e8f-123456789abc" },
            "spec": { "projectRef": { "name": "web" }, "target": target, "source": { "git": { "branch": "main" } } }
        }))
        .unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "clouddeck.io/v1alpha1".into(),
            kind: "Deployment".into(),
            name: "web-1".into(),
            uid: "7f3c9a21-0b4e-4c1d-9e8f-123456789abc".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn routing() -> RoutingConfig {
        RoutingConfig {
            gateway_name: "edge".into(),
            gateway_namespace: "net".into(),
            base_domain: "apps.example.com".into(),
            deny_responder: None,
        }
    }

    fn event_types(events: &[PlatformEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn the_first_phase_announces_the_deployment_and_each_change_its_phase() {
        use DeploymentPhase::*;
        let (d, p) = (deployment("production"), project());
        let status = DeploymentStatus {
            url: Some("https://web-7f3c9a.apps.example.com".into()),
            commit: Some("3f9c2ab".into()),
            ..Default::default()
        };
        let events = |previous, next| platform_events(&d, &p, previous, next, &status, "m", "r");
        assert_eq!(event_types(&events(None, Queued)), ["deployment.created"]);
        assert_eq!(
            event_types(&events(None, Building)),
            ["deployment.created", "deployment.building"]
        );
        assert_eq!(
            event_types(&events(Some(Building), Deploying)),
            Vec::<&str>::new()
        );
        assert_eq!(
            event_types(&events(Some(Deploying), Ready)),
            ["deployment.ready"]
        );
        assert!(events(Some(Ready), Ready).is_empty(), "no change, no event");

        let ready = &events(Some(Deploying), Ready)[0];
        assert_eq!(
            ready.id,
            "7f3c9a21-0b4e-4c1d-9e8f-123456789abc/deployment.ready"
        );
        assert_eq!(ready.namespace, "team");
        assert_eq!(ready.project.as_ref().unwrap().name, "web");
        assert_eq!(ready.data["url"], "https://web-7f3c9a.apps.example.com");
        assert_eq!(ready.data["commit"], "3f9c2ab");
        assert_eq!(ready.data["branch"], "main");
    }

    #[test]
    fn a_failure_is_also_an_alert_naming_what_failed() {
        let (d, p) = (deployment("production"), project());
        let status = DeploymentStatus::default();
        let build = platform_events(
            &d,
            &p,
            Some(DeploymentPhase::Building),
            DeploymentPhase::Failed,
            &status,
            "the build container exited with code 1",
            "BuildFailed",
        );
        assert_eq!(
            event_types(&build),
            ["deployment.failed", "alert.build_failed"]
        );
        assert_eq!(build[1].data["reason"], "BuildFailed");
        assert_eq!(
            build[1].data["message"],
            "the build container exited with code 1"
        );
        let rollout = platform_events(
            &d,
            &p,
            Some(DeploymentPhase::Deploying),
            DeploymentPhase::Failed,
            &status,
            "pods cannot pull the image",
            "ImagePullFailed",
        );
        assert_eq!(
            event_types(&rollout),
            ["deployment.failed", "alert.rollout_stalled"]
        );
        assert_ne!(
            build[0].id, build[1].id,
            "each event type is its own delivery"
        );
    }

    #[test]
    fn workload_runs_the_pinned_image_with_the_project_runtime() {
        let image = pinned_image("registry.example.com/acme/web", "sha256:abc");
        assert_eq!(image, "registry.example.com/acme/web@sha256:abc");
        let d = deployment("production");
        let w = workload(
            &d,
            &project(),
            &image,
            replicas(&d, &project(), false),
            &owner(),
        );
        let meta = &w.metadata;
        assert_eq!(meta.labels.as_ref().unwrap()[MANAGED_BY], "clouddeck");
        assert_eq!(meta.labels.as_ref().unwrap()[PROJECT_LABEL], "web");
        assert_eq!(meta.labels.as_ref().unwrap()[DEPLOYMENT_LABEL], "web-1");
        assert_eq!(
            meta.owner_references.as_ref().unwrap()[0].controller,
            Some(true)
        );
        let spec = w.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.progress_deadline_seconds,
            Some(DEFAULT_PROGRESS_DEADLINE_SECONDS)
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(image.as_str()));
        let mut impatient = project();
        impatient.spec.runtime.progress_deadline_seconds = Some(30);
        let w = workload(&d, &impatient, &image, 1, &owner());
        assert_eq!(w.spec.unwrap().progress_deadline_seconds, Some(30));
        assert_eq!(
            c.command.as_deref(),
            Some(&["node".to_owned(), "server.js".to_owned()][..])
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(env, [("PORT", Some("8080")), ("MODE", Some("prod"))]);
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "web-env"
        );
        // The selector matches the pod labels.
        let selector = spec.selector.match_labels.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn previews_run_one_replica() {
        let d = deployment("preview");
        assert_eq!(replicas(&d, &project(), false), 1);
        let w = workload(&d, &project(), "img@sha256:abc", 1, &owner());
        assert_eq!(w.spec.unwrap().replicas, Some(1));
    }

    #[test]
    fn standby_deployments_scale_to_zero() {
        assert_eq!(replicas(&deployment("production"), &project(), true), 0);
        assert_eq!(replicas(&deployment("production"), &project(), false), 3);
    }

    #[test]
    fn service_selects_the_app_pods_only() {
        let s = service(&deployment("preview"), &owner());
        let spec = s.spec.unwrap();
        let selector = spec.selector.unwrap();
        assert_eq!(selector[COMPONENT_LABEL], "app");
        assert_eq!(selector[DEPLOYMENT_LABEL], "web-1");
        assert_eq!(spec.ports.unwrap()[0].port, SERVICE_PORT);
    }

    #[test]
    fn preview_route_uses_the_projects_key_and_the_short_id() {
        let route = preview_route(
            &deployment("preview"),
            "web",
            &routing(),
            &EdgePlan::default(),
            &owner(),
        );
        assert_eq!(
            route.spec.hostnames.unwrap(),
            ["web--7f3c9a21.apps.example.com"]
        );
        assert_eq!(route.metadata.owner_references.unwrap()[0].name, "web-1");
    }

    #[test]
    fn an_own_repository_cannot_reach_into_another_namespaces_path() {
        let default = Some("registry.local:5000/builds/");
        assert!(check_own_repository("ghcr.io/acme/web", "team", default).is_ok());
        assert!(
            check_own_repository("registry.local:5000/builds/team/web", "team", default).is_ok()
        );
        for stolen in [
            "registry.local:5000/builds/other/web",
            "REGISTRY.local:5000/builds/other/web",
            "registry.local:5000/builds/teammate/web",
            "registry.local:5000/builds",
            "registry.local:5000/builds/web",
        ] {
            assert!(
                check_own_repository(stolen, "team", default).is_err(),
                "{stolen}"
            );
        }
        assert!(check_own_repository("registry.local:5000/builds/other/web", "team", None).is_ok());
    }

    #[test]
    fn repository_from_project_or_operator_default() {
        let mut p = project();
        assert_eq!(repository(&p, None), None);
        assert_eq!(
            repository(&p, Some("registry.local:5000/")).as_deref(),
            Some("registry.local:5000/team/web")
        );
        p.spec.registry =
            Some(serde_json::from_value(json!({ "repository": "r.example/web" })).unwrap());
        assert_eq!(repository(&p, Some("x")).as_deref(), Some("r.example/web"));
    }
}
