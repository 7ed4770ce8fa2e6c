//! The demultiplexer reads every unrouted datagram: it must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = aula_sfu::demux::binding_request_ufrag(data);
});
