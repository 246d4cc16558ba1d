//! Lifeboat's database sources and sinks: what is backed up and how it is restored, with no
//! knowledge of the repository format.
//!
//! Every engine produces one or more **named byte streams** plus a [`DumpMetadata`] record
//! (engine, versions, databases, per-table row counts, LSN / binlog position). Streams go to a
//! [`StreamSink`] one after another and the metadata is handed over with
//! [`StreamSink::finish`]; restores read streams back through a [`StreamSource`]. The
//! repository engine plugs in by implementing those two small traits (an adapter over its
//! snapshot writer / reader); [`DirStreams`] is a plain-directory implementation used by tests
//! and handy for `--to-dir` style exports.
//!
//! | engine | module | dump | restore |
//! |---|---|---|---|
//! | PostgreSQL (logical) | [`pg`] | `pg_dump` plain SQL per database + `pg_dumpall --globals-only` | new database, replace (safety dump, temp db, verify, atomic rename), single tables |
//! | MySQL / MariaDB | [`mysql`] | `mariadb-dump --single-transaction --master-data=2 ...` per database | new database, replace (safety dump, temp db, verify, atomic `RENAME TABLE`) |
//! | Redis | [`redis`] | `redis-cli --rdb -` (replication protocol) | `dump.rdb` into a data directory, verified by starting a throwaway server |
//! | SQLite | [`sqlite`] | online backup API | new file or replace via the backup API, `integrity_check` |
//! | anything | [`command`] | a command's stdout (MongoDB preset: `mongodump --archive`) | a command's stdin |
//!
//! Child processes never receive passwords in argv: libpq gets `PGPASSWORD`, MariaDB clients
//! `MYSQL_PWD`, `redis-cli` `REDISCLI_AUTH`, all in the child's environment only. Error messages
//! carry a tool's stderr with any known secret replaced by `***`.
//!
//! ```no_run
//! use lifeboat_sources::{pg::{PgConnection, PgDumpOptions, PgSource}, DirStreams, DumpSource};
//! let mut source = PgSource::new(PgConnection::from_env(), PgDumpOptions::default());
//! let mut sink = DirStreams::create("/tmp/backup-1")?;
//! let meta = source.dump(&mut sink)?;
//! println!("{} databases", meta.databases.len());
//! # Ok::<(), lifeboat_sources::Error>(())
//! ```
//!
//! # Errors
//!
//! One crate-level [`Error`] enum; every variant says what failed (the tool, the database, the
//! stream) and [`Error::is_retryable`] says whether trying again can help.

pub mod command;
mod error;
mod meta;
pub mod mysql;
pub mod pg;
mod process;
pub mod redis;
pub mod sqlite;
mod stream;
mod url;

pub use error::{Error, Result};
pub use meta::{
    DatabaseInfo, DumpMetadata, Engine, Position, RestorePlan, RestoreReport, Secret, StreamInfo,
    TableRows, METADATA_FORMAT,
};
pub use stream::{DirStreams, DumpSource, StreamSink, StreamSource};
pub use url::ConnUrl;
