//! Every RTP packet a publisher sends passes the RTX repair, and an RTX payload's original
//! sequence number comes from the publisher: no packet may make it panic, and a repaired packet
//! must be its RTX packet without the original sequence number (checked in `exercise`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aula_sfu::rtx_repair::exercise(data);
});
