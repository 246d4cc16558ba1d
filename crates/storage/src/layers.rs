//! Cross-cutting behaviour as wrappers: each wraps a [`DynStorage`] and is a
//! [`Storage`](crate::Storage) itself, so they stack in any order.
//!
//! | wrapper | does |
//! |---------|------|
//! | [`RetryStorage`] | retries retryable errors with exponential backoff and full jitter |
//! | [`TimeoutStorage`] | bounds each call's duration |
//! | [`ConcurrencyLimit`] | at most N calls in flight (`--connections N`) |
//! | [`ThrottleStorage`] | upload / download bandwidth limits in KiB/s |
//! | [`CountingStorage`] | request and byte counters ([`StorageStats`], serializable) |
//! | [`FaultStorage`] | seeded fault injection: errors, timeouts, truncated transfers |
//!
//! [`StorageStack`] assembles the usual stack from [`LayerOptions`] in the order
//! that makes each layer mean what it says:
//!
//! ```text
//! Retry → ConcurrencyLimit → Throttle → Timeout → Counting → backend
//! ```
//!
//! Retries sit outside the limit (a backoff sleep does not hold a connection),
//! the timeout sits inside the throttle (waiting for bandwidth is not a slow
//! request), and the counters sit next to the backend so every real request,
//! retries included, is counted.

mod fault;
mod limit;
mod retry;
mod stats;
mod throttle;
mod timeout;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use fault::{FaultConfig, FaultStorage};
pub use limit::ConcurrencyLimit;
pub use retry::{RetryPolicy, RetryStorage};
pub use stats::{CountingStorage, StatsHandle, StorageStats};
pub use throttle::ThrottleStorage;
pub use timeout::TimeoutStorage;

use crate::DynStorage;

/// Settings for [`StorageStack`]; `Default` is: 5 retries, 5 min timeout,
/// 8 connections, no bandwidth limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerOptions {
    /// Retry policy; `max_retries: 0` disables retries.
    pub retry: RetryPolicy,
    /// Per-request timeout in seconds; `None` for no timeout.
    pub timeout_secs: Option<u64>,
    /// Maximum concurrent requests; `None` for unlimited.
    pub connections: Option<usize>,
    /// Upload limit in KiB/s.
    pub limit_upload_kib: Option<u64>,
    /// Download limit in KiB/s.
    pub limit_download_kib: Option<u64>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeout_secs: Some(300),
            connections: Some(8),
            limit_upload_kib: None,
            limit_download_kib: None,
        }
    }
}

/// A wrapped backend plus the handle to its request counters.
#[derive(Debug, Clone)]
pub struct StorageStack {
    pub storage: DynStorage,
    pub stats: StatsHandle,
}

impl StorageStack {
    /// Wrap `backend` as described in the [module documentation](self).
    pub fn build(backend: DynStorage, opts: &LayerOptions) -> Self {
        let counting = CountingStorage::new(backend);
        let stats = counting.stats_handle();
        let mut s: DynStorage = Arc::new(counting);
        if let Some(secs) = opts.timeout_secs {
            s = Arc::new(TimeoutStorage::new(s, Duration::from_secs(secs)));
        }
        if opts.limit_upload_kib.is_some() || opts.limit_download_kib.is_some() {
            s = Arc::new(ThrottleStorage::new(
                s,
                opts.limit_upload_kib,
                opts.limit_download_kib,
            ));
        }
        if let Some(n) = opts.connections {
            s = Arc::new(ConcurrencyLimit::new(s, n));
        }
        if opts.retry.max_retries > 0 {
            s = Arc::new(RetryStorage::new(s, opts.retry.clone()));
        }
        Self { storage: s, stats }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    #[test]
    fn the_default_stack_follows_the_contract() {
        let stack = StorageStack::build(Arc::new(MemoryStorage::new()), &LayerOptions::default());
        crate::conformance::run_all(stack.storage.as_ref());
        let stats = stack.stats.snapshot();
        assert!(stats.put >= 128 && stats.get > 0 && stats.list > 0 && stats.delete > 0);
        assert!(stats.bytes_written >= 20 * 1024 * 1024, "{stats:?}");
    }
}
