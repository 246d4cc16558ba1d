//! Storage backends for Lifeboat repositories.
//!
//! A repository is a set of immutable objects addressed by slash-separated keys
//! (`config`, `keys/<id>`, `data/ab/<id>`, `index/<id>`, `snapshots/<id>`, ...).
//! The repository format (crate `lifeboat-core`) never talks to a filesystem or
//! an object store directly: it goes through the [`Storage`] trait defined here.
//!
//! # The contract
//!
//! Every backend — the in-memory one used by tests, the local filesystem, and the
//! remote ones — upholds the same contract. The conformance suite in
//! [`conformance`] checks it and is run against every backend.
//!
//! * **Keys** are non-empty UTF-8 strings of `[A-Za-z0-9._-]` segments joined by
//!   `/`. No leading or trailing `/`, no empty, `.` or `..` segment.
//! * **`put` is atomic**: a reader sees either no object or the whole object,
//!   never a prefix. A failed or interrupted `put` leaves no object under the key
//!   (backends write to a temporary name and rename, or use a single-request
//!   upload, which object stores make atomic).
//! * **`PutMode::Create`** fails with [`StorageError::AlreadyExists`] when the key
//!   exists. Backends that cannot check atomically (some object stores) check
//!   first; callers only rely on it to avoid overwriting identical content.
//!   **`PutMode::Overwrite`** replaces the object atomically.
//! * **`get` with a range** returns exactly the bytes in the range; a range that
//!   ends past the object's end is an error ([`StorageError::Range`]), never a short
//!   read, so truncation is always detected.
//! * **Not found** is always [`StorageError::NotFound`], whatever the backend calls it.
//! * **`list(prefix)`** returns every object whose key starts with `prefix/`
//!   (recursively), with sizes, in no particular order. Temporary files of
//!   in-progress writes are never listed. An object deleted while the listing
//!   runs may be listed or left out; it never fails the listing.
//! * **`delete`** of a missing key succeeds (deletes are idempotent).
//! * All methods may be called concurrently from many threads.
//!
//! Errors carry the key and the backend's description (never credentials) and
//! say whether retrying may help ([`StorageError::is_retryable`]).
//!
//! # Backends, wrappers, cache
//!
//! * [`open_storage`] turns a repository URL (`/srv/repo`, `s3://bucket/prefix`,
//!   `sftp://user@host/path`, ...) into a backend: [`LocalStorage`], or an
//!   [`OpendalStorage`] for S3, GCS, Azure Blob and WebDAV, or an
//!   [`SftpStorage`] (OpenSSH client) for SFTP.
//! * [`layers`] holds the wrappers (retry, timeout, concurrency limit,
//!   bandwidth throttle, request counters, fault injection) and
//!   [`StorageStack`] to assemble them.
//! * [`LocalCache`] keeps verified local copies of metadata objects of a remote
//!   repository.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use lifeboat_storage::{open_storage, BackendOptions, LayerOptions, PutOptions, StorageStack};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let backend = open_storage(dir.path().to_str().unwrap(), &BackendOptions::default()).unwrap();
//! let stack = StorageStack::build(backend, &LayerOptions::default());
//! stack.storage.put("config", Bytes::from_static(b"{}"), &PutOptions::create()).unwrap();
//! assert_eq!(stack.stats.snapshot().put, 1);
//! ```

pub mod cache;
pub mod conformance;
mod error;
pub mod layers;
mod local;
mod memory;
mod object_lock;
mod open;
mod remote;
mod runtime;
mod sftp;

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

pub use cache::{CacheCheck, CacheVerify, LocalCache};
pub use error::{StorageError, StorageResult};
pub use layers::{LayerOptions, StatsHandle, StorageStack, StorageStats};
pub use local::LocalStorage;
pub use memory::MemoryStorage;
pub use object_lock::{
    LockMode, ObjectLockLayer, ObjectLockSetting, S3ObjectLock, RETAINED_PREFIXES,
};
pub use open::{open_storage, BackendOptions, GcsAuth, KnownHosts, RepoUrl, S3Addressing};
pub use remote::{OpendalStorage, PutStrategy};
pub use sftp::{SftpConfig, SftpStorage};

/// How `put` treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutMode {
    /// Replace an existing object atomically.
    #[default]
    Overwrite,
    /// Fail with [`StorageError::AlreadyExists`] if the key exists.
    Create,
}

/// S3 Object Lock retention of one object ([`Storage::retention`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    pub until: chrono::DateTime<chrono::Utc>,
}

/// Options for [`Storage::put`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub mode: PutMode,
}

impl PutOptions {
    pub fn create() -> Self {
        Self {
            mode: PutMode::Create,
        }
    }
}

/// What a listing or `head` reports about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key, e.g. `data/ab/ab12...`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// The storage contract; see the [crate documentation](crate) for the rules
/// every implementation follows.
pub trait Storage: Send + Sync + Debug {
    /// A human-readable location (`/srv/repo`, `s3://bucket/prefix`), without secrets.
    fn location(&self) -> String;

    /// Store `data` under `key` atomically.
    ///
    /// # Errors
    /// [`StorageError::AlreadyExists`] with [`PutMode::Create`] when the key exists;
    /// I/O or backend errors otherwise.
    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()>;

    /// Read a whole object, or the byte `range` of it.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] if the key does not exist;
    /// [`StorageError::Range`] if the range ends past the object's end.
    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes>;

    /// [`get`](Self::get) into `buf`, which is cleared first and which the caller
    /// keeps across reads (a restore thread reads pack after pack). A backend that
    /// reads into memory of its own choosing (a local file) fills `buf` without
    /// allocating; the default copies what `get` returns. On error `buf`'s content
    /// is unspecified.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    fn get_into(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> StorageResult<()> {
        let data = self.get(key, range)?;
        buf.clear();
        // Exactly: a buffer kept across reads should not double past the largest.
        buf.reserve_exact(data.len());
        buf.extend_from_slice(&data);
        Ok(())
    }

    /// Size of one object.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] if the key does not exist.
    fn head(&self, key: &str) -> StorageResult<ObjectMeta>;

    /// Every object under `prefix/` (recursively). An absent prefix lists nothing.
    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;

    /// Delete one object. Deleting a missing key succeeds.
    fn delete(&self, key: &str) -> StorageResult<()>;

    /// The object-lock retention of `key`, if the storage keeps one. Only the
    /// [`ObjectLockLayer`] (S3 with Object Lock) answers; every other storage,
    /// and every wrapper that does not forward it, has none.
    ///
    /// # Errors
    /// Storage errors of the lookup.
    fn retention(&self, _key: &str) -> StorageResult<Option<Retention>> {
        Ok(None)
    }

    /// Whether the storage holds anything at all under `key` as object or prefix.
    /// Used by `init` to refuse to overwrite an existing repository.
    fn exists(&self, key: &str) -> StorageResult<bool> {
        match self.head(key) {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A shared, dynamically typed storage handle.
pub type DynStorage = Arc<dyn Storage>;

/// Check a key against the contract's key rules.
///
/// # Errors
/// [`StorageError::InvalidKey`] naming the key.
pub fn validate_key(key: &str) -> StorageResult<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey {
            key: key.to_string(),
        })
    }
}

pub(crate) fn check_range(key: &str, range: &Range<u64>, size: u64) -> StorageResult<()> {
    if range.start > range.end || range.end > size {
        return Err(StorageError::Range {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        for good in ["config", "data/ab/abcdef", "keys/x-y_z.json"] {
            validate_key(good).unwrap();
        }
        for bad in ["", "/a", "a/", "a//b", "../x", "a/./b", "a b", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
