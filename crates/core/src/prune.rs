//! `prune`: reclaim packs no snapshot references, and repack mostly-unused
//! packs, without ever losing data a concurrent backup (from any host) writes.
//!
//! # The two-phase protocol (docs/MAINTENANCE.md has the full argument)
//!
//! Each run first **finishes old marks** (phase 2), then **marks** (phase 1).
//!
//! *Phase 1 (mark).* Compute the blobs referenced by every snapshot. Packs
//! with no referenced blob, and packs no index lists (left by interrupted
//! backups — or being uploaded right now), are *marked*. Packs whose unused
//! share pushes the repository over `max_unused` are repacked first: their
//! still-used blobs are copied into new packs with a [`BlobWriter`] (indexed
//! before anything else changes), and the old packs are marked too. Then a new
//! index file is written that `supersedes` every index file read and lists
//! every pack except the marked ones. Only then is the mark object
//! `marks/<id>` written, with the current time `T`: every backup whose view of
//! the index still contained a marked pack loaded it before `T` (or reloads it,
//! see [`lock::Session::start_for`]). The superseded files are deleted last,
//! so readers always find a live pack ([`readers_fallback_index`]).
//!
//! *Phase 2 (delete, a later run).* A mark is finished only when `T + grace`
//! has passed **and** no live backup session ([`crate::lock`]) started before
//! `T`. Sessions are checked *before* snapshots are listed, and a session is
//! removed only after its snapshot is saved, so every snapshot that could have
//! deduplicated against a marked pack is visible. The referenced blobs are
//! recomputed from the snapshots present now; a marked pack holding any of them
//! only there is **re-indexed** (from its self-describing header) instead of
//! deleted; a marked pack an index file lists again is kept. Everything else in
//! the mark is deleted (its parity sidecar too), and the mark is removed.
//!
//! Only one prune (or `repair index`) runs at a time
//! ([`lock::Session::exclusive`]).
//!
//! A crash at any point leaves either unindexed packs (marked by the next run)
//! or a mark whose packs are still indexed (phase 2 re-checks them), never a
//! snapshot referencing a deleted blob.
//!
//! # Memory
//! Proportional to the work, not to the repository's blob count: prune never
//! loads the index. It streams the index files ([`scan::Scan`]), keeping one
//! row per pack listing and an index of the tree packs (to walk the
//! snapshots), and spills every listed blob and every reference to a
//! temporary file in 256 buckets; joining them one bucket at a time gives
//! each pack's used bytes and the blobs to copy when repacking. Phase 2 keeps
//! only the blobs of the packs it judges. The new index files are written
//! streaming ([`INDEX_FILE_BLOBS`] blobs at a time). Measured in
//! docs/MAINTENANCE.md.
//!
//! # Errors
//! [`Error::Invalid`] on append-only repositories (a dry run is allowed);
//! [`Error::Damaged`] naming the snapshot and tree when a snapshot cannot be
//! walked (prune refuses to guess what it references); an object-lock refusal
//! to delete becomes [`Error::Locked`]-style [`Error::Other`] naming the pack
//! and stops the run with the mark left in place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_storage::{PutOptions, StorageError};
use serde::{Deserialize, Serialize};

use crate::blob::{BlobType, Id};
use crate::error::{Error, Result};
use crate::index::{Index, IndexFile, IndexPack};
use crate::lock;
use crate::pack::pack_key;
use crate::pack::PackEntry;
use crate::repository::{IndexFileWriter, IndexedRepository, Repository};
use crate::writer::{BlobWriter, WriterOptions};

mod scan;
use scan::{Scan, Spill};

/// Storage prefix of mark objects.
pub const MARK_PREFIX: &str = "marks";

/// What [`prune`] does.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long a mark must age before its packs may be deleted.
    pub grace: Duration,
    /// Tolerated unused share of the repository's pack bytes (0.05 = 5%).
    pub max_unused: f64,
    /// Repack at most this many bytes of packs per run (`None`: no limit).
    pub max_repack: Option<u64>,
    /// Report what would happen; write and delete nothing.
    pub dry_run: bool,
    pub writer: WriterOptions,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            max_unused: 0.05,
            max_repack: None,
            dry_run: false,
            writer: WriterOptions::default(),
        }
    }
}

/// A mark object (`marks/<BLAKE3 of the JSON>`), plain JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    pub version: u32,
    /// When the index without these packs was in place.
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub packs: Vec<Id>,
}

/// What a prune run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub referenced_blobs: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Phase 2: marks finished, packs deleted / re-indexed, bytes freed.
    pub marks_finished: u64,
    pub deleted_packs: u64,
    pub deleted_bytes: u64,
    pub reindexed_packs: u64,
    /// Marked packs an index file lists again (kept; see [`prune`]).
    pub kept_indexed_packs: u64,
    /// Marks that must wait, and why.
    pub waiting: Vec<String>,
    /// Phase 1: packs marked because nothing uses them / no index lists them.
    pub marked_unused_packs: u64,
    pub marked_unindexed_packs: u64,
    /// Packs repacked (then marked), blobs copied, bytes written.
    pub repacked_packs: u64,
    pub repacked_blobs: u64,
    pub repack_written_bytes: u64,
    /// Bytes of every marked pack.
    pub marked_bytes: u64,
    /// What phase 1 frees once its mark is finished: marked bytes minus the copies.
    pub to_be_freed_bytes: u64,
    /// Unused bytes left in packs that were not repacked.
    pub unused_bytes_left: u64,
    /// The mark written by this run.
    pub mark: Option<Id>,
    /// Packs prune would mark or repack, left alone because they are under
    /// S3 Object Lock retention (deleting them would free nothing); a later
    /// prune takes them once the retention ends.
    pub locked_packs: u64,
    pub locked_bytes: u64,
    /// The latest retain-until date among them.
    pub locked_until: Option<DateTime<Utc>>,
}

impl PruneReport {
    fn add_locked(&mut self, size: u64, until: DateTime<Utc>) {
        self.locked_packs += 1;
        self.locked_bytes += size;
        self.locked_until = self.locked_until.max(Some(until));
    }
}

/// Run both phases; see the module documentation.
///
/// # Errors
/// See the module documentation.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    if !opts.dry_run {
        repo.refuse_if_append_only("prune (it deletes packs)")?;
    }
    // One prune (or repair index) at a time; a dry run changes nothing.
    let _exclusive = if opts.dry_run {
        None
    } else {
        Some(lock::Session::exclusive(repo.storage(), "prune")?)
    };
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    finish_marks(repo, opts, &mut report)?;
    mark(repo, opts, &mut report)?;
    Ok(report)
}

/// Every mark with its id.
///
/// # Errors
/// Storage errors; a mark that does not parse is [`Error::Damaged`].
pub fn marks(repo: &Repository) -> Result<Vec<(Id, Mark)>> {
    let mut out = Vec::new();
    for id in repo.list_ids(MARK_PREFIX)? {
        let b = match repo.storage().get(&format!("{MARK_PREFIX}/{id}"), None) {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let m: Mark = serde_json::from_slice(&b).map_err(|e| Error::damaged("mark", id, e))?;
        out.push((id, m));
    }
    Ok(out)
}

/// Headers of the packs in `marked` that still exist (read in parallel).
fn read_headers(repo: &Repository, marked: &[Id]) -> Result<Headers> {
    use rayon::prelude::*;
    let unique: Vec<Id> = marked
        .iter()
        .copied()
        .collect::<HashSet<Id>>()
        .into_iter()
        .collect();
    let read: Vec<Option<(Id, (IndexPack, u64))>> = unique
        .par_iter()
        .map(|p| match read_pack_header(repo, p) {
            Ok((t, entries, size)) => Ok(Some((
                *p,
                (
                    IndexPack {
                        id: *p,
                        blob_type: t,
                        blobs: entries,
                    },
                    size,
                ),
            ))),
            Err(Error::Storage(StorageError::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        })
        .collect::<Result<_>>()?;
    Ok(read.into_iter().flatten().collect())
}

/// The readers' fallback index ([`crate::repository::IndexedRepository::locate`]):
/// every index file present (superseded ones included) plus the packs pending
/// marks took out of the index (read from the packs' own headers).
///
/// Consistency: phase 1 writes its mark *before* deleting the index files it
/// superseded, and phase 2 writes its re-indexing file before deleting the
/// mark, so at every moment a live pack is listed by an index file or a mark.
/// The marks are listed before and after the index files; if they changed,
/// everything is read again (up to 10 times).
///
/// # Errors
/// Storage errors; a damaged mark, index file or pack header.
pub fn readers_fallback_index(repo: &Repository) -> Result<Index> {
    let mut attempt = 0;
    let (files, marked) = loop {
        let before = repo.list_ids(MARK_PREFIX)?;
        let files = repo.all_index_files()?;
        let marked = marks(repo)?;
        let mut after: Vec<Id> = marked.iter().map(|(id, _)| *id).collect();
        let mut before = before;
        before.sort();
        after.sort();
        attempt += 1;
        if before == after || attempt >= 10 {
            break (files, marked);
        }
    };
    let packs: Vec<Id> = marked.into_iter().flat_map(|(_, m)| m.packs).collect();
    let headers = read_headers(repo, &packs)?;
    let extra = IndexFile {
        supersedes: Vec::new(),
        packs: headers.into_values().map(|(p, _)| p).collect(),
    };
    Ok(Index::from_files(
        files.iter().map(|(_, f)| f).chain(std::iter::once(&extra)),
    ))
}

/// Headers of marked packs that still exist, with their sizes.
type Headers = HashMap<Id, (IndexPack, u64)>;

/// Read a pack's header with two ranged reads; returns its type, entries and size.
///
/// # Errors
/// Storage errors, or [`Error::Damaged`] naming the pack.
pub fn read_pack_header(
    repo: &Repository,
    id: &Id,
) -> Result<(BlobType, Vec<crate::pack::PackEntry>, u64)> {
    let key = pack_key(id);
    let size = repo.storage().head(&key)?.size;
    if size < 4 {
        return Err(Error::damaged("pack", id, "shorter than its trailer"));
    }
    let tail = repo.storage().get(&key, Some(size - 4..size))?;
    let hlen = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    let start = size
        .checked_sub(4 + hlen)
        .ok_or_else(|| Error::damaged("pack", id, "header length points outside the pack"))?;
    let bytes = repo.storage().get(&key, Some(start..size))?;
    let header = repo
        .key()
        .open(
            crate::crypto::ObjectKind::PackHeader,
            &bytes[..bytes.len() - 4],
        )
        .map_err(|e| Error::damaged("pack", id, format!("header: {e}")))?;
    let (t, entries) =
        crate::pack::decode_header(&header).map_err(|e| Error::damaged("pack", id, e))?;
    if let Some(last) = entries.last() {
        if last.offset as u64 + last.length as u64 > start {
            return Err(Error::damaged("pack", id, "blobs overlap the header"));
        }
    }
    Ok((t, entries, size))
}

fn delete_pack(repo: &Repository, id: &Id) -> Result<()> {
    repo.delete_unless_retained(&pack_key(id))
        .map_err(|e| locked_or(e, id))?;
    // A parity sidecar made later than its pack may still be locked; it is
    // left (readers ignore sidecars without a pack).
    match repo.delete_unless_retained(&crate::parity::parity_key(id)) {
        Ok(()) | Err(Error::Retained { .. }) => Ok(()),
        Err(e) => Err(locked_or(e, id)),
    }
}

/// Map a refused delete (S3 Object Lock, a write-once bucket policy) to a clear
/// error naming the pack.
pub fn locked_or(e: Error, pack: &Id) -> Error {
    match e {
        Error::Storage(StorageError::PermissionDenied { message, .. }) => Error::Other(format!(
            "pack {pack} cannot be deleted: the storage refused ({message}); it is probably under object lock \
             retention until its retain-until date. Prune stopped safely: nothing that is still referenced was touched \
             and the mark stays, so a later prune retries after the retention ends"
        )),
        e @ Error::Retained { .. } => e,
        e => Error::Other(format!("deleting pack {pack}: {e}")),
    }
}

/// Deletes `<prefix>/<id>`; an object under object-lock retention stays.
pub(crate) fn delete_object(repo: &Repository, prefix: &str, id: &Id) -> Result<()> {
    match repo.delete_unless_retained(&format!("{prefix}/{id}")) {
        Ok(()) | Err(Error::Retained { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Phase 2.
fn finish_marks(repo: &Repository, opts: &PruneOptions, report: &mut PruneReport) -> Result<()> {
    let all = marks(repo)?;
    if all.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let sessions = lock::sessions(repo.storage())?;
    let mut ready = Vec::new();
    for (id, m) in all {
        let age = now
            .signed_duration_since(m.time)
            .to_std()
            .unwrap_or_default();
        if age < opts.grace {
            let left = opts.grace - age;
            report.waiting.push(format!(
                "mark {} ({} packs): grace period ends in {}s",
                id.short(),
                m.packs.len(),
                left.as_secs()
            ));
            continue;
        }
        if let Some((key, s)) = sessions
            .iter()
            .find(|(_, s)| s.is_alive(now) && s.started < m.time)
        {
            report.waiting.push(format!(
                "mark {} ({} packs): waiting for the {} on host {} (pid {}, {key}) that started {} before the mark",
                id.short(),
                m.packs.len(),
                s.purpose,
                s.hostname,
                s.pid,
                s.started.to_rfc3339()
            ));
            continue;
        }
        ready.push((id, m));
    }
    if ready.is_empty() {
        return Ok(());
    }
    // Snapshots are listed after the session check (see the module docs) and
    // before the index is read (see `scan::walk`).
    let snaps = repo.snapshots()?;
    let marked: Vec<Id> = ready
        .iter()
        .flat_map(|(_, m)| m.packs.iter().copied())
        .collect();
    let headers = read_headers(repo, &marked)?;
    // Only the blobs of the marked packs matter here: which of them some
    // snapshot references, and which an index file lists.
    let in_marked: HashSet<Id> = headers
        .values()
        .flat_map(|(p, _)| p.blobs.iter().map(|b| b.id))
        .collect();
    let mut scan = Scan::load(repo, headers.values().map(|(p, _)| p), &in_marked, false)?;
    let trees = IndexedRepository::new(repo.clone(), scan.take_trees());
    let mut used: HashSet<Id> = HashSet::new();
    let visited = scan::walk(&trees, &snaps, |id| {
        if in_marked.contains(&id) {
            used.insert(id);
        }
        Ok(())
    })?;
    drop(trees);
    used.extend(visited.into_iter().filter(|t| in_marked.contains(t)));
    let mut reindex: Vec<IndexPack> = Vec::new();
    let mut delete: Vec<(Id, u64)> = Vec::new();
    let mut seen = HashSet::new();
    for p in &marked {
        if !seen.insert(*p) {
            continue;
        }
        // A pack already gone (deleted by an earlier run) is skipped.
        let Some((ip, size)) = headers.get(p) else {
            continue;
        };
        if scan.is_listed(p) {
            // An index file lists the pack again: one written by the backup
            // that uploaded it after phase 1 read the index (phase 1 marked it
            // as unindexed), or by another prune's re-indexing. Backups that
            // loaded that file may deduplicate against it whatever their start
            // time, so it is not deleted here; the next phase 1 judges it anew.
            report.kept_indexed_packs += 1;
        } else if ip
            .blobs
            .iter()
            .any(|e| used.contains(&e.id) && !scan.watched_is_listed(&e.id))
        {
            // Some referenced blob exists only here (or in other marked packs).
            reindex.push(ip.clone());
        } else {
            delete.push((*p, *size));
        }
    }
    // Packs still under object-lock retention (it was extended, or the mark
    // predates the lock) stay, and so do their marks.
    let locked: HashMap<Id, DateTime<Utc>> = repo
        .retained_among(&delete, |(p, _)| pack_key(p))?
        .into_iter()
        .map(|((p, _), r)| (p, r.until))
        .collect();
    delete.retain(|(p, size)| match locked.get(p) {
        Some(until) => {
            report.add_locked(*size, *until);
            false
        }
        None => true,
    });
    ready.retain(|(id, m)| {
        let n = m.packs.iter().filter(|p| locked.contains_key(p)).count();
        if n > 0 {
            report.waiting.push(format!(
                "mark {} ({} packs): {n} pack(s) under S3 Object Lock retention",
                id.short(),
                m.packs.len()
            ));
        }
        n == 0
    });
    report.reindexed_packs = reindex.len() as u64;
    report.deleted_packs = delete.len() as u64;
    report.deleted_bytes = delete.iter().map(|(_, s)| s).sum();
    report.marks_finished = ready.len() as u64;
    if opts.dry_run {
        return Ok(());
    }
    if !reindex.is_empty() {
        repo.save_index_split(reindex, Vec::new())?;
    }
    for (p, _) in &delete {
        delete_pack(repo, p)?;
    }
    for (id, _) in &ready {
        delete_object(repo, MARK_PREFIX, id)?;
    }
    Ok(())
}

struct PackUse {
    total: u64,
    used: u64,
}

/// Phase 1.
fn mark(repo: &Repository, opts: &PruneOptions, report: &mut PruneReport) -> Result<()> {
    let pending: Vec<Id> = marks(repo)?
        .into_iter()
        .flat_map(|(_, m)| m.packs)
        .collect();
    let already: HashSet<Id> = pending.iter().copied().collect();
    let snaps = repo.snapshots()?;
    let stored: BTreeMap<Id, u64> = repo
        .storage()
        .list("data")?
        .into_iter()
        .filter_map(|m| Some((m.key.rsplit('/').next()?.parse().ok()?, m.size)))
        .collect();
    report.packs = stored.len() as u64;
    report.pack_bytes = stored.values().sum();
    // Snapshots may reference blobs in packs of pending marks (phase 2 will
    // re-index those); walk them through the packs' own headers.
    let headers = read_headers(repo, &pending)?;
    let mut scan = Scan::load(
        repo,
        headers.values().map(|(p, _)| p),
        &HashSet::new(),
        true,
    )?;
    drop(headers);
    let trees = IndexedRepository::new(repo.clone(), scan.take_trees());
    let mut referenced = Spill::new(32)?;
    let visited = scan::walk(&trees, &snaps, |id| referenced.push(&id.0))?;
    drop(trees);
    for t in visited {
        referenced.push(&t.0)?;
    }
    report.snapshots = snaps.len() as u64;
    report.referenced_blobs = scan.count_used(&referenced)?;

    let usage: BTreeMap<Id, PackUse> = scan
        .listings
        .iter()
        .filter(|l| l.canonical)
        .map(|l| {
            (
                l.pack,
                PackUse {
                    total: l.total,
                    used: l.used,
                },
            )
        })
        .collect();
    let mut marked: BTreeMap<Id, u64> = BTreeMap::new();
    for (p, size) in &stored {
        if already.contains(p) {
            continue;
        }
        match usage.get(p) {
            None => {
                report.marked_unindexed_packs += 1;
                marked.insert(*p, *size);
            }
            Some(u) if u.used == 0 => {
                report.marked_unused_packs += 1;
                marked.insert(*p, *size);
            }
            _ => {}
        }
    }
    // Repack candidates: partly used packs, most unused first.
    let total_bytes: u64 = usage.values().map(|u| u.total).sum();
    let mut partial: Vec<(Id, &PackUse)> = usage
        .iter()
        .filter(|(p, u)| {
            u.used > 0 && u.used < u.total && stored.contains_key(*p) && !already.contains(*p)
        })
        .map(|(p, u)| (*p, u))
        .collect();
    // Packs under object-lock retention can be neither deleted nor usefully
    // repacked (the copy would only add bytes): leave them for a later run.
    let candidates: Vec<Id> = marked
        .keys()
        .chain(partial.iter().map(|(p, _)| p))
        .copied()
        .collect();
    let locked: HashSet<Id> = repo
        .retained_among(&candidates, pack_key)?
        .into_iter()
        .map(|(p, r)| {
            report.add_locked(stored.get(&p).copied().unwrap_or_default(), r.until);
            p
        })
        .collect();
    for p in &locked {
        if marked.remove(p).is_some() {
            if usage.contains_key(p) {
                report.marked_unused_packs -= 1;
            } else {
                report.marked_unindexed_packs -= 1;
            }
        }
    }
    partial.retain(|(p, _)| !locked.contains(p));
    partial.sort_by(|a, b| {
        let ra = (a.1.total - a.1.used) as f64 / a.1.total as f64;
        let rb = (b.1.total - b.1.used) as f64 / b.1.total as f64;
        rb.total_cmp(&ra).then(a.0.cmp(&b.0))
    });
    let mut unused_left: u64 = partial.iter().map(|(_, u)| u.total - u.used).sum();
    let allowed = (opts.max_unused.max(0.0) * total_bytes as f64) as u64;
    let mut budget = opts.max_repack.unwrap_or(u64::MAX);
    let mut repack: Vec<Id> = Vec::new();
    for (p, u) in &partial {
        if unused_left <= allowed {
            break;
        }
        let size = stored[p];
        if size > budget {
            continue;
        }
        budget -= size;
        unused_left -= u.total - u.used;
        repack.push(*p);
    }
    report.unused_bytes_left = unused_left;
    if !repack.is_empty() {
        copy_used_blobs(repo, &scan, &referenced, &repack, &marked, opts, report)?;
        for p in &repack {
            marked.insert(*p, stored[p]);
        }
        report.repacked_packs = repack.len() as u64;
    }
    report.marked_bytes = marked.values().sum();
    report.to_be_freed_bytes = report
        .marked_bytes
        .saturating_sub(report.repack_written_bytes);
    if marked.is_empty() || opts.dry_run {
        return Ok(());
    }
    // New index without the marked packs, superseding every file read and
    // every superseded file still present (one under object lock, or left by a
    // crash): otherwise it would come back once its superseder is deleted.
    let superseded = &scan.files;
    let keep_listed = marked.keys().any(|p| scan.is_listed(p));
    if keep_listed {
        write_index_without(repo, &scan, &marked, INDEX_FILE_BLOBS)?;
    }
    let m = Mark {
        version: 1,
        time: Utc::now(),
        hostname: crate::util::hostname(),
        packs: marked.keys().copied().collect(),
    };
    let json = serde_json::to_vec(&m).expect("marks serialise");
    let id = Id::of_stored(&json);
    repo.storage()
        .put(
            &format!("{MARK_PREFIX}/{id}"),
            Bytes::from(json),
            &PutOptions::create(),
        )
        .or_else(|e| match e {
            StorageError::AlreadyExists { .. } => Ok(()),
            e => Err(e),
        })?;
    report.mark = Some(id);
    // Only now delete the index files just superseded (and files superseded
    // earlier that linger): until the mark exists, readers find the marked
    // packs in them (see `readers_fallback_index`).
    if keep_listed {
        for id in superseded {
            delete_object(repo, "index", id)?;
        }
    }
    Ok(())
}

/// Blobs per index file prune writes (about 11 MiB encoded).
const INDEX_FILE_BLOBS: usize = crate::index::MAX_FILE_BLOBS;

/// Write the packs the live index files list, except `marked`, as new index
/// files of at most `max_blobs` blobs ([`IndexFileWriter`]), reading the live
/// files again one batch at a time; a pack listed twice is written once. Only
/// the last file supersedes every file the scan read.
fn write_index_without(
    repo: &Repository,
    scan: &Scan,
    marked: &BTreeMap<Id, u64>,
    max_blobs: usize,
) -> Result<()> {
    let live: HashSet<Id> = scan.live_files().collect();
    let mut reread: HashSet<Id> = HashSet::new();
    let mut written: HashSet<Id> = HashSet::new();
    let mut out = IndexFileWriter::new(repo, max_blobs);
    // The prune holds the exclusive lock: no file it read can vanish, and the
    // files added since (by backups) are not superseded below.
    for batch in repo.index_batches()? {
        let batch: Vec<Id> = batch.into_iter().filter(|id| live.contains(id)).collect();
        reread.extend(batch.iter().copied());
        for (id, plain) in scan::read_batch(repo, &batch)? {
            let mut saved = Ok(());
            IndexFile::decode_each(&plain, |p| {
                if saved.is_ok() && !marked.contains_key(&p.id) && written.insert(p.id) {
                    saved = out.push(p);
                }
            })
            .map_err(|e| Error::damaged("index", id, e))?;
            saved?;
        }
    }
    // Every live file must have been copied before the last file supersedes
    // them all (a file that vanished would take its packs out of the index
    // without a mark).
    if let Some(gone) = live.iter().find(|id| !reread.contains(id)) {
        return Err(Error::Other(format!(
            "index file {gone} vanished while prune rewrote the index (another prune or repair \
             index without the lock?); nothing was superseded, run prune again"
        )));
    }
    out.finish(scan.files.clone())?;
    Ok(())
}

/// Copy the referenced blobs of the `repack` packs that no pack staying has
/// into new packs. Which blobs: one more join of the scan with `referenced`
/// (memory: the entries of the packs repacked, the work itself).
fn copy_used_blobs(
    repo: &Repository,
    scan: &Scan,
    referenced: &Spill,
    repack: &[Id],
    marked: &BTreeMap<Id, u64>,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let repack_set: HashSet<Id> = repack.iter().copied().collect();
    // A used blob needs a copy unless some pack that stays has it. Packs that
    // go: the repacked ones, the marked ones, and the packs of pending marks
    // that no index file lists.
    let going: HashSet<Id> = repack_set
        .iter()
        .chain(marked.keys())
        .chain(&scan.extra_packs)
        .copied()
        .collect();
    let pack_of = |n: u32| &scan.listings[n as usize];
    let mut needed: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    scan.join(referenced, |group| {
        let stays = group
            .iter()
            .any(|l| scan.is_live(l.listing) && !going.contains(&pack_of(l.listing).pack));
        if stays {
            return Ok(());
        }
        if let Some(l) = group
            .iter()
            .find(|l| pack_of(l.listing).canonical && repack_set.contains(&pack_of(l.listing).pack))
        {
            needed
                .entry(pack_of(l.listing).pack)
                .or_default()
                .push(l.entry);
        }
        Ok(())
    })?;
    let staying: u64 = scan
        .listings
        .iter()
        .filter(|l| l.canonical && !going.contains(&l.pack))
        .map(|l| l.end)
        .sum();
    let blob_type: HashMap<Id, BlobType> = scan
        .listings
        .iter()
        .filter(|l| l.canonical && repack_set.contains(&l.pack))
        .map(|l| (l.pack, l.blob_type))
        .collect();
    let reader = IndexedRepository::new(repo.clone(), Index::default());
    let writer = BlobWriter::sized_for(
        repo,
        Arc::new(Index::default()),
        staying,
        &WriterOptions {
            dry_run: opts.dry_run,
            ..opts.writer.clone()
        },
    );
    for p in repack {
        let Some(mut blobs) = needed.remove(p) else {
            continue;
        };
        blobs.sort_by_key(|b| (b.offset, b.id));
        let bytes = repo.storage().get(&pack_key(p), None)?;
        // Members of one compression group are decoded once (and the writer
        // groups the ones still used anew).
        let mut bufs = crate::repository::BlobBuffers::default();
        for b in &blobs {
            if !writer.claim(b.id) {
                continue;
            }
            let end = b.offset as usize + b.length as usize;
            if end > bytes.len() {
                return Err(Error::damaged(
                    "blob",
                    b.id,
                    format!("in pack {p}: beyond the end of the pack"),
                ));
            }
            let plain = reader.decode_blob_with(
                &b.id,
                crate::repository::BlobAt::in_pack(p, b),
                &bytes[b.offset as usize..end],
                &mut bufs,
            )?;
            writer.store(blob_type[p], b.id, plain)?;
            report.repacked_blobs += 1;
        }
    }
    report.repack_written_bytes = writer.finish()?.1.stored_bytes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_pack(n: u8, blobs: u8) -> IndexPack {
        IndexPack {
            id: Id([n; 32]),
            blob_type: BlobType::Data,
            blobs: (0..blobs)
                .map(|i| PackEntry {
                    id: Id([n.wrapping_mul(16).wrapping_add(i); 32]),
                    compression: 0,
                    offset: u32::from(i) * 10,
                    length: 10,
                    raw_length: 10,
                })
                .collect(),
        }
    }

    pub(super) fn test_repo() -> (tempfile::TempDir, Repository) {
        use lifeboat_storage::{DynStorage, LocalStorage};
        let tmp = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::new(tmp.path()).without_sync());
        let opts = crate::repository::InitOptions {
            kdf: crate::crypto::KdfParams {
                m_cost: 256,
                t_cost: 1,
                p_cost: 1,
            },
            ..Default::default()
        };
        (tmp, Repository::init(storage, "pw", &opts).unwrap())
    }

    #[test]
    fn the_new_index_is_written_in_parts_and_only_the_last_supersedes() {
        let (_tmp, repo) = test_repo();
        // Six packs of three blobs over two files; pack 2 is also listed twice.
        let packs: Vec<IndexPack> = (1..=6).map(|n| fake_pack(n, 3)).collect();
        let old = [
            repo.save_index(&IndexFile {
                supersedes: vec![],
                packs: packs[..3].to_vec(),
            })
            .unwrap(),
            repo.save_index(&IndexFile {
                supersedes: vec![],
                packs: [&packs[3..], &packs[1..2]].concat(),
            })
            .unwrap(),
        ];
        let scan = Scan::load(&repo, std::iter::empty(), &HashSet::new(), false).unwrap();
        let marked: BTreeMap<Id, u64> = [(packs[2].id, 1)].into();
        write_index_without(&repo, &scan, &marked, 6).unwrap();

        let files = repo.index_files().unwrap();
        let new: Vec<&IndexFile> = files
            .iter()
            .filter(|(id, _)| !old.contains(id))
            .map(|(_, f)| f)
            .collect();
        assert_eq!(files.len(), 3, "the old files are superseded");
        assert_eq!(new.len(), 3);
        // (Listing order is the storage's, so compare sorted.)
        let mut supersedes: Vec<Vec<Id>> = new
            .iter()
            .map(|f| {
                let mut s = f.supersedes.clone();
                s.sort();
                s
            })
            .collect();
        supersedes.sort_by_key(|s| s.len());
        let mut expected = old.to_vec();
        expected.sort();
        assert_eq!(supersedes, [vec![], vec![], expected]);
        let mut listed: Vec<IndexPack> = new.iter().flat_map(|f| f.packs.clone()).collect();
        listed.sort_by_key(|p| p.id);
        let mut want = packs.clone();
        want.remove(2);
        assert_eq!(listed, want, "every pack once, the marked one left out");
        assert!(new.iter().all(|f| f.blob_count() <= 6));
    }

    #[test]
    fn split_index_files_stay_under_the_blob_limit_and_only_the_last_supersedes() {
        use crate::index::MAX_FILE_BLOBS;
        let (_tmp, repo) = test_repo();
        let big = |n: u8, blobs: usize| IndexPack {
            id: Id([n; 32]),
            blob_type: BlobType::Data,
            blobs: (0..blobs)
                .map(|i| PackEntry {
                    id: Id::of_stored(&[&[n][..], &(i as u64).to_le_bytes()].concat()),
                    compression: 0,
                    offset: i as u32 * 10,
                    length: 10,
                    raw_length: 10,
                })
                .collect(),
        };
        let third = MAX_FILE_BLOBS * 2 / 5;
        let packs = vec![big(1, third), big(2, third), big(3, third), big(4, 5)];
        let old = Id([9; 32]);
        let ids = repo.save_index_split(packs.clone(), vec![old]).unwrap();
        assert_eq!(ids.len(), 2);
        let files: Vec<IndexFile> = ids
            .iter()
            .map(|id| {
                IndexFile::decode(
                    &repo
                        .load_object("index", crate::crypto::ObjectKind::Index, id)
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        assert!(files[0].supersedes.is_empty());
        assert_eq!(files[1].supersedes, vec![old]);
        assert!(files.iter().all(|f| f.blob_count() <= MAX_FILE_BLOBS));
        let back: Vec<IndexPack> = files.into_iter().flat_map(|f| f.packs).collect();
        assert_eq!(back, packs, "every pack once, whole, in order");
    }
}
