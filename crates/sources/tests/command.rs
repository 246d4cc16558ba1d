//! Generic command source/sink with real tools (tar, sqlite3, pg_dump/psql): no mongod can be
//! installed on our machines, so the MongoDB preset shares this tested path.

use std::process::Command;

use lifeboat_sources::command::{CommandSink, CommandSource, CommandSpec};
use lifeboat_sources::{DirStreams, DumpSource, Error};
use lifeboat_testkit::pg::{PgOptions, PgServer};

#[test]
fn tar_round_trip_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "hello\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();

    let spec = CommandSpec::new("tar", ["-C", src.to_str().unwrap(), "-cf", "-", "."])
        .env("LB_TEST_TOKEN", "tok-12345");
    let mut sink = DirStreams::create(tmp.path().join("b")).unwrap();
    let meta = CommandSource::new("files.tar", spec)
        .dump(&mut sink)
        .unwrap();
    assert_eq!(meta.streams[0].name, "files.tar");
    assert!(meta.streams[0].bytes > 3_000_000);
    assert!(
        !serde_json::to_string(&meta).unwrap().contains("tok-12345"),
        "env not recorded"
    );

    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let sink = CommandSink::new(CommandSpec::new(
        "tar",
        ["-C", out.to_str().unwrap(), "-xf", "-"],
    ));
    sink.restore(&meta, &mut DirStreams::open(tmp.path().join("b")), None)
        .unwrap();
    assert_eq!(std::fs::read(out.join("sub/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).unwrap(),
        "hello\n"
    );
}

#[test]
fn failing_commands_fail_and_redact_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    // Writes data, then fails: the dump must fail, not store a short stream as complete.
    let spec = CommandSpec::new(
        "sh",
        [
            "-c",
            "echo partial; echo \"auth failed for $PW\" >&2; exit 7",
        ],
    )
    .env("PW", "hunter2-pw");
    let mut sink = DirStreams::create(tmp.path().join("b")).unwrap();
    let err = CommandSource::new("x", spec).dump(&mut sink).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("exit status: 7") && msg.contains("auth failed for ***"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2-pw"));
    assert!(!sink.is_finished());
    assert!(
        !tmp.path().join("b/streams/x").exists(),
        "no partial stream kept"
    );

    // A restore command that exits non-zero fails the restore.
    let mut sink = DirStreams::create(tmp.path().join("ok")).unwrap();
    let meta = CommandSource::new("x", CommandSpec::new("echo", ["data"]))
        .dump(&mut sink)
        .unwrap();
    let bad = CommandSink::new(CommandSpec::new("sh", ["-c", "cat >/dev/null; exit 2"]));
    assert!(matches!(
        bad.restore(&meta, &mut DirStreams::open(tmp.path().join("ok")), None),
        Err(Error::Command { .. })
    ));
    let missing = CommandSink::new(CommandSpec::new(
        "definitely-not-a-program-lb",
        Vec::<String>::new(),
    ));
    assert!(missing
        .restore(&meta, &mut DirStreams::open(tmp.path().join("ok")), None)
        .is_err());
}

#[test]
fn sqlite3_cli_dump_pipes_into_sqlite3() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("a.db");
    let run = |db: &std::path::Path, sql: &str| {
        let o = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    run(&db, "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c LIMIT 5000) INSERT INTO t SELECT i FROM c;");
    let mut sink = DirStreams::create(tmp.path().join("b")).unwrap();
    let meta = CommandSource::new(
        "a.sql",
        CommandSpec::new("sqlite3", [db.to_str().unwrap(), ".dump"]),
    )
    .dump(&mut sink)
    .unwrap();
    let db2 = tmp.path().join("b.db");
    CommandSink::new(CommandSpec::new("sqlite3", [db2.to_str().unwrap()]))
        .restore(
            &meta,
            &mut DirStreams::open(tmp.path().join("b")),
            Some("a.sql"),
        )
        .unwrap();
    assert_eq!(run(&db2, "SELECT count(*), sum(x) FROM t"), "5000|12502500");
}

#[test]
fn pg_dump_custom_format_through_generic_command() {
    // The shape of the MongoDB preset (archive out, archive in) with tools that exist here.
    let pg = PgServer::start(PgOptions::default()).unwrap();
    pg.sql("postgres", "CREATE DATABASE a");
    pg.sql("postgres", "CREATE DATABASE b");
    pg.sql(
        "a",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let env = |spec: CommandSpec| {
        pg.env()
            .into_iter()
            .fold(spec, |s, (k, v)| s.env(k, v.to_string_lossy()))
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = DirStreams::create(tmp.path()).unwrap();
    let dump = env(CommandSpec::new(
        pg.bin_dir().join("pg_dump").display().to_string(),
        ["-Fc", "-d", "a"],
    ));
    let meta = CommandSource::new("a.pgdump", dump)
        .dump(&mut sink)
        .unwrap();
    let restore = env(CommandSpec::new(
        pg.bin_dir().join("pg_restore").display().to_string(),
        ["-d", "b"],
    ));
    CommandSink::new(restore)
        .restore(&meta, &mut DirStreams::open(tmp.path()), None)
        .unwrap();
    assert_eq!(pg.sql("b", "SELECT count(*) FROM t"), "1000");
}
