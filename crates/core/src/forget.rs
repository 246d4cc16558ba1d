//! `forget`: apply a [`RetentionPolicy`] and delete the snapshots it does not
//! keep; `pin`/`unpin`: protect a snapshot from every policy.
//!
//! Forgetting only deletes snapshot objects; the data they alone referenced is
//! reclaimed by [`crate::prune`]. Pinning rewrites the snapshot with
//! `pinned` set: snapshot ids are the hash of the stored bytes, so the pinned
//! snapshot has a **new id** (the new object is saved before the old one is
//! deleted, so a crash leaves both, never neither).
//!
//! Under S3 Object Lock ([`crate::repository::Config::object_lock`]) a
//! snapshot still within its retention is never deleted: `forget` keeps it and
//! lists it in [`ForgetReport::locked`]; `pin`/`unpin` refuse to rewrite it.
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
    /// Snapshots the policy removes that stay because they are under S3
    /// Object Lock retention (a later forget removes them).
    pub locked: Vec<LockedSnapshot>,
}

/// A snapshot kept because of its object-lock retention.
#[derive(Debug, Clone, Serialize)]
pub struct LockedSnapshot {
    pub id: Id,
    pub mode: String,
    pub until: chrono::DateTime<chrono::Utc>,
}

impl ForgetReport {
    /// Snapshots the policy removes and no object lock keeps (deleted unless
    /// dry run).
    pub fn to_remove(&self) -> impl Iterator<Item = Id> + '_ {
        self.groups
            .iter()
            .flat_map(|g| g.removed().map(|d| d.snapshot.id))
            .filter(|id| self.locked_until(id).is_none())
    }

    /// The object lock that keeps `id`, if any.
    pub fn locked_until(&self, id: &Id) -> Option<&LockedSnapshot> {
        self.locked.iter().find(|l| l.id == *id)
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
        locked: Vec::new(),
    };
    // Snapshots still under object-lock retention stay (checked on a dry run too).
    let ids: Vec<Id> = report.to_remove().collect();
    report.locked = repo
        .retained_among(&ids, |id| format!("snapshots/{id}"))?
        .into_iter()
        .map(|(id, r)| LockedSnapshot {
            id,
            mode: r.mode,
            until: r.until,
        })
        .collect();
    report.locked.sort_by_key(|l| l.id);
    if !opts.dry_run {
        for id in report.to_remove().collect::<Vec<_>>() {
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
    // The rewrite saves a new object and deletes the old one: refused while
    // the old one is locked (it would leave both).
    repo.refuse_if_retained(&format!("snapshots/{id}"))?;
    snap.pinned = pinned;
    let new_id = repo.save_snapshot(&snap)?;
    if new_id != *id {
        repo.delete_snapshot(id)?;
    }
    Ok(new_id)
}
