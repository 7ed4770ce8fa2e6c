//! Temporal layers end to end, on virtual time (issue 16, item 1): a teacher's camera sent as
//! Chromium sends one layer of L1T3 (TIDs 0, 2, 1, 2; sync frames; picture IDs and TL0PICIDX),
//! a student behind a 200 kbit/s cap. Without temporal layers the camera (about 150 kbit/s,
//! as Chromium's lowest simulcast layer) does not fit beside the audio (about 100 kbit/s with
//! RED, as from Chromium) and is paused; with them the student gets a lower frame rate, and what it
//! receives stays a stream its decoder takes as whole.

use std::collections::HashSet;
use std::time::Duration;

use aula_protocol::TrackKind;
use aula_sfu::impair::Impairment;
use aula_sfu::sim::Sim;

const TICK: Duration = Duration::from_millis(5);
/// One packet a frame (the simulator gives every packet its own timestamp).
const FRAME_BYTES: usize = 600;

struct Class {
    sim: Sim,
    camera: usize,
    microphone: usize,
    frame: u32,
    elapsed: Duration,
}

/// A VP8 packet that is a whole frame of an L1T3 stream: X, I (15-bit picture ID), L
/// (TL0PICIDX), T (TID, Y), then the VP8 payload header's first byte (keyframe or not).
fn l1t3_frame(frame: u32) -> Vec<u8> {
    let keyframe = frame.is_multiple_of(60);
    let tid = [0u8, 2, 1, 2][(frame % 4) as usize];
    let sync = keyframe || matches!(frame % 8, 1 | 2);
    let picture_id = (frame & 0x7fff) as u16;
    let mut payload = vec![
        0x90,
        0xe0,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        (frame / 4) as u8,
        tid << 6 | u8::from(sync) << 5,
        if keyframe { 0x00 } else { 0x01 },
    ];
    payload.resize(FRAME_BYTES, 0x55);
    payload
}

/// What a received camera packet says: picture ID, TL0PICIDX, TID.
fn descriptor(payload: &[u8]) -> (u16, u8, u8) {
    let picture_id = u16::from_be_bytes([payload[2], payload[3]]) & 0x7fff;
    (picture_id, payload[4], payload[5] >> 6)
}

impl Class {
    fn new() -> Self {
        let mut sim = Sim::new();
        let camera = sim.add_publisher("teacher", TrackKind::Video);
        let microphone = sim.add_publisher("teacher-mic", TrackKind::Audio);
        let mut class = Self {
            sim,
            camera,
            microphone,
            frame: 0,
            elapsed: Duration::ZERO,
        };
        class.run(Duration::from_secs(1));
        class.sim.subscribe_to_all_over_a_link("student", 7);
        class
    }

    fn run(&mut self, duration: Duration) {
        let end = self.elapsed + duration;
        while self.elapsed < end {
            let ms = self.elapsed.as_millis();
            if ms.is_multiple_of(20) {
                // A 24 kbit/s Opus frame of speech.
                self.sim.send(self.microphone, &[0xA5; 60]);
            }
            if ms.is_multiple_of(35) {
                self.sim.send(self.camera, &l1t3_frame(self.frame));
                self.frame += 1;
            }
            self.sim.step(TICK);
            self.elapsed += TICK;
        }
    }

    /// The camera packets (sequence number, payload) the student received so far, each once
    /// (the SFU probes the path with copies of packets already sent).
    fn camera(&self) -> Vec<(u16, Vec<u8>)> {
        let got = &self.sim.client("student").received;
        let mut seen = HashSet::new();
        got.iter()
            .filter(|r| r.payload.len() == FRAME_BYTES && seen.insert(r.seq))
            .map(|r| (r.seq, r.payload.to_vec()))
            .collect()
    }
}

#[test]
fn a_200k_link_gets_a_lower_frame_rate_instead_of_a_paused_video() {
    let mut class = Class::new();
    class.run(Duration::from_secs(5));
    let clean = class.camera().len();
    assert!(clean > 100, "clean path: {clean} frames");

    class
        .sim
        .downlinks
        .get_mut("student")
        .unwrap()
        .set(Impairment {
            rate_bps: Some(200_000),
            ..Impairment::default()
        });
    class.run(Duration::from_secs(3));
    let settled = class.camera().len();
    class.run(Duration::from_secs(10));
    let got = class.camera();
    let under_cap = &got[settled..];
    let tids: Vec<u8> = under_cap.iter().map(|(_, p)| descriptor(p).2).collect();
    let per_tid = |t: u8| tids.iter().filter(|&&x| x == t).count();
    println!(
        "under a 200 kbit/s cap: {} frames in 10 s (TID 0/1/2: {}/{}/{}); streams paused: {:?}",
        under_cap.len(),
        per_tid(0),
        per_tid(1),
        per_tid(2),
        class.sim.stream_states
    );
    // 28.6 fps sent; a quarter of them (TID 0) cost ~37 kbit/s, half ~73 kbit/s.
    assert!(
        under_cap.len() >= 50,
        "a steady lower frame rate: {} frames in 10 s",
        under_cap.len()
    );
    assert!(
        per_tid(2) * 10 < under_cap.len(),
        "the top frame rate is dropped"
    );
    assert!(
        class.sim.stream_states.iter().all(|(_, _, paused)| !paused),
        "never paused"
    );

    // What a decoder checks: consecutive sequence numbers and picture IDs (the link may
    // still lose the odd packet), TL0PICIDX up by one at each base frame.
    let steps = |pairs: &mut dyn Iterator<Item = bool>| -> (usize, usize) {
        pairs.fold((0, 0), |(ok, all), good| (ok + usize::from(good), all + 1))
    };
    let (seq_ok, all) = steps(&mut got.windows(2).map(|w| w[1].0 == w[0].0.wrapping_add(1)));
    let (picture_ok, _) = steps(&mut got.windows(2).map(|w| {
        let (a, b) = (descriptor(&w[0].1), descriptor(&w[1].1));
        b.0 == (a.0 + 1) & 0x7fff && b.1 == a.1.wrapping_add(u8::from(b.2 == 0))
    }));
    println!("consecutive: {seq_ok} sequence numbers, {picture_ok} pictures, of {all}");
    assert!(
        seq_ok * 100 >= all * 97,
        "{seq_ok} of {all} sequence numbers follow on"
    );
    assert!(
        picture_ok * 100 >= all * 97,
        "{picture_ok} of {all} pictures follow on"
    );
}
