//! What this process last wrote to each object (its status, or one part of its metadata),
//! so that a reconcile running on a cached copy older than that write (its watch event not
//! in yet) does not send the same write again (issue #13: no read-after-write; at 100
//! Projects one in two Project status writes was such a repeat).
//!
//! A write is skipped only when the cached object is exactly the version the last write
//! was made over (same uid and `resourceVersion`) and the status is the one written then:
//! anyone else's write since moves the `resourceVersion`, and is answered as before. In
//! memory only, and bounded: past [`CAP`] objects it starts over, which costs at most one
//! repeated write each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::applied::hash_of;

/// Objects remembered at most.
pub const CAP: usize = 16_384;

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// The `resourceVersion` of the copy the write was made over.
    over: String,
    /// The `resourceVersion` the write returned: the same as `over` when it changed
    /// nothing (no watch event follows then).
    returned: String,
    value: u64,
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
    /// Whether `value` is what this process last wrote to `part` over this very version
    /// of the object (`meta`, from the cache).
    pub fn already(&self, meta: &ObjectMeta, part: &str, value: &impl Serialize) -> bool {
        let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) else {
            return false;
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&format!("{uid}/{part}"))
            .is_some_and(|e| &e.over == version && e.value == hash_of(value))
    }

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

    /// Records that `value` was written to `part` over the version `meta` of the object,
    /// and that the write returned `returned` (its new `resourceVersion`).
    pub fn record(
        &self,
        meta: &ObjectMeta,
        part: &str,
        value: &impl Serialize,
        returned: Option<&str>,
    ) {
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
                value: hash_of(value),
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
    fn the_same_status_over_the_same_stale_copy_is_not_written_twice() {
        let written = Written::default();
        let at = |uid, version| meta(uid, version);
        assert!(
            !written.already(&at("u", "7"), "status", &"Ready"),
            "nothing written yet"
        );
        written.record(&at("u", "7"), "status", &"Ready", Some("8"));
        assert!(
            written.already(&at("u", "7"), "status", &"Ready"),
            "the cache still shows 7"
        );
        assert!(
            !written.already(&at("u", "7"), "status", &"Failed"),
            "another status"
        );
        assert!(
            !written.already(&at("u", "7"), "owner", &"Ready"),
            "another part"
        );
        assert!(
            !written.already(&at("u", "9"), "status", &"Ready"),
            "written since (by anyone): answered as before"
        );
        assert!(
            !written.already(&at("v", "7"), "status", &"Ready"),
            "another object"
        );
    }

    #[test]
    fn a_copy_older_than_our_own_write_is_behind() {
        let written = Written::default();
        assert!(!written.behind(&meta("u", "7")));
        written.record(&meta("u", "7"), "status", &"Ready", Some("8"));
        assert!(
            written.behind(&meta("u", "7")),
            "the write made 8; the cache shows 7"
        );
        assert!(!written.behind(&meta("u", "8")), "caught up");
        assert!(!written.behind(&meta("u", "9")), "past it");
        written.record(&meta("v", "3"), "owner", &"p", Some("4"));
        assert!(written.behind(&meta("v", "3")), "an adoption too");
        // A write that changed nothing gets no watch event: the copy is current.
        written.record(&meta("w", "5"), "status", &"Ready", Some("5"));
        assert!(!written.behind(&meta("w", "5")));
    }

    #[test]
    fn the_record_is_bounded() {
        let written = Written::default();
        for i in 0..CAP + 1 {
            written.record(&meta(&i.to_string(), "1"), "status", &"Ready", Some("2"));
        }
        assert_eq!(written.len(), 1, "started over past the cap");
    }
}
