//! `pg::wire` against a real, throwaway PostgreSQL server: what it reads is what `psql`'s
//! `COPY` reads, byte for byte; errors name the statement and leave the connection usable;
//! an exported snapshot is read the same on another connection; every password method.

use std::io::Read;

use lifeboat_sources::pg::wire::{WireAddress, WireConn, WireTarget};
use lifeboat_sources::Secret;
use lifeboat_testkit::pg::{PgOptions, PgServer};

fn socket_target(pg: &PgServer, db: &str) -> WireTarget {
    WireTarget {
        address: WireAddress::socket(pg.socket_dir(), pg.port()),
        user: "postgres".into(),
        database: db.into(),
        password: None,
        parameters: vec![("client_encoding".into(), "UTF8".into())],
    }
}

/// `psql`'s own `COPY … TO STDOUT` of `sql`, untrimmed.
fn psql_copy(pg: &PgServer, db: &str, sql: &str) -> Vec<u8> {
    pg.tool_output(
        &pg.bin_dir().join("psql"),
        &["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
    )
    .unwrap()
}

fn setup(pg: &PgServer) {
    pg.sql(
        "postgres",
        "CREATE TABLE odd(id int, t text, b bytea, n numeric, j jsonb);
         INSERT INTO odd SELECT g,
             CASE WHEN g % 7 = 0 THEN NULL ELSE E'tab\\there\\nnew line \\\\ back ' || repeat('é€', g % 50) END,
             decode(md5(g::text), 'hex'), g / 3.0, jsonb_build_object('k', g)
           FROM generate_series(1, 20000) g;
         INSERT INTO odd VALUES (0, repeat('x', 300000), NULL, NULL, NULL);",
    );
}

#[test]
fn copy_out_reads_what_psql_reads_and_errors_leave_the_connection_usable() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup(&pg);
    let mut conn = WireConn::connect(&socket_target(&pg, "postgres")).unwrap();
    let expected = psql_copy(&pg, "postgres", "COPY odd TO STDOUT");
    assert!(expected.len() > 1 << 20);

    let mut through_read = Vec::new();
    conn.copy_out("COPY odd TO STDOUT")
        .unwrap()
        .read_to_end(&mut through_read)
        .unwrap();
    assert!(through_read == expected, "Read gives psql's bytes");

    let mut through_rows = Vec::new();
    let mut copy = conn.copy_out("COPY public.odd TO STDOUT").unwrap();
    let mut blocks = 0;
    loop {
        let mut block = Vec::new();
        let more = copy.read_rows(&mut block, 256 << 10).unwrap();
        assert!(
            block.is_empty() || block.ends_with(b"\n"),
            "whole rows only"
        );
        through_rows.extend_from_slice(&block);
        blocks += 1;
        if !more {
            break;
        }
    }
    assert!(through_rows == expected, "read_rows gives psql's bytes");
    assert!(blocks > 3, "in several blocks: {blocks}");

    let rows = conn
        .query("SELECT count(*), NULL::text FROM odd; SELECT 'b'")
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("20001".into()), None], vec![Some("b".into())]]
    );

    // A statement the server refuses names itself, the server's code and message.
    let err = conn
        .copy_out("COPY nope TO STDOUT")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`COPY nope TO STDOUT`")
            && err.contains("42P01")
            && err.contains(r#"relation "nope" does not exist"#)
            && err.contains(r#"database "postgres""#),
        "{err}"
    );
    let err = conn.query("SELECT 1/0").unwrap_err().to_string();
    assert!(
        err.contains("22012") && err.contains("division by zero"),
        "{err}"
    );
    let err = conn.copy_out("SELECT 1").err().unwrap().to_string();
    assert!(err.contains("not a COPY"), "{err}");

    // An error in the middle of the rows ends the reader with it.
    let mut copy = conn
        .copy_out("COPY (SELECT 1 / (g - 15000) FROM generate_series(1, 20000) g) TO STDOUT")
        .unwrap();
    let mut partial = Vec::new();
    let err = copy.read_to_end(&mut partial).unwrap_err().to_string();
    assert!(
        err.contains("22012")
            && err.contains("`COPY (SELECT 1 / (g - 15000)")
            && err.contains(r#"database "postgres""#),
        "{err}"
    );
    assert!(
        !partial.is_empty(),
        "the rows before the error came through"
    );
    assert!(
        copy.read(&mut [0u8; 16]).is_err(),
        "and the reader keeps failing"
    );
    drop(copy);
    assert_eq!(
        conn.query("SELECT 2").unwrap(),
        vec![vec![Some("2".into())]]
    );

    // What this client does not do fails, and the connection stays usable.
    let err = conn
        .copy_out("COPY odd FROM STDIN")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("FROM STDIN"), "{err}");
    let err = conn.query("COPY odd TO STDOUT").unwrap_err().to_string();
    assert!(err.contains("no rows were expected"), "{err}");
    let mut two = Vec::new();
    let err = conn
        .copy_out("COPY odd TO STDOUT; COPY odd TO STDOUT")
        .unwrap()
        .read_to_end(&mut two)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one COPY per request"), "{err}");
    assert_eq!(
        conn.query("SELECT 4").unwrap(),
        vec![vec![Some("4".into())]]
    );

    // Notices in the middle of the rows are not rows.
    conn.query(
        "CREATE FUNCTION noisy(int) RETURNS int LANGUAGE plpgsql AS
         $$ BEGIN IF $1 % 1000 = 0 THEN RAISE NOTICE 'at %', $1; END IF; RETURN $1; END $$",
    )
    .unwrap();
    let noisy = "COPY (SELECT noisy(g) FROM generate_series(1, 50000) g) TO STDOUT";
    let mut rows = Vec::new();
    conn.copy_out(noisy)
        .unwrap()
        .read_to_end(&mut rows)
        .unwrap();
    assert!(rows == psql_copy(&pg, "postgres", noisy));

    // A reader dropped before its end leaves the connection unusable, and says so.
    let mut copy = conn.copy_out("COPY odd TO STDOUT").unwrap();
    let mut first = [0u8; 10];
    copy.read_exact(&mut first).unwrap();
    drop(copy);
    let err = conn.query("SELECT 3").unwrap_err().to_string();
    assert!(err.contains("abandoned"), "{err}");
}

#[test]
fn server_errors_that_end_the_session_are_reported_as_the_server_gave_them() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    let err = WireConn::connect(&socket_target(&pg, "no_such_db"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("3D000") && err.contains(r#"database "no_such_db" does not exist"#),
        "a FATAL error after authentication: {err}"
    );

    // The target the tools' settings give connects.
    let settings = lifeboat_sources::pg::PgConnection {
        host: Some(pg.socket_dir().display().to_string()),
        port: Some(pg.port()),
        user: Some("postgres".into()),
        ..Default::default()
    };
    let target = WireTarget::from_settings(&settings, "postgres", |_| None).unwrap();
    let mut conn = WireConn::connect(&target).unwrap();
    let pid = conn.query("SELECT pg_backend_pid()").unwrap()[0][0]
        .clone()
        .unwrap();

    // The session ended by an administrator in the middle of a COPY.
    let mut copy = conn
        .copy_out("COPY (SELECT g, repeat('x', 2000), pg_sleep(0.001) FROM generate_series(1, 100000) g) TO STDOUT")
        .unwrap();
    let mut first = [0u8; 64];
    copy.read_exact(&mut first).unwrap();
    // Ended while the backend is producing rows, not while it waits on a full socket (then
    // it would close without a word, as PostgreSQL does): this side keeps reading.
    let err = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            pg.sql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
        });
        std::io::copy(&mut copy, &mut std::io::sink())
            .unwrap_err()
            .to_string()
    });
    assert!(err.contains("57P01"), "{err}");
    drop(copy);
    assert!(conn.query("SELECT 1").is_err(), "the connection is gone");
}

#[test]
fn an_exported_snapshot_reads_the_same_rows_on_another_connection_in_page_ranges() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    setup(&pg);
    let mut first = WireConn::connect(&socket_target(&pg, "postgres")).unwrap();
    first
        .query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .unwrap();
    let snapshot = first.query("SELECT pg_export_snapshot()").unwrap()[0][0]
        .clone()
        .unwrap();
    let pages: u64 = first
        .query("SELECT pg_relation_size('odd') / current_setting('block_size')::int")
        .unwrap()[0][0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pages > 10);
    // Rows written after the export are not in it.
    pg.sql(
        "postgres",
        "INSERT INTO odd SELECT g, 'later' FROM generate_series(1, 5000) g",
    );

    let mut whole = Vec::new();
    first
        .copy_out("COPY odd TO STDOUT")
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap();
    assert!(!whole.windows(5).any(|w| w == b"later"));

    let mut joined = Vec::new();
    let half = pages / 2;
    for range in [
        format!("ctid < '({half},0)'"),
        format!("ctid >= '({half},0)'"),
    ] {
        let mut c = WireConn::connect(&socket_target(&pg, "postgres")).unwrap();
        c.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .unwrap();
        c.query(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
            .unwrap();
        c.query("SET synchronize_seqscans = off; SET max_parallel_workers_per_gather = 0")
            .unwrap();
        c.copy_out(&format!(
            "COPY (SELECT * FROM ONLY odd WHERE {range}) TO STDOUT"
        ))
        .unwrap()
        .read_to_end(&mut joined)
        .unwrap();
    }
    assert!(
        joined == whole,
        "two page ranges in the exported snapshot join to the table's COPY"
    );
    let now = psql_copy(&pg, "postgres", "COPY odd TO STDOUT");
    assert!(
        now.len() > whole.len(),
        "a fresh connection sees the later rows"
    );
}

#[test]
fn every_password_method_over_tcp_and_no_secret_in_errors() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    pg.sql(
        "postgres",
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE scram_user LOGIN PASSWORD 's3cret-scram';
         CREATE ROLE clear_user LOGIN PASSWORD 's3cret-clear';
         SET password_encryption = 'md5';
         CREATE ROLE md5_user LOGIN PASSWORD 's3cret-md5';",
    );
    let hba = pg.data_dir().join("pg_hba.conf");
    let rest = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all clear_user 127.0.0.1/32 password\n{rest}"
        ),
    )
    .unwrap();
    pg.sql("postgres", "SELECT pg_reload_conf()");

    let target = |user: &str, password: Option<&str>| WireTarget {
        address: WireAddress::Tcp("127.0.0.1".into(), pg.port()),
        user: user.into(),
        database: "postgres".into(),
        password: password.map(|p| Secret::new(p.to_string())),
        parameters: Vec::new(),
    };
    for (user, password) in [
        ("scram_user", "s3cret-scram"),
        ("md5_user", "s3cret-md5"),
        ("clear_user", "s3cret-clear"),
    ] {
        let mut c = WireConn::connect(&target(user, Some(password)))
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(
            c.query("SELECT current_user").unwrap(),
            vec![vec![Some(user.to_string())]]
        );
        let err = WireConn::connect(&target(user, Some("wrong-password")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("28P01") && err.contains(user) && !err.contains("wrong-password"),
            "{user}: {err}"
        );
        let err = WireConn::connect(&target(user, None))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("asks for a password"), "{user}: {err}");
    }
    let err = WireConn::connect(&WireTarget {
        address: WireAddress::socket("/nonexistent-dir", 5432),
        ..target("postgres", None)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("/nonexistent-dir/.s.PGSQL.5432") && err.contains(r#"database "postgres""#),
        "{err}"
    );
}
