//! The forwarder sees every packet's numbers from publishers: any sequence of packets and
//! layer switches must be handled without panicking (e.g. no arithmetic overflow).
#![no_main]
use std::time::{Duration, Instant};

use aula_sfu::codec::{Vp8Numbers, Vp8Temporal};
use aula_sfu::forward::{Forwarder, PacketMeta};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut forwarder = Forwarder::new(90_000);
    forwarder.set_target(Some(0));
    for (i, chunk) in data.chunks_exact(11).enumerate() {
        let layer = usize::from(chunk[0] % 3);
        if chunk[1] & 1 == 1 {
            forwarder.set_target(Some(usize::from(chunk[1] >> 1) % 3));
        }
        if chunk[1] & 8 == 8 {
            forwarder.set_temporal_target(chunk[1] >> 6);
        }
        let meta = PacketMeta {
            layer,
            seq: u16::from_be_bytes([chunk[2], chunk[3]]),
            timestamp: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            keyframe: chunk[1] & 2 == 2,
            vp8: (chunk[1] & 4 == 4).then(|| Vp8Numbers {
                picture_id: Some(u16::from_be_bytes([chunk[8], chunk[9]]) & 0x7fff),
                tl0_pic_idx: Some(chunk[10]),
            }),
            temporal: (chunk[1] & 16 == 16).then(|| Vp8Temporal {
                id: (chunk[1] >> 6) % 3,
                sync: chunk[1] & 32 == 32,
            }),
        };
        let now = start + Duration::from_millis(i as u64);
        let _ = forwarder.decide(meta, now);
    }
});
