//! archiver
