//! The OpenDAL `gcs` service, wrapped in [`OpendalStorage`], against a real
//! fake-gcs-server on a loopback port (`lifeboat-testkit`). Run
//! `scripts/test-deps.sh` first; under `CI=true` a missing server fails these
//! tests.
//!
//! The operator is built here (anonymous, no metadata server, no config
//! files) so create mode can run as check-then-write
//! (`without_conditional_create`): the emulator ignores `ifGenerationMatch=0`.
//! `open_storage("gcs://…")` with `-o gcs-auth=anonymous` is exercised by the
//! CLI test `gcs_backup_restore_and_check_read_data_on_fake_gcs_server`.

use bytes::Bytes;
use lifeboat_storage::{conformance, OpendalStorage, PutOptions, Storage, StorageError};
use opendal::services::Gcs;
use opendal::Operator;

fn open(server: &lifeboat_testkit::GcsServer, bucket: &str, prefix: &str) -> OpendalStorage {
    server.create_bucket(bucket);
    let b = Gcs::default()
        .bucket(bucket)
        .root(&format!("/{prefix}"))
        .endpoint(&server.endpoint())
        .allow_anonymous()
        .disable_vm_metadata()
        .disable_config_load();
    let op = Operator::new(b).unwrap().finish();
    OpendalStorage::new(op, format!("gcs://{bucket}/{prefix}")).without_conditional_create()
}

#[test]
fn conformance_on_fake_gcs_server() {
    let Some(server) = lifeboat_testkit::fake_gcs() else {
        return;
    };
    let storage = open(&server, "lifeboat", "repo");
    conformance::run_all(&storage);
}

#[test]
fn prefixes_in_one_bucket_are_isolated() {
    let Some(server) = lifeboat_testkit::fake_gcs() else {
        return;
    };
    let a = open(&server, "shared", "a");
    let b = open(&server, "shared", "b");
    a.put("keys/k", Bytes::from_static(b"A"), &PutOptions::create())
        .unwrap();
    assert!(b.list("keys").unwrap().is_empty());
    assert!(matches!(
        b.get("keys/k", None),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(&a.get("keys/k", None).unwrap()[..], b"A");
}
