//! Fault injection at the storage level: with retries, 10% faults are invisible;
//! without, every failure is a clean error and no partial object ever exists.

use std::sync::Arc;

use bytes::Bytes;
use lifeboat_storage::layers::{FaultConfig, FaultStorage, RetryPolicy, RetryStorage};
use lifeboat_storage::{conformance, MemoryStorage, PutOptions, Storage, StorageError};
use rand::{Rng, SeedableRng};

const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 8,
    base_delay_ms: 1,
    max_delay_ms: 10,
};

#[test]
fn ten_percent_faults_are_hidden_by_retry() {
    for seed in 0..5 {
        let faulty = Arc::new(FaultStorage::new(
            Arc::new(MemoryStorage::new()),
            FaultConfig::uniform(seed, 0.10),
        ));
        conformance::run_all(&RetryStorage::new(faulty.clone(), FAST_RETRY));
        assert!(faulty.injected() > 0, "seed {seed} injected nothing");
    }
}

#[test]
fn without_retry_errors_are_clean_and_objects_whole() {
    let clean = Arc::new(MemoryStorage::new());
    let faulty = FaultStorage::new(clean.clone(), FaultConfig::uniform(7, 0.30));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut written = Vec::new();
    let (mut put_errors, mut get_errors, mut creates_refused) = (0, 0, 0);
    for i in 0..300 {
        let len = rng.gen_range(0..50_000);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let key = format!("data/{i:03}");
        let mode = if i % 2 == 0 {
            PutOptions::create()
        } else {
            PutOptions::default()
        };
        match faulty.put(&key, Bytes::from(data.clone()), &mode) {
            Ok(()) => {}
            Err(e) => {
                assert!(e.is_retryable(), "injected failures are retryable: {e}");
                assert!(e.to_string().contains(&key), "errors name the key: {e}");
                put_errors += 1;
            }
        }
        // Retrying a create whose answer was lost meets the stored object.
        if i % 2 == 0 {
            if let Err(StorageError::AlreadyExists { .. }) =
                faulty.put(&key, Bytes::from(data.clone()), &mode)
            {
                creates_refused += 1;
            }
        }
        written.push((key, data));
    }
    // The truth, seen without faults: every object is absent or whole.
    for (key, data) in &written {
        match clean.get(key, None) {
            Ok(stored) => assert_eq!(&stored[..], &data[..], "{key} is whole"),
            Err(e) => assert!(e.is_not_found(), "{key}: {e}"),
        }
    }
    // Reads through the faults: exact bytes or an error, never a short read.
    for (key, data) in &written {
        let Ok(stored) = clean.get(key, None) else {
            continue;
        };
        assert_eq!(stored.len(), data.len());
        for _ in 0..3 {
            let range = if data.len() > 10 {
                Some(5..data.len() as u64 - 5)
            } else {
                None
            };
            match faulty.get(key, range.clone()) {
                Ok(got) => {
                    let want = match &range {
                        Some(r) => &data[r.start as usize..r.end as usize],
                        None => &data[..],
                    };
                    assert_eq!(&got[..], want, "{key}: a successful read is exact");
                }
                Err(e) => {
                    assert!(e.is_retryable(), "{e}");
                    get_errors += 1;
                }
            }
        }
    }
    assert!(
        put_errors > 30 && get_errors > 30,
        "faults happened: {put_errors} {get_errors}"
    );
    assert!(creates_refused > 0, "some lost-answer creates were seen");
    eprintln!("put errors {put_errors}, get errors {get_errors}, creates already stored {creates_refused}");
}

#[test]
fn truncated_reads_surface_as_errors() {
    let clean = Arc::new(MemoryStorage::new());
    clean
        .put("p/x", Bytes::from(vec![1u8; 4096]), &PutOptions::default())
        .unwrap();
    let faulty = FaultStorage::new(
        clean,
        FaultConfig {
            truncate_rate: 1.0,
            ..FaultConfig::none(1)
        },
    );
    let err = faulty.get("p/x", None).unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("2048 of 4096"), "{err}");
}
