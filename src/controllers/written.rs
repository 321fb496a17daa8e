//! Which cached copies are older than this process's own last write to the object (its
//! status, or a Deployment's adoption by its Project), so that the driver does not
//! reconcile such a copy: its watch event is on the way, and acting on the older copy
//! would repeat or undo the write (issue #13: at 100 Projects one in two Project status
//! writes was such a repeat; a Domain that gave up its hostname could take it again).
//!
//! A copy is behind only when it is exactly the version a write was made over (same uid
//! and `resourceVersion`) and that write returned a newer one: anyone else's write since
//! moves the `resourceVersion`, and is answered as before; a write that changed nothing
//! gets no watch event, so its copy is current. In memory only, and bounded: past [`CAP`]
//! entries it starts over, which costs at most one repeated write each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Objects remembered at most.
pub const CAP: usize = 16_384;

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// The `resourceVersion` of the copy the write was made over.
    over: String,
    /// The `resourceVersion` the write returned: the same as `over` when it changed
    /// nothing (no watch event follows then).
    returned: String,
}

/// The parts a controller writes besides an object's spec.
pub const PARTS: [&str; 2] = ["status", "owner"];

/// The last write of each part (`status`, `owner`) per object (by uid); shared by every
/// controller of a replica.
#[derive(Clone, Debug, Default)]
pub struct Written {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Written {
    /// Whether `meta` (a cached copy) is older than a write this process made to the
    /// object: the copy is the very version a write changed. Its watch event is on the
    /// way; acting on the copy would undo or repeat what was written (a Domain that gave
    /// up its hostname taking it again on a copy that still says it is verified).
    pub fn behind(&self, meta: &ObjectMeta) -> bool {
        let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) else {
            return false;
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        PARTS.iter().any(|part| {
            entries
                .get(&format!("{uid}/{part}"))
                .is_some_and(|e| &e.over == version && e.returned != e.over)
        })
    }

    /// Records that `part` was written over the version `meta` of the object, and that
    /// the write returned `returned` (its new `resourceVersion`).
    pub fn record(&self, meta: &ObjectMeta, part: &str, returned: Option<&str>) {
        let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) else {
            return;
        };
        let returned = returned.unwrap_or(version).to_owned();
        let key = format!("{uid}/{part}");
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAP && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                over: version.clone(),
                returned,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_copy_older_than_our_own_write_is_behind() {
        let written = Written::default();
        assert!(!written.behind(&meta("u", "7")));
        written.record(&meta("u", "7"), "status", Some("8"));
        assert!(
            written.behind(&meta("u", "7")),
            "the write made 8; the cache shows 7"
        );
        assert!(!written.behind(&meta("u", "8")), "caught up");
        assert!(!written.behind(&meta("u", "9")), "past it");
        written.record(&meta("v", "3"), "owner", Some("4"));
        assert!(written.behind(&meta("v", "3")), "an adoption too");
        // A write that changed nothing gets no watch event: the copy is current.
        written.record(&meta("w", "5"), "status", Some("5"));
        assert!(!written.behind(&meta("w", "5")));
    }

    #[test]
    fn the_record_is_bounded() {
        let written = Written::default();
        for i in 0..CAP + 1 {
            written.record(&meta(&i.to_string(), "1"), "status", Some("2"));
        }
        assert_eq!(written.len(), 1, "started over past the cap");
    }
}
