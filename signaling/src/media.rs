//! The seam between the control plane and the media plane.
//!
//! Sessions and the SFU event dispatcher talk to the media plane only through [`MediaPlane`],
//! implemented by [`aula_sfu::SfuHandle`]. The seam exists so that the room and session logic
//! (who subscribes to what, who may publish, what happens when a peer fails) can be tested with
//! a scripted fake and injected [`SfuEvent`]s, without UDP, ICE or a browser; and so that another
//! media plane (e.g. a cascade relay) can be plugged in later. Only the commands the control plane
//! uses are here.

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement};
use aula_sfu::record::capture::{RecordingSpec, TrackLog};
use aula_sfu::{RenderedSize, SfuError, SfuHandle};
use futures_util::future::BoxFuture;

/// What the control plane asks of the media plane. Every call is keyed by participant sid.
///
/// Boxed futures keep the trait object-safe, so the server holds an `Arc<dyn MediaPlane>`; the
/// allocation per call is noise next to a round trip to the SFU thread.
pub trait MediaPlane: Send + Sync + 'static {
    /// Applies a publisher's offer and returns the answer.
    fn publish_offer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> BoxFuture<'a, Result<String, SfuError>>;

    /// Applies the answer to the last subscribe offer.
    fn subscribe_answer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
    ) -> BoxFuture<'a, Result<(), SfuError>>;

    /// Adds a trickled client candidate.
    fn add_candidate<'a>(
        &'a self,
        participant: &'a str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>>;

    /// Starts forwarding a track to a participant (a subscribe offer follows as an event).
    fn subscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>>;

    /// Closes the participant's connections; its tracks are unpublished.
    fn remove_participant<'a>(
        &'a self,
        participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>>;

    /// Decides where a participant who just joined `room` has its media, given the region its
    /// token names. A single node serves everyone itself (the default); a cluster may place the
    /// participant on a node of its region (`crate::cluster::relay`).
    fn place<'a>(
        &'a self,
        _participant: &'a str,
        _room: &'a str,
        _region: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Ok(()) })
    }

    // Moderation commands. Defaults refuse, so that media planes written before moderation
    // (test fakes) keep compiling; the control plane logs the refusal and carries on.

    /// Stops forwarding a track to one participant (its subscribe permission was revoked).
    fn unsubscribe<'a>(
        &'a self,
        _participant: &'a str,
        _track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Err(unsupported("unsubscribe")) })
    }

    /// Stops a published track at once (its publisher lost the right to send it).
    fn unpublish_track<'a>(&'a self, _track_sid: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Err(unsupported("unpublish_track")) })
    }

    /// Pauses (moderator mute) or resumes forwarding a track to everyone.
    fn set_track_paused<'a>(
        &'a self,
        _track_sid: &'a str,
        _paused: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Err(unsupported("set_track_paused")) })
    }

    /// Restarts ICE on the participant's subscribe connection after it resumed.
    fn restart_ice<'a>(&'a self, _participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Err(unsupported("restart_ice")) })
    }

    /// How large a participant shows a video track it receives (zero: not shown), so that the
    /// media plane forwards no larger a layer than needed. Only a hint, so the default accepts
    /// and ignores it, as a media plane without layer selection (or a test fake) rightly does.
    fn set_rendered_size<'a>(
        &'a self,
        _participant: &'a str,
        _track_sid: &'a str,
        _size: RenderedSize,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Ok(()) })
    }

    /// Marks a teacher or assistant, whose camera a subscriber short of bandwidth keeps before
    /// other cameras. Also only a hint: the default accepts and ignores it.
    fn set_staff<'a>(&'a self, _participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Ok(()) })
    }

    /// The publisher muted or unmuted its own track (a recording notes it). Only a note: the
    /// default ignores it.
    fn note_self_muted<'a>(
        &'a self,
        _track_sid: &'a str,
        _muted: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Ok(()) })
    }

    // Recording (see `crate::recording`). Defaults refuse: a media plane that cannot record
    // must not let a recording look started.

    /// Starts recording the tracks of `spec.participants` into capture logs in `spec.dir`;
    /// returns the recording's time 0 (the origin of the logs' record times).
    fn start_recording(
        &self,
        _spec: RecordingSpec,
    ) -> BoxFuture<'_, Result<std::time::Instant, SfuError>> {
        Box::pin(async { Err(unsupported("start_recording")) })
    }

    /// Adds a participant who joined a recorded room to its recording.
    fn record_participant<'a>(
        &'a self,
        _id: &'a str,
        _participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Err(unsupported("record_participant")) })
    }

    /// Stops a recording; returns its logs, closing.
    fn stop_recording<'a>(
        &'a self,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TrackLog>, SfuError>> {
        Box::pin(async { Err(unsupported("stop_recording")) })
    }
}

fn unsupported(what: &str) -> SfuError {
    SfuError::Internal(format!("{what} is not supported by this media plane"))
}

impl MediaPlane for SfuHandle {
    fn note_self_muted<'a>(
        &'a self,
        track_sid: &'a str,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::note_self_muted(self, track_sid, muted))
    }

    fn publish_offer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> BoxFuture<'a, Result<String, SfuError>> {
        Box::pin(SfuHandle::publish_offer(self, participant, sdp, tracks))
    }

    fn subscribe_answer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::subscribe_answer(self, participant, sdp))
    }

    fn add_candidate<'a>(
        &'a self,
        participant: &'a str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::add_candidate(
            self,
            participant,
            target,
            candidate,
        ))
    }

    fn subscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::subscribe(self, participant, track_sid))
    }

    fn remove_participant<'a>(
        &'a self,
        participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::remove_participant(self, participant))
    }

    fn unsubscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::unsubscribe(self, participant, track_sid))
    }

    fn unpublish_track<'a>(&'a self, track_sid: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::unpublish_track(self, track_sid))
    }

    fn set_track_paused<'a>(
        &'a self,
        track_sid: &'a str,
        paused: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::set_track_paused(self, track_sid, paused))
    }

    fn restart_ice<'a>(&'a self, participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::restart_ice(self, participant))
    }

    fn set_rendered_size<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
        size: RenderedSize,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::set_rendered_size(
            self,
            participant,
            track_sid,
            Some(size),
        ))
    }

    fn set_staff<'a>(&'a self, participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::set_staff(self, participant, true))
    }

    fn start_recording(
        &self,
        spec: RecordingSpec,
    ) -> BoxFuture<'_, Result<std::time::Instant, SfuError>> {
        Box::pin(SfuHandle::start_recording(self, spec))
    }

    fn record_participant<'a>(
        &'a self,
        id: &'a str,
        participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(SfuHandle::record_participant(self, id, participant))
    }

    fn stop_recording<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<TrackLog>, SfuError>> {
        Box::pin(SfuHandle::stop_recording(self, id))
    }
}
