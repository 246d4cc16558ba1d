//! The PostgreSQL WAL archive inside a repository: one sealed object per archived file.
//!
//! `archive_command` runs once per WAL segment, as a new process, while the server
//! waits. So the archive does not go through packs and the index (loading the index is
//! proportional to the repository): every archived file is its own object, found by
//! name with a single request.
//!
//! ```text
//! key       = "wal/" system-id "/" timeline "/" file-name
//!             system-id: decimal (as pg_controldata prints it); timeline: 8 upper-case hex
//!             file-name: 000000010000000000000003, 000000010000000000000003.partial,
//!                        000000010000000000000003.00000028.backup, 00000002.history
//! object    = seal_bound(kind "wal", context = key, plaintext)      -- bound to its key
//! plaintext = "LBWAL" version:u8(=1) compression:u8 raw_len:u64 pushed_at_ms:i64
//!             raw_id[32] payload
//! ```
//!
//! `compression` uses the blob codes (0 none, 1 zstd); `raw_id` is the keyed BLAKE3
//! (blob-id key) of the file's bytes, checked after every read and used to compare a
//! re-pushed file with the stored one without decompressing it. Because the associated
//! data names the key, an object copied or renamed under another segment's name fails
//! authentication.
//!
//! Pushing a name that exists succeeds when the content is identical (PostgreSQL
//! retries `archive_command` after a crash even if the first attempt stored the file)
//! and fails with [`Error::WalConflict`] otherwise: two different files under one name
//! mean two servers archive into the same namespace, or a timeline was reused.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_storage::{PutOptions, StorageError};
use serde::Serialize;

use crate::blob::{self, Compression, Id};
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::retention::{BaseBackup, RetentionDuration, WalFile, WalRetention, WalSegment};
use crate::snapshot::SnapshotEntry;

/// Top-level prefix of the WAL archive.
pub const WAL_PREFIX: &str = "wal";
const MAGIC: &[u8; 5] = b"LBWAL";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 5 + 1 + 1 + 8 + 8 + 32;

/// Timeline a WAL archive file belongs to, from its name.
///
/// # Errors
/// [`Error::Invalid`] for names that are not WAL segments, `.partial`, `.backup` or
/// `.history` files.
pub fn timeline_of(name: &str) -> Result<u32> {
    match WalFile::parse(name) {
        Some(WalFile::TimelineHistory(t)) => Ok(t),
        Some(f) => Ok(f.segment().map(|s| s.timeline).unwrap_or_default()),
        None => Err(Error::invalid(
            "WAL file name",
            format!("{name:?} is not a WAL segment, .partial, .backup or .history file name"),
        )),
    }
}

/// The storage key of WAL file `name` of cluster `system_id`.
///
/// # Errors
/// As [`timeline_of`].
pub fn wal_key(system_id: u64, name: &str) -> Result<String> {
    let tli = timeline_of(name)?;
    Ok(format!("{WAL_PREFIX}/{system_id}/{tli:08X}/{name}"))
}

/// What [`push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushOutcome {
    /// Stored as a new object of this many bytes.
    Stored { stored_bytes: u64 },
    /// The name existed with identical content; nothing was written.
    AlreadyArchived,
}

/// Archive `data` as WAL file `name` of cluster `system_id`.
///
/// # Errors
/// [`Error::WalConflict`] when the name exists with different content; storage errors;
/// [`Error::Damaged`] if the existing object cannot be read back for the comparison.
pub fn push(
    repo: &Repository,
    system_id: u64,
    name: &str,
    data: &[u8],
    compression: Compression,
) -> Result<PushOutcome> {
    push_at(repo, system_id, name, data, compression, Utc::now())
}

/// What [`copy_archive`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalCopySummary {
    /// Files written to the destination.
    pub copied: u64,
    /// Files the destination already had (same name; content verified equal on write races).
    pub present: u64,
    /// Uncompressed bytes copied.
    pub bytes: u64,
    /// Bytes stored at the destination.
    pub stored_bytes: u64,
}

/// Copy every archived WAL file of `src` that `dst` lacks (off-site copies of a PITR
/// archive). Each file is read and verified from the source, then sealed under the
/// destination's key and compression, keeping its original archive time. With
/// `dry_run`, only counts what would be copied.
///
/// # Errors
/// Storage errors; [`Error::Damaged`] naming a source object that fails verification;
/// [`Error::WalConflict`] when the destination holds the same name with other content.
pub fn copy_archive(src: &Repository, dst: &Repository, dry_run: bool) -> Result<WalCopySummary> {
    let have = list(dst)?;
    let mut out = WalCopySummary::default();
    for (sysid, timelines) in list(src)?.clusters {
        for files in timelines.values() {
            for f in files {
                let present = have
                    .clusters
                    .get(&sysid)
                    .and_then(|t| t.get(&timeline_of(&f.name).unwrap_or(0)))
                    .is_some_and(|v| v.iter().any(|x| x.name == f.name));
                if present {
                    out.present += 1;
                    continue;
                }
                if dry_run {
                    out.copied += 1;
                    out.stored_bytes += f.stored_bytes;
                    continue;
                }
                let Some(obj) = fetch(src, sysid, &f.name)? else {
                    continue; // removed from the source meanwhile
                };
                let when = obj.pushed_at.unwrap_or_else(Utc::now);
                match push_at(
                    dst,
                    sysid,
                    &f.name,
                    &obj.data,
                    dst.config().compression(),
                    when,
                )? {
                    PushOutcome::Stored { stored_bytes } => {
                        out.copied += 1;
                        out.bytes += obj.data.len() as u64;
                        out.stored_bytes += stored_bytes;
                    }
                    PushOutcome::AlreadyArchived => out.present += 1,
                }
            }
        }
    }
    Ok(out)
}

fn push_at(
    repo: &Repository,
    system_id: u64,
    name: &str,
    data: &[u8],
    compression: Compression,
    pushed_at: DateTime<Utc>,
) -> Result<PushOutcome> {
    let key = wal_key(system_id, name)?;
    let raw_id = repo.key().blob_id(data);
    let (code, payload) = blob::compress(compression, data);
    let mut plain = Vec::with_capacity(HEADER_LEN + payload.len());
    plain.extend_from_slice(MAGIC);
    plain.push(VERSION);
    plain.push(code);
    plain.extend_from_slice(&(data.len() as u64).to_le_bytes());
    plain.extend_from_slice(&pushed_at.timestamp_millis().to_le_bytes());
    plain.extend_from_slice(&raw_id.0);
    plain.extend_from_slice(&payload);
    drop(payload);
    let sealed = repo.key().seal_bound(ObjectKind::Wal, &key, &plain);
    let stored_bytes = sealed.len() as u64;
    match repo
        .storage()
        .put(&key, Bytes::from(sealed), &PutOptions::create())
    {
        Ok(()) => Ok(PushOutcome::Stored { stored_bytes }),
        Err(StorageError::AlreadyExists { .. }) => {
            let existing = read_header(repo, &key)?;
            if existing.raw_id == raw_id && existing.raw_len == data.len() as u64 {
                Ok(PushOutcome::AlreadyArchived)
            } else {
                Err(Error::WalConflict {
                    key,
                    existing_len: existing.raw_len,
                    new_len: data.len() as u64,
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// One archived WAL file read back.
#[derive(Debug, Clone)]
pub struct WalObject {
    pub data: Vec<u8>,
    pub pushed_at: Option<DateTime<Utc>>,
}

struct Header {
    code: u8,
    raw_len: u64,
    pushed_at_ms: i64,
    raw_id: Id,
}

fn parse(repo: &Repository, key: &str, sealed: &[u8]) -> Result<(Header, Vec<u8>)> {
    let damaged = |r: String| Error::damaged("WAL object", key, r);
    let plain = repo
        .key()
        .open_bound(ObjectKind::Wal, key, sealed)
        .map_err(|e| damaged(e.to_string()))?;
    if plain.len() < HEADER_LEN || &plain[..5] != MAGIC {
        return Err(damaged("not a Lifeboat WAL object".into()));
    }
    if plain[5] != VERSION {
        return Err(damaged(format!("unknown WAL object version {}", plain[5])));
    }
    let u64_at = |o: usize| u64::from_le_bytes(plain[o..o + 8].try_into().expect("8 bytes"));
    let header = Header {
        code: plain[6],
        raw_len: u64_at(7),
        pushed_at_ms: u64_at(15) as i64,
        raw_id: Id::from_slice(&plain[23..55]).expect("32 bytes"),
    };
    Ok((header, plain))
}

fn read_header(repo: &Repository, key: &str) -> Result<Header> {
    let sealed = repo.storage().get(key, None)?;
    Ok(parse(repo, key, &sealed)?.0)
}

/// Read WAL file `name` of cluster `system_id`; `Ok(None)` when it is not archived.
///
/// # Errors
/// Storage errors other than not-found; [`Error::Damaged`] naming the object when it
/// fails authentication, decompression or its content hash.
pub fn fetch(repo: &Repository, system_id: u64, name: &str) -> Result<Option<WalObject>> {
    let key = wal_key(system_id, name)?;
    let sealed = match repo.storage().get(&key, None) {
        Ok(b) => b,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (h, mut plain) = parse(repo, &key, &sealed)?;
    drop(sealed);
    let payload = plain.split_off(HEADER_LEN);
    drop(plain);
    let data = blob::decompress(h.code, payload, h.raw_len as usize)
        .map_err(|e| Error::damaged("WAL object", &key, e))?;
    if repo.key().blob_id(&data) != h.raw_id {
        return Err(Error::damaged(
            "WAL object",
            &key,
            "content does not match its recorded hash",
        ));
    }
    Ok(Some(WalObject {
        data,
        pushed_at: DateTime::from_timestamp_millis(h.pushed_at_ms),
    }))
}

/// When WAL file `name` was archived (reads and authenticates the object, does not
/// decompress it); `Ok(None)` when it is not archived.
///
/// # Errors
/// As [`fetch`].
pub fn pushed_at(repo: &Repository, system_id: u64, name: &str) -> Result<Option<DateTime<Utc>>> {
    let key = wal_key(system_id, name)?;
    match read_header(repo, &key) {
        Ok(h) => Ok(DateTime::from_timestamp_millis(h.pushed_at_ms)),
        Err(Error::Storage(StorageError::NotFound { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether WAL file `name` of cluster `system_id` is archived (one `head` request).
///
/// # Errors
/// Storage errors other than not-found.
pub fn exists(repo: &Repository, system_id: u64, name: &str) -> Result<bool> {
    Ok(repo.storage().exists(&wal_key(system_id, name)?)?)
}

/// Remove WAL file `name` of cluster `system_id` (refused on append-only repositories).
///
/// # Errors
/// Storage errors.
pub fn delete(repo: &Repository, system_id: u64, name: &str) -> Result<()> {
    repo.refuse_if_append_only("delete archived WAL")?;
    Ok(repo.storage().delete(&wal_key(system_id, name)?)?)
}

/// One archived file as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedFile {
    pub name: String,
    pub stored_bytes: u64,
}

/// Every archived WAL file by cluster (system identifier), then timeline, names sorted.
/// Keys that do not follow the layout are returned separately (`strays`).
#[derive(Debug, Clone, Default)]
pub struct WalListing {
    pub clusters: BTreeMap<u64, BTreeMap<u32, Vec<ArchivedFile>>>,
    pub strays: Vec<String>,
}

/// List the WAL archive (one `list` request over `wal/`).
///
/// # Errors
/// Storage errors.
pub fn list(repo: &Repository) -> Result<WalListing> {
    let mut out = WalListing::default();
    for m in repo.storage().list(WAL_PREFIX)? {
        let parts: Vec<&str> = m.key.split('/').collect();
        let parsed = match parts.as_slice() {
            [_, sysid, tli, name] => sysid.parse::<u64>().ok().and_then(|s| {
                let t = u32::from_str_radix(tli, 16).ok()?;
                (timeline_of(name).ok()? == t && tli.len() == 8).then_some((s, t, *name))
            }),
            _ => None,
        };
        match parsed {
            Some((s, t, name)) => out
                .clusters
                .entry(s)
                .or_default()
                .entry(t)
                .or_default()
                .push(ArchivedFile {
                    name: name.to_string(),
                    stored_bytes: m.size,
                }),
            None => out.strays.push(m.key),
        }
    }
    for tls in out.clusters.values_mut() {
        for files in tls.values_mut() {
            files.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    out.strays.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Retention: which archived WAL the kept base backups and the PITR window still need
// ---------------------------------------------------------------------------------------

/// Snapshot source of PostgreSQL physical base backups.
pub const PHYSICAL_SOURCE: &str = "postgres-physical";

/// The fields of a `postgres-physical` snapshot's metadata WAL retention reads.
#[derive(Debug, serde::Deserialize)]
struct PhysicalMeta {
    system_identifier: String,
    start_wal: String,
    stop_wal: String,
    stop_time: DateTime<chrono::FixedOffset>,
}

/// The base backups among `snapshots`, by cluster (system identifier), as WAL retention
/// sees them. Snapshots of other sources are ignored.
///
/// # Errors
/// [`Error::Damaged`] naming the snapshot when a `postgres-physical` snapshot's metadata
/// lacks the WAL fields: deleting WAL without knowing what that backup needs is unsafe.
pub fn base_backups(snapshots: &[SnapshotEntry]) -> Result<BTreeMap<u64, Vec<BaseBackup>>> {
    let mut out: BTreeMap<u64, Vec<BaseBackup>> = BTreeMap::new();
    for s in snapshots
        .iter()
        .filter(|s| s.snapshot.source == PHYSICAL_SOURCE)
    {
        let bad = |r: String| Error::damaged("snapshot", s.id.to_hex(), r);
        let meta: PhysicalMeta = serde_json::from_value(
            s.snapshot
                .metadata
                .clone()
                .ok_or_else(|| bad("postgres-physical snapshot without metadata".into()))?,
        )
        .map_err(|e| bad(format!("postgres-physical metadata: {e}")))?;
        let sysid: u64 = meta
            .system_identifier
            .parse()
            .map_err(|_| bad(format!("system identifier {:?}", meta.system_identifier)))?;
        let seg = |n: &str| -> Result<WalSegment> {
            n.parse()
                .map_err(|e| bad(format!("WAL segment name {n:?}: {e}")))
        };
        out.entry(sysid).or_default().push(BaseBackup {
            id: s.id,
            time: meta.stop_time,
            start_wal: seg(&meta.start_wal)?,
            stop_wal: seg(&meta.stop_wal)?,
        });
    }
    Ok(out)
}

/// What WAL retention decided for one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterWalRetention {
    /// Decimal, as a string (JSON numbers lose precision past 2^53).
    pub system_identifier: String,
    /// Base backups kept for this cluster.
    pub kept_bases: usize,
    /// `now - window`.
    pub window_start: Option<DateTime<chrono::FixedOffset>>,
    /// The snapshot PITR replays from to reach the window start.
    pub pitr_base: Option<Id>,
    /// Every segment at or after this one (any timeline) is kept; `None` = keep all.
    pub keep_from: Option<String>,
    /// Archived files (all timelines) and their stored bytes.
    pub archived_files: usize,
    /// Files no kept base backup and no point of the window needs.
    pub removable: Vec<ArchivedFile>,
    pub removable_bytes: u64,
    /// Files deleted (empty on a dry run).
    pub removed: usize,
    /// Removable files kept because they are under S3 Object Lock retention.
    pub locked: usize,
}

/// The result of [`apply_retention`].
#[derive(Debug, Clone, Serialize)]
pub struct WalRetentionReport {
    pub pitr_window: RetentionDuration,
    pub dry_run: bool,
    pub clusters: Vec<ClusterWalRetention>,
}

/// Decide per cluster which archived WAL files are removable (see the "WAL rules" of
/// [`crate::retention`]) given the base backups that stay (`kept`: the snapshots left
/// after the snapshot policy) and delete them unless `dry_run`. A cluster without a kept
/// base backup keeps all its WAL; timeline history files are never removed.
///
/// # Errors
/// [`Error::Invalid`] on an append-only repository unless `dry_run`; as [`base_backups`];
/// storage errors naming the WAL object.
pub fn apply_retention(
    repo: &Repository,
    kept: &[SnapshotEntry],
    retention: WalRetention,
    now: DateTime<chrono::FixedOffset>,
    dry_run: bool,
) -> Result<WalRetentionReport> {
    if !dry_run {
        repo.refuse_if_append_only("delete archived WAL")?;
    }
    let bases = base_backups(kept)?;
    let listing = list(repo)?;
    let mut clusters = Vec::new();
    for (&sysid, timelines) in &listing.clusters {
        let cluster_bases = bases.get(&sysid).map(Vec::as_slice).unwrap_or_default();
        let plan = retention.plan(cluster_bases, now);
        let mut removable = Vec::new();
        for files in timelines.values() {
            // Same rule as `WalPlan::removable`, without a name lookup per file.
            removable.extend(
                files
                    .iter()
                    .filter(|f| {
                        WalFile::parse(&f.name)
                            .and_then(|w| w.segment())
                            .is_some_and(|seg| !plan.is_required(seg.position()))
                    })
                    .cloned(),
            );
        }
        let mut c = ClusterWalRetention {
            system_identifier: sysid.to_string(),
            kept_bases: cluster_bases.len(),
            window_start: plan.window_start,
            pitr_base: plan.pitr_base,
            keep_from: plan
                .keep_from
                .map(|p| format!("{:08X}{:08X}", p.log, p.seg)),
            archived_files: timelines.values().map(Vec::len).sum(),
            removable_bytes: removable.iter().map(|f| f.stored_bytes).sum(),
            removable,
            removed: 0,
            locked: 0,
        };
        // Files still under object-lock retention stay (a later forget takes them).
        let keys: Vec<String> = c
            .removable
            .iter()
            .map(|f| wal_key(sysid, &f.name))
            .collect::<Result<_>>()?;
        let locked: std::collections::HashSet<String> = repo
            .retained_among(&keys, String::clone)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if !locked.is_empty() {
            c.removable
                .retain(|f| wal_key(sysid, &f.name).is_ok_and(|k| !locked.contains(&k)));
            c.locked = locked.len();
            c.removable_bytes = c.removable.iter().map(|f| f.stored_bytes).sum();
        }
        if !dry_run {
            for f in &c.removable {
                delete(repo, sysid, &f.name).map_err(|e| {
                    Error::Other(format!(
                        "deleting WAL {}: {e}",
                        wal_key(sysid, &f.name).unwrap_or_default()
                    ))
                })?;
                c.removed += 1;
            }
        }
        clusters.push(c);
    }
    Ok(WalRetentionReport {
        pitr_window: retention.pitr_window,
        dry_run,
        clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KdfParams;
    use crate::repository::InitOptions;
    use lifeboat_storage::{DynStorage, MemoryStorage};
    use std::sync::Arc;

    fn repo() -> Repository {
        let storage: DynStorage = Arc::new(MemoryStorage::new());
        let opts = InitOptions {
            kdf: KdfParams {
                m_cost: 64,
                t_cost: 1,
                p_cost: 1,
            },
            ..InitOptions::default()
        };
        Repository::init(storage, "pw", &opts).unwrap()
    }

    const SEG: &str = "000000010000000000000003";

    #[test]
    fn copy_archive_copies_missing_files_under_the_destination_key_keeping_times() {
        let (src, dst) = (repo(), repo());
        let seg = |i: u8| format!("0000000100000000000000{i:02X}");
        for i in 1..=4u8 {
            push(&src, 7, &seg(i), &vec![i; 50_000], Compression::default()).unwrap();
        }
        push(
            &src,
            7,
            "00000002.history",
            b"1\t0/3000000\tbefore 2000\n",
            Compression::default(),
        )
        .unwrap();
        push(&dst, 7, &seg(1), &[1; 50_000], Compression::default()).unwrap();
        let dry = copy_archive(&src, &dst, true).unwrap();
        assert_eq!((dry.copied, dry.present), (4, 1));
        assert_eq!(
            list(&dst).unwrap().clusters[&7].values().flatten().count(),
            1,
            "dry run wrote nothing"
        );
        let out = copy_archive(&src, &dst, false).unwrap();
        assert_eq!(
            (out.copied, out.present, out.bytes),
            (4, 1, 3 * 50_000 + 24)
        );
        for i in 1..=4u8 {
            assert_eq!(
                fetch(&dst, 7, &seg(i)).unwrap().unwrap().data,
                vec![i; 50_000]
            );
            assert_eq!(
                pushed_at(&dst, 7, &seg(i))
                    .unwrap()
                    .map(|t| t.timestamp_millis() / 1000),
                pushed_at(&src, 7, &seg(i))
                    .unwrap()
                    .map(|t| t.timestamp_millis() / 1000),
                "archive time kept"
            );
        }
        // Sealed under the destination's own key: the source cannot read the copy.
        let key = wal_key(7, &seg(3)).unwrap();
        let copied = dst.storage().get(&key, None).unwrap();
        assert!(src
            .key()
            .open_bound(ObjectKind::Wal, &key, &copied)
            .is_err());
        let again = copy_archive(&src, &dst, false).unwrap();
        assert_eq!((again.copied, again.present), (0, 5), "idempotent");
    }

    #[test]
    fn push_fetch_roundtrip_compressed() {
        let r = repo();
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 7) as u8).collect();
        let out = push(&r, 42, SEG, &data, Compression::default()).unwrap();
        let PushOutcome::Stored { stored_bytes } = out else {
            panic!("{out:?}")
        };
        assert!(stored_bytes < 100_000, "{stored_bytes}");
        let back = fetch(&r, 42, SEG).unwrap().unwrap();
        assert_eq!(back.data, data);
        assert!(back.pushed_at.is_some());
        assert!(fetch(&r, 43, SEG).unwrap().is_none());
        assert!(fetch(&r, 42, "000000010000000000000004").unwrap().is_none());
        assert!(exists(&r, 42, SEG).unwrap());
        assert_eq!(
            r.storage().list("wal").unwrap()[0].key,
            "wal/42/00000001/000000010000000000000003"
        );
    }

    #[test]
    fn repush_identical_succeeds_different_fails() {
        let r = repo();
        push(&r, 1, SEG, b"abc", Compression::default()).unwrap();
        assert_eq!(
            push(&r, 1, SEG, b"abc", Compression::default()).unwrap(),
            PushOutcome::AlreadyArchived
        );
        let e = push(&r, 1, SEG, b"abd", Compression::default()).unwrap_err();
        assert!(
            matches!(e, Error::WalConflict { .. }),
            "{e}: expected a conflict"
        );
        assert!(e.to_string().contains(SEG), "{e}");
        assert_eq!(fetch(&r, 1, SEG).unwrap().unwrap().data, b"abc");
    }

    #[test]
    fn object_moved_under_another_name_is_damaged() {
        let r = repo();
        push(&r, 1, SEG, b"abc", Compression::default()).unwrap();
        let other = "000000010000000000000004";
        let bytes = r.storage().get(&wal_key(1, SEG).unwrap(), None).unwrap();
        r.storage()
            .put(&wal_key(1, other).unwrap(), bytes, &PutOptions::create())
            .unwrap();
        let e = fetch(&r, 1, other).unwrap_err();
        assert!(matches!(e, Error::Damaged { .. }), "{e}");
    }

    fn base(n: u8, days_ago: i64, start: u32, stop: u32) -> SnapshotEntry {
        let now = chrono::Utc::now().fixed_offset();
        let stop_time = now - chrono::TimeDelta::days(days_ago);
        SnapshotEntry {
            id: Id([n; 32]),
            snapshot: crate::snapshot::Snapshot {
                version: 1,
                time: stop_time - chrono::TimeDelta::minutes(5),
                hostname: "db".into(),
                username: String::new(),
                paths: vec!["/postgres/7".into()],
                tags: Vec::new(),
                source: PHYSICAL_SOURCE.into(),
                tree: Id::default(),
                parent: None,
                pinned: false,
                summary: None,
                metadata: Some(serde_json::json!({
                    "system_identifier": "7",
                    "start_wal": format!("00000001000000000000{start:04X}"),
                    "stop_wal": format!("00000001000000000000{stop:04X}"),
                    "stop_time": stop_time,
                })),
                program: String::new(),
                original: None,
            },
        }
    }

    fn seg(n: u32) -> String {
        format!("00000001000000000000{n:04X}")
    }

    fn names(r: &Repository, sysid: u64) -> Vec<String> {
        list(r)
            .unwrap()
            .clusters
            .get(&sysid)
            .map_or(Vec::new(), |t| {
                t.values().flatten().map(|f| f.name.clone()).collect()
            })
    }

    #[test]
    fn retention_keeps_base_ranges_and_the_window_and_history() {
        let r = repo();
        for n in 1..=12 {
            push(&r, 7, &seg(n), b"wal", Compression::None).unwrap();
        }
        push(
            &r,
            7,
            "00000002.history",
            b"1\t0/5000000\tx",
            Compression::None,
        )
        .unwrap();
        push(&r, 9, &seg(1), b"other cluster", Compression::None).unwrap();
        // A monthly 60 days ago (segments 2..3), a base 20 days ago (5..6), one yesterday (9).
        let kept = [base(1, 60, 2, 3), base(2, 20, 5, 6), base(3, 1, 9, 9)];
        let now = chrono::Utc::now().fixed_offset();
        let w = |s: &str| WalRetention::new(s.parse().unwrap());

        // 30 days: replay from the base of 60 days ago, nothing but segment 1 goes.
        let d = apply_retention(&r, &kept, w("30d"), now, true).unwrap();
        let c7 = &d.clusters[0];
        assert_eq!(c7.system_identifier, "7");
        assert_eq!(c7.pitr_base, Some(Id([1; 32])));
        let gone: Vec<&str> = c7.removable.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(gone, [seg(1)]);
        // The cluster without a kept base backup keeps everything.
        assert_eq!(d.clusters[1].removable.len(), 0);
        assert_eq!(d.clusters[1].keep_from, None);

        // 14 days: from the base of 20 days ago on, plus the monthly's own 2..3.
        let d = apply_retention(&r, &kept, w("14d"), now, true).unwrap();
        let gone: Vec<String> = d.clusters[0]
            .removable
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(gone, [seg(1), seg(4)]);
        assert_eq!(d.clusters[0].removable_bytes, {
            let l = list(&r).unwrap();
            l.clusters[&7][&1][0].stored_bytes * 2
        });
        assert_eq!(names(&r, 7).len(), 13, "a dry run deletes nothing");

        // Append-only refuses unless dry run.
        crate::protect::set_append_only(&r, true, false).unwrap();
        let ro = Repository::open(r.storage().clone(), "pw").unwrap();
        let e = apply_retention(&ro, &kept, w("14d"), now, false).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert_eq!(names(&ro, 7).len(), 13);
        crate::protect::set_append_only(&ro, false, true).unwrap();

        let done = apply_retention(&r, &kept, w("14d"), now, false).unwrap();
        assert_eq!(done.clusters[0].removed, 2);
        let left = names(&r, 7);
        assert!(left.contains(&"00000002.history".to_string()));
        assert!(!left.contains(&seg(1)) && !left.contains(&seg(4)));
        assert!(left.contains(&seg(2)) && left.contains(&seg(3)) && left.contains(&seg(5)));

        // Zero window: base consistency only, and everything from the newest base on.
        let done = apply_retention(&r, &kept, w("0h"), now, false).unwrap();
        let gone: Vec<String> = done.clusters[0]
            .removable
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(gone, [seg(7), seg(8)]);
        assert_eq!(names(&r, 9), [seg(1)]);
    }

    #[test]
    fn listing_groups_by_cluster_and_timeline() {
        let r = repo();
        for name in [
            SEG,
            "000000010000000000000002",
            "00000002.history",
            "000000020000000000000003",
            "000000010000000000000002.00000028.backup",
        ] {
            push(&r, 7, name, name.as_bytes(), Compression::None).unwrap();
        }
        push(&r, 8, SEG, b"x", Compression::None).unwrap();
        r.storage()
            .put(
                "wal/7/junk",
                Bytes::from_static(b"x"),
                &PutOptions::create(),
            )
            .unwrap();
        let l = list(&r).unwrap();
        assert_eq!(l.clusters.len(), 2);
        let names: Vec<&str> = l.clusters[&7][&1].iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                SEG
            ]
        );
        assert_eq!(l.clusters[&7][&2].len(), 2);
        assert_eq!(l.strays, ["wal/7/junk"]);
        assert!(wal_key(1, "pg_wal/x").is_err());
    }
}
