//! Untrusted datagrams on the shared UDP port are dropped and counted; the SFU keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use aula_sfu::{SfuConfig, start};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DATAGRAMS: u64 = 2_000;

#[tokio::test]
async fn random_datagrams_are_counted_and_dropped() {
    let (sfu, _events) = start(SfuConfig {
        udp_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..SfuConfig::default()
    })
    .expect("bind SFU on loopback");
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..DATAGRAMS {
        let len = rng.random_range(1..1500);
        let mut datagram: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Every other datagram looks like STUN (type, length, magic cookie) so the ufrag
        // parser sees hostile input too, not just the first-byte check.
        if i % 2 == 0 && datagram.len() >= 8 {
            datagram[0] = 0;
            datagram[1] = 1;
            datagram[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        }
        sender.send_to(&datagram, sfu.local_addr()).await.unwrap();
        if i % 100 == 0 {
            // Let the SFU keep up, so the kernel's receive buffer never overflows.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = sfu.stats().await.expect("SFU still answers commands");
        if stats.unroutable_datagrams == DATAGRAMS {
            assert_eq!(stats.peers, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {DATAGRAMS} datagrams were seen",
            stats.unroutable_datagrams
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn commands_for_unknown_participants_are_errors_not_crashes() {
    let (sfu, _events) = start(SfuConfig {
        udp_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..SfuConfig::default()
    })
    .expect("bind SFU on loopback");
    assert!(sfu.subscribe_answer("nobody", "v=0".into()).await.is_err());
    assert!(sfu.subscribe("nobody", "TR_missing").await.is_err());
    let bad = sfu
        .publish_offer("PA_x", "this is not SDP".into(), Vec::new())
        .await;
    assert!(matches!(bad, Err(aula_sfu::SfuError::BadSdp(_))), "{bad:?}");
    // The failed offer left no peer behind.
    assert_eq!(sfu.stats().await.unwrap().peers, 0);
    sfu.remove_participant("nobody").await.unwrap();
}

/// The ufrag in a binding request travels in clear. A request that names a live peer's ufrag
/// but fails its integrity check (as a spoofer's would) must not bind its source address to
/// the peer: otherwise everything from that address is fed to the peer.
#[test]
fn a_spoofed_binding_request_binds_no_address() {
    use aula_protocol::TrackKind;
    use aula_sfu::sim::{SFU_ADDR, Sim, signed_binding_request};

    let step = Duration::from_millis(5);
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    assert!(sim.run_until(500, step, |s| {
        !s.router.participant_addrs("teacher").is_empty()
    }));
    let remote = sim.clients[teacher]
        .pc
        .remote_description()
        .expect("answered")
        .sdp
        .clone();
    let value = |prefix: &str| {
        remote
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix))
            .expect("credentials in the answer")
            .to_owned()
    };
    let (sfu_ufrag, sfu_pwd) = (value("a=ice-ufrag:"), value("a=ice-pwd:"));
    let request = |password: &str| signed_binding_request(&format!("{sfu_ufrag}:spoof"), password);
    let rejected_before = sim.router.metrics().stun_rejected.get();
    let spoofer = SocketAddr::from(([192, 0, 2, 66], 5000));
    for port in 0..50u16 {
        let from = SocketAddr::from(([192, 0, 2, 66], 5000 + port));
        sim.router
            .handle_datagram(sim.now, from, SFU_ADDR, &request("not-the-password"));
    }
    let addrs = sim.router.participant_addrs("teacher");
    assert!(
        addrs.iter().all(|a| a.ip() != spoofer.ip()),
        "a spoofed request added an address: {addrs:?}"
    );
    assert_eq!(
        sim.router.metrics().stun_rejected.get() - rejected_before,
        50
    );
    // Garbage from the spoofer afterwards is unroutable, not fed to the peer.
    let unroutable = sim.router.stats().unroutable_datagrams;
    sim.router
        .handle_datagram(sim.now, spoofer, SFU_ADDR, &[0x80; 100]);
    assert_eq!(sim.router.stats().unroutable_datagrams, unroutable + 1);
    // The control: the same request signed with the peer's password (the peer moved to a new
    // address, as on a network change) is bound.
    sim.router
        .handle_datagram(sim.now, spoofer, SFU_ADDR, &request(&sfu_pwd));
    assert!(sim.router.participant_addrs("teacher").contains(&spoofer));
}
