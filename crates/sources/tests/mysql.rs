//! MariaDB dump/restore against a real throwaway server.

use lifeboat_sources::mysql::{
    MySqlConnection, MySqlDumpOptions, MySqlRestoreOptions, MySqlRestorer, MySqlSource,
};
use lifeboat_sources::{DirStreams, DumpSource, Error, Position, StreamSink};
use lifeboat_testkit::mariadb::MariaDbServer;

fn conn(m: &MariaDbServer) -> MySqlConnection {
    MySqlConnection {
        socket: Some(m.socket()),
        user: Some("root".into()),
        no_defaults: true,
        ..Default::default()
    }
}

fn setup(m: &MariaDbServer) {
    m.sql(None, "CREATE DATABASE shop");
    m.sql(
        Some("shop"),
        "CREATE TABLE shop.orders(id int PRIMARY KEY AUTO_INCREMENT, item varchar(40), qty int, raw blob);
         INSERT INTO shop.orders(item, qty, raw) SELECT concat('it(e)m''', seq), seq % 7, unhex('00FF28290A27') FROM seq_1_to_5000;
         CREATE TABLE shop.empty_one(id int);
         CREATE TABLE shop.notes(id int PRIMARY KEY, body text);
         INSERT INTO shop.notes VALUES (1, 'a;b),(c'), (2, 'line\nbreak'), (3, NULL);",
    );
}

fn fingerprint(m: &MariaDbServer, db: &str) -> String {
    m.sql(
        Some(db),
        "SELECT concat((SELECT count(*) FROM orders), ':', (SELECT sum(crc32(concat(id, item, qty, hex(raw)))) FROM orders), ':',
                (SELECT group_concat(concat(id, '=', coalesce(body, 'NULL')) ORDER BY id) FROM notes))",
    )
}

#[test]
fn dump_records_binlog_position_and_counts_then_restores_as_new() {
    let m = MariaDbServer::start().unwrap();
    setup(&m);
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = DirStreams::create(tmp.path()).unwrap();
    let opts = MySqlDumpOptions {
        databases: vec!["shop".into()],
        ..Default::default()
    };
    let meta = MySqlSource::new(conn(&m), opts).dump(&mut sink).unwrap();

    let master = m.sql(None, "SHOW MASTER STATUS");
    let mut cols = master.split('\t');
    let (file, pos) = (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().parse::<u64>().unwrap(),
    );
    match &meta.position {
        Some(Position::Binlog {
            file: f, position, ..
        }) => {
            assert_eq!(f, &file);
            assert_eq!(*position, pos, "nothing was written since the dump");
        }
        other => panic!("no binlog position: {other:?}"),
    }
    let db = meta.database("shop").unwrap();
    let counts: Vec<(&str, u64)> = db
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.rows))
        .collect();
    assert!(counts.contains(&("orders", 5000)), "{counts:?}");
    assert!(counts.contains(&("notes", 3)), "{counts:?}");
    assert!(counts.contains(&("empty_one", 0)), "{counts:?}");
    assert!(meta.server_version.as_deref().unwrap().contains("MariaDB"));

    let restorer = MySqlRestorer::new(conn(&m));
    let mut src = DirStreams::open(tmp.path());
    let mut ropts = MySqlRestoreOptions::as_new("shop_copy");
    ropts.check = Some("SELECT count(*) = 3 FROM notes".into());
    let report = restorer.restore(&meta, &mut src, &ropts, None).unwrap();
    assert_eq!(report.check_passed, Some(true));
    assert_eq!(fingerprint(&m, "shop_copy"), fingerprint(&m, "shop"));

    let err = restorer.restore(&meta, &mut src, &ropts, None).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
}

#[test]
fn replace_is_verified_before_swap_and_rolls_back_on_failure() {
    let m = MariaDbServer::start().unwrap();
    setup(&m);
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = DirStreams::create(tmp.path().join("b")).unwrap();
    let opts = MySqlDumpOptions {
        databases: vec!["shop".into()],
        ..Default::default()
    };
    let meta = MySqlSource::new(conn(&m), opts).dump(&mut sink).unwrap();
    let backup_fp = fingerprint(&m, "shop");

    m.sql(Some("shop"), "DELETE FROM orders WHERE id > 4000; INSERT INTO notes VALUES (4, 'late'); CREATE TABLE extra(x int)");
    let live_fp = fingerprint(&m, "shop");
    let schemas = m.sql(
        None,
        "SELECT group_concat(SCHEMA_NAME ORDER BY 1) FROM information_schema.SCHEMATA",
    );

    let restorer = MySqlRestorer::new(conn(&m));
    let mut src = DirStreams::open(tmp.path().join("b"));
    let mut ropts = MySqlRestoreOptions::replace("shop");
    ropts.check = Some("SELECT count(*) = 999 FROM orders".into());
    let mut safety = DirStreams::create(tmp.path().join("s1")).unwrap();
    let err = restorer
        .restore(
            &meta,
            &mut src,
            &ropts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Verification(_)), "{err}");
    assert_eq!(fingerprint(&m, "shop"), live_fp, "original untouched");
    assert_eq!(m.sql(Some("shop"), "SELECT count(*) FROM extra"), "0");
    assert_eq!(
        m.sql(
            None,
            "SELECT group_concat(SCHEMA_NAME ORDER BY 1) FROM information_schema.SCHEMATA"
        ),
        schemas,
        "staging database dropped"
    );
    let sm = safety.metadata().unwrap();
    assert!(sm
        .database("shop")
        .unwrap()
        .tables
        .iter()
        .any(|t| t.name == "orders" && t.rows == 4000));

    ropts.check = Some("SELECT count(*) = 5000 FROM orders".into());
    let mut safety = DirStreams::create(tmp.path().join("s2")).unwrap();
    let report = restorer
        .restore(
            &meta,
            &mut src,
            &ropts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(fingerprint(&m, "shop"), backup_fp);
    assert_eq!(
        m.sql(None, "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='extra'"),
        "0",
        "the database now holds exactly the backup"
    );
    assert_eq!(
        m.sql(
            None,
            "SELECT group_concat(SCHEMA_NAME ORDER BY 1) FROM information_schema.SCHEMATA"
        ),
        schemas,
        "no side databases left"
    );

    // A database with a view cannot be replaced by RENAME TABLE: refused before any change.
    m.sql(Some("shop"), "CREATE VIEW v AS SELECT id FROM orders");
    let mut safety = DirStreams::create(tmp.path().join("s3")).unwrap();
    let err = restorer
        .restore(
            &meta,
            &mut src,
            &ropts,
            Some(&mut safety as &mut dyn StreamSink),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(!safety.is_finished(), "refused before the safety dump");
}

#[test]
fn binlog_replay_recovers_to_a_point_in_time() {
    use lifeboat_sources::mysql::BinlogStop;
    let m = MariaDbServer::start().unwrap();
    setup(&m);
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = DirStreams::create(tmp.path()).unwrap();
    let opts = MySqlDumpOptions {
        databases: vec!["shop".into()],
        ..Default::default()
    };
    let meta = MySqlSource::new(conn(&m), opts).dump(&mut sink).unwrap();

    m.sql(Some("shop"), "INSERT INTO notes VALUES (10, 'before-target'), (11, 'before-target'); UPDATE orders SET qty = 99 WHERE id <= 10");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let target = m.sql(None, "SELECT NOW()");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    m.sql(
        Some("shop"),
        "INSERT INTO notes VALUES (20, 'after-target'); DELETE FROM orders WHERE id > 100",
    );

    let restorer = MySqlRestorer::new(conn(&m));
    restorer
        .restore(
            &meta,
            &mut DirStreams::open(tmp.path()),
            &MySqlRestoreOptions::as_new("shop_pitr"),
            None,
        )
        .unwrap();
    restorer
        .replay_binlog(&meta, "shop", "shop_pitr", &BinlogStop::Datetime(target))
        .unwrap();
    assert_eq!(
        m.sql(
            Some("shop_pitr"),
            "SELECT count(*) FROM notes WHERE body = 'before-target'"
        ),
        "2"
    );
    assert_eq!(
        m.sql(
            Some("shop_pitr"),
            "SELECT count(*) FROM notes WHERE body = 'after-target'"
        ),
        "0"
    );
    assert_eq!(
        m.sql(Some("shop_pitr"), "SELECT count(*) FROM orders"),
        "5000"
    );
    assert_eq!(
        m.sql(
            Some("shop_pitr"),
            "SELECT count(*) FROM orders WHERE qty = 99"
        ),
        "10"
    );
    // The live database is untouched by the replay.
    assert_eq!(m.sql(Some("shop"), "SELECT count(*) FROM orders"), "100");

    // Replaying to the end brings the later changes too.
    restorer
        .restore(
            &meta,
            &mut DirStreams::open(tmp.path()),
            &MySqlRestoreOptions::as_new("shop_end"),
            None,
        )
        .unwrap();
    restorer
        .replay_binlog(&meta, "shop", "shop_end", &BinlogStop::End)
        .unwrap();
    assert_eq!(
        m.sql(Some("shop_end"), "SELECT count(*) FROM orders"),
        "100"
    );
    assert_eq!(
        m.sql(
            Some("shop_end"),
            "SELECT count(*) FROM notes WHERE body = 'after-target'"
        ),
        "1"
    );
}
