//! Logs and metrics: the `tracing` subscriber, and the Prometheus registry (prefix
//! `clouddeck`) with the metrics every controller reports through [`Metrics`].

use std::io::IsTerminal;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber, writing to stderr. The filter is
/// `--log-level`, else `RUST_LOG`, else `info` (see [`filter_directives`]).
pub fn init_logging(config: &LogConfig) {
    let spec = match &config.log_level {
        Some(level) => level.clone(),
        None => std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".into()),
    };
    let filter = EnvFilter::try_new(filter_directives(&spec))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives("info")));
    // The trigger count has a filter of its own: it holds whatever the log level.
    let triggers = ReconcileTriggers
        .with_filter(Targets::new().with_target("kube_runtime::controller", tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(triggers);
    // Colours only for a person at a terminal, not in files or `kubectl logs`.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact().with_filter(filter)).try_init(),
    };
}

/// `clouddeck_reconcile_triggers_total{kind, trigger, source}`: every reconcile, by the
/// kind reconciled and what made kube-runtime run it. Filled by [`ReconcileTriggers`],
/// process-wide (the subscriber is installed before the registry exists).
static RECONCILE_TRIGGERS: LazyLock<Family<TriggerLabels, Counter>> =
    LazyLock::new(Family::default);

/// What made a reconcile run.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Trigger {
    /// The object itself changed (or appeared, or a relist found it).
    object,
    /// A child or related object changed (its kind is the `source` label).
    related,
    /// The reconcile asked to look again (a deadline, or the hourly resync).
    requeue,
    /// The error policy asked to look again after a failure.
    error_retry,
    other,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub kind: String,
    pub trigger: Trigger,
    /// The kind of the child or related object, for `trigger="related"`; else empty.
    pub source: String,
}

/// kube-runtime does not hand a reconcile its reason, but it opens a span around each one
/// (`reconciling object`, with `object.ref` and `object.reason`): this layer counts those.
pub struct ReconcileTriggers;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ReconcileTriggers {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "reconciling object" {
            return;
        }
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let (Some(object), Some(reason)) = (fields.object, fields.reason) {
            RECONCILE_TRIGGERS
                .get_or_create(&trigger_labels(&object, &reason))
                .inc();
        }
    }
}

#[derive(Default)]
struct SpanFields {
    object: Option<String>,
    reason: Option<String>,
}

impl tracing::field::Visit for SpanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "object.ref" => self.object = Some(format!("{value:?}")),
            "object.reason" => self.reason = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

/// The labels for a reconcile of `object` (kube-runtime's `Kind.version.group/name.ns`)
/// run for `reason` (its `ReconcileReason`, displayed).
pub fn trigger_labels(object: &str, reason: &str) -> TriggerLabels {
    let (trigger, source) = match reason {
        "object updated" => (Trigger::object, ""),
        "reconciler requested retry" => (Trigger::requeue, ""),
        "error policy requested retry" => (Trigger::error_retry, ""),
        other => match other.strip_prefix("related object updated: ") {
            Some(related) => (Trigger::related, kind_of(related)),
            None => (Trigger::other, ""),
        },
    };
    TriggerLabels {
        kind: kind_of(object).to_owned(),
        trigger,
        source: source.to_owned(),
    }
}

/// The kind in an object reference: bounded, the kinds the operator watches.
fn kind_of(object: &str) -> &str {
    let kind = object.split('.').next().unwrap_or_default();
    if kind.len() <= 63 && kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        kind
    } else {
        "unknown"
    }
}

/// `spec`, quietened where a library repeats what CloudDeck reports itself: kube's client
/// logs an ERROR line per failed request, which in an apiserver outage is every retry of
/// every watch, while each controller logs one line per backoff step of a failing watch
/// and every reconcile error with its object. A filter that names `kube_client` is kept as
/// given (a person debugging the client wants its lines).
pub fn filter_directives(spec: &str) -> String {
    if spec.contains("kube_client") {
        spec.to_owned()
    } else {
        format!("{spec},kube_client::client::builder=off")
    }
}

/// The registry `/metrics` serves: every metric is named `clouddeck_*`.
pub fn registry() -> Registry {
    Registry::with_prefix("clouddeck")
}

/// Metrics shared by the whole operator. Cheap to clone: each metric is a shared handle.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub reconcile: ReconcileMetrics,
    /// `clouddeck_leader`: 1 while this replica holds the leader Lease, else 0.
    pub leader: Gauge,
    /// `clouddeck_webhook_*`: deliveries by outcome, attempt latency, pending queue.
    pub delivery: crate::delivery::metrics::DeliveryMetrics,
    /// `clouddeck_builds_*` and `clouddeck_rollouts_*`.
    pub pipeline: PipelineMetrics,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs controllers",
            leader.clone(),
        );
        Metrics {
            reconcile: ReconcileMetrics::new(registry),
            leader,
            delivery: crate::delivery::metrics::DeliveryMetrics::new(registry),
            pipeline: PipelineMetrics::new(registry),
        }
    }
}

/// How a build or a rollout ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    succeeded,
    failed,
    /// Superseded by a newer Deployment, or canceled.
    canceled,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

/// Builds and rollouts of CloudDeck Deployments, by outcome.
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    /// `clouddeck_builds_total{outcome}`
    pub builds: Family<OutcomeLabels, Counter>,
    /// `clouddeck_build_duration_seconds{outcome}`: from the build pod running to its end.
    pub build_duration: Family<OutcomeLabels, Histogram>,
    /// `clouddeck_rollouts_total{outcome}`
    pub rollouts: Family<OutcomeLabels, Counter>,
    /// `clouddeck_rollout_duration_seconds{outcome}`: from the workload applied to Ready.
    pub rollout_duration: Family<OutcomeLabels, Histogram>,
}

impl PipelineMetrics {
    fn new(registry: &mut Registry) -> Self {
        // 1s .. ~68min: a rollout takes seconds, a cold build many minutes.
        let buckets = || Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let metrics = PipelineMetrics {
            builds: Family::default(),
            build_duration: Family::new_with_constructor(buckets),
            rollouts: Family::default(),
            rollout_duration: Family::new_with_constructor(buckets),
        };
        registry.register(
            "builds",
            "Builds that ended, by outcome",
            metrics.builds.clone(),
        );
        registry.register_with_unit(
            "build_duration",
            "How long builds ran, by outcome",
            Unit::Seconds,
            metrics.build_duration.clone(),
        );
        registry.register(
            "rollouts",
            "Rollouts that ended, by outcome",
            metrics.rollouts.clone(),
        );
        registry.register_with_unit(
            "rollout_duration",
            "How long rollouts took to become Ready (or fail), by outcome",
            Unit::Seconds,
            metrics.rollout_duration.clone(),
        );
        metrics
    }
}

/// The outcome label of `clouddeck_reconciliations_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileResult {
    success,
    error,
    /// The reconcile was dropped before it finished (shutdown, lost leadership, panic).
    aborted,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    /// [`ErrorReason::reason`]: a bounded set of CamelCase names.
    pub reason: &'static str,
}

/// Reconcile metrics, labelled by controller name. Label values are `&'static str` so that
/// they stay bounded: controller names and error reasons are constants in the code.
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    /// `clouddeck_reconciliations_total{controller, result}`
    pub reconciliations: Family<ReconcileLabels, Counter>,
    /// `clouddeck_reconcile_failures_total{controller, reason}`
    pub failures: Family<FailureLabels, Counter>,
    /// `clouddeck_reconcile_duration_seconds{controller}`
    pub duration: Family<ControllerLabels, Histogram>,
    /// `clouddeck_watch_errors_total{controller}`: failed watch attempts (each is retried
    /// after a backoff step; see `controllers::watch_backoff`).
    pub watch_errors: Family<ControllerLabels, Counter>,
    /// `clouddeck_invalid_objects_total{kind}`: objects the apiserver admitted that the
    /// operator cannot decode, skipped (and reported on the object as a Warning Event).
    pub invalid_objects: Family<KindLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// One of CloudDeck's own kinds: bounded.
    pub kind: String,
}

impl ReconcileMetrics {
    fn new(registry: &mut Registry) -> Self {
        let metrics = ReconcileMetrics {
            reconciliations: Family::default(),
            failures: Family::default(),
            // 5ms .. ~20s: most reconciles are a few API calls; builds are watched, not awaited.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 13))
            }),
            watch_errors: Family::default(),
            invalid_objects: Family::default(),
        };
        registry.register(
            "watch_errors",
            "Failed watch attempts, by controller; each is retried after a backoff step",
            metrics.watch_errors.clone(),
        );
        registry.register(
            "invalid_objects",
            "Objects the operator could not decode and skipped, by kind",
            metrics.invalid_objects.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciles run, by controller and result",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "reconcile_triggers",
            "Reconciles run, by kind and by what triggered them (the object, a child or related object of kind `source`, a requeue, a retry)",
            RECONCILE_TRIGGERS.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that returned an error, by controller and error reason",
            metrics.failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, by controller",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        metrics
    }

    /// Starts timing one reconcile. Hold the guard for the whole reconcile and hand it the
    /// result with [`ReconcileTimer::finish`]; when dropped it records the duration and the
    /// outcome (`aborted` if it never got one).
    ///
    /// ```ignore
    /// let timer = ctx.metrics.reconcile.start(CONTROLLER);
    /// let result = reconcile_inner(&obj, &ctx).await;
    /// timer.finish(&result);
    /// result
    /// ```
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            controller,
            started: Instant::now(),
            result: ReconcileResult::aborted,
        }
    }
}

/// Drop guard timing one reconcile; see [`ReconcileMetrics::start`].
#[must_use = "the timer records when dropped; hold it for the whole reconcile"]
pub struct ReconcileTimer {
    metrics: ReconcileMetrics,
    controller: &'static str,
    started: Instant,
    result: ReconcileResult,
}

/// An error with a bounded, CamelCase reason: a metric label and an Event reason.
pub trait ErrorReason {
    fn reason(&self) -> &'static str;
}

impl ReconcileTimer {
    /// Records the reconcile's outcome; an error also counts in
    /// `clouddeck_reconcile_failures_total` under its [`ErrorReason::reason`].
    pub fn finish<T, E: ErrorReason>(mut self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.result = ReconcileResult::success,
            Err(err) => {
                self.result = ReconcileResult::error;
                let labels = FailureLabels {
                    controller: self.controller,
                    reason: err.reason(),
                };
                self.metrics.failures.get_or_create(&labels).inc();
            }
        }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let controller = self.controller;
        self.metrics
            .duration
            .get_or_create(&ControllerLabels { controller })
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .reconciliations
            .get_or_create(&ReconcileLabels {
                controller,
                result: self.result,
            })
            .inc();
    }
}

/// Renders the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::error::ReconcileError;

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn the_client_s_per_request_errors_are_off_unless_asked_for() {
        assert_eq!(
            filter_directives("info"),
            "info,kube_client::client::builder=off"
        );
        assert_eq!(
            filter_directives("info,kube_client=debug"),
            "info,kube_client=debug"
        );
        EnvFilter::try_new(filter_directives("info,clouddeck=debug")).unwrap();
    }

    #[test]
    fn timer_counts_results_failures_and_duration() {
        let mut registry = registry();
        let metrics = Metrics::new(&mut registry);

        metrics
            .reconcile
            .start("project")
            .finish(&Ok::<_, ReconcileError>(()));
        metrics
            .reconcile
            .start("project")
            .finish(&Err::<(), _>(ReconcileError::MissingReference("x".into())));
        drop(metrics.reconcile.start("project"));
        metrics.leader.set(1);

        let text = encode(&registry);
        let count = |result: &str| {
            line_value(
                &text,
                &format!(
                    "clouddeck_reconciliations_total{{controller=\"project\",result=\"{result}\"}}"
                ),
            )
        };
        assert_eq!(count("success"), Some(1.0), "{text}");
        assert_eq!(count("error"), Some(1.0), "{text}");
        assert_eq!(count("aborted"), Some(1.0), "{text}");
        assert_eq!(
            line_value(
                &text,
                "clouddeck_reconcile_failures_total{controller=\"project\",reason=\"MissingReference\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            line_value(
                &text,
                "clouddeck_reconcile_duration_seconds_count{controller=\"project\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(line_value(&text, "clouddeck_leader "), Some(1.0), "{text}");
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }

    #[test]
    fn reconcile_triggers_are_labelled_by_kind_cause_and_source() {
        let labels = |object, reason| {
            let l = trigger_labels(object, reason);
            (l.kind, l.trigger, l.source)
        };
        let project = "Project.v1alpha1.clouddeck.io/shop.team-a";
        assert_eq!(
            labels(project, "object updated"),
            ("Project".into(), Trigger::object, String::new())
        );
        assert_eq!(
            labels(
                project,
                "related object updated: HTTPRoute.v1.gateway.networking.k8s.io/shop.team-a"
            ),
            ("Project".into(), Trigger::related, "HTTPRoute".into())
        );
        assert_eq!(
            labels(project, "reconciler requested retry").1,
            Trigger::requeue
        );
        assert_eq!(
            labels(project, "error policy requested retry").1,
            Trigger::error_retry
        );
        assert_eq!(labels("not a ref!", "custom").0, "unknown");
    }

    #[test]
    fn the_layer_counts_kube_runtimes_reconcile_spans() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(ReconcileTriggers);
        // A kind of its own: the counter is process-wide.
        let object = "LayerTestKind.v1.example.com/a.b";
        let labels = trigger_labels(object, "object updated");
        let before = RECONCILE_TRIGGERS.get_or_create(&labels).get();
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!(
                "reconciling object",
                "object.ref" = %object,
                object.reason = %"object updated"
            );
            let _other = tracing::info_span!("something else", "object.ref" = %object);
        });
        assert_eq!(RECONCILE_TRIGGERS.get_or_create(&labels).get(), before + 1);
    }
}
