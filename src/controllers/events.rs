//! Kubernetes Events, the way every controller raises them: one [`Recorder`] per operator
//! (held in [`Context`], so repeated Events become a series instead of new objects),
//! reporting as `clouddeck` and this replica's Pod.
//!
//! The recorder is ours rather than kube-runtime's: kube's keeps a whole copy of every
//! Event it sent for six minutes (a few KiB each, several per object: about 12 KiB per
//! Project after convergence, measured with heaptrack) and sweeps that map on every
//! publish. Ours keeps what a repeat needs (the Event's name and count, under a keyed
//! hash) and sweeps once a minute. It also counts a repeat only when its message is the
//! same, so a changed message is shown, not folded into the old one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::Context;
use crate::telemetry::ErrorReason;

/// A repeat within this long of the last one is counted into the same Event (client-go's
/// and kube-runtime's window).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// How often the recorder forgets Events older than [`SERIES_WINDOW`].
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// At most this many Events are remembered; past it, the oldest go first (the next repeat
/// of one of them is a new Event, nothing else).
pub const REMEMBERED: usize = 32_768;

/// Who CloudDeck's Events say reported them: the controller `clouddeck`, and the pod
/// (`POD_NAME`, from the downward API) when there is one.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "clouddeck".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Writes Events (`events.k8s.io/v1`), counting a repeat into the Event before it.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Arc<Mutex<Recent>>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            recent: Arc::new(Mutex::new(Recent::new(Instant::now()))),
        }
    }

    /// Creates the Event, or, when the same Event (object, type, reason, action, message)
    /// was sent within [`SERIES_WINDOW`], adds one to that Event's series.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let (key, repeat) = {
            let mut recent = self.lock();
            let key = recent.key(ev, regarding);
            (key, recent.repeat(key, Instant::now()))
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events = Api::<K8sEvent>::namespaced(self.client.clone(), namespace);
        if let Some((name, count)) = repeat {
            let series = serde_json::json!({ "series": {
                "count": count,
                "lastObservedTime": MicroTime(Timestamp::now()),
            }});
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    self.lock().counted(key, count, Instant::now());
                    return Ok(());
                }
                // The apiserver let it expire (its event TTL) or someone deleted it.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        let event = new_event(&self.reporter, ev, regarding, Timestamp::now());
        let name = event.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &event).await?;
        self.lock().sent(key, name, Instant::now());
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The Events sent lately, by a keyed hash of what makes two Events the same. The key is
/// random per process, so no tenant can craft a message whose Event counts into another's.
struct Recent {
    hasher: RandomState,
    sent: HashMap<u64, Sent>,
    swept: Instant,
}

struct Sent {
    name: String,
    count: i32,
    at: Instant,
}

impl Recent {
    fn new(now: Instant) -> Self {
        Recent {
            hasher: RandomState::new(),
            sent: HashMap::new(),
            swept: now,
        }
    }

    fn key(&self, ev: &Event, regarding: &ObjectReference) -> u64 {
        let mut h = self.hasher.build_hasher();
        (ev.type_ == EventType::Warning).hash(&mut h);
        (&ev.reason, &ev.action, &ev.note).hash(&mut h);
        let related = ev.secondary.as_ref();
        for reference in std::iter::once(Some(regarding)).chain([related]) {
            reference
                .map(|r| (&r.uid, &r.api_version, &r.kind, &r.namespace, &r.name))
                .hash(&mut h);
        }
        h.finish()
    }

    /// The Event to count a repeat into and its new count, when there is one recent enough.
    fn repeat(&mut self, key: u64, now: Instant) -> Option<(String, i32)> {
        self.sweep(now);
        let sent = self.sent.get(&key)?;
        (now.duration_since(sent.at) < SERIES_WINDOW)
            .then(|| (sent.name.clone(), sent.count.saturating_add(1)))
    }

    fn counted(&mut self, key: u64, count: i32, now: Instant) {
        if let Some(sent) = self.sent.get_mut(&key) {
            sent.count = sent.count.max(count);
            sent.at = now;
        }
    }

    fn sent(&mut self, key: u64, name: String, now: Instant) {
        self.sweep(now);
        if self.sent.len() >= REMEMBERED && !self.sent.contains_key(&key) {
            // Full of Events still in their window: the oldest go.
            let mut ages: Vec<Instant> = self.sent.values().map(|s| s.at).collect();
            let cut = ages.len() / 4;
            let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
            let oldest_kept = *oldest_kept;
            self.sent.retain(|_, s| s.at >= oldest_kept);
        }
        self.sent.insert(
            key,
            Sent {
                name,
                count: 1,
                at: now,
            },
        );
    }

    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.sent
            .retain(|_, s| now.duration_since(s.at) < SERIES_WINDOW);
    }
}

/// A new Event about `regarding`, named as kube-runtime and client-go name them
/// (`<object>.<nanoseconds, hex>`).
fn new_event(
    reporter: &Reporter,
    ev: &Event,
    regarding: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    K8sEvent {
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: ev.secondary.clone(),
        note: ev.note.clone(),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or(&reporter.controller),
                now.as_nanosecond()
            )),
            ..Default::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(match ev.type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        ..Default::default()
    }
}

/// Publishes an Event; a failure to publish is logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    message: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(crate::truncate(message, 1000)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(reason, error = %err, "cannot publish Event");
    }
}

/// Tells a failed reconcile as a Warning Event on the object, with the error's bounded
/// reason and its one-line text (never `Debug`); repeats become one Event series.
pub async fn report_error<K, E>(ctx: &Context, obj: &K, err: &E)
where
    K: Resource<DynamicType = ()>,
    E: ErrorReason + std::error::Error + 'static,
{
    let note = crate::one_line(err);
    // Deferred by the fan-out rate is not a failure, and says when it goes on.
    let type_ = if err.reason() == crate::delivery::fanout::THROTTLED {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish(&ctx.recorder, obj, type_, err.reason(), "Reconcile", &note).await;
}

/// Reports an object that does not even parse (e.g. stored under an older, looser CRD): a
/// Warning Event `InvalidObject` naming the field, a log line and a count, and no retry
/// until it changes.
pub async fn reject_malformed<K>(ctx: &Context, guard: &DeserializeGuard<K>, error: &str)
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let meta = guard.meta();
    // The guard keeps only serde's message, which does not say where; one read of the raw
    // object, decoded again with its path kept, does (once per change of a broken object).
    let error = match where_malformed::<K>(ctx, meta).await {
        Some(located) => located,
        None => error.to_owned(),
    };
    warn!(name = ?meta.name, namespace = ?meta.namespace, error, "malformed object");
    ctx.metrics
        .reconcile
        .invalid_objects
        .get_or_create(&crate::telemetry::KindLabels {
            kind: K::kind(&()).into_owned(),
        })
        .inc();
    let message = format!("the object does not match its schema: {error}");
    publish(
        &ctx.recorder,
        guard,
        EventType::Warning,
        "InvalidObject",
        "Validate",
        &message,
    )
    .await;
}

/// `<field path>: <what is wrong>` for the stored object, or `None` if it cannot be read or
/// now decodes.
async fn where_malformed<K>(ctx: &Context, meta: &ObjectMeta) -> Option<String>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let resource = ApiResource::erase::<K>(&());
    let name = meta.name.as_deref()?;
    let api: Api<DynamicObject> = match &meta.namespace {
        Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let raw = serde_json::to_value(api.get(name).await.ok()?).ok()?;
    located_error::<K>(raw)
}

/// Decodes `raw` as a `K`, and on failure names the field: `spec.port: invalid value …`.
fn located_error<K: DeserializeOwned>(raw: serde_json::Value) -> Option<String> {
    match serde_path_to_error::deserialize::<_, K>(raw) {
        Ok(_) => None,
        Err(err) => Some(format!("{}: {}", err.path(), err.inner())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType};

    use super::{REMEMBERED, Recent, SERIES_WINDOW, located_error};
    use crate::api::Project;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn object(namespace: &str, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("clouddeck.io/v1alpha1".into()),
            kind: Some("Deployment".into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{namespace}-{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeat_within_the_window_counts_into_the_event_before_it() {
        let t0 = Instant::now();
        let mut recent = Recent::new(t0);
        let key = recent.key(&event("BuildFailed", "exit 1"), &object("a", "web"));
        assert_eq!(recent.repeat(key, t0), None);
        recent.sent(key, "web.1".into(), t0);
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(recent.repeat(key, t1), Some(("web.1".into(), 2)));
        recent.counted(key, 2, t1);
        let t2 = t1 + SERIES_WINDOW - Duration::from_secs(1);
        assert_eq!(recent.repeat(key, t2), Some(("web.1".into(), 3)));
        // Past the window (from the last repeat), a new Event.
        assert_eq!(recent.repeat(key, t1 + SERIES_WINDOW), None);
    }

    #[test]
    fn another_message_object_or_reason_is_another_event() {
        let recent = Recent::new(Instant::now());
        let key = recent.key(&event("Stalled", "spec.port: too big"), &object("a", "web"));
        for other in [
            recent.key(&event("Stalled", "spec.image: empty"), &object("a", "web")),
            recent.key(&event("Stalled", "spec.port: too big"), &object("b", "web")),
            recent.key(&event("Failed", "spec.port: too big"), &object("a", "web")),
        ] {
            assert_ne!(key, other);
        }
        // The key is per process: the same Event hashes elsewhere to something else.
        let elsewhere = Recent::new(Instant::now());
        assert_ne!(
            key,
            elsewhere.key(&event("Stalled", "spec.port: too big"), &object("a", "web"))
        );
    }

    #[test]
    fn old_events_are_forgotten_and_the_count_is_bounded() {
        let t0 = Instant::now();
        let mut recent = Recent::new(t0);
        recent.sent(1, "old".into(), t0);
        let later = t0 + SERIES_WINDOW + Duration::from_secs(60);
        recent.sent(2, "new".into(), later);
        assert_eq!(recent.sent.len(), 1, "the sweep drops the expired one");
        for key in 0..REMEMBERED as u64 + 10 {
            recent.sent(
                key + 10,
                format!("e{key}"),
                later + Duration::from_millis(key),
            );
        }
        assert!(recent.sent.len() <= REMEMBERED);
        let newest = 10 + REMEMBERED as u64 + 9;
        assert!(recent.sent.contains_key(&newest), "the newest is kept");
    }

    #[test]
    fn a_malformed_object_is_reported_with_the_field_that_is_wrong() {
        let raw = json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "shop", "namespace": "team-a" },
            "spec": { "image": "registry.local/app:1", "previewRetain": 4_294_967_296_i64 }
        });
        let error = located_error::<Project>(raw).unwrap();
        assert!(error.starts_with("spec.previewRetain: "), "{error}");
        assert!(error.contains("4294967296"), "{error}");
    }

    #[test]
    fn an_object_that_decodes_has_nothing_to_report() {
        let raw = json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "shop" }, "spec": { "image": "registry.local/app:1" }
        });
        assert_eq!(located_error::<Project>(raw), None);
    }
}
