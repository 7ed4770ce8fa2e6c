//! ULPFEC: parsing and rebuilding from arbitrary FEC payloads and packets must never panic,
//! and any single packet of an encoded group must come back from the others.
#![no_main]
use aula_sfu::fec::ulpfec;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Arbitrary input as an FEC payload and packets: no panic, whatever it says.
    let (fec, rest) = data.split_at(
        data.len()
            .min(usize::from(data.first().copied().unwrap_or(0))),
    );
    let packets: Vec<&[u8]> = rest.chunks(40).collect();
    let _ = ulpfec::parse(fec);
    let _ = ulpfec::recover(fec, &packets, 7);
    // Packets of at least a header, numbered in a row: each lost one is rebuilt.
    let mut group: Vec<Vec<u8>> = Vec::new();
    for (i, chunk) in rest.chunks(30).take(ulpfec::MAX_SPAN).enumerate() {
        let mut packet = vec![0x80, 96, 0, i as u8, 0, 0, 0, 1, 0, 0, 0, 7];
        packet.extend_from_slice(chunk);
        group.push(packet);
    }
    let refs: Vec<&[u8]> = group.iter().map(Vec::as_slice).collect();
    if let Some(parity) = ulpfec::encode(&refs) {
        for lost in 0..refs.len() {
            let others: Vec<&[u8]> = refs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != lost)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                ulpfec::recover(&parity, &others, 7).as_deref(),
                Some(refs[lost])
            );
        }
    }
});
