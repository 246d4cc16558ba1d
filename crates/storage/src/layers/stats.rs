//! Request counters per operation, for `--json` summaries and cost estimates.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{DynStorage, ObjectMeta, PutOptions, Storage, StorageResult};

/// A snapshot of the counters. Every request that reached the backend is
/// counted, failed ones and retries included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStats {
    pub list: u64,
    pub get: u64,
    pub put: u64,
    pub delete: u64,
    pub head: u64,
    /// Requests that returned an error (NotFound on `head`/`exists` is an
    /// answer, not an error, and is not counted here).
    pub errors: u64,
    /// Bytes downloaded by successful `get`s.
    pub bytes_read: u64,
    /// Bytes uploaded by `put`s (attempted).
    pub bytes_written: u64,
}

impl std::ops::AddAssign<&StorageStats> for StorageStats {
    fn add_assign(&mut self, o: &StorageStats) {
        self.list += o.list;
        self.get += o.get;
        self.put += o.put;
        self.delete += o.delete;
        self.head += o.head;
        self.errors += o.errors;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
    }
}

impl StorageStats {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.list + self.get + self.put + self.delete + self.head
    }
}

#[derive(Debug, Default)]
struct Counters {
    list: AtomicU64,
    get: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    head: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// A cloneable handle to read the counters of a [`CountingStorage`].
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    pub fn snapshot(&self) -> StorageStats {
        let c = &self.0;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageStats {
            list: l(&c.list),
            get: l(&c.get),
            put: l(&c.put),
            delete: l(&c.delete),
            head: l(&c.head),
            errors: l(&c.errors),
            bytes_read: l(&c.bytes_read),
            bytes_written: l(&c.bytes_written),
        }
    }
}

#[derive(Debug)]
pub struct CountingStorage {
    inner: DynStorage,
    stats: StatsHandle,
}

impl CountingStorage {
    pub fn new(inner: DynStorage) -> Self {
        Self {
            inner,
            stats: StatsHandle::default(),
        }
    }

    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    fn count<T>(&self, counter: &AtomicU64, result: StorageResult<T>) -> StorageResult<T> {
        counter.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.stats.0.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl Storage for CountingStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        self.stats
            .0
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let r = self.inner.put(key, data, options);
        self.count(&self.stats.0.put, r)
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        let r = self.inner.get(key, range);
        if let Ok(b) = &r {
            self.stats
                .0
                .bytes_read
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        self.count(&self.stats.0.get, r)
    }

    fn get_into(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> StorageResult<()> {
        let r = self.inner.get_into(key, range, buf);
        if r.is_ok() {
            self.stats
                .0
                .bytes_read
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        self.count(&self.stats.0.get, r)
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let r = self.inner.head(key);
        self.stats.0.head.fetch_add(1, Ordering::Relaxed);
        if matches!(&r, Err(e) if !e.is_not_found()) {
            self.stats.0.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let r = self.inner.list(prefix);
        self.count(&self.stats.0.list, r)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        let r = self.inner.delete(key);
        self.count(&self.stats.0.delete, r)
    }

    fn exists(&self, key: &str) -> StorageResult<bool> {
        // The default `exists` is one `head`; count it as one.
        let r = self.inner.exists(key);
        self.stats.0.head.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.stats.0.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    #[test]
    fn counts_requests_and_bytes() {
        let s = CountingStorage::new(Arc::new(MemoryStorage::new()));
        let h = s.stats_handle();
        s.put("a/1", Bytes::from_static(b"hello"), &PutOptions::default())
            .unwrap();
        s.put("a/1", Bytes::from_static(b"x"), &PutOptions::create())
            .unwrap_err();
        s.get("a/1", Some(1..3)).unwrap();
        s.get("a/2", None).unwrap_err();
        s.get_into("a/1", Some(0..4), &mut Vec::new()).unwrap();
        s.get_into("a/2", None, &mut Vec::new()).unwrap_err();
        s.head("a/2").unwrap_err();
        s.list("a").unwrap();
        s.delete("a/1").unwrap();
        assert!(!s.exists("a/1").unwrap());
        let st = h.snapshot();
        assert_eq!(
            st,
            StorageStats {
                list: 1,
                get: 4,
                put: 2,
                delete: 1,
                head: 2,
                errors: 3,
                bytes_read: 6,
                bytes_written: 6,
            }
        );
        assert_eq!(st.requests(), 10);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["put"], 2);
        assert_eq!(json["bytes_written"], 6);
    }
}
