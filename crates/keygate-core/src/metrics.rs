//! What the core counts for `/metrics` (the API renders them). Counters carry no key ids or
//! secrets: only the endpoint, the outcome class and the limit backend's decisions.

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
