//! Storage errors, classified by meaning.
//!
//! Rules (kept by every backend):
//! * every error names the key it concerns and the backend location, never a credential;
//! * provider-specific errors are mapped to the variants below; the provider's
//!   own message is kept only as text in [`StorageError::Backend`];
//! * [`StorageError::is_retryable`] says whether the same call may succeed later.

use thiserror::Error;

pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("object {key:?} not found in {location}")]
    NotFound { key: String, location: String },

    #[error("object {key:?} already exists in {location}")]
    AlreadyExists { key: String, location: String },

    #[error("precondition failed for object {key:?} in {location}: {message}")]
    Precondition {
        key: String,
        location: String,
        message: String,
    },

    #[error("permission denied for object {key:?} in {location}: {message}")]
    PermissionDenied {
        key: String,
        location: String,
        message: String,
    },

    #[error("invalid object key {key:?}")]
    InvalidKey { key: String },

    #[error("range {start}..{end} is outside object {key:?} of {size} bytes")]
    Range {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },

    #[error("I/O error on object {key:?} in {location}: {source}")]
    Io {
        key: String,
        location: String,
        #[source]
        source: std::io::Error,
    },

    #[error("backend error on object {key:?} in {location}: {message}")]
    Backend {
        key: String,
        location: String,
        message: String,
        retryable: bool,
    },
}

impl StorageError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ),
            StorageError::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Map an I/O error on `key`, turning `NotFound`/`AlreadyExists`/`PermissionDenied`
    /// into their typed variants.
    pub fn from_io(key: &str, location: &str, err: std::io::Error) -> Self {
        let key = key.to_string();
        let location = location.to_string();
        match err.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound { key, location },
            std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists { key, location },
            std::io::ErrorKind::PermissionDenied => StorageError::PermissionDenied {
                key,
                location,
                message: err.to_string(),
            },
            _ => StorageError::Io {
                key,
                location,
                source: err,
            },
        }
    }
}
