//! Trees decoded ahead of a depth-first walk (the backup's parent snapshot,
//! [`crate::walk::walk`] for restore, `ls` and `find`).

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::blob::Id;
use crate::repository::IndexedRepository;
use crate::tree::Tree;

/// Parent-snapshot trees decoded ahead of the walker. The walker asks for the
/// trees of a directory's subdirectories when it enters it; a worker that
/// decodes a tree asks for that tree's subdirectories in turn, so decoding runs
/// ahead down the tree rather than one level at a time (the walker used to wait
/// for the first subdirectory of every directory it entered). Requests are
/// served last in, first out, pushed in reverse name order: the next tree
/// decoded is the one the walker, depth first and in name order, needs next.
/// At most [`PREFETCH_TREES`] trees and [`PREFETCH_BYTES`] of tree JSON are
/// pending or held; the walker takes each tree once and discards what it will
/// not visit.
pub(crate) struct TreesAhead<'a> {
    repo: &'a IndexedRepository,
    /// The parts of tree packs read last (most recent last): trees are read
    /// [`TREE_WINDOW`] at a time, not one ranged read each (the parent's trees
    /// of a directory and its subdirectories were written close together).
    windows: Mutex<Vec<(Id, u64, bytes::Bytes)>>,
    /// [`TREE_WINDOW`] (smaller in tests).
    window: u64,
    state: Mutex<AheadState>,
    /// A tree became ready (the walker waits on it).
    ready: parking_lot::Condvar,
    /// A request was pushed, or the walk ended (workers wait on it).
    work: parking_lot::Condvar,
}

#[derive(Default)]
struct AheadState {
    slots: HashMap<Id, Slot>,
    /// Requests not yet taken by a worker, the next on top.
    stack: Vec<Id>,
    bytes: u64,
    closed: bool,
}

enum Slot {
    Pending(u64),
    /// `None`: the tree could not be loaded (the walker goes on without it).
    Ready(Option<Tree>, u64),
}

/// Parent trees decoded ahead of the walker: at most this many, and at most
/// this many bytes of tree JSON (a decoded tree takes one to two times that).
const PREFETCH_TREES: usize = 256;
const PREFETCH_BYTES: u64 = 16 << 20;

/// Parent trees are read in aligned windows of this size, and this many
/// windows are kept.
const TREE_WINDOW: u64 = 1 << 20;
const TREE_WINDOWS: usize = 4;

impl<'a> TreesAhead<'a> {
    pub(crate) fn new(repo: &'a IndexedRepository) -> Self {
        TreesAhead {
            repo,
            windows: Mutex::new(Vec::new()),
            window: TREE_WINDOW,
            state: Mutex::new(AheadState::default()),
            ready: parking_lot::Condvar::new(),
            work: parking_lot::Condvar::new(),
        }
    }

    /// Load tree `id` from a window of its pack (read now if no window kept
    /// holds it). A tree the index does not list (the readers' fallback) is
    /// loaded on its own.
    pub(crate) fn load(&self, id: &Id) -> Option<Tree> {
        let index = self.repo.index();
        let (Some(loc), Some(pack_end)) = (index.get(id), index.pack_end(id)) else {
            return self.repo.load_tree(id).ok();
        };
        let (offset, end) = (
            u64::from(loc.offset),
            u64::from(loc.offset) + u64::from(loc.length),
        );
        let cached = self
            .windows
            .lock()
            .iter()
            .find(|(pack, start, data)| {
                *pack == loc.pack && *start <= offset && end <= start + data.len() as u64
            })
            .cloned();
        let (start, data) = match cached {
            Some((_, start, data)) => (start, data),
            None => {
                let w = self.window;
                let start = offset / w * w;
                let stop = ((offset / w + 1) * w).clamp(end, pack_end.max(end));
                let data = match self
                    .repo
                    .storage()
                    .get(&crate::pack::pack_key(&loc.pack), Some(start..stop))
                {
                    Ok(data) if data.len() as u64 >= end - start => data,
                    // Short or failed: the tree alone, through the usual path.
                    _ => return self.repo.load_tree(id).ok(),
                };
                let mut windows = self.windows.lock();
                if windows.len() >= TREE_WINDOWS {
                    windows.remove(0);
                }
                windows.push((loc.pack, start, data.clone()));
                (start, data)
            }
        };
        let sealed = &data[(offset - start) as usize..(end - start) as usize];
        let tree = crate::repository::BlobBuffers::with_this_thread(|bufs| {
            bufs.new_read();
            self.repo
                .decode_blob_with(id, crate::repository::BlobAt::of(&loc), sealed, bufs)
                .ok()
                .and_then(|plain| Tree::deserialize(plain).ok())
        });
        tree
    }

    /// Ask for the trees of `tree`'s subdirectories.
    pub(crate) fn request_children(&self, tree: &Tree) {
        let subdirs: Vec<Id> = tree.subtrees().collect();
        self.request(&subdirs);
    }

    /// Ask for these trees, first one first, as far as the budget allows
    /// (what does not fit is loaded by the walker itself).
    pub(crate) fn request(&self, ids: &[Id]) {
        let mut st = self.state.lock();
        if self.request_locked(&mut st, ids) {
            drop(st);
            self.work.notify_all();
        }
    }

    /// [`Self::request`] under the lock; true if anything was added.
    fn request_locked(&self, st: &mut AheadState, ids: &[Id]) -> bool {
        if st.closed {
            return false;
        }
        let mut added = Vec::new();
        for &id in ids {
            if st.slots.contains_key(&id) {
                continue;
            }
            let Some(size) = self.repo.index().get(&id).map(|l| u64::from(l.raw_length)) else {
                continue;
            };
            if st.slots.len() >= PREFETCH_TREES || st.bytes + size > PREFETCH_BYTES {
                break;
            }
            st.slots.insert(id, Slot::Pending(size));
            st.bytes += size;
            added.push(id);
        }
        let any = !added.is_empty();
        st.stack.extend(added.into_iter().rev());
        any
    }

    /// The tree `id` if it was requested (waiting for it if it is being
    /// decoded); `None` if it was not, and the caller loads it.
    pub(crate) fn take(&self, id: &Id) -> Option<Option<Tree>> {
        let mut st = self.state.lock();
        loop {
            match st.slots.get(id)? {
                &Slot::Pending(size) => {
                    if let Some(at) = st.stack.iter().rposition(|x| x == id) {
                        // No worker has started it: decode it here rather
                        // than wait behind the requests stacked above it.
                        st.stack.remove(at);
                        st.slots.remove(id);
                        st.bytes -= size;
                        drop(st);
                        return Some(self.load(id));
                    }
                    self.ready.wait(&mut st);
                }
                Slot::Ready(..) => {
                    let Some(Slot::Ready(tree, size)) = st.slots.remove(id) else {
                        unreachable!("matched Ready under the lock")
                    };
                    st.bytes -= size;
                    return Some(tree);
                }
            }
        }
    }

    /// Drop `id` (a subdirectory the walk did not visit) and what was decoded
    /// below it.
    pub(crate) fn discard(&self, id: Id) {
        let mut st = self.state.lock();
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            match st.slots.remove(&id) {
                Some(Slot::Ready(tree, size)) => {
                    st.bytes -= size;
                    todo.extend(tree.iter().flat_map(Tree::subtrees));
                }
                // A worker that finishes it finds no slot and drops it.
                Some(Slot::Pending(size)) => st.bytes -= size,
                None => {}
            }
        }
    }

    /// A worker: decode requested trees until the walk ends.
    pub(crate) fn work(&self) {
        loop {
            let id = {
                let mut st = self.state.lock();
                loop {
                    if st.closed {
                        return;
                    }
                    match st.stack.pop() {
                        // Discarded before a worker got to it.
                        Some(id) if !matches!(st.slots.get(&id), Some(Slot::Pending(_))) => {}
                        Some(id) => break id,
                        None => self.work.wait(&mut st),
                    }
                }
            };
            // A panic here must not leave the walker waiting for the slot.
            let tree = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load(&id)))
                .ok()
                .flatten();
            let mut st = self.state.lock();
            let Some(slot @ Slot::Pending(_)) = st.slots.get_mut(&id) else {
                continue; // discarded (or taken by the walker) meanwhile
            };
            let Slot::Pending(size) = *slot else {
                unreachable!("matched Pending")
            };
            let subdirs: Vec<Id> = tree.iter().flat_map(Tree::subtrees).collect();
            *slot = Slot::Ready(tree, size);
            // Under the same lock: a discard of this tree also finds these.
            let added = self.request_locked(&mut st, &subdirs);
            drop(st);
            self.ready.notify_all();
            if added {
                self.work.notify_all();
            }
        }
    }

    /// Start `workers` decoding threads on `scope`. The guard ends them when it
    /// is dropped: hold it for the walk, however the walk ends.
    pub(crate) fn start<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        workers: usize,
    ) -> CloseOnDrop<'a, 's> {
        let guard = CloseOnDrop(self);
        for _ in 0..workers {
            scope.spawn(|| self.work());
        }
        guard
    }

    /// End the workers (at the end of the walk, or when it fails or panics).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.work.notify_all();
    }
}

/// Closes a [`TreesAhead`] when the walk ends, however it ends.
pub(crate) struct CloseOnDrop<'a, 'b>(pub(crate) &'b TreesAhead<'a>);

impl Drop for CloseOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiver::{backup, BackupOptions};
    use crate::blob::BlobType;
    use crate::repository::{InitOptions, Repository};
    use lifeboat_storage::{DynStorage, MemoryStorage};
    use std::collections::HashSet;
    use std::sync::Arc;

    /// Every parent tree the walker asks for, in walk order, comes out of the
    /// trees-ahead cache equal to a plain `load_tree`, whatever the window
    /// size (trees straddling windows, windows evicted), with some
    /// subdirectories discarded unvisited; the workers end on close.
    #[test]
    fn trees_ahead_give_the_parent_trees_in_any_window_size() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for a in 0..6 {
            for b in 0..4 {
                let d = src.join(format!("a{a}/b{b}"));
                std::fs::create_dir_all(d.join("c")).unwrap();
                // Enough nodes for several tree packs (at least 64 KiB each).
                for f in 0..150 {
                    std::fs::write(
                        d.join(format!("file-with-a-longish-name-{f}")),
                        format!("{a}{b}{f}"),
                    )
                    .unwrap();
                }
                std::fs::write(d.join("c/g"), format!("{a}{b}g")).unwrap();
            }
        }
        let storage: DynStorage = Arc::new(MemoryStorage::new());
        let opts = InitOptions {
            kdf: crate::crypto::KdfParams::GENERATED,
            // Several tree packs (the writer's floor is 64 KiB): windows of
            // different packs cover the same offsets.
            min_pack_size: 1,
            ..InitOptions::default()
        };
        let repo = Repository::init(Arc::clone(&storage), "pw", &opts)
            .unwrap()
            .into_indexed()
            .unwrap();
        let backup_opts = BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        };
        let out = backup(&repo, &backup_opts, &crate::progress::NoProgress).unwrap();
        let repo = Repository::open(storage, "pw")
            .unwrap()
            .into_indexed()
            .unwrap();
        let root = repo.load_tree(&out.snapshot.tree).unwrap();
        let tree_packs: HashSet<Id> = repo
            .index()
            .iter()
            .filter(|(_, l)| l.blob_type == BlobType::Tree)
            .map(|(_, l)| l.pack)
            .collect();
        assert!(tree_packs.len() > 1, "the test needs several tree packs");
        for window in [16, 100, 4096, TREE_WINDOW] {
            let mut ahead = TreesAhead::new(&repo);
            ahead.window = window;
            let ahead = &ahead;
            std::thread::scope(|scope| {
                let _close = CloseOnDrop(ahead);
                for _ in 0..2 {
                    scope.spawn(move || ahead.work());
                }
                // Depth first, as the walker; skip every third subdirectory.
                let mut stack = vec![root.clone()];
                let mut seen = 0;
                while let Some(tree) = stack.pop() {
                    ahead.request_children(&tree);
                    for (i, id) in tree.subtrees().enumerate() {
                        if i % 3 == 2 {
                            continue;
                        }
                        let got = match ahead.take(&id) {
                            Some(t) => t,
                            None => ahead.load(&id),
                        }
                        .expect("the tree loads");
                        assert_eq!(got, repo.load_tree(&id).unwrap(), "window {window}");
                        seen += 1;
                        stack.push(got);
                    }
                    for id in tree.subtrees() {
                        ahead.discard(id);
                    }
                }
                assert!(seen > 30, "{seen}");
            });
            let st = ahead.state.lock();
            assert!(
                st.slots.is_empty() && st.bytes == 0,
                "window {window}: all taken or discarded"
            );
        }
    }
}
