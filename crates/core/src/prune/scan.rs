//! What prune knows about the index without holding it in memory.
//!
//! Every other command loads the whole index (52 bytes per blob). Prune needs
//! only a few facts per blob — which pack listings name it, and whether some
//! snapshot references it — so it streams the index files once and keeps:
//!
//! * one row per pack listing (~80 bytes per pack, not per blob);
//! * an in-memory index of the **tree** packs only, to walk the snapshots;
//! * every listed blob as a 53-byte record in an unnamed temporary file
//!   ([`Spill`]), partitioned into 256 buckets by the id's first byte;
//! * the referenced data ids (and, after the walk, the trees), 32 bytes each,
//!   spilled the same way.
//!
//! Then it joins the two spills one bucket at a time (a partitioned hash join,
//! "grace join"): a bucket holds 1/256 of the blobs, 0.2 bytes per blob of the
//! repository in memory at once. So prune's memory is the walk (the trees and
//! the set of trees visited), the pack rows, the 8 MiB of spill buffers, one
//! bucket, and what it repacks — not the repository's blob count
//! (docs/MAINTENANCE.md has the measurement). The temporary file lives in
//! `$TMPDIR` and takes 53 bytes per listed blob plus 32 per reference.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;

use crate::blob::{BlobType, Id};
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::PackEntry;
use crate::repository::{retry_vanished, IndexedRepository, Repository};
use crate::snapshot::SnapshotEntry;

/// Buckets of a [`Spill`] (by the first byte of the record).
const BUCKETS: usize = 256;
/// Bytes a bucket buffers before it is written out as one block.
const BLOCK: usize = 16 << 10;
/// Read and decrypt `batch` in parallel (decoding is left to the caller, one
/// pack at a time with [`IndexFile::decode_each`]).
pub(crate) fn read_batch(repo: &Repository, batch: &[Id]) -> Result<Vec<(Id, Vec<u8>)>> {
    batch
        .par_iter()
        .map(|id| Ok((*id, repo.load_object("index", ObjectKind::Index, id)?)))
        .collect()
}

/// Fixed-size records in an unnamed temporary file, in [`BUCKETS`] buckets by
/// their first byte. Each bucket buffers [`BLOCK`] bytes and writes them as
/// one block at the end of the file; [`bucket`](Self::bucket) reads a bucket's
/// blocks back. One file descriptor and sequential writes, whatever the count.
pub(crate) struct Spill {
    file: File,
    end: u64,
    rec: usize,
    bufs: Vec<Vec<u8>>,
    /// Per bucket: (offset, length) of its blocks in the file.
    blocks: Vec<Vec<(u64, u32)>>,
    count: u64,
}

fn spill_error(e: std::io::Error) -> Error {
    Error::io(
        std::env::temp_dir(),
        std::io::Error::new(
            e.kind(),
            format!("prune's temporary file (set TMPDIR to put it elsewhere): {e}"),
        ),
    )
}

impl Spill {
    pub(crate) fn new(rec: usize) -> Result<Spill> {
        assert!(rec > 0 && rec <= BLOCK);
        Ok(Spill {
            file: tempfile::tempfile().map_err(spill_error)?,
            end: 0,
            rec,
            bufs: vec![Vec::new(); BUCKETS],
            blocks: vec![Vec::new(); BUCKETS],
            count: 0,
        })
    }

    pub(crate) fn push(&mut self, rec: &[u8]) -> Result<()> {
        debug_assert_eq!(rec.len(), self.rec);
        let k = rec[0] as usize;
        let buf = &mut self.bufs[k];
        if buf.capacity() == 0 {
            buf.reserve_exact(BLOCK / self.rec * self.rec);
        }
        buf.extend_from_slice(rec);
        self.count += 1;
        if buf.len() + self.rec > BLOCK {
            self.file.write_all_at(buf, self.end).map_err(spill_error)?;
            self.blocks[k].push((self.end, buf.len() as u32));
            self.end += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }

    /// Records pushed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Every record of bucket `k`, in the order pushed.
    pub(crate) fn bucket(&self, k: usize) -> Result<Vec<u8>> {
        let on_disk: usize = self.blocks[k].iter().map(|(_, n)| *n as usize).sum();
        let mut out = vec![0; on_disk + self.bufs[k].len()];
        let mut at = 0;
        for (off, n) in &self.blocks[k] {
            let n = *n as usize;
            self.file
                .read_exact_at(&mut out[at..at + n], *off)
                .map_err(spill_error)?;
            at += n;
        }
        out[at..].copy_from_slice(&self.bufs[k]);
        Ok(out)
    }
}

/// A blob as a pack listing names it (a record of the entries spill).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listed {
    pub id: Id,
    /// Number of the listing ([`Scan::listings`]).
    pub listing: u32,
    pub entry: PackEntry,
    /// The stored bytes this blob accounts for: its length, or for a member of
    /// a compression group its share of the group's range (by plaintext
    /// length), so a group whose members are mostly unused counts as mostly
    /// unused space.
    pub share: u32,
}

const LISTED_LEN: usize = 32 + 4 + 4 + 4 + 4 + 1 + 4;

impl Listed {
    fn encode(&self) -> [u8; LISTED_LEN] {
        let mut r = [0; LISTED_LEN];
        r[..32].copy_from_slice(&self.id.0);
        r[32..36].copy_from_slice(&self.listing.to_le_bytes());
        r[36..40].copy_from_slice(&self.entry.offset.to_le_bytes());
        r[40..44].copy_from_slice(&self.entry.length.to_le_bytes());
        r[44..48].copy_from_slice(&self.entry.raw_length.to_le_bytes());
        r[48] = self.entry.compression;
        r[49..53].copy_from_slice(&self.share.to_le_bytes());
        r
    }

    fn decode(r: &[u8]) -> Listed {
        let u = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
        let id = Id(r[..32].try_into().expect("32 bytes"));
        Listed {
            id,
            listing: u(32),
            entry: PackEntry {
                id,
                compression: r[48],
                offset: u(36),
                length: u(40),
                raw_length: u(44),
            },
            share: u(49),
        }
    }
}

/// One pack as one index file lists it.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub pack: Id,
    /// Number of the index file ([`Scan::files`]).
    pub file: u32,
    pub blob_type: BlobType,
    /// Sum of the listed blobs' stored lengths.
    pub total: u64,
    /// The end of the last listed blob (the pack's size without its header).
    pub end: u64,
    /// Of `total`, the bytes of referenced blobs (set by [`Scan::count_used`]).
    pub used: u64,
    /// The first listing of its pack in a file no other file supersedes: the
    /// one that counts (a pack listed twice is counted and written once).
    pub canonical: bool,
}

/// The streamed index: see the module documentation.
pub(crate) struct Scan {
    /// Every index file listed, superseded ones included, in reading order.
    pub files: Vec<Id>,
    /// Whether each file is live (no other file supersedes it).
    live: Vec<bool>,
    pub listings: Vec<Listing>,
    /// Pack → its canonical listing.
    canonical: HashMap<Id, u32>,
    /// Every listed blob (`None` when not asked for).
    entries: Option<Spill>,
    /// The tree packs of the live files, plus the tree packs among the extra
    /// headers that no live file lists.
    trees: Option<Index>,
    /// Packs among the extra headers that no live file lists.
    pub extra_packs: HashSet<Id>,
    /// For each watched id, the listings that name it.
    watched: HashMap<Id, Vec<u32>>,
}

impl Scan {
    /// Stream every index file. `extra` are packs known from their own headers
    /// (those of pending marks): the tree packs among them that no live file
    /// lists join the tree index, so snapshots that use them can be walked.
    /// With `spill_entries`, every listed blob goes to the entries spill (for
    /// [`join`](Self::join)); the listings of each id in `watch` are kept.
    pub(crate) fn load<'a>(
        repo: &Repository,
        extra: impl IntoIterator<Item = &'a IndexPack> + Clone,
        watch: &HashSet<Id>,
        spill_entries: bool,
    ) -> Result<Scan> {
        // A file that vanishes between the listing and its read was
        // superseded by a concurrent `repair index` (or, for a `prune
        // --dry-run`, which takes no lock, a prune): list again.
        retry_vanished(|| Self::load_once(repo, extra.clone(), watch, spill_entries))
    }

    fn load_once<'a>(
        repo: &Repository,
        extra: impl IntoIterator<Item = &'a IndexPack>,
        watch: &HashSet<Id>,
        spill_entries: bool,
    ) -> Result<Scan> {
        let batches = repo.index_batches()?;
        let mut scan = Scan {
            live: Vec::new(),
            files: Vec::new(),
            listings: Vec::new(),
            canonical: HashMap::new(),
            entries: if spill_entries {
                Some(Spill::new(LISTED_LEN)?)
            } else {
                None
            },
            trees: None,
            extra_packs: HashSet::new(),
            watched: HashMap::new(),
        };
        let mut trees = Index::builder();
        let mut superseded = HashSet::new();
        for batch in &batches {
            for (id, plain) in read_batch(repo, batch)? {
                let file = scan.files.len() as u32;
                scan.files.push(id);
                let mut tree_packs = Vec::new();
                let mut spilled = Ok(());
                let supersedes = IndexFile::decode_each(&plain, |p| {
                    if spilled.is_ok() {
                        spilled = scan.add_pack(file, &p, watch);
                    }
                    if p.blob_type == BlobType::Tree {
                        tree_packs.push(p);
                    }
                })
                .map_err(|e| Error::damaged("index", id, e))?;
                spilled?;
                superseded.extend(supersedes.iter().copied());
                trees.add(
                    id,
                    IndexFile {
                        supersedes,
                        packs: tree_packs,
                    },
                );
            }
        }
        scan.live = scan.files.iter().map(|f| !superseded.contains(f)).collect();
        for (n, l) in scan.listings.iter_mut().enumerate() {
            if scan.live[l.file as usize] && !scan.canonical.contains_key(&l.pack) {
                scan.canonical.insert(l.pack, n as u32);
                l.canonical = true;
            }
        }
        let mut trees = trees.finish();
        let extra: Vec<&IndexPack> = extra
            .into_iter()
            .filter(|p| !scan.canonical.contains_key(&p.id))
            .collect();
        scan.extra_packs = extra.iter().map(|p| p.id).collect();
        trees.extend(extra.into_iter().filter(|p| p.blob_type == BlobType::Tree));
        scan.trees = Some(trees);
        Ok(scan)
    }

    fn add_pack(&mut self, file: u32, p: &IndexPack, watch: &HashSet<Id>) -> Result<()> {
        let listing = self.listings.len() as u32;
        let mut total = 0;
        let mut end = 0;
        // Each compression group's members' plaintext bytes, by the group's
        // offset: in all, and so far in the listing's order.
        let mut group_raw: HashMap<u32, (u64, u64)> = HashMap::new();
        for b in p
            .blobs
            .iter()
            .filter(|b| crate::group::is_grouped(b.compression))
        {
            group_raw.entry(b.offset).or_default().0 += u64::from(b.raw_length);
        }
        for b in &p.blobs {
            if crate::group::starts_range(b.compression) {
                total += u64::from(b.length);
            }
            end = end.max(u64::from(b.offset) + u64::from(b.length));
            if let Some(spill) = &mut self.entries {
                // A member's share of the range by plaintext length,
                // cumulative so that a group's shares add up to its length
                // (a fully used group is no unused space), and at least 1: a
                // used member, even an empty one, makes its pack used.
                let share = match group_raw.get_mut(&b.offset) {
                    Some((all, before)) if crate::group::is_grouped(b.compression) => {
                        // u128: raw sums from a damaged index cannot overflow.
                        let upto = |raw: u64| {
                            (u128::from(b.length) * u128::from(raw))
                                .checked_div(u128::from(*all))
                                .unwrap_or(0) as u64
                        };
                        let from = upto(*before);
                        *before += u64::from(b.raw_length);
                        (upto(*before) - from).max(1) as u32
                    }
                    _ => b.length,
                };
                let rec = Listed {
                    id: b.id,
                    listing,
                    entry: *b,
                    share,
                };
                spill.push(&rec.encode())?;
            }
            if watch.contains(&b.id) {
                self.watched.entry(b.id).or_default().push(listing);
            }
        }
        self.listings.push(Listing {
            pack: p.id,
            file,
            blob_type: p.blob_type,
            total,
            end,
            used: 0,
            canonical: false,
        });
        Ok(())
    }

    /// The index of the tree packs (once; the walk takes it).
    pub(crate) fn take_trees(&mut self) -> Index {
        self.trees.take().unwrap_or_default()
    }

    /// Whether an index file no other file supersedes lists `pack`.
    pub(crate) fn is_listed(&self, pack: &Id) -> bool {
        self.canonical.contains_key(pack)
    }

    /// Whether listing `n` is in a live file.
    pub(crate) fn is_live(&self, n: u32) -> bool {
        self.live[self.listings[n as usize].file as usize]
    }

    /// Whether a live file lists watched id `id` (in any pack).
    pub(crate) fn watched_is_listed(&self, id: &Id) -> bool {
        self.watched
            .get(id)
            .is_some_and(|ls| ls.iter().any(|n| self.is_live(*n)))
    }

    /// The ids of live files, in reading order.
    pub(crate) fn live_files(&self) -> impl Iterator<Item = Id> + '_ {
        self.files
            .iter()
            .zip(&self.live)
            .filter(|(_, live)| **live)
            .map(|(id, _)| *id)
    }

    /// For every referenced id some listing names, call `f` with all its
    /// listings; bucket by bucket (see the module documentation). Returns the
    /// number of distinct referenced ids (listed or not).
    pub(crate) fn join(
        &self,
        referenced: &Spill,
        mut f: impl FnMut(&[Listed]) -> Result<()>,
    ) -> Result<u64> {
        let entries = self
            .entries
            .as_ref()
            .expect("join needs a scan that spilled its entries");
        let mut distinct = 0;
        for k in 0..BUCKETS {
            let mut refs: Vec<Id> = referenced
                .bucket(k)?
                .chunks_exact(32)
                .map(|r| Id(r.try_into().expect("32 bytes")))
                .collect();
            refs.sort_unstable();
            refs.dedup();
            distinct += refs.len() as u64;
            if refs.is_empty() {
                continue;
            }
            let mut listed: Vec<Listed> = entries
                .bucket(k)?
                .chunks_exact(LISTED_LEN)
                .map(Listed::decode)
                .collect();
            listed.sort_unstable_by_key(|l| (l.id, l.listing));
            for group in listed.chunk_by(|a, b| a.id == b.id) {
                if refs.binary_search(&group[0].id).is_ok() {
                    f(group)?;
                }
            }
        }
        Ok(distinct)
    }

    /// Set each canonical listing's `used` bytes from `referenced`; returns
    /// the number of distinct referenced ids.
    pub(crate) fn count_used(&mut self, referenced: &Spill) -> Result<u64> {
        let mut used = vec![0u64; self.listings.len()];
        let distinct = self.join(referenced, |group| {
            for l in group {
                used[l.listing as usize] += u64::from(l.share);
            }
            Ok(())
        })?;
        for (l, u) in self.listings.iter_mut().zip(used) {
            if l.canonical {
                // Group shares of at least 1 byte can add up past the total.
                l.used = u.min(l.total);
            }
        }
        Ok(distinct)
    }
}

/// Walk every snapshot's trees (each distinct tree once), calling `data` with
/// every data blob id a node names (as often as nodes name it). Returns the
/// trees visited.
///
/// `snaps` must be listed *before* the scan read the index: the write order
/// packs → index → snapshot then guarantees that every listed snapshot's blobs
/// are in that index. (Listing after loading raced with backups that finished
/// in between: their snapshot named an index file prune had not read.)
pub(crate) fn walk(
    trees: &IndexedRepository,
    snaps: &[SnapshotEntry],
    mut data: impl FnMut(Id) -> Result<()>,
) -> Result<HashSet<Id>> {
    let mut visited = HashSet::new();
    for s in snaps {
        let mut stack = vec![s.snapshot.tree];
        while let Some(t) = stack.pop() {
            if !visited.insert(t) {
                continue;
            }
            let tree = trees.load_tree(&t).map_err(|e| {
                Error::damaged(
                    "snapshot",
                    s.id,
                    format!("tree {t} cannot be read ({e}); prune refuses to guess what it references (hint: lifeboat repair snapshots)"),
                )
            })?;
            for n in tree.nodes {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
                for id in n.content.into_iter().flatten() {
                    data(id)?;
                }
            }
        }
    }
    Ok(visited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every record comes back from its bucket, in push order, whatever
        /// the record size and however many blocks a bucket fills.
        #[test]
        fn a_spill_gives_back_each_bucket_in_order(
            rec in 1usize..64,
            firsts in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let mut spill = Spill::new(rec).unwrap();
            let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); BUCKETS];
            for (i, first) in firsts.iter().enumerate() {
                let mut r = vec![*first; rec];
                for (j, b) in r.iter_mut().enumerate().skip(1) {
                    *b = (i * 31 + j) as u8;
                }
                spill.push(&r).unwrap();
                want[*first as usize].push(r);
            }
            prop_assert_eq!(spill.len(), firsts.len() as u64);
            for (k, w) in want.iter().enumerate() {
                prop_assert_eq!(spill.bucket(k).unwrap(), w.concat());
            }
        }
    }

    #[test]
    fn a_bucket_spans_many_blocks() {
        let mut spill = Spill::new(LISTED_LEN).unwrap();
        let n = 3 * BLOCK / LISTED_LEN + 5;
        for i in 0..n as u32 {
            let mut id = [7u8; 32];
            id[1..5].copy_from_slice(&i.to_le_bytes());
            let l = Listed {
                id: Id(id),
                listing: i,
                entry: PackEntry {
                    id: Id(id),
                    compression: 1,
                    offset: i * 2,
                    length: i * 3,
                    raw_length: i * 4,
                },
                share: i * 5,
            };
            spill.push(&l.encode()).unwrap();
        }
        assert!(spill.blocks[7].len() >= 3);
        let back = spill.bucket(7).unwrap();
        for (i, r) in back.chunks_exact(LISTED_LEN).enumerate() {
            let l = Listed::decode(r);
            let i = i as u32;
            assert_eq!(l.listing, i);
            assert_eq!(
                (l.entry.offset, l.entry.length, l.entry.raw_length),
                (i * 2, i * 3, i * 4)
            );
            assert_eq!(l.share, i * 5);
            assert_eq!(l.entry.id, l.id);
        }
        assert_eq!(back.len(), n * LISTED_LEN);
    }

    fn id(name: &str) -> Id {
        Id::of_stored(name.as_bytes())
    }

    /// A pack named `name` listing `blobs` (name, stored length).
    fn pack(name: &str, blob_type: BlobType, blobs: &[(&str, u32)]) -> IndexPack {
        let mut offset = 0;
        IndexPack {
            id: id(name),
            blob_type,
            blobs: blobs
                .iter()
                .map(|(b, len)| {
                    let e = PackEntry {
                        id: id(b),
                        compression: 0,
                        offset,
                        length: *len,
                        raw_length: *len,
                    };
                    offset += len;
                    e
                })
                .collect(),
        }
    }

    /// A compression group's members count their shares of its range: all
    /// used, the whole range; some used, their part; a used empty member at
    /// least a byte (a pack with a used blob is never unused).
    #[test]
    fn group_members_count_their_share_of_the_range() {
        use crate::group::{GROUPED, SAME_RANGE};
        let (_tmp, repo) = crate::prune::tests::test_repo();
        let member = |name: &str, raw: u32, first: bool| PackEntry {
            id: id(name),
            compression: 1 | GROUPED | if first { 0 } else { SAME_RANGE },
            offset: 0,
            length: 1000,
            raw_length: raw,
        };
        // Raw 0 + 300 + 700 in one range of 1000 bytes, then a blob of 50.
        let mut p = IndexPack {
            id: id("p"),
            blob_type: BlobType::Data,
            blobs: vec![
                member("e", 0, true),
                member("s", 300, false),
                member("l", 700, false),
            ],
        };
        p.blobs.push(PackEntry {
            id: id("b"),
            compression: 1,
            offset: 1000,
            length: 50,
            raw_length: 80,
        });
        repo.save_index(&IndexFile {
            supersedes: vec![],
            packs: vec![p.clone()],
        })
        .unwrap();
        let used = |refs: &[&str]| {
            let mut scan = Scan::load(&repo, [].iter(), &HashSet::new(), true).unwrap();
            let mut referenced = Spill::new(32).unwrap();
            for r in refs {
                referenced.push(&id(r).0).unwrap();
            }
            scan.count_used(&referenced).unwrap();
            let l = &scan.listings[0];
            (l.used, l.total)
        };
        assert_eq!(
            used(&["e", "s", "l", "b"]),
            (1050, 1050),
            "clamped to the total"
        );
        assert_eq!(used(&["s", "l"]), (1000, 1050));
        assert_eq!(used(&["s"]), (300, 1050));
        assert_eq!(used(&["l", "b"]), (750, 1050));
        assert_eq!(
            used(&["e"]),
            (1, 1050),
            "an empty member keeps its pack used"
        );
        assert_eq!(used(&[]), (0, 1050));
    }

    /// Superseded files, a pack listed twice, a blob in two packs, an
    /// unlisted reference and an extra header: what the scan and its join
    /// say matches what the index files say once the superseded file is gone.
    #[test]
    fn the_scan_counts_live_canonical_listings_and_joins_every_listing() {
        use BlobType::{Data, Tree};
        let (_tmp, repo) = crate::prune::tests::test_repo();
        let p1 = pack("p1", Data, &[("a", 10), ("b", 20)]);
        let p2 = pack("p2", Data, &[("c", 30)]);
        let t1 = pack("t1", Tree, &[("t", 5)]);
        let p3 = pack("p3", Data, &[("d", 40)]);
        let p4 = pack("p4", Data, &[("b", 20), ("e", 50)]);
        let file = |supersedes: Vec<Id>, packs: Vec<IndexPack>| {
            repo.save_index(&IndexFile { supersedes, packs }).unwrap()
        };
        let f1 = file(vec![], vec![p1.clone(), p2.clone(), t1.clone()]);
        let f3 = file(vec![], vec![p3.clone(), p1.clone()]);
        let f4 = file(vec![f3], vec![p1.clone(), p4.clone()]);
        let x = pack("x", Tree, &[("u", 7)]);
        let extra = [x.clone(), p2.clone()];
        let watch: HashSet<Id> = [id("d"), id("e")].into();
        let mut scan = Scan::load(&repo, extra.iter(), &watch, true).unwrap();

        let mut files = scan.files.clone();
        files.sort();
        let mut want = vec![f1, f3, f4];
        want.sort();
        assert_eq!(files, want, "every file read, the superseded one too");
        let mut live: Vec<Id> = scan.live_files().collect();
        live.sort();
        let mut want = vec![f1, f4];
        want.sort();
        assert_eq!(live, want);
        for p in [&p1, &p2, &t1, &p4] {
            assert!(scan.is_listed(&p.id), "{}", p.id);
        }
        assert!(!scan.is_listed(&p3.id), "only a superseded file lists p3");
        assert_eq!(scan.extra_packs, [x.id].into(), "p2 is listed: not extra");
        assert!(scan.watched_is_listed(&id("e")));
        assert!(!scan.watched_is_listed(&id("d")));
        let trees = scan.take_trees();
        assert!(trees.contains(&id("t")) && trees.contains(&id("u")));
        assert!(
            !trees.contains(&id("a")),
            "data packs stay out of the tree index"
        );

        let mut referenced = Spill::new(32).unwrap();
        for r in ["a", "b", "d", "t", "z", "b"] {
            referenced.push(&id(r).0).unwrap();
        }
        assert_eq!(
            scan.count_used(&referenced).unwrap(),
            5,
            "distinct, listed or not"
        );
        let canonical: Vec<&Listing> = scan.listings.iter().filter(|l| l.canonical).collect();
        assert_eq!(canonical.len(), 4, "p1 once, p3 not at all");
        let usage = |p: &IndexPack| {
            let l = canonical.iter().find(|l| l.pack == p.id).unwrap();
            (l.used, l.total, l.end)
        };
        assert_eq!(usage(&p1), (30, 30, 30));
        assert_eq!(usage(&p2), (0, 30, 30));
        assert_eq!(usage(&t1), (5, 5, 5));
        assert_eq!(usage(&p4), (20, 70, 70));

        let mut groups: Vec<(Id, Vec<Id>)> = Vec::new();
        scan.join(&referenced, |g| {
            assert!(g.iter().all(|l| l.id == g[0].id && l.entry.id == l.id));
            let mut packs: Vec<Id> = g
                .iter()
                .map(|l| scan.listings[l.listing as usize].pack)
                .collect();
            packs.sort();
            groups.push((g[0].id, packs));
            Ok(())
        })
        .unwrap();
        groups.sort();
        let mut want = vec![
            (id("a"), vec![p1.id, p1.id, p1.id]),
            (id("b"), vec![p1.id, p1.id, p1.id, p4.id]),
            (id("d"), vec![p3.id]),
            (id("t"), vec![t1.id]),
        ];
        for (_, packs) in &mut want {
            packs.sort();
        }
        want.sort();
        assert_eq!(
            groups, want,
            "every listing, superseded ones too; z is listed nowhere"
        );
    }
}
