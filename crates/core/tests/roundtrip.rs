//! End-to-end tests of the engine on real directory trees in temp dirs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lifeboat_core::archiver::{
    self, BackupOptions, ExcludeOptions, StreamBackupOptions, StreamSnapshotWriter,
};
use lifeboat_core::check::{self, CheckOptions, ReadDataSubset};
use lifeboat_core::chunker::ChunkerParams;
use lifeboat_core::crypto::KdfParams;
use lifeboat_core::progress::NoProgress;
use lifeboat_core::repository::{IndexedRepository, InitOptions, Repository};
use lifeboat_core::restorer::{self, RestoreOptions};
use lifeboat_core::walk;
use lifeboat_core::writer::WriterOptions;
use lifeboat_core::Error;
use lifeboat_storage::{
    DynStorage, LocalStorage, ObjectMeta, PutOptions, Storage, StorageError, StorageResult,
};

const PW: &str = "correct horse battery staple";

fn small_chunks() -> ChunkerParams {
    ChunkerParams {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 256 * 1024,
    }
}

fn init_opts() -> InitOptions {
    InitOptions {
        chunker: small_chunks(),
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        min_pack_size: 256 * 1024,
        ..InitOptions::default()
    }
}

fn new_repo(dir: &Path) -> Repository {
    let storage: DynStorage = Arc::new(LocalStorage::new(dir).without_sync());
    Repository::init(storage, PW, &init_opts()).unwrap()
}

fn indexed(dir: &Path) -> IndexedRepository {
    let storage: DynStorage = Arc::new(LocalStorage::new(dir).without_sync());
    Repository::open(storage, PW)
        .unwrap()
        .into_indexed()
        .unwrap()
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

fn backup(dir: &Path, paths: &[PathBuf]) -> archiver::BackupOutcome {
    let repo = indexed(dir);
    let opts = BackupOptions {
        paths: paths.to_vec(),
        ..Default::default()
    };
    archiver::backup(&repo, &opts, &NoProgress).unwrap()
}

fn restore_all(
    dir: &Path,
    outcome: &archiver::BackupOutcome,
    target: &Path,
) -> restorer::RestoreSummary {
    restore_snapshot(
        &indexed(dir),
        outcome,
        RestoreOptions {
            target: target.to_path_buf(),
            verify: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Restore the snapshot a backup made, with `opts`.
fn restore_snapshot(
    repo: &IndexedRepository,
    outcome: &archiver::BackupOutcome,
    opts: RestoreOptions,
) -> lifeboat_core::error::Result<restorer::RestoreSummary> {
    restorer::restore(
        repo,
        &outcome.snapshot_id.unwrap(),
        outcome.snapshot.tree,
        &opts,
        &NoProgress,
    )
}

/// Build the awkward tree the issue lists.
fn awkward_tree(src: &Path) {
    fs::create_dir_all(src.join("empty-dir")).unwrap();
    fs::create_dir_all(src.join("a/b/c/d")).unwrap();
    fs::write(src.join("empty-file"), b"").unwrap();
    fs::write(src.join("a/b/c/d/deep.txt"), b"deep").unwrap();
    let long = "L".repeat(255);
    fs::write(src.join(&long), b"long name").unwrap();
    fs::write(
        src.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"non-utf8 name",
    )
    .unwrap();
    fs::write(src.join("unicode-\u{1F6DF}.txt"), "lifebuoy".as_bytes()).unwrap();
    std::os::unix::fs::symlink("a/b/c/d/deep.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::write(src.join("hard1"), b"shared inode").unwrap();
    fs::hard_link(src.join("hard1"), src.join("hard2")).unwrap();
    // Large: more than 2x the maximum chunk size (256 KiB here).
    fs::write(src.join("big.bin"), pseudo_random(1_500_000, 7)).unwrap();
    // Sparse: 64 MiB with 4 KiB of data in the middle.
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xAB; 4096], 32 << 20).unwrap();
    drop(f);
    // One chunk of zeros: created by its writer as a hole.
    fs::write(src.join("zeros.bin"), vec![0u8; 10_000]).unwrap();
    // Several chunks, read-only, an old mtime: finished through the descriptor
    // of whichever writer writes its last chunk.
    fs::write(src.join("readonly.bin"), pseudo_random(600_000, 9)).unwrap();
    fs::set_permissions(src.join("readonly.bin"), fs::Permissions::from_mode(0o444)).unwrap();
    filetime::set_file_mtime(
        src.join("readonly.bin"),
        filetime::FileTime::from_unix_time(1_500_000_000, 42),
    )
    .unwrap();
    fs::write(src.join("private.txt"), b"mode 0640").unwrap();
    fs::set_permissions(src.join("private.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _ = xattr::set(src.join("big.bin"), "user.lifeboat", b"xattr value");
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    // Directory mtimes last (creating entries above changed them).
    for (i, d) in ["a/b/c/d", "a/b/c", "a/b", "a", "empty-dir"]
        .iter()
        .enumerate()
    {
        let t = filetime::FileTime::from_unix_time(1_600_000_000 + i as i64 * 86_400, 123_456_789);
        filetime::set_file_mtime(src.join(d), t).unwrap();
    }
}

#[derive(Debug, PartialEq)]
struct Entry {
    kind: String,
    mode: u32,
    size: u64,
    mtime: i64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

/// Everything restore promises to keep, keyed by relative path.
fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "file"
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                Entry {
                    kind: kind.into(),
                    mode: m.mode(),
                    size: if ft.is_file() { m.len() } else { 0 },
                    // Directories' too: restore sets them last, deepest
                    // first, level by level in parallel.
                    mtime: if ft.is_symlink() {
                        0
                    } else {
                        m.mtime() * 1_000_000_000 + m.mtime_nsec()
                    },
                    content: ft.is_file().then(|| fs::read(&p).unwrap()),
                    link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                },
            );
        }
    }
    out
}

fn restored_root(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

#[test]
fn awkward_tree_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, target) = (
        tmp.path().join("src"),
        tmp.path().join("repo"),
        tmp.path().join("restore"),
    );
    awkward_tree(&src);
    new_repo(&repo);
    let out = backup(&repo, std::slice::from_ref(&src));
    assert!(!out.is_partial(), "{:?}", out.snapshot.summary);
    let summary = restore_all(&repo, &out, &target);
    assert!(summary.files_verified > 0);
    let back = restored_root(&target, &src);
    assert_eq!(describe(&src), describe(&back));

    // Hard links come back as links.
    assert_eq!(
        fs::metadata(back.join("hard1")).unwrap().ino(),
        fs::metadata(back.join("hard2")).unwrap().ino()
    );
    // Sparse files stay sparse: far fewer blocks than their length.
    let blocks = fs::metadata(back.join("sparse.img")).unwrap().blocks() * 512;
    assert!(blocks < 8 << 20, "sparse file allocated {blocks} bytes");
    // A file of one all-zero chunk is a hole, made by its writer.
    let blocks = fs::metadata(back.join("zeros.bin")).unwrap().blocks();
    assert_eq!(blocks, 0, "zeros.bin allocated {blocks} blocks");
    // Extended attributes (when the file system supports user xattrs).
    if xattr::get(src.join("big.bin"), "user.lifeboat")
        .ok()
        .flatten()
        .is_some()
    {
        assert_eq!(
            xattr::get(back.join("big.bin"), "user.lifeboat")
                .unwrap()
                .unwrap(),
            b"xattr value"
        );
    }
    // The sparse file's 64 MiB of zeros dedupe down to a few blobs.
    let s = out.snapshot.summary.unwrap();
    assert!(
        s.data_added_stored < 3 << 20,
        "stored {} bytes",
        s.data_added_stored
    );

    let repo_i = indexed(&repo);
    let report = check::check(
        &repo_i,
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

#[test]
fn default_chunker_handles_files_over_twice_the_max_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo_dir, target) = (
        tmp.path().join("src"),
        tmp.path().join("repo"),
        tmp.path().join("restore"),
    );
    fs::create_dir_all(&src).unwrap();
    let data = pseudo_random(20 << 20, 11);
    fs::write(src.join("twenty-mib.bin"), &data).unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::new(&repo_dir).without_sync());
    let opts = InitOptions {
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(storage, PW, &opts).unwrap();
    let out = backup(&repo_dir, std::slice::from_ref(&src));
    restore_all(&repo_dir, &out, &target);
    assert!(fs::read(restored_root(&target, &src).join("twenty-mib.bin")).unwrap() == data);
    let repo = indexed(&repo_dir);
    let node = walk::find_node(
        &repo,
        &out.snapshot_id.unwrap(),
        out.snapshot.tree,
        &format!("{}/twenty-mib.bin", src.display()),
    )
    .unwrap();
    let n = node.content.unwrap().len();
    assert!(
        (3..=40).contains(&n),
        "{n} chunks for 20 MiB with 512K/1M/8M"
    );
}

#[test]
fn incremental_backup_reuses_unchanged_files_and_both_snapshots_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("d/f{i}")), pseudo_random(100_000, i)).unwrap();
    }
    new_repo(&repo);
    let first = backup(&repo, std::slice::from_ref(&src));
    let before = describe(&src);
    // Change one file in place (same size), add one, remove one.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("d/f3"), pseudo_random(100_000, 999)).unwrap();
    fs::write(src.join("d/new"), b"new").unwrap();
    fs::remove_file(src.join("d/f7")).unwrap();
    let second = backup(&repo, std::slice::from_ref(&src));
    let s = second.snapshot.summary.clone().unwrap();
    assert_eq!(second.snapshot.parent, first.snapshot_id);
    assert_eq!(
        (s.files_new, s.files_changed, s.files_unmodified),
        (1, 1, 18)
    );
    assert_eq!(
        s.bytes_read, 100_003,
        "only the changed and new files are read"
    );

    let t1 = tmp.path().join("r1");
    restore_all(&repo, &first, &t1);
    assert_eq!(describe(&restored_root(&t1, &src)), before);
    let t2 = tmp.path().join("r2");
    restore_all(&repo, &second, &t2);
    assert_eq!(describe(&restored_root(&t2, &src)), describe(&src));

    // --force rereads everything but adds nothing new.
    let r = indexed(&repo);
    let forced = archiver::backup(
        &r,
        &BackupOptions {
            paths: vec![src.clone()],
            force: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let f = forced.snapshot.summary.unwrap();
    assert_eq!(f.files_unmodified, 0);
    assert_eq!(f.data_blobs_new, 0);
}

/// The tree id of directory `path` (absolute) in the snapshot whose root tree is `root`.
fn tree_id_of(
    repo: &IndexedRepository,
    root: lifeboat_core::blob::Id,
    path: &Path,
) -> lifeboat_core::blob::Id {
    let mut id = root;
    for c in path.components().skip(1) {
        let tree = repo.load_tree(&id).unwrap();
        id = tree.find(c.as_os_str()).and_then(|n| n.subtree).unwrap();
    }
    id
}

#[test]
fn unchanged_directories_keep_their_tree_ids_and_a_metadata_change_propagates_to_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    for d in ["a", "b/deep", "c"] {
        fs::create_dir_all(src.join(d)).unwrap();
        fs::write(src.join(d).join("f"), d.as_bytes()).unwrap();
    }
    new_repo(&repo);
    let first = backup(&repo, std::slice::from_ref(&src));
    let second = backup(&repo, std::slice::from_ref(&src));
    let r = indexed(&repo);
    let ids = |o: &archiver::BackupOutcome, d: &str| tree_id_of(&r, o.snapshot.tree, &src.join(d));
    // The source's own tree, not the snapshot root: the root's trees hold the
    // metadata of src's ancestors (/tmp among them), which tests running
    // alongside change. At most those ancestor trees are new.
    assert_eq!(ids(&second, ""), ids(&first, ""), "nothing changed");
    let ancestors = src.ancestors().count() as u64 - 1;
    let new_trees = second.snapshot.summary.as_ref().unwrap().tree_blobs_new;
    assert!(new_trees <= ancestors, "{new_trees} new trees");

    // Only metadata changes: the mode of a file two levels down. Its
    // directory, every directory above it and the root get new trees; the
    // siblings keep theirs.
    fs::set_permissions(src.join("b/deep/f"), fs::Permissions::from_mode(0o600)).unwrap();
    let third = backup(&repo, std::slice::from_ref(&src));
    let r = indexed(&repo);
    let ids = |o: &archiver::BackupOutcome, d: &str| tree_id_of(&r, o.snapshot.tree, &src.join(d));
    assert_ne!(third.snapshot.tree, second.snapshot.tree);
    for d in ["", "b", "b/deep"] {
        assert_ne!(ids(&third, d), ids(&second, d), "{d} changed");
    }
    for d in ["a", "c"] {
        assert_eq!(ids(&third, d), ids(&second, d), "{d} unchanged");
    }
    let t = tmp.path().join("r3");
    restore_all(&repo, &third, &t);
    assert_eq!(describe(&restored_root(&t, &src)), describe(&src));
    let mode = fs::metadata(restored_root(&t, &src).join("b/deep/f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A directory removed since the parent snapshot (its parent tree was
    // prefetched for nothing) and one added.
    fs::remove_dir_all(src.join("c")).unwrap();
    fs::create_dir_all(src.join("e")).unwrap();
    fs::write(src.join("e/g"), b"g").unwrap();
    let fourth = backup(&repo, std::slice::from_ref(&src));
    assert_eq!(ids(&fourth, "a"), ids(&third, "a"));
    let t = tmp.path().join("r4");
    restore_all(&repo, &fourth, &t);
    assert_eq!(describe(&restored_root(&t, &src)), describe(&src));
}

#[test]
fn xattrs_of_unchanged_entries_come_from_the_parent_and_a_changed_one_is_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    fs::create_dir_all(src.join("d")).unwrap();
    for f in ["a", "b", "d/c"] {
        fs::write(src.join(f), f.as_bytes()).unwrap();
    }
    if xattr::set(src.join("a"), "user.k", b"one").is_err() {
        eprintln!("skipping: no user xattrs on this file system");
        return;
    }
    xattr::set(src.join("b"), "user.k", b"b").unwrap();
    xattr::set(src.join("d"), "user.k", b"dir").unwrap();
    new_repo(&repo);
    backup(&repo, std::slice::from_ref(&src));
    // Changing an attribute changes the ctime: the new value must be read,
    // not copied from the parent snapshot's node. A directory likewise.
    std::thread::sleep(std::time::Duration::from_millis(20));
    xattr::set(src.join("a"), "user.k", b"two").unwrap();
    xattr::remove(src.join("d"), "user.k").unwrap();
    xattr::set(src.join("d"), "user.other", b"new").unwrap();
    let second = backup(&repo, std::slice::from_ref(&src));
    // And unchanged once more (all from the parent).
    let third = backup(&repo, std::slice::from_ref(&src));
    for (i, snap) in [second, third].iter().enumerate() {
        let t = tmp.path().join(format!("r{i}"));
        restore_all(&repo, snap, &t);
        let back = restored_root(&t, &src);
        let get = |p: &str, k: &str| xattr::get(back.join(p), k).unwrap();
        assert_eq!(get("a", "user.k").as_deref(), Some(&b"two"[..]));
        assert_eq!(get("b", "user.k").as_deref(), Some(&b"b"[..]));
        assert_eq!(get("d", "user.k"), None);
        assert_eq!(get("d", "user.other").as_deref(), Some(&b"new"[..]));
    }
}

#[test]
fn excludes_and_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo_dir) = (tmp.path().join("src"), tmp.path().join("repo"));
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("keep/node_modules")).unwrap();
    fs::create_dir_all(src.join("tagged")).unwrap();
    fs::write(src.join("cache/x"), b"x").unwrap();
    fs::write(src.join("keep/a.log"), b"x").unwrap();
    fs::write(src.join("keep/A.LOG"), b"x").unwrap();
    fs::write(src.join("keep/a.txt"), b"x").unwrap();
    fs::write(src.join("keep/node_modules/m"), b"x").unwrap();
    fs::write(src.join("tagged/.nobackup"), b"").unwrap();
    fs::write(src.join("huge"), vec![1u8; 10_000]).unwrap();
    new_repo(&repo_dir);
    let repo = indexed(&repo_dir);
    let opts = BackupOptions {
        paths: vec![src.clone()],
        excludes: ExcludeOptions {
            exclude: vec![
                "*.log".into(),
                "node_modules".into(),
                format!("{}/cache", src.display()),
            ],
            iexclude: vec!["*.LOG".into()],
            exclude_if_present: vec![".nobackup".into()],
            exclude_larger_than: Some(5000),
        },
        ..Default::default()
    };
    let dry = archiver::backup(
        &repo,
        &BackupOptions {
            dry_run: true,
            ..opts.clone()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(dry.snapshot_id.is_none());
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "dry run writes no snapshot"
    );
    assert!(
        repo.storage().list("data").unwrap().is_empty(),
        "dry run writes no pack"
    );
    let out = archiver::backup(&repo, &opts, &NoProgress).unwrap();
    let repo = indexed(&repo_dir);
    let mut paths = Vec::new();
    walk::walk(&repo, &out.snapshot.tree, Path::new("/"), &mut |p, _| {
        paths.push(p);
        Ok(true)
    })
    .unwrap();
    let rel: Vec<String> = paths
        .iter()
        .filter_map(|p| p.strip_prefix(&src).ok())
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(rel, vec!["keep", "keep/a.txt"]);
}

/// `--one-file-system` stops at a mount point below a backed-up directory:
/// the mount point's directory is kept, what is under it is not. `/dev/shm`
/// is a tmpfs mounted in the devtmpfs `/dev` on the machines here.
#[test]
fn one_file_system_keeps_the_mount_point_and_leaves_out_what_is_under_it() {
    let (dev, shm) = (Path::new("/dev"), Path::new("/dev/shm"));
    let same_fs =
        |a: &Path, b: &Path| fs::metadata(a).unwrap().dev() == fs::metadata(b).unwrap().dev();
    if !shm.is_dir() || same_fs(dev, shm) {
        eprintln!("skipped: /dev/shm is not a mount point below /dev on this machine");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let marker = tempfile::Builder::new()
        .prefix("lifeboat-ofs-test")
        .tempfile_in(shm)
        .unwrap();
    let marker_name = marker.path().file_name().unwrap().to_owned();
    new_repo(&repo_dir);
    let repo = indexed(&repo_dir);
    let shm_entries = |one_file_system: bool| {
        let opts = BackupOptions {
            paths: vec![dev.to_path_buf()],
            one_file_system,
            ..Default::default()
        };
        let out = archiver::backup(&repo, &opts, &NoProgress).unwrap();
        let root = repo.load_tree(&out.snapshot.tree).unwrap();
        let dev_tree = repo
            .load_tree(&root.find(OsStr::new("dev")).unwrap().subtree.unwrap())
            .unwrap();
        let shm_node = dev_tree
            .find(OsStr::new("shm"))
            .expect("/dev/shm itself is kept");
        let shm_tree = repo.load_tree(&shm_node.subtree.unwrap()).unwrap();
        shm_tree
            .nodes
            .iter()
            .map(|n| n.os_name())
            .collect::<Vec<_>>()
    };
    assert!(shm_entries(false).contains(&marker_name));
    assert_eq!(shm_entries(true), Vec::<std::ffi::OsString>::new());
}

/// Backing up `/` itself walks its entries (it used to back up nothing: the
/// root was a selected path with no name). Everything but `/etc` is left out,
/// and what is in `/etc`, so the walk stays small.
#[test]
fn backing_up_the_root_directory_walks_its_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    new_repo(&repo_dir);
    let repo = indexed(&repo_dir);
    let opts = BackupOptions {
        paths: vec![PathBuf::from("/")],
        excludes: ExcludeOptions {
            exclude: vec!["/[!e]*".into(), "/e[!t]*".into(), "/etc/*".into()],
            ..Default::default()
        },
        one_file_system: true,
        ..Default::default()
    };
    let out = archiver::backup(&repo, &opts, &NoProgress).unwrap();
    assert_eq!(out.snapshot.paths, vec!["/".to_string()]);
    let repo = indexed(&repo_dir);
    let root = repo.load_tree(&out.snapshot.tree).unwrap();
    let names: Vec<_> = root.nodes.iter().map(|n| n.os_name()).collect();
    assert!(names.contains(&"etc".into()), "{names:?}");
    assert!(!names.contains(&"usr".into()), "{names:?}");
    let etc = repo
        .load_tree(&root.find(OsStr::new("etc")).unwrap().subtree.unwrap())
        .unwrap();
    assert!(etc.nodes.is_empty());
}

/// A listing dropped before (or without) its backup stops its lister thread,
/// even when the lister is blocked on a full channel (more entries than it
/// lists ahead).
#[test]
fn a_listing_dropped_unread_stops_its_lister() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20_000 {
        fs::File::create(src.join(format!("f{i}"))).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let listing = archiver::Listing::start(&[src], &ExcludeOptions::default(), false).unwrap();
        // Let the lister fill its channel and block.
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(listing);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("dropping the listing returns");
}

#[test]
fn stream_snapshots_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    new_repo(tmp.path());
    let repo = indexed(tmp.path());
    let dump = pseudo_random(900_000, 5);
    let mut w = StreamSnapshotWriter::new(
        &repo,
        StreamBackupOptions {
            source: "postgres".into(),
            ..Default::default()
        },
        &NoProgress,
    );
    w.add_stream("db.sql", &mut &dump[..]).unwrap();
    w.add_bytes("metadata.json", br#"{"rows":1}"#).unwrap();
    let nested = pseudo_random(700_000, 6);
    w.add_stream("db/shop.sql", &mut &nested[..]).unwrap();
    w.add_bytes("db/more/x.sql", b"x").unwrap();
    for bad in ["db.sql", "db", "db/shop.sql/x", "../x", "a//b", "./a", ""] {
        assert!(
            w.add_bytes(bad, b"dup").is_err(),
            "{bad:?}: duplicate, clashing or unsafe names are refused"
        );
    }
    let out = w
        .finish(Some(serde_json::json!({"engine": "postgres"})))
        .unwrap();
    let repo = indexed(tmp.path());
    let snap = repo.load_snapshot(&out.snapshot_id.unwrap()).unwrap();
    assert_eq!(snap.source, "postgres");
    assert_eq!(snap.metadata.unwrap()["engine"], "postgres");
    let node = walk::find_node(&repo, &out.snapshot_id.unwrap(), snap.tree, "/db.sql").unwrap();
    let mut back = Vec::new();
    walk::ContentReader::new(&repo, &node)
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == dump);
    let node = walk::find_node(&repo, &out.snapshot_id.unwrap(), snap.tree, "db/shop.sql").unwrap();
    let mut back = Vec::new();
    walk::ContentReader::new(&repo, &node)
        .read_to_end(&mut back)
        .unwrap();
    assert!(
        back == nested,
        "a nested multi-blob stream reads back exactly"
    );
    assert!(node.content.as_ref().unwrap().len() > 3);
    let x = walk::find_node(&repo, &out.snapshot_id.unwrap(), snap.tree, "db/more/x.sql").unwrap();
    assert_eq!(x.size, 1);
}

#[test]
fn a_stream_stored_in_parts_reads_back_as_their_concatenation() {
    let tmp = tempfile::tempdir().unwrap();
    new_repo(tmp.path());
    let repo = indexed(tmp.path());
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| pseudo_random(700_000 + i * 1000, 20 + i as u64))
        .collect();
    let whole: Vec<u8> = parts.concat();
    let mut w = StreamSnapshotWriter::new(&repo, StreamBackupOptions::default(), &NoProgress);
    for (i, part) in parts.iter().enumerate() {
        w.add_stream(&format!("alone/{i}"), &mut &part[..]).unwrap();
    }

    /// A part whose reader fails after `0` bytes, as a dropped connection would.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let failing: Vec<Box<dyn Read + Send>> = vec![
        Box::new(&parts[0][..]),
        Box::new(Failing(300_000)),
        Box::new(&parts[2][..]),
    ];
    let err = w.add_stream_parts("db/big.sql", failing).unwrap_err();
    assert!(
        err.to_string().contains("db/big.sql") && err.to_string().contains("connection reset"),
        "the error names the stream and the part's failure: {err}"
    );

    // A failing part stops the others at their next read: a 1 GiB part reads far less.
    let read = Arc::new(AtomicUsize::new(0));
    struct Counting(Arc<AtomicUsize>, std::io::Take<std::io::Repeat>);
    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.read(buf)?;
            self.0.fetch_add(n, Ordering::Relaxed);
            Ok(n)
        }
    }
    let long = Counting(read.clone(), std::io::repeat(1).take(1 << 30));
    let stopped: Vec<Box<dyn Read + Send>> = vec![Box::new(Failing(0)), Box::new(long)];
    let err = w.add_stream_parts("db/big.sql", stopped).unwrap_err();
    assert!(
        err.to_string().contains("connection reset"),
        "the failure is reported, not the cancellation it caused: {err}"
    );
    assert!(
        read.load(Ordering::Relaxed) < 256 << 20,
        "the other part stopped early: {} bytes read",
        read.load(Ordering::Relaxed)
    );

    // A part that was read whole before another failed counts no bytes read (the
    // summary below): the failing part waits until the other has seen its end.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    struct Ending<'a>(&'a [u8], Arc<std::sync::atomic::AtomicBool>);
    impl Read for Ending<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            if n == 0 {
                self.1.store(true, Ordering::SeqCst);
            }
            Ok(n)
        }
    }
    struct FailingAfter(Arc<std::sync::atomic::AtomicBool>);
    impl Read for FailingAfter {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            while !self.0.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(std::io::Error::other("connection reset"))
        }
    }
    let late: Vec<Box<dyn Read + Send>> = vec![
        Box::new(Ending(&parts[0], done.clone())),
        Box::new(FailingAfter(done)),
    ];
    assert!(w.add_stream_parts("db/big.sql", late).is_err());

    // Nothing was added for the failed name: it can be stored again.
    let readers: Vec<Box<dyn Read + Send>> = parts
        .iter()
        .map(|p| Box::new(&p[..]) as Box<dyn Read + Send>)
        .collect();
    let size = w.add_stream_parts("db/big.sql", readers).unwrap();
    assert_eq!(size, whole.len() as u64);
    assert_eq!(w.add_stream_parts("db/empty.sql", Vec::new()).unwrap(), 0);
    assert!(
        w.add_stream_parts("db/big.sql", Vec::new()).is_err(),
        "names are checked as for add_stream"
    );
    let out = w.finish(None).unwrap();
    let summary = out.snapshot.summary.as_ref().unwrap();
    assert_eq!(summary.total_bytes, 2 * whole.len() as u64);
    assert_eq!(
        summary.bytes_read, summary.total_bytes,
        "failed streams count no bytes read"
    );

    let repo = indexed(tmp.path());
    let id = out.snapshot_id.unwrap();
    let snap = repo.load_snapshot(&id).unwrap();
    let node = walk::find_node(&repo, &id, snap.tree, "db/big.sql").unwrap();
    assert_eq!(node.size, whole.len() as u64);
    let mut back = Vec::new();
    walk::ContentReader::new(&repo, &node)
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == whole, "the parts read back joined, in their order");
    let alone: Vec<_> = (0..parts.len())
        .flat_map(|i| {
            let n = walk::find_node(&repo, &id, snap.tree, &format!("alone/{i}")).unwrap();
            n.content.unwrap()
        })
        .collect();
    assert_eq!(
        node.content.as_ref().unwrap(),
        &alone,
        "each part is chunked as if stored alone: its first chunk starts at its start"
    );
    let empty = walk::find_node(&repo, &id, snap.tree, "db/empty.sql").unwrap();
    assert_eq!(
        (empty.size, empty.content.as_ref().map(Vec::len)),
        (0, Some(0))
    );
    let report = check::check(&repo, &CheckOptions::default(), &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

#[test]
fn restore_refuses_to_overwrite_and_skips_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, target) = (
        tmp.path().join("src"),
        tmp.path().join("repo"),
        tmp.path().join("t"),
    );
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"aaa").unwrap();
    fs::write(src.join("b"), b"bbb").unwrap();
    new_repo(&repo);
    let out = backup(&repo, std::slice::from_ref(&src));
    restore_all(&repo, &out, &target);
    let back = restored_root(&target, &src);
    fs::write(back.join("b"), b"local change").unwrap();
    let r = indexed(&repo);
    let err = restore_snapshot(
        &r,
        &out,
        RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::WouldOverwrite(_)), "{err}");
    assert_eq!(
        fs::read(back.join("b")).unwrap(),
        b"local change",
        "a refused restore writes nothing"
    );
    let s = restore_snapshot(
        &r,
        &out,
        RestoreOptions {
            target: target.clone(),
            overwrite: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((s.files, s.files_skipped_identical), (1, 1));
    assert_eq!(fs::read(back.join("b")).unwrap(), b"bbb");
    // Include a single file: only it (and its parent dirs) come back.
    let t2 = tmp.path().join("t2");
    let s = restore_snapshot(
        &r,
        &out,
        RestoreOptions {
            target: t2.clone(),
            include: vec!["a".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.files, 1);
    assert!(restored_root(&t2, &src).join("a").exists());
    assert!(!restored_root(&t2, &src).join("b").exists());
    // Dry run writes nothing.
    let t3 = tmp.path().join("t3");
    let s = restore_snapshot(
        &r,
        &out,
        RestoreOptions {
            target: t3.clone(),
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.files, 2);
    assert!(!t3.exists());
}

#[test]
fn a_content_blob_the_index_lacks_fails_the_restore_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/lost.bin"), pseudo_random(300_000, 11)).unwrap();
    fs::write(src.join("kept.txt"), b"kept").unwrap();
    new_repo(&repo);
    let out = backup(&repo, std::slice::from_ref(&src));
    // Delete the data packs of lost.bin and rebuild the index from what is left:
    // the trees are still there, the file's blobs are listed nowhere.
    let r = indexed(&repo);
    let lost = walk::find_node(
        &r,
        &out.snapshot_id.unwrap(),
        out.snapshot.tree,
        &src.join("sub/lost.bin").to_string_lossy(),
    )
    .unwrap();
    let deleted: std::collections::HashSet<_> = lost
        .content
        .iter()
        .flatten()
        .map(|id| r.index().get(id).unwrap().pack)
        .collect();
    for pack in &deleted {
        r.storage()
            .delete(&lifeboat_core::pack::pack_key(pack))
            .unwrap();
    }
    lifeboat_core::repair::repair_index(r.repository(), false).unwrap();
    let before = r;
    let r = indexed(&repo);
    // A new target (the plan is built beside the walk) and an existing one (after it).
    let existing = tmp.path().join("existing");
    fs::create_dir_all(&existing).unwrap();
    for target in [tmp.path().join("new"), existing] {
        let err = restore_snapshot(
            &r,
            &out,
            RestoreOptions {
                target: target.clone(),
                ..Default::default()
            },
        )
        .unwrap_err();
        match &err {
            Error::BlobNotIndexed(hex) => {
                let id = hex.parse().unwrap();
                assert!(r.index().get(&id).is_none(), "{err}");
                let was = before.index().get(&id).expect("a blob of the snapshot");
                assert!(
                    deleted.contains(&was.pack),
                    "names a blob of a deleted pack: {err}"
                );
            }
            other => panic!("expected BlobNotIndexed, got {other}"),
        }
        assert!(
            !restored_root(&target, &src).join("kept.txt").exists(),
            "no file is written"
        );
    }
    assert!(
        !tmp.path().join("new").exists(),
        "a new target is not even created"
    );
}

#[test]
fn a_target_that_appears_during_the_walk_is_refused_not_written_into() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/a"), b"aaa").unwrap();
    fs::write(src.join("theirs"), b"the snapshot's").unwrap();
    new_repo(&repo);
    let out = backup(&repo, std::slice::from_ref(&src));
    let target = tmp.path().join("t");
    // Once armed, the storage's first read makes the target (with a file in it).
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trap = Hooked::storage(&repo, {
        let (armed, dir) = (armed.clone(), target.clone());
        move |op, _| {
            if op == "get" && armed.swap(false, Ordering::SeqCst) {
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("theirs"), b"not the restore's").unwrap();
            }
            Ok(())
        }
    });
    let r = Repository::open(trap, PW).unwrap().into_indexed().unwrap();
    // Absent when the restore starts; there by the time the walk reads its first tree.
    armed.store(true, Ordering::SeqCst);
    let err = restore_snapshot(
        &r,
        &out,
        RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(!armed.load(Ordering::SeqCst), "the walk read the storage");
    assert!(
        matches!(&err, Error::WouldOverwrite(p) if p == &target),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![OsStr::new("theirs").to_os_string()],
        "nothing was added"
    );
    assert_eq!(
        fs::read(target.join("theirs")).unwrap(),
        b"not the restore's"
    );
}

#[test]
fn a_directory_in_the_way_of_a_symlink_fails_the_restore_after_the_content_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, target) = (
        tmp.path().join("src"),
        tmp.path().join("repo"),
        tmp.path().join("t"),
    );
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), pseudo_random(1_500_000, 3)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    std::os::unix::fs::symlink("small", src.join("link")).unwrap();
    new_repo(&repo);
    let out = backup(&repo, std::slice::from_ref(&src));
    restore_all(&repo, &out, &target);
    let back = restored_root(&target, &src);
    // Locally: the files changed, and a directory now sits where the link was.
    fs::write(back.join("big.bin"), b"changed").unwrap();
    fs::write(back.join("small"), b"changed too").unwrap();
    fs::remove_file(back.join("link")).unwrap();
    fs::create_dir(back.join("link")).unwrap();
    fs::write(back.join("link/keep"), b"not ours to delete").unwrap();
    let r = indexed(&repo);
    let err = restore_snapshot(
        &r,
        &out,
        RestoreOptions {
            target: target.clone(),
            overwrite: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    match &err {
        Error::WouldOverwrite(p) => assert_eq!(p, &back.join("link")),
        other => panic!("expected WouldOverwrite naming the link, got {other}"),
    }
    // The directory is left alone, and the files were still restored whole.
    assert_eq!(
        fs::read(back.join("link/keep")).unwrap(),
        b"not ours to delete"
    );
    assert_eq!(
        fs::read(back.join("big.bin")).unwrap(),
        pseudo_random(1_500_000, 3)
    );
    assert_eq!(fs::read(back.join("small")).unwrap(), b"small");
}

#[test]
fn damaged_pack_is_reported_with_the_affected_snapshots_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let (s1, s2) = (tmp.path().join("one"), tmp.path().join("two"));
    fs::create_dir_all(&s1).unwrap();
    fs::create_dir_all(&s2).unwrap();
    fs::write(s1.join("victim.bin"), pseudo_random(300_000, 1)).unwrap();
    fs::write(s2.join("bystander.bin"), pseudo_random(300_000, 2)).unwrap();
    new_repo(&repo_dir);
    let hit = backup(&repo_dir, std::slice::from_ref(&s1));
    let safe = backup(&repo_dir, std::slice::from_ref(&s2));
    let repo = indexed(&repo_dir);
    // The data pack holding the victim's first chunk.
    let node = walk::find_node(
        &repo,
        &hit.snapshot_id.unwrap(),
        hit.snapshot.tree,
        &format!("{}/victim.bin", s1.display()),
    )
    .unwrap();
    let loc = repo.index().get(&node.content.unwrap()[0]).unwrap();
    let hex = loc.pack.to_hex();
    let pack_path = repo_dir.join("data").join(&hex[..2]).join(&hex);
    let mut bytes = fs::read(&pack_path).unwrap();
    bytes[loc.offset as usize + 40] ^= 0x01;
    fs::write(&pack_path, bytes).unwrap();

    let plain = check::check(&repo, &CheckOptions::default(), &NoProgress).unwrap();
    assert!(
        plain.ok(),
        "a structural check does not read data: {:?}",
        plain.errors
    );
    let deep = check::check(
        &repo,
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )
    .unwrap();
    assert!(!deep.ok());
    assert!(
        deep.errors.iter().any(|e| e.contains(&hex)),
        "errors name the pack: {:?}",
        deep.errors
    );
    assert_eq!(
        deep.affected_snapshots.len(),
        1,
        "{:?}",
        deep.affected_snapshots
    );
    let a = &deep.affected_snapshots[0];
    assert_eq!(a.snapshot, hit.snapshot_id.unwrap().to_hex());
    assert_eq!(a.paths, vec![format!("{}/victim.bin", s1.display())]);

    // The other snapshot still restores; the damaged one fails naming the blob.
    let t = tmp.path().join("t");
    restore_snapshot(
        &repo,
        &safe,
        RestoreOptions {
            target: t.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let err = restore_snapshot(
        &repo,
        &hit,
        RestoreOptions {
            target: tmp.path().join("t2"),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
    assert!(err.to_string().contains(&hex), "{err}");
}

#[test]
fn wrong_password_writes_nothing_and_init_refuses_an_existing_repository() {
    let tmp = tempfile::tempdir().unwrap();
    new_repo(tmp.path());
    let listing = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir(p);
        v.sort();
        v
    };
    let before = listing(tmp.path());
    let storage: DynStorage = Arc::new(LocalStorage::new(tmp.path()));
    assert!(matches!(
        Repository::open(storage.clone(), "nope"),
        Err(Error::WrongPassword)
    ));
    assert!(matches!(
        Repository::init(storage.clone(), PW, &init_opts()),
        Err(Error::RepositoryExists { .. })
    ));
    assert_eq!(before, listing(tmp.path()));
    let empty: DynStorage = Arc::new(LocalStorage::new(tmp.path().join("nothing")));
    assert!(matches!(
        Repository::open(empty, PW),
        Err(Error::NoRepository { .. })
    ));
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn key_slots_add_remove_and_passwd() {
    let tmp = tempfile::tempdir().unwrap();
    new_repo(tmp.path());
    let storage: DynStorage = Arc::new(LocalStorage::new(tmp.path()));
    let kdf = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let mut repo = Repository::open(storage.clone(), PW).unwrap();
    let second = repo.add_key("second password", kdf).unwrap();
    assert_eq!(repo.key_slots().unwrap().len(), 2);
    assert!(
        repo.remove_key(repo.key_id()).is_err(),
        "cannot remove the key in use"
    );
    let other = Repository::open(storage.clone(), "second password").unwrap();
    assert_eq!(other.config().id, repo.config().id);
    repo.change_password("third", kdf).unwrap();
    assert!(
        Repository::open(storage.clone(), PW).is_err(),
        "old password no longer opens"
    );
    Repository::open(storage.clone(), "third").unwrap();
    repo.remove_key(&second[..8]).unwrap();
    assert!(Repository::open(storage.clone(), "second password").is_err());
    assert!(repo.remove_key("ffff").is_err());
}

/// A local repository's storage that runs a test's hook, given the operation
/// (`"put"`, `"get"`) and the key, before each put and get: the hook fails the
/// call or changes the world around it.
struct Hooked {
    inner: LocalStorage,
    hook: Box<dyn Fn(&str, &str) -> StorageResult<()> + Send + Sync>,
}

impl Hooked {
    fn storage(
        dir: &Path,
        hook: impl Fn(&str, &str) -> StorageResult<()> + Send + Sync + 'static,
    ) -> DynStorage {
        Arc::new(Hooked {
            inner: LocalStorage::new(dir).without_sync(),
            hook: Box::new(hook),
        })
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Storage for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, data: Bytes, o: &PutOptions) -> StorageResult<()> {
        (self.hook)("put", key)?;
        self.inner.put(key, data, o)
    }
    fn get(&self, key: &str, r: Option<std::ops::Range<u64>>) -> StorageResult<Bytes> {
        (self.hook)("get", key)?;
        self.inner.get(key, r)
    }
    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key)
    }
}

#[test]
fn interrupted_backup_leaves_a_valid_repository_and_a_rerun_reuses_uploaded_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo_dir) = (tmp.path().join("src"), tmp.path().join("repo"));
    fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        fs::write(
            src.join(format!("f{i:02}")),
            pseudo_random(200_000, 100 + i),
        )
        .unwrap();
    }
    new_repo(&repo_dir);
    // Every `put` after the first 12 data packs fails, like a backup killed or cut
    // off halfway.
    let puts = AtomicUsize::new(0);
    let failing = Hooked::storage(&repo_dir, move |op, key| {
        if op == "put" && key.starts_with("data/") && puts.fetch_add(1, Ordering::SeqCst) >= 12 {
            return Err(StorageError::Backend {
                key: key.into(),
                location: "test".into(),
                message: "connection lost".into(),
                retryable: false,
            });
        }
        Ok(())
    });
    let repo = Repository::open(failing, PW)
        .unwrap()
        .into_indexed()
        .unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        writer: WriterOptions {
            checkpoint_packs: 2,
            connections: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = archiver::backup(&repo, &opts, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("connection lost"), "{err}");
    let repo = indexed(&repo_dir);
    assert!(repo.snapshots().unwrap().is_empty());
    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    assert!(
        !repo.index().is_empty(),
        "checkpointed index files survive the interruption"
    );
    let rerun = archiver::backup(
        &repo,
        &BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let s = rerun.snapshot.summary.unwrap();
    assert!(
        s.data_added < 8_000_000 - 1_000_000,
        "a rerun reuses what was uploaded: added {}",
        s.data_added
    );
    let report = check::check(
        &indexed(&repo_dir),
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}
