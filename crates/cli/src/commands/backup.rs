//! `backup PATH...` and `backup --stdin`.

use anyhow::{bail, Context, Result};
use lifeboat_core::archiver::{
    self, BackupOptions, BackupOutcome, ExcludeOptions, ParentChoice, StreamBackupOptions,
    StreamSnapshotWriter,
};
use lifeboat_core::writer::WriterOptions;
use serde_json::json;

use super::Exit;
use crate::args::{BackupArgs, GlobalArgs};
use crate::output::{bytes, print_json};
use crate::progress::Bar;
use crate::settings;

pub fn run(g: &GlobalArgs, a: &BackupArgs) -> Result<Exit> {
    if let Some(source) = &a.source {
        return super::db::backup(g, source);
    }
    if a.stdin && !a.paths.is_empty() {
        bail!("--stdin takes no paths\nhint: name the stream with --stdin-filename");
    }
    if !a.stdin && a.paths.is_empty() {
        bail!("nothing to back up\nhint: lifeboat backup PATH... (or --stdin to read a stream)");
    }
    let mut excludes = ExcludeOptions {
        exclude: a.exclude.clone(),
        iexclude: a.iexclude.clone(),
        exclude_if_present: a.exclude_if_present.clone(),
        exclude_larger_than: a
            .exclude_larger_than
            .as_deref()
            .map(settings::parse_size)
            .transpose()?,
    };
    for f in &a.exclude_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading exclude file {}", f.display()))?;
        excludes.exclude.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    // Validate inputs before asking for a password or touching the repository.
    archiver::Excludes::new(&excludes)?;
    for p in &a.paths {
        std::fs::symlink_metadata(p).with_context(|| format!("cannot back up {}", p.display()))?;
    }
    // The file system walk needs no key: it starts now and runs while the key
    // is derived and the index loads.
    let listing = if a.stdin {
        None
    } else {
        Some(archiver::Listing::start(
            &a.paths,
            &excludes,
            a.one_file_system,
        )?)
    };
    let repo = settings::open_indexed(g)?;
    let compression = match &a.compression {
        Some(c) => c.parse().map_err(anyhow::Error::msg)?,
        None => repo.config().compression(),
    };
    let writer = WriterOptions {
        compression,
        connections: settings::connections(g),
        dry_run: a.dry_run,
        ..WriterOptions::default()
    };
    let tags = settings::tags(&a.tag);
    let hostname = a.host.clone().unwrap_or_else(lifeboat_core::util::hostname);
    let time = a
        .time
        .as_deref()
        .map(lifeboat_core::select::parse_time)
        .transpose()?;
    let bar = Bar::new(settings::show_progress(g), !g.quiet && !g.json, "backup");
    let outcome = if let Some(listing) = listing {
        let parent = match &a.parent {
            None => ParentChoice::Auto,
            Some(spec) => {
                ParentChoice::Id(super::pick_snapshot(&repo, spec, &Default::default(), None)?.id)
            }
        };
        let opts = BackupOptions {
            paths: a.paths.clone(),
            excludes,
            one_file_system: a.one_file_system,
            tags,
            hostname,
            parent,
            force: a.force,
            dry_run: a.dry_run,
            writer,
            time,
            readers: 0,
        };
        archiver::backup_listed(&repo, &opts, listing, &bar)?
    } else {
        let opts = StreamBackupOptions {
            hostname,
            tags,
            source: "stdin".into(),
            paths: vec![a.stdin_filename.clone()],
            writer,
            dry_run: a.dry_run,
            time,
        };
        let mut w = StreamSnapshotWriter::new(&repo, opts, &bar);
        w.add_stream(&a.stdin_filename, &mut std::io::stdin().lock())?;
        w.finish(None)?
    };
    bar.finish();
    print_outcome(g, &outcome, a.dry_run);
    Ok(if outcome.is_partial() {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

fn print_outcome(g: &GlobalArgs, o: &BackupOutcome, dry_run: bool) {
    let s = o.snapshot.summary.clone().unwrap_or_default();
    if g.json {
        print_json(&json!({
            "snapshot_id": o.snapshot_id,
            "dry_run": dry_run,
            "partial": o.is_partial(),
            "parent": o.snapshot.parent,
            "summary": s,
            "requests": crate::settings::storage_stats(),
        }));
        return;
    }
    if g.quiet {
        return;
    }
    let secs = match (s.backup_start, s.backup_end) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    println!(
        "Files: {} new, {} changed, {} unmodified; {} dirs",
        s.files_new, s.files_changed, s.files_unmodified, s.dirs
    );
    println!(
        "Added to the repository: {} ({} stored) in {} data and {} tree blobs",
        bytes(s.data_added),
        bytes(s.data_added_stored),
        s.data_blobs_new,
        s.tree_blobs_new
    );
    println!(
        "Processed {} files, {} in {secs:.2}s",
        s.total_files,
        bytes(s.total_bytes)
    );
    match &o.snapshot_id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was written"),
    }
    if !s.warnings.is_empty() {
        eprintln!(
            "warning: {} entries could not be backed up (the snapshot is partial, exit code 3):",
            s.warnings.len()
        );
        for w in &s.warnings {
            eprintln!("  {w}");
        }
    }
}
