//! restorer
