//! `copy` between real repositories in temp dirs: by blob id (shared content
//! key) and by re-chunking (unrelated repositories); idempotence, chains of
//! copies, dry runs, interrupted copies and damaged sources.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{FixedOffset, TimeZone};
use lifeboat_core::archiver::{self, BackupOptions};
use lifeboat_core::blob::Id;
use lifeboat_core::check::{self, CheckOptions, ReadDataSubset};
use lifeboat_core::chunker::ChunkerParams;
use lifeboat_core::copy::{self, CopyMode, CopyOptions, CopySummary};
use lifeboat_core::crypto::KdfParams;
use lifeboat_core::progress::NoProgress;
use lifeboat_core::repository::{IndexedRepository, InitOptions, Repository};
use lifeboat_core::restorer::{self, RestoreOptions};
use lifeboat_core::writer::WriterOptions;
use lifeboat_core::Error;
use lifeboat_storage::layers::{FaultConfig, FaultStorage};
use lifeboat_storage::{DynStorage, LocalStorage};

const PW: &str = "copy test";

fn storage(dir: &Path) -> DynStorage {
    Arc::new(LocalStorage::new(dir).without_sync())
}

fn init_opts(chunker: ChunkerParams) -> InitOptions {
    InitOptions {
        chunker,
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        min_pack_size: 256 * 1024,
        ..InitOptions::default()
    }
}

fn small() -> ChunkerParams {
    ChunkerParams {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 256 * 1024,
    }
}

fn new_repo(dir: &Path) -> Repository {
    Repository::init(storage(dir), PW, &init_opts(small())).unwrap()
}

/// A repository with the chunker parameters and content key of `from`
/// (what `init --copy-chunker-params` does), but its own password and keys.
fn new_repo_like(dir: &Path, from: &Path) -> Repository {
    let src = open(from);
    let opts = InitOptions {
        content_key: Some(src.content_key()),
        ..init_opts(src.config().chunker)
    };
    Repository::init(storage(dir), "another password", &opts).unwrap()
}

fn open(dir: &Path) -> Repository {
    Repository::open(storage(dir), PW)
        .or_else(|_| Repository::open(storage(dir), "another password"))
        .unwrap()
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

fn write_src(src: &Path, seed: u64) {
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("big.bin"), pseudo_random(900_000, seed)).unwrap();
    fs::write(src.join("sub/same.bin"), pseudo_random(300_000, 99)).unwrap();
    fs::write(src.join("sub/deeper/small.txt"), format!("seed {seed}\n")).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    let _ = fs::remove_file(src.join("link"));
    std::os::unix::fs::symlink("sub/same.bin", src.join("link")).unwrap();
}

fn backup(dir: &Path, src: &Path, hour: u32) -> Id {
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
    archiver::backup(&indexed(dir), &opts, &NoProgress)
        .unwrap()
        .snapshot_id
        .unwrap()
}

fn copy_opts() -> CopyOptions {
    CopyOptions {
        writer: WriterOptions {
            checkpoint_packs: 1,
            ..WriterOptions::default()
        },
        ..CopyOptions::default()
    }
}

fn copy_all(src: &Path, dst: &Path) -> CopySummary {
    copy_with(src, &indexed(dst), &copy_opts()).unwrap()
}

fn copy_with(
    src: &Path,
    dst: &IndexedRepository,
    opts: &CopyOptions,
) -> lifeboat_core::Result<CopySummary> {
    let src = indexed(src);
    let snaps = src.snapshots().unwrap();
    copy::copy(&src, dst, &snaps, opts, &NoProgress)
}

/// Every file under `root` with its bytes (symlinks as their target).
fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.is_dir() {
                stack.push(p);
                out.push((rel, b"<dir>".to_vec()));
            } else if m.file_type().is_symlink() {
                out.push((
                    rel,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else {
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Restore the destination snapshot copied from the one whose files were
/// `src` and compare byte for byte.
fn assert_restores(dst: &Path, snapshot: &Id, src: &Path, scratch: &Path) {
    let repo = indexed(dst);
    let snap = repo.load_snapshot(snapshot).unwrap();
    let target = scratch.join(format!("restore-{}", snapshot.short()));
    restorer::restore(
        &repo,
        snapshot,
        snap.tree,
        &RestoreOptions {
            target: target.clone(),
            verify: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(contents(&restored), contents(src), "restored copy differs");
}

fn assert_checks(dir: &Path) {
    let r = check::check(
        &open(dir),
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.ok(), "check of {}: {:?}", dir.display(), r.errors);
}

fn packs(dir: &Path) -> BTreeSet<PathBuf> {
    walkdir(dir.join("data"))
}

fn walkdir(d: PathBuf) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = fs::read_dir(&d) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(p));
            } else {
                out.insert(p);
            }
        }
    }
    out
}

#[test]
fn copy_by_blob_id_moves_only_missing_blobs_and_is_idempotent() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, src) = (t.path().join("a"), t.path().join("b"), t.path().join("src"));
    new_repo(&a);
    write_src(&src, 1);
    let s1 = backup(&a, &src, 1);
    new_repo_like(&b, &a);

    let first = copy_all(&a, &b);
    assert_eq!(first.mode, CopyMode::Blobs);
    assert_eq!(first.copied.len(), 1);
    assert!(first.data_blobs_copied > 5, "{first:?}");
    assert!(first.tree_blobs_copied >= 4, "{first:?}");
    let d1 = first.copied[0].destination.unwrap();
    let copied = indexed(&b).load_snapshot(&d1).unwrap();
    assert_eq!(copied.original, Some(s1));
    assert_checks(&b);
    assert_restores(&b, &d1, &src, t.path());

    // Second run: nothing to do, nothing written.
    let before = packs(&b);
    let again = copy_all(&a, &b);
    assert!(again.copied.is_empty(), "{again:?}");
    assert_eq!(again.skipped.len(), 1);
    assert_eq!(again.skipped[0].existing, d1);
    assert_eq!(packs(&b), before);
    assert_eq!(indexed(&b).snapshots().unwrap().len(), 1);

    // A new source snapshot that changed one file: only its new blobs move,
    // and its parent is the destination copy of its source parent.
    fs::write(src.join("sub/deeper/small.txt"), "changed\n").unwrap();
    let s2 = backup(&a, &src, 2);
    let third = copy_all(&a, &b);
    assert_eq!(third.copied.len(), 1);
    assert_eq!(third.copied[0].source, s2);
    assert_eq!(third.data_blobs_copied, 1, "{third:?}");
    assert!(third.blobs_already_present >= 5, "{third:?}");
    let d2 = third.copied[0].destination.unwrap();
    assert_eq!(indexed(&b).load_snapshot(&d2).unwrap().parent, Some(d1));
    assert_checks(&b);
    assert_restores(&b, &d2, &src, t.path());
}

#[test]
fn copy_between_unrelated_repositories_rechunks_and_restores_identically() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, src) = (t.path().join("a"), t.path().join("b"), t.path().join("src"));
    new_repo(&a);
    // Different chunker sizes too: nothing about the source's chunks carries over.
    Repository::init(
        storage(&b),
        PW,
        &init_opts(ChunkerParams {
            min_size: 8 * 1024,
            avg_size: 32 * 1024,
            max_size: 128 * 1024,
        }),
    )
    .unwrap();
    write_src(&src, 3);
    backup(&a, &src, 1);
    let first = copy_all(&a, &b);
    assert_eq!(first.mode, CopyMode::Rechunk);
    assert_eq!(first.copied.len(), 1);
    assert!(first.bytes_read >= 1_200_000, "{first:?}");
    let d1 = first.copied[0].destination.unwrap();
    assert_checks(&b);
    assert_restores(&b, &d1, &src, t.path());
    // Files backed up into the destination directly deduplicate against the copy.
    let direct = archiver::backup(
        &indexed(&b),
        &BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(direct.snapshot.summary.unwrap().data_blobs_new, 0);

    let before = packs(&b);
    let again = copy_all(&a, &b);
    assert!(
        again.copied.is_empty() && again.skipped.len() == 1,
        "{again:?}"
    );
    assert_eq!(packs(&b), before);
}

#[test]
fn chains_of_copies_keep_the_first_original() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c, src) = (
        t.path().join("a"),
        t.path().join("b"),
        t.path().join("c"),
        t.path().join("src"),
    );
    new_repo(&a);
    write_src(&src, 4);
    let s1 = backup(&a, &src, 1);
    new_repo_like(&b, &a);
    new_repo(&c);
    copy_all(&a, &b);
    let to_c = copy_all(&b, &c);
    let dc = to_c.copied[0].destination.unwrap();
    assert_eq!(indexed(&c).load_snapshot(&dc).unwrap().original, Some(s1));
    // Copying back into the first repository finds the snapshot there already.
    let back = copy_all(&c, &a);
    assert!(back.copied.is_empty(), "{back:?}");
    assert_eq!(back.skipped[0].existing, s1);
    assert_restores(&c, &dc, &src, t.path());
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, src) = (t.path().join("a"), t.path().join("b"), t.path().join("src"));
    new_repo(&a);
    write_src(&src, 5);
    backup(&a, &src, 1);
    for like in [true, false] {
        let _ = fs::remove_dir_all(&b);
        if like {
            new_repo_like(&b, &a);
        } else {
            new_repo(&b);
        }
        let files_before = walkdir(b.clone());
        let opts = CopyOptions {
            dry_run: true,
            ..copy_opts()
        };
        let s = copy_with(&a, &indexed(&b), &opts).unwrap();
        assert_eq!(s.copied.len(), 1);
        assert!(s.copied[0].destination.is_none());
        assert!(
            s.data_blobs_copied > 5 && s.bytes_copied >= 1_200_000,
            "{s:?}"
        );
        assert_eq!(walkdir(b.clone()), files_before, "a dry run wrote to {b:?}");
    }
}

#[test]
fn interrupted_copy_leaves_a_valid_destination_and_a_rerun_reuses_its_packs() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, src) = (t.path().join("a"), t.path().join("b"), t.path().join("src"));
    new_repo(&a);
    write_src(&src, 6);
    fs::write(src.join("more.bin"), pseudo_random(2_000_000, 77)).unwrap();
    backup(&a, &src, 1);
    new_repo_like(&b, &a);
    let source_blobs = indexed(&a).index().len();
    // 5% faults, no retries: try seeds until a copy fails part-way (some packs
    // indexed). A copy that succeeds is thrown away and tried again.
    let mut failure = None;
    for seed in 0..200 {
        let _ = fs::remove_dir_all(&b);
        new_repo_like(&b, &a);
        let flaky = FaultStorage::new(storage(&b), FaultConfig::uniform(seed, 0.05));
        let Ok(repo) =
            Repository::open(Arc::new(flaky), "another password").and_then(|r| r.into_indexed())
        else {
            continue;
        };
        if let Err(e) = copy_with(&a, &repo, &copy_opts()) {
            if !indexed(&b).index().is_empty() {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("no seed failed a copy part-way");
    assert!(
        matches!(err, Error::Storage(_)),
        "a storage failure is reported as such: {err}"
    );
    assert!(indexed(&b).snapshots().unwrap().is_empty());
    assert_checks(&b);
    let reused = indexed(&b).index().len();
    let done = copy_all(&a, &b);
    assert_eq!(done.copied.len(), 1);
    assert_eq!(
        (done.data_blobs_copied + done.tree_blobs_copied) as usize,
        source_blobs - reused,
        "the rerun uploads exactly what the interrupted run had not indexed: {done:?}"
    );
    assert_checks(&b);
    assert_restores(&b, &done.copied[0].destination.unwrap(), &src, t.path());
}

#[test]
fn a_damaged_source_blob_fails_the_copy_naming_it_and_saves_no_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, src) = (t.path().join("a"), t.path().join("b"), t.path().join("src"));
    new_repo(&a);
    write_src(&src, 7);
    backup(&a, &src, 1);
    new_repo_like(&b, &a);
    // Flip a byte in the middle of the largest data pack.
    let pack = packs(&a)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1000] ^= 0x40;
    fs::write(&pack, bytes).unwrap();
    let err = copy_with(&a, &indexed(&b), &copy_opts()).unwrap_err();
    let msg = err.to_string();
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        msg.contains("blob") && msg.contains(&pack_name),
        "the error names the blob and its pack: {msg}"
    );
    assert!(indexed(&b).snapshots().unwrap().is_empty());
    assert_checks(&b);
}
