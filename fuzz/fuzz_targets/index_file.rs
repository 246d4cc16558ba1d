//! Index file decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(f) = lifeboat_core::index::IndexFile::decode(data) {
        assert_eq!(f.encode(), data);
        let _ = lifeboat_core::index::Index::from_files([&f]);
    }
});
