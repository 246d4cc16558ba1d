//! Opening, initialising and reading a repository.
//!
//! Storage layout (all keys relative to the repository root):
//!
//! | key                 | content                                     |
//! |---------------------|---------------------------------------------|
//! | `config`            | sealed JSON [`Config`]                      |
//! | `keys/<id>`         | plain JSON [`KeySlot`]                      |
//! | `data/<xx>/<id>`    | pack files ([`crate::pack`])                |
//! | `index/<id>`        | sealed index files ([`crate::index`])       |
//! | `snapshots/<id>`    | sealed JSON [`Snapshot`]                    |
//!
//! Every id except the config's is the BLAKE3 of the stored bytes, so any
//! object can be checked against its name without a key.
//!
//! Lifecycle in types: [`Repository`] is an opened repository (keys unlocked,
//! config read); [`IndexedRepository`] adds the loaded index and is what every
//! operation that reads blobs needs.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use lifeboat_storage::{DynStorage, ObjectLockSetting, PutOptions, Retention, StorageError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::blob::{self, BlobType, Compression, Id};
use crate::chunker::{ChunkerConfig, ChunkerParams};
use crate::crypto::{ContentKey, KdfParams, KeySlot, MasterKey, ObjectKind};
use crate::error::{Error, Result};
use crate::group;
use crate::index::{BlobLocation, Index, IndexFile, IndexPack};
use crate::pack::pack_key;
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::tree::Tree;

pub const FORMAT_VERSION: u32 = 1;
/// Config version of repositories that carry their own [`ContentKey`]
/// (created with `init --copy-chunker-params`). Everything else is as in
/// version 1; builds that only know version 1 refuse such repositories instead
/// of writing blobs under the wrong ids.
pub const FORMAT_VERSION_CONTENT_KEY: u32 = 2;

/// Stored bytes of index files read in parallel at once
/// ([`Repository::index_batches`]).
pub const INDEX_BATCH_BYTES: u64 = 8 << 20;
/// Index files read in parallel at once, whatever their listed sizes (a
/// storage may list sizes as 0).
pub const INDEX_BATCH_FILES: usize = 16;

/// The repository configuration, sealed under `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random repository id (hex); names the local cache.
    pub id: String,
    pub created: DateTime<FixedOffset>,
    pub chunker: ChunkerParams,
    /// Default compression for new blobs (`none`, `lz4`, `zstd:N`).
    pub compression: String,
    /// Smallest target pack size in bytes; packs grow with the repository.
    pub min_pack_size: u64,
    /// Append-only repositories refuse deletes and rewrites.
    #[serde(default)]
    pub append_only: bool,
    /// Blob-id key and gear seed taken from another repository (version 2);
    /// absent: derived from the master secret (version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_key: Option<ContentKey>,
    /// S3 Object Lock retention for every object a restore needs (the CLI
    /// wraps the storage in [`lifeboat_storage::ObjectLockLayer`]); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockSetting>,
}

impl Config {
    pub fn compression(&self) -> Compression {
        self.compression.parse().unwrap_or_default()
    }

    /// The config as JSON for display: the content key is replaced by its
    /// fingerprint (it is key material).
    pub fn display_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let Some(ck) = &self.content_key {
            v["content_key"] = serde_json::json!({ "fingerprint": ck.fingerprint() });
        }
        v
    }
}

fn blob_damaged(id: &Id, pack: &Id, reason: String) -> Error {
    Error::damaged("blob", id, format!("in pack {pack}: {reason}"))
}

/// Where a blob's sealed bytes lie and what they hold, as the index (or a pack
/// header) says: what decoding them needs besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobAt {
    pub pack: Id,
    /// The range's offset in the pack (a compression group's members share it).
    pub offset: u32,
    pub compression: u8,
    pub raw_length: u32,
}

impl BlobAt {
    pub fn of(loc: &BlobLocation) -> Self {
        BlobAt {
            pack: loc.pack,
            offset: loc.offset,
            compression: loc.compression,
            raw_length: loc.raw_length,
        }
    }

    pub fn in_pack(pack: &Id, e: &crate::pack::PackEntry) -> Self {
        BlobAt {
            pack: *pack,
            offset: e.offset,
            compression: e.compression,
            raw_length: e.raw_length,
        }
    }
}

/// Buffers [`IndexedRepository::decode_blob_with`] and
/// [`IndexedRepository::decode_blob_in_place`] decrypt and decompress into, kept by
/// the caller across blobs.
#[derive(Debug, Default)]
pub struct BlobBuffers {
    opened: Vec<u8>,
    plain: Vec<u8>,
    /// The compression group whose plaintext `plain` holds (pack, offset):
    /// its other members are read from there without decoding the range
    /// again. Callers clear it with [`BlobBuffers::new_read`] before decoding
    /// from newly read bytes.
    group: Option<(Id, u32)>,
    /// A restore thread's ranged read of a pack, reused read after read (no
    /// allocation and no zeroing per read) and decrypted in place.
    pub(crate) read: Vec<u8>,
}

impl BlobBuffers {
    /// Forget the group plaintext kept from earlier reads: the next member is
    /// decoded (and authenticated) from the bytes it is given.
    pub fn new_read(&mut self) {
        self.group = None;
    }

    /// Run `f` with this thread's buffers, kept for the thread's next call
    /// (restore threads and the backup's tree decoders decode blob after blob).
    pub fn with_this_thread<R>(f: impl FnOnce(&mut BlobBuffers) -> R) -> R {
        thread_local! {
            static BUFS: std::cell::Cell<BlobBuffers> = std::cell::Cell::new(BlobBuffers::default());
        }
        let mut bufs = BUFS.take();
        let r = f(&mut bufs);
        BUFS.set(bufs);
        r
    }
}

/// Writes packs as index files of at most `max_blobs` blobs each (whole
/// packs; a larger pack gets a file of its own), streaming. Only the last
/// file, written by [`finish`](Self::finish), names `supersedes`: until it
/// exists the earlier ones merely add listings, so a reader (or a crash)
/// never sees a superseded file without its replacement.
pub struct IndexFileWriter<'a> {
    repo: &'a Repository,
    max_blobs: usize,
    file: IndexFile,
    blobs: usize,
    ids: Vec<Id>,
}

impl<'a> IndexFileWriter<'a> {
    pub fn new(repo: &'a Repository, max_blobs: usize) -> Self {
        IndexFileWriter {
            repo,
            max_blobs,
            file: IndexFile::default(),
            blobs: 0,
            ids: Vec::new(),
        }
    }

    pub fn push(&mut self, p: IndexPack) -> Result<()> {
        if self.blobs > 0 && self.blobs + p.blobs.len() > self.max_blobs {
            self.ids
                .push(self.repo.save_index(&std::mem::take(&mut self.file))?);
            self.blobs = 0;
        }
        self.blobs += p.blobs.len();
        self.file.packs.push(p);
        Ok(())
    }

    /// Write the last file, naming `supersedes`; returns every id written,
    /// the superseding one last.
    pub fn finish(mut self, supersedes: Vec<Id>) -> Result<Vec<Id>> {
        self.file.supersedes = supersedes;
        self.ids.push(self.repo.save_index(&self.file)?);
        Ok(self.ids)
    }
}

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression: Compression,
    pub kdf: KdfParams,
    pub min_pack_size: u64,
    pub hostname: String,
    pub username: String,
    /// Use this content key (another repository's, see [`Repository::content_key`])
    /// instead of deriving one: `init --copy-chunker-params`.
    pub content_key: Option<ContentKey>,
    /// Record this S3 Object Lock setting in the config (the caller hands in
    /// storage that already sets the retention, so config and key get it too).
    pub object_lock: Option<ObjectLockSetting>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            compression: Compression::default(),
            kdf: KdfParams::from_env_or_default(),
            min_pack_size: 16 * 1024 * 1024,
            hostname: crate::util::hostname(),
            username: crate::util::username(),
            content_key: None,
            object_lock: None,
        }
    }
}

/// An opened repository.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: DynStorage,
    key: Arc<MasterKey>,
    key_id: String,
    config: Config,
    chunker: Arc<ChunkerConfig>,
}

impl Repository {
    /// Create a new repository.
    ///
    /// # Errors
    /// [`Error::RepositoryExists`] if a config or key already exists at the location.
    pub fn init(storage: DynStorage, password: &str, opts: &InitOptions) -> Result<Repository> {
        if storage.exists("config")? || !storage.list("keys")?.is_empty() {
            return Err(Error::RepositoryExists {
                location: storage.location(),
            });
        }
        opts.chunker
            .validate()
            .map_err(|m| Error::invalid("chunker parameters", m))?;
        let key = MasterKey::generate();
        let slot = KeySlot::create(
            &key,
            password.as_bytes(),
            opts.kdf,
            &opts.hostname,
            &opts.username,
        )?;
        let key_id = write_key_slot(&storage, &slot)?;
        let mut rid = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rid);
        let config = Config {
            version: if opts.content_key.is_some() {
                FORMAT_VERSION_CONTENT_KEY
            } else {
                FORMAT_VERSION
            },
            id: hex::encode(rid),
            created: chrono::Local::now().fixed_offset(),
            chunker: opts.chunker,
            compression: opts.compression.to_string(),
            min_pack_size: opts.min_pack_size,
            append_only: false,
            content_key: opts.content_key.clone(),
            object_lock: opts.object_lock,
        };
        let sealed = key.seal(
            ObjectKind::Config,
            &serde_json::to_vec(&config).expect("config serialises"),
        );
        storage.put("config", Bytes::from(sealed), &PutOptions::create())?;
        Ok(Self::assemble(storage, key, key_id, config))
    }

    /// Open an existing repository with a password.
    ///
    /// # Errors
    /// [`Error::NoRepository`] when there is no config; [`Error::WrongPassword`]
    /// when no key slot opens with the password.
    pub fn open(storage: DynStorage, password: &str) -> Result<Repository> {
        let sealed_config = match storage.get("config", None) {
            Ok(c) => c,
            Err(StorageError::NotFound { .. }) => {
                return Err(Error::NoRepository {
                    location: storage.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let (key_id, key) = unlock(&storage, password)?;
        let config: Config = key
            .open(ObjectKind::Config, &sealed_config)
            .map_err(|e| Error::damaged("config", "config", e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| Error::damaged("config", "config", e))
            })?;
        match (config.version, &config.content_key) {
            (FORMAT_VERSION, None) | (FORMAT_VERSION_CONTENT_KEY, Some(_)) => {}
            (FORMAT_VERSION | FORMAT_VERSION_CONTENT_KEY, _) => {
                return Err(Error::damaged(
                    "config",
                    "config",
                    format!(
                        "version {} does not match the presence of a content key",
                        config.version
                    ),
                ))
            }
            (v, _) => {
                return Err(Error::invalid(
                    "repository",
                    format!(
                        "format version {v} is not supported (this build reads \
                         {FORMAT_VERSION} and {FORMAT_VERSION_CONTENT_KEY})"
                    ),
                ))
            }
        }
        Ok(Self::assemble(storage, key, key_id, config))
    }

    fn assemble(storage: DynStorage, key: MasterKey, key_id: String, config: Config) -> Repository {
        let key = match &config.content_key {
            Some(ck) => key.with_content_key(ck),
            None => key,
        };
        let chunker = Arc::new(ChunkerConfig::new(config.chunker, key.gear_seed()));
        Repository {
            storage,
            key: Arc::new(key),
            key_id,
            config,
            chunker,
        }
    }

    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    /// The same repository reached through another storage handle (a cache or
    /// another wrapper around the same objects).
    pub fn with_storage(mut self, storage: DynStorage) -> Repository {
        self.storage = storage;
        self
    }
    pub fn key(&self) -> &MasterKey {
        &self.key
    }
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn chunker(&self) -> &ChunkerConfig {
        &self.chunker
    }

    /// The key that decides chunk boundaries and blob ids. Repositories with
    /// equal content keys and chunker sizes store equal data as equal blobs, so
    /// `copy` between them moves blobs by id.
    pub fn content_key(&self) -> ContentKey {
        self.key.content_key()
    }

    /// Seal and store an object under `prefix/<id>`; returns its id.
    pub fn save_object(&self, prefix: &str, kind: ObjectKind, plaintext: &[u8]) -> Result<Id> {
        let sealed = self.key.seal(kind, plaintext);
        let id = Id::of_stored(&sealed);
        match self.storage.put(
            &format!("{prefix}/{id}"),
            Bytes::from(sealed),
            &PutOptions::create(),
        ) {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    /// Load, verify and open an object stored by [`Repository::save_object`].
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the object if its hash or authentication fails.
    pub fn load_object(&self, prefix: &'static str, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.storage.get(&format!("{prefix}/{id}"), None)?;
        if Id::of_stored(&bytes) != *id {
            return Err(Error::damaged(
                object_name(prefix),
                id,
                "content does not match its name",
            ));
        }
        self.key
            .open(kind, &bytes)
            .map_err(|e| Error::damaged(object_name(prefix), id, e))
    }

    /// Ids of the objects under `prefix` (`snapshots`, `index`, `keys`).
    pub fn list_ids(&self, prefix: &str) -> Result<Vec<Id>> {
        Ok(self
            .storage
            .list(prefix)?
            .into_iter()
            .filter_map(|m| m.key.rsplit('/').next().and_then(|s| s.parse().ok()))
            .collect())
    }

    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let b = self.load_object("snapshots", ObjectKind::Snapshot, id)?;
        serde_json::from_slice(&b).map_err(|e| Error::damaged("snapshot", id, e))
    }

    /// Every snapshot, oldest first. Damaged snapshots are an error naming them.
    /// A snapshot deleted between the listing and its read (a concurrent
    /// `forget`) is left out.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let ids = self.list_ids("snapshots")?;
        let mut out = ids
            .par_iter()
            .filter_map(|id| match self.load_snapshot(id) {
                Ok(snapshot) => Some(Ok(SnapshotEntry { id: *id, snapshot })),
                Err(Error::Storage(StorageError::NotFound { .. })) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        let json = serde_json::to_vec(snapshot).expect("snapshots serialise");
        self.save_object("snapshots", ObjectKind::Snapshot, &json)
    }

    /// Remove a snapshot object (refused on append-only repositories and
    /// while the snapshot is under object-lock retention).
    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        self.refuse_if_append_only("delete a snapshot")?;
        self.delete_unless_retained(&format!("snapshots/{id}"))
    }

    /// Delete `key` unless it is under object-lock retention, which is
    /// [`Error::Retained`] naming it (nothing deleted). A missing key is fine.
    ///
    /// On a versioned S3 bucket a plain `DELETE` of a locked object "succeeds"
    /// by hiding it behind a delete marker while its bytes stay stored (and
    /// billed) until the retention ends, so the lock is checked first.
    pub fn delete_unless_retained(&self, key: &str) -> Result<()> {
        self.refuse_if_retained(key)?;
        match self.storage.delete(key) {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Error::Retained`] naming `key` if it is under object-lock retention.
    pub fn refuse_if_retained(&self, key: &str) -> Result<()> {
        match self.retained(key)? {
            Some(r) => Err(Error::Retained {
                object: key.to_string(),
                mode: r.mode,
                until: r.until,
            }),
            None => Ok(()),
        }
    }

    /// The object-lock retention of `key` if it is still in force. Only
    /// repositories with [`Config::object_lock`] ask the storage (one `HEAD`).
    pub fn retained(&self, key: &str) -> Result<Option<Retention>> {
        if self.config.object_lock.is_none() {
            return Ok(None);
        }
        match self.storage.retention(key) {
            Ok(r) => Ok(r.filter(|r| r.until > chrono::Utc::now())),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Repository::retained`] for many objects at once (in parallel): the
    /// `items` whose object (named by `key`) is still under retention, with it.
    pub fn retained_among<T: Clone + Send + Sync>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> String + Sync,
    ) -> Result<Vec<(T, Retention)>> {
        if self.config.object_lock.is_none() {
            return Ok(Vec::new());
        }
        items
            .par_iter()
            .filter_map(|item| match self.retained(&key(item)) {
                Ok(Some(r)) => Some(Ok((item.clone(), r))),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    pub fn refuse_if_append_only(&self, what: &str) -> Result<()> {
        if self.config.append_only {
            return Err(Error::invalid(
                "operation",
                format!("the repository is append-only: refusing to {what}"),
            ));
        }
        Ok(())
    }

    /// Load every index file not superseded by another.
    ///
    /// A file that vanishes between the listing and its read was superseded
    /// and deleted by a concurrent `prune` or `repair index`; the listing is
    /// then taken again so the superseding file is seen.
    pub fn index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let files = retry_vanished(|| self.load_index_files(false))?;
        let superseded: std::collections::HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        Ok(files
            .into_iter()
            .filter(|(id, _)| !superseded.contains(id))
            .collect())
    }

    /// Every index file present, superseded ones included; files that vanish
    /// between the listing and their read are skipped. For readers' fallback
    /// only ([`IndexedRepository::locate`]): never for deduplication.
    pub fn all_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.load_index_files(true)
    }

    fn load_index_files(&self, skip_missing: bool) -> Result<Vec<(Id, IndexFile)>> {
        let ids = self.list_ids("index")?;
        let loaded = ids
            .par_iter()
            .map(|id| {
                let b = match self.load_object("index", ObjectKind::Index, id) {
                    Err(Error::Storage(StorageError::NotFound { .. })) if skip_missing => {
                        return Ok(None)
                    }
                    r => r?,
                };
                let f = IndexFile::decode(&b).map_err(|e| Error::damaged("index", id, e))?;
                Ok(Some((*id, f)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(loaded.into_iter().flatten().collect())
    }

    pub fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_object("index", ObjectKind::Index, &file.encode())
    }

    /// Save `packs` as index files of at most [`crate::index::MAX_FILE_BLOBS`]
    /// blobs with an [`IndexFileWriter`]. Returns the ids written, the
    /// superseding one last.
    pub fn save_index_split(&self, packs: Vec<IndexPack>, supersedes: Vec<Id>) -> Result<Vec<Id>> {
        let mut w = IndexFileWriter::new(self, crate::index::MAX_FILE_BLOBS);
        for p in packs {
            w.push(p)?;
        }
        w.finish(supersedes)
    }

    /// The index files present, in batches of at most [`INDEX_BATCH_BYTES`]
    /// stored bytes (or one file) and [`INDEX_BATCH_FILES`] files, for reading
    /// each batch in parallel: a file
    /// costs about three times its size while it is read and decoded.
    pub fn index_batches(&self) -> Result<Vec<Vec<Id>>> {
        let mut batches: Vec<Vec<Id>> = Vec::new();
        let mut bytes = 0;
        for m in self.storage.list("index")? {
            let Some(id) = m.key.rsplit('/').next().and_then(|s| s.parse().ok()) else {
                continue;
            };
            match batches.last_mut() {
                Some(b) if bytes + m.size <= INDEX_BATCH_BYTES && b.len() < INDEX_BATCH_FILES => {
                    b.push(id)
                }
                _ => {
                    batches.push(vec![id]);
                    bytes = 0;
                }
            }
            bytes += m.size;
        }
        Ok(batches)
    }

    /// Load every live index file into one in-memory [`Index`], streaming:
    /// files are read and decoded in parallel batches and dropped once their
    /// entries are copied, so the peak is the index plus one batch (see
    /// docs/PERFORMANCE.md, "Scale"). Same concurrency rules as
    /// [`index_files`](Self::index_files).
    pub fn load_index(&self) -> Result<Index> {
        Ok(self.load_index_listed()?.0)
    }

    /// [`load_index`](Self::load_index), also returning the ids of the index
    /// files listed (superseded ones included).
    pub fn load_index_listed(&self) -> Result<(Index, Vec<Id>)> {
        retry_vanished(|| {
            let batches = self.index_batches()?;
            let ids: Vec<Id> = batches.iter().flatten().copied().collect();
            let mut builder = Index::builder();
            let loaded = batches.iter().try_for_each(|batch| {
                let files = batch
                    .par_iter()
                    .map(|id| {
                        let b = self.load_object("index", ObjectKind::Index, id)?;
                        let f =
                            IndexFile::decode(&b).map_err(|e| Error::damaged("index", id, e))?;
                        Ok((*id, f))
                    })
                    .collect::<Result<Vec<_>>>()?;
                for (id, f) in files {
                    builder.add(id, f);
                }
                Ok(())
            });
            loaded.map(|()| (builder.finish(), ids))
        })
    }

    /// Load the index and move to the indexed state.
    pub fn into_indexed(self) -> Result<IndexedRepository> {
        let loaded_at = chrono::Utc::now();
        let (index, listed) = self.load_index_listed()?;
        Ok(IndexedRepository {
            repo: self,
            index: Arc::new(index),
            loaded_at,
            index_files: Some(Arc::new(listed)),
            marked: Arc::default(),
        })
    }

    // ---- key management ----

    /// Every key slot with its id.
    pub fn key_slots(&self) -> Result<Vec<(String, KeySlot)>> {
        let mut out = Vec::new();
        for m in self.storage.list("keys")? {
            let id = m.key.rsplit('/').next().unwrap_or_default().to_string();
            let b = self.storage.get(&m.key, None)?;
            let slot: KeySlot =
                serde_json::from_slice(&b).map_err(|e| Error::damaged("key", &id, e))?;
            out.push((id, slot));
        }
        out.sort_by_key(|a| a.1.created);
        Ok(out)
    }

    /// Add a key slot for another password; returns its id.
    pub fn add_key(&self, password: &str, kdf: KdfParams) -> Result<String> {
        let slot = KeySlot::create(
            &self.key,
            password.as_bytes(),
            kdf,
            &crate::util::hostname(),
            &crate::util::username(),
        )?;
        write_key_slot(&self.storage, &slot)
    }

    /// Remove a key slot. Refuses to remove the key in use or the last key.
    pub fn remove_key(&self, id_prefix: &str) -> Result<String> {
        self.refuse_if_append_only("remove a key")?;
        let slots = self.key_slots()?;
        let matches: Vec<_> = slots
            .iter()
            .filter(|(id, _)| id.starts_with(id_prefix))
            .collect();
        let id = match matches.as_slice() {
            [] => {
                return Err(Error::invalid(
                    "key",
                    format!("no key matches {id_prefix:?}"),
                ))
            }
            [(id, _)] => id.clone(),
            _ => {
                return Err(Error::invalid(
                    "key",
                    format!("key prefix {id_prefix:?} is ambiguous"),
                ))
            }
        };
        if id == self.key_id {
            return Err(Error::invalid(
                "key",
                "refusing to remove the key in use; open the repository with another key",
            ));
        }
        if slots.len() <= 1 {
            return Err(Error::invalid("key", "refusing to remove the last key"));
        }
        // Under S3 Object Lock the delete hides the slot behind a delete
        // marker (the locked version stays stored until its retention ends),
        // which is what revoking a password needs: no client lists it again.
        self.storage.delete(&format!("keys/{id}"))?;
        Ok(id)
    }

    /// Change the password of the key in use: add a new slot, then remove the old one.
    pub fn change_password(&mut self, new_password: &str, kdf: KdfParams) -> Result<String> {
        let new_id = self.add_key(new_password, kdf)?;
        self.storage.delete(&format!("keys/{}", self.key_id))?;
        self.key_id = new_id.clone();
        Ok(new_id)
    }
}

fn object_name(prefix: &str) -> &'static str {
    match prefix {
        "snapshots" => "snapshot",
        "index" => "index file",
        "keys" => "key",
        _ => "object",
    }
}

fn write_key_slot(storage: &DynStorage, slot: &KeySlot) -> Result<String> {
    let json = serde_json::to_vec_pretty(slot).expect("key slots serialise");
    let id = Id::of_stored(&json).to_hex();
    storage.put(
        &format!("keys/{id}"),
        Bytes::from(json),
        &PutOptions::create(),
    )?;
    Ok(id)
}

fn unlock(storage: &DynStorage, password: &str) -> Result<(String, MasterKey)> {
    let metas = storage.list("keys")?;
    let mut slots: Vec<(String, KeySlot)> = metas
        .par_iter()
        .map(|m| {
            let id = m.key.rsplit('/').next().unwrap_or_default().to_string();
            let b = storage.get(&m.key, None)?;
            Ok(serde_json::from_slice::<KeySlot>(&b)
                .ok()
                .map(|slot| (id, slot)))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    // Cheap slots first, one by one: a slot holding a generated high-entropy secret
    // (`key add --generate`, used by `pg wal-push` once per WAL segment) opens in about a
    // millisecond, and must not wait for the Argon2id of the password slots (~0.5 s each).
    slots.sort_by_key(|(_, s)| s.params.cost());
    let (cheap, costly): (Vec<_>, Vec<_>) = slots
        .into_iter()
        .partition(|(_, s)| s.params.cost() <= KdfParams::GENERATED.cost());
    for (id, slot) in &cheap {
        if let Some(k) = slot.unlock(password.as_bytes(), id)? {
            return Ok((id.clone(), k));
        }
    }
    let results: Vec<Result<Option<(String, MasterKey)>>> = costly
        .par_iter()
        .map(|(id, slot)| {
            Ok(slot
                .unlock(password.as_bytes(), id)?
                .map(|k| (id.clone(), k)))
        })
        .collect();
    for r in results {
        if let Some(found) = r? {
            return Ok(found);
        }
    }
    Err(Error::WrongPassword)
}

/// A repository with its index loaded: everything that reads blobs.
#[derive(Debug, Clone)]
pub struct IndexedRepository {
    repo: Repository,
    index: Arc<Index>,
    /// Taken just before the index files were listed.
    loaded_at: chrono::DateTime<chrono::Utc>,
    /// The index files listed when this view was built, superseded ones
    /// included (`None`: built by hand).
    index_files: Option<Arc<Vec<Id>>>,
    /// Readers' fallback, built on a miss (how many builds, the last one);
    /// used for reading only, never for deduplication (see
    /// [`IndexedRepository::locate`]).
    marked: Arc<parking_lot::Mutex<(u8, Option<Index>)>>,
}

impl std::ops::Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepository {
    /// Pair a repository with an index built elsewhere (check, repair).
    pub fn new(repo: Repository, index: Index) -> Self {
        Self {
            repo,
            index: Arc::new(index),
            loaded_at: chrono::Utc::now(),
            index_files: None,
            marked: Arc::default(),
        }
    }

    /// The index files this view was loaded from (`None` for a view built by hand).
    pub fn index_file_ids(&self) -> Option<&[Id]> {
        self.index_files.as_deref().map(Vec::as_slice)
    }

    /// Where to read a blob: the index of this view, or else (on a miss) the
    /// index files present now — superseded ones included — and the packs
    /// that pending `prune` marks took out of the index.
    ///
    /// Prune phase 1 takes unreferenced packs out of the index so that no new
    /// backup deduplicates against them; a backup running concurrently may
    /// still have saved a snapshot that uses them (phase 2 re-indexes such
    /// packs), and a view loaded before that re-indexing misses them too.
    /// Readers find those blobs here, so such a snapshot stays restorable and
    /// usable as a parent. Deduplication uses [`Self::index`] only, never this
    /// fallback.
    pub fn locate(&self, id: &Id) -> Option<BlobLocation> {
        if let Some(l) = self.index.get(id) {
            return Some(l);
        }
        // A miss: look in (and, a bounded number of times, rebuild) the
        // fallback of every index file present plus the packs of pending marks.
        let mut fb = self.marked.lock();
        if let Some(l) = fb.1.as_ref().and_then(|i| i.get(id)) {
            return Some(l);
        }
        if fb.0 >= 3 {
            return None;
        }
        fb.0 += 1;
        let index = crate::prune::readers_fallback_index(&self.repo).unwrap_or_else(|e| {
            tracing::warn!("reading the index files and pending prune marks again: {e}");
            Index::default()
        });
        let found = index.get(id);
        fb.1 = Some(index);
        found
    }

    /// When this view of the index was taken; backup sessions record it so
    /// `prune` knows which marks they may predate (see [`crate::lock`]).
    pub fn loaded_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.loaded_at
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Replace the index (after a backup added packs).
    pub fn set_index(&mut self, index: Index) {
        self.index = Arc::new(index);
    }

    /// Read, decrypt, decompress and verify one blob.
    ///
    /// # Errors
    /// [`Error::BlobNotIndexed`], or [`Error::Damaged`] naming the blob and its pack.
    ///
    /// A member of a compression group is read from this thread's copy of the
    /// group when the thread's last group read was that group: reading the
    /// small files of a directory one by one (`dump`, `cat`, `copy
    /// --rechunk`) reads and decodes each group once, not once per file.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self
            .locate(id)
            .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
        let range = loc.offset as u64..loc.offset as u64 + loc.length as u64;
        if group::is_grouped(loc.compression) {
            let at = BlobAt::of(&loc);
            return BlobBuffers::with_this_thread(|bufs| {
                if bufs.group == Some((at.pack, at.offset)) {
                    return Ok(self.group_member(id, &at, &bufs.plain)?.to_vec());
                }
                let sealed = self.storage().get(&pack_key(&loc.pack), Some(range))?;
                Ok(self.decode_blob_with(id, at, &sealed, bufs)?.to_vec())
            });
        }
        let sealed = self.storage().get(&pack_key(&loc.pack), Some(range))?;
        self.decode_blob(id, BlobAt::of(&loc), &sealed)
    }

    /// Decrypt, decompress and verify sealed blob bytes (the range `at` names).
    /// A group member is decoded with this thread's buffers, as in
    /// [`read_blob`](Self::read_blob).
    pub fn decode_blob(&self, id: &Id, at: BlobAt, sealed: &[u8]) -> Result<Vec<u8>> {
        if group::is_grouped(at.compression) {
            return BlobBuffers::with_this_thread(|bufs| {
                Ok(self.decode_blob_with(id, at, sealed, bufs)?.to_vec())
            });
        }
        let mut bufs = BlobBuffers::default();
        self.decode_blob_with(id, at, sealed, &mut bufs)?;
        Ok(if at.compression == 0 {
            bufs.opened
        } else {
            bufs.plain
        })
    }

    /// [`IndexedRepository::decode_blob`] into reused buffers (restore keeps
    /// one set per thread): no allocation per blob. Returns the plaintext. A
    /// member of the compression group `bufs` holds is read from there.
    pub fn decode_blob_with<'b>(
        &self,
        id: &Id,
        at: BlobAt,
        sealed: &[u8],
        bufs: &'b mut BlobBuffers,
    ) -> Result<&'b [u8]> {
        if group::is_grouped(at.compression) {
            let (key, opened) = (self.key(), &mut bufs.opened);
            return self.cached_group_member(id, &at, &mut bufs.group, &mut bufs.plain, || {
                key.open_into(ObjectKind::Blob, sealed, opened)?;
                Ok(&opened[..])
            });
        }
        let damaged = |r: String| blob_damaged(id, &at.pack, r);
        bufs.group = None;
        self.key()
            .open_into(ObjectKind::Blob, sealed, &mut bufs.opened)
            .map_err(|e| damaged(e.to_string()))?;
        self.checked_plaintext(id, &at, &bufs.opened, &mut bufs.plain)
    }

    /// [`IndexedRepository::decode_blob`] decrypting where `sealed` lies (a part of
    /// a ranged read the caller owns and reuses): no copy of the ciphertext. A
    /// compressed blob is decompressed into `bufs`. Returns the plaintext, which is
    /// in `sealed` or in `bufs`. A member of the compression group `bufs` holds
    /// is read from there (`sealed`, already decrypted, is not touched).
    pub fn decode_blob_in_place<'b>(
        &self,
        id: &Id,
        at: BlobAt,
        sealed: &'b mut [u8],
        bufs: &'b mut BlobBuffers,
    ) -> Result<&'b [u8]> {
        if group::is_grouped(at.compression) {
            let key = self.key();
            return self.cached_group_member(id, &at, &mut bufs.group, &mut bufs.plain, || {
                key.open_in_place(ObjectKind::Blob, sealed)
            });
        }
        let damaged = |r: String| blob_damaged(id, &at.pack, r);
        bufs.group = None;
        let opened = self
            .key()
            .open_in_place(ObjectKind::Blob, sealed)
            .map_err(|e| damaged(e.to_string()))?;
        self.checked_plaintext(id, &at, opened, &mut bufs.plain)
    }

    /// An opened blob's plaintext (`opened` itself, or decompressed into `plain`),
    /// checked against its length and id.
    fn checked_plaintext<'b>(
        &self,
        id: &Id,
        at: &BlobAt,
        opened: &'b [u8],
        plain: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        let damaged = |r: String| blob_damaged(id, &at.pack, r);
        let data = if at.compression == 0 {
            blob::check_length(opened.len(), at.raw_length as usize).map_err(damaged)?;
            opened
        } else {
            blob::decompress_into(at.compression, opened, at.raw_length as usize, plain)
                .map_err(damaged)?;
            &plain[..]
        };
        if self.key().blob_id(data) != *id {
            return Err(damaged("content does not hash to its id".into()));
        }
        Ok(data)
    }

    /// Member `id` of the compression group `at` names: from `plain` when
    /// `held` says it holds that group, else from the range `open` decrypts,
    /// decompressed into `plain` first (and `held` set to it).
    fn cached_group_member<'b, 'o>(
        &self,
        id: &Id,
        at: &BlobAt,
        held: &mut Option<(Id, u32)>,
        plain: &'b mut Vec<u8>,
        open: impl FnOnce() -> std::result::Result<&'o [u8], crate::crypto::CryptoError>,
    ) -> Result<&'b [u8]> {
        if *held != Some((at.pack, at.offset)) {
            *held = None;
            let damaged = |e: &dyn std::fmt::Display| {
                blob_damaged(
                    id,
                    &at.pack,
                    format!("its compression group at offset {}: {e}", at.offset),
                )
            };
            let opened = open().map_err(|e| damaged(&e))?;
            blob::decompress_group(at.compression & group::ALGORITHM, opened, plain)
                .map_err(|e| damaged(&e))?;
            *held = Some((at.pack, at.offset));
        }
        self.group_member(id, at, plain)
    }

    /// Member `id` of the group plaintext `plain`, checked against its id.
    fn group_member<'b>(&self, id: &Id, at: &BlobAt, plain: &'b [u8]) -> Result<&'b [u8]> {
        let damaged = |r: String| blob_damaged(id, &at.pack, r);
        let data = group::member(plain, id, at.raw_length).map_err(damaged)?;
        if self.key().blob_id(data) != *id {
            return Err(damaged("content does not hash to its id".into()));
        }
        Ok(data)
    }

    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        let b = self.read_blob(id)?;
        Tree::deserialize(&b).map_err(|e| Error::damaged("tree", id, e))
    }

    pub fn blob_type(&self, id: &Id) -> Option<BlobType> {
        self.locate(id).map(|l| l.blob_type)
    }
}

/// How many times a reader of the index loads it at most while listed files
/// keep vanishing ([`retry_vanished`]).
const VANISHED_RETRY_LOADS: u32 = 30;

/// Run `load` (a listing of the index files and their reads) again while it
/// fails with `NotFound`: a file listed and then deleted by a concurrent
/// `prune` or `repair index`, whose superseding file the next listing shows.
/// The retries pause (1 ms, doubling to 200 ms: ~4.5 s over 30 loads) and give
/// up after [`VANISHED_RETRY_LOADS`] loads; the time the loads take does not
/// count, so a slow load (a large index on remote storage) still gets its
/// retries.
pub(crate) fn retry_vanished<T>(mut load: impl FnMut() -> Result<T>) -> Result<T> {
    let mut pause = std::time::Duration::from_millis(1);
    let mut loads = 1;
    loop {
        match load() {
            Err(Error::Storage(StorageError::NotFound { key, .. }))
                if loads < VANISHED_RETRY_LOADS =>
            {
                tracing::debug!("{key} vanished while the index was read; listing again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
                loads += 1;
            }
            r => return r,
        }
    }
}
