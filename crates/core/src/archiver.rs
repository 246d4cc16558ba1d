//! The backup pipeline.
//!
//! ```text
//!  walker ──files──► readers (N) ──new chunks──► compressors (N) ──► BlobWriter ──► uploaders
//!    │                  │ chunk + keyed hash        compress + seal     pack            put pack
//!    └──events (in order)──► assembler: waits for each file's chunk list in walk
//!                            order, builds one tree blob per directory, bottom-up
//! ```
//!
//! Every stage runs on its own threads and the channels between them are
//! bounded, so memory stays bounded whatever the file sizes (a file is never
//! held whole: the reader streams it through the chunker) and the walker runs
//! only a bounded distance ahead. Files whose size, mtime, ctime and inode match
//! the parent snapshot are not read: their chunk list is reused.
//!
//! Unreadable or vanishing entries become warnings in the snapshot summary
//! (the backup is "partial"), never silent omissions.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset};
use crossbeam_channel::{bounded, Receiver, Sender};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use parking_lot::Mutex;

use crate::blob::{BlobType, Id};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repository::IndexedRepository;
use crate::snapshot::{Snapshot, SnapshotEntry, Summary, SNAPSHOT_VERSION};
use crate::tree::{Node, NodeKind, Tree, Xattr};
use crate::trees_ahead::TreesAhead;
use crate::writer::{BlobWriter, WriterOptions};

/// Which entries to leave out.
#[derive(Debug, Clone, Default)]
pub struct ExcludeOptions {
    /// Glob patterns (`--exclude`). A pattern without `/` matches any path
    /// component's name; one with `/` matches the absolute path (a leading
    /// `/` anchors it at the root, otherwise it may match at any depth).
    pub exclude: Vec<String>,
    /// Like `exclude`, case-insensitive (`--iexclude`).
    pub iexclude: Vec<String>,
    /// Leave out directories that contain a file with one of these names.
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
}

/// A compiled exclusion filter.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
    if_present: Vec<String>,
    larger_than: Option<u64>,
}

impl Excludes {
    /// # Errors
    /// [`Error::Invalid`] naming the first pattern that does not parse.
    pub fn new(opts: &ExcludeOptions) -> Result<Self> {
        let patterns: Vec<(&str, bool)> = opts
            .exclude
            .iter()
            .map(|p| (p.as_str(), false))
            .chain(opts.iexclude.iter().map(|p| (p.as_str(), true)))
            .collect();
        let (by_name, by_path) = compile_patterns(&patterns, "exclude pattern")?;
        Ok(Self {
            by_name,
            by_path,
            if_present: opts.exclude_if_present.clone(),
            larger_than: opts.exclude_larger_than,
        })
    }

    /// Whether `path` (absolute) with metadata `meta` is left out.
    pub fn excludes(&self, path: &Path, meta: &Metadata) -> bool {
        if let Some(name) = path.file_name() {
            if self.by_name.is_match(name) {
                return true;
            }
        }
        if self.by_path.is_match(path) {
            return true;
        }
        if meta.is_file() {
            if let Some(limit) = self.larger_than {
                if meta.len() > limit {
                    return true;
                }
            }
        }
        if meta.is_dir() && self.if_present.iter().any(|n| path.join(n).exists()) {
            return true;
        }
        false
    }
}

/// Compile `(pattern, case_insensitive)` globs into (by name, by path) sets,
/// shared by backup excludes and restore include/exclude. A pattern without `/`
/// matches any path component's name; one with `/` matches the path (a leading
/// `/` anchors it at the root, otherwise it may match at any depth).
///
/// # Errors
/// [`Error::Invalid`] naming `what` and the first pattern that does not parse.
pub(crate) fn compile_patterns(
    patterns: &[(&str, bool)],
    what: &'static str,
) -> Result<(GlobSet, GlobSet)> {
    let mut by_name = GlobSetBuilder::new();
    let mut by_path = GlobSetBuilder::new();
    for (pattern, icase) in patterns {
        let p = pattern.trim_end_matches('/');
        let (set, glob) = if p.contains('/') {
            let g = if p.starts_with('/') {
                p.to_string()
            } else {
                format!("**/{p}")
            };
            (&mut by_path, g)
        } else {
            (&mut by_name, p.to_string())
        };
        let glob = GlobBuilder::new(&glob)
            .literal_separator(true)
            .case_insensitive(*icase)
            .build()
            .map_err(|e| Error::invalid(what, format!("{pattern:?}: {e}")))?;
        set.add(glob);
    }
    Ok((
        by_name.build().map_err(|e| Error::invalid(what, e))?,
        by_path.build().map_err(|e| Error::invalid(what, e))?,
    ))
}

/// Which snapshot a backup compares against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Auto,
    None,
    Id(Id),
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub excludes: ExcludeOptions,
    pub one_file_system: bool,
    pub tags: Vec<String>,
    pub hostname: String,
    pub parent: ParentChoice,
    /// Read every file even if unchanged since the parent.
    pub force: bool,
    pub dry_run: bool,
    pub writer: WriterOptions,
    /// Snapshot time; defaults to now.
    pub time: Option<DateTime<FixedOffset>>,
    /// File reader threads (0: as many as cores, at least 2).
    pub readers: usize,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            excludes: ExcludeOptions::default(),
            one_file_system: false,
            tags: Vec::new(),
            hostname: crate::util::hostname(),
            parent: ParentChoice::Auto,
            force: false,
            dry_run: false,
            writer: WriterOptions::default(),
            time: None,
            readers: 0,
        }
    }
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// `None` on a dry run.
    pub snapshot_id: Option<Id>,
    pub snapshot: Snapshot,
}

impl BackupOutcome {
    /// True when some entries could not be backed up.
    pub fn is_partial(&self) -> bool {
        self.snapshot
            .summary
            .as_ref()
            .is_some_and(|s| !s.warnings.is_empty())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Chunk, hash, claim and hand new chunks to the compressors; shared by file
/// readers and stream backups.
struct Pipeline {
    writer: Arc<BlobWriter>,
    compress_tx: Option<Sender<(Id, Vec<u8>)>>,
    compressors: Vec<JoinHandle<()>>,
    abort: Arc<AtomicBool>,
    error: Arc<Mutex<Option<Error>>>,
    bytes_read: AtomicU64,
}

impl Pipeline {
    fn new(repo: &IndexedRepository, opts: &WriterOptions) -> Pipeline {
        let writer = Arc::new(BlobWriter::new(repo, repo.index().clone(), opts));
        let n = cores();
        let (tx, rx) = bounded::<(Id, Vec<u8>)>(n * 2);
        let abort = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let compressors = (0..n)
            .map(|_| {
                let rx: Receiver<(Id, Vec<u8>)> = rx.clone();
                let writer = writer.clone();
                let abort = abort.clone();
                let error = error.clone();
                std::thread::spawn(move || {
                    for (id, data) in rx {
                        if abort.load(Ordering::Relaxed) {
                            continue;
                        }
                        if let Err(e) = writer.store(BlobType::Data, id, &data) {
                            error.lock().get_or_insert(e);
                            abort.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Pipeline {
            writer,
            compress_tx: Some(tx),
            compressors,
            abort,
            error,
            bytes_read: AtomicU64::new(0),
        }
    }

    fn fail(&self, e: Error) {
        self.error.lock().get_or_insert(e);
        self.abort.store(true, Ordering::Relaxed);
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Returns the chunk ids and the byte count, or the I/O error of the reader;
    /// the bytes count as read once the whole stream was.
    fn chunk_stream(
        &self,
        reader: impl Read,
        progress: &dyn Progress,
    ) -> std::io::Result<(Vec<Id>, u64)> {
        let (ids, total) = self.chunk_part(reader, progress)?;
        self.bytes_read.fetch_add(total, Ordering::Relaxed);
        Ok((ids, total))
    }

    /// [`chunk_stream`](Self::chunk_stream) without counting the bytes as read:
    /// one part of a stream, which counts when every part was read.
    fn chunk_part(
        &self,
        reader: impl Read,
        progress: &dyn Progress,
    ) -> std::io::Result<(Vec<Id>, u64)> {
        thread_local! {
            /// The read buffer of this reader thread's last chunker.
            static READ_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let key = self.writer.repository().key();
        let mut ids = Vec::new();
        let mut total = 0u64;
        let mut chunker = self
            .writer
            .repository()
            .chunker()
            .chunker_with(reader, READ_BUF.take());
        let result = loop {
            let Some(chunk) = chunker.next() else {
                break Ok(());
            };
            if self.aborted() {
                break Err(std::io::Error::other("backup aborted"));
            }
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            let id = key.blob_id(&chunk);
            total += chunk.len() as u64;
            progress.add_bytes(chunk.len() as u64);
            ids.push(id);
            if self.writer.claim(id) {
                let tx = self.compress_tx.as_ref().expect("pipeline open");
                if tx.send((id, chunk)).is_err() {
                    break Err(std::io::Error::other("compressors stopped"));
                }
            }
        };
        READ_BUF.set(chunker.into_buffer());
        result.map(|()| (ids, total))
    }

    fn save_tree(&self, tree: Tree) -> Result<Id> {
        let bytes = tree.serialize();
        Ok(self.writer.save(BlobType::Tree, &bytes)?.0)
    }

    /// Wait for the compressors, then flush packs and the index. Returns the
    /// writer's counters (data blobs, tree blobs, raw bytes, stored bytes),
    /// read only after every compressor has finished.
    fn finish(mut self) -> Result<[u64; 4]> {
        drop(self.compress_tx.take());
        for h in self.compressors.drain(..) {
            h.join()
                .map_err(|_| Error::Other("compressor thread panicked".into()))?;
        }
        if let Some(e) = self.error.lock().take() {
            return Err(e);
        }
        let writer = Arc::try_unwrap(self.writer)
            .map_err(|_| Error::Other("blob writer still in use".into()))?;
        let (_, t) = writer.finish()?;
        Ok([t.data_blobs, t.tree_blobs, t.raw_bytes, t.stored_bytes])
    }
}

/// Stat-derived node for `path`; content and subtree are filled in later.
///
/// Extended attributes are copied from `old`, the parent snapshot's node of the
/// same name, when its kind, device, inode and ctime are equal: setting or
/// removing an attribute changes the ctime, so an unchanged entry costs no
/// `llistxattr` (50k of them in an unchanged re-backup of the bench set).
/// The `lstat` fields a node is made of: what the lister hands the walker
/// (a `Metadata` is 176 bytes, this 72; up to 32k are in flight).
#[derive(Debug, Clone, Copy)]
struct Stat {
    /// `st_mode`: file type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
    rdev: u64,
}

impl Stat {
    fn of(meta: &Metadata) -> Stat {
        Stat {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: meta.nlink(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
            rdev: meta.rdev(),
        }
    }

    fn kind(&self) -> NodeKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFREG => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::Chardev,
            _ => NodeKind::Blockdev,
        }
    }
}

fn node_from_meta(name: &OsStr, path: &Path, meta: &Stat, old: Option<&Node>) -> Node {
    let kind = meta.kind();
    let mut n = Node::new(name, kind);
    n.mode = meta.mode;
    n.uid = meta.uid;
    n.gid = meta.gid;
    n.user = crate::util::user_name(n.uid).unwrap_or_default();
    n.group = crate::util::group_name(n.gid).unwrap_or_default();
    n.mtime_ns = meta.mtime_ns;
    n.ctime_ns = meta.ctime_ns;
    n.inode = meta.ino;
    n.device_id = meta.dev;
    if kind == NodeKind::File {
        n.size = meta.size;
        n.links = meta.nlink;
    }
    if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
        n.rdev = meta.rdev;
    }
    if kind == NodeKind::Symlink {
        if let Ok(t) = std::fs::read_link(path) {
            n.set_link_target(t.as_os_str());
        }
    }
    if matches!(kind, NodeKind::File | NodeKind::Dir) {
        n.xattrs = match old {
            Some(o)
                if o.kind == kind
                    && o.device_id == n.device_id
                    && o.inode == n.inode
                    && o.ctime_ns == n.ctime_ns =>
            {
                o.xattrs.clone()
            }
            _ => read_xattrs(path),
        };
    }
    n
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some(Xattr {
                name: name.to_string_lossy().into_owned(),
                value: b64.encode(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Whether a file is unchanged since its parent-snapshot node.
fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
        && old.content.is_some()
}

enum Event {
    EnterDir(Node),
    Leaf(Node),
    File(Receiver<FileResult>),
    /// End of a directory, with the parent snapshot's tree for it (its id and
    /// contents) when there was one: if the new tree equals it, its id is reused.
    LeaveDir(Option<(Id, Tree)>),
    Warning(String),
}

type FileResult = std::result::Result<(Node, bool), String>;

struct FileJob {
    path: PathBuf,
    node: Node,
    /// The parent snapshot had a file here (counted as changed, not new).
    existed: bool,
    reply: Sender<FileResult>,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    total_bytes: AtomicU64,
}

/// Back up files and directories into a new snapshot.
///
/// # Errors
/// Storage and repository errors abort the backup (the repository stays valid:
/// nothing references the packs written so far). Problems with single entries
/// are warnings in the returned summary.
pub fn backup(
    repo: &IndexedRepository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let listing = Listing::start(&opts.paths, &opts.excludes, opts.one_file_system)?;
    backup_listed(repo, opts, listing, progress)
}

/// [`backup`] of a listing started earlier (before the repository was opened,
/// so that the walk of the file system overlaps the key derivation and the
/// index load). The listing's paths, excludes and `one_file_system` are used;
/// `opts`' are not.
///
/// # Errors
/// As [`backup`].
pub fn backup_listed(
    repo: &IndexedRepository,
    opts: &BackupOptions,
    listing: Listing,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    // When the backup proper starts (after the password and the unlock), as
    // before the listing started early.
    let started = chrono::Local::now().fixed_offset();
    // Visible to prune until the snapshot is saved (see crate::lock); the view
    // is reloaded if a prune rewrote the index before the session existed.
    let (_session, reloaded) = if opts.dry_run {
        (None, None)
    } else {
        let (s, fresh) = crate::lock::Session::start_for(repo, "backup")?;
        (Some(s), fresh)
    };
    let repo = reloaded.as_ref().unwrap_or(repo);
    let excludes = &*listing.excludes;
    let paths = &listing.paths;
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let parent = find_parent(repo, opts, &path_strings)?;
    let parent_root = match &parent {
        Some(p) if !opts.force => Some(repo.load_tree(&p.snapshot.tree)?),
        _ => None,
    };

    let writer_opts = WriterOptions {
        dry_run: opts.dry_run || opts.writer.dry_run,
        ..opts.writer.clone()
    };
    let pipeline = Pipeline::new(repo, &writer_opts);
    let counters = Counters::default();
    let scan_stop = AtomicBool::new(false);
    let ahead = TreesAhead::new(repo);
    let walked: Result<(Id, Vec<String>)> = std::thread::scope(|scope| {
        // Scanner: totals for the progress bar's ETA (only when someone shows them).
        scope.spawn(|| {
            if !progress.wants_totals() {
                return;
            }
            scan_totals(
                paths,
                excludes,
                listing.one_file_system,
                &scan_stop,
                progress,
            )
        });
        let (job_tx, job_rx) = bounded::<FileJob>(256);
        let (ev_tx, ev_rx) = bounded::<Vec<Event>>(4096 / EVENT_BATCH);
        let readers = if opts.readers == 0 {
            cores().max(2)
        } else {
            opts.readers
        };
        for _ in 0..readers {
            let job_rx = job_rx.clone();
            let (pipeline, counters) = (&pipeline, &counters);
            scope.spawn(move || {
                for job in job_rx {
                    let r = read_file(pipeline, job.path.as_path(), job.node, progress);
                    if let Ok((node, _)) = &r {
                        counters.total_bytes.fetch_add(node.size, Ordering::Relaxed);
                        if job.existed {
                            counters.files_changed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.files_new.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    progress.add_files(1);
                    let _ = job.reply.send(r);
                }
            });
        }
        drop(job_rx);
        let assembler = scope.spawn(|| assemble(&pipeline, ev_rx, progress));
        let _close = ahead.start(scope, cores().max(2));
        let walker = Walker {
            repo,
            one_file_system: listing.one_file_system,
            listed: std::cell::RefCell::new(listing.cursor()),
            jobs: job_tx,
            events: ev_tx,
            batch: Default::default(),
            counters: &counters,
            pipeline: &pipeline,
            progress,
            ahead: &ahead,
        };
        let walk_result = walker
            .walk_roots(parent_root.as_ref())
            .and_then(|()| walker.flush());
        if walk_result.is_err() {
            pipeline.fail(Error::Other("backup aborted".into()));
        }
        drop(walker);
        let assembled = assembler
            .join()
            .map_err(|_| Error::Other("assembler panicked".into()))
            .and_then(|r| r);
        scan_stop.store(true, Ordering::Relaxed);
        walk_result.and(assembled)
    });
    let (root, warnings) = match walked {
        Ok(x) => x,
        Err(e) => {
            let _ = pipeline.finish();
            return Err(e);
        }
    };
    let bytes_read = pipeline.bytes_read.load(Ordering::Relaxed);
    let [d, t, raw, stored] = pipeline.finish()?;
    let stats = (d, t, raw, stored);
    let c = &counters;
    let files_new = c.files_new.load(Ordering::Relaxed);
    let files_changed = c.files_changed.load(Ordering::Relaxed);
    let files_unmodified = c.files_unmodified.load(Ordering::Relaxed);
    let summary = Summary {
        backup_start: Some(started),
        backup_end: Some(chrono::Local::now().fixed_offset()),
        files_new,
        files_changed,
        files_unmodified,
        dirs: c.dirs.load(Ordering::Relaxed),
        total_files: files_new + files_changed + files_unmodified,
        total_bytes: c.total_bytes.load(Ordering::Relaxed),
        bytes_read,
        data_blobs_new: stats.0,
        tree_blobs_new: stats.1,
        data_added: stats.2,
        data_added_stored: stats.3,
        warnings,
    };
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: opts.time.unwrap_or(started),
        hostname: opts.hostname.clone(),
        username: crate::util::username(),
        paths: path_strings,
        tags: opts.tags.clone(),
        source: "files".into(),
        tree: root,
        parent: parent.map(|p| p.id),
        pinned: false,
        summary: Some(summary),
        metadata: None,
        program: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        original: None,
    };
    let snapshot_id = if opts.dry_run {
        None
    } else {
        Some(repo.save_snapshot(&snapshot)?)
    };
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
    })
}

fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
        // Lexically normalise `.` and `..` so snapshot paths are canonical.
        let mut clean = PathBuf::new();
        for c in abs.components() {
            match c {
                Component::ParentDir => {
                    clean.pop();
                }
                Component::CurDir => {}
                other => clean.push(other),
            }
        }
        out.push(clean);
    }
    out.sort();
    out.dedup();
    // A path inside another given path is already covered.
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    Ok(kept)
}

fn find_parent(
    repo: &IndexedRepository,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<SnapshotEntry>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(id) => Ok(Some(SnapshotEntry {
            id: *id,
            snapshot: repo.load_snapshot(id)?,
        })),
        ParentChoice::Auto => {
            let mut snaps = repo.snapshots()?;
            snaps.retain(|s| {
                s.snapshot.hostname == opts.hostname
                    && s.snapshot.paths == paths
                    && s.snapshot.source == "files"
            });
            Ok(snaps.pop())
        }
    }
}

/// A trie of the given paths: intermediate directories lead to the roots.
#[derive(Default)]
struct PathTrie {
    children: BTreeMap<OsString, PathTrie>,
    selected: bool,
}

struct Walker<'a> {
    repo: &'a IndexedRepository,
    one_file_system: bool,
    /// The lister's findings, in walk order.
    listed: std::cell::RefCell<ListedCursor<'a>>,
    jobs: Sender<FileJob>,
    /// Events go to the assembler in batches ([`EVENT_BATCH`]): one channel
    /// operation per event made the two threads hand over, spin and yield for
    /// every entry (128k `sched_yield` in an unchanged re-backup of 46k files).
    events: Sender<Vec<Event>>,
    batch: std::cell::RefCell<Vec<Event>>,
    counters: &'a Counters,
    pipeline: &'a Pipeline,
    progress: &'a dyn Progress,
    /// Parent trees decoded ahead of the walk.
    ahead: &'a TreesAhead<'a>,
}

/// Events per batch from the walker to the assembler.
const EVENT_BATCH: usize = 64;

impl Walker<'_> {
    fn emit(&self, e: Event) -> Result<()> {
        let full = {
            let mut batch = self.batch.borrow_mut();
            batch.push(e);
            batch.len() >= EVENT_BATCH
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Send the events batched so far (at the end of the walk, or when a batch
    /// is full). The assembler never waits on the walker for anything but
    /// events, so holding a partial batch cannot deadlock.
    fn flush(&self) -> Result<()> {
        let batch = std::mem::replace(
            &mut *self.batch.borrow_mut(),
            Vec::with_capacity(EVENT_BATCH),
        );
        if batch.is_empty() {
            return Ok(());
        }
        self.events
            .send(batch)
            .map_err(|_| Error::Other("backup aborted".into()))
    }

    fn warn(&self, path: &Path, what: impl std::fmt::Display) -> Result<()> {
        let msg = format!("{}: {what}", path.display());
        self.progress.warning(&msg);
        self.emit(Event::Warning(msg))
    }

    fn walk_roots(&self, parent_root: Option<&Tree>) -> Result<()> {
        let next = self.listed.borrow_mut().next();
        let root_dev = match next {
            Some(Listed::Start { root_dev }) => root_dev,
            Some(Listed::Fatal(e)) => return Err(e),
            _ => return Err(Error::Other("the file system walk stopped early".into())),
        };
        // The root tree itself has no node; its children are emitted into it.
        self.walk_listed(Path::new("/"), parent_root, root_dev)
    }

    /// Visit what the lister found in directory `dir`, up to its `End`; `dev`
    /// is the directory's device (`None` above the roots); `parent` is the
    /// directory's tree in the parent snapshot.
    fn walk_listed(&self, dir: &Path, parent: Option<&Tree>, dev: Option<u64>) -> Result<()> {
        if let Some(p) = parent {
            self.ahead.request_children(p);
        }
        let walked = self.walk_entries(dir, parent, dev);
        // Trees of subdirectories that are gone (or excluded) now.
        for id in parent.iter().flat_map(|p| p.subtrees()) {
            self.ahead.discard(id);
        }
        walked
    }

    fn walk_entries(&self, dir: &Path, parent: Option<&Tree>, dev: Option<u64>) -> Result<()> {
        loop {
            let next = self.listed.borrow_mut().next();
            match next {
                Some(Listed::Entry { name, meta }) => {
                    self.visit(&dir.join(&name), &name, &meta, parent, dev)?;
                }
                Some(Listed::Via { name, meta }) => {
                    let path = dir.join(&name);
                    let old = parent.and_then(|t| t.find(&name));
                    self.emit(Event::EnterDir(node_from_meta(&name, &path, &meta, old)))?;
                    let sub = self.subtree(parent, &name);
                    self.walk_listed(&path, sub.as_ref().map(|(_, t)| t), None)?;
                    self.emit(Event::LeaveDir(self.reusable(sub)))?;
                }
                Some(Listed::Warn { path, msg }) => self.warn(&path, msg)?,
                Some(Listed::Fatal(e)) => return Err(e),
                Some(Listed::End) => return Ok(()),
                Some(Listed::Start { .. }) => {
                    return Err(Error::Other("the file system walk restarted".into()))
                }
                None => return Err(Error::Other("the file system walk stopped early".into())),
            }
        }
    }

    /// The parent tree for `LeaveDir`, offered for reuse only when this
    /// backup's index has it. A tree found only through the readers' fallback
    /// (a pack a pending prune mark took out of the index) must be written
    /// again, like any blob: phase 2 may delete that pack once the snapshot
    /// that referenced it is gone, and it does not wait for backups that
    /// started after the mark.
    fn reusable(&self, sub: Option<(Id, Tree)>) -> Option<(Id, Tree)> {
        sub.filter(|(id, _)| self.repo.index().contains(id))
    }

    fn subtree(&self, parent: Option<&Tree>, name: &OsStr) -> Option<(Id, Tree)> {
        let node = parent?.find(name)?;
        let id = node.subtree?;
        let tree = match self.ahead.take(&id) {
            Some(decoded) => decoded,
            None => self.ahead.load(&id),
        };
        Some((id, tree?))
    }

    fn visit(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &Stat,
        parent: Option<&Tree>,
        dev: Option<u64>,
    ) -> Result<()> {
        if self.pipeline.aborted() {
            return Err(Error::Other("backup aborted".into()));
        }
        let old = parent.and_then(|t| t.find(name));
        let node = node_from_meta(name, path, meta, old);
        match node.kind {
            NodeKind::Dir => {
                self.counters.dirs.fetch_add(1, Ordering::Relaxed);
                self.emit(Event::EnterDir(node))?;
                let crosses = self.one_file_system && dev.is_some_and(|d| d != meta.dev);
                let mut sub = None;
                if !crosses {
                    sub = self.subtree(parent, name);
                    self.walk_listed(path, sub.as_ref().map(|(_, t)| t), Some(meta.dev))?;
                }
                self.emit(Event::LeaveDir(self.reusable(sub)))
            }
            NodeKind::File => {
                if let Some(old) = old.filter(|o| unchanged(o, &node)) {
                    let content = old.content.clone().unwrap_or_default();
                    if content.iter().all(|id| self.repo.index().contains(id)) {
                        let mut n = node;
                        n.content = Some(content);
                        self.counters
                            .files_unmodified
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .total_bytes
                            .fetch_add(n.size, Ordering::Relaxed);
                        self.progress.add_files(1);
                        self.progress.add_bytes(n.size);
                        return self.emit(Event::Leaf(n));
                    }
                }
                let (tx, rx) = bounded(1);
                self.emit(Event::File(rx))?;
                self.jobs
                    .send(FileJob {
                        path: path.to_path_buf(),
                        node,
                        existed: old.is_some(),
                        reply: tx,
                    })
                    .map_err(|_| Error::Other("backup aborted".into()))
            }
            _ => self.emit(Event::Leaf(node)),
        }
    }
}

/// The file system side of a backup's walk, started before the repository is
/// opened: listing directories and `lstat`-ing their entries needs no key, so
/// it runs on its own thread while the password's Argon2id derives the key and
/// the index loads, and then alongside the walker (which compares with the
/// parent snapshot and hands files to the readers). Dropping it stops the
/// lister.
pub struct Listing {
    paths: Vec<PathBuf>,
    excludes: Arc<Excludes>,
    one_file_system: bool,
    rx: Option<Receiver<Vec<Listed>>>,
    thread: Option<JoinHandle<()>>,
}

/// What the lister found, in the order the walker visits it.
enum Listed {
    /// An entry to visit: a selected path, or an entry of a listed directory
    /// that no exclude matched. A directory the walk descends into (not one
    /// that `one_file_system` stops at) is followed by its entries and `End`.
    Entry { name: OsString, meta: Stat },
    /// A directory on the way to a selected path (its metadata follows
    /// symlinks), followed by what is under it and `End`.
    Via { name: OsString, meta: Stat },
    /// The first record: `root_dev` is the device of `/` when `/` itself is
    /// backed up (its entries follow, as a directory's), else `None` (the
    /// selected paths follow, with `Via` records for the directories above).
    Start { root_dev: Option<u64> },
    /// The end of a directory's entries, and of the whole listing.
    End,
    /// Something that could not be listed or `lstat`-ed: a warning.
    Warn { path: PathBuf, msg: String },
    /// A directory on the way to a selected path is gone: the backup fails.
    Fatal(Error),
}

/// Entries per batch from the lister to the walker, and batches in flight: at
/// most 32k entries listed ahead of the walker, ~130 bytes each with the name
/// (~4 MB). In an unchanged re-backup of /usr-like trees the lister gets that
/// far during the key derivation.
const LIST_BATCH: usize = 64;
const LIST_AHEAD: usize = 512;

impl Listing {
    /// Check the paths and excludes and start listing.
    ///
    /// # Errors
    /// [`Error::Invalid`] without paths or with an exclude pattern that does
    /// not parse, [`Error::Io`] naming a path that cannot be `lstat`-ed.
    pub fn start(
        paths: &[PathBuf],
        excludes: &ExcludeOptions,
        one_file_system: bool,
    ) -> Result<Listing> {
        if paths.is_empty() {
            return Err(Error::invalid("backup", "no paths given"));
        }
        let excludes = Arc::new(Excludes::new(excludes)?);
        let paths = absolute_paths(paths)?;
        for p in &paths {
            std::fs::symlink_metadata(p).map_err(|e| Error::io(p, e))?;
        }
        let mut trie = PathTrie::default();
        for p in &paths {
            let mut t = &mut trie;
            for c in p.components().skip(1) {
                t = t.children.entry(c.as_os_str().to_os_string()).or_default();
            }
            t.selected = true;
        }
        let (tx, rx) = bounded(LIST_AHEAD);
        let mut lister = Lister {
            excludes: Arc::clone(&excludes),
            one_file_system,
            tx,
            batch: Vec::with_capacity(LIST_BATCH),
        };
        let thread = std::thread::Builder::new()
            .name("lister".into())
            .spawn(move || lister.run(&trie))
            .map_err(|e| Error::Other(format!("cannot start the file lister: {e}")))?;
        Ok(Listing {
            paths,
            excludes,
            one_file_system,
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// The walker's end of the listing.
    fn cursor(&self) -> ListedCursor<'_> {
        ListedCursor {
            rx: self
                .rx
                .as_ref()
                .expect("a listing's receiver lives until drop"),
            batch: Vec::new().into_iter(),
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        // A lister blocked on a full channel sees it closed and stops.
        self.rx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The walker's end of a [`Listing`]: one batch at a time.
struct ListedCursor<'a> {
    rx: &'a Receiver<Vec<Listed>>,
    batch: std::vec::IntoIter<Listed>,
}

impl ListedCursor<'_> {
    /// `None` when the lister stopped without its final `End` (it panicked).
    fn next(&mut self) -> Option<Listed> {
        loop {
            if let Some(l) = self.batch.next() {
                return Some(l);
            }
            self.batch = self.rx.recv().ok()?.into_iter();
        }
    }
}

/// The lister thread: the walk's directory reads, `lstat`s and excludes, in
/// the walker's order (selected paths and directory entries sorted by name).
struct Lister {
    excludes: Arc<Excludes>,
    one_file_system: bool,
    tx: Sender<Vec<Listed>>,
    batch: Vec<Listed>,
}

/// The walker is gone (the backup failed or was dropped), or a fatal error
/// was sent: stop listing.
struct Stop;

impl Lister {
    fn run(&mut self, trie: &PathTrie) {
        let root = Path::new("/");
        let listed = if trie.selected {
            // `/` itself: its entries go straight into the root tree, under
            // `--one-file-system` on the root's device.
            match std::fs::symlink_metadata(root) {
                Ok(meta) => self
                    .send(Listed::Start {
                        root_dev: Some(meta.dev()),
                    })
                    .and_then(|()| self.list_dir(root, meta.dev())),
                Err(e) => self.send(Listed::Fatal(Error::io(root, e))).and(Err(Stop)),
            }
        } else {
            self.send(Listed::Start { root_dev: None })
                .and_then(|()| self.list_trie(root, trie))
        };
        let _ = listed.and_then(|()| self.send(Listed::End));
        let _ = self.flush();
    }

    fn send(&mut self, l: Listed) -> std::result::Result<(), Stop> {
        self.batch.push(l);
        if self.batch.len() >= LIST_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(LIST_BATCH));
        self.tx.send(batch).map_err(|_| Stop)
    }

    fn warn(&mut self, path: PathBuf, e: &std::io::Error) -> std::result::Result<(), Stop> {
        self.send(Listed::Warn {
            path,
            msg: e.to_string(),
        })
    }

    fn list_trie(&mut self, dir: &Path, trie: &PathTrie) -> std::result::Result<(), Stop> {
        for (name, child) in &trie.children {
            let path = dir.join(name);
            if child.selected {
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) => self.list_entry(&path, name.clone(), &meta, None)?,
                    Err(e) => self.warn(path, &e)?,
                }
            } else {
                match std::fs::metadata(&path) {
                    Ok(meta) => {
                        self.send(Listed::Via {
                            name: name.clone(),
                            meta: Stat::of(&meta),
                        })?;
                        self.list_trie(&path, child)?;
                        self.send(Listed::End)?;
                    }
                    Err(e) => {
                        self.send(Listed::Fatal(Error::io(&path, e)))?;
                        return Err(Stop);
                    }
                }
            }
        }
        Ok(())
    }

    /// `dev`: the device of the directory holding the entry (`None` for a
    /// selected path), as the walker's [`Walker::visit`] decides descending.
    fn list_entry(
        &mut self,
        path: &Path,
        name: OsString,
        meta: &Metadata,
        dev: Option<u64>,
    ) -> std::result::Result<(), Stop> {
        let own_dev = meta.dev();
        let descend = meta.is_dir() && !(self.one_file_system && dev.is_some_and(|d| d != own_dev));
        self.send(Listed::Entry {
            name,
            meta: Stat::of(meta),
        })?;
        if descend {
            self.list_dir(path, own_dev)?;
            self.send(Listed::End)?;
        }
        Ok(())
    }

    fn list_dir(&mut self, dir: &Path, dev: u64) -> std::result::Result<(), Stop> {
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return self.warn(dir.to_path_buf(), &e),
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => names.push(e.file_name()),
                Err(e) => self.warn(dir.to_path_buf(), &e)?,
            }
        }
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(path, &e)?;
                    continue;
                }
            };
            if self.excludes.excludes(&path, &meta) {
                continue;
            }
            self.list_entry(&path, name, &meta, Some(dev))?;
        }
        Ok(())
    }
}

fn read_file(
    pipeline: &Pipeline,
    path: &Path,
    mut node: Node,
    progress: &dyn Progress,
) -> FileResult {
    progress.current(path);
    let file = open_noatime(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Describe the file as opened, not as listed: it may have changed in between.
    if let Ok(meta) = file.metadata() {
        if !meta.is_file() {
            return Err(format!("{}: no longer a regular file", path.display()));
        }
        node.size = meta.len();
        node.mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        node.ctime_ns = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
        node.inode = meta.ino();
    }
    let (ids, size) = pipeline
        .chunk_stream(std::io::BufReader::with_capacity(1 << 20, file), progress)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    node.size = size;
    node.content = Some(ids);
    Ok((node, true))
}

fn open_noatime(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        Err(e) => Err(e),
    }
}

/// Builds trees in walk order; returns the root tree id and the warnings.
fn assemble(
    pipeline: &Pipeline,
    events: Receiver<Vec<Event>>,
    progress: &dyn Progress,
) -> Result<(Id, Vec<String>)> {
    let mut stack: Vec<(Option<Node>, Tree)> = vec![(None, Tree::default())];
    let mut warnings = Vec::new();
    let fail = |e: Error| {
        pipeline.fail(Error::Other("backup aborted".into()));
        e
    };
    for ev in events.into_iter().flatten() {
        match ev {
            Event::EnterDir(node) => stack.push((Some(node), Tree::default())),
            Event::Leaf(node) => stack.last_mut().expect("root").1.nodes.push(node),
            Event::File(rx) => match rx.recv() {
                Ok(Ok((node, _))) => stack.last_mut().expect("root").1.nodes.push(node),
                Ok(Err(w)) => {
                    progress.warning(&w);
                    warnings.push(w);
                }
                Err(_) => {
                    return Err(fail(
                        pipeline
                            .error
                            .lock()
                            .take()
                            .unwrap_or_else(|| Error::Other("backup aborted".into())),
                    ))
                }
            },
            Event::Warning(w) => warnings.push(w),
            Event::LeaveDir(old) => {
                let (node, mut tree) = stack.pop().expect("balanced events");
                let mut node = node.expect("directory node");
                tree.sort();
                // An unchanged directory: same nodes, so the same canonical
                // bytes and the same id. Skip the encode, the hash and the
                // index lookup (most of an unchanged re-backup's tree work).
                let id = match old {
                    Some((id, old)) if old == tree => id,
                    _ => pipeline.save_tree(tree).map_err(fail)?,
                };
                node.subtree = Some(id);
                stack.last_mut().expect("root").1.nodes.push(node);
            }
        }
    }
    if let Some(e) = pipeline.error.lock().take() {
        return Err(e);
    }
    let (_, root) = stack.pop().expect("root");
    let id = pipeline.save_tree(root)?;
    Ok((id, warnings))
}

fn scan_totals(
    paths: &[PathBuf],
    excludes: &Excludes,
    ofs: bool,
    stop: &AtomicBool,
    progress: &dyn Progress,
) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack: Vec<(PathBuf, Option<u64>)> = paths.iter().map(|p| (p.clone(), None)).collect();
    while let Some((p, dev)) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if dev.is_some() && excludes.excludes(&p, &meta) {
            continue;
        }
        if meta.is_dir() {
            if ofs && dev.is_some_and(|d| d != meta.dev()) {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| (e.path(), Some(meta.dev()))));
            }
        } else if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    progress.set_totals(files, bytes);
}

/// Owner, mode and times of a node made by a stream backup (not read from disk).
fn stamp(node: &mut Node, mode: u32) {
    node.mode = mode;
    node.uid = nix::unistd::getuid().as_raw();
    node.gid = nix::unistd::getgid().as_raw();
    node.mtime_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    node.ctime_ns = node.mtime_ns;
}

/// Options for a backup of named streams (`--stdin`, database dumps).
#[derive(Debug, Clone)]
pub struct StreamBackupOptions {
    pub hostname: String,
    pub tags: Vec<String>,
    /// `stdin`, `postgres`, `mysql`, `redis`, `sqlite`, `command`, ...
    pub source: String,
    /// Recorded as the snapshot's paths (for grouping and `--path` filters).
    pub paths: Vec<String>,
    pub writer: WriterOptions,
    pub dry_run: bool,
    pub time: Option<DateTime<FixedOffset>>,
}

impl Default for StreamBackupOptions {
    fn default() -> Self {
        Self {
            hostname: crate::util::hostname(),
            tags: Vec::new(),
            source: "stdin".into(),
            paths: Vec::new(),
            writer: WriterOptions::default(),
            dry_run: false,
            time: None,
        }
    }
}

/// Writes one snapshot made of named streams, one after another, each stored as
/// a regular file at the root of the snapshot. Used by `backup --stdin` and the
/// database sources.
pub struct StreamSnapshotWriter<'a> {
    repo: &'a IndexedRepository,
    pipeline: Pipeline,
    opts: StreamBackupOptions,
    /// Stored streams: path components (`db/shop.sql` → `["db", "shop.sql"]`) and file node.
    files: Vec<(Vec<String>, Node)>,
    started: DateTime<FixedOffset>,
    total_bytes: u64,
    progress: &'a dyn Progress,
    /// Visible to prune until the snapshot is saved (see crate::lock).
    _session: Option<crate::lock::Session>,
}

impl<'a> StreamSnapshotWriter<'a> {
    pub fn new(
        repo: &'a IndexedRepository,
        opts: StreamBackupOptions,
        progress: &'a dyn Progress,
    ) -> Self {
        // The session is registered before the pipeline takes its view of the
        // index (see crate::lock::Session::start_for).
        let (session, fresh, failed) = if opts.dry_run {
            (None, None, None)
        } else {
            match crate::lock::Session::start_for(repo, "stream backup") {
                Ok((s, fresh)) => (Some(s), fresh, None),
                Err(e) => (None, None, Some(e)),
            }
        };
        let pipeline = Pipeline::new(
            fresh.as_ref().unwrap_or(repo),
            &WriterOptions {
                dry_run: opts.dry_run || opts.writer.dry_run,
                ..opts.writer.clone()
            },
        );
        if let Some(e) = failed {
            // A backup that cannot register its session must not run: fail it.
            pipeline.fail(e);
        }
        Self {
            _session: session,
            pipeline,
            repo,
            opts,
            files: Vec::new(),
            started: chrono::Local::now().fixed_offset(),
            total_bytes: 0,
            progress,
        }
    }

    /// Store everything `reader` yields as the file `name`; returns its size.
    /// `name` may contain `/`: the stream is stored at that relative path
    /// (`db/shop.sql`), with the directories created in the snapshot.
    ///
    /// # Errors
    /// An invalid or duplicate name; the reader's I/O error; a storage error.
    /// Nothing is added for `name`, and chunks already stored stay unreferenced
    /// until a prune (a caller that then drops the writer writes no snapshot).
    pub fn add_stream(&mut self, name: &str, reader: &mut dyn Read) -> Result<u64> {
        let comps = self.stream_path(name)?;
        let (ids, size) = self
            .pipeline
            .chunk_stream(reader, self.progress)
            .map_err(|e| Error::io(PathBuf::from(name), e))?;
        self.push_stream(comps, ids, size);
        Ok(size)
    }

    /// Store the concatenation of `parts`, in their order, as the file `name`;
    /// returns its size. Each part is read, chunked and hashed on a thread of its
    /// own (meant for about one part per core), all feeding the same compressors,
    /// and the chunk lists are joined: a stream whose producer can split it (a
    /// table read as page ranges over several connections) is read in parallel.
    /// The stored bytes are exactly those of [`add_stream`](Self::add_stream) on
    /// the joined reader; only the cut points differ, as every part starts a new
    /// chunk.
    ///
    /// # Errors
    /// An invalid or duplicate name; the I/O error of the first part, in order,
    /// whose reader failed; a storage error. Once a part fails, the others get
    /// an error at their next read (a read already blocked is not interrupted: a
    /// producer closes its end). Nothing is added for `name`, the writer stays
    /// usable, and chunks already stored stay unreferenced until a prune.
    pub fn add_stream_parts(
        &mut self,
        name: &str,
        parts: Vec<Box<dyn Read + Send + '_>>,
    ) -> Result<u64> {
        /// A part that stops reading once another part has failed.
        struct Cancellable<'c, R> {
            inner: R,
            cancelled: &'c AtomicBool,
        }
        impl<R: Read> Read for Cancellable<'_, R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.cancelled.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other(CANCELLED));
                }
                self.inner.read(buf)
            }
        }
        const CANCELLED: &str = "another part of the stream failed";

        let comps = self.stream_path(name)?;
        let (pipeline, progress) = (&self.pipeline, self.progress);
        let cancelled = AtomicBool::new(false);
        let chunked: Vec<std::io::Result<(Vec<Id>, u64)>> = std::thread::scope(|scope| {
            let readers: Vec<_> = parts
                .into_iter()
                .map(|inner| {
                    let cancelled = &cancelled;
                    scope.spawn(move || {
                        let part = Cancellable { inner, cancelled };
                        let chunked = pipeline.chunk_part(part, progress);
                        if chunked.is_err() {
                            cancelled.store(true, Ordering::Relaxed);
                        }
                        chunked
                    })
                })
                .collect();
            readers
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("stream part reader panicked"))
                    })
                })
                .collect()
        });
        if chunked.iter().any(Result::is_err) {
            let first = chunked
                .into_iter()
                .filter_map(Result::err)
                .find(|e| e.to_string() != CANCELLED)
                .unwrap_or_else(|| std::io::Error::other(CANCELLED));
            return Err(Error::io(PathBuf::from(name), first));
        }
        let (mut ids, mut size) = (Vec::new(), 0);
        for (part_ids, part_size) in chunked.into_iter().flatten() {
            ids.extend(part_ids);
            size += part_size;
        }
        self.pipeline.bytes_read.fetch_add(size, Ordering::Relaxed);
        self.push_stream(comps, ids, size);
        Ok(size)
    }

    /// `name` split into path components, refused when a component is empty,
    /// `.` or `..`, or when it clashes with a stream already added.
    fn stream_path(&self, name: &str) -> Result<Vec<String>> {
        let comps: Vec<String> = name.split('/').map(String::from).collect();
        let bad_comp = comps.iter().any(|c| c.is_empty() || c == "." || c == "..");
        let clash = self.files.iter().any(|(other, _)| {
            let n = other.len().min(comps.len());
            other[..n] == comps[..n]
        });
        if bad_comp || clash {
            return Err(Error::invalid(
                "stream name",
                format!("{name:?} is empty, has an empty, '.' or '..' component, or clashes with another stream"),
            ));
        }
        Ok(comps)
    }

    fn push_stream(&mut self, comps: Vec<String>, ids: Vec<Id>, size: u64) {
        let mut node = Node::new(
            OsStr::new(comps.last().expect("split yields one")),
            NodeKind::File,
        );
        stamp(&mut node, 0o100600);
        node.size = size;
        node.content = Some(ids);
        self.files.push((comps, node));
        self.total_bytes += size;
    }

    /// Save the trees of `entries` (paths relative to this directory), deepest first.
    fn save_dir(&self, entries: Vec<(Vec<String>, Node)>) -> Result<Id> {
        let mut tree = Tree::default();
        let mut dirs: std::collections::BTreeMap<String, Vec<(Vec<String>, Node)>> =
            std::collections::BTreeMap::new();
        for (mut comps, node) in entries {
            if comps.len() == 1 {
                tree.nodes.push(node);
            } else {
                let first = comps.remove(0);
                dirs.entry(first).or_default().push((comps, node));
            }
        }
        for (name, sub) in dirs {
            let mut dir = Node::new(OsStr::new(&name), NodeKind::Dir);
            stamp(&mut dir, 0o040700);
            dir.subtree = Some(self.save_dir(sub)?);
            tree.nodes.push(dir);
        }
        self.pipeline.save_tree(tree)
    }

    /// Convenience for small in-memory files (metadata, manifests).
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<u64> {
        self.add_stream(name, &mut { bytes })
    }

    /// Write the root tree, flush packs and index, and save the snapshot.
    pub fn finish(self, metadata: Option<serde_json::Value>) -> Result<BackupOutcome> {
        let root_id = self.save_dir(self.files.clone())?;
        let bytes_read = self.pipeline.bytes_read.load(Ordering::Relaxed);
        let [d, t, raw, stored] = self.pipeline.finish()?;
        let stats = (d, t, raw, stored);
        let files = self.files.len() as u64;
        let summary = Summary {
            backup_start: Some(self.started),
            backup_end: Some(chrono::Local::now().fixed_offset()),
            files_new: files,
            total_files: files,
            total_bytes: self.total_bytes,
            bytes_read,
            data_blobs_new: stats.0,
            tree_blobs_new: stats.1,
            data_added: stats.2,
            data_added_stored: stats.3,
            ..Summary::default()
        };
        let paths = if self.opts.paths.is_empty() {
            self.files.iter().map(|(c, _)| c.join("/")).collect()
        } else {
            self.opts.paths.clone()
        };
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            time: self.opts.time.unwrap_or(self.started),
            hostname: self.opts.hostname.clone(),
            username: crate::util::username(),
            paths,
            tags: self.opts.tags.clone(),
            source: self.opts.source.clone(),
            tree: root_id,
            parent: None,
            pinned: false,
            summary: Some(summary),
            metadata,
            program: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
            original: None,
        };
        let snapshot_id = if self.opts.dry_run {
            None
        } else {
            Some(self.repo.save_snapshot(&snapshot)?)
        };
        Ok(BackupOutcome {
            snapshot_id,
            snapshot,
        })
    }
}
