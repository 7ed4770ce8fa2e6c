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
