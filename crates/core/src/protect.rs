//! Append-only mode: the repository setting that makes every Lifeboat client
//! refuse deletes and rewrites (`forget`, `prune`, `key remove`, `pin`,
//! `repair snapshots`).
//!
//! The flag lives in the sealed `config`, so anyone holding a password could
//! flip it back; turning it off therefore needs an explicit
//! `allow_disable = true` (the CLI's `--allow-disable-append-only`). It guards
//! against mistakes and against a compromised client *using Lifeboat*. Against
//! an attacker with the storage credentials, only the storage can help: S3
//! Object Lock, a bucket policy without `DeleteObject`, or an append-only
//! server (docs/MAINTENANCE.md).
//!
//! # Errors
//! [`Error::Invalid`] when disabling without `allow_disable`; storage errors.

use bytes::Bytes;
use lifeboat_storage::{LockMode, ObjectLockSetting, PutOptions};

use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::repository::{Config, Repository};

/// Rewrite the config with `append_only = on`; returns the new config. The
/// opened `repo` keeps its old view: reopen it to act under the new setting.
///
/// # Errors
/// See the module documentation.
pub fn set_append_only(repo: &Repository, on: bool, allow_disable: bool) -> Result<Config> {
    let mut config = repo.config().clone();
    if config.append_only == on {
        return Ok(config);
    }
    if !on && !allow_disable {
        return Err(Error::invalid(
            "operation",
            "refusing to turn append-only mode off without --allow-disable-append-only \
             (it re-enables forget, prune and key removal for every client)",
        ));
    }
    config.append_only = on;
    save_config(repo, &config)?;
    Ok(config)
}

/// Rewrite the config with `object_lock = setting`; returns the new config.
/// The caller checks that the bucket has Object Lock enabled (the CLI does,
/// with [`lifeboat_storage::S3ObjectLock::bucket_enabled`]). Turning it off
/// (or shortening it) needs `allow_weaker`; objects already uploaded keep the
/// retention they were given.
///
/// # Errors
/// [`Error::Invalid`] when weakening without `allow_weaker`; storage errors.
pub fn set_object_lock(
    repo: &Repository,
    setting: Option<ObjectLockSetting>,
    allow_weaker: bool,
) -> Result<Config> {
    let mut config = repo.config().clone();
    if config.object_lock == setting {
        return Ok(config);
    }
    let weaker = match (config.object_lock, setting) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(old), Some(new)) => {
            new.days < old.days
                || (old.mode == LockMode::Compliance && new.mode == LockMode::Governance)
        }
    };
    if weaker && !allow_weaker {
        return Err(Error::invalid(
            "operation",
            "refusing to turn object lock off or shorten it without --allow-disable \
             (new uploads would be deletable sooner)",
        ));
    }
    config.object_lock = setting;
    save_config(repo, &config)?;
    Ok(config)
}

fn save_config(repo: &Repository, config: &Config) -> Result<()> {
    let sealed = repo.key().seal(
        ObjectKind::Config,
        &serde_json::to_vec(config).expect("config serialises"),
    );
    repo.storage()
        .put("config", Bytes::from(sealed), &PutOptions::default())?;
    Ok(())
}
