//! Snapshot objects: what was backed up, when, from where, and its root tree.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::blob::Id;

/// Format version written into every snapshot.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The tag of a safety dump: the snapshot a database restore stores of what it is about to
/// replace, tagged this and [`SAFETY_OF_PREFIX`]`SNAPSHOT`. `latest` passes over such
/// snapshots unless asked for them by tag ([`crate::select::resolve`]), and retention counts
/// them in groups of their own ([`crate::retention::GroupBy::key`]): a restore must not become
/// the next restore's source, nor displace real backups from `keep-last`.
pub const SAFETY_TAG: &str = "safety";

/// The second tag of a safety dump, followed by the short id of the snapshot restored.
pub const SAFETY_OF_PREFIX: &str = "before-restore-of-";

/// A snapshot as stored (encrypted JSON) under `snapshots/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// When the backup started, in the local time zone of the host that made it.
    pub time: DateTime<FixedOffset>,
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    /// The paths given to `backup` (absolute), or the stream name for `--stdin`.
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// What was backed up: `files`, `stdin`, `postgres`, `mysql`, `redis`, `sqlite`, `command`, ...
    pub source: String,
    /// Root tree blob.
    pub tree: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Pinned snapshots are never removed by a retention policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Source-specific metadata (database engine, versions, row counts, LSNs...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Version of the program that wrote it.
    #[serde(default)]
    pub program: String,
    /// Set by `copy`: the id of the snapshot this one was copied from (the
    /// first one in a chain of copies). A later `copy` skips sources whose
    /// id or `original` already appears here, which makes copying idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
}

/// The tags of a restore's safety dump taken before restoring `restored`:
/// [`SAFETY_TAG`] and [`SAFETY_OF_PREFIX`] followed by its short id
/// ([`Snapshot::is_safety_dump`] recognises them).
pub fn safety_dump_tags(restored: &Id) -> Vec<String> {
    vec![
        SAFETY_TAG.to_string(),
        format!("{SAFETY_OF_PREFIX}{}", restored.short()),
    ]
}

impl Snapshot {
    /// Whether this is a restore's safety dump: tagged [`SAFETY_TAG`] and
    /// [`SAFETY_OF_PREFIX`]`…` (a backup a user tags `safety` is still a backup).
    pub fn is_safety_dump(&self) -> bool {
        self.tags.iter().any(|t| t == SAFETY_TAG)
            && self.tags.iter().any(|t| t.starts_with(SAFETY_OF_PREFIX))
    }

    /// The id that names this snapshot's content across copies: its
    /// `original`, or `id` (its own storage id) when it was not copied.
    pub fn origin(&self, id: &Id) -> Id {
        self.original.unwrap_or(*id)
    }
}

/// Statistics of the backup run that produced a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub backup_start: Option<DateTime<FixedOffset>>,
    pub backup_end: Option<DateTime<FixedOffset>>,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub total_files: u64,
    /// Logical bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from the source (files reused from the parent are not read).
    pub bytes_read: u64,
    pub data_blobs_new: u64,
    pub tree_blobs_new: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Bytes of new blobs as stored (compressed + encrypted).
    pub data_added_stored: u64,
    /// Entries that could not be read: the snapshot is partial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A snapshot together with its storage id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub id: Id,
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_json_roundtrip(
            secs in 0i64..4_000_000_000, offset_min in -720i32..=840, host in "[a-z0-9.-]{1,20}",
            tags in proptest::collection::vec("[a-z]{1,8}", 0..4), pinned in any::<bool>(),
            tree in any::<[u8; 32]>(), parent in proptest::option::of(any::<[u8; 32]>()),
            files in any::<u64>(), warnings in proptest::collection::vec(".{0,30}", 0..3),
        ) {
            let tz = FixedOffset::east_opt(offset_min * 60).unwrap();
            let s = Snapshot {
                version: SNAPSHOT_VERSION,
                time: chrono::DateTime::from_timestamp(secs, 123_456_789).unwrap().with_timezone(&tz),
                hostname: host,
                username: "u".into(),
                paths: vec!["/a b/ü".into()],
                tags,
                source: "files".into(),
                tree: Id(tree),
                parent: parent.map(Id),
                pinned,
                summary: Some(Summary { total_files: files, warnings, ..Summary::default() }),
                metadata: Some(serde_json::json!({"engine": "postgres", "rows": {"t": 3}})),
                program: "lifeboat".into(),
                original: None,
            };
            let back: Snapshot = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn snapshot_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<Snapshot>(&bytes);
        }
    }
}
