//! The SFTP backend against a real OpenSSH sshd on a loopback port with a
//! throwaway host key and user key (`lifeboat-testkit`). Run
//! `scripts/test-deps.sh` first; under `CI=true` a missing sshd fails these tests.

use bytes::Bytes;
use lifeboat_storage::{conformance, open_storage, BackendOptions, KnownHosts, PutOptions};
use lifeboat_testkit::SshServer;

fn options(server: &SshServer) -> BackendOptions {
    BackendOptions {
        sftp_identity: Some(server.identity()),
        // The server's throwaway host key, checked strictly.
        sftp_known_hosts: KnownHosts::Strict,
        sftp_known_hosts_file: Some(server.known_hosts_file()),
        ..Default::default()
    }
}

#[test]
fn conformance_on_sshd() {
    let Some(server) = lifeboat_testkit::sshd() else {
        return;
    };
    let storage = open_storage(&server.repo_url("repo"), &options(&server)).unwrap();
    assert!(
        storage.location().starts_with("sftp://"),
        "{}",
        storage.location()
    );
    conformance::run_all(storage.as_ref());

    // Atomic puts go through temporary names; none may be left behind.
    for i in 0..20 {
        storage
            .put(
                &format!("data/ab/{i}"),
                Bytes::from(vec![7u8; 10_000]),
                &PutOptions::default(),
            )
            .unwrap();
    }
    let mut leftovers = Vec::new();
    let mut stack = vec![server.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if entry.file_name().to_string_lossy().starts_with(".lbtmp-") {
                leftovers.push(entry.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_eq!(
        std::fs::read(server.data_dir().join("repo/data/ab/3")).unwrap(),
        vec![7u8; 10_000],
        "objects land at their key under the repository path"
    );
}

#[test]
fn a_wrong_key_is_a_clean_error() {
    let Some(server) = lifeboat_testkit::sshd() else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("k");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let opts = BackendOptions {
        sftp_identity: Some(key),
        ..options(&server)
    };
    let storage = open_storage(&server.repo_url("repo"), &opts).unwrap();
    let err = storage.head("config").unwrap_err();
    assert!(
        !err.is_not_found(),
        "an auth failure is not 'not found': {err}"
    );
    assert!(err.to_string().contains("config"), "{err}");
}

#[test]
fn dropping_the_storage_closes_its_ssh_connections() {
    let Some(server) = lifeboat_testkit::sshd() else {
        return;
    };
    let storage = open_storage(&server.repo_url("repo"), &options(&server)).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let storage = &storage;
            scope.spawn(move || {
                storage
                    .put(
                        &format!("d/{t}"),
                        Bytes::from_static(b"x"),
                        &PutOptions::default(),
                    )
                    .unwrap()
            });
        }
    });
    assert!(
        !server.client_processes().is_empty(),
        "connections were opened"
    );
    drop(storage);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.client_processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        server.client_processes(),
        Vec::<u32>::new(),
        "no ssh master outlives the storage"
    );
}

#[test]
fn an_unknown_host_key_is_refused_under_strict_checking() {
    let Some(server) = lifeboat_testkit::sshd() else {
        return;
    };
    let empty = tempfile::NamedTempFile::new().unwrap();
    let opts = BackendOptions {
        sftp_known_hosts_file: Some(empty.path().to_path_buf()),
        ..options(&server)
    };
    let storage = open_storage(&server.repo_url("repo"), &opts).unwrap();
    let err = storage.list("snapshots").unwrap_err();
    assert!(
        err.is_retryable() || matches!(err, lifeboat_storage::StorageError::Backend { .. }),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(empty.path()).unwrap().is_empty(),
        "strict mode never records keys"
    );
}
