//! Who joins which room, publishing and subscribing what, for each scenario.

use clap::ValueEnum;
use serde::Serialize;

use crate::media::source::{MediaPlan, SIMULCAST_LAYERS, SINGLE_LAYER};
use crate::signal::{Access, ParticipantSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// One teacher publishing audio + 3-layer simulcast video, N students subscribing.
    Class,
    /// N participants, each publishing audio + one video layer and subscribing to all others.
    Meeting,
    /// P rooms of two, each side publishing audio + video and subscribing to the other.
    Support,
    /// A class over two nodes of a cluster: the teacher on the room's origin (`--url`), the
    /// students joining through the origin with the relay's region in their tokens
    /// (`--relay-region`), so that their media is on the relay node (`--relay-url`).
    Relay,
}

/// Sizes and media settings of a run.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub subscribers: usize,
    pub participants: usize,
    pub pairs: usize,
    pub fps: u32,
    pub keyframe_interval: u32,
    /// The students' token region (relay).
    pub student_region: Option<String>,
    /// The students' own path (class, relay).
    pub student_access: Option<Access>,
}

/// The participants of a run, in join order.
#[derive(Debug, Clone)]
pub struct Cast {
    /// Join first and must be publishing before the others join (the class teacher).
    pub first: Vec<ParticipantSpec>,
    pub rest: Vec<ParticipantSpec>,
}

impl Cast {
    pub fn all(&self) -> impl Iterator<Item = &ParticipantSpec> {
        self.first.iter().chain(&self.rest)
    }

    /// Participants that receive media (each should see a first packet).
    pub fn subscribers(&self) -> usize {
        self.all().filter(|p| p.subscribe).count()
    }

    /// Peer connections in all: one per publishing and one per subscribing participant.
    pub fn peers(&self) -> usize {
        self.all()
            .map(|p| usize::from(p.publish.is_some()) + usize::from(p.subscribe))
            .sum()
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Class => "class",
            Scenario::Meeting => "meeting",
            Scenario::Support => "support",
            Scenario::Relay => "relay",
        }
    }
}

/// `run_id` keeps rooms of repeated runs on one server apart.
pub fn cast(scenario: Scenario, sizes: &Sizes, run_id: &str) -> Cast {
    let plan = |layers: &[_]| MediaPlan {
        audio: true,
        video_layers: layers.to_vec(),
        fps: sizes.fps,
        keyframe_interval: sizes.keyframe_interval,
    };
    let spec =
        |room: String, identity: String, publish: Option<MediaPlan>, subscribe| ParticipantSpec {
            room,
            identity,
            publish,
            subscribe,
            region: None,
            access: None,
        };
    match scenario {
        Scenario::Class | Scenario::Relay => {
            let room = format!("lt-{run_id}-{}", scenario.name());
            Cast {
                first: vec![spec(
                    room.clone(),
                    "teacher".into(),
                    Some(plan(&SIMULCAST_LAYERS)),
                    false,
                )],
                rest: (0..sizes.subscribers)
                    .map(|i| ParticipantSpec {
                        region: match scenario {
                            Scenario::Relay => sizes.student_region.clone(),
                            _ => None,
                        },
                        access: sizes.student_access,
                        ..spec(room.clone(), format!("student-{i}"), None, true)
                    })
                    .collect(),
            }
        }
        Scenario::Meeting => {
            let room = format!("lt-{run_id}-meeting");
            Cast {
                first: Vec::new(),
                rest: (0..sizes.participants)
                    .map(|i| {
                        let publish = Some(plan(&[SINGLE_LAYER]));
                        spec(room.clone(), format!("member-{i}"), publish, true)
                    })
                    .collect(),
            }
        }
        Scenario::Support => Cast {
            first: Vec::new(),
            rest: (0..sizes.pairs)
                .flat_map(|pair| {
                    let room = format!("lt-{run_id}-support-{pair}");
                    ["agent", "client"].map(|side| {
                        let publish = Some(plan(&[SINGLE_LAYER]));
                        spec(room.clone(), format!("{side}-{pair}"), publish, true)
                    })
                })
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Sizes {
        Sizes {
            subscribers: 5,
            participants: 4,
            pairs: 3,
            fps: 30,
            keyframe_interval: 90,
            student_region: Some("asia".into()),
            student_access: None,
        }
    }

    #[test]
    fn class_has_one_simulcast_publisher() {
        let cast = cast(Scenario::Class, &sizes(), "x");
        assert_eq!(cast.first.len(), 1);
        assert!(cast.first[0].publish.as_ref().unwrap().simulcast());
        assert!(!cast.first[0].subscribe);
        assert_eq!((cast.subscribers(), cast.peers()), (5, 6));
    }

    #[test]
    fn relay_students_carry_the_region_and_the_teacher_does_not() {
        let access = Access {
            node: "127.0.0.1:17880".parse().unwrap(),
            delay_ms: 20,
            loss: 0.0,
        };
        let sizes = Sizes {
            student_access: Some(access),
            ..sizes()
        };
        let relay = cast(Scenario::Relay, &sizes, "x");
        assert_eq!((relay.subscribers(), relay.peers()), (5, 6));
        assert_eq!(
            (relay.first[0].region.as_deref(), relay.first[0].access),
            (None, None)
        );
        for student in &relay.rest {
            assert_eq!(student.region.as_deref(), Some("asia"));
            assert_eq!(student.access, Some(access));
        }
        // A class: same students, no region (straight to the node), same access path.
        let class = cast(Scenario::Class, &sizes, "x");
        assert!(
            class
                .rest
                .iter()
                .all(|s| s.region.is_none() && s.access == Some(access))
        );
    }

    #[test]
    fn meeting_and_support_publish_and_subscribe() {
        let meeting = cast(Scenario::Meeting, &sizes(), "x");
        assert_eq!((meeting.subscribers(), meeting.peers()), (4, 8));
        let support = cast(Scenario::Support, &sizes(), "x");
        assert_eq!((support.subscribers(), support.peers()), (6, 12));
        let rooms: std::collections::HashSet<_> = support.all().map(|p| &p.room).collect();
        assert_eq!(rooms.len(), 3);
    }
}
