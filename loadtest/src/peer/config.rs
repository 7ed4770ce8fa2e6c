//! The `rtc` peer connections light clients use: only Opus and VP8 (smaller SDP, less to
//! negotiate), the default interceptors (NACK both ways, RTCP reports, simulcast header
//! extensions) and [`KeyframeTap`], with ICE credentials we choose so the shard can route a
//! server's first STUN request by its ufrag.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RtpCodecKind};
use rtc::shared::error::Error;

use aula_sfu::peer::{self, opus, vp8};

use super::tap::{self, KeyframeTap};

/// Chrome's payload types, so SDP looks like a browser's.
const OPUS_PAYLOAD_TYPE: u8 = 111;
const VP8_PAYLOAD_TYPE: u8 = 96;
/// A peer that hears nothing for this long is failed; shorter than rtc's default so a broken
/// run ends its peers quickly.
const ICE_DISCONNECTED: Duration = Duration::from_secs(5);
const ICE_FAILED: Duration = Duration::from_secs(10);
const ICE_KEEPALIVE: Duration = Duration::from_secs(2);

pub fn build(ufrag: String, pwd: String, now: Instant) -> Result<RTCPeerConnection, Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: VP8_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?
        .with(Slot::Custom(tap::SLOT), KeyframeTap::default());
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(ufrag, pwd)
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED),
            Some(ICE_FAILED),
            Some(ICE_KEEPALIVE),
        )
        .build();
    RTCPeerConnectionBuilder::new()
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
}

/// `rtc` gathers nothing itself: the peer's own address is its one (host) candidate.
pub fn add_host_candidate(pc: &mut RTCPeerConnection, addr: SocketAddr) -> Result<(), Error> {
    pc.add_local_candidate(peer::host_candidate(addr)?)
}
