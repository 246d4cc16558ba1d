//! The WebDAV backend (OpenDAL `webdav`) against a real WsgiDAV server on a
//! loopback port (`lifeboat-testkit`). Run `scripts/test-deps.sh` first; under
//! `CI=true` a missing server fails these tests.

use bytes::Bytes;
use lifeboat_storage::{conformance, open_storage, BackendOptions, PutOptions, StorageError};

#[test]
fn conformance_on_wsgidav() {
    let Some(server) = lifeboat_testkit::webdav() else {
        return;
    };
    let backend = open_storage(&server.repo_url("repo"), &BackendOptions::default()).unwrap();
    assert!(
        backend.location().starts_with("webdav://"),
        "{}",
        backend.location()
    );
    // Through the same layers the CLI uses: WsgiDAV answers two concurrent MKCOLs of
    // one new collection with a 500 (FileExistsError), a transient error the retry
    // layer absorbs (seen in CI on the concurrent-puts case).
    let storage =
        lifeboat_storage::StorageStack::build(backend, &lifeboat_storage::LayerOptions::default())
            .storage;
    conformance::run_all(storage.as_ref());

    // Atomic puts go through temporary names (upload, then MOVE); none is left
    // behind and none is listed.
    for i in 0..10 {
        storage
            .put(
                &format!("data/cd/{i}"),
                Bytes::from(vec![3u8; 50_000]),
                &PutOptions::default(),
            )
            .unwrap();
    }
    let listed = storage.list("data/cd").unwrap();
    assert_eq!(listed.len(), 10, "{listed:?}");
    let mut leftovers = Vec::new();
    for e in walk(&server.root()) {
        if e.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".lbtmp-")
        {
            leftovers.push(e);
        }
    }
    assert!(
        leftovers.is_empty(),
        "temporary uploads left: {leftovers:?}"
    );
}

#[test]
fn create_mode_refuses_an_existing_object() {
    let Some(server) = lifeboat_testkit::webdav() else {
        return;
    };
    let storage = open_storage(&server.repo_url("create"), &BackendOptions::default()).unwrap();
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

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
