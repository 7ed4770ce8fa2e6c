//! The admin HTTP API, for the school's backend and operators: rooms, participants, the desk.
//!
//! Authentication, either of:
//! - `Authorization: Basic base64(api_key:api_secret)`: the server's own key pair, for scripts;
//! - `Authorization: Bearer <access token>` whose claims carry `"admin": true` (mint one with
//!   `aula token --admin ...`), so a backend can hand out narrower, expiring credentials.
//!
//! Routes (JSON in and out; every error is `{"error": {"code", "message"}}` with a 4xx):
//! - `GET    /api/admin/rooms` — rooms with participant count and lock
//! - `POST   /api/admin/rooms` `{"name": "math"}` — create an empty room (409 if it exists)
//! - `DELETE /api/admin/rooms/{room}` — end it: everyone gets `left` `room deleted`
//! - `GET    /api/admin/rooms/{room}/participants` — participants with tracks and permissions
//! - `PUT    /api/admin/rooms/{room}/participants/{sid}/permissions` — a `Permissions` object
//! - `POST   /api/admin/rooms/{room}/participants/{sid}/mute` `{"track_sid": "TR_..."}`
//! - `DELETE /api/admin/rooms/{room}/participants/{sid}` — remove (`left` `removed by an administrator`)
//! - `GET    /api/admin/support/queue`, `GET /api/admin/support/agents`
//! - `GET    /api/admin/nodes` — the cluster's live nodes with their load, from this node's
//!   cached directory (with Redis's state); without `[cluster]`, this one node as `local`
//! - `POST   /api/admin/rooms/{room}/recording` — start recording the room (`already_recording`)
//! - `DELETE /api/admin/rooms/{room}/recording` — stop it, once its logs are on disk; answers
//!   with its `recording.json` (`not_recording`); the recording is then exported
//! - `/api/admin/recordings...` — list, show, delete and export recordings: `recording::api`

use std::sync::Arc;
use std::time::Instant;

use aula_protocol::{ErrorCode, Permissions};
use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cluster::{NodeInfo, unix_millis};
use crate::http::json_error;
use crate::recording::{BY_ADMIN, Refusal};
use crate::room::Refused;
use crate::server::AppState;
use crate::token::{self, MAX_ID_BYTES};

const REASON_ROOM_DELETED: &str = "room deleted";
const REASON_ADMIN_REMOVED: &str = "removed by an administrator";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/admin/rooms", get(list_rooms).post(create_room))
        .route(
            "/api/admin/rooms/{room}",
            axum::routing::delete(delete_room),
        )
        .route(
            "/api/admin/rooms/{room}/participants",
            get(list_participants),
        )
        .route(
            "/api/admin/rooms/{room}/participants/{sid}",
            axum::routing::delete(remove_participant),
        )
        .route(
            "/api/admin/rooms/{room}/participants/{sid}/permissions",
            put(set_permissions),
        )
        .route(
            "/api/admin/rooms/{room}/participants/{sid}/mute",
            post(mute),
        )
        .route(
            "/api/admin/rooms/{room}/recording",
            post(start_recording).delete(stop_recording),
        )
        .route("/api/admin/support/queue", get(support_queue))
        .route("/api/admin/support/agents", get(support_agents))
        .route("/api/admin/nodes", get(list_nodes))
        .merge(crate::recording::api::routes())
}

/// Checks the `Authorization` header: `None` when it admits an admin, else the error response
/// saying what is wrong.
pub(crate) fn refuse_unless_admin(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    admin_check(state, headers).err()
}

#[allow(clippy::result_large_err)] // `?`-style early returns read best here
pub(crate) fn admin_check(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = |message: &str| {
        let mut response = json_error(StatusCode::UNAUTHORIZED, "unauthorized", message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"aula admin\""),
        );
        response
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized(
            "send Authorization: Basic base64(api_key:api_secret) or Bearer <admin token>",
        ));
    };
    let keys = state.keys();
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((key, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(unauthorized("malformed Basic credentials"));
        };
        // Compare digests, not the secrets: equal-length hashes compared byte by byte leak
        // nothing useful about the secret through timing.
        let same_secret =
            Sha256::digest(secret.as_bytes()) == Sha256::digest(keys.secret.as_bytes());
        if key == keys.key && same_secret {
            return Ok(());
        }
        return Err(unauthorized("wrong API key or secret"));
    }
    if let Some(jwt) = value.strip_prefix("Bearer ") {
        return match token::verify(keys, jwt.trim()) {
            Ok(claims) if claims.admin => Ok(()),
            Ok(_) => Err(json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token has no admin grant",
            )),
            Err(e) => Err(unauthorized(&e.to_string())),
        };
    }
    Err(unauthorized(
        "unsupported Authorization scheme (Basic or Bearer)",
    ))
}

/// A refusal from the registry as an HTTP error.
fn refused((code, message): Refused) -> Response {
    let (status, label) = match code {
        ErrorCode::UnknownParticipant | ErrorCode::UnknownTrack | ErrorCode::UnknownSession => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        ErrorCode::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        ErrorCode::Conflict => (StatusCode::CONFLICT, "conflict"),
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    json_error(status, label, message)
}

fn bad_path(rejection: PathRejection) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        rejection.body_text(),
    )
}

fn bad_json(rejection: JsonRejection) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("invalid JSON body: {}", rejection.body_text()),
    )
}

fn no_room(room: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no room {room:?}"),
    )
}

async fn list_rooms(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let rooms: Vec<_> = state
        .registry()
        .room_list()
        .into_iter()
        .map(|(name, participants, locked)| {
            json!({ "name": name, "participants": participants, "locked": locked })
        })
        .collect();
    Json(json!({ "rooms": rooms })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
}

async fn create_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<CreateRoom>, JsonRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_json(e),
    };
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_ID_BYTES || name.chars().any(char::is_control) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("room name must be 1 to {MAX_ID_BYTES} printable bytes"),
        );
    }
    if !state.registry().create_room(name) {
        return json_error(
            StatusCode::CONFLICT,
            "conflict",
            format!("room {name:?} exists"),
        );
    }
    state
        .webhooks()
        .emit("room_started", json!({ "room": name }));
    state.recorder().room_created(name).await;
    (
        StatusCode::CREATED,
        Json(json!({ "name": name, "participants": 0, "locked": false })),
    )
        .into_response()
}

async fn delete_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path(room) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    if !state.registry().delete_room(&room, REASON_ROOM_DELETED) {
        return no_room(&room);
    }
    state.flush_room_events();
    StatusCode::NO_CONTENT.into_response()
}

async fn list_participants(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path(room) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let registry = state.registry();
    let Some(r) = registry.room(&room) else {
        return no_room(&room);
    };
    let participants: Vec<_> = r
        .members
        .iter()
        .map(|m| json!({ "participant": m.info, "permissions": m.permissions }))
        .collect();
    Json(
        json!({ "room": room, "locked": r.locked, "hands": r.hands, "participants": participants }),
    )
    .into_response()
}

async fn set_permissions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<Permissions>, JsonRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path((room, sid)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let Json(permissions) = match body {
        Ok(b) => b,
        Err(e) => return bad_json(e),
    };
    let result = state
        .registry()
        .admin_set_permissions(&room, &sid, permissions);
    match result {
        Ok(effects) => {
            state.apply_effects(effects).await;
            let permissions = state.permissions(&sid);
            Json(json!({ "participant_sid": sid, "permissions": permissions })).into_response()
        }
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    track_sid: String,
}

async fn mute(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<MuteBody>, JsonRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path((room, sid)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_json(e),
    };
    let result = state.registry().admin_mute(&room, &sid, &body.track_sid);
    match result {
        Ok(effects) => {
            state.apply_effects(effects).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => refused(e),
    }
}

async fn remove_participant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path((room, sid)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let result = state
        .registry()
        .admin_remove(&room, &sid, REASON_ADMIN_REMOVED);
    match result {
        Ok(emptied) => {
            state.reap_later(emptied);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => refused(e),
    }
}

/// A refused recording request as an HTTP error.
fn recording_refused(room: &str, refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::UnknownRoom => StatusCode::NOT_FOUND,
        Refusal::AlreadyRecording | Refusal::NotRecording => StatusCode::CONFLICT,
        Refusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, refusal.code(), refusal.message(room))
}

async fn start_recording(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path(room) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    match state.recorder().start(&room, BY_ADMIN).await {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({ "recording_id": id, "room": room })),
        )
            .into_response(),
        Err(refusal) => recording_refused(&room, refusal),
    }
}

async fn stop_recording(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Path(room) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    match state.recorder().stop(&room).await {
        Ok(manifest) => Json(manifest).into_response(),
        Err(refusal) => recording_refused(&room, refusal),
    }
}

async fn support_queue(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let queue = state.desk().queue(Instant::now());
    Json(json!({ "queue": queue })).into_response()
}

async fn support_agents(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let agents = state.desk().agents(Instant::now());
    Json(json!({ "agents": agents })).into_response()
}

async fn list_nodes(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_admin(&state, &headers) {
        return r;
    }
    let Some(cluster) = state.cluster() else {
        let local = NodeInfo {
            id: "local".to_owned(),
            region: String::new(),
            public_addrs: Vec::new(),
            relay_addr: None,
            load: state.local_load(),
            updated_ms: unix_millis(std::time::SystemTime::now()),
        };
        return Json(json!({ "mode": "single", "node_id": local.id, "nodes": [local] }))
            .into_response();
    };
    let view = cluster.view();
    Json(json!({
        "mode": "cluster",
        "node_id": cluster.node_id(),
        "redis": view.redis,
        "nodes": view.nodes,
    }))
    .into_response()
}
