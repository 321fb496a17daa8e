//! One HTTP attempt of a delivery: POST the stored payload with the Standard Webhooks
//! headers, within the Webhook's timeout, to an address the egress policy allows, and
//! describe what happened in words fit for the delivery log.
//!
//! Decisions:
//! - **Redirects are not followed.** A 3xx is a failed attempt whose error says where the
//!   endpoint points to, so the user fixes `spec.url`. Following them would need the egress
//!   check again per hop and would re-POST a signed body to a host the user never
//!   configured (Svix and GitHub do not follow redirects either).
//! - **No proxy from the environment**: `HTTP(S)_PROXY` would bypass the egress check.
//! - **The checked addresses are the connected addresses**: resolution happens once, in
//!   [`CheckedResolver`], and the connection uses exactly what it returned.
//! - Only the first [`MAX_RESPONSE_BODY_BYTES`] of a response are read and kept.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use reqwest::redirect;

use super::egress::{self, EgressPolicy, Refused};
use super::schedule::{honours_retry_after, parse_retry_after};
use super::signing::{self, SigningKey};
use crate::api::webhook_delivery::MAX_RESPONSE_BODY_BYTES;

const AGENT: &str = concat!("CloudDeck-Webhooks/", env!("CARGO_PKG_VERSION"));

/// Longest error text recorded for an attempt.
const MAX_ERROR_BYTES: usize = 1024;

/// What to send in one attempt.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub webhook_id: &'a str,
    /// The exact bytes POSTed and signed.
    pub body: &'a [u8],
    /// Signing keys; none for unsigned (Slack) deliveries.
    pub keys: &'a [SigningKey],
    pub timeout: Duration,
}

/// What one attempt found out. `error` is set when the endpoint gave no acceptable
/// answer; it never contains a signing key.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptOutcome {
    pub started: Timestamp,
    pub status: Option<u16>,
    pub latency: Duration,
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// The receiver's `Retry-After`, on 429 and 503 only.
    pub retry_after: Option<Duration>,
}

impl AttemptOutcome {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// 410 Gone: the receiver says the endpoint no longer exists.
    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

/// Sends delivery attempts. One per operator: it holds the connection pool.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl Sender {
    pub fn new(policy: EgressPolicy) -> Self {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("a TLS client with the bundled roots can be built");
        Sender { client, policy }
    }

    /// Refuses a URL whose host is an address literal the egress policy refuses; names
    /// are checked when they are resolved, at send time.
    pub fn check_destination(&self, url: &str) -> Result<(), Refused> {
        let Ok(url) = reqwest::Url::parse(url) else {
            return Ok(()); // reported by the attempt itself
        };
        let host = url.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(addr) => self.policy.check(host, addr),
            Err(_) => Ok(()),
        }
    }

    /// Makes one attempt now. Never fails: every problem is an outcome to record.
    pub async fn send(&self, out: &Outgoing<'_>) -> AttemptOutcome {
        let started = Timestamp::now();
        let clock = Instant::now();
        let result = self.exchange(out, started).await;
        let latency = clock.elapsed();
        let answer = result.unwrap_or_else(|error| Answer {
            error: Some(error),
            ..Answer::default()
        });
        AttemptOutcome {
            started,
            status: answer.status,
            latency,
            response_body: answer.body,
            error: answer.error.map(|e| crate::truncate(&e, MAX_ERROR_BYTES)),
            retry_after: answer.retry_after,
        }
    }

    /// The HTTP exchange; `Err` when no answer came.
    async fn exchange(&self, out: &Outgoing<'_>, started: Timestamp) -> Result<Answer, String> {
        let url = reqwest::Url::parse(out.url).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("unsupported URL scheme {:?}", url.scheme()));
        }
        // IP literals do not go through the resolver: check them here.
        let host = url.host_str().ok_or("the URL has no host")?;
        if let Ok(addr) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            self.policy.check(host, addr).map_err(|r| r.to_string())?;
        }

        let timestamp = started.as_second();
        let mut request = self
            .client
            .post(url)
            .timeout(out.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(AGENT))
            .header(signing::HEADER_ID, out.webhook_id)
            .header(signing::HEADER_TIMESTAMP, timestamp.to_string());
        if !out.keys.is_empty() {
            let signature =
                signing::signature_header(out.keys, out.webhook_id, timestamp, out.body);
            request = request.header(signing::HEADER_SIGNATURE, signature);
        }
        let mut response = request
            .body(out.body.to_vec())
            .send()
            .await
            .map_err(|e| describe(&e, out.timeout))?;

        let status = response.status();
        let retry_after = honours_retry_after(status.as_u16())
            .then(|| {
                response
                    .headers()
                    .get(RETRY_AFTER)?
                    .to_str()
                    .ok()
                    .and_then(|v| parse_retry_after(v, Timestamp::now()))
            })
            .flatten();
        let redirect_error = status.is_redirection().then(|| {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere");
            // The origin only: a redirect's path, like the URL's own, may hold a token.
            format!(
                "redirect to {} not followed: set the Webhook's URL to the final address",
                super::keys::origin(location)
            )
        });

        // Only a public receiver's answer is kept (see egress::is_public).
        let public = response
            .remote_addr()
            .is_some_and(|peer| egress::is_public(peer.ip()));
        let mut body = Vec::new();
        while public && body.len() < MAX_RESPONSE_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status is known; a body cut short is still worth recording.
                Err(_) => break,
            }
        }
        let body = body_text(&body);
        Ok(Answer {
            status: Some(status.as_u16()),
            body,
            error: redirect_error,
            retry_after,
        })
    }
}

/// What came back: a status (and maybe an error, for a redirect), or only an error.
#[derive(Default)]
struct Answer {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

/// An error of the HTTP client as one short line, without the URL (a Slack URL holds a
/// token) and without `Debug` dumps.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if let Some(refused) = find_source::<Refused>(err) {
        return refused.to_string();
    }
    if err.is_timeout() {
        return format!("timed out after {}s", timeout.as_secs_f64());
    }
    let root = root_cause(err);
    if err.is_connect() {
        return format!("connection failed: {root}");
    }
    if err.is_request() || err.is_body() {
        return format!("request failed: {root}");
    }
    format!("HTTP error: {root}")
}

fn find_source<'e, T: std::error::Error + 'static>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    if text.is_empty() {
        "unknown error".into()
    } else {
        text
    }
}

/// The start of a response body as stored: UTF-8 (lossy), at most
/// [`MAX_RESPONSE_BODY_BYTES`]; `None` when empty.
fn body_text(body: &[u8]) -> Option<String> {
    (!body.is_empty())
        .then(|| crate::truncate(&String::from_utf8_lossy(body), MAX_RESPONSE_BODY_BYTES))
}

/// The only DNS resolution of deliveries: resolves, refuses the name if any address is
/// refused by the egress policy, and hands the connector exactly the checked addresses.
struct CheckedResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            policy.check_all(&host, &ips)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use tokio::net::TcpListener;

    use super::*;

    #[derive(Clone, Debug)]
    struct Received {
        headers: HeaderMap,
        body: Bytes,
    }

    /// A receiver on 127.0.0.1 that answers with `answer` and keeps what it got.
    async fn receiver(
        answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<Vec<Received>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let (log, answer) = (log.clone(), answer.clone());
                async move {
                    log.lock().unwrap().push(Received { headers, body });
                    answer()
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), seen)
    }

    fn loopback_sender() -> Sender {
        Sender::new(EgressPolicy::from_allowlist(&["127.0.0.0/8", "::1", "localhost"]).unwrap())
    }

    fn key() -> SigningKey {
        SigningKey::parse(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    fn outgoing<'a>(url: &'a str, keys: &'a [SigningKey]) -> Outgoing<'a> {
        Outgoing {
            url,
            webhook_id: "msg_test",
            body: br#"{"type":"webhook.ping"}"#,
            keys,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_signed_post_reaches_the_receiver_and_verifies() {
        let (url, seen) = receiver(|| (StatusCode::OK, "thanks").into_response()).await;
        let keys = [key()];
        let outcome = loopback_sender().send(&outgoing(&url, &keys)).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.status, Some(200));
        // A loopback receiver is internal: its answer is not kept.
        assert_eq!(outcome.response_body, None);
        assert_eq!(outcome.error, None);

        let got = seen.lock().unwrap()[0].clone();
        let header = |name: &str| got.headers.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(header("webhook-id"), "msg_test");
        assert_eq!(header("content-type"), "application/json");
        assert!(header("user-agent").starts_with("CloudDeck-Webhooks/"));
        let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
        assert!((timestamp - Timestamp::now().as_second()).abs() < 10);
        assert_eq!(&got.body[..], br#"{"type":"webhook.ping"}"#);
        signing::verify(
            &keys,
            &header("webhook-signature"),
            "msg_test",
            timestamp,
            &got.body,
            Timestamp::now().as_second(),
            300,
        )
        .unwrap();
    }

    #[tokio::test]
    async fn unsigned_deliveries_carry_no_signature() {
        let (url, seen) = receiver(|| StatusCode::NO_CONTENT.into_response()).await;
        let outcome = loopback_sender().send(&outgoing(&url, &[])).await;
        assert!(outcome.succeeded());
        assert_eq!(outcome.response_body, None);
        assert!(
            seen.lock().unwrap()[0]
                .headers
                .get("webhook-signature")
                .is_none()
        );
    }

    #[tokio::test]
    async fn long_bodies_are_truncated_and_internal_answers_not_kept() {
        let (url, _) =
            receiver(|| (StatusCode::INTERNAL_SERVER_ERROR, "é".repeat(5000)).into_response())
                .await;
        let outcome = loopback_sender().send(&outgoing(&url, &[])).await;
        assert!(!outcome.succeeded());
        assert_eq!(outcome.status, Some(500));
        assert_eq!(outcome.response_body, None, "an internal receiver's answer");
        let body = body_text("é".repeat(5000).as_bytes()).unwrap();
        assert!(
            body.len() <= MAX_RESPONSE_BODY_BYTES && body.len() >= MAX_RESPONSE_BODY_BYTES - 1,
            "{}",
            body.len()
        );
    }

    #[tokio::test]
    async fn retry_after_is_read_on_429_only() {
        let (url, _) =
            receiver(|| (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "42")]).into_response())
                .await;
        let outcome = loopback_sender().send(&outgoing(&url, &[])).await;
        assert_eq!(outcome.retry_after, Some(Duration::from_secs(42)));
        let (url, _) = receiver(|| {
            (StatusCode::INTERNAL_SERVER_ERROR, [("retry-after", "42")]).into_response()
        })
        .await;
        assert_eq!(
            loopback_sender()
                .send(&outgoing(&url, &[]))
                .await
                .retry_after,
            None
        );
        let (url, _) = receiver(|| StatusCode::GONE.into_response()).await;
        assert!(loopback_sender().send(&outgoing(&url, &[])).await.gone());
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, target_seen) = receiver(|| StatusCode::OK.into_response()).await;
        let location = target.clone();
        let (url, _) = receiver(move || {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", location.clone())],
            )
                .into_response()
        })
        .await;
        let outcome = loopback_sender().send(&outgoing(&url, &[])).await;
        assert_eq!(outcome.status, Some(307));
        assert!(!outcome.succeeded());
        let error = outcome.error.unwrap();
        assert!(
            error.contains("not followed")
                && error.contains(&crate::delivery::keys::origin(&target)),
            "{error}"
        );
        assert!(target_seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn loopback_is_refused_without_the_allowlist_and_nothing_is_sent() {
        let (url, seen) = receiver(|| StatusCode::OK.into_response()).await;
        let sender = Sender::new(EgressPolicy::default());
        let keys = [key()];
        let outcome = sender.send(&outgoing(&url, &keys)).await;
        assert_eq!(outcome.status, None);
        let error = outcome.error.unwrap();
        assert!(error.contains("127.0.0.1 is a loopback address"), "{error}");
        // Through a name, the resolver refuses it.
        let by_name = url.replace("127.0.0.1", "localhost");
        let error = sender.send(&outgoing(&by_name, &keys)).await.error.unwrap();
        assert!(error.contains("loopback address; refused"), "{error}");
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_described() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        // Accepts the connection and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                if let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            }
        });
        let mut out = outgoing(&url, &[]);
        out.timeout = Duration::from_millis(300);
        let outcome = loopback_sender().send(&out).await;
        assert_eq!(outcome.error.as_deref(), Some("timed out after 0.3s"));
        assert!(outcome.latency >= Duration::from_millis(300));

        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{closed}/hook");
        let error = loopback_sender()
            .send(&outgoing(&url, &[]))
            .await
            .error
            .unwrap();
        assert!(error.starts_with("connection failed"), "{error}");
    }

    #[tokio::test]
    async fn errors_never_contain_the_url_or_the_key() {
        let url = "http://127.0.0.1:1/services/T000/B000/slack-token-xyz";
        let keys = [SigningKey::parse(b"whsec_c2VjcmV0LWtleS1ieXRlcw==").unwrap()];
        let outcome = loopback_sender().send(&outgoing(url, &keys)).await;
        let text = format!("{outcome:?}");
        assert!(!text.contains("slack-token-xyz"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
