//! Blob decompression with an attacker-chosen algorithm code and length.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let code = data[0] % 4;
    let raw = u16::from_le_bytes([data[1], data[2]]) as usize;
    let _ = lifeboat_core::blob::decompress(code, data[3..].to_vec(), raw);
});
