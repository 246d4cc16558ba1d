//! PostgreSQL physical backups and point-in-time recovery through the real `lifeboat` binary:
//! a throwaway PostgreSQL 15 (testkit) archives with `lifeboat pg wal-push %p`, base backups
//! come from `lifeboat pg backup`, restores from `lifeboat restore --to-pgdata`, and the
//! restored data directories are started for real and queried.
//!
//! The server runs as the `postgres` user when the tests run as root, so the repository,
//! the password and key files and a copy of the binary live in a directory it owns, and every
//! `lifeboat` command runs as that user too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use lifeboat_testkit::pg::{self, PgOptions, PgServer};

const PW: &str = "pitr test password";

struct Pitr {
    dir: tempfile::TempDir,
    run_as: Option<(u32, u32)>,
}

impl Pitr {
    fn new() -> Self {
        let dir = pg::short_temp_dir().unwrap();
        let run_as = if pg::is_root() {
            pg::lookup_user("postgres")
        } else {
            None
        };
        let p = Pitr { dir, run_as };
        fs::set_permissions(p.path(), fs::Permissions::from_mode(0o700)).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_lifeboat"), p.bin()).unwrap();
        fs::set_permissions(p.bin(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(p.path().join("password"), format!("{PW}\n")).unwrap();
        fs::set_permissions(p.path().join("password"), fs::Permissions::from_mode(0o600)).unwrap();
        p.chown(p.path());
        p.chown(&p.path().join("password"));
        p.ok(&["init"]);
        // The WAL commands use a generated key: cheap to open once per segment.
        p.ok(&["key", "add", "--generate", p.key().to_str().unwrap()]);
        p
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn bin(&self) -> PathBuf {
        self.path().join("lifeboat")
    }
    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }
    fn key(&self) -> PathBuf {
        self.path().join("wal.key")
    }
    fn chown(&self, p: &Path) {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }
    fn archive_command(&self) -> String {
        format!(
            "{} --repo {} --password-file {} pg wal-push %p",
            self.bin().display(),
            self.repo().display(),
            self.key().display()
        )
    }
    /// `lifeboat` as the cluster's user, with the main password file, reaching `server`.
    fn cmd(&self, server: Option<&PgServer>, args: &[&str]) -> Command {
        self.cmd_pw(&self.path().join("password"), server, args)
    }
    fn cmd_pw(&self, password_file: &Path, server: Option<&PgServer>, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFEBOAT_") || k.starts_with("PG") {
                c.env_remove(k);
            }
        }
        c.env("LIFEBOAT_INSECURE_TEST_KDF", "1")
            .env("TZ", "UTC")
            .current_dir(self.path())
            .arg("--repo")
            .arg(self.repo())
            .arg("--password-file")
            .arg(password_file)
            .args(args);
        if let Some(s) = server {
            let path = format!(
                "{}:{}",
                s.bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            c.envs(s.env()).env("PATH", path);
        }
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }
    fn run(&self, server: Option<&PgServer>, args: &[&str]) -> Output {
        output(self.cmd(server, args))
    }
    fn ok_with(&self, server: Option<&PgServer>, args: &[&str]) -> String {
        let o = self.run(server, args);
        assert!(
            o.status.success(),
            "lifeboat {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(None, args)
    }
    fn json(&self, server: Option<&PgServer>, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok_with(server, &a)).unwrap()
    }

    fn server(&self) -> PgServer {
        PgServer::start(PgOptions {
            archive_command: Some(self.archive_command()),
            ..PgOptions::default()
        })
        .unwrap()
    }

    /// Restore into a new directory with `args`, start PostgreSQL on it (not archiving),
    /// wait until recovery ended and return the server.
    fn restore_and_start(&self, name: &str, args: &[&str]) -> PgServer {
        let dir = self.path().join(name);
        let dir_s = dir.to_str().unwrap();
        let mut a = vec!["restore", "latest", "--to-pgdata", dir_s];
        a.extend_from_slice(args);
        let out = self.json(None, &a);
        assert_eq!(out["pgdata"], dir_s, "{out}");
        let conf = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(conf.contains("pg wal-fetch"), "{conf}");
        assert!(
            !conf.contains(PW),
            "the password must never be written: {conf}"
        );
        assert!(dir.join("recovery.signal").exists());
        let mut s = PgServer::start_existing(&dir, &["archive_mode=off"]).unwrap();
        s.wait_promoted(Duration::from_secs(120)).unwrap();
        s
    }
}

/// Run a command. The binary was just copied: while another test thread forks, the child may
/// briefly hold the copy's write descriptor, and exec fails with ETXTBSY; try again then.
fn output(mut c: Command) -> Output {
    for _ in 0..100 {
        match c.output() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
            r => return r.unwrap(),
        }
    }
    panic!("{c:?}: executable stayed busy")
}

/// Switch to a new WAL segment and wait until it is archived. A WAL record is written first:
/// `pg_switch_wal` after no activity since the last switch does nothing and returns a position
/// in the current segment, which is not archived yet (PostgreSQL 18 writes no record of its
/// own between two calls in a row).
fn switch_and_wait(server: &PgServer) -> String {
    server.sql(
        "postgres",
        "select pg_logical_emit_message(false, 'lifeboat-test', 'switch')",
    );
    let seg = server.sql("postgres", "select pg_walfile_name(pg_switch_wal())");
    pg::wait_until(Duration::from_secs(60), || {
        let last = server.sql(
            "postgres",
            "select coalesce(last_archived_wal, '') from pg_stat_archiver",
        );
        Ok(last.as_str() >= seg.as_str())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: segment {seg} not archived; server log:\n{}",
            server.log()
        )
    });
    seg
}

fn insert(server: &PgServer, from: u32, to: u32) {
    server.sql(
        "app",
        &format!("insert into t select g, 'row ' || g from generate_series({from}, {to}) g"),
    );
}

fn rows(server: &PgServer) -> String {
    server.sql("app", "select count(*) || ':' || max(id) from t")
}

#[test]
fn pitr_restores_to_time_lsn_restore_point_and_latest() {
    let env = Pitr::new();
    let server = env.server();
    server.sql("postgres", "create database app");
    server.sql("app", "create table t(id int primary key, note text)");
    insert(&server, 1, 100);

    let backup = env.json(
        Some(&server),
        &["backup", "postgres", "--physical", "--fast"],
    );
    let meta = &backup["backup"];
    let sysid = meta["system_identifier"].as_str().unwrap().to_string();
    assert_eq!(
        sysid,
        server.sql(
            "postgres",
            "select system_identifier from pg_control_system()"
        )
    );
    assert_eq!(meta["timeline"], 1);
    assert!(meta["bytes"].as_u64().unwrap() > 1_000_000, "{meta}");
    // The backup waited for its last segment: it is archived now.
    assert!(env
        .repo()
        .join(format!(
            "wal/{sysid}/00000001/{}",
            meta["stop_wal"].as_str().unwrap()
        ))
        .exists());

    insert(&server, 101, 200);
    switch_and_wait(&server);
    let t = server.sql(
        "postgres",
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    insert(&server, 201, 300);
    switch_and_wait(&server);
    server.sql("postgres", "select pg_create_restore_point('before-400')");
    insert(&server, 301, 400);
    // The insert position (the write position lags with synchronous_commit = off).
    let lsn = server.sql("postgres", "select pg_current_wal_insert_lsn()");
    insert(&server, 401, 500);
    switch_and_wait(&server);
    assert_eq!(rows(&server), "500:500");

    let at = env.restore_and_start("at", &["--at", &t]);
    assert_eq!(rows(&at), "200:200", "--at {t}");
    drop(at);

    let rp = env.restore_and_start(
        "rp",
        &[
            "--restore-point",
            "before-400",
            "--wal-password-file",
            env.key().to_str().unwrap(),
        ],
    );
    assert_eq!(rows(&rp), "300:300");
    drop(rp);

    let by_lsn = env.restore_and_start("lsn", &["--lsn", &lsn]);
    assert_eq!(rows(&by_lsn), "400:400", "--lsn {lsn}");
    drop(by_lsn);

    let latest = env.restore_and_start("latest", &[]);
    assert_eq!(rows(&latest), "500:500");
    drop(latest);

    // A target before the only base backup has no base backup to start from.
    let o = env.run(
        None,
        &[
            "restore",
            "--to-pgdata",
            env.path().join("early").to_str().unwrap(),
            "--at",
            "2001-01-01 00:00:00",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no base backup"),
        "{o:?}"
    );

    // verify: one cluster, one timeline, no gap, the window starts at the backup's end.
    let v = env.json(None, &["pg", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let c = &v["clusters"][0];
    assert_eq!(c["system_identifier"], sysid.as_str());
    assert_eq!(c["gaps"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(c["windows"][0]["earliest_lsn"], meta["stop_lsn"], "{v}");
    assert_eq!(c["base_backups"][0]["wal_complete"], true, "{v}");

    // Deleting an archived segment in the middle shows up as a gap and a failure.
    let tl1 = env.repo().join(format!("wal/{sysid}/00000001"));
    let mut segs: Vec<String> = fs::read_dir(&tl1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{segs:?}");
    let victim = segs[segs.len() - 2].clone();
    fs::remove_file(tl1.join(&victim)).unwrap();
    let o = env.run(None, &["--json", "pg", "verify"]);
    assert!(!o.status.success(), "verify must fail with a gap");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gaps = v["clusters"][0]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{v}");
    assert_eq!(gaps[0]["from"], victim.as_str());
    assert_eq!(gaps[0]["to"], victim.as_str());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("problem"),
        "{o:?}"
    );
}

/// Archived WAL files of timeline 1, sorted.
fn wal_files(env: &Pitr, sysid: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(env.repo().join(format!("wal/{sysid}/00000001")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Position (log + segment) of a segment-based WAL file name, the timeline left out.
fn pos(name: &str) -> &str {
    &name[8..24]
}

#[test]
fn forget_keep_pitr_removes_wal_only_the_forgotten_base_needed() {
    let env = Pitr::new();
    let server = env.server();
    server.sql("postgres", "create database app");
    server.sql("app", "create table t(id int primary key, note text)");
    insert(&server, 1, 100);
    switch_and_wait(&server);
    switch_and_wait(&server);
    let b1 = env.json(
        Some(&server),
        &["backup", "postgres", "--physical", "--fast"],
    );
    insert(&server, 101, 200);
    switch_and_wait(&server);
    switch_and_wait(&server);
    let b2 = env.json(
        Some(&server),
        &["backup", "postgres", "--physical", "--fast"],
    );
    let sysid = b2["backup"]["system_identifier"].as_str().unwrap();
    let (start2, stop2) = (
        b2["backup"]["start_wal"].as_str().unwrap(),
        b2["backup"]["stop_wal"].as_str().unwrap(),
    );
    assert!(pos(b1["backup"]["stop_wal"].as_str().unwrap()) < pos(start2));
    insert(&server, 201, 300);
    switch_and_wait(&server);
    let before = wal_files(&env, sysid);
    assert!(
        before.iter().any(|n| n.len() == 24 && pos(n) < pos(start2)),
        "{before:?}"
    );

    // Without --keep-pitr forget leaves WAL alone, even when it forgets a base backup.
    let f = env.json(None, &["forget", "--keep-last", "1"]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(f["removed"][0], b1["snapshot_id"], "{f}");
    assert!(f["wal"].is_null(), "{f}");
    assert_eq!(wal_files(&env, sysid), before);

    // Dry run: lists what would go (everything before the kept base backup), deletes nothing.
    let d = env.json(
        None,
        &[
            "forget",
            "--keep-last",
            "1",
            "--keep-pitr",
            "1h",
            "--dry-run",
        ],
    );
    let c = &d["wal"]["clusters"][0];
    assert_eq!(c["system_identifier"], sysid, "{d}");
    assert_eq!(c["kept_bases"], 1, "{d}");
    assert_eq!(c["pitr_base"], b2["snapshot_id"], "{d}");
    let would: Vec<&str> = c["removable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = before
        .iter()
        .map(String::as_str)
        .filter(|n| !n.ends_with(".history") && pos(n) < pos(start2))
        .collect();
    assert_eq!(would, expected, "{d}");
    assert!(c["removable_bytes"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(c["removed"], 0, "{d}");
    assert_eq!(wal_files(&env, sysid), before);

    // For real.
    let r = env.json(None, &["forget", "--keep-last", "1", "--keep-pitr", "1h"]);
    assert_eq!(r["wal"]["clusters"][0]["removed"], expected.len(), "{r}");
    let after = wal_files(&env, sysid);
    let kept: Vec<&String> = before
        .iter()
        .filter(|n| !expected.contains(&n.as_str()))
        .collect();
    assert_eq!(after.iter().collect::<Vec<_>>(), kept);
    // Everything the kept base backup needs, and what came after it, is still there.
    assert!(after.iter().any(|n| n == start2), "{after:?}");
    assert!(after.iter().any(|n| n == stop2), "{after:?}");
    assert!(after
        .iter()
        .filter(|n| n.len() == 24)
        .all(|n| pos(n) >= pos(start2)));
    // Running it again finds nothing more to remove.
    let again = env.json(None, &["forget", "--keep-last", "1", "--keep-pitr", "1h"]);
    assert_eq!(again["wal"]["clusters"][0]["removed"], 0, "{again}");

    // verify: consistent, the window starts at the kept base backup.
    let v = env.json(None, &["pg", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["clusters"][0]["windows"][0]["earliest_lsn"], b2["backup"]["stop_lsn"],
        "{v}"
    );

    // And the kept base backup still recovers to the latest archived state.
    let latest = env.restore_and_start("latest", &[]);
    assert_eq!(rows(&latest), "300:300");
}

#[test]
fn wal_push_accepts_identical_repush_and_refuses_different_content() {
    let env = Pitr::new();
    let server = env.server();
    server.sql(
        "postgres",
        "create table x as select generate_series(1, 1000) id",
    );
    let seg = switch_and_wait(&server);
    let sysid = server.sql(
        "postgres",
        "select system_identifier from pg_control_system()",
    );

    // Read it back through wal-fetch (as the restore_command would).
    let copy = env.path().join("pg_wal_copy");
    fs::create_dir(&copy).unwrap();
    env.chown(&copy);
    let dest = copy.join(&seg);
    env.ok(&[
        "pg",
        "wal-fetch",
        "--system-id",
        &sysid,
        &seg,
        dest.to_str().unwrap(),
    ]);
    let original = fs::read(&dest).unwrap();
    assert_eq!(original.len(), 16 << 20);

    // Pushing the same content again succeeds (PostgreSQL retries after crashes).
    env.ok(&["pg", "wal-push", dest.to_str().unwrap()]);

    // Different content under the same name fails loudly and changes nothing.
    let mut changed = original.clone();
    changed[100_000] ^= 0xFF;
    fs::write(&dest, &changed).unwrap();
    let o = env.run(None, &["pg", "wal-push", dest.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("different content") && err.contains(&seg),
        "{err}"
    );
    fs::remove_file(&dest).unwrap();
    env.ok(&[
        "pg",
        "wal-fetch",
        "--system-id",
        &sysid,
        &seg,
        dest.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&dest).unwrap(), original);

    // A file whose header belongs to another segment is refused before anything is stored.
    let other = copy.join("000000010000000000000099");
    fs::write(&other, &original).unwrap();
    let o = env.run(None, &["pg", "wal-push", other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&seg), "{o:?}");
}

#[test]
fn wal_fetch_of_a_missing_file_exits_1_and_other_errors_exit_126() {
    let env = Pitr::new();
    let dest = env.path().join("RECOVERYXLOG");
    let fetch = |args: &[&str]| {
        let mut a = vec!["pg", "wal-fetch", "--system-id", "7"];
        a.extend_from_slice(args);
        env.run(None, &a)
    };
    let o = fetch(&["000000010000000000000001", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in the repository"));
    assert!(!dest.exists());
    let o = fetch(&["00000002.history", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");

    // Not a WAL file name: an error, not "missing".
    let o = fetch(&["pg_control", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(126), "{o:?}");
    // A wrong password is an error PostgreSQL must not take for the end of the archive.
    fs::write(env.path().join("bad"), "wrong\n").unwrap();
    env.chown(&env.path().join("bad"));
    let mut c = env.cmd_pw(
        &env.path().join("bad"),
        None,
        &[
            "pg",
            "wal-fetch",
            "--system-id",
            "7",
            "000000010000000000000001",
        ],
    );
    c.arg(&dest);
    let o = output(c);
    assert_eq!(o.status.code(), Some(126), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong password"),
        "{o:?}"
    );
}
