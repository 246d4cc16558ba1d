//! The S3 backend against a real S3-compatible server (moto), started on a
//! free loopback port by `lifeboat-testkit`. Run `scripts/test-deps.sh` first;
//! under `CI=true` a missing moto fails these tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lifeboat_storage::layers::{FaultConfig, FaultStorage, RetryPolicy, RetryStorage};
use lifeboat_storage::{
    conformance, open_storage, BackendOptions, LayerOptions, PutOptions, Storage, StorageError,
    StorageStack,
};
use lifeboat_testkit::MotoServer;

fn s3(moto: &MotoServer, bucket: &str, prefix: &str, opts: &BackendOptions) -> Arc<dyn Storage> {
    open_storage(&moto.repo_url(bucket, prefix), opts).expect("open the S3 repository")
}

#[test]
fn conformance_on_moto() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let storage = s3(&moto, "conformance", "repo/one", &BackendOptions::default());
    assert_eq!(
        storage.location(),
        format!("s3:{}/conformance/repo/one", moto.endpoint())
    );
    conformance::run_all(storage.as_ref());
}

#[test]
fn racing_creates_leave_one_whole_object() {
    // Create uses S3's conditional write (If-None-Match: *). Real S3 lets exactly
    // one racer win; moto evaluates the condition without a lock, so under a
    // race it may let two through. Either way the object is one writer's whole
    // content, and a create after the race is refused.
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    // moto also answers some racing conditional writes with a 500 (retryable),
    // so race through the retry layer, as the repository does.
    let storage = RetryStorage::new(
        s3(&moto, "race", "r", &BackendOptions::default()),
        RetryPolicy {
            max_retries: 5,
            base_delay_ms: 5,
            max_delay_ms: 50,
        },
    );
    for round in 0..3 {
        let key = format!("locks/k{round}");
        let wins = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let (storage, wins, key) = (&storage, &wins, &key);
                scope.spawn(move || {
                    match storage.put(key, Bytes::from(vec![t; 100]), &PutOptions::create()) {
                        Ok(()) => {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StorageError::AlreadyExists { .. }) => {}
                        Err(e) => panic!("unexpected error from a racing create: {e}"),
                    }
                });
            }
        });
        let wins = wins.load(Ordering::SeqCst);
        assert!((1..8).contains(&wins), "round {round}: {wins} winners");
        let got = storage.get(&key, None).unwrap();
        assert!(
            got.len() == 100 && got.iter().all(|b| *b == got[0]),
            "round {round}"
        );
        let again = storage.put(&key, Bytes::from_static(b"late"), &PutOptions::create());
        assert!(
            matches!(again, Err(StorageError::AlreadyExists { .. })),
            "{again:?}"
        );
    }
}

#[test]
fn prefixes_isolate_repositories_in_one_bucket() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let a = s3(&moto, "shared", "hosts/a", &BackendOptions::default());
    let b = s3(&moto, "shared", "hosts/ab", &BackendOptions::default());
    a.put(
        "snapshots/1",
        Bytes::from_static(b"a"),
        &PutOptions::default(),
    )
    .unwrap();
    b.put(
        "snapshots/2",
        Bytes::from_static(b"bb"),
        &PutOptions::default(),
    )
    .unwrap();
    let keys: Vec<_> = a
        .list("snapshots")
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, vec!["snapshots/1"]);
    assert!(b.get("snapshots/1", None).unwrap_err().is_not_found());
}

/// Read the response headers of a HEAD on an object, straight from moto.
fn raw_head(moto: &MotoServer, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", moto.port())).unwrap();
    // moto checks that a request is signed by a known-looking key, not the signature.
    write!(
        s,
        "HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=lifeboat-test-key/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\r\n",
        moto.port()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.to_ascii_lowercase()
}

#[test]
fn storage_class_and_server_side_encryption_reach_the_server() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let opts = BackendOptions {
        storage_class: Some("STANDARD_IA".into()),
        server_side_encryption: Some("AES256".into()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let storage = s3(&moto, "classy", "repo", &opts);
    storage
        .put(
            "data/ab/obj",
            Bytes::from_static(b"payload"),
            &PutOptions::default(),
        )
        .unwrap();
    let head = raw_head(&moto, "/classy/repo/data/ab/obj");
    assert!(head.contains("x-amz-storage-class: standard_ia"), "{head}");
    assert!(
        head.contains("x-amz-server-side-encryption: aes256"),
        "{head}"
    );
}

#[test]
fn errors_name_the_object_but_never_the_credentials() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    // A bucket that does not exist: every write fails on the server side.
    let storage = open_storage(
        &format!("s3:{}/no-such-bucket/repo", moto.endpoint()),
        &BackendOptions::default(),
    )
    .unwrap();
    let err = storage
        .put("keys/k1", Bytes::from_static(b"x"), &PutOptions::default())
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("keys/k1"), "{text}");
    assert!(text.contains("no-such-bucket"), "{text}");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    assert!(!text.contains(&secret), "secret leaked: {text}");
    assert!(!format!("{storage:?}").contains(&secret));
}

#[test]
fn counters_see_every_request_on_a_real_server() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let backend = s3(&moto, "counted", "repo", &BackendOptions::default());
    let stack = StorageStack::build(backend, &LayerOptions::default());
    let s = &stack.storage;
    for i in 0..10 {
        s.put(
            &format!("data/{i}"),
            Bytes::from(vec![i as u8; 1000]),
            &PutOptions::default(),
        )
        .unwrap();
    }
    assert_eq!(s.list("data").unwrap().len(), 10);
    for i in 0..10 {
        assert_eq!(
            s.get(&format!("data/{i}"), Some(10..110)).unwrap().len(),
            100
        );
    }
    s.delete("data/0").unwrap();
    let st = stack.stats.snapshot();
    assert_eq!(
        (st.put, st.list, st.get, st.delete),
        (10, 1, 10, 1),
        "{st:?}"
    );
    assert_eq!((st.bytes_written, st.bytes_read), (10_000, 1000));
    assert_eq!(st.errors, 0);
}

#[test]
fn ten_percent_faults_with_retry_pass_conformance_on_s3() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let backend = s3(&moto, "faulty", "repo", &BackendOptions::default());
    let faulty = Arc::new(FaultStorage::new(backend, FaultConfig::uniform(42, 0.10)));
    let storage = RetryStorage::new(
        faulty.clone(),
        RetryPolicy {
            max_retries: 8,
            base_delay_ms: 1,
            max_delay_ms: 20,
        },
    );
    conformance::run_all(&storage);
    assert!(
        faulty.injected() > 10,
        "faults were injected: {}",
        faulty.injected()
    );
}
