//! The engine's error type.
//!
//! Rules for every error raised in this crate:
//! * it names the thing it concerns: a path, a snapshot id, a pack or blob id,
//!   an object key — enough for an operator to find it;
//! * it never contains a password, key material or a credential;
//! * storage errors keep their own classification ([`StorageError`]), so callers can
//!   tell "not found" and "retry may help" apart;
//! * damage to stored data is always [`Error::Damaged`], never a panic.

use std::path::PathBuf;

use lifeboat_storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("wrong password or no matching key")]
    WrongPassword,

    #[error("no repository at {location}")]
    NoRepository { location: String },

    #[error("a repository already exists at {location}")]
    RepositoryExists { location: String },

    /// Stored bytes failed authentication, hashing or parsing.
    #[error("{kind} {id} is damaged: {reason}")]
    Damaged {
        kind: &'static str,
        id: String,
        reason: String,
    },

    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),

    #[error("snapshot prefix {prefix:?} is ambiguous: matches {matches}")]
    AmbiguousSnapshot { prefix: String, matches: String },

    #[error("blob {0} is not in the index")]
    BlobNotIndexed(String),

    #[error("path {path:?} not found in snapshot {snapshot}")]
    PathNotFound { path: String, snapshot: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("refusing to overwrite existing {} (pass --overwrite to replace it)", .0.display())]
    WouldOverwrite(PathBuf),

    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },

    /// `pg wal-push` of a name that is archived with different content.
    #[error(
        "WAL file {key} is already archived with different content ({existing_len} bytes stored, \
         {new_len} bytes pushed): refusing to overwrite it. Two servers may be archiving into \
         the same cluster namespace, or a restored server reused a timeline"
    )]
    WalConflict {
        key: String,
        existing_len: u64,
        new_len: u64,
    },

    /// A delete refused because the object is under S3 Object Lock retention.
    #[error(
        "{object} is under S3 Object Lock ({mode}) until {}: refusing to delete it before then",
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    Retained {
        object: String,
        mode: String,
        until: chrono::DateTime<chrono::Utc>,
    },

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn damaged(kind: &'static str, id: impl ToString, reason: impl ToString) -> Self {
        Error::Damaged {
            kind,
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn invalid(what: &'static str, message: impl ToString) -> Self {
        Error::Invalid {
            what,
            message: message.to_string(),
        }
    }
}
