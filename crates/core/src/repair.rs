//! `repair index` and `repair snapshots`.
//!
//! * [`repair_index`] rebuilds the index from the packs themselves: packs are
//!   self-describing (their sealed header lists their blobs), so reading each
//!   pack's tail (two ranged reads) is enough. The new index file `supersedes`
//!   every existing one, which are then deleted (kept on append-only
//!   repositories, where superseding is enough for readers).
//! * [`repair_snapshots`] finds every blob that is missing or unreadable (a full
//!   `check --read-data`), then rewrites each snapshot that depends on one:
//!   files whose content is lost keep their metadata, get empty content, size 0
//!   and an `error` saying what was lost; directories whose listing is lost
//!   become empty directories with an `error`. Everything else is unchanged and
//!   stays restorable. The new snapshot is tagged `repaired`; the damaged one is
//!   deleted after the new one is saved.
//!
//! # Errors
//! Storage errors; [`crate::Error::Invalid`] for `repair snapshots` on append-only
//! repositories (it rewrites snapshots).

use std::collections::{BTreeSet, HashMap};

use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{BlobType, Id};
use crate::check::{self, CheckOptions, ReadDataSubset};
use crate::error::Result;
use crate::index::IndexPack;
use crate::progress::NoProgress;
use crate::repository::{IndexedRepository, Repository};
use crate::tree::{NodeKind, Tree};
use crate::writer::{BlobWriter, WriterOptions};

/// What [`repair_index`] found and wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairIndexReport {
    pub packs: u64,
    pub blobs: u64,
    /// Packs whose header could not be read (left out of the index), with the reason.
    pub damaged_packs: Vec<String>,
    pub superseded_index_files: u64,
    pub index: Option<Id>,
}

/// Rebuild the index by reading every pack's header.
///
/// # Errors
/// Storage errors of listing and writing.
pub fn repair_index(repo: &Repository, dry_run: bool) -> Result<RepairIndexReport> {
    // Not while a prune rewrites the index (see crate::lock::Session::exclusive).
    let _exclusive = if dry_run {
        None
    } else {
        Some(crate::lock::Session::exclusive(
            repo.storage(),
            "repair index",
        )?)
    };
    let old = repo.list_ids("index")?;
    let packs: Vec<Id> = repo
        .storage()
        .list("data")?
        .into_iter()
        .filter_map(|m| m.key.rsplit('/').next()?.parse().ok())
        .collect();
    let results: Vec<(Id, Result<(BlobType, Vec<crate::pack::PackEntry>, u64)>)> = packs
        .par_iter()
        .map(|p| (*p, crate::prune::read_pack_header(repo, p)))
        .collect();
    let mut report = RepairIndexReport::default();
    let mut packs_read: Vec<IndexPack> = Vec::new();
    for (id, r) in results {
        match r {
            Ok((t, entries, _)) => {
                report.packs += 1;
                report.blobs += entries.len() as u64;
                packs_read.push(IndexPack {
                    id,
                    blob_type: t,
                    blobs: entries,
                });
            }
            Err(e) => report.damaged_packs.push(e.to_string()),
        }
    }
    packs_read.sort_by_key(|p| p.id);
    report.superseded_index_files = old.len() as u64;
    if dry_run {
        return Ok(report);
    }
    report.index = repo.save_index_split(packs_read, old.clone())?.pop();
    if !repo.config().append_only {
        for id in &old {
            // One under object-lock retention stays: the new file supersedes it.
            crate::prune::delete_object(repo, "index", id)?;
        }
    }
    Ok(report)
}

/// One snapshot rewritten by [`repair_snapshots`].
#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    pub old: String,
    /// `None` on a dry run.
    pub new: Option<String>,
    /// Paths whose content or listing was lost.
    pub lost: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub damaged_blobs: u64,
    pub snapshots_checked: u64,
    pub repaired: Vec<RepairedSnapshot>,
    /// Damaged snapshots left in place because they are under object lock.
    pub kept_locked: Vec<String>,
}

/// Rewrite every snapshot that depends on a missing or unreadable blob.
///
/// # Errors
/// [`Error::Invalid`] on append-only repositories (unless `dry_run`); storage errors.
pub fn repair_snapshots(repo: &Repository, dry_run: bool) -> Result<RepairSnapshotsReport> {
    if !dry_run {
        repo.refuse_if_append_only("repair snapshots (it rewrites them)")?;
    }
    let found = check::check(
        repo,
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )?;
    let damaged: BTreeSet<Id> = found
        .damaged_blobs
        .iter()
        .filter_map(|h| h.parse().ok())
        .collect();
    let indexed = repo.clone().into_indexed()?;
    let snaps = indexed.snapshots()?;
    let mut report = RepairSnapshotsReport {
        damaged_blobs: damaged.len() as u64,
        snapshots_checked: snaps.len() as u64,
        repaired: Vec::new(),
        kept_locked: Vec::new(),
    };
    if damaged.is_empty() {
        return Ok(report);
    }
    let writer = BlobWriter::new(
        repo,
        indexed.index().clone(),
        &WriterOptions {
            dry_run,
            ..WriterOptions::default()
        },
    );
    let mut rw = Rewriter {
        repo: &indexed,
        damaged: &damaged,
        writer: &writer,
        memo: HashMap::new(),
    };
    let mut new_snaps = Vec::new();
    for s in &snaps {
        let mut lost = Vec::new();
        let new_root = if damaged.contains(&s.snapshot.tree) {
            lost.push("/ (root directory unreadable)".to_string());
            rw.save(Tree::default())?
        } else {
            rw.rewrite(&s.snapshot.tree, "", &mut lost)?
        };
        if lost.is_empty() {
            continue;
        }
        let mut snap = s.snapshot.clone();
        snap.tree = new_root;
        if !snap.tags.iter().any(|t| t == "repaired") {
            snap.tags.push("repaired".into());
        }
        let summary = snap.summary.get_or_insert_with(Default::default);
        summary.warnings.push(format!(
            "repaired from snapshot {}: {} path(s) lost ({})",
            s.id,
            lost.len(),
            lost.first().map(String::as_str).unwrap_or_default()
        ));
        new_snaps.push((s.id, snap, lost));
    }
    drop(rw);
    writer.finish()?;
    for (old, snap, lost) in new_snaps {
        let new = if dry_run {
            None
        } else {
            let id = repo.save_snapshot(&snap)?;
            // A damaged snapshot under object-lock retention stays next to
            // its repaired copy until the retention ends.
            match repo.delete_snapshot(&old) {
                Ok(()) => {}
                Err(crate::Error::Retained { until, .. }) => report.kept_locked.push(format!(
                    "{old} (under S3 Object Lock until {})",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )),
                Err(e) => return Err(e),
            }
            Some(id.to_hex())
        };
        report.repaired.push(RepairedSnapshot {
            old: old.to_hex(),
            new,
            lost,
        });
    }
    Ok(report)
}

struct Rewriter<'a> {
    repo: &'a IndexedRepository,
    damaged: &'a BTreeSet<Id>,
    writer: &'a BlobWriter,
    /// tree id -> (new id, lost paths relative to it)
    memo: HashMap<Id, (Id, Vec<String>)>,
}

impl Rewriter<'_> {
    fn save(&self, tree: Tree) -> Result<Id> {
        Ok(self.writer.save(BlobType::Tree, &tree.serialize())?.0)
    }

    /// The id of the repaired tree (the same id when nothing under it is lost).
    fn rewrite(&mut self, id: &Id, dir: &str, lost: &mut Vec<String>) -> Result<Id> {
        if let Some((new, rel)) = self.memo.get(id) {
            lost.extend(rel.iter().map(|r| format!("{dir}{r}")));
            return Ok(*new);
        }
        let mut tree = self.repo.load_tree(id)?;
        let mut rel_lost = Vec::new();
        for n in &mut tree.nodes {
            let name = format!("/{}", n.name);
            if let Some(sub) = n.subtree {
                if self.damaged.contains(&sub) {
                    n.subtree = Some(self.save(Tree::default())?);
                    n.error = Some(format!("directory listing lost: tree {sub} is unreadable"));
                    rel_lost.push(format!("{name}/ (directory unreadable)"));
                } else {
                    let mut sub_lost = Vec::new();
                    let new = self.rewrite(&sub, "", &mut sub_lost)?;
                    rel_lost.extend(sub_lost.into_iter().map(|p| format!("{name}{p}")));
                    n.subtree = Some(new);
                }
            } else if n.kind == NodeKind::File {
                let bad: Vec<Id> = n
                    .content
                    .iter()
                    .flatten()
                    .filter(|c| self.damaged.contains(c))
                    .copied()
                    .collect();
                if let Some(first) = bad.first() {
                    n.error = Some(format!(
                        "content lost: {} of {} blobs unreadable (first: {first}); the file is empty",
                        bad.len(),
                        n.content.as_ref().map_or(0, Vec::len)
                    ));
                    n.content = Some(Vec::new());
                    n.size = 0;
                    rel_lost.push(name);
                }
            }
        }
        let new = if rel_lost.is_empty() {
            *id
        } else {
            self.save(tree)?
        };
        lost.extend(rel_lost.iter().map(|r| format!("{dir}{r}")));
        self.memo.insert(*id, (new, rel_lost));
        Ok(new)
    }
}
