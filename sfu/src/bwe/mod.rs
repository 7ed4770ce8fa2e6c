//! Bandwidth estimation for each subscriber connection: how many bits per second the path from
//! the SFU to that subscriber carries now.
//!
//! - With TWCC (every current browser), the estimate is send-side: `rtc`'s congestion control
//!   interceptor joins each packet we sent with the arrival time the subscriber reported, and our
//!   [`estimator::Estimator`] turns that into a target.
//! - Without TWCC, a receiver may still send REMB (its own estimate); the SFU's tap keeps the
//!   latest ([`remb::remb_of`]). That is the fallback.
//! - With neither, there is no estimate and the allocator forwards the best layers, as before
//!   congestion control existed (e.g. Aula's own load-test clients, which send no feedback).
//!
//! Both are read inside the connection's interceptor chain, which the router cannot reach
//! into, so they are published into a [`SharedEstimate`] the router holds a clone of.

pub mod coverage;
pub mod estimator;
pub mod loss;
pub mod probe;
pub mod remb;
pub mod rtx;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rtc::interceptor::{CongestionControlBuilder, Registry, Slot, TwccSenderBuilder};

use crate::sender_clock::SenderClock;

/// Where a new subscriber's estimate starts: enough for audio and a middle layer, so the first
/// picture comes quickly and the climb to the top layer is a step, not a gamble.
pub const INITIAL_BITRATE: f64 = 1_000_000.0;
/// Floor of the estimate: audio (about 40 kbit/s) must always fit, and a path that carries
/// less than this gets audio only.
pub const MIN_BITRATE: f64 = 50_000.0;
/// Ceiling: far above any class's video, so it never limits, but bounds the arithmetic.
pub const MAX_BITRATE: f64 = 20_000_000.0;

/// The latest TWCC and REMB estimates of one connection, in bits per second (`0` is "none
/// yet"), and the share of packets the path lost at random recently (from TWCC feedback); and
/// what the router asks of the connection's wire end (probe copies, spaced audio copies, the
/// publishers' clocks for its sender reports).
#[derive(Debug, Clone, Default)]
pub struct SharedEstimate(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    twcc: AtomicU64,
    remb: AtomicU64,
    /// `f64` bits.
    loss: AtomicU64,
    /// Every packet of random loss counted so far (see [`loss::Losses`]): the router judges
    /// whether video is hopeless on the counts of a few seconds, not on a share.
    losses: Mutex<loss::Losses>,
    /// Whether the path shows a standing queue (see [`estimator::OVERUSE_QUEUE`]).
    congested: AtomicBool,
    /// Bits per second the router wants added as probe copies ([`probe`]); `f64` bits.
    probe: AtomicU64,
    /// Whether the router wants each RED audio packet sent twice ([`crate::spaced_copies`]).
    spaced_copies: AtomicBool,
    /// The connection's RTX streams, which carry resends and probe copies.
    rtx: Mutex<Vec<u32>>,
    /// What the receiver's feedback reported on (noted by the tap, read by the estimator).
    coverage: Mutex<coverage::FeedbackCoverage>,
    /// Which packets went out twice (noted by `spaced_copies`, read by the estimator).
    doubled: Mutex<coverage::Doubled>,
    /// Per local stream, the publisher's clock its sender reports carry ([`crate::sender_clock`]).
    clocks: Mutex<HashMap<u32, SenderClock>>,
}

impl SharedEstimate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_twcc(&self, bps: f64) {
        self.0.twcc.store(bps.max(1.0) as u64, Ordering::Relaxed);
    }

    pub fn set_remb(&self, bps: f64) {
        self.0.remb.store(bps.max(1.0) as u64, Ordering::Relaxed);
    }

    pub fn set_congested(&self, congested: bool) {
        self.0.congested.store(congested, Ordering::Relaxed);
    }

    pub fn congested(&self) -> bool {
        self.0.congested.load(Ordering::Relaxed)
    }

    pub fn set_loss(&self, loss: f64) {
        self.0.loss.store(loss.to_bits(), Ordering::Relaxed);
    }

    /// Lost share of the packets sent recently while the path showed no queue: random loss,
    /// not a full queue's tail drops (0 before any feedback).
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.0.loss.load(Ordering::Relaxed))
    }

    /// Adds a batch of feedback's counts of random loss to the connection's totals.
    pub fn count_losses(&self, batch: loss::Losses) {
        self.0
            .losses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(batch);
    }

    /// The random loss counted since the connection began.
    pub fn losses(&self) -> loss::Losses {
        *self.0.losses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the rate of probe copies to send on this connection (0 stops probing).
    pub fn set_probe(&self, bps: f64) {
        self.0
            .probe
            .store(bps.max(0.0).to_bits(), Ordering::Relaxed);
    }

    /// Notes that `ssrc` is one of the connection's RTX streams (`bound`) or no longer is.
    pub fn set_rtx_stream(&self, ssrc: u32, bound: bool) {
        let mut streams = self.0.rtx.lock().unwrap_or_else(PoisonError::into_inner);
        streams.retain(|&s| s != ssrc);
        if bound {
            streams.push(ssrc);
        }
    }

    /// The connection's RTX streams.
    pub fn rtx_streams(&self) -> Vec<u32> {
        self.0
            .rtx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A TWCC feedback packet reported on `count` packets from transport-wide number `base`.
    pub fn note_feedback(&self, base: u16, count: u16) {
        self.coverage().note(base, count);
    }

    /// What the receiver's recent feedback reported on.
    pub fn coverage(&self) -> std::sync::MutexGuard<'_, coverage::FeedbackCoverage> {
        self.0
            .coverage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends each RED audio packet a second time, a moment after the first, or stops.
    pub fn set_spaced_copies(&self, on: bool) {
        self.0.spaced_copies.store(on, Ordering::Relaxed);
    }

    pub fn spaced_copies(&self) -> bool {
        self.0.spaced_copies.load(Ordering::Relaxed)
    }

    /// The packet numbered `seq` for transport-wide feedback went out twice.
    pub fn note_doubled(&self, seq: u16) {
        self.doubled().note(seq);
    }

    /// Which packets went out twice, recently.
    pub fn doubled(&self) -> std::sync::MutexGuard<'_, coverage::Doubled> {
        self.0
            .doubled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The publisher's clock for the sender reports of local stream `ssrc`; `None`: `rtc`'s own.
    pub fn set_sender_clock(&self, ssrc: u32, clock: Option<SenderClock>) {
        let mut clocks = self.0.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        match clock {
            Some(clock) => clocks.insert(ssrc, clock),
            None => clocks.remove(&ssrc),
        };
    }

    pub fn sender_clock(&self, ssrc: u32) -> Option<SenderClock> {
        let clocks = self.0.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        clocks.get(&ssrc).copied()
    }

    /// Bits per second of probe copies wanted now (see [`probe`]).
    pub fn probe(&self) -> f64 {
        f64::from_bits(self.0.probe.load(Ordering::Relaxed))
    }

    pub fn twcc(&self) -> Option<f64> {
        read(&self.0.twcc)
    }

    pub fn remb(&self) -> Option<f64> {
        read(&self.0.remb)
    }

    /// The estimate to allocate from: TWCC once its feedback has arrived, else REMB.
    pub fn current(&self) -> Option<f64> {
        self.twcc().or_else(|| self.remb())
    }
}

fn read(cell: &AtomicU64) -> Option<f64> {
    match cell.load(Ordering::Relaxed) {
        0 => None,
        bps => Some(bps as f64),
    }
}

/// Adds send-side congestion control to a subscriber connection's chain: transport-wide
/// sequence numbers on what we send, and the send history joined with the subscriber's TWCC
/// feedback, driving our estimator. (REMB is read by the SFU's tap, which every connection has.)
/// Both also number and record the resends on each stream's RTX stream ([`rtx::WithRtx`]).
///
/// No pacer, deliberately: the media is already paced by each publisher's encoder, and an SFU
/// pacer would hold a teacher's audio behind a burst of keyframe packets. Keeping the sum of
/// forwarded layers under the estimate is the allocator's job (see `forward::allocate`), and it
/// does it by choosing layers rather than by queueing.
pub fn with_congestion_control(registry: Registry, shared: &SharedEstimate) -> Registry {
    let estimator =
        estimator::Estimator::new(INITIAL_BITRATE, MIN_BITRATE, MAX_BITRATE, shared.clone());
    registry
        .with(
            Slot::CongestionControl,
            rtx::WithRtx(CongestionControlBuilder::new(estimator).build()),
        )
        .with(
            Slot::TwccSender,
            rtx::WithRtx(TwccSenderBuilder::new().build()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twcc_wins_over_remb_and_nothing_means_none() {
        let shared = SharedEstimate::new();
        assert_eq!(shared.current(), None);
        shared.set_remb(300_000.0);
        assert_eq!(shared.current(), Some(300_000.0));
        shared.set_twcc(900_000.0);
        assert_eq!(shared.current(), Some(900_000.0));
    }
}
