//! `copy [SNAPSHOT...] --from-repo URL`: replicate snapshots from another
//! repository into the one given by --repo, copying only missing data.

use anyhow::{bail, Result};
use lifeboat_core::copy::{self, CopyMode, CopyOptions};
use lifeboat_core::snapshot::SnapshotEntry;
use lifeboat_core::writer::WriterOptions;
use serde_json::json;

use super::Exit;
use crate::args::{CopyArgs, GlobalArgs};
use crate::output::{bytes, print_json};
use crate::progress::Bar;
use crate::settings;

pub fn run(g: &GlobalArgs, a: &CopyArgs) -> Result<Exit> {
    let (from, from_password) = settings::from_repo(&a.from)?;
    let to = settings::repo_location(g)?;
    let (src, src_stats) = settings::open_repo_at(g, &from, &from_password, "source ")?;
    let to_password = settings::password(g, false)?;
    let (dst, dst_stats) = settings::open_repo_at(g, &to, &to_password, "")?;
    if src.config().id == dst.config().id {
        bail!("--from-repo {from} and --repo {to} are the same repository");
    }
    let src = src.into_indexed()?;
    let all = src.snapshots()?;
    let filter = super::to_filter(&a.filter);
    let selected: Vec<SnapshotEntry> = if a.snapshots.is_empty() {
        filter.apply(all)
    } else {
        a.snapshots
            .iter()
            .map(|spec| lifeboat_core::select::resolve(&all, spec, &filter, None))
            .collect::<Result<_, _>>()?
    };
    let dst = dst.into_indexed()?;
    let opts = CopyOptions {
        writer: WriterOptions {
            compression: dst.config().compression(),
            connections: settings::connections_for(g, &to),
            ..WriterOptions::default()
        },
        read_connections: settings::connections_for(g, &from),
        dry_run: a.dry_run,
    };
    let bar = Bar::new(settings::show_progress(g), false, "copy");
    let summary = copy::copy(&src, &dst, &selected, &opts, &bar)?;
    bar.finish();
    // WAL after the snapshots: a base backup copied without its WAL is still a
    // complete physical backup (its own WAL is inside it).
    let wal = if a.wal {
        Some(lifeboat_core::wal::copy_archive(
            src.repository(),
            dst.repository(),
            a.dry_run,
        )?)
    } else {
        None
    };
    if g.json {
        print_json(&json!({
            "source": from,
            "destination": to,
            "snapshots_selected": selected.len(),
            "summary": summary,
            "wal": wal,
            "requests": {
                "source": src_stats.snapshot(),
                "destination": dst_stats.snapshot(),
            },
        }));
        return Ok(Exit::Ok);
    }
    if g.quiet {
        return Ok(Exit::Ok);
    }
    if let Some(w) = &wal {
        println!(
            "WAL archive: {} files {} ({} stored), {} already there",
            w.copied,
            if a.dry_run {
                "would be copied"
            } else {
                "copied"
            },
            bytes(w.stored_bytes),
            w.present
        );
    }
    if selected.is_empty() {
        println!("no snapshot of {from} matches");
        return Ok(Exit::Ok);
    }
    for s in &summary.skipped {
        println!(
            "snapshot {} is already in the destination as {}",
            s.source.short(),
            s.existing.short()
        );
    }
    for c in &summary.copied {
        match &c.destination {
            Some(d) => println!(
                "copied snapshot {} ({} {} {}) to {}",
                c.source.short(),
                c.time.format("%Y-%m-%d %H:%M:%S"),
                c.hostname,
                c.paths.join(" "),
                d.short()
            ),
            None => println!(
                "would copy snapshot {} ({} {} {})",
                c.source.short(),
                c.time.format("%Y-%m-%d %H:%M:%S"),
                c.hostname,
                c.paths.join(" ")
            ),
        }
    }
    if summary.copied.is_empty() {
        println!("nothing to copy: every selected snapshot is already in the destination");
        return Ok(Exit::Ok);
    }
    println!(
        "{} {} data and {} tree blobs, {} ({} stored), in {} packs; {} blobs were already there",
        if a.dry_run { "would add" } else { "added" },
        summary.data_blobs_copied,
        summary.tree_blobs_copied,
        bytes(summary.bytes_copied),
        bytes(summary.bytes_stored),
        summary.packs_written,
        summary.blobs_already_present,
    );
    if summary.mode == CopyMode::Rechunk {
        println!(
            "the repositories do not share chunker parameters: file contents were re-chunked \
             ({} read from the source)\nhint: a destination created with `lifeboat init \
             --copy-chunker-params --from-repo {from}` receives blobs by id",
            bytes(summary.bytes_read)
        );
    }
    Ok(Exit::Ok)
}
