//! WebDAV: WsgiDAV (PyPI `wsgidav` with the `cheroot` server) on a free
//! loopback port, serving a temp dir anonymously.

use std::path::PathBuf;

use crate::{missing, os_args, spawn_server, workspace_root, Spawned};

/// A running WsgiDAV server; stopped when dropped.
#[derive(Debug)]
pub struct DavServer {
    server: Spawned,
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
    let server = spawn_server(&program, "wsgidav", |port, dir| {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("dav root");
        os_args([
            &"--host",
            &"127.0.0.1",
            &"--port",
            &port.to_string(),
            &"--root",
            &root,
            &"--auth",
            &"anonymous",
            &"--no-config",
        ])
    });
    Some(DavServer { server })
}

impl DavServer {
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `webdav://127.0.0.1:PORT/<name>`
    pub fn repo_url(&self, name: &str) -> String {
        format!("webdav://127.0.0.1:{}/{name}", self.port())
    }

    /// The directory served (files appear under it as the server stores them).
    pub fn root(&self) -> PathBuf {
        self.server.dir.path().join("root")
    }
}
