//! The conformance suite for the [`Storage`](crate::Storage) contract.
//!
//! Every backend runs [`run_all`] in its tests: memory and local here, remote
//! backends against real servers started by their test harness. Each check
//! panics with a message naming the rule it found broken.

use std::sync::Arc;

use bytes::Bytes;

use crate::{PutOptions, Storage, StorageError};

/// Run every check against `storage`, which must be empty.
pub fn run_all(storage: &dyn Storage) {
    put_get_roundtrip(storage);
    range_reads(storage);
    not_found_mapping(storage);
    overwrite_and_create(storage);
    list_prefixes(storage);
    delete_is_idempotent(storage);
    large_object(storage);
    concurrent_puts(storage);
    invalid_keys(storage);
}

pub fn put_get_roundtrip(s: &dyn Storage) {
    s.put(
        "conf/a",
        Bytes::from_static(b"hello"),
        &PutOptions::default(),
    )
    .unwrap();
    assert_eq!(
        &s.get("conf/a", None).unwrap()[..],
        b"hello",
        "get returns what put stored"
    );
    assert_eq!(s.head("conf/a").unwrap().size, 5, "head reports the size");
    s.put("conf/empty", Bytes::new(), &PutOptions::default())
        .unwrap();
    assert_eq!(
        s.get("conf/empty", None).unwrap().len(),
        0,
        "empty objects exist"
    );
    assert!(s.exists("conf/empty").unwrap());
    cleanup(s, "conf");
}

pub fn range_reads(s: &dyn Storage) {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    s.put("range/x", Bytes::from(data.clone()), &PutOptions::default())
        .unwrap();
    assert_eq!(&s.get("range/x", Some(0..10)).unwrap()[..], &data[0..10]);
    assert_eq!(
        &s.get("range/x", Some(9990..10_000)).unwrap()[..],
        &data[9990..]
    );
    assert_eq!(
        &s.get("range/x", Some(4000..6000)).unwrap()[..],
        &data[4000..6000]
    );
    assert!(
        matches!(
            s.get("range/x", Some(9990..10_001)),
            Err(StorageError::Range { .. })
        ),
        "a range past the end is an error, not a short read"
    );
    // get_into: the same bytes into a buffer kept across reads, whatever it held.
    let mut buf = b"left over from an earlier read".repeat(1000);
    s.get_into("range/x", Some(4000..6000), &mut buf).unwrap();
    assert_eq!(
        buf,
        &data[4000..6000],
        "get_into replaces the buffer's content"
    );
    s.get_into("range/x", None, &mut buf).unwrap();
    assert_eq!(buf, data, "get_into without a range reads the whole object");
    s.get_into("range/x", Some(10..10), &mut buf).unwrap();
    assert!(buf.is_empty(), "an empty range reads nothing");
    assert!(
        matches!(
            s.get_into("range/x", Some(9990..10_001), &mut buf),
            Err(StorageError::Range { .. })
        ),
        "get_into: a range past the end is an error, not a short read"
    );
    cleanup(s, "range");
}

pub fn not_found_mapping(s: &dyn Storage) {
    assert!(matches!(
        s.get("nf/missing", None),
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.get("nf/missing", Some(0..1)),
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.get_into("nf/missing", Some(0..1), &mut Vec::new()),
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.head("nf/missing"),
        Err(StorageError::NotFound { .. })
    ));
    assert!(!s.exists("nf/missing").unwrap());
    assert!(
        s.list("nf").unwrap().is_empty(),
        "an absent prefix lists nothing"
    );
}

pub fn overwrite_and_create(s: &dyn Storage) {
    s.put("ow/k", Bytes::from_static(b"one"), &PutOptions::create())
        .unwrap();
    let err = s
        .put("ow/k", Bytes::from_static(b"two"), &PutOptions::create())
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists { .. }),
        "create refuses an existing key: {err}"
    );
    assert_eq!(
        &s.get("ow/k", None).unwrap()[..],
        b"one",
        "a refused create changes nothing"
    );
    s.put("ow/k", Bytes::from_static(b"three"), &PutOptions::default())
        .unwrap();
    assert_eq!(
        &s.get("ow/k", None).unwrap()[..],
        b"three",
        "overwrite replaces"
    );
    cleanup(s, "ow");
}

pub fn list_prefixes(s: &dyn Storage) {
    for k in ["ls/a/1", "ls/a/2", "ls/b/3", "ls/4", "lsx/5"] {
        s.put(
            k,
            Bytes::from(k.as_bytes().to_vec()),
            &PutOptions::default(),
        )
        .unwrap();
    }
    let mut keys: Vec<_> = s
        .list("ls")
        .unwrap()
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("ls/4".to_string(), 4),
            ("ls/a/1".to_string(), 6),
            ("ls/a/2".to_string(), 6),
            ("ls/b/3".to_string(), 6)
        ],
        "list is recursive, exact on the prefix boundary, with sizes"
    );
    let mut sub: Vec<_> = s.list("ls/a").unwrap().into_iter().map(|m| m.key).collect();
    sub.sort();
    assert_eq!(sub, vec!["ls/a/1", "ls/a/2"]);
    cleanup(s, "ls");
    cleanup(s, "lsx");
}

pub fn delete_is_idempotent(s: &dyn Storage) {
    s.put("del/k", Bytes::from_static(b"x"), &PutOptions::default())
        .unwrap();
    s.delete("del/k").unwrap();
    assert!(matches!(
        s.get("del/k", None),
        Err(StorageError::NotFound { .. })
    ));
    s.delete("del/k").unwrap();
    s.delete("del/never").unwrap();
}

pub fn large_object(s: &dyn Storage) {
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    s.put("big/obj", Bytes::from(data.clone()), &PutOptions::default())
        .unwrap();
    assert_eq!(s.head("big/obj").unwrap().size, data.len() as u64);
    let back = s.get("big/obj", None).unwrap();
    assert!(back[..] == data[..], "large object round trip");
    let mid = s.get("big/obj", Some(10_000_000..10_000_100)).unwrap();
    assert_eq!(&mid[..], &data[10_000_000..10_000_100]);
    cleanup(s, "big");
}

pub fn concurrent_puts(s: &dyn Storage) {
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                for i in 0..16 {
                    let key = format!("conc/{t}/{i}");
                    s.put(
                        &key,
                        Bytes::from(key.clone().into_bytes()),
                        &PutOptions::default(),
                    )
                    .unwrap();
                    assert_eq!(s.get(&key, None).unwrap(), key.as_bytes());
                }
            });
        }
    });
    assert_eq!(
        s.list("conc").unwrap().len(),
        128,
        "every concurrent put is listed once"
    );
    // Racing creates on one key: exactly one wins.
    let wins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let wins = wins.clone();
            scope.spawn(move || {
                if s.put("conc/race", Bytes::from(vec![t; 64]), &PutOptions::create())
                    .is_ok()
                {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let got = s.get("conc/race", None).unwrap();
    assert!(
        got.iter().all(|b| *b == got[0]),
        "a raced object is one writer's whole content"
    );
    assert!(wins.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    cleanup(s, "conc");
}

pub fn invalid_keys(s: &dyn Storage) {
    for bad in ["", "/abs", "../up", "a//b"] {
        assert!(
            matches!(
                s.put(bad, Bytes::new(), &PutOptions::default()),
                Err(StorageError::InvalidKey { .. })
            ),
            "key {bad:?} must be refused"
        );
    }
}

fn cleanup(s: &dyn Storage, prefix: &str) {
    for m in s.list(prefix).unwrap() {
        s.delete(&m.key).unwrap();
    }
}
