//! The SFU's hot path, per publisher packet: SRTP decrypt -> forwarding decision -> rewrite ->
//! SRTP encrypt for every subscriber -> the kernel, on real loopback sockets.
//!
//! The publisher's packets are encrypted before the clock starts (their cost is the client's,
//! not the SFU's); everything the router does with them, and the syscalls, is measured.
//! `cargo bench -p aula-sfu --bench forward` prints time per publisher packet; divide by the
//! subscriber count for the cost per forwarded packet.
//!
//! Two groups: `forward_opus_packet` sends each copy with its own `send_to` to one socket (how
//! the SFU sent before issue 15, and what this benchmark measured then, so the two compare),
//! and `forward_opus_packet_batched` sends them as the server's worker does, a router turn's
//! datagrams in one [`MediaSocket::send_all`], each subscriber's to a socket of its own.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use aula_protocol::TrackKind;
use aula_sfu::router::Transmit;
use aula_sfu::sim::{SFU_ADDR, Sim};
use aula_sfu::udp::MediaSocket;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A call with one Opus publisher and `subscribers` subscribers, connected and flowing.
fn connected_call(subscribers: usize) -> (Sim, usize) {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let step = Duration::from_millis(5);
    let mut published = None;
    for _ in 0..500 {
        if let Some((_, sid)) = sim.published.first() {
            published = Some(sid.clone());
            break;
        }
        sim.send(teacher, &[0u8; 80]);
        sim.step(step);
    }
    let track = published.expect("the SFU published the track");
    for i in 0..subscribers {
        sim.subscribe(&format!("student-{i}"), &track);
    }
    assert!(
        sim.run_until(5_000, step, |s| s.router.stats().consumers == subscribers),
        "every subscriber connected"
    );
    // Let every consumer start (audio needs no keyframe, but the first packet starts it).
    for _ in 0..20 {
        sim.send(teacher, &[0u8; 80]);
        sim.step(Duration::from_millis(20));
    }
    (sim, teacher)
}

/// Benchmark group `name`: per publisher packet, the router's work and then `send` given the
/// packet's copies, as the worker is given a router turn's.
fn bench_copies(c: &mut Criterion, name: &str, mut send: impl FnMut(&mut [Transmit])) {
    let mut group = c.benchmark_group(name);
    for subscribers in [1usize, 10, 50] {
        let (mut sim, teacher) = connected_call(subscribers);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut datagrams = Vec::with_capacity(iters as usize);
                    for _ in 0..iters {
                        sim.send(teacher, &[0x5a; 80]);
                        datagrams.extend(sim.take_datagrams(teacher));
                    }
                    let now = sim.now;
                    let mut turn = Vec::with_capacity(subscribers);
                    let start = Instant::now();
                    for (from, data) in &datagrams {
                        sim.router.handle_datagram(now, *from, SFU_ADDR, data);
                        turn.extend(std::iter::from_fn(|| sim.router.poll_transmit()));
                        send(&mut turn);
                        turn.clear();
                    }
                    start.elapsed()
                });
            },
        );
    }
    group.finish();
}

/// Every copy really goes through the kernel, with a `send_to` of its own, to one socket
/// nobody reads.
fn forward(c: &mut Criterion) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let sink_addr = sink.local_addr().expect("sink address");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    bench_copies(c, "forward_opus_packet", |turn| {
        for out in turn.iter() {
            let _ = black_box(sender.send_to(&out.data, sink_addr));
        }
    });
}

/// The copies of each publisher packet sent together the way the worker sends a router
/// turn's, each subscriber's to a loopback socket of its own that nobody reads.
fn forward_batched(c: &mut Criterion) {
    let mut socket =
        MediaSocket::sending_only(UdpSocket::bind("127.0.0.1:0").expect("bind sender"))
            .expect("media socket");
    let mut sinks = Vec::new();
    let mut sink_of: HashMap<SocketAddr, SocketAddr> = HashMap::new();
    bench_copies(c, "forward_opus_packet_batched", |turn| {
        for out in turn.iter_mut() {
            out.to = *sink_of.entry(out.to).or_insert_with(|| {
                let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
                let addr = sink.local_addr().expect("sink address");
                sinks.push(sink);
                addr
            });
        }
        black_box(socket.send_all(turn, |_, result| {
            let _ = black_box(result);
        }));
    });
}

criterion_group!(benches, forward, forward_batched);
criterion_main!(benches);
