//! A whole pack file (trailer, sealed header) read with a fixed key.
#![no_main]
use lifeboat_core::blob::Id;
use lifeboat_core::crypto::MasterKey;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret([7; 32]);
    let _ = lifeboat_core::pack::read_header(&key, &Id([0; 32]), data);
});
