//! The record of when each pack was last read and verified by
//! `check --read-data[-subset]`.
//!
//! Stored in the repository (so every host running `check` shares it) as plain
//! JSON objects `verified/<BLAKE3 of the JSON>`:
//!
//! ```json
//! { "version": 1, "written": "2026-11-21T17:00:00Z", "packs": { "<pack id>": "2026-11-21T16:59:58Z" } }
//! ```
//!
//! Readers merge every record (latest time per pack wins). A check that read
//! packs writes one merged record and then deletes the records it merged
//! (append-only repositories keep them; merging still works). Packs that no
//! longer exist are dropped when merging. `check --read-data-subset P%` reads
//! the least recently verified packs first (never-verified packs before all
//! others), so repeated runs cover the whole repository.
//!
//! # Errors
//! Storage errors; a record that does not parse is skipped (it is only a hint).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_storage::{PutOptions, StorageError};
use serde::{Deserialize, Serialize};

use crate::blob::Id;
use crate::error::Result;
use crate::repository::Repository;

/// Storage prefix of verification records.
pub const VERIFIED_PREFIX: &str = "verified";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    written: DateTime<Utc>,
    packs: HashMap<String, DateTime<Utc>>,
}

/// Every pack's last verification time, and the ids of the records read.
///
/// # Errors
/// Storage errors of the listing.
pub fn load(repo: &Repository) -> Result<(Vec<Id>, HashMap<Id, DateTime<Utc>>)> {
    let mut ids = Vec::new();
    let mut out: HashMap<Id, DateTime<Utc>> = HashMap::new();
    for id in repo.list_ids(VERIFIED_PREFIX)? {
        let b = match repo.storage().get(&format!("{VERIFIED_PREFIX}/{id}"), None) {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        ids.push(id);
        let Ok(r) = serde_json::from_slice::<Record>(&b) else {
            continue;
        };
        for (p, t) in r.packs {
            if let Ok(p) = p.parse::<Id>() {
                let e = out.entry(p).or_insert(t);
                if *e < t {
                    *e = t;
                }
            }
        }
    }
    Ok((ids, out))
}

/// Up to `n` packs of `packs`, least recently verified first.
pub fn least_recently_verified(
    packs: &[Id],
    record: &HashMap<Id, DateTime<Utc>>,
    n: usize,
) -> Vec<Id> {
    let mut v: Vec<(Option<DateTime<Utc>>, Id)> =
        packs.iter().map(|p| (record.get(p).copied(), *p)).collect();
    v.sort();
    v.into_iter().take(n).map(|(_, p)| p).collect()
}

/// Record that `verified` packs were read and found intact now.
///
/// # Errors
/// Storage errors of writing the record or deleting merged ones.
pub fn record(repo: &Repository, verified: &[Id], existing: &HashSet<Id>) -> Result<()> {
    if verified.is_empty() {
        return Ok(());
    }
    let (old, mut merged) = load(repo)?;
    let now = Utc::now();
    for p in verified {
        merged.insert(*p, now);
    }
    merged.retain(|p, _| existing.contains(p));
    let rec = Record {
        version: 1,
        written: now,
        packs: merged.into_iter().map(|(p, t)| (p.to_hex(), t)).collect(),
    };
    let json = serde_json::to_vec(&rec).expect("records serialise");
    let id = Id::of_stored(&json);
    match repo.storage().put(
        &format!("{VERIFIED_PREFIX}/{id}"),
        Bytes::from(json),
        &PutOptions::create(),
    ) {
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if !repo.config().append_only {
        for o in old.iter().filter(|o| **o != id) {
            match repo.storage().delete(&format!("{VERIFIED_PREFIX}/{o}")) {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_verified_first_then_oldest() {
        let (a, b, c) = (Id([1; 32]), Id([2; 32]), Id([3; 32]));
        let now = Utc::now();
        let rec: HashMap<Id, DateTime<Utc>> = [(a, now), (b, now - chrono::Duration::days(3))]
            .into_iter()
            .collect();
        assert_eq!(least_recently_verified(&[a, b, c], &rec, 2), vec![c, b]);
        assert_eq!(least_recently_verified(&[a, b, c], &rec, 5), vec![c, b, a]);
    }
}
