//! Congestion control end to end, on virtual time: real `rtc` peers send TWCC feedback over an
//! impaired in-memory path ([`aula_sfu::impair::Link`]), the router's estimator reads it and
//! the allocator decides. A trace: a clean path, then a cap below the video's bitrate, then
//! the cap lifted.

use std::collections::HashSet;
use std::time::Duration;

use aula_protocol::TrackKind;
use aula_sfu::impair::Impairment;
use aula_sfu::peer::Feedback;
use aula_sfu::red;
use aula_sfu::sim::{Sim, vp8_payload};

const TICK: Duration = Duration::from_millis(5);

/// A teacher's camera (one layer, about 720 kbit/s: 30 fps of three 1000-byte packets, a
/// keyframe every second) and microphone (50 packets/s of 100 bytes, about 40 kbit/s with
/// headers), from two simulated clients.
struct Class {
    sim: Sim,
    camera: usize,
    microphone: usize,
    /// A student's camera too, sending the same as the teacher's (body bytes 0x80 and up).
    student_camera: Option<usize>,
    frame: u32,
    elapsed: Duration,
    /// Upgrades of the student's allocation (a resumed video counts) that asked the teacher
    /// for the keyframe they need in the same round.
    ups_asking_at_once: u64,
}

impl Class {
    /// With the student's peer negotiating `student_feedback`.
    fn new(with_student_camera: bool, student_feedback: Feedback) -> Self {
        let mut sim = Sim::new();
        if student_feedback == Feedback::RembOnly {
            sim.remb_only.push("student".to_owned());
        }
        Self::on(sim, with_student_camera)
    }

    /// The class on `sim`, set up as its tests need before anyone joins.
    fn on(mut sim: Sim, with_student_camera: bool) -> Self {
        let camera = sim.add_publisher("teacher", TrackKind::Video);
        let microphone = sim.add_publisher("teacher-mic", TrackKind::Audio);
        let student_camera =
            with_student_camera.then(|| sim.add_publisher("pupil", TrackKind::Video));
        let mut class = Self {
            sim,
            camera,
            microphone,
            student_camera,
            frame: 0,
            elapsed: Duration::ZERO,
            ups_asking_at_once: 0,
        };
        class.run(Duration::from_secs(1));
        let tracks = 2 + usize::from(with_student_camera);
        assert_eq!(class.sim.published.len(), tracks, "every track published");
        class.sim.subscribe_to_all_over_a_link("student", 7);
        class
    }

    /// Media for `duration`, in 5 ms ticks.
    fn run(&mut self, duration: Duration) {
        let end = self.elapsed + duration;
        while self.elapsed < end {
            let ms = self.elapsed.as_millis();
            if ms.is_multiple_of(20) {
                self.sim.send(self.microphone, &[0xA5; 100]);
            }
            if ms.is_multiple_of(35) {
                let keyframe = self.frame.is_multiple_of(30);
                let cameras = [(self.camera, 0u8)]
                    .into_iter()
                    .chain(self.student_camera.map(|c| (c, 0x80)));
                for (camera, mark) in cameras {
                    for part in 0..3u8 {
                        let mut body = vec![mark + part; 1000];
                        body[..4].copy_from_slice(&self.frame.to_be_bytes());
                        self.sim
                            .send(camera, &vp8_payload(keyframe && part == 0, &body));
                    }
                }
                self.frame += 1;
            }
            let before = self.ups_and_plis();
            self.sim.step(TICK);
            let after = self.ups_and_plis();
            if after.0 > before.0 && after.1 > before.1 {
                self.ups_asking_at_once += 1;
            }
            self.elapsed += TICK;
        }
    }

    /// Upgrades of allocations and keyframe requests to publishers so far.
    fn ups_and_plis(&self) -> (u64, u64) {
        let metrics = self.sim.router.metrics();
        let ups = metrics.layer_changes.with_label_values(&["up"]).get();
        (ups, metrics.plis_sent.get())
    }

    /// Video packets the student received so far, and audio frames it can play: the SFU
    /// sends the student's audio as RED, so a frame is heard if any packet carried it.
    fn received(&self) -> (usize, usize) {
        let got = &self.sim.client("student").received;
        let video = got.iter().filter(|r| is_video(r)).count();
        let frames: HashSet<u32> = got
            .iter()
            .filter(|r| !is_video(r))
            .flat_map(|r| {
                let blocks = red::blocks(&r.payload).expect("audio comes as RED");
                blocks.map(|b| r.timestamp.wrapping_sub(u32::from(b.timestamp_offset)))
            })
            .collect();
        (video, frames.len())
    }

    /// Runs for `duration`: the video packets and audio frames the student got meanwhile.
    fn received_during(&mut self, duration: Duration) -> (usize, usize) {
        let (video, audio) = self.received();
        self.run(duration);
        let (video_later, audio_later) = self.received();
        (video_later - video, audio_later - audio)
    }

    /// Puts `impairment` on the path from the SFU to the student.
    fn impair(&mut self, impairment: Impairment) {
        let link = self
            .sim
            .downlinks
            .get_mut("student")
            .expect("the student's path");
        link.set(impairment);
    }

    /// The fraction lost of the SFU's latest receiver report on the teacher's microphone.
    fn reported_loss_of_microphone(&self) -> f64 {
        let receptions = self.sim.clients[self.microphone].feedback.receptions();
        receptions
            .first()
            .expect("the SFU reports on the microphone")
            .loss
    }

    /// The teacher's camera's track sid.
    fn camera_sid(&self) -> String {
        let published = self.sim.published.iter().find(|(p, _)| p == "teacher");
        published.expect("the teacher's camera").1.clone()
    }

    /// Video packets of the student's camera the student received so far.
    fn received_from_pupil(&self) -> usize {
        let got = &self.sim.client("student").received;
        got.iter()
            .filter(|r| is_video(r) && r.payload[r.payload.len() - 1] >= 0x80)
            .count()
    }
}

/// Video packets start with the VP8 descriptor `vp8_payload` writes; audio comes as RED,
/// whose first byte is a block header (or the primary's payload type), of any size.
fn is_video(packet: &aula_sfu::sim::Received) -> bool {
    packet.payload.first() == Some(&0x10)
}

#[test]
fn video_pauses_under_a_cap_audio_goes_on_and_video_comes_back_when_it_lifts() {
    let mut class = Class::new(false, Feedback::Twcc);

    // A clean path: both flow.
    class.run(Duration::from_secs(5));
    let (video, audio) = class.received();
    assert!(
        video > 200 && audio > 150,
        "clean path: {video} video packets, {audio} audio frames"
    );

    // The path drops to 300 kbit/s, below the camera's 720: the video is paused within two
    // seconds, and every audio frame can still be played. The SFU probes now and then with
    // copies of the last video packets, which the path refuses; those probes are short, and
    // the audio's redundancy (RED) covers what they cost it.
    let cap = Impairment {
        rate_bps: Some(300_000),
        ..Impairment::default()
    };
    class.impair(cap);
    class.run(Duration::from_secs(2));
    let (video, audio) = class.received_during(Duration::from_secs(10));
    println!(
        "under the cap: {video} video packets (860 on a clean path), {audio} of 500 audio frames"
    );
    assert!(
        video < 150,
        "video mostly paused under the cap: {video} packets in 10 s"
    );
    assert!(
        audio >= 490,
        "audio whole under the cap: {audio} of 500 frames"
    );
    let (video_later, _) = class.received();
    let camera_sid = class.camera_sid();
    assert_eq!(
        class.sim.stream_states,
        [("student".to_owned(), camera_sid.clone(), true)],
        "the student is told its video is paused"
    );

    // The cap is lifted: video resumes within fifteen seconds (the estimate climbs back from
    // the cap, a probe passes, then a keyframe; 2 s in this trace), and keeps flowing.
    class.impair(Impairment::default());
    let mut resumed_after = None;
    for second in 1..=15 {
        class.run(Duration::from_secs(1));
        if class.received().0 - video_later > 50 {
            resumed_after = Some(second);
            break;
        }
    }
    println!("video resumed within {resumed_after:?} s of the cap lifting");
    assert!(
        resumed_after.is_some(),
        "video back within 15 s of the cap lifting"
    );
    let (before, _) = class.received();
    class.run(Duration::from_secs(3));
    assert!(
        class.received().0 - before > 200,
        "and it keeps flowing: {} packets in 3 s",
        class.received().0 - before
    );
    assert_eq!(
        class.sim.stream_states.last(),
        Some(&("student".to_owned(), camera_sid, false)),
        "and that it resumed"
    );
    let down = class
        .sim
        .router
        .metrics()
        .layer_changes
        .with_label_values(&["down"])
        .get();
    let up = class
        .sim
        .router
        .metrics()
        .layer_changes
        .with_label_values(&["up"])
        .get();
    assert!(
        down >= 1 && up >= 1,
        "the allocation went down ({down}) and up ({up})"
    );
    // Resuming needs a keyframe, asked of the teacher in the same round as the decision
    // (not at the next round, 100 ms later).
    assert!(
        class.ups_asking_at_once >= 1,
        "the keyframe for a resumed video was asked for with the decision"
    );
}

#[test]
fn when_one_camera_fits_it_is_the_teachers() {
    let mut class = Class::new(true, Feedback::Twcc);
    class.sim.router.set_staff("teacher", true);
    // A new subscriber starts at a 1 Mbit/s estimate (one camera), and the estimate grows
    // until both fit.
    class.run(Duration::from_secs(8));
    let (video, _) = class.received();
    let pupil = class.received_from_pupil();
    class.run(Duration::from_secs(3));
    let teacher = (class.received().0 - class.received_from_pupil()) - (video - pupil);
    let pupil = class.received_from_pupil() - pupil;
    assert!(
        pupil > 200 && teacher > 200,
        "both cameras on a clean path: teacher {teacher}, pupil {pupil} of 258"
    );

    // 1.4 Mbit/s carries the audio (about 170 kbit/s with its redundancy) and one 760 kbit/s
    // camera, with room for the resends that follow the overflow, but not two cameras.
    let cap = Impairment {
        rate_bps: Some(1_400_000),
        ..Impairment::default()
    };
    class.impair(cap);
    class.run(Duration::from_secs(3));
    let (video, audio) = class.received();
    let pupil = class.received_from_pupil();
    class.run(Duration::from_secs(10));
    let (video_later, audio_later) = class.received();
    let pupil_later = class.received_from_pupil();
    let teacher = (video_later - pupil_later) - (video - pupil);
    println!(
        "under the cap: teacher {teacher}, pupil {} video packets, {} audio frames",
        pupil_later - pupil,
        audio_later - audio
    );
    assert!(
        teacher > 700,
        "the teacher's camera keeps flowing: {teacher} of 860"
    );
    assert!(
        pupil_later - pupil < 150,
        "the other camera is mostly paused: {}",
        pupil_later - pupil
    );
    assert!(
        audio_later - audio >= 490,
        "audio whole: {}",
        audio_later - audio
    );
}

#[test]
fn without_twcc_the_students_remb_decides() {
    let mut class = Class::new(false, Feedback::RembOnly);
    // No feedback of any kind yet: no estimate, and the best layers flow.
    class.run(Duration::from_secs(3));
    let (video, audio) = class.received();
    assert!(
        video > 100 && audio > 100,
        "before any REMB: {video} video packets, {audio} audio frames"
    );

    let remb = |class: &mut Class, bps: f32, seconds: u32| {
        for _ in 0..seconds * 4 {
            class.sim.send_remb("student", bps);
            class.run(Duration::from_millis(250));
        }
    };
    // The student says it can take 300 kbit/s, below the camera's 720 (the path itself is
    // clean, so only the REMB can say so): the video pauses, the audio goes on.
    remb(&mut class, 300_000.0, 2);
    let (video, audio) = class.received();
    remb(&mut class, 300_000.0, 5);
    let (video_later, audio_later) = class.received();
    assert!(
        video_later - video < 20,
        "video paused at a 300 kbit/s REMB: {} packets in 5 s",
        video_later - video
    );
    assert!(
        audio_later - audio >= 245,
        "audio whole: {} of 250 frames",
        audio_later - audio
    );

    // It says 3 Mbit/s: the video comes back.
    remb(&mut class, 3_000_000.0, 8);
    let resumed = class.received().0 - video_later;
    assert!(
        resumed > 200,
        "video back at a 3 Mbit/s REMB: {resumed} packets in 8 s"
    );
}

/// A student behind random loss is reported "poor" (to itself and to the staff), from what
/// its transport-wide feedback says was lost: its receiver reports count repaired packets as
/// received and said nothing was.
#[test]
fn a_student_behind_heavy_loss_is_reported_poor() {
    use aula_sfu::quality::ConnectionQuality;
    let mut class = Class::new(false, Feedback::Twcc);
    class.run(Duration::from_secs(3));
    let student_quality = |class: &Class| {
        class
            .sim
            .qualities
            .iter()
            .rev()
            .find(|(p, ..)| p == "student")
            .map(|(_, q, loss)| (*q, *loss))
    };
    assert!(
        student_quality(&class).is_none_or(|(q, _)| q != ConnectionQuality::Poor),
        "a clean link"
    );
    let lossy = Impairment {
        loss: 0.2,
        ..Impairment::default()
    };
    class.impair(lossy);
    class.run(Duration::from_secs(6));
    let (quality, loss) = student_quality(&class).expect("a report");
    assert_eq!(quality, ConnectionQuality::Poor);
    // The report carries the figure behind the level, for the teacher's tooltip.
    assert!((0.1..0.3).contains(&loss), "loss {loss}");
}

/// At 75 % loss no video frame would get through whole: the student's video is paused, it is
/// told so, and what its link carries is the audio, whose redundancy (RED, as deep as the
/// loss asks) brings most frames through. Once the loss is gone, video comes back.
#[test]
fn at_extreme_loss_video_pauses_for_the_audio_and_returns_when_the_loss_goes() {
    let mut class = Class::new(false, Feedback::Twcc);
    class.run(Duration::from_secs(3));
    let camera_sid = class.camera_sid();
    let extreme = Impairment {
        loss: 0.75,
        ..Impairment::default()
    };
    class.impair(extreme);
    class.run(Duration::from_secs(4));
    assert_eq!(
        class.sim.stream_states,
        [("student".to_owned(), camera_sid.clone(), true)],
        "the video is paused within 4 s, and the student told"
    );
    let (video, audio) = class.received_during(Duration::from_secs(10));
    println!("at 75 % loss: {video} video packets, {audio} of 500 audio frames");
    // Probes may still copy a few video packets.
    assert!(video < 50, "video paused: {video} packets in 10 s");
    assert!(audio >= 400, "most audio frames arrive: {audio} of 500");
    let (video_later, _) = class.received();

    class.impair(Impairment::default());
    class.run(Duration::from_secs(8));
    let (video_back, _) = class.received();
    assert!(
        video_back - video_later > 200,
        "video back once the loss is gone: {} packets in 8 s",
        video_back - video_later
    );
    assert_eq!(
        class.sim.stream_states.last(),
        Some(&("student".to_owned(), camera_sid, false)),
        "and the student told"
    );
}

/// On the worst links each audio packet goes out a second time, 10 ms after the first (see
/// `red::Redundancy`): at 85 % loss a packet then arrives 28 % of the time instead of 15 %, and
/// more often one of the copies of a frame arrives before a jitter buffer gives up on it.
#[test]
fn at_the_worst_loss_each_audio_packet_is_sent_twice() {
    let mut class = Class::new(false, Feedback::Twcc);
    class.run(Duration::from_secs(3));
    let audio_packets = |class: &Class| -> HashSet<u16> {
        let got = &class.sim.client("student").received;
        got.iter().filter(|r| !is_video(r)).map(|r| r.seq).collect()
    };
    let clean = audio_packets(&class).len();
    assert!(
        clean >= 120,
        "a clean link carries the audio: {clean} of 150 packets"
    );
    class.impair(Impairment {
        loss: 0.85,
        ..Impairment::default()
    });
    // The loss is measured and RED goes to its deepest within a few seconds.
    class.run(Duration::from_secs(5));
    let before = audio_packets(&class).len();
    class.run(Duration::from_secs(10));
    let arrived = audio_packets(&class).len() - before;
    println!("at 85 % loss: {arrived} of 500 audio packets arrived");
    assert!(
        (110..200).contains(&arrived),
        "about 28 % of 500 packets arrive when each goes twice (15 % when once): {arrived}"
    );
}

/// A student whose browser has no RED (Firefox, another WebRTC stack) gets no repeated frames
/// from the SFU; its repair is the teacher's own Opus in-band FEC, which the teacher's browser
/// adds when its receiver reports show loss. The SFU's reports on the teacher's microphone
/// carry that student's loss; a lossy student with RED is repaired by the SFU and is not
/// passed on. The cumulative count stays the SFU's own, for the teacher's congestion control.
#[test]
fn a_listener_without_red_has_its_loss_reported_to_the_teachers_microphone() {
    for with_red in [false, true] {
        let mut sim = Sim::new();
        if !with_red {
            sim.no_red.push("student".to_owned());
        }
        let mut class = Class::on(sim, false);
        class.run(Duration::from_secs(3));
        let clean = class.reported_loss_of_microphone();
        assert!(clean < 0.01, "a clean link: {clean}");
        class.impair(Impairment {
            loss: 0.2,
            ..Impairment::default()
        });
        class.run(Duration::from_secs(8));
        let reported = class.reported_loss_of_microphone();
        println!("a student with RED: {with_red}; reported to the teacher: {reported:.3}");
        if with_red {
            assert!(reported < 0.01, "RED repairs it; nothing told: {reported}");
        } else {
            assert!(
                (0.1..0.3).contains(&reported),
                "the student's 20 % told: {reported}"
            );
        }
        class.impair(Impairment::default());
        class.run(Duration::from_secs(15));
        let reported = class.reported_loss_of_microphone();
        assert!(reported < 0.01, "the loss gone, nothing told: {reported}");
    }
}

/// The round trip to a student comes from its receiver reports, which echo the SFU's sender
/// reports (`rtc` 0.21 leaves its own figures at zero; the tap reads the reports): a path
/// that delays what the SFU sends by 60 ms measures a round trip of about 60 ms.
#[test]
fn a_students_round_trip_is_measured_from_its_reports() {
    let mut class = Class::new(false, Feedback::Twcc);
    class.impair(Impairment {
        delay: Duration::from_millis(60),
        ..Impairment::default()
    });
    class.run(Duration::from_secs(10));
    let rtt = &class.sim.router.metrics().peer_rtt;
    let (count, sum) = (rtt.get_sample_count(), rtt.get_sample_sum());
    assert!(count > 0, "round trips measured");
    let mean = sum / count as f64;
    assert!((0.055..0.08).contains(&mean), "round trip {mean:.3} s");
}
