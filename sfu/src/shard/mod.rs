//! One router shard per core (issue 15): the SFU's participants spread over several
//! [`Router`]s, each on its own thread, all behind one UDP port.
//!
//! - **Placement** ([`placement`]): a participant lives on one shard, with both its
//!   connections; rooms stay whole on one shard while it is not much busier than the others,
//!   and a large class spreads over all of them.
//! - **Pipes** ([`pipes`]): a subscriber on another shard than the track it subscribes to gets
//!   it through a pipe, which is a relay link (see [`crate::router::relay`]) that stays in
//!   the process: the track's home shard hands each packet once to every shard with
//!   subscribers for it, and each shard runs its own subscribers' layer choice, congestion
//!   control and encryption, as a relay node does. One abstraction for shards and nodes
//!   means one code path to trust, and that a relay node's imported class spreads over its
//!   shards like a local one.
//! - **One port** ([`handoff`], [`directory`]): with more than one shard, shard 0 reads the
//!   socket in batches, handles its own datagrams at once and hands each other shard its
//!   datagrams by the routes the shards' routers keep in a shared directory; each shard sends
//!   on its own handle of the same socket. `SO_REUSEPORT` would spread datagrams by a hash
//!   of their addresses, which knows nothing of which shard has the peer (that needs a BPF
//!   program per placement change), and a receive thread of its own cost every datagram a
//!   hand-off (measured: see [`handoff`]). With one shard it reads the socket alone, as
//!   before.
//!
//! The control plane sees none of this: [`crate::SfuHandle`] routes each command to the
//! shard of the participant or track it names.

pub mod directory;
pub(crate) mod handoff;
pub mod pipes;
pub mod placement;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::api::{Command, SfuConfig, SfuError, SfuEvent, SfuHandle};
use crate::metrics::SfuMetrics;
use crate::router::{Router, Seat};
use directory::Directory;
use handoff::Handoff;
use placement::Placement;

/// Commands queued for each shard before senders wait (or, for media, drop).
const COMMAND_QUEUE: usize = 1024;

/// The shards' command queues and where everything is placed: what [`SfuHandle`] holds.
pub(crate) struct Shards {
    commands: Vec<mpsc::Sender<Command>>,
    placement: Arc<Mutex<Placement>>,
    /// Opening a pipe takes two round trips (export at home, import on the subscriber's
    /// shard); subscribers to a track on another shard wait their turn here, so that none
    /// subscribes before the import is done.
    pub(crate) pipe_setup: tokio::sync::Mutex<()>,
    metrics: SfuMetrics,
}

impl Shards {
    pub(crate) fn count(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn placement(&self) -> MutexGuard<'_, Placement> {
        self.placement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the per-shard participant gauge after a placement change.
    pub(crate) fn note_load(&self) {
        let load = self.placement().load().to_vec();
        for (shard, participants) in load.into_iter().enumerate() {
            self.metrics
                .shard_participants
                .with_label_values(&[&shard.to_string()])
                .set(participants as i64);
        }
    }

    /// Sends shard `shard` a command and waits for its reply.
    pub(crate) async fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        let queue = self.commands.get(shard).ok_or(SfuError::Stopped)?;
        queue
            .send(make(reply))
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Queues a command without waiting (see [`SfuHandle`]'s relay methods); false if the
    /// queue is full or the shard stopped.
    pub(crate) fn try_send(&self, shard: usize, command: Command) -> bool {
        self.commands
            .get(shard)
            .is_some_and(|queue| queue.try_send(command).is_ok())
    }
}

/// A shard's view of the others, to carry out what its events mean for them ([`pipes`]).
/// Holds the others' queues weakly, so that dropping every [`SfuHandle`] still stops the
/// shards.
pub(crate) struct Neighbours {
    pub index: usize,
    placement: Arc<Mutex<Placement>>,
    queues: Vec<mpsc::WeakSender<Command>>,
    events: mpsc::UnboundedSender<SfuEvent>,
}

impl Neighbours {
    /// Routes one of this shard's events: up to the control plane, and to other shards
    /// (commands for this shard itself are applied to `router` at once).
    pub fn route(&self, router: &mut Router, now: Instant, event: SfuEvent) {
        let routed = {
            let mut placement = self
                .placement
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pipes::route(&mut placement, self.index, event)
        };
        if let Some(event) = routed.up {
            // A closed receiver means the control plane is shutting down; nothing to tell.
            let _ = self.events.send(event);
        }
        for (shard, command) in routed.commands {
            if shard == self.index {
                command.apply(router, now);
            } else if !self.send(shard, Command::Pipe(command)) {
                warn!(shard, "a shard's queue is full; a pipe command was dropped");
            }
        }
    }

    /// Queues a command for another shard without waiting; false if it could not.
    pub fn send(&self, shard: usize, command: Command) -> bool {
        self.queues
            .get(shard)
            .and_then(mpsc::WeakSender::upgrade)
            .is_some_and(|queue| queue.try_send(command).is_ok())
    }
}

/// Binds the UDP port and starts `config.workers` shards (at least one) behind it.
pub(crate) fn start(
    config: SfuConfig,
) -> std::io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
    let metrics = SfuMetrics::register(&config.registry).map_err(std::io::Error::other)?;
    let socket = std::net::UdpSocket::bind(config.udp_bind)?;
    let local_addr = socket.local_addr()?;
    let advertised = crate::worker::advertised_addrs(
        &config.advertised_ips,
        local_addr,
        crate::worker::interface_ips(),
    );
    let workers = config.workers.max(1);
    let (event_tx, events) = mpsc::unbounded_channel();
    let (commands, command_rxs): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::channel(COMMAND_QUEUE)).unzip();
    let placement = Arc::new(Mutex::new(Placement::new(workers)));
    let directory = Arc::new(Directory::default());
    // Shard 0 reads the socket; every other shard gets its datagrams from it.
    let (arrival_txs, mut arrival_rxs): (Vec<_>, Vec<_>) = (0..workers)
        .map(|index| match index {
            0 => (None, None),
            _ => {
                let (tx, rx) = mpsc::channel(handoff::ARRIVAL_QUEUE);
                (Some(tx), Some(rx))
            }
        })
        .unzip();
    let mut handoff = (workers > 1).then(|| Handoff::new(directory.clone(), arrival_txs));
    for (index, command_rx) in command_rxs.into_iter().enumerate() {
        let neighbours = Neighbours {
            index,
            placement: placement.clone(),
            queues: commands.iter().map(mpsc::Sender::downgrade).collect(),
            events: event_tx.clone(),
        };
        let input = match arrival_rxs[index].take() {
            Some(rx) => crate::worker::Input::Arrivals(rx),
            None => crate::worker::Input::Socket(handoff.take()),
        };
        let seat = (workers > 1).then(|| Seat {
            index,
            directory: directory.clone(),
        });
        crate::worker::spawn(crate::worker::Shard {
            socket: socket.try_clone()?,
            advertised: advertised.clone(),
            metrics: metrics.clone(),
            commands: command_rx,
            neighbours,
            input,
            seat,
        })?;
    }
    info!(%local_addr, ?advertised, workers, "SFU listening");
    let shards = Shards {
        commands,
        placement,
        pipe_setup: tokio::sync::Mutex::new(()),
        metrics,
    };
    shards.note_load();
    Ok((
        SfuHandle {
            shards: Arc::new(shards),
            local_addr,
        },
        events,
    ))
}
