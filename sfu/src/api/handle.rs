//! [`SfuHandle`]: the control plane's commands, each sent to the shard (see [`crate::shard`])
//! of the participant or track it names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement};

use super::{Command, RelayLink, RenderedSize, SfuError, SfuStats};
use crate::impair::Impairment;
use crate::record::capture::{RecordingSpec, TrackLog};
use crate::relay::track::RelayedTrack;
use crate::shard::Shards;
use crate::shard::placement::Pipe;

/// Cheap to clone; every method is a round trip to the SFU thread of the shard concerned.
#[derive(Clone)]
pub struct SfuHandle {
    pub(crate) shards: Arc<Shards>,
    pub(crate) local_addr: SocketAddr,
}

impl SfuHandle {
    /// The UDP address the SFU is bound to (useful when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The participant's shard; shard 0, which will say it does not know it, for one that
    /// was never placed.
    fn shard_of(&self, participant: &str) -> usize {
        self.shards
            .placement()
            .participant(participant)
            .unwrap_or(0)
    }

    /// The participant's shard, placing it if it has none.
    fn place(&self, participant: &str) -> usize {
        let shard = self.shards.placement().place(participant);
        self.shards.note_load();
        shard
    }

    /// The track's home shard; shard 0, which will say it does not know it, for an unknown
    /// track.
    fn home_of(&self, track_sid: &str) -> usize {
        self.shards.placement().home(track_sid).unwrap_or(0)
    }

    /// Every shard with the track (at least shard 0, which will say it does not know it).
    fn shards_with(&self, track_sid: &str) -> Vec<usize> {
        let shards = self.shards.placement().shards_with(track_sid);
        if shards.is_empty() { vec![0] } else { shards }
    }

    /// Every shard, for what concerns them all.
    fn all(&self) -> std::ops::Range<usize> {
        0..self.shards.count()
    }

    /// Queues a command that has no reply, from code that must not wait (a link's reader). The
    /// queue is only full when the SFU thread is far behind; the command is then dropped, and
    /// said so.
    fn tell(&self, shard: usize, command: Command) {
        if !self.shards.try_send(shard, command) {
            tracing::warn!("SFU command queue full or stopped; a relay command was dropped");
        }
    }

    /// Applies a publisher's offer (creating its publish connection on first use) and returns
    /// the answer. `tracks` says what each sending track is; unannounced tracks are camera or
    /// microphone by kind.
    pub async fn publish_offer(
        &self,
        participant: &str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> Result<String, SfuError> {
        let shard = self.place(participant);
        let participant = participant.to_owned();
        self.shards
            .call(shard, |reply| Command::PublishOffer {
                participant,
                sdp,
                tracks,
                reply,
            })
            .await
    }

    /// Applies the client's answer to the last [`super::SfuEvent::SubscribeOffer`].
    pub async fn subscribe_answer(&self, participant: &str, sdp: String) -> Result<(), SfuError> {
        let shard = self.shard_of(participant);
        let participant = participant.to_owned();
        self.shards
            .call(shard, |reply| Command::SubscribeAnswer {
                participant,
                sdp,
                reply,
            })
            .await
    }

    /// Adds a trickled remote candidate to one of the participant's connections.
    pub async fn add_candidate(
        &self,
        participant: &str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> Result<(), SfuError> {
        let shard = self.shard_of(participant);
        let participant = participant.to_owned();
        self.shards
            .call(shard, |reply| Command::AddCandidate {
                participant,
                target,
                candidate,
                reply,
            })
            .await
    }

    /// Forwards `track_sid` to the participant, renegotiating its subscribe connection (an
    /// [`super::SfuEvent::SubscribeOffer`] follows). Subscribing twice is a no-op. A
    /// participant not placed yet goes to the track's shard, or, if that is much busier than
    /// another, to the other, with the track piped there (see [`crate::shard`]).
    pub async fn subscribe(&self, participant: &str, track_sid: &str) -> Result<(), SfuError> {
        let shard = if self.shards.count() == 1 {
            0
        } else {
            // One at a time, so that no subscriber gets ahead of the import it needs.
            let _setup = self.shards.pipe_setup.lock().await;
            let (shard, pipe) = self
                .shards
                .placement()
                .place_subscriber(participant, track_sid);
            self.shards.note_load();
            if let Some(pipe) = pipe
                && let Err(e) = self.open_pipe(track_sid, pipe).await
            {
                self.shards.placement().pipe_failed(track_sid, pipe.to);
                return Err(e);
            }
            shard
        };
        let (participant, track_sid) = (participant.to_owned(), track_sid.to_owned());
        self.shards
            .call(shard, |reply| Command::Subscribe {
                participant,
                track_sid,
                reply,
            })
            .await
    }

    /// Exports a track from its home shard on the pipe into another, and imports it there.
    async fn open_pipe(&self, track_sid: &str, pipe: Pipe) -> Result<(), SfuError> {
        let track_sid = track_sid.to_owned();
        let track = self
            .shards
            .call(pipe.from, |reply| Command::PipeExport {
                track_sid,
                to: pipe.to,
                index: pipe.index,
                reply,
            })
            .await?;
        self.shards
            .call(pipe.to, |reply| Command::RelayImport { track, reply })
            .await
    }

    /// Stops forwarding `track_sid` to the participant. Unknown subscriptions are a no-op.
    pub async fn unsubscribe(&self, participant: &str, track_sid: &str) -> Result<(), SfuError> {
        let shard = self.shard_of(participant);
        let (participant, track_sid) = (participant.to_owned(), track_sid.to_owned());
        self.shards
            .call(shard, |reply| Command::Unsubscribe {
                participant,
                track_sid,
                reply,
            })
            .await
    }

    /// Closes both of the participant's connections and unpublishes its tracks
    /// ([`super::SfuEvent::TrackUnpublished`] follows for each). Unknown participants are a
    /// no-op.
    /// Every shard forgets it: the others may know it as staff (see [`SfuHandle::set_staff`]).
    pub async fn remove_participant(&self, participant: &str) -> Result<(), SfuError> {
        self.shards.placement().remove(participant);
        self.shards.note_load();
        for shard in self.all() {
            let participant = participant.to_owned();
            self.shards
                .call(shard, |reply| Command::RemoveParticipant {
                    participant,
                    reply,
                })
                .await?;
        }
        Ok(())
    }

    /// Stops a published track at once (its consumers go,
    /// [`super::SfuEvent::TrackUnpublished`] follows), e.g. when a moderator revokes the
    /// publisher's permission.
    pub async fn unpublish_track(&self, track_sid: &str) -> Result<(), SfuError> {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        self.shards
            .call(shard, |reply| Command::UnpublishTrack { track_sid, reply })
            .await
    }

    /// Pauses (a moderator's mute) or resumes forwarding of a track to every subscriber, on
    /// every shard that has it.
    pub async fn set_track_paused(&self, track_sid: &str, paused: bool) -> Result<(), SfuError> {
        let mut result = Ok(());
        for shard in self.shards_with(track_sid) {
            let track_sid = track_sid.to_owned();
            let done = self
                .shards
                .call(shard, |reply| Command::SetTrackPaused {
                    track_sid,
                    paused,
                    reply,
                })
                .await;
            // Every shard is told; the first failure is the answer.
            result = result.and(done);
        }
        result
    }

    /// The publisher muted or unmuted its own track: forwarding goes on (it sends silence or
    /// black, or nothing), but a recording notes it in the track's log. Not waited for.
    pub async fn note_self_muted(&self, track_sid: &str, muted: bool) -> Result<(), SfuError> {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        if self
            .shards
            .try_send(shard, Command::NoteSelfMuted { track_sid, muted })
        {
            Ok(())
        } else {
            Err(SfuError::Stopped)
        }
    }

    /// Restarts ICE on the participant's subscribe connection (it reconnected from another
    /// network); an [`super::SfuEvent::SubscribeOffer`] with new credentials follows. The
    /// publish connection restarts from the client's side, with an ICE-restart offer.
    pub async fn restart_ice(&self, participant: &str) -> Result<(), SfuError> {
        let shard = self.shard_of(participant);
        let participant = participant.to_owned();
        self.shards
            .call(shard, |reply| Command::RestartIce { participant, reply })
            .await
    }

    /// Marks a participant as staff (a teacher or an assistant): when a subscriber's
    /// bandwidth is short, staff cameras keep their layers before other cameras do. Every
    /// shard is told, since subscribers anywhere allocate for the staff's tracks.
    pub async fn set_staff(&self, participant: &str, staff: bool) -> Result<(), SfuError> {
        for shard in self.all() {
            let participant = participant.to_owned();
            self.shards
                .call(shard, |reply| Command::SetStaff {
                    participant,
                    staff,
                    reply,
                })
                .await?;
        }
        Ok(())
    }

    /// Tells the SFU how large the participant shows a subscribed video track, so it forwards
    /// no larger a simulcast layer than that needs. `None` means "unknown" (no limit);
    /// a zero size means the video is not shown at all, and it is paused for this subscriber.
    pub async fn set_rendered_size(
        &self,
        participant: &str,
        track_sid: &str,
        size: Option<RenderedSize>,
    ) -> Result<(), SfuError> {
        let shard = self.shard_of(participant);
        let (participant, track_sid) = (participant.to_owned(), track_sid.to_owned());
        self.shards
            .call(shard, |reply| Command::SetRenderedSize {
                participant,
                track_sid,
                size,
                reply,
            })
            .await
    }

    /// Tests only: impairs the participant's network path inside the SFU (see
    /// [`crate::impair`]), or with `None` stops. What the SFU sends to the participant's
    /// addresses suffers loss, the rate cap and delay; what it receives from them, the loss.
    /// Participants the SFU does not know yet are accepted (and placed on a shard): the
    /// impairment applies once their media connects, and ends when they are removed.
    pub async fn set_impairment(
        &self,
        participant: &str,
        impairment: Option<Impairment>,
    ) -> Result<(), SfuError> {
        let shard = self.place(participant);
        let participant = participant.to_owned();
        self.shards
            .call(shard, |reply| Command::SetImpairment {
                participant,
                impairment,
                reply,
            })
            .await
    }

    /// Starts recording every track `spec.participants` publish, now or later, into capture
    /// logs in `spec.dir` (see [`crate::record::capture`]). The id must be new. Returns the
    /// recording's time 0, the origin of its logs' record times, so that what the control plane
    /// writes beside them (the QoS timeline) lines up with them. Every shard records the
    /// tracks published on it.
    pub async fn start_recording(&self, spec: RecordingSpec) -> Result<Instant, SfuError> {
        let mut start = None;
        for shard in self.all() {
            let spec = spec.clone();
            let at = self
                .shards
                .call(shard, |reply| Command::StartRecording { spec, reply })
                .await?;
            start.get_or_insert(at);
        }
        start.ok_or(SfuError::Stopped)
    }

    /// Adds a participant (one who joined the recorded room later) to a recording.
    pub async fn record_participant(&self, id: &str, participant: &str) -> Result<(), SfuError> {
        for shard in self.all() {
            let (id, participant) = (id.to_owned(), participant.to_owned());
            self.shards
                .call(shard, |reply| Command::RecordParticipant {
                    id,
                    participant,
                    reply,
                })
                .await?;
        }
        Ok(())
    }

    /// Stops a recording and hands back its logs, closing: [`TrackLog::log`]'s `finish` waits
    /// (blocking) until each is on disk.
    pub async fn stop_recording(&self, id: &str) -> Result<Vec<TrackLog>, SfuError> {
        let mut logs = Vec::new();
        for shard in self.all() {
            let id = id.to_owned();
            logs.extend(
                self.shards
                    .call(shard, |reply| Command::StopRecording { id, reply })
                    .await?,
            );
        }
        Ok(logs)
    }

    /// The shards' counters, added up.
    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        let mut total = SfuStats::default();
        for shard in self.all() {
            let stats = self
                .shards
                .call(shard, |reply| Command::Stats { reply })
                .await?;
            total.add(&stats);
        }
        Ok(total)
    }

    /// Starts sending a track to another node over `link`, as track `index` there (see
    /// [`crate::relay::track`]); returns what that node needs to import it.
    pub async fn relay_export(
        &self,
        track_sid: &str,
        link: RelayLink,
        index: u64,
    ) -> Result<RelayedTrack, SfuError> {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        self.shards
            .call(shard, |reply| Command::RelayExport {
                track_sid,
                link,
                index,
                reply,
            })
            .await
    }

    /// Stops sending a track on a link. Not waited for.
    pub fn relay_unexport(&self, track_sid: &str, link: u64) {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        self.tell(shard, Command::RelayUnexport { track_sid, link });
    }

    /// Forgets a link that went down. Not waited for.
    pub fn relay_link_closed(&self, link: u64) {
        for shard in self.all() {
            self.tell(shard, Command::RelayLinkClosed { link });
        }
    }

    /// Makes another node's track available here for [`SfuHandle::subscribe`], on the
    /// least-loaded shard; its subscribers follow it there.
    pub async fn relay_import(&self, track: RelayedTrack) -> Result<(), SfuError> {
        let shard = {
            let mut placement = self.shards.placement();
            placement.place_track(&track.sid)
        };
        self.shards
            .call(shard, |reply| Command::RelayImport { track, reply })
            .await
    }

    /// Hands the SFU a packet of an imported track, from its link. Dropped (false) when the
    /// SFU's queue is full: media is never waited for.
    pub fn relay_packet(&self, track_sid: &str, layer: usize, data: bytes::Bytes) -> bool {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        self.shards.try_send(
            shard,
            Command::RelayPacket {
                track_sid,
                layer,
                data,
            },
        )
    }

    /// Another node lost packets of a track sent to it on `link`: resend those still kept.
    /// Not waited for.
    pub fn relay_resend(&self, track_sid: &str, link: u64, layer: usize, seqs: Vec<u16>) {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        let command = Command::RelayResend {
            track_sid,
            link,
            layer,
            seqs,
        };
        self.tell(shard, command);
    }

    /// The node on `link` needs only `layers` of `track_sid`. Not waited for.
    pub fn relay_layer_demand(&self, track_sid: &str, link: u64, layers: Vec<usize>) {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        let command = Command::RelayLayerDemand {
            track_sid,
            link,
            layers,
        };
        self.tell(shard, command);
    }

    /// The node on `link` has listeners of audio track `track_sid` without RED, the worst of
    /// them losing `fraction` (256ths). Not waited for.
    pub fn relay_listener_loss(&self, track_sid: &str, link: u64, fraction: u8) {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        let command = Command::RelayListenerLoss {
            track_sid,
            link,
            fraction,
        };
        self.tell(shard, command);
    }

    /// The publisher of imported track `track_sid` reported that `rtp_time` of its stream
    /// `ssrc` is now (its sender report, passed on by the node that exports it). Every shard
    /// with the track is told. Not waited for.
    pub fn relay_sender_report(&self, track_sid: &str, ssrc: u32, rtp_time: u32) {
        for shard in self.shards_with(track_sid) {
            let track_sid = track_sid.to_owned();
            let command = Command::RelaySenderReport {
                track_sid,
                ssrc,
                rtp_time,
            };
            self.tell(shard, command);
        }
    }

    /// Another node's subscribers want a keyframe of a track published here. Not waited for.
    pub fn request_keyframe(&self, track_sid: &str, layer: usize) {
        let shard = self.home_of(track_sid);
        let track_sid = track_sid.to_owned();
        self.tell(shard, Command::RequestKeyframe { track_sid, layer });
    }
}
