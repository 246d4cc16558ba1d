//! Azure Blob Storage: Azurite (npm `azurite`, its `azurite-blob` server) on a
//! free loopback port, storing into a temp dir, with the well-known
//! development account `devstoreaccount1`.
//!
//! `scripts/test-deps.sh` installs Azurite into `$LIFEBOAT_AZURITE_DIR`
//! (default `~/.cache/lifeboat/azurite`, `npm install --prefix`). Override the
//! program with `LIFEBOAT_AZURITE_BLOB`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{missing, os_args, spawn_server, Spawned};

/// The development account every Azurite instance serves.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Its published key (documented by Microsoft; not a secret).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob server; stopped when dropped.
#[derive(Debug)]
pub struct AzuriteServer {
    server: Spawned,
}

fn azurite_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIFEBOAT_AZURITE_BLOB") {
        return Some(PathBuf::from(p));
    }
    let dir = std::env::var_os("LIFEBOAT_AZURITE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lifeboat/azurite"))
        })?;
    let p = dir.join("node_modules/.bin/azurite-blob");
    p.exists().then_some(p)
}

/// Point the Azure backend at the development account, once per process
/// (`AZURE_STORAGE_ACCOUNT` / `AZURE_STORAGE_KEY`, inherited by `lifeboat`
/// child processes); other Azure variables from outside are removed. The
/// endpoint differs per server: pass [`AzuriteServer::endpoint`] as the
/// backend's `endpoint` option.
pub fn set_azurite_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AZURE_STORAGE_ACCOUNT", AZURITE_ACCOUNT);
        std::env::set_var("AZURE_STORAGE_KEY", AZURITE_KEY);
        for k in [
            "AZURE_STORAGE_ACCOUNT_NAME",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_CONNECTION_STRING",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_STORAGE_ENDPOINT",
        ] {
            std::env::remove_var(k);
        }
    });
}

/// Start Azurite's blob service (a second or two), or `None` if it is not
/// installed and this is not CI. Also sets the development account's
/// environment ([`set_azurite_env`]).
pub fn azurite() -> Option<AzuriteServer> {
    let Some(program) = azurite_program() else {
        return missing("azurite-blob (LIFEBOAT_AZURITE_DIR)");
    };
    set_azurite_env();
    let server = spawn_server(&program, "azurite", |port, dir| {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("azurite data dir");
        os_args([
            &"--blobHost",
            &"127.0.0.1",
            &"--blobPort",
            &port.to_string(),
            &"--location",
            &data,
            &"--silent",
            &"--skipApiVersionCheck",
        ])
    });
    Some(AzuriteServer { server })
}

impl AzuriteServer {
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1` (path-style, as Azurite wants).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port())
    }

    /// Create a container (idempotent), signed with the development key
    /// (Shared Key authorization).
    pub fn create_container(&self, container: &str) {
        let status = self
            .signed_put_container(container)
            .unwrap_or_else(|e| panic!("create container {container}: {e}"));
        assert!(
            status == 201 || status == 409,
            "create container {container}: HTTP {status}"
        );
    }

    /// Create `container` and return the repository URL
    /// `azure://container/prefix` (pass [`Self::endpoint`] as `endpoint`).
    pub fn repo_url(&self, container: &str, prefix: &str) -> String {
        self.create_container(container);
        format!("azure://{container}/{prefix}")
    }

    fn signed_put_container(&self, container: &str) -> std::io::Result<u16> {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let path = format!("/{AZURITE_ACCOUNT}/{container}");
        // Shared Key string-to-sign: verb, eleven standard headers (all empty
        // here), canonicalized x-ms-* headers, canonicalized resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{AZURITE_ACCOUNT}{path}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .expect("the development key is base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut s = TcpStream::connect(("127.0.0.1", self.port()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "PUT {path}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            port = self.port()
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
