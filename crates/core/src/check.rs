//! Verifying a repository.
//!
//! Structural check (always): every index file opens; every pack the index
//! names exists with exactly the size the index implies; every snapshot opens;
//! every tree reachable from a snapshot is indexed as a tree and decodes; every
//! data blob a file references is indexed. Packs no index lists are reported as
//! warnings (an interrupted backup leaves them; `prune` reclaims them).
//!
//! `read_data` additionally reads every pack (or a subset), checks its BLAKE3
//! against its name, and decrypts, decompresses and re-hashes every blob.
//!
//! When anything is damaged or missing, the report names the snapshots that
//! depend on it and, within them, the files and directories hit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use lifeboat_storage::StorageError;
use parking_lot::Mutex;
use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{BlobType, Id};
use crate::crypto::SEAL_OVERHEAD;
use crate::error::{Error, Result};
use crate::index::{BlobSet, Index, IndexFile};
use crate::pack::{self, pack_key};
use crate::progress::Progress;
use crate::repository::{retry_vanished, IndexedRepository, Repository};
use crate::tree::NodeKind;

/// Which packs `read_data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadDataSubset {
    All,
    /// Bucket `n` of `m` (1-based): packs whose id, read as a number, falls in
    /// bucket n — so m runs with n = 1..m cover every pack exactly once.
    Bucket(u32, u32),
    /// A random fraction (0..=1) of packs.
    Fraction(f64),
}

impl std::str::FromStr for ReadDataSubset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_suffix('%') {
            let f: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("invalid percentage {s:?}"))?;
            if !(0.0..=100.0).contains(&f) {
                return Err(format!("percentage {s:?} is outside 0..100"));
            }
            return Ok(ReadDataSubset::Fraction(f / 100.0));
        }
        if let Some((n, m)) = s.split_once('/') {
            let n: u32 = n.parse().map_err(|_| format!("invalid subset {s:?}"))?;
            let m: u32 = m.parse().map_err(|_| format!("invalid subset {s:?}"))?;
            if m == 0 || n == 0 || n > m {
                return Err(format!("subset {s:?} must be n/m with 1 <= n <= m"));
            }
            return Ok(ReadDataSubset::Bucket(n, m));
        }
        Err(format!(
            "invalid subset {s:?}: expected n/m or a percentage like 10%"
        ))
    }
}

impl ReadDataSubset {
    fn selects(&self, id: &Id) -> bool {
        match *self {
            ReadDataSubset::All => true,
            ReadDataSubset::Bucket(n, m) => {
                let v = u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes")) as u64;
                ((v * m as u64) >> 32) as u32 == n - 1
            }
            ReadDataSubset::Fraction(f) => rand::random::<f64>() < f,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: Option<ReadDataSubset>,
}

/// A snapshot hit by damage, with the paths inside it that are affected.
#[derive(Debug, Clone, Serialize)]
pub struct AffectedSnapshot {
    pub snapshot: String,
    pub time: String,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub index_files: u64,
    pub packs: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub data_blobs_referenced: u64,
    pub packs_read: u64,
    pub blobs_read: u64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub damaged_blobs: Vec<String>,
    pub affected_snapshots: Vec<AffectedSnapshot>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Size a pack file must have given the blobs an index lists for it.
pub fn expected_pack_size(blobs: &[crate::pack::PackEntry]) -> u64 {
    // A compression group's range counts once (its later members name it too).
    let data: u64 = blobs
        .iter()
        .filter(|b| crate::group::starts_range(b.compression))
        .map(|b| b.length as u64)
        .sum();
    data + 10 + 41 * blobs.len() as u64 + SEAL_OVERHEAD as u64 + 4
}

/// Check the repository; see the module documentation for what is checked.
///
/// # Errors
/// Only when the check itself cannot run (storage unreachable); damage is
/// reported in the [`CheckReport`].
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();

    // Index files, one by one so one damaged file does not hide the rest,
    // each handed to the index builder once read (never all held decoded).
    // A file that vanishes after the listing was superseded by a concurrent
    // prune: the whole pass is taken again, as readers do. One that stays
    // listed and unreadable past the retries is reported like other damage.
    let pass = |vanished_is_damage: bool| {
        let ids = repo.list_ids("index")?;
        let mut builder = Index::builder();
        let mut superseded: HashSet<Id> = HashSet::new();
        let mut file_packs: Vec<(Id, Vec<(Id, u64)>)> = Vec::new();
        let mut damaged = Vec::new();
        for id in &ids {
            match repo
                .load_object("index", crate::crypto::ObjectKind::Index, id)
                .and_then(|b| {
                    IndexFile::decode(&b).map_err(|e| Error::damaged("index file", id, e))
                }) {
                Ok(f) => {
                    superseded.extend(f.supersedes.iter().copied());
                    let sizes = f
                        .packs
                        .iter()
                        .map(|p| (p.id, expected_pack_size(&p.blobs)))
                        .collect();
                    file_packs.push((*id, sizes));
                    builder.add(*id, f);
                }
                Err(e @ Error::Storage(StorageError::NotFound { .. })) if !vanished_is_damage => {
                    return Err(e)
                }
                Err(e) => damaged.push(format!("{e} (hint: lifeboat repair index)")),
            }
        }
        Ok((builder, superseded, file_packs, damaged))
    };
    let (builder, superseded, file_packs, damaged) = match retry_vanished(|| pass(false)) {
        Err(Error::Storage(StorageError::NotFound { .. })) => pass(true)?,
        r => r?,
    };
    report.errors.extend(damaged);
    report.index_files = file_packs.len() as u64;
    // Superseded files (prune, repair) may linger until deleted; readers
    // ignore them, and so does the builder.
    let mut expected: BTreeMap<Id, u64> = BTreeMap::new();
    for (_, sizes) in file_packs.iter().filter(|(id, _)| !superseded.contains(id)) {
        expected.extend(sizes.iter().copied());
    }
    drop(file_packs);
    let index = builder.finish();

    // Packs present with the right size.
    let stored: HashMap<Id, u64> = repo
        .storage()
        .list("data")?
        .into_iter()
        .filter_map(|m| Some((m.key.rsplit('/').next()?.parse().ok()?, m.size)))
        .collect();
    report.packs = stored.len() as u64;
    let mut bad_packs: HashSet<Id> = HashSet::new();
    for (id, size) in &expected {
        match stored.get(id) {
            None => {
                report
                    .errors
                    .push(format!("pack {id} is missing (listed in the index)"));
                bad_packs.insert(*id);
            }
            Some(s) if s != size => {
                report
                    .errors
                    .push(format!("pack {id} has {s} bytes, the index implies {size}"));
                bad_packs.insert(*id);
            }
            _ => {}
        }
    }
    let unindexed = stored
        .keys()
        .filter(|id| !expected.contains_key(id))
        .count();
    if unindexed > 0 {
        report.warnings.push(format!(
            "{unindexed} pack(s) are not in any index (left by an interrupted backup; `lifeboat prune` removes them)"
        ));
    }

    let repo = IndexedRepository::new(repo.clone(), index);

    // Snapshots and their trees.
    let ids = repo.list_ids("snapshots")?;
    let mut snapshots = Vec::new();
    for id in &ids {
        match repo.load_snapshot(id) {
            Ok(s) => snapshots.push((*id, s)),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report.snapshots = snapshots.len() as u64;
    let mut seen_trees = BlobSet::new(repo.index().clone());
    let mut damaged: BTreeSet<Id> = BTreeSet::new();
    let mut data_refs = BlobSet::new(repo.index().clone());
    // Blobs found only in packs a pending prune mark took out of the index
    // (a backup ran during prune phase 1; phase 2 re-indexes them).
    let mut via_marks: HashSet<Id> = HashSet::new();
    for (_, snap) in &snapshots {
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            if !repo.index().contains(&t) {
                via_marks.insert(t);
            }
            match repo.locate(&t) {
                None => {
                    via_marks.remove(&t);
                    report.errors.push(format!("tree {t} is not in the index"));
                    damaged.insert(t);
                    continue;
                }
                Some(l) if l.blob_type != BlobType::Tree => {
                    report
                        .errors
                        .push(format!("blob {t} is used as a tree but indexed as data"));
                    damaged.insert(t);
                    continue;
                }
                Some(l) if bad_packs.contains(&l.pack) => {
                    damaged.insert(t);
                    continue;
                }
                _ => {}
            }
            match repo.load_tree(&t) {
                Ok(tree) => {
                    for n in &tree.nodes {
                        if let Some(sub) = n.subtree {
                            stack.push(sub);
                        }
                        for c in n.content.iter().flatten() {
                            if data_refs.insert(*c) {
                                if !repo.index().contains(c) {
                                    via_marks.insert(*c);
                                }
                                match repo.locate(c) {
                                    None => {
                                        via_marks.remove(c);
                                        report
                                            .errors
                                            .push(format!("data blob {c} is not in the index"));
                                        damaged.insert(*c);
                                    }
                                    Some(l) if bad_packs.contains(&l.pack) => {
                                        damaged.insert(*c);
                                    }
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    report.errors.push(e.to_string());
                    damaged.insert(t);
                }
            }
        }
    }
    if !via_marks.is_empty() {
        report.warnings.push(format!(
            "{} referenced blob(s) are in packs a pending prune mark took out of the index \
             (a backup ran while prune marked); they are readable, and the next prune re-indexes them",
            via_marks.len()
        ));
    }
    report.trees = seen_trees.len();
    report.data_blobs_referenced = data_refs.len();

    // Read data.
    if let Some(subset) = opts.read_data {
        let mut by_pack: HashMap<Id, Vec<(Id, crate::index::BlobLocation)>> = HashMap::new();
        for (id, loc) in repo.index().iter() {
            by_pack.entry(loc.pack).or_default().push((id, loc));
        }
        // A percentage reads the least recently verified packs (crate::verified).
        let least_recent = match subset {
            ReadDataSubset::Fraction(f) => {
                let record = crate::verified::load(&repo)
                    .map(|(_, r)| r)
                    .unwrap_or_default();
                let candidates: Vec<Id> = by_pack
                    .keys()
                    .filter(|p| !bad_packs.contains(p))
                    .copied()
                    .collect();
                let n = (f * candidates.len() as f64).ceil() as usize;
                let chosen: HashSet<Id> =
                    crate::verified::least_recently_verified(&candidates, &record, n)
                        .into_iter()
                        .collect();
                Some(chosen)
            }
            _ => None,
        };
        let selected: Vec<(Id, Vec<(Id, crate::index::BlobLocation)>)> = by_pack
            .into_iter()
            .filter(|(p, _)| {
                !bad_packs.contains(p)
                    && least_recent
                        .as_ref()
                        .map_or_else(|| subset.selects(p), |c| c.contains(p))
            })
            .collect();
        let intact = Mutex::new(Vec::new());
        let total: u64 = selected
            .iter()
            .map(|(p, _)| expected.get(p).copied().unwrap_or(0))
            .sum();
        progress.set_totals(selected.len() as u64, total);
        let errors = Mutex::new(Vec::new());
        let bad_blobs = Mutex::new(Vec::new());
        let blobs_read = std::sync::atomic::AtomicU64::new(0);
        selected.par_iter().for_each(|(pack, blobs)| {
            let bytes = match repo.storage().get(&pack_key(pack), None) {
                Ok(b) => b,
                Err(e) => {
                    errors.lock().push(format!("pack {pack}: {e}"));
                    bad_blobs.lock().extend(blobs.iter().map(|b| b.0));
                    return;
                }
            };
            progress.add_bytes(bytes.len() as u64);
            progress.add_files(1);
            let whole_ok = Id::of_stored(&bytes) == *pack;
            if whole_ok {
                intact.lock().push(*pack);
            } else {
                errors.lock().push(format!(
                    "pack {pack} is damaged: content does not match its name"
                ));
            }
            if let Err(e) = pack::read_header(repo.key(), pack, &bytes) {
                errors.lock().push(e.to_string());
            }
            // In pack order, so a compression group's members follow each
            // other and its range is decoded once.
            let mut blobs = blobs.clone();
            blobs.sort_by_key(|(id, l)| (l.offset, *id));
            let mut bufs = crate::repository::BlobBuffers::default();
            // A group that failed to decode, and its first member: the
            // other members are named damaged without decoding it again.
            let mut failed_group: Option<(u32, Id)> = None;
            for (id, loc) in &blobs {
                let end = loc.offset as usize + loc.length as usize;
                let same_failed = failed_group
                    .filter(|(o, _)| crate::group::is_grouped(loc.compression) && *o == loc.offset);
                let r = if let Some((o, first)) = same_failed {
                    Err(Error::damaged(
                        "blob",
                        id,
                        format!(
                            "in pack {pack}: its compression group at offset {o} does not decode (see blob {first})"
                        ),
                    ))
                } else if end > bytes.len() {
                    Err(Error::damaged(
                        "blob",
                        id,
                        format!("in pack {pack}: beyond the end of the pack"),
                    ))
                } else {
                    repo.decode_blob_with(
                        id,
                        crate::repository::BlobAt::of(loc),
                        &bytes[loc.offset as usize..end],
                        &mut bufs,
                    )
                    .map(|_| ())
                };
                blobs_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = r {
                    if crate::group::is_grouped(loc.compression) && same_failed.is_none() {
                        failed_group = Some((loc.offset, *id));
                    }
                    errors.lock().push(e.to_string());
                    bad_blobs.lock().push(*id);
                }
            }
        });
        report.packs_read = selected.len() as u64;
        if let Err(e) = crate::verified::record(
            &repo,
            &intact.into_inner(),
            &stored.keys().copied().collect(),
        ) {
            report
                .warnings
                .push(format!("could not update the verification record: {e}"));
        }
        report.blobs_read = blobs_read.into_inner();
        report.errors.extend(errors.into_inner());
        damaged.extend(bad_blobs.into_inner());
    }

    if !damaged.is_empty() {
        report.damaged_blobs = damaged.iter().map(|i| i.to_hex()).collect();
        report.affected_snapshots = affected(&repo, &snapshots, &damaged);
    }
    Ok(report)
}

/// For each snapshot, the paths whose content or listing depends on a damaged blob.
pub fn affected(
    repo: &IndexedRepository,
    snapshots: &[(Id, crate::snapshot::Snapshot)],
    damaged: &BTreeSet<Id>,
) -> Vec<AffectedSnapshot> {
    const MAX_PATHS: usize = 200;
    let mut out = Vec::new();
    for (id, snap) in snapshots {
        let mut paths = Vec::new();
        if damaged.contains(&snap.tree) {
            paths.push("/ (root directory unreadable)".to_string());
        } else {
            affected_in(
                repo,
                &snap.tree,
                Path::new("/"),
                damaged,
                &mut paths,
                MAX_PATHS,
            );
        }
        if !paths.is_empty() {
            out.push(AffectedSnapshot {
                snapshot: id.to_hex(),
                time: snap.time.to_rfc3339(),
                paths,
            });
        }
    }
    out
}

fn affected_in(
    repo: &IndexedRepository,
    tree: &Id,
    dir: &Path,
    damaged: &BTreeSet<Id>,
    out: &mut Vec<String>,
    max: usize,
) {
    let Ok(t) = repo.load_tree(tree) else { return };
    for n in &t.nodes {
        if out.len() >= max {
            return;
        }
        let p = dir.join(n.os_name());
        if let Some(sub) = n.subtree {
            if damaged.contains(&sub) {
                out.push(format!("{}/ (directory unreadable)", p.display()));
            } else {
                affected_in(repo, &sub, &p, damaged, out, max);
            }
        } else if n.kind == NodeKind::File
            && n.content.iter().flatten().any(|c| damaged.contains(c))
        {
            out.push(p.display().to_string());
        }
    }
}
