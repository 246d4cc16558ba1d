//! PostgreSQL logical backups: `pg_dump` plain SQL per database, streamed straight from the
//! child's stdout, plus `pg_dumpall --globals-only` for roles and tablespaces; and restores
//! that never touch existing data unless asked, and then only after a safety dump.
//!
//! # Connection settings
//! [`PgConnection::from_env`] leaves everything to libpq: the tools inherit `PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGSERVICE`, `PGSSLMODE`, ... as usual.
//! [`PgConnection::from_url`] takes a `postgresql://` URL; its parts are handed to the tools
//! as those same variables (the password as `PGPASSWORD`, in the child's environment only).
//!
//! # Row counts
//! Counted from the dump itself: the number of lines of each table's `COPY` block, which is
//! exact and belongs to pg_dump's own snapshot (no second query, no second snapshot).
//!
//! # Restores ([`PgRestorer`])
//! - [`PgTarget::AsNew`] (default): create a new database and load the dump into it; refuses
//!   if the name exists. On failure the new database is dropped.
//! - [`PgTarget::Replace`]: safety dump of the existing database into the caller's sink,
//!   load into a temporary database, verify (row counts, `--check`), then terminate
//!   connections and swap the names in one transaction. Any failure before the swap drops the
//!   temporary database and leaves the original untouched.
//! - [`PgTarget::Tables`]: restore single tables into an existing database in one
//!   transaction (see [`plain`] for how entries are selected); existing tables get
//!   `TRUNCATE ONLY` + `COPY`, missing ones are created with their indexes and constraints.
//!   Other tables' rows are never touched; foreign keys that reference a replaced table are
//!   dropped before its `TRUNCATE` and added back after its data, which checks the rows that
//!   reference it (a row left dangling fails and rolls back the whole restore).
//! - Version skew: a dump made by a newer `pg_dump` major than the target server is refused
//!   before anything is created.

pub(crate) mod direct;
pub mod physical;
pub(crate) mod plain;
pub mod wire;

use std::ffi::OsString;
use std::io::{BufReader, Cursor, Read};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rand::Rng;

use crate::meta::Verified;
use crate::process::{self, ChildStream};
use crate::stream::{self, OnFirstBytes, Tap};
use crate::{
    ConnUrl, DatabaseInfo, DumpMetadata, DumpSource, Engine, Error, Position, RestorePlan,
    RestoreReport, Result, Secret, StreamInfo, StreamSink, StreamSource, TableRows,
};
pub use direct::DirectOptions;
use plain::{major_of, quote_ident, quote_literal, PlainObserver, TableFilter, TablePick};

/// How to reach a PostgreSQL server. Unset fields fall back to libpq's own environment
/// variables, which the tools inherit.
#[derive(Debug, Clone, Default)]
pub struct PgConnection {
    /// Host name or socket directory (`PGHOST`).
    pub host: Option<String>,
    /// Port (`PGPORT`).
    pub port: Option<u16>,
    /// User (`PGUSER`).
    pub user: Option<String>,
    /// Password, passed to the tools as `PGPASSWORD` in their environment only.
    pub password: Option<Secret>,
    /// Database used for administrative statements (CREATE/DROP/RENAME DATABASE):
    /// `PGDATABASE`, else `postgres`.
    pub maintenance_db: Option<String>,
    /// Extra libpq variables for the tools (`PGSSLMODE`, `PGPASSFILE`, ...).
    pub env: Vec<(String, String)>,
    /// Directory of `pg_dump`, `psql`, ... (else found on `PATH`).
    pub bin_dir: Option<PathBuf>,
}

impl PgConnection {
    /// Everything from libpq's environment variables.
    pub fn from_env() -> Self {
        PgConnection::default()
    }

    /// Parse a `postgresql://user:password@host:port/db?sslmode=...` URL. The database in
    /// the URL becomes the maintenance database.
    ///
    /// # Errors
    /// [`Error::Config`] for malformed URLs or unknown schemes (the URL is never echoed).
    pub fn from_url(url: &str) -> Result<Self> {
        let u = ConnUrl::parse(url)?;
        if u.scheme != "postgresql" && u.scheme != "postgres" {
            return Err(Error::Config(format!(
                "not a PostgreSQL URL (scheme {})",
                u.scheme
            )));
        }
        let mut c = PgConnection {
            host: u.host.clone(),
            port: u.port,
            user: u.user.clone(),
            password: u.password.clone(),
            maintenance_db: u.path.clone(),
            ..Default::default()
        };
        for (k, v) in &u.params {
            let var = match k.as_str() {
                "host" => {
                    c.host = Some(v.clone());
                    continue;
                }
                "port" => {
                    c.port = Some(v.parse().map_err(|_| Error::Config("bad port".into()))?);
                    continue;
                }
                "user" => {
                    c.user = Some(v.clone());
                    continue;
                }
                "dbname" => {
                    c.maintenance_db = Some(v.clone());
                    continue;
                }
                "password" => {
                    c.password = Some(Secret::new(v.clone()));
                    continue;
                }
                "sslmode" => "PGSSLMODE",
                "sslcert" => "PGSSLCERT",
                "sslkey" => "PGSSLKEY",
                "sslrootcert" => "PGSSLROOTCERT",
                "sslcrl" => "PGSSLCRL",
                "passfile" => "PGPASSFILE",
                "service" => "PGSERVICE",
                "connect_timeout" => "PGCONNECT_TIMEOUT",
                "application_name" => "PGAPPNAME",
                "options" => "PGOPTIONS",
                "target_session_attrs" => "PGTARGETSESSIONATTRS",
                "gssencmode" => "PGGSSENCMODE",
                "channel_binding" => "PGCHANNELBINDING",
                other => return Err(Error::Config(format!("unsupported URL parameter {other}"))),
            };
            c.env.push((var.to_string(), v.clone()));
        }
        Ok(c)
    }

    fn maintenance(&self) -> String {
        self.maintenance_db
            .clone()
            .or_else(|| std::env::var("PGDATABASE").ok())
            .unwrap_or_else(|| "postgres".to_string())
    }

    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .password
            .iter()
            .map(|p| p.expose().to_string())
            .collect();
        if let Ok(p) = std::env::var("PGPASSWORD") {
            s.push(p);
        }
        s
    }

    /// A command for `tool` connected to database `db` (through `PGDATABASE`, so odd names
    /// are never parsed as connection strings).
    pub(crate) fn command(&self, tool: &str, db: &str) -> Command {
        let program: OsString = match &self.bin_dir {
            Some(d) => d.join(tool).into_os_string(),
            None => tool.into(),
        };
        let mut cmd = Command::new(program);
        if let Some(h) = &self.host {
            cmd.env("PGHOST", h);
        }
        if let Some(p) = self.port {
            cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.env("PGUSER", u);
        }
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p.expose());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("PGDATABASE", db);
        cmd
    }

    /// Run `sql` in `db` with psql (unaligned, tuples only, stop on error); trimmed stdout.
    ///
    /// # Errors
    /// [`Error::Command`] with psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.command("psql", db);
        cmd.args([
            "-X",
            "-w",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        process::output(cmd, &self.secrets())
    }

    /// `SHOW server_version` and its major.
    ///
    /// # Errors
    /// Connection failures.
    pub fn server_version(&self) -> Result<(String, u32)> {
        // One connection for both (psql's unaligned output separates columns with `|`).
        let out = self.psql(
            &self.maintenance(),
            "SELECT current_setting('server_version_num'), current_setting('server_version')",
        )?;
        let (num, v) = out.split_once('|').unwrap_or(("", out.as_str()));
        let major = num.trim().parse::<u32>().map(|n| n / 10000).unwrap_or(0);
        Ok((v.to_string(), major))
    }

    /// Whether database `name` exists.
    ///
    /// # Errors
    /// Connection failures.
    pub fn database_exists(&self, name: &str) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(name)
        );
        Ok(self.psql(&self.maintenance(), &sql)? == "1")
    }

    /// Connectable, non-template databases.
    ///
    /// # Errors
    /// Connection failures.
    pub fn list_databases(&self) -> Result<Vec<String>> {
        let out = self.psql(
            &self.maintenance(),
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        )?;
        Ok(out
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect())
    }
}

/// What to dump.
#[derive(Debug, Clone)]
pub struct PgDumpOptions {
    /// Databases to dump; empty = every connectable non-template database.
    pub databases: Vec<String>,
    /// Also dump roles and tablespaces (`pg_dumpall --globals-only`, needs superuser).
    pub globals: bool,
    /// Extra `pg_dump` arguments (e.g. `--exclude-table=...`). Must keep the plain format.
    /// With any, `pg_dump` reads every table.
    pub extra_args: Vec<String>,
    /// Which large tables Lifeboat reads itself, inside `pg_dump`'s snapshot.
    pub direct: DirectOptions,
}

impl Default for PgDumpOptions {
    fn default() -> Self {
        PgDumpOptions {
            databases: Vec::new(),
            globals: true,
            extra_args: Vec::new(),
            direct: DirectOptions::default(),
        }
    }
}

/// Stream name for database `db`.
pub fn stream_name(db: &str) -> String {
    format!("db/{}.sql", stream::name_component(db))
}

/// Stream name of the globals dump.
pub const GLOBALS_STREAM: &str = "globals.sql";

/// A PostgreSQL logical dump source.
#[derive(Debug)]
pub struct PgSource {
    conn: PgConnection,
    opts: PgDumpOptions,
    prepared: Option<DumpProbe>,
}

/// What [`PgSource::prepare`] asks the server before the dump.
struct DumpProbe {
    server_version: String,
    /// `extract(epoch from pg_postmaster_start_time())`: the server the tools reach.
    server_started: String,
    /// `pg_dump`'s version, when a direct read is possible (it decides `\restrict`).
    pg_dump_version: Option<String>,
    databases: Vec<String>,
    /// WAL position before the first `pg_dump`.
    before: String,
    /// `pg_dumpall --globals-only` (unless `--no-globals`) and the first database's
    /// `pg_dump`, started right after the probe: they connect and read the catalog while
    /// the repository opens (the key is derived, the index loaded) instead of after. Their
    /// output waits in the bounded read-ahead; dropped unread (the repository did not
    /// open), they are killed.
    globals: Option<ChildStream>,
    first_db: Option<DbDump>,
}

/// One database's dump, started.
enum DbDump {
    /// `pg_dump` alone.
    Plain(ChildStream),
    /// `pg_dump` for the schema and the small tables, then the large tables read
    /// directly, then `pg_dump` for the post-data section (see [`direct`]).
    Direct {
        direct: Box<direct::Direct>,
        first: ChildStream,
        last: ChildStream,
    },
}

impl std::fmt::Debug for DumpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpProbe")
            .field("server_version", &self.server_version)
            .field("databases", &self.databases)
            .field("before", &self.before)
            .field("globals_started", &self.globals.is_some())
            .field("first_db_started", &self.first_db.is_some())
            .finish()
    }
}

impl PgSource {
    /// A source dumping `opts` from `conn`.
    pub fn new(conn: PgConnection, opts: PgDumpOptions) -> Self {
        PgSource {
            conn,
            opts,
            prepared: None,
        }
    }

    fn globals_command(&self) -> Command {
        let conn = &self.conn;
        let mut cmd = conn.command("pg_dumpall", &conn.maintenance());
        cmd.args(["-w", "--globals-only", "-l", &conn.maintenance()]);
        cmd
    }

    fn dump_command(&self, db: &str) -> Command {
        let mut cmd = self.conn.command("pg_dump", db);
        cmd.args(["-w", "--format=plain"])
            .args(&self.opts.extra_args);
        process::buffer_stdout(&mut cmd);
        cmd
    }

    /// The server's version, start time and WAL position, from one `psql`.
    fn version_and_lsn(&self) -> Result<(String, String, String)> {
        let out = self.conn.psql(
            &self.conn.maintenance(),
            &format!(
                "SELECT current_setting('server_version'), \
                 extract(epoch from pg_postmaster_start_time())::text, {CURRENT_LSN}"
            ),
        )?;
        let mut fields = out.rsplitn(3, '|');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(lsn), Some(started), Some(version)) => {
                Ok((version.to_string(), started.to_string(), lsn.to_string()))
            }
            _ => Err(Error::Format(format!(
                "psql answered {out:?} when asked for the server version and WAL position"
            ))),
        }
    }

    /// Whether large tables may be read directly (else `pg_dump` reads everything).
    fn direct_possible(&self) -> bool {
        self.opts.direct.enabled && self.opts.extra_args.is_empty()
    }

    /// Start dumping `db`: directly where possible (see [`direct`]), else `pg_dump` alone.
    /// `after` asks for the WAL position after the dump's snapshot (the last database).
    fn start_db(
        &self,
        db: &str,
        server_started: &str,
        pg_dump_version: Option<&str>,
        after: bool,
    ) -> Result<DbDump> {
        let secrets = self.conn.secrets();
        if let (true, Some(version)) = (self.direct_possible(), pg_dump_version) {
            let plan = direct::Plan {
                conn: &self.conn,
                db,
                opts: &self.opts.direct,
                server_started,
                pg_dump_major: major_of(version).unwrap_or(0),
                want_after: after.then_some(LATEST_LSN),
            };
            match direct::prepare(&plan) {
                Ok(Some(d)) => {
                    let mut first = self.dump_command(db);
                    first.args(d.first_args());
                    let mut last = self.dump_command(db);
                    last.args(d.last_args());
                    tracing::info!(
                        database = db,
                        tables = ?d.tables.iter().map(|t| format!("{}.{}", t.schema, t.name)).collect::<Vec<_>>(),
                        connections = d.connections(),
                        "reading the largest tables directly"
                    );
                    return Ok(DbDump::Direct {
                        first: ChildStream::spawn(first, secrets.clone())?,
                        last: ChildStream::spawn(last, secrets)?,
                        direct: Box::new(d),
                    });
                }
                Ok(None) => {
                    tracing::debug!(database = db, "no table large enough to read directly")
                }
                Err(reason) => tracing::info!(database = db, "pg_dump reads every table: {reason}"),
            }
        }
        Ok(DbDump::Plain(ChildStream::spawn(
            self.dump_command(db),
            secrets,
        )?))
    }
}

/// The server's WAL position now, as an upper bound (see [`LATEST_LSN`]).
fn latest_lsn(conn: &PgConnection) -> Result<String> {
    conn.psql(&conn.maintenance(), &format!("SELECT {LATEST_LSN}"))
}

/// The WAL position inserted (primary) or replayed (standby): an upper bound of what a
/// snapshot taken before could see. The insert position, not the write position: with
/// `synchronous_commit = off` a commit that a snapshot sees may still be in the WAL
/// buffers, past the written position.
const LATEST_LSN: &str = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                          ELSE pg_current_wal_insert_lsn() END";

/// The WAL position: written (primary) or replayed (standby).
const CURRENT_LSN: &str = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                           ELSE pg_current_wal_lsn() END";

/// A scoped thread's result; its panic goes on in the caller.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn tool_version(cmd: Command, secrets: &[String]) -> Result<String> {
    let out = process::output(cmd, secrets)?;
    // "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" -> "15.20 (Debian ...)"
    Ok(out
        .split_once(") ")
        .map(|(_, v)| v.to_string())
        .unwrap_or(out)
        .trim()
        .to_string())
}

/// Store one database read partly directly (see [`direct`]): the first `pg_dump` run, the
/// tables read directly, the last run, as parts of one stream; the first run's state (its
/// tables, versions, footer) and the direct tables' rows.
fn store_direct(
    sink: &mut dyn StreamSink,
    name: &str,
    db: &str,
    direct: &mut direct::Direct,
    mut first: ChildStream,
    post: ChildStream,
) -> Result<(u64, plain::PlainState, Vec<TableRows>)> {
    let storing = |e| Error::io(format!("storing stream {name}"), e);
    let header = direct.follow_header(&mut first).map_err(storing)?;
    let (mut head, mut tail) = (PlainObserver::new(), PlainObserver::new());
    let mut parts: Vec<Box<dyn Read + Send + '_>> = vec![Box::new(Tap::new(
        Cursor::new(header).chain(first),
        &mut head,
    ))];
    for part in direct.parts() {
        parts.push(Box::new(part));
    }
    parts.push(Box::new(Tap::new(post, &mut tail)));
    let bytes = stream::add_parts(sink, name, parts)?;
    let (head, tail) = (head.into_state(), tail.into_state());
    if !tail.complete || tail.dumped_by.is_none() {
        return Err(Error::Format(format!(
            "pg_dump's post-data output for {db} is not a complete plain-format dump"
        )));
    }
    if let Some(t) = direct.duplicated(&head.tables) {
        return Err(Error::Format(format!(
            "pg_dump wrote the data of {} in its dump of {db}, which was read directly too \
             (hint: --pg-dump-only)",
            t.qualified()
        )));
    }
    Ok((bytes, head, direct.table_rows()))
}

impl DumpSource for PgSource {
    /// The server's version and the WAL position before the dump (one `psql`), and the
    /// databases when none were named (a second one, at the same time); then `pg_dumpall`
    /// and the first `pg_dump` are started (see [`DumpProbe::globals`]). `pg_dump`'s own
    /// version comes from its output's header: asking it with `--version` cost a process
    /// (two on Debian, whose `pg_dump` is a Perl wrapper) before the dump could start.
    fn prepare(&mut self) -> Result<()> {
        if self.prepared.is_some() {
            return Ok(());
        }
        let conn = &self.conn;
        let (probe, databases, pg_dump_version) = std::thread::scope(|s| {
            let databases =
                (self.opts.databases.is_empty()).then(|| s.spawn(|| conn.list_databases()));
            let pg_dump_version = self.direct_possible().then(|| {
                s.spawn(|| {
                    let mut v = conn.command("pg_dump", &conn.maintenance());
                    v.arg("--version");
                    tool_version(v, &conn.secrets())
                })
            });
            let probe = self.version_and_lsn();
            (probe, databases.map(join), pg_dump_version.map(join))
        });
        let (server_version, server_started, before) = probe?;
        let databases = databases.unwrap_or_else(|| Ok(self.opts.databases.clone()))?;
        // Without it, pg_dump reads everything (and says itself what is wrong with it).
        let pg_dump_version = pg_dump_version.and_then(|v| v.ok());
        let globals = if self.opts.globals {
            Some(ChildStream::spawn(
                self.globals_command(),
                self.conn.secrets(),
            )?)
        } else {
            None
        };
        let first_db = match databases.first() {
            Some(db) => Some(self.start_db(
                db,
                &server_started,
                pg_dump_version.as_deref(),
                databases.len() == 1,
            )?),
            None => None,
        };
        self.prepared = Some(DumpProbe {
            server_version,
            server_started,
            pg_dump_version,
            databases,
            before,
            globals,
            first_db,
        });
        Ok(())
    }

    /// The streams in order (globals, then each database). The WAL position "after" is
    /// read as soon as the last `pg_dump` has written its first bytes: it has taken its
    /// snapshot by then (it reads the catalog inside its transaction before writing
    /// anything), so the position is past every dump's snapshot, and the query runs
    /// beside the dump instead of after it (for a dump under 1 MiB, whose first bytes come
    /// when `pg_dump` exits: see `process::buffer_stdout`, after it).
    fn dump(&mut self, sink: &mut dyn StreamSink) -> Result<DumpMetadata> {
        self.prepare()?;
        let DumpProbe {
            server_version,
            server_started,
            pg_dump_version,
            databases,
            before,
            globals,
            mut first_db,
        } = self.prepared.take().expect("prepared above");
        let secrets = self.conn.secrets();
        let mut meta = DumpMetadata::new(Engine::Postgres);
        meta.server_version = Some(server_version);
        // Started by `prepare` exactly when `--no-globals` was not given.
        if let Some(mut child) = globals {
            let bytes = stream::add(sink, GLOBALS_STREAM, &mut child)?;
            meta.streams.push(StreamInfo {
                name: GLOBALS_STREAM.into(),
                kind: "globals".into(),
                database: None,
                bytes,
            });
        }
        let conn = &self.conn;
        let after = std::thread::scope(|s| -> Result<String> {
            let mut after_probe = None;
            let mut after_direct = None;
            for (i, db) in databases.iter().enumerate() {
                let name = stream_name(db);
                let last = i + 1 == databases.len();
                let started = match first_db.take() {
                    Some(started) => started,
                    None => self.start_db(db, &server_started, pg_dump_version.as_deref(), last)?,
                };
                let incomplete = || {
                    Error::Format(format!(
                        "pg_dump output for {db} is not a complete plain-format dump"
                    ))
                };
                let (bytes, state, direct_tables) = match started {
                    DbDump::Plain(child) => {
                        let mut observer = PlainObserver::new();
                        let probe_after = || {
                            if last {
                                after_probe = Some(s.spawn(|| latest_lsn(conn)));
                            }
                        };
                        let mut reader =
                            OnFirstBytes::new(Tap::new(child, &mut observer), probe_after);
                        let bytes = stream::add(sink, &name, &mut reader)?;
                        drop(reader);
                        (bytes, observer.into_state(), Vec::new())
                    }
                    DbDump::Direct {
                        mut direct,
                        first,
                        last: post,
                    } => {
                        if last {
                            after_direct.clone_from(&direct.after);
                        }
                        store_direct(sink, &name, db, &mut direct, first, post)?
                    }
                };
                if state.dumped_by.is_none() || !state.complete {
                    return Err(incomplete());
                }
                if meta.client_version.is_none() {
                    meta.client_version = state.dumped_by.clone();
                }
                let mut info = DatabaseInfo::new(db.clone());
                info.stream = Some(name.clone());
                info.tables = state.tables;
                info.tables.extend(direct_tables);
                meta.databases.push(info);
                meta.streams.push(StreamInfo::database(name, db, bytes));
            }
            match (after_probe, after_direct) {
                (Some(probe), _) => join(probe),
                (None, Some(after)) => Ok(after),
                // Globals only (or an empty last dump): ask now.
                (None, None) => latest_lsn(conn),
            }
        })?;
        if meta.client_version.is_none() {
            // No database was dumped: ask the tool itself.
            let mut v = self.conn.command("pg_dump", &self.conn.maintenance());
            v.arg("--version");
            meta.client_version = Some(tool_version(v, &secrets)?);
        }
        meta.position = Some(Position::PgLsn { before, after });
        meta.finished_at = crate::meta::now();
        stream::finish(sink, &meta)?;
        Ok(meta)
    }
}

/// Where a PostgreSQL restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTarget {
    /// A new database with this name (refused if it exists).
    AsNew(String),
    /// Replace this existing database (safety dump, temp database, verify, swap).
    Replace(String),
    /// Restore these tables (`schema.table` or `table`) into this existing database.
    Tables {
        /// Target database.
        database: String,
        /// Tables to restore.
        tables: Vec<String>,
    },
}

/// Options of a PostgreSQL restore.
#[derive(Debug, Clone)]
pub struct PgRestoreOptions {
    /// Which dumped database to restore (needed when the dump holds several).
    pub database: Option<String>,
    /// Target.
    pub target: PgTarget,
    /// SQL returning one boolean, run in the restored database; false or an error fails
    /// the restore (and rolls a replace back).
    pub check: Option<String>,
    /// Compare row counts with those recorded at backup (default true).
    pub verify_row_counts: bool,
    /// After a replace, keep the previous database under the returned name instead of
    /// dropping it.
    pub keep_previous: bool,
}

impl PgRestoreOptions {
    /// Restore into new database `name`.
    pub fn as_new(name: impl Into<String>) -> Self {
        Self::with_target(PgTarget::AsNew(name.into()))
    }

    /// Replace database `db`.
    pub fn replace(db: impl Into<String>) -> Self {
        Self::with_target(PgTarget::Replace(db.into()))
    }

    /// Restore `tables` into existing database `db`.
    pub fn tables(db: impl Into<String>, tables: Vec<String>) -> Self {
        Self::with_target(PgTarget::Tables {
            database: db.into(),
            tables,
        })
    }

    fn with_target(target: PgTarget) -> Self {
        PgRestoreOptions {
            database: None,
            target,
            check: None,
            verify_row_counts: true,
            keep_previous: false,
        }
    }
}

/// Everything [`PgRestorer::plan`] found out, reused by the restore.
struct Prepared {
    plan: RestorePlan,
    source: DatabaseInfo,
    stream: String,
    server_major: u32,
    server_version: String,
    temp: Option<String>,
    old: Option<String>,
    picks: Vec<(TablePick, u64)>,
}

fn side_name(base: &str, tag: &str) -> String {
    let suffix = format!("_lb_{tag}_{:08x}", rand::thread_rng().gen::<u32>());
    let mut prefix = base.to_string();
    while prefix.len() + suffix.len() > 63 {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn check_sql(check: &str) -> Result<String> {
    let c = check.trim().trim_end_matches(';').trim();
    if c.is_empty() || c.contains("$lb$") {
        return Err(Error::Config(
            "--check must be one SQL query returning a boolean".into(),
        ));
    }
    Ok(c.to_string())
}

/// The warning a backup gives when `pg_dump` is of a newer major than the server it dumped:
/// its SQL (`SET transaction_timeout`, `\restrict`, ...) does not load into the server's own
/// major, so the restore refuses every server older than `pg_dump` ([`Error::VersionSkew`]),
/// the dumped one included. The text has a `hint:` line. `None` for a dump of the server's
/// own major or an older one, and when either version is unknown.
pub fn newer_dump_warning(meta: &DumpMetadata) -> Option<String> {
    let tool = meta.client_version.as_deref()?;
    let server = meta.server_version.as_deref()?;
    // The restore's own rule, applied to the server the dump came from.
    let Err(Error::VersionSkew {
        dump_major,
        server_major,
        ..
    }) = check_skew(tool, server, major_of(server)?)
    else {
        return None;
    };
    Some(format!(
        "pg_dump {tool} is newer than the server it dumped ({server}): this backup \
         restores only into PostgreSQL {dump_major} or newer, not into a {server_major} \
         server like the one it came from\n\
         hint: put PostgreSQL {server_major}'s pg_dump and psql first in PATH (Debian: \
         /usr/lib/postgresql/{server_major}/bin) for backups that restore into \
         {server_major}"
    ))
}

/// Refuse a dump made by a newer tool major than the server.
fn check_skew(tool_version: &str, server_version: &str, server_major: u32) -> Result<()> {
    match major_of(tool_version) {
        Some(dump_major) if dump_major > server_major => Err(Error::VersionSkew {
            tool: "pg_dump".into(),
            dump_version: tool_version.to_string(),
            dump_major,
            server_version: server_version.to_string(),
            server_major,
        }),
        _ => Ok(()),
    }
}

/// Restores PostgreSQL logical dumps.
#[derive(Debug, Clone)]
pub struct PgRestorer {
    conn: PgConnection,
}

impl PgRestorer {
    /// A restorer talking to `conn`.
    pub fn new(conn: PgConnection) -> Self {
        PgRestorer { conn }
    }

    /// What a restore would do, without changing anything (`--dry-run`). Checks that the
    /// target exists or not as required and the version skew rule.
    ///
    /// # Errors
    /// [`Error::Refused`], [`Error::VersionSkew`], [`Error::Config`] for unknown databases or
    /// tables, connection failures.
    pub fn plan(&self, meta: &DumpMetadata, opts: &PgRestoreOptions) -> Result<RestorePlan> {
        Ok(self.prepare(meta, opts)?.plan)
    }

    fn prepare(&self, meta: &DumpMetadata, opts: &PgRestoreOptions) -> Result<Prepared> {
        if meta.engine != Engine::Postgres {
            return Err(Error::Config(format!(
                "not a PostgreSQL dump ({:?})",
                meta.engine
            )));
        }
        let source = match &opts.database {
            Some(name) => meta
                .database(name)
                .ok_or_else(|| Error::Config(format!("the dump holds no database {name}")))?,
            None => match meta.databases.as_slice() {
                [one] => one,
                [] => return Err(Error::Config("the dump holds no database".into())),
                many => {
                    let names: Vec<&str> = many.iter().map(|d| d.name.as_str()).collect();
                    return Err(Error::Config(format!(
                        "the dump holds several databases ({}); choose one",
                        names.join(", ")
                    )));
                }
            },
        }
        .clone();
        let stream = source
            .stream
            .clone()
            .ok_or_else(|| Error::Format(format!("no stream recorded for {}", source.name)))?;
        let (server_version, server_major) = self.conn.server_version()?;
        let tool = meta.client_version.clone().unwrap_or_default();
        check_skew(&tool, &server_version, server_major)?;
        if let Some(c) = &opts.check {
            check_sql(c)?;
        }
        let mut plan = RestorePlan {
            engine: "postgres".into(),
            ..Default::default()
        };
        plan.notes.push(format!(
            "dump of database {} made by pg_dump {tool} from server {}; target server {server_version}",
            source.name,
            meta.server_version.as_deref().unwrap_or("?")
        ));
        let verify = |plan: &mut RestorePlan, db: &str| {
            if opts.verify_row_counts {
                plan.steps.push(format!(
                    "verify row counts of {} tables in {db} against the backup",
                    source.tables.len()
                ));
            }
            if let Some(c) = &opts.check {
                plan.steps.push(format!("run check in {db}: {c}"));
            }
        };
        let mut prepared = Prepared {
            plan,
            source: source.clone(),
            stream: stream.clone(),
            server_major,
            server_version,
            temp: None,
            old: None,
            picks: Vec::new(),
        };
        let plan = &mut prepared.plan;
        match &opts.target {
            PgTarget::AsNew(name) => {
                if self.conn.database_exists(name)? {
                    return Err(Error::Refused(format!(
                        "database {name} already exists; nothing was changed (choose another \
                         name, or replace it explicitly)"
                    )));
                }
                plan.creates.push(format!("database {name}"));
                plan.steps.push(format!("create database {name}"));
                plan.steps.push(format!("load stream {stream} into {name}"));
                verify(plan, name);
                plan.steps.push(format!("on failure: drop {name}"));
            }
            PgTarget::Replace(db) => {
                if !self.conn.database_exists(db)? {
                    return Err(Error::Refused(format!(
                        "database {db} does not exist; restore it as a new database instead"
                    )));
                }
                let temp = side_name(db, "tmp");
                let old = side_name(db, "old");
                plan.creates.push(format!("database {temp} (temporary)"));
                plan.replaces.push(format!("database {db}"));
                plan.steps.push(format!(
                    "safety dump of {db} (stored before anything changes)"
                ));
                plan.steps
                    .push(format!("create temporary database {temp} like {db}"));
                plan.steps.push(format!("load stream {stream} into {temp}"));
                verify(plan, &temp);
                plan.steps.push(format!("terminate connections to {db}"));
                plan.steps.push(format!(
                    "in one transaction: rename {db} to {old}, rename {temp} to {db}"
                ));
                if opts.keep_previous {
                    plan.steps
                        .push(format!("keep the previous database as {old}"));
                } else {
                    plan.drops
                        .push(format!("database {old} (the previous {db})"));
                    plan.steps.push(format!("drop {old} (the previous {db})"));
                }
                plan.steps.push(format!(
                    "on any failure before the swap: drop {temp}; {db} stays untouched"
                ));
                prepared.temp = Some(temp);
                prepared.old = Some(old);
            }
            PgTarget::Tables { database, tables } => {
                if !self.conn.database_exists(database)? {
                    return Err(Error::Refused(format!(
                        "database {database} does not exist"
                    )));
                }
                if tables.is_empty() {
                    return Err(Error::Config("no table given".into()));
                }
                plan.steps
                    .push(format!("open one transaction in {database}"));
                for t in tables {
                    let rec = find_table(&source, t)?;
                    let schema = rec.schema.clone().unwrap_or_else(|| "public".into());
                    let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&rec.name));
                    let exists = self.conn.psql(
                        database,
                        &format!(
                            "SELECT to_regclass({}) IS NOT NULL",
                            quote_literal(&qualified)
                        ),
                    )? == "t";
                    let pick = TablePick {
                        schema,
                        name: rec.name.clone(),
                        exists,
                    };
                    if exists {
                        plan.replaces
                            .push(format!("table {} in {database}", rec.qualified()));
                        plan.steps.push(format!(
                            "TRUNCATE ONLY {} and load its {} rows",
                            rec.qualified(),
                            rec.rows
                        ));
                    } else {
                        plan.creates
                            .push(format!("table {} in {database}", rec.qualified()));
                        plan.steps.push(format!(
                            "create {} with its indexes, constraints, sequences, triggers; load {} rows",
                            rec.qualified(),
                            rec.rows
                        ));
                    }
                    prepared.picks.push((pick, rec.rows));
                }
                if prepared.picks.iter().any(|(p, _)| p.exists) {
                    plan.steps.insert(
                        0,
                        format!("safety dump of the existing tables in {database}"),
                    );
                }
                if opts.verify_row_counts {
                    plan.steps
                        .push("verify row counts of the restored tables".into());
                }
                if let Some(c) = &opts.check {
                    plan.steps.push(format!("run check: {c}"));
                }
                plan.steps
                    .push("commit (any failure rolls everything back)".into());
            }
        }
        Ok(prepared)
    }

    /// Carry out a restore. `safety` receives the pre-restore safety dump (required for
    /// [`PgTarget::Replace`] and for [`PgTarget::Tables`] when a table exists; it is finished
    /// with its own metadata before anything is changed).
    ///
    /// # Errors
    /// Everything [`plan`](Self::plan) refuses; [`Error::VersionSkew`] when the stream's own
    /// header names a newer pg_dump; [`Error::Verification`] when counts or the check fail
    /// (the original is untouched); tool failures.
    pub fn restore(
        &self,
        meta: &DumpMetadata,
        source: &mut dyn StreamSource,
        opts: &PgRestoreOptions,
        safety: Option<&mut dyn StreamSink>,
    ) -> Result<RestoreReport> {
        let prep = self.prepare(meta, opts)?;
        let mut input = stream::open(source, &prep.stream)?;
        // Check the stream's own header before anything is created.
        let mut head = Vec::new();
        (&mut input)
            .take(16 * 1024)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(format!("reading stream {}", prep.stream), e))?;
        let (_, dumped_by) = plain::header_versions(&head);
        let dumped_by = dumped_by.ok_or_else(|| {
            Error::Format(format!("stream {} has no pg_dump header", prep.stream))
        })?;
        check_skew(&dumped_by, &prep.server_version, prep.server_major)?;
        let mut reader = Cursor::new(head).chain(input);
        match &opts.target {
            PgTarget::AsNew(name) => self.restore_new(&prep, opts, name, &mut reader),
            PgTarget::Replace(db) => {
                let safety = safety.ok_or_else(|| {
                    Error::Config("a replace restore needs a sink for the safety dump".into())
                })?;
                self.restore_replace(&prep, opts, db, &mut reader, safety)
            }
            PgTarget::Tables { database, .. } => {
                self.restore_tables(&prep, opts, database, reader, safety)
            }
        }
    }

    fn load(&self, db: &str, reader: &mut dyn Read) -> Result<()> {
        let mut cmd = self.conn.command("psql", db);
        cmd.args(["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        process::pipe_into(cmd, reader, &self.conn.secrets())
    }

    fn drop_database(&self, db: &str) -> Result<()> {
        let force = if self.conn.server_version()?.1 >= 13 {
            " WITH (FORCE)"
        } else {
            ""
        };
        self.conn
            .psql(
                &self.conn.maintenance(),
                &format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(db)),
            )
            .map(|_| ())
    }

    /// Verify row counts and the check in `db`; returns the verified counts.
    fn verify(&self, prep: &Prepared, opts: &PgRestoreOptions, db: &str) -> Result<Verified> {
        let mut verified = Vec::new();
        let mut failures = Vec::new();
        if opts.verify_row_counts && !prep.source.tables.is_empty() {
            let sql = prep
                .source
                .tables
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let schema = t.schema.as_deref().unwrap_or("public");
                    format!(
                        "SELECT {i}, count(*) FROM ONLY {}.{}",
                        quote_ident(schema),
                        quote_ident(&t.name)
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            match self.conn.psql(db, &sql) {
                Ok(out) => {
                    let mut got = vec![None; prep.source.tables.len()];
                    for line in out.lines() {
                        if let Some((i, n)) = line.split_once('|') {
                            if let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.parse::<u64>()) {
                                if i < got.len() {
                                    got[i] = Some(n);
                                }
                            }
                        }
                    }
                    for (t, g) in prep.source.tables.iter().zip(got) {
                        match g {
                            Some(n) if n == t.rows => verified.push((t.qualified(), n)),
                            Some(n) => failures.push(format!(
                                "{} has {n} rows, the backup recorded {}",
                                t.qualified(),
                                t.rows
                            )),
                            None => {
                                failures.push(format!("{} could not be counted", t.qualified()))
                            }
                        }
                    }
                }
                Err(e) => failures.push(format!("counting rows failed: {e}")),
            }
        }
        let mut check_passed = None;
        if let Some(c) = &opts.check {
            let sql = format!("SELECT coalesce(({})::boolean, false)", check_sql(c)?);
            match self.conn.psql(db, &sql) {
                Ok(v) if v == "t" => check_passed = Some(true),
                Ok(_) => failures.push(format!("check returned false: {c}")),
                Err(e) => failures.push(format!("check failed: {e}")),
            }
        }
        if failures.is_empty() {
            Ok((verified, check_passed))
        } else {
            Err(Error::Verification(failures))
        }
    }

    fn restore_new(
        &self,
        prep: &Prepared,
        opts: &PgRestoreOptions,
        name: &str,
        reader: &mut dyn Read,
    ) -> Result<RestoreReport> {
        let m = self.conn.maintenance();
        self.conn.psql(
            &m,
            &format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name)),
        )?;
        let result = self
            .load(name, reader)
            .and_then(|()| self.verify(prep, opts, name));
        match result {
            Ok((verified, check_passed)) => Ok(RestoreReport {
                plan: prep.plan.clone(),
                restored_to: name.to_string(),
                verified,
                check_passed,
                safety_dump: None,
                previous_kept_as: None,
                warnings: Vec::new(),
            }),
            Err(e) => {
                // We created it: remove the half-restored database.
                let _ = self.drop_database(name);
                Err(e)
            }
        }
    }

    fn safety_dump(
        &self,
        db: &str,
        extra_args: Vec<String>,
        sink: &mut dyn StreamSink,
    ) -> Result<DumpMetadata> {
        let opts = PgDumpOptions {
            databases: vec![db.to_string()],
            globals: false,
            extra_args,
            direct: DirectOptions::default(),
        };
        PgSource::new(self.conn.clone(), opts).dump(sink)
    }

    fn restore_replace(
        &self,
        prep: &Prepared,
        opts: &PgRestoreOptions,
        db: &str,
        reader: &mut dyn Read,
        safety: &mut dyn StreamSink,
    ) -> Result<RestoreReport> {
        let temp = prep.temp.clone().expect("replace has a temp name");
        let old = prep.old.clone().expect("replace has an old name");
        let m = self.conn.maintenance();
        let safety_meta = self.safety_dump(db, Vec::new(), safety)?;
        let like = self.conn.psql(
            &m,
            &format!(
                "SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, r.rolname \
                 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = {}",
                quote_literal(db)
            ),
        )?;
        let parts: Vec<&str> = like.split('|').collect();
        let create = match parts.as_slice() {
            [enc, collate, ctype, owner] => format!(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}",
                quote_ident(&temp),
                quote_literal(enc),
                quote_literal(collate),
                quote_literal(ctype),
                quote_ident(owner)
            ),
            _ => format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&temp)),
        };
        self.conn.psql(&m, &create)?;
        let staged = self
            .load(&temp, reader)
            .and_then(|()| self.verify(prep, opts, &temp));
        let (verified, check_passed) = match staged {
            Ok(v) => v,
            Err(e) => {
                let _ = self.drop_database(&temp);
                return Err(e);
            }
        };
        // Swap: terminate connections, then both renames in one transaction. New
        // connections can sneak in between; retry a few times.
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname IN ({}, {}) AND pid <> pg_backend_pid()",
            quote_literal(db),
            quote_literal(&temp)
        );
        let swap = format!(
            "BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT;",
            quote_ident(db),
            quote_ident(&old),
            quote_ident(&temp),
            quote_ident(db)
        );
        let mut last_err = None;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * attempt));
            }
            if let Err(e) = self.conn.psql(&m, &terminate) {
                last_err = Some(e);
                continue;
            }
            match self.conn.psql(&m, &swap) {
                Ok(_) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            let _ = self.drop_database(&temp);
            return Err(e);
        }
        let mut warnings = Vec::new();
        let previous_kept_as = if opts.keep_previous {
            Some(old)
        } else {
            if let Err(e) = self.drop_database(&old) {
                warnings.push(format!("could not drop the previous database {old}: {e}"));
            }
            None
        };
        Ok(RestoreReport {
            plan: prep.plan.clone(),
            restored_to: db.to_string(),
            verified,
            check_passed,
            safety_dump: Some(safety_meta),
            previous_kept_as,
            warnings,
        })
    }

    fn restore_tables(
        &self,
        prep: &Prepared,
        opts: &PgRestoreOptions,
        database: &str,
        reader: impl Read + Send,
        safety: Option<&mut dyn StreamSink>,
    ) -> Result<RestoreReport> {
        let existing: Vec<&TablePick> = prep
            .picks
            .iter()
            .map(|(p, _)| p)
            .filter(|p| p.exists)
            .collect();
        let safety_meta = if existing.is_empty() {
            None
        } else {
            let sink = safety.ok_or_else(|| {
                Error::Config(
                    "restoring over existing tables needs a sink for the safety dump".into(),
                )
            })?;
            let args = existing
                .iter()
                .map(|p| {
                    // Inside double quotes pattern characters are literal.
                    format!("--table={}", p.sql_name())
                })
                .collect();
            Some(self.safety_dump(database, args, sink)?)
        };
        let mut trailer = String::new();
        if opts.verify_row_counts {
            for (p, rows) in &prep.picks {
                let name = p.sql_name();
                trailer.push_str(&format!(
                    "DO $lb$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM ONLY {name}; \
                     IF n <> {rows} THEN RAISE EXCEPTION 'lifeboat: % has % rows, the backup recorded {rows}', {}, n; \
                     END IF; END $lb$;\n",
                    quote_literal(&name)
                ));
            }
        }
        if let Some(c) = &opts.check {
            trailer.push_str(&format!(
                "DO $lb$ BEGIN IF NOT coalesce(({})::boolean, false) THEN \
                 RAISE EXCEPTION 'lifeboat: check returned false'; END IF; END $lb$;\n",
                check_sql(c)?
            ));
        }
        let picks: Vec<TablePick> = prep.picks.iter().map(|(p, _)| p.clone()).collect();
        let mut filter = TableFilter::new(
            BufReader::with_capacity(256 * 1024, reader),
            picks,
            prep.server_major,
            trailer.into_bytes(),
        );
        let mut cmd = self.conn.command("psql", database);
        cmd.args([
            "-X",
            "-w",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            "-",
        ]);
        let loaded = process::pipe_into(cmd, &mut filter, &self.conn.secrets());
        let missing: Vec<String> = prep
            .picks
            .iter()
            .enumerate()
            .filter(|(i, _)| !filter.data_found.contains(i))
            .map(|(_, (p, _))| format!("{}.{}", p.schema, p.name))
            .collect();
        match loaded {
            Err(Error::Command { stderr, .. }) if stderr.contains("lifeboat: ") => {
                return Err(Error::Verification(vec![format!(
                    "{stderr} (rolled back; nothing was changed)"
                )]))
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if !missing.is_empty() {
            // Cannot happen with a dump whose metadata lists the table, but say so if it does.
            return Err(Error::Format(format!(
                "no data found in the dump for {}",
                missing.join(", ")
            )));
        }
        Ok(RestoreReport {
            plan: prep.plan.clone(),
            restored_to: database.to_string(),
            verified: if opts.verify_row_counts {
                prep.picks
                    .iter()
                    .map(|(p, r)| (format!("{}.{}", p.schema, p.name), *r))
                    .collect()
            } else {
                Vec::new()
            },
            check_passed: opts.check.as_ref().map(|_| true),
            safety_dump: safety_meta,
            previous_kept_as: None,
            warnings: Vec::new(),
        })
    }

    /// Replay the globals dump (roles, tablespaces). Statements that fail because an object
    /// already exists are reported by psql but do not stop the replay (`ON_ERROR_STOP` off),
    /// so existing roles are kept as they are.
    ///
    /// # Errors
    /// Missing globals stream; psql failing to start or connect.
    pub fn restore_globals(&self, source: &mut dyn StreamSource) -> Result<()> {
        let mut input = stream::open(source, GLOBALS_STREAM)?;
        let mut cmd = self.conn.command("psql", &self.conn.maintenance());
        cmd.args(["-X", "-w", "-q", "-f", "-"]);
        process::pipe_into(cmd, &mut input, &self.conn.secrets())
    }
}

fn find_table<'a>(db: &'a DatabaseInfo, wanted: &str) -> Result<&'a TableRows> {
    let (parts, rest) = plain::parse_qualified(wanted);
    if !rest.is_empty() || parts.iter().any(String::is_empty) || parts.len() > 2 {
        return Err(Error::Config(format!("bad table name {wanted:?}")));
    }
    let hits: Vec<&TableRows> = db
        .tables
        .iter()
        .filter(|t| match parts.as_slice() {
            [s, n] => t.schema.as_deref() == Some(s.as_str()) && t.name == *n,
            [n] => t.name == *n,
            _ => false,
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Config(format!(
            "table {wanted} is not in the dump of {}",
            db.name
        ))),
        _ => Err(Error::Config(format!(
            "table {wanted} is ambiguous; qualify it with its schema"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_maps_to_libpq_settings_without_leaking_password() {
        let c = PgConnection::from_url("postgres://bob:s3cret@127.0.0.1:6000/app?sslmode=disable")
            .unwrap();
        assert_eq!(c.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.port, Some(6000));
        assert_eq!(c.maintenance(), "app");
        assert_eq!(
            c.env,
            vec![("PGSSLMODE".to_string(), "disable".to_string())]
        );
        let cmd = c.command("psql", "x");
        let args: Vec<_> = cmd.get_args().collect();
        assert!(args.is_empty());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "PGPASSWORD" && v == Some("s3cret".as_ref())));
    }

    #[test]
    fn a_backup_by_a_newer_pg_dump_warns_that_it_restores_only_into_that_major() {
        let mut meta = DumpMetadata::new(Engine::Postgres);
        assert_eq!(newer_dump_warning(&meta), None);
        meta.server_version = Some("15.20 (Debian 15.20-0+deb12u1)".into());
        for same_or_older in ["15.4", "14.2"] {
            meta.client_version = Some(same_or_older.into());
            assert_eq!(newer_dump_warning(&meta), None, "{same_or_older}");
        }
        meta.client_version = Some("18.6".into());
        let w = newer_dump_warning(&meta).unwrap();
        assert!(
            w.contains("restores only into PostgreSQL 18 or newer, not into a 15 server")
                && w.contains("\nhint: put PostgreSQL 15's pg_dump"),
            "{w}"
        );
    }

    #[test]
    fn skew_rule() {
        assert!(check_skew("16.1", "15.4", 15).is_err());
        assert!(check_skew("15.20 (Debian)", "15.4", 15).is_ok());
        assert!(check_skew("14.2", "15.4", 15).is_ok());
    }

    #[test]
    fn side_names_fit_in_63_bytes() {
        let n = side_name(&"x".repeat(80), "tmp");
        assert!(n.len() <= 63 && n.contains("_lb_tmp_"));
    }

    #[test]
    fn table_lookup() {
        let mut db = DatabaseInfo::new("d");
        db.tables = vec![
            TableRows {
                schema: Some("public".into()),
                name: "a".into(),
                rows: 1,
            },
            TableRows {
                schema: Some("other".into()),
                name: "a".into(),
                rows: 2,
            },
        ];
        assert!(find_table(&db, "a").is_err());
        assert_eq!(find_table(&db, "other.a").unwrap().rows, 2);
        assert!(find_table(&db, "zzz").is_err());
    }
}
