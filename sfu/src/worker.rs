//! The I/O shell around [`Router`]: one UDP socket for every peer, one thread, one loop.
//!
//! The loop waits for whichever comes first — a datagram, a command from the control plane, or
//! the router's next timer — hands it to the router with the current time, then sends what the
//! router queued, all of it together (`sendmmsg` batches where the kernel has it, see
//! [`MediaSocket::send_all`]). Reads are drained in bounded batches so a flood on the socket
//! cannot starve commands or timers.
//!
//! Tests can impair one participant's path here ([`crate::impair`]): datagrams to it may be
//! dropped or held until a release instant (one more timer in the loop), datagrams from it
//! dropped on arrival. With nothing impaired the only cost is checking an empty table.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::{Command, SfuEvent};
use crate::impair::Impairments;
use crate::metrics::SfuMetrics;
use crate::relay::link::Link;
use crate::router::{RelayTransmit, Router, Seat, Transmit};
use crate::shard::Neighbours;
use crate::shard::handoff::{Arrivals, Handoff};
use crate::shard::pipes::PipeTable;
use crate::shard::placement::{pipe_link, pipe_target};
use crate::udp::{Datagram, MediaSocket, Outgoing, ToSend};

/// Batches (of up to `quinn_udp::BATCH_SIZE` datagrams each) read per wake-up before the loop
/// looks at commands and timers again, so a flood on the socket cannot starve them.
const READ_BATCHES: usize = 4;
/// Commands handled after one that woke the loop, before it sends what they caused.
const COMMAND_BATCH: usize = 64;
/// Socket buffer we ask the kernel for, each way. The default (~208 KiB) holds about 150
/// full-size packets: one scheduling hiccup of the SFU thread while a class's teacher sends a
/// keyframe was enough to overflow it (measured with `aula-loadtest`: every subscriber lost
/// the same packets, dropped on arrival). Linux caps this at `net.core.rmem_max`/`wmem_max`;
/// operators raise those for large rooms (see `deploy/`).
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

/// Where a shard's datagrams come from.
pub(crate) enum Input {
    /// It reads the socket itself, handing other shards their datagrams if there are any
    /// (see [`crate::shard::handoff`]).
    Socket(Option<Handoff>),
    /// The reading shard hands it its datagrams.
    Arrivals(mpsc::Receiver<Arrivals>),
}

/// Everything one shard's thread runs with.
pub(crate) struct Shard {
    /// Its handle of the shared socket: it sends on it, and reads it only with
    /// [`Input::Socket`].
    pub socket: std::net::UdpSocket,
    pub advertised: Vec<SocketAddr>,
    pub metrics: SfuMetrics,
    pub commands: mpsc::Receiver<Command>,
    pub neighbours: Neighbours,
    pub input: Input,
    pub seat: Option<Seat>,
}

/// Starts a shard's thread.
pub(crate) fn spawn(shard: Shard) -> std::io::Result<()> {
    let Shard {
        socket,
        advertised,
        metrics,
        commands,
        neighbours,
        input,
        seat,
    } = shard;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = {
        let _guard = runtime.enter();
        match input {
            Input::Socket(_) => MediaSocket::new(socket)?,
            Input::Arrivals(_) => MediaSocket::sending_only(socket)?,
        }
    };
    if matches!(input, Input::Socket(_)) {
        socket.enlarge_buffers(SOCKET_BUFFER);
        let (recv_buffer, send_buffer) = socket.buffer_sizes();
        info!(recv_buffer, send_buffer, "media socket buffers");
    }
    std::thread::Builder::new()
        .name(format!("aula-sfu-{}", neighbours.index))
        .spawn(move || {
            let mut router = Router::new(&advertised, metrics.clone(), Instant::now());
            if let Some(seat) = seat {
                router = router.seated(seat);
            }
            let io = Io {
                socket,
                input,
                metrics,
                neighbours,
                impairments: Impairments::default(),
                links: Links::default(),
                out: Vec::new(),
            };
            runtime.block_on(run(io, router, commands));
        })?;
    Ok(())
}

/// Host candidate addresses: the configured ones; else the bound address; else (bound to the
/// unspecified address) 127.0.0.1 or ::1 plus every other address of the machine in the
/// socket's family, so that the same default works on this machine and from a second
/// computer on the LAN. IPv6 link-local addresses are left out: a candidate cannot carry
/// their scope.
pub(crate) fn advertised_addrs(
    configured: &[IpAddr],
    local_addr: SocketAddr,
    interfaces: Vec<IpAddr>,
) -> Vec<SocketAddr> {
    let port = local_addr.port();
    if !configured.is_empty() {
        return configured
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
    }
    if !local_addr.ip().is_unspecified() {
        return vec![local_addr];
    }
    let loopback = if local_addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let others = interfaces.into_iter().filter(|ip| {
        ip.is_ipv4() == local_addr.is_ipv4()
            && !ip.is_loopback()
            && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
    });
    std::iter::once(loopback)
        .chain(others)
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The machine's interface addresses; none (with a warning) if they cannot be listed.
pub(crate) fn interface_ips() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(if_addrs::Interface::ip).collect(),
        Err(e) => {
            warn!(error = %e, "cannot list interface addresses; advertising loopback only");
            Vec::new()
        }
    }
}

/// A shard's I/O: its socket handle, where its datagrams come from, its neighbours, and what
/// it sends through.
struct Io {
    socket: MediaSocket,
    input: Input,
    metrics: SfuMetrics,
    neighbours: Neighbours,
    /// Tests only; empty (one branch per datagram) unless a test impairs someone.
    impairments: Impairments,
    /// Links to other nodes, and pipes to other shards, that tracks are exported on.
    links: Links,
    /// A router turn's datagrams, sent together.
    out: Vec<Transmit>,
}

async fn run(mut io: Io, mut router: Router, mut commands: mpsc::Receiver<Command>) {
    let busy = io
        .metrics
        .shard_busy
        .with_label_values(&[&io.neighbours.index.to_string()]);
    let mut woke: Option<Instant> = None;
    loop {
        io.flush(&mut router);
        if let Some(woke) = woke.take() {
            busy.inc_by(woke.elapsed().as_secs_f64());
        }
        let deadline = tokio::time::Instant::from_std(router.poll_timeout());
        let release = io.impairments.next_release();
        let release_at = release.map_or(deadline, tokio::time::Instant::from_std);
        let reads_socket = matches!(io.input, Input::Socket(_));
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                woke = Some(Instant::now());
                io.handle_command(&mut router, command);
                // Commands queued meanwhile (a pipe's packets come in bursts) are handled
                // before the flush, so that their copies go out together.
                for _ in 0..COMMAND_BATCH {
                    let Ok(command) = commands.try_recv() else { break };
                    io.handle_command(&mut router, command);
                }
            }
            readable = io.socket.readable(), if reads_socket => {
                if let Err(e) = readable {
                    warn!(error = %e, "socket not readable");
                    continue;
                }
                woke = Some(Instant::now());
                for _ in 0..READ_BATCHES {
                    if !io.read_batch(&mut router) {
                        break;
                    }
                }
            }
            arrivals = next_arrivals(&mut io.input), if !reads_socket => {
                let Some(arrivals) = arrivals else { break };
                woke = Some(Instant::now());
                io.handle_arrivals(&mut router, &arrivals);
                for _ in 1..READ_BATCHES {
                    let Input::Arrivals(rx) = &mut io.input else { break };
                    let Ok(more) = rx.try_recv() else { break };
                    io.handle_arrivals(&mut router, &more);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                woke = Some(Instant::now());
                router.handle_timeout(Instant::now());
            }
            // Held datagrams are sent by the flush at the top of the loop.
            () = tokio::time::sleep_until(release_at), if release.is_some() => {}
        }
    }
    info!(
        shard = io.neighbours.index,
        "SFU shard stopped: the control plane is gone"
    );
}

/// The next batch from the reading shard (never, when this shard reads the socket).
async fn next_arrivals(input: &mut Input) -> Option<Arrivals> {
    match input {
        Input::Arrivals(rx) => rx.recv().await,
        Input::Socket(_) => std::future::pending().await,
    }
}

impl Io {
    /// Reads one batch from the socket and handles it; false when there was none.
    fn read_batch(&mut self, router: &mut Router) -> bool {
        let arrived = Instant::now();
        let mut forwarding = 0u64;
        let Io {
            socket,
            input,
            metrics,
            impairments,
            ..
        } = self;
        let mut handoff = match input {
            Input::Socket(handoff) => handoff.as_mut(),
            Input::Arrivals(_) => None,
        };
        let received = socket.recv_batch(|datagram| {
            if let Some(handoff) = handoff.as_mut()
                && handoff.take(arrived, &datagram)
            {
                return;
            }
            forwarding += u64::from(receive(router, metrics, impairments, arrived, datagram));
        });
        if let Some(handoff) = handoff {
            handoff.hand_over(metrics);
        }
        match received {
            Ok(0) => return false,
            Ok(_) => {}
            // ICMP errors from an earlier send surface here on some systems.
            Err(e) => {
                debug!(error = %e, "recv failed");
                return false;
            }
        }
        self.sent_forwarded(router, arrived, forwarding);
        true
    }

    /// Handles a batch the reading shard handed to this one.
    fn handle_arrivals(&mut self, router: &mut Router, arrivals: &Arrivals) {
        let mut forwarding = 0u64;
        for datagram in arrivals.iter() {
            let (metrics, impairments) = (&self.metrics, &mut self.impairments);
            forwarding += u64::from(receive(
                router,
                metrics,
                impairments,
                arrivals.arrived,
                datagram,
            ));
        }
        self.sent_forwarded(router, arrivals.arrived, forwarding);
    }

    /// If `forwarding` datagrams of the batch that arrived at `arrived` were forwarded, sends
    /// their copies now, to time the whole hop: from the read to the last copy of each.
    fn sent_forwarded(&mut self, router: &mut Router, arrived: Instant, forwarding: u64) {
        if forwarding == 0 {
            return;
        }
        self.flush(router);
        let latency = arrived.elapsed().as_secs_f64();
        for _ in 0..forwarding {
            self.metrics.forwarding_latency.observe(latency);
        }
    }

    /// Sends what the router queued (datagrams, relay and pipe packets) and routes its events.
    fn flush(&mut self, router: &mut Router) {
        if self.impairments.is_empty() {
            self.out
                .extend(std::iter::from_fn(|| router.poll_transmit()));
        } else {
            let now = Instant::now();
            // Held datagrams first: anything due now was queued before what the router has.
            let impairments = &mut self.impairments;
            self.out
                .extend(std::iter::from_fn(|| impairments.pop_due(now)));
            while let Some(transmit) = router.poll_transmit() {
                if let Some(transmit) =
                    impairments.downlink(now, transmit, |p| router.participant_addrs(p))
                {
                    self.out.push(transmit);
                }
            }
        }
        // Pipe and relay packets first: another shard's thread (or the link) starts on them
        // while this one sends its own copies.
        while let Some(transmit) = router.poll_relay_transmit() {
            self.links.send(&self.neighbours, &self.metrics, transmit);
        }
        send_all(&mut self.socket, &self.metrics, &mut self.out);
        while let Some(event) = router.poll_event() {
            if let SfuEvent::TrackUnpublished { track_sid, .. } = &event {
                self.links.pipes.track_gone(track_sid);
            }
            self.neighbours.route(router, Instant::now(), event);
        }
    }

    fn handle_command(&mut self, router: &mut Router, command: Command) {
        handle_command(router, &mut self.impairments, &mut self.links, command);
    }
}

/// Hands a datagram to the router (unless a test's impairment drops it); whether this router
/// forwarded anything because of it (its own count: the metric is every shard's).
fn receive(
    router: &mut Router,
    metrics: &SfuMetrics,
    impairments: &mut Impairments,
    arrived: Instant,
    datagram: Datagram<'_>,
) -> bool {
    if !impairments.is_empty()
        && impairments.uplink_lost(arrived, datagram.from, |p| router.participant_addrs(p))
    {
        return false;
    }
    metrics.udp_datagrams_received.inc();
    metrics
        .udp_bytes_received
        .inc_by(datagram.data.len() as u64);
    let forwarded = router.forwarded();
    router.handle_datagram(arrived, datagram.from, datagram.to, datagram.data);
    router.forwarded() != forwarded
}

/// Sends a router turn's datagrams together (batched: see [`MediaSocket::send_all`]).
fn send_all(socket: &mut MediaSocket, metrics: &SfuMetrics, queue: &mut Vec<Transmit>) {
    if queue.is_empty() {
        return;
    }
    let calls = socket.send_all(queue, |transmit, result| match result {
        Ok(()) => {
            metrics.udp_datagrams_sent.inc();
            metrics.udp_bytes_sent.inc_by(transmit.data.len() as u64);
        }
        Err(e) => {
            metrics.udp_send_errors.inc();
            debug!(to = %transmit.to, error = %e, "send failed");
        }
    });
    metrics.udp_send_calls.inc_by(calls.calls);
    metrics.udp_partial_sends.inc_by(calls.partial);
    metrics.udp_gso_coalesced.inc_by(calls.coalesced);
    queue.clear();
}

impl ToSend for Transmit {
    fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            from: self.from,
            to: self.to,
            data: &self.data,
        }
    }
}

/// Where exported tracks go: links to other nodes, by the control plane's numbers (see
/// [`crate::relay`]), and pipes to other shards (see [`crate::shard`]), which hand each
/// packet to the other shard's queue under its track's id.
#[derive(Default)]
struct Links {
    nodes: HashMap<u64, Arc<Link>>,
    pipes: PipeTable,
}

impl Links {
    fn send(&self, neighbours: &Neighbours, metrics: &SfuMetrics, transmit: RelayTransmit) {
        if pipe_target(transmit.link).is_some() {
            let Some((shard, track_sid, layer)) = self.pipes.destination(&transmit) else {
                return;
            };
            let command = Command::RelayPacket {
                track_sid: track_sid.clone(),
                layer,
                data: transmit.data,
            };
            // A full queue loses the packet, which the other shard then asks for again.
            if neighbours.send(shard, command) {
                metrics.pipe_packets.inc();
            }
        } else if let Some(link) = self.nodes.get(&transmit.link)
            && let Err(e) = link.send_packet(transmit.flow, &transmit.data)
        {
            debug!(link = transmit.link, error = %e, "relay send failed");
        }
    }
}

fn handle_command(
    router: &mut Router,
    impairments: &mut Impairments,
    links: &mut Links,
    command: Command,
) {
    let now = Instant::now();
    // A dropped reply receiver means the caller gave up waiting; the work is done regardless.
    match command {
        Command::PublishOffer {
            participant,
            sdp,
            tracks,
            reply,
        } => {
            let _ = reply.send(router.publish_offer(now, &participant, sdp, tracks));
        }
        Command::SubscribeAnswer {
            participant,
            sdp,
            reply,
        } => {
            let _ = reply.send(router.subscribe_answer(now, &participant, sdp));
        }
        Command::AddCandidate {
            participant,
            target,
            candidate,
            reply,
        } => {
            let _ = reply.send(router.add_candidate(now, &participant, target, candidate));
        }
        Command::Subscribe {
            participant,
            track_sid,
            reply,
        } => {
            let _ = reply.send(router.subscribe(now, &participant, &track_sid));
        }
        Command::Unsubscribe {
            participant,
            track_sid,
            reply,
        } => {
            let _ = reply.send(router.unsubscribe(now, &participant, &track_sid));
        }
        Command::RemoveParticipant { participant, reply } => {
            router.remove_participant(now, &participant);
            impairments.remove(&participant);
            let _ = reply.send(Ok(()));
        }
        Command::UnpublishTrack { track_sid, reply } => {
            let _ = reply.send(router.unpublish_track(now, &track_sid));
        }
        Command::SetTrackPaused {
            track_sid,
            paused,
            reply,
        } => {
            let _ = reply.send(router.set_track_paused(now, &track_sid, paused));
        }
        Command::RestartIce { participant, reply } => {
            let _ = reply.send(router.restart_ice(now, &participant));
        }
        Command::SetStaff {
            participant,
            staff,
            reply,
        } => {
            router.set_staff(&participant, staff);
            let _ = reply.send(Ok(()));
        }
        Command::SetRenderedSize {
            participant,
            track_sid,
            size,
            reply,
        } => {
            let _ = reply.send(router.set_rendered_size(&participant, &track_sid, size));
        }
        Command::Stats { reply } => {
            let _ = reply.send(Ok(router.stats()));
        }
        Command::NoteSelfMuted { track_sid, muted } => {
            router.note_self_muted(now, &track_sid, muted);
        }
        Command::StartRecording { spec, reply } => {
            let _ = reply.send(router.start_recording(now, spec).map(|()| now));
        }
        Command::RecordParticipant {
            id,
            participant,
            reply,
        } => {
            let _ = reply.send(router.record_participant(now, &id, &participant));
        }
        Command::StopRecording { id, reply } => {
            let _ = reply.send(router.stop_recording(&id));
        }
        Command::SetImpairment {
            participant,
            impairment,
            reply,
        } => {
            impairments.set(&participant, impairment);
            let _ = reply.send(Ok(()));
        }
        Command::RelayExport {
            track_sid,
            link,
            index,
            reply,
        } => {
            links.nodes.entry(link.id).or_insert(link.link);
            let _ = reply.send(router.relay_export(now, &track_sid, link.id, index));
        }
        Command::RelayUnexport { track_sid, link } => router.relay_unexport(&track_sid, link),
        Command::PipeExport {
            track_sid,
            to,
            index,
            reply,
        } => {
            let link = pipe_link(to);
            let exported = router.relay_export(now, &track_sid, link, index);
            if let Ok(track) = &exported {
                links.pipes.insert(link, track.index, track_sid);
            }
            let _ = reply.send(exported);
        }
        Command::Pipe(command) => command.apply(router, now),
        Command::RelayLinkClosed { link } => {
            links.nodes.remove(&link);
            router.relay_link_closed(link);
        }
        Command::RelayImport { track, reply } => {
            let _ = reply.send(router.relay_import(track));
        }
        Command::RelayPacket {
            track_sid,
            layer,
            data,
        } => router.relay_packet(now, &track_sid, layer, &data),
        Command::RequestKeyframe { track_sid, layer } => {
            router.request_keyframe(now, &track_sid, layer);
        }
        Command::RelayResend {
            track_sid,
            link,
            layer,
            seqs,
        } => router.relay_resend(&track_sid, link, layer, &seqs),
        Command::RelayLayerDemand {
            track_sid,
            link,
            layers,
        } => router.relay_layer_demand(Instant::now(), &track_sid, link, layers),
        Command::RelayListenerLoss {
            track_sid,
            link,
            fraction,
        } => router.relay_listener_loss(&track_sid, link, fraction),
        Command::RelaySenderReport {
            track_sid,
            ssrc,
            rtp_time,
        } => router.relay_sender_report(Instant::now(), &track_sid, ssrc, rtp_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn the_unspecified_address_advertises_loopback_and_every_interface() {
        let bound: SocketAddr = "0.0.0.0:7882".parse().unwrap();
        let interfaces = ips(&[
            "127.0.0.1",
            "192.168.1.20",
            "fe80::1",
            "2001:db8::5",
            "10.0.0.3",
        ]);
        let got = advertised_addrs(&[], bound, interfaces.clone());
        let want: Vec<SocketAddr> = ["127.0.0.1:7882", "192.168.1.20:7882", "10.0.0.3:7882"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        let bound6: SocketAddr = "[::]:7882".parse().unwrap();
        let got6 = advertised_addrs(&[], bound6, interfaces);
        let want6: Vec<SocketAddr> = ["[::1]:7882", "[2001:db8::5]:7882"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(got6, want6);
    }

    #[test]
    fn configured_or_bound_addresses_win() {
        let bound: SocketAddr = "0.0.0.0:7882".parse().unwrap();
        let got = advertised_addrs(&ips(&["203.0.113.10"]), bound, ips(&["10.0.0.3"]));
        assert_eq!(
            got,
            vec!["203.0.113.10:7882".parse::<SocketAddr>().unwrap()]
        );
        let specific: SocketAddr = "10.0.0.3:9000".parse().unwrap();
        assert_eq!(
            advertised_addrs(&[], specific, ips(&["10.0.0.4"])),
            vec![specific]
        );
    }
}
