//! Metadata recorded with every database dump, plus restore plans and reports.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the [`DumpMetadata`] layout.
pub const METADATA_FORMAT: u32 = 1;

/// Which engine produced a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL logical dump (`pg_dump` plain SQL).
    Postgres,
    /// MySQL or MariaDB (`mariadb-dump` / `mysqldump`).
    Mysql,
    /// Redis RDB.
    Redis,
    /// SQLite database file (online backup API).
    Sqlite,
    /// Any command's stdout.
    Command,
}

/// Replication position at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// PostgreSQL WAL positions read before the first `pg_dump` and once the last one has
    /// written its first bytes (each `pg_dump` has its own snapshot between those two
    /// points: it takes it before writing anything). `before` is read in the same query as
    /// the server's version while the repository opens, just before the first `pg_dump`
    /// starts: a lower bound, as before.
    PgLsn {
        /// `pg_current_wal_lsn()` (or replay LSN on a standby) before dumping.
        before: String,
        /// `pg_current_wal_insert_lsn()` (or replay LSN on a standby) once the last
        /// `pg_dump` has begun writing: an upper bound, even for commits still in the WAL
        /// buffers (`synchronous_commit = off`).
        after: String,
    },
    /// MySQL/MariaDB binary log coordinates of the dump's consistent snapshot, parsed from
    /// the `CHANGE MASTER TO` comment that `--master-data=2` writes.
    Binlog {
        /// Binary log file name (`binlog.000001`).
        file: String,
        /// Position in that file.
        position: u64,
        /// MariaDB GTID position, when the dump carried one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gtid: Option<String>,
    },
}

/// Exact row count of one table at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// Schema (PostgreSQL) or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Table name, unquoted.
    pub name: String,
    /// Rows.
    pub rows: u64,
}

impl TableRows {
    /// `schema.name` or `name`.
    pub fn qualified(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One database (or Redis logical db, or SQLite file) inside a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// Database name.
    pub name: String,
    /// Stream holding it, when it has one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Per-table row counts (empty for engines without tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRows>,
    /// Key count (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Keys with an expiry (Redis): they may be gone by restore time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volatile_keys: Option<u64>,
    /// Replication position of this database's dump, when dumps are per database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

impl DatabaseInfo {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        DatabaseInfo {
            name: name.into(),
            stream: None,
            tables: Vec::new(),
            keys: None,
            volatile_keys: None,
            position: None,
        }
    }
}

/// One stream of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Stream name inside the snapshot.
    pub name: String,
    /// What it holds: `globals`, `database`, `rdb`, `sqlite`, `command`.
    pub kind: String,
    /// Database it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Bytes stored (as reported by the sink).
    pub bytes: u64,
}

impl StreamInfo {
    /// The stream `name` holding database `db`'s dump.
    pub fn database(name: String, db: &str, bytes: u64) -> Self {
        StreamInfo {
            name,
            kind: "database".into(),
            database: Some(db.to_string()),
            bytes,
        }
    }
}

/// Everything recorded about a dump. Serialises to JSON for the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpMetadata {
    /// [`METADATA_FORMAT`].
    pub format: u32,
    /// Engine.
    pub engine: Engine,
    /// Server version string (`SHOW server_version`, `VERSION()`, `redis_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Dump tool version (PostgreSQL: `pg_dump`'s, from its output header; `mariadb-dump
    /// --version`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub finished_at: String,
    /// Databases.
    pub databases: Vec<DatabaseInfo>,
    /// Streams, in the order they were written.
    pub streams: Vec<StreamInfo>,
    /// Global replication position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// Engine-specific extras (command line of a command source, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl DumpMetadata {
    pub(crate) fn new(engine: Engine) -> Self {
        DumpMetadata {
            format: METADATA_FORMAT,
            engine,
            server_version: None,
            client_version: None,
            started_at: now(),
            finished_at: String::new(),
            databases: Vec::new(),
            streams: Vec::new(),
            position: None,
            extra: serde_json::Map::new(),
        }
    }

    /// The database named `name`.
    pub fn database(&self, name: &str) -> Option<&DatabaseInfo> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// Total bytes over all streams.
    pub fn total_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.bytes).sum()
    }

    /// As a JSON value (what the repository stores).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Parse from the JSON stored in a snapshot.
    ///
    /// # Errors
    /// [`crate::Error::Format`] when the JSON is not dump metadata.
    pub fn from_json(value: serde_json::Value) -> crate::Result<Self> {
        serde_json::from_value(value).map_err(|e| crate::Error::Format(format!("metadata: {e}")))
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A secret (password). Debug/Display print `***`; the value reaches child processes only
/// through their environment.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: only for passing into a child's environment or a 0600 file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a restore will do (or did): ordered steps plus the three lists an operator cares
/// about. `--dry-run` prints this and stops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// Engine.
    pub engine: String,
    /// Objects that will be created (databases, files, tables).
    pub creates: Vec<String>,
    /// Objects that will be dropped.
    pub drops: Vec<String>,
    /// Objects whose content will be replaced.
    pub replaces: Vec<String>,
    /// Ordered human-readable steps.
    pub steps: Vec<String>,
    /// Things the operator should know (dump version, skipped checks, ...).
    pub notes: Vec<String>,
}

/// Outcome of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The plan that was carried out.
    pub plan: RestorePlan,
    /// The object now holding the restored data (database, data dir, file).
    pub restored_to: String,
    /// Row counts verified after the restore (`schema.table` → rows), or key counts.
    pub verified: Vec<(String, u64)>,
    /// `Some(true)` when a `--check` ran and passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_passed: Option<bool>,
    /// Metadata of the pre-restore safety dump, when one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_dump: Option<DumpMetadata>,
    /// Where the replaced original was kept, if it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_kept_as: Option<String>,
    /// Non-fatal problems after success (e.g. the old database could not be dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Verified `(table, rows)` pairs and whether a check ran and passed.
pub(crate) type Verified = (Vec<(String, u64)>, Option<bool>);
