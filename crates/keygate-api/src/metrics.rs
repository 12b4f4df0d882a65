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

pub use keygate_core::metrics::{fail_open_decision, gateway_request, refusal};

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
