//! Resolving raw arguments into what the libraries take: the repository
//! location, the password (never from argv), sizes and times.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use lifeboat_core::repository::{IndexedRepository, Repository};
use lifeboat_core::Error as CoreError;
use std::sync::OnceLock;

use lifeboat_storage::{BackendOptions, CacheVerify, DynStorage, LocalCache, RepoUrl};
use lifeboat_storage::{LayerOptions, StatsHandle, StorageStack, StorageStats};

use crate::args::GlobalArgs;

pub fn init_tracing(g: &GlobalArgs) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// The repository location given by `--repo` / `LIFEBOAT_REPO`.
pub fn repo_location(g: &GlobalArgs) -> Result<String> {
    g.repo
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| anyhow!("no repository given\nhint: pass --repo PATH or set LIFEBOAT_REPO (create one with `lifeboat init --repo PATH`)"))
}

static STATS: OnceLock<StatsHandle> = OnceLock::new();

/// Request counters of the storage opened by this process (for `--json` summaries).
pub fn storage_stats() -> Option<StorageStats> {
    STATS.get().map(StatsHandle::snapshot)
}

fn backend_options(g: &GlobalArgs) -> Result<BackendOptions> {
    let mut map = serde_json::Map::new();
    for o in &g.options {
        let (k, v) = o.split_once('=').ok_or_else(|| {
            anyhow!("option {o:?} is not KEY=VALUE\nhint: e.g. -o region=eu-west-1")
        })?;
        map.insert(
            k.trim().replace('-', "_"),
            serde_json::Value::String(v.trim().to_string()),
        );
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        anyhow!("invalid backend option: {e}\nhint: see docs/BACKENDS.md for the option names")
    })
}

/// Open the storage at `location` wrapped in retries, timeouts, the connection
/// limit, bandwidth limits and request counters.
pub fn open_storage_with(g: &GlobalArgs, location: &str) -> Result<DynStorage> {
    let backend = lifeboat_storage::open_storage(location, &backend_options(g)?)?;
    let stack = StorageStack::build(
        backend,
        &LayerOptions {
            connections: Some(g.connections.max(1)),
            limit_upload_kib: g.limit_upload,
            limit_download_kib: g.limit_download,
            ..LayerOptions::default()
        },
    );
    let _ = STATS.set(stack.stats.clone());
    Ok(stack.storage)
}

fn is_remote(location: &str) -> bool {
    !matches!(RepoUrl::parse(location), Ok(RepoUrl::Local(_)))
}

/// The password from, in order: --password-file, --password-command,
/// LIFEBOAT_PASSWORD, or a prompt when stdin is a terminal.
pub fn password(g: &GlobalArgs, confirm: bool) -> Result<String> {
    if let Some(f) = &g.password_file {
        return read_password_file(f);
    }
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running --password-command")?;
        if !out.status.success() {
            bail!("--password-command failed with {}", out.status);
        }
        let s = String::from_utf8(out.stdout).context("--password-command printed non-UTF-8")?;
        return Ok(s.lines().next().unwrap_or_default().to_string());
    }
    if let Ok(p) = std::env::var("LIFEBOAT_PASSWORD") {
        return Ok(p);
    }
    prompt("enter repository password: ", confirm).context(
        "no password given\nhint: set LIFEBOAT_PASSWORD, or pass --password-file FILE or --password-command CMD",
    )
}

/// A new password (for `key add` / `key passwd`).
pub fn new_password(file: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        return read_password_file(f);
    }
    if let Ok(p) = std::env::var("LIFEBOAT_NEW_PASSWORD") {
        return Ok(p);
    }
    prompt("enter new password: ", true).context(
        "no new password given\nhint: pass --new-password-file FILE or set LIFEBOAT_NEW_PASSWORD",
    )
}

fn read_password_file(f: &Path) -> Result<String> {
    let s = std::fs::read_to_string(f)
        .with_context(|| format!("reading password file {}", f.display()))?;
    Ok(s.lines().next().unwrap_or_default().to_string())
}

fn prompt(text: &str, confirm: bool) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("standard input is not a terminal");
    }
    let p = rpassword::prompt_password(text)?;
    if confirm {
        let again = rpassword::prompt_password("enter the password again: ")?;
        if again != p {
            bail!("passwords do not match");
        }
    }
    if p.is_empty() {
        bail!("empty password");
    }
    Ok(p)
}

/// Open the repository named by the global arguments.
pub fn open_repo(g: &GlobalArgs) -> Result<Repository> {
    let location = repo_location(g)?;
    let storage = open_storage_with(g, &location)?;
    let password = password(g, false)?;
    let repo = Repository::open(storage.clone(), &password).map_err(|e| match e {
        CoreError::NoRepository { location } => anyhow!(
            "no repository at {location}\nhint: create one with `lifeboat init --repo {location}`, or check --repo / LIFEBOAT_REPO"
        ),
        CoreError::WrongPassword => anyhow!(
            "wrong password or no matching key\nhint: check LIFEBOAT_PASSWORD / --password-file; `lifeboat key list` shows the key slots"
        ),
        e => e.into(),
    })?;
    // Remote repositories keep index and snapshot objects in a local cache,
    // keyed by repository id and verified against their names before use.
    if is_remote(&location) && !g.no_cache {
        if let Some(dir) = lifeboat_storage::cache::default_cache_dir(&repo.config().id) {
            let cached = LocalCache::new(
                storage,
                dir,
                &["index", "snapshots"],
                CacheVerify::Blake3Name,
            );
            return Ok(repo.with_storage(Arc::new(cached)));
        }
    }
    Ok(repo)
}

pub fn open_indexed(g: &GlobalArgs) -> Result<IndexedRepository> {
    Ok(open_repo(g)?.into_indexed()?)
}

/// Parse sizes like `500`, `10K`, `500M`, `2G`, `1T` (binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        anyhow!("invalid size {s:?}: expected a number with an optional K, M, G or T suffix")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("size {s:?} is too large"))
}

pub fn show_progress(g: &GlobalArgs) -> bool {
    !g.quiet && !g.json && !g.no_progress && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500").unwrap(), 500);
        assert_eq!(parse_size("10k").unwrap(), 10240);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert!(parse_size("x").is_err());
    }
}
