//! The admin API's recordings routes (same authentication and error shape as `crate::admin`):
//! - `GET    /api/admin/recordings` — every recording on disk, newest first: id, room,
//!   participants, start, duration, size, state
//! - `GET    /api/admin/recordings/{id}` — its `recording.json`, its export's `manifest.json`
//!   (`null` until exported) and its size
//! - `DELETE /api/admin/recordings/{id}` — delete it and its files (204)
//! - `POST   /api/admin/recordings/{id}/export` — export it again, answering when done with
//!   the export's manifest
//!
//! Errors: `invalid_id` (400: not an id this server makes), `not_found` (404),
//! `recording_running` (409: stop it first), `recording_busy` (409: being exported or deleted).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::RecordingError;
use crate::admin::refuse_unless_admin;
use crate::http::json_error;
use crate::server::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/admin/recordings", get(list))
        .route("/api/admin/recordings/{id}", get(show).delete(delete))
        .route("/api/admin/recordings/{id}/export", post(export))
}

/// A recording request refused, as an HTTP error (also for `crate::playback`).
pub(crate) fn refused(error: RecordingError) -> Response {
    let status = match error {
        RecordingError::InvalidId => StatusCode::BAD_REQUEST,
        RecordingError::NotFound => StatusCode::NOT_FOUND,
        RecordingError::Running | RecordingError::Busy => StatusCode::CONFLICT,
        RecordingError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, error.code(), error.to_string())
}

/// The `{id}` of the path, once the caller is known to be an admin.
#[allow(clippy::result_large_err)] // private; `?`-style early returns read best here
fn admitted(
    state: &AppState,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, Response> {
    if let Some(refusal) = refuse_unless_admin(state, headers) {
        return Err(refusal);
    }
    match path {
        Ok(Path(id)) => Ok(id),
        Err(e) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
        )),
    }
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_unless_admin(&state, &headers) {
        return refusal;
    }
    match state.recorder().list().await {
        Ok(recordings) => Json(json!({ "recordings": recordings })).into_response(),
        Err(e) => refused(e),
    }
}

async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match admitted(&state, &headers, path) {
        Ok(id) => id,
        Err(refusal) => return refusal,
    };
    match state.recorder().get(&id).await {
        Ok(recording) => Json(recording).into_response(),
        Err(e) => refused(e),
    }
}

async fn delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match admitted(&state, &headers, path) {
        Ok(id) => id,
        Err(refusal) => return refusal,
    };
    match state.recorder().delete(&id, "api").await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}

async fn export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match admitted(&state, &headers, path) {
        Ok(id) => id,
        Err(refusal) => return refusal,
    };
    match state.recorder().export(&id).await {
        Ok(export) => Json(export).into_response(),
        Err(e) => refused(e),
    }
}
