//! A throwaway Redis server on a free port with `--save ''` (no automatic RDB),
//! `--repl-diskless-sync-delay 0` (so `redis-cli --rdb` does not wait 5 s) and the DEBUG
//! command enabled for local clients. Stopped with SIGTERM on drop (no save).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pg::{free_port, log_tail, short_temp_dir, stop_child, wait_until, StopSignal};

/// Options for [`RedisServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass` for the default user.
    pub password: Option<String>,
    /// Start on this existing data directory (its `dump.rdb` is loaded) instead of a new one.
    pub data_dir: Option<PathBuf>,
}

/// A running throwaway Redis server.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start an empty server with default options.
    ///
    /// # Errors
    /// Spawn failure or the server not answering PING within 30 s.
    pub fn start() -> io::Result<Self> {
        Self::start_with(RedisOptions::default())
    }

    /// Start a server with `opts`; waits until PING answers and loading is done.
    ///
    /// # Errors
    /// Spawn failure or the server not ready within 30 s (with the log's tail).
    pub fn start_with(opts: RedisOptions) -> io::Result<Self> {
        let dir = short_temp_dir()?;
        let data_dir = match &opts.data_dir {
            Some(d) => d.clone(),
            None => {
                let d = dir.path().join("data");
                std::fs::create_dir(&d)?;
                d
            }
        };
        let port = free_port()?;
        let log = dir.path().join("redis.log");
        // The password goes through a config file in the private temp dir, never argv.
        let mut conf = String::new();
        if let Some(pw) = &opts.password {
            conf.push_str(&format!("requirepass \"{}\"\n", pw.replace('"', "\\\"")));
        }
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("redis-server")
            .arg(&conf_path)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&data_dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--enable-debug-command", "local"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = RedisServer {
            child,
            port,
            data_dir,
            password: opts.password,
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "redis-server exited early: {status}"
                )));
            }
            match server.cli(&["info", "persistence"]) {
                Ok(out) => Ok(out.contains("loading:0")),
                Err(_) => Ok(false),
            }
        });
        if let Err(e) = ready {
            return Err(io::Error::other(format!(
                "{e}; log:\n{}",
                log_tail(&log, 4000)
            )));
        }
        Ok(server)
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`dump.rdb` lives here).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `redis://127.0.0.1:PORT` (no password in it even when one is set; use
    /// [`password`](Self::password)).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's private temp directory (config and log live here).
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The password, if started with one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Run `redis-cli` against this server (password via `REDISCLI_AUTH`); returns trimmed
    /// stdout.
    ///
    /// # Errors
    /// Non-zero exit or an `ERR` reply.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null());
        if let Some(pw) = &self.password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = cmd.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        if !out.status.success() || stdout.starts_with("ERR") || stdout.starts_with("NOAUTH") {
            return Err(io::Error::other(format!(
                "redis-cli {args:?} failed ({}): {stdout} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            )));
        }
        Ok(stdout)
    }

    /// `DBSIZE` of database 0.
    ///
    /// # Errors
    /// As [`cli`](Self::cli), or a non-numeric reply.
    pub fn dbsize(&self) -> io::Result<u64> {
        self.cli(&["dbsize"])?
            .trim()
            .parse()
            .map_err(io::Error::other)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop_child(&mut self.child, StopSignal::Term);
    }
}
