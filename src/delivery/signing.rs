//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//!
//! ```text
//! webhook-id:        msg_2b1f0c7e9a
//! webhook-timestamp: 1796033700
//! webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")> [v1,<...> ...]
//! ```
//!
//! The key comes from a Kubernetes Secret as `whsec_<base64>` (the spec's form) or as raw
//! bytes. While a key is rotated the Webhook lists two Secrets and every delivery carries
//! one signature per key, space-separated, so receivers accept either key.
//!
//! [`SigningKey`] never shows its bytes: not in `Debug`, not in errors.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// The three headers of a signed delivery.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";

/// An HMAC-SHA256 signing key.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a Secret's value is not a usable key. Carries no part of the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    #[error("the signing secret is empty")]
    Empty,
    #[error("the signing secret starts with whsec_ but the rest is not valid base64")]
    NotBase64,
}

impl SigningKey {
    /// Parses a Secret's value: `whsec_<base64>` is decoded, anything else is used as raw
    /// bytes. Surrounding whitespace is ignored (`kubectl create secret --from-file` keeps
    /// a file's trailing newline).
    pub fn parse(value: &[u8]) -> Result<Self, InvalidKey> {
        let value = value.trim_ascii();
        let bytes = match value.strip_prefix(SECRET_PREFIX.as_bytes()) {
            Some(encoded) => STANDARD
                .decode(encoded)
                .map_err(|_| InvalidKey::NotBase64)?,
            None => value.to_vec(),
        };
        if bytes.is_empty() {
            return Err(InvalidKey::Empty);
        }
        Ok(SigningKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    fn verifies(&self, id: &str, timestamp: i64, body: &[u8], signature: &[u8]) -> bool {
        hmac::verify(&self.0, &signed_content(id, timestamp, body), signature).is_ok()
    }
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The `webhook-signature` header value: one signature per key, space-separated.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| key.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a receiver rejects a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is too far from the current time")]
    TimestampOutOfTolerance,
    #[error("no signature in webhook-signature matches")]
    NoMatchingSignature,
}

/// What a receiver does (and what the tests and docs use): accept the message when any
/// `v1` signature of the header verifies with any of `keys` (constant-time comparison),
/// and the timestamp is within `tolerance_seconds` of `now` (replay protection).
pub fn verify(
    keys: &[SigningKey],
    header: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > tolerance_seconds {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    let candidates = header.split_ascii_whitespace().filter_map(|part| {
        let encoded = part.strip_prefix("v1,")?;
        STANDARD.decode(encoded).ok()
    });
    for signature in candidates {
        if keys
            .iter()
            .any(|key| key.verifies(id, timestamp, body, &signature))
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatchingSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Fixture {
        vectors: Vec<Vector>,
        rotation: Rotation,
    }

    #[derive(Deserialize)]
    struct Vector {
        secret: String,
        id: String,
        timestamp: i64,
        body: String,
        signature: String,
    }

    #[derive(Deserialize)]
    struct Rotation {
        secrets: Vec<String>,
        id: String,
        timestamp: i64,
        body: String,
        header: String,
    }

    /// Vectors computed by tests/fixtures/webhook_signatures.py with Python's hmac.
    fn fixture() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhook_signatures.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn signatures_match_the_independent_python_vectors() {
        let fixture = fixture();
        assert!(fixture.vectors.len() >= 4);
        for v in &fixture.vectors {
            let key = SigningKey::parse(v.secret.as_bytes()).unwrap();
            assert_eq!(
                key.sign(&v.id, v.timestamp, v.body.as_bytes()),
                v.signature,
                "{}",
                v.id
            );
        }
    }

    #[test]
    fn the_specification_example_verifies() {
        // Published with the Standard Webhooks spec; also the first fixture vector.
        let key = SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_gives_one_signature_per_key_and_either_key_verifies() {
        let r = fixture().rotation;
        let keys: Vec<SigningKey> = r
            .secrets
            .iter()
            .map(|s| SigningKey::parse(s.as_bytes()).unwrap())
            .collect();
        let header = signature_header(&keys, &r.id, r.timestamp, r.body.as_bytes());
        assert_eq!(header, r.header);
        assert_eq!(header.split(' ').count(), 2);
        for key in &keys {
            verify(
                std::slice::from_ref(key),
                &header,
                &r.id,
                r.timestamp,
                r.body.as_bytes(),
                r.timestamp,
                300,
            )
            .unwrap();
        }
    }

    #[test]
    fn verification_rejects_tampering_wrong_keys_and_stale_timestamps() {
        let key = SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let other = SigningKey::parse(b"another key").unwrap();
        let header = key.sign("msg_1", 1000, b"{}");
        let keys = [key];
        assert_eq!(
            verify(&keys, &header, "msg_1", 1000, b"{}", 1100, 300),
            Ok(())
        );
        let err = |r| assert_eq!(r, Err(VerifyError::NoMatchingSignature));
        err(verify(&keys, &header, "msg_1", 1000, b"{ }", 1000, 300));
        err(verify(&keys, &header, "msg_2", 1000, b"{}", 1000, 300));
        err(verify(&[other], &header, "msg_1", 1000, b"{}", 1000, 300));
        err(verify(
            &keys,
            "v2,abc v1,!!!",
            "msg_1",
            1000,
            b"{}",
            1000,
            300,
        ));
        assert_eq!(
            verify(&keys, &header, "msg_1", 1000, b"{}", 1000 + 301, 300),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        // The timestamp is signed: moving it breaks the signature.
        err(verify(&keys, &header, "msg_1", 1001, b"{}", 1001, 300));
    }

    #[test]
    fn secret_forms() {
        let trimmed = SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(
            trimmed.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(SigningKey::parse(b"  ").unwrap_err(), InvalidKey::Empty);
        assert_eq!(SigningKey::parse(b"whsec_").unwrap_err(), InvalidKey::Empty);
        assert_eq!(
            SigningKey::parse(b"whsec_not*base64").unwrap_err(),
            InvalidKey::NotBase64
        );
    }

    #[test]
    fn keys_never_show_their_bytes() {
        let key = SigningKey::parse(b"super-secret-value").unwrap();
        let shown = format!("{key:?} {}", InvalidKey::NotBase64);
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
