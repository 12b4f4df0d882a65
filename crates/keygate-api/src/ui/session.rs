//! UI sessions: a signed, expiring cookie naming the ADMIN key that signed in.

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::auth::Principal;
use crate::state::AppState;

/// The principal of a valid UI session cookie, if any.
pub fn principal_of_session(_state: &AppState, _headers: &HeaderMap) -> Option<Arc<Principal>> {
    None
}

/// Where a request without a valid session goes: the sign-in page.
pub fn sign_in_redirect(_req: &axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::response::Redirect::to("/ui/login").into_response()
}
