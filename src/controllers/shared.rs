//! Caches shared by every controller of one leadership term: one watch and one copy of
//! each object per kind and selector, however many controllers read it (issue #13: six
//! controllers each kept their own copy of every Project, five of every Deployment, and
//! each copy was a watch on the apiserver).
//!
//! Each controller that asks for a cache gets the one store and its own stream of the
//! objects that changed (applied or deleted, and all of them after each list): the same
//! triggers a cache of its own would give. kube-runtime's shared streams
//! (`reflector::store_shared`) do not pass deletes on, so the fan-out is ours. A
//! subscriber that joins after the list first gets every object the store holds.
//! Subscribers' channels are unbounded: an item is a pointer into the store, and every
//! subscriber is a controller's trigger stream, drained as it comes.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

/// The caches of one leadership term, by kind and selector.
#[derive(Default)]
pub struct SharedCaches {
    caches: Mutex<HashMap<CacheKey, Box<dyn Any + Send + Sync>>>,
}

type CacheKey = (TypeId, Option<String>, Option<String>);

/// One kind's cache: the store, and who hears of its changes.
pub(super) struct Shared<K>
where
    K: reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    fanout: Arc<Mutex<Fanout<K>>>,
}

impl<K> Clone for Shared<K>
where
    K: reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Shared {
            store: self.store.clone(),
            fanout: self.fanout.clone(),
        }
    }
}

struct Fanout<K> {
    /// The store has had its first list: a new subscriber starts from its contents.
    listed: bool,
    subscribers: Vec<mpsc::UnboundedSender<Arc<K>>>,
}

impl<K> Fanout<K> {
    fn send(&mut self, obj: &Arc<K>) {
        self.subscribers
            .retain(|tx| tx.unbounded_send(obj.clone()).is_ok());
    }
}

impl SharedCaches {
    /// The cache of `K` under `config`'s selectors. The first to ask makes it, and
    /// `start` gets its writer to drive (see [`Shared::fill`]).
    pub(super) fn get_or_start<K>(
        &self,
        config: &watcher::Config,
        start: impl FnOnce(Writer<K>, Shared<K>),
    ) -> Shared<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let key = (
            TypeId::of::<K>(),
            config.label_selector.clone(),
            config.field_selector.clone(),
        );
        let mut caches = self.caches.lock().expect("shared caches lock");
        if let Some(shared) = caches
            .get(&key)
            .and_then(|any| any.downcast_ref::<Shared<K>>())
        {
            return shared.clone();
        }
        let (store, writer) = reflector::store();
        let shared = Shared {
            store,
            fanout: Arc::new(Mutex::new(Fanout {
                listed: false,
                subscribers: Vec::new(),
            })),
        };
        caches.insert(key, Box::new(shared.clone()));
        drop(caches);
        start(writer, shared.clone());
        shared
    }
}

impl<K> Shared<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// A new stream of the objects that change from now on (after the first list, all
    /// the store holds first).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        let (tx, rx) = mpsc::unbounded();
        let mut fanout = self.fanout.lock().expect("fan-out lock");
        if fanout.listed {
            for obj in self.store.state() {
                let _ = tx.unbounded_send(obj);
            }
        }
        fanout.subscribers.push(tx);
        rx
    }

    /// Fills the store from `events` and tells every subscriber what changed, until
    /// `events` ends. Errors were reported where the watch runs; here they are skipped.
    pub async fn fill(
        self,
        writer: Writer<K>,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    ) {
        let mut events = std::pin::pin!(reflector::reflector(writer, events));
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let mut fanout = self.fanout.lock().expect("fan-out lock");
            match event {
                watcher::Event::Apply(obj) => {
                    // The store's own copy: the event's is dropped here.
                    if let Some(stored) = self.store.get(&ObjectRef::from_obj(&obj)) {
                        fanout.send(&stored);
                    }
                }
                watcher::Event::Delete(obj) => fanout.send(&Arc::new(obj)),
                watcher::Event::InitDone => {
                    for obj in self.store.state() {
                        fanout.send(&obj);
                    }
                    fanout.listed = true;
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn names(seen: &[Arc<ConfigMap>]) -> Vec<String> {
        let mut names: Vec<String> = seen
            .iter()
            .map(|m| m.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Drains what `changes` holds now.
    fn drain(changes: &mut (impl Stream<Item = Arc<ConfigMap>> + Unpin)) -> Vec<Arc<ConfigMap>> {
        let mut seen = Vec::new();
        while let Some(Some(obj)) = changes.next().now_or_never() {
            seen.push(obj);
        }
        seen
    }

    use futures::FutureExt;

    #[tokio::test]
    async fn every_subscriber_hears_of_lists_applies_and_deletes_and_a_late_one_starts_from_the_store()
     {
        let caches = SharedCaches::default();
        let config = watcher::Config::default();
        let mut writer = None;
        let shared = caches.get_or_start::<ConfigMap>(&config, |w, _| writer = Some(w));
        let again = caches.get_or_start::<ConfigMap>(&config, |_, _| panic!("started twice"));
        let mut early = Box::pin(again.subscribe());

        let events = stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(map("a"))),
            Ok(watcher::Event::InitApply(map("b"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(map("c"))),
            Err(watcher::Error::NoResourceVersion),
            Ok(watcher::Event::Delete(map("a"))),
        ]);
        shared.clone().fill(writer.unwrap(), events).await;

        let heard = drain(&mut early);
        assert_eq!(
            names(&heard),
            ["a", "a", "b", "c"],
            "the list, the apply and the delete"
        );
        assert_eq!(names(&shared.store.state()), ["b", "c"]);

        let mut late = Box::pin(shared.subscribe());
        assert_eq!(names(&drain(&mut late)), ["b", "c"], "what the store holds");
    }

    #[tokio::test]
    async fn a_subscriber_before_the_list_hears_nothing_twice_and_a_dropped_one_is_forgotten() {
        let caches = SharedCaches::default();
        let mut writer = None;
        let shared =
            caches.get_or_start::<ConfigMap>(&watcher::Config::default(), |w, _| writer = Some(w));
        let mut first = Box::pin(shared.subscribe());
        drop(shared.subscribe());
        let events = stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(map("a"))),
            Ok(watcher::Event::InitDone),
        ]);
        shared.clone().fill(writer.unwrap(), events).await;
        assert_eq!(names(&drain(&mut first)), ["a"]);
        assert_eq!(shared.fanout.lock().unwrap().subscribers.len(), 1);
    }

    #[test]
    fn a_selector_is_a_cache_of_its_own() {
        let caches = SharedCaches::default();
        let mut started = 0;
        for config in [
            watcher::Config::default(),
            watcher::Config::default().labels("clouddeck.io/managed=true"),
            watcher::Config::default(),
        ] {
            caches.get_or_start::<ConfigMap>(&config, |_, _| started += 1);
        }
        assert_eq!(started, 2);
    }
}
