//! SQLite online backup while an application writes, restore, integrity_check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_sources::sqlite::{self, SqliteSource, SqliteTarget};
use lifeboat_sources::{DirStreams, DumpSource, Error, StreamSink};
use rusqlite::Connection;

const TOTAL: i64 = 1_000_000;

fn create(path: &std::path::Path, wal: bool) {
    let c = Connection::open(path).unwrap();
    if wal {
        c.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    }
    c.execute_batch(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE ledger(id INTEGER PRIMARY KEY, src INT, dst INT, amount INT, note TEXT);
         CREATE INDEX ledger_src ON ledger(src);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..100 {
        tx.execute("INSERT INTO accounts VALUES (?1, ?2)", [i, TOTAL / 100])
            .unwrap();
    }
    tx.commit().unwrap();
}

/// Transfers money between accounts in transactions, forever: the sum of balances is
/// invariant and the ledger grows, so a torn copy would show up.
fn writer(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        let mut i: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let tx = c.unchecked_transaction().unwrap();
            for _ in 0..20 {
                let (a, b, amt) = (i % 100, (i * 7 + 3) % 100, i % 50);
                tx.execute(
                    "UPDATE accounts SET balance = balance - ?1 WHERE id = ?2",
                    [amt, a],
                )
                .unwrap();
                tx.execute(
                    "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
                    [amt, b],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO ledger(src, dst, amount, note) VALUES (?1, ?2, ?3, hex(randomblob(64)))",
                    [a, b, amt],
                )
                .unwrap();
                i += 1;
            }
            tx.commit().unwrap();
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn backup_during_writes(wal: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    create(&db, wal);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let w = writer(db.clone(), stop.clone(), done.clone());
    while done.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut metas = Vec::new();
    for n in 0..3 {
        let dir = tmp.path().join(format!("b{n}"));
        let mut sink = DirStreams::create(&dir).unwrap();
        metas.push((dir, SqliteSource::new(&db).dump(&mut sink).unwrap()));
    }
    let commits_during = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(commits_during > 200, "the application kept writing");

    let mut ledger_sizes = Vec::new();
    for (i, (dir, meta)) in metas.iter().enumerate() {
        let out = tmp.path().join(format!("restored{i}.db"));
        let report = sqlite::restore(
            meta,
            &mut DirStreams::open(dir),
            &SqliteTarget::NewFile(out.clone()),
            None,
        )
        .unwrap();
        let c = Connection::open(&out).unwrap();
        sqlite::integrity_check(&c).unwrap();
        let sum: i64 = c
            .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sum, TOTAL, "copy {i} is one consistent snapshot");
        let ledger: i64 = c
            .query_row("SELECT count(*) FROM ledger", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ledger % 20, 0, "only whole transactions");
        let recorded = meta.databases[0]
            .tables
            .iter()
            .find(|t| t.name == "ledger")
            .unwrap()
            .rows;
        assert_eq!(recorded as i64, ledger);
        assert!(report.verified.contains(&("ledger".to_string(), recorded)));
        ledger_sizes.push(ledger);
    }
    assert!(
        ledger_sizes.windows(2).all(|w| w[0] <= w[1]),
        "{ledger_sizes:?}"
    );
}

#[test]
fn online_backup_during_writes_wal_mode() {
    backup_during_writes(true);
}

#[test]
fn online_backup_during_writes_rollback_journal() {
    backup_during_writes(false);
}

#[test]
fn replace_takes_safety_backup_and_refuses_corrupt_input() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    create(&db, true);
    let mut sink = DirStreams::create(tmp.path().join("b")).unwrap();
    let meta = SqliteSource::new(&db).dump(&mut sink).unwrap();

    // The application (still connected) changes data after the backup.
    let app = Connection::open(&db).unwrap();
    app.execute_batch("UPDATE accounts SET balance = 0; CREATE TABLE junk(x)")
        .unwrap();

    // New-file restore onto an existing path is refused.
    let err = sqlite::restore(
        &meta,
        &mut DirStreams::open(tmp.path().join("b")),
        &SqliteTarget::NewFile(db.clone()),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");

    // A corrupted stream is rejected by integrity_check before the target is touched.
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir_all(bad_dir.join("streams")).unwrap();
    let mut bytes = std::fs::read(tmp.path().join("b/streams/sqlite.db")).unwrap();
    let page = 4096;
    for b in &mut bytes[page + 100..page + 1000] {
        *b = 0xA5;
    }
    std::fs::write(bad_dir.join("streams/sqlite.db"), &bytes).unwrap();
    let mut safety = DirStreams::create(tmp.path().join("s0")).unwrap();
    let err = sqlite::restore(
        &meta,
        &mut DirStreams::open(&bad_dir),
        &SqliteTarget::Replace(db.clone()),
        Some(&mut safety as &mut dyn StreamSink),
    );
    assert!(err.is_err(), "corrupt copy must not be restored");
    let zero: i64 = app
        .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(zero, 0, "target untouched");

    let mut safety = DirStreams::create(tmp.path().join("s1")).unwrap();
    let report = sqlite::restore(
        &meta,
        &mut DirStreams::open(tmp.path().join("b")),
        &SqliteTarget::Replace(db.clone()),
        Some(&mut safety as &mut dyn StreamSink),
    )
    .unwrap();
    assert!(report.safety_dump.is_some());
    // The application's open connection sees the restored content.
    let sum: i64 = app
        .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, TOTAL);
    let junk: i64 = app
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'junk'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(junk, 0);
    // The safety backup holds the pre-restore state.
    let sm = safety.metadata().unwrap();
    assert!(sm.databases[0].tables.iter().any(|t| t.name == "junk"));
}
