//! The QUIC link between two nodes: a quinn endpoint on one UDP socket, connections to and from
//! peer nodes over mutual TLS (`tls`), each with a control stream and media datagrams
//! (`framing`), a keepalive that notices a dead path within seconds, and per-link metrics.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AsyncUdpSocket, ConnectionError, SendDatagramError, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, watch};

use super::framing::{self, Control, FrameError, Hello, PacketKind};
use super::tls::{self, NodeTls};

/// The largest RTP packet a link must carry whole. WebRTC senders keep RTP packets to about
/// 1200 bytes (libwebrtc's default maximum, SRTP overhead included) so that they cross any
/// Internet path; 1300 leaves room for the header extensions the SFU adds or rewrites.
pub const MAX_RTP_PACKET: usize = 1300;

/// The UDP payload size links start with (quinn's `initial_mtu`). A datagram frame costs, at
/// most: 1 byte of short header + 8 of connection id (quinn's default length) + 4 of packet
/// number + 16 of AEAD tag, + 1 frame type + 2 length = 32 bytes, and the flow id 4 more (flow
/// ids below 2^30): 1300 + 36 = 1336 <= 1400. 1400 bytes of UDP payload are 1448 on the wire
/// over IPv6, within the 1500-byte MTU of data-centre paths with room for a tunnel header; a
/// path that cannot carry it is caught by quinn's black-hole detection, which falls back to
/// 1200 (then the largest packets are counted as `too_large` drops). MTU discovery (on by
/// default) may raise it up to 1452.
const INITIAL_MTU: u16 = 1400;

/// Datagram bytes a link queues before it drops the oldest: about 200 ms of a class with two
/// cameras' three layers and a screen (5 Mbit/s).
const DATAGRAM_SEND_BUFFER: usize = 128 * 1024;

/// How long an accepted connection may take to complete its handshake and say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The error code a node closes a link with when it refuses the peer's hello.
const REFUSED: VarInt = VarInt::from_u32(1);

/// Keepalive and idle timeout: with no packet from the peer for `idle_timeout`, the link is
/// down. Keepalives every `keep_alive` keep a healthy idle link from timing out, and several fit
/// in one timeout, so a few lost ones do not bring a link down.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

impl Default for LinkConfig {
    /// A blackholed link is reported down within 3 s: long enough for three keepalives on a
    /// lossy intercontinental path (RTT 150-300 ms), short enough for students to recover
    /// within the SDK's reconnect window.
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link socket: {0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("QUIC configuration: {0}")]
    Config(String),
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("control stream: {0}")]
    Control(String),
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    #[error("the endpoint is closed")]
    EndpointClosed,
}

/// Whether a link is usable. `Down` carries why: `TimedOut` is a dead or blackholed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down(ConnectionError),
}

/// Per-link metrics, labelled by the peer's node id; registered once per registry.
#[derive(Clone)]
pub struct RelayMetrics {
    datagrams_sent: IntCounterVec,
    bytes_sent: IntCounterVec,
    datagrams_received: IntCounterVec,
    bytes_received: IntCounterVec,
    /// `reason` = too_large (over the path's datagram size), refused (quinn did not take it:
    /// link closed), malformed (received, not a flow id and RTP/RTCP packet).
    datagrams_dropped: IntCounterVec,
    control_malformed: IntCounterVec,
    rtt: GaugeVec,
    up: IntGaugeVec,
    /// Tracks carried, by `direction` (`out`: sent to the peer, `in`: from it).
    tracks: IntGaugeVec,
}

impl RelayMetrics {
    /// Creates and registers the metrics. Fails only if `registry` already holds them.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let rtt = GaugeVec::new(
            Opts::new(
                "aula_relay_rtt_seconds",
                "Smoothed RTT of each inter-node link (quinn)",
            ),
            &["peer"],
        )?;
        registry.register(Box::new(rtt.clone()))?;
        let up = IntGaugeVec::new(
            Opts::new(
                "aula_relay_link_up",
                "1 while the link to a peer node is up",
            ),
            &["peer"],
        )?;
        registry.register(Box::new(up.clone()))?;
        let tracks = IntGaugeVec::new(
            Opts::new(
                "aula_relay_tracks",
                "Tracks carried on the link to a peer node, by direction (out, in)",
            ),
            &["peer", "direction"],
        )?;
        registry.register(Box::new(tracks.clone()))?;
        Ok(Self {
            datagrams_sent: counter(
                "aula_relay_datagrams_sent_total",
                "Datagrams sent to a peer node",
                &["peer"],
            )?,
            bytes_sent: counter(
                "aula_relay_bytes_sent_total",
                "Datagram bytes sent to a peer node",
                &["peer"],
            )?,
            datagrams_received: counter(
                "aula_relay_datagrams_received_total",
                "Datagrams received from a peer node",
                &["peer"],
            )?,
            bytes_received: counter(
                "aula_relay_bytes_received_total",
                "Datagram bytes received from a peer node",
                &["peer"],
            )?,
            datagrams_dropped: counter(
                "aula_relay_datagrams_dropped_total",
                "Datagrams dropped on a link, by reason",
                &["peer", "reason"],
            )?,
            control_malformed: counter(
                "aula_relay_control_malformed_total",
                "Malformed control messages skipped",
                &["peer"],
            )?,
            rtt,
            up,
            tracks,
        })
    }
}

/// A node's end of its links: one UDP socket, accepting peers and connecting to them.
pub struct RelayEndpoint {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    node_id: String,
    region: String,
    metrics: RelayMetrics,
}

impl RelayEndpoint {
    /// An endpoint for node `node_id` (whose certificate `tls` holds) on `socket`.
    pub fn bind(
        socket: std::net::UdpSocket,
        node_id: &str,
        region: &str,
        tls: &NodeTls,
        config: &LinkConfig,
        metrics: RelayMetrics,
    ) -> Result<Self, LinkError> {
        let socket = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        Self::with_socket(socket, node_id, region, tls, config, metrics)
    }

    /// Like [`bind`](Self::bind) on a socket of the caller's: an impairment layer (delay, loss)
    /// for load tests, or a blackhole in tests.
    pub fn with_socket(
        socket: Arc<dyn AsyncUdpSocket>,
        node_id: &str,
        region: &str,
        tls: &NodeTls,
        config: &LinkConfig,
        metrics: RelayMetrics,
    ) -> Result<Self, LinkError> {
        let transport = Arc::new(transport_config(config)?);
        let server_crypto = QuicServerConfig::try_from(tls.server.clone())
            .map_err(|e| LinkError::Config(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = QuicClientConfig::try_from(tls.client.clone())
            .map_err(|e| LinkError::Config(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self {
            endpoint,
            client,
            node_id: node_id.to_string(),
            region: region.to_string(),
            metrics,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Opens a link to node `peer_node_id` at `addr` for `room` under lease `epoch`: the TLS
    /// handshake (the peer must hold a cluster certificate naming `peer_node_id`), then hellos
    /// both ways. Bounded by the idle timeout when the peer does not answer.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        peer_node_id: &str,
        room: &str,
        epoch: u64,
    ) -> Result<Link, LinkError> {
        let server_name = tls::node_server_name(peer_node_id)?.to_str().into_owned();
        let conn = self
            .endpoint
            .connect_with(self.client.clone(), addr, &server_name)?
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = Hello {
            node_id: self.node_id.clone(),
            region: self.region.clone(),
            room: room.to_string(),
            epoch,
        };
        write_control(&mut send, &Control::Hello(hello)).await?;
        let reply = match read_control(&mut recv).await {
            Err(LinkError::Connection(ConnectionError::ApplicationClosed(close)))
                if close.error_code == REFUSED =>
            {
                return Err(LinkError::Refused(
                    String::from_utf8_lossy(&close.reason).into_owned(),
                ));
            }
            reply => reply?,
        };
        let Control::Hello(peer) = reply else {
            return Err(LinkError::Control(
                "the first message is not a hello".into(),
            ));
        };
        if peer.node_id != peer_node_id {
            // Its certificate names `peer_node_id` (TLS checked), but it says otherwise.
            return Err(LinkError::Control(format!(
                "{} answered as {}",
                peer_node_id, peer.node_id
            )));
        }
        peer.check_epoch(epoch)?;
        Ok(Link::new(conn, peer, send, recv, &self.metrics))
    }

    /// Accepts the next link from a peer node. `current_epoch` gives the newest lease epoch this
    /// node knows for a room (`None`: not a room it serves); a hello for an unknown room, with an
    /// older epoch, or claiming a node id its certificate does not name is refused: the peer's
    /// `connect` fails with [`LinkError::Refused`], and so does this call.
    pub async fn accept(
        &self,
        current_epoch: impl Fn(&str) -> Option<u64>,
    ) -> Result<Link, LinkError> {
        let incoming = self.incoming().await?;
        self.establish(incoming, current_epoch).await
    }

    /// The next connection attempt, not yet handshaken: a node accepting links hands each to
    /// [`RelayEndpoint::establish`] in a task of its own, so that an attempt that stalls (a
    /// scanner sending one Initial, a peer that never says hello) holds up no other.
    pub async fn incoming(&self) -> Result<quinn::Incoming, LinkError> {
        self.endpoint
            .accept()
            .await
            .ok_or(LinkError::EndpointClosed)
    }

    /// The TLS handshake and hellos of an attempt [`RelayEndpoint::incoming`] returned, as
    /// [`RelayEndpoint::accept`] describes; bounded by [`HELLO_TIMEOUT`].
    pub async fn establish(
        &self,
        incoming: quinn::Incoming,
        current_epoch: impl Fn(&str) -> Option<u64>,
    ) -> Result<Link, LinkError> {
        tokio::time::timeout(HELLO_TIMEOUT, self.handshake(incoming, current_epoch))
            .await
            .map_err(|_| LinkError::Control("no hello in time".into()))?
    }

    async fn handshake(
        &self,
        incoming: quinn::Incoming,
        current_epoch: impl Fn(&str) -> Option<u64>,
    ) -> Result<Link, LinkError> {
        let conn = incoming.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let Control::Hello(hello) = read_control(&mut recv).await? else {
            return Err(refuse(&conn, "the first message is not a hello".into()));
        };
        if !peer_cert(&conn).is_some_and(|cert| tls::cert_names_node(&cert, &hello.node_id)) {
            let reason = format!("the certificate does not name node {}", hello.node_id);
            return Err(refuse(&conn, reason));
        }
        let Some(current) = current_epoch(&hello.room) else {
            return Err(refuse(
                &conn,
                format!("room {} is not served here", hello.room),
            ));
        };
        if let Err(e) = hello.check_epoch(current) {
            return Err(refuse(&conn, e.to_string()));
        }
        let reply = Hello {
            node_id: self.node_id.clone(),
            region: self.region.clone(),
            room: hello.room.clone(),
            epoch: hello.epoch,
        };
        write_control(&mut send, &Control::Hello(reply)).await?;
        Ok(Link::new(conn, hello, send, recv, &self.metrics))
    }

    /// Closes every link of this endpoint at once, telling the peers.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(0), b"node shutting down");
    }
}

/// Closes `conn` as refused, telling the peer why; the error to return.
fn refuse(conn: &quinn::Connection, reason: String) -> LinkError {
    conn.close(REFUSED, reason.as_bytes());
    LinkError::Refused(reason)
}

/// The peer's end-entity certificate (verified by TLS as issued by the cluster CA).
fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.into_iter().next()
}

fn transport_config(config: &LinkConfig) -> Result<TransportConfig, LinkError> {
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|e| LinkError::Config(e.to_string()))?;
    let mut transport = TransportConfig::default();
    transport
        .keep_alive_interval(Some(config.keep_alive))
        .max_idle_timeout(Some(idle))
        .initial_mtu(INITIAL_MTU)
        // One stream per link, the control stream; media goes in datagrams.
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        // Media that waits is media lost: a short queue, so that what cannot be sent now is
        // dropped now, not after seconds in the send buffer (quinn's default is 1 MiB).
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        // A long path loses packets at random without being congested; a loss-based
        // controller (quinn's default, Cubic) then holds a 150 ms, 1 % loss link to about
        // 1 Mbit/s, less than one class's camera layers (measured in the relay benchmark: the
        // link collapsed). BBR paces to the measured bottleneck rate and RTT instead.
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Ok(transport)
}

async fn write_control(send: &mut quinn::SendStream, message: &Control) -> Result<(), LinkError> {
    send.write_all(&message.encode())
        .await
        .map_err(|e| LinkError::Control(e.to_string()))
}

/// Reads one control message. A malformed body is [`LinkError::Frame`] with the stream still in
/// step (its length was read); anything else wrong ends the stream.
async fn read_control(recv: &mut quinn::RecvStream) -> Result<Control, LinkError> {
    let mut header = [0u8; 4];
    read_exact(recv, &mut header).await?;
    let mut body = vec![0u8; framing::control_len(header)?];
    read_exact(recv, &mut body).await?;
    Ok(Control::decode(&body)?)
}

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), LinkError> {
    use quinn::{ReadError, ReadExactError};
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(ReadExactError::ReadError(ReadError::ConnectionLost(e))) => {
            Err(LinkError::Connection(e))
        }
        Err(e) => Err(LinkError::Control(e.to_string())),
    }
}

/// A datagram received on a link: the packet shares the datagram's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    pub flow: u64,
    pub kind: PacketKind,
    pub packet: Bytes,
}

/// One link to a peer node: datagrams, the control stream, its state.
pub struct Link {
    conn: quinn::Connection,
    peer: Hello,
    control_send: Mutex<quinn::SendStream>,
    control_recv: Mutex<quinn::RecvStream>,
    state: watch::Receiver<LinkState>,
    metrics: LinkMetrics,
}

/// The metrics of one link, resolved for its peer's label.
struct LinkMetrics {
    datagrams_sent: prometheus::IntCounter,
    bytes_sent: prometheus::IntCounter,
    datagrams_received: prometheus::IntCounter,
    bytes_received: prometheus::IntCounter,
    too_large: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    malformed: prometheus::IntCounter,
    control_malformed: prometheus::IntCounter,
    tracks_out: prometheus::IntGauge,
    tracks_in: prometheus::IntGauge,
    #[cfg(test)]
    up: prometheus::IntGauge,
}

/// How often a link's RTT gauge is refreshed from quinn's path stats.
const RTT_REFRESH: Duration = Duration::from_secs(1);

impl Link {
    fn new(
        conn: quinn::Connection,
        peer: Hello,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        metrics: &RelayMetrics,
    ) -> Self {
        let id = peer.node_id.as_str();
        let (state_tx, state) = watch::channel(LinkState::Up);
        tokio::spawn(watch_link(
            conn.clone(),
            state_tx,
            metrics.rtt.with_label_values(&[id]),
            metrics.up.with_label_values(&[id]),
        ));
        let dropped = |reason| metrics.datagrams_dropped.with_label_values(&[id, reason]);
        let link_metrics = LinkMetrics {
            datagrams_sent: metrics.datagrams_sent.with_label_values(&[id]),
            bytes_sent: metrics.bytes_sent.with_label_values(&[id]),
            datagrams_received: metrics.datagrams_received.with_label_values(&[id]),
            bytes_received: metrics.bytes_received.with_label_values(&[id]),
            too_large: dropped("too_large"),
            refused: dropped("refused"),
            malformed: dropped("malformed"),
            control_malformed: metrics.control_malformed.with_label_values(&[id]),
            tracks_out: metrics.tracks.with_label_values(&[id, "out"]),
            tracks_in: metrics.tracks.with_label_values(&[id, "in"]),
            #[cfg(test)]
            up: metrics.up.with_label_values(&[id]),
        };
        Self {
            conn,
            peer,
            control_send: Mutex::new(send),
            control_recv: Mutex::new(recv),
            state,
            metrics: link_metrics,
        }
    }

    /// The peer's hello: its node id (as its certificate names it), region, room and epoch.
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// The link's state, changing to `Down` once when the connection ends.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// The largest datagram the path takes now (flow id included), `None` if the peer refused
    /// datagrams altogether.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    /// Sends one RTP or RTCP packet on `flow`, unreliably: false (and counted as dropped) if it
    /// does not fit the path or the link cannot take it. Media is sent at once or never, so
    /// there is no waiting here; quinn paces what it queued under its congestion control.
    pub fn send_packet(&self, flow: u64, packet: &[u8]) -> Result<bool, FrameError> {
        let datagram = framing::encode_datagram(flow, packet)?;
        let len = datagram.len() as u64;
        match self.conn.send_datagram(Bytes::from(datagram)) {
            Ok(()) => {
                self.metrics.datagrams_sent.inc();
                self.metrics.bytes_sent.inc_by(len);
                Ok(true)
            }
            Err(SendDatagramError::TooLarge) => {
                self.metrics.too_large.inc();
                Ok(false)
            }
            Err(_) => {
                self.metrics.refused.inc();
                Ok(false)
            }
        }
    }

    /// The next well-formed packet from the peer; malformed datagrams are counted and skipped.
    /// Fails once the link is down.
    pub async fn recv_packet(&self) -> Result<ReceivedPacket, LinkError> {
        loop {
            let datagram = self.conn.read_datagram().await?;
            self.metrics.datagrams_received.inc();
            self.metrics.bytes_received.inc_by(datagram.len() as u64);
            match framing::decode_datagram(&datagram) {
                Ok(decoded) => {
                    let start = datagram.len() - decoded.packet.len();
                    return Ok(ReceivedPacket {
                        flow: decoded.flow,
                        kind: decoded.kind,
                        packet: datagram.slice(start..),
                    });
                }
                Err(e) => {
                    self.metrics.malformed.inc();
                    tracing::debug!(peer = %self.peer.node_id, "malformed datagram dropped: {e}");
                }
            }
        }
    }

    pub async fn send_control(&self, message: &Control) -> Result<(), LinkError> {
        write_control(&mut *self.control_send.lock().await, message).await
    }

    /// The next well-formed control message; malformed ones are counted and skipped. Fails
    /// when the stream is broken (e.g. an oversized length) or the link is down.
    pub async fn recv_control(&self) -> Result<Control, LinkError> {
        let mut recv = self.control_recv.lock().await;
        loop {
            match read_control(&mut recv).await {
                Err(LinkError::Frame(e @ FrameError::MalformedControl(_))) => {
                    self.metrics.control_malformed.inc();
                    tracing::debug!(peer = %self.peer.node_id, "malformed control message skipped: {e}");
                }
                result => return result,
            }
        }
    }

    /// Sets how many tracks the link carries each way, for `aula_relay_tracks`; the control
    /// plane keeps the count.
    pub fn set_tracks(&self, out: usize, inbound: usize) {
        self.metrics.tracks_out.set(out as i64);
        self.metrics.tracks_in.set(inbound as i64);
    }

    /// Smoothed RTT of the path (quinn's estimate).
    pub fn rtt(&self) -> Duration {
        self.conn.stats().path.rtt
    }

    /// Closes the link, telling the peer.
    pub fn close(&self) {
        self.conn.close(VarInt::from_u32(0), b"link closed");
    }

    /// Writes raw bytes on the datagram path, bypassing framing: to test the peer's decoder.
    #[cfg(test)]
    fn send_raw_datagram(&self, bytes: &'static [u8]) {
        self.conn.send_datagram(Bytes::from_static(bytes)).unwrap();
    }

    /// Writes raw bytes on the control stream, bypassing framing: to test the peer's decoder.
    #[cfg(test)]
    async fn send_raw_control(&self, bytes: &[u8]) {
        self.control_send
            .lock()
            .await
            .write_all(bytes)
            .await
            .unwrap();
    }
}

/// Follows a link until its connection ends: RTT and up gauges, then `Down` with the reason.
async fn watch_link(
    conn: quinn::Connection,
    state: watch::Sender<LinkState>,
    rtt: prometheus::Gauge,
    up: prometheus::IntGauge,
) {
    up.set(1);
    let mut refresh = tokio::time::interval(RTT_REFRESH);
    let reason = loop {
        tokio::select! {
            reason = conn.closed() => break reason,
            _ = refresh.tick() => rtt.set(conn.stats().path.rtt.as_secs_f64()),
        }
    };
    up.set(0);
    tracing::info!(peer = ?conn.remote_address(), "relay link down: {reason}");
    state.send_replace(LinkState::Down(reason));
}

#[cfg(test)]
mod tests;
