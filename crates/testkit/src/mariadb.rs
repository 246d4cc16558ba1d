//! A throwaway MariaDB server: `mariadb-install-db` + `mariadbd --no-defaults` (as root with
//! `--user=root`), unix socket and data in `/tmp/lbt-XXXXXX`, binary log on (ROW format),
//! stopped with SIGTERM (clean shutdown) on drop.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::pg::{free_port, log_tail, short_temp_dir, stop_child, wait_until, StopSignal};

/// A running throwaway MariaDB server; root has no password and works over socket and TCP.
#[derive(Debug)]
pub struct MariaDbServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn check(what: &str, out: Output) -> io::Result<String> {
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

impl MariaDbServer {
    /// Initialise a data directory and start `mariadbd` on a free port with the binary log
    /// (`binlog.NNNNNN`, server id 1) enabled.
    ///
    /// # Errors
    /// Failure of `mariadb-install-db`, the spawn, or the readiness wait (with the error log).
    pub fn start() -> io::Result<Self> {
        let dir = short_temp_dir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        let root = crate::pg::is_root();
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdin(Stdio::null());
        if root {
            install.arg("--user=root");
        }
        check("mariadb-install-db", install.output()?)?;
        let port = free_port()?;
        let p = dir.path();
        let mariadbd = ["/usr/sbin/mariadbd", "/usr/local/sbin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mariadbd");
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults");
        if root {
            cmd.arg("--user=root");
        }
        cmd.arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", p.join("tmp").display()))
            .arg(format!("--socket={}", p.join("mysqld.sock").display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", p.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", p.join("error.log").display()))
            .arg("--skip-name-resolve")
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .args([
                "--server-id=1",
                "--binlog-format=ROW",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn()?;
        let mut server = MariaDbServer { child, port, dir };
        let ready = wait_until(Duration::from_secs(60), || {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!("mariadbd exited early: {status}")));
            }
            Ok(server
                .sql_command(None, "select 1")
                .stderr(Stdio::null())
                .status()?
                .success())
        });
        if let Err(e) = ready {
            return Err(io::Error::other(format!(
                "{e}; error log:\n{}",
                log_tail(&server.dir.path().join("error.log"), 4000)
            )));
        }
        Ok(server)
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The data directory (binary logs live here as `binlog.NNNNNN`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's temp directory root.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Environment for clients: `MYSQL_UNIX_PORT` (socket), `MYSQL_TCP_PORT`, `MYSQL_HOST`
    /// is left unset so the socket is used, and `USER=root` (the client's default user).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "MYSQL_UNIX_PORT".into(),
                self.socket().display().to_string(),
            ),
            ("MYSQL_TCP_PORT".into(), self.port.to_string()),
            ("USER".into(), "root".into()),
        ]
    }

    fn sql_command(&self, db: Option<&str>, sql: &str) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(db) = db {
            cmd.arg(db);
        }
        cmd
    }

    /// Run SQL with the `mariadb` CLI (batch, no column names); returns trimmed stdout
    /// (tab-separated columns).
    ///
    /// # Errors
    /// The client's stderr when it fails.
    pub fn mysql(&self, db: Option<&str>, sql: &str) -> io::Result<String> {
        let out = self.sql_command(db, sql).stdout(Stdio::piped()).output()?;
        check("mariadb", out)
    }

    /// Like [`mysql`](Self::mysql) but panics on error.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.mysql(db, sql)
            .unwrap_or_else(|e| panic!("mariadb {db:?} -e {sql:?}: {e}"))
    }

    /// The error log so far.
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("error.log"), 64 * 1024)
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        stop_child(&mut self.child, StopSignal::Term);
    }
}
