//! Identifiers and blob kinds shared by every part of the format.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte identifier: a blob id (keyed BLAKE3 of the plaintext) or a storage
/// object id (BLAKE3 of the stored bytes). Shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Id(pub [u8; 32]);

/// The first 8 bytes only: ids are BLAKE3 outputs, as evenly spread in 8 bytes
/// as in 32, and SipHash then hashes 8 bytes instead of 40 (the derived hash
/// adds the length). Equal ids hash equally, as `Eq` requires. A restore's plan
/// makes a few map operations per blob and file. (Collisions no longer depend on
/// SipHash's key alone: a storage server listing many names with one 8-byte
/// prefix could slow a map down, where it could as well refuse service.)
impl std::hash::Hash for Id {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

/// Byte order (as the derived one would be), compared as four big-endian
/// words: inlined, where the derived comparison calls `memcmp` (an index
/// lookup makes about 2 log2(blobs) comparisons).
impl Ord for Id {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let word = |id: &Id, i: usize| {
            u64::from_be_bytes(id.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        (0..4)
            .map(|i| word(self, i).cmp(&word(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for Id {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Id {
    pub const LEN: usize = 32;

    /// BLAKE3 (unkeyed) of stored bytes: the name of packs, index files and snapshots.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        Some(Id(b.try_into().ok()?))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid id {0:?}: expected 64 hex digits")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(out))
    }
}

// Trees hold one id per chunk, so ids are (de)serialised without a heap
// allocation: hex into a stack buffer, and parsed straight from the borrowed
// (or transient) string the deserializer hands over.
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).expect("64 hex digits fit");
        s.serialize_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
    }
}

struct IdVisitor;

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("64 hex digits")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(IdVisitor)
    }
}

/// What a blob holds; data and tree blobs live in separate packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

impl fmt::Display for BlobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        })
    }
}

/// Per-blob compression, recorded in the pack header and the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    None,
    Zstd(i32),
    Lz4,
}

/// The zstd level of new repositories (and of `zstd` without a level). With
/// small blobs compressed in groups ([`crate::group`]) level 2 stores within
/// 1% of what level 3 stored blob by blob, with about 30% less CPU for a
/// first backup (docs/PERFORMANCE.md, the twenty-second measurement); level 3
/// stores ~3% less than that at ~1.4× the CPU.
pub const DEFAULT_ZSTD_LEVEL: i32 = 2;

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

impl Compression {
    /// The algorithm code stored per blob (the level is not needed to decompress).
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => 1,
            Compression::Lz4 => 2,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::Lz4 => f.write_str("lz4"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    /// `none`, `lz4`, `zstd`, `zstd:LEVEL` (1..=22).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            _ => {
                let level = s
                    .strip_prefix("zstd:")
                    .and_then(|l| l.parse::<i32>().ok())
                    .filter(|l| (1..=22).contains(l))
                    .ok_or_else(|| {
                        format!("invalid compression {s:?}: expected none, lz4, zstd or zstd:1..22")
                    })?;
                Ok(Compression::Zstd(level))
            }
        }
    }
}

/// Compress `data`; returns the algorithm code actually used (0 when compression
/// did not shrink the data) and the bytes to seal.
pub fn compress(c: Compression, data: &[u8]) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    match compress_into(c, data, &mut out) {
        0 => (0, data.to_vec()),
        code => (code, out),
    }
}

thread_local! {
    /// One zstd context per thread and level, reused for every blob: creating a
    /// context per call allocates and initialises its tables each time.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`compress`] into `out` (cleared first, grown as needed and reused by the
/// caller), with this thread's zstd context. Returns the algorithm code; 0 means
/// compression did not shrink the data and the caller stores `data` itself
/// (`out` is then unspecified). The bytes of a one-shot zstd or lz4 call.
pub fn compress_into(c: Compression, data: &[u8], out: &mut Vec<u8>) -> u8 {
    out.clear();
    let ok = match c {
        Compression::None => false,
        Compression::Zstd(level) => ZSTD.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|(l, _)| *l != level) {
                *cell = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            let Some((_, z)) = cell.as_mut() else {
                return false;
            };
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            z.compress_to_buffer(data, out).is_ok()
        }),
        Compression::Lz4 => {
            out.resize(lz4_flex::block::get_maximum_output_size(data.len()), 0);
            match lz4_flex::compress_into(data, out) {
                Ok(n) => {
                    out.truncate(n);
                    true
                }
                Err(_) => false,
            }
        }
    };
    if ok && out.len() < data.len() {
        c.code()
    } else {
        0
    }
}

thread_local! {
    static UNZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// [`decompress`] of `data` into `out` (cleared first, reused by the caller),
/// with this thread's zstd context. Code 0 (stored as is) is the caller's case:
/// the data is the plaintext.
///
/// # Errors
/// As [`decompress`].
pub fn decompress_into(
    code: u8,
    data: &[u8],
    raw_length: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    match code {
        1 => UNZSTD.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
            }
            let z = cell.as_mut().expect("set above");
            out.reserve(raw_length);
            z.decompress_to_buffer(data, out)
                .map(|_| ())
                .map_err(|e| format!("zstd: {e}"))
        })?,
        2 => {
            out.resize(raw_length, 0);
            let n = lz4_flex::decompress_into(data, out).map_err(|e| format!("lz4: {e}"))?;
            out.truncate(n);
        }
        c => return Err(format!("unknown compression code {c}")),
    }
    check_length(out.len(), raw_length)
}

/// A compression group's plaintext ([`crate::group`]) into `out` (cleared
/// first): `code` is the group's algorithm code (without the group flags). A
/// zstd group's size is the one its frame header records (the bulk compressor
/// always writes it), at most [`crate::group::MAX_PLAINTEXT`].
///
/// # Errors
/// A message when the code is not one groups are written with, the frame
/// records no size or too large a one, or the data does not decompress to it.
pub fn decompress_group(code: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match code {
        0 => {
            out.clear();
            out.extend_from_slice(data);
            Ok(())
        }
        1 => {
            let size = zstd::zstd_safe::get_frame_content_size(data)
                .ok()
                .flatten()
                .filter(|n| *n <= crate::group::MAX_PLAINTEXT as u64)
                .ok_or("zstd group frame records no size or too large a one")?;
            decompress_into(1, data, size as usize, out)
        }
        c => Err(format!("no compression group is stored with code {c}")),
    }
}

/// Undo [`compress`]; `raw_length` is the plaintext size from the index.
///
/// # Errors
/// A message when the algorithm code is unknown or the data does not decompress
/// to exactly `raw_length` bytes.
pub fn decompress(code: u8, data: Vec<u8>, raw_length: usize) -> Result<Vec<u8>, String> {
    if code == 0 {
        check_length(data.len(), raw_length)?;
        return Ok(data);
    }
    let mut out = Vec::new();
    decompress_into(code, &data, raw_length, &mut out)?;
    Ok(out)
}

/// The decompressed size must be the index's `raw_length`.
pub(crate) fn check_length(len: usize, raw_length: usize) -> Result<(), String> {
    if len != raw_length {
        return Err(format!(
            "decompressed to {len} bytes, index says {raw_length}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_plaintexts_decompress_by_their_frames_size() {
        let plain: Vec<u8> = b"group ".iter().copied().cycle().take(100_000).collect();
        let mut out = Vec::new();
        // Stored as it is (a group that did not compress).
        decompress_group(0, &plain, &mut out).unwrap();
        assert_eq!(out, plain);
        // zstd: the size comes from the frame header.
        let mut z = Vec::new();
        assert_eq!(compress_into(Compression::Zstd(2), &plain, &mut z), 1);
        decompress_group(1, &z, &mut out).unwrap();
        assert_eq!(out, plain);
        // No group is written with lz4; a frame without its size, or one
        // recording more than a group holds, is refused.
        assert!(decompress_group(2, &z, &mut out).is_err());
        let mut no_size = zstd::bulk::Compressor::new(2).unwrap();
        no_size
            .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
            .unwrap();
        let unsized_frame = no_size.compress(&plain).unwrap();
        assert!(decompress_group(1, &unsized_frame, &mut out).is_err());
        let big = vec![0u8; crate::group::MAX_PLAINTEXT + 1];
        let big_frame = zstd::bulk::compress(&big, 1).unwrap();
        assert!(decompress_group(1, &big_frame, &mut out).is_err());
        assert!(decompress_group(1, b"not zstd", &mut out).is_err());
    }

    /// What `compress` did before it shared `compress_into`: one-shot library
    /// calls, a fresh zstd context each time.
    fn one_shot(c: Compression, data: &[u8]) -> (u8, Vec<u8>) {
        let out = match c {
            Compression::None => None,
            Compression::Zstd(level) => zstd::bulk::compress(data, level).ok(),
            Compression::Lz4 => Some(lz4_flex::compress(data)),
        };
        match out {
            Some(out) if out.len() < data.len() => (c.code(), out),
            _ => (0, data.to_vec()),
        }
    }

    #[test]
    fn compress_into_gives_the_bytes_of_compress_and_decompresses_back() {
        // Words drawn pseudo-randomly: compressible, and levels differ on it.
        let words = ["lifeboat ", "restore ", "pack ", "index ", "tree ", "blob "];
        let mut x = 7u64;
        let text: Vec<u8> = (0..20_000)
            .flat_map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words[(x >> 33) as usize % words.len()].bytes()
            })
            .collect();
        let noise: Vec<u8> = (0..5_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_ne!(
            one_shot(Compression::Zstd(1), &text).1,
            one_shot(Compression::Zstd(19), &text).1,
            "the levels must differ on the test data"
        );
        let mut out = vec![1u8; 10];
        let mut back = Vec::new();
        // Level changes in both directions on one thread's cached context.
        for c in [
            Compression::Zstd(3),
            Compression::Zstd(19),
            Compression::Zstd(1),
            Compression::Lz4,
            Compression::None,
            Compression::Zstd(19),
        ] {
            for data in [&text[..], &noise[..], b""] {
                let code = compress_into(c, data, &mut out);
                let (want_code, want) = one_shot(c, data);
                assert_eq!(code, want_code, "{c:?}");
                assert_eq!(compress(c, data), (want_code, want.clone()), "{c:?}");
                if code == 0 {
                    continue;
                }
                assert_eq!(out, want, "{c:?}");
                decompress_into(code, &out, data.len(), &mut back).unwrap();
                assert_eq!(back, data);
                assert!(decompress_into(code, &out, data.len() + 1, &mut back).is_err());
            }
        }
        assert!(decompress_into(9, b"x", 1, &mut back).is_err());
    }

    #[test]
    fn id_hex_roundtrip() {
        let id = Id::of_stored(b"x");
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert!("zz".parse::<Id>().is_err());
    }

    #[test]
    fn compression_parse() {
        assert_eq!(
            "zstd:19".parse::<Compression>().unwrap(),
            Compression::Zstd(19)
        );
        assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert!("zstd:0".parse::<Compression>().is_err());
        assert!("gzip".parse::<Compression>().is_err());
    }
}
