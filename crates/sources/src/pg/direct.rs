//! The large tables of a logical dump, read by Lifeboat's own connections inside the
//! snapshot that `pg_dump` reads the rest in (docs/PERFORMANCE.md, the in-process reader).
//!
//! On a small machine `pg_dump` runs at the speed of one server backend's `COPY`; reading a
//! large table as page ranges over several connections, with a client that spends little
//! CPU ([`super::wire`]), is what makes a dump faster than `pg_dump -Fc`. The stream stays
//! the plain dump `pg_dump` would write, restored by `psql` as it is:
//!
//! 1. A control connection sets up its session as `pg_dump` does, opens a `REPEATABLE
//!    READ, READ ONLY` transaction, exports its snapshot and takes `ACCESS SHARE` on every
//!    table `pg_dump` would lock, until the dump ends (`pg_get_indexdef` and its kin read
//!    the current catalog, and between the two `pg_dump` runs below nothing else would hold
//!    those locks).
//! 2. `pg_dump --snapshot=S --section=pre-data --section=data --exclude-table-data=T…`
//!    writes the schema and every other table's data.
//! 3. The tables it left out follow, each as `pg_dump` writes a table's data (its `Data
//!    for Name` header, `COPY … FROM stdin;`, the rows, `\.`), inside a `\restrict` pair of
//!    their own when `pg_dump` writes those. A table is read as page ranges (`ctid`), one
//!    connection each importing the snapshot, on servers that scan `ctid` ranges (14 and
//!    later); the ranges, joined in order, are the bytes of one `COPY` of the table.
//! 4. `pg_dump --snapshot=S --section=post-data` writes indexes, constraints and the rest.
//!
//! Read here: ordinary tables of at least [`DirectOptions::min_table_bytes`] (the largest
//! [`DirectOptions::max_tables`]), not temporary or unlogged, outside system schemas, not extension
//! members or in an extension's schema, without row security, not partitions. Everything
//! that this client cannot do as libpq would ([`super::wire::WireTarget::from_settings`]),
//! servers before 12, extra `pg_dump` arguments, and any failure before the first byte is
//! stored fall back to `pg_dump` alone.
//!
//! Both `pg_dump` runs get `--lock-wait-timeout`, and each range's `COPY` a `lock_timeout`
//! ([`DirectOptions::lock_wait`]): a statement that wants an exclusive lock (`ALTER TABLE`,
//! `DROP`, `VACUUM FULL`) queued behind the control connection's lock and ahead of theirs
//! would otherwise wait forever, on a cycle that runs through this client, where the server
//! cannot see it. The dump then fails, as `pg_dump -j` does in the same case, and the
//! queued statement goes on.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::distributions::Alphanumeric;
use rand::Rng;

use super::plain::quote_literal;
use super::wire::{CopyOut, WireConn, WireTarget};
use super::PgConnection;
use crate::TableRows;

/// At most this many page ranges (connections) per table.
const MAX_RANGES: usize = 4;

/// A table is split only where each range gets at least this many pages (8 MiB).
const MIN_RANGE_PAGES: u64 = 1024;

/// How long the control connection waits for its table locks before `pg_dump` reads
/// everything instead.
const CONTROL_LOCK_TIMEOUT: &str = "5s";

/// Which tables a dump reads itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectOptions {
    /// Read large tables directly at all (else `pg_dump` reads every table).
    pub enabled: bool,
    /// The smallest table (main fork, bytes) read directly.
    pub min_table_bytes: u64,
    /// At most this many tables are read directly: the largest ones.
    pub max_tables: usize,
    /// Page ranges per table, at most; 0 = one per core, at most 4.
    pub ranges: usize,
    /// How long each `pg_dump` run and each range's `COPY` waits for a table lock (see
    /// the module doc).
    pub lock_wait: std::time::Duration,
}

impl Default for DirectOptions {
    fn default() -> Self {
        DirectOptions {
            enabled: true,
            min_table_bytes: 64 << 20,
            max_tables: 4,
            ranges: 0,
            lock_wait: std::time::Duration::from_secs(60),
        }
    }
}

/// Session settings as `pg_dump` makes them (its `setup_connection`) for a server of
/// `version` (`server_version_num`), plus no parallel workers for the range scans; and,
/// where the server has it, `restrict_nonsystem_relation_kind` as `pg_dump` sets it
/// (CVE-2024-7348: a name that became a view runs no one's code here).
fn session(version: u32) -> String {
    let mut sql = String::from(
        "SET DateStyle = ISO; SET IntervalStyle = postgres; \
         SET extra_float_digits TO 3; SET synchronize_seqscans TO off; \
         SET statement_timeout = 0; SET lock_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0; SET row_security = off; \
         SET quote_all_identifiers = off; SET max_parallel_workers_per_gather = 0; \
         SELECT pg_catalog.set_config('search_path', '', false); \
         SELECT pg_catalog.set_config(name, 'view, foreign-table', false) \
           FROM pg_catalog.pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
    );
    if version >= 170000 {
        sql.push_str("; SET transaction_timeout = 0");
    }
    sql
}

/// The tables read here: ordinary heap tables, permanent, outside system and extension
/// schemas, not extension members, without row security, not partitions, of at least
/// `MIN_BYTES`, the `MAX_TABLES` largest.
const ELIGIBLE: &str = "SELECT n.nspname, c.relname, pg_catalog.pg_get_userbyid(c.relowner), \
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), \
       (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) \
          FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attgenerated = ''), \
       pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int, \
       c.oid::text \
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
   AND c.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'heap') \
   AND NOT c.relrowsecurity AND NOT c.relispartition \
   AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) \
   AND n.nspname !~ '^pg_(toast|temp_)' \
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                    WHERE d.deptype = 'e' AND ((d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                          AND d.objid = c.oid) OR (d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass \
                          AND d.objid = n.oid))) \
   AND pg_catalog.pg_relation_size(c.oid) >= MIN_BYTES \
 ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, 1, 2 LIMIT MAX_TABLES";

/// Every table `pg_dump` locks (ordinary and partitioned, outside system schemas).
const LOCKED: &str =
    "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' \
   AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) \
   AND n.nspname !~ '^pg_(toast|temp_)' ORDER BY c.oid";

/// One table read directly.
#[derive(Debug, Clone)]
pub(crate) struct DirectTable {
    pub(crate) schema: String,
    pub(crate) name: String,
    owner: String,
    /// `schema.table`, quoted where needed (as `pg_dump` writes it).
    qualified: String,
    /// The column list `pg_dump` writes (`a, "select"`), empty for a table without columns.
    columns: String,
    /// Pages of the main fork when the snapshot was taken.
    pages: u64,
    /// `pg_class.oid`, to check that the name still means this table once it is locked.
    oid: String,
}

/// A dump's direct part, prepared: the control connection (holding the snapshot and the
/// locks until this is dropped) and the tables it reads.
pub(crate) struct Direct {
    _control: WireConn,
    target: WireTarget,
    pub(crate) snapshot: String,
    pub(crate) encoding: String,
    pub(crate) tables: Vec<DirectTable>,
    /// Page ranges per table (1 on servers before 14).
    ranges: Vec<usize>,
    /// `server_version_num`.
    version: u32,
    /// Each `COPY`'s lock wait, `lock_timeout` in milliseconds.
    lock_wait_ms: u128,
    /// The key of the `\restrict` pair around the tables' data, when `pg_dump` writes one
    /// (set from its header: [`Direct::follow_header`]).
    restrict: Option<String>,
    /// The WAL position right after the snapshot, when asked for.
    pub(crate) after: Option<String>,
    /// Rows read per table.
    rows: Vec<AtomicU64>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("snapshot", &self.snapshot)
            .field("tables", &self.tables)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

/// What [`prepare`] needs from the caller.
pub(crate) struct Plan<'a> {
    pub(crate) conn: &'a PgConnection,
    pub(crate) db: &'a str,
    pub(crate) opts: &'a DirectOptions,
    /// `extract(epoch from pg_postmaster_start_time())` as `psql` saw it: the wire
    /// connection must reach the server the tools reach.
    pub(crate) server_started: &'a str,
    /// `pg_dump`'s major version: identifiers are quoted by the server's keyword list,
    /// `pg_dump` quotes by its own, and a keyword new in one would be written bare by the
    /// other.
    pub(crate) pg_dump_major: u32,
    /// Ask for the WAL position after the snapshot (the last database of a dump).
    pub(crate) want_after: Option<&'a str>,
}

/// Prepare the direct part for `plan.db`, or say why `pg_dump` reads everything: `Ok(None)`
/// when no table qualifies, `Err(reason)` when this client cannot be used.
pub(crate) fn prepare(plan: &Plan<'_>) -> std::result::Result<Option<Direct>, String> {
    let mut target = WireTarget::from_connection(plan.conn, plan.db)?;
    if !target
        .parameters
        .iter()
        .any(|(k, _)| k == "application_name")
    {
        target
            .parameters
            .push(("application_name".into(), "lifeboat".into()));
    }
    let mut control = WireConn::connect(&target).map_err(|e| e.to_string())?;
    let mut query = |sql: &str| control.query(sql).map_err(|e| e.to_string());
    let first = |rows: Vec<Vec<Option<String>>>| -> Vec<Option<String>> {
        rows.into_iter().next().unwrap_or_default()
    };
    let settings = first(query(
        "SELECT pg_catalog.current_setting('server_version_num'), \
         extract(epoch from pg_catalog.pg_postmaster_start_time())::text",
    )?);
    let version: u32 = settings
        .first()
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if version < 120000 {
        return Err(format!(
            "the server's version number is {version}, before 12"
        ));
    }
    if version / 10000 != plan.pg_dump_major {
        return Err(format!(
            "pg_dump {} and the server {} differ in major version",
            plan.pg_dump_major,
            version / 10000
        ));
    }
    if settings.get(1).cloned().flatten().as_deref() != Some(plan.server_started) {
        return Err(format!(
            "{} reaches another server than psql (their start times differ)",
            target.address
        ));
    }
    query(&session(version))?;
    query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    // A table held exclusively (a long `ALTER`, `VACUUM FULL`) would hold this connection
    // (reading its size, taking its lock) and the dump's start: give up soon and let
    // `pg_dump` alone wait, as it always did.
    query(&format!(
        "SET LOCAL lock_timeout = '{CONTROL_LOCK_TIMEOUT}'"
    ))?;
    let after_sql = plan
        .want_after
        .map_or(String::new(), |lsn| format!(", {lsn}"));
    let exported = first(query(&format!(
        "SELECT pg_catalog.pg_export_snapshot(), pg_catalog.current_setting('client_encoding'){after_sql}"
    ))?);
    let field = |i: usize| exported.get(i).cloned().flatten();
    let (Some(snapshot), Some(encoding)) = (field(0), field(1)) else {
        return Err("the server did not export a snapshot".into());
    };
    let after = plan.want_after.and(field(2));
    let eligible = ELIGIBLE
        .replace("MIN_BYTES", &plan.opts.min_table_bytes.to_string())
        .replace("MAX_TABLES", &plan.opts.max_tables.to_string());
    let tables: Vec<DirectTable> = query(&eligible)?
        .into_iter()
        .filter_map(|row| {
            let mut row = row.into_iter();
            let mut next = || row.next().flatten();
            Some(DirectTable {
                schema: next()?,
                name: next()?,
                owner: next()?,
                qualified: next()?,
                columns: next().unwrap_or_default(),
                pages: next()?.parse().ok()?,
                oid: next()?,
            })
        })
        // A name this client could not decode (a client encoding other than UTF-8): the
        // table stays with pg_dump.
        .filter(|t: &DirectTable| {
            ![&t.schema, &t.name, &t.owner, &t.qualified, &t.columns]
                .iter()
                .any(|s| s.contains('\u{FFFD}'))
        })
        .collect();
    if tables.is_empty() {
        return Ok(None);
    }
    let locked: Vec<String> = query(LOCKED)?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    // This connection and both pg_dump runs each hold a lock on every table: keep well
    // inside the server's shared lock table.
    let slots: usize = first(query(
        "SELECT (pg_catalog.current_setting('max_locks_per_transaction')::int * \
         (pg_catalog.current_setting('max_connections')::int + \
          pg_catalog.current_setting('max_prepared_transactions')::int))::text",
    )?)
    .first()
    .cloned()
    .flatten()
    .and_then(|v| v.parse().ok())
    .unwrap_or(0);
    if 3 * locked.len() > slots / 2 {
        return Err(format!(
            "{} tables locked three times would take more than half of the server's {slots} lock slots",
            locked.len()
        ));
    }
    for batch in locked.chunks(1000) {
        query(&format!(
            "LOCK TABLE {} IN ACCESS SHARE MODE",
            batch
                .iter()
                .map(|t| format!("ONLY {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    query("SET LOCAL lock_timeout = 0")?;
    // Locked now: a name still meaning the table found in the snapshot means it until the
    // end (renaming it needs a lock that conflicts with this one).
    for t in &tables {
        let now = first(query(&format!(
            "SELECT pg_catalog.to_regclass({})::pg_catalog.oid::text",
            quote_literal(&t.qualified)
        ))?);
        if now.first().cloned().flatten().as_deref() != Some(t.oid.as_str()) {
            return Err(format!(
                "{} names another relation than the table in the snapshot",
                t.qualified
            ));
        }
    }
    // Ranges per table: one per core (at most 4) of at least 8 MiB each, or as asked, of
    // at least a page each.
    let (per_table, min_pages) = match plan.opts.ranges {
        0 => (
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_RANGES),
            MIN_RANGE_PAGES,
        ),
        n => (n, 1),
    };
    let ranges = tables
        .iter()
        .map(|t| {
            if version < 140000 {
                return 1;
            }
            let most = usize::try_from(t.pages / min_pages).unwrap_or(usize::MAX);
            per_table.min(most).max(1)
        })
        .collect();
    let rows = tables.iter().map(|_| AtomicU64::new(0)).collect();
    Ok(Some(Direct {
        _control: control,
        target,
        snapshot,
        encoding,
        tables,
        ranges,
        version,
        lock_wait_ms: plan.opts.lock_wait.as_millis().max(1),
        restrict: None,
        after,
        rows,
    }))
}

/// A key for `\restrict` as `pg_dump` makes one: random letters and digits.
fn restrict_key() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// `pattern` for `--exclude-table-data`: quoted, so that case, `.`, `*` and `?` are literal.
fn exact_pattern(schema: &str, name: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", q(schema), q(name))
}

/// A name in a `pg_dump` entry header: newlines become spaces, nothing becomes `-`.
fn header_name(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.replace(['\n', '\r'], " ")
}

impl Direct {
    /// Arguments of the first `pg_dump` run (schema, and the data of the other tables).
    pub(crate) fn first_args(&self) -> Vec<String> {
        let mut args = self.common_args();
        args.extend(["--section=pre-data".into(), "--section=data".into()]);
        args.extend(
            self.tables
                .iter()
                .map(|t| format!("--exclude-table-data={}", exact_pattern(&t.schema, &t.name))),
        );
        args
    }

    /// Arguments of the last `pg_dump` run (indexes, constraints, …).
    pub(crate) fn last_args(&self) -> Vec<String> {
        let mut args = self.common_args();
        args.push("--section=post-data".into());
        args
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            format!("--snapshot={}", self.snapshot),
            format!("--encoding={}", self.encoding),
            format!("--lock-wait-timeout={}ms", self.lock_wait_ms),
        ]
    }

    /// Read the first `pg_dump` run's header (up to its `-- Dumped by pg_dump version`
    /// line) from `first`: the tables' data gets a `\restrict` pair of its own exactly when
    /// that header has one (the version alone does not say: vendors backport the fix, and
    /// 18's betas did not have it). Returns the bytes read, which come first in the stream.
    ///
    /// # Errors
    /// Reading `first` (`pg_dump` failed before writing its header).
    pub(crate) fn follow_header(&mut self, first: &mut dyn Read) -> io::Result<Vec<u8>> {
        const MARK: &[u8] = b"\n-- Dumped by pg_dump version ";
        let mut head = Vec::new();
        let mut block = [0u8; 4096];
        let end = loop {
            if let Some(at) = memchr::memmem::find(&head, MARK) {
                if let Some(nl) = memchr::memchr(b'\n', &head[at + MARK.len()..]) {
                    break at + MARK.len() + nl;
                }
            }
            if head.len() > 64 << 10 {
                break 0;
            }
            let n = first.read(&mut block)?;
            if n == 0 {
                break 0;
            }
            head.extend_from_slice(&block[..n]);
        };
        let restricted = head[..end]
            .split(|&b| b == b'\n')
            .any(|line| line.starts_with(b"\\restrict "));
        self.restrict = restricted.then(restrict_key);
        Ok(head)
    }

    /// Whether `tables`, those `pg_dump` wrote data for, has one read here too (its
    /// rows would be loaded twice).
    pub(crate) fn duplicated<'t>(&self, tables: &'t [TableRows]) -> Option<&'t TableRows> {
        tables.iter().find(|r| {
            self.tables
                .iter()
                .any(|t| r.name == t.name && r.schema.as_deref().unwrap_or("public") == t.schema)
        })
    }

    /// Connections this dump opens for rows.
    pub(crate) fn connections(&self) -> usize {
        self.ranges.iter().sum()
    }

    /// The tables' data as parts of one stream, in order: each part is read on its own
    /// connection, opened at its first read.
    pub(crate) fn parts(&self) -> Vec<TablePart<'_>> {
        let mut parts = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let k = self.ranges[i];
            for r in 0..k {
                let mut head = Vec::new();
                if i == 0 && r == 0 {
                    if let Some(key) = &self.restrict {
                        head.extend_from_slice(format!("\\restrict {key}\n\n").as_bytes());
                    }
                }
                if r == 0 {
                    head.extend_from_slice(entry_header(t).as_bytes());
                }
                let mut tail = Vec::new();
                if r + 1 == k {
                    tail.extend_from_slice(b"\\.\n\n\n");
                    if i + 1 == self.tables.len() {
                        if let Some(key) = &self.restrict {
                            tail.extend_from_slice(format!("\\unrestrict {key}\n\n").as_bytes());
                        }
                    }
                }
                parts.push(TablePart {
                    direct: self,
                    sql: range_sql(t, r, k),
                    tail,
                    rows: &self.rows[i],
                    state: State::Start,
                    buf: head,
                    pos: 0,
                });
            }
        }
        parts
    }

    /// The tables with the rows read, once every part has been read.
    pub(crate) fn table_rows(&self) -> Vec<TableRows> {
        self.tables
            .iter()
            .zip(&self.rows)
            .map(|(t, rows)| TableRows {
                schema: Some(t.schema.clone()),
                name: t.name.clone(),
                rows: rows.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Start a range's `COPY` on a connection of its own, in the snapshot.
    fn open(&self, sql: &str) -> crate::Result<CopyOut<WireConn>> {
        let mut conn = WireConn::connect(&self.target)?;
        conn.query(&session(self.version))?;
        // The COPY's lock: a statement wanting an exclusive lock, queued behind the control
        // connection's, would make it wait on a cycle the server cannot see.
        conn.query(&format!(
            "SET client_encoding = {}; SET lock_timeout = {}",
            quote_literal(&self.encoding),
            self.lock_wait_ms
        ))?;
        conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        conn.query(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            quote_literal(&self.snapshot)
        ))?;
        conn.into_copy_out(sql)
    }
}

/// `(a, b)` as `pg_dump` writes it after the table's name; nothing for a table without
/// columns.
fn column_list(t: &DirectTable) -> String {
    if t.columns.is_empty() {
        String::new()
    } else {
        format!("({})", t.columns)
    }
}

/// `pg_dump`'s text before a table's rows.
fn entry_header(t: &DirectTable) -> String {
    let columns = column_list(t);
    format!(
        "--\n-- Data for Name: {}; Type: TABLE DATA; Schema: {}; Owner: {}\n--\n\n\
         COPY {} {columns} FROM stdin;\n",
        header_name(&t.name),
        header_name(&t.schema),
        header_name(&t.owner),
        t.qualified,
    )
}

/// The `COPY` of range `r` of `k`: the whole table as `pg_dump` reads it when `k` is 1,
/// else pages `[pages·r/k, pages·(r+1)/k)`, the last range open-ended.
fn range_sql(t: &DirectTable, r: usize, k: usize) -> String {
    if k == 1 {
        return format!("COPY {} {} TO STDOUT", t.qualified, column_list(t));
    }
    let page = |i: usize| t.pages * i as u64 / k as u64;
    let mut cond = Vec::new();
    if r > 0 {
        cond.push(format!("ctid >= '({},0)'::pg_catalog.tid", page(r)));
    }
    if r + 1 < k {
        cond.push(format!("ctid < '({},0)'::pg_catalog.tid", page(r + 1)));
    }
    format!(
        "COPY (SELECT {} FROM ONLY {} WHERE {}) TO STDOUT",
        t.columns,
        t.qualified,
        cond.join(" AND ")
    )
}

enum State {
    /// The connection is not open yet.
    Start,
    Rows(Box<CopyOut<WireConn>>),
    Done,
}

/// One range of one table, with the text before and after it: a part of the dump stream.
pub(crate) struct TablePart<'d> {
    direct: &'d Direct,
    sql: String,
    /// Given after the rows.
    tail: Vec<u8>,
    rows: &'d AtomicU64,
    state: State,
    /// What is next to read: the text before the rows at first, then blocks of rows.
    buf: Vec<u8>,
    pos: usize,
}

impl TablePart<'_> {
    /// Refill `buf` with the next bytes; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        self.buf.clear();
        self.pos = 0;
        loop {
            match &mut self.state {
                State::Start => {
                    let copy = self
                        .direct
                        .open(&self.sql)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    self.state = State::Rows(Box::new(copy));
                }
                State::Rows(copy) => {
                    let more = copy.read_rows(&mut self.buf, 256 << 10)?;
                    let rows = memchr::memchr_iter(b'\n', &self.buf).count() as u64;
                    self.rows.fetch_add(rows, Ordering::Relaxed);
                    if !more {
                        // Closes the range's connection.
                        self.state = State::Done;
                        self.buf.append(&mut self.tail);
                    }
                    if !self.buf.is_empty() {
                        return Ok(true);
                    }
                }
                State::Done => return Ok(false),
            }
        }
    }
}

impl Read for TablePart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() && !self.refill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.buf.len() - self.pos);
        buf[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_headers_are_literal() {
        assert_eq!(exact_pattern("Sch", "a\"b*.c"), "\"Sch\".\"a\"\"b*.c\"");
        assert_eq!(header_name("odd\nname"), "odd name");
        assert_eq!(header_name(""), "-");
    }

    #[test]
    fn ranges_cover_every_page_once() {
        let t = DirectTable {
            schema: "public".into(),
            name: "t".into(),
            owner: "o".into(),
            qualified: "public.t".into(),
            columns: "a, \"select\"".into(),
            pages: 10,
            oid: "1".into(),
        };
        assert_eq!(
            range_sql(&t, 0, 1),
            "COPY public.t (a, \"select\") TO STDOUT"
        );
        assert_eq!(
            range_sql(&t, 0, 3),
            "COPY (SELECT a, \"select\" FROM ONLY public.t WHERE ctid < '(3,0)'::pg_catalog.tid) TO STDOUT"
        );
        assert_eq!(
            range_sql(&t, 1, 3),
            "COPY (SELECT a, \"select\" FROM ONLY public.t WHERE ctid >= '(3,0)'::pg_catalog.tid AND ctid < '(6,0)'::pg_catalog.tid) TO STDOUT"
        );
        assert_eq!(
            range_sql(&t, 2, 3),
            "COPY (SELECT a, \"select\" FROM ONLY public.t WHERE ctid >= '(6,0)'::pg_catalog.tid) TO STDOUT"
        );
        let none = DirectTable {
            columns: String::new(),
            ..t
        };
        assert_eq!(range_sql(&none, 0, 1), "COPY public.t  TO STDOUT");
        assert!(entry_header(&none).ends_with("COPY public.t  FROM stdin;\n"));
    }
}
