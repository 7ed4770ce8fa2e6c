//! Everything a peer node sends on a relay link is decoded here: datagrams and control messages
//! must never panic, and what decodes must encode back to the same meaning.
#![no_main]
use aula_sfu::relay::framing::{self, Control};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(datagram) = framing::decode_datagram(data) {
        assert!(datagram.packet.len() < data.len(), "the flow id takes at least a byte");
        let again = framing::encode_datagram(datagram.flow, datagram.packet).unwrap();
        assert_eq!(framing::decode_datagram(&again), Ok(datagram));
    }
    if let Some(header) = data.first_chunk::<4>()
        && framing::control_len(*header).is_ok()
        && let Ok(message) = Control::decode(&data[4..])
    {
        let frame = message.encode();
        assert_eq!(Control::decode(&frame[4..]).as_ref(), Ok(&message));
    }
});
