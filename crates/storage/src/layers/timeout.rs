//! A per-call time limit for any backend.
//!
//! A sync call cannot be cancelled from outside, so each call runs on a helper
//! thread and the caller stops waiting after the limit with a retryable
//! `TimedOut` error. Helper threads are kept and reused: spawning one per call
//! (~100 µs, a dozen syscalls) was most of the system time of an unchanged
//! re-backup, which reads one tree blob per directory. (Not tokio's blocking
//! pool: callers are plain threads with no runtime, and OpenDAL backends
//! enter their own runtime inside the call.) The abandoned call finishes (or fails) on its own; because
//! `put` is atomic, an abandoned put either stores the whole object or nothing.
//! (OpenDAL backends can also cancel the request itself:
//! [`OpendalStorage::with_timeout`](crate::OpendalStorage::with_timeout).)

use std::ops::Range;
use std::sync::{mpsc, Mutex};
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
        let job: Job = Box::new(move || {
            let result = f(inner);
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        if let Err(e) = run_on_helper(job) {
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

/// A call to run; it returns the delivery of its answer, which the helper
/// runs only after it is idle again, so a caller that makes its next call as
/// soon as it has the answer finds this helper free instead of starting one.
type Job = Box<dyn FnOnce() -> Box<dyn FnOnce() + Send> + Send>;

/// Idle helper threads, each waiting on its own job channel. A helper puts
/// its sender back here after each job; one stuck in a call that timed out
/// simply stays away until the call returns. Helpers never exit: there are as
/// many as the most calls ever in flight at once (a few dozen at most).
static IDLE: Mutex<Vec<mpsc::Sender<Job>>> = Mutex::new(Vec::new());

fn run_on_helper(job: Job) -> std::io::Result<()> {
    let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
    if let Some(helper) = idle {
        // A helper only drops its receiver by panicking; then start a new one.
        match helper.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(job)) => return spawn_helper(job),
        }
    }
    spawn_helper(job)
}

fn spawn_helper(first: Job) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Job>();
    tx.send(first).expect("receiver is alive");
    std::thread::Builder::new()
        .name("lifeboat-storage-call".into())
        .spawn(move || {
            for job in rx.iter() {
                let deliver = job();
                IDLE.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(tx.clone());
                deliver();
            }
        })
        .map(drop)
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

    /// A timeout layer over storage whose every call stalls for `latency_ms`.
    fn stalling(latency_ms: u64, limit: Duration) -> TimeoutStorage {
        let slow = FaultStorage::new(
            Arc::new(MemoryStorage::new()),
            FaultConfig {
                latency: Duration::from_millis(latency_ms),
                ..FaultConfig::none(1)
            },
        );
        TimeoutStorage::new(Arc::new(slow), limit)
    }

    #[test]
    fn slow_calls_time_out_and_fast_ones_pass() {
        // Wide margins: a loaded CI machine can delay the answer by a lot
        // more than the limit, never by the call's whole stall.
        let s = stalling(3000, Duration::from_millis(50));
        let t = Instant::now();
        let err = s.head("a/b").unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(1500), "gave up on time");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");

        let fast = TimeoutStorage::new(Arc::new(MemoryStorage::new()), Duration::from_secs(5));
        crate::conformance::run_all(&fast);
    }

    #[test]
    fn helper_threads_are_reused_and_a_stuck_one_does_not_block_others() {
        let names = |s: &TimeoutStorage| {
            (0..50)
                .map(|_| s.call("k", |_| Ok(std::thread::current().id())).unwrap())
                .collect::<std::collections::HashSet<_>>()
        };
        let fast = TimeoutStorage::new(Arc::new(MemoryStorage::new()), Duration::from_secs(5));
        // Sequential calls reuse helpers (other tests may run calls in
        // parallel and add a few), never one thread per call.
        assert!(names(&fast).len() <= 5, "helpers are reused");

        // A call stuck past its limit keeps its helper; later calls still run.
        let s = stalling(3000, Duration::from_millis(20));
        assert!(s.head("x").is_err());
        let t = Instant::now();
        assert_eq!(
            fast.call("k", |_| Ok(7)).unwrap(),
            7,
            "another helper answers"
        );
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "waited for the stuck call"
        );
    }
}
