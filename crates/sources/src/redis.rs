//! Redis backups: an RDB snapshot pulled over the replication protocol with
//! `redis-cli --rdb -` (works against remote servers, needs no access to the server's disk),
//! with key counts recorded; restore writes `dump.rdb` into a data directory for a new
//! instance and verifies the key count by starting a throwaway `redis-server` on it.
//!
//! # Connection settings
//! `REDIS_URL` (`redis://[user:password@]host:port`, `rediss://` for TLS) or
//! [`RedisConnection`] fields; the password reaches `redis-cli` only through `REDISCLI_AUTH`
//! in its environment (`REDISCLI_AUTH` set in our own environment is honoured too).
//!
//! # Key counts
//! `INFO keyspace` is read just before and just after the transfer; the RDB is a fork-time
//! snapshot between the two. Both are recorded; verification accepts a restored count between
//! the smaller count minus the keys with an expiry (they may have expired) and the larger.
//!
//! Note: with Redis 7's default `repl-diskless-sync-delay 5` the server waits 5 s before
//! streaming the RDB to a new replica; `CONFIG SET repl-diskless-sync-delay 0` avoids it.

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{self, ChildStream};
use crate::stream::{self, Observer, Tap};
use crate::{
    ConnUrl, DatabaseInfo, DumpMetadata, DumpSource, Engine, Error, RestorePlan, RestoreReport,
    Result, Secret, StreamInfo, StreamSink, StreamSource,
};

/// Name of the RDB stream.
pub const RDB_STREAM: &str = "dump.rdb";

/// How to reach a Redis server.
#[derive(Debug, Clone)]
pub struct RedisConnection {
    /// Host (default 127.0.0.1).
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// ACL user.
    pub user: Option<String>,
    /// Password (`REDISCLI_AUTH` in redis-cli's environment only).
    pub password: Option<Secret>,
    /// Use TLS (`rediss://`).
    pub tls: bool,
    /// `redis-cli` program.
    pub cli_program: String,
}

impl Default for RedisConnection {
    fn default() -> Self {
        RedisConnection {
            host: "127.0.0.1".into(),
            port: 6379,
            user: None,
            password: None,
            tls: false,
            cli_program: "redis-cli".into(),
        }
    }
}

impl RedisConnection {
    /// From `REDIS_URL` (default `redis://127.0.0.1:6379`) and `REDISCLI_AUTH`.
    ///
    /// # Errors
    /// A malformed `REDIS_URL`.
    pub fn from_env() -> Result<Self> {
        let mut c = match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self::from_url(&url)?,
            _ => Self::default(),
        };
        if c.password.is_none() {
            c.password = std::env::var("REDISCLI_AUTH").ok().map(Secret::new);
        }
        Ok(c)
    }

    /// Parse `redis://[user:password@]host[:port][/db]` or `rediss://...`.
    ///
    /// # Errors
    /// [`Error::Config`] (the URL is never echoed).
    pub fn from_url(url: &str) -> Result<Self> {
        let u = ConnUrl::parse(url)?;
        let tls = match u.scheme.as_str() {
            "redis" => false,
            "rediss" => true,
            other => return Err(Error::Config(format!("not a Redis URL (scheme {other})"))),
        };
        Ok(RedisConnection {
            host: u.host.unwrap_or_else(|| "127.0.0.1".into()),
            port: u.port.unwrap_or(6379),
            user: u.user,
            password: u.password,
            tls,
            ..Default::default()
        })
    }

    fn secrets(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|p| p.expose().to_string())
            .collect()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cli_program);
        cmd.args(["-h", &self.host, "-p", &self.port.to_string()]);
        if let Some(u) = &self.user {
            cmd.args(["--user", u]);
        }
        if self.tls {
            cmd.arg("--tls");
        }
        match &self.password {
            Some(p) => cmd.env("REDISCLI_AUTH", p.expose()),
            None => cmd.env_remove("REDISCLI_AUTH"),
        };
        cmd
    }

    /// Run a redis-cli command; fails on `ERR`/`NOAUTH`/`WRONGPASS` replies too.
    ///
    /// # Errors
    /// [`Error::Command`].
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(args);
        let out = process::output(cmd, &self.secrets())?;
        if ["ERR", "NOAUTH", "WRONGPASS", "NOPERM"]
            .iter()
            .any(|p| out.starts_with(p))
        {
            return Err(Error::Command {
                program: self.cli_program.clone(),
                status: "error reply".into(),
                stderr: process::redact(&out, &self.secrets()),
            });
        }
        Ok(out)
    }

    /// `INFO keyspace` as (db name, keys, expires).
    ///
    /// # Errors
    /// As [`cli`](Self::cli).
    pub fn keyspace(&self) -> Result<Vec<(String, u64, u64)>> {
        Ok(parse_keyspace(&self.cli(&["info", "keyspace"])?))
    }
}

/// Parse `INFO keyspace` lines like `db0:keys=3,expires=1,avg_ttl=0`.
fn parse_keyspace(info: &str) -> Vec<(String, u64, u64)> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().split_once(':')?;
            if !db.starts_with("db") {
                return None;
            }
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
            };
            Some((
                db.to_string(),
                field("keys")?,
                field("expires").unwrap_or(0),
            ))
        })
        .collect()
}

fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{key}:"))
            .map(str::to_string)
    })
}

/// Checks the first bytes of the stream are the RDB magic.
#[derive(Default)]
struct MagicObserver {
    head: Vec<u8>,
}

impl Observer for MagicObserver {
    fn observe(&mut self, chunk: &[u8]) {
        let need = 9usize.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..need.min(chunk.len())]);
    }
}

/// A Redis RDB source.
#[derive(Debug, Clone)]
pub struct RedisSource {
    conn: RedisConnection,
}

impl RedisSource {
    /// Dump the server at `conn`.
    pub fn new(conn: RedisConnection) -> Self {
        RedisSource { conn }
    }
}

impl DumpSource for RedisSource {
    fn dump(&mut self, sink: &mut dyn StreamSink) -> Result<DumpMetadata> {
        let mut meta = DumpMetadata::new(Engine::Redis);
        let info = self.conn.cli(&["info", "server"])?;
        meta.server_version = info_field(&info, "redis_version");
        let mut v = Command::new(&self.conn.cli_program);
        v.arg("--version");
        meta.client_version = Some(process::output(v, &[])?);
        let before = self.conn.keyspace()?;
        let mut cmd = self.conn.command();
        cmd.args(["--rdb", "-"]);
        let child = ChildStream::spawn(cmd, self.conn.secrets())?;
        let mut magic = MagicObserver::default();
        let bytes = stream::add(sink, RDB_STREAM, &mut Tap::new(child, &mut magic))?;
        if !magic.head.starts_with(b"REDIS") {
            return Err(Error::Format(
                "redis-cli --rdb did not produce an RDB file".into(),
            ));
        }
        let after = self.conn.keyspace()?;
        let mut names: Vec<&String> = before
            .iter()
            .chain(after.iter())
            .map(|(d, _, _)| d)
            .collect();
        names.sort_by_key(|d| d[2..].parse::<u32>().unwrap_or(u32::MAX));
        names.dedup();
        let find = |v: &[(String, u64, u64)], d: &str| {
            v.iter().find(|(n, _, _)| n == d).map(|x| (x.1, x.2))
        };
        for d in names {
            let mut db = DatabaseInfo::new(d.clone());
            let (kb, eb) = find(&before, d).unwrap_or((0, 0));
            let (ka, ea) = find(&after, d).unwrap_or((0, 0));
            db.keys = Some(kb);
            db.volatile_keys = Some(eb.max(ea));
            if ka != kb {
                meta.extra.insert(format!("{d}_keys_after"), ka.into());
            }
            meta.databases.push(db);
        }
        meta.streams.push(StreamInfo {
            name: RDB_STREAM.into(),
            kind: "rdb".into(),
            database: None,
            bytes,
        });
        meta.finished_at = crate::meta::now();
        stream::finish(sink, &meta)?;
        Ok(meta)
    }
}

/// Options for [`restore_to_data_dir`].
#[derive(Debug, Clone)]
pub struct RedisRestoreOptions {
    /// Start a throwaway `redis-server` on the data directory and compare key counts.
    pub verify: bool,
    /// `redis-server` program for the verification.
    pub server_program: String,
    /// `redis-cli` program for the verification.
    pub cli_program: String,
}

impl Default for RedisRestoreOptions {
    fn default() -> Self {
        RedisRestoreOptions {
            verify: true,
            server_program: "redis-server".into(),
            cli_program: "redis-cli".into(),
        }
    }
}

/// What [`restore_to_data_dir`] would do.
///
/// # Errors
/// [`Error::Refused`] when the directory already holds Redis data.
pub fn plan_data_dir(
    meta: &DumpMetadata,
    dir: &Path,
    opts: &RedisRestoreOptions,
) -> Result<RestorePlan> {
    if meta.engine != Engine::Redis {
        return Err(Error::Config(format!(
            "not a Redis dump ({:?})",
            meta.engine
        )));
    }
    for existing in ["dump.rdb", "appendonly.aof", "appendonlydir"] {
        if dir.join(existing).exists() {
            return Err(Error::Refused(format!(
                "{} already holds {existing}; restore into an empty directory",
                dir.display()
            )));
        }
    }
    let target = dir.join("dump.rdb");
    let mut plan = RestorePlan {
        engine: "redis".into(),
        ..Default::default()
    };
    plan.creates.push(target.display().to_string());
    plan.steps
        .push(format!("write stream {RDB_STREAM} to {}", target.display()));
    if opts.verify {
        let keys: u64 = meta.databases.iter().filter_map(|d| d.keys).sum();
        plan.steps.push(format!(
            "start a throwaway redis-server on 127.0.0.1 with --dir {} and compare its key count with {keys}",
            dir.display()
        ));
    }
    plan.notes.push(format!(
        "dump from Redis {}",
        meta.server_version.as_deref().unwrap_or("?")
    ));
    Ok(plan)
}

/// Write the RDB into `dir` (created if missing) as `dump.rdb` for a new instance started
/// with `--dir DIR --dbfilename dump.rdb --appendonly no`, then optionally verify it.
///
/// # Errors
/// [`Error::Refused`] when `dir` already holds Redis data; [`Error::Format`] when the stream
/// is not an RDB; [`Error::Verification`] when the key count does not match.
pub fn restore_to_data_dir(
    meta: &DumpMetadata,
    source: &mut dyn StreamSource,
    dir: &Path,
    opts: &RedisRestoreOptions,
) -> Result<RestoreReport> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let plan = plan_data_dir(meta, dir, opts)?;
    let target = dir.join("dump.rdb");
    let partial = dir.join("dump.rdb.lifeboat-partial");
    let mut write = || -> io::Result<bool> {
        let mut input = source.open_stream(RDB_STREAM)?;
        let mut f = fs::File::create(&partial)?;
        let mut magic = MagicObserver::default();
        io::copy(&mut Tap::new(&mut input, &mut magic), &mut f)?;
        f.flush()?;
        f.sync_all()?;
        Ok(magic.head.starts_with(b"REDIS"))
    };
    match write() {
        Ok(true) => {}
        Ok(false) => {
            let _ = fs::remove_file(&partial);
            return Err(Error::Format(format!(
                "stream {RDB_STREAM} is not an RDB file"
            )));
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(Error::io(format!("writing {}", partial.display()), e));
        }
    }
    fs::rename(&partial, &target)
        .map_err(|e| Error::io(format!("renaming to {}", target.display()), e))?;
    let mut verified = Vec::new();
    if opts.verify {
        let got = count_keys_by_starting(dir, opts)?;
        let mut failures = Vec::new();
        for db in &meta.databases {
            let recorded = db.keys.unwrap_or(0);
            let after = meta
                .extra
                .get(&format!("{}_keys_after", db.name))
                .and_then(|v| v.as_u64())
                .unwrap_or(recorded);
            let hi = recorded.max(after);
            let lo = recorded
                .min(after)
                .saturating_sub(db.volatile_keys.unwrap_or(0));
            let n = got
                .iter()
                .find(|(d, _)| *d == db.name)
                .map_or(0, |(_, n)| *n);
            if n < lo || n > hi {
                failures.push(format!(
                    "{} has {n} keys, the backup recorded {recorded}",
                    db.name
                ));
            } else {
                verified.push((db.name.clone(), n));
            }
        }
        for (d, n) in &got {
            if meta.database(d).is_none() {
                failures.push(format!("{d} has {n} keys, the backup recorded none"));
            }
        }
        if !failures.is_empty() {
            return Err(Error::Verification(failures));
        }
    }
    Ok(RestoreReport {
        plan,
        restored_to: target.display().to_string(),
        verified,
        check_passed: None,
        safety_dump: None,
        previous_kept_as: None,
        warnings: Vec::new(),
    })
}

/// Start `redis-server` on `dir` (loopback, free port, no persistence), wait for the RDB to
/// load, read `INFO keyspace`, shut it down without saving.
fn count_keys_by_starting(dir: &Path, opts: &RedisRestoreOptions) -> Result<Vec<(String, u64)>> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("finding a free port", e))?
        .port();
    let dir_abs: PathBuf = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    let mut child = Command::new(&opts.server_program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&dir_abs)
        .args([
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .args(["--logfile", "", "--protected-mode", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", opts.server_program), e))?;
    let conn = RedisConnection {
        port,
        cli_program: opts.cli_program.clone(),
        ..Default::default()
    };
    let start = Instant::now();
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(Error::Verification(vec![format!(
                "redis-server exited ({status}) while loading the restored RDB"
            )]));
        }
        match conn.cli(&["info", "persistence"]) {
            Ok(info) if info.contains("loading:0") => {
                break conn
                    .keyspace()
                    .map(|ks| ks.into_iter().map(|(d, k, _)| (d, k)).collect());
            }
            _ if start.elapsed() > Duration::from_secs(120) => {
                break Err(Error::Verification(vec![
                    "redis-server did not finish loading in 120 s".into(),
                ]))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = conn.cli(&["shutdown", "nosave"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_parsing() {
        let info =
            "# Keyspace\r\ndb0:keys=12,expires=3,avg_ttl=100\r\ndb5:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            parse_keyspace(info),
            vec![("db0".into(), 12, 3), ("db5".into(), 1, 0)]
        );
    }

    #[test]
    fn url_password_goes_to_env() {
        let c = RedisConnection::from_url("rediss://app:s%20cret@cache:6380/0").unwrap();
        assert!(c.tls && c.port == 6380 && c.host == "cache");
        let cmd = c.command();
        assert!(cmd
            .get_args()
            .all(|a| !a.to_string_lossy().contains("s cret")));
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "REDISCLI_AUTH" && v == Some("s cret".as_ref())));
    }
}
