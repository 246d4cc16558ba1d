//! At most N calls in flight (`--connections N`).

use std::ops::Range;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::{DynStorage, ObjectMeta, PutOptions, Storage, StorageResult};

#[derive(Debug)]
pub struct ConcurrencyLimit {
    inner: DynStorage,
    max: usize,
    in_flight: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a ConcurrencyLimit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.in_flight.lock() -= 1;
        self.0.freed.notify_one();
    }
}

impl ConcurrencyLimit {
    /// `max` is clamped to at least 1.
    pub fn new(inner: DynStorage, max: usize) -> Self {
        Self {
            inner,
            max: max.max(1),
            in_flight: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn permit(&self) -> Permit<'_> {
        let mut n = self.in_flight.lock();
        while *n >= self.max {
            self.freed.wait(&mut n);
        }
        *n += 1;
        Permit(self)
    }
}

impl Storage for ConcurrencyLimit {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        let _p = self.permit();
        self.inner.put(key, data, options)
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        let _p = self.permit();
        self.inner.get(key, range)
    }

    fn get_into(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> StorageResult<()> {
        let _p = self.permit();
        self.inner.get_into(key, range, buf)
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let _p = self.permit();
        self.inner.head(key)
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let _p = self.permit();
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        let _p = self.permit();
        self.inner.delete(key)
    }

    fn exists(&self, key: &str) -> StorageResult<bool> {
        let _p = self.permit();
        self.inner.exists(key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::MemoryStorage;

    /// Records the highest number of concurrent `head` calls.
    #[derive(Debug, Default)]
    struct Gauge {
        now: AtomicUsize,
        peak: AtomicUsize,
        mem: MemoryStorage,
    }

    impl Storage for Gauge {
        fn location(&self) -> String {
            "gauge".into()
        }
        fn put(&self, k: &str, d: Bytes, o: &PutOptions) -> StorageResult<()> {
            self.mem.put(k, d, o)
        }
        fn get(&self, k: &str, r: Option<Range<u64>>) -> StorageResult<Bytes> {
            self.mem.get(k, r)
        }
        fn head(&self, k: &str) -> StorageResult<ObjectMeta> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.mem.head(k)
        }
        fn list(&self, p: &str) -> StorageResult<Vec<ObjectMeta>> {
            self.mem.list(p)
        }
        fn delete(&self, k: &str) -> StorageResult<()> {
            self.mem.delete(k)
        }
    }

    #[test]
    fn never_more_than_n_in_flight() {
        let gauge = Arc::new(Gauge::default());
        let s = ConcurrencyLimit::new(gauge.clone(), 3);
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| {
                    let _ = s.head("x");
                });
            }
        });
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 3);
        crate::conformance::run_all(&ConcurrencyLimit::new(Arc::new(MemoryStorage::new()), 2));
    }
}
