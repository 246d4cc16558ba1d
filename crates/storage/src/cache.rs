//! A local cache of a remote repository's metadata objects.
//!
//! [`LocalCache`] keeps a copy of every object under the key prefixes the
//! caller names (typically `index`, `snapshots`) in a local directory —
//! by default `$XDG_CACHE_HOME/lifeboat/<repository id>` — so that listing
//! snapshots and starting an incremental backup do not download them again.
//!
//! Objects are immutable, so a cached copy stays valid until the object is
//! deleted. A cached copy is **verified before use**; one that fails is
//! removed and fetched again:
//!
//! * [`CacheVerify::Blake3Name`]: the object's key ends in the hex BLAKE3 of its
//!   content (the repository names its files that way);
//! * [`CacheVerify::Custom`]: a check the caller supplies (e.g. decrypt and
//!   authenticate);
//! * in every mode, the size must match the size the backend reports when the
//!   prefix is listed: `list` goes to the backend and drops cache entries that
//!   disappeared or changed size (another host ran `prune`).
//!
//! Writes go to the backend first, then to the cache. Cache I/O failures never
//! fail a call: the cache is only an optimisation.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rand::Rng;

use crate::{validate_key, DynStorage, ObjectMeta, PutOptions, Storage, StorageResult};

/// A caller-supplied check of a cached object: `(key, content) -> ok`.
pub type CacheCheck = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

/// How a cached copy is checked before it is used.
#[derive(Clone, Default)]
pub enum CacheVerify {
    /// `blake3(content).to_hex()` equals the key's last segment.
    #[default]
    Blake3Name,
    /// The caller's check on (key, content).
    Custom(CacheCheck),
}

impl fmt::Debug for CacheVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheVerify::Blake3Name => f.write_str("Blake3Name"),
            CacheVerify::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl CacheVerify {
    fn check(&self, key: &str, data: &[u8]) -> bool {
        match self {
            CacheVerify::Blake3Name => {
                let name = key.rsplit('/').next().unwrap_or(key);
                blake3::hash(data).to_hex().as_str() == name
            }
            CacheVerify::Custom(f) => f(key, data),
        }
    }
}

/// The cache directory for a repository: `$XDG_CACHE_HOME/lifeboat/<id>`, else
/// `$HOME/.cache/lifeboat/<id>`. The id is reduced to `[A-Za-z0-9._-]`.
pub fn default_cache_dir(repository_id: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let id: String = repository_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let id = id.trim_start_matches('.');
    if id.is_empty() {
        return None;
    }
    Some(base.join("lifeboat").join(id))
}

/// A storage wrapper that caches objects under some prefixes on local disk.
#[derive(Debug)]
pub struct LocalCache {
    inner: DynStorage,
    dir: PathBuf,
    prefixes: Vec<String>,
    verify: CacheVerify,
}

impl LocalCache {
    /// Cache objects under `prefixes` (e.g. `["index", "snapshots"]`) of
    /// `inner` in `dir` (see [`default_cache_dir`]).
    pub fn new(
        inner: DynStorage,
        dir: impl Into<PathBuf>,
        prefixes: &[&str],
        verify: CacheVerify,
    ) -> Self {
        Self {
            inner,
            dir: dir.into(),
            prefixes: prefixes
                .iter()
                .map(|p| p.trim_matches('/').to_string())
                .collect(),
            verify,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cached_prefix(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| {
            key.len() > p.len() && key.starts_with(p.as_str()) && key.as_bytes()[p.len()] == b'/'
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// A verified cached copy, or `None` (a bad copy is removed).
    fn load(&self, key: &str) -> Option<Bytes> {
        let path = self.path(key);
        let data = std::fs::read(&path).ok()?;
        if self.verify.check(key, &data) {
            Some(Bytes::from(data))
        } else {
            tracing::warn!(key, "cached object failed verification; fetching it again");
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    fn store(&self, key: &str, data: &[u8]) {
        if !self.verify.check(key, data) {
            // Never cache what would not verify; the caller sees the backend's bytes.
            return;
        }
        let path = self.path(key);
        let Some(dir) = path.parent() else { return };
        let tmp = dir.join(format!(".lbtmp-{:016x}", rand::thread_rng().gen::<u64>()));
        let ok = std::fs::create_dir_all(dir).is_ok()
            && std::fs::write(&tmp, data).is_ok()
            && std::fs::rename(&tmp, &path).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(key, "could not write the local cache");
        }
    }

    fn evict(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Remove cached copies under `prefix` that the backend no longer has, or
    /// whose size differs from the backend's.
    fn reconcile(&self, prefix: &str, listed: &[ObjectMeta]) {
        let sizes: std::collections::HashMap<&str, u64> =
            listed.iter().map(|m| (m.key.as_str(), m.size)).collect();
        let mut stack = vec![(self.path(prefix), prefix.to_string())];
        while let Some((dir, key_prefix)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let key = format!("{key_prefix}/{name}");
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push((entry.path(), key));
                } else if name.starts_with(".lbtmp-") {
                    let _ = std::fs::remove_file(entry.path());
                } else {
                    let size = entry.metadata().map(|m| m.len()).ok();
                    if sizes.get(key.as_str()).copied() != size {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
}

impl Storage for LocalCache {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        self.inner.put(key, data.clone(), options)?;
        if self.cached_prefix(key) {
            self.store(key, &data);
        }
        Ok(())
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        validate_key(key)?;
        if !self.cached_prefix(key) {
            return self.inner.get(key, range);
        }
        let data = match self.load(key) {
            Some(d) => d,
            None => {
                let d = self.inner.get(key, None)?;
                self.store(key, &d);
                d
            }
        };
        match range {
            None => Ok(data),
            Some(r) => {
                crate::check_range(key, &r, data.len() as u64)?;
                Ok(data.slice(r.start as usize..r.end as usize))
            }
        }
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        validate_key(key)?;
        if self.cached_prefix(key) {
            if let Some(d) = self.load(key) {
                return Ok(ObjectMeta {
                    key: key.to_string(),
                    size: d.len() as u64,
                });
            }
        }
        self.inner.head(key)
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let listed = self.inner.list(prefix)?;
        let covered = self.prefixes.iter().any(|p| {
            prefix == p || self.cached_prefix(prefix) || p.starts_with(&format!("{prefix}/"))
        });
        if covered {
            self.reconcile(prefix, &listed);
        }
        Ok(listed)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key)?;
        if self.cached_prefix(key) {
            self.evict(key);
        }
        Ok(())
    }

    fn retention(&self, key: &str) -> StorageResult<Option<crate::Retention>> {
        self.inner.retention(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::CountingStorage;
    use crate::MemoryStorage;

    fn named(content: &[u8]) -> String {
        format!("index/{}", blake3::hash(content).to_hex())
    }

    #[test]
    fn second_read_comes_from_disk_and_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let counting = Arc::new(CountingStorage::new(Arc::new(MemoryStorage::new())));
        let stats = counting.stats_handle();
        let cache = LocalCache::new(
            counting.clone(),
            dir.path(),
            &["index", "snapshots"],
            CacheVerify::Blake3Name,
        );
        let key = named(b"index one");
        counting
            .put(
                &key,
                Bytes::from_static(b"index one"),
                &PutOptions::default(),
            )
            .unwrap();

        assert_eq!(&cache.get(&key, None).unwrap()[..], b"index one");
        assert_eq!(&cache.get(&key, None).unwrap()[..], b"index one");
        assert_eq!(&cache.get(&key, Some(6..9)).unwrap()[..], b"one");
        assert_eq!(
            stats.snapshot().get,
            1,
            "only the first read reached the backend"
        );

        // A corrupted cached copy is detected, dropped and fetched again.
        std::fs::write(dir.path().join(&key), b"index 0ne").unwrap();
        assert_eq!(&cache.get(&key, None).unwrap()[..], b"index one");
        assert_eq!(stats.snapshot().get, 2);
        assert_eq!(std::fs::read(dir.path().join(&key)).unwrap(), b"index one");
    }

    #[test]
    fn deletions_elsewhere_are_noticed_by_list() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryStorage::new());
        let cache = LocalCache::new(
            backend.clone(),
            dir.path(),
            &["snapshots"],
            CacheVerify::Blake3Name,
        );
        let key = format!("snapshots/{}", blake3::hash(b"snap").to_hex());
        cache
            .put(&key, Bytes::from_static(b"snap"), &PutOptions::default())
            .unwrap();
        assert!(
            dir.path().join(&key).exists(),
            "writes go through the cache"
        );
        backend.delete(&key).unwrap(); // another host pruned it
        assert!(cache.list("snapshots").unwrap().is_empty());
        assert!(
            !dir.path().join(&key).exists(),
            "list dropped the stale copy"
        );
        assert!(cache.get(&key, None).unwrap_err().is_not_found());
    }

    #[test]
    fn custom_check_and_uncached_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryStorage::new());
        let verify = CacheVerify::Custom(Arc::new(|_k: &str, d: &[u8]| d.starts_with(b"OK")));
        let cache = LocalCache::new(backend.clone(), dir.path(), &["index"], verify);
        cache
            .put(
                "index/a",
                Bytes::from_static(b"OK a"),
                &PutOptions::default(),
            )
            .unwrap();
        cache
            .put(
                "index/b",
                Bytes::from_static(b"bad"),
                &PutOptions::default(),
            )
            .unwrap();
        cache
            .put(
                "data/c",
                Bytes::from_static(b"OK c"),
                &PutOptions::default(),
            )
            .unwrap();
        assert!(dir.path().join("index/a").exists());
        assert!(
            !dir.path().join("index/b").exists(),
            "content failing the check is not cached"
        );
        assert!(
            !dir.path().join("data/c").exists(),
            "only the named prefixes are cached"
        );
        assert_eq!(&cache.get("index/b", None).unwrap()[..], b"bad");
    }

    #[test]
    fn cache_dir_is_keyed_by_repository_id() {
        let d = default_cache_dir("0123abcd/../x").unwrap();
        assert!(d.ends_with("lifeboat/0123abcd_.._x"), "{d:?}");
    }

    #[test]
    fn conformance_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::new(
            Arc::new(MemoryStorage::new()),
            dir.path(),
            &["conf", "range", "big"],
            CacheVerify::Custom(Arc::new(|_: &str, _: &[u8]| true)),
        );
        crate::conformance::run_all(&cache);
    }
}
