//! S3 Object Lock against moto: uploads through `ObjectLockLayer` carry
//! retention that `Storage::retention` reads back; working-state objects get
//! none; buckets without Object Lock are recognised.

use bytes::Bytes;
use lifeboat_storage::{
    open_storage, BackendOptions, LockMode, ObjectLockLayer, PutOptions, S3ObjectLock, Storage,
};

#[test]
fn uploads_carry_retention_and_it_reads_back() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    moto.create_lock_bucket("locked");
    let url = format!("s3:{}/locked/repo", moto.endpoint());
    let opts = BackendOptions::default();
    let lock = S3ObjectLock::for_url(&url, &opts)
        .unwrap()
        .expect("an S3 URL");
    assert!(lock.bucket_enabled().unwrap());
    let storage = ObjectLockLayer::new(
        open_storage(&url, &opts).unwrap(),
        lock,
        LockMode::Governance,
        3,
    );

    let before = chrono::Utc::now();
    storage
        .put(
            "data/ab/ab01",
            Bytes::from_static(b"pack"),
            &PutOptions::create(),
        )
        .unwrap();
    storage
        .put(
            "locks/session",
            Bytes::from_static(b"{}"),
            &PutOptions::default(),
        )
        .unwrap();
    let r = storage
        .retention("data/ab/ab01")
        .unwrap()
        .expect("retained");
    assert_eq!(r.mode, "GOVERNANCE");
    let days = (r.until - before).num_hours();
    assert!((71..=73).contains(&days), "retained {days} h");
    assert_eq!(storage.retention("locks/session").unwrap(), None);
    assert_eq!(&storage.get("data/ab/ab01", None).unwrap()[..], b"pack");

    // A bucket without Object Lock.
    let plain = moto.repo_url("plain", "repo");
    let lock = S3ObjectLock::for_url(&plain, &opts).unwrap().unwrap();
    assert!(!lock.bucket_enabled().unwrap());
    // Not S3 at all.
    assert!(S3ObjectLock::for_url("/srv/repo", &opts).unwrap().is_none());
}
