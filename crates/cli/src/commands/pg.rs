//! `pg wal-push | wal-fetch | backup | verify` and `restore --to-pgdata`: PostgreSQL physical
//! backups and point-in-time recovery (docs/DATABASES.md, "PostgreSQL physical and PITR").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, FixedOffset};
use lifeboat_core::archiver::{StreamBackupOptions, StreamSnapshotWriter};
use lifeboat_core::blob::Compression;
use lifeboat_core::repository::Repository;
use lifeboat_core::snapshot::SnapshotEntry;
use lifeboat_core::wal::{self, PushOutcome};
use lifeboat_core::writer::WriterOptions;
use lifeboat_sources::pg::physical::{
    self, BaseBackupOptions, BaseBackupStream, RecoveryConfig, RecoveryTarget, WalPageHeader,
};
use lifeboat_sources::pg::PgConnection;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Exit;
use crate::args::{
    GlobalArgs, PgCommand, PgPhysicalBackupArgs, PgVerifyArgs, RestoreArgs, WalFetchArgs,
    WalPushArgs,
};
use crate::output::{bytes, print_json, table};
use crate::progress::Bar;
use crate::settings;

/// `source` of physical base backup snapshots.
pub const PHYSICAL_SOURCE: &str = "postgres-physical";
/// The stream holding pg_basebackup's tar.
const BASE_STREAM: &str = "base.tar";
/// Exit status of `wal-fetch` for a file that is not archived: PostgreSQL treats it as the
/// end of the archive.
const EXIT_WAL_MISSING: i32 = 1;
/// Exit status of `wal-fetch` for any other failure. PostgreSQL treats statuses above 125 as
/// fatal and stops recovery, instead of taking an unreachable repository for the end of the
/// archive and promoting at the wrong point.
const EXIT_WAL_FETCH_ERROR: i32 = 126;

pub fn run(g: &GlobalArgs, cmd: PgCommand) -> Result<Exit> {
    match cmd {
        PgCommand::WalPush(a) => wal_push(g, &a),
        PgCommand::WalFetch(a) => wal_fetch(g, &a),
        PgCommand::Backup(a) => backup(g, &a),
        PgCommand::Verify(a) => verify(g, &a),
    }
}

fn pgdata(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PGDATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

// ---------------------------------------------------------------------------------------
// wal-push / wal-fetch
// ---------------------------------------------------------------------------------------

fn wal_push(g: &GlobalArgs, a: &WalPushArgs) -> Result<Exit> {
    let started = Instant::now();
    let name = a
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a WAL file path", a.path.display()))?
        .to_string();
    wal::timeline_of(&name)?;
    let compression: Compression = a.compression.parse().map_err(anyhow::Error::msg)?;
    let data =
        std::fs::read(&a.path).with_context(|| format!("reading WAL file {}", a.path.display()))?;
    let is_segment = !name.ends_with(".history") && !name.ends_with(".backup");
    let system_id = if is_segment {
        let h = WalPageHeader::parse(&data).with_context(|| format!("WAL file {name}"))?;
        h.check_name(&name)?;
        if let Some(want) = a.system_id {
            if want != h.system_identifier {
                bail!(
                    "WAL file {name} belongs to cluster {} but --system-id is {want}",
                    h.system_identifier
                );
            }
        }
        h.system_identifier
    } else {
        match a.system_id {
            Some(id) => id,
            None => physical::control_system_id(&pgdata(a.pgdata.as_deref())).context(
                "finding the cluster's system identifier (pass --system-id or --pgdata)",
            )?,
        }
    };
    let repo = settings::open_repo(g)?;
    let outcome = wal::push(&repo, system_id, &name, &data, compression)?;
    if g.json {
        print_json(&json!({
            "file": name, "system_identifier": system_id.to_string(), "bytes": data.len(),
            "outcome": outcome, "seconds": started.elapsed().as_secs_f64(),
        }));
    } else if g.verbose > 0 {
        match outcome {
            PushOutcome::Stored { stored_bytes } => eprintln!(
                "archived {name} of cluster {system_id}: {} -> {} in {:.3}s",
                bytes(data.len() as u64),
                bytes(stored_bytes),
                started.elapsed().as_secs_f64()
            ),
            PushOutcome::AlreadyArchived => {
                eprintln!(
                    "{name} of cluster {system_id} was already archived with identical content"
                )
            }
        }
    }
    Ok(Exit::Ok)
}

fn wal_fetch(g: &GlobalArgs, a: &WalFetchArgs) -> Result<Exit> {
    match wal_fetch_inner(g, a) {
        Ok(true) => Ok(Exit::Ok),
        Ok(false) => {
            if !g.quiet {
                eprintln!("lifeboat: WAL file {} is not in the repository", a.name);
            }
            std::process::exit(EXIT_WAL_MISSING);
        }
        Err(e) => {
            crate::output::print_error(&e);
            std::process::exit(EXIT_WAL_FETCH_ERROR);
        }
    }
}

fn wal_fetch_inner(g: &GlobalArgs, a: &WalFetchArgs) -> Result<bool> {
    wal::timeline_of(&a.name)?;
    let system_id = match a.system_id {
        Some(id) => id,
        None => physical::control_system_id(&pgdata(a.pgdata.as_deref()))
            .context("finding the cluster's system identifier (pass --system-id or --pgdata)")?,
    };
    let repo = settings::open_repo(g)?;
    let Some(obj) = wal::fetch(&repo, system_id, &a.name)? else {
        return Ok(false);
    };
    // Write next to the destination and rename, so PostgreSQL never sees a partial file.
    let tmp = a.path.with_file_name(format!(
        ".{}.lifeboat-tmp",
        a.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, &obj.data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.path).with_context(|| format!("renaming to {}", a.path.display()))?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------
// Base backups
// ---------------------------------------------------------------------------------------

/// Metadata of a `postgres-physical` snapshot (docs/DATABASES.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhysicalBackupMeta {
    pub engine: String,
    pub kind: String,
    /// Decimal, as pg_controldata prints it (a string: JSON numbers lose precision past 2^53).
    pub system_identifier: String,
    pub timeline: u32,
    pub wal_segment_size: u64,
    pub server_version: String,
    pub server_version_num: u32,
    pub start_lsn: String,
    pub checkpoint_lsn: String,
    pub stop_lsn: String,
    /// First and last WAL segment the backup needs to become consistent.
    pub start_wal: String,
    pub stop_wal: String,
    /// Server clock before pg_basebackup started and after it finished (the backup is
    /// consistent at `stop_time` at the latest).
    pub start_time: DateTime<FixedOffset>,
    pub stop_time: DateTime<FixedOffset>,
    pub backup_from: String,
    pub label: String,
    pub stream: String,
    pub bytes: u64,
}

impl PhysicalBackupMeta {
    fn system_id(&self) -> u64 {
        self.system_identifier.parse().unwrap_or_default()
    }
    fn start(&self) -> u64 {
        physical::parse_lsn(&self.start_lsn).unwrap_or_default()
    }
    fn stop(&self) -> u64 {
        physical::parse_lsn(&self.stop_lsn).unwrap_or(u64::MAX)
    }
}

fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("invalid duration {s:?}: expected e.g. 90s, 5m, 1h"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid duration {s:?}: expected e.g. 90s, 5m, 1h"),
    }))
}

fn connection(url: Option<&str>) -> Result<PgConnection> {
    Ok(match url {
        Some(u) => PgConnection::from_url(u)?,
        None => PgConnection::from_env(),
    })
}

/// `backup postgres --physical`: the same as `pg backup`.
pub fn backup_from_db_args(g: &GlobalArgs, a: &crate::args::PgBackupArgs) -> Result<Exit> {
    if a.common.dry_run {
        bail!("--dry-run is not supported for physical base backups");
    }
    backup(
        g,
        &PgPhysicalBackupArgs {
            url: a.url.clone(),
            fast: a.fast,
            wal_timeout: "60s".into(),
            max_rate: None,
            tag: a.common.tag.clone(),
            host: a.common.host.clone(),
        },
    )
}

fn backup(g: &GlobalArgs, a: &PgPhysicalBackupArgs) -> Result<Exit> {
    let timeout = parse_duration(&a.wal_timeout)?;
    let conn = connection(a.url.as_deref())?;
    let outcome = physical_backup(g, &conn, a, timeout)?;
    let (id, meta) = outcome;
    if g.json {
        print_json(
            &json!({"snapshot_id": id, "source": PHYSICAL_SOURCE, "backup": meta, "requests": settings::storage_stats()}),
        );
    } else if !g.quiet {
        println!(
            "base backup of cluster {} (PostgreSQL {}, timeline {}): {}, WAL {} .. {} ({} .. {}), archived",
            meta.system_identifier,
            meta.server_version,
            meta.timeline,
            bytes(meta.bytes),
            meta.start_lsn,
            meta.stop_lsn,
            meta.start_wal,
            meta.stop_wal
        );
        println!("snapshot {} saved", id.short());
    }
    Ok(Exit::Ok)
}

/// Run a physical base backup into a new snapshot and wait until its stop segment is
/// archived. Used by `pg backup` (and meant for `backup postgres --physical`).
pub fn physical_backup(
    g: &GlobalArgs,
    conn: &PgConnection,
    a: &PgPhysicalBackupArgs,
    wal_timeout: Duration,
) -> Result<(lifeboat_core::blob::Id, PhysicalBackupMeta)> {
    let info = physical::cluster_info(conn)?;
    if info.archive_mode == "off" {
        bail!(
            "archive_mode is off on the server: a base backup without archived WAL cannot be \
             recovered to any later point\nhint: set archive_mode = on and archive_command = \
             'lifeboat --repo ... --password-file ... pg wal-push %p', then restart PostgreSQL"
        );
    }
    if !info.archive_command.contains("wal-push") {
        tracing::warn!(
            "archive_command does not look like `lifeboat ... pg wal-push %p`; the backup waits \
             for its WAL to appear in this repository"
        );
    }
    let repo = settings::open_indexed(g)?;
    let tags = settings::tags(&a.tag);
    let opts = StreamBackupOptions {
        hostname: a.host.clone().unwrap_or_else(lifeboat_core::util::hostname),
        tags,
        source: PHYSICAL_SOURCE.into(),
        paths: vec![format!("/postgres/{}", info.system_identifier)],
        writer: WriterOptions {
            compression: repo.config().compression(),
            connections: settings::connections(g),
            ..WriterOptions::default()
        },
        dry_run: false,
        time: None,
    };
    let bar = Bar::new(
        settings::show_progress(g),
        !g.quiet && !g.json,
        "base backup",
    );
    let start_time = physical::server_now(conn)?;
    let mut w = StreamSnapshotWriter::new(&repo, opts, &bar);
    let mut stream = BaseBackupStream::start(
        conn,
        &BaseBackupOptions {
            fast_checkpoint: a.fast,
            label: format!("lifeboat {}", start_time.format("%Y-%m-%d %H:%M:%S")),
            max_rate: a.max_rate.clone(),
        },
    )?;
    let size = w
        .add_stream(BASE_STREAM, &mut stream)
        .context("streaming pg_basebackup into the repository")?;
    let points = stream.points()?;
    let stop_time = physical::server_now(conn)?;
    let seg = info.wal_segment_size;
    let meta = PhysicalBackupMeta {
        engine: "postgres".into(),
        kind: "physical".into(),
        system_identifier: info.system_identifier.to_string(),
        timeline: points.timeline,
        wal_segment_size: seg,
        server_version: info.server_version.clone(),
        server_version_num: info.server_version_num,
        start_lsn: physical::format_lsn(points.start_lsn),
        checkpoint_lsn: physical::format_lsn(points.checkpoint_lsn),
        stop_lsn: physical::format_lsn(points.stop_lsn),
        start_wal: physical::segment_name(points.timeline, points.start_lsn, seg),
        stop_wal: physical::segment_name(points.timeline, points.stop_lsn.saturating_sub(1), seg),
        start_time,
        stop_time,
        backup_from: points.backup_from.clone(),
        label: points.label.clone(),
        stream: BASE_STREAM.into(),
        bytes: size,
    };
    wait_for_wal(&repo, info.system_identifier, &meta.stop_wal, wal_timeout)?;
    let outcome = w.finish(Some(serde_json::to_value(&meta)?))?;
    bar.finish();
    let id = outcome
        .snapshot_id
        .ok_or_else(|| anyhow!("the snapshot was not saved"))?;
    Ok((id, meta))
}

fn wait_for_wal(repo: &Repository, system_id: u64, name: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        if wal::exists(repo, system_id, name)? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {}s waiting for WAL segment {name} (the base backup's last \
                 segment) of cluster {system_id} to be archived into this repository; no snapshot \
                 was saved\nhint: check archive_command (`lifeboat --repo ... pg wal-push %p`) \
                 and pg_stat_archiver.last_failed_wal, or raise --wal-timeout",
                timeout.as_secs()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------------------------------
// restore --to-pgdata
// ---------------------------------------------------------------------------------------

struct PhysicalSnap {
    entry: SnapshotEntry,
    meta: PhysicalBackupMeta,
}

fn physical_snapshots(
    snaps: &[SnapshotEntry],
    filter: &lifeboat_core::select::SnapshotFilter,
) -> Vec<PhysicalSnap> {
    snaps
        .iter()
        .filter(|s| s.snapshot.source == PHYSICAL_SOURCE && filter.matches(&s.snapshot))
        .filter_map(|s| {
            let meta = serde_json::from_value(s.snapshot.metadata.clone()?).ok()?;
            Some(PhysicalSnap {
                entry: s.clone(),
                meta,
            })
        })
        .collect()
}

/// Parse a recovery target time: the usual `--at` forms, or PostgreSQL's own output
/// (`2026-11-21 18:35:13.123456+00`).
fn parse_target_time(s: &str) -> Result<DateTime<FixedOffset>> {
    if let Ok(t) = lifeboat_core::select::parse_time(s) {
        return Ok(t);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t);
        }
    }
    bail!("invalid time {s:?}: expected \"YYYY-MM-DD HH:MM[:SS[.ffffff]][+TZ]\" or RFC 3339")
}

pub fn restore_to_pgdata(g: &GlobalArgs, a: &RestoreArgs) -> Result<Exit> {
    let p = &a.pitr;
    let dir = p.to_pgdata.clone().expect("dispatched on --to-pgdata");
    if a.target.is_some() {
        bail!("--to-pgdata and --target exclude each other");
    }
    physical::check_empty_target(&dir)?;
    let target_time = a.at.as_deref().map(parse_target_time).transpose()?;
    let target_lsn = p
        .lsn
        .as_deref()
        .map(physical::parse_lsn)
        .transpose()
        .context("--lsn")?;
    let password_ref = restore_password_ref(g, p.wal_password_file.as_deref())?;

    let repo = settings::open_indexed(g)?;
    let snaps = repo.snapshots()?;
    let candidates = physical_snapshots(&snaps, &super::to_filter(&a.filter));
    if candidates.is_empty() {
        bail!("no PostgreSQL base backup (source {PHYSICAL_SOURCE}) in the repository matches\nhint: take one with `lifeboat pg backup`");
    }
    let chosen = pick_base(
        &candidates,
        &a.snapshot,
        p.system_id,
        target_time,
        target_lsn,
    )?;
    let meta = &chosen.meta;
    let system_id = meta.system_id();

    let node = lifeboat_core::walk::find_node(
        &repo,
        &chosen.entry.id,
        chosen.entry.snapshot.tree,
        &meta.stream,
    )?;
    let reader = lifeboat_core::walk::ContentReader::new(&repo, &node);
    let unpacked =
        physical::extract_base_backup(std::io::BufReader::with_capacity(1 << 20, reader), &dir)?;

    let target = if let Some(t) = target_time {
        RecoveryTarget::Time(t.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string())
    } else if let Some(l) = target_lsn {
        RecoveryTarget::Lsn(physical::format_lsn(l))
    } else if let Some(n) = &p.restore_point {
        RecoveryTarget::Name(n.clone())
    } else if p.immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::Latest
    };
    let restore_command = restore_command(g, &password_ref, system_id)?;
    physical::write_recovery_config(
        &dir,
        &RecoveryConfig {
            restore_command: restore_command.clone(),
            target: target.clone(),
            action: p.target_action.clone(),
            comment: format!(
                "lifeboat restore: base backup {} of cluster {system_id} ({} .. {}); recovery settings",
                chosen.entry.id.short(),
                meta.start_lsn,
                meta.stop_lsn
            ),
        },
    )?;
    if g.json {
        print_json(&json!({
            "snapshot_id": chosen.entry.id, "pgdata": dir, "system_identifier": meta.system_identifier,
            "base_backup": meta, "target": target, "target_action": p.target_action,
            "restore_command": restore_command, "bytes": unpacked,
        }));
    } else if !g.quiet {
        println!(
            "restored base backup {} of cluster {system_id} (stopped at {} on timeline {}, {}) into {}",
            chosen.entry.id.short(),
            meta.stop_lsn,
            meta.timeline,
            meta.stop_time.format("%Y-%m-%d %H:%M:%S%:z"),
            dir.display()
        );
        let what = match &target {
            RecoveryTarget::Latest => "the end of the archived WAL".to_string(),
            RecoveryTarget::Immediate => "the end of the base backup".to_string(),
            RecoveryTarget::Time(t) => format!("time {t}"),
            RecoveryTarget::Lsn(l) => format!("LSN {l}"),
            RecoveryTarget::Name(n) => format!("restore point {n:?}"),
        };
        println!(
            "recovery.signal and restore_command written: starting PostgreSQL on it recovers to {what}, then {}s",
            p.target_action
        );
    }
    Ok(Exit::Ok)
}

fn pick_base<'a>(
    candidates: &'a [PhysicalSnap],
    spec: &str,
    system_id: Option<u64>,
    time: Option<DateTime<FixedOffset>>,
    lsn: Option<u64>,
) -> Result<&'a PhysicalSnap> {
    let fits = |s: &PhysicalSnap| {
        time.is_none_or(|t| s.meta.stop_time < t) && lsn.is_none_or(|l| s.meta.stop() <= l)
    };
    let target_text = match (time, lsn) {
        (Some(t), _) => format!("time {t}"),
        (_, Some(l)) => format!("LSN {}", physical::format_lsn(l)),
        _ => "the target".into(),
    };
    if spec != "latest" {
        let entries: Vec<SnapshotEntry> = candidates.iter().map(|c| c.entry.clone()).collect();
        let e = lifeboat_core::select::resolve(&entries, spec, &Default::default(), None)?;
        let chosen = candidates
            .iter()
            .find(|c| c.entry.id == e.id)
            .expect("resolved from the candidates");
        if !fits(chosen) {
            bail!(
                "base backup {} ends at {} ({}), not before {target_text}: it cannot recover to it\nhint: leave out the snapshot to let lifeboat pick one",
                chosen.entry.id.short(),
                chosen.meta.stop_lsn,
                chosen.meta.stop_time
            );
        }
        if system_id.is_some_and(|id| id != chosen.meta.system_id()) {
            bail!(
                "base backup {} belongs to cluster {}, not {}",
                chosen.entry.id.short(),
                chosen.meta.system_identifier,
                system_id.unwrap_or_default()
            );
        }
        return Ok(chosen);
    }
    let clusters: std::collections::BTreeSet<u64> =
        candidates.iter().map(|c| c.meta.system_id()).collect();
    let cluster = match system_id {
        Some(id) if clusters.contains(&id) => id,
        Some(id) => bail!(
            "no base backup of cluster {id}; the repository has clusters {}",
            join(&clusters)
        ),
        None if clusters.len() == 1 => *clusters.iter().next().expect("one"),
        None => bail!(
            "the repository holds base backups of several clusters ({})\nhint: choose one with --system-id",
            join(&clusters)
        ),
    };
    let mut on_cluster: Vec<&PhysicalSnap> = candidates
        .iter()
        .filter(|c| c.meta.system_id() == cluster)
        .collect();
    on_cluster.sort_by_key(|c| (c.meta.stop_time, c.meta.stop()));
    on_cluster.iter().rev().find(|c| fits(c)).copied().ok_or_else(|| {
        let first = on_cluster.first().expect("non-empty");
        anyhow!(
            "no base backup of cluster {cluster} ends before {target_text}; the oldest one ends at {} ({})",
            first.meta.stop_lsn,
            first.meta.stop_time
        )
    })
}

fn join(ids: &std::collections::BTreeSet<u64>) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the restore_command will get the repository password: a file or a command, never
/// the password itself.
enum PasswordRef {
    File(PathBuf),
    Command(String),
}

fn restore_password_ref(g: &GlobalArgs, explicit: Option<&Path>) -> Result<PasswordRef> {
    let abs = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("password file {}", p.display()))
    };
    if let Some(f) = explicit {
        return Ok(PasswordRef::File(abs(f)?));
    }
    if let Some(f) = &g.password_file {
        return Ok(PasswordRef::File(abs(f)?));
    }
    if let Some(c) = &g.password_command {
        return Ok(PasswordRef::Command(c.clone()));
    }
    bail!(
        "restore --to-pgdata writes a restore_command that must read the repository password \
         itself, and the password is never written into the data directory\nhint: pass \
         --password-file FILE or --password-command CMD (readable by the PostgreSQL user), or \
         --wal-password-file FILE (e.g. a key made by `lifeboat key add --generate FILE`)"
    )
}

fn restore_command(g: &GlobalArgs, pw: &PasswordRef, system_id: u64) -> Result<String> {
    use physical::shell_quote as q;
    let exe = std::env::current_exe().context("locating the lifeboat binary")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let location = settings::repo_location(g)?;
    let location = if matches!(
        lifeboat_storage::RepoUrl::parse(&location),
        Ok(lifeboat_storage::RepoUrl::Local(_))
    ) {
        std::fs::canonicalize(&location)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(location)
    } else {
        location
    };
    let mut parts = vec![q(&exe.to_string_lossy()), "--repo".into(), q(&location)];
    match pw {
        PasswordRef::File(f) => {
            parts.push("--password-file".into());
            parts.push(q(&f.to_string_lossy()));
        }
        PasswordRef::Command(c) => {
            parts.push("--password-command".into());
            parts.push(q(c));
        }
    }
    for o in &g.options {
        parts.push("-o".into());
        parts.push(q(o));
    }
    parts.extend([
        "--quiet".into(),
        "pg".into(),
        "wal-fetch".into(),
        "--system-id".into(),
        system_id.to_string(),
        "%f".into(),
        "%p".into(),
    ]);
    Ok(parts.join(" "))
}

// ---------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Gap {
    timeline: u32,
    /// First and last missing segment.
    from: String,
    to: String,
    segments: u64,
}

#[derive(Debug, Serialize)]
struct TimelineReport {
    timeline: u32,
    first: Option<String>,
    last: Option<String>,
    segments: usize,
    partial: usize,
    backup_files: usize,
    history: bool,
    /// Parent timelines and where this one branched off them (from its .history file).
    parents: Vec<(u32, String)>,
}

#[derive(Debug, Serialize)]
struct BaseReport {
    snapshot: String,
    timeline: u32,
    start_wal: String,
    stop_wal: String,
    stop_lsn: String,
    stop_time: DateTime<FixedOffset>,
    /// Every segment from start to stop is archived.
    wal_complete: bool,
}

#[derive(Debug, Serialize)]
struct Window {
    /// Recovery following this timeline (`recovery_target_timeline`).
    timeline: u32,
    earliest_time: DateTime<FixedOffset>,
    earliest_lsn: String,
    earliest_base: String,
    /// End of the last segment reachable without a gap.
    latest_lsn: String,
    latest_segment: String,
    /// When that segment was archived: every commit in it is older.
    latest_segment_archived_at: Option<DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize)]
struct ClusterReport {
    system_identifier: String,
    wal_segment_size: u64,
    timelines: Vec<TimelineReport>,
    gaps: Vec<Gap>,
    base_backups: Vec<BaseReport>,
    windows: Vec<Window>,
    problems: Vec<String>,
}

fn verify(g: &GlobalArgs, a: &PgVerifyArgs) -> Result<Exit> {
    let repo = settings::open_repo(g)?;
    let listing = wal::list(&repo)?;
    let snaps = repo.snapshots()?;
    let bases = physical_snapshots(&snaps, &Default::default());
    let mut ids: std::collections::BTreeSet<u64> = listing.clusters.keys().copied().collect();
    ids.extend(bases.iter().map(|b| b.meta.system_id()));
    if let Some(only) = a.system_id {
        ids.retain(|i| *i == only);
    }
    let mut reports = Vec::new();
    for id in ids {
        let empty = BTreeMap::new();
        let files = listing.clusters.get(&id).unwrap_or(&empty);
        let cluster_bases: Vec<&PhysicalSnap> =
            bases.iter().filter(|b| b.meta.system_id() == id).collect();
        reports.push(verify_cluster(&repo, id, files, &cluster_bases)?);
    }
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    if g.json {
        print_json(&json!({"clusters": reports, "strays": listing.strays, "ok": problems == 0}));
    } else {
        print_verify(&reports, &listing.strays);
    }
    if problems > 0 {
        bail!("pg verify found {problems} problem(s)");
    }
    Ok(Exit::Ok)
}

fn verify_cluster(
    repo: &Repository,
    id: u64,
    files: &BTreeMap<u32, Vec<wal::ArchivedFile>>,
    bases: &[&PhysicalSnap],
) -> Result<ClusterReport> {
    let seg_size = bases
        .first()
        .map(|b| b.meta.wal_segment_size)
        .unwrap_or(16 << 20);
    let mut problems = Vec::new();
    // segments present per timeline
    let mut present: BTreeMap<u32, std::collections::BTreeSet<u64>> = BTreeMap::new();
    let mut timelines = Vec::new();
    let mut parents_of: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for (&tli, list) in files {
        let mut segs = std::collections::BTreeSet::new();
        let (mut partial, mut backup_files, mut history) = (0, 0, false);
        for f in list {
            if f.name.ends_with(".partial") {
                partial += 1;
            } else if f.name.ends_with(".backup") {
                backup_files += 1;
            } else if f.name.ends_with(".history") {
                history = true;
            } else if let Some(n) = physical::segment_number(&f.name, seg_size) {
                segs.insert(n);
            }
        }
        let mut parents = Vec::new();
        if history {
            let name = format!("{tli:08X}.history");
            if let Some(obj) = wal::fetch(repo, id, &name)? {
                for line in String::from_utf8_lossy(&obj.data).lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if let (Some(t), Some(l)) = (f.first(), f.get(1)) {
                        if let (Ok(t), Ok(l)) = (t.parse::<u32>(), physical::parse_lsn(l)) {
                            parents.push((t, l));
                        }
                    }
                }
            }
        } else if tli > 1 {
            problems.push(format!(
                "timeline {tli} has no {tli:08X}.history file: recovery cannot follow it"
            ));
        }
        parents_of.insert(tli, parents.clone());
        let name = |n: u64| physical::segment_name(tli, n * seg_size, seg_size);
        timelines.push(TimelineReport {
            timeline: tli,
            first: segs.first().map(|&n| name(n)),
            last: segs.last().map(|&n| name(n)),
            segments: segs.len(),
            partial,
            backup_files,
            history,
            parents: parents
                .iter()
                .map(|(t, l)| (*t, physical::format_lsn(*l)))
                .collect(),
        });
        present.insert(tli, segs);
    }
    // Gaps inside each timeline's archived range, from the oldest base backup's start on.
    let oldest_start = bases.iter().map(|b| b.meta.start() / seg_size).min();
    let mut gaps = Vec::new();
    for (&tli, segs) in &present {
        let mut prev: Option<u64> = None;
        for &n in segs {
            if let Some(p) = prev {
                if n > p + 1 {
                    gaps.push(Gap {
                        timeline: tli,
                        from: physical::segment_name(tli, (p + 1) * seg_size, seg_size),
                        to: physical::segment_name(tli, (n - 1) * seg_size, seg_size),
                        segments: n - p - 1,
                    });
                    // A gap that a later base backup starts after only ends the window
                    // of the older ones (`forget --keep-pitr` leaves such gaps).
                    let restarted = bases.iter().any(|b| b.meta.start() / seg_size >= n);
                    if oldest_start.is_some_and(|o| n > o) && !restarted {
                        problems.push(format!(
                            "WAL gap on timeline {tli}: {} .. {} ({} segment(s)) missing",
                            physical::segment_name(tli, (p + 1) * seg_size, seg_size),
                            physical::segment_name(tli, (n - 1) * seg_size, seg_size),
                            n - p - 1
                        ));
                    }
                }
            }
            prev = Some(n);
        }
    }
    // Chain of a timeline: (timeline, first segment it holds), newest first.
    let chain = |t: u32| -> Vec<(u32, u64)> {
        let parents = parents_of.get(&t).cloned().unwrap_or_default();
        let mut out = vec![(t, parents.last().map_or(0, |(_, l)| l / seg_size))];
        for (i, (pt, _)) in parents.iter().enumerate().rev() {
            let begin = if i == 0 {
                0
            } else {
                parents[i - 1].1 / seg_size
            };
            out.push((*pt, begin));
        }
        out
    };
    let available = |chain: &[(u32, u64)], n: u64| {
        chain
            .iter()
            .any(|(t, begin)| n >= *begin && present.get(t).is_some_and(|s| s.contains(&n)))
    };
    let mut base_reports = Vec::new();
    for b in bases {
        let (s, e) = (
            b.meta.start() / seg_size,
            b.meta.stop().saturating_sub(1) / seg_size,
        );
        let ch = chain(b.meta.timeline);
        let complete = (s..=e).all(|n| available(&ch, n));
        if !complete {
            problems.push(format!(
                "base backup {} needs WAL {} .. {} but not all of it is archived",
                b.entry.id.short(),
                b.meta.start_wal,
                b.meta.stop_wal
            ));
        }
        base_reports.push(BaseReport {
            snapshot: b.entry.id.to_hex(),
            timeline: b.meta.timeline,
            start_wal: b.meta.start_wal.clone(),
            stop_wal: b.meta.stop_wal.clone(),
            stop_lsn: b.meta.stop_lsn.clone(),
            stop_time: b.meta.stop_time,
            wal_complete: complete,
        });
    }
    if bases.is_empty() {
        problems.push(format!(
            "no base backup of cluster {id}: the archived WAL alone cannot be restored\nhint: `lifeboat pg backup`"
        ));
    }
    let mut windows = Vec::new();
    for &tli in present.keys() {
        let ch = chain(tli);
        let on_chain = |b: &&&PhysicalSnap| {
            ch.iter().any(|(t, _)| *t == b.meta.timeline)
                && (b.meta.timeline == tli
                    || parents_of
                        .get(&tli)
                        .and_then(|p| p.iter().find(|(t, _)| *t == b.meta.timeline))
                        .is_some_and(|(_, end)| b.meta.stop() <= *end))
        };
        let mut best: Option<(&PhysicalSnap, u64)> = None;
        for b in bases.iter().filter(on_chain) {
            let (s, e) = (
                b.meta.start() / seg_size,
                b.meta.stop().saturating_sub(1) / seg_size,
            );
            if !(s..=e).all(|n| available(&ch, n)) {
                continue;
            }
            let mut last = e;
            while available(&ch, last + 1) {
                last += 1;
            }
            // The window reaching the newest WAL, from its oldest base backup.
            if best.is_none_or(|(bb, bl)| {
                last > bl || (last == bl && b.meta.stop_time < bb.meta.stop_time)
            }) {
                best = Some((b, last));
            }
        }
        if let Some((b, last)) = best {
            // the timeline holding the last segment
            let holder = ch
                .iter()
                .find(|(t, begin)| {
                    last >= *begin && present.get(t).is_some_and(|s| s.contains(&last))
                })
                .map_or(tli, |(t, _)| *t);
            let seg_name = physical::segment_name(holder, last * seg_size, seg_size);
            windows.push(Window {
                timeline: tli,
                earliest_time: b.meta.stop_time,
                earliest_lsn: b.meta.stop_lsn.clone(),
                earliest_base: b.entry.id.short(),
                latest_lsn: physical::format_lsn((last + 1) * seg_size),
                latest_segment_archived_at: wal::pushed_at(repo, id, &seg_name)?,
                latest_segment: seg_name,
            });
        }
    }
    Ok(ClusterReport {
        system_identifier: id.to_string(),
        wal_segment_size: seg_size,
        timelines,
        gaps,
        base_backups: base_reports,
        windows,
        problems,
    })
}

fn print_verify(reports: &[ClusterReport], strays: &[String]) {
    if reports.is_empty() {
        println!("no archived WAL and no PostgreSQL base backups in this repository");
    }
    for r in reports {
        println!(
            "cluster {} (WAL segments of {})",
            r.system_identifier,
            bytes(r.wal_segment_size)
        );
        let rows: Vec<Vec<String>> = r
            .timelines
            .iter()
            .map(|t| {
                vec![
                    t.timeline.to_string(),
                    t.segments.to_string(),
                    t.first.clone().unwrap_or_default(),
                    t.last.clone().unwrap_or_default(),
                    t.parents
                        .last()
                        .map(|(p, l)| format!("from {p} at {l}"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["Timeline", "Segments", "First", "Last", "Branched"],
                &rows
            )
        );
        for b in &r.base_backups {
            println!(
                "  base backup {} timeline {} WAL {} .. {} ends {} {}",
                &b.snapshot[..8],
                b.timeline,
                b.start_wal,
                b.stop_wal,
                b.stop_time.format("%Y-%m-%d %H:%M:%S%:z"),
                if b.wal_complete { "ok" } else { "INCOMPLETE" }
            );
        }
        for w in &r.windows {
            println!(
                "  recoverable on timeline {}: from {} ({}, base {}) to {} (end of {}{})",
                w.timeline,
                w.earliest_time.format("%Y-%m-%d %H:%M:%S%:z"),
                w.earliest_lsn,
                w.earliest_base,
                w.latest_lsn,
                w.latest_segment,
                w.latest_segment_archived_at
                    .map(|t| format!(", archived {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                    .unwrap_or_default()
            );
        }
        for gap in &r.gaps {
            println!(
                "  gap on timeline {}: {} .. {} ({} segments)",
                gap.timeline, gap.from, gap.to, gap.segments
            );
        }
        for p in &r.problems {
            println!("  problem: {p}");
        }
    }
    for s in strays {
        println!("unrecognised object under wal/: {s}");
    }
}
