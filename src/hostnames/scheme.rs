//! The names CloudDeck generates under its base domain, built so that two different keys
//! can never produce the same hostname:
//!
//! | what | label under the base domain |
//! |---|---|
//! | production | `<key>` |
//! | a Deployment's preview | `<key>--<first 8 hex digits of its UID>` |
//! | a branch alias | `<key>--git-<branch slug>` (slug cut and hashed to fit 63) |
//!
//! A key is a DNS label of at most [`MAX_KEY`] characters without `--`, so the text before
//! the first `--` of a label is always the key it was generated from ([`authority`]), and
//! deeper names (`login.<label>.<base>`) belong to the key of the label right under the
//! base domain. The key of a Project is its name, or for a namesake of a Project in another
//! namespace `<name>-<hash of its namespace>` (see [`candidate_keys`]).

use crate::routing::{cut, fnv1a};

/// Longest key: a branch alias (`<key>--git-` + at least 8 characters of slug + `-` + an
/// 8-digit hash) must still fit a 63-character label.
pub const MAX_KEY: usize = 40;

/// Between a key and what was generated from it; never inside a key.
pub const SEPARATOR: &str = "--";

/// The apiserver's check of a Project's name (a CEL rule at the CRD's root): it must be
/// usable as a key.
pub const KEY_NAME_RULE: &str = "self.metadata.name.size() <= 40 && !self.metadata.name.contains('.') && !self.metadata.name.contains('--')";
/// The message of [`KEY_NAME_RULE`].
pub const KEY_NAME_MESSAGE: &str = "a Project's name is the first label of its hostnames: at most 40 characters, no '.' and no '--'";

/// Longest DNS label.
const MAX_LABEL: usize = 63;

/// Whether `key` can be a key: a lowercase DNS label of at most [`MAX_KEY`] characters
/// without [`SEPARATOR`].
pub fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY
        && !key.contains(SEPARATOR)
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !key.starts_with('-')
        && !key.ends_with('-')
}

/// The keys a Project named `name` in `namespace` asks for, in order: its name, then
/// `<name>-<8 hex digits of a hash of the namespace>` for when a Project of the same name
/// in another namespace holds the name. The second is the same every time, so a namesake
/// re-created in its namespace asks for the key it had.
pub fn candidate_keys(name: &str, namespace: &str) -> Vec<String> {
    let suffix = format!("{:08x}", fnv1a(namespace.as_bytes()));
    let head = cut(name, MAX_KEY - suffix.len() - 1);
    let fallback = format!("{head}-{suffix}");
    [name.to_owned(), fallback]
        .into_iter()
        .filter(|k| is_key(k))
        .collect()
}

/// `<key>.<base>`: production, and the hostname of the key's claim.
pub fn production_hostname(key: &str, base: &str) -> String {
    format!("{key}.{base}")
}

/// `<key>--<short id>.<base>`: one Deployment.
pub fn preview_hostname(key: &str, deployment_uid: &str, base: &str) -> String {
    format!("{key}{SEPARATOR}{}.{base}", short_id(deployment_uid))
}

/// `<key>--git-<branch slug>.<base>`: the latest Ready Deployment of a branch. A slug too
/// long for the label is cut and followed by a hash of the whole slug.
pub fn branch_hostname(key: &str, branch: &str, base: &str) -> String {
    let prefix = format!("{key}{SEPARATOR}git-");
    let slug = branch_slug(branch);
    let room = MAX_LABEL.saturating_sub(prefix.len());
    let label = if slug.len() <= room {
        format!("{prefix}{slug}")
    } else {
        let hash = format!("{:08x}", fnv1a(slug.as_bytes()));
        let head = cut(&slug, room.saturating_sub(hash.len() + 1));
        format!("{prefix}{head}-{hash}")
    };
    format!("{label}.{base}")
}

/// A short, stable id of a Deployment: the first 8 hex digits of its UID.
pub fn short_id(uid: &str) -> String {
    uid.chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A branch name as a DNS label fragment: `feature/New_Checkout` → `feature-new-checkout`.
/// Runs of other characters become one `-`, so a slug never holds [`SEPARATOR`].
pub fn branch_slug(branch: &str) -> String {
    let mut slug = String::with_capacity(branch.len());
    for c in branch.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "branch".to_owned()
    } else {
        slug.to_owned()
    }
}

/// What decides who owns a hostname (canonical, see [`crate::dns::normalize`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    /// Under the base domain: the namespace holding this key (its claim is on
    /// `<key>.<base>`) owns the hostname.
    Key(String),
    /// The base domain itself, or a label under it that no key can generate: nobody's.
    Operator,
    /// Outside the base domain: a claim on exactly this hostname (after a TXT proof).
    Exact,
}

/// Who decides for `hostname`, given the operator's `base` domain.
pub fn authority(hostname: &str, base: &str) -> Authority {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    if name == base {
        return Authority::Operator;
    }
    let Some(under) = name.strip_suffix(base).and_then(|h| h.strip_suffix('.')) else {
        return Authority::Exact;
    };
    // The label right under the base domain; deeper labels are its owner's too.
    let label = under.rsplit('.').next().unwrap_or(under);
    let key = label.split(SEPARATOR).next().unwrap_or(label);
    if is_key(key) {
        Authority::Key(key.to_owned())
    } else {
        Authority::Operator
    }
}

/// The name of the HostnameClaim for `hostname`: the hostname itself (a valid object
/// name), or for a wildcard `wildcard-<SHA-256 hex>`, which has no dot and so is never a
/// hostname CloudDeck accepts.
pub fn claim_name(hostname: &str) -> String {
    match hostname.strip_prefix("*.") {
        None => hostname.to_owned(),
        Some(_) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, hostname.as_bytes());
            let hex: String = digest
                .as_ref()
                .iter()
                .take(24)
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("wildcard-{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &str = "apps.example.com";
    const UID: &str = "7f3c9a21-0b4e-4c1d-9e8f-123456789abc";

    #[test]
    fn the_names_a_user_sees() {
        assert_eq!(production_hostname("web", BASE), "web.apps.example.com");
        assert_eq!(
            preview_hostname("web", UID, BASE),
            "web--7f3c9a21.apps.example.com"
        );
        assert_eq!(
            branch_hostname("web", "feature/New_Checkout", BASE),
            "web--git-feature-new-checkout.apps.example.com"
        );
    }

    #[test]
    fn the_collisions_of_the_old_scheme_are_gone() {
        // `web-git-staging` was the staging alias of `web`; now they differ.
        assert_ne!(
            production_hostname("web-git-staging", BASE),
            branch_hostname("web", "staging", BASE)
        );
        // `shop-admin` is its own key, not something `shop` may take.
        assert_eq!(
            authority("shop-admin.apps.example.com", BASE),
            Authority::Key("shop-admin".into())
        );
        assert_eq!(
            authority("login.shop-admin.apps.example.com", BASE),
            Authority::Key("shop-admin".into())
        );
        assert_eq!(
            authority("*.shop.apps.example.com", BASE),
            Authority::Key("shop".into())
        );
    }

    #[test]
    fn authority_outside_and_of_the_base_domain() {
        assert_eq!(authority("shop.example.com", BASE), Authority::Exact);
        assert_eq!(authority("evilapps.example.com", BASE), Authority::Exact);
        assert_eq!(authority("apps.example.com", BASE), Authority::Operator);
        assert_eq!(authority("*.apps.example.com", BASE), Authority::Operator);
        let long = format!("{}.{BASE}", "a".repeat(41));
        assert_eq!(authority(&long, BASE), Authority::Operator);
    }

    #[test]
    fn keys() {
        assert!(is_key("web") && is_key("shop-admin") && is_key(&"a".repeat(40)));
        for bad in ["", "a--b", "-a", "a-", "A", "a.b", &"a".repeat(41)] {
            assert!(!is_key(bad), "{bad:?}");
        }
        let keys = candidate_keys("web", "team-b");
        assert_eq!(keys[0], "web");
        assert!(
            keys[1].starts_with("web-") && keys[1].len() == 12,
            "{keys:?}"
        );
        assert_eq!(keys, candidate_keys("web", "team-b"), "stable");
        assert_ne!(keys[1], candidate_keys("web", "team-c")[1]);
        let long = candidate_keys(&"p".repeat(40), "team-b");
        assert!(long.iter().all(|k| is_key(k)), "{long:?}");
        assert!(candidate_keys("a--b", "team").is_empty());
    }

    #[test]
    fn claim_names() {
        assert_eq!(claim_name("shop.example.com"), "shop.example.com");
        let wild = claim_name("*.example.com");
        assert!(wild.starts_with("wildcard-") && !wild.contains('.'));
        assert!(wild.len() <= 63);
        assert_ne!(wild, claim_name("*.example.org"));
    }

    fn name() -> impl Strategy<Value = String> {
        // Kubernetes-style names that are keys: lowercase letters, digits, single '-'.
        "[a-z0-9]([a-z0-9]|-[a-z0-9]){0,19}"
    }

    fn branch() -> impl Strategy<Value = String> {
        "[A-Za-z0-9/_.-]{1,80}"
    }

    fn uid() -> impl Strategy<Value = String> {
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    }

    /// Every hostname a Project with `key` can be served under.
    fn generated(key: &str, uid: &str, branch: &str) -> [String; 3] {
        [
            production_hostname(key, BASE),
            preview_hostname(key, uid, BASE),
            branch_hostname(key, branch, BASE),
        ]
    }

    proptest! {
        #[test]
        fn every_generated_name_is_owned_by_the_key_it_came_from(
            name in name(), namespace in "[a-z0-9-]{1,20}", uid in uid(), branch in branch()
        ) {
            for key in candidate_keys(&name, &namespace) {
                prop_assert!(is_key(&key));
                for hostname in generated(&key, &uid, &branch) {
                    let label = hostname.strip_suffix(&format!(".{BASE}")).unwrap();
                    prop_assert!(label.len() <= MAX_LABEL, "{}", hostname);
                    prop_assert!(crate::dns::normalize(&hostname, false).as_deref() == Ok(hostname.as_str()));
                    prop_assert_eq!(authority(&hostname, BASE), Authority::Key(key.clone()));
                    let deeper = format!("login.{hostname}");
                    prop_assert_eq!(authority(&deeper, BASE), Authority::Key(key.clone()));
                }
            }
        }

        #[test]
        fn two_keys_never_generate_the_same_hostname(
            a in name(), b in name(), uid_a in uid(), uid_b in uid(),
            branch_a in branch(), branch_b in branch()
        ) {
            prop_assume!(a != b);
            for x in generated(&a, &uid_a, &branch_a) {
                for y in generated(&b, &uid_b, &branch_b) {
                    prop_assert_ne!(&x, &y);
                }
            }
        }

        #[test]
        fn a_key_never_generates_another_keys_names(
            a in name(), uid in uid(), branch in branch()
        ) {
            // The shapes an attacker would try: the generated label as a Project name.
            for hostname in generated(&a, &uid, &branch).iter().skip(1) {
                let label = hostname.split('.').next().unwrap();
                prop_assert!(!is_key(label), "{} could be a key", label);
            }
        }
    }
}
