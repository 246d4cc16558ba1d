//! Pack files: containers of sealed blobs with a self-describing header.
//!
//! ```text
//! pack   = blob* sealed_header header_len:u32le
//! blob   = seal(Blob, compress(plaintext))            -- each blob sealed on its own
//! header = "LBPK" version:u8(=1) type:u8 count:u32le entry*count
//! entry  = compression:u8 id:[32] stored_len:u32le raw_len:u32le
//! ```
//! Blob offsets are implicit: the first blob starts at 0 and each follows the
//! previous one, except that the members of a compression group
//! ([`crate::group`]) share one range: an entry whose compression byte has
//! [`SAME_RANGE`] has the previous entry's offset and length. All blobs of a
//! pack have the same [`BlobType`]. A pack is named
//! `data/<first two hex digits>/<BLAKE3 of the whole file>`.

use crate::blob::{BlobType, Id};
use crate::crypto::{MasterKey, ObjectKind};
use crate::error::{Error, Result};
use crate::group::{self, GROUPED, SAME_RANGE};

const MAGIC: &[u8; 4] = b"LBPK";
const VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 32 + 4 + 4;

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub compression: u8,
    pub offset: u32,
    /// Bytes as stored (sealed).
    pub length: u32,
    /// Plaintext bytes (uncompressed).
    pub raw_length: u32,
}

/// The storage key of a pack.
pub fn pack_key(id: &Id) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

/// Accumulates sealed blobs into one pack in memory.
#[derive(Debug)]
pub struct PackWriter {
    blob_type: BlobType,
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    pub id: Id,
    pub blob_type: BlobType,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new(blob_type: BlobType) -> Self {
        Self {
            blob_type,
            data: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// A writer that appends to `buf` (cleared; its capacity is reused).
    pub fn with_buffer(blob_type: BlobType, mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self {
            blob_type,
            data: buf,
            entries: Vec::new(),
        }
    }

    pub fn blob_type(&self) -> BlobType {
        self.blob_type
    }

    pub fn size(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Append an already sealed blob.
    pub fn add(&mut self, id: Id, compression: u8, sealed: &[u8], raw_length: u32) {
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(sealed);
        self.entries.push(PackEntry {
            id,
            compression,
            offset,
            length: sealed.len() as u32,
            raw_length,
        });
    }

    /// Append a sealed compression group whose members (id, plaintext length)
    /// all name its range; `code` is the group's algorithm code.
    pub fn add_group(&mut self, members: &[(Id, u32)], code: u8, sealed: &[u8]) {
        // Bytes no entry names would shift every later offset.
        assert!(!members.is_empty(), "a compression group without members");
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(sealed);
        for (i, (id, raw_length)) in members.iter().enumerate() {
            let same = if i == 0 { 0 } else { SAME_RANGE };
            self.entries.push(PackEntry {
                id: *id,
                compression: code | GROUPED | same,
                offset,
                length: sealed.len() as u32,
                raw_length: *raw_length,
            });
        }
    }

    /// Seal the header, append it, and name the pack.
    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        let header = encode_header(self.blob_type, &self.entries);
        let sealed = key.seal(ObjectKind::PackHeader, &header);
        self.data.extend_from_slice(&sealed);
        self.data
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        FinishedPack {
            id: Id::of_stored(&self.data),
            blob_type: self.blob_type,
            bytes: self.data,
            entries: self.entries,
        }
    }
}

/// Encode a plaintext pack header.
pub fn encode_header(blob_type: BlobType, entries: &[PackEntry]) -> Vec<u8> {
    let mut h = Vec::with_capacity(10 + entries.len() * ENTRY_LEN);
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(blob_type.code());
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        h.push(e.compression);
        h.extend_from_slice(&e.id.0);
        h.extend_from_slice(&e.length.to_le_bytes());
        h.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    h
}

/// Decode a plaintext pack header; offsets are computed from the lengths.
///
/// # Errors
/// A message describing the first malformed field.
pub fn decode_header(h: &[u8]) -> Result<(BlobType, Vec<PackEntry>), String> {
    if h.len() < 10 || &h[..4] != MAGIC {
        return Err("bad pack header magic".into());
    }
    if h[4] != VERSION {
        return Err(format!("unknown pack version {}", h[4]));
    }
    let blob_type =
        BlobType::from_code(h[5]).ok_or_else(|| format!("unknown blob type {}", h[5]))?;
    let count = u32::from_le_bytes(h[6..10].try_into().expect("4 bytes")) as usize;
    let body = &h[10..];
    if body.len()
        != count
            .checked_mul(ENTRY_LEN)
            .ok_or("entry count overflows")?
    {
        return Err(format!(
            "pack header claims {count} entries but has {} bytes",
            body.len()
        ));
    }
    let mut offset: u64 = 0;
    let mut entries: Vec<PackEntry> = Vec::with_capacity(count);
    for e in body.chunks_exact(ENTRY_LEN) {
        let compression = e[0];
        if !group::valid_code(compression) {
            return Err(format!("unknown compression code {compression}"));
        }
        let id = Id::from_slice(&e[1..33]).expect("32 bytes");
        let length = u32::from_le_bytes(e[33..37].try_into().expect("4 bytes"));
        let raw_length = u32::from_le_bytes(e[37..41].try_into().expect("4 bytes"));
        if !group::starts_range(compression) {
            // A later member of the previous entry's group: its range.
            let prev = entries
                .last()
                .filter(|p| group::is_grouped(p.compression) && p.length == length)
                .ok_or("a group member whose range is not the previous entry's")?;
            let offset = prev.offset;
            entries.push(PackEntry {
                id,
                compression,
                offset,
                length,
                raw_length,
            });
            continue;
        }
        if offset > u32::MAX as u64 {
            return Err("pack larger than 4 GiB".into());
        }
        entries.push(PackEntry {
            id,
            compression,
            offset: offset as u32,
            length,
            raw_length,
        });
        offset += length as u64;
    }
    Ok((blob_type, entries))
}

/// Read the header of a complete pack file (as bytes); used by `repair index` and `check`.
///
/// # Errors
/// [`Error::Damaged`] naming the pack when the trailer or header is malformed.
pub fn read_header(
    key: &MasterKey,
    pack_id: &Id,
    bytes: &[u8],
) -> Result<(BlobType, Vec<PackEntry>)> {
    let damaged = |r: &str| Error::damaged("pack", pack_id, r);
    if bytes.len() < 4 {
        return Err(damaged("shorter than its trailer"));
    }
    let hlen = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes")) as usize;
    let hstart = bytes
        .len()
        .checked_sub(4 + hlen)
        .ok_or_else(|| damaged("header length points outside the pack"))?;
    let header = key
        .open(ObjectKind::PackHeader, &bytes[hstart..bytes.len() - 4])
        .map_err(|e| damaged(&format!("header: {e}")))?;
    let (t, entries) = decode_header(&header).map_err(|e| damaged(&e))?;
    if let Some(last) = entries.last() {
        if last.offset as usize + last.length as usize > hstart {
            return Err(damaged("blobs overlap the header"));
        }
    }
    Ok((t, entries))
}

/// Group `blobs` of one pack (sorted by offset) into ranged reads: neighbours
/// at most `max_gap` apart share a read until it spans `max_read` bytes.
/// Yields each read's blob indices and its byte range in the pack.
pub fn coalesced_reads(
    blobs: &[(Id, crate::index::BlobLocation)],
    max_gap: u64,
    max_read: u64,
) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<u64>)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= blobs.len() {
            return None;
        }
        let start = blobs[i].1.offset as u64;
        let mut end = start + blobs[i].1.length as u64;
        let mut j = i + 1;
        // A compression group's members (one range) always share a read.
        while j < blobs.len()
            && ((blobs[j].1.offset as u64) <= end + max_gap && end - start < max_read
                || blobs[j].1.offset == blobs[j - 1].1.offset)
        {
            end = end.max(blobs[j].1.offset as u64 + blobs[j].1.length as u64);
            j += 1;
        }
        let read = (i..j, start..end);
        i = j;
        Some(read)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn group_members_share_their_range_in_the_header() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(BlobType::Data);
        let before = key.seal(ObjectKind::Blob, b"alone");
        w.add(key.blob_id(b"alone"), 0, &before, 5);
        let members = [(Id([1; 32]), 10), (Id([2; 32]), 0), (Id([3; 32]), 7)];
        let sealed = key.seal(ObjectKind::Blob, &[9u8; 40]);
        w.add_group(&members, 1, &sealed);
        let after = key.seal(ObjectKind::Blob, b"after");
        w.add(key.blob_id(b"after"), 0, &after, 5);
        let p = w.finish(&key);
        let (_, entries) = read_header(&key, &p.id, &p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        let group_at = before.len() as u32;
        assert_eq!(
            entries[1..4]
                .iter()
                .map(|e| (e.id, e.offset, e.length, e.raw_length, e.compression))
                .collect::<Vec<_>>(),
            vec![
                (Id([1; 32]), group_at, sealed.len() as u32, 10, 1 | GROUPED),
                (
                    Id([2; 32]),
                    group_at,
                    sealed.len() as u32,
                    0,
                    1 | GROUPED | SAME_RANGE
                ),
                (
                    Id([3; 32]),
                    group_at,
                    sealed.len() as u32,
                    7,
                    1 | GROUPED | SAME_RANGE
                ),
            ]
        );
        assert_eq!(entries[4].offset, group_at + sealed.len() as u32);
        // A later member with no group before it, or of another length, is refused.
        let mut bad = p.entries.clone();
        bad[1].compression = 1 | GROUPED | SAME_RANGE;
        assert!(decode_header(&encode_header(BlobType::Data, &bad)).is_err());
        let mut bad = p.entries.clone();
        bad[2].length += 1;
        assert!(decode_header(&encode_header(BlobType::Data, &bad)).is_err());
    }

    #[test]
    fn pack_roundtrip() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(BlobType::Data);
        let blobs: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![7u8; 1000], Vec::new()];
        for b in &blobs {
            let sealed = key.seal(ObjectKind::Blob, b);
            w.add(key.blob_id(b), 0, &sealed, b.len() as u32);
        }
        let p = w.finish(&key);
        assert_eq!(p.id, Id::of_stored(&p.bytes));
        let (t, entries) = read_header(&key, &p.id, &p.bytes).unwrap();
        assert_eq!(t, BlobType::Data);
        assert_eq!(entries, p.entries);
        for (e, b) in entries.iter().zip(&blobs) {
            let s = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&key.open(ObjectKind::Blob, s).unwrap(), b);
        }
    }

    #[test]
    fn truncated_pack_is_damaged() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(BlobType::Tree);
        w.add(key.blob_id(b"x"), 0, &key.seal(ObjectKind::Blob, b"x"), 1);
        let p = w.finish(&key);
        for cut in [0, 3, 10, p.bytes.len() - 1] {
            assert!(matches!(
                read_header(&key, &p.id, &p.bytes[..cut]),
                Err(Error::Damaged { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn header_roundtrip(entries in proptest::collection::vec((any::<[u8; 32]>(), 0u8..3, 0u32..1<<20, any::<u32>()), 0..50)) {
            let mut off = 0u32;
            let entries: Vec<PackEntry> = entries.into_iter().map(|(id, c, len, raw)| {
                let e = PackEntry { id: Id(id), compression: c, offset: off, length: len, raw_length: raw };
                off += len;
                e
            }).collect();
            let h = encode_header(BlobType::Tree, &entries);
            let (t, back) = decode_header(&h).unwrap();
            prop_assert_eq!(t, BlobType::Tree);
            prop_assert_eq!(back, entries);
        }

        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_header(&bytes);
        }
    }
}
