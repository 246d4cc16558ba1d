//! `snapshots`, `ls`, `diff`, `stats`, `cat`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use lifeboat_core::blob::Id;
use lifeboat_core::crypto::ObjectKind;
use lifeboat_core::index::IndexFile;
use lifeboat_core::repository::IndexedRepository;
use lifeboat_core::tree::{Node, NodeKind};
use lifeboat_core::walk;
use serde::Serialize;
use serde_json::json;

use super::Exit;
use crate::args::{CatArgs, DiffArgs, GlobalArgs, LsArgs, SnapshotsArgs, StatsArgs};
use crate::output::{bytes, print_json, table};
use crate::settings;

pub fn snapshots(g: &GlobalArgs, a: &SnapshotsArgs) -> Result<Exit> {
    let repo = settings::open_repo(g)?;
    let snaps = super::to_filter(&a.filter).apply(repo.snapshots()?);
    if g.json {
        print_json(&snaps);
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|s| {
            let sn = &s.snapshot;
            vec![
                s.id.short(),
                sn.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                sn.hostname.clone(),
                sn.source.clone(),
                sn.tags.join(","),
                sn.paths.join(","),
                sn.summary
                    .as_ref()
                    .map(|x| bytes(x.total_bytes))
                    .unwrap_or_default(),
                if sn.summary.as_ref().is_some_and(|x| !x.warnings.is_empty()) {
                    "partial".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "Time", "Host", "Source", "Tags", "Paths", "Size", "Note"],
            &rows
        )
    );
    println!("{} snapshots", snaps.len());
    Ok(Exit::Ok)
}

#[derive(Serialize)]
struct LsEntry<'a> {
    path: String,
    #[serde(flatten)]
    node: &'a Node,
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::File => '-',
    };
    let m = n.mode;
    let bits = ['r', 'w', 'x'];
    let mut s = String::from(t);
    for i in (0..9).rev() {
        s.push(if m & (1 << i) != 0 {
            bits[(8 - i) % 3]
        } else {
            '-'
        });
    }
    s
}

fn time_string(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
    .unwrap_or_default()
}

pub fn ls(g: &GlobalArgs, a: &LsArgs) -> Result<Exit> {
    let repo = settings::open_indexed(g)?;
    let snap = super::pick_snapshot(&repo, &a.snapshot, &a.filter, None)?;
    let node = walk::find_node(&repo, &snap.id, snap.snapshot.tree, &a.path)?;
    let base = PathBuf::from("/").join(a.path.trim_start_matches('/'));
    let mut entries: Vec<(PathBuf, Node)> = Vec::new();
    if node.kind != NodeKind::Dir || base == Path::new("/") {
        if base != Path::new("/") {
            entries.push((base.clone(), node.clone()));
        }
    } else {
        entries.push((base.clone(), node.clone()));
    }
    if let Some(sub) = node.subtree {
        walk::walk(&repo, &sub, &base, &mut |p, n| {
            entries.push((p, n));
            Ok(true)
        })?;
    }
    if g.json {
        let v: Vec<LsEntry> = entries
            .iter()
            .map(|(p, n)| LsEntry {
                path: p.to_string_lossy().into_owned(),
                node: n,
            })
            .collect();
        print_json(&v);
        return Ok(Exit::Ok);
    }
    for (p, n) in &entries {
        if a.long {
            let target = n
                .os_link_target()
                .map(|t| format!(" -> {}", t.to_string_lossy()))
                .unwrap_or_default();
            println!(
                "{} {:>8} {:>8} {:>12} {} {}{}",
                mode_string(n),
                if n.user.is_empty() {
                    n.uid.to_string()
                } else {
                    n.user.clone()
                },
                if n.group.is_empty() {
                    n.gid.to_string()
                } else {
                    n.group.clone()
                },
                n.size,
                time_string(n.mtime_ns),
                p.display(),
                target
            );
        } else {
            println!("{}", p.display());
        }
    }
    Ok(Exit::Ok)
}

#[derive(Serialize)]
struct Change {
    change: &'static str,
    path: String,
}

fn diff_trees(
    repo: &IndexedRepository,
    a: Option<Id>,
    b: Option<Id>,
    dir: &Path,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = a
        .map(|id| repo.load_tree(&id))
        .transpose()?
        .unwrap_or_default();
    let tb = b
        .map(|id| repo.load_tree(&id))
        .transpose()?
        .unwrap_or_default();
    let mut names: Vec<std::ffi::OsString> = ta
        .nodes
        .iter()
        .chain(&tb.nodes)
        .map(|n| n.os_name())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let p = dir.join(&name);
        let (na, nb) = (ta.find(&name), tb.find(&name));
        let (subtree_a, subtree_b) = (na.and_then(|n| n.subtree), nb.and_then(|n| n.subtree));
        match (na, nb) {
            (Some(_), None) => out.push(Change {
                change: "-",
                path: p.display().to_string(),
            }),
            (None, Some(_)) => out.push(Change {
                change: "+",
                path: p.display().to_string(),
            }),
            (Some(x), Some(y)) => {
                if x.kind != y.kind {
                    out.push(Change {
                        change: "T",
                        path: p.display().to_string(),
                    });
                } else if x.content != y.content || x.link_target != y.link_target {
                    out.push(Change {
                        change: "M",
                        path: p.display().to_string(),
                    });
                } else if x.mode != y.mode
                    || x.uid != y.uid
                    || x.gid != y.gid
                    || (x.kind != NodeKind::Dir && x.mtime_ns != y.mtime_ns)
                {
                    out.push(Change {
                        change: "U",
                        path: p.display().to_string(),
                    });
                }
            }
            (None, None) => {}
        }
        if subtree_a.is_some() || subtree_b.is_some() {
            // A directory that appeared or vanished: list its contents too.
            diff_trees(repo, subtree_a, subtree_b, &p, out)?;
        }
    }
    Ok(())
}

pub fn diff(g: &GlobalArgs, a: &DiffArgs) -> Result<Exit> {
    let repo = settings::open_indexed(g)?;
    let none = Default::default();
    let s1 = super::pick_snapshot(&repo, &a.first, &none, None)?;
    let s2 = super::pick_snapshot(&repo, &a.second, &none, None)?;
    let mut changes = Vec::new();
    diff_trees(
        &repo,
        Some(s1.snapshot.tree),
        Some(s2.snapshot.tree),
        Path::new("/"),
        &mut changes,
    )?;
    if g.json {
        print_json(&json!({"first": s1.id, "second": s2.id, "changes": changes}));
    } else {
        for c in &changes {
            println!("{}    {}", c.change, c.path);
        }
        let count = |k: &str| changes.iter().filter(|c| c.change == k).count();
        if !g.quiet {
            println!(
                "\n{} -> {}: {} added, {} removed, {} modified, {} metadata only, {} type changed",
                s1.id.short(),
                s2.id.short(),
                count("+"),
                count("-"),
                count("M"),
                count("U"),
                count("T")
            );
        }
    }
    Ok(Exit::Ok)
}

#[derive(Serialize, Default)]
struct Stats {
    snapshots: usize,
    /// Sum of file sizes over the selected snapshots.
    logical_bytes: u64,
    total_files: u64,
    /// Distinct blobs the selected snapshots reference.
    unique_blobs: u64,
    unique_raw_bytes: u64,
    unique_stored_bytes: u64,
    /// Everything in the repository's storage.
    repository_bytes: u64,
    packs: u64,
    dedup_ratio: f64,
    compression_ratio: f64,
    space_saving_ratio: f64,
}

pub fn stats(g: &GlobalArgs, a: &StatsArgs) -> Result<Exit> {
    let repo = settings::open_indexed(g)?;
    let all = repo.snapshots()?;
    let selected: Vec<_> = if a.snapshots.is_empty() {
        all.clone()
    } else {
        a.snapshots
            .iter()
            .map(|s| {
                Ok(lifeboat_core::select::resolve(
                    &all,
                    s,
                    &Default::default(),
                    None,
                )?)
            })
            .collect::<Result<_>>()?
    };
    let mut st = Stats {
        snapshots: selected.len(),
        ..Default::default()
    };
    let mut tree_sizes: HashMap<Id, (u64, u64)> = HashMap::new();
    let mut blobs: HashSet<Id> = HashSet::new();
    fn visit(
        repo: &IndexedRepository,
        id: Id,
        memo: &mut HashMap<Id, (u64, u64)>,
        blobs: &mut HashSet<Id>,
    ) -> Result<(u64, u64)> {
        if let Some(v) = memo.get(&id) {
            return Ok(*v);
        }
        blobs.insert(id);
        let t = repo.load_tree(&id)?;
        let (mut size, mut files) = (0, 0);
        for n in &t.nodes {
            if let Some(sub) = n.subtree {
                let (s, f) = visit(repo, sub, memo, blobs)?;
                size += s;
                files += f;
            } else if n.kind == NodeKind::File {
                size += n.size;
                files += 1;
                blobs.extend(n.content.iter().flatten().copied());
            }
        }
        memo.insert(id, (size, files));
        Ok((size, files))
    }
    for s in &selected {
        let (size, files) = visit(&repo, s.snapshot.tree, &mut tree_sizes, &mut blobs)?;
        st.logical_bytes += size;
        st.total_files += files;
    }
    // A compression group's range is stored once for all its members: it
    // counts once, when any member is used.
    let mut group_ranges: HashSet<(Id, u32)> = HashSet::new();
    for id in &blobs {
        if let Some(l) = repo.index().get(id) {
            st.unique_blobs += 1;
            st.unique_raw_bytes += l.raw_length as u64;
            if !lifeboat_core::group::is_grouped(l.compression)
                || group_ranges.insert((l.pack, l.offset))
            {
                st.unique_stored_bytes += l.length as u64;
            }
        }
    }
    for prefix in ["data", "index", "snapshots", "keys"] {
        let list = repo.storage().list(prefix)?;
        if prefix == "data" {
            st.packs = list.len() as u64;
        }
        st.repository_bytes += list.iter().map(|m| m.size).sum::<u64>();
    }
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            (a as f64 / b as f64 * 100.0).round() / 100.0
        }
    };
    st.dedup_ratio = ratio(st.logical_bytes, st.unique_raw_bytes);
    st.compression_ratio = ratio(st.unique_raw_bytes, st.unique_stored_bytes);
    st.space_saving_ratio = ratio(st.logical_bytes, st.unique_stored_bytes);
    if g.json {
        print_json(&st);
    } else {
        println!("Snapshots:             {}", st.snapshots);
        println!("Files (all snapshots): {}", st.total_files);
        println!("Logical size:          {}", bytes(st.logical_bytes));
        println!(
            "Unique data:           {} in {} blobs",
            bytes(st.unique_raw_bytes),
            st.unique_blobs
        );
        println!("Stored (compressed):   {}", bytes(st.unique_stored_bytes));
        println!(
            "Repository on storage: {} in {} packs",
            bytes(st.repository_bytes),
            st.packs
        );
        println!("Dedup ratio:           {:.2}x", st.dedup_ratio);
        println!("Compression ratio:     {:.2}x", st.compression_ratio);
        println!("Overall saving:        {:.2}x", st.space_saving_ratio);
    }
    Ok(Exit::Ok)
}

pub fn cat(g: &GlobalArgs, a: &CatArgs) -> Result<Exit> {
    let _ = g;
    let need_id = || {
        a.id.clone()
            .ok_or_else(|| anyhow::anyhow!("`cat {}` needs an id", a.kind))
    };
    match a.kind.as_str() {
        "config" => {
            let repo = settings::open_repo(g)?;
            print_json(&repo.config().display_json());
        }
        "snapshot" => {
            let repo = settings::open_repo(g)?;
            let snaps = repo.snapshots()?;
            let s = lifeboat_core::select::resolve(&snaps, &need_id()?, &Default::default(), None)?;
            print_json(&s);
        }
        "index" => {
            let repo = settings::open_repo(g)?;
            let id: Id = need_id()?.parse()?;
            let f = IndexFile::decode(&repo.load_object("index", ObjectKind::Index, &id)?)
                .map_err(anyhow::Error::msg)?;
            let packs: Vec<_> = f
                .packs
                .iter()
                .map(|p| json!({"id": p.id, "type": p.blob_type, "blobs": p.blobs.iter().map(|b| json!({"id": b.id, "offset": b.offset, "length": b.length, "raw_length": b.raw_length, "compression": b.compression})).collect::<Vec<_>>()}))
                .collect();
            print_json(&json!({"supersedes": f.supersedes, "packs": packs}));
        }
        "key" => {
            let repo = settings::open_repo(g)?;
            let want = need_id()?;
            let (id, slot) = repo
                .key_slots()?
                .into_iter()
                .find(|(id, _)| id.starts_with(&want))
                .ok_or_else(|| anyhow::anyhow!("no key matches {want:?}"))?;
            print_json(&json!({"id": id, "slot": slot}));
        }
        "tree" => {
            let repo = settings::open_indexed(g)?;
            let id: Id = need_id()?.parse()?;
            print_json(&repo.load_tree(&id)?);
        }
        other => {
            bail!("unknown object kind {other:?}\nhint: one of config, snapshot, index, key, tree")
        }
    }
    Ok(Exit::Ok)
}
