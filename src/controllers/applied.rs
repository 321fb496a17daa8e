//! What this process last applied to each child, so that a reconcile that renders a child
//! exactly as before, and finds it in the cache exactly as that apply left it, sends
//! nothing (issue #13: a resync that finds no drift costs no API request).
//!
//! A child is skipped only when both hold:
//! - the rendered object hashes the same as the one last applied (our intent did not
//!   change, including fields we stopped setting, which an apply would remove), and
//! - the cached child is the object that apply returned, unwritten since except for its
//!   status: the same uid, and either the same `resourceVersion`, or (for kinds that keep
//!   a `metadata.generation`) the same generation, owners, and values of the labels and
//!   annotations CloudDeck sets (others' keys, such as the revision annotation
//!   kube-controller-manager adds to a Deployment, an apply would leave alone). A
//!   `kubectl edit` of the spec moves the generation; a relabel moves the labels; a
//!   deletion empties the cache; the status a controller writes (a Deployment's replica
//!   counts, a gateway's route conditions) moves neither, and costs no apply.
//!
//! Anything else applies, as before. The record lives in memory only: after a restart the
//! first reconcile of every child applies once, and a stale cache costs one apply, never a
//! skipped change.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One child of one kind, by namespace and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    kind: String,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    intent: u64,
    /// What the apply returned.
    left: Left,
}

/// The parts of a child's metadata that only a write other than a status write changes.
#[derive(Clone, Debug, PartialEq)]
struct Left {
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    /// Labels, annotations and owner references.
    metadata: u64,
}

impl Left {
    /// `meta` as far as `ours` (the rendered child's metadata) can tell: of the labels and
    /// annotations, only the keys CloudDeck sets. Others' keys (the revision annotation
    /// kube-controller-manager puts on a Deployment) are none of an apply's business:
    /// server-side apply would leave them as they are.
    fn of(meta: &ObjectMeta, ours: &ObjectMeta) -> Left {
        Left {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            generation: meta.generation,
            metadata: hash_of(&(
                only_ours(meta.labels.as_ref(), ours.labels.as_ref()),
                only_ours(meta.annotations.as_ref(), ours.annotations.as_ref()),
                &meta.owner_references,
            )),
        }
    }

    /// Whether `live` is this object, changed since at most in its status.
    fn still(&self, live: &Left) -> bool {
        self.uid == live.uid
            && (self.resource_version.is_some() && self.resource_version == live.resource_version
                || self.generation.is_some()
                    && self.generation == live.generation
                    && self.metadata == live.metadata)
    }
}

/// The entries of `live` whose keys `ours` has.
fn only_ours<'a>(
    live: Option<&'a BTreeMap<String, String>>,
    ours: Option<&BTreeMap<String, String>>,
) -> Vec<(&'a String, &'a String)> {
    live.into_iter()
        .flatten()
        .filter(|(key, _)| ours.is_some_and(|o| o.contains_key(*key)))
        .collect()
}

/// The record; one per controller.
#[derive(Debug, Default)]
pub struct Applied {
    entries: Mutex<HashMap<Key, Entry>>,
    /// The size at which [`Applied::prune`] next looks for children that are gone.
    prune_at: AtomicUsize,
}

/// The smallest record worth a clean-up.
const PRUNE_FLOOR: usize = 1_024;

impl Applied {
    /// Whether applying `rendered` would change nothing: the same intent as the last apply,
    /// and `live` (the cache's metadata of the child) is what it returned, changed since at
    /// most in its status.
    pub fn unchanged<K: Resource<DynamicType = ()> + Serialize>(
        &self,
        rendered: &K,
        live: Option<&ObjectMeta>,
    ) -> bool {
        let Some(live) = live else {
            return false;
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key(rendered)).is_some_and(|entry| {
            entry.intent == intent(rendered) && entry.left.still(&Left::of(live, rendered.meta()))
        })
    }

    /// Records that `rendered` was applied and the apiserver returned `returned`.
    pub fn record<K: Resource<DynamicType = ()> + Serialize>(
        &self,
        rendered: &K,
        returned: &ObjectMeta,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            key(rendered),
            Entry {
                intent: intent(rendered),
                left: Left::of(returned, rendered.meta()),
            },
        );
    }

    /// Forgets `rendered`'s child: its next reconcile applies it.
    pub fn forget<K: Resource<DynamicType = ()>>(&self, rendered: &K) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&key(rendered));
    }

    /// Keeps only the entries for which `exists(kind, namespace, name)` holds.
    pub fn retain(&self, exists: impl Fn(&str, &str, &str) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| exists(&k.kind, &k.namespace, &k.name));
    }

    /// Drops the entries of children that are gone (deleted with their owner), but only
    /// once the record has doubled since the last clean-up: amortized, a reconcile pays
    /// nothing for it.
    pub fn prune(&self, exists: impl Fn(&str, &str, &str) -> bool) {
        let threshold = self.prune_at.load(Ordering::Relaxed).max(PRUNE_FLOOR);
        if self.len() <= threshold {
            return;
        }
        self.retain(exists);
        self.prune_at.store(2 * self.len(), Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> Key {
    Key {
        kind: K::kind(&()).into_owned(),
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
    }
}

/// A hash of the object as it would be sent. In memory only, so the hasher's stability
/// across Rust releases does not matter.
fn intent<K: Serialize>(obj: &K) -> u64 {
    hash_of(obj)
}

fn hash_of<T: Serialize>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Server-side applies `rendered` through `api` unless [`Applied::unchanged`] says it
/// would change nothing, judged against `cache` (the controller's cache of such children:
/// their metadata, or whole objects). Returns the object the apiserver returned, or `None`
/// when nothing was sent.
pub async fn apply<K, S>(
    api: &Api<K>,
    cache: &Store<S>,
    applied: &Applied,
    params: &PatchParams,
    rendered: &K,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    S: Resource<DynamicType = ()> + Clone,
{
    let name = rendered.meta().name.clone().unwrap_or_default();
    let mut at = ObjectRef::<S>::new(&name);
    if let Some(namespace) = &rendered.meta().namespace {
        at = at.within(namespace);
    }
    let live = cache.get(&at);
    apply_over(
        api,
        live.as_ref().map(|l| l.meta()),
        applied,
        params,
        rendered,
    )
    .await
}

/// Like [`apply`], for a cache of whole children: the object as the apiserver returned it,
/// or, when nothing was sent, as the cache holds it (with the status written since).
pub async fn apply_or_cached<K>(
    api: &Api<K>,
    cache: &Store<K>,
    applied: &Applied,
    params: &PatchParams,
    rendered: &K,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let cached = cache.get(&ObjectRef::from_obj(rendered));
    let live = cached.as_ref().map(|c| c.meta());
    let returned = apply_over(api, live, applied, params, rendered).await?;
    Ok(returned.or_else(|| cached.map(|c| K::clone(&c))))
}

/// Like [`apply`], for a controller that looked the child up itself: `live` is the
/// metadata of the cached child (`None` if not cached).
pub async fn apply_over<K>(
    api: &Api<K>,
    live: Option<&ObjectMeta>,
    applied: &Applied,
    params: &PatchParams,
    rendered: &K,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    if applied.unchanged(rendered, live) {
        return Ok(None);
    }
    let name = rendered.meta().name.clone().unwrap_or_default();
    let returned = api.patch(&name, params, &Patch::Apply(rendered)).await?;
    applied.record(rendered, returned.meta());
    Ok(Some(returned))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;

    fn service(port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "team-a",
                "labels": { "app": "web" }, "annotations": { "clouddeck.io/of": "web" }
            },
            "spec": { "ports": [{ "port": port }] }
        }))
        .unwrap()
    }

    /// Metadata as the apiserver returns it: `uid`, `resourceVersion`, and a generation
    /// for kinds that keep one.
    fn live(uid: &str, version: &str, generation: Option<i64>) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(version.into()),
            generation,
            labels: Some([("app".to_owned(), "web".to_owned())].into()),
            annotations: Some([("clouddeck.io/of".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_recorded_means_apply() {
        let applied = Applied::default();
        assert!(!applied.unchanged(&service(80), Some(&live("u", "7", None))));
    }

    #[test]
    fn the_same_intent_on_the_object_it_left_is_skipped() {
        let applied = Applied::default();
        applied.record(&service(80), &live("u", "7", None));
        assert!(applied.unchanged(&service(80), Some(&live("u", "7", None))));
    }

    #[test]
    fn someone_elses_write_or_a_deletion_means_apply() {
        let applied = Applied::default();
        applied.record(&service(80), &live("u", "7", None));
        assert!(
            !applied.unchanged(&service(80), Some(&live("u", "8", None))),
            "written since, and no generation to tell a status write from another"
        );
        assert!(
            !applied.unchanged(&service(80), None),
            "deleted, or not cached yet"
        );
        assert!(
            !applied.unchanged(&service(80), Some(&live("other", "7", None))),
            "deleted and made again"
        );
    }

    #[test]
    fn a_status_write_is_not_drift_but_a_spec_or_label_change_is() {
        let applied = Applied::default();
        applied.record(&service(80), &live("u", "7", Some(1)));
        assert!(
            applied.unchanged(&service(80), Some(&live("u", "9", Some(1)))),
            "status written by another controller: same generation and labels"
        );
        assert!(
            !applied.unchanged(&service(80), Some(&live("u", "9", Some(2)))),
            "spec edited"
        );
        let mut relabelled = live("u", "9", Some(1));
        relabelled.labels = Some([("app".to_owned(), "other".to_owned())].into());
        assert!(
            !applied.unchanged(&service(80), Some(&relabelled)),
            "relabelled"
        );
        let mut annotated = live("u", "9", Some(1));
        annotated.annotations = Some([("clouddeck.io/of".to_owned(), "x".to_owned())].into());
        assert!(
            !applied.unchanged(&service(80), Some(&annotated)),
            "our annotation edited"
        );
        let mut unlabelled = live("u", "9", Some(1));
        unlabelled.labels = None;
        assert!(
            !applied.unchanged(&service(80), Some(&unlabelled)),
            "our label removed"
        );
        // kube-controller-manager's revision annotation on a Deployment, a user's label:
        // an apply would leave both as they are.
        let mut theirs = live("u", "9", Some(1));
        theirs
            .annotations
            .as_mut()
            .unwrap()
            .insert("deployment.kubernetes.io/revision".into(), "1".into());
        theirs
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        assert!(
            applied.unchanged(&service(80), Some(&theirs)),
            "others' keys are not drift"
        );
        assert!(
            !applied.unchanged(&service(80), Some(&live("v", "9", Some(1)))),
            "made again by someone else, generation 1 again"
        );
    }

    #[test]
    fn a_changed_intent_means_apply() {
        let applied = Applied::default();
        applied.record(&service(80), &live("u", "7", Some(1)));
        assert!(!applied.unchanged(&service(8080), Some(&live("u", "7", Some(1)))));
    }

    #[test]
    fn forgotten_and_pruned_children_apply_again() {
        let applied = Applied::default();
        applied.record(&service(80), &live("u", "7", None));
        applied.forget(&service(80));
        assert!(!applied.unchanged(&service(80), Some(&live("u", "7", None))));

        applied.record(&service(80), &live("u", "7", None));
        applied.retain(|kind, namespace, name| {
            (kind, namespace, name) != ("Service", "team-a", "web-1")
        });
        assert!(applied.is_empty());
    }

    #[test]
    fn pruning_waits_until_the_record_has_grown() {
        let applied = Applied::default();
        for port in 0..(PRUNE_FLOOR as i32 + 1) {
            let mut child = service(port);
            child.metadata.name = Some(format!("web-{port}"));
            applied.record(&child, &live("u", "1", None));
        }
        applied.prune(|_, _, name| name == "web-0");
        assert_eq!(applied.len(), 1, "over the floor: pruned");
        applied.record(&service(80), &live("u", "1", None));
        applied.prune(|_, _, _| false);
        assert_eq!(applied.len(), 2, "small again: left alone");
    }
}
