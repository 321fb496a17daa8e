//! `clouddeck responder`: the backend of EdgeHandler `deny` rules. A Gateway API rule with
//! no backend answers 500 whatever the user asked for, so each `deny` rule sends its
//! requests here with the status it wants in [`DENY_STATUS_HEADER`] (set by the gateway,
//! never taken from the client), and this answers with that status and a one-line body.
//! It holds no state and reads nothing else from the request; `/healthz` is for probes.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::info;

use crate::routing::edge::DENY_STATUS_HEADER;
use crate::{Error, Result};

/// The status a denied request gets: the one the header names, if it is a 4xx or 5xx
/// code; otherwise 500, since the route that sent it here is not one CloudDeck made.
pub fn status_for(headers: &HeaderMap) -> StatusCode {
    headers
        .get(DENY_STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|code| (400..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn deny(headers: HeaderMap) -> Response {
    let status = status_for(&headers);
    let reason = status.canonical_reason().unwrap_or("Denied");
    (
        status,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", "no-store"),
        ],
        format!("{} {reason}\n", status.as_u16()),
    )
        .into_response()
}

/// The responder's routes: `/healthz` for probes (no deny rule sends a request there with
/// the header set to 200, as 200 is refused), everything else denied.
pub fn router() -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|headers: HeaderMap| async move {
                if headers.contains_key(DENY_STATUS_HEADER) {
                    deny(headers).await
                } else {
                    "ok".into_response()
                }
            }),
        )
        .fallback(deny)
}

/// Serves [`router`] on `addr` until SIGTERM or SIGINT.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    info!(%addr, "answering denied requests");
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    axum::serve(listener, router())
        .with_graceful_shutdown(stop)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(DENY_STATUS_HEADER, value.parse().unwrap());
        headers
    }

    #[test]
    fn answers_the_status_the_rule_names_and_500_otherwise() {
        assert_eq!(status_for(&with("403")), StatusCode::FORBIDDEN);
        assert_eq!(
            status_for(&with("451")),
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
        );
        assert_eq!(status_for(&with("503")), StatusCode::SERVICE_UNAVAILABLE);
        for bad in ["200", "302", "600", "abc", ""] {
            assert_eq!(
                status_for(&with(bad)),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{bad}"
            );
        }
        assert_eq!(
            status_for(&HeaderMap::new()),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn every_path_is_denied_and_healthz_answers_probes() {
        use tower::ServiceExt;
        let request = |path: &str, status: Option<&str>| {
            let mut builder = axum::http::Request::get(path);
            if let Some(status) = status {
                builder = builder.header(DENY_STATUS_HEADER, status);
            }
            builder.body(axum::body::Body::empty()).unwrap()
        };
        let response = router()
            .oneshot(request("/admin/x", Some("403")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"403 Forbidden\n");
        let response = router()
            .oneshot(request("/healthz", Some("410")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::GONE);
        let response = router().oneshot(request("/healthz", None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
