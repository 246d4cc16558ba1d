//! Small helpers: host and user names, cached uid/gid name lookups.

use std::collections::HashMap;

use parking_lot::Mutex;

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

pub fn username() -> String {
    user_name(nix::unistd::getuid().as_raw()).unwrap_or_default()
}

static USERS: Mutex<Option<HashMap<u32, Option<String>>>> = Mutex::new(None);
static GROUPS: Mutex<Option<HashMap<u32, Option<String>>>> = Mutex::new(None);

/// The name of a uid, cached.
pub fn user_name(uid: u32) -> Option<String> {
    let mut g = USERS.lock();
    g.get_or_insert_with(HashMap::new)
        .entry(uid)
        .or_insert_with(|| {
            nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .clone()
}

/// The name of a gid, cached.
pub fn group_name(gid: u32) -> Option<String> {
    let mut g = GROUPS.lock();
    g.get_or_insert_with(HashMap::new)
        .entry(gid)
        .or_insert_with(|| {
            nix::unistd::Group::from_gid(gid.into())
                .ok()
                .flatten()
                .map(|g| g.name)
        })
        .clone()
}

static UIDS: Mutex<Option<HashMap<String, Option<u32>>>> = Mutex::new(None);
static GIDS: Mutex<Option<HashMap<String, Option<u32>>>> = Mutex::new(None);

/// uid for a user name on this system, cached (restore asks once per entry).
pub fn uid_of(name: &str) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    let mut g = UIDS.lock();
    *g.get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert_with(|| {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        })
}

/// gid for a group name on this system, cached.
pub fn gid_of(name: &str) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    let mut g = GIDS.lock();
    *g.get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert_with(|| {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        })
}
