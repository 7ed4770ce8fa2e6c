//! Keyframe detection reads every video payload from publishers: it must never panic.
#![no_main]
use aula_sfu::codec::VideoCodec;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = VideoCodec::Vp8.is_keyframe(data);
    let _ = VideoCodec::H264.is_keyframe(data);
});
