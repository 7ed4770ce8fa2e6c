//! The SFU's Prometheus metrics, registered in the registry the control plane serves at
//! `/metrics`. Counters are atomics, so updating them on the packet path is cheap.

use prometheus::{
    CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every metric the media plane exports. Cloning shares the same underlying metrics.
#[derive(Clone)]
pub struct SfuMetrics {
    pub peers: IntGauge,
    pub published_tracks: IntGauge,
    pub subscriptions: IntGauge,
    pub udp_datagrams_received: IntCounter,
    pub udp_bytes_received: IntCounter,
    pub udp_datagrams_sent: IntCounter,
    pub udp_bytes_sent: IntCounter,
    pub udp_send_errors: IntCounter,
    /// System calls that sent datagrams (one `sendmmsg` may carry many), and batched calls the
    /// kernel took only part of (a full send buffer, or a datagram that failed).
    pub udp_send_calls: IntCounter,
    pub udp_partial_sends: IntCounter,
    /// Datagrams sent as a later segment of a UDP GSO message (several to one destination in
    /// one pass through the kernel's UDP and IP layers).
    pub udp_gso_coalesced: IntCounter,
    pub udp_unroutable: IntCounter,
    pub stun_rejected: IntCounter,
    /// RTP packets and bytes from publishers, after SRTP (retransmissions included).
    pub rtp_packets_received: IntCounter,
    pub rtp_bytes_received: IntCounter,
    /// RTP packets and bytes to subscribers, before SRTP (retransmissions included).
    pub rtp_packets_sent: IntCounter,
    pub rtp_bytes_sent: IntCounter,
    /// Publisher packets handed to subscriber connections by the forwarder.
    pub packets_forwarded: IntCounter,
    /// Packets of exported tracks resent because another node lost them on the link, and
    /// packets of imported tracks this node asked for again (`relay::repair`).
    pub relay_resent: IntCounter,
    pub relay_nacked: IntCounter,
    pub nacks_received: IntCounter,
    /// Sequence numbers subscribers' transport-wide feedback reported lost and the SFU resends
    /// as if NACKed (`feedback_loss`).
    pub feedback_nacks: IntCounter,
    /// Sequence numbers reported on only in transport-wide feedback that was lost, asked of the
    /// resend responder as if NACKed (`feedback_loss`).
    pub unreported_nacks: IntCounter,
    pub nacks_sent: IntCounter,
    /// Losses of a publisher's packets not asked for because they are too old to help
    /// (`arrival_log`).
    pub nacks_withheld: IntCounter,
    /// Receiver reports to publishers whose loss was raised to what listeners without RED lose
    /// (`Router::report_listeners_loss`), asking their Opus encoders for in-band FEC.
    pub reports_loss_raised: IntCounter,
    /// NACKed sequence numbers not resent: sent too long ago to still help, before a later
    /// keyframe, resent a moment ago, over a congested path's resend budget (`resend_budget`),
    /// or never sent.
    pub nack_stale: IntCounter,
    /// Bytes of copies sent to probe subscribers' paths before upgrades (`bwe::probe`).
    pub probe_bytes: IntCounter,
    pub retransmissions: IntCounter,
    /// ULPFEC packets sent to subscribers on lossy links (`fec`).
    pub fec_packets_sent: IntCounter,
    /// Publishers' retransmissions of simulcast layers turned back into the packets they repair,
    /// and those of no use (padding, a packet that had arrived, too old; `rtx_repair`).
    pub rtx_repaired: IntCounter,
    pub rtx_unused: IntCounter,
    pub plis_received: IntCounter,
    pub plis_sent: IntCounter,
    /// From a datagram's arrival to the end of sending what it caused (decrypt, forward,
    /// encrypt, send), for datagrams that were forwarded.
    pub forwarding_latency: Histogram,
    /// What subscribers report about the streams we send them (RTCP receiver reports).
    pub peer_fraction_lost: Histogram,
    pub peer_jitter: Histogram,
    pub peer_rtt: Histogram,
    /// Participants at each connection quality level (`quality` = excellent, good, poor).
    pub connection_quality: IntGaugeVec,
    /// Bandwidth allocation: changes of a consumer's allowed layer (`direction` = up, down),
    /// the subscribers' estimates (sampled), and video consumers paused for lack of bandwidth.
    pub layer_changes: IntCounterVec,
    pub subscriber_estimate: Histogram,
    pub paused_video: IntGauge,
    /// Per router shard (`shard` = its number; see [`crate::shard`]): participants placed
    /// on it, seconds its thread spent working (not waiting), and datagrams the receive
    /// thread dropped because the shard's queue was full.
    pub shard_participants: IntGaugeVec,
    pub shard_busy: CounterVec,
    pub shard_dropped: IntCounterVec,
    /// Packets handed from a track's home shard to another through a pipe.
    pub pipe_packets: IntCounter,
}

impl SfuMetrics {
    /// Creates the metrics and registers them. Fails only if `registry` already holds metrics
    /// of the same names (one SFU per registry).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> prometheus::Result<Histogram> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let connection_quality = IntGaugeVec::new(
            Opts::new(
                "aula_connection_quality_participants",
                "Participants with media, by connection quality",
            ),
            &["quality"],
        )?;
        registry.register(Box::new(connection_quality.clone()))?;
        let layer_changes = IntCounterVec::new(
            Opts::new(
                "aula_layer_changes_total",
                "Changes of the layer a subscriber's bandwidth allows for a track",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(layer_changes.clone()))?;
        let shard_participants = IntGaugeVec::new(
            Opts::new(
                "aula_shard_participants",
                "Participants placed on each router shard",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(shard_participants.clone()))?;
        let shard_busy = CounterVec::new(
            Opts::new(
                "aula_shard_busy_seconds_total",
                "Time each router shard's thread spent working rather than waiting",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(shard_busy.clone()))?;
        let shard_dropped = IntCounterVec::new(
            Opts::new(
                "aula_shard_dropped_datagrams_total",
                "Datagrams dropped on arrival because their shard's queue was full",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(shard_dropped.clone()))?;
        Ok(Self {
            pipe_packets: counter(
                "aula_pipe_packets_total",
                "Packets handed from a track's home shard to another shard's subscribers",
            )?,
            shard_participants,
            shard_busy,
            shard_dropped,
            connection_quality,
            layer_changes,
            subscriber_estimate: histogram(
                "aula_subscriber_estimate_bits_per_second",
                "Bandwidth estimates of the paths to subscribers, sampled every 5 s",
                vec![
                    100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6,
                ],
            )?,
            paused_video: gauge(
                "aula_paused_video_consumers",
                "Video tracks not forwarded to a subscriber for lack of bandwidth",
            )?,
            peers: gauge("aula_sfu_peers", "Peer connections in the SFU")?,
            published_tracks: gauge(
                "aula_sfu_published_tracks",
                "Tracks being received from publishers",
            )?,
            subscriptions: gauge(
                "aula_sfu_subscriptions",
                "Tracks being forwarded to subscribers (consumers)",
            )?,
            udp_datagrams_received: counter(
                "aula_udp_datagrams_received_total",
                "Datagrams read from the media socket",
            )?,
            udp_bytes_received: counter(
                "aula_udp_bytes_received_total",
                "Bytes read from the media socket",
            )?,
            udp_datagrams_sent: counter(
                "aula_udp_datagrams_sent_total",
                "Datagrams written to the media socket",
            )?,
            udp_bytes_sent: counter(
                "aula_udp_bytes_sent_total",
                "Bytes written to the media socket",
            )?,
            udp_send_errors: counter(
                "aula_udp_send_errors_total",
                "Datagrams the media socket refused to send",
            )?,
            udp_send_calls: counter(
                "aula_udp_send_calls_total",
                "System calls that sent datagrams on the media socket (a sendmmsg carries many)",
            )?,
            udp_partial_sends: counter(
                "aula_udp_partial_sends_total",
                "Batched sends (sendmmsg) the kernel took only part of; the rest were sent again",
            )?,
            udp_gso_coalesced: counter(
                "aula_udp_gso_coalesced_total",
                "Datagrams sent as a later segment of a UDP GSO message to the same destination",
            )?,
            udp_unroutable: counter(
                "aula_udp_unroutable_datagrams_total",
                "Datagrams that belonged to no peer (dropped)",
            )?,
            stun_rejected: counter(
                "aula_stun_integrity_failures_total",
                "Binding requests from a new address that failed the peer's integrity check (dropped)",
            )?,
            rtp_packets_received: counter(
                "aula_rtp_packets_received_total",
                "RTP packets received from publishers",
            )?,
            rtp_bytes_received: counter(
                "aula_rtp_bytes_received_total",
                "RTP bytes (header and payload) received from publishers",
            )?,
            rtp_packets_sent: counter(
                "aula_rtp_packets_sent_total",
                "RTP packets sent to subscribers, retransmissions included",
            )?,
            rtp_bytes_sent: counter(
                "aula_rtp_bytes_sent_total",
                "RTP bytes (header and payload) sent to subscribers",
            )?,
            packets_forwarded: counter(
                "aula_packets_forwarded_total",
                "Publisher packets forwarded to a subscriber",
            )?,
            relay_resent: counter(
                "aula_relay_packets_resent_total",
                "Packets of exported tracks resent because another node lost them on a relay link",
            )?,
            relay_nacked: counter(
                "aula_relay_packets_nacked_total",
                "Packets of imported tracks lost on a relay link and asked for again",
            )?,
            nacks_received: counter(
                "aula_nacks_received_total",
                "Lost packets subscribers asked us to resend (NACKed sequence numbers)",
            )?,
            feedback_nacks: counter(
                "aula_feedback_nacks_total",
                "Lost packets subscribers' TWCC feedback reported, resent without waiting for their NACKs",
            )?,
            unreported_nacks: counter(
                "aula_unreported_nacks_total",
                "Packets subscribers reported on only in TWCC feedback that was lost, asked of the resend responder without knowing whether they arrived",
            )?,
            nacks_withheld: counter(
                "aula_nacks_withheld_total",
                "Lost publisher packets not asked for again because they were lost too long ago",
            )?,
            reports_loss_raised: counter(
                "aula_reports_loss_raised_total",
                "Receiver reports to publishers whose loss was raised to their worst listener's without RED, so that Opus adds in-band FEC",
            )?,
            nacks_sent: counter(
                "aula_nacks_sent_total",
                "Lost packets we asked publishers to resend (NACKed sequence numbers)",
            )?,
            nack_stale: counter(
                "aula_nack_stale_total",
                "NACKed sequence numbers not resent: sent over a second before, before a later keyframe, resent within 50 ms, over a congested path's resend budget, or never sent",
            )?,
            probe_bytes: counter(
                "aula_probe_bytes_total",
                "Bytes of packet copies sent to probe subscribers' paths before layer upgrades",
            )?,
            retransmissions: counter(
                "aula_retransmissions_total",
                "Packets resent to subscribers in answer to NACKs",
            )?,
            fec_packets_sent: counter(
                "aula_fec_packets_sent_total",
                "ULPFEC packets sent to subscribers on lossy links",
            )?,
            rtx_repaired: counter(
                "aula_rtx_repaired_total",
                "Publishers' retransmissions (RTX) of simulcast layers turned back into the lost packets they repair",
            )?,
            rtx_unused: counter(
                "aula_rtx_unused_total",
                "Publishers' RTX packets of simulcast layers that repaired nothing (padding, a packet that had arrived, too old)",
            )?,
            plis_received: counter(
                "aula_plis_received_total",
                "Keyframe requests (PLI/FIR) from subscribers",
            )?,
            plis_sent: counter(
                "aula_plis_sent_total",
                "Keyframe requests (PLI) sent to publishers",
            )?,
            forwarding_latency: histogram(
                "aula_forwarding_latency_seconds",
                "From a forwarded datagram's arrival to the end of sending its copies",
                vec![
                    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                ],
            )?,
            peer_fraction_lost: histogram(
                "aula_peer_fraction_lost",
                "Fraction of our packets lost, as subscribers report it per stream",
                vec![0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0],
            )?,
            peer_jitter: histogram(
                "aula_peer_jitter_seconds",
                "Interarrival jitter subscribers report for our streams",
                vec![0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5],
            )?,
            peer_rtt: histogram(
                "aula_peer_rtt_seconds",
                "Round-trip time to subscribers, from their receiver reports",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6],
            )?,
        })
    }
}
