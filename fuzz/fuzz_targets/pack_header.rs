//! Plaintext pack header decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((_, entries)) = lifeboat_core::pack::decode_header(data) {
        // What decodes must encode back to the same bytes.
        let t = lifeboat_core::blob::BlobType::from_code(data[5]).unwrap();
        assert_eq!(lifeboat_core::pack::encode_header(t, &entries), data);
    }
});
