//! Online backups (docs/operations.md#backups): a store hands out a consistent copy of every
//! pair it holds as [`Record`]s to apply in order to an empty store, and this module's stream
//! format carries them from a running host to `sagahost backup`, which writes them into a new
//! sled data directory.
//!
//! The format: the line `sagahost-backup 1\n`, then records — `P`, key length (u32, big-endian),
//! key, value length, value (a put); `R`, key length, key (a remove) — and last `E`, the record
//! count (u64) and the SHA-256 of every byte before the `E`. A stream without its end record,
//! or whose count or digest differ, is refused whole.

use sha2::{Digest, Sha256};

use super::StoreError;

/// The stream's first line.
pub const MAGIC: &[u8] = b"sagahost-backup 1\n";
/// Longest key or value a stream may carry.
pub const MAX_LEN: usize = 1 << 30;

/// One change to apply to the copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Remove(Vec<u8>),
}

/// What a store's backup yields: records in the order to apply them, a chunk at a time.
pub type Chunks = tokio::sync::mpsc::Receiver<Result<Vec<Record>, StoreError>>;

/// Why a backup stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a backup stream (or a newer format).
    #[error("not a sagahost backup stream (expected {:?})", String::from_utf8_lossy(MAGIC).trim())]
    Magic,
    /// A record that is not one.
    #[error("malformed backup record at byte {0}")]
    Malformed(u64),
    /// The stream ended before its end record.
    #[error("the backup stream ended early (after {0} records, without its end record): the copy is incomplete")]
    Truncated(u64),
    /// Count or digest differ from what was received.
    #[error("the backup stream is damaged: {0}")]
    Damaged(String),
}

/// Writes the stream.
#[derive(Default)]
pub struct Encoder {
    hasher: Sha256,
    count: u64,
}

impl Encoder {
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.hasher.update(bytes);
        out.extend_from_slice(bytes);
    }

    /// The first line.
    pub fn header(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out, MAGIC);
        out
    }

    /// `records`, encoded.
    pub fn records(&mut self, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let (tag, key, value) = match r {
                Record::Put(k, v) => (b'P', k, Some(v)),
                Record::Remove(k) => (b'R', k, None),
            };
            self.emit(&mut out, &[tag]);
            self.emit(&mut out, &(key.len() as u32).to_be_bytes());
            self.emit(&mut out, key);
            if let Some(v) = value {
                self.emit(&mut out, &(v.len() as u32).to_be_bytes());
                self.emit(&mut out, v);
            }
            self.count += 1;
        }
        out
    }

    /// The end record.
    pub fn end(self) -> Vec<u8> {
        let mut out = vec![b'E'];
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.hasher.finalize());
        out
    }
}

/// Reads the stream as it arrives, in pieces of any size.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes consumed before `buf`.
    offset: u64,
    hasher: Sha256,
    count: u64,
    header: bool,
    ended: bool,
}

impl Decoder {
    /// Takes `bytes`; the records now complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Record>, FormatError> {
        if self.ended && !bytes.is_empty() {
            return Err(FormatError::Damaged("bytes after the end record".into()));
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        if !self.header {
            if self.buf.len() < MAGIC.len() {
                return if MAGIC.starts_with(&self.buf) { Ok(out) } else { Err(FormatError::Magic) };
            }
            if &self.buf[..MAGIC.len()] != MAGIC {
                return Err(FormatError::Magic);
            }
            self.hasher.update(MAGIC);
            self.header = true;
            at = MAGIC.len();
        }
        while let Some((record, used)) = self.next(&self.buf[at..])? {
            if record.is_none() {
                let end: [u8; 41] = self.buf[at..at + used].try_into().expect("an end record is 41 bytes");
                self.finish_end(&end)?;
                at += used;
                if at != self.buf.len() {
                    return Err(FormatError::Damaged("bytes after the end record".into()));
                }
                break;
            }
            self.hasher.update(&self.buf[at..at + used]);
            out.extend(record);
            self.count += 1;
            at += used;
        }
        self.offset += at as u64;
        self.buf.drain(..at);
        Ok(out)
    }

    /// The next record in `b` and the bytes it took (`None` inside: the end record); `None`
    /// when `b` does not hold a whole record yet.
    fn next(&self, b: &[u8]) -> Result<Option<(Option<Record>, usize)>, FormatError> {
        let bad = || FormatError::Malformed(self.offset);
        let len_at = |i: usize| -> Result<Option<usize>, FormatError> {
            let Some(raw) = b.get(i..i + 4) else { return Ok(None) };
            let n = u32::from_be_bytes(raw.try_into().expect("4 bytes")) as usize;
            if n > MAX_LEN { Err(bad()) } else { Ok(Some(n)) }
        };
        let Some(&tag) = b.first() else { return Ok(None) };
        match tag {
            b'E' => Ok((b.len() >= 41).then_some((None, 41))),
            b'P' | b'R' => {
                let Some(klen) = len_at(1)? else { return Ok(None) };
                let key_end = 5 + klen;
                if tag == b'R' {
                    return Ok(b.get(5..key_end).map(|k| (Some(Record::Remove(k.to_vec())), key_end)));
                }
                let Some(vlen) = len_at(key_end)? else { return Ok(None) };
                let end = key_end + 4 + vlen;
                Ok(b.get(key_end + 4..end).map(|v| (Some(Record::Put(b[5..key_end].to_vec(), v.to_vec())), end)))
            }
            _ => Err(bad()),
        }
    }

    fn finish_end(&mut self, end: &[u8]) -> Result<(), FormatError> {
        let count = u64::from_be_bytes(end[1..9].try_into().expect("8 bytes"));
        if count != self.count {
            return Err(FormatError::Damaged(format!("{} records received, {count} sent", self.count)));
        }
        if self.hasher.clone().finalize()[..] != end[9..41] {
            return Err(FormatError::Damaged("the digest does not match".into()));
        }
        self.ended = true;
        Ok(())
    }

    /// Checks that the stream ended with its end record; the records it carried.
    pub fn finish(self) -> Result<u64, FormatError> {
        if self.ended { Ok(self.count) } else { Err(FormatError::Truncated(self.count)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(records: &[Record]) -> Vec<u8> {
        let mut e = Encoder::default();
        let mut out = e.header();
        out.extend(e.records(records));
        out.extend(e.end());
        out
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Put(b"a".to_vec(), b"1".to_vec()),
            Record::Put(Vec::new(), Vec::new()),
            Record::Remove(b"a".to_vec()),
            Record::Put(vec![0xff; 300], vec![7; 70_000]),
        ]
    }

    #[test]
    fn a_stream_reads_back_whatever_the_pieces_it_arrives_in() {
        let bytes = stream(&sample());
        for piece in [1, 2, 7, 4096, bytes.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                got.extend(d.feed(chunk).unwrap());
            }
            assert_eq!(got, sample(), "pieces of {piece}");
            assert_eq!(d.finish(), Ok(4));
        }
    }

    #[test]
    fn truncated_damaged_and_foreign_streams_are_refused() {
        let bytes = stream(&sample());
        let mut d = Decoder::default();
        d.feed(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(d.finish(), Err(FormatError::Truncated(4)));
        let mut flipped = bytes.clone();
        flipped[MAGIC.len() + 5] ^= 1; // the first key
        let mut d = Decoder::default();
        assert!(matches!(d.feed(&flipped), Err(FormatError::Damaged(_))));
        let mut d = Decoder::default();
        assert_eq!(d.feed(b"PK\x03\x04 a zip"), Err(FormatError::Magic));
        let mut extra = bytes.clone();
        extra.push(b'P');
        assert!(Decoder::default().feed(&extra).is_err());
        let mut huge = Encoder::default().header();
        huge.extend([b'P', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(Decoder::default().feed(&huge), Err(FormatError::Malformed(_))));
        let mut junk = Encoder::default().header();
        junk.push(b'X');
        assert!(matches!(Decoder::default().feed(&junk), Err(FormatError::Malformed(_))));
    }
}
