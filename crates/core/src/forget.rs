//! `forget`: apply a [`RetentionPolicy`] and delete the snapshots it does not
//! keep; `pin`/`unpin`: protect a snapshot from every policy.
//!
//! Forgetting only deletes snapshot objects; the data they alone referenced is
//! reclaimed by [`crate::prune`]. Pinning rewrites the snapshot with
//! `pinned` set: snapshot ids are the hash of the stored bytes, so the pinned
//! snapshot has a **new id** (the new object is saved before the old one is
//! deleted, so a crash leaves both, never neither).
//!
//! # Errors
//! Both refuse on append-only repositories ([`Error::Invalid`] saying so), except
//! a dry run of `forget`, which deletes nothing.

use serde::Serialize;

use crate::blob::Id;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::retention::{apply_policy, GroupBy, GroupDecision, RetentionPolicy};
use crate::select::SnapshotFilter;

/// What [`forget`] does.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: RetentionPolicy,
    pub group_by: GroupBy,
    /// Only snapshots matching the filter are considered (others are kept untouched).
    pub filter: SnapshotFilter,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// The decisions per group and the snapshots actually deleted.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub groups: Vec<GroupDecision>,
    /// Deleted snapshot ids (empty on a dry run).
    pub removed: Vec<Id>,
}

impl ForgetReport {
    /// Snapshots the policy removes (deleted unless dry run).
    pub fn to_remove(&self) -> impl Iterator<Item = Id> + '_ {
        self.groups
            .iter()
            .flat_map(|g| g.removed().map(|d| d.snapshot.id))
    }
}

/// Apply the policy; delete what it does not keep unless `dry_run`.
///
/// # Errors
/// [`Error::Invalid`] on an append-only repository (unless `dry_run`) or when the
/// policy is empty (which would keep everything and is almost always a mistake
/// on the command line); storage errors naming the snapshot.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    if !opts.dry_run {
        repo.refuse_if_append_only("forget snapshots")?;
    }
    if opts.policy.is_empty() {
        return Err(Error::invalid(
            "policy",
            "no keep rule given (e.g. --keep-last 7 or --keep-daily 14); refusing to guess",
        ));
    }
    let snapshots = opts.filter.apply(repo.snapshots()?);
    let groups = apply_policy(&snapshots, &opts.policy, opts.group_by);
    let mut report = ForgetReport {
        groups,
        removed: Vec::new(),
    };
    if !opts.dry_run {
        let ids: Vec<Id> = report.to_remove().collect();
        for id in ids {
            repo.delete_snapshot(&id)
                .map_err(|e| Error::Other(format!("deleting snapshot {id}: {e}")))?;
            report.removed.push(id);
        }
    }
    Ok(report)
}

/// Set or clear `pinned` on a snapshot; returns the id of the rewritten snapshot
/// (the same id when nothing changed).
///
/// # Errors
/// [`Error::Invalid`] on append-only repositories; storage errors.
pub fn set_pinned(repo: &Repository, id: &Id, pinned: bool) -> Result<Id> {
    let mut snap = repo.load_snapshot(id)?;
    if snap.pinned == pinned {
        return Ok(*id);
    }
    repo.refuse_if_append_only(if pinned {
        "pin a snapshot (it is rewritten)"
    } else {
        "unpin a snapshot (it is rewritten)"
    })?;
    snap.pinned = pinned;
    let new_id = repo.save_snapshot(&snap)?;
    if new_id != *id {
        repo.delete_snapshot(id)?;
    }
    Ok(new_id)
}
