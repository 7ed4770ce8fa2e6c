//! HTTP routes: the WebSocket endpoint, health, dev tokens, and the embedded pages and SDK.
//!
//! Every error, including unknown routes and malformed requests, is a 4xx with the JSON body
//! `{"error": {"code": "...", "message": "..."}}`, so that scripts and the SDKs never have to
//! parse an HTML or plain-text error page.
//!
//! The pages and the browser SDK are compiled into the binary (`include_str!`): `aula serve`
//! needs no files next to it, and the SDK served always matches the server's protocol version.

use std::sync::Arc;
use std::time::Duration;

use aula_protocol::{MAX_MESSAGE_BYTES, Role};
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::OpenWebSocket;
use crate::server::AppState;
use crate::token::{self, AccessClaims};

/// Largest WebSocket message read at all. Above [`MAX_MESSAGE_BYTES`] (the protocol's limit) so
/// that a somewhat too large message is read and refused with `message_too_large` while the
/// session continues; a message above this closes the socket without buffering it.
pub const WS_MAX_MESSAGE_BYTES: usize = 4 * MAX_MESSAGE_BYTES;

/// The WebSocket read buffer allocated up front (tungstenite's default is 128 KiB). Signaling
/// messages are small and rare, and every open socket, joined or not, holds this buffer; it
/// grows for a larger message when one comes.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Lifetime of tokens from `/api/dev-token`: one school day.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// An embedded static file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

/// One module of the browser SDK, `client-sdk/js/<name>`, as `(name, asset)`.
macro_rules! sdk_module {
    ($name:literal) => {
        (
            $name,
            Asset {
                body: include_str!(concat!("../../client-sdk/js/", $name)),
                content_type: "text/javascript; charset=utf-8",
            },
        )
    };
}

/// The browser SDK's ES modules, each served at `/sdk/<name>`: `aula.js` is the entry point and
/// the public API, and imports the others by relative URL (`./room.js`), which resolve there too.
static SDK_MODULES: [(&str, Asset); 9] = [
    sdk_module!("aula.js"),
    sdk_module!("protocol.js"),
    sdk_module!("socket.js"),
    sdk_module!("room.js"),
    sdk_module!("peer.js"),
    sdk_module!("publisher.js"),
    sdk_module!("subscriber.js"),
    sdk_module!("rendered-sizes.js"),
    sdk_module!("client-stats.js"),
];

const INDEX_HTML: Asset = Asset {
    body: include_str!("../web/index.html"),
    content_type: "text/html; charset=utf-8",
};
const CLASS_HTML: Asset = Asset {
    body: include_str!("../web/class.html"),
    content_type: "text/html; charset=utf-8",
};
const CLASS_JS: Asset = Asset {
    body: include_str!("../web/class.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLASS_UI_JS: Asset = Asset {
    body: include_str!("../web/class-ui.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLASS_MODERATION_JS: Asset = Asset {
    body: include_str!("../web/class-moderation.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLASS_STAGE_JS: Asset = Asset {
    body: include_str!("../web/class-stage.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLASS_CHAT_JS: Asset = Asset {
    body: include_str!("../web/class-chat.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLASS_QUALITY_JS: Asset = Asset {
    body: include_str!("../web/class-quality.js"),
    content_type: "text/javascript; charset=utf-8",
};
const CLASS_PAGE_CSS: Asset = Asset {
    body: include_str!("../web/class-page.css"),
    content_type: "text/css; charset=utf-8",
};
const SUPPORT_HTML: Asset = Asset {
    body: include_str!("../web/support.html"),
    content_type: "text/html; charset=utf-8",
};
const AGENT_HTML: Asset = Asset {
    body: include_str!("../web/agent.html"),
    content_type: "text/html; charset=utf-8",
};
const DESK_JS: Asset = Asset {
    body: include_str!("../web/desk.js"),
    content_type: "text/javascript; charset=utf-8",
};
const SUPPORT_JS: Asset = Asset {
    body: include_str!("../web/support.js"),
    content_type: "text/javascript; charset=utf-8",
};
const AGENT_JS: Asset = Asset {
    body: include_str!("../web/agent.js"),
    content_type: "text/javascript; charset=utf-8",
};
const DESK_CSS: Asset = Asset {
    body: include_str!("../web/desk.css"),
    content_type: "text/css; charset=utf-8",
};
const RECORDINGS_HTML: Asset = Asset {
    body: include_str!("../web/recordings.html"),
    content_type: "text/html; charset=utf-8",
};
const RECORDINGS_JS: Asset = Asset {
    body: include_str!("../web/recordings.js"),
    content_type: "text/javascript; charset=utf-8",
};
const PLAYBACK_HTML: Asset = Asset {
    body: include_str!("../web/playback.html"),
    content_type: "text/html; charset=utf-8",
};
const PLAYBACK_JS: Asset = Asset {
    body: include_str!("../web/playback.js"),
    content_type: "text/javascript; charset=utf-8",
};
const REVIEW_JS: Asset = Asset {
    body: include_str!("../web/review.js"),
    content_type: "text/javascript; charset=utf-8",
};
const REVIEW_CSS: Asset = Asset {
    body: include_str!("../web/review.css"),
    content_type: "text/css; charset=utf-8",
};
const CLASS_CSS: Asset = Asset {
    body: include_str!("../web/class.css"),
    content_type: "text/css; charset=utf-8",
};

impl IntoResponse for &'static Asset {
    fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                // Embedded files change only with the binary; revalidate so an upgrade shows.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            self.body,
        )
            .into_response()
    }
}

/// A 4xx/5xx with the JSON error body every route uses.
pub(crate) fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/dev-token", get(dev_token))
        .merge(crate::admin::routes())
        .merge(crate::playback::routes())
        .merge(crate::impairment::routes(&state))
        .route("/", get(|| async { &INDEX_HTML }))
        .route("/class", get(|| async { &CLASS_HTML }))
        .merge(sdk_routes())
        .route("/web/class.js", get(|| async { &CLASS_JS }))
        .route("/web/class.css", get(|| async { &CLASS_CSS }))
        .route("/web/class-page.css", get(|| async { &CLASS_PAGE_CSS }))
        .route("/web/class-ui.js", get(|| async { &CLASS_UI_JS }))
        .route(
            "/web/class-moderation.js",
            get(|| async { &CLASS_MODERATION_JS }),
        )
        .route("/web/class-stage.js", get(|| async { &CLASS_STAGE_JS }))
        .route("/web/class-chat.js", get(|| async { &CLASS_CHAT_JS }))
        .route("/web/class-quality.js", get(|| async { &CLASS_QUALITY_JS }))
        .route("/support", get(|| async { &SUPPORT_HTML }))
        .route("/agent", get(|| async { &AGENT_HTML }))
        .route("/web/desk.js", get(|| async { &DESK_JS }))
        .route("/web/support.js", get(|| async { &SUPPORT_JS }))
        .route("/web/agent.js", get(|| async { &AGENT_JS }))
        .route("/web/desk.css", get(|| async { &DESK_CSS }))
        // The page is public; what it shows comes from /api/recordings with a review token.
        .route("/recordings", get(|| async { &RECORDINGS_HTML }))
        .route("/playback/{id}", get(|| async { &PLAYBACK_HTML }))
        .route("/web/recordings.js", get(|| async { &RECORDINGS_JS }))
        .route("/web/playback.js", get(|| async { &PLAYBACK_JS }))
        .route("/web/review.js", get(|| async { &REVIEW_JS }))
        .route("/web/review.css", get(|| async { &REVIEW_CSS }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `/sdk/<name>` for every module of the browser SDK; any other `/sdk/` path falls through to the
/// JSON 404.
fn sdk_routes() -> Router<Arc<AppState>> {
    SDK_MODULES
        .iter()
        .fold(Router::new(), |router, (name, asset)| {
            router.route(&format!("/sdk/{name}"), get(move || async move { asset }))
        })
}

/// `/ws?region=`: where the client is, for placing its media in a cluster when its token names
/// no region (a node carrying a participant's signaling to the room's origin says its own).
#[derive(Debug, Deserialize)]
struct WsParams {
    region: Option<String>,
}

async fn ws(
    State(state): State<Arc<AppState>>,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let region = match params {
        Ok(Query(WsParams { region })) => region,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    if let Some(region) = &region
        && !crate::config::is_cluster_id(region)
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_region",
            "region must be 1 to 64 letters, digits, '.', '_' or '-'",
        );
    }
    match upgrade {
        Ok(upgrade) => {
            let Some(unjoined) = state.unjoined_place() else {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_connections",
                    "too many WebSockets are waiting to join; retry shortly",
                );
            };
            upgrade
                .read_buffer_size(WS_READ_BUFFER_BYTES)
                // Each message is written and flushed at once: no buffer to fill first.
                .write_buffer_size(0)
                .max_message_size(WS_MAX_MESSAGE_BYTES)
                .max_frame_size(WS_MAX_MESSAGE_BYTES)
                .on_upgrade(move |socket| async move {
                    let _open = OpenWebSocket::new(&state.metrics().websockets);
                    crate::session::run(socket, state, unjoined, region).await
                })
        }
        Err(rejection) => json_error(
            rejection.status(),
            "not_websocket",
            format!("/ws is the WebSocket endpoint: {}", rejection.body_text()),
        ),
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus scrape endpoint: the SFU's and the control plane's metrics. It reveals load, not
/// secrets, but operators exposing the server publicly may block it at the reverse proxy.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let families = state.gather_metrics();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode metrics: {e}"),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct DevTokenQuery {
    room: String,
    identity: String,
    role: Role,
    #[serde(default)]
    name: Option<String>,
    /// The participant's region (the token's `region`): in a cluster, the room's origin places
    /// the participant's media on a node of that region.
    #[serde(default)]
    region: Option<String>,
}

/// Hands out tokens for any room and role, so the demo pages work with no backend. Only in dev
/// mode: with real keys, tokens come from the application that knows who is a teacher.
async fn dev_token(
    State(state): State<Arc<AppState>>,
    query: Result<Query<DevTokenQuery>, QueryRejection>,
) -> Response {
    if !state.is_dev_mode() {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "dev tokens are only served in dev mode (no [keys] configured)",
        );
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(rejection) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "expected ?room=R&identity=I&role=teacher|assistant|student|agent|learner[&name=N][&region=G]: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let mut claims = AccessClaims::new(&q.room, &q.identity, q.role, DEV_TOKEN_TTL);
    if let Some(name) = q.name.as_deref().filter(|n| !n.trim().is_empty()) {
        claims = claims.with_name(name);
    }
    // Checked like the room and identity by `mint`: an empty or malformed region is a 400.
    claims.region = q.region;
    match token::mint(state.keys(), &claims) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
