//! `copy`: replicating snapshots from one repository into another.
//!
//! The two repositories have their own passwords, encryption keys and backends.
//! What decides *how* data moves is whether they share a [`ContentKey`]
//! (the blob-id key and chunker gear seed, see [`crate::crypto`]):
//!
//! * **[`CopyMode::Blobs`]** — same content key (the destination was created
//!   with `init --copy-chunker-params --from-repo SOURCE`, or is the source
//!   itself): a blob has the same id in both, so copy walks the snapshots'
//!   trees, and moves exactly the blobs the destination's index lacks. Source
//!   packs are read with coalesced ranged reads, one pack at a time per
//!   connection; every blob is decrypted, verified against its id and
//!   re-sealed under the destination's key.
//! * **[`CopyMode::Rechunk`]** — unrelated repositories: ids differ and so do
//!   chunk boundaries, so every file of every copied snapshot is streamed from
//!   the source, re-chunked with the destination's chunker and stored under
//!   destination ids (deduplicated against the destination as a backup would
//!   be); trees are rewritten bottom-up. Correct, but it downloads every file
//!   of each snapshot it copies.
//!
//! Each copied snapshot records the source snapshot's id in `original` (or
//! keeps the source's own `original`), and a source snapshot whose
//! origin already appears in the destination is skipped: a second run copies
//! nothing. Write order is the usual packs → index → snapshots, under a
//! [`crate::lock::Session`] on the destination, so an interrupted copy leaves
//! a valid destination and a rerun reuses the packs it already indexed.
//!
//! # Errors
//! Storage errors of either side, [`Error::Damaged`] naming a source blob and
//! pack that fails verification, [`Error::BlobNotIndexed`] for a source
//! snapshot that references a blob its index does not have. Nothing of a
//! failed run is referenced by a snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{BlobType, Id};
use crate::crypto::ContentKey;
use crate::error::{Error, Result};
use crate::index::BlobLocation;
use crate::pack::pack_key;
use crate::progress::Progress;
use crate::repository::{BlobAt, BlobBuffers, IndexedRepository};
use crate::snapshot::SnapshotEntry;
use crate::tree::Tree;
use crate::walk::ContentReader;
use crate::writer::{BlobWriter, WriterOptions};

/// How blobs reach the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMode {
    /// Same content key: blobs are copied by id.
    Blobs,
    /// Different content keys: file contents are re-chunked.
    Rechunk,
}

impl CopyMode {
    /// The mode for copying between repositories with these content keys.
    pub fn between(source: &ContentKey, destination: &ContentKey) -> Self {
        if source == destination {
            CopyMode::Blobs
        } else {
            CopyMode::Rechunk
        }
    }
}

/// Options for [`copy`].
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Compression, upload connections of the destination writer.
    pub writer: WriterOptions,
    /// Parallel reads from the source (0: the writer's `connections`).
    pub read_connections: usize,
    /// Read and compute everything, write nothing to the destination.
    pub dry_run: bool,
}

/// One snapshot copied (or, in a dry run, that would be copied).
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    pub source: Id,
    /// The new snapshot's id (`None` in a dry run).
    pub destination: Option<Id>,
    pub time: chrono::DateTime<chrono::FixedOffset>,
    pub hostname: String,
    pub paths: Vec<String>,
}

/// One source snapshot skipped because the destination already has it.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedSnapshot {
    pub source: Id,
    pub existing: Id,
}

/// What a [`copy`] did.
#[derive(Debug, Clone, Serialize)]
pub struct CopySummary {
    pub mode: CopyMode,
    pub dry_run: bool,
    pub copied: Vec<CopiedSnapshot>,
    pub skipped: Vec<SkippedSnapshot>,
    /// New blobs stored in the destination.
    pub data_blobs_copied: u64,
    pub tree_blobs_copied: u64,
    /// Blobs the copied snapshots reference that the destination already had.
    pub blobs_already_present: u64,
    /// Plaintext bytes of the new blobs.
    pub bytes_copied: u64,
    /// The new blobs as stored in the destination (compressed, encrypted).
    pub bytes_stored: u64,
    /// Plaintext bytes read from the source (trees and data).
    pub bytes_read: u64,
    pub packs_written: u64,
}

#[derive(Default)]
struct Counters {
    present: AtomicU64,
    read: AtomicU64,
}

/// Copy `snapshots` of `src` (any selection of its snapshots) into `dst`.
///
/// # Errors
/// See the [module documentation](self).
pub fn copy(
    src: &IndexedRepository,
    dst: &IndexedRepository,
    snapshots: &[SnapshotEntry],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopySummary> {
    let mode = CopyMode::between(&src.content_key(), &dst.content_key());
    // Origin (first snapshot of a chain of copies) → destination snapshot id.
    let mut in_dst: HashMap<Id, Id> = dst
        .snapshots()?
        .into_iter()
        .map(|e| (e.snapshot.origin(&e.id), e.id))
        .collect();
    let mut selected: Vec<&SnapshotEntry> = snapshots.iter().collect();
    selected.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
    selected.dedup_by_key(|e| e.id);
    let mut skipped = Vec::new();
    let mut todo = Vec::new();
    let mut seen_origins = HashSet::new();
    for e in selected {
        let origin = e.snapshot.origin(&e.id);
        if let Some(existing) = in_dst.get(&origin) {
            skipped.push(SkippedSnapshot {
                source: e.id,
                existing: *existing,
            });
        } else if seen_origins.insert(origin) {
            todo.push(e);
        }
    }
    let mut summary = CopySummary {
        mode,
        dry_run: opts.dry_run,
        copied: Vec::new(),
        skipped,
        data_blobs_copied: 0,
        tree_blobs_copied: 0,
        blobs_already_present: 0,
        bytes_copied: 0,
        bytes_stored: 0,
        bytes_read: 0,
        packs_written: 0,
    };
    if todo.is_empty() {
        return Ok(summary);
    }

    // Visible to the destination's prune until the snapshots are saved.
    let _session = if opts.dry_run {
        None
    } else {
        Some(crate::lock::Session::start(
            dst.storage(),
            dst.loaded_at(),
            "copy",
        )?)
    };
    let writer_opts = WriterOptions {
        dry_run: opts.dry_run || opts.writer.dry_run,
        ..opts.writer.clone()
    };
    let writer = BlobWriter::new(dst, dst.index().clone(), &writer_opts);
    let threads = match opts.read_connections {
        0 => writer_opts.connections,
        n => n,
    }
    .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("copy-read-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("cannot start copy threads: {e}")))?;
    let counters = Counters::default();
    let ctx = Ctx {
        src,
        writer: &writer,
        counters: &counters,
        progress,
        dry_run: opts.dry_run,
    };
    let roots: Vec<Id> = todo.iter().map(|e| e.snapshot.tree).collect();
    let new_roots: HashMap<Id, Id> = pool.install(|| match mode {
        CopyMode::Blobs => {
            ctx.copy_blobs(&roots)?;
            Ok(roots.iter().map(|r| (*r, *r)).collect())
        }
        CopyMode::Rechunk => {
            let rechunk = Rechunk {
                ctx: &ctx,
                dst,
                trees: Mutex::new(HashMap::new()),
                contents: Mutex::new(HashMap::new()),
            };
            roots
                .iter()
                .map(|r| Ok((*r, rechunk.tree(r)?)))
                .collect::<Result<HashMap<_, _>>>()
        }
    })?;
    let (packs, totals) = writer.finish()?;
    summary.data_blobs_copied = totals.data_blobs;
    summary.tree_blobs_copied = totals.tree_blobs;
    summary.bytes_copied = totals.raw_bytes;
    summary.bytes_stored = totals.stored_bytes;
    summary.packs_written = packs.len() as u64;
    summary.blobs_already_present = counters.present.load(Ordering::Relaxed);
    summary.bytes_read = counters.read.load(Ordering::Relaxed);

    // Snapshots last, oldest first, so a parent is copied before its children.
    let src_ids: HashMap<Id, Id> = snapshots
        .iter()
        .map(|e| (e.id, e.snapshot.origin(&e.id)))
        .collect();
    for e in todo {
        let origin = e.snapshot.origin(&e.id);
        let mut snap = e.snapshot.clone();
        snap.original = Some(origin);
        snap.tree = new_roots[&e.snapshot.tree];
        snap.parent = e.snapshot.parent.and_then(|p| {
            let p_origin = match src_ids.get(&p) {
                Some(o) => *o,
                None => src.load_snapshot(&p).ok()?.origin(&p),
            };
            in_dst.get(&p_origin).copied()
        });
        let destination = if opts.dry_run {
            None
        } else {
            let id = dst.save_snapshot(&snap)?;
            in_dst.insert(origin, id);
            Some(id)
        };
        summary.copied.push(CopiedSnapshot {
            source: e.id,
            destination,
            time: e.snapshot.time,
            hostname: e.snapshot.hostname.clone(),
            paths: e.snapshot.paths.clone(),
        });
    }
    Ok(summary)
}

struct Ctx<'a> {
    src: &'a IndexedRepository,
    writer: &'a BlobWriter,
    counters: &'a Counters,
    progress: &'a dyn Progress,
    dry_run: bool,
}

impl Ctx<'_> {
    fn read(&self, id: &Id) -> Result<Vec<u8>> {
        let b = self.src.read_blob(id)?;
        self.counters
            .read
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        self.progress.add_bytes(b.len() as u64);
        Ok(b)
    }

    /// Store a blob under its (shared) id unless the destination has it.
    fn store(&self, blob_type: BlobType, id: Id, plain: &[u8]) -> Result<()> {
        if self.writer.claim(id) {
            self.writer.store(blob_type, id, plain)
        } else {
            self.counters.present.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// Blob mode: every tree reachable from `roots` (level by level, reads in
    /// parallel), then the data blobs the destination lacks, pack by pack.
    fn copy_blobs(&self, roots: &[Id]) -> Result<()> {
        let mut visited: HashSet<Id> = HashSet::new();
        let mut frontier: Vec<Id> = roots
            .iter()
            .copied()
            .filter(|r| visited.insert(*r))
            .collect();
        let mut seen: HashSet<Id> = HashSet::new();
        let mut missing: Vec<Id> = Vec::new();
        while !frontier.is_empty() {
            let trees: Vec<(Id, Vec<u8>)> = frontier
                .par_iter()
                .map(|id| Ok((*id, self.read(id)?)))
                .collect::<Result<_>>()?;
            let mut next = Vec::new();
            for (id, bytes) in trees {
                let tree = Tree::deserialize(&bytes).map_err(|e| Error::damaged("tree", id, e))?;
                // The exact bytes are copied: the id stays valid whatever
                // this build's serialisation would produce.
                self.store(BlobType::Tree, id, &bytes)?;
                for node in &tree.nodes {
                    if let Some(sub) = node.subtree {
                        if visited.insert(sub) {
                            next.push(sub);
                        }
                    }
                    for c in node.content.iter().flatten() {
                        if !seen.insert(*c) {
                            continue;
                        }
                        if self.writer.is_known(c) {
                            self.counters.present.fetch_add(1, Ordering::Relaxed);
                        } else {
                            missing.push(*c);
                        }
                    }
                }
            }
            frontier = next;
        }
        let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
        for id in missing {
            let loc = self
                .src
                .index()
                .get(&id)
                .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
            by_pack.entry(loc.pack).or_default().push((id, loc));
        }
        let mut packs: Vec<(Id, Vec<(Id, BlobLocation)>)> = by_pack.into_iter().collect();
        packs.sort_by_key(|(p, _)| *p);
        packs.par_iter_mut().try_for_each(|(pack, blobs)| {
            blobs.sort_by_key(|(_, l)| l.offset);
            self.copy_pack(pack, blobs)
        })
    }

    /// Read the given blobs of one source pack (neighbours coalesced into one
    /// ranged read) and store them in the destination.
    fn copy_pack(&self, pack: &Id, blobs: &[(Id, BlobLocation)]) -> Result<()> {
        const MAX_GAP: u64 = 256 * 1024;
        const MAX_READ: u64 = 32 << 20;
        if self.dry_run {
            // Nothing is uploaded: count what would be, from the index (a
            // compression group's range once).
            let mut ranges = std::collections::HashSet::new();
            for (id, loc) in blobs {
                self.writer.claim(*id);
                self.writer
                    .stats()
                    .data_blobs
                    .fetch_add(1, Ordering::Relaxed);
                let s = self.writer.stats();
                s.raw_bytes
                    .fetch_add(loc.raw_length as u64, Ordering::Relaxed);
                if !crate::group::is_grouped(loc.compression) || ranges.insert(loc.offset) {
                    s.stored_bytes
                        .fetch_add(loc.length as u64, Ordering::Relaxed);
                }
            }
            return Ok(());
        }
        let mut bufs = BlobBuffers::default();
        for (read, range) in crate::pack::coalesced_reads(blobs, MAX_GAP, MAX_READ) {
            let start = range.start;
            let data = self.src.storage().get(&pack_key(pack), Some(range))?;
            bufs.new_read();
            for (id, loc) in &blobs[read] {
                let off = (loc.offset as u64 - start) as usize;
                let sealed = &data[off..off + loc.length as usize];
                // Members of one compression group are decoded once.
                let plain = self
                    .src
                    .decode_blob_with(id, BlobAt::of(loc), sealed, &mut bufs)?;
                self.counters
                    .read
                    .fetch_add(plain.len() as u64, Ordering::Relaxed);
                self.progress.add_bytes(plain.len() as u64);
                self.store(BlobType::Data, *id, plain)?;
            }
        }
        Ok(())
    }
}

/// Rechunk mode: trees rewritten bottom-up with re-chunked file contents.
struct Rechunk<'a> {
    ctx: &'a Ctx<'a>,
    dst: &'a IndexedRepository,
    /// Source tree id → destination tree id.
    trees: Mutex<HashMap<Id, Id>>,
    /// Hash of a source content list → destination content list.
    contents: Mutex<HashMap<[u8; 32], Vec<Id>>>,
}

impl Rechunk<'_> {
    fn tree(&self, id: &Id) -> Result<Id> {
        if let Some(t) = self.trees.lock().get(id) {
            return Ok(*t);
        }
        let bytes = self.ctx.read(id)?;
        let mut tree = Tree::deserialize(&bytes).map_err(|e| Error::damaged("tree", id, e))?;
        tree.nodes
            .par_iter_mut()
            .try_for_each(|node| -> Result<()> {
                if let Some(sub) = node.subtree {
                    node.subtree = Some(self.tree(&sub)?);
                }
                if let Some(content) = &node.content {
                    if !content.is_empty() {
                        let new = self.content(content)?;
                        node.content = Some(new);
                    }
                    self.ctx.progress.add_files(1);
                }
                Ok(())
            })?;
        let new_bytes = tree.serialize();
        let new_id = self.dst.key().blob_id(&new_bytes);
        self.ctx.store(BlobType::Tree, new_id, &new_bytes)?;
        self.trees.lock().insert(*id, new_id);
        Ok(new_id)
    }

    fn content(&self, ids: &[Id]) -> Result<Vec<Id>> {
        let mut h = blake3::Hasher::new();
        for id in ids {
            h.update(&id.0);
        }
        let key = *h.finalize().as_bytes();
        if let Some(c) = self.contents.lock().get(&key) {
            return Ok(c.clone());
        }
        let mut node =
            crate::tree::Node::new(std::ffi::OsStr::new(""), crate::tree::NodeKind::File);
        node.content = Some(ids.to_vec());
        let reader = CountingReader {
            inner: ContentReader::new(self.ctx.src, &node),
            ctx: self.ctx,
        };
        let mut out = Vec::new();
        for chunk in self.dst.chunker().chunker(reader) {
            let chunk = chunk.map_err(|e| match e.downcast::<Error>() {
                Ok(inner) => inner,
                Err(e) => Error::Other(format!("reading source file content: {e}")),
            })?;
            let id = self.dst.key().blob_id(&chunk);
            self.ctx.store(BlobType::Data, id, &chunk)?;
            out.push(id);
        }
        self.contents.lock().insert(key, out.clone());
        Ok(out)
    }
}

/// Counts source bytes as a [`ContentReader`] streams them.
struct CountingReader<'a, R> {
    inner: R,
    ctx: &'a Ctx<'a>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx
            .counters
            .read
            .fetch_add(n as u64, Ordering::Relaxed);
        self.ctx.progress.add_bytes(n as u64);
        Ok(n)
    }
}
