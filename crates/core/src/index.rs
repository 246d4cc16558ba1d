//! Index files and the in-memory index.
//!
//! An index file (`index/<BLAKE3 of the stored bytes>`) lists packs and the blobs
//! in them. It is sealed with [`ObjectKind::Index`]; the plaintext is:
//!
//! ```text
//! index  = "LBIX" version:u8(=1) n_supersedes:u32le id[32]*n_supersedes n_packs:u32le pack*
//! pack   = pack_id[32] type:u8 n_blobs:u32le entry*
//! entry  = compression:u8 id[32] offset:u32le length:u32le raw_length:u32le
//! ```
//! The members of a compression group ([`crate::group`]) each have an entry
//! naming the group's range, with the group flags in the compression byte.
//! `supersedes` lists index files this one replaces (written by repair and
//! prune); readers ignore superseded files.
//!
//! In memory, [`Index`] keeps one sorted vector of fixed-size entries (no maps,
//! no per-entry allocation): 32 bytes of id plus 20 bytes of location, so about
//! 52 MB per million blobs, and a fanout table of where each id prefix starts
//! (at most 2^18 × 4 bytes = 1 MiB), so a lookup searches a few entries.

use std::collections::HashSet;
use std::sync::Arc;

use crate::blob::{BlobType, Id};
use crate::pack::PackEntry;

const MAGIC: &[u8; 4] = b"LBIX";
const VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 32 + 12;

/// Blobs per index file at most, for the files backups and prune write
/// (about 11 MiB encoded): readers that stream the index (prune) hold one
/// file at a time, so this bounds what they hold.
pub const MAX_FILE_BLOBS: usize = 1 << 18;

/// One pack's blobs as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    pub id: Id,
    pub blob_type: BlobType,
    pub blobs: Vec<PackEntry>,
}

/// The content of one index file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    pub supersedes: Vec<Id>,
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.blob_count() * ENTRY_LEN + self.packs.len() * 40);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            out.extend_from_slice(&s.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.push(p.blob_type.code());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                out.push(b.compression);
                out.extend_from_slice(&b.id.0);
                out.extend_from_slice(&b.offset.to_le_bytes());
                out.extend_from_slice(&b.length.to_le_bytes());
                out.extend_from_slice(&b.raw_length.to_le_bytes());
            }
        }
        out
    }

    /// # Errors
    /// A message naming the first malformed field.
    pub fn decode(bytes: &[u8]) -> Result<IndexFile, String> {
        let mut packs = Vec::new();
        let supersedes = Self::decode_each(bytes, |p| packs.push(p))?;
        Ok(IndexFile { supersedes, packs })
    }

    /// Decode handing over one pack at a time (so a large file is never held
    /// decoded whole); returns the file's `supersedes`. On an error, the packs
    /// before the malformed field have been handed over.
    ///
    /// # Errors
    /// A message naming the first malformed field.
    pub fn decode_each(bytes: &[u8], mut each: impl FnMut(IndexPack)) -> Result<Vec<Id>, String> {
        let mut r = Reader { b: bytes, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err("bad index magic".into());
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(format!("unknown index version {v}"));
        }
        let ns = r.u32()? as usize;
        let mut supersedes = Vec::with_capacity(ns.min(1 << 16));
        for _ in 0..ns {
            supersedes.push(r.id()?);
        }
        let np = r.u32()? as usize;
        for _ in 0..np {
            let id = r.id()?;
            let t = r.u8()?;
            let blob_type =
                BlobType::from_code(t).ok_or_else(|| format!("unknown blob type {t}"))?;
            let nb = r.u32()? as usize;
            if nb.saturating_mul(ENTRY_LEN) > bytes.len() - r.pos {
                return Err(format!(
                    "pack {} claims {nb} blobs beyond the end",
                    id.short()
                ));
            }
            let mut blobs = Vec::with_capacity(nb);
            for _ in 0..nb {
                let compression = r.u8()?;
                if !crate::group::valid_code(compression) {
                    return Err(format!("unknown compression code {compression}"));
                }
                blobs.push(PackEntry {
                    compression,
                    id: r.id()?,
                    offset: r.u32()?,
                    length: r.u32()?,
                    raw_length: r.u32()?,
                });
            }
            each(IndexPack {
                id,
                blob_type,
                blobs,
            });
        }
        if r.pos != bytes.len() {
            return Err("trailing bytes after index".into());
        }
        Ok(supersedes)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("index truncated")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn id(&mut self) -> Result<Id, String> {
        Ok(Id::from_slice(self.take(32)?).expect("32 bytes"))
    }
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub blob_type: BlobType,
    pub compression: u8,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Id,
    pack: u32,
    compression: u8,
    blob_type: BlobType,
    offset: u32,
    length: u32,
    raw_length: u32,
}

/// Builds an [`Index`] from index files handed over one by one, each dropped
/// as soon as its entries are copied, so loading needs the index plus one
/// batch of decoded files (not every decoded file at once). Files named in
/// another file's `supersedes` are left out at [`finish`](Self::finish), with
/// their packs.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    index: Index,
    /// For each pushed pack, the number of the file that listed it.
    pack_file: Vec<u32>,
    file_ids: Vec<Id>,
    superseded: std::collections::HashSet<Id>,
}

impl IndexBuilder {
    /// Add index file `id`.
    pub fn add(&mut self, id: Id, file: IndexFile) {
        let n = self.file_ids.len() as u32;
        self.file_ids.push(id);
        self.superseded.extend(file.supersedes.iter().copied());
        for p in &file.packs {
            self.index.push_pack(p);
            self.pack_file.push(n);
        }
    }

    /// Drop what superseded files listed, sort and deduplicate.
    pub fn finish(self) -> Index {
        let IndexBuilder {
            mut index,
            pack_file,
            file_ids,
            superseded,
        } = self;
        if file_ids.iter().any(|id| superseded.contains(id)) {
            let mut remap = vec![u32::MAX; index.packs.len()];
            let (mut packs, mut sizes) = (Vec::new(), Vec::new());
            for (i, f) in pack_file.iter().enumerate() {
                if !superseded.contains(&file_ids[*f as usize]) {
                    remap[i] = packs.len() as u32;
                    packs.push(index.packs[i]);
                    sizes.push(index.pack_sizes[i]);
                }
            }
            index.entries.retain_mut(|e| {
                let m = remap[e.pack as usize];
                e.pack = m;
                m != u32::MAX
            });
            index.packs = packs;
            index.pack_sizes = sizes;
        }
        index.finish();
        index
    }
}

/// The in-memory index of a repository: every blob's location, sorted by id.
///
/// Packs are numbered in the order they were added (a pack two index files
/// list gets two numbers). A blob listed more than once keeps its first
/// location (rare: concurrent backups storing the same blob, a pack listed
/// twice). Prune, which needs every listing, streams the index files instead
/// (`prune::scan`).
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<Id>,
    pack_sizes: Vec<u64>,
    entries: Vec<Entry>,
    /// Where the entries whose ids start with each `fanout_bits`-bit prefix
    /// begin (`2^fanout_bits + 1` bounds, as in git's pack index): a lookup
    /// binary-searches one bucket of a few entries instead of the whole index,
    /// a couple of cache misses instead of ~log2(blobs). At most 2^18 buckets
    /// (1 MiB), about one per two blobs below that.
    fanout: Vec<u32>,
    fanout_bits: u32,
}

impl Index {
    /// Build from index files; a blob listed twice keeps its first location.
    pub fn from_files<'a>(files: impl IntoIterator<Item = &'a IndexFile>) -> Self {
        let mut idx = Index::default();
        for f in files {
            for p in &f.packs {
                idx.push_pack(p);
            }
        }
        idx.finish();
        idx
    }

    /// Build from index files given one at a time (see [`IndexBuilder`]).
    pub fn builder() -> IndexBuilder {
        IndexBuilder::default()
    }

    fn push_pack(&mut self, p: &IndexPack) {
        let n = self.packs.len() as u32;
        self.packs.push(p.id);
        let end = p
            .blobs
            .iter()
            .map(|b| b.offset as u64 + b.length as u64)
            .max()
            .unwrap_or(0);
        self.pack_sizes.push(end);
        for b in &p.blobs {
            self.entries.push(Entry {
                id: b.id,
                pack: n,
                compression: b.compression,
                blob_type: p.blob_type,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            });
        }
    }

    fn finish(&mut self) {
        let order = |a: &Entry, b: &Entry| a.id.cmp(&b.id).then(a.pack.cmp(&b.pack));
        // In place: a stable sort would take a scratch buffer of half the
        // index. (id, pack number) orders every entry a blob can have.
        self.entries.sort_unstable_by(order);
        // A blob listed more than once keeps its first location.
        self.entries.dedup_by_key(|e| e.id);
        self.entries.shrink_to_fit();
        self.build_fanout();
    }

    fn build_fanout(&mut self) {
        let bits = (self.entries.len().max(1).ilog2())
            .saturating_sub(1)
            .min(18);
        let buckets = 1usize << bits;
        let mut fanout = Vec::with_capacity(buckets + 1);
        let mut i = 0;
        for b in 0..buckets {
            while i < self.entries.len() && self.bucket_of(&self.entries[i].id, bits) < b {
                i += 1;
            }
            fanout.push(i as u32);
        }
        fanout.push(self.entries.len() as u32);
        self.fanout = fanout;
        self.fanout_bits = bits;
    }

    fn bucket_of(&self, id: &Id, bits: u32) -> usize {
        let prefix = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
        prefix.checked_shr(32 - bits).unwrap_or(0) as usize
    }

    /// Add packs written since the index was loaded.
    pub fn extend<'a>(&mut self, packs: impl IntoIterator<Item = &'a IndexPack>) {
        for p in packs {
            self.push_pack(p);
        }
        self.finish();
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        let i = self.position(id)?;
        let e = &self.entries[i];
        Some(BlobLocation {
            pack: self.packs[e.pack as usize],
            blob_type: e.blob_type,
            compression: e.compression,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
    }

    /// Where the blobs of the pack holding `id` end (the index's view of the
    /// pack's size, without its header): how far a read may reach.
    pub fn pack_end(&self, id: &Id) -> Option<u64> {
        self.position(id)
            .map(|i| self.pack_sizes[self.entries[i].pack as usize])
    }

    /// The number of the pack the index locates `id` in (see [`Index`]):
    /// packs added later than some number can be told apart by it.
    pub fn pack_number(&self, id: &Id) -> Option<usize> {
        self.position(id).map(|i| self.entries[i].pack as usize)
    }

    /// How many pack listings were added (the next pack's number).
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.position(id).is_some()
    }

    /// The blob's position in the index (`0..len()`), stable while the index
    /// is not extended: lets callers keep one bit per blob instead of its id.
    pub fn position(&self, id: &Id) -> Option<usize> {
        if self.fanout.is_empty() {
            return None; // never finished: no entries
        }
        let b = self.bucket_of(id, self.fanout_bits);
        let (from, to) = (self.fanout[b] as usize, self.fanout[b + 1] as usize);
        self.entries[from..to]
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| from + i)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct pack ids referenced, with the minimum size the index implies
    /// (end of the last blob; the real file is larger by its header).
    pub fn packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        let mut seen = HashSet::new();
        self.packs
            .iter()
            .zip(&self.pack_sizes)
            .filter(move |(id, _)| seen.insert(**id))
            .map(|(id, s)| (*id, *s))
    }

    /// Every blob as (id, location).
    pub fn iter(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.entries.iter().map(|e| {
            (
                e.id,
                BlobLocation {
                    pack: self.packs[e.pack as usize],
                    blob_type: e.blob_type,
                    compression: e.compression,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                },
            )
        })
    }

    /// Approximate heap bytes used (for the scale figures in docs/PERFORMANCE.md).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.packs.capacity() * (32 + 8)
            + self.fanout.capacity() * 4
    }
}

/// A set of blob ids as one bit per entry of an index (instead of a 32-byte
/// id in a hash set, ~50 bytes per blob with the table's overhead), plus the
/// rare id that index lacks. Prune and check keep the referenced blobs in it.
pub(crate) struct BlobSet {
    index: Arc<Index>,
    bits: Vec<u64>,
    unindexed: HashSet<Id>,
    count: u64,
}

impl BlobSet {
    pub(crate) fn new(index: Arc<Index>) -> Self {
        BlobSet {
            bits: vec![0; index.len().div_ceil(64)],
            index,
            unindexed: HashSet::new(),
            count: 0,
        }
    }

    /// Add `id`; false if it was there already.
    pub(crate) fn insert(&mut self, id: Id) -> bool {
        let new = match self.index.position(&id) {
            Some(i) => {
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                let new = self.bits[word] & bit == 0;
                self.bits[word] |= bit;
                new
            }
            None => self.unindexed.insert(id),
        };
        self.count += u64::from(new);
        new
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: &Id) -> bool {
        match self.index.position(id) {
            Some(i) => self.bits[i / 64] & (1u64 << (i % 64)) != 0,
            None => self.unindexed.contains(id),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fanout lookup finds exactly the ids the index holds, at any size
    /// (0 to 2^18 buckets) and at the ends of the id space.
    #[test]
    fn lookups_agree_with_a_plain_set_at_every_size() {
        for n in [0usize, 1, 2, 3, 7, 100, 1_000, 20_000] {
            let mut ids: Vec<Id> = (0..n as u64 * 2)
                .map(|i| Id(*blake3::hash(&i.to_le_bytes()).as_bytes()))
                .collect();
            ids.extend([Id([0; 32]), Id([0xff; 32]), Id([0x80; 32])]);
            let held: Vec<Id> = ids.iter().step_by(2).copied().collect();
            let file = IndexFile {
                supersedes: vec![],
                packs: vec![IndexPack {
                    id: Id([1; 32]),
                    blob_type: BlobType::Data,
                    blobs: held
                        .iter()
                        .enumerate()
                        .map(|(i, id)| PackEntry {
                            id: *id,
                            compression: 0,
                            offset: i as u32,
                            length: 1,
                            raw_length: 1,
                        })
                        .collect(),
                }],
            };
            let idx = Index::from_files([&file]);
            let set: HashSet<Id> = held.iter().copied().collect();
            for id in &ids {
                assert_eq!(idx.contains(id), set.contains(id), "n={n} id={id}");
                if let Some(i) = idx.position(id) {
                    assert_eq!(idx.entries[i].id, *id);
                    let at = held.iter().position(|h| h == id).unwrap();
                    assert_eq!(idx.get(id).unwrap().offset, at as u32);
                }
            }
        }
    }

    proptest! {
        /// The hand-written `Ord` of `Id` is the byte order the derived one had.
        #[test]
        fn id_order_is_byte_order(a in proptest::array::uniform32(any::<u8>()), b in proptest::array::uniform32(any::<u8>()), prefix in 0usize..32) {
            let mut b = b;
            b[..prefix].copy_from_slice(&a[..prefix]);
            prop_assert_eq!(Id(a).cmp(&Id(b)), a.cmp(&b));
            prop_assert_eq!(Id(a).cmp(&Id(a)), std::cmp::Ordering::Equal);
        }
    }

    fn sample() -> IndexFile {
        IndexFile {
            supersedes: vec![Id([9; 32])],
            packs: vec![
                IndexPack {
                    id: Id([1; 32]),
                    blob_type: BlobType::Data,
                    blobs: vec![
                        PackEntry {
                            id: Id([5; 32]),
                            compression: 1,
                            offset: 0,
                            length: 10,
                            raw_length: 20,
                        },
                        PackEntry {
                            id: Id([3; 32]),
                            compression: 0,
                            offset: 10,
                            length: 7,
                            raw_length: 7,
                        },
                    ],
                },
                IndexPack {
                    id: Id([2; 32]),
                    blob_type: BlobType::Tree,
                    blobs: vec![PackEntry {
                        id: Id([4; 32]),
                        compression: 2,
                        offset: 0,
                        length: 1,
                        raw_length: 9,
                    }],
                },
            ],
        }
    }

    #[test]
    fn encode_decode() {
        let f = sample();
        assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        let mut bytes = f.encode();
        bytes.pop();
        assert!(IndexFile::decode(&bytes).is_err());
    }

    #[test]
    fn lookup() {
        let idx = Index::from_files([&sample()]);
        assert_eq!(idx.len(), 3);
        let l = idx.get(&Id([3; 32])).unwrap();
        assert_eq!((l.pack, l.offset, l.length), (Id([1; 32]), 10, 7));
        assert_eq!(idx.get(&Id([4; 32])).unwrap().blob_type, BlobType::Tree);
        assert!(idx.get(&Id([8; 32])).is_none());
        assert_eq!(idx.packs().count(), 2);
    }

    #[test]
    fn builder_drops_superseded_files_and_their_packs() {
        // File 9 lists pack 7 (deleted since) and pack 1 with an old location of
        // blob 5; `sample()` supersedes it. File 8 is live and unrelated.
        let old = IndexFile {
            supersedes: vec![],
            packs: vec![
                IndexPack {
                    id: Id([7; 32]),
                    blob_type: BlobType::Data,
                    blobs: vec![PackEntry {
                        id: Id([6; 32]),
                        compression: 0,
                        offset: 0,
                        length: 3,
                        raw_length: 3,
                    }],
                },
                IndexPack {
                    id: Id([1; 32]),
                    blob_type: BlobType::Data,
                    blobs: vec![PackEntry {
                        id: Id([5; 32]),
                        compression: 0,
                        offset: 99,
                        length: 1,
                        raw_length: 1,
                    }],
                },
            ],
        };
        let other = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack {
                id: Id([8; 32]),
                blob_type: BlobType::Data,
                blobs: vec![PackEntry {
                    id: Id([0xaa; 32]),
                    compression: 0,
                    offset: 0,
                    length: 4,
                    raw_length: 4,
                }],
            }],
        };
        // Order of arrival must not matter.
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let files = [
                (Id([9; 32]), old.clone()),
                (Id([10; 32]), sample()),
                (Id([11; 32]), other.clone()),
            ];
            let mut b = Index::builder();
            for i in order {
                b.add(files[i].0, files[i].1.clone());
            }
            let idx = b.finish();
            assert_eq!(idx.len(), 4, "{order:?}");
            assert!(
                idx.get(&Id([6; 32])).is_none(),
                "blob of the superseded file is gone"
            );
            assert_eq!(
                idx.get(&Id([5; 32])).unwrap().offset,
                0,
                "superseding location wins"
            );
            assert_eq!(idx.get(&Id([0xaa; 32])).unwrap().pack, Id([8; 32]));
            let mut packs: Vec<Id> = idx.packs().map(|(p, _)| p).collect();
            packs.sort();
            assert_eq!(
                packs,
                vec![Id([1; 32]), Id([2; 32]), Id([8; 32])],
                "{order:?}"
            );
        }
        // Without supersedes the builder equals from_files.
        let mut b = Index::builder();
        b.add(Id([11; 32]), other.clone());
        b.add(Id([10; 32]), sample());
        let a = b.finish();
        let f = Index::from_files([&other, &sample()]);
        assert_eq!(a.iter().collect::<Vec<_>>(), f.iter().collect::<Vec<_>>());
    }

    /// Packs with blob ids drawn from a small space (so blobs repeat across
    /// packs), blobs at increasing offsets.
    fn packs_from(spec: &[(u8, Vec<u8>)]) -> Vec<IndexPack> {
        let mut seen = HashSet::new();
        spec.iter()
            .filter(|(p, _)| seen.insert(*p))
            .map(|(p, blobs)| IndexPack {
                id: Id([*p; 32]),
                blob_type: if p % 2 == 0 {
                    BlobType::Data
                } else {
                    BlobType::Tree
                },
                blobs: blobs
                    .iter()
                    .enumerate()
                    .map(|(i, b)| PackEntry {
                        id: Id([*b; 32]),
                        compression: 1,
                        offset: i as u32 * 100,
                        length: 90,
                        raw_length: 95,
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn a_blob_listed_twice_keeps_its_first_listing() {
        // Blob 2 is in packs 10 and 11; pack 10 is listed by both files.
        let packs = packs_from(&[(10, vec![1, 2]), (11, vec![2, 3])]);
        let f1 = IndexFile {
            supersedes: vec![],
            packs: packs.clone(),
        };
        let f2 = IndexFile {
            supersedes: vec![],
            packs: vec![packs[0].clone()],
        };
        let idx = Index::from_files([&f1, &f2]);
        assert_eq!((idx.len(), idx.pack_count()), (3, 3));
        assert_eq!(idx.pack_number(&Id([2; 32])), Some(0), "first listing wins");
        assert_eq!(idx.get(&Id([3; 32])).unwrap().pack, Id([11; 32]));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = IndexFile::decode(&bytes);
        }

        #[test]
        fn roundtrip(packs in proptest::collection::vec((any::<[u8;32]>(), proptest::collection::vec((any::<[u8;32]>(), 0u8..3, any::<u32>(), any::<u32>(), any::<u32>()), 0..20)), 0..8)) {
            let f = IndexFile {
                supersedes: vec![],
                packs: packs.into_iter().map(|(id, blobs)| IndexPack {
                    id: Id(id),
                    blob_type: BlobType::Data,
                    blobs: blobs.into_iter().map(|(b, c, o, l, r)| PackEntry { id: Id(b), compression: c, offset: o, length: l, raw_length: r }).collect(),
                }).collect(),
            };
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn used_blobs_is_a_set_over_index_positions_with_unindexed_ids_aside() {
        let ids: Vec<Id> = (0u8..200).map(|i| Id::of_stored(&[i])).collect();
        let pack = |id: &[u8], blobs: &[Id]| IndexPack {
            id: Id::of_stored(id),
            blob_type: BlobType::Data,
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, id)| PackEntry {
                    id: *id,
                    compression: 0,
                    offset: i as u32 * 10,
                    length: 10,
                    raw_length: 10,
                })
                .collect(),
        };
        // Blob 7 is in both packs; the first file's pack comes first.
        let first = pack(b"first", &ids[..100]);
        let second = pack(b"second", &ids[7..150]);
        let index = Arc::new(Index::from_files(&[IndexFile {
            supersedes: Vec::new(),
            packs: vec![first, second],
        }]));
        let mut used = BlobSet::new(index);
        assert!(used.insert(ids[7]));
        assert!(!used.insert(ids[7]));
        assert!(used.insert(ids[149]));
        assert!(used.insert(ids[199]), "an id the index lacks");
        assert!(!used.insert(ids[199]));
        assert_eq!(used.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(used.contains(id), [7, 149, 199].contains(&i), "blob {i}");
        }
    }
}
