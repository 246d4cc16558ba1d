//! Progress reporting. Libraries never print: long operations report through
//! this trait, which the CLI implements with progress bars, the server with job
//! status, and tests not at all ([`NoProgress`]).

use std::path::Path;

pub trait Progress: Send + Sync {
    /// Whether this reporter shows totals; when `false`, operations skip the
    /// extra work of computing them (a backup's scan of the whole tree).
    fn wants_totals(&self) -> bool {
        false
    }
    /// Totals, when known (a scanner walks ahead of a backup to find them).
    fn set_totals(&self, _files: u64, _bytes: u64) {}
    /// Bytes processed (read, restored or verified).
    fn add_bytes(&self, _bytes: u64) {}
    /// Files finished.
    fn add_files(&self, _files: u64) {}
    /// The item being worked on.
    fn current(&self, _path: &Path) {}
    /// A problem that does not stop the operation (it is also returned in the result).
    fn warning(&self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
