//! Tree blobs: one per directory, listing its entries sorted by name bytes.
//!
//! A tree is serialised as compact JSON (`{"nodes":[...]}`) with a fixed field
//! order and no optional field written when empty, so the same directory state
//! always produces the same bytes — and therefore the same blob id, which is how
//! unchanged directories deduplicate between snapshots.
//!
//! Names are bytes on Unix. A name that is valid UTF-8 is stored in `name`;
//! otherwise `name` holds a lossy rendering for display and `name_raw` the exact
//! bytes in base64. The same applies to symlink targets (`link_target`, `link_target_raw`).

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::blob::Id;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Chardev,
    Blockdev,
}

/// An extended attribute; the value is base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: String,
    pub value: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Unix mode bits including the file type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch (change detection only).
    pub ctime_ns: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device_id: u64,
    /// Hard link count at backup time; > 1 lets restore recreate hard links.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Data blobs of a file, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Id>>,
    /// Tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target_raw: Option<String>,
    /// Device number of character and block devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Set by `repair snapshots` when the content could not be recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn encode_name(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(B64.encode(bytes)),
        ),
    }
}

fn decode_name(name: &str, raw: &Option<String>) -> OsString {
    match raw.as_ref().and_then(|r| B64.decode(r).ok()) {
        Some(bytes) => OsString::from_vec(bytes),
        None => OsString::from(name),
    }
}

impl Node {
    /// A node with the given name and kind and every other field empty.
    pub fn new(name: &OsStr, kind: NodeKind) -> Self {
        let (name, name_raw) = encode_name(name.as_bytes());
        Node {
            name,
            name_raw,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device_id: 0,
            links: 0,
            size: 0,
            content: None,
            subtree: None,
            link_target: None,
            link_target_raw: None,
            rdev: 0,
            xattrs: Vec::new(),
            error: None,
        }
    }

    /// The exact name bytes.
    pub fn os_name(&self) -> OsString {
        decode_name(&self.name, &self.name_raw)
    }

    /// The exact name bytes, borrowed unless the name is not UTF-8 (then
    /// decoded from `name_raw`). Sorting and lookups use this: they run once
    /// per entry of every directory and must not allocate.
    pub fn name_bytes(&self) -> Cow<'_, [u8]> {
        match &self.name_raw {
            None => Cow::Borrowed(self.name.as_bytes()),
            Some(_) => Cow::Owned(self.os_name().into_vec()),
        }
    }

    pub fn set_link_target(&mut self, target: &OsStr) {
        let (t, raw) = encode_name(target.as_bytes());
        self.link_target = Some(t);
        self.link_target_raw = raw;
    }

    pub fn os_link_target(&self) -> Option<OsString> {
        self.link_target
            .as_ref()
            .map(|t| decode_name(t, &self.link_target_raw))
    }

    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }
}

/// A directory's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sort entries by name bytes (the canonical order) and serialise.
    pub fn serialize(mut self) -> Vec<u8> {
        self.sort();
        serde_json::to_vec(&self).expect("trees always serialise")
    }

    pub fn sort(&mut self) {
        // Entries usually arrive sorted (the walker reads directories in name
        // order), so check first: that costs no allocation and no moves.
        if !self
            .nodes
            .is_sorted_by(|a, b| a.name_bytes() <= b.name_bytes())
        {
            self.nodes
                .sort_by(|a, b| a.name_bytes().cmp(&b.name_bytes()));
        }
    }

    /// # Errors
    /// The JSON error when the bytes are not a tree.
    pub fn deserialize(bytes: &[u8]) -> Result<Tree, serde_json::Error> {
        // One UTF-8 check of the whole tree (word at a time over ASCII), then
        // strings are taken as they are: `from_slice` validates each string
        // on its own, ~10% of decoding a tree.
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes), // the error, with its position
        }
    }

    /// The tree ids of the subdirectories, in name order.
    pub fn subtrees(&self) -> impl Iterator<Item = Id> + '_ {
        self.nodes.iter().filter_map(|n| n.subtree)
    }

    /// Find an entry by exact name bytes.
    pub fn find(&self, name: &OsStr) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| (*n.name_bytes()).cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn non_utf8_names_roundtrip() {
        let name = OsStr::from_bytes(b"caf\xe9");
        let n = Node::new(name, NodeKind::File);
        assert!(n.name_raw.is_some());
        assert_eq!(n.os_name(), name);
        let t = Tree { nodes: vec![n] };
        let back = Tree::deserialize(&t.clone().serialize()).unwrap();
        assert_eq!(back.find(name).unwrap().os_name(), name);
    }

    #[test]
    fn serialisation_is_canonical() {
        let a = Node::new(OsStr::new("a"), NodeKind::File);
        let b = Node::new(OsStr::new("b"), NodeKind::Dir);
        let t1 = Tree {
            nodes: vec![a.clone(), b.clone()],
        }
        .serialize();
        let t2 = Tree { nodes: vec![b, a] }.serialize();
        assert_eq!(t1, t2);
    }

    proptest! {
        #[test]
        fn tree_roundtrip(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..20), 0..20), size in any::<u64>(), mtime in any::<i64>()) {
            let nodes: Vec<Node> = names.iter().filter(|n| !n.contains(&b'/')).map(|n| {
                let mut node = Node::new(OsStr::from_bytes(n), NodeKind::File);
                node.size = size;
                node.mtime_ns = mtime;
                node.content = Some(vec![Id([n[0]; 32])]);
                node
            }).collect();
            let mut t = Tree { nodes };
            let bytes = t.clone().serialize();
            t.sort();
            prop_assert_eq!(Tree::deserialize(&bytes).unwrap(), t);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::deserialize(&bytes);
        }
    }
}
