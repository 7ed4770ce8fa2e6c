//! Links between two endpoints on loopback, with certificates from test CAs. Every wait is
//! bounded by [`within`].

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit};

use super::*;
use crate::relay::tls::{PemCert, generate_ca, issue_node_cert};

const ROOM: &str = "maths";
const EPOCH: u64 = 3;

/// Fails the test instead of hanging when `future` takes longer than `secs`.
async fn within<T>(secs: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .expect("timed out")
}

fn loopback() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn node_tls(ca: &PemCert, node_id: &str) -> NodeTls {
    NodeTls::new(&ca.cert, &issue_node_cert(ca, node_id).unwrap()).unwrap()
}

fn endpoint(node_id: &str, tls: &NodeTls) -> RelayEndpoint {
    let metrics = RelayMetrics::register(&Registry::new()).unwrap();
    RelayEndpoint::bind(
        loopback(),
        node_id,
        "test",
        tls,
        &LinkConfig::default(),
        metrics,
    )
    .unwrap()
}

/// The room's current epoch, as the accepting node's directory would give it.
fn epochs(room: &str) -> Option<u64> {
    (room == ROOM).then_some(EPOCH)
}

/// Connects `client` to `server` and accepts on `server`: both results.
async fn link(
    client: &RelayEndpoint,
    server: &RelayEndpoint,
    server_id: &str,
    epoch: u64,
) -> (Result<Link, LinkError>, Result<Link, LinkError>) {
    let addr = server.local_addr().unwrap();
    within(10, async {
        tokio::join!(
            client.connect(addr, server_id, ROOM, epoch),
            server.accept(epochs)
        )
    })
    .await
}

/// Two linked endpoints of one cluster: (origin's link, relay's link), and the endpoints.
async fn linked_pair() -> (Link, Link, RelayEndpoint, RelayEndpoint) {
    let ca = generate_ca().unwrap();
    let origin = endpoint("origin-1", &node_tls(&ca, "origin-1"));
    let relay = endpoint("relay-1", &node_tls(&ca, "relay-1"));
    let (at_relay, at_origin) = link(&relay, &origin, "origin-1", EPOCH).await;
    (at_origin.unwrap(), at_relay.unwrap(), origin, relay)
}

fn rtp(seq: u16, payload_len: usize) -> Vec<u8> {
    let [s0, s1] = seq.to_be_bytes();
    let mut packet = vec![0x80, 96, s0, s1, 0, 0, 0, 10, 0xde, 0xad, 0xbe, 0xef];
    packet.extend((0..payload_len).map(|i| (i as u8) ^ s1));
    packet
}

#[tokio::test]
async fn nodes_of_one_cluster_exchange_control_messages_and_packets() {
    let (at_origin, at_relay, _origin, _relay) = linked_pair().await;
    assert_eq!(at_origin.peer().node_id, "relay-1");
    assert_eq!(at_relay.peer().node_id, "origin-1");
    assert_eq!(
        (at_origin.peer().room.as_str(), at_origin.peer().epoch),
        (ROOM, EPOCH)
    );
    assert_eq!(*at_relay.state().borrow(), LinkState::Up);
    // A full RTP packet and its flow id fit in one datagram from the start.
    let max = at_relay.max_datagram_size().unwrap();
    assert!(max >= MAX_RTP_PACKET + 4, "max datagram {max}");

    let requests = [
        Control::Subscribe {
            track: "TR_cam".into(),
            flow: 1,
            layers: vec![0, 1],
        },
        Control::LayerDemand {
            track: "TR_cam".into(),
            layers: vec![0],
        },
        Control::KeyframeRequest {
            track: "TR_cam".into(),
            layer: 0,
        },
        Control::ListenerLoss {
            track: "TR_mic".into(),
            fraction: 51,
        },
    ];
    for message in &requests {
        within(5, at_relay.send_control(message)).await.unwrap();
    }
    for message in &requests {
        assert_eq!(&within(5, at_origin.recv_control()).await.unwrap(), message);
    }
    let report = Control::SenderReport {
        track: "TR_cam".into(),
        ssrc: 1,
        ntp_time: 42,
        rtp_time: 90_000,
        packets: 1000,
        octets: 1_000_000,
    };
    within(5, at_origin.send_control(&report)).await.unwrap();
    assert_eq!(within(5, at_relay.recv_control()).await.unwrap(), report);

    // 1000 RTP packets on four flows (one with a 4-byte flow id), up to the largest size, in
    // bursts the receiver drains as media would be paced.
    let flows = [1, 2, 3, 1 << 20];
    let mut sent = HashMap::new();
    let mut received = HashMap::new();
    for burst in 0..10u16 {
        for i in 0..100u16 {
            let seq = burst * 100 + i;
            let flow = flows[usize::from(seq) % flows.len()];
            let packet = rtp(seq, 100 + usize::from(seq) % (MAX_RTP_PACKET - 111));
            assert_eq!(at_origin.send_packet(flow, &packet), Ok(true));
            sent.insert(seq, (flow, packet));
        }
        while received.len() < sent.len() {
            let got = within(5, at_relay.recv_packet()).await.unwrap();
            assert_eq!(got.kind, PacketKind::Rtp);
            let seq = u16::from_be_bytes([got.packet[2], got.packet[3]]);
            received.insert(seq, (got.flow, got.packet.to_vec()));
        }
    }
    assert_eq!(received, sent);
    // RTCP shares the flow of its track.
    let receiver_report = [0x80, 201, 0, 1, 0, 0, 0, 7];
    assert_eq!(at_relay.send_packet(1, &receiver_report), Ok(true));
    let got = within(5, at_origin.recv_packet()).await.unwrap();
    assert_eq!(
        (got.flow, got.kind, &got.packet[..]),
        (1, PacketKind::Rtcp, &receiver_report[..])
    );

    let sent_bytes = at_origin.metrics.bytes_sent.get();
    assert_eq!(at_origin.metrics.datagrams_sent.get(), 1000);
    assert_eq!(at_relay.metrics.datagrams_received.get(), 1000);
    assert_eq!(at_relay.metrics.bytes_received.get(), sent_bytes);
    let payload: usize = sent.values().map(|(_, p)| p.len()).sum();
    // Flow ids: 1 byte for 1, 2, 3; 4 bytes for 2^20.
    assert_eq!(sent_bytes, (payload + 750 + 250 * 4) as u64);
    assert!(at_origin.rtt() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_packet_larger_than_the_path_takes_is_counted_as_dropped() {
    let (at_origin, _at_relay, _origin, _relay) = linked_pair().await;
    // Beyond any MTU quinn will discover (at most 1452 bytes of UDP payload by default).
    assert_eq!(at_origin.send_packet(1, &rtp(1, 2000)), Ok(false));
    assert_eq!(at_origin.metrics.too_large.get(), 1);
    assert_eq!(at_origin.metrics.datagrams_sent.get(), 0);
    // Once the link is closed, quinn refuses datagrams.
    at_origin.close();
    assert_eq!(at_origin.send_packet(1, &rtp(2, 100)), Ok(false));
    assert_eq!(at_origin.metrics.refused.get(), 1);
}

#[tokio::test]
async fn malformed_datagrams_and_control_messages_are_counted_and_skipped() {
    let (at_origin, at_relay, _origin, _relay) = linked_pair().await;
    // A truncated flow id, a packet too short for RTP, version 0, and an empty datagram.
    let garbage: [&'static [u8]; 4] = [&[0x40], &[1, 0x80, 96], &[1; 20], &[]];
    for bytes in garbage {
        at_origin.send_raw_datagram(bytes);
    }
    assert_eq!(at_origin.send_packet(9, &rtp(7, 10)), Ok(true));
    let got = within(5, at_relay.recv_packet()).await.unwrap();
    assert_eq!((got.flow, &got.packet[..]), (9, &rtp(7, 10)[..]));
    assert_eq!(at_relay.metrics.malformed.get(), 4);
    assert_eq!(at_relay.metrics.datagrams_received.get(), 5);

    let mut bad = 12u32.to_be_bytes().to_vec();
    bad.extend_from_slice(b"{\"type\":\"x\"}");
    at_origin.send_raw_control(&bad).await;
    let stats = Control::Stats {
        datagrams_received: 1,
        bytes_received: 2,
    };
    within(5, at_origin.send_control(&stats)).await.unwrap();
    assert_eq!(within(5, at_relay.recv_control()).await.unwrap(), stats);
    assert_eq!(at_relay.metrics.control_malformed.get(), 1);

    // An oversized length cannot be skipped: the stream is out of step, an error.
    at_origin.send_raw_control(&u32::MAX.to_be_bytes()).await;
    assert!(matches!(
        within(5, at_relay.recv_control()).await,
        Err(LinkError::Frame(FrameError::ControlTooLarge(_)))
    ));
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let cluster = generate_ca().unwrap();
    let other = generate_ca().unwrap();
    let origin = endpoint("origin-1", &node_tls(&cluster, "origin-1"));
    // Trusts the cluster CA (its certificate is no secret), holds a certificate from another.
    let intruder_tls =
        NodeTls::new(&cluster.cert, &issue_node_cert(&other, "relay-1").unwrap()).unwrap();
    let intruder = endpoint("relay-1", &intruder_tls);
    let (connected, accepted) = link(&intruder, &origin, "origin-1", EPOCH).await;
    assert_tls_refusal(accepted);
    assert_tls_refusal(connected);

    // Nor does a node of the cluster accept a server from another CA.
    let impostor = endpoint("origin-1", &node_tls(&other, "origin-1"));
    let relay = endpoint("relay-1", &node_tls(&cluster, "relay-1"));
    let (connected, accepted) = link(&relay, &impostor, "origin-1", EPOCH).await;
    assert_tls_refusal(connected);
    assert_tls_refusal(accepted);
}

/// A handshake refused by TLS: an error at once (a certificate alert), not a timeout.
fn assert_tls_refusal(result: Result<Link, LinkError>) {
    match result {
        Err(LinkError::Connection(
            ConnectionError::TransportError(_) | ConnectionError::ConnectionClosed(_),
        )) => {}
        other => panic!("expected a TLS refusal, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_node_without_a_client_certificate_is_refused() {
    let ca = generate_ca().unwrap();
    let origin = endpoint("origin-1", &node_tls(&ca, "origin-1"));
    let anonymous_tls = NodeTls {
        client: crate::relay::tls::client_without_certificate(&ca.cert),
        ..node_tls(&ca, "relay-1")
    };
    let anonymous = endpoint("relay-1", &anonymous_tls);
    let (connected, accepted) = link(&anonymous, &origin, "origin-1", EPOCH).await;
    assert_tls_refusal(accepted);
    assert_tls_refusal(connected);
}

#[tokio::test]
async fn a_node_claiming_another_node_id_is_refused() {
    let ca = generate_ca().unwrap();
    let origin = endpoint("origin-1", &node_tls(&ca, "origin-1"));
    // A real cluster certificate for relay-1, used to say hello as relay-2.
    let liar = endpoint("relay-2", &node_tls(&ca, "relay-1"));
    let (connected, accepted) = link(&liar, &origin, "origin-1", EPOCH).await;
    assert!(matches!(accepted, Err(LinkError::Refused(_))));
    assert!(
        matches!(connected, Err(LinkError::Refused(r)) if r.contains("does not name node relay-2"))
    );
}

#[tokio::test]
async fn a_hello_with_a_stale_epoch_or_an_unknown_room_is_refused() {
    let ca = generate_ca().unwrap();
    let origin = endpoint("origin-1", &node_tls(&ca, "origin-1"));
    let relay = endpoint("relay-1", &node_tls(&ca, "relay-1"));
    let (connected, accepted) = link(&relay, &origin, "origin-1", EPOCH - 1).await;
    assert!(matches!(accepted, Err(LinkError::Refused(_))));
    assert!(
        matches!(&connected, Err(LinkError::Refused(r)) if r.contains("stale epoch 2")),
        "{:?}",
        connected.err()
    );

    let addr = origin.local_addr().unwrap();
    let (connected, accepted) = within(10, async {
        tokio::join!(
            relay.connect(addr, "origin-1", "history", 9),
            origin.accept(epochs)
        )
    })
    .await;
    assert!(matches!(accepted, Err(LinkError::Refused(_))));
    assert!(matches!(connected, Err(LinkError::Refused(r)) if r.contains("not served here")));

    // The same nodes link fine under the current epoch, or a newer one.
    let (connected, accepted) = link(&relay, &origin, "origin-1", EPOCH + 1).await;
    assert!(connected.is_ok() && accepted.is_ok());
}

/// A UDP socket that, once switched on, silently loses everything both ways: a path that went
/// dark, with no error and no close for the other side to see.
#[derive(Debug)]
struct Blackhole {
    inner: Arc<dyn AsyncUdpSocket>,
    on: AtomicBool,
}

impl AsyncUdpSocket for Blackhole {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let received = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            if !self.on.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(received));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[tokio::test]
async fn a_blackholed_link_is_reported_down_within_the_idle_timeout() {
    let ca = generate_ca().unwrap();
    let config = LinkConfig::default();
    let socket = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, loopback()).unwrap();
    let blackhole = Arc::new(Blackhole {
        inner: socket,
        on: AtomicBool::new(false),
    });
    let metrics = RelayMetrics::register(&Registry::new()).unwrap();
    let origin_tls = node_tls(&ca, "origin-1");
    let origin = RelayEndpoint::with_socket(
        blackhole.clone(),
        "origin-1",
        "test",
        &origin_tls,
        &config,
        metrics,
    )
    .unwrap();
    let relay = endpoint("relay-1", &node_tls(&ca, "relay-1"));
    let (at_relay, _at_origin) = link(&relay, &origin, "origin-1", EPOCH).await;
    let at_relay = at_relay.unwrap();
    let mut state = at_relay.state();

    // Idle but healthy: keepalives hold the link up past the idle timeout.
    tokio::time::sleep(config.idle_timeout + Duration::from_secs(1)).await;
    assert_eq!(*state.borrow(), LinkState::Up);
    assert_eq!(at_relay.metrics.up.get(), 1);

    blackhole.on.store(true, Ordering::Relaxed);
    let dark = Instant::now();
    let down = within(10, state.wait_for(|s| *s != LinkState::Up))
        .await
        .unwrap()
        .clone();
    let detected = dark.elapsed();
    assert_eq!(down, LinkState::Down(ConnectionError::TimedOut));
    assert!(
        detected <= config.idle_timeout + Duration::from_millis(500),
        "detected after {detected:?}"
    );
    assert_eq!(at_relay.metrics.up.get(), 0);
    assert!(matches!(
        within(5, at_relay.recv_packet()).await,
        Err(LinkError::Connection(ConnectionError::TimedOut))
    ));
}

/// A connection that completes TLS and then says nothing (a stuck peer, or a scanner) must not
/// hold up the links after it: each attempt is established on its own and gives up after
/// [`HELLO_TIMEOUT`].
#[tokio::test]
async fn a_silent_attempt_does_not_hold_up_the_next_link() {
    let ca = generate_ca().unwrap();
    let origin = endpoint("origin-1", &node_tls(&ca, "origin-1"));
    let relay = endpoint("relay-1", &node_tls(&ca, "relay-1"));
    let addr = origin.local_addr().unwrap();
    // A cluster member's certificate, a QUIC connection, and never a hello.
    let silent_tls = node_tls(&ca, "relay-2");
    let mut silent = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    silent.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(silent_tls.client.clone()).unwrap(),
    )));
    let server_name = tls::node_server_name("origin-1")
        .unwrap()
        .to_str()
        .into_owned();
    let silent_conn = silent.connect(addr, &server_name).unwrap();

    let started = Instant::now();
    let (silent_attempt, real) = within(10, async {
        let first = origin.incoming().await.unwrap();
        let silent_attempt = origin.establish(first, epochs);
        let real = async {
            // Kept open (returned) until the silent attempt has given up.
            let silent_conn = silent_conn.await;
            let (connected, accepted) =
                tokio::join!(relay.connect(addr, "origin-1", ROOM, EPOCH), async {
                    let second = origin.incoming().await.unwrap();
                    origin.establish(second, epochs).await
                });
            (connected, accepted, started.elapsed(), silent_conn)
        };
        tokio::join!(silent_attempt, real)
    })
    .await;
    let (connected, accepted, took, _silent_conn) = real;
    assert!(
        connected.is_ok() && accepted.is_ok(),
        "the real link was made"
    );
    assert!(
        took < HELLO_TIMEOUT,
        "the real link waited {took:?} behind the silent one"
    );
    assert!(
        matches!(silent_attempt, Err(LinkError::Control(ref r)) if r.contains("no hello")),
        "{:?}",
        silent_attempt.err()
    );
}
