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

    /// The repository URL or backend options are unusable (bad URL, missing
    /// region, unreadable key file...). Never retryable.
    #[error("cannot open storage {location}: {message}")]
    Config { location: String, message: String },
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

    /// A retryable backend error (used by wrappers that inject or detect faults).
    pub fn transient(key: &str, location: &str, message: impl Into<String>) -> Self {
        StorageError::Backend {
            key: key.to_string(),
            location: location.to_string(),
            message: message.into(),
            retryable: true,
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

/// Environment variables whose values are secrets. Their values are cut out of
/// every message a backend produces, whatever the provider put in it.
const SECRET_ENV_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "LIFEBOAT_WEBDAV_PASSWORD",
    "LIFEBOAT_WEBDAV_TOKEN",
];

/// Remove credential values (from the usual environment variables) and
/// `user:password@` URL parts from a provider's message.
pub(crate) fn redact(message: &str) -> String {
    let mut out = message.to_string();
    for var in SECRET_ENV_VARS {
        if let Ok(value) = std::env::var(var) {
            if value.len() >= 4 {
                out = out.replace(&value, "<redacted>");
            }
        }
    }
    // `scheme://user:secret@host` -> `scheme://user:<redacted>@host`
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        result.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                result.push_str(&authority[..colon]);
                result.push_str(":<redacted>");
                result.push_str(&authority[at..]);
            }
            _ => result.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_removes_url_passwords() {
        assert_eq!(
            super::redact("PUT https://bob:hunter22@dav.example/x failed"),
            "PUT https://bob:<redacted>@dav.example/x failed"
        );
        assert_eq!(super::redact("http://host:9000/b"), "http://host:9000/b");
    }
}
