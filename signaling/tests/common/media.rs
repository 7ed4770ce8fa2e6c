//! A media plane for tests about the room's state: every call succeeds (no media has to flow)
//! and the ones the tests check are recorded, with the SFU's events injected by the test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement};
use aula_sfu::{SfuError, SfuEvent};
use aula_signaling::media::MediaPlane;
use aula_signaling::{Config, Server, start_with_media};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// A call [`FakeMedia`] was asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Subscribe(String, String),
    Unsubscribe(String, String),
    Unpublish(String),
    Pause(String, bool),
    RestartIce(String),
}

/// Accepts everything and records the [`Call`]s.
#[derive(Default)]
pub struct FakeMedia {
    calls: Mutex<Vec<Call>>,
}

impl FakeMedia {
    fn record(&self, call: Call) -> BoxFuture<'static, Result<(), SfuError>> {
        self.calls.lock().expect("not poisoned").push(call);
        ok()
    }

    pub fn has(&self, call: &Call) -> bool {
        self.calls.lock().expect("not poisoned").contains(call)
    }
}

fn ok<'a>() -> BoxFuture<'a, Result<(), SfuError>> {
    Box::pin(async { Ok(()) })
}

impl MediaPlane for FakeMedia {
    fn publish_offer<'a>(
        &'a self,
        _participant: &'a str,
        _sdp: String,
        _tracks: Vec<TrackAnnouncement>,
    ) -> BoxFuture<'a, Result<String, SfuError>> {
        Box::pin(async { Ok("answer".to_owned()) })
    }

    fn subscribe_answer<'a>(
        &'a self,
        _participant: &'a str,
        _sdp: String,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        ok()
    }

    fn add_candidate<'a>(
        &'a self,
        _participant: &'a str,
        _target: PeerTarget,
        _candidate: IceCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        ok()
    }

    fn subscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Subscribe(participant.into(), track_sid.into()))
    }

    fn remove_participant<'a>(
        &'a self,
        _participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        ok()
    }

    fn unsubscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Unsubscribe(participant.into(), track_sid.into()))
    }

    fn unpublish_track<'a>(&'a self, track_sid: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Unpublish(track_sid.into()))
    }

    fn set_track_paused<'a>(
        &'a self,
        track_sid: &'a str,
        paused: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Pause(track_sid.into(), paused))
    }

    fn restart_ice<'a>(&'a self, participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::RestartIce(participant.into()))
    }
}

/// A server in this process with `config` and `media` as its media plane, and a way to inject
/// the SFU's events.
pub async fn start_with_plane(
    config: Config,
    media: Arc<dyn MediaPlane>,
) -> (Server, mpsc::UnboundedSender<SfuEvent>) {
    let (events, rx) = mpsc::unbounded_channel();
    let server = start_with_media(
        config,
        media,
        rx,
        SocketAddr::from(([127, 0, 0, 1], 9)),
        prometheus::Registry::new(),
    )
    .await
    .expect("server starts");
    (server, events)
}

/// [`start_with_plane`] with a [`FakeMedia`].
pub async fn start_with_fake_media(
    config: Config,
) -> (Server, Arc<FakeMedia>, mpsc::UnboundedSender<SfuEvent>) {
    let media = Arc::new(FakeMedia::default());
    let (server, events) = start_with_plane(config, media.clone()).await;
    (server, media, events)
}
