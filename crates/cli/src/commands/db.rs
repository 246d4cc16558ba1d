//! Database backups (`backup postgres|mysql|redis|sqlite|command`) and restores
//! (`restore --to-postgres|--to-mysql|--to-redis-dir|--to-sqlite|--to-command`).
//!
//! The dump and restore logic lives in `lifeboat-sources`, which knows nothing
//! about repositories; this module plugs the two together:
//! - [`RepoSink`] is a `StreamSink` over a [`StreamSnapshotWriter`]: every dump
//!   stream becomes a file of one snapshot (`db/shop.sql`, `globals.sql`, ...),
//!   and the dump metadata becomes the snapshot's `metadata`;
//! - [`RepoSource`] is a `StreamSource` reading those files back.
//!
//! A safety dump taken before a replace goes into its own snapshot (tag
//! `safety`) and is complete before anything on the server changes.

use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use lifeboat_core::archiver::{BackupOutcome, StreamBackupOptions, StreamSnapshotWriter};
use lifeboat_core::blob::Id;
use lifeboat_core::progress::Progress;
use lifeboat_core::repository::IndexedRepository;
use lifeboat_core::snapshot::SnapshotEntry;
use lifeboat_core::tree::NodeKind;
use lifeboat_core::walk;
use lifeboat_core::writer::WriterOptions;
use lifeboat_sources::command::{CommandSink, CommandSource, CommandSpec};
use lifeboat_sources::mysql::{
    BinlogStop, MySqlConnection, MySqlDumpOptions, MySqlRestorer, MySqlSource, MySqlTarget,
};
use lifeboat_sources::pg::{
    DirectOptions, PgConnection, PgDumpOptions, PgRestoreOptions, PgRestorer, PgSource,
};
use lifeboat_sources::redis::{RedisConnection, RedisRestoreOptions, RedisSource};
use lifeboat_sources::sqlite::{self, SqliteSource, SqliteTarget};
use lifeboat_sources::{
    DumpMetadata, DumpSource, Engine, RestorePlan, RestoreReport, StreamSink, StreamSource,
};
use serde_json::json;

use super::Exit;
use crate::args::{BackupSource, DbBackupCommon, DbRestoreArgs, GlobalArgs, RestoreArgs};
use crate::output::{bytes, print_json};
use crate::progress::Bar;
use crate::settings;

/// A [`StreamSink`] writing one snapshot. The snapshot writer is created on the
/// first stream, so a sink that is never used writes nothing.
pub struct RepoSink<'a> {
    repo: &'a IndexedRepository,
    opts: StreamBackupOptions,
    progress: &'a dyn Progress,
    writer: Option<StreamSnapshotWriter<'a>>,
    outcome: Option<BackupOutcome>,
}

impl<'a> RepoSink<'a> {
    pub fn new(
        repo: &'a IndexedRepository,
        opts: StreamBackupOptions,
        progress: &'a dyn Progress,
    ) -> Self {
        RepoSink {
            repo,
            opts,
            progress,
            writer: None,
            outcome: None,
        }
    }

    /// The saved snapshot, once `finish` ran.
    pub fn outcome(&self) -> Option<&BackupOutcome> {
        self.outcome.as_ref()
    }
}

impl StreamSink for RepoSink<'_> {
    fn add_stream(&mut self, name: &str, reader: &mut dyn Read) -> io::Result<u64> {
        let (repo, opts, progress) = (self.repo, &self.opts, self.progress);
        let writer = self
            .writer
            .get_or_insert_with(|| StreamSnapshotWriter::new(repo, opts.clone(), progress));
        writer.add_stream(name, reader).map_err(io::Error::other)
    }

    fn add_stream_parts<'p>(
        &mut self,
        name: &str,
        parts: Vec<Box<dyn Read + Send + 'p>>,
    ) -> io::Result<u64> {
        let (repo, opts, progress) = (self.repo, &self.opts, self.progress);
        let writer = self
            .writer
            .get_or_insert_with(|| StreamSnapshotWriter::new(repo, opts.clone(), progress));
        writer
            .add_stream_parts(name, parts)
            .map_err(io::Error::other)
    }

    fn finish(&mut self, metadata: &DumpMetadata) -> io::Result<()> {
        let writer = match self.writer.take() {
            Some(w) => w,
            None => StreamSnapshotWriter::new(self.repo, self.opts.clone(), self.progress),
        };
        let outcome = writer
            .finish(Some(metadata.to_json()))
            .map_err(io::Error::other)?;
        self.outcome = Some(outcome);
        Ok(())
    }
}

/// A [`StreamSource`] over the files of one snapshot.
pub struct RepoSource<'a> {
    repo: &'a IndexedRepository,
    snapshot: Id,
    root: Id,
    progress: &'a dyn Progress,
}

impl<'a> RepoSource<'a> {
    pub fn new(
        repo: &'a IndexedRepository,
        snap: &SnapshotEntry,
        progress: &'a dyn Progress,
    ) -> Self {
        RepoSource {
            repo,
            snapshot: snap.id,
            root: snap.snapshot.tree,
            progress,
        }
    }
}

/// Counts bytes read into a progress bar.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add_bytes(n as u64);
        Ok(n)
    }
}

impl StreamSource for RepoSource<'_> {
    fn open_stream(&mut self, name: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        let node = walk::find_node(self.repo, &self.snapshot, self.root, name).map_err(|e| {
            if matches!(e, lifeboat_core::Error::PathNotFound { .. }) {
                io::Error::new(io::ErrorKind::NotFound, e.to_string())
            } else {
                io::Error::other(e)
            }
        })?;
        if node.kind != NodeKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} in snapshot {} is not a file", self.snapshot.short()),
            ));
        }
        let reader = walk::ContentReader::new(self.repo, &node);
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: reader,
                progress: self.progress,
            },
        )))
    }
}

fn warn_password_in_url(url: &str, variable: &str) {
    if lifeboat_sources::ConnUrl::parse(url).is_ok_and(|u| u.password.is_some()) {
        eprintln!(
            "warning: the URL carries a password, and command lines are visible to every user of this machine\nhint: put it in {variable} (or the client's password file) instead"
        );
    }
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `engine://host:port[/db]` names without credentials: the snapshot's paths,
/// which group snapshots for retention and `--path` filters.
fn server_paths(engine: &str, host: String, port: String, dbs: &[String]) -> Vec<String> {
    let base = format!("{engine}://{host}:{port}");
    if dbs.is_empty() {
        vec![base]
    } else {
        dbs.iter().map(|d| format!("{base}/{d}")).collect()
    }
}

fn pg_connection(url: Option<&str>) -> Result<PgConnection> {
    Ok(match url.filter(|u| !u.is_empty()) {
        Some(u) => {
            warn_password_in_url(u, "PGPASSWORD or ~/.pgpass");
            PgConnection::from_url(u)?
        }
        None => PgConnection::from_env(),
    })
}

fn pg_paths(conn: &PgConnection, dbs: &[String]) -> Vec<String> {
    let host = conn
        .host
        .clone()
        .unwrap_or_else(|| env_or("PGHOST", "localhost"));
    let port = conn
        .port
        .map(|p| p.to_string())
        .unwrap_or_else(|| env_or("PGPORT", "5432"));
    server_paths("postgres", host, port, dbs)
}

fn mysql_connection(url: Option<&str>, extra: Option<&Path>) -> Result<MySqlConnection> {
    let mut conn = match url.filter(|u| !u.is_empty()) {
        Some(u) => {
            warn_password_in_url(u, "MYSQL_PWD or an option file");
            MySqlConnection::from_url(u)?
        }
        None => MySqlConnection::from_env(),
    };
    if let Some(f) = extra {
        conn.defaults_extra_file = Some(f.to_path_buf());
    }
    Ok(conn)
}

fn mysql_paths(conn: &MySqlConnection, dbs: &[String]) -> Vec<String> {
    let host = match (&conn.host, &conn.socket) {
        (Some(h), _) => h.clone(),
        (None, Some(s)) => s.display().to_string(),
        (None, None) => "localhost".into(),
    };
    let port = conn.port.map_or_else(|| "3306".into(), |p| p.to_string());
    server_paths("mysql", host, port, dbs)
}

fn redis_connection(url: Option<&str>) -> Result<RedisConnection> {
    Ok(match url.filter(|u| !u.is_empty()) {
        Some(u) => {
            warn_password_in_url(u, "REDISCLI_AUTH");
            let mut c = RedisConnection::from_url(u)?;
            if c.password.is_none() {
                c.password = std::env::var("REDISCLI_AUTH")
                    .ok()
                    .map(lifeboat_sources::Secret::new);
            }
            c
        }
        None => RedisConnection::from_env()?,
    })
}

/// `lifeboat backup postgres|mysql|redis|sqlite|command`.
pub fn backup(g: &GlobalArgs, src: &BackupSource) -> Result<Exit> {
    if let BackupSource::Postgres(a) = src {
        if a.physical {
            return super::pg::backup_from_db_args(g, a);
        }
    }
    let (mut source, common, engine, paths): (
        Box<dyn DumpSource + Send>,
        &DbBackupCommon,
        &str,
        Vec<String>,
    ) = match src {
        BackupSource::Postgres(a) => {
            let conn = pg_connection(a.url.as_deref())?;
            let paths = pg_paths(&conn, &a.databases);
            let opts = PgDumpOptions {
                databases: a.databases.clone(),
                globals: !a.no_globals,
                extra_args: a.pg_dump_args.clone(),
                direct: DirectOptions {
                    enabled: !a.pg_dump_only,
                    ..DirectOptions::default()
                },
            };
            (
                Box::new(PgSource::new(conn, opts)),
                &a.common,
                "postgres",
                paths,
            )
        }
        BackupSource::Mysql(a) => {
            let conn = mysql_connection(a.url.as_deref(), a.defaults_extra_file.as_deref())?;
            let paths = mysql_paths(&conn, &a.databases);
            let opts = MySqlDumpOptions {
                databases: a.databases.clone(),
                ..MySqlDumpOptions::default()
            };
            (
                Box::new(MySqlSource::new(conn, opts)),
                &a.common,
                "mysql",
                paths,
            )
        }
        BackupSource::Redis(a) => {
            let conn = redis_connection(a.url.as_deref())?;
            let paths = server_paths("redis", conn.host.clone(), conn.port.to_string(), &[]);
            (Box::new(RedisSource::new(conn)), &a.common, "redis", paths)
        }
        BackupSource::Sqlite(a) => {
            let abs = std::path::absolute(&a.path)
                .with_context(|| format!("resolving {}", a.path.display()))?;
            if !abs.is_file() {
                bail!(
                        "cannot back up {}: not a file\nhint: give the path of the SQLite database file",
                        abs.display()
                    );
            }
            let paths = vec![abs.display().to_string()];
            (Box::new(SqliteSource::new(abs)), &a.common, "sqlite", paths)
        }
        BackupSource::Command(a) => {
            let source = if a.mongodump {
                let mut s = CommandSource::mongodump(a.mongo_config.clone(), a.command.clone());
                if a.name != "command.out" {
                    s.name = a.name.clone();
                }
                s
            } else {
                let (program, args) = a.command.split_first().ok_or_else(|| {
                        anyhow!("no command given\nhint: lifeboat backup command --name NAME -- PROGRAM ARGS...")
                    })?;
                CommandSource::new(
                    a.name.clone(),
                    CommandSpec::new(program.clone(), args.to_vec()),
                )
            };
            let paths = vec![format!("command:{}", source.name)];
            (Box::new(source), &a.common, "command", paths)
        }
    };
    // The password first: a prompt or a `--password-command` may take a while, and
    // `prepare` starts the dump tools (PostgreSQL), which hold a snapshot and table locks
    // from then on. Then the server's questions (versions, databases, WAL position) and the
    // tools' start while the key is derived and the index loaded: neither waits for the
    // other.
    let at = settings::repo_storage(g)?;
    let password = settings::password(g, false)?;
    let (repo, prepared) = std::thread::scope(|s| {
        let prepare = s.spawn(|| source.prepare());
        let repo = settings::open_indexed_with(g, at, &password);
        let prepared = prepare
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (repo, prepared)
    });
    let repo = repo?;
    prepared.with_context(|| format!("{engine} backup failed; nothing was saved"))?;
    let compression = match &common.compression {
        Some(c) => c.parse().map_err(anyhow::Error::msg)?,
        None => repo.config().compression(),
    };
    let opts = StreamBackupOptions {
        hostname: common
            .host
            .clone()
            .unwrap_or_else(lifeboat_core::util::hostname),
        tags: settings::tags(&common.tag),
        source: engine.to_string(),
        paths,
        writer: WriterOptions {
            compression,
            connections: settings::connections(g),
            dry_run: common.dry_run,
            ..WriterOptions::default()
        },
        dry_run: common.dry_run,
        time: common
            .time
            .as_deref()
            .map(lifeboat_core::select::parse_time)
            .transpose()?,
    };
    let bar = Bar::new(settings::show_progress(g), !g.quiet && !g.json, engine);
    let mut sink = RepoSink::new(&repo, opts, &bar);
    let meta = source
        .dump(&mut sink)
        .with_context(|| format!("{engine} backup failed; nothing was saved"))?;
    bar.finish();
    let outcome = sink
        .outcome
        .take()
        .ok_or_else(|| anyhow!("the {engine} dump ended without its metadata"))?;
    print_backup(g, engine, &meta, &outcome, common.dry_run);
    Ok(Exit::Ok)
}

fn print_backup(
    g: &GlobalArgs,
    engine: &str,
    meta: &DumpMetadata,
    o: &BackupOutcome,
    dry_run: bool,
) {
    let s = o.snapshot.summary.clone().unwrap_or_default();
    // What the user must know about the backup just made: printed even with --quiet.
    let warnings: Vec<String> = match meta.engine {
        Engine::Postgres => lifeboat_sources::pg::newer_dump_warning(meta)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if g.json {
        print_json(&json!({
            "snapshot_id": o.snapshot_id,
            "dry_run": dry_run,
            "source": engine,
            "paths": o.snapshot.paths,
            "dump": meta,
            "summary": s,
            "warnings": warnings,
            "requests": settings::storage_stats(),
        }));
        return;
    }
    if g.quiet {
        return;
    }
    let tables: usize = meta.databases.iter().map(|d| d.tables.len()).sum();
    let rows: u64 = meta
        .databases
        .iter()
        .flat_map(|d| &d.tables)
        .map(|t| t.rows)
        .sum();
    let names: Vec<&str> = meta.databases.iter().map(|d| d.name.as_str()).collect();
    println!(
        "{engine}: {} streams, {} dumped{}{}",
        meta.streams.len(),
        bytes(meta.total_bytes()),
        if names.is_empty() {
            String::new()
        } else {
            format!("; databases: {}", names.join(", "))
        },
        if tables > 0 {
            format!("; {tables} tables, {rows} rows recorded")
        } else {
            String::new()
        }
    );
    if let Some(p) = &meta.position {
        println!("position: {}", serde_json::to_string(p).unwrap_or_default());
    }
    println!(
        "Added to the repository: {} ({} stored)",
        bytes(s.data_added),
        bytes(s.data_added_stored)
    );
    match &o.snapshot_id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was written"),
    }
}

/// Is this restore aimed at a database (rather than a directory)?
pub fn wants_db_restore(a: &DbRestoreArgs) -> bool {
    a.to_postgres.is_some()
        || a.to_mysql.is_some()
        || a.to_redis_dir.is_some()
        || a.to_sqlite.is_some()
        || a.to_command
}

fn metadata_of(snap: &SnapshotEntry) -> Result<DumpMetadata> {
    let value = snap.snapshot.metadata.clone().ok_or_else(|| {
        anyhow!(
            "snapshot {} ({}) is not a database backup\nhint: restore files with --target DIR",
            snap.id.short(),
            snap.snapshot.source
        )
    })?;
    DumpMetadata::from_json(value)
        .with_context(|| format!("reading the dump metadata of snapshot {}", snap.id.short()))
}

/// The one dumped database a restore is about: `--database`, or the only one.
fn source_db(meta: &DumpMetadata, a: &DbRestoreArgs) -> Result<String> {
    match &a.database {
        Some(d) => Ok(d.clone()),
        None => match meta.databases.as_slice() {
            [one] => Ok(one.name.clone()),
            dbs => bail!(
                "the snapshot holds {} databases ({}); choose one\nhint: add --database NAME",
                dbs.len(),
                dbs.iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// `restore SNAP --to-...`.
pub fn restore(g: &GlobalArgs, r: &RestoreArgs) -> Result<Exit> {
    let a = &r.db;
    let repo = settings::open_indexed(g)?;
    let snap = super::pick_snapshot(&repo, &r.snapshot, &r.filter, r.at.as_deref())?;
    let meta = metadata_of(&snap)?;
    let bar = Bar::new(settings::show_progress(g), !g.quiet && !g.json, "restore");
    bar.set_totals(0, meta.total_bytes());
    let mut source = RepoSource::new(&repo, &snap, &bar);
    let safety_opts = |engine: &str, paths: Vec<String>| StreamBackupOptions {
        source: engine.to_string(),
        tags: lifeboat_core::snapshot::safety_dump_tags(&snap.id),
        paths,
        writer: WriterOptions {
            compression: repo.config().compression(),
            connections: settings::connections(g),
            ..WriterOptions::default()
        },
        ..StreamBackupOptions::default()
    };
    let hidden = Bar::new(false, false, "safety");
    let mut safety: Option<RepoSink> = None;

    let (plan, report): (RestorePlan, Option<RestoreReport>) = if let Some(url) = &a.to_postgres {
        let conn = pg_connection(Some(url))?;
        let db = source_db(&meta, a)?;
        let mut opts = if let Some(target) = &a.replace {
            safety = Some(RepoSink::new(
                &repo,
                safety_opts("postgres", pg_paths(&conn, std::slice::from_ref(target))),
                &hidden,
            ));
            PgRestoreOptions::replace(target.clone())
        } else if !a.table.is_empty() {
            safety = Some(RepoSink::new(
                &repo,
                safety_opts("postgres", pg_paths(&conn, std::slice::from_ref(&db))),
                &hidden,
            ));
            PgRestoreOptions::tables(db.clone(), a.table.clone())
        } else {
            let name = a
                .as_name
                .clone()
                .unwrap_or_else(|| format!("{db}_restored_{}", snap.id.short()));
            PgRestoreOptions::as_new(name)
        };
        opts.database = Some(db);
        opts.check = a.check.clone();
        opts.verify_row_counts = !a.no_verify_rows;
        opts.keep_previous = a.keep_previous;
        let restorer = PgRestorer::new(conn);
        let plan = restorer.plan(&meta, &opts)?;
        if r.dry_run {
            (plan, None)
        } else {
            if a.globals {
                restorer
                    .restore_globals(&mut source)
                    .context("replaying roles and tablespaces (globals.sql)")?;
            }
            let report = restorer.restore(
                &meta,
                &mut source,
                &opts,
                safety.as_mut().map(|s| s as &mut dyn StreamSink),
            );
            (plan, Some(report.map_err(|e| restore_failed(e, &safety))?))
        }
    } else if let Some(url) = &a.to_mysql {
        if !a.table.is_empty() {
            bail!("--table is not supported for MySQL/MariaDB yet\nhint: restore --as a new database and copy the table with INSERT ... SELECT");
        }
        let conn = mysql_connection(Some(url), None)?;
        let db = source_db(&meta, a)?;
        let mut opts = match &a.replace {
            Some(target) => {
                safety = Some(RepoSink::new(
                    &repo,
                    safety_opts("mysql", mysql_paths(&conn, std::slice::from_ref(target))),
                    &hidden,
                ));
                lifeboat_sources::mysql::MySqlRestoreOptions::replace(target.clone())
            }
            None => lifeboat_sources::mysql::MySqlRestoreOptions::as_new(
                a.as_name
                    .clone()
                    .unwrap_or_else(|| format!("{db}_restored_{}", snap.id.short())),
            ),
        };
        opts.database = Some(db);
        opts.check = a.check.clone();
        opts.verify_row_counts = !a.no_verify_rows;
        opts.keep_previous = a.keep_previous;
        let restorer = MySqlRestorer::new(conn);
        let mut plan = restorer.plan(&meta, &opts)?;
        let stop = a.binlog_until.as_deref().map(|t| match t {
            "end" | "END" => BinlogStop::End,
            t => BinlogStop::Datetime(t.to_string()),
        });
        if let (Some(stop), MySqlTarget::AsNew(target)) = (&stop, &opts.target) {
            plan.steps.push(format!(
                "replay the binary log of {} into {target} from the dump's position until {}",
                opts.database.as_deref().unwrap_or("?"),
                match stop {
                    BinlogStop::Datetime(t) => t.as_str(),
                    _ => "its end",
                }
            ));
        }
        if r.dry_run {
            (plan, None)
        } else {
            let report = restorer.restore(
                &meta,
                &mut source,
                &opts,
                safety.as_mut().map(|s| s as &mut dyn StreamSink),
            );
            let report = report.map_err(|e| restore_failed(e, &safety))?;
            if let (Some(stop), MySqlTarget::AsNew(target), Some(db)) =
                (&stop, &opts.target, &opts.database)
            {
                restorer
                    .replay_binlog(&meta, db, target, stop)
                    .with_context(|| format!("replaying the binary log into {target} (the restored dump stays in place)"))?;
            }
            (plan, Some(report))
        }
    } else if let Some(dir) = &a.to_redis_dir {
        let opts = RedisRestoreOptions {
            verify: !a.no_verify,
            ..RedisRestoreOptions::default()
        };
        let plan = lifeboat_sources::redis::plan_data_dir(&meta, dir, &opts)?;
        if r.dry_run {
            (plan, None)
        } else {
            let report =
                lifeboat_sources::redis::restore_to_data_dir(&meta, &mut source, dir, &opts)?;
            (plan, Some(report))
        }
    } else if let Some(file) = &a.to_sqlite {
        let target = if a.replace_file {
            let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            safety = Some(RepoSink::new(
                &repo,
                safety_opts("sqlite", vec![abs.display().to_string()]),
                &hidden,
            ));
            SqliteTarget::Replace(file.clone())
        } else {
            SqliteTarget::NewFile(file.clone())
        };
        let plan = sqlite::plan(&meta, &target)?;
        if r.dry_run {
            (plan, None)
        } else {
            let report = sqlite::restore(
                &meta,
                &mut source,
                &target,
                safety.as_mut().map(|s| s as &mut dyn StreamSink),
            );
            (plan, Some(report.map_err(|e| restore_failed(e, &safety))?))
        }
    } else if a.to_command {
        let (program, args) = a.command.split_first().ok_or_else(|| {
            anyhow!("no command given\nhint: lifeboat restore SNAP --to-command -- PROGRAM ARGS...")
        })?;
        let sink = CommandSink::new(CommandSpec::new(program.clone(), args.to_vec()));
        let plan = sink.plan(&meta, a.stream.as_deref())?;
        if r.dry_run {
            (plan, None)
        } else {
            let report = sink.restore(&meta, &mut source, a.stream.as_deref())?;
            (plan, Some(report))
        }
    } else {
        unreachable!("wants_db_restore was checked by the caller");
    };
    bar.finish();
    let safety_id = safety
        .as_ref()
        .and_then(RepoSink::outcome)
        .and_then(|o| o.snapshot_id);
    print_restore(g, &snap, &plan, report.as_ref(), safety_id);
    Ok(Exit::Ok)
}

/// A failed restore: say whether the safety dump was stored, so the operator
/// knows where the pre-restore state is.
fn restore_failed(e: lifeboat_sources::Error, safety: &Option<RepoSink>) -> anyhow::Error {
    let saved = safety
        .as_ref()
        .and_then(RepoSink::outcome)
        .and_then(|o| o.snapshot_id);
    let err = anyhow::Error::new(e);
    match saved {
        Some(id) => err.context(format!(
            "restore failed; the target was left as it was, and its safety dump is snapshot {}",
            id.short()
        )),
        None => err.context("restore failed; the target was left as it was"),
    }
}

fn print_restore(
    g: &GlobalArgs,
    snap: &SnapshotEntry,
    plan: &RestorePlan,
    report: Option<&RestoreReport>,
    safety: Option<Id>,
) {
    if g.json {
        print_json(&json!({
            "snapshot_id": snap.id,
            "dry_run": report.is_none(),
            "plan": plan,
            "report": report,
            "safety_snapshot_id": safety,
            "requests": settings::storage_stats(),
        }));
        return;
    }
    if g.quiet {
        return;
    }
    match report {
        None => {
            println!("dry run: restoring snapshot {} would", snap.id.short());
            for (what, list) in [
                ("create", &plan.creates),
                ("drop", &plan.drops),
                ("replace", &plan.replaces),
            ] {
                for x in list {
                    println!("  {what} {x}");
                }
            }
            println!("steps:");
            for (i, step) in plan.steps.iter().enumerate() {
                println!("  {}. {step}", i + 1);
            }
            for n in &plan.notes {
                println!("note: {n}");
            }
        }
        Some(rep) => {
            println!(
                "restored snapshot {} into {}",
                snap.id.short(),
                rep.restored_to
            );
            if !rep.verified.is_empty() {
                println!(
                    "verified: {} tables/keyspaces match the counts recorded at backup",
                    rep.verified.len()
                );
            }
            if rep.check_passed == Some(true) {
                println!("check passed");
            }
            if let Some(id) = safety {
                println!("safety dump of the previous state: snapshot {}", id.short());
            }
            if let Some(prev) = &rep.previous_kept_as {
                println!("previous database kept as {prev}");
            }
            for w in &rep.warnings {
                eprintln!("warning: {w}");
            }
        }
    }
}
