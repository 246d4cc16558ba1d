//! `check [--read-data | --read-data-subset n/m|P%]`.

use anyhow::{bail, Result};
use lifeboat_core::check::{self, CheckOptions, ReadDataSubset};

use super::Exit;
use crate::args::{CheckArgs, GlobalArgs};
use crate::output::print_json;
use crate::progress::Bar;
use crate::settings;

pub fn run(g: &GlobalArgs, a: &CheckArgs) -> Result<Exit> {
    let subset = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(s.parse::<ReadDataSubset>().map_err(anyhow::Error::msg)?),
        (None, true) => Some(ReadDataSubset::All),
        (None, false) => None,
    };
    let repo = settings::open_repo(g)?;
    let bar = Bar::new(
        settings::show_progress(g) && subset.is_some(),
        false,
        "check",
    );
    let report = check::check(&repo, &CheckOptions { read_data: subset }, &bar)?;
    bar.finish();
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["requests"] = serde_json::to_value(settings::storage_stats())?;
        print_json(&v);
    } else if !g.quiet || !report.ok() {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        for a in &report.affected_snapshots {
            eprintln!("snapshot {} ({}) is affected:", &a.snapshot[..8], a.time);
            for p in &a.paths {
                eprintln!("  {p}");
            }
        }
        if !g.quiet {
            println!(
                "checked {} snapshots, {} trees, {} data blobs, {} index files, {} packs{}",
                report.snapshots,
                report.trees,
                report.data_blobs_referenced,
                report.index_files,
                report.packs,
                if subset.is_some() {
                    format!(
                        "; read {} packs, {} blobs",
                        report.packs_read, report.blobs_read
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    if !report.ok() {
        bail!(
            "the repository has {} error(s){}",
            report.errors.len(),
            if report.affected_snapshots.is_empty() {
                String::new()
            } else {
                format!("; {} snapshot(s) affected", report.affected_snapshots.len())
            }
        );
    }
    if !g.json && !g.quiet {
        println!("no errors were found");
    }
    Ok(Exit::Ok)
}
