//! WebDAV: WsgiDAV (PyPI `wsgidav` with the `cheroot` server) on a free
//! loopback port, serving a temp dir anonymously.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{free_port, missing, stop, wait_for_port, workspace_root};

/// A running WsgiDAV server; stopped when dropped.
#[derive(Debug)]
pub struct DavServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn wsgidav_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIFEBOAT_WSGIDAV") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("LIFEBOAT_DAV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-dav"));
    let p = venv.join("bin/wsgidav");
    p.exists().then_some(p)
}

/// Start WsgiDAV (about two seconds), or `None` if it is not installed and
/// this is not CI.
pub fn webdav() -> Option<DavServer> {
    let Some(program) = wsgidav_program() else {
        return missing("wsgidav (LIFEBOAT_DAV_VENV)");
    };
    let dir = tempfile::Builder::new()
        .prefix("lbt-dav.")
        .tempdir()
        .expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("dav root");
    let log = dir.path().join("wsgidav.log");
    let port = free_port();
    let mut child = Command::new(&program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--root")
        .arg(&root)
        .args(["--auth", "anonymous", "--no-config"])
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("log file"))
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    wait_for_port(port, &mut child, "wsgidav", &log);
    Some(DavServer { child, port, dir })
}

impl DavServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `webdav://127.0.0.1:PORT/<name>`
    pub fn repo_url(&self, name: &str) -> String {
        format!("webdav://127.0.0.1:{}/{name}", self.port)
    }

    /// The directory served (files appear under it as the server stores them).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
