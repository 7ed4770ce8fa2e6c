//! The sending side of a publish connection: tracks, simulcast streams and the media pump.
//!
//! `rtc` does not stamp the SDES MID and RID header extensions on outgoing packets by itself,
//! yet an SFU learns which simulcast layer an SSRC is from exactly those (there are no
//! `a=ssrc` lines for RID-based simulcast). So each packet gets them here, with the ids the
//! answer negotiated, as a browser's RTP sender would do.

use aula_sfu::peer;
use std::time::Instant;

use aula_protocol::{TrackAnnouncement, TrackSource};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::{Header, Packet};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::error::Error;

use crate::clock::Epoch;
use crate::media::source::{MediaPlan, MediaSource, Outgoing, StreamRef};

/// RFC 8285 one-byte header extension profile.
const ONE_BYTE_PROFILE: u16 = 0xbede;

/// One outgoing RTP stream (the audio, or one simulcast layer).
struct SendStream {
    sender: RTCRtpSenderId,
    ssrc: u32,
    /// Empty unless simulcast.
    rid: &'static str,
    /// Learnt from the negotiated parameters on the first send.
    wire: Option<Wire>,
}

/// What the answer settled for a stream.
struct Wire {
    payload_type: u8,
    mid: Option<(u8, Bytes)>,
    rid: Option<u8>,
}

pub struct Publisher {
    plan: MediaPlan,
    epoch: Epoch,
    audio: Option<SendStream>,
    video: Vec<SendStream>,
    /// Starts when the connection is up; before that packets would only be dropped.
    source: Option<MediaSource>,
    outgoing: Vec<Outgoing>,
    /// Keyframe requests received (PLI/FIR), for the report.
    pub keyframe_requests: u64,
    pub packets_sent: u64,
    pub send_errors: u64,
}

impl Publisher {
    /// Adds the plan's tracks to `pc`; returns the publisher and what to announce for them.
    pub fn add_tracks(
        pc: &mut RTCPeerConnection,
        plan: MediaPlan,
        epoch: Epoch,
        name: &str,
    ) -> Result<(Self, Vec<TrackAnnouncement>), Error> {
        let mut announcements = Vec::new();
        let audio = if plan.audio {
            let ssrc = rand::random::<u32>();
            let track_id = format!("{name}-mic");
            let track = MediaStreamTrack::new(
                format!("{name}-stream"),
                track_id.clone(),
                "synthetic-opus".to_owned(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    active: true,
                    codec: peer::opus(),
                    ..Default::default()
                }],
            );
            let sender = pc.add_track(track)?;
            announcements.push(TrackAnnouncement {
                track_id,
                source: TrackSource::Microphone,
            });
            Some(SendStream {
                sender,
                ssrc,
                rid: "",
                wire: None,
            })
        } else {
            None
        };
        let mut video = Vec::new();
        if !plan.video_layers.is_empty() {
            let simulcast = plan.simulcast();
            let ssrcs: Vec<u32> = plan.video_layers.iter().map(|_| rand::random()).collect();
            let encodings = plan
                .video_layers
                .iter()
                .zip(&ssrcs)
                .map(|(layer, ssrc)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: if simulcast {
                            layer.rid.to_owned()
                        } else {
                            String::new()
                        },
                        ssrc: Some(*ssrc),
                        ..Default::default()
                    },
                    active: true,
                    codec: peer::vp8(),
                    max_bitrate: layer.bitrate_bps,
                    ..Default::default()
                })
                .collect();
            let track_id = format!("{name}-cam");
            let track = MediaStreamTrack::new(
                format!("{name}-stream"),
                track_id.clone(),
                "synthetic-vp8".to_owned(),
                RtpCodecKind::Video,
                encodings,
            );
            let sender = pc.add_track(track)?;
            announcements.push(TrackAnnouncement {
                track_id,
                source: TrackSource::Camera,
            });
            video = plan
                .video_layers
                .iter()
                .zip(ssrcs)
                .map(|(layer, ssrc)| SendStream {
                    sender,
                    ssrc,
                    rid: if simulcast { layer.rid } else { "" },
                    wire: None,
                })
                .collect();
        }
        Ok((
            Self {
                plan,
                epoch,
                audio,
                video,
                source: None,
                outgoing: Vec::new(),
                keyframe_requests: 0,
                packets_sent: 0,
                send_errors: 0,
            },
            announcements,
        ))
    }

    /// The connection is up: start the media clock (first frames are keyframes).
    pub fn start(&mut self, now: Instant) {
        if self.source.is_none() {
            self.source = Some(MediaSource::new(self.plan.clone(), self.epoch, now));
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.source.as_ref().and_then(MediaSource::next_due)
    }

    /// A PLI or FIR named `ssrc`: that layer's next frame is a keyframe.
    pub fn keyframe_requested(&mut self, ssrc: u32) {
        self.keyframe_requests += 1;
        if let (Some(source), Some(layer)) = (
            self.source.as_mut(),
            self.video.iter().position(|s| s.ssrc == ssrc),
        ) {
            source.request_keyframe(layer);
        }
    }

    /// Writes every payload due at `now` into `pc`.
    pub fn pump(&mut self, pc: &mut RTCPeerConnection, now: Instant) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        source.poll(now, &mut self.outgoing);
        for out in std::mem::take(&mut self.outgoing) {
            let stream = match out.stream {
                StreamRef::Audio => self.audio.as_mut(),
                StreamRef::Video(layer) => self.video.get_mut(layer),
            };
            let Some(stream) = stream else { continue };
            match write(pc, stream, out, now) {
                Ok(()) => self.packets_sent += 1,
                Err(e) => {
                    self.send_errors += 1;
                    tracing::debug!(ssrc = stream.ssrc, "write_rtp: {e}");
                }
            }
        }
    }
}

fn write(
    pc: &mut RTCPeerConnection,
    stream: &mut SendStream,
    out: Outgoing,
    now: Instant,
) -> Result<(), Error> {
    if stream.wire.is_none() {
        stream.wire = Some(negotiated(pc, stream.sender)?);
    }
    let Some(wire) = stream.wire.as_ref() else {
        return Err(Error::ErrRTPSenderNotExisted);
    };
    let mut header = Header {
        version: 2,
        marker: out.marker,
        payload_type: wire.payload_type,
        sequence_number: out.seq,
        timestamp: out.timestamp,
        ssrc: stream.ssrc,
        ..Default::default()
    };
    if let Some((id, mid)) = &wire.mid {
        header.extension = true;
        header.extension_profile = ONE_BYTE_PROFILE;
        header.set_extension(*id, mid.clone())?;
    }
    if let (Some(id), false) = (wire.rid, stream.rid.is_empty()) {
        header.extension = true;
        header.extension_profile = ONE_BYTE_PROFILE;
        header.set_extension(id, Bytes::from_static(stream.rid.as_bytes()))?;
    }
    let mut sender = pc
        .rtp_sender(stream.sender)
        .ok_or(Error::ErrRTPSenderNotExisted)?;
    sender.write_rtp(
        now,
        Packet {
            header,
            payload: out.payload,
        },
    )
}

/// Payload type, MID and the header extension ids the answer gave this sender.
fn negotiated(pc: &mut RTCPeerConnection, id: RTCRtpSenderId) -> Result<Wire, Error> {
    let mid = pc
        .get_transceivers()
        .collect::<Vec<_>>()
        .into_iter()
        .find_map(|t| {
            let transceiver = pc.rtp_transceiver(t)?;
            (transceiver.sender() == Some(id))
                .then(|| transceiver.mid().clone())
                .flatten()
        });
    let mut sender = pc.rtp_sender(id).ok_or(Error::ErrRTPSenderNotExisted)?;
    let parameters = &sender.get_parameters().rtp_parameters;
    let payload_type = parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or(Error::ErrRTPTransceiverCodecUnsupported)?;
    let ext_id = |uri: &str| {
        parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .and_then(|e| u8::try_from(e.id).ok())
    };
    Ok(Wire {
        payload_type,
        mid: ext_id(SDES_MID_URI).zip(mid.map(Bytes::from)),
        rid: ext_id(SDES_RTP_STREAM_ID_URI),
    })
}
