//! `/metrics` in Prometheus' text format. Counters carry no key ids or secrets: only the
//! endpoint, the outcome class and the limit backend's decisions.

use std::sync::OnceLock;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls reuse it).
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the metrics recorder");
            None
        }
    });
}

/// Counts one gateway request by endpoint and outcome class (`2xx`, `4xx`, `5xx`).
pub fn gateway_request(endpoint: &'static str, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("keygate_gateway_requests_total", "endpoint" => endpoint, "class" => class).increment(1);
}

/// Counts a limit decision taken on local counters because the shared ones were unreachable.
pub fn fail_open_decision() {
    metrics::counter!("keygate_limits_fail_open_decisions_total").increment(1);
}

/// Counts a refusal by kind (`rate`, `budget`).
pub fn refusal(kind: &'static str) {
    metrics::counter!("keygate_limit_refusals_total", "kind" => kind).increment(1);
}

/// `GET /metrics`.
pub async fn render() -> Response {
    install();
    let body = HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
