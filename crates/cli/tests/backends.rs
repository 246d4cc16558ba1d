//! The real `lifeboat` binary against real servers started by
//! `lifeboat-testkit`: moto (S3), OpenSSH sshd (SFTP), WsgiDAV (WebDAV) and
//! Azurite (Azure Blob).
//!
//! * backup → restore (byte comparison) → check --read-data → copy, on S3 and
//!   on SFTP; copies S3 → SFTP (by blob id) and local → S3 (re-chunked);
//! * backups, checks, restores and copies under 10% injected storage faults
//!   (errors, timeouts, truncated transfers; `LIFEBOAT_TEST_FAULTS`): each
//!   either completes or fails with a clear error and exit code 1, and the
//!   repository always passes `check` afterwards;
//! * SIGKILL at random points of a backup (local and S3): `check` passes after
//!   every kill and the final run reuses the packs already indexed.
//!
//! Random choices are seeded and printed, so a failure can be replayed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_storage::{BackendOptions, DynStorage, KnownHosts, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const PW: &str = "backends test password";
const PW2: &str = "the other repository";

/// One repository as the CLI reaches it: URL, password, backend options.
#[derive(Clone)]
struct Repo {
    url: String,
    password: String,
    options: Vec<String>,
}

impl Repo {
    fn local(dir: &Path) -> Self {
        Repo {
            url: dir.display().to_string(),
            password: PW.into(),
            options: Vec::new(),
        }
    }

    fn s3(moto: &lifeboat_testkit::MotoServer, bucket: &str, prefix: &str) -> Self {
        Repo {
            url: moto.repo_url(bucket, prefix),
            password: PW.into(),
            options: Vec::new(),
        }
    }

    fn sftp(server: &lifeboat_testkit::SshServer, name: &str) -> Self {
        Repo {
            url: server.repo_url(name),
            password: PW.into(),
            options: vec![
                format!("sftp-identity={}", server.identity().display()),
                format!(
                    "sftp-known-hosts-file={}",
                    server.known_hosts_file().display()
                ),
            ],
        }
    }

    fn with_password(mut self, p: &str) -> Self {
        self.password = p.into();
        self
    }

    /// Direct access to the objects (to count index files), outside the CLI.
    fn storage(&self, sftp: Option<&lifeboat_testkit::SshServer>) -> DynStorage {
        let opts = match sftp {
            Some(s) => BackendOptions {
                sftp_identity: Some(s.identity()),
                sftp_known_hosts: KnownHosts::Strict,
                sftp_known_hosts_file: Some(s.known_hosts_file()),
                ..BackendOptions::default()
            },
            None => BackendOptions::default(),
        };
        lifeboat_storage::open_storage(&self.url, &opts).unwrap()
    }
}

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `lifeboat -r REPO ARGS` with a clean environment (its own cache dir,
    /// cheap KDF, no LIFEBOAT_* from outside).
    fn cmd(&self, repo: &Repo, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFEBOAT_") {
                c.env_remove(k);
            }
        }
        c.env("LIFEBOAT_INSECURE_TEST_KDF", "1")
            .env("LIFEBOAT_PASSWORD", &repo.password)
            .env("XDG_CACHE_HOME", self.path().join("cache"))
            .env("TZ", "UTC")
            .arg("--repo")
            .arg(&repo.url);
        for o in &repo.options {
            c.arg("-o").arg(o);
        }
        c.args(args);
        c
    }

    fn run(&self, repo: &Repo, args: &[&str]) -> Output {
        self.cmd(repo, args).output().unwrap()
    }

    fn ok(&self, repo: &Repo, args: &[&str]) -> String {
        let o = self.run(repo, args);
        assert!(
            o.status.success(),
            "lifeboat {args:?} on {} failed ({}): {}",
            repo.url,
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, repo: &Repo, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(repo, &a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `copy` from `from` into `to` (the source password through LIFEBOAT_FROM_PASSWORD).
    fn copy(&self, from: &Repo, to: &Repo, extra: &[&str]) -> Value {
        let mut c = self.cmd(to, &["copy", "--json", "--from-repo", &from.url]);
        c.args(extra).env("LIFEBOAT_FROM_PASSWORD", &from.password);
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "copy {} -> {} failed: {}",
            from.url,
            to.url,
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `init` of `to` with the chunker parameters and content key of `from`.
    fn init_like(&self, to: &Repo, from: &Repo) {
        let mut c = self.cmd(
            to,
            &["init", "--copy-chunker-params", "--from-repo", &from.url],
        );
        c.env("LIFEBOAT_FROM_PASSWORD", &from.password);
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "init --copy-chunker-params: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Restore `snapshot` of `repo` and compare it with `src` byte for byte.
    fn assert_restores(&self, repo: &Repo, snapshot: &str, src: &Path) {
        let target = self
            .path()
            .join(format!("restore-{}", rand::random::<u32>()));
        self.ok(
            repo,
            &[
                "restore",
                snapshot,
                "--target",
                target.to_str().unwrap(),
                "--verify",
            ],
        );
        let restored = target.join(src.strip_prefix("/").unwrap());
        assert_same_tree(&restored, src);
        fs::remove_dir_all(&target).unwrap();
    }

    fn assert_check_read_data(&self, repo: &Repo) -> Value {
        let v = self.json(repo, &["check", "--read-data"]);
        assert!(
            v["errors"].as_array().unwrap().is_empty(),
            "check --read-data of {}: {v}",
            repo.url
        );
        v
    }
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A source tree with nested directories, a symlink, an empty file, a file
/// present twice and `big` bytes of incompressible data in several files.
fn sample(dir: &Path, big: usize, seed: u64) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("etc/conf.d")).unwrap();
    fs::create_dir_all(src.join("var/lib/empty")).unwrap();
    fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(src.join("etc/conf.d/app.toml"), format!("seed = {seed}\n")).unwrap();
    fs::write(src.join("var/empty.file"), b"").unwrap();
    let twice = pseudo_random(700_000, seed ^ 0xabc);
    fs::write(src.join("var/lib/one.bin"), &twice).unwrap();
    fs::write(src.join("var/lib/two.bin"), &twice).unwrap();
    let parts = 4;
    for i in 0..parts {
        fs::write(
            src.join(format!("var/data{i}.bin")),
            pseudo_random(big / parts, seed.wrapping_add(i as u64 * 7919)),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("../etc/hosts", src.join("var/hosts-link")).unwrap();
    src
}

fn tree_listing(root: &Path) -> Vec<(PathBuf, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((
                    rel,
                    "symlink".into(),
                    t.into_os_string().into_encoded_bytes(),
                ));
            } else if m.is_dir() {
                stack.push(p);
                out.push((rel, "dir".into(), Vec::new()));
            } else {
                let h = blake3::hash(&fs::read(&p).unwrap());
                out.push((rel, "file".into(), h.as_bytes().to_vec()));
            }
        }
    }
    out.sort();
    out
}

fn assert_same_tree(restored: &Path, src: &Path) {
    let (a, b) = (tree_listing(restored), tree_listing(src));
    assert_eq!(a.len(), b.len(), "entry count differs");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "restored entry differs from the source");
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The full loop on one repository: backup (twice, the second incremental)
/// → restore both → check --read-data; request counts in every summary.
fn backup_restore_check(env: &Env, repo: &Repo, src: &Path) -> (String, String) {
    env.ok(repo, &["init"]);
    let b1 = env.json(repo, &["backup", src.to_str().unwrap(), "--tag", "first"]);
    let s1 = b1["snapshot_id"].as_str().unwrap().to_string();
    assert!(n(&b1["requests"]["put"]) > 0, "{b1}");
    fs::write(src.join("etc/hosts"), "10.0.0.1 changed\n").unwrap();
    let b2 = env.json(repo, &["backup", src.to_str().unwrap()]);
    let s2 = b2["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(n(&b2["summary"]["files_unmodified"]), 8, "{b2}");
    assert!(
        n(&b2["summary"]["data_added"]) < 10_000,
        "an incremental backup adds only the change: {b2}"
    );
    // No repeated full listings: a backup lists each prefix it needs once or twice.
    assert!(n(&b2["requests"]["list"]) <= 6, "{b2}");
    env.assert_restores(repo, &s2, src);
    fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    env.assert_restores(repo, &s1, src);
    let check = env.assert_check_read_data(repo);
    assert_eq!(n(&check["snapshots"]), 2);
    assert!(n(&check["requests"]["get"]) > 0, "{check}");
    (s1, s2)
}

#[test]
fn s3_backup_restore_check_then_copy_to_sftp_by_blob_id() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let Some(sshd) = lifeboat_testkit::sshd() else {
        return;
    };
    let env = Env::new();
    let src = sample(env.path(), 6 << 20, 1);
    let s3 = Repo::s3(&moto, "lifeboat-e2e", "main");
    let (s1, _) = backup_restore_check(&env, &s3, &src);

    let sftp = Repo::sftp(&sshd, "offsite").with_password(PW2);
    env.init_like(&sftp, &s3);
    let dry = env.copy(&s3, &sftp, &["--dry-run"]);
    assert_eq!(dry["summary"]["copied"].as_array().unwrap().len(), 2);
    assert_eq!(n(&dry["requests"]["destination"]["put"]), 0, "{dry}");

    let first = env.copy(&s3, &sftp, &[]);
    let summary = &first["summary"];
    assert_eq!(summary["mode"], "blobs", "{first}");
    assert_eq!(summary["copied"].as_array().unwrap().len(), 2);
    // The file stored twice, and the unchanged files of the second snapshot,
    // are copied once.
    assert_eq!(
        summary["data_blobs_copied"],
        dry["summary"]["data_blobs_copied"]
    );
    assert!(n(&summary["bytes_copied"]) < (6 << 20) + 800_000, "{first}");
    assert!(n(&first["requests"]["source"]["get"]) > 0);
    assert!(n(&first["requests"]["destination"]["put"]) > 0);

    let again = env.copy(&s3, &sftp, &[]);
    assert!(
        again["summary"]["copied"].as_array().unwrap().is_empty(),
        "{again}"
    );
    assert_eq!(again["summary"]["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(
        n(&again["requests"]["destination"]["put"]),
        0,
        "a second copy writes nothing: {again}"
    );

    env.assert_check_read_data(&sftp);
    let copied = first["summary"]["copied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"] == s1.as_str())
        .unwrap()["destination"]
        .as_str()
        .unwrap()
        .to_string();
    env.assert_restores(&sftp, &copied, &src);
    drop(sshd);
}

#[test]
fn sftp_backup_restore_check_and_local_to_s3_copy_rechunks() {
    let Some(sshd) = lifeboat_testkit::sshd() else {
        return;
    };
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let env = Env::new();
    let src = sample(env.path(), 4 << 20, 2);
    let sftp = Repo::sftp(&sshd, "main");
    backup_restore_check(&env, &sftp, &src);
    assert!(
        sshd.client_processes().is_empty(),
        "every lifeboat run closed its ssh connection"
    );

    let local = Repo::local(&env.path().join("local-repo"));
    env.ok(&local, &["init"]);
    let b = env.json(
        &local,
        &["backup", src.to_str().unwrap(), "--tag", "nightly"],
    );
    let local_snap = b["snapshot_id"].as_str().unwrap().to_string();
    env.json(&local, &["backup", src.to_str().unwrap(), "--tag", "other"]);

    // An independently created S3 repository: contents are re-chunked.
    let s3 = Repo::s3(&moto, "lifeboat-e2e", "copy-of-local").with_password(PW2);
    env.ok(&s3, &["init"]);
    let first = env.copy(&local, &s3, &["--tag", "nightly"]);
    assert_eq!(first["summary"]["mode"], "rechunk", "{first}");
    let copied = first["summary"]["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "only the snapshot with the tag: {first}");
    assert_eq!(copied[0]["source"], local_snap.as_str());
    let dst_snap = copied[0]["destination"].as_str().unwrap().to_string();
    let again = env.copy(&local, &s3, &["--tag", "nightly"]);
    assert!(again["summary"]["copied"].as_array().unwrap().is_empty());
    assert_eq!(n(&again["requests"]["destination"]["put"]), 0, "{again}");
    env.assert_check_read_data(&s3);
    env.assert_restores(&s3, &dst_snap, &src);
    let snaps = env.json(&s3, &["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert_eq!(snaps[0]["original"], local_snap.as_str());
}

/// Run `lifeboat ARGS` with injected storage faults; returns the output.
fn with_faults(env: &Env, repo: &Repo, spec: &str, retries: Option<u32>, args: &[&str]) -> Output {
    let mut c = env.cmd(repo, args);
    c.env("LIFEBOAT_TEST_FAULTS", spec);
    if let Some(r) = retries {
        c.env("LIFEBOAT_TEST_RETRIES", r.to_string());
    }
    c.output().unwrap()
}

/// A failed run must say what failed, exit with 1 and leave no trace of a
/// half-finished state that `check` would object to.
fn assert_clean_failure(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    let last = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| {
            panic!("{what}: no `error:` line in {err}");
        });
    assert!(
        last.contains("injected") || last.contains("timed out") || last.contains("cut"),
        "{what}: the error names the storage failure: {last}"
    );
}

fn faults_on(env: &Env, repo: &Repo, direct: &DynStorage, src: &Path, tag: &str) {
    // Small chunks and packs: a backup makes a few hundred requests.
    env.ok(
        repo,
        &[
            "init",
            "--chunker",
            "16384/65536/262144",
            "--min-pack-size",
            "65536",
        ],
    );

    // 10% faults under the usual retries: every run completes (or fails cleanly).
    let (mut completed, mut errors) = (0, 0);
    for seed in 1..=3u64 {
        // New data every time, so each run uploads packs and index files.
        fs::write(
            src.join(format!("var/retry{seed}.bin")),
            pseudo_random(1 << 20, seed),
        )
        .unwrap();
        let spec = format!("rate=0.1,seed={seed}");
        let o = with_faults(
            env,
            repo,
            &spec,
            None,
            &["backup", src.to_str().unwrap(), "--json"],
        );
        if o.status.success() {
            completed += 1;
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            errors += n(&v["requests"]["errors"]);
        } else {
            assert_clean_failure(&o, &format!("{tag} backup, {spec}"));
        }
        env.assert_check_read_data(repo);
    }
    eprintln!("{tag}: {completed}/3 backups with 10% faults and retries completed, {errors} failed requests retried");
    assert!(completed == 0 || errors > 0, "{tag}: no fault was injected");
    // Reads under faults: check --read-data and restore survive truncated reads.
    let o = with_faults(
        env,
        repo,
        "rate=0.1,seed=11",
        None,
        &["check", "--read-data", "--json"],
    );
    if o.status.success() {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["errors"].as_array().unwrap().is_empty(), "{tag}: {v}");
    } else {
        assert_clean_failure(&o, &format!("{tag} check under faults"));
    }
    let target = env.path().join(format!("restore-faults-{tag}"));
    let o = with_faults(
        env,
        repo,
        "rate=0.1,seed=12",
        None,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    if o.status.success() {
        assert_same_tree(&target.join(src.strip_prefix("/").unwrap()), src);
    } else {
        assert_clean_failure(&o, &format!("{tag} restore under faults"));
    }

    // Without retries most runs fail part-way: each failure is clean and the
    // repository stays valid; a rerun without faults reuses indexed packs.
    fs::write(src.join("var/new.bin"), pseudo_random(3 << 20, 4242)).unwrap();
    // 10% fails most runs while the repository is opened; 3% lets many fail
    // while packs are uploaded.
    let mut failures = 0;
    let specs = (20..26u64)
        .map(|seed| format!("rate=0.1,seed={seed}"))
        .chain((30..36u64).map(|seed| format!("rate=0.03,seed={seed}")));
    for spec in specs {
        let o = with_faults(
            env,
            repo,
            &spec,
            Some(0),
            &["backup", src.to_str().unwrap()],
        );
        if !o.status.success() {
            failures += 1;
            assert_clean_failure(&o, &format!("{tag} backup without retries, {spec}"));
            eprintln!(
                "{tag} {spec}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let check = env.json(repo, &["check"]);
        assert!(
            check["errors"].as_array().unwrap().is_empty(),
            "{tag} {spec}: {check}"
        );
    }
    assert!(
        failures > 0,
        "{tag}: 10% faults without retries never failed a backup"
    );
    let index_files = direct.list("index").unwrap().len();
    let rerun = env.json(repo, &["backup", src.to_str().unwrap()]);
    let added = n(&rerun["summary"]["data_added"]);
    eprintln!("{tag}: {failures} failed runs; the rerun added {added} bytes ({index_files} index files before it)");
    assert!(
        added < 3 << 20,
        "{tag}: the rerun reuses what earlier runs stored: {rerun}"
    );
    env.assert_check_read_data(repo);
    let snap = rerun["snapshot_id"].as_str().unwrap().to_string();
    env.assert_restores(repo, &snap, src);
}

#[test]
fn backups_under_injected_faults_complete_or_fail_cleanly_and_never_break_the_repository() {
    let env = Env::new();
    let src = sample(env.path(), 2 << 20, 3);
    let local = Repo::local(&env.path().join("repo"));
    faults_on(&env, &local, &local.storage(None), &src, "local");
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let s3 = Repo::s3(&moto, "lifeboat-faults", "repo");
    for f in [
        "var/new.bin",
        "var/retry1.bin",
        "var/retry2.bin",
        "var/retry3.bin",
    ] {
        fs::remove_file(src.join(f)).unwrap();
    }
    faults_on(&env, &s3, &s3.storage(None), &src, "s3");
    // Replication under faults: the copy completes or fails cleanly, and the
    // destination checks either way; a rerun without faults finishes the job.
    let dst = Repo::local(&env.path().join("replica"));
    env.init_like(&dst, &s3);
    let mut c = env.cmd(&dst, &["copy", "--from-repo", &s3.url]);
    c.env("LIFEBOAT_FROM_PASSWORD", &s3.password)
        .env("LIFEBOAT_TEST_FAULTS", "rate=0.1,seed=5");
    let o = c.output().unwrap();
    if !o.status.success() {
        assert_clean_failure(&o, "copy under faults");
    }
    env.assert_check_read_data(&dst);
    let done = env.copy(&s3, &dst, &[]);
    let s3_snaps = env.json(&s3, &["snapshots"]).as_array().unwrap().len();
    let dst_snaps = env.json(&dst, &["snapshots"]).as_array().unwrap().len();
    assert_eq!(s3_snaps, dst_snaps, "{done}");
}

/// Start a backup, SIGKILL it at several points, check after every kill,
/// then finish it and prove the packs of the killed runs were reused.
fn kill_mid_backup(env: &Env, repo: &Repo, direct: &DynStorage, src: &Path, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    eprintln!("kill test on {} with seed {seed}", repo.url);
    // Small chunks and packs so a backup writes many packs and index
    // checkpoints; the upload limit makes it last a few seconds.
    env.ok(
        repo,
        &[
            "init",
            "--chunker",
            "65536/262144/1048576",
            "--min-pack-size",
            "262144",
        ],
    );
    let backup_args = [
        "backup",
        src.to_str().unwrap(),
        "--limit-upload",
        "8192",
        "--json",
    ];
    let total_bytes: u64 = tree_listing(src)
        .iter()
        .filter(|(_, kind, _)| kind == "file")
        .map(|(p, _, _)| fs::metadata(src.join(p)).unwrap().len())
        .sum();
    let mut killed = 0;
    for round in 0..3 {
        let mut child = env
            .cmd(repo, &backup_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        match round {
            // Early: during key derivation, index loading or the first uploads.
            0 => std::thread::sleep(Duration::from_millis(rng.gen_range(50..600))),
            // After the first index checkpoint, so the next run has packs to reuse.
            1 => {
                while direct.list("index").unwrap().is_empty()
                    && child.try_wait().unwrap().is_none()
                    && started.elapsed() < Duration::from_secs(300)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
            }
            _ => std::thread::sleep(Duration::from_millis(rng.gen_range(300..2500))),
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap_or(()); // SIGKILL
        let status = child.wait().unwrap();
        if !finished {
            killed += 1;
        }
        eprintln!(
            "round {round}: {} after {:?} ({status})",
            if finished {
                "finished before the kill"
            } else {
                "killed"
            },
            started.elapsed()
        );
        let check = env.json(repo, &["check"]);
        assert!(
            check["errors"].as_array().unwrap().is_empty(),
            "check after kill round {round}: {check}"
        );
    }
    assert!(
        killed >= 2,
        "the backups finished before they could be killed"
    );
    let had_index = !direct.list("index").unwrap().is_empty();
    let o = env.cmd(repo, &backup_args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let added = n(&v["summary"]["data_added"]);
    assert!(
        had_index,
        "no index checkpoint was written before the kills"
    );
    // At least one index checkpoint (32 packs of at least 256 KiB) was written
    // by the killed runs: at least 8 MiB need not be uploaded again.
    assert!(
        added + (7 << 20) <= total_bytes,
        "the final run reuses the packs of the killed runs: added {added} of {total_bytes}: {v}"
    );
    env.assert_check_read_data(repo);
    env.assert_restores(repo, v["snapshot_id"].as_str().unwrap(), src);
}

fn kill_seed() -> u64 {
    std::env::var("LIFEBOAT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[test]
fn sigkill_mid_backup_on_local_storage_leaves_a_valid_repository_and_packs_are_reused() {
    let env = Env::new();
    let src = sample(env.path(), 40 << 20, 4);
    let repo = Repo::local(&env.path().join("repo"));
    let direct: DynStorage = Arc::new(lifeboat_storage::LocalStorage::new(env.path().join("repo")));
    kill_mid_backup(&env, &repo, &direct, &src, kill_seed());
}

#[test]
fn sigkill_mid_backup_on_s3_leaves_a_valid_repository_and_packs_are_reused() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let env = Env::new();
    let src = sample(env.path(), 40 << 20, 5);
    let repo = Repo::s3(&moto, "lifeboat-kill", "repo");
    kill_mid_backup(&env, &repo, &repo.storage(None), &src, kill_seed());
}

#[test]
fn webdav_backup_restore_check_and_copy_to_local() {
    let Some(dav) = lifeboat_testkit::webdav() else {
        return;
    };
    let env = Env::new();
    let src = sample(env.path(), 3 << 20, 6);
    let repo = Repo {
        url: dav.repo_url("main"),
        password: PW.into(),
        options: Vec::new(),
    };
    let (s1, _) = backup_restore_check(&env, &repo, &src);
    let local = Repo::local(&env.path().join("replica")).with_password(PW2);
    env.init_like(&local, &repo);
    // The first snapshot (the source tree now has its content again).
    let copied = env.copy(&repo, &local, &[&s1[..8]]);
    assert_eq!(copied["summary"]["mode"], "blobs", "{copied}");
    assert_eq!(copied["summary"]["copied"].as_array().unwrap().len(), 1);
    let c = &copied["summary"]["copied"][0];
    assert_eq!(c["source"], s1.as_str());
    env.assert_check_read_data(&local);
    env.assert_restores(&local, c["destination"].as_str().unwrap(), &src);
}

#[test]
fn azure_backup_restore_and_check_read_data_on_azurite() {
    let Some(azurite) = lifeboat_testkit::azurite() else {
        return;
    };
    let env = Env::new();
    let src = sample(env.path(), 3 << 20, 7);
    // The development account's name and key come from the environment
    // (AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY, set by the testkit and
    // inherited by `lifeboat`); only the endpoint is an option.
    let repo = Repo {
        url: azurite.repo_url("lifeboat-e2e", "main"),
        password: PW.into(),
        options: vec![format!("endpoint={}", azurite.endpoint())],
    };
    backup_restore_check(&env, &repo, &src);
    // The objects really are in Azurite's container.
    let direct = lifeboat_storage::open_storage(
        &repo.url,
        &BackendOptions {
            endpoint: Some(azurite.endpoint()),
            ..BackendOptions::default()
        },
    )
    .unwrap();
    assert!(direct.get("config", None).is_ok());
    assert_eq!(direct.list("snapshots").unwrap().len(), 2);
}

#[test]
fn gcs_backup_restore_and_check_read_data_on_fake_gcs_server() {
    let Some(gcs) = lifeboat_testkit::fake_gcs() else {
        return;
    };
    gcs.create_bucket("lifeboat-e2e");
    let env = Env::new();
    let src = sample(env.path(), 3 << 20, 11);
    // Through the real URL parser and options: gcs:// + endpoint + anonymous auth.
    let repo = Repo {
        url: "gcs://lifeboat-e2e/main".into(),
        password: PW.into(),
        options: vec![
            format!("endpoint={}", gcs.endpoint()),
            "gcs-auth=anonymous".into(),
        ],
    };
    backup_restore_check(&env, &repo, &src);
    let direct = lifeboat_storage::open_storage(
        &repo.url,
        &BackendOptions {
            endpoint: Some(gcs.endpoint()),
            gcs_auth: Some(lifeboat_storage::GcsAuth::Anonymous),
            ..BackendOptions::default()
        },
    )
    .unwrap();
    assert!(direct.get("config", None).is_ok());
    assert_eq!(direct.list("snapshots").unwrap().len(), 2);
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// S3 Object Lock end to end on moto: `init --object-lock` refuses a bucket
/// without Object Lock (writing nothing), every object a restore needs gets
/// retention, `forget` keeps locked snapshots and says so, `pin` refuses to
/// rewrite one, and `prune` leaves a locked unused pack in place instead of
/// hiding it behind a delete marker.
#[test]
fn s3_object_lock_retains_uploads_and_forget_pin_prune_refuse_early_deletion() {
    let Some(moto) = lifeboat_testkit::moto() else {
        return;
    };
    let env = Env::new();
    let src = sample(env.path(), 1 << 20, 11);

    let plain = Repo::s3(&moto, "no-lock", "repo");
    let o = env.run(&plain, &["init", "--object-lock", "governance:2d"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not have S3 Object Lock enabled") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    let plain_storage = plain.storage(None);
    assert!(!plain_storage.exists("config").unwrap());
    assert!(plain_storage.list("keys").unwrap().is_empty());
    let o = env.run(&plain, &["init", "--object-lock", "forever"]);
    assert!(stderr(&o).contains("is not MODE:DAYSd"), "{}", stderr(&o));

    moto.create_lock_bucket("locked");
    let repo = Repo::s3(&moto, "locked", "repo"); // the bucket exists: kept as is
    env.ok(&repo, &["init", "--object-lock", "governance:2d"]);
    let config = env.json(&repo, &["config", "show"]);
    assert_eq!(config["object_lock"]["mode"], "governance", "{config}");
    assert_eq!(config["object_lock"]["days"], 2, "{config}");
    let s1 = env.json(&repo, &["backup", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(src.join("etc/hosts"), "10.0.0.9 changed\n").unwrap();
    let s2 = env.json(&repo, &["backup", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.assert_restores(&repo, &s2, &src);

    // Every object a restore needs is retained; working state is not.
    let lock = lifeboat_storage::S3ObjectLock::for_url(&repo.url, &BackendOptions::default())
        .unwrap()
        .unwrap();
    let direct = repo.storage(None);
    let before = chrono::Utc::now();
    for prefix in ["keys", "data", "index", "snapshots"] {
        for o in direct.list(prefix).unwrap() {
            let r = lock
                .retention(&o.key)
                .unwrap()
                .unwrap_or_else(|| panic!("{} has no retention", o.key));
            assert_eq!(r.mode, "GOVERNANCE");
            let h = (r.until - before).num_hours();
            assert!((46..=48).contains(&h), "{}: {h} h", o.key);
        }
    }
    assert!(lock.retention("config").unwrap().is_some());

    // forget: the policy removes s1, the lock keeps it.
    let f = env.json(&repo, &["forget", "--keep-last", "1"]);
    assert!(f["removed"].as_array().unwrap().is_empty(), "{f}");
    assert_eq!(f["locked"][0]["id"], s1.as_str(), "{f}");
    let o = env.run(&repo, &["forget", "--keep-last", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("keep: object lock (governance) until"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("under S3 Object Lock") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.json(&repo, &["snapshots"]).as_array().unwrap().len(), 2);

    // pin rewrites the snapshot: refused while it is locked.
    let o = env.run(&repo, &["pin", &s1]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "snapshots/{s1} is under S3 Object Lock (GOVERNANCE) until"
        )),
        "{}",
        stderr(&o)
    );

    // An unused pack under retention (a copy of a real one under another
    // name, uploaded with retention) is left in place and reported.
    let layered = lifeboat_storage::ObjectLockLayer::new(
        direct.clone(),
        lock.clone(),
        lifeboat_storage::LockMode::Governance,
        2,
    );
    let some_pack = direct.list("data").unwrap()[0].key.clone();
    let stray = format!("data/00/{}", "0".repeat(64));
    layered
        .put(
            &stray,
            direct.get(&some_pack, None).unwrap(),
            &lifeboat_storage::PutOptions::create(),
        )
        .unwrap();
    let p = env.json(&repo, &["prune"]);
    assert_eq!(n(&p["locked_packs"]), 1, "{p}");
    assert_eq!(n(&p["marked_unindexed_packs"]), 0, "{p}");
    assert!(p["mark"].is_null(), "{p}");
    let o = env.run(&repo, &["prune"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("under S3 Object Lock retention until"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        direct.exists(&stray).unwrap(),
        "the locked pack is still visible"
    );
    fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    env.assert_restores(&repo, &s1, &src);

    // Shortening or removing the lock needs --allow-disable.
    let o = env.run(&repo, &["config", "set", "object-lock", "off"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--allow-disable"), "{}", stderr(&o));
    env.ok(&repo, &["config", "set", "object-lock", "compliance:3d"]);
    assert_eq!(
        env.json(&repo, &["config", "show"])["object_lock"]["mode"],
        "compliance"
    );
}
