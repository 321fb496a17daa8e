//! What the operator asks of the apiserver, counted and paced. Every request the
//! controllers make goes through [`Paced`]: it is counted by verb
//! (`clouddeck_api_requests_total{verb}`) and waits for a client-side rate limit
//! (`--kube-api-qps`, `--kube-api-burst`), as controller-runtime's clients do, so that a
//! burst of convergence work is spread out instead of landing on the apiserver at once.
//! The leader Lease is renewed through a client of its own, never paced: a queue of
//! controller requests must not cost this replica its leadership.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Method, Request, Uri};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The verb of an API request, as the apiserver's audit log names it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Verb {
    get,
    list,
    watch,
    create,
    update,
    patch,
    delete,
    other,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: Verb,
}

/// The request's verb from its method and path: a GET of a collection is a `list`, one
/// with `watch=true` a `watch`.
pub fn verb(method: &Method, uri: &Uri) -> Verb {
    match *method {
        Method::GET => {
            let watching = uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            if watching {
                Verb::watch
            } else if is_collection(uri.path()) {
                Verb::list
            } else {
                Verb::get
            }
        }
        Method::POST => Verb::create,
        Method::PUT => Verb::update,
        Method::PATCH => Verb::patch,
        Method::DELETE => Verb::delete,
        _ => Verb::other,
    }
}

/// Whether `path` names a collection (`/api/v1/namespaces/a/pods`, `/apis/g/v/things`)
/// rather than one object (`/api/v1/namespaces/a/pods/p`, `/api/v1/namespaces/a`).
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    rest.len() == 1
}

/// The counters and the limiter; one per process. Cheap to clone.
#[derive(Clone)]
pub struct ApiTraffic {
    requests: Family<VerbLabels, Counter>,
    waited_seconds: Counter<f64>,
    limiter: Arc<DefaultDirectRateLimiter>,
    /// Whether requests wait for `limiter`; see [`ApiTraffic::unpaced`].
    paced: bool,
}

impl ApiTraffic {
    /// `qps` requests a second on average, `burst` at once.
    pub fn new(registry: &mut Registry, qps: u32, burst: u32) -> Self {
        let requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API server by verb (the leader Lease's not counted)",
            requests.clone(),
        );
        let waited_seconds = Counter::<f64>::default();
        registry.register(
            "api_client_throttled_seconds",
            "Time requests waited for the client-side rate limit (--kube-api-qps, --kube-api-burst)",
            waited_seconds.clone(),
        );
        let qps = std::num::NonZeroU32::new(qps).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(burst.max(1)).unwrap_or(qps);
        ApiTraffic {
            requests,
            waited_seconds,
            limiter: Arc::new(RateLimiter::direct(
                Quota::per_second(qps).allow_burst(burst),
            )),
            paced: true,
        }
    }

    /// The same counters, without the limit: for the client whose lists and watches fill
    /// the caches (see `controllers::Context::watch_client`).
    pub fn unpaced(&self) -> Self {
        ApiTraffic {
            paced: false,
            ..self.clone()
        }
    }

    /// The count for `verb`, for tests and benchmarks.
    pub fn requests(&self, verb: Verb) -> u64 {
        self.requests.get_or_create(&VerbLabels { verb }).get()
    }
}

impl<S> Layer<S> for ApiTraffic {
    type Service = Paced<S>;

    fn layer(&self, inner: S) -> Paced<S> {
        Paced {
            inner,
            traffic: self.clone(),
            waiting: None,
        }
    }
}

/// The service [`ApiTraffic`] wraps around kube's HTTP stack. kube puts a buffer in front
/// of it, so `poll_ready` and `call` come one request at a time: waiting for the limiter
/// in `poll_ready` paces them in order.
pub struct Paced<S> {
    inner: S,
    traffic: ApiTraffic,
    waiting: Option<(Instant, BoxFuture<'static, ()>)>,
}

impl<S, B> Service<Request<B>> for Paced<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.traffic.paced && self.waiting.is_none() && self.traffic.limiter.check().is_err() {
            let limiter = self.traffic.limiter.clone();
            self.waiting = Some((
                Instant::now(),
                Box::pin(async move { limiter.until_ready().await }),
            ));
        }
        if let Some((since, wait)) = &mut self.waiting {
            if Pin::new(wait).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.traffic
                .waited_seconds
                .inc_by(since.elapsed().as_secs_f64());
            self.waiting = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let verb = verb(request.method(), request.uri());
        tracing::trace!(target: "clouddeck::api", ?verb, path = request.uri().path(), "API request");
        self.traffic
            .requests
            .get_or_create(&VerbLabels { verb })
            .inc();
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, uri: &str) -> Verb {
        verb(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_as_the_audit_log_names_them() {
        let ns = "/apis/clouddeck.io/v1alpha1/namespaces/team-a/projects";
        assert_eq!(of(Method::GET, ns), Verb::list);
        assert_eq!(
            of(Method::GET, &format!("{ns}?labelSelector=a%3Db")),
            Verb::list
        );
        assert_eq!(of(Method::GET, &format!("{ns}/web")), Verb::get);
        assert_eq!(of(Method::GET, &format!("{ns}/web/status")), Verb::get);
        assert_eq!(
            of(
                Method::GET,
                "/apis/clouddeck.io/v1alpha1/projects?watch=true&resourceVersion=5"
            ),
            Verb::watch
        );
        assert_eq!(
            of(Method::GET, "/apis/clouddeck.io/v1alpha1/projects"),
            Verb::list
        );
        assert_eq!(of(Method::GET, "/api/v1/namespaces"), Verb::list);
        assert_eq!(of(Method::GET, "/api/v1/namespaces/team-a"), Verb::get);
        assert_eq!(of(Method::GET, "/version"), Verb::get);
        assert_eq!(of(Method::POST, ns), Verb::create);
        assert_eq!(of(Method::PATCH, &format!("{ns}/web/status")), Verb::patch);
        assert_eq!(of(Method::PUT, &format!("{ns}/web")), Verb::update);
        assert_eq!(of(Method::DELETE, &format!("{ns}/web")), Verb::delete);
    }

    #[tokio::test]
    async fn requests_over_the_burst_wait_their_turn() {
        let mut registry = Registry::default();
        let traffic = ApiTraffic::new(&mut registry, 20, 3);
        let mut service = traffic.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(())
        }));
        let started = Instant::now();
        for _ in 0..5 {
            let request = Request::get("/api/v1/namespaces/a/pods/p")
                .body(())
                .unwrap();
            tower::ServiceExt::ready(&mut service).await.unwrap();
            service.call(request).await.unwrap();
        }
        let took = started.elapsed();
        // Three at once, then one every 50 ms.
        assert!(took.as_millis() >= 90, "{took:?}");
        assert_eq!(traffic.requests(Verb::get), 5);
    }
    #[tokio::test]
    async fn the_caches_lists_and_watches_are_counted_but_never_wait() {
        let mut registry = Registry::default();
        let traffic = ApiTraffic::new(&mut registry, 1, 1);
        let respond =
            || tower::service_fn(|_: Request<()>| async { Ok::<_, std::convert::Infallible>(()) });
        let mut paced = traffic.layer(respond());
        let mut unpaced = traffic.unpaced().layer(respond());
        // The paced client takes the one token there is.
        tower::ServiceExt::ready(&mut paced).await.unwrap();
        paced
            .call(Request::get("/api/v1/pods").body(()).unwrap())
            .await
            .unwrap();
        let started = Instant::now();
        for _ in 0..20 {
            let request = Request::get("/api/v1/pods?watch=true").body(()).unwrap();
            tower::ServiceExt::ready(&mut unpaced).await.unwrap();
            unpaced.call(request).await.unwrap();
        }
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        assert_eq!(traffic.requests(Verb::list), 1);
        assert_eq!(traffic.requests(Verb::watch), 20);
    }
}
