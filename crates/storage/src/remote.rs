//! Remote backends through OpenDAL: S3 and S3-compatible stores, Google Cloud
//! Storage, Azure Blob, SFTP and WebDAV.
//!
//! [`OpendalStorage`] adapts any OpenDAL [`Operator`] to the sync [`Storage`]
//! contract:
//!
//! * **Atomic put.** Object stores (S3, GCS, Azure) make a single-request upload
//!   atomic, so `put` writes the key directly. File-like services (SFTP, WebDAV)
//!   would expose a half-written file, so `put` writes `.lbtmp-<random>` next to
//!   the key and renames it into place; listings skip those names.
//! * **Create.** Where the service supports a conditional write
//!   (`If-None-Match: *` on S3), `PutMode::Create` uses it and is atomic.
//!   Elsewhere it checks first, then writes (the contract allows this).
//! * **Ranges.** A range read that comes back short is never returned: it is
//!   [`StorageError::Range`] when the object really is shorter, and a retryable
//!   error when the transfer was cut.
//! * **Errors.** OpenDAL's error kinds are mapped to [`StorageError`] variants;
//!   temporary errors (5xx, throttling, connection resets) are retryable. Every
//!   message goes through a filter that removes credential values.
//! * **Timeouts.** An optional per-request timeout cancels the request itself.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use opendal::raw::BytesRange;
use opendal::{ErrorKind, Operator};
use rand::Rng;

use crate::error::redact;
use crate::runtime::block_on;
use crate::{validate_key, ObjectMeta, PutMode, PutOptions, Storage, StorageError, StorageResult};

/// Name prefix of in-flight uploads on file-like services; never listed.
pub(crate) const TMP_PREFIX: &str = ".lbtmp-";

/// How `put` makes a write atomic on this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStrategy {
    /// One request stores the whole object (object stores).
    Direct,
    /// Upload to a temporary name, then rename (file-like services).
    TempThenRename,
}

/// A [`Storage`] over an OpenDAL [`Operator`].
#[derive(Clone)]
pub struct OpendalStorage {
    op: Operator,
    location: String,
    strategy: PutStrategy,
    conditional_create: bool,
    timeout: Option<Duration>,
}

impl fmt::Debug for OpendalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The operator's own Debug could show configuration; keep to what is safe.
        f.debug_struct("OpendalStorage")
            .field("location", &self.location)
            .field("strategy", &self.strategy)
            .field("conditional_create", &self.conditional_create)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OpendalStorage {
    /// Wrap `op`. `location` is what errors and [`Storage::location`] show; it
    /// must not contain secrets. The put strategy and conditional-create support
    /// are derived from the service.
    pub fn new(op: Operator, location: impl Into<String>) -> Self {
        let info = op.info();
        let cap = info.full_capability();
        let strategy = match info.scheme() {
            "s3" | "gcs" | "azblob" => PutStrategy::Direct,
            _ if cap.rename => PutStrategy::TempThenRename,
            _ => PutStrategy::Direct,
        };
        Self {
            conditional_create: cap.write_with_if_not_exists,
            op,
            location: location.into(),
            strategy,
            timeout: None,
        }
    }

    /// Cancel any single request that takes longer than `timeout` (a retryable
    /// [`StorageError::Io`] of kind `TimedOut`).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Use `PutMode::Create` through a check-then-write even where the service
    /// offers conditional writes (for servers that announce but mishandle them).
    pub fn without_conditional_create(mut self) -> Self {
        self.conditional_create = false;
        self
    }

    /// The OpenDAL operator, for callers that need something the trait lacks.
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    pub fn put_strategy(&self) -> PutStrategy {
        self.strategy
    }

    pub fn conditional_create(&self) -> bool {
        self.conditional_create
    }

    /// Run one request on the shared runtime, with the timeout if one is set.
    fn run<T, F>(&self, key: &str, fut: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: Future<Output = opendal::Result<T>> + Send + 'static,
    {
        let timeout = self.timeout;
        let result = block_on(async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| ()),
                None => Ok(fut.await),
            }
        });
        match result {
            Ok(inner) => inner.map_err(|e| self.map_err(key, e)),
            Err(()) => Err(StorageError::Io {
                key: key.to_string(),
                location: self.location.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "request timed out after {:?}",
                        self.timeout.unwrap_or_default()
                    ),
                ),
            }),
        }
    }

    fn map_err(&self, key: &str, err: opendal::Error) -> StorageError {
        map_opendal_error(key, &self.location, err)
    }

    fn stat_size(&self, key: &str) -> StorageResult<Option<u64>> {
        let op = self.op.clone();
        let path = key.to_string();
        match self.run(key, async move { op.stat(&path).await }) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.content_length())),
            Ok(_) => Ok(None),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn already_exists(&self, key: &str) -> StorageError {
        StorageError::AlreadyExists {
            key: key.to_string(),
            location: self.location.clone(),
        }
    }

    fn write(&self, path: &str, key: &str, data: Bytes, if_not_exists: bool) -> StorageResult<()> {
        let op = self.op.clone();
        let path = path.to_string();
        let opts = WriteOptions {
            if_not_exists,
            ..Default::default()
        };
        match self.run(
            key,
            async move { op.write_options(&path, data, opts).await },
        ) {
            Ok(_) => Ok(()),
            // A conditional write that lost: the key exists.
            Err(StorageError::Precondition { .. }) if if_not_exists => {
                Err(self.already_exists(key))
            }
            Err(e) => Err(e),
        }
    }

    fn delete_path(&self, key: &str, path: &str) -> StorageResult<()> {
        let op = self.op.clone();
        let path = path.to_string();
        match self.run(key, async move { op.delete(&path).await }) {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn put_via_temp(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<()> {
        if mode == PutMode::Create && self.stat_size(key)?.is_some() {
            return Err(self.already_exists(key));
        }
        let suffix: u64 = rand::thread_rng().gen();
        let tmp = match key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{TMP_PREFIX}{suffix:016x}"),
            None => format!("{TMP_PREFIX}{suffix:016x}"),
        };
        if let Err(e) = self.write(&tmp, key, data, false) {
            let _ = self.delete_path(key, &tmp);
            return Err(e);
        }
        if mode == PutMode::Create {
            match self.stat_size(key) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    let _ = self.delete_path(key, &tmp);
                    return Err(self.already_exists(key));
                }
                Err(e) => {
                    let _ = self.delete_path(key, &tmp);
                    return Err(e);
                }
            }
        }
        let op = self.op.clone();
        let (from, to) = (tmp.clone(), key.to_string());
        if let Err(e) = self.run(key, async move { op.rename(&from, &to).await }) {
            let _ = self.delete_path(key, &tmp);
            return Err(e);
        }
        Ok(())
    }
}

/// Map an OpenDAL error on `key` to the contract's variants, without secrets.
pub(crate) fn map_opendal_error(key: &str, location: &str, err: opendal::Error) -> StorageError {
    let key = key.to_string();
    let location = location.to_string();
    let message = redact(&err.to_string());
    match err.kind() {
        ErrorKind::NotFound => StorageError::NotFound { key, location },
        ErrorKind::AlreadyExists => StorageError::AlreadyExists { key, location },
        ErrorKind::PermissionDenied => StorageError::PermissionDenied {
            key,
            location,
            message,
        },
        ErrorKind::ConditionNotMatch => StorageError::Precondition {
            key,
            location,
            message,
        },
        ErrorKind::ConfigInvalid => StorageError::Config { location, message },
        ErrorKind::RateLimited => StorageError::Backend {
            key,
            location,
            message,
            retryable: true,
        },
        _ => StorageError::Backend {
            key,
            location,
            message,
            retryable: err.is_temporary(),
        },
    }
}

impl Storage for OpendalStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        validate_key(key)?;
        match (self.strategy, options.mode) {
            (PutStrategy::TempThenRename, mode) => self.put_via_temp(key, data, mode),
            (PutStrategy::Direct, PutMode::Overwrite) => self.write(key, key, data, false),
            (PutStrategy::Direct, PutMode::Create) if self.conditional_create => {
                self.write(key, key, data, true)
            }
            (PutStrategy::Direct, PutMode::Create) => {
                if self.stat_size(key)?.is_some() {
                    return Err(self.already_exists(key));
                }
                self.write(key, key, data, false)
            }
        }
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        validate_key(key)?;
        let Some(range) = range else {
            let op = self.op.clone();
            let path = key.to_string();
            let buf = self.run(key, async move { op.read(&path).await })?;
            return Ok(buf.to_bytes());
        };
        let range_err = |size: u64| StorageError::Range {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            size,
        };
        if range.start > range.end {
            return Err(range_err(self.head(key)?.size));
        }
        if range.start == range.end {
            // Nothing to transfer, but the range must still lie inside the object.
            let size = self.head(key)?.size;
            return if range.end <= size {
                Ok(Bytes::new())
            } else {
                Err(range_err(size))
            };
        }
        let wanted = range.end - range.start;
        let op = self.op.clone();
        let path = key.to_string();
        let opts = ReadOptions {
            range: BytesRange::new(range.start, Some(wanted)),
            ..Default::default()
        };
        let result = self.run(key, async move { op.read_options(&path, opts).await });
        let bytes = match result {
            Ok(buf) => buf.to_bytes(),
            // The service refused the range: say how big the object is.
            Err(e @ (StorageError::Backend { .. } | StorageError::Precondition { .. })) => {
                return match self.stat_size(key)? {
                    Some(size) if range.end > size => Err(range_err(size)),
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        if bytes.len() as u64 == wanted {
            return Ok(bytes);
        }
        // Short: either the object is shorter than the range (a caller error) or
        // the transfer was cut (retryable). Never hand back a short read.
        match self.stat_size(key)? {
            Some(size) if range.end > size => Err(range_err(size)),
            Some(_) => Err(StorageError::transient(
                key,
                &self.location,
                format!("short read: got {} of {wanted} bytes", bytes.len()),
            )),
            None => Err(StorageError::NotFound {
                key: key.to_string(),
                location: self.location.clone(),
            }),
        }
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        validate_key(key)?;
        match self.stat_size(key)? {
            Some(size) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
            }),
            None => Err(StorageError::NotFound {
                key: key.to_string(),
                location: self.location.clone(),
            }),
        }
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        validate_key(prefix)?;
        let op = self.op.clone();
        let dir = format!("{prefix}/");
        let opts = ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.run(prefix, async move { op.list_options(&dir, opts).await }) {
            Ok(entries) => entries,
            Err(StorageError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let start = format!("{prefix}/");
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            if !meta.is_file() {
                continue;
            }
            let key = entry.path().trim_start_matches('/');
            let name = key.rsplit('/').next().unwrap_or(key);
            if name.starts_with(TMP_PREFIX) || !key.starts_with(&start) {
                continue;
            }
            out.push(ObjectMeta {
                key: key.to_string(),
                size: meta.content_length(),
            });
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        validate_key(key)?;
        self.delete_path(key, key)
    }
}
