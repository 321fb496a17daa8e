//! One reconcile of a Project: read its Deployments → decide (pure, in `render`) → apply
//! the routes, supersede and prune → status and Events.

use std::collections::BTreeMap;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::{ProjectContext, render, status};
use crate::api::conditions::Conditions;
use crate::api::deployment::{Deployment, DeploymentPhase, Target};
use crate::api::hostname_claim::HolderKind;
use crate::api::project::{Project, ProjectStatus};
use crate::api::validation::{self, InvalidField};
use crate::controllers::applied;
use crate::controllers::driver::reconciler;
use crate::controllers::edge_handler::plan_of;
use crate::controllers::error::{ReconcileError, Result};
use crate::controllers::events::publish;
use crate::controllers::{Context, FIELD_MANAGER, delete_if_present, stall_invalid, write_status};
use crate::hostnames::{self, Authority, Claimant, Standing, scheme};
use crate::labels::{PROJECT_LABEL, STANDBY, SUPERSEDED_BY};
use crate::routing::{self, Serving, split};

reconciler!(ProjectContext, Project, reconcile_and_prune);

/// Reconciles `project`, then forgets what was applied to routes that are gone.
async fn reconcile_and_prune(project: &Project, project_ctx: &ProjectContext) -> Result<Action> {
    let all = project_ctx.projects.state();
    let holds_name = render::holds_name(
        project,
        all.iter().filter_map(|guard| guard.0.as_ref().ok()),
    );
    let result = reconcile_project(project, holds_name, project_ctx).await;
    project_ctx.applied.prune(|_, namespace, name| {
        project_ctx
            .routes
            .get(&ObjectRef::new(name).within(namespace))
            .is_some()
    });
    result
}

async fn reconcile_project(
    project: &Project,
    holds_name: bool,
    project_ctx: &ProjectContext,
) -> Result<Action> {
    let ctx = &project_ctx.ctx;
    let base = &ctx.config.routing.base_domain;
    let name = project.name_any();
    let previous = project.status.clone().unwrap_or_default();

    // Hostnames first: every route below is generated from the key this Project holds.
    let Some(key) = hold_key(project_ctx, project, holds_name).await? else {
        let invalid = no_hostname(&name, base);
        return Err(stall_invalid(ctx, project, invalid).await);
    };
    // Validate what the apiserver cannot.
    if let Err(invalid) = validation::project(&project.spec) {
        return Err(stall_invalid(ctx, project, invalid).await);
    }

    // From the cache, guarded: a Deployment this release cannot read (stored under an
    // older schema) is reported by the Deployment controller and left out here, not a
    // failure of the Project.
    let deployments = project_ctx.deployments_of(project);
    let deployments_api =
        Api::<Deployment>::namespaced(ctx.client.clone(), &project.namespace().unwrap_or_default());
    supersede(&deployments_api, &deployments).await?;
    let production = match Production::choose(project, &previous, &deployments) {
        Ok(production) => production,
        Err(invalid) => return Err(stall_invalid(ctx, project, invalid).await),
    };
    let hostname = scheme::production_hostname(&key, base);
    let production_url = routing::url(&hostname);
    let routed = apply_routes(project_ctx, project, &key, production.serving, &deployments).await?;
    retain(
        ctx,
        project,
        &deployments_api,
        &deployments,
        (&production, &routed.aliases),
    )
    .await?;

    let next = next_status(
        project,
        &previous,
        &deployments,
        &production,
        (&hostname, &production_url),
    );
    let rollback = project.spec.rollback_to.is_some();
    let change = status::production_change(
        previous.production_deployment.as_deref(),
        next.production_deployment.as_deref(),
        rollback,
        &production_url,
    );
    // The webhook event before the status that records the change: a crash in between
    // publishes again, and the delivery's deterministic name makes that a no-op.
    if let (Some((_, message)), Some(serving)) = (&change, &next.production_deployment) {
        let previous = previous.production_deployment.as_deref();
        let event = render::production_event(
            project,
            previous,
            serving,
            rollback,
            &production_url,
            message,
        );
        let published = ctx.publisher().publish(&event).await;
        published.map_err(ReconcileError::publish)?;
    }
    write_status(ctx, project, &next).await?;
    announce(
        ctx,
        project,
        (&previous, &next),
        &key,
        change,
        production.serving,
    )
    .await;
    Ok(next_look(
        routed.next_window,
        Timestamp::now(),
        ctx.config.resync_period,
    ))
}

/// At the resync, or when a split test's window opens or closes (a second after, to be
/// past it), whichever comes first: production is rendered again then.
fn next_look(window: Option<Timestamp>, now: Timestamp, resync: std::time::Duration) -> Action {
    let until_window = window
        .and_then(|at| at.duration_since(now).try_into().ok())
        .map(|wait: std::time::Duration| wait + std::time::Duration::from_secs(1));
    Action::requeue(until_window.map_or(resync, |w| w.min(resync)))
}

/// Why a Project has no hostname: its name and the fallback are owned elsewhere.
fn no_hostname(name: &str, base: &str) -> InvalidField {
    InvalidField::new(
        "metadata.name",
        format!(
            "no hostname under {base} is free for Project {name}: {name}.{base} and its \
             fallback are owned by other namespaces; give the Project another name"
        ),
    )
}

/// Marks older builds of a branch superseded by the newest.
async fn supersede(api: &Api<Deployment>, deployments: &[Deployment]) -> Result<()> {
    for (older, newer) in render::superseded(deployments) {
        let patch = json!({ "metadata": { "annotations": { SUPERSEDED_BY: newer } } });
        api.patch(&older, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!(deployment = %older, by = %newer, "superseded");
    }
    Ok(())
}

/// Which Deployment is production: `chosen` (spec.rollbackTo or the newest Ready one),
/// `serving` (the chosen one once it is warm; until then the current one: a standby
/// Deployment is scaled up first) and `warming` (the chosen one while it is not serving).
struct Production<'a> {
    chosen: Option<&'a Deployment>,
    serving: Option<&'a Deployment>,
    warming: Option<&'a Deployment>,
}

impl<'a> Production<'a> {
    fn choose(
        project: &Project,
        previous: &ProjectStatus,
        deployments: &'a [Deployment],
    ) -> Result<Self, InvalidField> {
        let chosen = render::production(project, deployments)?;
        let current = previous
            .production_deployment
            .as_deref()
            .and_then(|p| deployments.iter().find(|d| d.name_any() == p));
        let serving = match chosen {
            Some(d) if render::is_warm(d) => Some(d),
            Some(_) => current,
            None => None,
        };
        let warming = chosen.filter(|c| serving.is_none_or(|s| s.name_any() != c.name_any()));
        debug!(
            chosen = ?chosen.map(ResourceExt::name_any),
            serving = ?serving.map(ResourceExt::name_any),
            warming = ?warming.map(ResourceExt::name_any),
            deployments = deployments.len(),
            "production"
        );
        Ok(Production {
            chosen,
            serving,
            warming,
        })
    }
}

/// What applying a Project's routes found.
struct Routed {
    /// When a split test's window opens or closes next.
    next_window: Option<Timestamp>,
    /// The branch each alias serves, and the Deployment it serves.
    aliases: BTreeMap<String, String>,
}

/// Applies the production route (split, if a test runs) and the branch aliases, and
/// deletes the aliases of branches with nothing Ready. Each route is sent only if it would
/// change (see `controllers::applied`).
async fn apply_routes(
    project_ctx: &ProjectContext,
    project: &Project,
    key: &str,
    serving: Option<&Deployment>,
    deployments: &[Deployment],
) -> Result<Routed> {
    let ctx = &project_ctx.ctx;
    let routing = &ctx.config.routing;
    let (namespace, name) = (project.namespace().unwrap_or_default(), project.name_any());
    let owner = project
        .controller_owner_ref(&())
        .expect("a Project read from the API has a name and uid");
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let routes = Api::<HttpRoute>::namespaced(ctx.client.clone(), &namespace);
    let (cache, applied) = (&project_ctx.routes, &project_ctx.applied);
    let edge = plan_of(&project_ctx.edge_handlers, &namespace, &name, routing);
    let mut next_window = None;
    if let Some(serving) = serving {
        let tests = project_ctx.split_tests_of(project);
        let split = split::decide(
            &tests.iter().collect::<Vec<_>>(),
            deployments,
            &edge,
            Timestamp::now(),
        );
        next_window = split.next;
        let service = serving.name_any();
        let target = match &split.plan {
            Some(plan) => Serving::Split(plan),
            None => Serving::Service(&service),
        };
        let mut route = render::production_route(project, key, &target, routing, &edge, &owner);
        if split.plan.is_some() {
            route
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(split::PRODUCTION_ANNOTATION.to_owned(), service.clone());
        }
        applied::apply(&routes, cache, applied, &apply, &route).await?;
    }
    let aliases = render::branch_aliases(deployments);
    for (branch, deployment) in &aliases {
        let route = render::branch_route(project, key, branch, deployment, routing, &edge, &owner);
        applied::apply(&routes, cache, applied, &apply, &route).await?;
    }
    // A branch whose Deployments are gone (or none is Ready) has no alias.
    let existing = project_ctx.routes_where(&namespace, |labels| {
        labels.get(PROJECT_LABEL) == Some(&name) && labels.contains_key(render::BRANCH_LABEL)
    });
    for stale in render::stale_aliases(&name, &aliases, existing.iter().map(String::as_str)) {
        if delete_if_present(&routes, &stale).await? {
            info!(route = %stale, "deleted the alias of a branch with nothing Ready");
        }
    }
    Ok(Routed {
        next_window,
        aliases,
    })
}

/// Keeps `retain` old production Deployments for rollback (`keepWarm` of them running) and
/// `previewRetain` previews per branch besides what a branch alias serves; deletes older
/// ones.
async fn retain(
    ctx: &Context,
    project: &Project,
    api: &Api<Deployment>,
    deployments: &[Deployment],
    (production, aliases): (&Production<'_>, &BTreeMap<String, String>),
) -> Result<()> {
    let recorder = &ctx.recorder;
    let keep: Vec<String> = [production.chosen, production.serving]
        .into_iter()
        .flatten()
        .map(|d| d.name_any())
        .collect();
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    for (deployment, standby) in render::standby_changes(project, deployments, &keep) {
        let value = if standby { json!("true") } else { json!(null) };
        let patch = json!({ "metadata": { "annotations": { STANDBY: value } } });
        api.patch(&deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!(%deployment, standby, "standby changed");
    }
    for old in render::pruned(project, deployments, &keep) {
        prune(api, recorder, project, &old, "spec.retain").await?;
    }
    let aliased: Vec<&str> = aliases.values().map(String::as_str).collect();
    for old in render::pruned_previews(project, deployments, &aliased) {
        prune(api, recorder, project, &old, "spec.previewRetain").await?;
    }
    Ok(())
}

/// The Project's next status: hostname, production, the latest Deployment per branch and
/// the conditions.
fn next_status(
    project: &Project,
    previous: &ProjectStatus,
    deployments: &[Deployment],
    production: &Production<'_>,
    (hostname, production_url): (&str, &str),
) -> ProjectStatus {
    let generation = project.metadata.generation;
    let mut next = ProjectStatus {
        conditions: previous.conditions.clone(),
        hostname: Some(hostname.to_owned()),
        production_deployment: production.serving.map(ResourceExt::name_any),
        production_url: production.serving.map(|_| production_url.to_owned()),
        latest_deployments: render::latest_per_branch(deployments),
        observed_generation: generation,
    };
    let in_progress = deployments.iter().any(|d| {
        d.spec.target == Target::Production
            && !matches!(
                d.status.as_ref().and_then(|s| s.phase),
                Some(
                    DeploymentPhase::Failed
                        | DeploymentPhase::Canceled
                        | DeploymentPhase::Superseded
                        | DeploymentPhase::Ready
                )
            )
    });
    let serving_pair = next
        .production_deployment
        .as_deref()
        .map(|d| (d, production_url));
    let now = Time(Timestamp::now());
    status::set_conditions(
        &mut next.conditions,
        generation,
        now.clone(),
        serving_pair,
        in_progress,
    );
    if let Some(warming) = production.warming {
        Conditions::at(&mut next.conditions, generation, now).reconciling(
            "WarmingUp",
            &format!(
                "waiting for Deployment {} to be available before production moves to it",
                warming.name_any()
            ),
        );
    }
    next
}

/// Events for what changed: the hostname the Project was given, and a promotion or
/// rollback (on the Project and on the Deployment now serving).
async fn announce(
    ctx: &Context,
    project: &Project,
    (previous, next): (&ProjectStatus, &ProjectStatus),
    key: &str,
    change: Option<(&'static str, String)>,
    serving: Option<&Deployment>,
) {
    let recorder = &ctx.recorder;
    let name = project.name_any();
    if previous.hostname != next.hostname {
        let hostname = next.hostname.as_deref().unwrap_or_default();
        let note = if key == name {
            format!("production and branch aliases are served under {hostname}")
        } else {
            format!(
                "production and branch aliases are served under {hostname}: {} belongs to \
                 another namespace",
                scheme::production_hostname(&name, &ctx.config.routing.base_domain)
            )
        };
        publish(
            recorder,
            project,
            EventType::Normal,
            "HostnameAssigned",
            "Route",
            &note,
        )
        .await;
    }
    let Some((reason, message)) = change else {
        return;
    };
    publish(
        recorder,
        project,
        EventType::Normal,
        reason,
        "Promote",
        &message,
    )
    .await;
    if let Some(serving) = serving {
        publish(
            recorder,
            serving,
            EventType::Normal,
            reason,
            "Promote",
            &message,
        )
        .await;
    }
}

/// The key this Project holds (see [`crate::hostnames`]), taking it if it can: the one its
/// status records, then one its namespace already owns (the Project was re-created), then
/// its name, then its namesake fallback. A younger namesake of a Project in another
/// namespace (`holds_name` false) asks for its fallback before its name, so the oldest
/// Project of a name keeps it, as it did before claims existed.
/// `None` when every candidate is owned by another namespace.
async fn hold_key(
    project_ctx: &ProjectContext,
    project: &Project,
    holds_name: bool,
) -> Result<Option<String>> {
    let ctx = &project_ctx.ctx;
    let base = &ctx.config.routing.base_domain;
    let name = project.name_any();
    let me = Claimant::of(project, HolderKind::Project);
    let recorded = project
        .status
        .as_ref()
        .and_then(|s| s.hostname.as_deref())
        .and_then(|h| match hostnames::authority(h, base) {
            Authority::Key(key) if scheme::production_hostname(&key, base) == h => Some(key),
            _ => None,
        });
    // The steady state: the recorded key is still held. No read while its claim is
    // unchanged since the API last said so; one read otherwise.
    if let Some(key) = &recorded {
        let hostname = scheme::production_hostname(key, base);
        if project_ctx.still_holds(&hostname, &me) {
            return Ok(recorded);
        }
        if hostnames::take(&ctx.client, &hostname, &me).await? == Standing::Held {
            project_ctx.remember_held(&hostname, &me);
            return Ok(recorded);
        }
    }
    let mut candidates = scheme::candidate_keys(&name, &me.namespace);
    if !holds_name {
        candidates.reverse();
    }
    // A key this namespace already owns (this Project re-created) comes before the rest.
    // The claims cache chooses the order and skips a read before a create; the API
    // decides (a create or replace that the cache got wrong fails and reads again).
    let mut ours = Vec::new();
    for key in &candidates {
        let hostname = scheme::production_hostname(key, base);
        let standing = match project_ctx.cached_standing(&hostname, &me) {
            Some(standing) => standing,
            None => hostnames::peek(&ctx.client, &hostname, &me).await?,
        };
        if matches!(standing, Standing::Held | Standing::Reserved) {
            ours.push(key.clone());
        }
    }
    let mut tried = Vec::new();
    for key in ours.into_iter().chain(candidates) {
        if tried.contains(&key) {
            continue;
        }
        let hostname = scheme::production_hostname(&key, base);
        if project_ctx.cached_standing(&hostname, &me) == Some(Standing::Free) {
            let (standing, created) = hostnames::take_free(&ctx.client, &hostname, &me).await?;
            if standing == Standing::Held {
                if let Some(version) = created {
                    project_ctx.remember_created(&hostname, version);
                }
                return Ok(Some(key));
            }
        } else if hostnames::take(&ctx.client, &hostname, &me).await? == Standing::Held {
            project_ctx.remember_held(&hostname, &me);
            return Ok(Some(key));
        }
        tried.push(key);
    }
    Ok(None)
}

/// Deletes the Deployment `name` (and, through owner references, all it runs) beyond the
/// Project's `field`, with a Normal `Pruned` Event.
async fn prune(
    deployments: &Api<Deployment>,
    recorder: &crate::controllers::events::Recorder,
    project: &Project,
    name: &str,
    field: &str,
) -> Result<()> {
    if delete_if_present(deployments, name).await? {
        info!(deployment = %name, beyond = field, "pruned");
        let note = format!("deleted Deployment {name}: beyond {field}");
        publish(
            recorder,
            project,
            EventType::Normal,
            "Pruned",
            "Prune",
            &note,
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn production_is_rendered_again_when_a_split_window_opens() {
        let now = Timestamp::from_second(1_000).unwrap();
        let resync = Duration::from_secs(600);
        let soon = Timestamp::from_second(1_010).unwrap();
        assert_eq!(
            next_look(Some(soon), now, resync),
            Action::requeue(Duration::from_secs(11))
        );
        let later = Timestamp::from_second(9_000).unwrap();
        assert_eq!(next_look(Some(later), now, resync), Action::requeue(resync));
        assert_eq!(next_look(None, now, resync), Action::requeue(resync));
    }
}
