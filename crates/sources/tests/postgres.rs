//! PostgreSQL logical dump/restore against a real throwaway cluster.

use lifeboat_sources::pg::{
    stream_name, PgConnection, PgDumpOptions, PgRestoreOptions, PgRestorer, PgSource,
};
use lifeboat_sources::{DirStreams, DumpMetadata, DumpSource, Error, StreamSink};
use lifeboat_testkit::pg::{PgOptions, PgServer};

fn conn(pg: &PgServer) -> PgConnection {
    PgConnection {
        host: Some(pg.socket_dir().display().to_string()),
        port: Some(pg.port()),
        user: Some("postgres".into()),
        ..Default::default()
    }
}

fn setup_shop(pg: &PgServer) {
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql(
        "shop",
        "CREATE TABLE customers(id serial PRIMARY KEY, name text NOT NULL UNIQUE);
         CREATE TABLE orders(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                             customer int REFERENCES customers(id), note text, amount numeric);
         CREATE INDEX orders_customer ON orders(customer);
         CREATE TABLE \"Odd Name\"(v text);
         INSERT INTO customers(name) SELECT 'c' || g FROM generate_series(1, 50) g;
         INSERT INTO orders(customer, note, amount)
           SELECT 1 + g % 50, E'line\\nbreak and tab\\t' || g, g * 1.5 FROM generate_series(1, 2000) g;
         INSERT INTO \"Odd Name\" VALUES ('x'), (NULL);",
    );
}

/// A snapshot of a database's content: every table's rows in a stable order.
fn fingerprint(pg: &PgServer, db: &str) -> String {
    pg.sql(
        db,
        "SELECT (SELECT string_agg(c::text, ',' ORDER BY id) FROM customers c) || '|' ||
                (SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o) || '|' ||
                (SELECT string_agg(coalesce(v, 'NULL'), ',' ORDER BY v) FROM \"Odd Name\")",
    )
}

fn dump(pg: &PgServer, dir: &std::path::Path, dbs: &[&str]) -> DumpMetadata {
    let opts = PgDumpOptions {
        databases: dbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut sink = DirStreams::create(dir).unwrap();
    let meta = PgSource::new(conn(pg), opts).dump(&mut sink).unwrap();
    assert_eq!(
        sink.metadata().unwrap(),
        meta,
        "finish() got the same metadata"
    );
    meta
}

/// `prepare` starts `pg_dumpall` and the first `pg_dump` (they connect while the
/// repository opens); a source dropped without dumping (the repository did not open) stops
/// them. With a table locked, `pg_dump` cannot finish by itself: it is seen waiting for the
/// lock, and its connection goes away after the drop while the lock is still held.
#[test]
fn a_prepared_dump_that_is_dropped_stops_its_pg_dump() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup_shop(&pg);
    let mut locker = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-d", "shop"])
        .envs(pg.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut session = locker.stdin.take().unwrap();
    session
        .write_all(b"BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    session.flush().unwrap();
    let until = |sql: &str, want: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while pg.sql("shop", sql) != want {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until(
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
         AND relation = 'orders'::regclass",
        "1",
        "the lock was not taken",
    );
    let mut c = conn(&pg);
    // A backend waiting for a lock notices that its client is gone only when it checks.
    c.env.push((
        "PGOPTIONS".into(),
        "-c client_connection_check_interval=100".into(),
    ));
    let opts = PgDumpOptions {
        databases: vec!["shop".into()],
        ..Default::default()
    };
    let mut source = PgSource::new(c, opts);
    source.prepare().unwrap();
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'";
    until(
        waiting,
        "1",
        "the prepared pg_dump is not waiting for the lock",
    );
    drop(source);
    until(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name IN ('pg_dump', 'pg_dumpall')",
        "0",
        "a pg_dump is still connected while the lock is held",
    );
    drop(session);
    locker.wait().unwrap();
}

#[test]
fn dump_records_counts_and_restores_as_new_database() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup_shop(&pg);
    let tmp = tempfile::tempdir().unwrap();
    let meta = dump(&pg, tmp.path(), &["shop"]);

    let db = meta.database("shop").unwrap();
    let counts: Vec<(String, u64)> = db.tables.iter().map(|t| (t.qualified(), t.rows)).collect();
    assert!(
        counts.contains(&("public.customers".into(), 50)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("public.orders".into(), 2000)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("public.Odd Name".into(), 2)),
        "{counts:?}"
    );
    // The server's own answer, and pg_dump's (taken from its output's header).
    assert_eq!(
        meta.server_version.as_deref(),
        Some(pg.psql("postgres", "SHOW server_version").unwrap().trim())
    );
    let server: u32 = pg
        .sql("postgres", "SHOW server_version_num")
        .parse()
        .unwrap();
    assert!(meta
        .server_version
        .as_deref()
        .unwrap()
        .starts_with(&format!("{}.", server / 10000)));
    let tool = std::process::Command::new("pg_dump")
        .arg("--version")
        .output()
        .unwrap();
    let tool = String::from_utf8(tool.stdout).unwrap();
    let tool = tool.trim().split_once(") ").unwrap().1;
    assert_eq!(meta.client_version.as_deref(), Some(tool));
    let Some(lifeboat_sources::Position::PgLsn { before, after }) = &meta.position else {
        panic!("no WAL position: {:?}", meta.position);
    };
    let lsn = |s: &str| {
        let (hi, lo) = s.split_once('/').unwrap_or_else(|| panic!("LSN {s:?}"));
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(lsn(before) <= lsn(after), "{before} then {after}");
    assert!(meta
        .streams
        .iter()
        .any(|s| s.name == "globals.sql" && s.bytes > 0));
    let stream =
        std::fs::read_to_string(tmp.path().join("streams").join(stream_name("shop"))).unwrap();
    assert!(stream.contains("COPY public.orders"));

    let restorer = PgRestorer::new(conn(&pg));
    let mut src = DirStreams::open(tmp.path());
    let mut opts = PgRestoreOptions::as_new("shop_copy");
    opts.check = Some("SELECT count(*) = 2000 FROM orders".into());
    let plan = restorer.plan(&meta, &opts).unwrap();
    assert_eq!(plan.creates, vec!["database shop_copy".to_string()]);
    assert!(plan.drops.is_empty() && plan.replaces.is_empty());
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname='shop_copy'"
        ),
        "0",
        "dry run changes nothing"
    );

    let report = restorer.restore(&meta, &mut src, &opts, None).unwrap();
    assert_eq!(report.restored_to, "shop_copy");
    assert_eq!(report.check_passed, Some(true));
    assert!(report.verified.contains(&("public.orders".into(), 2000)));
    assert_eq!(fingerprint(&pg, "shop_copy"), fingerprint(&pg, "shop"));

    // Restoring again under the same name is refused and changes nothing.
    pg.sql("shop_copy", "INSERT INTO customers(name) VALUES ('marker')");
    let err = restorer.restore(&meta, &mut src, &opts, None).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert_eq!(
        pg.sql(
            "shop_copy",
            "SELECT count(*) FROM customers WHERE name='marker'"
        ),
        "1"
    );
}

#[test]
fn failing_replace_leaves_original_untouched_and_keeps_safety_dump() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup_shop(&pg);
    let tmp = tempfile::tempdir().unwrap();
    let meta = dump(&pg, &tmp.path().join("backup"), &["shop"]);

    // The live database moves on after the backup.
    pg.sql(
        "shop",
        "DELETE FROM orders WHERE id > 1500; INSERT INTO customers(name) VALUES ('late')",
    );
    let before = fingerprint(&pg, "shop");
    let dbs_before = pg.sql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    );

    let restorer = PgRestorer::new(conn(&pg));
    let mut src = DirStreams::open(tmp.path().join("backup"));
    let mut opts = PgRestoreOptions::replace("shop");
    opts.check = Some("SELECT count(*) = 12345 FROM orders".into());
    let mut safety = DirStreams::create(tmp.path().join("safety")).unwrap();
    let err = restorer
        .restore(
            &meta,
            &mut src,
            &opts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Verification(_)), "{err}");
    assert!(err.to_string().contains("check returned false"), "{err}");

    assert_eq!(fingerprint(&pg, "shop"), before, "original untouched");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        dbs_before,
        "temporary database dropped"
    );
    // The safety dump exists, is complete and records the live state.
    let safety_meta = safety.metadata().unwrap();
    let s = safety_meta.database("shop").unwrap();
    assert!(
        s.tables
            .iter()
            .any(|t| t.name == "orders" && t.rows == 1500),
        "{s:?}"
    );
    assert!(s
        .tables
        .iter()
        .any(|t| t.name == "customers" && t.rows == 51));

    // The same replace with a passing check swaps the backup in, even with a client connected.
    let mut holder = std::process::Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-d", "shop", "-c", "SELECT pg_sleep(60)"])
        .envs(pg.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    opts.check = Some("SELECT count(*) = 2000 FROM orders;".into());
    let mut safety2 = DirStreams::create(tmp.path().join("safety2")).unwrap();
    let report = restorer
        .restore(
            &meta,
            &mut src,
            &opts,
            Some(&mut safety2 as &mut dyn StreamSink),
        )
        .unwrap();
    let _ = holder.wait();
    assert!(report.safety_dump.is_some());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM orders"), "2000");
    assert_eq!(
        pg.sql("shop", "SELECT count(*) FROM customers WHERE name='late'"),
        "0"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        dbs_before,
        "old database dropped, no leftovers"
    );
}

#[test]
fn single_table_restore_leaves_other_tables_untouched() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup_shop(&pg);
    pg.sql("shop", "CREATE TABLE audit(id int PRIMARY KEY, t text); INSERT INTO audit SELECT g, 'a' FROM generate_series(1,10) g");
    let tmp = tempfile::tempdir().unwrap();
    let meta = dump(&pg, &tmp.path().join("backup"), &["shop"]);
    let restorer = PgRestorer::new(conn(&pg));
    let mut src = DirStreams::open(tmp.path().join("backup"));

    // Damage orders and change customers after the backup.
    pg.sql(
        "shop",
        "DELETE FROM orders WHERE id % 3 = 0; UPDATE orders SET note = 'oops'",
    );
    pg.sql(
        "shop",
        "INSERT INTO customers(name) VALUES ('new-after-backup')",
    );
    pg.sql("shop", "DROP TABLE audit");
    let customers_before = pg.sql(
        "shop",
        "SELECT string_agg(c::text, ',' ORDER BY id) FROM customers c",
    );

    let mut safety = DirStreams::create(tmp.path().join("safety")).unwrap();
    let opts = PgRestoreOptions::tables("shop", vec!["orders".into(), "public.audit".into()]);
    let plan = restorer.plan(&meta, &opts).unwrap();
    assert!(
        plan.replaces.iter().any(|r| r.contains("public.orders")),
        "{plan:?}"
    );
    assert!(
        plan.creates.iter().any(|r| r.contains("public.audit")),
        "{plan:?}"
    );
    let report = restorer
        .restore(
            &meta,
            &mut src,
            &opts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap();
    assert_eq!(report.restored_to, "shop");

    assert_eq!(pg.sql("shop", "SELECT count(*) FROM orders"), "2000");
    assert_eq!(
        pg.sql("shop", "SELECT count(*) FROM orders WHERE note = 'oops'"),
        "0"
    );
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM audit"), "10");
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'audit'"
        ),
        "1",
        "primary key recreated"
    );
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT string_agg(c::text, ',' ORDER BY id) FROM customers c"
        ),
        customers_before,
        "other table untouched"
    );
    // Safety dump of the existing table only, holding the damaged state.
    let sm = safety.metadata().unwrap();
    let tables = &sm.database("shop").unwrap().tables;
    assert_eq!(tables.len(), 1, "{tables:?}");
    assert_eq!(tables[0].name, "orders");
    assert_eq!(tables[0].rows, 1334);

    // A failing check rolls the table restore back entirely.
    pg.sql("shop", "DELETE FROM orders WHERE id > 100");
    let mut opts = PgRestoreOptions::tables("shop", vec!["orders".into()]);
    opts.check = Some("SELECT false".into());
    let mut safety = DirStreams::create(tmp.path().join("safety2")).unwrap();
    let err = restorer
        .restore(
            &meta,
            &mut src,
            &opts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Verification(_)), "{err}");
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM orders"), "100");

    // A table referenced by another table's foreign key is restored too: the key is dropped
    // for the TRUNCATE and added back, which checks orders' rows against the restored ones.
    let opts = PgRestoreOptions::tables("shop", vec!["customers".into()]);
    let mut safety = DirStreams::create(tmp.path().join("safety3")).unwrap();
    restorer
        .restore(
            &meta,
            &mut src,
            &opts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap();
    assert_ne!(
        pg.sql(
            "shop",
            "SELECT string_agg(c::text, ',' ORDER BY id) FROM customers c"
        ),
        customers_before,
        "the customer added after the backup is gone"
    );
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM customers"), "50");
}

/// All foreign keys in `db`: table, name, definition and comment, partitions' clones included.
fn foreign_keys(pg: &PgServer, db: &str) -> String {
    pg.sql(
        db,
        "SELECT string_agg(conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
                           || ' ' || coalesce(obj_description(oid, 'pg_constraint'), '-'),
                           E'\n' ORDER BY conrelid::regclass::text, conname)
           FROM pg_constraint WHERE contype = 'f'",
    )
}

fn customers(pg: &PgServer) -> String {
    pg.sql(
        "shop",
        "SELECT string_agg(c::text, ',' ORDER BY id) FROM customers c",
    )
}

/// PostgreSQL refuses to `TRUNCATE` a table that another table's foreign key references;
/// the restore drops such keys (a partitioned table's too) inside its transaction and adds
/// them back after the data, which checks the referencing rows against the restored ones.
#[test]
fn single_table_restore_of_a_referenced_table_checks_the_rows_that_reference_it() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup_shop(&pg);
    // Orders also reference a partitioned table, whose partition is what a restore picks
    // (the dump has a data block per partition), with a deferred key: restoring orders
    // queues checks that must run before any ALTER TABLE of it.
    pg.sql(
        "shop",
        "CREATE TABLE regions(id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE regions_low PARTITION OF regions FOR VALUES FROM (0) TO (100);
         INSERT INTO regions SELECT generate_series(1, 10);
         ALTER TABLE orders ADD COLUMN region int DEFAULT 1
           REFERENCES regions(id) DEFERRABLE INITIALLY DEFERRED",
    );
    let tmp = tempfile::tempdir().unwrap();
    let meta = dump(&pg, &tmp.path().join("backup"), &["shop"]);
    let restorer = PgRestorer::new(conn(&pg));
    let src = DirStreams::open(tmp.path().join("backup"));
    let backed_up = customers(&pg);
    let orders_md5 = pg.sql(
        "shop",
        "SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o",
    );

    // After the backup: a comment on the key, a partitioned table that references customers
    // too (its key is cloned onto the partition), and damaged customers.
    pg.sql(
        "shop",
        "COMMENT ON CONSTRAINT orders_customer_fkey ON orders IS 'who ordered';
         CREATE TABLE refunds(id int, customer int REFERENCES customers(id) DEFERRABLE)
           PARTITION BY RANGE (id);
         CREATE TABLE refunds_low PARTITION OF refunds FOR VALUES FROM (0) TO (1000);
         INSERT INTO refunds SELECT g, g FROM generate_series(1, 20) g;
         UPDATE customers SET name = name || '-damaged' WHERE id <= 10",
    );
    let keys = foreign_keys(&pg, "shop");
    assert!(keys.contains("refunds_low"), "{keys}");
    assert!(keys.contains("who ordered"), "{keys}");
    let restore = |tables: &[&str], name: &str| {
        let opts = PgRestoreOptions::tables("shop", tables.iter().map(|t| t.to_string()).collect());
        let mut safety = DirStreams::create(tmp.path().join(name)).unwrap();
        restorer.restore(
            &meta,
            &mut src.clone(),
            &opts,
            Some(&mut safety as &mut dyn StreamSink),
        )
    };

    restore(&["customers"], "safety1").unwrap();
    assert_eq!(customers(&pg), backed_up);
    assert_eq!(
        foreign_keys(&pg, "shop"),
        keys,
        "every key back, comment included"
    );
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
        ),
        orders_md5,
        "orders untouched"
    );
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM refunds"), "20");

    // A partition of a referenced partitioned table: the key's clone on it is followed up
    // to the key itself, which is dropped and added back whole.
    pg.sql("shop", "INSERT INTO regions SELECT generate_series(11, 20)");
    restore(&["regions_low"], "safety-regions").unwrap();
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM regions"), "10");
    assert_eq!(foreign_keys(&pg, "shop"), keys);

    // An order for a customer the backup does not have: restoring customers alone would
    // break it, so the restore fails, names the table, the key and the row, and rolls back.
    pg.sql(
        "shop",
        "INSERT INTO customers(id, name) VALUES (51, 'late');
         INSERT INTO orders(customer, note) VALUES (51, 'late order')",
    );
    let with_late = customers(&pg);
    let err = restore(&["customers"], "safety2").unwrap_err();
    assert!(matches!(err, Error::Verification(_)), "{err}");
    let msg = err.to_string();
    for needle in [
        "public.orders",
        "orders_customer_fkey",
        "(customer)=(51)",
        "rolled back",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert_eq!(customers(&pg), with_late, "nothing changed");
    assert_eq!(foreign_keys(&pg, "shop"), keys);

    // Restoring both tables together satisfies the key (and orders' deferred key to regions
    // is checked before orders' key to customers is added back).
    restore(&["customers", "orders"], "safety3").unwrap();
    assert_eq!(customers(&pg), backed_up);
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
        ),
        orders_md5
    );
    assert_eq!(foreign_keys(&pg, "shop"), keys);
}

#[test]
fn newer_pg_dump_is_refused_before_anything_is_created() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup_shop(&pg);
    let tmp = tempfile::tempdir().unwrap();
    let meta = dump(&pg, tmp.path(), &["shop"]);
    let restorer = PgRestorer::new(conn(&pg));
    let server: u32 = pg
        .sql("postgres", "SHOW server_version_num")
        .parse()
        .unwrap();

    // 1. Metadata says a newer pg_dump made it.
    let mut newer = meta.clone();
    newer.client_version = Some("99.1 (future)".into());
    let err = restorer
        .plan(&newer, &PgRestoreOptions::as_new("x1"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionSkew {
                dump_major: 99,
                server_major,
                ..
            } if server_major == server / 10000
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version skew"));

    // 2. Metadata looks fine but the stream's own header says newer.
    let path = tmp.path().join("streams").join(stream_name("shop"));
    let text = std::fs::read_to_string(&path).unwrap();
    let faked = text
        .lines()
        .map(|l| {
            if l.starts_with("-- Dumped by pg_dump version ") {
                "-- Dumped by pg_dump version 99.0"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, faked).unwrap();
    let mut src = DirStreams::open(tmp.path());
    let err = restorer
        .restore(&meta, &mut src, &PgRestoreOptions::as_new("x2"), None)
        .unwrap_err();
    assert!(
        matches!(err, Error::VersionSkew { dump_major: 99, .. }),
        "{err}"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname IN ('x1','x2')"
        ),
        "0"
    );
}

#[test]
fn failed_pg_dump_is_an_error_not_a_short_stream() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = PgDumpOptions {
        databases: vec!["does_not_exist".into()],
        globals: false,
        ..Default::default()
    };
    let mut sink = DirStreams::create(tmp.path()).unwrap();
    let err = PgSource::new(conn(&pg), opts).dump(&mut sink).unwrap_err();
    assert!(err.to_string().contains("does_not_exist"), "{err}");
    assert!(!sink.is_finished());
}
