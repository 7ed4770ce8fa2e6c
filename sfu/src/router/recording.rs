//! Recording hooks: starting and stopping recordings of participants' tracks, what each
//! track's log header says, and the markers (mutes) a recording notes.

use std::time::Instant;

use super::{Producer, Router, Upstream};
use crate::api::{ParticipantId, SfuError};
use crate::record::capture::{RecordingSpec, TrackLog, TrackMeta};
use crate::record::format::Marker;

impl Router {
    /// The publisher muted or unmuted its own track: recordings note it in the track's log.
    pub fn note_self_muted(&mut self, now: Instant, track_sid: &str, muted: bool) {
        self.captures
            .marker(now, track_sid, Marker::SelfMuted(muted));
    }

    /// Starts recording the tracks of `spec.participants`, those published now and later.
    pub fn start_recording(&mut self, now: Instant, spec: RecordingSpec) -> Result<(), SfuError> {
        let tracks = self.capture_metas(&spec.participants);
        self.captures.start(now, spec, &tracks)?;
        // The logs' first keyframe requests go out on this tick.
        self.next_housekeeping = now;
        Ok(())
    }

    /// Adds a participant (a later joiner) to a recording.
    pub fn record_participant(
        &mut self,
        now: Instant,
        id: &str,
        participant: &str,
    ) -> Result<(), SfuError> {
        let tracks = self.capture_metas(&[participant.to_owned()]);
        self.captures.add_participant(id, participant, &tracks)?;
        self.next_housekeeping = now;
        Ok(())
    }

    /// Stops a recording; its logs close on their writer threads (see [`TrackLog`]).
    pub fn stop_recording(&mut self, id: &str) -> Result<Vec<TrackLog>, SfuError> {
        self.captures.stop(id)
    }

    fn capture_metas(&self, participants: &[ParticipantId]) -> Vec<TrackMeta> {
        self.producers
            .values()
            // A track piped in from another shard, or relayed from another node, is recorded
            // where it is published.
            .filter(|p| p.upstream != Upstream::Relay && participants.contains(&p.participant))
            .map(Producer::capture_meta)
            .collect()
    }
}
