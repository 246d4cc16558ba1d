//! Resolving raw arguments into what the libraries take: the repository
//! location, the password (never from argv), sizes and times.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use lifeboat_core::repository::{IndexedRepository, Repository};
use lifeboat_core::Error as CoreError;
use lifeboat_storage::{DynStorage, LocalStorage};

use crate::args::GlobalArgs;

pub fn init_tracing(g: &GlobalArgs) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
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

pub fn open_storage(location: &str) -> Result<DynStorage> {
    let path = location.strip_prefix("local:").unwrap_or(location);
    if path.contains("://") || path.starts_with("s3:") {
        bail!("repository {location:?}: this build only knows local paths (remote backends: docs/BACKENDS.md)");
    }
    Ok(Arc::new(LocalStorage::new(path)))
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
    prompt("enter new password: ", true)
        .context("no new password given\nhint: pass --new-password-file FILE or set LIFEBOAT_NEW_PASSWORD")
}

fn read_password_file(f: &Path) -> Result<String> {
    let s = std::fs::read_to_string(f).with_context(|| format!("reading password file {}", f.display()))?;
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
    let storage = open_storage(&location)?;
    let password = password(g, false)?;
    Repository::open(storage, &password).map_err(|e| match e {
        CoreError::NoRepository { location } => anyhow!(
            "no repository at {location}\nhint: create one with `lifeboat init --repo {location}`, or check --repo / LIFEBOAT_REPO"
        ),
        CoreError::WrongPassword => anyhow!(
            "wrong password or no matching key\nhint: check LIFEBOAT_PASSWORD / --password-file; `lifeboat key list` shows the key slots"
        ),
        e => e.into(),
    })
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
    let n: u64 = num.trim().parse().map_err(|_| anyhow!("invalid size {s:?}: expected a number with an optional K, M, G or T suffix"))?;
    n.checked_mul(mult).ok_or_else(|| anyhow!("size {s:?} is too large"))
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
