//! Tree blob decoder (JSON) and name handling.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(t) = lifeboat_core::tree::Tree::deserialize(data) {
        for n in &t.nodes {
            let _ = n.os_name();
            let _ = n.os_link_target();
        }
        let again = lifeboat_core::tree::Tree::deserialize(&t.clone().serialize()).unwrap();
        assert_eq!(again.nodes.len(), t.nodes.len());
    }
});
