//! What this process last applied to each child, so that a reconcile that renders a child
//! exactly as before, and finds it in the cache exactly as that apply left it, sends
//! nothing (issue #13: a resync that finds no drift costs no API request).
//!
//! A child is skipped only when both hold:
//! - the rendered object hashes the same as the one last applied (our intent did not
//!   change, including fields we stopped setting, which an apply would remove), and
//! - the cached child's `resourceVersion` is the one that apply returned (nobody, us or
//!   another client, has written the object since: a `kubectl edit`, a deletion, a status
//!   write).
//!
//! Anything else applies, as before. The record lives in memory only: after a restart the
//! first reconcile of every child applies once, and a stale cache costs one apply, never a
//! skipped change.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::Resource;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
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
    resource_version: String,
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
    /// and `live_version` (the cache's `resourceVersion` of the child) is what it returned.
    pub fn unchanged<K: Resource<DynamicType = ()> + Serialize>(
        &self,
        rendered: &K,
        live_version: Option<&str>,
    ) -> bool {
        let Some(live_version) = live_version else {
            return false;
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key(rendered)).is_some_and(|entry| {
            entry.resource_version == live_version && entry.intent == intent(rendered)
        })
    }

    /// Records that `rendered` was applied and the apiserver returned `resource_version`.
    pub fn record<K: Resource<DynamicType = ()> + Serialize>(
        &self,
        rendered: &K,
        resource_version: Option<&str>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match resource_version {
            Some(version) => entries.insert(
                key(rendered),
                Entry {
                    intent: intent(rendered),
                    resource_version: version.to_owned(),
                },
            ),
            None => entries.remove(&key(rendered)),
        };
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
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(obj)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Server-side applies `rendered` through `api` unless [`Applied::unchanged`] says it
/// would change nothing, judged against `cache` (the controller's metadata cache of such
/// children). Returns the object the apiserver returned, or `None` when nothing was sent.
pub async fn apply<K>(
    api: &Api<K>,
    cache: &Store<PartialObjectMeta<K>>,
    applied: &Applied,
    params: &PatchParams,
    rendered: &K,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = rendered.meta().name.clone().unwrap_or_default();
    let mut at = ObjectRef::<PartialObjectMeta<K>>::new(&name);
    if let Some(namespace) = &rendered.meta().namespace {
        at = at.within(namespace);
    }
    let live = cache.get(&at);
    let live_version = live
        .as_ref()
        .and_then(|l| l.metadata.resource_version.as_deref());
    apply_over(api, live_version, applied, params, rendered).await
}

/// Like [`apply`], for a controller that caches such children in full: `live_version` is
/// the cached child's `resourceVersion` (`None` if not cached).
pub async fn apply_over<K>(
    api: &Api<K>,
    live_version: Option<&str>,
    applied: &Applied,
    params: &PatchParams,
    rendered: &K,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    if applied.unchanged(rendered, live_version) {
        return Ok(None);
    }
    let name = rendered.meta().name.clone().unwrap_or_default();
    let returned = api.patch(&name, params, &Patch::Apply(rendered)).await?;
    applied.record(rendered, returned.meta().resource_version.as_deref());
    Ok(Some(returned))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;

    fn service(port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": { "name": "web-1", "namespace": "team-a" },
            "spec": { "ports": [{ "port": port }] }
        }))
        .unwrap()
    }

    #[test]
    fn nothing_recorded_means_apply() {
        let applied = Applied::default();
        assert!(!applied.unchanged(&service(80), Some("7")));
    }

    #[test]
    fn the_same_intent_on_the_object_it_left_is_skipped() {
        let applied = Applied::default();
        applied.record(&service(80), Some("7"));
        assert!(applied.unchanged(&service(80), Some("7")));
    }

    #[test]
    fn someone_elses_write_or_a_deletion_means_apply() {
        let applied = Applied::default();
        applied.record(&service(80), Some("7"));
        assert!(!applied.unchanged(&service(80), Some("8")), "written since");
        assert!(
            !applied.unchanged(&service(80), None),
            "deleted, or not cached yet"
        );
    }

    #[test]
    fn a_changed_intent_means_apply() {
        let applied = Applied::default();
        applied.record(&service(80), Some("7"));
        assert!(!applied.unchanged(&service(8080), Some("7")));
    }

    #[test]
    fn forgotten_and_pruned_children_apply_again() {
        let applied = Applied::default();
        applied.record(&service(80), Some("7"));
        applied.forget(&service(80));
        assert!(!applied.unchanged(&service(80), Some("7")));

        applied.record(&service(80), Some("7"));
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
            applied.record(&child, Some("1"));
        }
        applied.prune(|_, _, name| name == "web-0");
        assert_eq!(applied.len(), 1, "over the floor: pruned");
        applied.record(&service(80), Some("1"));
        applied.prune(|_, _, _| false);
        assert_eq!(applied.len(), 2, "small again: left alone");
    }
}
