//! The build result: what the build container writes to its termination message.
//!
//! The build script writes `{"digest":"sha256:…","commit":"…"}`; a bare `sha256:…` is
//! accepted too, so a custom builder can report with a single `echo`.

use serde::Deserialize;

/// What a successful build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    /// The pushed image's manifest digest, `sha256:<64 hex>`.
    pub digest: String,
    /// The commit that was built, when the builder reported it.
    pub commit: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    digest: String,
    #[serde(default)]
    commit: Option<String>,
}

/// Parses a build container's termination message. `None` when it holds no valid digest.
pub fn parse_termination_message(message: &str) -> Option<BuildResult> {
    let message = message.trim();
    if message.starts_with('{') {
        let parsed: Message = serde_json::from_str(message).ok()?;
        let commit = parsed
            .commit
            .map(|c| c.trim().to_owned())
            .filter(|c| is_commit(c));
        return is_digest(&parsed.digest).then_some(BuildResult {
            digest: parsed.digest,
            commit,
        });
    }
    is_digest(message).then(|| BuildResult {
        digest: message.to_owned(),
        commit: None,
    })
}

/// `sha256:` followed by exactly 64 lowercase hex digits.
pub fn is_digest(value: &str) -> bool {
    value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn is_commit(value: &str) -> bool {
    (7..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4c1f0d4f3ad1b4e7c2d2b0f4f0d6e6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d";

    #[test]
    fn json_message_with_digest_and_commit() {
        let message = format!(
            r#"{{"digest":"{DIGEST}","commit":"3f9c2ab7d1e04b5c9a8f6e2d1c0b9a8f7e6d5c4b"}}"#
        );
        let result = parse_termination_message(&message).unwrap();
        assert_eq!(result.digest, DIGEST);
        assert_eq!(
            result.commit.as_deref(),
            Some("3f9c2ab7d1e04b5c9a8f6e2d1c0b9a8f7e6d5c4b")
        );
    }

    #[test]
    fn bare_digest_with_trailing_newline() {
        let result = parse_termination_message(&format!("{DIGEST}\n")).unwrap();
        assert_eq!(
            result,
            BuildResult {
                digest: DIGEST.into(),
                commit: None
            }
        );
    }

    #[test]
    fn garbage_is_no_result() {
        for bad in [
            "",
            "sha256:abc",
            "sha512:4c1f",
            r#"{"digest":""}"#,
            r#"{"commit":"abc1234"}"#,
            "error: failed to push",
            &DIGEST.to_uppercase(),
        ] {
            assert_eq!(parse_termination_message(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_bad_commit_is_dropped_not_fatal() {
        let message = format!(r#"{{"digest":"{DIGEST}","commit":"not a sha"}}"#);
        assert_eq!(parse_termination_message(&message).unwrap().commit, None);
    }
}
