//! Database backups and restores through the `lifeboat` binary, against real
//! throwaway servers (PostgreSQL 15, MariaDB, Redis) started by the testkit,
//! SQLite files and a real generic command (tar).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat_testkit::mariadb::MariaDbServer;
use lifeboat_testkit::pg::{PgOptions, PgServer};
use lifeboat_testkit::redis::{RedisOptions, RedisServer};
use serde_json::Value;

const PW: &str = "database test password";

struct Repo {
    tmp: tempfile::TempDir,
    env: Vec<(String, OsString)>,
}

impl Repo {
    fn new(env: Vec<(String, OsString)>) -> Self {
        let r = Repo {
            tmp: tempfile::tempdir().unwrap(),
            env,
        };
        r.ok(&["init"]);
        r
    }
    fn path(&self) -> &Path {
        self.tmp.path()
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFEBOAT_") || k.starts_with("PG") || k.starts_with("MYSQL") {
                c.env_remove(k);
            }
        }
        c.env("LIFEBOAT_INSECURE_TEST_KDF", "1")
            .env("LIFEBOAT_PASSWORD", PW)
            .env("LIFEBOAT_REPO", self.path().join("repo"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "lifeboat {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
    fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "lifeboat {args:?} should fail");
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

fn pg_shop(pg: &PgServer) {
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql(
        "shop",
        "CREATE TABLE customers(id serial PRIMARY KEY, name text NOT NULL UNIQUE);
         CREATE TABLE orders(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                             customer int REFERENCES customers(id), note text);
         INSERT INTO customers(name) SELECT 'c' || g FROM generate_series(1, 40) g;
         INSERT INTO orders(customer, note) SELECT 1 + g % 40, 'n' || g FROM generate_series(1, 3000) g;",
    );
}

/// The server's libpq environment, with `bin`'s client tools first in `PATH`.
fn env_with_tools_of(pg: &PgServer, bin: &Path) -> Vec<(String, OsString)> {
    let mut path = OsString::from(bin.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut env = pg.env();
    env.push(("PATH".into(), path));
    env
}

fn pg_fingerprint(pg: &PgServer, db: &str) -> String {
    pg.sql(
        db,
        "SELECT (SELECT count(*) FROM customers) || '/' || (SELECT count(*) FROM orders) || '/' ||
                (SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o)",
    )
}

#[test]
fn postgres_backup_restore_alongside_replace_tables_and_rollback() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    pg_shop(&pg);
    let repo = Repo::new(pg.env());
    let original = pg_fingerprint(&pg, "shop");

    let out = repo.json(&[
        "backup",
        "postgres",
        "--database",
        "shop",
        "--tag",
        "nightly",
    ]);
    let snap = out["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(out["source"], "postgres");
    let tables = &out["dump"]["databases"][0]["tables"];
    assert!(
        tables
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "orders" && t["rows"] == 3000),
        "{tables}"
    );
    // The dump is an ordinary snapshot: listed, checked, its streams browsable.
    let ls = repo.ok(&["ls", &snap, "/"]);
    assert!(ls.contains("globals.sql") && ls.contains("db"), "{ls}");
    repo.ok(&["check", "--read-data"]);

    // Default: a new database alongside; nothing existing touched.
    let text = repo.ok(&["restore", &snap, "--to-postgres", "--as", "shop_copy"]);
    assert!(text.contains("shop_copy"), "{text}");
    assert_eq!(pg_fingerprint(&pg, "shop_copy"), original);
    // Restoring onto an existing name without --replace is refused.
    let err = repo.fail(&["restore", &snap, "--to-postgres", "--as", "shop"]);
    assert!(err.contains("shop"), "{err}");

    // Damage the live database, then --dry-run shows the plan and changes nothing.
    pg.sql("shop", "DELETE FROM orders WHERE id > 100");
    let damaged = pg_fingerprint(&pg, "shop");
    let plan = repo.json(&[
        "restore",
        &snap,
        "--to-postgres",
        "--replace",
        "shop",
        "--dry-run",
    ]);
    assert_eq!(plan["dry_run"], true);
    assert!(
        plan["plan"]["replaces"].to_string().contains("shop"),
        "{plan}"
    );
    assert_eq!(pg_fingerprint(&pg, "shop"), damaged);

    // A replace whose verification fails rolls back: the live database is untouched.
    let err = repo.fail(&[
        "restore",
        &snap,
        "--to-postgres",
        "--replace",
        "shop",
        "--check",
        "SELECT count(*) = 0 FROM orders",
    ]);
    assert!(
        err.contains("left as it was") && err.contains("safety dump is snapshot"),
        "{err}"
    );
    assert_eq!(pg_fingerprint(&pg, "shop"), damaged);
    let snaps = repo.json(&["snapshots", "--tag", "safety"]);
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "the failed replace kept its safety dump: {snaps}"
    );

    // A replace with connections open: safety dump first, then swap.
    let mut client = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-d", "shop", "-c", "SELECT pg_sleep(60)"])
        .envs(pg.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rep = repo.json(&["restore", &snap, "--to-postgres", "--replace", "shop"]);
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(pg_fingerprint(&pg, "shop"), original);
    let safety = rep["safety_snapshot_id"].as_str().unwrap().to_string();
    let snaps = repo.json(&["snapshots", "--tag", "safety"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    // The safety dump holds the damaged state and restores like any dump.
    repo.ok(&["restore", &safety, "--to-postgres", "--as", "shop_before"]);
    assert_eq!(pg_fingerprint(&pg, "shop_before"), damaged);
    // `latest` is still the backup, not one of the safety dumps taken since (they are newer).
    let rep = repo.json(&["restore", "latest", "--to-postgres", "--as", "shop_latest"]);
    assert_eq!(rep["snapshot_id"].as_str(), Some(snap.as_str()), "{rep}");
    assert_eq!(pg_fingerprint(&pg, "shop_latest"), original);
    let rep = repo.json(&[
        "restore",
        "latest",
        "--tag",
        "safety",
        "--to-postgres",
        "--as",
        "shop_safety",
    ]);
    assert_eq!(rep["snapshot_id"].as_str(), Some(safety.as_str()), "{rep}");

    // Single table: only orders comes back, customers is not touched.
    pg.sql(
        "shop",
        "DELETE FROM orders; UPDATE customers SET name = name || '!' WHERE id = 1",
    );
    repo.ok(&[
        "restore",
        &snap,
        "--to-postgres",
        "--database",
        "shop",
        "--table",
        "public.orders",
    ]);
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM orders"), "3000");
    assert_eq!(
        pg.sql("shop", "SELECT name FROM customers WHERE id = 1"),
        "c1!"
    );

    // Not a database snapshot: clear error.
    let files = repo.path().join("files");
    fs::create_dir(&files).unwrap();
    fs::write(files.join("a"), "a").unwrap();
    repo.ok(&["backup", files.to_str().unwrap()]);
    let err = repo.fail(&[
        "restore",
        "latest",
        "--path",
        files.to_str().unwrap(),
        "--to-postgres",
    ]);
    assert!(err.contains("not a database backup"), "{err}");
}

/// A `pg_dump` of a newer major than the server (18 on PATH before the main pass's 15, or the
/// 16 pass's 16) makes a backup that the server's own major cannot load: the backup says so,
/// with a hint, on stderr and in `--json`'s `warnings`, and its restore into that server is
/// refused before anything changes. With the server's own `pg_dump`, no warning.
#[test]
fn postgres_backup_by_a_newer_pg_dump_warns_and_its_restore_into_the_server_is_refused() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    pg_shop(&pg);
    let server: u32 = pg
        .sql("postgres", "SHOW server_version_num")
        .parse()
        .unwrap();
    let own = Repo::new(pg.env());
    let out = own.json(&["backup", "postgres", "--database", "shop"]);
    assert_eq!(out["warnings"], serde_json::json!([]), "{out}");
    let newer = lifeboat_testkit::pg::extra_pg_majors()
        .filter(|m| *m > server / 10000)
        .max()
        .and_then(|m| lifeboat_testkit::pg::extra_pg_bin_dir(m).map(|bin| (m, bin)));
    let Some((major, bin)) = newer else {
        eprintln!("no pg_dump newer than the server {server} installed: nothing to test here");
        return;
    };
    let repo = Repo::new(env_with_tools_of(&pg, &bin));
    let o = repo.run(&["backup", "postgres", "--database", "shop"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let want = format!("restores only into PostgreSQL {major} or newer");
    assert!(
        stderr.contains("warning: pg_dump ")
            && stderr.contains(&want)
            && stderr.contains(&format!(
                "hint: put PostgreSQL {}'s pg_dump",
                server / 10000
            )),
        "{stderr}"
    );
    let out = repo.json(&["--quiet", "backup", "postgres", "--database", "shop"]);
    let warnings = out["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains(&want),
        "{out}"
    );
    pg.sql("shop", "DELETE FROM orders WHERE id > 100");
    let damaged = pg_fingerprint(&pg, "shop");
    let err = repo.fail(&["restore", "latest", "--to-postgres", "--replace", "shop"]);
    assert!(
        err.contains("version skew") && err.contains(&format!("major {major} or newer")),
        "{err}"
    );
    assert_eq!(pg_fingerprint(&pg, "shop"), damaged);
}

/// `pg_dump` refuses a server of a newer major than its own; the backup fails, saves nothing,
/// and the hint names the server's major (PostgreSQL 18's server, 16's tools).
#[test]
fn postgres_backup_with_an_older_pg_dump_fails_with_a_hint_naming_the_servers_major() {
    let (Some(bin18), Some(bin16)) = (
        lifeboat_testkit::pg::extra_pg_bin_dir(18),
        lifeboat_testkit::pg::extra_pg_bin_dir(16),
    ) else {
        return;
    };
    let pg = PgServer::start(PgOptions {
        bin_dir: Some(bin18),
        ..PgOptions::default()
    })
    .unwrap();
    pg.sql("postgres", "CREATE DATABASE shop");
    let repo = Repo::new(env_with_tools_of(&pg, &bin16));
    let err = repo.fail(&["backup", "postgres", "--database", "shop"]);
    assert!(
        err.contains("server version mismatch")
            && err.contains(
                "hint: the server is PostgreSQL 18: put PostgreSQL 18's client tools (pg_dump, \
                 pg_dumpall, psql) first in PATH"
            ),
        "{err}"
    );
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

#[test]
fn postgres_backup_of_a_missing_database_fails_and_saves_nothing() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    let repo = Repo::new(pg.env());
    let err = repo.fail(&["backup", "postgres", "--database", "nope"]);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 0);
    repo.ok(&["check"]);
}

/// A table of 64 MiB and more is read by Lifeboat's own connections in page ranges, inside
/// pg_dump's snapshot (its data follows pg_dump's in a `\restrict` pair of its own); the
/// dump restores with every row, as does one made with `--pg-dump-only`.
#[test]
fn postgres_backup_reads_a_large_table_directly_and_restores_it() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    pg.sql("postgres", "CREATE DATABASE big");
    pg.sql(
        "big",
        "CREATE TABLE events(id int PRIMARY KEY, payload text);
         INSERT INTO events SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 330000) g;
         CREATE TABLE small(v int); INSERT INTO small VALUES (1), (2);",
    );
    assert_eq!(
        pg.sql(
            "big",
            "SELECT pg_relation_size('events') >= 64 * 1024 * 1024"
        ),
        "t"
    );
    let print = "SELECT count(*), md5(string_agg(id || payload, ',' ORDER BY id)) FROM events";
    let original = pg.sql("big", print);
    let repo = Repo::new(pg.env());
    // (pg_dump runs, \restrict pairs) in a stored dump.
    let shape = |snap: &str| {
        let text = repo.ok(&["dump", snap, "db/big.sql"]);
        let count = |f: &dyn Fn(&str) -> bool| text.lines().filter(|l| f(l)).count();
        (
            count(&|l| l == "-- PostgreSQL database dump complete"),
            count(&|l| l.starts_with("\\restrict ")),
        )
    };
    let alone = {
        let out = repo.json(&[
            "backup",
            "postgres",
            "-d",
            "big",
            "--no-globals",
            "--pg-dump-only",
        ]);
        out["snapshot_id"].as_str().unwrap().to_string()
    };
    let out = repo.json(&["backup", "postgres", "-d", "big", "--no-globals"]);
    let direct = out["snapshot_id"].as_str().unwrap().to_string();
    let tables = out["dump"]["databases"][0]["tables"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        tables
            .iter()
            .any(|t| t["name"] == "events" && t["rows"] == 330000)
            && tables
                .iter()
                .any(|t| t["name"] == "small" && t["rows"] == 2),
        "{tables:?}"
    );
    // Two pg_dump runs; pg_dump 15.14 and later write a \restrict pair per run, and the
    // direct part has its own.
    let (runs, per_run) = shape(&alone);
    assert!(runs == 1 && per_run <= 1);
    assert_eq!(shape(&direct), (2, 3 * per_run));
    for (snap, name) in [(&direct, "big_direct"), (&alone, "big_alone")] {
        repo.ok(&["restore", snap, "--to-postgres", "--as", name]);
        assert_eq!(pg.sql(name, print), original, "{name}");
        assert_eq!(
            pg.sql(
                name,
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'events'"
            ),
            "1"
        );
    }
}

/// `backup postgres` starts `pg_dump` while the repository opens, but only once the
/// password is known: a `--password-command` (or a prompt) that takes its time finds no dump
/// tool connected. A wrong password fails with the key error and saves nothing (that the
/// started `pg_dump` is stopped is checked in lifeboat-sources' tests, where it can be made
/// to wait).
#[test]
fn pg_dump_starts_after_the_password_is_read() {
    let pg = PgServer::start(PgOptions::default()).unwrap();
    pg_shop(&pg);
    let repo = Repo::new(pg.env());
    // The password command waits a second (long enough for a started pg_dump to
    // connect), then records how many dump tools are connected, then answers.
    let seen = repo.path().join("connected-while-asking");
    let command = format!(
        "sleep 1; '{}' -X -At -d postgres -c \"SELECT count(*) FROM pg_stat_activity \
         WHERE application_name IN ('pg_dump', 'pg_dumpall')\" > '{}'; printf '%s' '{PW}'",
        pg.bin_dir().join("psql").display(),
        seen.display()
    );
    repo.ok(&[
        "backup",
        "postgres",
        "--database",
        "shop",
        "--password-command",
        &command,
    ]);
    assert_eq!(fs::read_to_string(&seen).unwrap().trim(), "0");
    let o = repo
        .cmd(&["backup", "postgres", "--database", "shop", "--no-globals"])
        .env("LIFEBOAT_PASSWORD", "not the password")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("wrong password"), "{err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

#[test]
fn mysql_backup_restore_as_new_and_replace() {
    let db = MariaDbServer::start().unwrap();
    db.sql(
        None,
        "CREATE DATABASE app; USE app;
         CREATE TABLE t(id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO t VALUES (1,'a'),(2,'b'),(3,'it''s');",
    );
    let env = db.env().into_iter().map(|(k, v)| (k, v.into())).collect();
    let repo = Repo::new(env);
    let out = repo.json(&["backup", "mysql", "--database", "app"]);
    let snap = out["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(out["dump"]["databases"][0]["tables"][0]["rows"], 3);

    repo.ok(&["restore", &snap, "--to-mysql", "--as", "app2"]);
    assert_eq!(
        db.sql(Some("app2"), "SELECT GROUP_CONCAT(v ORDER BY id) FROM t"),
        "a,b,it's"
    );

    db.sql(Some("app"), "DELETE FROM t WHERE id = 2");
    let rep = repo.json(&["restore", &snap, "--to-mysql", "--replace", "app"]);
    assert!(rep["safety_snapshot_id"].is_string(), "{rep}");
    assert_eq!(db.sql(Some("app"), "SELECT COUNT(*) FROM t"), "3");
    let err = repo.fail(&[
        "restore",
        &snap,
        "--to-mysql",
        "--database",
        "app",
        "--table",
        "t",
    ]);
    assert!(err.contains("not supported"), "{err}");

    // Point in time by binlog replay from the position a dump recorded: rows
    // written before T come back, rows after T do not.
    db.sql(Some("app"), "INSERT INTO t VALUES (10, 'in-dump')");
    let out = repo.json(&["backup", "mysql", "--database", "app"]);
    let snap2 = out["snapshot_id"].as_str().unwrap().to_string();
    db.sql(Some("app"), "INSERT INTO t VALUES (15, 'before')");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = db.sql(None, "SELECT NOW()");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    db.sql(
        Some("app"),
        "INSERT INTO t VALUES (20, 'after'); DELETE FROM t WHERE id = 1",
    );
    let ids = |name: &str| db.sql(Some(name), "SELECT GROUP_CONCAT(id ORDER BY id) FROM t");
    repo.ok(&[
        "restore",
        &snap2,
        "--to-mysql",
        "--as",
        "app_t",
        "--binlog-until",
        &t,
    ]);
    assert_eq!(ids("app_t"), "1,2,3,10,15");
    repo.ok(&[
        "restore",
        &snap2,
        "--to-mysql",
        "--as",
        "app_end",
        "--binlog-until",
        "end",
    ]);
    assert_eq!(ids("app_end"), "2,3,10,15,20");
    assert_eq!(ids("app"), "2,3,10,15,20");
}

#[test]
fn redis_backup_restores_into_a_data_dir_that_a_new_server_loads() {
    let redis = RedisServer::start().unwrap();
    for i in 0..200 {
        redis
            .cli(&["SET", &format!("k{i}"), &format!("v{i}")])
            .unwrap();
    }
    let repo = Repo::new(vec![("REDIS_URL".into(), redis.url().into())]);
    let out = repo.json(&["backup", "redis"]);
    let snap = out["snapshot_id"].as_str().unwrap().to_string();
    let dir = repo.path().join("redis-data");
    let rep = repo.json(&["restore", &snap, "--to-redis-dir", dir.to_str().unwrap()]);
    assert!(
        rep["report"]["verified"].to_string().contains("200"),
        "{rep}"
    );
    let fresh = RedisServer::start_with(RedisOptions {
        data_dir: Some(dir.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(fresh.dbsize().unwrap(), 200);
    assert_eq!(fresh.cli(&["GET", "k7"]).unwrap(), "v7");
    // A directory that already holds data is refused.
    let err = repo.fail(&["restore", &snap, "--to-redis-dir", dir.to_str().unwrap()]);
    assert!(err.contains("dump.rdb"), "{err}");
}

#[test]
fn sqlite_backup_restore_new_file_and_replace_with_safety_copy() {
    let repo = Repo::new(Vec::new());
    let db = repo.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < 500)
         INSERT INTO t SELECT x, 'v' || x FROM g;",
    )
    .unwrap();
    let out = repo.json(&["backup", "sqlite", db.to_str().unwrap()]);
    let snap = out["snapshot_id"].as_str().unwrap().to_string();
    let copy = repo.path().join("copy.db");
    repo.ok(&["restore", &snap, "--to-sqlite", copy.to_str().unwrap()]);
    let count = |p: &PathBuf| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&copy), 500);
    // New file only, unless --replace-file.
    let err = repo.fail(&["restore", &snap, "--to-sqlite", copy.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    conn.execute("DELETE FROM t WHERE id > 10", []).unwrap();
    drop(conn);
    let rep = repo.json(&[
        "restore",
        &snap,
        "--to-sqlite",
        db.to_str().unwrap(),
        "--replace-file",
    ]);
    assert_eq!(count(&db), 500);
    let safety = rep["safety_snapshot_id"].as_str().unwrap().to_string();
    let before = repo.path().join("before.db");
    repo.ok(&["restore", &safety, "--to-sqlite", before.to_str().unwrap()]);
    assert_eq!(count(&before), 10);
}

#[test]
fn command_source_and_sink_round_trip_with_a_real_tool() {
    let repo = Repo::new(Vec::new());
    let src = repo.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), "alpha").unwrap();
    fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    let out = repo.json(&[
        "backup",
        "command",
        "--name",
        "files.tar",
        "--",
        "tar",
        "-C",
        src.to_str().unwrap(),
        "-cf",
        "-",
        ".",
    ]);
    let snap = out["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(out["paths"][0], "command:files.tar");
    let dst = repo.path().join("dst");
    fs::create_dir(&dst).unwrap();
    repo.ok(&[
        "restore",
        &snap,
        "--to-command",
        "--",
        "tar",
        "-C",
        dst.to_str().unwrap(),
        "-xf",
        "-",
    ]);
    assert_eq!(fs::read(dst.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(dst.join("sub/b.bin")).unwrap(), vec![7u8; 300_000]);
    // A failing command fails the backup and stores no snapshot.
    let before = repo.json(&["snapshots"]).as_array().unwrap().len();
    let err = repo.fail(&[
        "backup",
        "command",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]);
    assert!(err.contains("sh"), "{err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), before);
}
