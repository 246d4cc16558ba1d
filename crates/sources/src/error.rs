//! The crate's error type.
//!
//! Rules: every error names what it was doing (tool, database, stream, path); tool output is
//! included (tail of stderr) but secrets are redacted before the error is built; refusals
//! (safety rules) and verification failures are their own variants so callers can tell "we
//! refused / the restored data did not verify" apart from "something broke".

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a dump or a restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error while doing `context`.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the path or stream).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An external tool exited unsuccessfully.
    #[error("`{program}` failed ({status}): {stderr}")]
    Command {
        /// The program (no arguments: they may be long).
        program: String,
        /// Exit status as text.
        status: String,
        /// Tail of its stderr, secrets redacted.
        stderr: String,
    },
    /// Bad or incomplete connection settings or options.
    #[error("invalid settings: {0}")]
    Config(String),
    /// A safety rule refused the operation; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The dump was made by a newer client major than the target server.
    #[error(
        "version skew: the dump was made by {tool} {dump_version} (major {dump_major}) but the \
         target server is {server_version} (major {server_major}); restore into a server of \
         major {dump_major} or newer"
    )]
    VersionSkew {
        /// Tool that made the dump (`pg_dump`).
        tool: String,
        /// Its full version.
        dump_version: String,
        /// Its major version.
        dump_major: u32,
        /// Target server version.
        server_version: String,
        /// Target server major.
        server_major: u32,
    },
    /// Post-restore verification failed (row counts, key counts, a `--check`, integrity).
    /// For replace restores the original was left untouched.
    #[error("verification failed: {}", .0.join("; "))]
    Verification(Vec<String>),
    /// A stream the metadata names is missing from the source.
    #[error("stream `{0}` not found")]
    StreamNotFound(String),
    /// A dump stream did not look like what the engine writes.
    #[error("unexpected dump content: {0}")]
    Format(String),
    /// SQLite error.
    #[error("sqlite ({context}): {source}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sqlite(context: impl Into<String>, source: rusqlite::Error) -> Self {
        Error::Sqlite {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the same operation may succeed (transient I/O or a tool failure such
    /// as a dropped connection). Refusals, skew, verification and format errors are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::AlreadyExists
            ),
            Error::Command { .. } => true,
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}
