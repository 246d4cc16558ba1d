//! SQLite backups with SQLite's online backup API (through rusqlite): consistent while the
//! application keeps writing, `PRAGMA integrity_check` on the copy before it is stored and on
//! every restore.
//!
//! The backup copies every page in a single `sqlite3_backup_step(-1)`, which holds a read
//! transaction for the duration of the copy: the result is one consistent snapshot. In WAL
//! mode writers carry on meanwhile; in rollback-journal mode writers wait (their busy
//! timeout) until the copy is done. The copy goes to a private temporary file, is checked,
//! and is then streamed to the sink.
//!
//! Restores: [`SqliteTarget::NewFile`] writes a new file (refused if it exists) via a
//! temporary file in the same directory, checked and counted before the atomic rename;
//! [`SqliteTarget::Replace`] takes a safety backup of the live file first, then copies the
//! checked restore into it with the backup API (so open connections see one atomic change,
//! unlike a file rename under their feet).

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, DatabaseName, OpenFlags};

use crate::stream::{self};
use crate::{
    DatabaseInfo, DumpMetadata, DumpSource, Engine, Error, RestorePlan, RestoreReport, Result,
    StreamInfo, StreamSink, StreamSource, TableRows,
};

/// Name of the stream holding the database file.
pub const DB_STREAM: &str = "sqlite.db";

fn sq(context: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::sqlite(context, e)
}

/// `PRAGMA integrity_check` → `Ok(())` or the problems it lists.
pub fn integrity_check(conn: &Connection) -> Result<()> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(sq("integrity_check"))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sq("integrity_check"))?
        .collect::<std::result::Result<_, _>>()
        .map_err(sq("integrity_check"))?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(Error::Verification(rows.into_iter().take(20).collect()))
    }
}

/// Exact row count of every user table.
pub fn table_counts(conn: &Connection) -> Result<Vec<TableRows>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sq("listing tables"))?;
    names
        .into_iter()
        .map(|name| {
            let q = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
            let rows: i64 = conn
                .query_row(&q, [], |r| r.get(0))
                .map_err(sq("counting rows"))?;
            Ok(TableRows {
                schema: None,
                name,
                rows: rows as u64,
            })
        })
        .collect()
}

/// Copy `src` into `dst` with the backup API in one step (one consistent snapshot),
/// retrying while the source is busy or locked.
fn copy_db(src: &Connection, dst: &mut Connection) -> Result<()> {
    let backup = Backup::new(src, dst).map_err(sq("starting backup"))?;
    let mut waited = Duration::ZERO;
    loop {
        match backup.step(-1).map_err(sq("backup step"))? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                if waited > Duration::from_secs(60) {
                    return Err(Error::Command {
                        program: "sqlite backup".into(),
                        status: "busy".into(),
                        stderr: "database stayed locked for 60 s".into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
            _ => {}
        }
    }
}

/// A SQLite database file to back up.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    path: PathBuf,
}

impl SqliteSource {
    /// Back up the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteSource { path: path.into() }
    }
}

impl DumpSource for SqliteSource {
    fn dump(&mut self, sink: &mut dyn StreamSink) -> Result<DumpMetadata> {
        let mut meta = DumpMetadata::new(Engine::Sqlite);
        meta.client_version = Some(rusqlite::version().to_string());
        if !self.path.exists() {
            return Err(Error::Config(format!(
                "{} does not exist",
                self.path.display()
            )));
        }
        let src = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sq("opening source"))?;
        src.busy_timeout(Duration::from_secs(30))
            .map_err(sq("busy_timeout"))?;
        let tmp = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
        let copy = tmp.path().join("backup.db");
        let mut dst = Connection::open(&copy).map_err(sq("creating the copy"))?;
        copy_db(&src, &mut dst)?;
        drop(src);
        integrity_check(&dst)?;
        let tables = table_counts(&dst)?;
        let journal: String = dst
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(sq("journal_mode"))?;
        // A WAL-mode copy must not leave its state in a -wal file: fold it in.
        dst.execute_batch("PRAGMA journal_mode = DELETE")
            .map_err(sq("journal_mode"))?;
        dst.close()
            .map_err(|(_, e)| Error::sqlite("closing the copy", e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sqlite".into());
        let file = fs::File::open(&copy)
            .map_err(|e| Error::io(format!("opening {}", copy.display()), e))?;
        let bytes = stream::add(sink, DB_STREAM, &mut BufReader::new(file))?;
        let mut db = DatabaseInfo::new(name.clone());
        db.stream = Some(DB_STREAM.into());
        db.tables = tables;
        meta.databases.push(db);
        meta.streams.push(StreamInfo {
            name: DB_STREAM.into(),
            kind: "sqlite".into(),
            database: Some(name),
            bytes,
        });
        meta.extra
            .insert("source_path".into(), self.path.display().to_string().into());
        meta.extra.insert("journal_mode".into(), journal.into());
        meta.finished_at = crate::meta::now();
        stream::finish(sink, &meta)?;
        Ok(meta)
    }
}

/// Where a SQLite restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteTarget {
    /// A new file (refused if it exists).
    NewFile(PathBuf),
    /// Replace the content of this existing database (safety backup first).
    Replace(PathBuf),
}

/// What a restore would do.
///
/// # Errors
/// [`Error::Refused`] when a new file exists or a replaced one does not.
pub fn plan(meta: &DumpMetadata, target: &SqliteTarget) -> Result<RestorePlan> {
    if meta.engine != Engine::Sqlite {
        return Err(Error::Config(format!(
            "not a SQLite dump ({:?})",
            meta.engine
        )));
    }
    let mut plan = RestorePlan {
        engine: "sqlite".into(),
        ..Default::default()
    };
    match target {
        SqliteTarget::NewFile(p) => {
            if p.exists() {
                return Err(Error::Refused(format!("{} already exists", p.display())));
            }
            plan.creates.push(p.display().to_string());
            plan.steps.push(format!(
                "write the database next to {} and run integrity_check + row counts",
                p.display()
            ));
            plan.steps.push(format!("rename it to {}", p.display()));
        }
        SqliteTarget::Replace(p) => {
            if !p.exists() {
                return Err(Error::Refused(format!(
                    "{} does not exist; restore it as a new file",
                    p.display()
                )));
            }
            plan.replaces.push(p.display().to_string());
            plan.steps.push(format!("safety backup of {}", p.display()));
            plan.steps
                .push("write the backup to a temporary file; integrity_check + row counts".into());
            plan.steps.push(format!(
                "copy it into {} with the backup API; integrity_check",
                p.display()
            ));
        }
    }
    Ok(plan)
}

fn verify_counts(conn: &Connection, meta: &DumpMetadata) -> Result<Vec<(String, u64)>> {
    let got = table_counts(conn)?;
    let recorded = meta
        .databases
        .first()
        .map(|d| d.tables.clone())
        .unwrap_or_default();
    let mut failures = Vec::new();
    for t in &recorded {
        match got.iter().find(|g| g.name == t.name) {
            Some(g) if g.rows == t.rows => {}
            Some(g) => failures.push(format!(
                "{} has {} rows, the backup recorded {}",
                t.name, g.rows, t.rows
            )),
            None => failures.push(format!("{} is missing", t.name)),
        }
    }
    if failures.is_empty() {
        Ok(recorded.iter().map(|t| (t.name.clone(), t.rows)).collect())
    } else {
        Err(Error::Verification(failures))
    }
}

/// Restore a SQLite dump. `safety` receives the safety backup of a replace.
///
/// # Errors
/// As [`plan`]; [`Error::Verification`] when `integrity_check` or the row counts fail
/// (nothing was changed); SQLite and I/O errors.
pub fn restore(
    meta: &DumpMetadata,
    source: &mut dyn StreamSource,
    target: &SqliteTarget,
    safety: Option<&mut dyn StreamSink>,
) -> Result<RestoreReport> {
    let plan = plan(meta, target)?;
    let path = match target {
        SqliteTarget::NewFile(p) | SqliteTarget::Replace(p) => p,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lifeboat-restore-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temp file in {}", dir.display()), e))?;
    {
        let mut input = stream::open(source, DB_STREAM)?;
        std::io::copy(&mut input, tmp.as_file_mut())
            .and_then(|_| tmp.as_file_mut().flush())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.path().display()), e))?;
    }
    let staged = Connection::open(tmp.path()).map_err(sq("opening the restored copy"))?;
    integrity_check(&staged)?;
    let verified = verify_counts(&staged, meta)?;
    drop(staged);
    let mut safety_dump = None;
    match target {
        SqliteTarget::NewFile(p) => {
            tmp.persist_noclobber(p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e.error))?;
        }
        SqliteTarget::Replace(p) => {
            let sink = safety
                .ok_or_else(|| Error::Config("a replace restore needs a safety sink".into()))?;
            safety_dump = Some(SqliteSource::new(p.clone()).dump(sink)?);
            let mut live = Connection::open(p).map_err(sq("opening the target"))?;
            live.busy_timeout(Duration::from_secs(30))
                .map_err(sq("busy_timeout"))?;
            live.restore(
                DatabaseName::Main,
                tmp.path(),
                None::<fn(rusqlite::backup::Progress)>,
            )
            .map_err(sq("copying into the target"))?;
            integrity_check(&live)?;
            verify_counts(&live, meta)?;
        }
    }
    Ok(RestoreReport {
        plan,
        restored_to: path.display().to_string(),
        verified,
        check_passed: None,
        safety_dump,
        previous_kept_as: None,
        warnings: Vec::new(),
    })
}
