//! Hostnames as users write them (`Shop.Example.COM.`, `bücher.example`) turned into the one
//! form that routes, certificates, TXT lookups and claims compare: lowercase ASCII, IDN
//! labels in punycode (UTS #46), no trailing dot.

use idna::AsciiDenyList;

/// Why a hostname cannot be used for a Domain. Messages are shown in conditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHostname {
    #[error("the hostname is empty")]
    Empty,
    #[error("{0:?} is not a valid hostname (letters, digits, '-' and '.', or Unicode letters)")]
    NotAHostname(String),
    #[error("{0:?} is longer than 253 characters once converted to punycode")]
    TooLong(String),
    #[error(
        "label {label:?} of {hostname:?}: labels are 1 to 63 letters, digits or '-', and neither start nor end with '-'"
    )]
    BadLabel { hostname: String, label: String },
    #[error("{0:?} has a single label: a Domain needs a registered name such as example.com")]
    SingleLabel(String),
    #[error("wildcard hostnames are not allowed by this operator's configuration")]
    WildcardNotAllowed,
    #[error("{0:?}: a wildcard may only be the whole leftmost label, as in *.example.com")]
    MisplacedWildcard(String),
}

/// The canonical form of `input`. A leading `*.` label is kept (and the rest normalised)
/// when `allow_wildcard` is set.
pub fn normalize(input: &str, allow_wildcard: bool) -> Result<String, InvalidHostname> {
    let trimmed = input.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(InvalidHostname::Empty);
    }
    let (wildcard, rest) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if rest.contains('*') {
        return Err(InvalidHostname::MisplacedWildcard(input.to_owned()));
    }
    if wildcard && !allow_wildcard {
        return Err(InvalidHostname::WildcardNotAllowed);
    }
    let ascii = idna::domain_to_ascii_cow(rest.as_bytes(), AsciiDenyList::STD3)
        .map_err(|_| InvalidHostname::NotAHostname(input.to_owned()))?
        .into_owned();
    if ascii.is_empty() {
        return Err(InvalidHostname::Empty);
    }
    for label in ascii.split('.') {
        if !valid_label(label) {
            return Err(InvalidHostname::BadLabel {
                hostname: input.to_owned(),
                label: label.to_owned(),
            });
        }
    }
    if !ascii.contains('.') {
        return Err(InvalidHostname::SingleLabel(input.to_owned()));
    }
    let hostname = if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    };
    if hostname.len() > 253 {
        return Err(InvalidHostname::TooLong(input.to_owned()));
    }
    Ok(hostname)
}

/// RFC 1123 label, lowercase: what `domain_to_ascii` leaves must still pass this.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Whether `hostname` (canonical) is `base` itself or lies under it: such hostnames are
/// the operator's own and need no TXT record.
pub fn is_under(hostname: &str, base: &str) -> bool {
    let hostname = hostname.strip_prefix("*.").unwrap_or(hostname);
    hostname == base
        || hostname
            .strip_suffix(base)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_trailing_dot_are_normalised() {
        assert_eq!(
            normalize("Shop.Example.COM.", false).unwrap(),
            "shop.example.com"
        );
        assert_eq!(
            normalize(" www.example.com ", false).unwrap(),
            "www.example.com"
        );
    }

    #[test]
    fn idn_becomes_punycode() {
        assert_eq!(
            normalize("bücher.example", false).unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize("BÜCHER.Example.", false).unwrap(),
            "xn--bcher-kva.example"
        );
        // Already punycode stays as it is.
        assert_eq!(
            normalize("xn--bcher-kva.example", false).unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize("例え.テスト", false).unwrap(),
            "xn--r8jz45g.xn--zckzah"
        );
    }

    #[test]
    fn invalid_hostnames_are_refused() {
        for bad in [
            "",
            ".",
            "example..com",
            "-shop.example.com",
            "shop-.example.com",
            "sh_op.example.com",
            "shop example.com",
            "https://example.com",
            "localhost",
            "example.com/path",
        ] {
            assert!(normalize(bad, true).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(matches!(
            normalize(&long, false),
            Err(InvalidHostname::TooLong(_))
        ));
        let label = format!("{}.com", "a".repeat(64));
        assert!(normalize(&label, false).is_err());
    }

    #[test]
    fn wildcards_only_when_allowed_and_only_leftmost() {
        assert_eq!(
            normalize("*.Example.com", false),
            Err(InvalidHostname::WildcardNotAllowed)
        );
        assert_eq!(normalize("*.Example.com", true).unwrap(), "*.example.com");
        assert!(matches!(
            normalize("www.*.example.com", true),
            Err(InvalidHostname::MisplacedWildcard(_))
        ));
        assert!(normalize("*example.com", true).is_err());
    }

    #[test]
    fn hostnames_under_the_base_domain() {
        assert!(is_under("shop.apps.example.com", "apps.example.com"));
        assert!(is_under("apps.example.com", "apps.example.com"));
        assert!(is_under("*.apps.example.com", "apps.example.com"));
        assert!(!is_under("evilapps.example.com", "apps.example.com"));
        assert!(!is_under("example.com", "apps.example.com"));
    }
}
