//! A worse network under a relay link, for load tests (issue 14, item 6): a quinn
//! [`AsyncUdpSocket`] that adds a fixed one-way delay and random loss to every datagram the
//! link *sends*. What it receives is untouched, so a path impaired both ways is both nodes
//! each impairing what they send: a 150 ms round trip is `delay` 75 ms on each node, and
//! `loss` p on each node loses p of the datagrams in each direction.
//!
//! The kernel on the test machines has no netem, hence this. [`Schedule`] decides, on time the
//! caller passes in, whether a datagram is lost and when it leaves (loss from
//! [`crate::impair::Link`], the same model as the SFU's per-participant test impairment, with
//! a seeded RNG so that a run's loss pattern can be repeated). [`ImpairedSocket`] is the I/O
//! around it: datagrams held for their delay wait in the schedule, and a task sends each at its
//! instant on the real socket.
//!
//! Test-only: the server builds one only when `[cluster.relay] impairment` is set, which the
//! config refuses without `[dev] test_impairment = true`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::Notify;

use crate::impair::{Impairment, Link, MAX_DELAY};

/// What the socket does to each datagram it sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendImpairment {
    /// Added to every datagram sent (one way); at most [`MAX_DELAY`].
    pub delay: Duration,
    /// Probability, independent per datagram, that it is lost; clamped to `0.0..=1.0`.
    pub loss: f64,
    /// Seed of the loss pattern: the same seed and the same datagrams lose the same ones.
    pub seed: u64,
}

/// What happens to a datagram offered to a [`Schedule`].
#[derive(Debug, PartialEq, Eq)]
pub enum Fate<T> {
    /// Send it now (no delay, and nothing held that it would overtake).
    Now(T),
    /// Held: [`Schedule::pop_due`] gives it back at its instant.
    Held,
    /// Lost.
    Dropped,
}

/// Counts of what a [`Schedule`] did, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    pub offered: u64,
    pub dropped: u64,
    /// The most datagrams held at once.
    pub max_held: usize,
}

/// The decisions, with no clock and no I/O: the caller offers each datagram with the current
/// time and sends what [`Fate::Now`] and [`Schedule::pop_due`] give back. Datagrams leave in the
/// order offered.
pub struct Schedule<T> {
    link: Link,
    held: VecDeque<(Instant, T)>,
    stats: ScheduleStats,
}

impl<T> Schedule<T> {
    pub fn new(impairment: SendImpairment) -> Self {
        let model = Impairment {
            loss: impairment.loss,
            rate_bps: None,
            delay: impairment.delay.min(MAX_DELAY),
            queue: Duration::ZERO,
        };
        Self {
            link: Link::new(model, impairment.seed),
            held: VecDeque::new(),
            stats: ScheduleStats::default(),
        }
    }

    /// The fate of `datagram`, offered at `now`.
    pub fn offer(&mut self, now: Instant, datagram: T) -> Fate<T> {
        self.stats.offered += 1;
        // No rate, so the length does not matter.
        let Some(at) = self.link.offer(now, 0) else {
            self.stats.dropped += 1;
            return Fate::Dropped;
        };
        if at <= now && self.held.is_empty() {
            return Fate::Now(datagram);
        }
        self.held.push_back((at, datagram));
        self.stats.max_held = self.stats.max_held.max(self.held.len());
        Fate::Held
    }

    /// The next held datagram due at `now`, oldest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.held.front() {
            Some((at, _)) if *at <= now => self.held.pop_front().map(|(_, datagram)| datagram),
            _ => None,
        }
    }

    /// When the next held datagram is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| *at)
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn stats(&self) -> ScheduleStats {
        self.stats
    }
}

/// A datagram held for later: a [`Transmit`] that owns its bytes.
struct Datagram {
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

impl Datagram {
    fn of(transmit: &Transmit) -> Self {
        Self {
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents.to_vec(),
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        }
    }

    fn transmit(&self) -> Transmit<'_> {
        Transmit {
            destination: self.destination,
            ecn: self.ecn,
            contents: &self.contents,
            segment_size: self.segment_size,
            src_ip: self.src_ip,
        }
    }
}

/// What the socket and its sending task share.
struct Shared {
    schedule: Mutex<Schedule<Datagram>>,
    /// Wakes the task: a datagram was held, or the socket is gone.
    wake: Arc<Notify>,
}

impl Shared {
    fn schedule(&self) -> MutexGuard<'_, Schedule<Datagram>> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A socket that impairs what it sends (see the module docs). Must be made inside a tokio
/// runtime: it starts the task that sends held datagrams, which ends when the socket is
/// dropped.
pub struct ImpairedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<Shared>,
    impairment: SendImpairment,
}

impl ImpairedSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, impairment: SendImpairment) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            schedule: Mutex::new(Schedule::new(impairment)),
            wake: wake.clone(),
        });
        tokio::spawn(send_held(inner.clone(), Arc::downgrade(&shared), wake));
        Arc::new(Self {
            inner,
            shared,
            impairment,
        })
    }

    /// [`new`](Self::new) on a standard socket, as [`RelayEndpoint::bind`] takes one.
    ///
    /// [`RelayEndpoint::bind`]: super::link::RelayEndpoint::bind
    pub fn bind(socket: std::net::UdpSocket, impairment: SendImpairment) -> io::Result<Arc<Self>> {
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        Ok(Self::new(inner, impairment))
    }

    pub fn impairment(&self) -> SendImpairment {
        self.impairment
    }

    /// What the socket has done so far.
    pub fn stats(&self) -> ScheduleStats {
        self.shared.schedule().stats()
    }
}

impl Drop for ImpairedSocket {
    fn drop(&mut self) {
        // The task holds the schedule weakly: woken, it finds it gone and ends.
        self.shared.wake.notify_one();
    }
}

impl fmt::Debug for ImpairedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedSocket")
            .field("inner", &self.inner)
            .field("impairment", &self.impairment)
            .finish()
    }
}

/// Sends each held datagram at its instant, until the socket is dropped. A datagram the real
/// socket cannot take yet waits for it to be writable; one it refuses with an error is lost
/// (as a real send error loses it).
async fn send_held(inner: Arc<dyn AsyncUdpSocket>, shared: Weak<Shared>, wake: Arc<Notify>) {
    let mut writable = inner.clone().create_io_poller();
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut due = Vec::new();
            let now = Instant::now();
            let next = {
                let mut schedule = shared.schedule();
                while let Some(datagram) = schedule.pop_due(now) {
                    due.push(datagram);
                }
                schedule.next_due()
            };
            drop(shared);
            for datagram in &due {
                loop {
                    match inner.try_send(&datagram.transmit()) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if let Err(e) =
                                std::future::poll_fn(|cx| writable.as_mut().poll_writable(cx)).await
                            {
                                tracing::debug!("impaired relay socket: {e}");
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!("impaired relay socket: send failed: {e}");
                            break;
                        }
                        Ok(()) => break,
                    }
                }
            }
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

impl AsyncUdpSocket for ImpairedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let fate = self
            .shared
            .schedule()
            .offer(Instant::now(), Datagram::of(transmit));
        match fate {
            // Undelayed: the real socket's answer, WouldBlock included, goes back to quinn.
            Fate::Now(_) => self.inner.try_send(transmit),
            Fate::Held => {
                self.shared.wake.notify_one();
                Ok(())
            }
            Fate::Dropped => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per transmit, so that loss is decided per datagram (no GSO batches).
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn schedule(delay_ms: u64, loss: f64, seed: u64) -> Schedule<u32> {
        Schedule::new(SendImpairment {
            delay: ms(delay_ms),
            loss,
            seed,
        })
    }

    #[test]
    fn no_impairment_sends_at_once() {
        let mut s = schedule(0, 0.0, 1);
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(s.offer(t0 + ms(i.into()), i), Fate::Now(i));
        }
        assert_eq!(s.held(), 0);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.stats().dropped, 0);
    }

    #[test]
    fn delay_holds_each_datagram_for_its_time_in_order() {
        let mut s = schedule(75, 0.0, 1);
        let t0 = Instant::now();
        assert_eq!(s.offer(t0, 1), Fate::Held);
        assert_eq!(s.offer(t0 + ms(10), 2), Fate::Held);
        assert_eq!(s.offer(t0 + ms(10), 3), Fate::Held);
        assert_eq!(s.next_due(), Some(t0 + ms(75)));
        assert_eq!(s.pop_due(t0 + ms(74)), None, "not before its time");
        assert_eq!(s.pop_due(t0 + ms(75)), Some(1));
        assert_eq!(s.pop_due(t0 + ms(75)), None);
        assert_eq!(s.next_due(), Some(t0 + ms(85)));
        // Late pops still come out in order.
        assert_eq!(s.pop_due(t0 + ms(200)), Some(2));
        assert_eq!(s.pop_due(t0 + ms(200)), Some(3));
        assert_eq!(s.pop_due(t0 + ms(200)), None);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.stats().max_held, 3);
    }

    #[test]
    fn delay_is_capped() {
        let mut s = schedule(3_600_000, 0.0, 1);
        let t0 = Instant::now();
        assert_eq!(s.offer(t0, 1), Fate::Held);
        assert_eq!(s.next_due(), Some(t0 + MAX_DELAY));
    }

    #[test]
    fn loss_drops_about_its_share_and_repeats_with_the_seed() {
        let fates = |seed| {
            let mut s = schedule(0, 0.05, seed);
            let t0 = Instant::now();
            let kept: Vec<bool> = (0..20_000)
                .map(|i| matches!(s.offer(t0, i), Fate::Now(_)))
                .collect();
            (kept, s.stats())
        };
        let (a, stats) = fates(7);
        assert_eq!(stats.offered, 20_000);
        let share = stats.dropped as f64 / stats.offered as f64;
        assert!((0.04..0.06).contains(&share), "lost {share}");
        assert_eq!(a, fates(7).0, "same seed, same pattern");
        assert_ne!(a, fates(8).0, "another seed, another pattern");
    }

    #[test]
    fn loss_and_delay_together() {
        let mut s = schedule(75, 1.0, 3);
        let t0 = Instant::now();
        assert_eq!(s.offer(t0, 1), Fate::Dropped);
        assert_eq!(s.held(), 0);
        let mut s = schedule(75, 0.5, 3);
        let held = (0..1000).filter(|&i| s.offer(t0, i) == Fate::Held).count();
        assert_eq!(held, s.held());
        assert_eq!(held as u64 + s.stats().dropped, 1000);
        // What is held comes out in the order offered.
        let out: Vec<u32> = std::iter::from_fn(|| s.pop_due(t0 + ms(75))).collect();
        assert_eq!(out.len(), held);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nan_or_out_of_range_loss_is_clamped() {
        let t0 = Instant::now();
        let mut s = schedule(0, f64::NAN, 1);
        assert_eq!(s.offer(t0, 1), Fate::Now(1));
        let mut s = schedule(0, 2.0, 1);
        assert_eq!(s.offer(t0, 1), Fate::Dropped);
        let mut s = schedule(0, -1.0, 1);
        assert_eq!(s.offer(t0, 1), Fate::Now(1));
    }

    /// The socket on a real loopback socket: a datagram arrives after the delay, not before,
    /// and a lost one never does.
    #[tokio::test]
    async fn the_socket_delays_and_drops_what_it_sends() {
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let real = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let real = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, real).unwrap();
        let socket = ImpairedSocket::new(
            real,
            SendImpairment {
                delay: ms(60),
                loss: 0.0,
                seed: 1,
            },
        );
        let send = |contents: &[u8]| {
            socket
                .try_send(&Transmit {
                    destination: to,
                    ecn: None,
                    contents,
                    segment_size: None,
                    src_ip: None,
                })
                .unwrap();
        };
        let sent = Instant::now();
        send(b"one");
        send(b"two");
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), receiver.recv_from(&mut buf))
            .await
            .expect("arrives")
            .unwrap();
        let took = sent.elapsed();
        assert_eq!(&buf[..n], b"one");
        assert!(took >= ms(60), "arrived after {took:?}");
        assert!(took < ms(1000), "arrived after {took:?}");
        let (n, _) = receiver.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(socket.stats().offered, 2);

        let real = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let real = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, real).unwrap();
        let lossy = ImpairedSocket::new(
            real,
            SendImpairment {
                delay: Duration::ZERO,
                loss: 1.0,
                seed: 1,
            },
        );
        lossy
            .try_send(&Transmit {
                destination: to,
                ecn: None,
                contents: b"lost",
                segment_size: None,
                src_ip: None,
            })
            .unwrap();
        let nothing =
            tokio::time::timeout(Duration::from_millis(200), receiver.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "a lost datagram arrived");
        assert_eq!(lossy.stats().dropped, 1);
    }

    /// Two relay endpoints, each impairing what it sends by 75 ms: the link's round trip, as
    /// QUIC measures it, is the 150 ms the load test asks for.
    #[tokio::test]
    async fn a_link_over_two_impaired_sockets_has_the_round_trip_of_both_delays() {
        use crate::relay::link::{LinkConfig, RelayEndpoint, RelayMetrics};
        use crate::relay::tls::{NodeTls, generate_ca, issue_node_cert};

        let ca = generate_ca().unwrap();
        let endpoint = |node: &str| {
            let real = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let real = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, real).unwrap();
            let socket = ImpairedSocket::new(
                real,
                SendImpairment {
                    delay: ms(75),
                    loss: 0.0,
                    seed: 1,
                },
            );
            let tls = NodeTls::new(&ca.cert, &issue_node_cert(&ca, node).unwrap()).unwrap();
            let metrics = RelayMetrics::register(&prometheus::Registry::new()).unwrap();
            RelayEndpoint::with_socket(socket, node, "test", &tls, &LinkConfig::default(), metrics)
                .unwrap()
        };
        let (origin, relay) = (endpoint("origin-1"), endpoint("relay-1"));
        let addr = origin.local_addr().unwrap();
        let started = Instant::now();
        let (at_relay, at_origin) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(
                relay.connect(addr, "origin-1", "maths", 1),
                origin.accept(|_| Some(1))
            )
        })
        .await
        .expect("linked in time");
        let (at_relay, _at_origin) = (at_relay.unwrap(), at_origin.unwrap());
        // A handshake and hellos both ways: at least two round trips.
        assert!(
            started.elapsed() >= ms(300),
            "linked in {:?}",
            started.elapsed()
        );
        let rtt = at_relay.rtt();
        assert!((ms(145)..ms(400)).contains(&rtt), "link RTT {rtt:?}");
    }
}
