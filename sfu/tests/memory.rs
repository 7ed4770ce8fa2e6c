//! Memory per receive-only subscriber (issue 15): heap bytes the router holds per student of a
//! class, counted by a global allocator, with real `rtc` peers on the simulator's network.
//!
//! A teacher publishes Opus (50 packets/s of 100 bytes) and three-layer simulcast VP8 with
//! picture IDs (1, 2 and 5 packets per frame of 600, 1,000 and 1,100 bytes at 30 fps, about
//! 150k/500k/1.3M), like `aula-loadtest --scenario class`; students subscribe to both tracks
//! and receive for [`MEDIA`] of virtual time, long enough that every per-packet history is
//! full. The clients (the simulator's browser stand-ins, in this process too) are dropped
//! before counting, so what is left is the router's: peers, interceptor chains, histories and
//! the payloads they keep alive. The difference between two class sizes, divided by the
//! difference in students, is the cost of one student.
//!
//! `cargo test -p aula-sfu --test memory -- --nocapture` prints the figures; the test holds
//! them under a bound. One test in this binary, so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use aula_protocol::TrackKind;
use aula_sfu::sim::Sim;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const STEP: Duration = Duration::from_millis(10);
/// How long the class runs before counting: the send histories of the top layer (about 150
/// packets/s) are full well before.
const MEDIA: Duration = Duration::from_secs(12);
const RIDS: [&str; 3] = ["q", "h", "f"];
/// Packets per frame and bytes per packet of each layer.
const LAYERS: [(usize, usize); 3] = [(1, 600), (2, 1_000), (5, 1_100)];

/// A VP8 packet with a 15-bit picture ID and a TL0PICIDX, as Chrome sends them.
fn vp8(keyframe: bool, first: bool, picture_id: u16, len: usize) -> Vec<u8> {
    let [hi, lo] = (picture_id & 0x7fff).to_be_bytes();
    // X and S (start of a partition, on the frame's first packet); I and L; the picture ID
    // (M set: 15 bits); TL0PICIDX.
    let mut payload = vec![
        0x80 | if first { 0x10 } else { 0 },
        0xc0,
        0x80 | hi,
        lo,
        picture_id as u8,
    ];
    if first {
        // VP8 payload header: inverse keyframe bit, then (keyframes) start code and size.
        payload.extend_from_slice(&[if keyframe { 0x00 } else { 0x01 }, 0, 0]);
        payload.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    }
    payload.resize(len, 0x5a);
    payload
}

/// One frame of every layer (picture IDs of each layer's own encoder).
fn frame(sim: &mut Sim, teacher: usize, index: u16, keyframe: bool) {
    for (layer, &(packets, len)) in LAYERS.iter().enumerate() {
        let picture_id = index.wrapping_add(5_000 * layer as u16);
        for p in 0..packets {
            sim.send_layer(teacher, layer, &vp8(keyframe, p == 0, picture_id, len));
        }
    }
}

/// Heap bytes the router holds with `students` connected, after `media` of class.
fn router_bytes(students: usize, media: Duration) -> isize {
    let before = live();
    let mut sim = Sim::new();
    let teacher = sim.add_simulcast_publisher("teacher", &RIDS);
    let mic = sim.add_publisher("teacher-mic", TrackKind::Audio);
    let mut frames = 0u16;
    for _ in 0..500 {
        if sim.published.len() == 2 {
            break;
        }
        frame(&mut sim, teacher, frames, true);
        frames += 1;
        sim.send(mic, &[0x11; 100]);
        sim.step(Duration::from_millis(33));
    }
    let tracks: Vec<String> = sim.published.iter().map(|(_, sid)| sid.clone()).collect();
    assert_eq!(tracks.len(), 2, "both tracks published");
    for i in 0..students {
        for track in &tracks {
            sim.subscribe(&format!("student-{i}"), track);
        }
    }
    assert!(
        sim.run_until(5_000, STEP, |s| s.router.stats().consumers == 2 * students),
        "every student connected"
    );
    // Media: audio every 20 ms, a frame every 33 ms, a keyframe every second.
    let ticks = (media.as_millis() / STEP.as_millis()) as u64;
    let mut next_frame = 0u64;
    for tick in 0..ticks {
        let ms = tick * STEP.as_millis() as u64;
        if ms.is_multiple_of(20) {
            sim.send(mic, &[0x11; 100]);
        }
        if ms >= next_frame {
            frame(&mut sim, teacher, frames, frames.is_multiple_of(30));
            frames = frames.wrapping_add(1);
            next_frame += 33;
        }
        sim.step(STEP);
    }
    if media > Duration::ZERO {
        for i in 0..students {
            let got = sim.client(&format!("student-{i}")).received.len();
            assert!(got > 0, "student {i} received media");
        }
    }
    // What the simulator keeps is not the router's.
    sim.clients.clear();
    sim.clients.shrink_to_fit();
    sim.peer_states = Vec::new();
    sim.qualities = Vec::new();
    sim.qos_samples = Vec::new();
    let bytes = live() - before;
    drop(sim);
    bytes
}

#[test]
fn a_receive_only_student_costs_the_router_little_memory() {
    let (few, many) = (4, 12);
    let per = |a: isize, b: isize| (b - a) / (many - few) as isize;
    let joined = per(
        router_bytes(few, Duration::ZERO),
        router_bytes(many, Duration::ZERO),
    );
    let small = router_bytes(few, MEDIA);
    let large = router_bytes(many, MEDIA);
    let receiving = per(small, large);
    println!(
        "router heap per receive-only student: {:.1} KB joined, {:.1} KB after {} s of class \
         ({few} students: {:.1} MB, {many}: {:.1} MB)",
        joined as f64 / 1e3,
        receiving as f64 / 1e3,
        MEDIA.as_secs(),
        small as f64 / 1e6,
        large as f64 / 1e6,
    );
    // 1,455 KB before issue 15's work (a copy of every renumbered VP8 payload in each student's
    // 1,024-packet NACK history); 162 KB after.
    assert!(
        receiving < 220_000,
        "a receive-only student holds {receiving} bytes of the router's heap"
    );
    assert!(joined < 80_000, "a student joining costs {joined} bytes");
}
