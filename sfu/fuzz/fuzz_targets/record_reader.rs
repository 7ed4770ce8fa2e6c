//! The capture log reader reads segments from disk after crashes, power cuts and bad sectors:
//! on any bytes it must not panic, must stay within the data, and must keep record times in
//! order.
#![no_main]
use aula_sfu::record::reader::{Corruption, SegmentReader};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = SegmentReader::new(data) else {
        return;
    };
    let mut last_time_us = 0;
    let mut end_of_corruption = 0;
    for item in reader.by_ref() {
        match item {
            Ok(record) => {
                assert!(record.time_us >= last_time_us, "times never go back");
                last_time_us = record.time_us;
            }
            Err(Corruption { offset, skipped }) => {
                assert!(skipped > 0 && offset + skipped < data.len());
                assert!(offset >= end_of_corruption);
                end_of_corruption = offset + skipped;
            }
        }
    }
    assert!(reader.torn_tail() <= data.len());
});
