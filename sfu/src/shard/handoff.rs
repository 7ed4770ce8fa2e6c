//! How the datagrams of the one UDP port reach their shards when there are several (see
//! [`crate::shard`]): shard 0 reads the socket, handles its own datagrams at once, and hands
//! each other shard the datagrams of its peers, one hand-off per shard per read batch.
//!
//! A first version had a receive thread of its own that handed every datagram on: measured
//! with `aula-loadtest`, a class of 50 all on one shard then cost a quarter more CPU per
//! forwarded packet than with one shard, the thread wake-ups and the copy of every datagram.
//! Now only the datagrams of peers on other shards pay that.
//!
//! A datagram no shard knows (no route by ufrag or address yet) stays on shard 0, whose
//! router counts and logs it as unroutable, as a single router would.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::directory::Directory;
use crate::metrics::SfuMetrics;
use crate::udp::Datagram;

/// Read batches queued for a shard before the reading shard drops what comes for it (as a
/// full socket buffer would). A batch is at most `quinn_udp::BATCH_SIZE` datagrams.
pub const ARRIVAL_QUEUE: usize = 256;

/// Datagrams for one shard from one read: their addresses and where their bytes are.
pub struct Arrivals {
    pub arrived: Instant,
    bytes: Vec<u8>,
    datagrams: Vec<(SocketAddr, SocketAddr, Range<usize>)>,
}

impl Arrivals {
    fn new(arrived: Instant) -> Self {
        Self {
            arrived,
            bytes: Vec::new(),
            datagrams: Vec::new(),
        }
    }

    fn push(&mut self, datagram: &Datagram<'_>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram.data);
        self.datagrams
            .push((datagram.from, datagram.to, start..self.bytes.len()));
    }

    /// Each datagram, as the socket gave it.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.datagrams.iter().map(|(from, to, range)| Datagram {
            from: *from,
            to: *to,
            data: &self.bytes[range.clone()],
        })
    }
}

/// The reading shard's hand-offs to the others.
pub struct Handoff {
    directory: Arc<Directory>,
    /// Each other shard's queue, by shard number (`None` for the reading shard itself).
    queues: Vec<Option<mpsc::Sender<Arrivals>>>,
    pending: Vec<Option<Arrivals>>,
}

impl Handoff {
    pub fn new(directory: Arc<Directory>, queues: Vec<Option<mpsc::Sender<Arrivals>>>) -> Self {
        let pending = queues.iter().map(|_| None).collect();
        Self {
            directory,
            queues,
            pending,
        }
    }

    /// Keeps `datagram` for the shard it belongs to, if that is another one; false if it is
    /// the reading shard's to handle (or no shard's).
    pub fn take(&mut self, arrived: Instant, datagram: &Datagram<'_>) -> bool {
        let shard = self.directory.shard_for(datagram.from, datagram.data);
        let Some(shard) = shard.filter(|&k| self.queues.get(k).is_some_and(Option::is_some)) else {
            return false;
        };
        self.pending[shard]
            .get_or_insert_with(|| Arrivals::new(arrived))
            .push(datagram);
        true
    }

    /// Hands each shard what was kept for it. A shard whose queue is full loses its batch,
    /// counted in `aula_shard_dropped_datagrams_total`.
    pub fn hand_over(&mut self, metrics: &SfuMetrics) {
        for (shard, (queue, pending)) in self.queues.iter().zip(&mut self.pending).enumerate() {
            let (Some(queue), Some(batch)) = (queue, pending.take()) else {
                continue;
            };
            let count = batch.datagrams.len() as u64;
            if queue.try_send(batch).is_err() {
                metrics
                    .shard_dropped
                    .with_label_values(&[&shard.to_string()])
                    .inc_by(count);
            }
        }
    }
}
