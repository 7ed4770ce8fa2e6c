//! Putting a run of RTP packets back in sending order. Pure.
//!
//! A log holds packets in arrival order, which the network may have shuffled, with
//! retransmissions duplicating some, and 16-bit sequence numbers and 32-bit timestamps that wrap
//! around. Within one RTP stream (one SSRC) the sequence number says the order: each is unwrapped
//! against the one that arrived before it (the nearest of the two readings, so a wrap from 65535
//! to 0 counts up), then the packets are sorted and duplicates dropped. A packet missing from
//! the sorted numbers was lost: the depacketizers see that as a hole in `index`.
//!
//! Packets of different SSRCs are different streams (a simulcast layer, a restarted sender):
//! their numbers have nothing in common, so each is ordered on its own.

use crate::rtp::Packet;

/// A packet with its place in its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub packet: Packet,
    /// The sequence number unwrapped: consecutive packets differ by one.
    pub index: i64,
    /// The RTP timestamp unwrapped, in the stream's clock rate.
    pub timestamp: i64,
}

/// The packets of one SSRC, in sending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub ssrc: u32,
    pub packets: Vec<Ordered>,
}

/// Splits `packets` (in arrival order) into one stream per SSRC, in order of each SSRC's first
/// packet, each in sending order without duplicates.
pub fn streams(packets: Vec<Packet>) -> Vec<Stream> {
    let mut by_ssrc: Vec<(u32, Vec<Packet>)> = Vec::new();
    for packet in packets {
        match by_ssrc.iter_mut().find(|(ssrc, _)| *ssrc == packet.ssrc) {
            Some((_, list)) => list.push(packet),
            None => by_ssrc.push((packet.ssrc, vec![packet])),
        }
    }
    by_ssrc
        .into_iter()
        .map(|(ssrc, packets)| Stream {
            ssrc,
            packets: order(packets),
        })
        .collect()
}

/// One SSRC's packets in sending order, without duplicates.
fn order(packets: Vec<Packet>) -> Vec<Ordered> {
    let mut last: Option<(u16, i64)> = None;
    let mut indexed: Vec<(i64, Packet)> = packets
        .into_iter()
        .map(|packet| {
            let index = match last {
                Some((sequence, index)) => {
                    index + i64::from(packet.sequence.wrapping_sub(sequence) as i16)
                }
                None => i64::from(packet.sequence),
            };
            last = Some((packet.sequence, index));
            (index, packet)
        })
        .collect();
    indexed.sort_by_key(|(index, _)| *index);
    indexed.dedup_by_key(|(index, _)| *index);

    let mut last_timestamp: Option<(u32, i64)> = None;
    indexed
        .into_iter()
        .map(|(index, packet)| {
            let timestamp = match last_timestamp {
                Some((raw, unwrapped)) => {
                    unwrapped + i64::from(packet.timestamp.wrapping_sub(raw) as i32)
                }
                None => i64::from(packet.timestamp),
            };
            last_timestamp = Some((packet.timestamp, timestamp));
            Ordered {
                packet,
                index,
                timestamp,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ssrc: u32, sequence: u16, timestamp: u32) -> Packet {
        Packet {
            ssrc,
            sequence,
            timestamp,
            marker: false,
            payload: vec![sequence as u8],
            arrival_us: 0,
        }
    }

    fn indexes(stream: &Stream) -> Vec<i64> {
        stream.packets.iter().map(|p| p.index).collect()
    }

    #[test]
    fn wraparound_shuffling_and_duplicates_come_out_in_sending_order() {
        // The i-th packet sent: sequence and timestamp both wrap around after the third.
        let sent = |i: u16| {
            packet(
                7,
                65533u16.wrapping_add(i),
                (u32::MAX - 5000).wrapping_add(3000 * u32::from(i)),
            )
        };
        let arrived = [0, 2, 1, 3, 5, 4, 3, 6].map(sent);
        let streams = streams(arrived.to_vec());
        assert_eq!(streams.len(), 1);
        assert_eq!(indexes(&streams[0]), (65533..65540).collect::<Vec<_>>());
        let timestamps: Vec<i64> = streams[0].packets.iter().map(|p| p.timestamp).collect();
        let first = i64::from(u32::MAX - 5000);
        assert_eq!(
            timestamps,
            (0..7).map(|i| first + 3000 * i).collect::<Vec<_>>()
        );
    }

    #[test]
    fn each_ssrc_is_its_own_stream_in_order_of_first_arrival() {
        let arrived = vec![
            packet(2, 500, 0),
            packet(1, 10, 0),
            packet(2, 501, 0),
            packet(1, 9, 0),
        ];
        let streams = streams(arrived);
        assert_eq!(streams.iter().map(|s| s.ssrc).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(indexes(&streams[0]), [500, 501]);
        assert_eq!(indexes(&streams[1]), [9, 10]);
    }

    #[test]
    fn a_lost_packet_leaves_a_hole_in_the_indexes() {
        let arrived = [1u16, 2, 4, 5].map(|s| packet(1, s, 0));
        assert_eq!(indexes(&streams(arrived.to_vec())[0]), [1, 2, 4, 5]);
    }
}
