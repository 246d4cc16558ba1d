//! A per-call time limit for any backend.
//!
//! A sync call cannot be cancelled from outside, so each call runs on a helper
//! thread and the caller stops waiting after the limit with a retryable
//! `TimedOut` error. The abandoned call finishes (or fails) on its own; because
//! `put` is atomic, an abandoned put either stores the whole object or nothing.
//! (OpenDAL backends can also cancel the request itself:
//! [`OpendalStorage::with_timeout`](crate::OpendalStorage::with_timeout).)

use std::ops::Range;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

use crate::{DynStorage, ObjectMeta, PutOptions, Storage, StorageError, StorageResult};

#[derive(Debug)]
pub struct TimeoutStorage {
    inner: DynStorage,
    timeout: Duration,
}

impl TimeoutStorage {
    pub fn new(inner: DynStorage, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    fn call<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(DynStorage) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("lifeboat-storage-call".into())
            .spawn(move || {
                let _ = tx.send(f(inner));
            });
        if let Err(e) = spawned {
            return Err(StorageError::from_io(key, &self.inner.location(), e));
        }
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StorageError::Io {
                key: key.to_string(),
                location: self.inner.location(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.timeout),
                ),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("a storage call panicked on its helper thread")
            }
        }
    }
}

impl Storage for TimeoutStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        let (k, o) = (key.to_string(), options.clone());
        self.call(key, move |s| s.put(&k, data, &o))
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        let k = key.to_string();
        self.call(key, move |s| s.get(&k, range))
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let k = key.to_string();
        self.call(key, move |s| s.head(&k))
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let p = prefix.to_string();
        self.call(prefix, move |s| s.list(&p))
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        let k = key.to_string();
        self.call(key, move |s| s.delete(&k))
    }

    fn exists(&self, key: &str) -> StorageResult<bool> {
        let k = key.to_string();
        self.call(key, move |s| s.exists(&k))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::layers::{FaultConfig, FaultStorage};
    use crate::MemoryStorage;

    #[test]
    fn slow_calls_time_out_and_fast_ones_pass() {
        // Every call stalls for 300 ms.
        let slow = FaultStorage::new(
            Arc::new(MemoryStorage::new()),
            FaultConfig {
                latency: Duration::from_millis(300),
                ..FaultConfig::none(1)
            },
        );
        let s = TimeoutStorage::new(Arc::new(slow), Duration::from_millis(50));
        let t = Instant::now();
        let err = s.head("a/b").unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(250), "gave up on time");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");

        let fast = TimeoutStorage::new(Arc::new(MemoryStorage::new()), Duration::from_secs(5));
        crate::conformance::run_all(&fast);
    }
}
