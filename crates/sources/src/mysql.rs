//! MySQL / MariaDB logical backups with `mariadb-dump` (or `mysqldump`):
//! `--single-transaction --routines --triggers --events --master-data=2` per database,
//! streamed from the tool's stdout; restores into a new database or, with a safety dump and
//! a verified staging database, over an existing one.
//!
//! # Connection settings
//! [`MySqlConnection::from_env`] reads `MYSQL_HOST`, `MYSQL_TCP_PORT`, `MYSQL_UNIX_PORT`,
//! `MYSQL_USER` and `MYSQL_PWD`; the clients also read their usual option files
//! (`~/.my.cnf`, `/etc/mysql/...`) unless [`MySqlConnection::no_defaults`] is set, and an
//! explicit [`MySqlConnection::defaults_extra_file`] is passed as `--defaults-extra-file`.
//! [`MySqlConnection::from_url`] takes `mysql://user:password@host:port/?socket=/path`.
//! The password reaches the tools only as `MYSQL_PWD` in their environment.
//!
//! # Row counts and binlog position
//! Both come from the dump stream itself as it flows: the rows of every
//! `INSERT INTO ... VALUES (...),(...);` statement are counted (a small quote-aware scanner),
//! so the counts are exact and belong to the dump's own consistent snapshot; the binlog
//! coordinates are those of the `-- CHANGE MASTER TO` comment `--master-data=2` writes (and
//! the GTID position when MariaDB prints one).
//!
//! # Restores ([`MySqlRestorer`])
//! - [`MySqlTarget::AsNew`]: create the database, load the dump, verify; refuses an existing
//!   name; drops what it created on failure.
//! - [`MySqlTarget::Replace`]: safety dump into the caller's sink, load into a temporary
//!   database, verify (row counts + check), then kill the database's connections and move
//!   the tables with one atomic `RENAME TABLE` (old tables into a side database, restored
//!   tables into place). MySQL has no `RENAME DATABASE` and `RENAME TABLE` cannot move views,
//!   triggers, routines or events across databases, so a replace is refused up front when
//!   the live database or the dump has any of those (restore `--as` a new database instead).
//!   Any failure before the rename drops the temporary database; the original is untouched.
//!
//! # Point-in-time recovery
//! [`MySqlRestorer::replay_binlog`] replays the server's binary log from the position recorded
//! in the dump up to a time or position, filtered to the dumped database and rewritten to the
//! restored one: `mariadb-binlog --read-from-remote-server --start-position=POS
//! --stop-datetime=T --database=SRC --rewrite-db='SRC->DST' --to-last-log FILE | mariadb DST`.
//! The binlog is read from the server over the replication protocol (no access to its disk
//! needed), so the binlogs from the recorded file onwards must still exist on the server.

use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rand::Rng;

use crate::meta::Verified;
use crate::process::{self, ChildStream};
use crate::stream::{self, Observer, Tap};
use crate::{
    ConnUrl, DatabaseInfo, DumpMetadata, DumpSource, Engine, Error, Position, RestorePlan,
    RestoreReport, Result, Secret, StreamInfo, StreamSink, StreamSource, TableRows,
};

/// How to reach a MySQL/MariaDB server.
#[derive(Debug, Clone, Default)]
pub struct MySqlConnection {
    /// Host (`--host`); unset = the client's default (socket).
    pub host: Option<String>,
    /// TCP port.
    pub port: Option<u16>,
    /// Unix socket path.
    pub socket: Option<PathBuf>,
    /// User.
    pub user: Option<String>,
    /// Password (passed as `MYSQL_PWD` in the tools' environment only).
    pub password: Option<Secret>,
    /// Pass `--no-defaults`: read no option files.
    pub no_defaults: bool,
    /// Pass `--defaults-extra-file=FILE` (an option file with e.g. the password).
    pub defaults_extra_file: Option<PathBuf>,
    /// Client program (default `mariadb`, else `mysql`).
    pub client_program: Option<String>,
    /// Dump program (default `mariadb-dump`, else `mysqldump`).
    pub dump_program: Option<String>,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Quote a MySQL identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Quote a MySQL string literal.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl MySqlConnection {
    /// From `MYSQL_HOST`, `MYSQL_TCP_PORT`, `MYSQL_UNIX_PORT`, `MYSQL_USER`, `MYSQL_PWD` (and
    /// the option files the clients read themselves).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        MySqlConnection {
            host: var("MYSQL_HOST"),
            port: var("MYSQL_TCP_PORT").and_then(|p| p.parse().ok()),
            socket: var("MYSQL_UNIX_PORT").map(PathBuf::from),
            user: var("MYSQL_USER"),
            password: var("MYSQL_PWD").map(Secret::new),
            ..Default::default()
        }
    }

    /// Parse `mysql://user:password@host:port/?socket=/path`.
    ///
    /// # Errors
    /// [`Error::Config`] for malformed URLs (never echoed).
    pub fn from_url(url: &str) -> Result<Self> {
        let u = ConnUrl::parse(url)?;
        if u.scheme != "mysql" && u.scheme != "mariadb" {
            return Err(Error::Config(format!(
                "not a MySQL URL (scheme {})",
                u.scheme
            )));
        }
        Ok(MySqlConnection {
            host: u.host.clone(),
            port: u.port,
            socket: u.param("socket").map(PathBuf::from),
            user: u.user.clone(),
            password: u.password.clone(),
            ..Default::default()
        })
    }

    fn client(&self) -> String {
        self.client_program.clone().unwrap_or_else(|| {
            if on_path("mariadb") {
                "mariadb"
            } else {
                "mysql"
            }
            .to_string()
        })
    }

    fn dumper(&self) -> String {
        self.dump_program.clone().unwrap_or_else(|| {
            if on_path("mariadb-dump") {
                "mariadb-dump"
            } else {
                "mysqldump"
            }
            .to_string()
        })
    }

    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .password
            .iter()
            .map(|p| p.expose().to_string())
            .collect();
        if let Ok(p) = std::env::var("MYSQL_PWD") {
            s.push(p);
        }
        s
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // Option-file options must come first.
        if let Some(f) = &self.defaults_extra_file {
            cmd.arg(format!("--defaults-extra-file={}", f.display()));
        } else if self.no_defaults {
            cmd.arg("--no-defaults");
        }
        if let Some(u) = &self.user {
            cmd.arg(format!("--user={u}"));
        }
        if let Some(s) = &self.socket {
            cmd.arg("--protocol=socket")
                .arg(format!("--socket={}", s.display()));
        } else if let Some(h) = &self.host {
            cmd.arg("--protocol=tcp").arg(format!("--host={h}"));
        }
        if let Some(p) = self.port {
            cmd.arg(format!("--port={p}"));
        }
        if let Some(p) = &self.password {
            cmd.env("MYSQL_PWD", p.expose());
        }
        cmd
    }

    /// Run SQL (batch mode, no column names) in `db`; trimmed, tab-separated stdout.
    ///
    /// # Errors
    /// [`Error::Command`] with the client's stderr.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> Result<String> {
        let mut cmd = self.command(&self.client());
        cmd.args(["--batch", "--skip-column-names", "--raw"]);
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        cmd.arg("--execute").arg(sql);
        process::output(cmd, &self.secrets())
    }

    /// Whether database `name` exists.
    ///
    /// # Errors
    /// Connection failures.
    pub fn database_exists(&self, name: &str) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            quote_literal(name)
        );
        Ok(self.sql(None, &sql)? == "1")
    }

    fn base_tables(&self, db: &str) -> Result<Vec<String>> {
        let out = self.sql(
            None,
            &format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
                 AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1",
                quote_literal(db)
            ),
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Views, triggers, routines and events in `db` (objects `RENAME TABLE` cannot move).
    fn non_table_objects(&self, db: &str) -> Result<Vec<String>> {
        let l = quote_literal(db);
        let out = self.sql(
            None,
            &format!(
                "SELECT concat('view ', TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {l} \
                 UNION ALL SELECT concat('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {l} \
                 UNION ALL SELECT concat(lower(ROUTINE_TYPE), ' ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {l} \
                 UNION ALL SELECT concat('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {l}"
            ),
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn drop_database(&self, db: &str) -> Result<()> {
        self.sql(
            None,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(db)),
        )
        .map(|_| ())
    }
}

/// What to dump.
#[derive(Debug, Clone)]
pub struct MySqlDumpOptions {
    /// Databases; empty = all but `mysql`, `information_schema`, `performance_schema`, `sys`.
    pub databases: Vec<String>,
    /// Record the binlog position (`--master-data=2`; skipped when the binary log is off).
    pub binlog_position: bool,
    /// Extra dump tool arguments.
    pub extra_args: Vec<String>,
}

impl Default for MySqlDumpOptions {
    fn default() -> Self {
        MySqlDumpOptions {
            databases: Vec::new(),
            binlog_position: true,
            extra_args: Vec::new(),
        }
    }
}

/// Stream name for database `db`.
pub fn stream_name(db: &str) -> String {
    format!("mysql/{}.sql", stream::name_component(db))
}

/// A MySQL/MariaDB dump source.
#[derive(Debug, Clone)]
pub struct MySqlSource {
    conn: MySqlConnection,
    opts: MySqlDumpOptions,
}

impl MySqlSource {
    /// Dump `opts` from `conn`.
    pub fn new(conn: MySqlConnection, opts: MySqlDumpOptions) -> Self {
        MySqlSource { conn, opts }
    }
}

impl DumpSource for MySqlSource {
    fn dump(&mut self, sink: &mut dyn StreamSink) -> Result<DumpMetadata> {
        let conn = &self.conn;
        let secrets = conn.secrets();
        let mut meta = DumpMetadata::new(Engine::Mysql);
        let info = conn.sql(None, "SELECT VERSION(), @@log_bin")?;
        let (version, log_bin) = info.split_once('\t').unwrap_or((info.as_str(), "0"));
        meta.server_version = Some(version.to_string());
        let mut v = Command::new(conn.dumper());
        v.arg("--version");
        meta.client_version = Some(process::output(v, &secrets)?);
        let databases = if self.opts.databases.is_empty() {
            conn.sql(None, "SHOW DATABASES")?
                .lines()
                .filter(|d| {
                    ![
                        "mysql",
                        "information_schema",
                        "performance_schema",
                        "sys",
                        "",
                    ]
                    .contains(d)
                })
                .map(str::to_string)
                .collect()
        } else {
            self.opts.databases.clone()
        };
        let with_position = self.opts.binlog_position && log_bin.trim() == "1";
        for db in &databases {
            let name = stream_name(db);
            let mut cmd = conn.command(&conn.dumper());
            cmd.args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
            ]);
            if with_position {
                cmd.arg("--master-data=2");
            }
            cmd.args(&self.opts.extra_args).arg("--").arg(db);
            let child = ChildStream::spawn(cmd, secrets.clone())?;
            let mut obs = DumpObserver::default();
            let bytes = stream::add(sink, &name, &mut Tap::new(child, &mut obs))?;
            if !obs.complete {
                return Err(Error::Format(format!(
                    "dump of {db} did not end with `-- Dump completed`"
                )));
            }
            let mut info = DatabaseInfo::new(db.clone());
            info.stream = Some(name.clone());
            info.tables = obs.tables;
            info.position = obs.binlog.map(|(file, position)| Position::Binlog {
                file,
                position,
                gtid: obs.gtid.clone(),
            });
            if meta.position.is_none() {
                meta.position = info.position.clone();
            }
            meta.databases.push(info);
            meta.streams.push(StreamInfo::database(name, db, bytes));
        }
        meta.finished_at = crate::meta::now();
        stream::finish(sink, &meta)?;
        Ok(meta)
    }
}

/// Parses a `mariadb-dump` stream as it flows: header lines, binlog coordinates, and the
/// rows of every `INSERT` (one statement may span many lines: MariaDB 10.11 writes one
/// tuple per line).
#[derive(Default)]
pub(crate) struct DumpObserver {
    line: Vec<u8>,
    insert: Option<usize>,
    in_str: bool,
    esc: bool,
    depth: u32,
    pub(crate) tables: Vec<TableRows>,
    pub(crate) binlog: Option<(String, u64)>,
    pub(crate) gtid: Option<String>,
    pub(crate) server_version: Option<String>,
    pub(crate) complete: bool,
}

fn backtick_name(s: &str) -> Option<String> {
    let rest = s.strip_prefix('`')?;
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                out.push('`');
                chars.next();
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

fn quoted_value<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let start = s.find(key)? + key.len();
    let rest = &s[start..];
    let rest = rest.strip_prefix('\'')?;
    Some(&rest[..rest.find('\'')?])
}

impl DumpObserver {
    fn table_index(&mut self, name: String) -> usize {
        match self.tables.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                self.tables.push(TableRows {
                    schema: None,
                    name,
                    rows: 0,
                });
                self.tables.len() - 1
            }
        }
    }

    fn on_line(&mut self) {
        let Ok(text) = std::str::from_utf8(&self.line) else {
            return;
        };
        let text = text.to_string();
        if let Some(rest) = text.strip_prefix("-- Dumping data for table ") {
            if let Some(name) = backtick_name(rest) {
                self.table_index(name);
            }
        } else if text.starts_with("-- CHANGE MASTER TO ") {
            let file = quoted_value(&text, "MASTER_LOG_FILE=");
            let pos = text
                .split("MASTER_LOG_POS=")
                .nth(1)
                .map(|p| {
                    p.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|p| p.parse().ok());
            if let (Some(f), Some(p)) = (file, pos) {
                self.binlog = Some((f.to_string(), p));
            }
        } else if text.starts_with("-- SET GLOBAL gtid_slave_pos=") {
            self.gtid = quoted_value(&text, "gtid_slave_pos=").map(str::to_string);
        } else if let Some(v) = text.strip_prefix("-- Server version") {
            self.server_version = Some(v.trim().to_string());
        } else if text.starts_with("-- Dump completed") {
            self.complete = true;
        }
    }

    fn start_insert(&mut self) -> bool {
        let Ok(text) = std::str::from_utf8(&self.line) else {
            return false;
        };
        let Some(rest) = text.strip_prefix("INSERT INTO ") else {
            return false;
        };
        if !rest.ends_with(" VALUES") {
            return false;
        }
        let Some(name) = backtick_name(rest) else {
            return false;
        };
        let i = self.table_index(name);
        self.insert = Some(i);
        self.depth = 0;
        self.in_str = false;
        self.esc = false;
        true
    }
}

impl Observer for DumpObserver {
    fn observe(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if let Some(t) = self.insert {
                if self.in_str {
                    if self.esc {
                        self.esc = false;
                    } else if b == b'\\' {
                        self.esc = true;
                    } else if b == b'\'' {
                        self.in_str = false;
                    }
                    continue;
                }
                match b {
                    b'\'' => self.in_str = true,
                    b'(' => {
                        self.depth += 1;
                        if self.depth == 1 {
                            self.tables[t].rows += 1;
                        }
                    }
                    b')' => self.depth = self.depth.saturating_sub(1),
                    b';' if self.depth == 0 => {
                        self.insert = None;
                        self.line.clear();
                    }
                    _ => {}
                }
                continue;
            }
            if (b == b' ' || b == b'\n')
                && self.line.starts_with(b"INSERT INTO ")
                && self.start_insert()
            {
                continue;
            }
            if b == b'\n' {
                self.on_line();
                self.line.clear();
            } else if self.line.len() < 4096 {
                self.line.push(b);
            }
        }
    }
}

/// Where a MySQL restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MySqlTarget {
    /// A new database (refused if it exists).
    AsNew(String),
    /// Replace this existing database's tables (safety dump, staging database, verify,
    /// atomic `RENAME TABLE`).
    Replace(String),
}

/// Options of a MySQL restore.
#[derive(Debug, Clone)]
pub struct MySqlRestoreOptions {
    /// Which dumped database (needed when the dump holds several).
    pub database: Option<String>,
    /// Target.
    pub target: MySqlTarget,
    /// SQL returning one boolean (true = ok), run in the restored database.
    pub check: Option<String>,
    /// Compare row counts with those recorded at backup (default true).
    pub verify_row_counts: bool,
    /// After a replace keep the previous tables in the returned side database.
    pub keep_previous: bool,
}

impl MySqlRestoreOptions {
    /// Into new database `name`.
    pub fn as_new(name: impl Into<String>) -> Self {
        Self::with(MySqlTarget::AsNew(name.into()))
    }

    /// Over existing database `db`.
    pub fn replace(db: impl Into<String>) -> Self {
        Self::with(MySqlTarget::Replace(db.into()))
    }

    fn with(target: MySqlTarget) -> Self {
        MySqlRestoreOptions {
            database: None,
            target,
            check: None,
            verify_row_counts: true,
            keep_previous: false,
        }
    }
}

/// Where a binlog replay stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinlogStop {
    /// Stop before the first event at or after this time (`YYYY-MM-DD HH:MM:SS`, the
    /// server's time zone).
    Datetime(String),
    /// Stop at this position of the last log read.
    Position(u64),
    /// Replay everything up to the end of the current log.
    End,
}

/// Restores MySQL/MariaDB dumps.
#[derive(Debug, Clone)]
pub struct MySqlRestorer {
    conn: MySqlConnection,
}

fn side_name(base: &str, tag: &str) -> String {
    let suffix = format!("_lb_{tag}_{:08x}", rand::thread_rng().gen::<u32>());
    let mut prefix = base.to_string();
    while prefix.chars().count() + suffix.len() > 64 {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

impl MySqlRestorer {
    /// A restorer talking to `conn`.
    pub fn new(conn: MySqlConnection) -> Self {
        MySqlRestorer { conn }
    }

    fn source<'m>(
        &self,
        meta: &'m DumpMetadata,
        opts: &MySqlRestoreOptions,
    ) -> Result<&'m DatabaseInfo> {
        if meta.engine != Engine::Mysql {
            return Err(Error::Config(format!(
                "not a MySQL dump ({:?})",
                meta.engine
            )));
        }
        match &opts.database {
            Some(n) => meta
                .database(n)
                .ok_or_else(|| Error::Config(format!("the dump holds no database {n}"))),
            None if meta.databases.len() == 1 => Ok(&meta.databases[0]),
            None => Err(Error::Config(
                "the dump holds several databases (or none); choose one".into(),
            )),
        }
    }

    /// What a restore would do, changing nothing (`--dry-run`).
    ///
    /// # Errors
    /// [`Error::Refused`] when the target exists (new) or does not (replace), or holds
    /// objects a replace cannot move; connection failures.
    pub fn plan(&self, meta: &DumpMetadata, opts: &MySqlRestoreOptions) -> Result<RestorePlan> {
        let src = self.source(meta, opts)?;
        let stream = src.stream.clone().unwrap_or_default();
        let server = self.conn.sql(None, "SELECT VERSION()")?;
        let mut plan = RestorePlan {
            engine: "mysql".into(),
            ..Default::default()
        };
        plan.notes.push(format!(
            "dump of {} from server {} by {}; target server {server}",
            src.name,
            meta.server_version.as_deref().unwrap_or("?"),
            meta.client_version.as_deref().unwrap_or("?")
        ));
        let verify = |plan: &mut RestorePlan, db: &str| {
            if opts.verify_row_counts {
                plan.steps.push(format!(
                    "verify row counts of {} tables in {db}",
                    src.tables.len()
                ));
            }
            if let Some(c) = &opts.check {
                plan.steps.push(format!("run check in {db}: {c}"));
            }
        };
        match &opts.target {
            MySqlTarget::AsNew(name) => {
                if self.conn.database_exists(name)? {
                    return Err(Error::Refused(format!(
                        "database {name} already exists; nothing was changed"
                    )));
                }
                plan.creates.push(format!("database {name}"));
                plan.steps
                    .push(format!("create database {name}; load stream {stream}"));
                verify(&mut plan, name);
                plan.steps.push(format!("on failure: drop {name}"));
            }
            MySqlTarget::Replace(db) => {
                if !self.conn.database_exists(db)? {
                    return Err(Error::Refused(format!(
                        "database {db} does not exist; restore it as a new database"
                    )));
                }
                let objects = self.conn.non_table_objects(db)?;
                if !objects.is_empty() {
                    return Err(Error::Refused(format!(
                        "{db} has {} which RENAME TABLE cannot move; restore as a new database instead",
                        objects.join(", ")
                    )));
                }
                plan.replaces
                    .push(format!("database {db} (all its tables)"));
                plan.creates.push("temporary staging database".into());
                plan.steps.push(format!("safety dump of {db}"));
                plan.steps
                    .push(format!("create staging database; load stream {stream}"));
                verify(&mut plan, "the staging database");
                plan.steps.push(format!("kill connections using {db}"));
                plan.steps.push(format!(
                    "one atomic RENAME TABLE: {db}'s tables to a side database, staged tables into {db}"
                ));
                if !opts.keep_previous {
                    plan.drops.push(format!("the previous tables of {db}"));
                }
                plan.steps
                    .push("on any failure before the rename: drop the staging database".into());
            }
        }
        Ok(plan)
    }

    /// Carry out a restore; `safety` receives the safety dump of a replace.
    ///
    /// # Errors
    /// As [`plan`](Self::plan); [`Error::Verification`] (original untouched); tool failures.
    pub fn restore(
        &self,
        meta: &DumpMetadata,
        source: &mut dyn StreamSource,
        opts: &MySqlRestoreOptions,
        safety: Option<&mut dyn StreamSink>,
    ) -> Result<RestoreReport> {
        let plan = self.plan(meta, opts)?;
        let src = self.source(meta, opts)?.clone();
        let stream_name = src
            .stream
            .clone()
            .ok_or_else(|| Error::Format("no stream recorded".into()))?;
        let mut input = stream::open(source, &stream_name)?;
        let mut head = Vec::new();
        (&mut input)
            .take(4096)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(format!("reading stream {stream_name}"), e))?;
        // MariaDB >= 10.11.8 puts a `/*M!999999\- enable the sandbox mode */` line first.
        let looks_right = [&b"-- MariaDB dump"[..], b"-- MySQL dump"]
            .iter()
            .any(|m| head.windows(m.len()).take(512).any(|w| w == *m));
        if !looks_right {
            return Err(Error::Format(format!(
                "stream {stream_name} is not a mysqldump/mariadb-dump file"
            )));
        }
        let mut reader = Cursor::new(head).chain(input);
        let report = |restored_to: &str, verified, check_passed, safety_dump, previous_kept_as| {
            RestoreReport {
                plan: plan.clone(),
                restored_to: restored_to.to_string(),
                verified,
                check_passed,
                safety_dump,
                previous_kept_as,
                warnings: Vec::new(),
            }
        };
        match &opts.target {
            MySqlTarget::AsNew(name) => {
                self.conn
                    .sql(None, &format!("CREATE DATABASE {}", quote_ident(name)))?;
                match self
                    .load(name, &mut reader)
                    .and_then(|()| self.verify(&src, opts, name))
                {
                    Ok((v, c)) => Ok(report(name, v, c, None, None)),
                    Err(e) => {
                        let _ = self.conn.drop_database(name);
                        Err(e)
                    }
                }
            }
            MySqlTarget::Replace(db) => {
                let safety = safety
                    .ok_or_else(|| Error::Config("a replace restore needs a safety sink".into()))?;
                let safety_meta = MySqlSource::new(
                    self.conn.clone(),
                    MySqlDumpOptions {
                        databases: vec![db.clone()],
                        ..Default::default()
                    },
                )
                .dump(safety)?;
                let temp = side_name(db, "tmp");
                let charset = self.conn.sql(
                    None,
                    &format!(
                        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                        quote_literal(db)
                    ),
                )?;
                let spec = match charset.split_once('\t') {
                    Some((cs, co)) => format!(" CHARACTER SET {cs} COLLATE {co}"),
                    None => String::new(),
                };
                self.conn.sql(
                    None,
                    &format!("CREATE DATABASE {}{spec}", quote_ident(&temp)),
                )?;
                let staged = self
                    .load(&temp, &mut reader)
                    .and_then(|()| self.verify(&src, opts, &temp))
                    .and_then(|v| {
                        let objects = self.conn.non_table_objects(&temp)?;
                        if objects.is_empty() {
                            Ok(v)
                        } else {
                            Err(Error::Refused(format!(
                                "the dump has {} which RENAME TABLE cannot move; restore as a new database instead",
                                objects.join(", ")
                            )))
                        }
                    });
                let (verified, check_passed) = match staged {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = self.conn.drop_database(&temp);
                        return Err(e);
                    }
                };
                let old = side_name(db, "old");
                if let Err(e) = self.swap(db, &temp, &old, &spec) {
                    let _ = self.conn.drop_database(&temp);
                    let _ = self.conn.drop_database(&old);
                    return Err(e);
                }
                let mut r = report(db, verified, check_passed, Some(safety_meta), None);
                if let Err(e) = self.conn.drop_database(&temp) {
                    r.warnings
                        .push(format!("could not drop staging database {temp}: {e}"));
                }
                if opts.keep_previous {
                    r.previous_kept_as = Some(old);
                } else if let Err(e) = self.conn.drop_database(&old) {
                    r.warnings.push(format!("could not drop {old}: {e}"));
                }
                Ok(r)
            }
        }
    }

    /// Replay the binary log from the dump's recorded position of `source_db` up to
    /// `stop` into database `target_db` (usually the one just restored with
    /// [`MySqlTarget::AsNew`]). Only events of `source_db` are replayed, renamed to
    /// `target_db`.
    ///
    /// # Errors
    /// [`Error::Config`] when the dump recorded no binlog position for `source_db`;
    /// [`Error::Refused`] when `target_db` does not exist; tool failures (e.g. purged logs).
    pub fn replay_binlog(
        &self,
        meta: &DumpMetadata,
        source_db: &str,
        target_db: &str,
        stop: &BinlogStop,
    ) -> Result<()> {
        let info = meta
            .database(source_db)
            .ok_or_else(|| Error::Config(format!("the dump holds no database {source_db}")))?;
        let Some(Position::Binlog { file, position, .. }) =
            info.position.clone().or_else(|| meta.position.clone())
        else {
            return Err(Error::Config(format!(
                "the dump recorded no binlog position for {source_db}"
            )));
        };
        if !self.conn.database_exists(target_db)? {
            return Err(Error::Refused(format!(
                "database {target_db} does not exist; restore the dump first"
            )));
        }
        let binlog_program = if on_path("mariadb-binlog") {
            "mariadb-binlog"
        } else {
            "mysqlbinlog"
        };
        let mut cmd = self.conn.command(binlog_program);
        cmd.arg("--read-from-remote-server")
            .arg(format!("--start-position={position}"))
            .arg(format!("--database={source_db}"))
            .arg("--to-last-log");
        if binlog_program == "mariadb-binlog" {
            // Earlier replays into the same server re-log old GTIDs out of order; do not
            // let strict GTID ordering stop a later replay.
            cmd.arg("--skip-gtid-strict-mode");
        }
        if source_db != target_db {
            cmd.arg(format!("--rewrite-db={source_db}->{target_db}"));
        }
        match stop {
            BinlogStop::Datetime(t) => cmd.arg(format!("--stop-datetime={t}")),
            BinlogStop::Position(p) => cmd.arg(format!("--stop-position={p}")),
            BinlogStop::End => &mut cmd,
        };
        cmd.arg(&file);
        let mut events = ChildStream::spawn(cmd, self.conn.secrets())?;
        self.load(target_db, &mut events)
    }

    fn load(&self, db: &str, reader: &mut dyn Read) -> Result<()> {
        let mut cmd = self.conn.command(&self.conn.client());
        cmd.arg("--batch").arg(format!("--database={db}"));
        process::pipe_into(cmd, reader, &self.conn.secrets())
    }

    fn verify(&self, src: &DatabaseInfo, opts: &MySqlRestoreOptions, db: &str) -> Result<Verified> {
        let mut verified = Vec::new();
        let mut failures = Vec::new();
        if opts.verify_row_counts && !src.tables.is_empty() {
            let sql = src
                .tables
                .iter()
                .enumerate()
                .map(|(i, t)| format!("SELECT {i}, count(*) FROM {}", quote_ident(&t.name)))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            match self.conn.sql(Some(db), &sql) {
                Ok(out) => {
                    let mut got = vec![None; src.tables.len()];
                    for line in out.lines() {
                        if let Some((i, n)) = line.split_once('\t') {
                            if let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.parse::<u64>()) {
                                if i < got.len() {
                                    got[i] = Some(n);
                                }
                            }
                        }
                    }
                    for (t, g) in src.tables.iter().zip(got) {
                        match g {
                            Some(n) if n == t.rows => verified.push((t.name.clone(), n)),
                            Some(n) => failures.push(format!(
                                "{} has {n} rows, the backup recorded {}",
                                t.name, t.rows
                            )),
                            None => failures.push(format!("{} could not be counted", t.name)),
                        }
                    }
                }
                Err(e) => failures.push(format!("counting rows failed: {e}")),
            }
        }
        let mut check_passed = None;
        if let Some(c) = &opts.check {
            let c = c.trim().trim_end_matches(';');
            match self.conn.sql(Some(db), &format!("SELECT IF(({c}), 1, 0)")) {
                Ok(v) if v == "1" => check_passed = Some(true),
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

    fn swap(&self, db: &str, temp: &str, old: &str, spec: &str) -> Result<()> {
        self.conn
            .sql(None, &format!("CREATE DATABASE {}{spec}", quote_ident(old)))?;
        let live = self.conn.base_tables(db)?;
        let staged = self.conn.base_tables(temp)?;
        let mut pairs: Vec<String> = live
            .iter()
            .map(|t| {
                format!(
                    "{}.{} TO {}.{}",
                    quote_ident(db),
                    quote_ident(t),
                    quote_ident(old),
                    quote_ident(t)
                )
            })
            .collect();
        pairs.extend(staged.iter().map(|t| {
            format!(
                "{}.{} TO {}.{}",
                quote_ident(temp),
                quote_ident(t),
                quote_ident(db),
                quote_ident(t)
            )
        }));
        if pairs.is_empty() {
            return Ok(());
        }
        let ids = self.conn.sql(
            None,
            &format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB IN ({}, {}) AND ID <> CONNECTION_ID()",
                quote_literal(db),
                quote_literal(temp)
            ),
        )?;
        let kills: String = ids
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .map(|id| format!("KILL CONNECTION {id};"))
            .collect();
        if !kills.is_empty() {
            // A connection may end on its own between the query and the KILL.
            let _ = self.conn.sql(None, &kills);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.conn.sql(
            None,
            &format!(
                "SET SESSION lock_wait_timeout = 30; RENAME TABLE {}",
                pairs.join(", ")
            ),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_counts_multiline_and_single_line_inserts() {
        let dump = "-- MariaDB dump 10.19\n-- Server version\t10.11.19-MariaDB-log\n\
-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=1283;\n\
-- Dumping data for table `e`\n--\nLOCK TABLES `e` WRITE;\nUNLOCK TABLES;\n\
-- Dumping data for table `t`\nINSERT INTO `t` VALUES\n(1,'a(b)\\'c',NULL),\n(2,'x\\\\',_binary '\\0\\n('),\n(3,'),(',NULL);\n\
INSERT INTO `t``q` VALUES (1),(2);\n-- SET GLOBAL gtid_slave_pos='0-1-7';\n-- Dump completed on 2026\n";
        let mut o = DumpObserver::default();
        for c in dump.as_bytes().chunks(5) {
            o.observe(c);
        }
        let counts: Vec<_> = o.tables.iter().map(|t| (t.name.as_str(), t.rows)).collect();
        assert_eq!(counts, vec![("e", 0), ("t", 3), ("t`q", 2)]);
        assert_eq!(o.binlog, Some(("binlog.000002".into(), 1283)));
        assert_eq!(o.gtid.as_deref(), Some("0-1-7"));
        assert_eq!(o.server_version.as_deref(), Some("10.11.19-MariaDB-log"));
        assert!(o.complete);
    }

    #[test]
    fn password_only_in_environment() {
        let c = MySqlConnection::from_url("mysql://app:pa%24%24@127.0.0.1:3307/").unwrap();
        let cmd = c.command("mariadb");
        assert!(cmd
            .get_args()
            .all(|a| !a.to_string_lossy().contains("pa$$")));
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "MYSQL_PWD" && v == Some("pa$$".as_ref())));
        assert!(!format!("{c:?}").contains("pa$$"));
    }
}
