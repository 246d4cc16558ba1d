//! Restoring a snapshot (or part of it) into a directory.
//!
//! 1. **Plan**: walk the snapshot's trees, apply include/exclude patterns, and
//!    check the target: existing files are refused unless `overwrite`, and with
//!    `overwrite` files whose content already matches chunk for chunk are
//!    skipped. Nothing is written before the whole plan is known.
//! 2. **Content, read by read**: while the directories are made, every needed blob
//!    is mapped to the files that use it, grouped by pack, and each
//!    pack cut into ranged reads (adjacent blobs coalesced; 8 MiB from remote
//!    storage, 2 MiB from a local repository: [`ReadLimits`]), which
//!    a pool of threads takes costliest first (so the last to finish are small),
//!    and each blob is written with positional writes into every file
//!    (and offset) that uses it — files are written out of order. All-zero
//!    blobs are not written: the file was extended with `set_len`, so holes stay
//!    holes (sparse files stay sparse). The writer of a file's last chunk
//!    finishes it through its open descriptor: owner (when running as root),
//!    mode, xattrs, mtime. A file of one chunk (most files) is created, written
//!    and finished by that chunk's writer: one open and no path lookups after it.
//!    Symlinks, FIFOs and devices are made on the same pool beside the
//!    content (they need only their directory), with their metadata.
//! 3. **Metadata**: hard links; then the same metadata by path for files no
//!    writer finished; directories last, deepest first, so their mtimes
//!    survive.
//! 4. **Verify** (optional): re-read every restored file and re-hash each chunk.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use base64::Engine as _;
use globset::GlobSet;
use parking_lot::Mutex;
use rayon::prelude::*;
use serde::Serialize;

use crate::blob::Id;
use crate::error::{Error, Result};
use crate::index::BlobLocation;
use crate::pack::{coalesced_reads, pack_key};
use crate::progress::Progress;
use crate::repository::{BlobAt, BlobBuffers, IndexedRepository};
use crate::tree::{Node, NodeKind};
use crate::walk;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (default `/`: everything).
    pub subpath: Option<String>,
    /// Only restore entries matching one of these patterns (and their contents).
    pub include: Vec<String>,
    /// Leave out entries matching these patterns (and their contents).
    pub exclude: Vec<String>,
    pub overwrite: bool,
    pub verify: bool,
    pub dry_run: bool,
    /// Restore owners (uid/gid); defaults to true when running as root.
    pub owners: Option<bool>,
    /// Parallel pack reads (0: 4).
    pub connections: usize,
    /// How large one ranged read of a pack may be (default: [`ReadLimits::REMOTE`];
    /// the CLI sets [`ReadLimits::LOCAL`] for a local repository).
    pub reads: ReadLimits,
}

/// How large one ranged read of a pack may be. Each read is one request to the
/// storage, and each restore thread holds one (and decodes its blobs) at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes of coalesced blobs in a read, which may run past this by one blob
    /// and a gap of up to 256 KiB; a read of one blob is as long as that blob.
    pub max_bytes: u64,
    /// Blobs of a read (0: no limit).
    pub max_blobs: usize,
}

impl ReadLimits {
    /// Storage where a read is a request: 8 MiB keeps 4 connections at 32 MiB in
    /// flight whatever the pack size (a default pack, 16 MiB, is two reads), and
    /// any number of blobs.
    pub const REMOTE: ReadLimits = ReadLimits {
        max_bytes: 8 << 20,
        max_blobs: 0,
    };
    /// A local repository, where a read is a system call and smaller reads cost
    /// nothing: 2 MiB and 128 blobs.
    /// * 128 blobs: a read of hundreds of small files, left last, kept one thread
    ///   busy while the other cores idled.
    /// * 2 MiB: the bench restore's peak RSS fell from 152–161 MB (8 MiB reads) to
    ///   125–134 MB (4 MiB: 127–141 MB) at the same speed (docs/PERFORMANCE.md,
    ///   fourteenth measurement).
    pub const LOCAL: ReadLimits = ReadLimits {
        max_bytes: 2 << 20,
        max_blobs: 128,
    };
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits::REMOTE
    }
}

/// What a restore did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub files_skipped_identical: u64,
    pub bytes_written: u64,
    pub bytes_total: u64,
    pub packs_read: u64,
    pub files_verified: u64,
    /// On a dry run: every path that would be written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn compile(patterns: &[String]) -> Result<(GlobSet, GlobSet)> {
    let p: Vec<(&str, bool)> = patterns.iter().map(|p| (p.as_str(), false)).collect();
    crate::archiver::compile_patterns(&p, "pattern")
}

fn matches(sets: &(GlobSet, GlobSet), snap_path: &Path) -> bool {
    snap_path.file_name().is_some_and(|n| sets.0.is_match(n)) || sets.1.is_match(snap_path)
}

struct Item {
    /// Path relative to the restore target.
    rel: PathBuf,
    node: Node,
}

struct FileTarget {
    path: PathBuf,
    size: u64,
    /// The entry in `items` this file restores.
    item: usize,
    /// Content chunks (uses of blobs) this file has.
    chunks: usize,
    /// Chunks still to write. The writer that takes it to 0 finishes the file
    /// (owner, mode, xattrs, mtime) through its open descriptor.
    remaining: AtomicUsize,
}

/// What a content writer needs to finish a file after its last chunk.
struct Finish<'a> {
    items: &'a [Item],
    owners: bool,
    /// The target did not exist: nothing can be in the way of a new file.
    fresh: bool,
    warnings: &'a Mutex<Vec<String>>,
}

/// Restore `root` (a snapshot's root tree) into `opts.target`.
///
/// # Errors
/// [`Error::WouldOverwrite`] before anything is written if an existing file is
/// in the way without `overwrite`; repository errors naming the damaged blob or
/// pack; I/O errors naming the target path.
pub fn restore(
    repo: &IndexedRepository,
    snapshot: &Id,
    root: Id,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    let start = walk::find_node(repo, snapshot, root, opts.subpath.as_deref().unwrap_or("/"))?;
    let include = compile(&opts.include)?;
    let exclude = compile(&opts.exclude)?;
    let snap_base = PathBuf::from("/").join(
        opts.subpath
            .as_deref()
            .unwrap_or("/")
            .trim_start_matches('/'),
    );

    // Into a target that does not exist yet nothing can be in the way: skip
    // an lstat per entry.
    let fresh = matches!(
        std::fs::symlink_metadata(&opts.target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );

    // 1. Plan.
    let mut items: Vec<Item> = Vec::new();
    // The content plan, when it was built beside the walk.
    let mut early: Option<Planner> = None;
    if start.kind != NodeKind::Dir {
        items.push(Item {
            rel: PathBuf::from(start.os_name()),
            node: start.clone(),
        });
    } else if let Some(sub) = start.subtree {
        let patterns = !opts.include.is_empty() || !opts.exclude.is_empty();
        // In a new target, without include patterns (which drop entries only after
        // the walk), every file the walk finds is written: another thread maps the
        // files to their blobs while the walk goes on, instead of after it (the
        // walk's thread waits on tree decoding about half the time).
        let stream = fresh && opts.include.is_empty() && !opts.dry_run;
        let mut included_flags: Vec<bool> = Vec::new();
        // Directories above the current entry, with whether they are included.
        let mut stack: Vec<(PathBuf, bool)> = Vec::new();
        let walked = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<Item>>();
            let planner = stream.then(|| scope.spawn(move || Planner::fed(rx, repo, &opts.target)));
            // Sent in batches: one wake-up of the planner per entry cost more than
            // the planning.
            let mut batch: Vec<Item> = Vec::new();
            let walked = walk::walk(repo, &sub, Path::new(""), &mut |rel, node| {
                let dir = node.kind == NodeKind::Dir;
                // Without patterns every entry is kept: no path is matched or joined (a
                // third of the walk's thread when it was done for every entry).
                if patterns {
                    while stack.last().is_some_and(|(d, _)| !rel.starts_with(d)) {
                        stack.pop();
                    }
                    let snap_path = snap_base.join(&rel);
                    if !opts.exclude.is_empty() && matches(&exclude, &snap_path) {
                        return Ok(false);
                    }
                    let inherited = stack.last().map_or(opts.include.is_empty(), |d| d.1);
                    let included = inherited || matches(&include, &snap_path);
                    included_flags.push(included);
                    if dir {
                        stack.push((rel.clone(), included));
                    }
                }
                if stream {
                    batch.push(Item { rel, node });
                    if batch.len() == 512 {
                        // The planner only stops early by panicking, which the join reports.
                        let _ = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(512)));
                    }
                } else {
                    items.push(Item { rel, node });
                }
                Ok(dir)
            });
            let _ = tx.send(batch);
            drop(tx);
            if let Some(planner) = planner {
                let (streamed, plan) = planner.join().expect("the restore planner panicked");
                items = streamed;
                // A walk error comes first: the plan stopped where the walk did.
                walked?;
                early = Some(plan?);
                return Ok(());
            }
            walked
        });
        walked?;
        if !opts.include.is_empty() {
            // Keep included entries and the directories leading to them.
            let mut needed: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
            for (it, inc) in items.iter().zip(&included_flags) {
                if *inc {
                    needed.extend(it.rel.ancestors().skip(1).map(Path::to_path_buf));
                }
            }
            let mut flags = included_flags.into_iter();
            items.retain(|it| flags.next().unwrap_or(false) || needed.contains(&it.rel));
        }
    }

    let mut summary = RestoreSummary::default();
    let mut to_write: Vec<usize> = Vec::new();
    let existing = |it: &Item| {
        if fresh {
            None
        } else {
            std::fs::symlink_metadata(opts.target.join(&it.rel)).ok()
        }
    };
    let clear = |path: &Path| make_way(fresh, path);
    for (i, it) in items.iter().enumerate() {
        let path = || opts.target.join(&it.rel);
        match it.node.kind {
            NodeKind::Dir => summary.dirs += 1,
            NodeKind::File => {
                summary.bytes_total += it.node.size;
                match existing(it) {
                    Some(_) if !opts.overwrite => return Err(Error::WouldOverwrite(path())),
                    Some(m)
                        if m.is_file()
                            && m.len() == it.node.size
                            && identical(repo, &path(), &it.node) =>
                    {
                        summary.files_skipped_identical += 1;
                        continue;
                    }
                    _ => {}
                }
                to_write.push(i);
            }
            _ => {
                if existing(it).is_some() && !opts.overwrite {
                    return Err(Error::WouldOverwrite(path()));
                }
            }
        }
        if opts.dry_run {
            summary.planned.push(it.rel.to_string_lossy().into_owned());
        }
    }
    if opts.dry_run {
        summary.files = to_write.len() as u64;
        return Ok(summary);
    }

    // 2. Directories (and the blob map beside them), then file content read by read,
    //    on a thread pool.
    let threads = if opts.connections == 0 {
        4
    } else {
        opts.connections
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Other(format!("thread pool: {e}")))?;
    if fresh {
        // Checked before the walk: a target that appeared since must not be written
        // into unchecked (nothing in it was looked at for conflicts).
        if let Some(parent) = opts.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::create_dir(&opts.target).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::WouldOverwrite(opts.target.clone()),
            _ => Error::io(&opts.target, e),
        })?;
    } else {
        std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    }
    let owners = opts
        .owners
        .unwrap_or_else(|| nix::unistd::geteuid().is_root());
    // Directories one depth at a time (each level's parents exist), on the pool, while
    // another pool thread maps every blob to the files (and offsets) that use it: the map
    // needs the index (and storage only for a blob the index lacks, an error), the
    // directories only the file system.
    let dir_levels = dir_levels(&items);
    let make_dirs = || {
        dir_levels.iter().try_for_each(|level| {
            level.par_iter().try_for_each(|it| {
                let p = opts.target.join(&it.rel);
                std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))
            })
        })
    };
    let (made, plan) = pool.install(|| {
        rayon::join(make_dirs, || match early {
            Some(planner) => Ok(planner.finish(opts.reads)),
            None => content_plan(repo, &items, &to_write, opts),
        })
    });
    made?;
    let ContentPlan {
        hardlinks,
        targets,
        uses,
        units,
        packs,
    } = plan?;
    summary.files = targets.len() as u64;
    summary.packs_read = packs;
    let warnings: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let finish = Finish {
        items: &items,
        owners,
        fresh,
        warnings: &warnings,
    };
    // Files of one chunk (most of them) are created by the writer of that
    // chunk, which writes and finishes them through one descriptor. The pool
    // creates the others first: empty files are finished at once, files of
    // several chunks are made at their final size (holes stay holes) and
    // finished by whichever writer writes their last chunk.
    pool.install(|| {
        targets
            .par_iter()
            .filter(|t| t.chunks != 1)
            .try_for_each(|t| {
                clear(&t.path)?;
                let f = create_empty(&t.path, t.size)?;
                if t.chunks == 0 {
                    finish.file(&f, t);
                }
                Ok::<_, Error>(())
            })
    })?;
    // Symlinks, FIFOs and devices need only their directory: they are made
    // (and get their metadata) on the pool beside the content, not after it.
    let specials: Vec<&Item> = items
        .iter()
        .filter(|it| !matches!(it.node.kind, NodeKind::Dir | NodeKind::File))
        .collect();
    let links = AtomicU64::new(0);
    let special = |it: &Item| -> Result<()> {
        let path = opts.target.join(&it.rel);
        let mode = || nix::sys::stat::Mode::from_bits_truncate(it.node.mode & 0o7777);
        match it.node.kind {
            NodeKind::Symlink => {
                clear(&path)?;
                let target = it.node.os_link_target().unwrap_or_default();
                std::os::unix::fs::symlink(&target, &path).map_err(|e| Error::io(&path, e))?;
                links.fetch_add(1, Ordering::Relaxed);
            }
            NodeKind::Fifo => {
                clear(&path)?;
                nix::unistd::mkfifo(&path, mode()).map_err(|e| Error::io(&path, e.into()))?;
            }
            NodeKind::Chardev | NodeKind::Blockdev if !owners => {
                warnings.lock().push(format!(
                    "{}: device files are only recreated as root",
                    path.display()
                ));
                return Ok(());
            }
            NodeKind::Chardev | NodeKind::Blockdev => {
                clear(&path)?;
                let kind = if it.node.kind == NodeKind::Chardev {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(&path, kind, mode(), it.node.rdev)
                    .map_err(|e| Error::io(&path, e.into()))?;
            }
            NodeKind::Socket => {
                warnings
                    .lock()
                    .push(format!("{}: sockets are not restored", path.display()));
                return Ok(());
            }
            NodeKind::Dir | NodeKind::File => return Ok(()),
        }
        let mut w = Vec::new();
        apply_metadata(At::Path, &path, &it.node, owners, &mut w);
        if !w.is_empty() {
            warnings.lock().extend(w);
        }
        Ok(())
    };
    let written = AtomicU64::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    // Kept apart: a special that cannot be made (with `overwrite`, a directory
    // in the way of a symlink) must not stop the content, which is written
    // whole before the error is reported, as when specials came last.
    let special_error: Mutex<Option<Error>> = Mutex::new(None);
    // Each pool thread takes the next read, largest first: the last reads to
    // finish are small ones, not a whole pack that one thread decompresses
    // while the other core idles.
    let next = AtomicUsize::new(0);
    let out = Output {
        uses: &uses,
        targets: &targets,
        finish: &finish,
        written: &written,
    };
    pool.scope(|s| {
        for _ in 0..threads {
            s.spawn(|_| {
                while let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if first_error.lock().is_some() {
                        return;
                    }
                    if let Err(e) = restore_read(repo, unit, &out, progress) {
                        first_error.lock().get_or_insert(e);
                    }
                }
            });
        }
        s.spawn(|_| {
            specials.par_iter().for_each(|it| {
                if first_error.lock().is_some() || special_error.lock().is_some() {
                    return;
                }
                if let Err(e) = special(it) {
                    special_error.lock().get_or_insert(e);
                }
            })
        });
    });
    if let Some(e) = first_error.into_inner().or(special_error.into_inner()) {
        return Err(e);
    }
    summary.bytes_written = written.load(Ordering::Relaxed);
    summary.links += links.into_inner();
    // Collected from the pool in no particular order.
    let mut collected = warnings.into_inner();
    collected.sort();
    summary.warnings.extend(collected);

    // 3. Hard links, then metadata.
    for (first, link) in &hardlinks {
        clear(link)?;
        std::fs::hard_link(first, link).map_err(|e| Error::io(link, e))?;
        summary.links += 1;
    }
    let mut finished = vec![false; items.len()];
    for t in &targets {
        finished[t.item] = true;
    }
    // Files no writer finished: hard links and files skipped as identical.
    let with_metadata: Vec<&Item> = items
        .iter()
        .zip(&finished)
        .filter(|(it, done)| !**done && it.node.kind == NodeKind::File)
        .map(|(it, _)| it)
        .collect();
    // Metadata on the pool, one batch after another: every file not finished
    // by its writer, then the directories one level at a time, deepest first (a mode without
    // search permission must not lock out a subdirectory still to be done, as
    // non-root; within a level the order does not matter).
    let apply_all = |batch: &[&Item]| -> Vec<String> {
        let per_entry: Vec<Vec<String>> = pool.install(|| {
            batch
                .par_iter()
                .map(|it| {
                    let mut w = Vec::new();
                    let path = opts.target.join(&it.rel);
                    apply_metadata(At::Path, &path, &it.node, owners, &mut w);
                    w
                })
                .collect()
        });
        per_entry.into_iter().flatten().collect()
    };
    summary.warnings.extend(apply_all(&with_metadata));
    for level in dir_levels.iter().rev() {
        summary.warnings.extend(apply_all(level));
    }

    // 4. Verify.
    if opts.verify {
        for &i in &to_write {
            let it = &items[i];
            let path = opts.target.join(&it.rel);
            if !identical(repo, &path, &it.node) {
                return Err(Error::damaged(
                    "restored file",
                    path.display(),
                    "content does not match the snapshot after restore",
                ));
            }
            summary.files_verified += 1;
        }
    }
    // Tens of thousands of paths and nodes: freeing them took the last ~15 ms of
    // a restore of 46k files on one thread (glibc's malloc_consolidate), after
    // everything else was done. Another thread frees them; a process that exits
    // first leaves that to the kernel.
    // A thread the system refuses is no reason to fail a finished restore: the
    // closure, and what it holds, is then freed here.
    let _ =
        std::thread::Builder::new().spawn(move || drop((items, targets, uses, units, hardlinks)));
    Ok(summary)
}

/// What the content phase needs, from the index alone.
struct ContentPlan {
    /// (first path of the inode, another path): made after the content.
    hardlinks: Vec<(PathBuf, PathBuf)>,
    targets: Vec<FileTarget>,
    /// blob id -> (target index, offset)
    uses: HashMap<Id, Vec<(usize, u64)>>,
    /// The ranged reads, costliest first ([`read_units`]).
    units: Vec<ReadUnit>,
    /// Packs read.
    packs: u64,
}

/// Map the files of `to_write` (indices into `items`) to their blobs and the blobs to
/// their packs' reads. The first path of a hard-linked inode (in walk order) gets the
/// content; the others become links to it.
///
/// # Errors
/// [`Error::BlobNotIndexed`] for a content blob the index does not list.
fn content_plan(
    repo: &IndexedRepository,
    items: &[Item],
    to_write: &[usize],
    opts: &RestoreOptions,
) -> Result<ContentPlan> {
    let mut planner = Planner::default();
    for &i in to_write {
        planner.add(repo, i, &items[i], &opts.target)?;
    }
    Ok(planner.finish(opts.reads))
}

/// A [`ContentPlan`] built one file at a time, in walk order.
#[derive(Default)]
struct Planner {
    hardlinks: Vec<(PathBuf, PathBuf)>,
    first_of_inode: HashMap<(u64, u64), PathBuf>,
    targets: Vec<FileTarget>,
    uses: HashMap<Id, Vec<(usize, u64)>>,
    by_pack: HashMap<Id, Vec<(Id, BlobLocation)>>,
}

impl Planner {
    /// Every entry the walk sends, kept in order, and the plan of its files (every one
    /// is written: a new target). After an error the entries are still kept, unplanned,
    /// so that the walk never waits.
    fn fed(
        batches: std::sync::mpsc::Receiver<Vec<Item>>,
        repo: &IndexedRepository,
        target: &Path,
    ) -> (Vec<Item>, Result<Planner>) {
        let mut items: Vec<Item> = Vec::new();
        let mut plan = Ok(Planner::default());
        for it in batches.into_iter().flatten() {
            if let (Ok(p), NodeKind::File) = (&mut plan, it.node.kind) {
                if let Err(e) = p.add(repo, items.len(), &it, target) {
                    plan = Err(e);
                }
            }
            items.push(it);
        }
        (items, plan)
    }

    /// Plan the file `it`, entry `i` of the restore's items.
    fn add(&mut self, repo: &IndexedRepository, i: usize, it: &Item, target: &Path) -> Result<()> {
        let path = target.join(&it.rel);
        if it.node.links > 1 && it.node.inode != 0 {
            let key = (it.node.device_id, it.node.inode);
            if let Some(first) = self.first_of_inode.get(&key) {
                self.hardlinks.push((first.clone(), path));
                return Ok(());
            }
            self.first_of_inode.insert(key, path.clone());
        }
        let t = self.targets.len();
        let mut offset = 0u64;
        let mut chunks = 0;
        for id in it.node.content.iter().flatten() {
            let loc = repo
                .locate(id)
                .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
            let users = self.uses.entry(*id).or_default();
            if users.is_empty() {
                self.by_pack.entry(loc.pack).or_default().push((*id, loc));
            }
            users.push((t, offset));
            offset += loc.raw_length as u64;
            chunks += 1;
        }
        self.targets.push(FileTarget {
            path,
            size: it.node.size,
            item: i,
            chunks,
            remaining: AtomicUsize::new(chunks),
        });
        Ok(())
    }

    /// The plan, its reads within `limits`.
    fn finish(self, limits: ReadLimits) -> ContentPlan {
        let packs = self.by_pack.len() as u64;
        let units = read_units(self.by_pack, &self.uses, limits);
        ContentPlan {
            hardlinks: self.hardlinks,
            targets: self.targets,
            uses: self.uses,
            units,
            packs,
        }
    }
}

/// The directories among `items`, grouped by depth, shallowest first (walk
/// order within a level).
fn dir_levels(items: &[Item]) -> Vec<Vec<&Item>> {
    let mut levels: Vec<Vec<&Item>> = Vec::new();
    for it in items.iter().filter(|it| it.node.kind == NodeKind::Dir) {
        let depth = it.rel.components().count().max(1);
        if levels.len() < depth {
            levels.resize_with(depth, Vec::new);
        }
        levels[depth - 1].push(it);
    }
    levels
}

fn create_empty(path: &Path, size: u64) -> Result<File> {
    let f = create_new(path)?;
    f.set_len(size).map_err(|e| Error::io(path, e))?;
    Ok(f)
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

fn open_for_write(path: &Path) -> Result<File> {
    File::options()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Make way for a new entry at `path`: nothing to do in a target that did not
/// exist (`fresh`), else remove what is there (a directory is refused).
fn make_way(fresh: bool, path: &Path) -> Result<()> {
    if fresh {
        Ok(())
    } else {
        remove_existing(path)
    }
}

fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::WouldOverwrite(path.to_path_buf())),
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path, e)),
        Err(_) => Ok(()),
    }
}

impl Finish<'_> {
    /// Apply a restored file's metadata through `f` (its content is complete).
    fn file(&self, f: &File, t: &FileTarget) {
        let mut w = Vec::new();
        apply_metadata(
            At::File(f),
            &t.path,
            &self.items[t.item].node,
            self.owners,
            &mut w,
        );
        if !w.is_empty() {
            self.warnings.lock().extend(w);
        }
    }
}

/// Where a pack's blobs go.
struct Output<'a> {
    /// blob id -> (target index, offset)
    uses: &'a HashMap<Id, Vec<(usize, u64)>>,
    targets: &'a [FileTarget],
    finish: &'a Finish<'a>,
    written: &'a AtomicU64,
}

/// Adjacent blobs of one pack at most this far apart share a ranged read.
const MAX_GAP: u64 = 256 * 1024;

/// What writing one file (or one more copy of a blob) costs the CPU beyond its
/// bytes, counted in bytes: create or open it, write, owner, mode, times, close
/// (~20-30 µs against ~1 ns per byte decoded and written).
const PER_USE_COST: u64 = 32 << 10;

/// One ranged read of a pack and the blobs it holds: the unit of work of the
/// content phase.
struct ReadUnit {
    pack: Id,
    range: std::ops::Range<u64>,
    /// Sorted by offset, all inside `range`.
    blobs: Vec<(Id, BlobLocation)>,
    /// Bytes to decode plus bytes to write plus [`PER_USE_COST`] per blob
    /// written: what the read costs the CPU.
    cost: u64,
}

/// Every pack's blobs as coalesced ranged reads, the costliest first. Pool
/// threads take them in this order: a pack of text that expands fivefold
/// took one thread a quarter of a second at the end of a restore, with the
/// other core idle (the eleventh measurement in docs/PERFORMANCE.md); cut
/// into reads and taken largest first, the last to finish are small.
fn read_units(
    by_pack: HashMap<Id, Vec<(Id, BlobLocation)>>,
    uses: &HashMap<Id, Vec<(usize, u64)>>,
    limits: ReadLimits,
) -> Vec<ReadUnit> {
    let max_blobs = match limits.max_blobs {
        0 => usize::MAX,
        n => n,
    };
    let mut units = Vec::new();
    for (pack, mut blobs) in by_pack {
        blobs.sort_by_key(|(_, l)| l.offset);
        for (read, _) in coalesced_reads(&blobs, MAX_GAP, limits.max_bytes) {
            for blobs in at_most(&blobs[read], max_blobs) {
                let range = blobs[0].1.offset as u64
                    ..blobs
                        .iter()
                        .map(|(_, l)| l.offset as u64 + l.length as u64)
                        .max()
                        .unwrap_or_default();
                units.push(ReadUnit {
                    pack,
                    range,
                    blobs: blobs.to_vec(),
                    cost: blobs
                        .iter()
                        .map(|(id, l)| use_cost(l, uses[id].len()))
                        .sum(),
                });
            }
        }
    }
    // Ties (and equal costs) in pack and offset order, so the order does not
    // depend on the map's.
    units.sort_by(|a, b| (b.cost, a.pack, a.range.start).cmp(&(a.cost, b.pack, b.range.start)));
    units
}

/// `blobs` (sorted by offset) in runs of at most `max` blobs, except that a
/// compression group's members (one range) stay in one run: split, the group
/// would be read and decoded once per run.
fn at_most(
    blobs: &[(Id, BlobLocation)],
    max: usize,
) -> impl Iterator<Item = &[(Id, BlobLocation)]> + '_ {
    let mut rest = blobs;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = max.min(rest.len());
        while n < rest.len() && rest[n].1.offset == rest[n - 1].1.offset {
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// What decoding a blob and writing it `users` times costs (see [`ReadUnit::cost`]).
fn use_cost(l: &BlobLocation, users: usize) -> u64 {
    u64::from(l.raw_length) * (1 + users as u64) + PER_USE_COST * users as u64
}

/// Read one unit's range and write its blobs out; a file whose last chunk
/// this writes is finished here (see [`FileTarget`]).
fn restore_read(
    repo: &IndexedRepository,
    unit: &ReadUnit,
    out: &Output<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    // Files of several chunks this read writes to, opened once each (a pack
    // holds many blobs of the same few files) and closed once finished.
    let mut open: HashMap<usize, File> = HashMap::new();
    let pack = &unit.pack;
    // Read and decrypt/decompress buffers: this restore thread's, kept across reads.
    BlobBuffers::with_this_thread(|bufs| {
        let mut data = std::mem::take(&mut bufs.read);
        let r = repo
            .storage()
            .get_into(&pack_key(pack), Some(unit.range.clone()), &mut data)
            .map_err(Error::from)
            .and_then(|()| write_blobs(repo, unit, &mut data, bufs, &mut open, out, progress));
        bufs.read = data;
        r
    })
}

/// Decode the blobs of one ranged read (`data`, which starts at the unit's range;
/// each blob is decrypted where it lies) and write each into every file that uses it.
fn write_blobs(
    repo: &IndexedRepository,
    unit: &ReadUnit,
    data: &mut [u8],
    bufs: &mut BlobBuffers,
    open: &mut HashMap<usize, File>,
    out: &Output<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    let start = unit.range.start;
    // The members of a compression group in this read are decoded once: the
    // first decrypts the range in place, the others read the group `bufs` keeps.
    bufs.new_read();
    for (id, loc) in &unit.blobs {
        let off = (loc.offset as u64 - start) as usize;
        let sealed = &mut data[off..off + loc.length as usize];
        let plain = repo.decode_blob_in_place(id, BlobAt::of(loc), sealed, bufs)?;
        let zero = plain.iter().all(|b| *b == 0);
        for &(t, offset) in &out.uses[id] {
            let target = &out.targets[t];
            debug_assert!(offset + plain.len() as u64 <= target.size);
            if target.chunks == 1 {
                // The whole file: create, write (or leave a hole) and finish.
                make_way(out.finish.fresh, &target.path)?;
                let f = create_new(&target.path)?;
                if zero {
                    f.set_len(target.size)
                } else {
                    f.write_all_at(plain, offset)
                }
                .map_err(|e| Error::io(&target.path, e))?;
                out.finish.file(&f, target);
            } else {
                if !zero {
                    let f = match open.entry(t) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(open_for_write(&target.path)?)
                        }
                    };
                    f.write_all_at(plain, offset)
                        .map_err(|e| Error::io(&target.path, e))?;
                }
                // Every other chunk is written (the writes happened
                // before their decrements): the file is complete.
                if target.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let f = match open.remove(&t) {
                        Some(f) => f,
                        None => open_for_write(&target.path)?,
                    };
                    out.finish.file(&f, target);
                }
            }
            out.written.fetch_add(plain.len() as u64, Ordering::Relaxed);
            progress.add_bytes(plain.len() as u64);
        }
    }
    Ok(())
}

/// Whether the file at `path` has exactly the node's content (chunk by chunk).
fn identical(repo: &IndexedRepository, path: &Path, node: &Node) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok(meta) = f.metadata() else { return false };
    if meta.len() != node.size {
        return false;
    }
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in node.content.iter().flatten() {
        let Some(loc) = repo.locate(id) else {
            return false;
        };
        buf.resize(loc.raw_length as usize, 0);
        if f.read_exact_at(&mut buf, offset).is_err() || repo.key().blob_id(&buf) != *id {
            return false;
        }
        offset += loc.raw_length as u64;
    }
    offset == node.size
}

/// The owner to restore: the name recorded at backup time when it exists
/// here, else the recorded number.
fn owner_ids(node: &Node) -> (u32, u32) {
    (
        crate::util::uid_of(&node.user).unwrap_or(node.uid),
        crate::util::gid_of(&node.group).unwrap_or(node.gid),
    )
}

fn xattrs(node: &Node) -> impl Iterator<Item = (&str, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    node.xattrs
        .iter()
        .filter_map(move |x| Some((x.name.as_str(), b64.decode(&x.value).ok()?)))
}

fn mtime(node: &Node) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000),
    )
}

/// Where [`apply_metadata`] applies: the open descriptor of a restored regular
/// file (no path lookups), or a path (not followed when it is a symlink).
#[derive(Clone, Copy)]
enum At<'a> {
    File(&'a File),
    Path,
}

/// Owner, xattrs, mode and mtime of `node` onto `path` (or its open file), in
/// this order: owner first (a chown clears setuid bits and file capabilities),
/// xattrs before the mode (Linux checks write permission on the file for
/// `user.*` attributes, which a read-only mode would take away from a non-root
/// restore), mtime last. Failures become warnings naming the path.
fn apply_metadata(at: At<'_>, path: &Path, node: &Node, owners: bool, warnings: &mut Vec<String>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    use xattr::FileExt as _;
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        warnings.push(format!("{}: {what}: {e}", path.display()))
    };
    if owners {
        let (uid, gid) = owner_ids(node);
        let r = match at {
            At::File(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
            At::Path => nix::unistd::fchownat(
                None,
                path,
                Some(uid.into()),
                Some(gid.into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(std::io::Error::from),
        };
        if let Err(e) = r {
            warn("chown", &e);
        }
    }
    if node.kind != NodeKind::Symlink {
        for (name, value) in xattrs(node) {
            let r = match at {
                At::File(f) => f.set_xattr(name, &value),
                At::Path => xattr::set(path, OsString::from(name), &value),
            };
            if let Err(e) = r {
                warn(&format!("xattr {name}"), &e);
            }
        }
        let mode = std::fs::Permissions::from_mode(node.mode & 0o7777);
        let r = match at {
            At::File(f) => f.set_permissions(mode),
            At::Path => std::fs::set_permissions(path, mode),
        };
        if let Err(e) = r {
            warn("chmod", &e);
        }
    }
    let ts = mtime(node);
    let r = match at {
        At::File(f) => nix::sys::stat::futimens(f.as_raw_fd(), &ts, &ts),
        At::Path => nix::sys::stat::utimensat(
            None,
            path,
            &ts,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        ),
    };
    if let Err(e) = r {
        warn("set mtime", &e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use proptest::prelude::*;

    #[test]
    fn a_groups_members_stay_in_one_read_and_one_unit() {
        use crate::group::{GROUPED, SAME_RANGE};
        let pack = Id([1; 32]);
        let loc = |offset, compression| BlobLocation {
            pack,
            blob_type: BlobType::Data,
            compression,
            offset,
            length: 100,
            raw_length: 10,
        };
        // Three blobs, a group of five members at 300, two blobs.
        let mut blobs: Vec<(Id, BlobLocation)> = [0, 100, 200]
            .into_iter()
            .map(|o| (Id([o as u8; 32]), loc(o, 1)))
            .collect();
        for m in 0..5u8 {
            let flags = if m == 0 {
                GROUPED
            } else {
                GROUPED | SAME_RANGE
            };
            blobs.push((Id([100 + m; 32]), loc(300, 1 | flags)));
        }
        blobs.push((Id([250; 32]), loc(400, 1)));
        blobs.push((Id([251; 32]), loc(500, 1)));
        // The byte limit is reached at the group's first member: the rest join it.
        let reads: Vec<_> = coalesced_reads(&blobs, 0, 350).collect();
        assert_eq!(reads[0], (0..8, 0..400));
        // The blob limit is reached inside the group: the run takes all of it.
        let runs: Vec<usize> = at_most(&blobs, 4).map(|r| r.len()).collect();
        assert_eq!(runs, vec![8, 2]);
        let runs: Vec<usize> = at_most(&blobs, 3).map(|r| r.len()).collect();
        assert_eq!(runs, vec![3, 5, 2]);
    }

    proptest! {
        /// The reads cover every needed blob exactly once, each inside its read's range
        /// (which starts at its first blob) and in offset order, no read (of two blobs or
        /// more) longer than `max_bytes`, none of more than `max_blobs` blobs and no more
        /// reads than that limit needs, costliest first.
        #[test]
        fn read_units_cover_every_blob_once_costliest_first(
            packs in prop::collection::vec(
                (
                    any::<bool>(),
                    prop::collection::vec((1u32..4 << 20, 1u32..4, 0u32..512 << 10), 1..300),
                ),
                1..5,
            ),
            max_blobs in prop_oneof![Just(0usize), Just(ReadLimits::LOCAL.max_blobs), 1usize..64],
            max_bytes in prop_oneof![Just(ReadLimits::LOCAL.max_bytes), Just(ReadLimits::REMOTE.max_bytes)],
        ) {
            let limits = ReadLimits { max_bytes, max_blobs };
            let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
            let mut uses: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
            let mut n = 0u32;
            for (p, (small, blobs)) in packs.iter().enumerate() {
                let pack = Id::of_stored(&[p as u8]);
                let mut offset = 0u32;
                for &(length, users, gap) in blobs {
                    // A pack of small files, back to back: reads cut by `max_blobs`
                    // and, at 2 MiB, by bytes.
                    let (length, gap) = if *small { (length % 65536 + 1, 0) } else { (length, gap) };
                    let id = Id::of_stored(&n.to_le_bytes());
                    n += 1;
                    offset += gap;
                    by_pack.entry(pack).or_default().push((id, BlobLocation {
                        pack,
                        blob_type: BlobType::Data,
                        compression: 1,
                        offset,
                        length,
                        raw_length: length * 2,
                    }));
                    offset += length;
                    uses.insert(id, (0..users as usize).map(|t| (t, 0)).collect());
                }
            }
            let expected: HashMap<Id, BlobLocation> =
                by_pack.values().flatten().map(|(id, l)| (*id, *l)).collect();
            let limit = if max_blobs == 0 { usize::MAX } else { max_blobs };
            // Each coalesced read is cut into as few reads as the limit allows.
            let cuts: usize = by_pack
                .values()
                .flat_map(|blobs| coalesced_reads(blobs, MAX_GAP, max_bytes).collect::<Vec<_>>())
                .map(|(read, _)| read.len().div_ceil(limit))
                .sum();
            let units = read_units(by_pack, &uses, limits);
            prop_assert_eq!(units.len(), cuts);
            let mut seen = HashMap::new();
            for u in &units {
                prop_assert!(!u.blobs.is_empty() && u.blobs.len() <= limit);
                prop_assert_eq!(u.range.start, u64::from(u.blobs[0].1.offset));
                if u.blobs.len() > 1 {
                    let last = u.blobs[u.blobs.len() - 2].1;
                    prop_assert!(u64::from(last.offset + last.length) - u.range.start <= max_bytes);
                }
                // What ReadLimits::max_bytes promises: one blob and a gap past it at most.
                let tail = u.blobs[u.blobs.len() - 1].1;
                prop_assert!(u.range.end - u.range.start <= max_bytes + MAX_GAP + u64::from(tail.length));
                let mut cost = 0;
                let mut prev = None;
                for (id, l) in &u.blobs {
                    prop_assert_eq!(l.pack, u.pack);
                    prop_assert!(u.range.start <= u64::from(l.offset));
                    prop_assert!(u64::from(l.offset + l.length) <= u.range.end);
                    prop_assert!(prev.is_none_or(|p| p < l.offset));
                    prev = Some(l.offset);
                    prop_assert!(seen.insert(*id, *l).is_none(), "blob in two reads");
                    cost += use_cost(l, uses[id].len());
                }
                prop_assert_eq!(u.cost, cost);
            }
            prop_assert_eq!(seen, expected);
            prop_assert!(units.windows(2).all(|w| w[0].cost >= w[1].cost));
        }
    }
}
