//! Network impairment for tests: random loss, a rate-capped FIFO bottleneck and a fixed delay,
//! computed on time the caller passes in.
//!
//! The kernel on the test machines has no netem, so weak-network tests impose the network
//! inside the process instead: the SFU's UDP shell puts an impaired participant's datagrams
//! through a [`Link`] ([`Impairments`] keeps one per participant), and the in-memory simulator
//! can put a simulated path through one. [`Link`] has no clock and does no I/O: the caller
//! offers each datagram with the current time and holds it until the instant it is given.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::ParticipantId;
use crate::router::Transmit;

/// The queue limit when [`Impairment::queue`] is zero: about what a home router buffers, and
/// enough for a video keyframe to squeeze through a slow link without tail drops.
pub const DEFAULT_QUEUE: Duration = Duration::from_millis(200);

/// Delays and queue limits above this are clamped to it, so that a typo cannot make the SFU
/// hold datagrams (memory) for hours, and instants computed from them cannot overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// What a link does to the datagrams offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Probability, independent for each datagram, that it is lost. Clamped to `0.0..=1.0`;
    /// NaN counts as 0.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited. `Some(0)` is a link that is down:
    /// every datagram is dropped (nothing is ever served, so the queue is always full).
    pub rate_bps: Option<u64>,
    /// Fixed one-way delay added after the bottleneck (at most [`MAX_DELAY`]).
    pub delay: Duration,
    /// Longest a datagram may wait at the bottleneck before it is tail-dropped instead;
    /// zero means [`DEFAULT_QUEUE`] (at most [`MAX_DELAY`]). Only matters with a rate.
    pub queue: Duration,
}

impl Impairment {
    /// The values a [`Link`] applies: out-of-range ones clamped, defaults filled in.
    fn effective(self) -> Self {
        let loss = if self.loss.is_nan() {
            0.0
        } else {
            self.loss.clamp(0.0, 1.0)
        };
        let queue = if self.queue.is_zero() {
            DEFAULT_QUEUE
        } else {
            self.queue
        };
        Self {
            loss,
            rate_bps: self.rate_bps,
            delay: self.delay.min(MAX_DELAY),
            queue: queue.min(MAX_DELAY),
        }
    }
}

/// One direction of an impaired path: loss at the input (lost datagrams take no bottleneck
/// time), then a FIFO that serializes at `rate_bps` and tail-drops what would wait longer than
/// `queue`, then `delay`. That is a token bucket one datagram deep: no bursts above the rate.
pub struct Link {
    impairment: Impairment,
    rng: StdRng,
    /// When the bottleneck finishes serializing the last datagram it accepted.
    busy_until: Option<Instant>,
    /// The latest delivery promised, so that lowering the delay or lifting the rate never
    /// delivers a later datagram before an earlier one.
    last_delivery: Option<Instant>,
}

impl Link {
    /// A link with a deterministic loss pattern: the same seed and offers give the same fates.
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Self {
            impairment: impairment.effective(),
            rng: StdRng::seed_from_u64(seed),
            busy_until: None,
            last_delivery: None,
        }
    }

    /// Changes the impairment. Datagrams already accepted keep their delivery times, and the
    /// backlog at the bottleneck stays: new datagrams queue behind it.
    pub fn set(&mut self, impairment: Impairment) {
        self.impairment = impairment.effective();
    }

    /// The impairment applied (clamped, with the default queue filled in).
    pub fn impairment(&self) -> Impairment {
        self.impairment
    }

    /// The fate of a datagram of `len` bytes offered at `now`: `None` dropped (random loss or
    /// queue full), `Some(t)` delivered at `t` (>= now). Deliveries are in order (FIFO
    /// bottleneck: serialization at rate_bps, then + delay).
    pub fn offer(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Impairment {
            loss,
            rate_bps,
            delay,
            queue,
        } = self.impairment;
        // No draw when there is no loss, so a loss-free link costs no randomness.
        if loss > 0.0 && self.rng.random::<f64>() < loss {
            return None;
        }
        let departure = match rate_bps {
            None => now,
            Some(0) => return None,
            Some(rate) => {
                let start = self.busy_until.map_or(now, |busy| busy.max(now));
                if start.saturating_duration_since(now) > queue {
                    return None;
                }
                let finish = start.checked_add(serialization(len, rate))?;
                self.busy_until = Some(finish);
                finish
            }
        };
        let delivery = departure.checked_add(delay)?;
        let delivery = self
            .last_delivery
            .map_or(delivery, |last| last.max(delivery));
        self.last_delivery = Some(delivery);
        Some(delivery)
    }
}

/// Time to put `len` bytes on a wire of `rate` bits per second (`rate` > 0), rounded up to
/// the nanosecond so that the link never runs faster than its rate.
fn serialization(len: usize, rate: u64) -> Duration {
    let nanos = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How long [`Impairments`] trusts its address-to-participant cache.
const ADDRESS_REFRESH: Duration = Duration::from_millis(100);

/// One impaired participant in the SFU.
struct Impaired {
    /// Everything the SFU sends to the participant's addresses.
    down: Link,
    /// What the participant sends: loss only, so its feedback (RTCP, STUN) is lost too.
    up: Link,
    /// Downlink datagrams waiting for their delivery instant, in delivery order.
    held: VecDeque<(Instant, Transmit)>,
    dropped_down: u64,
    dropped_up: u64,
}

/// The SFU's per-participant impairments (tests only): which datagrams to drop, hold, or
/// send now. Empty unless a test set one, and the worker checks [`Impairments::is_empty`]
/// before anything else, so production traffic pays one branch.
///
/// Participants are impaired by id, but datagrams carry addresses, and a participant's
/// addresses appear as ICE finds them; `addrs_of` (the router's lookup) is asked again every
/// [`ADDRESS_REFRESH`] and whenever an address never seen before comes by. Datagrams to or from
/// a participant's new address may escape impairment until the router has learnt it.
#[derive(Default)]
pub(crate) struct Impairments {
    links: HashMap<ParticipantId, Impaired>,
    /// Which impaired participant each known address belongs to.
    owners: HashMap<SocketAddr, ParticipantId>,
    /// Addresses found to belong to no impaired participant since the last periodic refresh.
    others: HashSet<SocketAddr>,
    refreshed: Option<Instant>,
    /// Held datagrams of links just cleared: sent at the next flush, ahead of anything new.
    released: VecDeque<Transmit>,
}

impl Impairments {
    /// True when nothing is impaired and nothing is held: the worker's fast path.
    pub(crate) fn is_empty(&self) -> bool {
        self.links.is_empty() && self.released.is_empty()
    }

    /// Sets (or with `None` clears) a participant's impairment. Changing one keeps the link's
    /// backlog; clearing one releases its held datagrams at once.
    pub(crate) fn set(&mut self, participant: &str, impairment: Option<Impairment>) {
        match impairment {
            Some(impairment) => match self.links.get_mut(participant) {
                Some(impaired) => {
                    impaired.down.set(impairment);
                    impaired.up.set(uplink(impairment));
                    tracing::info!(participant, ?impairment, "impairment changed");
                }
                None => {
                    self.links.insert(
                        participant.to_owned(),
                        Impaired {
                            down: Link::new(impairment, rand::random()),
                            up: Link::new(uplink(impairment), rand::random()),
                            held: VecDeque::new(),
                            dropped_down: 0,
                            dropped_up: 0,
                        },
                    );
                    // A new participant's addresses must be looked up, not taken as others'.
                    self.refreshed = None;
                    tracing::info!(participant, ?impairment, "impairment set");
                }
            },
            None => {
                if let Some(impaired) = self.take(participant) {
                    self.released
                        .extend(impaired.held.into_iter().map(|(_, transmit)| transmit));
                }
            }
        }
    }

    /// Forgets a participant that left, with whatever it had in flight.
    pub(crate) fn remove(&mut self, participant: &str) {
        self.take(participant);
    }

    fn take(&mut self, participant: &str) -> Option<Impaired> {
        let impaired = self.links.remove(participant)?;
        self.owners.retain(|_, owner| owner != participant);
        tracing::info!(
            participant,
            dropped_down = impaired.dropped_down,
            dropped_up = impaired.dropped_up,
            "impairment cleared"
        );
        Some(impaired)
    }

    /// A datagram the SFU is about to send: `Some` to send it now, `None` when the impairment
    /// dropped it or holds it for later ([`Impairments::pop_due`]).
    pub(crate) fn downlink(
        &mut self,
        now: Instant,
        transmit: Transmit,
        addrs_of: impl FnMut(&str) -> Vec<SocketAddr>,
    ) -> Option<Transmit> {
        let Some(owner) = self.owner(now, transmit.to, addrs_of) else {
            return Some(transmit);
        };
        let Some(impaired) = self.links.get_mut(&owner) else {
            return Some(transmit);
        };
        match impaired.down.offer(now, transmit.data.len()) {
            None => {
                impaired.dropped_down += 1;
                None
            }
            // Nothing held can be due later than this one, so sending it now keeps the order.
            Some(at) if at <= now && impaired.held.is_empty() => Some(transmit),
            Some(at) => {
                impaired.held.push_back((at, transmit));
                None
            }
        }
    }

    /// Whether a datagram that just arrived from `from` is lost on the way in.
    pub(crate) fn uplink_lost(
        &mut self,
        now: Instant,
        from: SocketAddr,
        addrs_of: impl FnMut(&str) -> Vec<SocketAddr>,
    ) -> bool {
        let Some(owner) = self.owner(now, from, addrs_of) else {
            return false;
        };
        let Some(impaired) = self.links.get_mut(&owner) else {
            return false;
        };
        // Only loss applies upstream, so the length does not matter.
        let lost = impaired.up.offer(now, 0).is_none();
        impaired.dropped_up += u64::from(lost);
        lost
    }

    /// The next held datagram due at `now`, released datagrams of cleared links first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(released) = self.released.pop_front() {
            return Some(released);
        }
        let impaired = self
            .links
            .values_mut()
            .filter(|i| i.held.front().is_some_and(|(at, ..)| *at <= now))
            .min_by_key(|i| i.held.front().map(|(at, ..)| *at))?;
        impaired.held.pop_front().map(|(_, transmit)| transmit)
    }

    /// When the next held datagram is due, if any is held. (Released datagrams are not
    /// counted: the worker sends them at its next flush, before it waits again.)
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|i| i.held.front().map(|(at, ..)| *at))
            .min()
    }

    /// The impaired participant `addr` belongs to, if any.
    fn owner(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        mut addrs_of: impl FnMut(&str) -> Vec<SocketAddr>,
    ) -> Option<ParticipantId> {
        let stale = self
            .refreshed
            .is_none_or(|at| now.saturating_duration_since(at) >= ADDRESS_REFRESH);
        if stale {
            self.refresh(&mut addrs_of);
            self.others.clear();
            self.refreshed = Some(now);
        }
        if let Some(owner) = self.owners.get(&addr) {
            return Some(owner.clone());
        }
        if self.others.contains(&addr) {
            return None;
        }
        // Never seen: perhaps a path an impaired participant's ICE just found. Remember the
        // answer until the next periodic refresh, so that others' traffic costs one lookup.
        self.refresh(&mut addrs_of);
        let owner = self.owners.get(&addr).cloned();
        if owner.is_none() {
            self.others.insert(addr);
        }
        owner
    }

    fn refresh(&mut self, addrs_of: &mut impl FnMut(&str) -> Vec<SocketAddr>) {
        self.owners.clear();
        for participant in self.links.keys() {
            for addr in addrs_of(participant) {
                self.owners.insert(addr, participant.clone());
            }
        }
    }
}

/// The uplink's share of an impairment: its loss only.
fn uplink(impairment: Impairment) -> Impairment {
    Impairment {
        loss: impairment.loss,
        ..Impairment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn lossy(loss: f64) -> Impairment {
        Impairment {
            loss,
            ..Impairment::default()
        }
    }

    fn capped(rate_bps: u64) -> Impairment {
        Impairment {
            rate_bps: Some(rate_bps),
            ..Impairment::default()
        }
    }

    #[test]
    fn loss_fraction_matches_the_setting_and_the_seed_decides() {
        let t0 = Instant::now();
        let fates = |seed| {
            let mut link = Link::new(lossy(0.1), seed);
            (0..10_000)
                .map(|i| link.offer(t0 + i * MS, 1000).is_some())
                .collect::<Vec<_>>()
        };
        let first = fates(7);
        let lost = first.iter().filter(|delivered| !**delivered).count();
        // 10k Bernoulli(0.1) draws: standard deviation 30, so ±150 is five sigmas (and the
        // seed makes the count the same on every run).
        assert!((850..=1150).contains(&lost), "lost {lost} of 10000");
        assert_eq!(first, fates(7), "same seed, same fates");
        assert_ne!(first, fates(8), "another seed, another pattern");
    }

    #[test]
    fn loss_is_clamped_and_nan_is_no_loss() {
        let t0 = Instant::now();
        for (loss, delivered) in [(f64::NAN, 100), (-0.5, 100), (0.0, 100), (1.0, 0), (2.0, 0)] {
            let mut link = Link::new(lossy(loss), 1);
            let n = (0..100).filter(|_| link.offer(t0, 100).is_some()).count();
            assert_eq!(n, delivered, "loss {loss}");
            assert!((0.0..=1.0).contains(&link.impairment().loss));
        }
    }

    #[test]
    fn rate_cap_delivers_the_rate_then_queues_and_tail_drops() {
        // 1000-byte datagrams every 8 ms (1 Mbit/s) into a 500 kbit/s link for 10 s.
        let t0 = Instant::now();
        let mut link = Link::new(capped(500_000), 1);
        let mut delivered = Vec::new();
        let mut first_drop = None;
        for i in 0..1250u32 {
            let now = t0 + i * 8 * MS;
            match link.offer(now, 1000) {
                Some(at) => {
                    assert!(at >= now);
                    // Waiting at most the queue limit, plus its own 16 ms on the wire.
                    assert!(at - now <= DEFAULT_QUEUE + 16 * MS, "held {:?}", at - now);
                    delivered.push(at);
                }
                None => {
                    first_drop.get_or_insert(now - t0);
                }
            }
        }
        // The queue grows 8 ms per offer: full (200 ms) after about 25 offers, 200 ms in.
        let first_drop = first_drop.expect("a full queue tail-drops");
        assert!(
            (180 * MS..=220 * MS).contains(&first_drop),
            "first drop at {first_drop:?}"
        );
        // Deliveries are back to back at the rate: 8000 bits / 500 kbit/s = 16 ms apart.
        let span = *delivered.last().unwrap() - delivered[0];
        let bits = (delivered.len() - 1) as f64 * 8000.0;
        let rate = bits / span.as_secs_f64();
        assert!(
            (rate - 500_000.0).abs() < 500.0,
            "delivered {rate:.0} bit/s"
        );
        // About half the offered datagrams get through.
        assert!(
            (620..=640).contains(&delivered.len()),
            "{}",
            delivered.len()
        );
    }

    #[test]
    fn a_link_within_its_rate_adds_only_serialization() {
        let t0 = Instant::now();
        let mut link = Link::new(capped(1_000_000), 1);
        for i in 0..100u32 {
            let now = t0 + i * 20 * MS;
            // 1250 bytes at 1 Mbit/s: 10 ms on the wire, done before the next one comes.
            assert_eq!(link.offer(now, 1250), Some(now + 10 * MS));
        }
    }

    #[test]
    fn delay_is_added_after_the_bottleneck() {
        let t0 = Instant::now();
        let mut link = Link::new(
            Impairment {
                delay: 50 * MS,
                ..Impairment::default()
            },
            1,
        );
        assert_eq!(link.offer(t0, 1200), Some(t0 + 50 * MS));
        link.set(Impairment {
            rate_bps: Some(1_000_000),
            delay: 50 * MS,
            ..Impairment::default()
        });
        // 1250 bytes: 10 ms on the wire, then 50 ms of delay.
        assert_eq!(link.offer(t0 + 100 * MS, 1250), Some(t0 + 160 * MS));
    }

    #[test]
    fn deliveries_stay_in_order_when_the_impairment_changes() {
        let t0 = Instant::now();
        let mut link = Link::new(
            Impairment {
                rate_bps: Some(300_000),
                delay: 100 * MS,
                queue: 500 * MS,
                ..Impairment::default()
            },
            3,
        );
        let mut last = t0;
        for i in 0..2000u32 {
            let now = t0 + i * MS;
            if i == 700 {
                // Less delay and no cap: later datagrams would overtake the backlog.
                link.set(lossy(0.2));
            } else if i == 1400 {
                link.set(capped(2_000_000));
            }
            let len = 100 + (i as usize * 37) % 1100;
            if let Some(at) = link.offer(now, len) {
                assert!(at >= now && at >= last, "datagram {i} out of order");
                last = at;
            }
        }
    }

    #[test]
    fn set_keeps_the_backlog() {
        let t0 = Instant::now();
        let mut link = Link::new(capped(100_000), 1);
        // Ten 1250-byte datagrams at 100 kbit/s: 100 ms each, a backlog of a second... but the
        // queue holds 200 ms, so three are accepted (waiting 0, 100 and 200 ms).
        let accepted = (0..10).filter(|_| link.offer(t0, 1250).is_some()).count();
        assert_eq!(accepted, 3);
        link.set(Impairment {
            rate_bps: Some(10_000_000),
            queue: Duration::from_secs(1),
            ..Impairment::default()
        });
        // The fast link still waits for the slow one's backlog (busy until 300 ms).
        assert_eq!(link.offer(t0, 1250), Some(t0 + 301 * MS));
    }

    #[test]
    fn zero_rate_is_a_link_that_is_down_and_extremes_do_not_panic() {
        let t0 = Instant::now();
        let mut down = Link::new(capped(0), 1);
        assert_eq!(down.offer(t0, 100), None);

        let mut extreme = Link::new(
            Impairment {
                loss: 0.0,
                rate_bps: Some(1),
                delay: Duration::MAX,
                queue: Duration::MAX,
            },
            1,
        );
        assert_eq!(extreme.impairment().delay, MAX_DELAY);
        assert_eq!(extreme.impairment().queue, MAX_DELAY);
        // 8 bits at 1 bit/s, then the clamped delay; a second one waits 8 s (within the
        // clamped queue), a third would wait 16 s and is dropped.
        assert_eq!(extreme.offer(t0, 1), Some(t0 + 8 * 1000 * MS + MAX_DELAY));
        assert!(extreme.offer(t0, 1).is_some());
        assert!(extreme.offer(t0, usize::MAX).is_none());
        assert_eq!(Link::new(capped(1), 1).impairment().queue, DEFAULT_QUEUE);
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn to(port: u16, data: &[u8]) -> Transmit {
        use bytes::BytesMut;
        Transmit {
            from: addr(0).ip(),
            to: addr(port),
            data: BytesMut::from(data),
        }
    }

    /// Participant "p" at port 1, "q" at port 2; anything else belongs to nobody.
    fn lookup(participant: &str) -> Vec<SocketAddr> {
        match participant {
            "p" => vec![addr(1)],
            "q" => vec![addr(2)],
            _ => vec![],
        }
    }

    #[test]
    fn only_the_impaired_participants_datagrams_are_touched() {
        let t0 = Instant::now();
        let mut impairments = Impairments::default();
        assert!(impairments.is_empty());
        impairments.set("p", Some(lossy(1.0)));
        assert!(!impairments.is_empty());
        assert!(impairments.downlink(t0, to(1, &[0; 100]), lookup).is_none());
        assert!(impairments.uplink_lost(t0, addr(1), lookup));
        assert!(impairments.downlink(t0, to(2, &[0; 100]), lookup).is_some());
        assert!(!impairments.uplink_lost(t0, addr(2), lookup));

        impairments.set("p", None);
        assert!(impairments.is_empty());
        assert!(impairments.downlink(t0, to(1, &[0; 100]), lookup).is_some());
    }

    #[test]
    fn held_datagrams_come_out_when_due_and_all_at_once_when_cleared() {
        let t0 = Instant::now();
        let mut impairments = Impairments::default();
        impairments.set(
            "p",
            Some(Impairment {
                delay: 30 * MS,
                ..Impairment::default()
            }),
        );
        impairments.set(
            "q",
            Some(Impairment {
                delay: 10 * MS,
                ..Impairment::default()
            }),
        );
        for (i, port) in [1, 2, 1].into_iter().enumerate() {
            assert!(
                impairments
                    .downlink(t0 + i as u32 * MS, to(port, &[i as u8]), lookup)
                    .is_none()
            );
        }
        assert_eq!(impairments.next_release(), Some(t0 + 11 * MS));
        assert!(impairments.pop_due(t0 + 10 * MS).is_none());
        let due = impairments.pop_due(t0 + 11 * MS).expect("q's is due");
        assert_eq!((due.to, &due.data[..]), (addr(2), &[1u8][..]));
        assert_eq!(impairments.next_release(), Some(t0 + 30 * MS));
        let due = impairments.pop_due(t0 + 30 * MS).expect("p's first is due");
        assert_eq!(&due.data[..], &[0u8][..]);

        // Clearing releases the rest at once.
        impairments.set("p", None);
        let released = impairments.pop_due(t0).expect("released");
        assert_eq!(&released.data[..], &[2u8][..]);
        assert!(impairments.pop_due(t0 + Duration::from_secs(1)).is_none());
        impairments.set("q", None);
        assert!(impairments.is_empty());
    }

    #[test]
    fn addresses_found_after_ice_are_impaired() {
        let t0 = Instant::now();
        let mut impairments = Impairments::default();
        impairments.set("p", Some(lossy(1.0)));
        // The router knows no address for "p" yet.
        assert!(!impairments.uplink_lost(t0, addr(1), |_| vec![]));
        // Still remembered as nobody's within the refresh interval...
        assert!(!impairments.uplink_lost(t0 + MS, addr(1), lookup));
        // ...then looked up again.
        assert!(impairments.uplink_lost(t0 + ADDRESS_REFRESH, addr(1), lookup));
        // A never-seen address is looked up at once.
        let mut calls = 0;
        let later = |p: &str| {
            calls += 1;
            if p == "p" {
                vec![addr(1), addr(9)]
            } else {
                vec![]
            }
        };
        assert!(impairments.uplink_lost(t0 + ADDRESS_REFRESH, addr(9), later));
        assert_eq!(calls, 1);
    }
}
