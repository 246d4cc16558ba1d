//! Snapshot, config and key-slot JSON decoders.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<lifeboat_core::snapshot::Snapshot>(data);
    let _ = serde_json::from_slice::<lifeboat_core::repository::Config>(data);
    let _ = serde_json::from_slice::<lifeboat_core::crypto::KeySlot>(data);
});
