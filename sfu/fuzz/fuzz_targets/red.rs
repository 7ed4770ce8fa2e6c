//! The RED parser reads every audio payload from publishers that send RED: it must never panic,
//! and the blocks it finds must lie within the payload, the primary last.
#![no_main]
use aula_sfu::red;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let primary = red::primary(data);
    let Some(blocks) = red::blocks(data) else {
        assert!(primary.is_none());
        return;
    };
    let blocks: Vec<_> = blocks.collect();
    assert!(blocks.len() <= red::MAX_BLOCKS);
    assert_eq!(blocks.last().map(|b| b.data), primary);
    let data_len: usize = blocks.iter().map(|b| b.data.len()).sum();
    assert!(data_len < data.len(), "at least the primary header is not data");
});
