//! The admin HTTP endpoint (`--admin`): health, readiness, metrics and debug views. It only
//! reads: the table and the sources' status the registry publishes, and the metrics.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once every source has synced once (a remote cluster past
//!   `--sync-timeout` excepted), else 503 naming what is missing (and its error, such as the
//!   entry file that does not load).
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//! - `GET /debug/records`: the table as JSON, each host with its addresses, source and the
//!   entries (namespace/name) and rules they came from.
//! - `GET /debug/sources`: each source's status as JSON.
//! - `GET /debug/explain?name=N&type=T`: what the server answers for a name and why, as JSON
//!   ([`explain`]); 400 for a malformed name or type.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::records;
use crate::source::Status;
use crate::table::Table;

pub mod explain;

/// What the endpoint reads.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The published table.
    pub table: Arc<ArcSwap<Table>>,
    /// The published status of the sources.
    pub status: Arc<ArcSwap<Status>>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Whether names outside the served zones are forwarded (else REFUSED): what `explain`
    /// says of them.
    pub forwarding: bool,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", format!("{value:#}\n"))
}

/// Answers one admin request for `path` with the query string `query` (empty if none).
pub fn route(state: &AdminState, method: &Method, path: &str, query: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let status = state.status.load();
            if status.ready() {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                // Each source waited for, with what keeps it (a file that does not load).
                let waiting: Vec<String> = (status.sources().iter())
                    .filter(|s| s.waited_for())
                    .map(|s| match &s.error {
                        Some(e) => format!("{} ({e})", s.name),
                        None => s.name.to_string(),
                    })
                    .collect();
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("waiting for {}\n", waiting.join(", ")),
                )
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(state.status.load().sources()),
        ),
        "/debug/records" => json(StatusCode::OK, records::json(&state.table.load())),
        "/debug/sources" => json(
            StatusCode::OK,
            serde_json::json!({ "sources": state.status.load().sources() }),
        ),
        "/debug/explain" => match explain::Question::from_query(query) {
            Ok(q) => json(
                StatusCode::OK,
                explain::explain(&state.table.load(), state.forwarding, &q),
            ),
            Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e.to_string() })),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /healthz /readyz /metrics /debug/records /debug/sources /debug/explain\n".into(),
        ),
    }
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let uri = req.uri();
                let response = route(&state, req.method(), uri.path(), uri.query().unwrap_or(""));
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}
