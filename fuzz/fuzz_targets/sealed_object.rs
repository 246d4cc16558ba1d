//! Authenticated decryption of any stored object.
#![no_main]
use lifeboat_core::crypto::{MasterKey, ObjectKind};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret([1; 32]);
    for kind in [
        ObjectKind::Blob,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Config,
        ObjectKind::PackHeader,
    ] {
        let _ = key.open(kind, data);
    }
});
