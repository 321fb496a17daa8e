//! Pure decisions of the Project controller: which Deployment production serves, which
//! Deployment each branch alias serves, which builds a newer Deployment supersedes, which
//! old production Deployments are pruned, and the Project's HTTPRoutes.

use std::collections::BTreeMap;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::api::deployment::{Deployment, DeploymentPhase, Target};
use crate::api::edge_handler::ServedHostname;
use crate::api::project::{BranchDeployment, Project};
use crate::api::validation::InvalidField;
use crate::config::RoutingConfig;
use crate::controllers::deployment::status::AVAILABLE_REASON;
use crate::delivery::PlatformEvent;
use crate::hostnames::scheme;
use crate::labels::{MANAGED_BY, PROJECT_LABEL, STANDBY, SUPERSEDED_BY};
use crate::routing::{self, Serving, edge::EdgePlan};

fn phase(d: &Deployment) -> Option<DeploymentPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

fn branch(d: &Deployment) -> Option<&str> {
    d.spec.source.git.as_ref().map(|g| g.branch.as_str())
}

/// Newest first: by creation time, then name (creation times have one-second resolution).
fn newest_first(deployments: &[Deployment]) -> Vec<&Deployment> {
    let mut sorted: Vec<&Deployment> = deployments.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |d: &Deployment| (d.metadata.creation_timestamp.clone(), d.name_any());
        key(b).cmp(&key(a))
    });
    sorted
}

/// The Deployment production serves: `spec.rollbackTo` when set (it must be a Ready
/// Deployment of this Project), else the newest Ready production Deployment.
pub fn production<'a>(
    project: &Project,
    deployments: &'a [Deployment],
) -> Result<Option<&'a Deployment>, InvalidField> {
    if let Some(pinned) = &project.spec.rollback_to {
        let Some(found) = deployments.iter().find(|d| &d.name_any() == pinned) else {
            return Err(InvalidField::new(
                "spec.rollbackTo",
                format!("Deployment {pinned:?} does not exist or belongs to another Project"),
            ));
        };
        if phase(found) != Some(DeploymentPhase::Ready) {
            return Err(InvalidField::new(
                "spec.rollbackTo",
                format!(
                    "Deployment {pinned:?} is not Ready (phase {:?}): only a Ready Deployment can serve production",
                    phase(found)
                ),
            ));
        }
        return Ok(Some(found));
    }
    Ok(newest_first(deployments)
        .into_iter()
        .find(|d| d.spec.target == Target::Production && phase(d) == Some(DeploymentPhase::Ready)))
}

/// Older Deployments still queued or building that a newer Deployment of the same branch
/// and target supersedes: (older, newer).
pub fn superseded(deployments: &[Deployment]) -> Vec<(String, String)> {
    let mut newest: BTreeMap<(String, bool), String> = BTreeMap::new();
    let mut out = Vec::new();
    for d in newest_first(deployments) {
        let Some(branch) = branch(d) else { continue };
        let key = (branch.to_owned(), d.spec.target == Target::Production);
        match newest.get(&key) {
            None => {
                newest.insert(key, d.name_any());
            }
            Some(newer) => {
                let building = matches!(
                    phase(d),
                    None | Some(DeploymentPhase::Queued | DeploymentPhase::Building)
                );
                if building && !d.annotations().contains_key(SUPERSEDED_BY) {
                    out.push((d.name_any(), newer.clone()));
                }
            }
        }
    }
    out
}

/// Production Deployments that were once Ready, other than those in `keep` (what
/// production serves or is about to), newest first: the rollback candidates.
fn rollback_candidates<'a>(deployments: &'a [Deployment], keep: &[&str]) -> Vec<&'a Deployment> {
    newest_first(deployments)
        .into_iter()
        .filter(|d| d.spec.target == Target::Production)
        .filter(|d| !keep.contains(&d.name_any().as_str()))
        .filter(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.timings.as_ref())
                .and_then(|t| t.ready_at.as_ref())
                .is_some()
        })
        .collect()
}

/// Production Deployments beyond the `retain` most recent rollback candidates, never one
/// in `keep`: pruned with everything they own.
pub fn pruned(project: &Project, deployments: &[Deployment], keep: &[&str]) -> Vec<String> {
    let retain = usize::try_from(project.spec.retain).unwrap_or(0);
    rollback_candidates(deployments, keep)
        .into_iter()
        .skip(retain)
        .map(|d| d.name_any())
        .collect()
}

/// Preview Deployments beyond the `spec.previewRetain` most recent of their branch (image
/// previews together), never one in `keep` (what a branch alias serves): pruned with
/// everything they own.
pub fn pruned_previews(
    project: &Project,
    deployments: &[Deployment],
    keep: &[&str],
) -> Vec<String> {
    let retain = usize::try_from(project.spec.preview_retain).unwrap_or(1);
    let mut seen: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    newest_first(deployments)
        .into_iter()
        .filter(|d| d.spec.target == Target::Preview)
        .filter(|d| {
            let count = seen.entry(branch(d)).or_default();
            *count += 1;
            *count > retain
        })
        .map(|d| d.name_any())
        .filter(|name| !keep.contains(&name.as_str()))
        .collect()
}

fn on_standby(d: &Deployment) -> bool {
    d.annotations().get(STANDBY).is_some_and(|v| v == "true")
}

/// The standby changes to make: the `keepWarm` most recent retained Deployments and those
/// in `keep` run at full scale, the other retained ones wait scaled to zero.
/// Returns (Deployment, whether it should be on standby) for each one that must change.
pub fn standby_changes(
    project: &Project,
    deployments: &[Deployment],
    keep: &[&str],
) -> Vec<(String, bool)> {
    let retain = usize::try_from(project.spec.retain).unwrap_or(0);
    let warm = usize::try_from(project.spec.keep_warm).unwrap_or(0);
    let mut changes = Vec::new();
    let retained = rollback_candidates(deployments, keep)
        .into_iter()
        .take(retain);
    for (i, d) in retained.enumerate() {
        let want = i >= warm;
        if on_standby(d) != want {
            changes.push((d.name_any(), want));
        }
    }
    for d in deployments
        .iter()
        .filter(|d| keep.contains(&d.name_any().as_str()))
    {
        if on_standby(d) {
            changes.push((d.name_any(), false));
        }
    }
    changes
}

/// Whether a Deployment can take production traffic now: Ready with every pod available,
/// not on standby (a standby Deployment is scaled up first, then production moves).
pub fn is_warm(d: &Deployment) -> bool {
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    !on_standby(d)
        && phase(d) == Some(DeploymentPhase::Ready)
        && ready.is_some_and(|c| c.status == "True" && c.reason == AVAILABLE_REASON)
}

/// The most recent Deployment of each branch, for the Project's status.
pub fn latest_per_branch(deployments: &[Deployment]) -> Vec<BranchDeployment> {
    let mut seen = BTreeMap::new();
    for d in newest_first(deployments) {
        let Some(branch) = branch(d) else { continue };
        seen.entry(branch.to_owned())
            .or_insert_with(|| BranchDeployment {
                branch: branch.to_owned(),
                deployment: d.name_any(),
                commit: d.status.as_ref().and_then(|s| s.commit.clone()),
                url: d.status.as_ref().and_then(|s| s.url.clone()),
            });
    }
    seen.into_values().collect()
}

/// The newest Ready Deployment of each branch: what its alias hostname serves.
pub fn branch_aliases(deployments: &[Deployment]) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for d in newest_first(deployments) {
        if phase(d) != Some(DeploymentPhase::Ready) {
            continue;
        }
        if let Some(branch) = branch(d) {
            aliases
                .entry(branch.to_owned())
                .or_insert_with(|| d.name_any());
        }
    }
    aliases
}

/// Label of a branch alias HTTPRoute: the branch as a slug. With the Project's label it
/// selects the aliases a Project has, so the ones of branches with nothing Ready left are
/// deleted.
pub const BRANCH_LABEL: &str = "clouddeck.io/branch";

fn route_meta(
    project: &Project,
    name: String,
    branch: Option<&str>,
    owner: &OwnerReference,
) -> ObjectMeta {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), "clouddeck".to_owned()),
        (PROJECT_LABEL.to_owned(), project.name_any()),
    ]);
    if let Some(branch) = branch {
        labels.insert(BRANCH_LABEL.to_owned(), routing::branch_slug(branch));
    }
    ObjectMeta {
        name: Some(name),
        namespace: project.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Whether `project` holds its name as a hostname label: among the Projects of that name
/// in the cluster (`all`, any namespace, itself included or not) that are not being
/// deleted, it is the oldest — by `creationTimestamp`, then namespace, so that every
/// reconcile of every namesake agrees. Deleting the holder hands the name to the next.
pub fn holds_name<'a>(project: &Project, all: impl IntoIterator<Item = &'a Project>) -> bool {
    let rank = |p: &Project| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone().unwrap_or_default(),
        )
    };
    let mine = rank(project);
    all.into_iter()
        .filter(|other| {
            other.metadata.name == project.metadata.name
                && other.metadata.namespace != project.metadata.namespace
                && other.metadata.deletion_timestamp.is_none()
        })
        .all(|other| mine < rank(other))
}

/// The branch alias HTTPRoutes to delete: those of `existing` (names of the Project's
/// alias routes) that no branch with a Ready Deployment (`aliases`) has any more.
pub fn stale_aliases<'a>(
    project: &str,
    aliases: &BTreeMap<String, String>,
    existing: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let wanted: Vec<String> = aliases
        .keys()
        .map(|branch| routing::branch_route_name(project, branch))
        .collect();
    existing
        .into_iter()
        .filter(|name| !wanted.iter().any(|w| w == name))
        .map(str::to_owned)
        .collect()
}

/// The production HTTPRoute: `<key>.<base domain>` to the served Deployment's Service;
/// `key` is the one the Project holds (see [`crate::hostnames`]).
pub fn production_route(
    project: &Project,
    key: &str,
    serving: &Serving,
    routing: &RoutingConfig,
    edge: &EdgePlan,
    owner: &OwnerReference,
) -> HttpRoute {
    let meta = route_meta(
        project,
        routing::production_route_name(&project.name_any()),
        None,
        owner,
    );
    routing::project_route(
        meta,
        &scheme::production_hostname(key, &routing.base_domain),
        serving,
        routing,
        edge,
        ServedHostname::Production,
    )
}

/// A branch alias HTTPRoute: `<key>--git-<branch>.<base domain>`.
pub fn branch_route(
    project: &Project,
    key: &str,
    branch: &str,
    service: &str,
    routing: &RoutingConfig,
    edge: &EdgePlan,
    owner: &OwnerReference,
) -> HttpRoute {
    let meta = route_meta(
        project,
        routing::branch_route_name(&project.name_any(), branch),
        Some(branch),
        owner,
    );
    routing::project_route(
        meta,
        &scheme::branch_hostname(key, branch, &routing.base_domain),
        &Serving::Service(service),
        routing,
        edge,
        ServedHostname::BranchAlias,
    )
}

/// The webhook event of a production change (`deployment.promoted` or
/// `deployment.rolled_back`). Its id names the change and the Project's generation
/// (`<uid>/<type>/<from>-><to>/<generation>`): publishing it again after a crash creates no
/// second delivery, while promoting again after a rollback is cleared is a new event.
pub fn production_event(
    project: &Project,
    previous: Option<&str>,
    next: &str,
    rollback: bool,
    url: &str,
    summary: &str,
) -> PlatformEvent {
    let event_type = if rollback {
        "deployment.rolled_back"
    } else {
        "deployment.promoted"
    };
    let mut event = PlatformEvent::new(
        event_type,
        format!(
            "{}/{event_type}/{}->{next}/{}",
            project.uid().unwrap_or_default(),
            previous.unwrap_or(""),
            project.metadata.generation.unwrap_or_default()
        ),
        &project.namespace().unwrap_or_default(),
        format!("{}: {summary}", project.name_any()),
    )
    .with_project(
        &project.name_any(),
        project.metadata.labels.clone().unwrap_or_default(),
    )
    .with("deployment", next.to_owned())
    .with("url", url.to_owned());
    if let Some(previous) = previous {
        event = event.with("previousDeployment", previous.to_owned());
    }
    event
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn project(extra: serde_json::Value) -> Project {
        let mut spec = json!({ "git": { "url": "https://github.com/acme/web.git" }, "retain": 1 });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "web", "namespace": "team", "uid": "p-uid" },
            "spec": spec
        }))
        .unwrap()
    }

    fn deployment(
        name: &str,
        created: &str,
        target: &str,
        branch: &str,
        phase: Option<&str>,
    ) -> Deployment {
        let ready = phase == Some("Ready");
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": "team", "creationTimestamp": created },
            "spec": { "projectRef": { "name": "web" }, "target": target, "source": { "git": { "branch": branch } } },
            "status": {
                "phase": phase,
                "url": format!("https://{name}.example"),
                "timings": if ready { json!({ "readyAt": created }) } else { json!({}) }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_production_change_is_one_event_per_transition() {
        let mut p = project(json!({}));
        p.metadata.generation = Some(1);
        let promoted = production_event(
            &p,
            Some("web-1"),
            "web-2",
            false,
            "https://web.example",
            "m",
        );
        assert_eq!(promoted.event_type, "deployment.promoted");
        assert_eq!(promoted.id, "p-uid/deployment.promoted/web-1->web-2/1");
        assert_eq!(promoted.data["deployment"], "web-2");
        assert_eq!(promoted.data["previousDeployment"], "web-1");
        let back = production_event(&p, Some("web-2"), "web-1", true, "https://web.example", "m");
        assert_eq!(back.event_type, "deployment.rolled_back");
        let republished = production_event(
            &p,
            Some("web-1"),
            "web-2",
            false,
            "https://web.example",
            "m",
        );
        assert_eq!(
            republished.id, promoted.id,
            "a crash and retry publishes nothing new"
        );
        p.metadata.generation = Some(3); // rolled back, then rollbackTo cleared
        let again = production_event(
            &p,
            Some("web-1"),
            "web-2",
            false,
            "https://web.example",
            "m",
        );
        assert_ne!(again.id, promoted.id, "promoting again is news");
        let first = production_event(&p, None, "web-1", false, "https://web.example", "m");
        assert_eq!(first.id, "p-uid/deployment.promoted/->web-1/3");
        assert!(!first.data.contains_key("previousDeployment"));
    }

    fn set() -> Vec<Deployment> {
        vec![
            deployment(
                "web-1",
                "2026-11-29T10:00:00Z",
                "production",
                "main",
                Some("Ready"),
            ),
            deployment(
                "web-2",
                "2026-11-29T11:00:00Z",
                "production",
                "main",
                Some("Ready"),
            ),
            deployment(
                "web-3",
                "2026-11-29T12:00:00Z",
                "production",
                "main",
                Some("Building"),
            ),
            deployment(
                "pr-1",
                "2026-11-29T12:30:00Z",
                "preview",
                "feature/x",
                Some("Ready"),
            ),
        ]
    }

    #[test]
    fn the_newest_ready_production_deployment_serves() {
        let deployments = set();
        let served = production(&project(json!({})), &deployments)
            .unwrap()
            .unwrap();
        assert_eq!(served.name_any(), "web-2");
    }

    #[test]
    fn rollback_pins_production_to_a_ready_deployment() {
        let deployments = set();
        let served = production(&project(json!({ "rollbackTo": "web-1" })), &deployments)
            .unwrap()
            .unwrap();
        assert_eq!(served.name_any(), "web-1");
        let error =
            production(&project(json!({ "rollbackTo": "web-3" })), &deployments).unwrap_err();
        assert_eq!(error.field, "spec.rollbackTo");
        assert!(error.message.contains("not Ready"));
        let error =
            production(&project(json!({ "rollbackTo": "nope" })), &deployments).unwrap_err();
        assert!(error.message.contains("does not exist"));
    }

    #[test]
    fn a_newer_deployment_supersedes_older_builds_of_its_branch() {
        let mut deployments = set();
        deployments.push(deployment(
            "web-4",
            "2026-11-29T13:00:00Z",
            "production",
            "main",
            None,
        ));
        // web-3 is building and older than web-4; Ready ones are kept; previews are separate.
        assert_eq!(
            superseded(&deployments),
            [("web-3".to_owned(), "web-4".to_owned())]
        );
        deployments[2].metadata.annotations = Some(BTreeMap::from([(
            SUPERSEDED_BY.to_owned(),
            "web-4".to_owned(),
        )]));
        assert!(superseded(&deployments).is_empty());
    }

    #[test]
    fn only_the_retained_production_deployments_are_kept() {
        let deployments = set();
        // retain 1: web-2 serves, web-1 is the one retained, nothing else was Ready.
        assert!(pruned(&project(json!({})), &deployments, &["web-2"]).is_empty());
        let none = project(json!({ "retain": 0 }));
        assert_eq!(pruned(&none, &deployments, &["web-2"]), ["web-1"]);
        // The rollback target is never pruned.
        assert_eq!(pruned(&none, &deployments, &["web-1"]), ["web-2"]);
    }

    #[test]
    fn retained_deployments_beyond_keep_warm_wait_on_standby() {
        let mut deployments = set();
        deployments.insert(
            0,
            deployment(
                "web-0",
                "2026-11-29T09:00:00Z",
                "production",
                "main",
                Some("Ready"),
            ),
        );
        let p = project(json!({ "retain": 2, "keepWarm": 1 }));
        // web-2 serves; web-1 stays warm, web-0 waits scaled to zero.
        assert_eq!(
            standby_changes(&p, &deployments, &["web-2"]),
            [("web-0".to_owned(), true)]
        );
        deployments[0].metadata.annotations =
            Some(BTreeMap::from([(STANDBY.to_owned(), "true".to_owned())]));
        assert!(standby_changes(&p, &deployments, &["web-2"]).is_empty());
        // Rolling back to web-0 wakes it up.
        let changes = standby_changes(&p, &deployments, &["web-0", "web-2"]);
        assert!(
            changes.contains(&("web-0".to_owned(), false)),
            "{changes:?}"
        );
        assert!(!is_warm(&deployments[0]));
    }

    #[test]
    fn warm_means_ready_and_available() {
        let mut d = deployment(
            "web-9",
            "2026-11-29T09:00:00Z",
            "production",
            "main",
            Some("Ready"),
        );
        assert!(!is_warm(&d), "no Ready condition yet");
        d.status.as_mut().unwrap().conditions = vec![
            serde_json::from_value(json!({
                "type": "Ready", "status": "True", "reason": "Available", "message": "",
                "lastTransitionTime": "2026-11-29T09:00:00Z"
            }))
            .unwrap(),
        ];
        assert!(is_warm(&d));
        d.status.as_mut().unwrap().conditions[0].reason = "Standby".into();
        assert!(!is_warm(&d));
    }

    #[test]
    fn branches() {
        let deployments = set();
        let latest = latest_per_branch(&deployments);
        assert_eq!(latest.len(), 2);
        assert_eq!(
            latest
                .iter()
                .find(|b| b.branch == "main")
                .unwrap()
                .deployment,
            "web-3"
        );
        let aliases = branch_aliases(&deployments);
        assert_eq!(aliases["main"], "web-2");
        assert_eq!(aliases["feature/x"], "pr-1");
    }

    #[test]
    fn routes() {
        let routing = RoutingConfig {
            gateway_name: "gw".into(),
            gateway_namespace: "net".into(),
            base_domain: "apps.example.com".into(),
            deny_responder: None,
        };
        let owner = OwnerReference {
            name: "web".into(),
            uid: "p-uid".into(),
            controller: Some(true),
            ..Default::default()
        };
        let p = project(json!({}));
        let route = production_route(
            &p,
            "web",
            &Serving::Service("web-2"),
            &routing,
            &EdgePlan::default(),
            &owner,
        );
        assert_eq!(route.metadata.name.as_deref(), Some("web-production"));
        assert_eq!(
            route.spec.hostnames.as_ref().unwrap()[0],
            "web.apps.example.com"
        );
        assert_eq!(routing::backend_service(&route), Some("web-2"));
        let alias = branch_route(
            &p,
            "web",
            "feature/x",
            "pr-1",
            &routing,
            &EdgePlan::default(),
            &owner,
        );
        assert_eq!(
            alias.spec.hostnames.as_ref().unwrap()[0],
            "web--git-feature-x.apps.example.com"
        );
        assert_eq!(
            alias.metadata.labels.as_ref().unwrap()[PROJECT_LABEL],
            "web"
        );
        assert_eq!(
            alias.metadata.labels.as_ref().unwrap()[BRANCH_LABEL],
            "feature-x"
        );
        assert!(!route.metadata.labels.unwrap().contains_key(BRANCH_LABEL));
        // A namesake's routes keep their names and get its own hostnames.
        let route = production_route(
            &p,
            "web-1a2b3c4d",
            &Serving::Service("web-2"),
            &routing,
            &EdgePlan::default(),
            &owner,
        );
        assert_eq!(route.metadata.name.as_deref(), Some("web-production"));
        assert_eq!(
            route.spec.hostnames.as_ref().unwrap()[0],
            "web-1a2b3c4d.apps.example.com"
        );
    }

    #[test]
    fn aliases_of_branches_with_nothing_ready_are_stale() {
        let aliases = BTreeMap::from([("main".to_owned(), "web-3".to_owned())]);
        assert_eq!(
            stale_aliases(
                "web",
                &aliases,
                ["web-git-main", "web-git-feature-x", "web-git-old"]
            ),
            ["web-git-feature-x", "web-git-old"]
        );
        assert!(stale_aliases("web", &aliases, ["web-git-main"]).is_empty());
        assert_eq!(
            stale_aliases("web", &BTreeMap::new(), ["web-git-main"]),
            ["web-git-main"]
        );
    }

    #[test]
    fn previews_beyond_retain_per_branch_are_pruned() {
        let image = |name: &str, created: &str| {
            let mut d = deployment(name, created, "preview", "x", None);
            d.spec.source.git = None;
            d
        };
        let deployments = vec![
            deployment("a-1", "2026-01-01T00:00:01Z", "preview", "feature/a", None),
            deployment("a-2", "2026-01-01T00:00:02Z", "preview", "feature/a", None),
            deployment("a-3", "2026-01-01T00:00:03Z", "preview", "feature/a", None),
            deployment("b-1", "2026-01-01T00:00:01Z", "preview", "feature/b", None),
            image("img-1", "2026-01-01T00:00:01Z"),
            image("img-2", "2026-01-01T00:00:02Z"),
            deployment("prod-1", "2026-01-01T00:00:01Z", "production", "main", None),
            deployment("prod-2", "2026-01-01T00:00:02Z", "production", "main", None),
        ];
        let p = project(json!({ "previewRetain": 1 }));
        assert_eq!(
            pruned_previews(&p, &deployments, &[]),
            ["a-2", "img-1", "a-1"],
            "per branch, newest kept; production untouched"
        );
        assert_eq!(
            pruned_previews(&p, &deployments, &["a-1"]),
            ["a-2", "img-1"],
            "what an alias serves stays"
        );
        let p = project(json!({ "previewRetain": 3 }));
        assert!(pruned_previews(&p, &deployments, &[]).is_empty());
    }

    fn namesake(namespace: &str, created: &str, deleting: bool) -> Project {
        let mut p = project(json!({}));
        p.metadata.namespace = Some(namespace.into());
        p.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        if deleting {
            p.metadata.deletion_timestamp = Some(Time("2026-11-29T10:00:00Z".parse().unwrap()));
        }
        p
    }

    #[test]
    fn the_oldest_project_of_a_name_holds_it() {
        let a = namesake("team-a", "2026-01-01T00:00:00Z", false);
        let b = namesake("team-b", "2026-02-01T00:00:00Z", false);
        let mut other = namesake("team-c", "2025-01-01T00:00:00Z", false);
        other.metadata.name = Some("blog".into());
        let all = [a.clone(), b.clone(), other];
        assert!(holds_name(&a, &all));
        assert!(
            !holds_name(&b, &all),
            "a younger namesake in another namespace"
        );
        assert!(holds_name(&b, [&b]), "alone with its name");
        // The same second: the namespace decides, the same way for both.
        let twin = namesake("team-0", "2026-01-01T00:00:00Z", false);
        assert!(holds_name(&twin, [&a, &twin]));
        assert!(!holds_name(&a, [&a, &twin]));
        // A holder being deleted hands the name on.
        let leaving = namesake("team-a", "2026-01-01T00:00:00Z", true);
        assert!(holds_name(&b, [&leaving, &b]));
    }
}
