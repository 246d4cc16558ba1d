//! `restore` and `dump`.

use std::io::Write;

use anyhow::Result;
use lifeboat_core::restorer::{self, RestoreOptions};
use lifeboat_core::tree::NodeKind;
use lifeboat_core::walk;
use serde_json::json;

use super::Exit;
use crate::args::{DumpArgs, GlobalArgs, RestoreArgs};
use crate::output::{bytes, print_json};
use crate::progress::Bar;
use crate::settings;

pub fn restore(g: &GlobalArgs, a: &RestoreArgs) -> Result<Exit> {
    if a.pitr.to_pgdata.is_some() {
        return super::pg::restore_to_pgdata(g, a);
    }
    if super::db::wants_db_restore(&a.db) {
        return super::db::restore(g, a);
    }
    let Some(target) = &a.target else {
        anyhow::bail!("nowhere to restore to\nhint: --target DIR, or for a database snapshot --to-postgres/--to-mysql/--to-redis-dir/--to-sqlite/--to-command, or --to-pgdata DIR for a PostgreSQL base backup");
    };
    let repo = settings::open_indexed(g)?;
    let (spec, subpath) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s, Some(p.to_string())),
        None => (a.snapshot.as_str(), None),
    };
    let snap = super::pick_snapshot(&repo, spec, &a.filter, a.at.as_deref())?;
    let opts = RestoreOptions {
        target: target.clone(),
        subpath,
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        overwrite: a.overwrite,
        verify: a.verify,
        dry_run: a.dry_run,
        owners: None,
        connections: settings::restore_connections(g),
        reads: settings::restore_reads(g),
    };
    let bar = Bar::new(settings::show_progress(g), !g.quiet && !g.json, "restore");
    let total = snap.snapshot.summary.as_ref().map_or(0, |s| s.total_bytes);
    lifeboat_core::progress::Progress::set_totals(&bar, 0, total);
    let summary = restorer::restore(&repo, &snap.id, snap.snapshot.tree, &opts, &bar)?;
    bar.finish();
    if g.json {
        print_json(
            &json!({"snapshot_id": snap.id, "target": target, "dry_run": a.dry_run, "summary": summary, "requests": settings::storage_stats()}),
        );
    } else if !g.quiet {
        if a.dry_run {
            for p in &summary.planned {
                println!("would restore {p}");
            }
            println!(
                "dry run: {} files ({}), {} dirs would be restored from snapshot {}; {} files already identical",
                summary.files,
                bytes(summary.bytes_total),
                summary.dirs,
                snap.id.short(),
                summary.files_skipped_identical
            );
        } else {
            println!(
                "restored snapshot {} to {}: {} files, {} dirs, {} links, {} written ({} packs read); {} files already identical{}",
                snap.id.short(),
                target.display(),
                summary.files,
                summary.dirs,
                summary.links,
                bytes(summary.bytes_written),
                summary.packs_read,
                summary.files_skipped_identical,
                if a.verify { format!("; {} files verified", summary.files_verified) } else { String::new() }
            );
        }
        for w in &summary.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(Exit::Ok)
}

pub fn dump(g: &GlobalArgs, a: &DumpArgs) -> Result<Exit> {
    let repo = settings::open_indexed(g)?;
    let snap = super::pick_snapshot(&repo, &a.snapshot, &a.filter, a.at.as_deref())?;
    let node = walk::find_node(&repo, &snap.id, snap.snapshot.tree, &a.path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match node.kind {
        NodeKind::File => {
            let mut r = walk::ContentReader::new(&repo, &node);
            std::io::copy(&mut r, &mut out)
                .map_err(|e| anyhow::anyhow!("dumping {}: {e}", a.path))?;
        }
        _ => walk::dump_tar(&repo, &node, &mut out)?,
    }
    out.flush()?;
    Ok(Exit::Ok)
}
