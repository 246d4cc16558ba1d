//! The local filesystem backend: the embedded default.
//!
//! Objects are files under the root directory, keys map to relative paths.
//! `put` writes a hidden temporary file (`.lbtmp-*`) in the destination
//! directory, `fsync`s it, then renames it into place (`Overwrite`) or
//! hard-links it (`Create`, which fails atomically if the name exists), and
//! `fsync`s the directory. Listing skips temporary files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rand::Rng;

use crate::{
    check_range, validate_key, ObjectMeta, PutMode, PutOptions, Storage, StorageError,
    StorageResult,
};

const TMP_PREFIX: &str = ".lbtmp-";

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    location: String,
    sync: bool,
}

impl LocalStorage {
    /// Open (without creating) a directory as storage.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let location = root.display().to_string();
        Self {
            root,
            location,
            sync: true,
        }
    }

    /// Skip `fsync` calls (tests and benchmarks on throwaway data only).
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StorageResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, key: &str, err: std::io::Error) -> StorageError {
        StorageError::from_io(key, &self.location, err)
    }

    fn write_tmp(&self, key: &str, dir: &Path, data: &[u8]) -> StorageResult<PathBuf> {
        let mut rng = rand::thread_rng();
        let tmp = dir.join(format!("{TMP_PREFIX}{:016x}", rng.gen::<u64>()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            if self.sync {
                f.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(key, e));
        }
        Ok(tmp)
    }

    fn sync_dir(&self, dir: &Path) {
        if self.sync {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| self.io(key, e))?;
        if options.mode == PutMode::Create && path.exists() {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
                location: self.location.clone(),
            });
        }
        let tmp = self.write_tmp(key, &dir, &data)?;
        let result = match options.mode {
            PutMode::Overwrite => std::fs::rename(&tmp, &path),
            PutMode::Create => {
                let r = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                r
            }
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(key, e));
        }
        self.sync_dir(&dir);
        Ok(())
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        let mut buf = Vec::new();
        self.get_into(key, range, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Reads straight into `buf`'s spare capacity: no zeroing first, and no
    /// allocation when the caller's buffer is already large enough.
    fn get_into(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> StorageResult<()> {
        let path = self.path(key)?;
        let mut f = File::open(&path).map_err(|e| self.io(key, e))?;
        let size = f.metadata().map_err(|e| self.io(key, e))?.len();
        let range = range.unwrap_or(0..size);
        check_range(key, &range, size)?;
        let len = range.end - range.start;
        buf.clear();
        buf.reserve_exact(len as usize);
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| f.take(len).read_to_end(buf))
            .and_then(|n| match n as u64 == len {
                true => Ok(()),
                // The file shrank between the size check and the read.
                false => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("short read: got {n} of {len} bytes"),
                )),
            })
            .map_err(|e| self.io(key, e))
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let path = self.path(key)?;
        let meta = std::fs::metadata(&path).map_err(|e| self.io(key, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound {
                key: key.to_string(),
                location: self.location.clone(),
            });
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.len(),
        })
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let dir = self.path(prefix)?;
        let mut out = Vec::new();
        let mut stack = vec![(dir, prefix.to_string())];
        while let Some((dir, key_prefix)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&key_prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io(&key_prefix, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let key = format!("{key_prefix}/{name}");
                // An object deleted after `read_dir` named it (a concurrent
                // prune) is left out, as if listed a moment later: `metadata`
                // stats it (and `file_type` does where the file system gives
                // no type in the directory entry), which would fail with
                // `NotFound` for the whole listing.
                let ft = match entry.file_type() {
                    Ok(ft) => ft,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io(&key, e)),
                };
                if ft.is_dir() {
                    stack.push((entry.path(), key));
                } else if ft.is_file() {
                    let size = match entry.metadata() {
                        Ok(m) => m.len(),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(self.io(&key, e)),
                    };
                    out.push(ObjectMeta { key, size });
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).without_sync();
        crate::conformance::run_all(&storage);
    }

    #[test]
    fn a_listing_leaves_out_objects_deleted_while_it_runs() {
        // Objects deleted between `read_dir` naming them and their stat are
        // left out, not a `NotFound` for the whole listing (a backup listing
        // `index/` while a prune deletes superseded files).
        let dir = tempfile::tempdir().unwrap();
        let storage = std::sync::Arc::new(LocalStorage::new(dir.path()).without_sync());
        for round in 0..3 {
            let keys: Vec<String> = (0..1000).map(|i| format!("index/{round}-{i:05}")).collect();
            for k in &keys {
                storage
                    .put(k, Bytes::from_static(b"x"), &PutOptions::create())
                    .unwrap();
            }
            let deleter = {
                let storage = storage.clone();
                std::thread::spawn(move || {
                    for k in &keys {
                        storage.delete(k).unwrap();
                    }
                })
            };
            while !deleter.is_finished() {
                let listed = storage.list("index").unwrap();
                assert!(listed.len() <= 1000, "{}", listed.len());
            }
            deleter.join().unwrap();
            assert!(storage.list("index").unwrap().is_empty());
        }
    }

    #[test]
    fn no_temporary_file_survives_a_failed_create() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage
            .put("a/b", Bytes::from_static(b"1"), &PutOptions::create())
            .unwrap();
        assert!(storage
            .put("a/b", Bytes::from_static(b"2"), &PutOptions::create())
            .is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b")]);
    }
}
