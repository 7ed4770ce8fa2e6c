//! The I/O shell around [`Router`]: one UDP socket for every peer, one thread, one loop.
//!
//! The loop waits for whichever comes first — a datagram, a command from the control plane, or
//! the router's next timer — hands it to the router with the current time, then sends what the
//! router queued. Reads are drained in bounded batches so a flood on the socket cannot starve
//! commands or timers.
//!
//! Tests can impair one participant's path here ([`crate::impair`]): datagrams to it may be
//! dropped or held until a release instant (one more timer in the loop), datagrams from it
//! dropped on arrival. With nothing impaired the only cost is checking an empty table.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::{Command, SfuConfig, SfuEvent, SfuHandle};
use crate::impair::Impairments;
use crate::metrics::SfuMetrics;
use crate::router::Router;

/// Largest datagram we accept; WebRTC keeps packets under the path MTU (~1200-1500 bytes).
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per wake-up before the loop looks at commands and timers again.
const READ_BATCH: usize = 64;
/// Commands queued from the control plane before senders wait.
const COMMAND_QUEUE: usize = 1024;
/// Socket buffer we ask the kernel for, each way. The default (~208 KiB) holds about 150
/// full-size packets: one scheduling hiccup of the SFU thread while a class's teacher sends a
/// keyframe was enough to overflow it (measured with `aula-loadtest`: every subscriber lost
/// the same packets, dropped on arrival). Linux caps this at `net.core.rmem_max`/`wmem_max`;
/// operators raise those for large rooms (see `deploy/`).
const SOCKET_BUFFER: usize = 4 << 20;

pub(crate) fn spawn(
    config: SfuConfig,
) -> std::io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
    let metrics = SfuMetrics::register(&config.registry).map_err(std::io::Error::other)?;
    let std_socket = std::net::UdpSocket::bind(config.udp_bind)?;
    std_socket.set_nonblocking(true)?;
    let sock = socket2::SockRef::from(&std_socket);
    // A smaller buffer than asked for only means less slack, so failures are not fatal.
    if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
        warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER) {
        warn!(error = %e, "cannot enlarge the UDP send buffer");
    }
    info!(
        recv_buffer = sock.recv_buffer_size().unwrap_or_default(),
        send_buffer = sock.send_buffer_size().unwrap_or_default(),
        "media socket buffers"
    );
    let local_addr = std_socket.local_addr()?;
    let advertised = advertised_addrs(&config, local_addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = {
        let _guard = runtime.enter();
        UdpSocket::from_std(std_socket)?
    };
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, events) = mpsc::unbounded_channel();
    info!(%local_addr, ?advertised, "SFU listening");
    std::thread::Builder::new()
        .name("aula-sfu".into())
        .spawn(move || {
            let router = Router::new(local_addr, &advertised, metrics.clone(), Instant::now());
            runtime.block_on(run(socket, router, metrics, command_rx, event_tx));
        })?;
    Ok((
        SfuHandle {
            commands,
            local_addr,
        },
        events,
    ))
}

/// Host candidate addresses: the configured ones, else the bound address, else (bound to the
/// unspecified address) loopback — operators set `advertised_ips` for anything else.
fn advertised_addrs(config: &SfuConfig, local_addr: SocketAddr) -> Vec<SocketAddr> {
    let port = local_addr.port();
    if !config.advertised_ips.is_empty() {
        return config
            .advertised_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
    }
    if local_addr.ip().is_unspecified() {
        return vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)];
    }
    vec![local_addr]
}

async fn run(
    socket: UdpSocket,
    mut router: Router,
    metrics: SfuMetrics,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<SfuEvent>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Tests only; empty (one branch per datagram) unless a test impairs someone.
    let mut impairments = Impairments::default();
    loop {
        flush(&socket, &mut router, &metrics, &events, &mut impairments);
        let deadline = tokio::time::Instant::from_std(router.poll_timeout());
        let release = impairments.next_release();
        let release_at = release.map_or(deadline, tokio::time::Instant::from_std);
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => handle_command(&mut router, &mut impairments, command),
                None => break,
            },
            readable = socket.readable() => {
                if let Err(e) = readable {
                    warn!(error = %e, "socket not readable");
                    continue;
                }
                for _ in 0..READ_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((len, from)) => {
                            let arrived = Instant::now();
                            let addrs_of = |p: &str| router.participant_addrs(p);
                            if !impairments.is_empty()
                                && impairments.uplink_lost(arrived, from, addrs_of)
                            {
                                continue;
                            }
                            metrics.udp_datagrams_received.inc();
                            metrics.udp_bytes_received.inc_by(len as u64);
                            let forwarded_before = metrics.packets_forwarded.get();
                            router.handle_datagram(arrived, from, &buf[..len]);
                            if metrics.packets_forwarded.get() != forwarded_before {
                                // Send this datagram's copies now, to time the whole hop.
                                flush(&socket, &mut router, &metrics, &events, &mut impairments);
                                metrics.forwarding_latency.observe(arrived.elapsed().as_secs_f64());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors from an earlier send surface here on some systems.
                        Err(e) => debug!(error = %e, "recv failed"),
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => router.handle_timeout(Instant::now()),
            // Held datagrams are sent by the flush at the top of the loop.
            () = tokio::time::sleep_until(release_at), if release.is_some() => {}
        }
    }
    info!("SFU stopped: the control plane is gone");
}

fn flush(
    socket: &UdpSocket,
    router: &mut Router,
    metrics: &SfuMetrics,
    events: &mpsc::UnboundedSender<SfuEvent>,
    impairments: &mut Impairments,
) {
    if impairments.is_empty() {
        while let Some((to, data)) = router.poll_transmit() {
            send(socket, metrics, to, &data);
        }
    } else {
        let now = Instant::now();
        // Held datagrams first: anything due now was queued before what the router has.
        while let Some((to, data)) = impairments.pop_due(now) {
            send(socket, metrics, to, &data);
        }
        while let Some((to, data)) = router.poll_transmit() {
            if let Some(data) = impairments.downlink(now, to, data, |p| router.participant_addrs(p))
            {
                send(socket, metrics, to, &data);
            }
        }
    }
    while let Some(event) = router.poll_event() {
        // A closed receiver means the control plane is shutting down; nothing to tell.
        let _ = events.send(event);
    }
}

fn send(socket: &UdpSocket, metrics: &SfuMetrics, to: SocketAddr, data: &[u8]) {
    match socket.try_send_to(data, to) {
        Ok(len) => {
            metrics.udp_datagrams_sent.inc();
            metrics.udp_bytes_sent.inc_by(len as u64);
        }
        Err(e) => {
            metrics.udp_send_errors.inc();
            debug!(%to, error = %e, "send failed");
        }
    }
}

fn handle_command(router: &mut Router, impairments: &mut Impairments, command: Command) {
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
        Command::SetImpairment {
            participant,
            impairment,
            reply,
        } => {
            impairments.set(&participant, impairment);
            let _ = reply.send(Ok(()));
        }
    }
}
