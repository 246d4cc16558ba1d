//! [`BlobWriter`]: deduplicates, compresses, seals and packs blobs, uploads packs
//! on a pool of uploader threads, and writes index files.
//!
//! With zstd, data blobs shorter than the repository's smallest chunk (and
//! [`group::MAX_MEMBER`]) are not compressed one by one: they collect in a
//! compression group ([`crate::group`]) that is compressed and sealed as one
//! range once it holds [`group::TARGET`] bytes.
//!
//! Used by the archiver and by anything else that adds blobs (copy, repair).
//! Write order is packs → index → (caller) snapshot: an index file only lists
//! packs whose upload has completed, and [`BlobWriter::finish`] returns only
//! after the final index is stored, so a snapshot saved afterwards never
//! references a blob that is not indexed. An interrupted run leaves at worst
//! unindexed packs (reclaimed by `prune`); index checkpoints every
//! [`WriterOptions::checkpoint_packs`] packs let a rerun reuse what was uploaded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Sender};
use lifeboat_storage::{PutOptions, StorageError};
use parking_lot::Mutex;

use crate::blob::{self, BlobType, Compression, Id};
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::group::{self, Group};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{pack_key, FinishedPack, PackWriter};
use crate::repository::Repository;

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub compression: Compression,
    /// Parallel pack uploads.
    pub connections: usize,
    /// Write an index checkpoint after this many packs.
    pub checkpoint_packs: usize,
    /// Compute everything but store nothing.
    pub dry_run: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            connections: 4,
            checkpoint_packs: 32,
            dry_run: false,
        }
    }
}

/// What a writer stored in all, as [`BlobWriter::finish`] returns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterTotals {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

/// Counters of what a writer added.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub data_blobs: AtomicU64,
    pub tree_blobs: AtomicU64,
    pub raw_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub packs: AtomicU64,
}

/// Uploaded pack buffers kept for reuse.
const SPARE_PACK_BUFFERS: usize = 2;

thread_local! {
    /// Per-thread buffers for a blob's compressed and sealed forms, reused for
    /// every blob this thread stores (no allocation per blob).
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

struct Shared {
    repo: Repository,
    spare: Mutex<Vec<Vec<u8>>>,
    pending: Mutex<Vec<IndexPack>>,
    written: Mutex<Vec<IndexPack>>,
    error: Mutex<Option<Error>>,
    checkpoint_packs: usize,
    dry_run: bool,
    stats: WriterStats,
}

pub struct BlobWriter {
    shared: Arc<Shared>,
    known: Arc<Index>,
    claimed: Mutex<HashSet<Id>>,
    packers: [Mutex<PackWriter>; 2],
    /// Small data blobs waiting to be compressed together (zstd only).
    group: Option<Mutex<Group>>,
    /// Data blobs shorter than this join the group.
    group_below: usize,
    /// Buffers of compressed groups, for the next groups: a fresh 1.5 MiB per
    /// group, freed by whichever compressor thread stored it, piles up in
    /// glibc's per-thread arenas (peak RSS, as pack buffers did: F9).
    group_spare: Mutex<Vec<Vec<u8>>>,
    target_pack_size: usize,
    compression: Compression,
    upload_tx: Option<Sender<FinishedPack>>,
    uploaders: Vec<JoinHandle<()>>,
}

impl BlobWriter {
    pub fn new(repo: &Repository, known: Arc<Index>, opts: &WriterOptions) -> Self {
        let stored: u64 = known.packs().map(|(_, s)| s).sum();
        Self::sized_for(repo, known, stored, opts)
    }

    /// A writer that deduplicates against `known` but sizes its packs for a
    /// repository of `stored` bytes (prune's repacking deduplicates by itself
    /// and passes an empty `known`).
    pub fn sized_for(
        repo: &Repository,
        known: Arc<Index>,
        stored: u64,
        opts: &WriterOptions,
    ) -> Self {
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            spare: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            written: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            checkpoint_packs: opts.checkpoint_packs.max(1),
            dry_run: opts.dry_run,
            stats: WriterStats::default(),
        });
        let (tx, rx) = bounded::<FinishedPack>(1);
        let uploaders = (0..opts.connections.max(1))
            .map(|_| {
                let rx = rx.clone();
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for pack in rx {
                        if shared.error.lock().is_some() {
                            continue;
                        }
                        if let Err(e) = shared.upload(pack) {
                            shared.error.lock().get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        // Packs grow with the repository: about 1/4096 of what the index
        // references, between the configured minimum and 128 MiB.
        let min = repo.config().min_pack_size.max(64 * 1024);
        let target = (stored / 4096).clamp(min, 128 * 1024 * 1024.max(min)) as usize;
        Self {
            shared,
            known,
            claimed: Mutex::new(HashSet::new()),
            packers: [
                Mutex::new(PackWriter::new(BlobType::Data)),
                Mutex::new(PackWriter::new(BlobType::Tree)),
            ],
            group: matches!(opts.compression, Compression::Zstd(_))
                .then(|| Mutex::new(Group::default())),
            group_below: (repo.config().chunker.min_size as usize).min(group::MAX_MEMBER),
            group_spare: Mutex::new(Vec::new()),
            target_pack_size: target,
            compression: opts.compression,
            upload_tx: Some(tx),
            uploaders,
        }
    }

    pub fn repository(&self) -> &Repository {
        &self.shared.repo
    }

    /// What this writer added so far. The blobs of a compression group being
    /// filled count once it is stored; [`finish`](Self::finish) returns the totals.
    pub fn stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    /// Compress and pack the compression group being filled, if any.
    fn flush_group(&self) -> Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let g = std::mem::take(&mut *group.lock());
        if g.is_empty() {
            return Ok(());
        }
        self.store_group(g)
    }

    /// Whether the blob is already stored or being stored.
    pub fn is_known(&self, id: &Id) -> bool {
        self.known.contains(id) || self.claimed.lock().contains(id)
    }

    /// Claim a blob id: returns `true` if the caller must store it
    /// (it is neither in the repository nor claimed by another thread).
    pub fn claim(&self, id: Id) -> bool {
        if self.known.contains(&id) {
            return false;
        }
        self.claimed.lock().insert(id)
    }

    /// Compress, seal and pack a claimed blob.
    ///
    /// # Errors
    /// The first upload error of any uploader thread.
    pub fn store(&self, blob_type: BlobType, id: Id, plaintext: &[u8]) -> Result<()> {
        self.check_error()?;
        if let Some(group) = &self.group {
            if blob_type == BlobType::Data && plaintext.len() < self.group_below {
                let full = {
                    let mut g = group.lock();
                    g.push(id, plaintext);
                    g.is_full().then(|| {
                        let spare = self.group_spare.lock().pop().unwrap_or_default();
                        std::mem::replace(&mut *g, Group::with_buffer(spare))
                    })
                };
                return match full {
                    Some(g) => self.store_group(g),
                    None => Ok(()),
                };
            }
        }
        self.seal(plaintext, |code, sealed| {
            self.pack_sealed(blob_type, id, code, plaintext.len(), sealed)
        })
    }

    /// Compress and seal `plaintext` into this thread's buffers and hand the
    /// algorithm code and the sealed bytes to `then`.
    fn seal(&self, plaintext: &[u8], then: impl FnOnce(u8, &[u8]) -> Result<()>) -> Result<()> {
        SCRATCH.with(|scratch| {
            let (compressed, sealed) = &mut *scratch.borrow_mut();
            let code = blob::compress_into(self.compression, plaintext, compressed);
            let payload = if code == 0 {
                plaintext
            } else {
                &compressed[..]
            };
            self.shared
                .repo
                .key()
                .seal_into(ObjectKind::Blob, payload, sealed);
            then(code, sealed)
        })
    }

    /// Compress, seal and pack a compression group of data blobs.
    fn store_group(&self, g: Group) -> Result<()> {
        let (plain, members) = g.finish();
        self.seal(&plain, |code, sealed| {
            let stats = &self.shared.stats;
            stats
                .data_blobs
                .fetch_add(members.len() as u64, Ordering::Relaxed);
            let raw: u64 = members.iter().map(|(_, n)| u64::from(*n)).sum();
            stats.raw_bytes.fetch_add(raw, Ordering::Relaxed);
            stats
                .stored_bytes
                .fetch_add(sealed.len() as u64, Ordering::Relaxed);
            self.pack(BlobType::Data, |p| p.add_group(&members, code, sealed))
        })?;
        let mut spare = self.group_spare.lock();
        if spare.len() < 2 {
            spare.push(plain);
        }
        Ok(())
    }

    /// Append a sealed blob to its pack; a full pack goes to the uploaders.
    fn pack_sealed(
        &self,
        blob_type: BlobType,
        id: Id,
        code: u8,
        raw_length: usize,
        sealed: &[u8],
    ) -> Result<()> {
        let stats = &self.shared.stats;
        match blob_type {
            BlobType::Data => stats.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => stats.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        stats
            .raw_bytes
            .fetch_add(raw_length as u64, Ordering::Relaxed);
        stats
            .stored_bytes
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.pack(blob_type, |p| p.add(id, code, sealed, raw_length as u32))
    }

    /// Add to the pack of `blob_type` with `add`; a full pack goes to the uploaders.
    fn pack(&self, blob_type: BlobType, add: impl FnOnce(&mut PackWriter)) -> Result<()> {
        let full = {
            let mut packer = self.packers[blob_type.code() as usize].lock();
            // Data packs fill to the target: they take a pooled buffer. Tree
            // packs stay small in most backups and grow on demand.
            if packer.is_empty() && blob_type == BlobType::Data {
                *packer =
                    PackWriter::with_buffer(blob_type, self.shared.buffer(self.target_pack_size));
            }
            add(&mut packer);
            (packer.size() >= self.target_pack_size)
                .then(|| std::mem::replace(&mut *packer, PackWriter::new(blob_type)))
        };
        match full {
            Some(p) => self.send(p),
            None => Ok(()),
        }
    }

    /// Hash, deduplicate and store a blob; returns its id and whether it was new.
    pub fn save(&self, blob_type: BlobType, plaintext: &[u8]) -> Result<(Id, bool)> {
        let id = self.shared.repo.key().blob_id(plaintext);
        if self.claim(id) {
            self.store(blob_type, id, plaintext)?;
            Ok((id, true))
        } else {
            Ok((id, false))
        }
    }

    fn send(&self, packer: PackWriter) -> Result<()> {
        let finished = packer.finish(self.shared.repo.key());
        self.upload_tx
            .as_ref()
            .expect("writer is open")
            .send(finished)
            .map_err(|_| Error::Other("pack uploader stopped".into()))?;
        self.check_error()
    }

    fn check_error(&self) -> Result<()> {
        if let Some(e) = self.shared.error.lock().take() {
            return Err(e);
        }
        Ok(())
    }

    /// Write an index file for the packs uploaded since the last checkpoint.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.write_pending_index()
    }

    /// Flush the compression group and partial packs, wait for every upload,
    /// write the final index. Returns every pack this writer stored and what it
    /// stored in all.
    pub fn finish(mut self) -> Result<(Vec<IndexPack>, WriterTotals)> {
        self.flush_group()?;
        for (i, t) in [BlobType::Data, BlobType::Tree].into_iter().enumerate() {
            let p = std::mem::replace(&mut *self.packers[i].lock(), PackWriter::new(t));
            if !p.is_empty() {
                self.send(p)?;
            }
        }
        drop(self.upload_tx.take());
        for h in self.uploaders.drain(..) {
            h.join()
                .map_err(|_| Error::Other("pack uploader panicked".into()))?;
        }
        self.check_error()?;
        self.shared.write_pending_index()?;
        let s = &self.shared.stats;
        let totals = WriterTotals {
            data_blobs: s.data_blobs.load(Ordering::Relaxed),
            tree_blobs: s.tree_blobs.load(Ordering::Relaxed),
            raw_bytes: s.raw_bytes.load(Ordering::Relaxed),
            stored_bytes: s.stored_bytes.load(Ordering::Relaxed),
        };
        Ok((std::mem::take(&mut *self.shared.written.lock()), totals))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        drop(self.upload_tx.take());
        for h in self.uploaders.drain(..) {
            let _ = h.join();
        }
    }
}

impl Shared {
    /// A buffer for a new data pack: a recycled one, or a new one with room for
    /// the target size and 2 MiB (a pack ends with the blob that crosses the
    /// target; a larger last blob grows the buffer, which is then kept).
    fn buffer(&self, target: usize) -> Vec<u8> {
        self.spare
            .lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(target + (2 << 20)))
    }

    /// Keep an uploaded pack's buffer for the next pack: reusing it saves the
    /// page faults of a fresh 16 MiB and keeps freed pack buffers from piling up
    /// in the allocator's per-thread arenas (peak RSS).
    fn recycle(&self, bytes: Bytes) {
        let Ok(buf) = bytes.try_into_mut() else {
            return;
        };
        let mut spare = self.spare.lock();
        if spare.len() < SPARE_PACK_BUFFERS {
            spare.push(buf.into());
        }
    }

    fn upload(&self, pack: FinishedPack) -> Result<()> {
        let bytes = Bytes::from(pack.bytes);
        if !self.dry_run {
            match self
                .repo
                .storage()
                .put(&pack_key(&pack.id), bytes.clone(), &PutOptions::create())
            {
                Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.recycle(bytes);
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        let ip = IndexPack {
            id: pack.id,
            blob_type: pack.blob_type,
            blobs: pack.entries,
        };
        self.written.lock().push(ip.clone());
        let due = {
            let mut pending = self.pending.lock();
            pending.push(ip);
            pending.len() >= self.checkpoint_packs
                || pending.iter().map(|p| p.blobs.len()).sum::<usize>()
                    >= crate::index::MAX_FILE_BLOBS
        };
        if due {
            self.write_pending_index()?;
        }
        Ok(())
    }

    fn write_pending_index(&self) -> Result<()> {
        let packs = std::mem::take(&mut *self.pending.lock());
        if packs.is_empty() || self.dry_run {
            return Ok(());
        }
        let file = IndexFile {
            supersedes: Vec::new(),
            packs,
        };
        self.repo.save_index(&file)?;
        Ok(())
    }
}
