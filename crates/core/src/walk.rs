//! Walking snapshot trees: path lookup, listing, streaming file content.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::blob::Id;
use crate::error::{Error, Result};
use crate::repository::IndexedRepository;
use crate::tree::{Node, NodeKind, Tree};
use crate::trees_ahead::TreesAhead;

/// A pseudo-node for a snapshot's root directory.
pub fn root_node(tree: Id) -> Node {
    let mut n = Node::new(OsStr::new(""), NodeKind::Dir);
    n.mode = 0o040755;
    n.subtree = Some(tree);
    n
}

/// Find the node at `path` (absolute inside the snapshot, `/` for the root).
///
/// # Errors
/// [`Error::PathNotFound`] naming the path and snapshot.
pub fn find_node(repo: &IndexedRepository, snapshot: &Id, root: Id, path: &str) -> Result<Node> {
    let mut node = root_node(root);
    for comp in Path::new(path).components() {
        let name = match comp {
            Component::Normal(n) => n,
            Component::RootDir | Component::CurDir => continue,
            _ => {
                return Err(Error::invalid(
                    "path",
                    format!("{path:?} must not contain '..'"),
                ));
            }
        };
        let not_found = || Error::PathNotFound {
            path: path.to_string(),
            snapshot: snapshot.short(),
        };
        let sub = node.subtree.ok_or_else(not_found)?;
        let tree = repo.load_tree(&sub)?;
        node = tree.find(name).cloned().ok_or_else(not_found)?;
    }
    Ok(node)
}

/// Visit every node below `tree` depth-first in name order, with its path
/// relative to the tree, both handed over (a restore keeps every one: cloning
/// them was a tenth of its walk). Return `false` from the visitor to skip a
/// directory's contents.
///
/// Subdirectories' trees are read and decoded ahead of the visitor on two
/// worker threads ([`TreesAhead`], as for a backup's parent snapshot), a
/// window of their pack at a time: a restore's walk of 3.7k directories had
/// one core waiting on one ranged read and one decode after another.
///
/// # Errors
/// The first error loading a tree, or the visitor's error.
pub fn walk(
    repo: &IndexedRepository,
    tree: &Id,
    prefix: &Path,
    visit: &mut dyn FnMut(PathBuf, Node) -> Result<bool>,
) -> Result<()> {
    let ahead = TreesAhead::new(repo);
    std::thread::scope(|scope| {
        let _close = ahead.start(scope, 2);
        let root = repo.load_tree(tree)?;
        walk_tree(&ahead, repo, root, prefix, visit)
    })
}

fn walk_tree(
    ahead: &TreesAhead<'_>,
    repo: &IndexedRepository,
    tree: Tree,
    prefix: &Path,
    visit: &mut dyn FnMut(PathBuf, Node) -> Result<bool>,
) -> Result<()> {
    ahead.request_children(&tree);
    for node in tree.nodes {
        let path = prefix.join(node.os_name());
        let Some(sub) = node.subtree else {
            visit(path, node)?;
            continue;
        };
        if !visit(path.clone(), node)? {
            ahead.discard(sub);
            continue;
        }
        let child = match ahead.take(&sub) {
            Some(Some(t)) => t,
            // Not requested (over the budget, or a second directory with the
            // same tree), or it failed ahead: load it here, for its error.
            _ => repo.load_tree(&sub)?,
        };
        walk_tree(ahead, repo, child, &path, visit)?;
    }
    Ok(())
}

/// Streams a file's content in order. Neighbouring blobs of the same pack are
/// fetched with one ranged read (up to [`READ_AHEAD`] bytes), so a large stream
/// from a remote repository costs one request per run of blobs, not per blob.
pub struct ContentReader<'a> {
    repo: &'a IndexedRepository,
    ids: Vec<Id>,
    next: usize,
    ready: std::collections::VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

/// Most bytes one read-ahead fetches.
pub const READ_AHEAD: u64 = 16 << 20;

impl<'a> ContentReader<'a> {
    pub fn new(repo: &'a IndexedRepository, node: &Node) -> Self {
        Self {
            repo,
            ids: node.content.clone().unwrap_or_default(),
            next: 0,
            ready: std::collections::VecDeque::new(),
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Fetch the next run of blobs that sit back to back in one pack.
    fn fill(&mut self) -> Result<()> {
        let index = self.repo.index();
        let first = self.ids[self.next];
        let Some(loc) = index.get(&first) else {
            // Not indexed: let read_blob produce the precise error.
            self.ready.push_back(self.repo.read_blob(&first)?);
            self.next += 1;
            return Ok(());
        };
        if crate::group::is_grouped(loc.compression) {
            // A small file (or a file's last chunk) in a compression group:
            // read_blob reads the group once for the files that follow.
            self.ready.push_back(self.repo.read_blob(&first)?);
            self.next += 1;
            return Ok(());
        }
        let start = u64::from(loc.offset);
        let mut end = start + u64::from(loc.length);
        let mut run = vec![(first, loc)];
        while let Some(id) = self.ids.get(self.next + run.len()) {
            match index.get(id) {
                Some(l)
                    if l.pack == loc.pack
                        && !crate::group::is_grouped(l.compression)
                        && u64::from(l.offset) == end
                        && end - start < READ_AHEAD =>
                {
                    end += u64::from(l.length);
                    run.push((*id, l));
                }
                _ => break,
            }
        }
        let data = self
            .repo
            .storage()
            .get(&crate::pack::pack_key(&loc.pack), Some(start..end))?;
        for (id, l) in &run {
            let off = (u64::from(l.offset) - start) as usize;
            let sealed = data
                .get(off..off + l.length as usize)
                .ok_or_else(|| Error::damaged("pack", l.pack, "shorter than the index says"))?;
            self.ready.push_back(self.repo.decode_blob(
                id,
                crate::repository::BlobAt::of(l),
                sealed,
            )?);
        }
        self.next += run.len();
        Ok(())
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ready.is_empty() {
                if self.next == self.ids.len() {
                    return Ok(0);
                }
                self.fill().map_err(std::io::Error::other)?;
            }
            self.buf = self.ready.pop_front().unwrap_or_default();
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Write a tar archive of `node` (a directory or a single entry) to `out`.
///
/// # Errors
/// Repository errors, or I/O errors writing `out`.
pub fn dump_tar(repo: &IndexedRepository, node: &Node, out: &mut dyn std::io::Write) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    let append =
        |path: &Path, n: &Node, b: &mut tar::Builder<&mut dyn std::io::Write>| -> Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_mode(n.mode & 0o7777);
            h.set_uid(n.uid as u64);
            h.set_gid(n.gid as u64);
            h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
            let _ = h.set_username(&n.user);
            let _ = h.set_groupname(&n.group);
            let p: PathBuf = if path.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                path.to_path_buf()
            };
            match n.kind {
                NodeKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, &p, std::io::empty()).map_err(io)
                }
                NodeKind::File => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(n.size);
                    b.append_data(&mut h, &p, ContentReader::new(repo, n))
                        .map_err(io)
                }
                NodeKind::Symlink => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    let target = n.os_link_target().unwrap_or_default();
                    b.append_link(&mut h, &p, target).map_err(io)
                }
                NodeKind::Fifo => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_size(0);
                    b.append_data(&mut h, &p, std::io::empty()).map_err(io)
                }
                // Sockets and devices cannot be meaningfully archived by a non-root
                // reader; they are listed by `ls` and recreated by `restore`.
                _ => Ok(()),
            }
        };
    let name = node.os_name();
    let base = Path::new(&name);
    append(base, node, &mut builder)?;
    if let Some(sub) = node.subtree {
        walk(repo, &sub, base, &mut |p, n| {
            append(&p, &n, &mut builder)?;
            Ok(true)
        })?;
    }
    builder.finish().map_err(io)?;
    Ok(())
}
