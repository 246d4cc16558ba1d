//! `forget`, `pin`/`unpin`, `prune`, `repair index|snapshots`, `config`,
//! `parity`, and the parity step of `check --repair`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use lifeboat_core::forget::{self, ForgetOptions};
use lifeboat_core::parity::{self, ParityParams};
use lifeboat_core::prune::{self, PruneOptions, PruneReport};
use lifeboat_core::repair;
use lifeboat_core::retention::{
    parse_keep_count, GroupBy, RetentionDuration, RetentionPolicy, WalRetention,
};
use lifeboat_core::wal;
use lifeboat_core::writer::WriterOptions;
use lifeboat_storage::ObjectLockSetting;
use serde_json::json;

use super::{to_filter, Exit};
use crate::args::{
    CheckArgs, ConfigCommand, ForgetArgs, GlobalArgs, ParityArgs, PinArgs, PruneOptionArgs,
    RepairCommand,
};
use crate::output::{bytes, print_json, table};
use crate::settings;

/// Add a hint to the core's append-only refusal.
fn with_hint(e: lifeboat_core::Error) -> anyhow::Error {
    let msg = e.to_string();
    if msg.contains("append-only") {
        anyhow!("{msg}\nhint: `lifeboat config show` shows the mode; it can only be turned off with `lifeboat config set append-only false --allow-disable`")
    } else if matches!(e, lifeboat_core::Error::Retained { .. }) {
        anyhow!("{msg}\nhint: the repository sets S3 Object Lock (`lifeboat config show`); nothing was deleted")
    } else {
        e.into()
    }
}

fn count(flag: &str, v: &Option<String>) -> Result<u32> {
    v.as_deref()
        .map(|s| parse_keep_count(s).map_err(|e| anyhow!("--{flag}: {e}")))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn duration(flag: &str, v: &Option<String>) -> Result<RetentionDuration> {
    v.as_deref()
        .map(|s| {
            s.parse::<RetentionDuration>()
                .map_err(|e| anyhow!("--{flag}: {e}"))
        })
        .transpose()
        .map(|d| d.unwrap_or(RetentionDuration::ZERO))
}

/// Resolve the policy flags.
fn policy(a: &ForgetArgs) -> Result<RetentionPolicy> {
    let mut p = RetentionPolicy {
        keep_last: count("keep-last", &a.keep_last)?,
        keep_hourly: count("keep-hourly", &a.keep_hourly)?,
        keep_daily: count("keep-daily", &a.keep_daily)?,
        keep_weekly: count("keep-weekly", &a.keep_weekly)?,
        keep_monthly: count("keep-monthly", &a.keep_monthly)?,
        keep_yearly: count("keep-yearly", &a.keep_yearly)?,
        keep_within: duration("keep-within", &a.keep_within)?,
        keep_within_hourly: duration("keep-within-hourly", &a.keep_within_hourly)?,
        keep_within_daily: duration("keep-within-daily", &a.keep_within_daily)?,
        keep_within_weekly: duration("keep-within-weekly", &a.keep_within_weekly)?,
        keep_within_monthly: duration("keep-within-monthly", &a.keep_within_monthly)?,
        keep_within_yearly: duration("keep-within-yearly", &a.keep_within_yearly)?,
        keep_tags: a.keep_tags.clone(),
        ..RetentionPolicy::default()
    };
    if let Some(n) = a.keep_newest_min {
        p.keep_newest_min = n;
    }
    Ok(p)
}

/// `30s`, `15m`, `24h`, `2d`, `0`.
pub fn parse_grace(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("invalid duration {s:?}: expected e.g. 24h, 30m, 2d or 0"))?;
    Ok(Duration::from_secs(n * mult))
}

fn percent(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow!("invalid percentage {s:?}: expected e.g. 5%"))?;
    if !(0.0..=100.0).contains(&v) {
        bail!("percentage {s:?} is outside 0..100");
    }
    Ok(v / 100.0)
}

fn prune_options(g: &GlobalArgs, a: &PruneOptionArgs, dry_run: bool) -> Result<PruneOptions> {
    Ok(PruneOptions {
        grace: parse_grace(&a.grace).context("--grace")?,
        max_unused: percent(&a.max_unused).context("--max-unused")?,
        max_repack: a
            .max_repack
            .as_deref()
            .map(settings::parse_size)
            .transpose()
            .context("--max-repack")?,
        dry_run,
        writer: WriterOptions {
            connections: settings::connections(g),
            ..WriterOptions::default()
        },
    })
}

/// `--keep-pitr`: WAL retention over the base backups the snapshot policy left.
fn forget_wal(
    repo: &lifeboat_core::repository::Repository,
    a: &ForgetArgs,
    report: &forget::ForgetReport,
) -> Result<Option<wal::WalRetentionReport>> {
    let Some(window) = a.keep_pitr.as_ref() else {
        return Ok(None);
    };
    let window = duration("keep-pitr", &Some(window.clone()))?;
    let gone: std::collections::HashSet<_> = report.to_remove().collect();
    let mut kept = repo.snapshots().map_err(with_hint)?;
    kept.retain(|s| !gone.contains(&s.id));
    let now = chrono::Utc::now().fixed_offset();
    let r = wal::apply_retention(repo, &kept, WalRetention::new(window), now, a.dry_run)
        .map_err(with_hint)?;
    Ok(Some(r))
}

fn print_wal_retention(r: &wal::WalRetentionReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for c in &r.clusters {
        println!(
            "\nWAL of cluster {} (PITR window {}, {} kept base backup(s)): {verb} {} of {} file(s), {}{}",
            c.system_identifier,
            r.pitr_window,
            c.kept_bases,
            c.removable.len(),
            c.archived_files,
            bytes(c.removable_bytes),
            c.keep_from
                .as_ref()
                .map(|k| format!("; keeping everything from segment {k}"))
                .unwrap_or_else(|| "; no kept base backup, keeping all".into())
        );
        if c.locked > 0 {
            println!(
                "  {} more file(s) kept: under S3 Object Lock retention",
                c.locked
            );
        }
        if r.dry_run {
            for f in &c.removable {
                println!("  {}", f.name);
            }
        }
    }
}

pub fn forget(g: &GlobalArgs, a: &ForgetArgs) -> Result<Exit> {
    let opts = ForgetOptions {
        policy: policy(a)?,
        group_by: match &a.group_by {
            Some(s) => s
                .parse::<GroupBy>()
                .map_err(|e| anyhow!("--group-by: {e}"))?,
            None => GroupBy::default(),
        },
        filter: to_filter(&a.filter),
        dry_run: a.dry_run,
    };
    let repo = settings::open_repo(g)?;
    let report = forget::forget(&repo, &opts).map_err(with_hint)?;
    let wal = forget_wal(&repo, a, &report)?;
    let pruned = if a.prune && !a.dry_run {
        Some(prune::prune(&repo, &prune_options(g, &a.prune_opts, false)?).map_err(with_hint)?)
    } else {
        None
    };
    if g.json {
        print_json(
            &json!({"groups": report.groups, "removed": report.removed, "locked": report.locked, "dry_run": a.dry_run, "prune": pruned, "wal": wal}),
        );
        return Ok(Exit::Ok);
    }
    if let Some(w) = wal.as_ref().filter(|_| !g.quiet) {
        print_wal_retention(w);
    }
    if !g.quiet {
        println!("Applying policy: {}", opts.policy);
        for grp in &report.groups {
            let key = grp.key.to_string();
            if !key.is_empty() {
                println!("\nsnapshots for {key}:");
            }
            let rows: Vec<Vec<String>> = grp
                .snapshots
                .iter()
                .map(|d| {
                    let s = &d.snapshot.snapshot;
                    vec![
                        d.snapshot.id.to_hex()[..8].to_string(),
                        s.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                        s.hostname.clone(),
                        s.tags.join(","),
                        if d.is_kept() {
                            format!(
                                "keep: {}",
                                d.reasons
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        } else if let Some(l) = report.locked_until(&d.snapshot.id) {
                            format!(
                                "keep: object lock ({}) until {}",
                                l.mode.to_lowercase(),
                                l.until.format("%Y-%m-%d %H:%M:%S UTC")
                            )
                        } else {
                            "remove".into()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["ID", "Time", "Host", "Tags", "Decision"], &rows)
            );
        }
        let n = report.to_remove().count();
        if let Some(last) = report.locked.iter().map(|l| l.until).max() {
            eprintln!(
                "warning: {} snapshot(s) the policy removes are under S3 Object Lock (until {} at the latest): kept\nhint: a later forget removes them once their retention ends",
                report.locked.len(),
                last.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if a.dry_run {
            println!("\nwould remove {n} snapshot(s) (dry run)");
        } else {
            println!("\nremoved {} snapshot(s)", report.removed.len());
        }
        if let Some(p) = &pruned {
            print_prune(p);
        }
    }
    Ok(Exit::Ok)
}

pub fn pin(g: &GlobalArgs, a: &PinArgs, pinned: bool) -> Result<Exit> {
    let repo = settings::open_repo(g)?;
    let snaps = repo.snapshots()?;
    let entry = lifeboat_core::select::resolve(&snaps, &a.snapshot, &Default::default(), None)?;
    let new = forget::set_pinned(&repo, &entry.id, pinned).map_err(with_hint)?;
    if g.json {
        print_json(&json!({"old": entry.id, "new": new, "pinned": pinned}));
    } else if !g.quiet {
        let what = if pinned { "pinned" } else { "unpinned" };
        if new == entry.id {
            println!("snapshot {} was already {what}", entry.id.short());
        } else {
            println!(
                "{what} snapshot {} (rewritten: new id {})",
                entry.id.short(),
                new.short()
            );
        }
    }
    Ok(Exit::Ok)
}

fn print_prune(r: &PruneReport) {
    let verb = if r.dry_run { "would be" } else { "were" };
    println!(
        "{} snapshots reference {} blobs in {} packs ({})",
        r.snapshots,
        r.referenced_blobs,
        r.packs,
        bytes(r.pack_bytes)
    );
    if r.marks_finished > 0 {
        println!(
            "phase 2: {} mark(s) finished: {} pack(s) {verb} deleted ({}), {} pack(s) still referenced {verb} re-indexed",
            r.marks_finished,
            r.deleted_packs,
            bytes(r.deleted_bytes),
            r.reindexed_packs
        );
    }
    for w in &r.waiting {
        println!("phase 2: {w}");
    }
    println!(
        "phase 1: {} unused and {} unindexed pack(s) {verb} marked; {} pack(s) {verb} repacked ({} blobs copied, {})",
        r.marked_unused_packs,
        r.marked_unindexed_packs,
        r.repacked_packs,
        r.repacked_blobs,
        bytes(r.repack_written_bytes)
    );
    if let Some(until) = r.locked_until {
        println!(
            "object lock: {} pack(s) ({}) left alone, under S3 Object Lock retention until {} at the latest; a later prune takes them",
            r.locked_packs,
            bytes(r.locked_bytes),
            until.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    println!(
        "{} {verb} freed once the mark passes the grace period; {} unused left in partly used packs",
        bytes(r.to_be_freed_bytes),
        bytes(r.unused_bytes_left)
    );
    if let Some(m) = &r.mark {
        println!("wrote mark {}", m.short());
    }
}

pub fn prune(g: &GlobalArgs, a: &PruneOptionArgs, dry_run: bool) -> Result<Exit> {
    let opts = prune_options(g, a, dry_run)?;
    let repo = settings::open_repo(g)?;
    let report = prune::prune(&repo, &opts).map_err(with_hint)?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_prune(&report);
    }
    Ok(Exit::Ok)
}

pub fn repair(g: &GlobalArgs, c: RepairCommand) -> Result<Exit> {
    let repo = settings::open_repo(g)?;
    match c {
        RepairCommand::Index { dry_run } => {
            let r = repair::repair_index(&repo, dry_run).map_err(with_hint)?;
            if g.json {
                print_json(&r);
            } else if !g.quiet {
                for d in &r.damaged_packs {
                    eprintln!("warning: left out of the index: {d}");
                }
                println!(
                    "{} {} packs with {} blobs; {} old index file(s) superseded",
                    if dry_run { "would index" } else { "indexed" },
                    r.packs,
                    r.blobs,
                    r.superseded_index_files
                );
            }
        }
        RepairCommand::Snapshots { dry_run } => {
            let r = repair::repair_snapshots(&repo, dry_run).map_err(with_hint)?;
            if g.json {
                print_json(&r);
            } else if !g.quiet {
                for s in &r.repaired {
                    println!(
                        "snapshot {} {} {}: {} path(s) lost",
                        &s.old[..8],
                        if dry_run {
                            "would be rewritten"
                        } else {
                            "rewritten as"
                        },
                        s.new.as_deref().map_or("", |n| &n[..8]),
                        s.lost.len()
                    );
                    for p in &s.lost {
                        println!("  {p}");
                    }
                }
                for k in &r.kept_locked {
                    eprintln!("warning: damaged snapshot {k} kept next to its repaired copy");
                }
                println!(
                    "{} damaged blob(s); {} of {} snapshot(s) {}",
                    r.damaged_blobs,
                    r.repaired.len(),
                    r.snapshots_checked,
                    if dry_run { "need repair" } else { "repaired" }
                );
            }
        }
    }
    Ok(Exit::Ok)
}

pub fn config(g: &GlobalArgs, c: ConfigCommand) -> Result<Exit> {
    let repo = settings::open_repo(g)?;
    match c {
        ConfigCommand::Show => {
            if g.json {
                print_json(&repo.config().display_json());
            } else {
                let c = repo.config();
                println!("id            {}", c.id);
                println!("created       {}", c.created.to_rfc3339());
                println!("compression   {}", c.compression);
                println!("append-only   {}", c.append_only);
                println!("object-lock   {}", lock_text(c));
            }
        }
        ConfigCommand::Set {
            key,
            value,
            allow_disable,
        } => {
            let c = match key.as_str() {
                "append-only" => {
                    let on: bool = value
                        .parse()
                        .map_err(|_| anyhow!("append-only takes true or false, not {value:?}"))?;
                    lifeboat_core::protect::set_append_only(&repo, on, allow_disable).map_err(|e| {
                        anyhow!("{e}\nhint: append-only protects against deletes by any Lifeboat client; pass --allow-disable if that is really intended")
                    })?
                }
                "object-lock" => {
                    let setting = match value.as_str() {
                        "off" | "none" | "false" => None,
                        v => Some(v.parse::<ObjectLockSetting>().map_err(anyhow::Error::msg)?),
                    };
                    let location = settings::repo_location(g)?;
                    if setting.is_some() {
                        settings::require_bucket_lock(g, &location)?;
                    }
                    lifeboat_core::protect::set_object_lock(&repo, setting, allow_disable).map_err(|e| {
                        anyhow!("{e}\nhint: objects uploaded so far keep their retention; pass --allow-disable if that is really intended")
                    })?
                }
                _ => bail!("unknown setting {key:?}\nhint: settable: append-only, object-lock"),
            };
            if g.json {
                print_json(&c.display_json());
            } else if !g.quiet {
                println!("append-only is now {}", c.append_only);
                println!("object-lock is now {}", lock_text(&c));
            }
        }
    }
    Ok(Exit::Ok)
}

fn lock_text(c: &lifeboat_core::repository::Config) -> String {
    c.object_lock
        .map_or_else(|| "off".to_string(), |l| l.to_string())
}

/// `init --append-only`: the repository is created, then its config switched.
pub fn enable_append_only_after_init(g: &GlobalArgs) -> Result<()> {
    let repo = settings::open_repo(g)?;
    lifeboat_core::protect::set_append_only(&repo, true, false)?;
    if !g.quiet && !g.json {
        println!("append-only mode is on: forget, prune and key remove will refuse");
    }
    Ok(())
}

pub fn parity(g: &GlobalArgs, a: &ParityArgs) -> Result<Exit> {
    let repo = settings::open_repo(g)?;
    let params = ParityParams {
        data_shards: a.data_shards,
        parity_shards: a.parity_shards,
    };
    let r = parity::create_missing(&repo, params, a.upgrade)?;
    if g.json {
        print_json(&json!({"params": params, "report": r}));
    } else if !g.quiet {
        let overhead = if r.pack_bytes == 0 {
            0.0
        } else {
            100.0 * r.parity_bytes as f64 / r.pack_bytes as f64
        };
        println!(
            "{} pack(s), {} new parity sidecar(s); parity {} for {} of packs ({overhead:.1}% overhead)",
            r.packs,
            r.created,
            bytes(r.parity_bytes),
            bytes(r.pack_bytes)
        );
    }
    Ok(Exit::Ok)
}

/// `check --repair`: rebuild damaged packs from parity, then the normal check runs.
pub fn parity_repair_before_check(g: &GlobalArgs, a: &CheckArgs) -> Result<()> {
    if !a.repair {
        return Ok(());
    }
    let repo = settings::open_repo(g)?;
    let results = parity::verify_and_repair(&repo, false)?;
    for r in &results {
        if g.json {
            eprintln!("{}", serde_json::to_string(r).expect("serialisable"));
        } else if r.outcome == "repaired" {
            eprintln!(
                "pack {} repaired from parity (damaged shards {:?})",
                &r.pack[..8],
                r.damaged_shards
            );
        } else {
            eprintln!(
                "error: pack {} could not be repaired: {}",
                &r.pack[..8],
                r.outcome
            );
        }
    }
    Ok(())
}
