//! Building the `rtc` peer connections the SFU uses, with the codecs, feedback and
//! interceptors every Aula connection shares; the credential, candidate and codec helpers are
//! public so that Aula's own light clients (the simulator, `aula-loadtest`) build theirs alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::interceptor::{
    NackGeneratorBuilder, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot,
    TwccReceiverBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_simulcast_extension_headers, register_default_interceptors,
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

/// Which way media flows on a connection, which decides the interceptors it is built with.
///
/// Every stage of `rtc`'s interceptor chain costs every packet that passes it a push and a pop
/// of the stage's queue, whether it has anything to do with the packet or not, so a connection
/// carries only the stages its direction uses (issue 15): the fan-out of one teacher packet to
/// every student passes nine stages instead of twelve.
#[derive(Clone, Copy)]
pub enum Role<'a> {
    /// A publisher's connection: the SFU only receives media on it, so it generates NACKs,
    /// transport-wide feedback and receiver reports, and turns a publisher's RTX resends back
    /// into the packets they repair ([`RtxRepairInterceptor`]).
    Publisher,
    /// A subscriber's connection: the SFU only sends media on it, so it answers NACKs
    /// ([`ResendHistory`]), sends sender reports, and runs send-side congestion control
    /// publishing its estimate into the [`SharedEstimate`] (see [`crate::bwe`]), video RED and
    /// ULPFEC with the stage that fills in FEC packets (see [`crate::fec`]), spaced audio copies
    /// and the sender clock.
    Subscriber(&'a SharedEstimate),
    /// Both ways without congestion control: the simulator's clients, which publish and
    /// receive on one connection as a browser can.
    Client,
}

impl<'a> Role<'a> {
    fn estimate(self) -> Option<&'a SharedEstimate> {
        match self {
            Role::Subscriber(estimate) => Some(estimate),
            Role::Publisher | Role::Client => None,
        }
    }

    fn receives(self) -> bool {
        !matches!(self, Role::Subscriber(_))
    }

    fn sends(self) -> bool {
        !matches!(self, Role::Publisher)
    }
}

/// A peer connection with Aula's media configuration, with ICE credentials `ufrag` and `pwd`
/// (empty: `rtc` draws random ones, and new ones at every ICE restart): the default codecs (Opus, VP8, VP9, H.264,
/// AV1 with RTX), NACK, RTCP reports, TWCC feedback and simulcast header extensions negotiated,
/// the SFU's [`Tap`] (metrics and the connection's feedback `counts`; keyframe requests
/// delivered to the SFU), and the interceptors of its [`Role`].
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
    role: Role<'_>,
    counts: Arc<FeedbackCounts>,
    now: Instant,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let (media_engine, registry) = configure(metrics, role, counts, Feedback::Twcc)?;
    connect(ufrag, pwd, media_engine, registry, now)
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

/// The codecs and the interceptor chain of [`build`], negotiating `feedback`, for a caller that
/// adds interceptors of its own before [`connect`] (the simulator's clients add what browsers
/// do).
pub(crate) fn configure(
    metrics: &SfuMetrics,
    role: Role<'_>,
    counts: Arc<FeedbackCounts>,
    feedback: Feedback,
) -> Result<(MediaEngine, Registry), rtc::shared::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    red::register_red(&mut media_engine)?;
    // `rtc`'s helpers both negotiate the feedback (the media engine) and add the interceptors
    // for it, every one of them; only the negotiation is kept here, and the chain is built
    // below for the connection's role.
    match feedback {
        Feedback::Twcc => drop(register_default_interceptors(
            Registry::new(),
            &mut media_engine,
        )?),
        Feedback::RembOnly => {
            configure_simulcast_extension_headers(&mut media_engine)?;
            drop(configure_nack(Registry::new(), &mut media_engine));
        }
    }
    let mut registry = Registry::new().with(
        Slot::Custom(tap::SLOT),
        Tap::new(metrics.clone(), role.estimate().cloned(), counts),
    );
    if role.receives() {
        registry = registry
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(
                Slot::Custom(rtx_repair::SLOT),
                RtxRepairInterceptor::new(metrics.clone()),
            );
        if feedback == Feedback::Twcc {
            registry = registry.with(Slot::TwccReceiver, TwccReceiverBuilder::new().build());
        }
    }
    if role.sends() {
        registry = registry
            // `rtc`'s NACK responder's slot, with a history sized by time rather than count
            // (issue 15).
            .with(Slot::NackResponder, ResendHistory::new())
            .with(Slot::SenderReport, SenderReportBuilder::new().build());
    }
    if let Role::Subscriber(estimate) = role {
        registry = bwe::with_congestion_control(registry, estimate)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(role: Role<'_>) -> Vec<String> {
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let (_, registry) =
            configure(&metrics, role, Default::default(), Feedback::Twcc).expect("chain");
        registry.slots().into_iter().map(|(_, name)| name).collect()
    }

    /// Each connection carries the stages of its direction and no other, wire-most first; none
    /// is displaced by another claiming its slot (which `rtc` would only log).
    #[test]
    fn each_role_gets_the_stages_of_its_direction() {
        assert_eq!(
            stages(Role::Publisher),
            [
                "Tap",
                "RtxRepairInterceptor",
                "NackGeneratorInterceptor",
                "TwccReceiverInterceptor",
                "ReceiverReportInterceptor",
            ]
        );
        let estimate = SharedEstimate::new();
        let subscriber = stages(Role::Subscriber(&estimate));
        assert_eq!(subscriber[..3], ["Tap", "SenderClockStage", "SpacedCopies"]);
        assert_eq!(subscriber[4], "FecStage");
        assert_eq!(
            subscriber[6..],
            ["ResendHistory", "SenderReportInterceptor"]
        );
        assert_eq!(subscriber.len(), 8, "{subscriber:?}");
        assert!(
            subscriber[3].starts_with("WithRtx<CongestionControl"),
            "{subscriber:?}"
        );
        assert!(
            subscriber[5].starts_with("WithRtx<TwccSender"),
            "{subscriber:?}"
        );
        assert_eq!(stages(Role::Client).len(), 7);
    }
}
