//! Retries with exponential backoff and full jitter.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{DynStorage, ObjectMeta, PutOptions, Storage, StorageError, StorageResult};

/// When and how long to retry. Only errors with
/// [`StorageError::is_retryable`] are retried; NotFound, AlreadyExists, Range,
/// permission and configuration errors return at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff ceiling of the first retry, in milliseconds; doubles per retry.
    pub base_delay_ms: u64,
    /// Backoff ceiling, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay_ms: 100,
            max_delay_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The sleep before retry number `attempt` (0-based): uniformly random in
    /// `[0, min(max, base * 2^attempt)]` ("full jitter").
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base_delay_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(self.max_delay_ms);
        Duration::from_millis(rng.gen_range(0..=ceiling))
    }
}

/// Retries retryable failures of the wrapped storage.
///
/// A `put` in [`PutMode::Create`](crate::PutMode::Create) whose first attempt
/// failed may still have stored the object (the answer was lost). When a retry
/// then meets [`StorageError::AlreadyExists`], the stored object is read back:
/// if it is byte-for-byte what this call wrote, the put succeeded; otherwise
/// `AlreadyExists` is returned.
#[derive(Debug)]
pub struct RetryStorage {
    inner: DynStorage,
    policy: RetryPolicy,
}

impl RetryStorage {
    pub fn new(inner: DynStorage, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    fn retry<T>(
        &self,
        op: &str,
        key: &str,
        mut f: impl FnMut() -> StorageResult<T>,
    ) -> StorageResult<T> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if e.is_retryable() && attempt < self.policy.max_retries => {
                    let delay = self.policy.delay(attempt, &mut rand::thread_rng());
                    tracing::debug!(op, key, attempt, ?delay, error = %e, "retrying storage request");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl Storage for RetryStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        let mut failed_before = false;
        let result = self.retry("put", key, || {
            let r = self.inner.put(key, data.clone(), options);
            failed_before |= matches!(&r, Err(e) if e.is_retryable());
            r
        });
        match result {
            // An earlier attempt may have stored the object and lost the answer.
            // If what is stored is exactly what we wrote, the create succeeded.
            Err(StorageError::AlreadyExists { .. }) if failed_before => {
                match self.retry("get", key, || self.inner.get(key, None)) {
                    Ok(stored) if stored == data => Ok(()),
                    _ => result,
                }
            }
            other => other,
        }
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        self.retry("get", key, || self.inner.get(key, range.clone()))
    }

    fn get_into(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> StorageResult<()> {
        self.retry("get", key, || self.inner.get_into(key, range.clone(), buf))
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.retry("head", key, || self.inner.head(key))
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.retry("list", prefix, || self.inner.list(prefix))
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.retry("delete", key, || self.inner.delete(key))
    }

    fn exists(&self, key: &str) -> StorageResult<bool> {
        self.retry("exists", key, || self.inner.exists(key))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::MemoryStorage;

    /// Fails the first `fail` calls of `head` with the given error.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStorage,
        fail: u32,
        calls: AtomicU32,
        retryable: bool,
    }

    impl Storage for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn put(&self, k: &str, d: Bytes, o: &PutOptions) -> StorageResult<()> {
            self.inner.put(k, d, o)
        }
        fn get(&self, k: &str, r: Option<Range<u64>>) -> StorageResult<Bytes> {
            self.inner.get(k, r)
        }
        fn head(&self, k: &str) -> StorageResult<ObjectMeta> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(StorageError::Backend {
                    key: k.into(),
                    location: "flaky".into(),
                    message: "boom".into(),
                    retryable: self.retryable,
                });
            }
            self.inner.head(k)
        }
        fn list(&self, p: &str) -> StorageResult<Vec<ObjectMeta>> {
            self.inner.list(p)
        }
        fn delete(&self, k: &str) -> StorageResult<()> {
            self.inner.delete(k)
        }
    }

    fn flaky(fail: u32, retryable: bool) -> Arc<Flaky> {
        let inner = MemoryStorage::new();
        inner
            .put("k", Bytes::from_static(b"v"), &PutOptions::default())
            .unwrap();
        Arc::new(Flaky {
            inner,
            fail,
            calls: AtomicU32::new(0),
            retryable,
        })
    }

    const FAST: RetryPolicy = RetryPolicy {
        max_retries: 3,
        base_delay_ms: 1,
        max_delay_ms: 4,
    };

    #[test]
    fn retries_transient_errors_until_success() {
        let f = flaky(3, true);
        let s = RetryStorage::new(f.clone(), FAST);
        assert_eq!(s.head("k").unwrap().size, 1);
        assert_eq!(f.calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn gives_up_after_max_retries() {
        let f = flaky(10, true);
        let s = RetryStorage::new(f.clone(), FAST);
        assert!(s.head("k").unwrap_err().is_retryable());
        assert_eq!(f.calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn never_retries_permanent_errors() {
        let f = flaky(10, false);
        let s = RetryStorage::new(f.clone(), FAST);
        assert!(s.head("k").is_err());
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        assert!(s.get("missing", None).unwrap_err().is_not_found());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay_ms: 100,
            max_delay_ms: 1000,
        };
        let mut rng = rand::thread_rng();
        for attempt in 0..10 {
            let cap = (100u64 << attempt).min(1000);
            for _ in 0..50 {
                assert!(p.delay(attempt, &mut rng) <= Duration::from_millis(cap));
            }
        }
        // Jitter: not every delay is the ceiling.
        let distinct: std::collections::HashSet<_> =
            (0..50).map(|_| p.delay(5, &mut rng)).collect();
        assert!(distinct.len() > 5);
    }
}
