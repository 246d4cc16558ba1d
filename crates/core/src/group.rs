//! Compression groups: small data blobs compressed and sealed together.
//!
//! A file smaller than the chunker's minimum is one blob, and most files of a
//! system are small (the benchmark's data set: 44k of 46k files, 21% of the
//! bytes). Compressed one by one, each starts with an empty zstd window; a
//! group of them compressed as one frame finds what they share (ELF headers,
//! licence texts, locale files) and pays the frame set-up once. On the
//! benchmark's data set that stores 3.6% less at level 3 and lets level 2
//! store what level 3 stored blob by blob, with 35% less zstd CPU
//! (docs/PERFORMANCE.md, the twenty-second measurement).
//!
//! Each member stays a blob of its own for everything above the pack: it keeps
//! its id (keyed BLAKE3 of its plaintext), its index entry and its
//! deduplication. Only where it is stored changes:
//!
//! ```text
//! stored  = seal(Blob, compress(group))          -- one sealed range in the pack
//! group   = member_data* directory count:u32le
//! directory = (id_prefix[8] length:u32le)*count  -- members in data order
//! ```
//! Every member's index and pack-header entry names the group's whole range
//! (offset and length) with [`GROUPED`] in its compression byte; entries after
//! the first also carry [`SAME_RANGE`], so a pack header (whose offsets are
//! implicit) does not advance past the range. A reader decrypts and
//! decompresses the range, finds the member in the directory by its id prefix
//! and length, and checks the member's plaintext against its full id as for any
//! blob, so a prefix that matched a wrong member is caught, not returned.
//! Readers that decode several members of one range keep the group's plaintext
//! ([`crate::repository::BlobBuffers`]) and decode the range once.

use crate::blob::Id;

/// Compression byte flag: the entry's range is a group this blob is a member of.
pub const GROUPED: u8 = 0x80;
/// Compression byte flag: the entry's range is the previous entry's (a later
/// member of the same group); only with [`GROUPED`].
pub const SAME_RANGE: u8 = 0x40;
/// The algorithm bits of a compression byte.
pub const ALGORITHM: u8 = 0x3f;

/// Data blobs shorter than the repository's smallest chunk, and than this,
/// are stored in groups: files smaller than one chunk and the last chunks of
/// larger files (every other chunk is at least the smallest chunk). With the
/// default chunker both limits are 512 KiB.
pub const MAX_MEMBER: usize = 512 << 10;
/// A group is compressed once its members hold this much (zstd level 3's
/// window is 1 MiB: references further back than that would not be found)...
pub const TARGET: usize = 1 << 20;
/// ...or once it has this many members (a bound on its directory).
pub const MAX_MEMBERS: usize = 1 << 14;
/// A group's plaintext is never larger: below [`TARGET`] bytes and
/// [`MAX_MEMBERS`] members before its last member joins. Readers refuse to
/// allocate more for one.
pub const MAX_PLAINTEXT: usize = TARGET + MAX_MEMBER + (MAX_MEMBERS + 1) * DIR_ENTRY + 4;

const DIR_ENTRY: usize = 8 + 4;

/// Whether a compression byte is valid: a known algorithm, and [`SAME_RANGE`]
/// only with [`GROUPED`].
pub fn valid_code(code: u8) -> bool {
    code & ALGORITHM <= 2 && (code & SAME_RANGE == 0 || code & GROUPED != 0)
}

/// Whether an entry with this compression byte is a group member.
pub fn is_grouped(code: u8) -> bool {
    code & GROUPED != 0
}

/// Whether an entry with this compression byte starts a new range in its pack
/// (not a later member of the previous entry's group).
pub fn starts_range(code: u8) -> bool {
    code & SAME_RANGE == 0
}

/// A group being filled.
#[derive(Debug, Default)]
pub struct Group {
    data: Vec<u8>,
    members: Vec<(Id, u32)>,
}

impl Group {
    /// An empty group that fills `buf` (cleared; its capacity is reused).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Group {
            data: buf,
            members: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether the group is full: it is compressed now.
    pub fn is_full(&self) -> bool {
        self.data.len() >= TARGET || self.members.len() >= MAX_MEMBERS
    }

    pub fn push(&mut self, id: Id, plaintext: &[u8]) {
        if self.data.capacity() == 0 {
            self.data.reserve(TARGET + MAX_MEMBER + 16 * 1024);
        }
        self.data.extend_from_slice(plaintext);
        self.members.push((id, plaintext.len() as u32));
    }

    /// The group's plaintext (member data, directory, count) and its members
    /// in data order.
    pub fn finish(self) -> (Vec<u8>, Vec<(Id, u32)>) {
        let Group { mut data, members } = self;
        data.reserve(members.len() * DIR_ENTRY + 4);
        for (id, len) in &members {
            data.extend_from_slice(&id.0[..8]);
            data.extend_from_slice(&len.to_le_bytes());
        }
        data.extend_from_slice(&(members.len() as u32).to_le_bytes());
        (data, members)
    }
}

/// Member `id` of `raw_length` bytes in a group's plaintext.
///
/// # Errors
/// A message when the directory is malformed or names no such member.
pub fn member<'a>(group: &'a [u8], id: &Id, raw_length: u32) -> Result<&'a [u8], String> {
    let n = group.len();
    let count = n
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(group[at..].try_into().expect("4 bytes")) as usize)
        .ok_or("group shorter than its member count")?;
    let dir_start = count
        .checked_mul(DIR_ENTRY)
        .and_then(|d| (n - 4).checked_sub(d))
        .ok_or("group directory larger than the group")?;
    let mut at = 0usize;
    for e in group[dir_start..n - 4].chunks_exact(DIR_ENTRY) {
        let len = u32::from_le_bytes(e[8..].try_into().expect("4 bytes"));
        if e[..8] == id.0[..8] && len == raw_length {
            return group
                .get(at..at + len as usize)
                .filter(|_| at + len as usize <= dir_start)
                .ok_or_else(|| "group member beyond the group's data".into());
        }
        at += len as usize;
    }
    Err("not in its group's directory".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> Id {
        Id([b; 32])
    }

    #[test]
    fn members_are_found_by_id_and_length() {
        let mut g = Group::default();
        g.push(id(1), b"first");
        g.push(id(2), b"");
        g.push(id(3), b"third member");
        let (plain, members) = g.finish();
        assert_eq!(members.len(), 3);
        assert_eq!(member(&plain, &id(1), 5).unwrap(), b"first");
        assert_eq!(member(&plain, &id(2), 0).unwrap(), b"");
        assert_eq!(member(&plain, &id(3), 12).unwrap(), b"third member");
        // A wrong length or id is not a member.
        assert!(member(&plain, &id(3), 11).is_err());
        assert!(member(&plain, &id(4), 5).is_err());
    }

    #[test]
    fn malformed_groups_are_errors_not_panics() {
        let (plain, _) = {
            let mut g = Group::default();
            g.push(id(1), b"abc");
            g.finish()
        };
        for cut in 0..plain.len() {
            let _ = member(&plain[..cut], &id(1), 3);
            let _ = member(&plain[cut..], &id(1), 3);
        }
        // A count larger than the group.
        let mut bad = plain.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(member(&bad, &id(1), 3).is_err());
        // A length pointing past the data.
        let mut bad = plain;
        bad[3 + 8..3 + 12].copy_from_slice(&100u32.to_le_bytes());
        assert!(member(&bad, &id(1), 100).is_err());
    }

    #[test]
    fn codes() {
        assert!(valid_code(1) && valid_code(GROUPED | 1) && valid_code(GROUPED | SAME_RANGE));
        assert!(!valid_code(SAME_RANGE | 1) && !valid_code(3) && !valid_code(GROUPED | 3));
        assert!(starts_range(GROUPED | 1) && !starts_range(GROUPED | SAME_RANGE | 1));
    }
}
