//! Rough throughput of the real backends on this machine:
//! `cargo run --release -p lifeboat-storage --example throughput`.
//! Starts moto and sshd on loopback (scripts/test-deps.sh must have run) and
//! reports MiB/s for 16 MiB objects, 8 threads x 4 MiB objects, and small-object
//! PUTs per second.

use std::time::Instant;

use bytes::Bytes;
use lifeboat_storage::{open_storage, BackendOptions, DynStorage, KnownHosts, PutOptions};

fn measure(name: &str, s: &DynStorage) {
    let big = Bytes::from(
        (0..16 << 20)
            .map(|i: u32| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let t = Instant::now();
    s.put("bench/big", big.clone(), &PutOptions::default())
        .unwrap();
    let up = 16.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert_eq!(s.get("bench/big", None).unwrap().len(), big.len());
    let down = 16.0 / t.elapsed().as_secs_f64();

    let chunk = big.slice(0..4 << 20);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for th in 0..8 {
            let (s, chunk) = (s, chunk.clone());
            scope.spawn(move || {
                s.put(&format!("bench/par/{th}"), chunk, &PutOptions::default())
                    .unwrap()
            });
        }
    });
    let par = 32.0 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for i in 0..200 {
        s.put(
            &format!("bench/small/{i}"),
            Bytes::from(vec![1u8; 512]),
            &PutOptions::default(),
        )
        .unwrap();
    }
    let small = 200.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let listed = s.list("bench").unwrap().len();
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{name:6} put 16 MiB {up:6.1} MiB/s | get 16 MiB {down:6.1} MiB/s | 8x4 MiB parallel put {par:6.1} MiB/s | \
         512 B puts {small:6.0}/s | list {listed} objects {list_ms:.0} ms"
    );
}

fn main() {
    let local = tempfile::tempdir().unwrap();
    measure(
        "local",
        &open_storage(local.path().to_str().unwrap(), &BackendOptions::default()).unwrap(),
    );
    let moto = lifeboat_testkit::moto().expect("moto (scripts/test-deps.sh)");
    measure(
        "s3",
        &open_storage(&moto.repo_url("bench", "repo"), &BackendOptions::default()).unwrap(),
    );
    let sshd = lifeboat_testkit::sshd().expect("sshd (scripts/test-deps.sh)");
    let opts = BackendOptions {
        sftp_identity: Some(sshd.identity()),
        sftp_known_hosts: KnownHosts::Strict,
        sftp_known_hosts_file: Some(sshd.known_hosts_file()),
        ..Default::default()
    };
    measure(
        "sftp",
        &open_storage(&sshd.repo_url("repo"), &opts).unwrap(),
    );
}
