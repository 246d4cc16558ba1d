//! One function per command; each resolves its settings, calls the libraries
//! and prints. Returns the process exit code.

use anyhow::Result;

use crate::args::{Cli, Command};

mod backup;
mod check;
mod copy;
mod db;
mod inspect;
mod keys;
mod maintenance;
mod pg;
mod quickstart;
mod restore;

/// Process exit codes (documented in README and `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Some entries could not be backed up; the snapshot was written without them.
    Partial = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

pub fn run(cli: Cli) -> Result<Exit> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => keys::init(g, &a).and_then(|e| {
            if a.append_only {
                maintenance::enable_append_only_after_init(g).map(|()| e)
            } else {
                Ok(e)
            }
        }),
        Command::Backup(a) => backup::run(g, &a),
        Command::Restore(a) => restore::restore(g, &a),
        Command::Dump(a) => restore::dump(g, &a),
        Command::Snapshots(a) => inspect::snapshots(g, &a),
        Command::Ls(a) => inspect::ls(g, &a),
        Command::Diff(a) => inspect::diff(g, &a),
        Command::Stats(a) => inspect::stats(g, &a),
        Command::Cat(a) => inspect::cat(g, &a),
        Command::Check(a) => {
            maintenance::parity_repair_before_check(g, &a).and_then(|()| check::run(g, &a))
        }
        Command::Key(k) => keys::key(g, k),
        Command::Quickstart(a) => quickstart::run(g, &a),
        Command::Forget(a) => maintenance::forget(g, &a),
        Command::Pin(a) => maintenance::pin(g, &a, true),
        Command::Unpin(a) => maintenance::pin(g, &a, false),
        Command::Prune(a) => maintenance::prune(g, &a.opts, a.dry_run),
        Command::Repair(c) => maintenance::repair(g, c),
        Command::Config(c) => maintenance::config(g, c),
        Command::Parity(a) => maintenance::parity(g, &a),
        Command::Pg(c) => pg::run(g, c),
        Command::Copy(a) => copy::run(g, &a),
    }
}

/// Resolve a snapshot spec with filters and an optional `--at` time.
pub(crate) fn pick_snapshot(
    repo: &lifeboat_core::repository::IndexedRepository,
    spec: &str,
    filter: &crate::args::FilterArgs,
    at: Option<&str>,
) -> Result<lifeboat_core::snapshot::SnapshotEntry> {
    let snaps = repo.snapshots()?;
    let at = at.map(lifeboat_core::select::parse_time).transpose()?;
    Ok(lifeboat_core::select::resolve(
        &snaps,
        spec,
        &to_filter(filter),
        at,
    )?)
}

pub(crate) fn to_filter(f: &crate::args::FilterArgs) -> lifeboat_core::select::SnapshotFilter {
    lifeboat_core::select::SnapshotFilter {
        hosts: f.hosts.clone(),
        tags: f.tags.clone(),
        paths: f.paths.clone(),
        source: None,
    }
}
