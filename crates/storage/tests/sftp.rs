//! The SFTP backend against a real OpenSSH sshd on a loopback port with a
//! throwaway host key and user key (`lifeboat-testkit`). Run
//! `scripts/test-deps.sh` first; under `CI=true` a missing sshd fails these tests.

use bytes::Bytes;
use lifeboat_storage::{conformance, open_storage, BackendOptions, KnownHosts, PutOptions};
use lifeboat_testkit::SshServer;

fn options(server: &SshServer) -> BackendOptions {
    BackendOptions {
        sftp_identity: Some(server.identity()),
        // A throwaway host key on a random port: accept it (the guard forgets it on drop).
        sftp_known_hosts: KnownHosts::AcceptAny,
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
