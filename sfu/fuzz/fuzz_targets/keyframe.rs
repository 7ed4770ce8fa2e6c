//! Keyframe detection and VP8 picture numbering read (and rewrite) every video payload from
//! publishers: they must never panic.
#![no_main]
use aula_sfu::codec::{VideoCodec, Vp8Numbers};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(numbers) = Vp8Numbers::read(data) {
        let mut copy = data.to_vec();
        numbers.write(&mut copy);
        assert_eq!(copy, data, "writing back what was read changes nothing");
    }
    let _ = VideoCodec::Vp8.is_keyframe(data);
    let _ = VideoCodec::H264.is_keyframe(data);
});
