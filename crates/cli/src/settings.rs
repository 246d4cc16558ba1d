//! Resolving raw arguments into what the libraries take: the repository
//! location, the password (never from argv), sizes and times.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use lifeboat_core::repository::{IndexedRepository, Repository};
use lifeboat_core::restorer::ReadLimits;
use lifeboat_core::Error as CoreError;
use std::sync::Mutex;

use lifeboat_storage::layers::{FaultConfig, FaultStorage};
use lifeboat_storage::{BackendOptions, CacheVerify, DynStorage, LocalCache, RepoUrl};
use lifeboat_storage::{
    LayerOptions, ObjectLockLayer, ObjectLockSetting, S3ObjectLock, StatsHandle, StorageStack,
    StorageStats,
};

use crate::args::{FromRepoArgs, GlobalArgs};

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

static STATS: Mutex<Vec<StatsHandle>> = Mutex::new(Vec::new());

/// Request counters of the storage this process opened through
/// [`open_storage_with`] (summed when it was opened more than once), for
/// `--json` summaries; `None` if none was opened.
pub fn storage_stats() -> Option<StorageStats> {
    let handles = STATS.lock().unwrap_or_else(|e| e.into_inner());
    if handles.is_empty() {
        return None;
    }
    let mut total = StorageStats::default();
    for h in handles.iter() {
        total += &h.snapshot();
    }
    Some(total)
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

/// Open the storage at `location` wrapped in retries, timeouts (remote repositories
/// only), the connection
/// limit, bandwidth limits and request counters, which [`storage_stats`]
/// reports.
pub fn open_storage_with(g: &GlobalArgs, location: &str) -> Result<DynStorage> {
    let stack = open_storage_stack(g, location)?;
    STATS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(stack.stats.clone());
    Ok(stack.storage)
}

/// Like [`open_storage_with`], with the handle to this storage's own counters.
///
/// Tests of resilience set `LIFEBOAT_TEST_FAULTS` (a [`FaultConfig`] spec such
/// as `rate=0.1,seed=7`, injected below the retry layer) and
/// `LIFEBOAT_TEST_RETRIES` (retries per request); both are undocumented in
/// `--help` and meant for tests only (docs/TESTING.md).
pub fn open_storage_stack(g: &GlobalArgs, location: &str) -> Result<StorageStack> {
    let mut backend = lifeboat_storage::open_storage(location, &backend_options(g)?)?;
    if let Ok(spec) = std::env::var("LIFEBOAT_TEST_FAULTS") {
        let faults =
            FaultConfig::parse(&spec).map_err(|e| anyhow!("LIFEBOAT_TEST_FAULTS={spec:?}: {e}"))?;
        tracing::warn!("injecting storage faults ({spec}): for tests only");
        backend = Arc::new(FaultStorage::new(backend, faults));
    }
    let mut layers = LayerOptions {
        connections: Some(connections_for(g, location)),
        // A local repository gets no per-call time limit: the limit runs every call on a
        // helper thread, and the hop (two context switches per tree or pack read) cost a
        // local restore ~4% (docs/PERFORMANCE.md, thirteenth measurement). A file system
        // that hangs is the mount's to time out (NFS `timeo`, `soft`), as for restic and borg.
        timeout_secs: if is_remote(location) {
            LayerOptions::default().timeout_secs
        } else {
            None
        },
        limit_upload_kib: g.limit_upload,
        limit_download_kib: g.limit_download,
        ..LayerOptions::default()
    };
    if let Ok(n) = std::env::var("LIFEBOAT_TEST_RETRIES") {
        layers.retry.max_retries = n
            .parse()
            .map_err(|_| anyhow!("LIFEBOAT_TEST_RETRIES={n:?} is not a number"))?;
    }
    Ok(StorageStack::build(backend, &layers))
}

/// How large one ranged read of a restore may be: smaller reads of fewer blobs from a
/// local repository, where a read is no request ([`ReadLimits`]).
pub fn restore_reads(g: &GlobalArgs) -> ReadLimits {
    if is_remote(g.repo.as_deref().unwrap_or_default()) {
        ReadLimits::REMOTE
    } else {
        ReadLimits::LOCAL
    }
}

/// Parallel storage operations for the repository at `location`: `--connections`, or 4
/// for a remote repository (requests wait on the network) and the number of cores, 2 to
/// 4, for a local one. There each connection is a thread decoding or writing a pack, and
/// more threads than cores add memory, not speed (a restore holds one ranged read per
/// connection, a backup one finished pack per uploader). Never more than the remote
/// default, so no machine uses more memory than with 4.
pub fn connections_for(g: &GlobalArgs, location: &str) -> usize {
    match g.connections {
        Some(n) => n.max(1),
        None if is_remote(location) => 4,
        None => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
    }
}

/// [`connections_for`] the repository of the global arguments.
pub fn connections(g: &GlobalArgs) -> usize {
    connections_for(g, g.repo.as_deref().unwrap_or_default())
}

/// Restore threads: [`connections`], except that a restore from a local repository gets
/// one thread more than the cores (3 to 4). Each thread waits, between its CPU work, for
/// its ranged read and for page faults; on 2 cores a third thread fills those gaps:
/// restores of the bench set into /dev/shm, 6 alternating runs, 1.68–1.81 s (median 1.73)
/// with 2 threads, 1.63–1.67 (1.665) with 3, 1.63–1.78 (1.68) with 4, at ~12 MB of peak
/// RSS per thread with 8 MiB reads (docs/PERFORMANCE.md; local reads are now 2 MiB).
pub fn restore_connections(g: &GlobalArgs) -> usize {
    let location = g.repo.as_deref().unwrap_or_default();
    match g.connections {
        None if !is_remote(location) => {
            std::thread::available_parallelism().map_or(3, |n| (n.get() + 1).clamp(3, 4))
        }
        _ => connections_for(g, location),
    }
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
        return password_from_command(cmd, "--password-command");
    }
    if let Ok(p) = std::env::var("LIFEBOAT_PASSWORD") {
        return Ok(p);
    }
    prompt("enter repository password: ", confirm).context(
        "no password given\nhint: set LIFEBOAT_PASSWORD, or pass --password-file FILE or --password-command CMD",
    )
}

fn password_from_command(cmd: &str, flag: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {flag}"))?;
    if !out.status.success() {
        bail!("{flag} failed with {}", out.status);
    }
    let s = String::from_utf8(out.stdout).with_context(|| format!("{flag} printed non-UTF-8"))?;
    Ok(s.lines().next().unwrap_or_default().to_string())
}

/// The source repository of `copy` / `init --copy-chunker-params`: its
/// location and password (--from-password-file, --from-password-command,
/// LIFEBOAT_FROM_PASSWORD, or a prompt on a terminal).
pub fn from_repo(f: &FromRepoArgs) -> Result<(String, String)> {
    let location = f
        .from_repo
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "no source repository given\nhint: pass --from-repo URL or set LIFEBOAT_FROM_REPO"
            )
        })?;
    let password = if let Some(file) = &f.from_password_file {
        read_password_file(file)?
    } else if let Some(cmd) = &f.from_password_command {
        password_from_command(cmd, "--from-password-command")?
    } else if let Ok(p) = std::env::var("LIFEBOAT_FROM_PASSWORD") {
        p
    } else {
        prompt("enter the source repository's password: ", false).context(
            "no password for the source repository\nhint: pass --from-password-file FILE or --from-password-command CMD, or set LIFEBOAT_FROM_PASSWORD",
        )?
    };
    Ok((location, password))
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
    let (location, storage) = repo_storage(g)?;
    let password = password(g, false)?;
    open_repo_on(g, &location, storage, &password, "")
}

/// The repository's location and its storage: what opening it needs besides the
/// password (a missing `--repo` is reported before any password is asked for).
pub fn repo_storage(g: &GlobalArgs) -> Result<(String, DynStorage)> {
    let location = repo_location(g)?;
    let storage = open_storage_with(g, &location)?;
    Ok((location, storage))
}

/// Open the repository at `location` with `password`, with its own request
/// counters (`copy` opens two). `which` names it in errors ("source ").
pub fn open_repo_at(
    g: &GlobalArgs,
    location: &str,
    password: &str,
    which: &str,
) -> Result<(Repository, StatsHandle)> {
    let stack = open_storage_stack(g, location)?;
    let repo = open_repo_on(g, location, stack.storage, password, which)?;
    Ok((repo, stack.stats))
}

fn open_repo_on(
    g: &GlobalArgs,
    location: &str,
    storage: DynStorage,
    password: &str,
    which: &str,
) -> Result<Repository> {
    let repo = Repository::open(storage.clone(), password).map_err(|e| match e {
        CoreError::NoRepository { location } if which.is_empty() => anyhow!(
            "no repository at {location}\nhint: create one with `lifeboat init --repo {location}`, or check --repo / LIFEBOAT_REPO"
        ),
        CoreError::NoRepository { location } => anyhow!("no {which}repository at {location}"),
        CoreError::WrongPassword if which.is_empty() => anyhow!(
            "wrong password or no matching key\nhint: check LIFEBOAT_PASSWORD / --password-file; `lifeboat key list` shows the key slots"
        ),
        CoreError::WrongPassword => anyhow!(
            "wrong password or no matching key for the {which}repository at {location}\nhint: check LIFEBOAT_FROM_PASSWORD / --from-password-file"
        ),
        e => e.into(),
    })?;
    // S3 Object Lock: every object a restore needs gets retention on upload,
    // and deletes check it first (`Repository::delete_unless_retained`).
    let (repo, storage) = match repo.config().object_lock {
        Some(setting) => {
            let locked = object_lock_layer(g, location, storage, setting)?;
            (repo.with_storage(locked.clone()), locked)
        }
        None => (repo, storage),
    };
    // Remote repositories keep index and snapshot objects in a local cache,
    // keyed by repository id and verified against their names before use.
    if is_remote(location) && !g.no_cache {
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

/// `storage` wrapped so uploads get the repository's Object Lock retention.
pub fn object_lock_layer(
    g: &GlobalArgs,
    location: &str,
    storage: DynStorage,
    setting: ObjectLockSetting,
) -> Result<DynStorage> {
    let lock = S3ObjectLock::for_url(location, &backend_options(g)?)?.ok_or_else(|| {
        anyhow!(
            "the repository at {location} sets S3 Object Lock ({setting}), but it is not on S3\nhint: `lifeboat config set object-lock off --allow-disable` removes the setting"
        )
    })?;
    Ok(Arc::new(ObjectLockLayer::with_setting(
        storage, lock, setting,
    )))
}

/// The object-lock client for `location`; fails unless it is an S3 bucket
/// with Object Lock enabled.
pub fn require_bucket_lock(g: &GlobalArgs, location: &str) -> Result<S3ObjectLock> {
    let lock = S3ObjectLock::for_url(location, &backend_options(g)?)?
        .ok_or_else(|| anyhow!("object lock needs an S3 repository; {location} is not one"))?;
    if !lock.bucket_enabled()? {
        bail!(
            "the bucket of {location} does not have S3 Object Lock enabled\nhint: Object Lock can only be enabled when a bucket is created (e.g. `aws s3api create-bucket --object-lock-enabled-for-bucket`)"
        );
    }
    Ok(lock)
}

pub fn open_indexed(g: &GlobalArgs) -> Result<IndexedRepository> {
    Ok(open_repo(g)?.into_indexed()?)
}

/// [`open_indexed`] with the storage ([`repo_storage`]) and the password already at hand.
pub fn open_indexed_with(
    g: &GlobalArgs,
    (location, storage): (String, DynStorage),
    password: &str,
) -> Result<IndexedRepository> {
    Ok(open_repo_on(g, &location, storage, password, "")?.into_indexed()?)
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

/// `--tag` values: repeatable, each may be comma-separated; empty parts dropped.
pub fn tags(raw: &[String]) -> Vec<String> {
    raw.iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
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
