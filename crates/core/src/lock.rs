//! Backup sessions: making running backups visible to `prune`.
//!
//! Every writer of new snapshots (the archiver, stream backups) holds a
//! [`Session`] while it runs: a plain JSON object `locks/<random hex>` with the
//! host, process id, purpose, the time the writer's view of the index was taken
//! (`started`) and the time it was last refreshed (`refreshed`). A background
//! thread rewrites it every [`REFRESH_INTERVAL`]; dropping the session deletes it.
//!
//! `prune` (see [`crate::prune`]) never deletes a marked pack while a live
//! session that started before the mark exists: such a backup may have
//! deduplicated against blobs in that pack. A session whose `refreshed` time is
//! older than [`STALE_AFTER`] belongs to a process that died and is ignored.
//!
//! Lock objects are not encrypted (like key slots): they hold a host name, a pid
//! and two times, nothing about the data.
//!
//! # Errors
//! [`Session::start`] fails with the storage error of the first write; refresh
//! failures are retried at the next interval (a lock that cannot be refreshed
//! becomes stale, which only makes prune wait less — see docs/MAINTENANCE.md).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_storage::{DynStorage, PutOptions, StorageError};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Storage prefix of session objects.
pub const LOCK_PREFIX: &str = "locks";
/// How often a live session rewrites its object.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// A session not refreshed for this long is considered dead.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// What a session object holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub hostname: String,
    pub pid: u32,
    /// `backup`, `stream backup`, ...
    pub purpose: String,
    /// When the writer's view of the index was taken (at or before it started).
    pub started: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

impl SessionInfo {
    /// Whether the session was refreshed within [`STALE_AFTER`] of `now`.
    pub fn is_alive(&self, now: DateTime<Utc>) -> bool {
        now.signed_duration_since(self.refreshed)
            .to_std()
            .map_or(true, |age| age < STALE_AFTER)
    }
}

/// A running session; deletes its object when dropped.
#[derive(Debug)]
pub struct Session {
    storage: DynStorage,
    key: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

impl Session {
    /// Write `locks/<random>` and start refreshing it.
    ///
    /// `started` must be no later than the moment the caller loaded the index it
    /// deduplicates against ([`crate::repository::IndexedRepository::loaded_at`]).
    ///
    /// # Errors
    /// The storage error of the first write.
    pub fn start(storage: &DynStorage, started: DateTime<Utc>, purpose: &str) -> Result<Session> {
        let mut rid = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rid);
        let key = format!("{LOCK_PREFIX}/{}", hex::encode(rid));
        let info = SessionInfo {
            hostname: crate::util::hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            started,
            refreshed: Utc::now(),
        };
        write(storage, &key, &info)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let refresher = {
            let (storage, key, stop) = (storage.clone(), key.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut info = info;
                let (flag, cv) = &*stop;
                let mut stopped = flag.lock();
                while !*stopped {
                    if cv.wait_for(&mut stopped, REFRESH_INTERVAL).timed_out() {
                        info.refreshed = Utc::now();
                        // A failed refresh is retried at the next interval.
                        let _ = write(&storage, &key, &info);
                    }
                }
            })
        };
        Ok(Session {
            storage: storage.clone(),
            key,
            stop,
            refresher: Some(refresher),
        })
    }

    /// The storage key of this session's object.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        {
            let (flag, cv) = &*self.stop;
            *flag.lock() = true;
            cv.notify_all();
        }
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let _ = self.storage.delete(&self.key);
    }
}

fn write(storage: &DynStorage, key: &str, info: &SessionInfo) -> Result<()> {
    let json = serde_json::to_vec(info).expect("session info serialises");
    storage.put(key, Bytes::from(json), &PutOptions::default())?;
    Ok(())
}

/// Every session object with its key. Unreadable objects are returned as
/// sessions that started at the epoch and are alive (the safe reading: prune
/// waits), unless the object vanished meanwhile.
///
/// # Errors
/// Storage errors of the listing.
pub fn sessions(storage: &DynStorage) -> Result<Vec<(String, SessionInfo)>> {
    let mut out = Vec::new();
    for m in storage.list(LOCK_PREFIX)? {
        match storage.get(&m.key, None) {
            Ok(b) => {
                let info = serde_json::from_slice(&b).unwrap_or_else(|_| SessionInfo {
                    hostname: "?".into(),
                    pid: 0,
                    purpose: "unreadable lock object".into(),
                    started: DateTime::<Utc>::UNIX_EPOCH,
                    refreshed: Utc::now(),
                });
                out.push((m.key, info));
            }
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(Error::from(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_storage::MemoryStorage;

    #[test]
    fn session_is_listed_while_alive_and_removed_on_drop() {
        let storage: DynStorage = Arc::new(MemoryStorage::new());
        let t = Utc::now();
        let s = Session::start(&storage, t, "backup").unwrap();
        let listed = sessions(&storage).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, s.key());
        assert_eq!(listed[0].1.started, t);
        assert!(listed[0].1.is_alive(Utc::now()));
        drop(s);
        assert!(sessions(&storage).unwrap().is_empty());
    }

    #[test]
    fn old_refresh_is_stale() {
        let now = Utc::now();
        let info = SessionInfo {
            hostname: "h".into(),
            pid: 1,
            purpose: "backup".into(),
            started: now,
            refreshed: now - chrono::Duration::minutes(16),
        };
        assert!(!info.is_alive(now));
    }
}
