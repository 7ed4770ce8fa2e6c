//! The Janus WebSocket API's messages (the subset the videoroom plugin needs) and the rule
//! that matches replies to requests.
//!
//! Every request carries a `transaction`; Janus echoes it on the reply. Synchronous requests
//! (`create`, `attach`, plugin requests like `create` room or `listparticipants`) get a
//! `success` or `error` at once; asynchronous plugin requests (`join`, `configure`, `start`,
//! `subscribe`) get an `ack` at once and the real answer later as an `event` *carrying the same
//! transaction* — with notifications for other things (`webrtcup`, new publishers, `hangup`)
//! interleaved, which carry no transaction or another one. [`match_reply`] is that rule, kept
//! pure so it is tested without a server.
//!
//! Only the fields used are modelled; unknown ones are ignored so a newer Janus does not break
//! the load generator, and a message that does not parse is skipped, never a panic.

use serde::{Deserialize, Serialize};

/// The plugin every handle attaches to.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";
/// The WebSocket subprotocol Janus requires.
pub const SUBPROTOCOL: &str = "janus-protocol";
/// Videoroom `error_code` for `create` of a room that already exists: another participant of
/// the same run created it first, which is fine.
pub const ERROR_ROOM_EXISTS: u32 = 427;
/// Videoroom `error_code` for a room that does not exist (yet).
pub const ERROR_NO_SUCH_ROOM: u32 = 426;

/// A request to Janus. `janus` is the verb: `create`, `attach`, `message`, `trickle`,
/// `keepalive`, `destroy`.
#[derive(Debug, Serialize)]
pub struct Request {
    pub janus: &'static str,
    pub transaction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<VideoRoomRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsep: Option<Jsep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Candidate>,
}

impl Request {
    pub fn new(janus: &'static str, transaction: String) -> Self {
        Self {
            janus,
            transaction,
            session_id: None,
            handle_id: None,
            plugin: None,
            body: None,
            jsep: None,
            candidate: None,
        }
    }
}

/// A feed to subscribe to: every stream of publisher `feed`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FeedRef {
    pub feed: u64,
}

/// The body of a `message` to the videoroom plugin.
#[derive(Debug, Serialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum VideoRoomRequest {
    /// A temporary room sized for the scenario.
    Create {
        room: u64,
        description: String,
        /// Most publishers at once.
        publishers: u32,
        /// REMB cap Janus sends publishers, bits per second.
        bitrate: u32,
        audiocodec: &'static str,
        videocodec: &'static str,
        permanent: bool,
    },
    #[serde(rename = "join")]
    JoinPublisher {
        ptype: &'static str,
        room: u64,
        display: String,
    },
    #[serde(rename = "join")]
    JoinSubscriber {
        ptype: &'static str,
        room: u64,
        streams: Vec<FeedRef>,
    },
    /// With the publisher's offer: start publishing.
    Configure {
        audio: bool,
        video: bool,
    },
    /// With the subscriber's answer: start receiving.
    Start {},
    /// Add feeds to an existing subscription (Janus answers with a new offer).
    Subscribe {
        streams: Vec<FeedRef>,
    },
    ListParticipants {
        room: u64,
    },
}

impl VideoRoomRequest {
    pub fn join_publisher(room: u64, display: String) -> Self {
        Self::JoinPublisher {
            ptype: "publisher",
            room,
            display,
        }
    }

    pub fn join_subscriber(room: u64, feeds: &[u64]) -> Self {
        Self::JoinSubscriber {
            ptype: "subscriber",
            room,
            streams: feeds.iter().map(|&feed| FeedRef { feed }).collect(),
        }
    }
}

/// A session description as Janus carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jsep {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
    /// Order of the simulcast rids in our offer. Janus assumes high-to-low (`"hml"`, as its
    /// janus.js sends them) unless told; our publisher lists them low-to-high (q, h, f), and
    /// without this Janus takes `q` for its top layer and forwards 150 kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid_order: Option<String>,
}

impl Jsep {
    pub fn offer(sdp: String) -> Self {
        Self {
            kind: "offer".into(),
            sdp,
            rid_order: None,
        }
    }

    /// A publisher's offer whose simulcast rids go from the lowest layer to the highest.
    pub fn offer_rids_low_to_high(sdp: String) -> Self {
        Self {
            rid_order: Some("lmh".into()),
            ..Self::offer(sdp)
        }
    }

    pub fn answer(sdp: String) -> Self {
        Self {
            kind: "answer".into(),
            sdp,
            rid_order: None,
        }
    }
}

/// A trickled candidate, or the end of candidates.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Candidate {
    One {
        candidate: String,
        #[serde(rename = "sdpMid", skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex")]
        sdp_m_line_index: u16,
    },
    Completed {
        completed: bool,
    },
}

/// What a message from Janus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Success,
    Error,
    Ack,
    Event,
    /// A handle's PeerConnection is up (ICE and DTLS done on Janus's side).
    Webrtcup,
    Media,
    Slowlink,
    Hangup,
    Detached,
    Timeout,
    #[serde(other)]
    Other,
}

/// A message from Janus.
#[derive(Debug, Clone, Deserialize)]
pub struct Incoming {
    pub janus: Kind,
    #[serde(default)]
    pub transaction: Option<String>,
    /// The handle a notification or plugin event is about.
    #[serde(default)]
    pub sender: Option<u64>,
    /// `success` of `create` / `attach`: the new session's or handle's id.
    #[serde(default)]
    pub data: Option<Created>,
    #[serde(default)]
    pub plugindata: Option<PluginData>,
    #[serde(default)]
    pub jsep: Option<Jsep>,
    #[serde(default)]
    pub error: Option<ApiError>,
    /// `hangup`'s reason.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub id: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    pub code: i64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PluginData {
    #[serde(default)]
    pub data: VideoRoomData,
}

/// The videoroom plugin's reply or event; which fields are set depends on `videoroom`
/// (`created`, `joined`, `attached`, `event`, `updated`, `participants`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VideoRoomData {
    #[serde(default)]
    pub videoroom: Option<String>,
    /// `joined`: our publisher id (the feed others subscribe to).
    #[serde(default)]
    pub id: Option<u64>,
    /// Active publishers: in `joined`, and in `event`s when new ones go live.
    #[serde(default)]
    pub publishers: Vec<PublisherInfo>,
    /// `listparticipants`.
    #[serde(default)]
    pub participants: Vec<ParticipantInfo>,
    #[serde(default)]
    pub error_code: Option<u32>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PublisherInfo {
    pub id: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub id: u64,
    /// Whether it is publishing (has media) now.
    #[serde(default)]
    pub publisher: bool,
}

impl Incoming {
    pub fn videoroom(&self) -> Option<&VideoRoomData> {
        self.plugindata.as_ref().map(|p| &p.data)
    }
}

/// What a message means for a request waiting on `transaction`.
#[derive(Debug)]
pub enum Matched {
    /// About something else: keep it for the main loop.
    NotMine(Box<Incoming>),
    /// Janus took an asynchronous request; its `event` follows.
    Ack,
    /// The final answer.
    Done(Result<Box<Incoming>, RequestError>),
}

/// A request Janus or the plugin refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// Janus's error code, or the videoroom's `error_code`.
    pub code: i64,
    pub reason: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Janus error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for RequestError {}

/// Classifies `message` for the request that was sent with `transaction`.
pub fn match_reply(message: Incoming, transaction: &str) -> Matched {
    if message.transaction.as_deref() != Some(transaction) {
        return Matched::NotMine(Box::new(message));
    }
    match message.janus {
        Kind::Ack => Matched::Ack,
        Kind::Error => {
            let (code, reason) = message
                .error
                .map_or((0, "unspecified".to_owned()), |e| (e.code, e.reason));
            Matched::Done(Err(RequestError { code, reason }))
        }
        Kind::Success | Kind::Event => {
            if let Some(code) = message.videoroom().and_then(|d| d.error_code) {
                let reason = message
                    .videoroom()
                    .and_then(|d| d.error.clone())
                    .unwrap_or_default();
                return Matched::Done(Err(RequestError {
                    code: i64::from(code),
                    reason,
                }));
            }
            Matched::Done(Ok(Box::new(message)))
        }
        // A notification that happens to carry a transaction is still a notification.
        _ => Matched::NotMine(Box::new(message)),
    }
}

/// The numeric room id (Janus's default) for a run's room name: FNV-1a, cut to 53 bits so it
/// survives JavaScript-number JSON tooling; every participant of the run derives the same.
pub fn room_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash & ((1 << 53) - 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Incoming {
        serde_json::from_str(text).expect("parses")
    }

    #[test]
    fn requests_serialise_as_janus_expects() {
        let mut join = Request::new("message", "t1".into());
        join.session_id = Some(7);
        join.handle_id = Some(9);
        join.body = Some(VideoRoomRequest::join_subscriber(42, &[5, 6]));
        let value = serde_json::to_value(&join).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "janus": "message", "transaction": "t1", "session_id": 7, "handle_id": 9,
                "body": {"request": "join", "ptype": "subscriber", "room": 42,
                         "streams": [{"feed": 5}, {"feed": 6}]}
            })
        );

        let mut configure = Request::new("message", "t2".into());
        configure.body = Some(VideoRoomRequest::Configure {
            audio: true,
            video: true,
        });
        configure.jsep = Some(Jsep::offer_rids_low_to_high("v=0".into()));
        let value = serde_json::to_value(&configure).unwrap();
        assert_eq!(value["body"]["request"], "configure");
        assert_eq!(
            value["jsep"],
            serde_json::json!({"type": "offer", "sdp": "v=0", "rid_order": "lmh"})
        );
        let answer = serde_json::to_value(Jsep::answer("v=0".into())).unwrap();
        assert_eq!(answer, serde_json::json!({"type": "answer", "sdp": "v=0"}));

        let mut start = Request::new("message", "t3".into());
        start.body = Some(VideoRoomRequest::Start {});
        assert_eq!(
            serde_json::to_value(&start).unwrap()["body"],
            serde_json::json!({"request": "start"})
        );
        let publisher = serde_json::to_value(VideoRoomRequest::join_publisher(1, "t".into()));
        assert_eq!(publisher.unwrap()["ptype"], "publisher");

        let mut trickle = Request::new("trickle", "t4".into());
        trickle.candidate = Some(Candidate::One {
            candidate: "candidate:1 1 udp 1 10.98.0.2 5000 typ host".into(),
            sdp_mid: None,
            sdp_m_line_index: 0,
        });
        assert_eq!(
            serde_json::to_value(&trickle).unwrap()["candidate"],
            serde_json::json!({"candidate": "candidate:1 1 udp 1 10.98.0.2 5000 typ host",
                               "sdpMLineIndex": 0})
        );
        trickle.candidate = Some(Candidate::Completed { completed: true });
        assert_eq!(
            serde_json::to_value(&trickle).unwrap()["candidate"],
            serde_json::json!({"completed": true})
        );
    }

    #[test]
    fn replies_are_matched_by_transaction() {
        // Synchronous success with the new id.
        let created = parse(r#"{"janus":"success","transaction":"a","data":{"id":123}}"#);
        match match_reply(created, "a") {
            Matched::Done(Ok(m)) => assert_eq!(m.data.map(|d| d.id), Some(123)),
            other => panic!("{other:?}"),
        }
        // Another transaction's reply and a notification are not ours.
        let other = parse(r#"{"janus":"success","transaction":"b","data":{"id":1}}"#);
        assert!(matches!(match_reply(other, "a"), Matched::NotMine(_)));
        let up = parse(r#"{"janus":"webrtcup","session_id":1,"sender":9}"#);
        match match_reply(up, "a") {
            Matched::NotMine(m) => assert_eq!((m.janus, m.sender), (Kind::Webrtcup, Some(9))),
            other => panic!("{other:?}"),
        }
        // Asynchronous: ack first, then the event with the same transaction and the JSEP.
        let ack = parse(r#"{"janus":"ack","session_id":1,"transaction":"c"}"#);
        assert!(matches!(match_reply(ack, "c"), Matched::Ack));
        let event = parse(
            r#"{"janus":"event","session_id":1,"transaction":"c","sender":9,
                "plugindata":{"plugin":"janus.plugin.videoroom",
                  "data":{"videoroom":"attached","room":42,"streams":[]}},
                "jsep":{"type":"offer","sdp":"v=0\r\n"}}"#,
        );
        match match_reply(event, "c") {
            Matched::Done(Ok(m)) => {
                assert_eq!(
                    m.videoroom().and_then(|d| d.videoroom.as_deref()),
                    Some("attached")
                );
                assert_eq!(m.jsep, Some(Jsep::offer("v=0\r\n".into())));
            }
            other => panic!("{other:?}"),
        }
        // Errors: Janus's own and the plugin's.
        let error = parse(
            r#"{"janus":"error","transaction":"d","error":{"code":458,"reason":"No such session"}}"#,
        );
        match match_reply(error, "d") {
            Matched::Done(Err(e)) => assert_eq!(e.code, 458),
            other => panic!("{other:?}"),
        }
        let exists = parse(
            r#"{"janus":"success","transaction":"e","sender":9,"plugindata":{"plugin":"janus.plugin.videoroom",
                "data":{"videoroom":"event","error_code":427,"error":"Room 42 already exists"}}}"#,
        );
        match match_reply(exists, "e") {
            Matched::Done(Err(e)) => assert_eq!(e.code, i64::from(ERROR_ROOM_EXISTS)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plugin_payloads_parse_and_unknown_kinds_are_tolerated() {
        let joined = parse(
            r#"{"janus":"event","transaction":"f","sender":3,"plugindata":{"plugin":"janus.plugin.videoroom",
                "data":{"videoroom":"joined","room":42,"id":77,"private_id":5,
                        "publishers":[{"id":8,"display":"x","streams":[]}]}}}"#,
        );
        let data = joined.videoroom().unwrap();
        assert_eq!((data.id, data.publishers.len()), (Some(77), 1));
        let list = parse(
            r#"{"janus":"success","transaction":"g","plugindata":{"plugin":"janus.plugin.videoroom",
                "data":{"videoroom":"participants","room":42,
                        "participants":[{"id":8,"publisher":true},{"id":9,"publisher":false}]}}}"#,
        );
        assert_eq!(list.videoroom().unwrap().participants[0].id, 8);
        assert_eq!(parse(r#"{"janus":"server_info"}"#).janus, Kind::Other);
        assert!(serde_json::from_str::<Incoming>(r#"{"no":"janus"}"#).is_err());
        assert_eq!(room_id("lt-abc-class"), room_id("lt-abc-class"));
        assert_ne!(room_id("lt-abc-class"), room_id("lt-abd-class"));
        assert!(room_id("x") < 1 << 53);
    }
}
