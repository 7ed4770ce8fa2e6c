//! Reading a segment back: its header, then its records in order. Pure: it reads a byte slice
//! (a segment is at most a few MiB, so the caller reads the whole file), and never panics.
//!
//! What the reader does with bytes that are not an intact record:
//!
//! - **At the end** of the segment they are a torn tail, the record the writer was appending when
//!   the process died: the reader stops and reports their count in [`SegmentReader::torn_tail`].
//!   Losing that one record is expected, not an error.
//! - **In the middle**, followed by intact records, they are corruption (a bad sector, a block
//!   the file system lost on power failure): the reader yields one [`Corruption`] item, naming
//!   where the bad bytes start and how many there are, and carries on from the next intact
//!   record. Everything before the bad bytes is read as it was; so is everything after.
//!
//! We resync rather than stop because stopping would throw away the rest of the segment (up to
//! 10 s of a class) for one bad byte, and the exporter can bridge a gap (to the next keyframe)
//! anyway. Resync searches byte by byte for the next offset where a record decodes: known kind,
//! length within bounds, matching CRC32, and a time no earlier than the last good record's. A
//! chance match in the bad bytes is about as likely as a CRC32 collision (2^-32 per offset,
//! times the odds of a valid kind and length); a publisher could forge a record inside an RTP
//! payload, but the reader only ever looks inside a payload after real corruption, and a
//! forged record could only add packets to that publisher's own track.

use super::format::{HeaderError, Record, SegmentHeader};

/// Bytes in the middle of a segment that are not an intact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// Where the bad bytes start, from the start of the segment.
    pub offset: usize,
    /// How many bytes were skipped to reach the next intact record.
    pub skipped: usize,
}

/// The records of one segment, in order; see the module docs for what happens to bad bytes.
pub struct SegmentReader<'a> {
    header: SegmentHeader,
    data: &'a [u8],
    pos: usize,
    last_time_us: u64,
    torn_tail: usize,
}

impl<'a> SegmentReader<'a> {
    /// Reads the header at the start of `data`. A segment cut short inside its header (the
    /// process died just after creating it) is [`HeaderError::Truncated`]: it holds no records.
    pub fn new(data: &'a [u8]) -> Result<SegmentReader<'a>, HeaderError> {
        let (header, pos) = SegmentHeader::decode(data)?;
        Ok(SegmentReader {
            header,
            data,
            pos,
            last_time_us: 0,
            torn_tail: 0,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// How many bytes at the end of the segment were not an intact record. Known once the
    /// iterator has returned `None`.
    pub fn torn_tail(&self) -> usize {
        self.torn_tail
    }

    /// The intact record at `pos`, if there is one, and its size.
    fn record_at(&self, pos: usize) -> Option<(Record, usize)> {
        let (record, size) = Record::decode(&self.data[pos..])?;
        (record.time_us >= self.last_time_us).then_some((record, size))
    }
}

impl Iterator for SegmentReader<'_> {
    type Item = Result<Record, Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        if let Some((record, size)) = self.record_at(self.pos) {
            self.pos += size;
            self.last_time_us = record.time_us;
            return Some(Ok(record));
        }
        let bad = self.pos;
        match (bad + 1..self.data.len()).find(|&pos| self.record_at(pos).is_some()) {
            Some(next) => {
                self.pos = next;
                Some(Err(Corruption {
                    offset: bad,
                    skipped: next - bad,
                }))
            }
            None => {
                self.torn_tail = self.data.len() - bad;
                self.pos = self.data.len();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format::tests::track;
    use crate::record::format::{Entry, Marker};

    fn records() -> Vec<Record> {
        (0..20u64)
            .map(|i| Record {
                time_us: i * 20_000,
                entry: match i % 5 {
                    0 => Entry::SenderReport(vec![0x80, 200, 0, 6, i as u8]),
                    1 => Entry::Marker(Marker::KeyframeRequest),
                    _ => Entry::Rtp(vec![0x80, 96, 0, i as u8, 7, 7, 7, 7, 7, 7]),
                },
            })
            .collect()
    }

    fn ok(records: &[Record]) -> Vec<Result<Record, Corruption>> {
        records.iter().cloned().map(Ok).collect()
    }

    /// The segment's bytes and where each record starts.
    fn segment(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut data = SegmentHeader {
            track: track(),
            segment_index: 3,
        }
        .encode();
        let mut starts = Vec::new();
        for record in records {
            starts.push(data.len());
            record.encode(&mut data);
        }
        (data, starts)
    }

    fn read(data: &[u8]) -> (Vec<Result<Record, Corruption>>, usize) {
        let mut reader = SegmentReader::new(data).unwrap();
        let items = reader.by_ref().collect();
        (items, reader.torn_tail())
    }

    #[test]
    fn reads_back_the_header_and_every_record() {
        let (data, _) = segment(&records());
        let reader = SegmentReader::new(&data).unwrap();
        assert_eq!(reader.header().segment_index, 3);
        assert_eq!(reader.header().track, track());
        let (items, torn) = read(&data);
        assert_eq!(items, ok(&records()));
        assert_eq!(torn, 0);
    }

    #[test]
    fn a_segment_with_no_records_is_empty() {
        let (data, _) = segment(&[]);
        assert_eq!(read(&data), (vec![], 0));
    }

    #[test]
    fn a_torn_last_record_loses_only_that_record_wherever_it_is_cut() {
        let records = records();
        let (data, starts) = segment(&records);
        let last = *starts.last().unwrap();
        for end in last..data.len() {
            let (items, torn) = read(&data[..end]);
            assert_eq!(items, ok(&records[..records.len() - 1]), "cut at {end}");
            assert_eq!(torn, end - last);
        }
    }

    #[test]
    fn a_corrupt_record_mid_segment_is_reported_and_reading_resumes_after_it() {
        let records = records();
        let (data, starts) = segment(&records);
        let bad = 7;
        for i in starts[bad]..starts[bad + 1] {
            let mut flipped = data.clone();
            flipped[i] ^= 0x01;
            let (items, torn) = read(&flipped);
            let mut expected = ok(&records[..bad]);
            expected.push(Err(Corruption {
                offset: starts[bad],
                skipped: starts[bad + 1] - starts[bad],
            }));
            expected.extend(ok(&records[bad + 1..]));
            assert_eq!(items, expected, "flip at {i}");
            assert_eq!(torn, 0);
        }
    }

    #[test]
    fn a_zeroed_stretch_mid_segment_is_skipped_as_one_corruption() {
        let records = records();
        let (mut data, starts) = segment(&records);
        data[starts[4] + 3..starts[9] + 1].fill(0);
        let (items, torn) = read(&data);
        assert_eq!(items[..4], ok(&records[..4]));
        assert_eq!(
            items[4],
            Err(Corruption {
                offset: starts[4],
                skipped: starts[10] - starts[4],
            })
        );
        assert_eq!(items[5..], ok(&records[10..]));
        assert_eq!(torn, 0);
    }

    #[test]
    fn garbage_after_the_header_is_a_torn_tail() {
        let (mut data, _) = segment(&[]);
        data.extend((0..5000u32).map(|i| (i * 7919 % 251) as u8));
        let (items, torn) = read(&data);
        assert_eq!(items, vec![]);
        assert_eq!(torn, 5000);
    }

    #[test]
    fn a_record_earlier_than_the_last_one_is_not_taken_as_the_resync_point() {
        let records = records();
        let (mut data, starts) = segment(&records);
        // Record 5 corrupt, then an intact copy of record 0 before record 6: time never goes
        // back in a log, so the copy is not where reading resumes.
        let old = {
            let mut bytes = Vec::new();
            records[0].encode(&mut bytes);
            bytes
        };
        data[starts[5]] ^= 0xff;
        data.splice(starts[6]..starts[6], old.iter().copied());
        let (items, _) = read(&data);
        assert_eq!(items[..5], ok(&records[..5]));
        assert_eq!(
            items[5],
            Err(Corruption {
                offset: starts[5],
                skipped: starts[6] - starts[5] + old.len(),
            })
        );
        assert_eq!(items[6..], ok(&records[6..]));
    }

    #[test]
    fn records_mixed_with_random_bytes_never_panic_and_come_out_in_time_order() {
        let (valid, _) = segment(&records());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut data = valid.clone();
            for _ in 0..random() % 8 {
                let at = random() as usize % data.len();
                match random() % 3 {
                    0 => data[at] = random() as u8,
                    1 => data.truncate(at.max(1)),
                    _ => data
                        .splice(at..at, (0..random() % 40).map(|_| random() as u8))
                        .for_each(drop),
                }
            }
            let Ok(mut reader) = SegmentReader::new(&data) else {
                continue;
            };
            let mut last_time_us = 0;
            for item in reader.by_ref() {
                match item {
                    Ok(record) => {
                        assert!(record.time_us >= last_time_us);
                        last_time_us = record.time_us;
                    }
                    Err(Corruption { offset, skipped }) => {
                        assert!(skipped > 0 && offset + skipped < data.len())
                    }
                }
            }
            assert!(reader.torn_tail() <= data.len());
        }
    }
}
