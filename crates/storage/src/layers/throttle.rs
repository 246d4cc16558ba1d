//! Bandwidth limits (`--limit-upload`, `--limit-download`, KiB/s).
//!
//! Each direction is a virtual link of the given rate shared by every thread:
//! a transfer of `n` bytes occupies it for `n / rate` seconds after the
//! previous transfer's slot, and the call returns only when its slot ends.
//! Uploads wait before sending, downloads after receiving (a sync wrapper sees
//! whole objects), so the average rate over any stretch longer than one object
//! stays at or below the limit.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::{DynStorage, ObjectMeta, PutOptions, Storage, StorageResult};

#[derive(Debug)]
struct Link {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl Link {
    fn new(kib_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: kib_per_sec.max(1) * 1024,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Reserve the link for `bytes` and sleep until the reservation ends.
    fn transfer(&self, bytes: usize) {
        let busy = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let done = {
            let mut next = self.next_free.lock();
            let start = (*next).max(Instant::now());
            *next = start + busy;
            *next
        };
        let now = Instant::now();
        if done > now {
            std::thread::sleep(done - now);
        }
    }
}

#[derive(Debug)]
pub struct ThrottleStorage {
    inner: DynStorage,
    upload: Option<Link>,
    download: Option<Link>,
}

impl ThrottleStorage {
    /// Limits in KiB/s; `None` leaves a direction unlimited.
    pub fn new(inner: DynStorage, upload_kib: Option<u64>, download_kib: Option<u64>) -> Self {
        Self {
            inner,
            upload: upload_kib.map(Link::new),
            download: download_kib.map(Link::new),
        }
    }
}

impl Storage for ThrottleStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        if let Some(link) = &self.upload {
            link.transfer(data.len());
        }
        self.inner.put(key, data, options)
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        let data = self.inner.get(key, range)?;
        if let Some(link) = &self.download {
            link.transfer(data.len());
        }
        Ok(data)
    }

    fn get_into(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> StorageResult<()> {
        self.inner.get_into(key, range, buf)?;
        if let Some(link) = &self.download {
            link.transfer(buf.len());
        }
        Ok(())
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(key)
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key)
    }

    fn exists(&self, key: &str) -> StorageResult<bool> {
        self.inner.exists(key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::MemoryStorage;

    #[test]
    fn upload_and_download_rates_are_held_across_threads() {
        // 512 KiB/s up, 1024 KiB/s down; 4 threads each move 64 KiB x 2.
        let s = ThrottleStorage::new(Arc::new(MemoryStorage::new()), Some(512), Some(1024));
        let t = Instant::now();
        std::thread::scope(|scope| {
            for th in 0..4 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..2 {
                        let key = format!("t/{th}/{i}");
                        s.put(
                            &key,
                            Bytes::from(vec![0u8; 64 * 1024]),
                            &PutOptions::default(),
                        )
                        .unwrap();
                    }
                });
            }
        });
        let up = t.elapsed();
        // 512 KiB at 512 KiB/s: about one second, never much less.
        assert!(up >= Duration::from_millis(850), "upload took {up:?}");
        assert!(up < Duration::from_millis(2500), "upload took {up:?}");
        let t = Instant::now();
        for th in 0..4 {
            for i in 0..2 {
                s.get(&format!("t/{th}/{i}"), None).unwrap();
            }
        }
        let down = t.elapsed();
        assert!(down >= Duration::from_millis(400), "download took {down:?}");
        assert!(down < Duration::from_millis(1500), "download took {down:?}");
    }
}
