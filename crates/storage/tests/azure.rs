//! The Azure Blob backend (OpenDAL `azblob`) against a real Azurite server on
//! a loopback port (`lifeboat-testkit`), with the development account
//! `devstoreaccount1`. Run `scripts/test-deps.sh` first; under `CI=true` a
//! missing server fails these tests.

use bytes::Bytes;
use lifeboat_storage::{conformance, open_storage, BackendOptions, PutOptions, StorageError};

fn open(
    server: &lifeboat_testkit::AzuriteServer,
    container: &str,
    prefix: &str,
) -> lifeboat_storage::DynStorage {
    let url = server.repo_url(container, prefix);
    let opts = BackendOptions {
        endpoint: Some(server.endpoint()),
        ..BackendOptions::default()
    };
    open_storage(&url, &opts).unwrap()
}

#[test]
fn conformance_on_azurite() {
    let Some(server) = lifeboat_testkit::azurite() else {
        return;
    };
    let storage = open(&server, "lifeboat", "repo");
    assert_eq!(storage.location(), "azure://lifeboat/repo");
    conformance::run_all(storage.as_ref());
}

#[test]
fn create_mode_refuses_an_existing_object() {
    let Some(server) = lifeboat_testkit::azurite() else {
        return;
    };
    let storage = open(&server, "create", "r");
    storage
        .put(
            "snapshots/x",
            Bytes::from_static(b"first"),
            &PutOptions::create(),
        )
        .unwrap();
    let err = storage
        .put(
            "snapshots/x",
            Bytes::from_static(b"second"),
            &PutOptions::create(),
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
    assert_eq!(&storage.get("snapshots/x", None).unwrap()[..], b"first");
}

#[test]
fn a_missing_container_is_an_error_naming_it() {
    let Some(server) = lifeboat_testkit::azurite() else {
        return;
    };
    let opts = BackendOptions {
        endpoint: Some(server.endpoint()),
        ..BackendOptions::default()
    };
    let storage = open_storage("azure://no-such-container/repo", &opts).unwrap();
    let err = storage
        .put("config", Bytes::from_static(b"x"), &PutOptions::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no-such-container"), "{msg}");
}
