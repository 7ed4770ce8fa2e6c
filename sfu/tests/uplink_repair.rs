//! A teacher's packets lost on the way to the SFU, repaired from the teacher's retransmissions
//! (issue 16), through the real router and `rtc` peers on the in-memory network of
//! [`aula_sfu::sim`], on virtual time.
//!
//! The teacher publishes simulcast as Chrome does (see `Sim::add_simulcast_publisher`): no
//! SSRCs in the offer, and each layer's retransmissions on an RTX stream of its own, named only
//! by the `repaired-rtp-stream-id` header extension.

use std::collections::HashSet;
use std::time::Duration;

use aula_sfu::sim::{Sim, vp8_payload};

const STEP: Duration = Duration::from_millis(5);
const FRAME: Duration = Duration::from_millis(33);
const RIDS: [&str; 3] = ["q", "h", "f"];

/// One frame on every layer, each packet's body `{rid}-{label}`.
fn frame(sim: &mut Sim, teacher: usize, keyframe: bool, label: &str) {
    for (layer, rid) in RIDS.iter().enumerate() {
        let body = format!("{rid}-{label}");
        sim.send_layer(teacher, layer, &vp8_payload(keyframe, body.as_bytes()));
    }
}

/// The bodies of the video packets the student received.
fn received(sim: &Sim) -> HashSet<String> {
    let packets = sim.client("student").received.iter();
    packets
        .map(|r| String::from_utf8_lossy(&r.payload[2..]).into_owned())
        .collect()
}

/// A teacher publishing three layers and a student receiving one of them; returns the sim, the
/// teacher's index and the rid of the student's layer. Only delta frames follow, so the student
/// stays on that layer (a switch waits for a keyframe of the new one).
fn class() -> (Sim, usize, &'static str) {
    let mut sim = Sim::new();
    let teacher = sim.add_simulcast_publisher("teacher", &RIDS);
    for _ in 0..500 {
        if !sim.published.is_empty() {
            break;
        }
        frame(&mut sim, teacher, true, "warm-up");
        sim.step(FRAME);
    }
    let track = sim.published.first().expect("video published").1.clone();
    sim.subscribe("student", &track);
    assert!(sim.run_until(1_000, STEP, |s| s.subscribe_offers > 0));
    for _ in 0..100 {
        if !sim.client("student").received.is_empty() {
            break;
        }
        frame(&mut sim, teacher, true, "warm-up");
        sim.step(FRAME);
    }
    // One more keyframe round, then deltas: the layer of the last packet is the student's.
    frame(&mut sim, teacher, true, "warm-up");
    sim.step(FRAME);
    let last = sim
        .client("student")
        .received
        .last()
        .expect("video reached the student");
    let body = String::from_utf8_lossy(&last.payload[2..]).into_owned();
    let rid = RIDS
        .into_iter()
        .find(|rid| body.starts_with(&format!("{rid}-")))
        .expect("a layer's packet");
    (sim, teacher, rid)
}

#[test]
fn a_lost_packet_of_a_simulcast_layer_reaches_the_student_from_the_teachers_rtx() {
    let (mut sim, teacher, rid) = class();
    for i in 0..10 {
        frame(&mut sim, teacher, false, &format!("before-{i}"));
        sim.step(FRAME);
    }
    // The student's layer's packet of frame "lost" is lost on the teacher's uplink (and
    // nothing else: nothing else is queued at that moment); the other layers' arrive.
    let layer = RIDS.iter().position(|r| *r == rid).expect("a layer");
    sim.step(Duration::ZERO);
    let lost = format!("{rid}-lost");
    sim.send_layer(teacher, layer, &vp8_payload(false, lost.as_bytes()));
    sim.lossy_uplink = Some(("teacher".to_owned(), 1));
    sim.step(Duration::ZERO);
    sim.lossy_uplink = None;
    for (other, other_rid) in RIDS.iter().enumerate().filter(|(l, _)| *l != layer) {
        let body = format!("{other_rid}-lost");
        sim.send_layer(teacher, other, &vp8_payload(false, body.as_bytes()));
    }
    sim.step(FRAME);
    // The next packet shows the gap, the SFU NACKs it (every 100 ms), the teacher resends it
    // on the layer's RTX stream.
    for i in 0..30 {
        frame(&mut sim, teacher, false, &format!("after-{i}"));
        sim.step(FRAME);
    }
    let got = received(&sim);
    assert!(
        got.contains(&lost),
        "the lost packet was never repaired ({rid} layer)"
    );
    let missing: Vec<String> = (0..10)
        .map(|i| format!("{rid}-before-{i}"))
        .chain((0..30).map(|i| format!("{rid}-after-{i}")))
        .filter(|body| !got.contains(body))
        .collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    let metrics = sim.router.metrics();
    assert!(metrics.nacks_sent.get() > 0, "the SFU asked for it");
    assert_eq!(
        metrics.rtx_repaired.get(),
        1,
        "repaired from the RTX stream"
    );
    // Asked for until the resend came, then no more: the NACK generator saw it arrive.
    assert!(
        metrics.nacks_sent.get() <= 2,
        "{}",
        metrics.nacks_sent.get()
    );
}

#[test]
fn every_packet_lost_on_a_lossy_teacher_uplink_is_repaired_on_every_layer() {
    let (mut sim, teacher, rid) = class();
    // One datagram in six from the teacher is lost (its resends among them), on all layers.
    // (Not one in five: a lone outstanding resend, answering the NACK sent every 100 ms, is
    // then the tenth of the ten datagrams the teacher sends per round, and lost every time.)
    sim.lossy_uplink = Some(("teacher".to_owned(), 6));
    for i in 0..150 {
        frame(&mut sim, teacher, false, &format!("frame-{i}"));
        sim.step(FRAME);
    }
    // A loss shows with the packet after it: a few more frames, then time for the repairs.
    sim.lossy_uplink = None;
    for i in 0..5 {
        frame(&mut sim, teacher, false, &format!("tail-{i}"));
        sim.step(FRAME);
    }
    for _ in 0..50 {
        sim.step(Duration::from_millis(20));
    }
    let got = received(&sim);
    let missing: Vec<u32> = (0..150)
        .filter(|i| !got.contains(&format!("{rid}-frame-{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "never repaired ({rid} layer): {missing:?}"
    );
    // Losses on every layer were asked for and repaired, each once: none was still missing a
    // second later, and no resend came after its packet had been repaired.
    let metrics = sim.router.metrics();
    assert!(
        metrics.rtx_repaired.get() >= 60,
        "{}",
        metrics.rtx_repaired.get()
    );
    assert_eq!(metrics.nacks_withheld.get(), 0, "no loss left unrepaired");
    assert_eq!(metrics.rtx_unused.get(), 0, "no resend came twice");
}
