//! One reconcile of a SplitTest: read (caches) → decide, as the Project controller does,
//! which test splits production → status, Events and `splittest.updated` on a phase change
//! → look again at the next start or stop time.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use super::SplitContext;
use super::status::{self, Observed, Running};
use crate::api::conditions::{READY, STALLED, find};
use crate::api::deployment::Deployment;
use crate::api::split_test::{SplitTest, SplitTestPhase, SplitTestStatus};
use crate::controllers::driver::reconciler;
use crate::controllers::edge_handler::plan_of;
use crate::controllers::error::{ReconcileError, Result};
use crate::controllers::events::publish;
use crate::controllers::{readable_in, write_status};
use crate::delivery::PlatformEvent;
use crate::routing::split::{self, SPLIT_TEST_ANNOTATION};

reconciler!(SplitContext, SplitTest, reconcile_test);

async fn reconcile_test(test: &SplitTest, split: &SplitContext) -> Result<Action> {
    let ctx = &split.ctx;
    let namespace = test.namespace().unwrap_or_default();
    let name = test.name_any();
    let project_name = &test.spec.project_ref.name;
    let previous = test.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    let project = split
        .projects
        .get(&ObjectRef::new(project_name).within(&namespace))
        .and_then(|guard| guard.0.as_ref().ok().cloned());
    let of_project = |p: &str| p == project_name.as_str();
    let deployments: Vec<Deployment> = readable_in(&split.deployments, Some(&namespace), |d| {
        of_project(&d.spec.project_ref.name)
    });
    let siblings: Vec<SplitTest> = readable_in(&split.tests, Some(&namespace), |t| {
        of_project(&t.spec.project_ref.name)
    });
    let edge = plan_of(
        &split.edge_handlers,
        &namespace,
        project_name,
        &ctx.config.routing,
    );
    let decision = split::decide(
        &siblings.iter().collect::<Vec<_>>(),
        &deployments,
        &edge,
        now,
    );
    let resolved = split::resolve(&test.spec, &deployments);
    let route = crate::routing::production_route_name(project_name);
    let carried = split
        .routes
        .get(&ObjectRef::new(&route).within(&namespace))
        .and_then(|r| {
            r.metadata
                .annotations
                .as_ref()?
                .get(SPLIT_TEST_ANNOTATION)
                .cloned()
        });

    let (phase, next) = split::window(&test.spec, now);
    let observed = match phase {
        _ if project.is_none() => Observed::NoProject,
        SplitTestPhase::Stopped if !test.spec.active => Observed::Stopped {
            why: "spec.active is false: production serves as without the test",
        },
        SplitTestPhase::Stopped => Observed::Stopped {
            why: "spec.stopTime has passed: production serves as without the test",
        },
        SplitTestPhase::Scheduled => Observed::Scheduled {
            start: next.unwrap_or(now),
        },
        SplitTestPhase::Running => Observed::Running {
            resolved: &resolved,
            outcome: match (&decision.plan, &decision.held) {
                (Some(plan), _) if plan.test == name => Running::Splitting {
                    plan,
                    applied: carried.as_deref() == Some(plan.digest().as_str()),
                },
                (Some(plan), _) => Running::Outranked { by: &plan.test },
                (None, Some((held, refusal))) if held == &name => Running::Refused(refusal),
                (None, Some((held, _))) => Running::Outranked { by: held },
                (None, None) => Running::WaitingForVariants,
            },
        },
    };
    let next_status = status::next_status(&previous, test.metadata.generation, &observed);
    report(ctx, test, &previous, &next_status, &resolved).await?;
    write_status(ctx, test, &next_status).await?;

    let until_window = next
        .and_then(|at| at.duration_since(now).try_into().ok())
        .map(|wait: Duration| wait + Duration::from_secs(1));
    Ok(Action::requeue(
        until_window.map_or(ctx.config.resync_period, |w| {
            w.min(ctx.config.resync_period)
        }),
    ))
}

/// Events for what changed: Started and Stopped (Normal), a variant without a Ready
/// Deployment and a refusal (Warning), once each; `splittest.updated` on a phase change.
async fn report(
    ctx: &crate::controllers::Context,
    test: &SplitTest,
    previous: &SplitTestStatus,
    next: &SplitTestStatus,
    resolved: &[split::Resolved],
) -> Result<()> {
    let ready = |s: &SplitTestStatus| {
        find(&s.conditions, READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    if ready(previous) != ready(next)
        && let Some(condition) = find(&next.conditions, READY)
        && matches!(
            condition.reason.as_str(),
            "Running" | "Stopped" | "Scheduled"
        )
    {
        publish(
            &ctx.recorder,
            test,
            EventType::Normal,
            &condition.reason,
            "Split",
            &condition.message,
        )
        .await;
    }
    let stalled = |s: &SplitTestStatus| find(&s.conditions, STALLED).map(|c| c.message.clone());
    if let Some(condition) = find(&next.conditions, STALLED)
        && stalled(previous) != stalled(next)
    {
        publish(
            &ctx.recorder,
            test,
            EventType::Warning,
            &condition.reason,
            "Split",
            &condition.message,
        )
        .await;
    }
    let unserved = |s: &SplitTestStatus| -> Vec<String> {
        s.variants
            .iter()
            .filter(|v| v.deployment.is_none())
            .map(|v| v.name.clone())
            .collect()
    };
    if next.phase == Some(SplitTestPhase::Running) && unserved(next) != unserved(previous) {
        for variant in resolved.iter().filter(|v| v.deployment.is_none()) {
            let message = unavailable(test, &variant.name);
            publish(
                &ctx.recorder,
                test,
                EventType::Warning,
                "VariantUnavailable",
                "Split",
                &message,
            )
            .await;
        }
    }
    publish_phase(ctx, test, previous, next).await
}

/// Why a variant's share goes to the others: it has no Ready Deployment.
fn unavailable(test: &SplitTest, variant: &str) -> String {
    let source = test
        .spec
        .variants
        .iter()
        .find(|v| v.name == variant)
        .map(|v| match (&v.deployment, &v.branch) {
            (Some(d), _) => format!("Deployment {d}"),
            (_, Some(b)) => format!("branch {b}"),
            _ => String::new(),
        })
        .unwrap_or_default();
    format!(
        "variant {variant:?} has no Ready Deployment ({source}); its share goes to the other variants"
    )
}

/// `splittest.updated` when the phase changed.
async fn publish_phase(
    ctx: &crate::controllers::Context,
    test: &SplitTest,
    previous: &SplitTestStatus,
    next: &SplitTestStatus,
) -> Result<()> {
    if previous.phase != next.phase
        && let Some(phase) = next.phase
    {
        let phase = format!("{phase:?}");
        let event = PlatformEvent::new(
            "splittest.updated",
            format!(
                "{}/splittest.updated/{phase}/{}",
                test.uid().unwrap_or_default(),
                test.metadata.generation.unwrap_or_default()
            ),
            &test.namespace().unwrap_or_default(),
            format!(
                "{}: split test {} is {}",
                test.spec.project_ref.name,
                test.name_any(),
                phase.to_lowercase()
            ),
        )
        .with_project(&test.spec.project_ref.name, Default::default())
        .with("splitTest", test.name_any())
        .with("phase", phase)
        .with(
            "variants",
            serde_json::to_value(&next.variants).unwrap_or_default(),
        );
        ctx.publisher()
            .publish(&event)
            .await
            .map_err(|err| ReconcileError::Publish(Box::new(err)))?;
    }
    Ok(())
}
