//! Reviewing recordings (issue 13, item 5): what the `/recordings` and `/playback/{id}` pages
//! load. The list and a recording's manifests are the admin API's (`recording::api`), here for
//! reviewers; the QoS timeline and the exported media are served from the recording's
//! directory.
//!
//! Who may: a token that may review (`can_review`: agents and admins by default), as a bearer
//! token or as `?token=` (a `<video src>` cannot send headers), or the admin key by HTTP Basic.
//!
//! Routes (every error is `{"error": {"code", "message"}}` with a 4xx):
//! - `GET /api/recordings` — as `GET /api/admin/recordings`
//! - `GET /api/recordings/{id}` — as `GET /api/admin/recordings/{id}`
//! - `GET /api/recordings/{id}/qos` — `qos.jsonl` as written (`application/x-ndjson`)
//! - `GET /api/recordings/{id}/files/{name}` — a file the export's `manifest.json` lists, with
//!   Range requests (Chrome seeks in a WebM only with them)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aula_recording::manifest::{self as export_manifest, Format};
use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tower_http::services::ServeFile;

use crate::http::json_error;
use crate::recording::api::refused;
use crate::recording::{RecordingError, store};
use crate::server::AppState;
use crate::token;

/// The QoS timeline beside the media.
const QOS_FILE: &str = "qos.jsonl";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/recordings", get(list))
        .route("/api/recordings/{id}", get(one))
        .route("/api/recordings/{id}/qos", get(qos))
        .route("/api/recordings/{id}/files/{name}", get(file))
}

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Admits the admin key (Basic) and tokens that may review (bearer, else `?token=`).
#[allow(clippy::result_large_err)] // private; `?`-style early returns read best here
fn check_reviewer(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<(), Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorization.is_some_and(|v| v.starts_with("Basic ")) {
        return crate::admin::admin_check(state, headers);
    }
    let jwt = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query.token.as_deref());
    let Some(jwt) = jwt else {
        // No WWW-Authenticate: the pages ask for a token themselves, a browser dialog would not.
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in: send a token with the can_review grant (Authorization: Bearer or ?token=), or the admin key",
        ));
    };
    match token::verify(state.keys(), jwt.trim()) {
        Ok(claims) if claims.may_review() => Ok(()),
        Ok(_) => Err(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token has no can_review grant",
        )),
        Err(e) => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            e.to_string(),
        )),
    }
}

fn bad_path(rejection: PathRejection) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        rejection.body_text(),
    )
}

/// A recording's directory, for an id this server makes (so no path tricks) that exists.
#[allow(clippy::result_large_err)]
fn recording_dir(state: &AppState, id: &str) -> Result<PathBuf, Response> {
    let dir = store::dir_of(state.recorder().dir(), id)
        .ok_or_else(|| refused(RecordingError::InvalidId))?;
    if !dir.is_dir() {
        return Err(refused(RecordingError::NotFound));
    }
    Ok(dir)
}

async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if let Err(r) = check_reviewer(&state, &headers, &query) {
        return r;
    }
    match state.recorder().list().await {
        Ok(recordings) => Json(json!({ "recordings": recordings })).into_response(),
        Err(e) => refused(e),
    }
}

async fn one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    path: Result<UrlPath<String>, PathRejection>,
) -> Response {
    if let Err(r) = check_reviewer(&state, &headers, &query) {
        return r;
    }
    let UrlPath(id) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    match state.recorder().get(&id).await {
        Ok(recording) => Json(recording).into_response(),
        Err(e) => refused(e),
    }
}

async fn qos(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    path: Result<UrlPath<String>, PathRejection>,
    request: Request,
) -> Response {
    if let Err(r) = check_reviewer(&state, &headers, &query) {
        return r;
    }
    let UrlPath(id) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let path = match recording_dir(&state, &id) {
        Ok(dir) => dir.join(QOS_FILE),
        Err(r) => return r,
    };
    if !path.is_file() {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("recording {id:?} has no QoS timeline"),
        );
    }
    serve(&path, "application/x-ndjson", request).await
}

async fn file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    path: Result<UrlPath<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    if let Err(r) = check_reviewer(&state, &headers, &query) {
        return r;
    }
    let UrlPath((id, name)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let dir = match recording_dir(&state, &id) {
        Ok(dir) => dir,
        Err(r) => return r,
    };
    // Only what the export wrote and listed, by exactly that name: never a capture log, never
    // a path out of the directory.
    let manifest = tokio::fs::read(dir.join(export_manifest::FILE_NAME))
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice::<export_manifest::Manifest>(&bytes).ok());
    let format = manifest.and_then(|m| {
        m.files
            .into_iter()
            .find(|f| f.path == name && is_plain_file_name(&f.path))
            .map(|f| f.format)
    });
    let Some(format) = format else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("recording {id:?} has no exported file {name:?}"),
        );
    };
    let content_type = match format {
        Format::Webm => "video/webm",
        Format::Ogg => "audio/ogg",
    };
    serve(&dir.join(&name), content_type, request).await
}

/// One path component of letters, digits, `-`, `_` and `.`, not starting with a dot: neither
/// `..`, nor a separator, nor a hidden file. The manifest is data on disk; checked all the same.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Serves a file with Range, conditional requests and HEAD (`ServeFile`), as `content_type`.
async fn serve(path: &Path, content_type: &'static str, request: Request) -> Response {
    match ServeFile::new(path).try_call(request).await {
        Ok(response) => {
            let mut response = response.map(axum::body::Body::new);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            // A reviewer's media: never kept by a shared cache.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            response
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_reach_the_disk() {
        assert!(is_plain_file_name("PA_x.camera.webm"));
        for bad in ["", "..", ".", "../etc", "a/b", "a\\b", ".hidden", "a b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
