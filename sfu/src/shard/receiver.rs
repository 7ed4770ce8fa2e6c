//! The receive thread of a multi-shard SFU: reads the shared socket in batches and hands each
//! shard its datagrams, one hand-off per shard per batch (see [`crate::shard`]).
//!
//! A datagram no shard knows (no route by ufrag or address yet) goes to shard 0, whose router
//! counts and logs it as unroutable, as a single router would.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::directory::Directory;
use crate::metrics::SfuMetrics;
use crate::udp::{Datagram, MediaSocket};

/// Read batches queued for a shard before the receive thread drops what comes for it (as a
/// full socket buffer would). A batch is at most `quinn_udp::BATCH_SIZE` datagrams.
pub const ARRIVAL_QUEUE: usize = 256;
/// Batches read per wake-up before waiting again (as in [`crate::worker`]).
const READ_BATCHES: usize = 4;

/// Datagrams for one shard from one read: their addresses and where their bytes are.
pub struct Arrivals {
    pub arrived: Instant,
    pub bytes: Vec<u8>,
    pub datagrams: Vec<(SocketAddr, SocketAddr, Range<usize>)>,
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

pub fn spawn(
    socket: std::net::UdpSocket,
    directory: Arc<Directory>,
    shards: Vec<mpsc::Sender<Arrivals>>,
    metrics: SfuMetrics,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = {
        let _guard = runtime.enter();
        MediaSocket::new(socket)?
    };
    socket.enlarge_buffers(crate::worker::SOCKET_BUFFER);
    let (recv_buffer, send_buffer) = socket.buffer_sizes();
    info!(recv_buffer, send_buffer, "media socket buffers");
    std::thread::Builder::new()
        .name("aula-sfu-recv".into())
        .spawn(move || runtime.block_on(run(socket, &directory, &shards, &metrics)))?;
    Ok(())
}

async fn run(
    mut socket: MediaSocket,
    directory: &Directory,
    shards: &[mpsc::Sender<Arrivals>],
    metrics: &SfuMetrics,
) {
    loop {
        if let Err(e) = socket.readable().await {
            warn!(error = %e, "socket not readable");
            continue;
        }
        for _ in 0..READ_BATCHES {
            let arrived = Instant::now();
            let mut batches: Vec<Arrivals> =
                shards.iter().map(|_| Arrivals::new(arrived)).collect();
            let received = socket.recv_batch(|datagram| {
                let shard = directory
                    .shard_for(datagram.from, datagram.data)
                    .filter(|&k| k < batches.len())
                    .unwrap_or(0);
                batches[shard].push(&datagram);
            });
            match received {
                Ok(0) => break,
                Ok(_) => {}
                // ICMP errors from an earlier send surface here on some systems.
                Err(e) => {
                    debug!(error = %e, "recv failed");
                    break;
                }
            }
            for (shard, (queue, batch)) in shards.iter().zip(batches).enumerate() {
                if batch.datagrams.is_empty() {
                    continue;
                }
                let count = batch.datagrams.len() as u64;
                match queue.try_send(batch) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => metrics
                        .shard_dropped
                        .with_label_values(&[&shard.to_string()])
                        .inc_by(count),
                    // Every shard stops together, when the control plane is gone.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        info!("SFU receive thread stopped: the shards are gone");
                        return;
                    }
                }
            }
        }
    }
}
