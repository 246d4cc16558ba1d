//! Lifeboat's repository engine.
//!
//! A repository stores backups as content-addressed, deduplicated, compressed and
//! encrypted blobs inside pack files, described by index files, and reachable from
//! snapshot objects through one tree blob per directory. The byte-level format is
//! specified in `docs/FORMAT.md`; this crate is its reference implementation.
//!
//! * [`crypto`]: keys, key slots, AEAD of every stored object, keyed blob ids.
//! * [`chunker`]: FastCDC content-defined chunking with a secret-seeded gear table.
//! * [`pack`], [`index`]: blob containers and their index.
//! * [`tree`], [`snapshot`]: directory trees and snapshot objects.
//! * [`repository`]: opening, initialising and reading a repository.
//! * [`archiver`]: the parallel backup pipeline; [`restorer`]: restores pack by pack.
//! * [`check`]: structural and deep (`--read-data`) verification.
//! * [`copy`]: replicating snapshots into another repository.
//! * [`retention`]: keep/forget policies.
//! * [`wal`]: the PostgreSQL WAL archive (one sealed object per archived file).
//!
//! Libraries never print: progress goes through [`progress::Progress`].
//!
//! # Errors
//!
//! Every fallible function returns [`Error`], which names the object
//! (snapshot, pack, blob, path) it concerns. See [`error`] for the rules.

pub mod archiver;
pub mod blob;
pub mod check;
pub mod chunker;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod group;
pub mod index;
pub mod lock;
pub mod pack;
pub mod parity;
pub mod progress;
pub mod protect;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod select;
pub mod snapshot;
pub mod tree;
pub(crate) mod trees_ahead;
pub mod verified;

pub use error::{Error, Result};
pub use repository::Repository;
pub mod util;
pub mod wal;
pub mod walk;
pub mod writer;
