//! Building the `rtc` peer connections the SFU uses, with the codecs, feedback and
//! interceptors every Aula connection shares; the credential, candidate and codec helpers are
//! public so that Aula's own light clients (the simulator, `aula-loadtest`) build theirs alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_simulcast_extension_headers,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

use crate::bwe::{self, SharedEstimate};
use crate::fec::{self, stage::FecStage};
use crate::metrics::SfuMetrics;
use crate::qos::FeedbackCounts;
use crate::red;
use crate::resend_history::ResendHistory;
use crate::rtx_repair::{self, RtxRepairInterceptor};
use crate::sender_clock::{self, SenderClockStage};
use crate::spaced_copies::{self, SpacedCopies};
use crate::tap::{self, Tap};

/// ICE timers. A browser that vanishes (tab closed, network gone) is declared failed after
/// `FAILED`, which is when its tracks are unpublished; `DISCONNECTED` is the first warning.
/// `FAILED` outlasts the control plane's reconnect window (`[room] reconnect_timeout_secs`,
/// 15 s by default), so a participant changing networks can resume, with an ICE restart,
/// before the media plane gives up on it.
const ICE_DISCONNECTED: Duration = Duration::from_secs(5);
const ICE_FAILED: Duration = Duration::from_secs(25);
const ICE_KEEPALIVE: Duration = Duration::from_secs(2);

/// Random ICE credentials: the ufrag routes the peer's first STUN request to it, the password
/// authenticates it (RFC 8445 asks for at least 24 random bits and 128 bits respectively).
pub fn ice_credentials() -> (String, String) {
    let random = |len| {
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(len)
            .map(char::from)
            .collect::<String>()
    };
    (random(16), random(32))
}

/// A peer connection with Aula's media configuration, with ICE credentials `ufrag` and `pwd`
/// (empty: `rtc` draws random ones, and new ones at every ICE restart): the default codecs (Opus, VP8, VP9, H.264,
/// AV1 with RTX), NACK generation and response, RTCP reports, TWCC feedback, simulcast header
/// extensions, and the SFU's [`Tap`] (metrics and the connection's feedback `counts`;
/// keyframe requests delivered to the SFU) and its [`RtxRepairInterceptor`] (a publisher's
/// resends of simulcast layers turned back into the packets they repair).
///
/// A connection the SFU *sends* media on (a subscriber's) also gets send-side congestion
/// control, publishing its estimate into `estimate` (see [`crate::bwe`]), and video RED and
/// ULPFEC with the stage that fills in FEC packets (see [`crate::fec`]).
///
/// The SFU is a full ICE agent, not ICE-lite, although lite would let the browser nominate at
/// once (late joiners decoded in ~0.6 s instead of ~1 s). Measured with `rtc` 0.21: a lite
/// agent keeps the first nominated pair and ignores the browser's later nomination of another
/// one (a browser with two addresses switches), and as lite it sends no keep-alive checks of
/// its own, so the stale pair timed out and the session failed ~20 s after joining.
pub fn build(
    ufrag: String,
    pwd: String,
    metrics: &SfuMetrics,
    estimate: Option<&SharedEstimate>,
    counts: Arc<FeedbackCounts>,
    now: Instant,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    build_with(ufrag, pwd, metrics, estimate, counts, now, Feedback::Twcc)
}

/// Which congestion-control feedback a peer negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Transport-wide feedback, as every Aula peer and every current browser.
    Twcc,
    /// None: a receiver that can only send REMB, such as an older or embedded client (the
    /// simulator's, which checks the SFU's REMB fallback).
    RembOnly,
}

/// [`build`], negotiating `feedback`.
pub fn build_with(
    ufrag: String,
    pwd: String,
    metrics: &SfuMetrics,
    estimate: Option<&SharedEstimate>,
    counts: Arc<FeedbackCounts>,
    now: Instant,
    feedback: Feedback,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let (media_engine, registry) = configure(metrics, estimate, counts, feedback)?;
    connect(ufrag, pwd, media_engine, registry, now)
}

/// The codecs and the interceptor chain of [`build_with`], for a caller that adds interceptors
/// of its own before [`connect`] (the simulator's clients add what browsers do).
pub(crate) fn configure(
    metrics: &SfuMetrics,
    estimate: Option<&SharedEstimate>,
    counts: Arc<FeedbackCounts>,
    feedback: Feedback,
) -> Result<(MediaEngine, Registry), rtc::shared::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    red::register_red(&mut media_engine)?;
    let defaults = match feedback {
        Feedback::Twcc => register_default_interceptors(Registry::new(), &mut media_engine)?,
        // `rtc`'s defaults without the TWCC header extension and feedback.
        Feedback::RembOnly => {
            configure_simulcast_extension_headers(&mut media_engine)?;
            configure_rtcp_reports(configure_nack(Registry::new(), &mut media_engine))
        }
    };
    let mut registry = defaults
        // `rtc`'s NACK responder, with a history sized by time rather than count (issue 15).
        .with(Slot::NackResponder, ResendHistory::new())
        .with(
            Slot::Custom(tap::SLOT),
            Tap::new(metrics.clone(), estimate.cloned(), counts),
        )
        .with(
            Slot::Custom(rtx_repair::SLOT),
            RtxRepairInterceptor::new(metrics.clone()),
        );
    if let Some(estimate) = estimate {
        registry = bwe::with_congestion_control(registry, estimate);
        registry = registry
            .with(
                Slot::Custom(spaced_copies::SLOT),
                SpacedCopies::new(estimate.clone()),
            )
            .with(
                Slot::Custom(sender_clock::SLOT),
                SenderClockStage::new(estimate.clone()),
            );
        // Video FEC on the connections the SFU sends media on; see `fec`.
        fec::register(&mut media_engine)?;
        registry = registry.with(
            Slot::Custom(fec::stage::SLOT),
            FecStage::new(metrics.clone()),
        );
    }
    Ok((media_engine, registry))
}

/// A peer connection with `media_engine` and the interceptors of `registry`.
pub(crate) fn connect(
    ufrag: String,
    pwd: String,
    media_engine: MediaEngine,
    registry: Registry,
    now: Instant,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(ufrag, pwd)
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED),
            Some(ICE_FAILED),
            Some(ICE_KEEPALIVE),
        )
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
}

/// The host candidate for one advertised address of the shared socket.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, rtc::shared::error::Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&candidate).to_json()
}

/// Opus as browsers send it: 48 kHz stereo in SDP, in-band FEC on.
pub fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: Vec::new(),
    }
}

pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: Vec::new(),
    }
}
