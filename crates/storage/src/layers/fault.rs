//! Seeded fault injection for tests of resilience.
//!
//! Each call draws from a seeded RNG and, at the configured rates, fails the
//! way a bad network does:
//!
//! * **error** — a retryable backend error. For `put`, half of them happen
//!   after the object was stored (the request succeeded but the answer was
//!   lost), half before.
//! * **timeout** — waits [`FaultConfig::timeout_delay`], then a retryable
//!   `TimedOut` error; for `put`, the object may or may not have been stored.
//! * **truncation** — the transfer is cut part-way. A `get` reads the object,
//!   then reports `UnexpectedEof` naming how many bytes arrived: it never
//!   returns the short data. A cut `put` stores nothing (uploads are atomic).
//!
//! Injected errors are all retryable, so [`RetryStorage`](super::RetryStorage)
//! above this layer should hide them; without it, callers see clean errors and
//! never a partial object.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{DynStorage, ObjectMeta, PutOptions, Storage, StorageError, StorageResult};

/// Fault rates (each in `0.0..=1.0`, summed ≤ 1) and timings.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    pub error_rate: f64,
    pub timeout_rate: f64,
    pub truncate_rate: f64,
    /// How long an injected timeout stalls before failing.
    pub timeout_delay: Duration,
    /// Added to every call (simulated network latency).
    pub latency: Duration,
}

impl FaultConfig {
    /// No faults.
    pub fn none(seed: u64) -> Self {
        Self {
            seed,
            error_rate: 0.0,
            timeout_rate: 0.0,
            truncate_rate: 0.0,
            timeout_delay: Duration::from_millis(5),
            latency: Duration::ZERO,
        }
    }

    /// Faults on `rate` of all calls, split evenly between errors, timeouts and
    /// truncations.
    pub fn uniform(seed: u64, rate: f64) -> Self {
        Self {
            error_rate: rate / 3.0,
            timeout_rate: rate / 3.0,
            truncate_rate: rate / 3.0,
            ..Self::none(seed)
        }
    }
}

impl FaultConfig {
    /// Parse a spec such as `rate=0.1,seed=7` (the CLI's `LIFEBOAT_TEST_FAULTS`).
    ///
    /// Keys: `rate` (split evenly as in [`FaultConfig::uniform`]), or
    /// `errors`, `timeouts`, `truncations` separately; `seed` (default: random);
    /// `timeout_ms` (stall of an injected timeout, default 5); `latency_ms`.
    ///
    /// # Errors
    /// A message naming the unknown key or bad value, or rates summing above 1.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut c = Self::none(rand::random());
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            let num = |v: &str| -> Result<f64, String> {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("{k}: {v:?} is not a non-negative number"))
            };
            match k.trim() {
                "rate" => {
                    let r = num(v)?;
                    c.error_rate = r / 3.0;
                    c.timeout_rate = r / 3.0;
                    c.truncate_rate = r / 3.0;
                }
                "errors" => c.error_rate = num(v)?,
                "timeouts" => c.timeout_rate = num(v)?,
                "truncations" => c.truncate_rate = num(v)?,
                "seed" => c.seed = num(v)? as u64,
                "timeout_ms" => c.timeout_delay = Duration::from_millis(num(v)? as u64),
                "latency_ms" => c.latency = Duration::from_millis(num(v)? as u64),
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        if c.error_rate + c.timeout_rate + c.truncate_rate > 1.0 {
            return Err("fault rates add up to more than 1".into());
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Error,
    Timeout,
    Truncate,
}

#[derive(Debug)]
pub struct FaultStorage {
    inner: DynStorage,
    config: FaultConfig,
    rng: Mutex<StdRng>,
    injected: AtomicU64,
}

impl FaultStorage {
    pub fn new(inner: DynStorage, config: FaultConfig) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            inner,
            config,
            injected: AtomicU64::new(0),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn draw(&self) -> (Fault, bool) {
        if !self.config.latency.is_zero() {
            std::thread::sleep(self.config.latency);
        }
        let (r, coin) = {
            let mut rng = self.rng.lock();
            (rng.gen::<f64>(), rng.gen::<bool>())
        };
        let c = &self.config;
        let fault = if r < c.error_rate {
            Fault::Error
        } else if r < c.error_rate + c.timeout_rate {
            Fault::Timeout
        } else if r < c.error_rate + c.timeout_rate + c.truncate_rate {
            Fault::Truncate
        } else {
            Fault::None
        };
        if fault != Fault::None {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        (fault, coin)
    }

    fn error(&self, key: &str, op: &str) -> StorageError {
        StorageError::transient(
            key,
            &self.inner.location(),
            format!("injected fault during {op}"),
        )
    }

    fn timeout(&self, key: &str) -> StorageError {
        std::thread::sleep(self.config.timeout_delay);
        StorageError::Io {
            key: key.to_string(),
            location: self.inner.location(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "injected timeout"),
        }
    }

    /// Faults for calls that transfer no body.
    fn simple<T>(
        &self,
        key: &str,
        op: &str,
        f: impl FnOnce() -> StorageResult<T>,
    ) -> StorageResult<T> {
        match self.draw().0 {
            Fault::None => f(),
            Fault::Error | Fault::Truncate => Err(self.error(key, op)),
            Fault::Timeout => Err(self.timeout(key)),
        }
    }
}

impl Storage for FaultStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        let (fault, after) = self.draw();
        match fault {
            Fault::None => self.inner.put(key, data, options),
            Fault::Error => {
                if after {
                    self.inner.put(key, data, options)?;
                }
                Err(self.error(key, "put"))
            }
            Fault::Timeout => {
                if after {
                    self.inner.put(key, data, options)?;
                }
                Err(self.timeout(key))
            }
            Fault::Truncate => Err(StorageError::Io {
                key: key.to_string(),
                location: self.inner.location(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    format!(
                        "injected: upload cut after {} of {} bytes",
                        data.len() / 2,
                        data.len()
                    ),
                ),
            }),
        }
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        match self.draw().0 {
            Fault::None => self.inner.get(key, range),
            Fault::Error => Err(self.error(key, "get")),
            Fault::Timeout => Err(self.timeout(key)),
            Fault::Truncate => {
                let full = self.inner.get(key, range)?;
                Err(StorageError::Io {
                    key: key.to_string(),
                    location: self.inner.location(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "injected: connection closed after {} of {} bytes",
                            full.len() / 2,
                            full.len()
                        ),
                    ),
                })
            }
        }
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.simple(key, "head", || self.inner.head(key))
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.simple(prefix, "list", || self.inner.list(prefix))
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.simple(key, "delete", || self.inner.delete(key))
    }

    fn exists(&self, key: &str) -> StorageResult<bool> {
        self.simple(key, "exists", || self.inner.exists(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_name_the_problem() {
        let c = FaultConfig::parse("rate=0.3, seed=7,timeout_ms=1").unwrap();
        assert_eq!(c.seed, 7);
        assert!((c.error_rate - 0.1).abs() < 1e-9 && (c.truncate_rate - 0.1).abs() < 1e-9);
        assert_eq!(c.timeout_delay, Duration::from_millis(1));
        let c = FaultConfig::parse("errors=0.2,truncations=0.05").unwrap();
        assert_eq!(
            (c.error_rate, c.timeout_rate, c.truncate_rate),
            (0.2, 0.0, 0.05)
        );
        assert!(FaultConfig::parse("rate=2")
            .unwrap_err()
            .contains("more than 1"));
        assert!(FaultConfig::parse("bogus=1").unwrap_err().contains("bogus"));
        assert!(FaultConfig::parse("rate=x").unwrap_err().contains("rate"));
        assert!(FaultConfig::parse("rate").is_err());
    }
}
