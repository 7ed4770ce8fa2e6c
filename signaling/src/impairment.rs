//! `POST /test/impairment`: makes the SFU impair one participant's network path, so that
//! browser and SDK tests can put a student on a weak network (the test machines' kernel has no
//! netem). The SFU does the work (`aula_sfu::impair`); this is its HTTP face.
//!
//! Served only when the server was started with the test switch (`[dev] test_impairment` or
//! `aula serve --test-impairment`); otherwise the path is an unknown route, 404 like any other.
//! It takes no credentials, which is why it is off by default.
//!
//! Body: `{"room": "r", "identity": "student1", "loss": 0.1, "rate_kbps": 500, "delay_ms": 20,
//! "queue_ms": 200}`. Every field but `room` and `identity` is optional; those two alone clear
//! the participant's impairment. Instead of them, `participant_sid` names the participant
//! directly, and works on a node of a cluster that serves a participant's media but not its
//! room (the room's origin placed it there): the impairment applies there to the media, as on
//! a single node. `loss` (0 to 1) applies both ways; the rest to what the SFU
//! sends the participant: a `rate_kbps` cap (0: nothing gets through) queueing up to `queue_ms`
//! (0 or absent: 200) before dropping, then `delay_ms`. Answers 200 with what was applied, 400
//! for a bad body or value, 404 for an unknown room or identity.

use std::sync::Arc;
use std::time::Duration;

use aula_sfu::impair::{DEFAULT_QUEUE, Impairment, MAX_DELAY};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::http::json_error;
use crate::server::AppState;

/// The route, or none at all when the test switch is off.
pub(crate) fn routes(state: &AppState) -> Router<Arc<AppState>> {
    if state.impairer().is_none() {
        return Router::new();
    }
    Router::new().route("/test/impairment", post(set_impairment))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    room: String,
    #[serde(default)]
    identity: String,
    /// Instead of `room` and `identity`: the participant's sid, not looked up in a room.
    participant_sid: Option<String>,
    loss: Option<f64>,
    rate_kbps: Option<u64>,
    delay_ms: Option<u64>,
    queue_ms: Option<u64>,
}

impl Body {
    /// The impairment asked for (`None`: clear it), or what is wrong with the values.
    fn impairment(&self) -> Result<Option<Impairment>, String> {
        if self.loss.is_none()
            && self.rate_kbps.is_none()
            && self.delay_ms.is_none()
            && self.queue_ms.is_none()
        {
            return Ok(None);
        }
        let loss = self.loss.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&loss) {
            return Err(format!("loss must be between 0 and 1, not {loss}"));
        }
        let rate_bps = match self.rate_kbps {
            None => None,
            Some(kbps) => Some(
                kbps.checked_mul(1000)
                    .ok_or_else(|| format!("rate_kbps {kbps} is too large"))?,
            ),
        };
        let millis = |field: &str, value: Option<u64>| {
            let value = Duration::from_millis(value.unwrap_or(0));
            if value > MAX_DELAY {
                return Err(format!(
                    "{field} must be at most {} ms",
                    MAX_DELAY.as_millis()
                ));
            }
            Ok(value)
        };
        Ok(Some(Impairment {
            loss,
            rate_bps,
            delay: millis("delay_ms", self.delay_ms)?,
            queue: millis("queue_ms", self.queue_ms)?,
        }))
    }
}

/// The impairment as the body spells it, with the default queue filled in.
fn describe(impairment: &Impairment) -> serde_json::Value {
    let queue = if impairment.queue.is_zero() {
        DEFAULT_QUEUE
    } else {
        impairment.queue
    };
    json!({
        "loss": impairment.loss,
        "rate_kbps": impairment.rate_bps.map(|bps| bps / 1000),
        "delay_ms": impairment.delay.as_millis() as u64,
        "queue_ms": queue.as_millis() as u64,
    })
}

async fn set_impairment(
    State(state): State<Arc<AppState>>,
    body: Result<Json<Body>, JsonRejection>,
) -> Response {
    let Some(sfu) = state.impairer() else {
        // `routes` only mounts this handler with an impairer; answer as if it did not exist.
        return json_error(StatusCode::NOT_FOUND, "not_found", "no test impairment");
    };
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid JSON body: {}", rejection.body_text()),
            );
        }
    };
    let impairment = match body.impairment() {
        Ok(impairment) => impairment,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let participant = if let Some(sid) = &body.participant_sid {
        if sid.is_empty() || !body.room.is_empty() || !body.identity.is_empty() {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "participant_sid names the participant alone: no room or identity with it",
            );
        }
        // The SFU accepts a participant it does not know yet and applies the impairment when
        // its media connects.
        Some(sid.clone())
    } else {
        if body.room.is_empty() || body.identity.is_empty() {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "name the participant: room and identity, or participant_sid",
            );
        }
        let registry = state.registry();
        let Some(room) = registry.room(&body.room) else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no room {:?}", body.room),
            );
        };
        room.members
            .iter()
            .find(|m| m.info.identity == body.identity)
            .map(|m| m.info.sid.clone())
    };
    let Some(participant) = participant else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {:?} in room {:?}", body.identity, body.room),
        );
    };
    if let Err(e) = sfu.set_impairment(&participant, impairment).await {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    }
    tracing::info!(
        room = body.room,
        identity = body.identity,
        participant,
        ?impairment,
        "test impairment"
    );
    Json(json!({
        "room": body.room,
        "identity": body.identity,
        "participant_sid": participant,
        "impairment": impairment.as_ref().map(describe),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Body {
        serde_json::from_value(json).expect("a valid body")
    }

    #[test]
    fn room_and_identity_alone_clear() {
        let cleared = body(json!({"room": "r", "identity": "i"})).impairment();
        assert_eq!(cleared, Ok(None));
    }

    #[test]
    fn values_become_an_impairment() {
        let full = body(
            json!({"room": "r", "identity": "i", "loss": 0.1, "rate_kbps": 500,
            "delay_ms": 20, "queue_ms": 300}),
        );
        assert_eq!(
            full.impairment(),
            Ok(Some(Impairment {
                loss: 0.1,
                rate_bps: Some(500_000),
                delay: Duration::from_millis(20),
                queue: Duration::from_millis(300),
            }))
        );
        let loss_only = body(json!({"room": "r", "identity": "i", "loss": 1}));
        let loss_only = loss_only.impairment().expect("valid").expect("some");
        assert_eq!((loss_only.loss, loss_only.rate_bps), (1.0, None));
        assert_eq!(
            describe(&loss_only),
            json!({"loss": 1.0, "rate_kbps": null, "delay_ms": 0, "queue_ms": 200})
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            json!({"room": "r", "identity": "i", "loss": 2.0}),
            json!({"room": "r", "identity": "i", "loss": -0.1}),
            json!({"room": "r", "identity": "i", "delay_ms": 10_001}),
            json!({"room": "r", "identity": "i", "queue_ms": 3_600_000}),
            json!({"room": "r", "identity": "i", "rate_kbps": u64::MAX}),
        ] {
            let err = body(bad.clone()).impairment().unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        // Negative or fractional integers do not even parse (a 400 from the JSON extractor).
        assert!(
            serde_json::from_value::<Body>(json!({"room": "r", "identity": "i", "delay_ms": -5}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<Body>(json!({"room": "r", "identity": "i", "lose": 1}))
                .is_err()
        );
    }
}
