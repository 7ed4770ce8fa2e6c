//! A class spread over two router shards (issue 15, see `aula_sfu::shard`), on virtual time:
//! two routers, each with its own simulated clients, a track piped from its home shard into
//! the other exactly as the worker threads pipe it (relay transmits handed over by
//! [`PipeTable`], events routed by [`pipes::route`] and applied with `PipeCommand::apply`).

use std::collections::HashSet;
use std::time::Duration;

use aula_protocol::TrackKind;
use aula_sfu::impair::{Impairment, Link};
use aula_sfu::red;
use aula_sfu::shard::pipes::{self, PipeTable};
use aula_sfu::shard::placement::{Pipe, Placement, pipe_link};
use aula_sfu::sim::{Sim, vp8_payload};

const STEP: Duration = Duration::from_millis(5);

struct Shards {
    sims: Vec<Sim>,
    placement: Placement,
    pipes: Vec<PipeTable>,
}

impl Shards {
    fn new() -> Self {
        Self {
            sims: vec![Sim::new(), Sim::new()],
            placement: Placement::new(2),
            pipes: vec![PipeTable::default(), PipeTable::default()],
        }
    }

    /// Every shard steps; then pipe packets and pipe commands go where they belong.
    fn step(&mut self, dt: Duration) {
        for sim in &mut self.sims {
            sim.step(dt);
        }
        for from in 0..self.sims.len() {
            while let Some(transmit) = self.sims[from].router.poll_relay_transmit() {
                if let Some((to, track, layer)) = self.pipes[from].destination(&transmit) {
                    let (track, sim) = (track.clone(), &mut self.sims[to]);
                    let now = sim.now;
                    sim.router.relay_packet(now, &track, layer, &transmit.data);
                }
            }
        }
        for from in 0..self.sims.len() {
            for event in std::mem::take(&mut self.sims[from].relay_events) {
                let routed = pipes::route(&mut self.placement, from, event);
                assert!(routed.up.is_none() || from == 0, "{:?}", routed.up);
                for (to, command) in routed.commands {
                    let sim = &mut self.sims[to];
                    let now = sim.now;
                    command.apply(&mut sim.router, now);
                }
            }
        }
    }

    /// Subscribes a participant where the placement puts it, opening the pipe first if
    /// needed (as `SfuHandle::subscribe` does); returns its shard.
    fn subscribe(&mut self, participant: &str, track: &str) -> usize {
        let (shard, pipe) = self.placement.place_subscriber(participant, track);
        if let Some(Pipe { from, to, index }) = pipe {
            let now = self.sims[from].now;
            let exported = self.sims[from]
                .router
                .relay_export(now, track, pipe_link(to), index)
                .expect("exported");
            self.pipes[from].insert(pipe_link(to), exported.index, track.to_owned());
            self.sims[to]
                .router
                .relay_import(exported)
                .expect("imported");
        }
        self.sims[shard].subscribe(participant, track);
        shard
    }

    fn consumers(&self) -> usize {
        self.sims.iter().map(|s| s.router.stats().consumers).sum()
    }
}

/// The teacher's published track on shard 0, once its first packet arrived.
fn publish(shards: &mut Shards, teacher: usize, first: &[u8]) -> String {
    assert_eq!(shards.placement.place("teacher"), 0);
    for _ in 0..500 {
        if let Some((_, sid)) = shards.sims[0].published.first() {
            let sid = sid.clone();
            shards.placement.track_at(&sid, 0);
            return sid;
        }
        shards.sims[0].send(teacher, first);
        shards.step(STEP);
    }
    panic!("the SFU never published the track");
}

/// The audio frames a student got since `skip`, by their primary RED block, without the
/// warm-up ones.
fn frames(sim: &Sim, student: &str, skip: usize) -> Vec<Vec<u8>> {
    sim.client(student).received[skip..]
        .iter()
        .map(|r| {
            red::primary(&r.payload)
                .expect("audio comes as RED")
                .to_vec()
        })
        .filter(|frame| frame != b"warm-up")
        .collect()
}

/// The harness moves pipe packets after each step: the last ones arrive a step or two later.
fn settle(shards: &mut Shards) {
    for _ in 0..5 {
        shards.step(Duration::from_millis(20));
    }
}

fn assert_in_order_without_gaps(sim: &Sim, student: &str, skip: usize) {
    let got = &sim.client(student).received[skip..];
    for pair in got.windows(2) {
        assert_eq!(pair[1].ssrc, pair[0].ssrc, "{student}: one SSRC");
        assert_eq!(
            pair[1].seq,
            pair[0].seq.wrapping_add(1),
            "{student}: sequence gap"
        );
    }
}

#[test]
fn a_class_spread_over_two_shards_gets_every_packet_once_in_order_and_a_mover_continues() {
    let mut shards = Shards::new();
    let teacher = shards.sims[0].add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut shards, teacher, b"warm-up");
    // s1 and s2 are placed first, so they land on the other shard and get the track piped.
    assert_eq!(shards.placement.place("s1"), 1);
    assert_eq!(shards.placement.place("s0"), 0);
    assert_eq!(shards.placement.place("s2"), 1);
    assert_eq!(shards.subscribe("s0", &track), 0);
    assert_eq!(shards.subscribe("s1", &track), 1);
    assert_eq!(shards.subscribe("s2", &track), 1);
    for _ in 0..2_000 {
        if shards.consumers() == 3 {
            break;
        }
        shards.step(STEP);
    }
    assert_eq!(shards.consumers(), 3, "every subscriber connected");
    for _ in 0..100 {
        shards.sims[0].send(teacher, b"warm-up");
        shards.step(Duration::from_millis(20));
    }
    let at = |shards: &Shards, s: &str, shard: usize| shards.sims[shard].client(s).received.len();
    let baseline = [(0, "s0"), (1, "s1"), (1, "s2")].map(|(k, s)| (k, s, at(&shards, s, k)));
    assert!(
        baseline.iter().all(|(_, _, n)| *n > 0),
        "audio flowed through the pipe: {baseline:?}"
    );

    for i in 0..100u32 {
        shards.sims[0].send(teacher, format!("frame-{i}").as_bytes());
        shards.step(Duration::from_millis(20));
    }
    settle(&mut shards);
    let expected: Vec<Vec<u8>> = (0..100u32)
        .map(|i| format!("frame-{i}").into_bytes())
        .collect();
    for (shard, student, skip) in baseline {
        let sim = &shards.sims[shard];
        assert_eq!(frames(sim, student, skip), expected, "{student} on {shard}");
        assert_in_order_without_gaps(sim, student, skip);
    }
    assert_eq!(
        shards.sims[1].router.metrics().relay_nacked.get(),
        0,
        "nothing lost in the pipe"
    );

    // s0 leaves shard 0 and comes back when shard 1 is the lighter one (busier ones came).
    let now = shards.sims[0].now;
    shards.sims[0].router.remove_participant(now, "s0");
    assert_eq!(shards.placement.remove("s0"), Some(0));
    assert_eq!(shards.placement.place("busy"), 0);
    assert_eq!(shards.placement.place("busy-2"), 0);
    assert_eq!(shards.placement.place("s0"), 1, "now the lighter one");
    assert_eq!(
        shards.subscribe("s0", &track),
        1,
        "rejoined on the other shard"
    );
    for i in 0..200u32 {
        shards.sims[0].send(teacher, format!("again-{i}").as_bytes());
        shards.step(Duration::from_millis(20));
    }
    settle(&mut shards);
    let got = frames(&shards.sims[1], "s0", 0);
    let first = got
        .iter()
        .position(|f| f.starts_with(b"again-"))
        .expect("the mover gets audio on its new shard");
    let from: u32 = std::str::from_utf8(&got[first][6..])
        .unwrap()
        .parse()
        .unwrap();
    let continued: Vec<Vec<u8>> = (from..200)
        .map(|i| format!("again-{i}").into_bytes())
        .collect();
    assert_eq!(got[first..], continued[..], "every frame since it rejoined");
    assert_in_order_without_gaps(&shards.sims[1], "s0", 0);
}

/// A teacher's camera (about 720 kbit/s: 30 fps of three 1,000-byte packets, a keyframe every
/// second) and microphone on shard 0; two students on shard 1, one of them behind a 150
/// kbit/s cap. Shard 1 runs each student's congestion control: the capped one's video pauses
/// while its audio goes on, and the other's video is untouched.
#[test]
fn each_shard_runs_its_own_subscribers_congestion_control() {
    let mut shards = Shards::new();
    let camera = shards.sims[0].add_publisher("teacher", TrackKind::Video);
    let microphone = shards.sims[0].add_publisher("teacher-mic", TrackKind::Audio);
    let camera_sid = publish(&mut shards, camera, &vp8_payload(true, b"warm-up"));
    let mut mic_sid = None;
    for _ in 0..200 {
        shards.sims[0].send(microphone, &[0xA5; 100]);
        shards.step(STEP);
        mic_sid = shards.sims[0]
            .published
            .iter()
            .find(|(p, _)| p == "teacher-mic")
            .map(|(_, sid)| sid.clone());
        if mic_sid.is_some() {
            break;
        }
    }
    let mic_sid = mic_sid.expect("the microphone published");
    shards.placement.track_at(&mic_sid, 0);
    assert_eq!(shards.placement.place("calm"), 1);
    assert_eq!(shards.placement.place("teacher-mic"), 0);
    assert_eq!(shards.placement.place("capped"), 1);
    for (i, student) in ["calm", "capped"].into_iter().enumerate() {
        assert_eq!(shards.subscribe(student, &camera_sid), 1);
        assert_eq!(shards.subscribe(student, &mic_sid), 1);
        let link = Link::new(Impairment::default(), 7 + i as u64);
        shards.sims[1].downlinks.insert(student.to_owned(), link);
    }
    let mut frame = 0u32;
    let mut run = |shards: &mut Shards, duration: Duration| {
        let mut elapsed = Duration::ZERO;
        while elapsed < duration {
            let ms = elapsed.as_millis();
            if ms.is_multiple_of(20) {
                shards.sims[0].send(microphone, &[0xA5; 100]);
            }
            if ms.is_multiple_of(35) {
                for part in 0..3u8 {
                    let mut body = vec![part; 1000];
                    body[..4].copy_from_slice(&frame.to_be_bytes());
                    let keyframe = frame.is_multiple_of(30) && part == 0;
                    shards.sims[0].send(camera, &vp8_payload(keyframe, &body));
                }
                frame += 1;
            }
            shards.step(STEP);
            elapsed += STEP;
        }
    };
    let received = |shards: &Shards, student: &str| {
        let got = &shards.sims[1].client(student).received;
        let video = got.iter().filter(|r| r.payload.len() > 900).count();
        let audio: HashSet<u32> = got
            .iter()
            .filter(|r| r.payload.len() <= 900)
            .map(|r| r.timestamp)
            .collect();
        (video, audio.len())
    };
    run(&mut shards, Duration::from_secs(4));
    let before = [received(&shards, "calm"), received(&shards, "capped")];
    assert!(
        before
            .iter()
            .all(|(video, audio)| *video > 100 && *audio > 100),
        "both students get both tracks through the pipe: {before:?}"
    );

    shards.sims[1]
        .downlinks
        .get_mut("capped")
        .expect("its path")
        .set(Impairment {
            rate_bps: Some(150_000),
            ..Impairment::default()
        });
    run(&mut shards, Duration::from_secs(10));
    let middle = [received(&shards, "calm"), received(&shards, "capped")];
    run(&mut shards, Duration::from_secs(5));
    let after = [received(&shards, "calm"), received(&shards, "capped")];
    let calm_video = after[0].0 - middle[0].0;
    let capped_video = after[1].0 - middle[1].0;
    let capped_audio = after[1].1 - middle[1].1;
    println!(
        "last 5 s: calm {calm_video} video packets, capped {capped_video} video packets and {capped_audio} audio packets"
    );
    assert!(
        calm_video > 350,
        "the calm student's video goes on: {calm_video}"
    );
    assert!(
        capped_video < 20,
        "the capped student's video paused: {capped_video}"
    );
    assert!(
        capped_audio > 200,
        "the capped student's audio goes on: {capped_audio}"
    );
    assert!(
        shards.sims[1]
            .stream_states
            .iter()
            .any(|(s, t, paused)| s == "capped" && *t == camera_sid && *paused),
        "the pause was told: {:?}",
        shards.sims[1].stream_states
    );
}

/// A student without RED (Firefox) on the other shard than the teacher's microphone counts in
/// what the teacher is told of its listeners' loss (for Opus in-band FEC, see
/// `Router::report_listeners_loss`): the importing shard reports it up the pipe.
#[test]
fn a_listener_without_red_on_another_shard_has_its_loss_reported_to_the_microphone() {
    let mut shards = Shards::new();
    let microphone = shards.sims[0].add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut shards, microphone, b"warm-up");
    assert_eq!(shards.placement.place("far"), 1);
    shards.sims[1].no_red.push("far".to_owned());
    assert_eq!(shards.subscribe("far", &track), 1);
    let link = Link::new(Impairment::default(), 11);
    shards.sims[1].downlinks.insert("far".to_owned(), link);
    let run = |shards: &mut Shards, duration: Duration| {
        for _ in 0..duration.as_millis() / 20 {
            shards.sims[0].send(microphone, &[0xA5; 100]);
            for _ in 0..4 {
                shards.step(STEP);
            }
        }
    };
    let reported = |shards: &Shards| {
        let receptions = shards.sims[0].clients[microphone].feedback.receptions();
        receptions.first().expect("reports on the microphone").loss
    };
    run(&mut shards, Duration::from_secs(3));
    assert!(
        shards.sims[1].client("far").received.len() > 100,
        "the audio reaches the other shard"
    );
    assert!(
        reported(&shards) < 0.01,
        "a clean link: {}",
        reported(&shards)
    );

    shards.sims[1]
        .downlinks
        .get_mut("far")
        .expect("its path")
        .set(Impairment {
            loss: 0.2,
            ..Impairment::default()
        });
    run(&mut shards, Duration::from_secs(8));
    let lossy = reported(&shards);
    println!("the far student's 20 % loss, reported to the teacher: {lossy:.3}");
    assert!((0.1..0.3).contains(&lossy), "told across the pipe: {lossy}");

    shards.sims[1]
        .downlinks
        .get_mut("far")
        .expect("its path")
        .set(Impairment::default());
    run(&mut shards, Duration::from_secs(15));
    assert!(
        reported(&shards) < 0.01,
        "the loss gone, nothing told: {}",
        reported(&shards)
    );
}
