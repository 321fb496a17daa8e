//! The one reconcile driver. A kind says what to do with one object of it
//! ([`Reconciler::reconcile`]); the driver does the rest, the same way for every kind:
//!
//! - an object that does not parse is reported ([`Reconciler::malformed`]) and waits for a
//!   change;
//! - a cached copy older than this replica's own last write to the object (status, or a
//!   Deployment's adoption) is not reconciled: the newer copy's watch event is on the way
//!   ([`super::written`]);
//! - each reconcile runs in a `reconcile` span naming the controller, namespace and name, is
//!   timed and counted (`clouddeck_reconcile_*`), and is marked in flight for `/healthz`;
//! - a success resets the object's backoff; a failure is a Warning Event (unless it waits
//!   for a change, which the object's `Stalled` condition tells) and goes through the one
//!   error policy, [`retry::policy`], with per-object backoffs held here.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::core::DeserializeGuard;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, info_span};

use super::error::{ReconcileError, Result};
use super::events::{reject_malformed, report_error};
use super::retry::{self, Backoffs};
use super::{CACHE_GRACE, Context, ControllerRun};

/// What one kind's controller does with one object.
pub trait Reconciler: Send + Sync + 'static {
    /// The kind reconciled.
    type Kind: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;

    /// The context every controller shares.
    fn context(&self) -> &Context;

    /// Reconciles one object that parsed.
    fn reconcile<'a>(&'a self, obj: &'a Self::Kind) -> BoxFuture<'a, Result<Action>>;

    /// Reports an object that does not parse: by default a Warning Event naming the field
    /// ([`reject_malformed`]).
    fn malformed<'a>(
        &'a self,
        guard: &'a DeserializeGuard<Self::Kind>,
        error: &'a str,
    ) -> BoxFuture<'a, ()> {
        reject_malformed(self.context(), guard, error).boxed()
    }
}

/// Implements [`Reconciler`] for a kind's context whose shared [`Context`] is its `ctx`
/// field, with the default report of malformed objects:
/// `reconciler!(CronJobContext, CronJob, reconcile_cron_job)`, where
/// `reconcile_cron_job(&CronJob, &CronJobContext)` is an `async fn` returning
/// `Result<Action>`.
macro_rules! reconciler {
    ($context:ty, $kind:ty, $reconcile:path) => {
        impl $crate::controllers::driver::Reconciler for $context {
            type Kind = $kind;

            fn context(&self) -> &$crate::controllers::Context {
                &self.ctx
            }

            fn reconcile<'a>(
                &'a self,
                obj: &'a $kind,
            ) -> ::futures::future::BoxFuture<
                'a,
                $crate::controllers::error::Result<::kube::runtime::controller::Action>,
            > {
                ::futures::FutureExt::boxed($reconcile(obj, self))
            }
        }
    };
}
pub(crate) use reconciler;

impl ControllerRun {
    /// Runs `controller` to its end with `reconciler` behind the driver (see the module
    /// docs).
    pub async fn run<R: Reconciler>(
        &self,
        controller: Controller<DeserializeGuard<R::Kind>>,
        reconciler: Arc<R>,
    ) {
        let name = self.name;
        let health = self.health.clone();
        let backoffs = Arc::new(Backoffs::default());
        let failures = backoffs.clone();
        let reconcile = move |guard: Arc<DeserializeGuard<R::Kind>>, reconciler: Arc<R>| {
            let in_flight = health.reconcile_started(name);
            let backoffs = backoffs.clone();
            async move {
                let outcome = reconcile_one(name, &*reconciler, &guard, &backoffs).await;
                drop(in_flight);
                outcome
            }
            .boxed()
        };
        let policy =
            move |guard: Arc<DeserializeGuard<R::Kind>>, error: &ReconcileError, _: Arc<R>| {
                retry::policy(name, &*guard, error, &failures)
            };
        self.drive(controller.run(reconcile, policy, reconciler))
            .await;
    }
}

async fn reconcile_one<R: Reconciler>(
    controller: &'static str,
    reconciler: &R,
    guard: &DeserializeGuard<R::Kind>,
    backoffs: &Backoffs,
) -> Result<Action> {
    let obj = match &guard.0 {
        Ok(obj) => obj,
        Err(invalid) => {
            reconciler.malformed(guard, &invalid.error).await;
            return Ok(Action::await_change());
        }
    };
    let ctx = reconciler.context();
    if ctx.written.behind(obj.meta()) {
        // This replica wrote the object since this copy; its watch event brings the newer
        // copy (and another reconcile) in a moment. The requeue is only a net.
        return Ok(Action::requeue(CACHE_GRACE));
    }
    let span = info_span!("reconcile", controller, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let timer = ctx.metrics.reconcile.start(controller);
    let result = reconciler.reconcile(obj).instrument(span).await;
    timer.finish(&result);
    match &result {
        Ok(_) => backoffs.succeeded(&retry::key(obj)),
        // Repeats become one Event series.
        Err(err) if !err.awaits_change() => report_error(ctx, obj, err).await,
        Err(_) => {}
    }
    result
}
