//! Maintenance through the `lifeboat` binary, with real processes: a backup
//! loop running while prune runs repeatedly, repair of the index and of
//! snapshots, parity repair through `check --repair`, append-only refusals,
//! forget's dry-run output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PW: &str = "maintenance password";

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Env {
            tmp: tempfile::tempdir().unwrap(),
        };
        env.ok(&["init", "--chunker", "16384/65536/262144"]);
        env
    }
    fn path(&self) -> &Path {
        self.tmp.path()
    }
    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        cmd(&self.repo(), args)
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        ok(&self.repo(), args)
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    fn snapshot_ids(&self) -> Vec<String> {
        let v = self.json(&["snapshots"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn cmd(repo: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LIFEBOAT_") {
            c.env_remove(k);
        }
    }
    c.env("LIFEBOAT_INSECURE_TEST_KDF", "1")
        .env("LIFEBOAT_PASSWORD", PW)
        .env("LIFEBOAT_REPO", repo)
        .env("TZ", "UTC")
        .args(args);
    c
}

fn ok(repo: &Path, args: &[&str]) -> String {
    let o = cmd(repo, args).output().unwrap();
    assert!(
        o.status.success(),
        "lifeboat {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn data_packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(repo.join("data")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

/// A backup process loops while prune (after forget) runs again and again
/// with no grace period; at the end every snapshot restores exactly and
/// `check --read-data` passes.
#[test]
fn prune_running_repeatedly_during_a_backup_loop_loses_nothing() {
    let env = Env::new();
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Shared content deduplicates between iterations, so prune's marks and
    // the backups' reuse interleave.
    fs::write(src.join("common.bin"), pseudo_random(400_000, 1)).unwrap();
    let repo = env.repo();
    let backups = {
        let (repo, src) = (repo.clone(), src.clone());
        std::thread::spawn(move || {
            for i in 0..8u64 {
                fs::write(
                    src.join("iter.bin"),
                    pseudo_random(150_000 + i as usize * 1000, 100 + i),
                )
                .unwrap();
                // Every other iteration drops and re-adds the shared file, so
                // its blobs become unreferenced, get marked, and are reused.
                if i % 2 == 1 {
                    fs::remove_file(src.join("common.bin")).unwrap();
                } else {
                    fs::write(src.join("common.bin"), pseudo_random(400_000, 1)).unwrap();
                }
                ok(
                    &repo,
                    &["backup", src.to_str().unwrap(), "--tag", &format!("it{i}")],
                );
            }
        })
    };
    let mut prunes = 0;
    // A failed backup ends the thread early; `join` below reports its panic.
    while !backups.is_finished() || prunes < 3 {
        ok(
            &repo,
            &[
                "forget",
                "--keep-last",
                "3",
                "--group-by",
                "",
                "--prune",
                "--grace",
                "0",
                "--max-unused",
                "0%",
            ],
        );
        prunes += 1;
    }
    backups
        .join()
        .expect("the backup loop failed (its panic message is above)");
    // The last backup may finish after the last forget of the loop.
    ok(&repo, &["forget", "--keep-last", "3", "--group-by", ""]);
    // Two more rounds let the last marks finish.
    ok(&repo, &["prune", "--grace", "0"]);
    ok(&repo, &["prune", "--grace", "0"]);
    assert!(prunes >= 3);

    let snaps = env.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 3, "keep-last 3 of 8");
    for s in snaps {
        let id = s["id"].as_str().unwrap();
        let tag = s["tags"][0].as_str().unwrap();
        let i: u64 = tag.trim_start_matches("it").parse().unwrap();
        let target = env.path().join(format!("restore-{i}"));
        ok(
            &repo,
            &[
                "restore",
                id,
                "--target",
                target.to_str().unwrap(),
                "--verify",
            ],
        );
        let back = target.join(src.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read(back.join("iter.bin")).unwrap(),
            pseudo_random(150_000 + i as usize * 1000, 100 + i),
            "snapshot {tag}"
        );
        if i.is_multiple_of(2) {
            assert_eq!(
                fs::read(back.join("common.bin")).unwrap(),
                pseudo_random(400_000, 1),
                "snapshot {tag}"
            );
        }
    }
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn deleted_index_is_rebuilt_by_repair_index() {
    let env = Env::new();
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x.bin"), pseudo_random(300_000, 5)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    for f in fs::read_dir(env.repo().join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let target = env.path().join("r1");
    assert!(!env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .status
        .success());
    let r = env.json(&["repair", "index"]);
    assert!(r["packs"].as_u64().unwrap() >= 2, "{r}");
    env.ok(&["check", "--read-data"]);
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(
        fs::read(target.join(src.strip_prefix("/").unwrap()).join("x.bin")).unwrap(),
        pseudo_random(300_000, 5)
    );
}

#[test]
fn repair_snapshots_after_pack_damage_keeps_the_rest_restorable() {
    let env = Env::new();
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small.txt"), "small and safe\n").unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--time",
        "2026-01-01 10:00:00",
    ]);
    let before = data_packs(&env.repo());
    // The second backup's only new data is big.bin: its data pack is the one
    // new pack bigger than 500 KB.
    fs::write(src.join("big.bin"), pseudo_random(600_000, 9)).unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--time",
        "2026-01-02 10:00:00",
    ]);
    let big_pack = data_packs(&env.repo())
        .into_iter()
        .find(|p| !before.contains(p) && fs::metadata(p).unwrap().len() > 500_000)
        .unwrap();
    let mut bytes = fs::read(&big_pack).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&big_pack, &bytes).unwrap();
    assert!(!env.run(&["check", "--read-data"]).status.success());
    let r = env.json(&["repair", "snapshots"]);
    let lost = r["repaired"][0]["lost"].as_array().unwrap();
    assert!(
        lost.iter()
            .any(|p| p.as_str().unwrap().ends_with("/big.bin")),
        "{r}"
    );
    assert!(
        !lost
            .iter()
            .any(|p| p.as_str().unwrap().ends_with("/small.txt")),
        "{r}"
    );
    assert_eq!(
        r["repaired"].as_array().unwrap().len(),
        1,
        "the first snapshot is unaffected: {r}"
    );
    let target = env.path().join("r");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(back.join("small.txt")).unwrap(),
        "small and safe\n"
    );
    assert_eq!(
        fs::read(back.join("big.bin")).unwrap().len(),
        0,
        "lost content restores empty"
    );
}

#[test]
fn check_repair_rebuilds_a_pack_from_parity() {
    let env = Env::new();
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("p.bin"), pseudo_random(500_000, 3)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let out = env.ok(&["parity", "--data-shards", "10", "--parity-shards", "2"]);
    assert!(out.contains("overhead"), "{out}");
    let packs = data_packs(&env.repo());
    let originals: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    let mut bad = originals[0].clone();
    let n = bad.len();
    bad[n / 2] ^= 0x10;
    fs::write(&packs[0], &bad).unwrap();
    assert!(!env.run(&["check", "--read-data"]).status.success());
    let o = env.run(&["check", "--read-data", "--repair"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("repaired from parity"),
        "{}",
        stderr(&o)
    );
    for (p, orig) in packs.iter().zip(&originals) {
        assert_eq!(&fs::read(p).unwrap(), orig, "{} bit for bit", p.display());
    }
}

#[test]
fn append_only_refuses_forget_and_prune_clearly() {
    let env = Env {
        tmp: tempfile::tempdir().unwrap(),
    };
    env.ok(&["init", "--append-only", "--chunker", "16384/65536/262144"]);
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["backup", src.to_str().unwrap()]);
    let o = env.run(&["forget", "--keep-last", "1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("append-only: refusing to forget snapshots"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    let o = env.run(&["prune"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("append-only: refusing to prune"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["config", "set", "append-only", "false"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--allow-disable-append-only"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.snapshot_ids().len(), 2);
    // Explicitly turned off, forget works.
    env.ok(&[
        "config",
        "set",
        "append-only",
        "false",
        "--allow-disable-append-only",
    ]);
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn forget_dry_run_prints_every_snapshot_with_its_reasons() {
    let env = Env::new();
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    for t in [
        "2026-01-01 10:00:00",
        "2026-01-02 10:00:00",
        "2026-01-02 12:00:00",
    ] {
        env.ok(&["backup", src.to_str().unwrap(), "--time", t]);
    }
    let ids = env.snapshot_ids();
    env.ok(&["pin", &ids[0][..8]]);
    let out = env.ok(&[
        "forget",
        "--keep-daily",
        "1",
        "--keep-newest-min",
        "0",
        "--dry-run",
    ]);
    assert!(out.contains("keep: pinned"), "{out}");
    assert!(out.contains("keep: daily snapshot"), "{out}");
    assert!(out.contains("remove"), "{out}");
    assert!(out.contains("would remove 1 snapshot(s)"), "{out}");
    assert_eq!(env.snapshot_ids().len(), 3);
    env.ok(&["forget", "--keep-daily", "1", "--keep-newest-min", "0"]);
    assert_eq!(env.snapshot_ids().len(), 2);
}

/// Only one prune at a time: a live exclusive lock (another prune, here
/// written by the test) makes `prune` fail naming the holder and change
/// nothing; a stale one (not refreshed for 15 minutes: its process died) is
/// removed. Then two prune processes run against each other repeatedly: each
/// run either completes or is refused with that message, and the repository
/// stays intact.
#[test]
fn concurrent_prunes_exclude_each_other_and_leave_the_repository_intact() {
    let env = Env::new();
    let src = env.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        fs::write(src.join("f.bin"), pseudo_random(200_000, 10 + i)).unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    env.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    let packs_before = data_packs(&env.repo());

    let locks = env.repo().join("exclusive-locks");
    fs::create_dir_all(&locks).unwrap();
    let now = chrono::Utc::now();
    let live = serde_json::json!({
        "hostname": "other-host", "pid": 4242, "purpose": "prune",
        "started": now.to_rfc3339(), "refreshed": now.to_rfc3339(),
    });
    fs::write(locks.join("live"), live.to_string()).unwrap();
    let out = env.run(&["prune", "--grace", "0"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("another prune is running on host other-host (pid 4242"),
        "{err}"
    );
    assert_eq!(data_packs(&env.repo()), packs_before, "nothing changed");
    assert!(
        !env.repo().join("marks").exists()
            || fs::read_dir(env.repo().join("marks"))
                .unwrap()
                .next()
                .is_none()
    );

    let old = (now - chrono::Duration::minutes(20)).to_rfc3339();
    let stale = serde_json::json!({
        "hostname": "other-host", "pid": 4242, "purpose": "prune",
        "started": old, "refreshed": old,
    });
    fs::write(locks.join("live"), stale.to_string()).unwrap();
    env.ok(&["prune", "--grace", "0"]);
    assert!(!locks.join("live").exists(), "the stale lock was removed");

    // Two prune loops against each other.
    let runs: Vec<std::thread::JoinHandle<(u32, u32)>> = (0..2)
        .map(|_| {
            let repo = env.repo();
            std::thread::spawn(move || {
                let (mut done, mut refused) = (0, 0);
                for _ in 0..6 {
                    let o = cmd(&repo, &["prune", "--grace", "0", "--max-unused", "0%"])
                        .output()
                        .unwrap();
                    if o.status.success() {
                        done += 1;
                    } else {
                        let e = stderr(&o);
                        assert!(e.contains("another prune is running"), "{e}");
                        refused += 1;
                    }
                }
                (done, refused)
            })
        })
        .collect();
    let mut done = 0;
    for r in runs {
        let (d, _refused) = r.join().unwrap();
        done += d;
    }
    assert!(done > 0, "at least one prune completed");
    env.ok(&["prune", "--grace", "0"]);
    env.ok(&["prune", "--grace", "0"]);
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path().join("restore");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(
        fs::read(target.join(src.strip_prefix("/").unwrap()).join("f.bin")).unwrap(),
        pseudo_random(200_000, 13)
    );
}
