//! An in-memory backend for tests; follows the full contract.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::{
    check_range, validate_key, ObjectMeta, PutMode, PutOptions, Storage, StorageError,
    StorageResult,
};

#[derive(Debug, Default)]
pub struct MemoryStorage {
    objects: RwLock<BTreeMap<String, Bytes>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn not_found(key: &str) -> StorageError {
        StorageError::NotFound {
            key: key.to_string(),
            location: "memory".into(),
        }
    }
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory".into()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        validate_key(key)?;
        let mut objects = self.objects.write();
        if options.mode == PutMode::Create && objects.contains_key(key) {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
                location: "memory".into(),
            });
        }
        objects.insert(key.to_string(), data);
        Ok(())
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Bytes> {
        validate_key(key)?;
        let data = self
            .objects
            .read()
            .get(key)
            .cloned()
            .ok_or_else(|| Self::not_found(key))?;
        match range {
            None => Ok(data),
            Some(r) => {
                check_range(key, &r, data.len() as u64)?;
                Ok(data.slice(r.start as usize..r.end as usize))
            }
        }
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        validate_key(key)?;
        let objects = self.objects.read();
        let data = objects.get(key).ok_or_else(|| Self::not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
        })
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        validate_key(prefix)?;
        let start = format!("{prefix}/");
        Ok(self
            .objects
            .read()
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        validate_key(key)?;
        self.objects.write().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        crate::conformance::run_all(&super::MemoryStorage::new());
    }
}
