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
/// Storage prefix of the exclusive maintenance lock (`prune`, `repair index`).
pub const EXCLUSIVE_PREFIX: &str = "exclusive-locks";
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
        Self::start_under(storage, LOCK_PREFIX, started, purpose)
    }

    /// Take the exclusive maintenance lock: at most one `prune` or
    /// `repair index` runs per repository (two could each rewrite the index,
    /// and one could delete a pack the other just re-indexed).
    ///
    /// Protocol: write `exclusive-locks/<random>` (refreshed like a session),
    /// then list the prefix. If any *other* live lock object is there, remove
    /// ours and fail naming the holder. Two processes that start together may
    /// both see each other and both give up (retry later), but never both go
    /// on: the second writer's listing always sees the first writer's object.
    /// A lock not refreshed for [`STALE_AFTER`] belongs to a dead process and
    /// is removed.
    ///
    /// # Errors
    /// [`Error::Other`] naming the host, pid, purpose and start of the holder;
    /// storage errors.
    pub fn exclusive(storage: &DynStorage, purpose: &str) -> Result<Session> {
        let me = Self::start_under(storage, EXCLUSIVE_PREFIX, Utc::now(), purpose)?;
        let now = Utc::now();
        for (key, info) in list_under(storage, EXCLUSIVE_PREFIX)? {
            if key == me.key {
                continue;
            }
            if !info.is_alive(now) {
                tracing::warn!(
                    "removing the stale {} lock of host {} (pid {}, last refreshed {})",
                    info.purpose,
                    info.hostname,
                    info.pid,
                    info.refreshed.to_rfc3339()
                );
                let _ = storage.delete(&key);
                continue;
            }
            drop(me);
            return Err(Error::Other(format!(
                "another {} is running on host {} (pid {}, since {}, lock object {key}); \
                 only one prune or repair index may run at a time. If that process is dead, \
                 its lock becomes stale {} minutes after its last refresh ({})",
                info.purpose,
                info.hostname,
                info.pid,
                info.started.to_rfc3339(),
                STALE_AFTER.as_secs() / 60,
                info.refreshed.to_rfc3339()
            )));
        }
        Ok(me)
    }

    fn start_under(
        storage: &DynStorage,
        prefix: &str,
        started: DateTime<Utc>,
        purpose: &str,
    ) -> Result<Session> {
        let mut rid = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rid);
        let key = format!("{prefix}/{}", hex::encode(rid));
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

    /// Start the session of a backup that deduplicates against `view`.
    ///
    /// The session object is written *after* `view` was loaded, so a prune
    /// could have marked, and (in a later run) deleted, a pack of `view` in
    /// between without seeing the session. That is only possible if a prune
    /// rewrote the index after `view` was loaded, which deletes the index
    /// files `view` was built from. So after writing the session, the index
    /// files are listed again: if one of `view`'s files is gone (or `view`
    /// was built by hand), a fresh view is loaded and returned; it was loaded
    /// after the session existed, so every later mark sees the session.
    ///
    /// # Errors
    /// Storage errors of the session write, the listing or the reload.
    pub fn start_for(
        view: &crate::repository::IndexedRepository,
        purpose: &str,
    ) -> Result<(Session, Option<crate::repository::IndexedRepository>)> {
        let session = Session::start(view.storage(), view.loaded_at(), purpose)?;
        let current: std::collections::HashSet<crate::blob::Id> =
            view.list_ids("index")?.into_iter().collect();
        let intact = view
            .index_file_ids()
            .is_some_and(|ids| ids.iter().all(|id| current.contains(id)));
        if intact {
            return Ok((session, None));
        }
        tracing::debug!("the index changed before the {purpose} session was written; reloading it");
        let fresh = view.repository().clone().into_indexed()?;
        Ok((session, Some(fresh)))
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
    list_under(storage, LOCK_PREFIX)
}

/// Every lock object under `prefix` (see [`sessions`]).
///
/// # Errors
/// Storage errors of the listing.
pub fn list_under(storage: &DynStorage, prefix: &str) -> Result<Vec<(String, SessionInfo)>> {
    let mut out = Vec::new();
    for m in storage.list(prefix)? {
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
    fn exclusive_lock_refuses_a_second_holder_and_ignores_stale_ones() {
        let storage: DynStorage = Arc::new(MemoryStorage::new());
        let first = Session::exclusive(&storage, "prune").unwrap();
        let err = Session::exclusive(&storage, "repair index")
            .unwrap_err()
            .to_string();
        assert!(err.contains("another prune is running"), "{err}");
        assert!(err.contains(first.key()), "{err}");
        // The refused attempt left no object behind.
        assert_eq!(list_under(&storage, EXCLUSIVE_PREFIX).unwrap().len(), 1);
        drop(first);
        // A dead holder: its lock was last refreshed 16 minutes ago.
        let old = Utc::now() - chrono::Duration::minutes(16);
        let dead = SessionInfo {
            hostname: "gone".into(),
            pid: 7,
            purpose: "prune".into(),
            started: old,
            refreshed: old,
        };
        write(&storage, &format!("{EXCLUSIVE_PREFIX}/dead"), &dead).unwrap();
        let second = Session::exclusive(&storage, "prune").unwrap();
        let left = list_under(&storage, EXCLUSIVE_PREFIX).unwrap();
        assert_eq!(left.len(), 1, "the stale lock was removed");
        assert_eq!(left[0].0, second.key());
        // Exclusive locks are not backup sessions (prune does not wait for itself).
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
