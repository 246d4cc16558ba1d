//! Content-defined chunking with FastCDC (2020 variant, normalization level 1).
//!
//! The gear table is XORed with a 64-bit seed derived from the repository's
//! master secret ([`crate::crypto::MasterKey::gear_seed`]), so chunk boundaries —
//! and with them chunk sizes — do not fingerprint known content.
//!
//! [`Chunker`] reads any [`Read`] in bounded memory (a buffer of the maximum
//! chunk size) and yields owned chunks; it uses `fastcdc`'s cut-point function
//! directly so that the buffer moves few bytes (the crate's `StreamCDC` shifts
//! the whole buffer after every chunk): each byte at most once, twice for the
//! bytes of a chunk longer than half the maximum.
//!
//! It looks for a cut in half a maximum chunk of lookahead first: FastCDC scans
//! forward from the chunk's start, so a cut it finds before the end of the data
//! it was given is the cut it would find in more data. Only when there is none
//! (a chunk longer than half the maximum: ~0.3% of chunks at the default sizes)
//! does it read on to a whole maximum chunk and scan again.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, recorded in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB.
    fn default() -> Self {
        Self {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// # Errors
    /// A message when the sizes are outside FastCDC's limits or out of order.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::*;
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker sizes {min}/{avg}/{max} are outside FastCDC's limits"
            ))
        }
    }
}

/// Precomputed gear tables and masks for one repository.
#[derive(Debug, Clone)]
pub struct ChunkerConfig {
    params: ChunkerParams,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    mask_s: u64,
    mask_l: u64,
}

impl ChunkerConfig {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Self {
            params,
            gear,
            gear_ls,
            mask_s,
            mask_l,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`, scanning `data` only. A length below
    /// `data.len()` is the cut whatever follows (FastCDC scans forward; for data
    /// longer than `max_size` with no cut before, it is `max_size`). `data.len()`
    /// means no cut in `data`, or `data` no longer than `min_size`.
    fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (_, n) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    pub fn chunker<R: Read>(&self, reader: R) -> Chunker<'_, R> {
        self.chunker_with(reader, Vec::new())
    }

    /// A chunker reading into `buf` (its size and capacity are reused, its bytes
    /// are not): a reader thread passes the buffer of its previous file back in
    /// ([`Chunker::into_buffer`]) instead of growing a new one per file.
    pub fn chunker_with<R: Read>(&self, reader: R, buf: Vec<u8>) -> Chunker<'_, R> {
        let cap = self.params.max_size as usize;
        Chunker {
            config: self,
            reader,
            buf,
            cap,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// Iterator over the chunks of a stream.
///
/// `buf[start..end]` holds the bytes read but not yet chunked. The buffer grows
/// on demand (doubling, from 64 KiB up to the maximum chunk size), so a small
/// file never pays for a large buffer, and it is never re-zeroed.
pub struct Chunker<'a, R> {
    config: &'a ChunkerConfig,
    reader: R,
    buf: Vec<u8>,
    cap: usize,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<'_, R> {
    /// The read buffer, for the next [`ChunkerConfig::chunker_with`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Reads until `need` unchunked bytes are buffered (or the stream ends). When
    /// they do not fit behind `start`, the unchunked tail moves to the front first;
    /// reads then fill the whole buffer. With `need` half the buffer the tail is
    /// under half of it when it moves, so it moves at most once; with `need` the
    /// whole buffer (a chunk with no cut in the first half) it may move again.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.eof || self.end - self.start >= need {
            return Ok(());
        }
        if self.start + need > self.cap {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.cap {
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).max(64 * 1024).min(self.cap);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Chunker<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let max = self.cap;
        // Half a maximum chunk first (see the module docs); a whole one when
        // that holds no cut.
        let mut need = max / 2;
        loop {
            if let Err(e) = self.fill(need) {
                return Some(Err(e));
            }
            let avail = &self.buf[self.start..self.end];
            if avail.is_empty() {
                return None;
            }
            let n = self.config.cut(avail).max(1);
            // A cut before the end is final; at the end it is final only when
            // nothing follows or the chunk has its maximum size.
            if n < avail.len() || self.eof || avail.len() >= max {
                let chunk = avail[..n].to_vec();
                self.start += n;
                return Some(Ok(chunk));
            }
            need = max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        ChunkerParams::default().validate().unwrap();
        assert!(ChunkerParams {
            min_size: 10,
            avg_size: 5,
            max_size: 1
        }
        .validate()
        .is_err());
    }

    #[test]
    fn insert_shifts_only_nearby_boundaries() {
        let cfg = ChunkerConfig::new(small(), 42);
        let data = pseudo_random(400_000, 7);
        let mut edited = data.clone();
        edited.splice(200_000..200_000, b"inserted bytes".iter().copied());
        let a: Vec<_> = cfg.chunker(&data[..]).map(|c| c.unwrap()).collect();
        let b: Vec<_> = cfg.chunker(&edited[..]).map(|c| c.unwrap()).collect();
        let common = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            common + 3 >= a.len(),
            "only chunks around the edit change: {common}/{}",
            a.len()
        );
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(300_000, 9);
        let a: Vec<usize> = ChunkerConfig::new(small(), 1)
            .chunker(&data[..])
            .map(|c| c.unwrap().len())
            .collect();
        let b: Vec<usize> = ChunkerConfig::new(small(), 2)
            .chunker(&data[..])
            .map(|c| c.unwrap().len())
            .collect();
        assert_ne!(a, b);
    }

    /// A reader that returns at most `step` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn chunks_reassemble_and_respect_bounds(
            len in 0usize..120_000,
            seed in any::<u64>(),
            step in 1usize..9000,
            zeros in (0usize..120_000, 0usize..40_000),
        ) {
            let cfg = ChunkerConfig::new(small(), seed);
            let mut data = pseudo_random(len, seed);
            // A run of zeros holds no cut: maximum-size chunks.
            let (at, n) = (zeros.0.min(len), zeros.1);
            data[at..(at + n).min(len)].fill(0);
            let chunks: Vec<Vec<u8>> = cfg.chunker(Trickle(&data, step)).map(|c| c.unwrap()).collect();
            let joined: Vec<u8> = chunks.concat();
            prop_assert_eq!(&joined, &data);
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(c.len() <= 16384);
                if i + 1 < chunks.len() { prop_assert!(c.len() >= 1024); }
            }
            // The boundaries are FastCDC's over the whole rest of the data at
            // every step: reading a bounded lookahead first changes none.
            let mut reference = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let n = cfg.cut(&data[pos..]);
                reference.push(n);
                pos += n;
            }
            prop_assert_eq!(&reference, &chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
            // Boundaries do not depend on how the reader splits its reads.
            let whole: Vec<usize> = cfg.chunker(&data[..]).map(|c| c.unwrap().len()).collect();
            prop_assert_eq!(&whole, &chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
            // Nor on the buffer a previous, larger stream left behind (filled
            // with other bytes, longer than this stream).
            let other = pseudo_random(100_000, seed ^ 1);
            let mut big = cfg.chunker(&other[..]);
            for c in big.by_ref() { c.unwrap(); }
            let reused: Vec<usize> = cfg
                .chunker_with(Trickle(&data, step), big.into_buffer())
                .map(|c| c.unwrap().len())
                .collect();
            prop_assert_eq!(reused, whole);
        }
    }
}
