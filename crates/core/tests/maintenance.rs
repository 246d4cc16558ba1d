//! Maintenance on real repositories in temp dirs: forget and pin, the two
//! prune phases (including the concurrent-backup cases), repacking, repair of
//! the index and of snapshots, parity, the verification record, append-only.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{FixedOffset, TimeZone};
use lifeboat_core::archiver::{self, BackupOptions};
use lifeboat_core::blob::{BlobType, Id};
use lifeboat_core::check::{self, CheckOptions, ReadDataSubset};
use lifeboat_core::chunker::ChunkerParams;
use lifeboat_core::crypto::KdfParams;
use lifeboat_core::forget::{self, ForgetOptions};
use lifeboat_core::lock::Session;
use lifeboat_core::pack::pack_key;
use lifeboat_core::parity::{self, ParityParams};
use lifeboat_core::progress::NoProgress;
use lifeboat_core::prune::{self, PruneOptions, PruneReport};
use lifeboat_core::repair;
use lifeboat_core::repository::{IndexedRepository, InitOptions, Repository};
use lifeboat_core::restorer::{self, RestoreOptions};
use lifeboat_core::retention::{GroupBy, RetentionPolicy};
use lifeboat_storage::{DynStorage, LocalStorage};

const PW: &str = "maintenance test";

fn storage(dir: &Path) -> DynStorage {
    Arc::new(LocalStorage::new(dir).without_sync())
}

fn new_repo(dir: &Path) -> Repository {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: 16 * 1024,
            avg_size: 64 * 1024,
            max_size: 256 * 1024,
        },
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        min_pack_size: 256 * 1024,
        ..InitOptions::default()
    };
    Repository::init(storage(dir), PW, &opts).unwrap()
}

fn open(dir: &Path) -> Repository {
    Repository::open(storage(dir), PW).unwrap()
}

fn indexed(dir: &Path) -> IndexedRepository {
    open(dir).into_indexed().unwrap()
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn backup_with(repo: &IndexedRepository, src: &Path, hour: u32) -> Id {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        time: Some(
            FixedOffset::east_opt(0)
                .unwrap()
                .with_ymd_and_hms(2026, 1, 1, hour, 0, 0)
                .unwrap(),
        ),
        ..Default::default()
    };
    archiver::backup(repo, &opts, &NoProgress)
        .unwrap()
        .snapshot_id
        .unwrap()
}

fn backup(dir: &Path, src: &Path, hour: u32) -> Id {
    backup_with(&indexed(dir), src, hour)
}

/// Restore a snapshot and return the restored copy of `src`.
fn restore(dir: &Path, id: &Id, target: &Path) -> PathBuf {
    let repo = indexed(dir);
    let snap = repo.load_snapshot(id).unwrap();
    restorer::restore(
        &repo,
        id,
        snap.tree,
        &RestoreOptions {
            target: target.to_path_buf(),
            verify: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    target.to_path_buf()
}

fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

fn check_all(dir: &Path) -> check::CheckReport {
    check::check(
        &open(dir),
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )
    .unwrap()
}

fn prune_now(dir: &Path) -> PruneReport {
    prune_with_grace(dir, Duration::ZERO)
}

fn prune_with_grace(dir: &Path, grace: Duration) -> PruneReport {
    prune::prune(
        &open(dir),
        &PruneOptions {
            grace,
            ..Default::default()
        },
    )
    .unwrap()
}

fn pack_ids(dir: &Path) -> BTreeSet<Id> {
    storage(dir)
        .list("data")
        .unwrap()
        .into_iter()
        .map(|m| m.key.rsplit('/').next().unwrap().parse().unwrap())
        .collect()
}

fn write_src(src: &Path, files: &[(&str, usize, u64)]) {
    fs::create_dir_all(src).unwrap();
    for (name, len, seed) in files {
        fs::write(src.join(name), pseudo_random(*len, *seed)).unwrap();
    }
}

#[test]
fn forget_keeps_pinned_and_reports_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_src(&src, &[("a", 1000, 1)]);
    let first = backup(&dir, &src, 1);
    backup(&dir, &src, 2);
    let third = backup(&dir, &src, 3);
    let pinned = forget::set_pinned(&open(&dir), &first, true).unwrap();
    assert_ne!(
        pinned, first,
        "pinning rewrites the snapshot under a new id"
    );
    assert!(
        open(&dir).load_snapshot(&first).is_err(),
        "the unpinned original is gone"
    );

    let opts = ForgetOptions {
        policy: RetentionPolicy {
            keep_last: 1,
            ..Default::default()
        },
        group_by: GroupBy::default(),
        dry_run: true,
        ..Default::default()
    };
    let dry = forget::forget(&open(&dir), &opts).unwrap();
    assert!(dry.removed.is_empty());
    let reasons: Vec<(Id, String)> = dry.groups[0]
        .snapshots
        .iter()
        .map(|d| {
            (
                d.snapshot.id,
                if d.is_kept() {
                    d.reasons
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                } else {
                    "remove".into()
                },
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons
            .iter()
            .any(|(id, r)| *id == third && r.contains("last snapshot")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(id, r)| *id == pinned && r.contains("pinned")),
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|(_, r)| r == "remove").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        open(&dir).snapshots().unwrap().len(),
        3,
        "dry run deletes nothing"
    );

    let done = forget::forget(
        &open(&dir),
        &ForgetOptions {
            dry_run: false,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(done.removed.len(), 1);
    let left: HashSet<Id> = open(&dir)
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [pinned, third].into_iter().collect());

    let unpinned = forget::set_pinned(&open(&dir), &pinned, false).unwrap();
    assert!(!open(&dir).load_snapshot(&unpinned).unwrap().pinned);
}

#[test]
fn prune_marks_first_and_deletes_on_a_later_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, a, b) = (
        tmp.path().join("repo"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    new_repo(&dir);
    write_src(&a, &[("a.bin", 600_000, 1)]);
    write_src(&b, &[("b.bin", 600_000, 2)]);
    let snap_a = backup(&dir, &a, 1);
    let snap_b = backup(&dir, &b, 2);
    let before = pack_ids(&dir);
    open(&dir).delete_snapshot(&snap_a).unwrap();

    let dry = prune::prune(
        &open(&dir),
        &PruneOptions {
            grace: Duration::ZERO,
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        dry.marked_unused_packs > 0 && dry.to_be_freed_bytes > 500_000,
        "{dry:?}"
    );
    assert!(dry.mark.is_none());
    assert_eq!(pack_ids(&dir), before, "dry run changes nothing");

    let first = prune_now(&dir);
    assert!(
        first.mark.is_some() && first.marked_unused_packs > 0,
        "{first:?}"
    );
    assert_eq!(first.deleted_packs, 0, "phase 1 deletes nothing");
    assert_eq!(pack_ids(&dir), before, "marked packs stay until phase 2");
    assert!(check_all(&dir).ok());

    // A grace period that has not passed keeps the mark waiting.
    let waiting = prune_with_grace(&dir, Duration::from_secs(3600));
    assert_eq!(waiting.deleted_packs, 0);
    assert!(
        waiting.waiting.iter().any(|w| w.contains("grace")),
        "{waiting:?}"
    );

    let second = prune_now(&dir);
    assert_eq!(second.marks_finished, 1, "{second:?}");
    assert_eq!(
        second.deleted_packs,
        first.marked_unused_packs + first.marked_unindexed_packs
    );
    assert!(pack_ids(&dir).len() < before.len());
    assert!(prune::marks(&open(&dir)).unwrap().is_empty());

    let report = check_all(&dir);
    assert!(
        report.ok() && report.warnings.is_empty(),
        "{:?} {:?}",
        report.errors,
        report.warnings
    );
    let t = tmp.path().join("restore");
    restore(&dir, &snap_b, &t);
    assert_eq!(
        fs::read(restored(&t, &b).join("b.bin")).unwrap(),
        fs::read(b.join("b.bin")).unwrap()
    );
}

/// A host loaded the index before prune marked packs of it, and registered
/// its backup session only afterwards (the window between loading the index
/// and writing the session): the backup notices that the index files of its
/// view were superseded, reloads the index, and does not deduplicate against
/// the marked packs, which the next prune may then delete safely.
#[test]
fn backup_with_a_view_older_than_a_mark_reloads_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, a) = (tmp.path().join("repo"), tmp.path().join("a"));
    new_repo(&dir);
    write_src(&a, &[("a.bin", 700_000, 3)]);
    let snap_a = backup(&dir, &a, 1);
    // Another host loads the index now (its view contains a.bin's packs)...
    let other_host = indexed(&dir);
    // ...meanwhile the only snapshot is forgotten and prune marks its packs.
    open(&dir).delete_snapshot(&snap_a).unwrap();
    let first = prune_now(&dir);
    assert!(first.marked_unused_packs > 0, "{first:?}");
    let snap = backup_with(&other_host, &a, 2);
    let summary = open(&dir).load_snapshot(&snap).unwrap().summary.unwrap();
    assert!(
        summary.data_blobs_new > 0,
        "the backup must not reuse blobs of marked packs: {summary:?}"
    );
    let second = prune_now(&dir);
    assert!(second.deleted_packs > 0, "{second:?}");
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    let t = tmp.path().join("restore");
    restore(&dir, &snap, &t);
    assert_eq!(
        fs::read(restored(&t, &a).join("a.bin")).unwrap(),
        fs::read(a.join("a.bin")).unwrap()
    );
}

/// The failure the CLI backup-loop test caught: a backup finishes while prune
/// runs phase 1, after prune listed the snapshots, so prune takes that
/// snapshot's packs out of the index. Until the next prune re-indexes them,
/// readers must still find them (restore, check, a backup using the snapshot
/// as its parent), and the next prune must re-index, not delete, them.
#[test]
fn snapshot_saved_during_phase_one_stays_readable_and_gets_reindexed() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, a) = (tmp.path().join("repo"), tmp.path().join("a"));
    new_repo(&dir);
    write_src(&a, &[("a.bin", 700_000, 3), ("b.bin", 5_000, 4)]);
    let snap_a = backup(&dir, &a, 1);
    let saved = open(&dir).load_snapshot(&snap_a).unwrap();
    // Phase 1 sees no snapshot (the "concurrent" one is saved right after it
    // listed them) and marks every pack.
    open(&dir).delete_snapshot(&snap_a).unwrap();
    let first = prune_with_grace(&dir, Duration::from_secs(3600));
    assert!(first.marked_unused_packs > 0, "{first:?}");
    let snap = open(&dir).save_snapshot(&saved).unwrap();
    assert!(indexed(&dir).index().is_empty(), "every pack is marked");

    // Readers find the blobs in the marked packs.
    let t = tmp.path().join("restore");
    restore(&dir, &snap, &t);
    assert_eq!(
        fs::read(restored(&t, &a).join("a.bin")).unwrap(),
        fs::read(a.join("a.bin")).unwrap()
    );
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("pending prune mark")),
        "{:?}",
        report.warnings
    );
    // A backup uses it as its parent (it loads the parent's root tree).
    fs::write(a.join("b.bin"), pseudo_random(6_000, 5)).unwrap();
    let next = backup(&dir, &a, 2);
    assert_eq!(open(&dir).load_snapshot(&next).unwrap().parent, Some(snap));

    // The next prune (grace over) re-indexes the marked packs still in use.
    let second = prune_now(&dir);
    assert!(second.reindexed_packs > 0, "{second:?}");
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.contains("pending prune mark")),
        "{:?}",
        report.warnings
    );
    for id in [snap, next] {
        let t = tmp.path().join(format!("restore-{}", id.short()));
        restore(&dir, &id, &t);
    }
}

#[test]
fn live_session_older_than_the_mark_blocks_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, a) = (tmp.path().join("repo"), tmp.path().join("a"));
    new_repo(&dir);
    write_src(&a, &[("a.bin", 300_000, 4)]);
    let snap_a = backup(&dir, &a, 1);
    let session = Session::start(&storage(&dir), chrono::Utc::now(), "backup").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    open(&dir).delete_snapshot(&snap_a).unwrap();
    let first = prune_now(&dir);
    assert!(first.mark.is_some());
    let before = pack_ids(&dir);
    let blocked = prune_now(&dir);
    assert_eq!(blocked.deleted_packs, 0);
    assert!(
        blocked
            .waiting
            .iter()
            .any(|w| w.contains("waiting for the backup")),
        "{blocked:?}"
    );
    assert_eq!(pack_ids(&dir), before);
    drop(session);
    let done = prune_now(&dir);
    assert!(done.deleted_packs > 0, "{done:?}");
}

#[test]
fn mostly_unused_packs_are_repacked() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    // Small files share one pack.
    write_src(
        &src,
        &[
            ("keep.bin", 40_000, 5),
            ("drop1.bin", 60_000, 6),
            ("drop2.bin", 60_000, 7),
        ],
    );
    let old = backup(&dir, &src, 1);
    fs::remove_file(src.join("drop1.bin")).unwrap();
    fs::remove_file(src.join("drop2.bin")).unwrap();
    let new = backup(&dir, &src, 2);
    open(&dir).delete_snapshot(&old).unwrap();
    let first = prune::prune(
        &open(&dir),
        &PruneOptions {
            grace: Duration::ZERO,
            max_unused: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        first.repacked_packs > 0 && first.repacked_blobs > 0,
        "{first:?}"
    );
    assert!(check_all(&dir).ok());
    let second = prune_now(&dir);
    assert!(second.deleted_packs > 0, "{second:?}");
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    let t = tmp.path().join("restore");
    restore(&dir, &new, &t);
    assert_eq!(
        fs::read(restored(&t, &src).join("keep.bin")).unwrap(),
        pseudo_random(40_000, 5)
    );
}

#[test]
fn repair_index_restores_full_function_after_index_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_src(&src, &[("x.bin", 500_000, 8), ("y.bin", 20_000, 9)]);
    let snap = backup(&dir, &src, 1);
    for m in storage(&dir).list("index").unwrap() {
        fs::remove_file(dir.join(&m.key)).unwrap();
    }
    assert!(!check_all(&dir).ok(), "the damage is visible");
    let r = repair::repair_index(&open(&dir), false).unwrap();
    assert!(r.packs >= 2 && r.damaged_packs.is_empty(), "{r:?}");
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    let t = tmp.path().join("restore");
    restore(&dir, &snap, &t);
    assert_eq!(
        fs::read(restored(&t, &src).join("x.bin")).unwrap(),
        pseudo_random(500_000, 8)
    );
}

#[test]
fn repair_snapshots_keeps_every_unaffected_file_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    // Each ~300 KB random file fills more than a 256 KiB pack: several packs.
    let files: Vec<(String, usize, u64)> = (0..6)
        .map(|i| (format!("f{i}.bin"), 300_000, 100 + 2 * i))
        .collect();
    let refs: Vec<(&str, usize, u64)> =
        files.iter().map(|(n, l, s)| (n.as_str(), *l, *s)).collect();
    write_src(&src, &refs);
    let snap = backup(&dir, &src, 1);
    // Corrupt one byte in the middle of one data pack.
    let repo = indexed(&dir);
    let data_pack = repo
        .index()
        .iter()
        .find(|(_, l)| l.blob_type == lifeboat_core::blob::BlobType::Data)
        .map(|(_, l)| l.pack)
        .unwrap();
    let path = dir.join(pack_key(&data_pack));
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let damaged = check_all(&dir);
    assert!(!damaged.ok());

    let r = repair::repair_snapshots(&open(&dir), false).unwrap();
    assert_eq!(r.repaired.len(), 1, "{r:?}");
    let lost: Vec<String> = r.repaired[0].lost.clone();
    assert!(!lost.is_empty() && lost.len() < files.len(), "{lost:?}");
    let new: Id = r.repaired[0].new.as_ref().unwrap().parse().unwrap();
    assert!(
        open(&dir).load_snapshot(&snap).is_err(),
        "the damaged snapshot was replaced"
    );
    let new_snap = open(&dir).load_snapshot(&new).unwrap();
    assert!(new_snap.tags.contains(&"repaired".to_string()));

    let t = tmp.path().join("restore");
    restore(&dir, &new, &t);
    let back = restored(&t, &src);
    for (name, len, seed) in &files {
        let is_lost = lost.iter().any(|p| p.ends_with(&format!("/{name}")));
        let got = fs::read(back.join(name)).unwrap();
        if is_lost {
            assert!(got.is_empty(), "{name} is marked lost and restored empty");
        } else {
            assert_eq!(got, pseudo_random(*len, *seed), "{name} must be intact");
        }
    }
    // The lost file carries an error in the repaired tree.
    let tree = indexed(&dir);
    let node = lifeboat_core::walk::find_node(
        &tree,
        &new,
        new_snap.tree,
        &format!("{}/{}", src.display(), lost[0].rsplit('/').next().unwrap()),
    )
    .unwrap();
    assert!(
        node.error
            .as_deref()
            .unwrap_or_default()
            .contains("content lost"),
        "{node:?}"
    );
}

#[test]
fn parity_rebuilds_a_corrupted_pack_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_src(&src, &[("p.bin", 400_000, 11)]);
    backup(&dir, &src, 1);
    let params = ParityParams {
        data_shards: 10,
        parity_shards: 2,
    };
    let r = parity::create_missing(&open(&dir), params, false).unwrap();
    assert_eq!(r.created, r.packs);
    let overhead = r.parity_bytes as f64 / r.pack_bytes as f64;
    assert!(overhead > 0.19 && overhead < 0.25, "overhead {overhead}");

    let pack = *pack_ids(&dir)
        .iter()
        .max_by_key(|p| fs::metadata(dir.join(pack_key(p))).unwrap().len())
        .unwrap();
    let path = dir.join(pack_key(&pack));
    let original = fs::read(&path).unwrap();
    let mut bad = original.clone();
    bad[10] ^= 0x01;
    let last = bad.len() - 100;
    bad[last] ^= 0x80;
    fs::write(&path, &bad).unwrap();
    assert!(!check_all(&dir).ok());

    let repaired = parity::verify_and_repair(&open(&dir), false).unwrap();
    assert_eq!(repaired.len(), 1, "{repaired:?}");
    assert_eq!(repaired[0].outcome, "repaired");
    assert_eq!(fs::read(&path).unwrap(), original, "bit for bit");
    assert!(check_all(&dir).ok());

    // A sidecar of the old format version is rewritten only by an upgrade.
    let side_path = dir.join(parity::parity_key(&pack));
    let mut side = fs::read(&side_path).unwrap();
    side[4] = 1;
    fs::write(&side_path, &side).unwrap();
    assert_eq!(
        parity::create_missing(&open(&dir), params, false)
            .unwrap()
            .created,
        0
    );
    assert_eq!(
        parity::create_missing(&open(&dir), params, true)
            .unwrap()
            .created,
        1
    );
    assert_eq!(
        parity::sidecar_version(&fs::read(&side_path).unwrap()),
        Some(parity::VERSION)
    );
}

#[test]
fn read_data_subset_prefers_least_recently_verified_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    let files: Vec<(String, usize, u64)> = (0..4)
        .map(|i| (format!("v{i}.bin"), 300_000, 200 + 2 * i))
        .collect();
    let refs: Vec<(&str, usize, u64)> =
        files.iter().map(|(n, l, s)| (n.as_str(), *l, *s)).collect();
    write_src(&src, &refs);
    backup(&dir, &src, 1);
    let total = pack_ids(&dir).len() as u64;
    assert!(total >= 4);
    let mut seen: HashSet<Id> = HashSet::new();
    // 25% per run: four runs must read every pack exactly once.
    let mut runs = 0;
    while (seen.len() as u64) < total && runs < 8 {
        let r = check::check(
            &open(&dir),
            &CheckOptions {
                read_data: Some(ReadDataSubset::Fraction(0.25)),
            },
            &NoProgress,
        )
        .unwrap();
        assert!(r.ok());
        let (_, record) = lifeboat_core::verified::load(&open(&dir)).unwrap();
        let newly: HashSet<Id> = record
            .keys()
            .copied()
            .filter(|p| !seen.contains(p))
            .collect();
        assert_eq!(
            newly.len() as u64,
            r.packs_read.min(total - seen.len() as u64),
            "each run reads packs not read before first"
        );
        seen.extend(newly);
        runs += 1;
    }
    assert_eq!(seen.len() as u64, total);
    assert!(runs <= 4, "{runs} runs");
    assert_eq!(
        storage(&dir).list("verified").unwrap().len(),
        1,
        "records are merged"
    );
}

#[test]
fn append_only_refuses_forget_prune_and_rewrites() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_src(&src, &[("a", 100, 1)]);
    let s1 = backup(&dir, &src, 1);
    backup(&dir, &src, 2);
    lifeboat_core::protect::set_append_only(&open(&dir), true, false).unwrap();
    let repo = open(&dir);
    let forget_opts = ForgetOptions {
        policy: RetentionPolicy {
            keep_last: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = forget::forget(&repo, &forget_opts).unwrap_err().to_string();
    assert!(e.contains("append-only") && e.contains("forget"), "{e}");
    let e = prune::prune(&repo, &PruneOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("append-only") && e.contains("prune"), "{e}");
    assert!(forget::set_pinned(&repo, &s1, true)
        .unwrap_err()
        .to_string()
        .contains("append-only"));
    assert!(repo
        .remove_key("x")
        .unwrap_err()
        .to_string()
        .contains("append-only"));
    // Dry runs and backups still work.
    assert!(forget::forget(
        &repo,
        &ForgetOptions {
            dry_run: true,
            ..forget_opts
        }
    )
    .is_ok());
    backup(&dir, &src, 3);
    // Turning it off needs the explicit flag.
    let e = lifeboat_core::protect::set_append_only(&repo, false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--allow-disable-append-only"), "{e}");
    assert_eq!(open(&dir).snapshots().unwrap().len(), 3);
}

/// Local storage that reports S3-Object-Lock-style retention for the keys in
/// `locked` (the real layer is tested against moto in the storage and CLI
/// tests; this one lets the rules be checked key by key), and whose listing
/// of `index/` shows `stale` (a key, until an instant) after it was deleted:
/// a prune descheduled between deleting one superseded file and the next.
#[derive(Debug)]
struct Retaining {
    inner: DynStorage,
    locked: Arc<std::sync::Mutex<HashSet<String>>>,
    stale: Option<(String, std::time::Instant)>,
}

impl lifeboat_storage::Storage for Retaining {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(
        &self,
        key: &str,
        data: bytes::Bytes,
        options: &lifeboat_storage::PutOptions,
    ) -> lifeboat_storage::StorageResult<()> {
        self.inner.put(key, data, options)
    }
    fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> lifeboat_storage::StorageResult<bytes::Bytes> {
        self.inner.get(key, range)
    }
    fn head(&self, key: &str) -> lifeboat_storage::StorageResult<lifeboat_storage::ObjectMeta> {
        self.inner.head(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> lifeboat_storage::StorageResult<Vec<lifeboat_storage::ObjectMeta>> {
        let mut listed = self.inner.list(prefix)?;
        match &self.stale {
            Some((key, until)) if prefix == "index" && std::time::Instant::now() < *until => listed
                .push(lifeboat_storage::ObjectMeta {
                    key: key.clone(),
                    size: 100,
                }),
            _ => {}
        }
        Ok(listed)
    }
    fn delete(&self, key: &str) -> lifeboat_storage::StorageResult<()> {
        assert!(
            !self.locked.lock().unwrap().contains(key),
            "deleted {key} while it is locked"
        );
        self.inner.delete(key)
    }
    fn retention(
        &self,
        key: &str,
    ) -> lifeboat_storage::StorageResult<Option<lifeboat_storage::Retention>> {
        Ok(self
            .locked
            .lock()
            .unwrap()
            .contains(key)
            .then(|| lifeboat_storage::Retention {
                mode: "GOVERNANCE".into(),
                until: chrono::Utc::now() + chrono::Duration::days(1),
            }))
    }
}

#[test]
fn object_lock_keeps_locked_objects_and_lingering_index_files_never_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let locked: Arc<std::sync::Mutex<HashSet<String>>> = Default::default();
    let retaining = |dir: &Path| -> DynStorage {
        Arc::new(Retaining {
            inner: storage(dir),
            locked: locked.clone(),
            stale: None,
        })
    };
    let lock_all = |prefixes: &[&str]| {
        let mut l = locked.lock().unwrap();
        for p in prefixes {
            l.extend(storage(&dir).list(p).unwrap().into_iter().map(|m| m.key));
        }
    };
    let unlock = |prefix: &str| locked.lock().unwrap().retain(|k| !k.starts_with(prefix));
    Repository::init(
        retaining(&dir),
        PW,
        &InitOptions {
            kdf: KdfParams {
                m_cost: 256,
                t_cost: 1,
                p_cost: 1,
            },
            min_pack_size: 256 * 1024,
            object_lock: Some("governance:1d".parse().unwrap()),
            ..InitOptions::default()
        },
    )
    .unwrap();
    let repo = || Repository::open(retaining(&dir), PW).unwrap();
    let prune = || {
        prune::prune(
            &repo(),
            &PruneOptions {
                grace: Duration::ZERO,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let forget_all_but_newest = || {
        forget::forget(
            &repo(),
            &ForgetOptions {
                policy: RetentionPolicy {
                    keep_last: 1,
                    ..Default::default()
                },
                // The sources differ in path: one group for all.
                group_by: "host".parse::<GroupBy>().unwrap(),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let srcs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("s{i}"))).collect();
    for (i, s) in srcs.iter().enumerate() {
        write_src(s, &[("f.bin", 900_000, 40 + i as u64)]);
    }
    let snap = |i: usize| backup_with(&repo().into_indexed().unwrap(), &srcs[i], i as u32);
    let a = snap(0);
    let b = snap(1);
    lock_all(&["snapshots", "data", "index"]);
    let locked_index: Vec<String> = storage(&dir)
        .list("index")
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();

    // forget: the policy removes a, the lock keeps it (and deletes nothing).
    let f = forget_all_but_newest();
    assert!(f.removed.is_empty(), "{f:?}");
    assert_eq!(f.locked.iter().map(|l| l.id).collect::<Vec<_>>(), [a]);
    assert!(
        forget::set_pinned(&repo(), &a, true).is_err(),
        "pin rewrites: refused"
    );
    unlock("snapshots/");
    assert_eq!(forget_all_but_newest().removed, [a]);

    // prune: a's packs are unused but locked: left alone, nothing marked.
    let packs = pack_ids(&dir);
    let p = prune();
    assert!(p.locked_packs > 0 && p.mark.is_none(), "{p:?}");
    assert_eq!(p.marked_unused_packs, 0, "{p:?}");
    assert_eq!(pack_ids(&dir), packs);

    // Packs unlocked, index files still locked: the new index supersedes them
    // and they stay in place.
    unlock("data/");
    let p = prune();
    assert!(p.mark.is_some() && p.locked_packs == 0, "{p:?}");
    for k in &locked_index {
        assert!(storage(&dir).exists(k).unwrap(), "{k} is locked and stays");
    }
    assert_eq!(repo().index_files().unwrap().len(), 1);

    // Another round: the index that superseded the locked files is itself
    // superseded and deleted; the locked files must not come back (they list
    // packs phase 2 deletes now).
    let c = snap(2);
    assert_eq!(forget_all_but_newest().removed, [b]);
    let p = prune();
    assert!(p.deleted_packs > 0 && p.mark.is_some(), "{p:?}");
    let listed: BTreeSet<Id> = repo()
        .index_files()
        .unwrap()
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
        .collect();
    let stored = pack_ids(&dir);
    assert!(
        listed.is_subset(&stored),
        "an index file lists a deleted pack"
    );
    let p = prune();
    assert!(p.deleted_packs > 0, "{p:?}");
    assert!(check_all(&dir).ok());
    let target = tmp.path().join("restore");
    restore(&dir, &c, &target);
    assert_eq!(
        fs::read(restored(&target, &srcs[2]).join("f.bin")).unwrap(),
        fs::read(srcs[2].join("f.bin")).unwrap()
    );
}

/// Review finding: a parent tree that only a pending prune mark still holds
/// (the backup that deduplicated against its pack finished after the mark)
/// is loaded through the readers' fallback. A later unchanged backup must
/// write it again instead of reusing its id, or phase 2 could delete the
/// only copy once the old snapshot is forgotten.
#[test]
fn a_parent_tree_only_in_a_marked_pack_is_written_again_not_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("d/e/f"), b"unchanged").unwrap();
    new_repo(&dir);
    let first = backup(&dir, &src, 1);
    let snapshot = open(&dir).load_snapshot(&first).unwrap();
    open(&dir).delete_snapshot(&first).unwrap();
    let marked = prune_with_grace(&dir, Duration::from_secs(3600));
    assert!(marked.mark.is_some() && marked.marked_unused_packs > 0);
    // The snapshot of a backup that deduplicated against the marked packs
    // lands after the mark.
    open(&dir).save_snapshot(&snapshot).unwrap();

    let second = backup(&dir, &src, 2);
    let repo = indexed(&dir);
    let snap = repo.load_snapshot(&second).unwrap();
    let mut stack = vec![snap.tree];
    while let Some(t) = stack.pop() {
        assert!(
            repo.index().contains(&t),
            "tree {t} is indexed, not only marked"
        );
        for n in repo.load_tree(&t).unwrap().nodes {
            stack.extend(n.subtree);
            for id in n.content.into_iter().flatten() {
                assert!(repo.index().contains(&id), "blob {id} is indexed");
            }
        }
    }
}

#[test]
fn readers_of_the_index_wait_out_a_listing_that_names_a_deleted_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_src(&src, &[("x.bin", 300_000, 3)]);
    backup(&dir, &src, 1);
    let gone = Id([7; 32]);
    // Opened with an index listing that names `gone` for the next 300 ms,
    // far longer than many quick reloads take.
    let stale = |for_ms| {
        let until = std::time::Instant::now() + Duration::from_millis(for_ms);
        let s: DynStorage = Arc::new(Retaining {
            inner: storage(&dir),
            locked: Arc::default(),
            stale: Some((format!("index/{gone}"), until)),
        });
        (Repository::open(s, PW).unwrap(), until)
    };

    let (repo, until) = stale(300);
    let indexed = repo.into_indexed().unwrap();
    assert!(std::time::Instant::now() >= until, "loaded with it listed");
    let listed = indexed.index_file_ids().unwrap();
    assert!(!listed.is_empty() && !listed.contains(&gone), "{listed:?}");

    // `check` takes its pass over the index again rather than reporting the
    // vanished file as damage.
    let (repo, until) = stale(300);
    let report = check::check(&repo, &CheckOptions::default(), &NoProgress).unwrap();
    assert!(std::time::Instant::now() >= until, "checked with it listed");
    assert!(report.ok(), "{:?}", report.errors);

    // A file that stays listed and unreadable is damage the report names,
    // once the retries give up; the check still runs to its end.
    let (repo, _) = stale(3_600_000);
    let report = check::check(&repo, &CheckOptions::default(), &NoProgress).unwrap();
    assert!(
        report.errors.len() == 1 && report.errors[0].contains(&gone.to_string()),
        "{:?}",
        report.errors
    );
    assert_eq!(report.index_files, 1);
}

/// Text-like small files (shared words, each file its own mix): what
/// compression groups are for.
fn write_small_files(src: &Path, n: usize) {
    let words = [
        "backup", "restore", "snapshot", "pack", "index", "chunk", "verify", "prune",
    ];
    fs::create_dir_all(src).unwrap();
    for i in 0..n {
        let mut x = i as u64 * 2_654_435_761 + 1;
        let text: String = (0..200 + i % 300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                words[(x % words.len() as u64) as usize]
            })
            .collect::<Vec<_>>()
            .join(" ");
        fs::write(
            src.join(format!("f{i:04}.txt")),
            format!("file {i}\n{text}\n"),
        )
        .unwrap();
    }
}

/// Each compression group of the index: (pack, offset) → its members.
fn groups(repo: &IndexedRepository) -> std::collections::BTreeMap<(Id, u32), Vec<Id>> {
    let mut g = std::collections::BTreeMap::<(Id, u32), Vec<Id>>::new();
    for (id, loc) in repo.index().iter() {
        if lifeboat_core::group::is_grouped(loc.compression) {
            g.entry((loc.pack, loc.offset)).or_default().push(id);
        }
    }
    g
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut names: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for n in names {
        assert_eq!(
            fs::read(a.join(&n)).unwrap(),
            fs::read(b.join(&n)).unwrap(),
            "{n:?}"
        );
    }
}

#[test]
fn small_files_share_compression_groups_that_every_reader_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_small_files(&src, 400);
    // A large file: chunks of at least the smallest chunk stay blobs of their
    // own; its last chunk may join a group.
    fs::write(src.join("large.bin"), pseudo_random(100_000, 3)).unwrap();
    let snap = backup(&dir, &src, 1);

    let repo = indexed(&dir);
    let g = groups(&repo);
    let members: usize = g.values().map(Vec::len).sum();
    assert!(
        members >= 400,
        "every small file is a group member: {members}"
    );
    assert!(g.values().any(|m| m.len() > 50), "groups hold many members");
    let data = |l: &lifeboat_core::index::BlobLocation| l.blob_type == BlobType::Data;
    let alone: Vec<_> = repo
        .index()
        .iter()
        .filter(|(_, l)| data(l) && !lifeboat_core::group::is_grouped(l.compression))
        .collect();
    assert!(
        !alone.is_empty(),
        "the large file's full chunks are blobs of their own"
    );
    assert!(
        alone
            .iter()
            .any(|(_, l)| g.keys().any(|(p, _)| *p == l.pack)),
        "a pack holds both: the restore below reads groups beside blobs decrypted in place"
    );
    // A member read alone (the path `cat` and `dump` take).
    let (id, _) = repo
        .index()
        .iter()
        .find(|(_, l)| lifeboat_core::group::is_grouped(l.compression))
        .unwrap();
    let one = repo.read_blob(&id).unwrap();
    assert_eq!(repo.key().blob_id(&one), id);

    // check --read-data decodes every member (and the packs' sizes count each
    // group's range once).
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    assert_eq!(report.blobs_read, repo.index().len() as u64);

    let t = tmp.path().join("restore");
    restore(&dir, &snap, &t);
    assert_same_tree(&src, &restored(&t, &src));

    // Members read one by one, as `dump` and `cat` read small files: each
    // group is fetched once, not once per member (on a new thread: its
    // buffers hold no group yet).
    std::thread::spawn({
        let dir = dir.clone();
        let g = g.clone();
        move || {
            let counting = lifeboat_storage::layers::CountingStorage::new(storage(&dir));
            let requests = counting.stats_handle();
            let repo = Repository::open(Arc::new(counting), PW)
                .unwrap()
                .into_indexed()
                .unwrap();
            let before = requests.snapshot().get;
            for members in g.values() {
                for id in members {
                    assert_eq!(repo.key().blob_id(&repo.read_blob(id).unwrap()), *id);
                }
            }
            assert_eq!(requests.snapshot().get - before, g.len() as u64);
        }
    })
    .join()
    .unwrap();

    // Pack headers describe groups as the index does: an index rebuilt from
    // them has the same locations.
    let before: Vec<_> = repo.index().iter().collect();
    for m in storage(&dir).list("index").unwrap() {
        fs::remove_file(dir.join(&m.key)).unwrap();
    }
    repair::repair_index(&open(&dir), false).unwrap();
    let after: Vec<_> = indexed(&dir).index().iter().collect();
    assert_eq!(before, after);
    assert!(check_all(&dir).ok());
}

#[test]
fn prune_regroups_the_members_still_used_and_frees_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_small_files(&src, 600);
    let old = backup(&dir, &src, 1);
    // Three files in four go: every group keeps some members and loses most.
    for i in (0..600).filter(|i| i % 4 != 0) {
        fs::remove_file(src.join(format!("f{i:04}.txt"))).unwrap();
    }
    let new = backup(&dir, &src, 2);
    open(&dir).delete_snapshot(&old).unwrap();
    // With the default 10% allowance the dead members count as unused: their
    // share of each group's range, not the whole range a live member names.
    let first = prune_now(&dir);
    assert!(first.repacked_blobs >= 150, "{first:?}");
    let second = prune_now(&dir);
    assert!(second.deleted_packs > 0, "{second:?}");

    let repo = indexed(&dir);
    let g = groups(&repo);
    let members: usize = g.values().map(Vec::len).sum();
    assert_eq!(
        members, 150,
        "only the used members are left, regrouped: {g:?}"
    );
    assert!(g.len() < 150, "and they share groups again");
    let report = check_all(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    let t = tmp.path().join("restore");
    restore(&dir, &new, &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn a_damaged_group_names_each_of_its_members() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    new_repo(&dir);
    write_small_files(&src, 100);
    let snap = backup(&dir, &src, 1);
    let repo = indexed(&dir);
    let g = groups(&repo);
    let ((pack, offset), members) = g.iter().max_by_key(|(_, m)| m.len()).unwrap();
    assert!(members.len() > 10);
    let path = dir.join(pack_key(pack));
    let mut bytes = fs::read(&path).unwrap();
    bytes[*offset as usize + 40] ^= 1;
    // Packs are read-only on disk.
    let mut perm = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&path, perm).unwrap();
    fs::write(&path, &bytes).unwrap();

    let report = check_all(&dir);
    assert!(!report.ok());
    assert!(
        report.errors.iter().all(|e| e.contains(&pack.to_hex())),
        "every error names the pack: {:?}",
        report.errors
    );
    let damaged: HashSet<String> = report.damaged_blobs.iter().cloned().collect();
    for m in members {
        assert!(damaged.contains(&m.to_hex()), "member {m} is named damaged");
    }
    assert_eq!(report.affected_snapshots.len(), 1);
    let err = repo.read_blob(&members[0]).unwrap_err();
    assert!(err.to_string().contains(&members[0].to_hex()), "{err}");
    let t = tmp.path().join("restore");
    let r = restorer::restore(
        &repo,
        &snap,
        repo.load_snapshot(&snap).unwrap().tree,
        &RestoreOptions {
            target: t,
            ..Default::default()
        },
        &NoProgress,
    );
    assert!(r.is_err(), "a restore fails on the damaged group");
}
