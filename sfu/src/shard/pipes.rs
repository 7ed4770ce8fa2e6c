//! Tracks piped between shards: what each shard's events mean for the others, with no I/O.
//!
//! A pipe is a relay link that stays in the process (see [`crate::router::relay`]): the home
//! shard exports the track on link [`pipe_link`]`(k)`, shard `k` imports it, and everything a
//! relay link carries besides the packets travels as events of one shard turned into commands
//! for the other: keyframe requests, lost packets and the layers still needed go from the
//! importer to the home shard, sender reports and the track's end from the home shard to the
//! importers. [`route`] decides that for each event; [`PipeCommand::apply`] carries it out on
//! a router, so that the worker threads and the simulator ([`crate::sim`]) do the same.

use std::collections::HashMap;
use std::time::Instant;

use super::placement::{Placement, pipe_link, pipe_target};
use crate::api::{SfuEvent, TrackSid};
use crate::forward::simulcast::Layer;
use crate::relay::track::flow_parts;
use crate::router::{RelayTransmit, Router};

/// The tracks a shard exports on pipes, by pipe link and index: where each of its relay
/// transmits on a pipe goes.
#[derive(Debug, Default)]
pub struct PipeTable {
    tracks: HashMap<(u64, u64), TrackSid>,
}

impl PipeTable {
    /// `track` is exported on pipe `link` as track `index` there.
    pub fn insert(&mut self, link: u64, index: u64, track: TrackSid) {
        self.tracks.insert((link, index), track);
    }

    /// The shard, track and layer a relay transmit is for, if it is on a pipe and its track
    /// is still exported there.
    pub fn destination(&self, transmit: &RelayTransmit) -> Option<(usize, &TrackSid, Layer)> {
        let shard = pipe_target(transmit.link)?;
        let (index, layer) = flow_parts(transmit.flow)?;
        let track = self.tracks.get(&(transmit.link, index))?;
        Some((shard, track, layer))
    }

    pub fn track_gone(&mut self, track: &str) {
        self.tracks.retain(|_, sid| sid != track);
    }
}

/// What one shard must do for a track piped between it and another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeCommand {
    /// Subscribers on the importing shard want a keyframe (the home shard asks the publisher).
    Keyframe { track: TrackSid, layer: usize },
    /// The importing shard missed these packets (its queue overflowed).
    Resend {
        track: TrackSid,
        link: u64,
        layer: usize,
        seqs: Vec<u16>,
    },
    /// The importing shard's subscribers need only these layers.
    LayerDemand {
        track: TrackSid,
        link: u64,
        layers: Vec<usize>,
    },
    /// The importing shard's listeners without RED lose this much at worst (256ths).
    ListenerLoss {
        track: TrackSid,
        link: u64,
        fraction: u8,
    },
    /// The publisher's sender report, for the importer's subscribers' lip sync.
    SenderReport {
        track: TrackSid,
        ssrc: u32,
        rtp_time: u32,
    },
    /// The track is gone at home.
    Unpublish { track: TrackSid },
}

impl PipeCommand {
    pub fn apply(self, router: &mut Router, now: Instant) {
        match self {
            PipeCommand::Keyframe { track, layer } => router.request_keyframe(now, &track, layer),
            PipeCommand::Resend {
                track,
                link,
                layer,
                seqs,
            } => router.relay_resend(&track, link, layer, &seqs),
            PipeCommand::LayerDemand {
                track,
                link,
                layers,
            } => router.relay_layer_demand(now, &track, link, layers),
            PipeCommand::ListenerLoss {
                track,
                link,
                fraction,
            } => router.relay_listener_loss(&track, link, fraction),
            PipeCommand::SenderReport {
                track,
                ssrc,
                rtp_time,
            } => router.relay_sender_report(now, &track, ssrc, rtp_time),
            // Gone already (the importer's subscribers left first) is fine.
            PipeCommand::Unpublish { track } => {
                let _ = router.unpublish_track(now, &track);
            }
        }
    }
}

/// An event of one shard, routed: what (if anything) the control plane is told, and what
/// other shards must do.
#[derive(Debug, Default, PartialEq)]
pub struct Routed {
    pub up: Option<SfuEvent>,
    pub commands: Vec<(usize, PipeCommand)>,
}

impl Routed {
    fn up(event: SfuEvent) -> Self {
        Self {
            up: Some(event),
            commands: Vec::new(),
        }
    }

    fn to(shard: usize, command: PipeCommand) -> Self {
        Self {
            up: None,
            commands: vec![(shard, command)],
        }
    }
}

/// Routes `event`, from shard `from` (see the module docs). Tracks published on a shard are
/// recorded as living there before the control plane hears of them, so that it can subscribe
/// to them at once.
pub fn route(placement: &mut Placement, from: usize, event: SfuEvent) -> Routed {
    match event {
        SfuEvent::TrackPublished { ref track, .. } => {
            placement.track_at(&track.sid, from);
            Routed::up(event)
        }
        SfuEvent::TrackUnpublished { ref track_sid, .. } => {
            if placement.home(track_sid) == Some(from) {
                let commands = placement
                    .track_gone(track_sid)
                    .into_iter()
                    .map(|k| {
                        let track = track_sid.clone();
                        (k, PipeCommand::Unpublish { track })
                    })
                    .collect();
                Routed {
                    up: Some(event),
                    commands,
                }
            } else if placement.copy_dropped(track_sid, from) {
                // A copy piped in: the control plane hears of the track's end from its home.
                Routed::default()
            } else {
                Routed::up(event)
            }
        }
        SfuEvent::RelayKeyframeRequest { track_sid, layer } => {
            match placement.piped_from(&track_sid, from) {
                Some(home) => Routed::to(
                    home,
                    PipeCommand::Keyframe {
                        track: track_sid,
                        layer,
                    },
                ),
                None => Routed::up(SfuEvent::RelayKeyframeRequest { track_sid, layer }),
            }
        }
        SfuEvent::RelayNack {
            track_sid,
            layer,
            seqs,
        } => match placement.piped_from(&track_sid, from) {
            Some(home) => Routed::to(
                home,
                PipeCommand::Resend {
                    track: track_sid,
                    link: pipe_link(from),
                    layer,
                    seqs,
                },
            ),
            None => Routed::up(SfuEvent::RelayNack {
                track_sid,
                layer,
                seqs,
            }),
        },
        SfuEvent::RelayLayerDemand { track_sid, layers } => {
            match placement.piped_from(&track_sid, from) {
                Some(home) => Routed::to(
                    home,
                    PipeCommand::LayerDemand {
                        track: track_sid,
                        link: pipe_link(from),
                        layers,
                    },
                ),
                None => Routed::up(SfuEvent::RelayLayerDemand { track_sid, layers }),
            }
        }
        SfuEvent::RelayListenerLoss {
            track_sid,
            fraction,
        } => match placement.piped_from(&track_sid, from) {
            Some(home) => Routed::to(
                home,
                PipeCommand::ListenerLoss {
                    track: track_sid,
                    link: pipe_link(from),
                    fraction,
                },
            ),
            None => Routed::up(SfuEvent::RelayListenerLoss {
                track_sid,
                fraction,
            }),
        },
        SfuEvent::RelaySenderReport {
            link,
            track_sid,
            ssrc,
            rtp_time,
            ..
        } if pipe_target(link).is_some_and(|k| k < placement.shards()) => Routed::to(
            pipe_target(link).unwrap_or_default(),
            PipeCommand::SenderReport {
                track: track_sid,
                ssrc,
                rtp_time,
            },
        ),
        other => Routed::up(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PublishedTrack;
    use aula_protocol::{TrackKind, TrackSource};

    /// A camera published on shard 0 and piped into shard 1.
    fn piped_class() -> Placement {
        let mut placement = Placement::new(2);
        let home = placement.place("teacher");
        assert_eq!(home, 0);
        let published = SfuEvent::TrackPublished {
            participant: "teacher".into(),
            track: PublishedTrack {
                sid: "TR_cam".into(),
                kind: TrackKind::Video,
                source: TrackSource::Camera,
                simulcast: true,
                mime_type: "video/VP8".into(),
            },
        };
        let routed = route(&mut placement, 0, published.clone());
        assert_eq!(routed.up, Some(published));
        assert_eq!(placement.place("student"), 1, "the least-loaded shard");
        let (shard, pipe) = placement.place_subscriber("student", "TR_cam");
        assert_eq!((shard, pipe.map(|p| p.to)), (1, Some(1)));
        placement
    }

    #[test]
    fn an_importers_requests_go_home_and_are_not_told_upwards() {
        let mut placement = piped_class();
        let keyframe = SfuEvent::RelayKeyframeRequest {
            track_sid: "TR_cam".into(),
            layer: 2,
        };
        assert_eq!(
            route(&mut placement, 1, keyframe.clone()),
            Routed::to(
                0,
                PipeCommand::Keyframe {
                    track: "TR_cam".into(),
                    layer: 2
                }
            )
        );
        // The home shard's own request (its track came from another node) goes up.
        assert_eq!(
            route(&mut placement, 0, keyframe.clone()),
            Routed::up(keyframe)
        );
        let demand = SfuEvent::RelayLayerDemand {
            track_sid: "TR_cam".into(),
            layers: vec![0, 1],
        };
        assert_eq!(
            route(&mut placement, 1, demand).commands,
            vec![(
                0,
                PipeCommand::LayerDemand {
                    track: "TR_cam".into(),
                    link: pipe_link(1),
                    layers: vec![0, 1]
                }
            )]
        );
        let loss = SfuEvent::RelayListenerLoss {
            track_sid: "TR_cam".into(),
            fraction: 51,
        };
        assert_eq!(
            route(&mut placement, 1, loss.clone()).commands,
            vec![(
                0,
                PipeCommand::ListenerLoss {
                    track: "TR_cam".into(),
                    link: pipe_link(1),
                    fraction: 51
                }
            )]
        );
        assert_eq!(route(&mut placement, 0, loss.clone()), Routed::up(loss));
        let nack = SfuEvent::RelayNack {
            track_sid: "TR_cam".into(),
            layer: 0,
            seqs: vec![7],
        };
        assert_eq!(route(&mut placement, 1, nack).commands.len(), 1);
    }

    #[test]
    fn sender_reports_on_a_pipe_go_to_its_shard_and_others_up() {
        let mut placement = piped_class();
        let report = |link| SfuEvent::RelaySenderReport {
            link,
            track_sid: "TR_cam".into(),
            ssrc: 5,
            ntp_time: 1,
            rtp_time: 90_000,
            packets: 1,
            octets: 1,
        };
        assert_eq!(
            route(&mut placement, 0, report(pipe_link(1))),
            Routed::to(
                1,
                PipeCommand::SenderReport {
                    track: "TR_cam".into(),
                    ssrc: 5,
                    rtp_time: 90_000
                }
            )
        );
        assert_eq!(route(&mut placement, 0, report(3)), Routed::up(report(3)));
    }

    #[test]
    fn a_track_ends_once_upwards_and_on_every_importer() {
        let mut placement = piped_class();
        let gone = SfuEvent::TrackUnpublished {
            participant: "teacher".into(),
            track_sid: "TR_cam".into(),
        };
        let routed = route(&mut placement, 0, gone.clone());
        assert_eq!(routed.up, Some(gone.clone()));
        assert_eq!(
            routed.commands,
            vec![(
                1,
                PipeCommand::Unpublish {
                    track: "TR_cam".into()
                }
            )]
        );
        // The importer's end follows, and is not news.
        assert_eq!(route(&mut placement, 1, gone.clone()), Routed::default());
        assert_eq!(placement.home("TR_cam"), None);
        assert_eq!(route(&mut placement, 1, gone.clone()), Routed::up(gone));
    }
}
