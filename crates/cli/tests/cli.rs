//! Tests of the `lifeboat` binary: output (insta snapshots with ids, times and
//! temp paths filtered), exit codes, hints, and behaviour on bad input.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PW: &str = "test password";

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
    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFEBOAT_") {
                c.env_remove(k);
            }
        }
        c.env("LIFEBOAT_INSECURE_TEST_KDF", "1")
            .env("LIFEBOAT_PASSWORD", PW)
            .env("LIFEBOAT_REPO", self.repo())
            .env("TZ", "UTC")
            .args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "lifeboat {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    fn sample(&self) -> PathBuf {
        let src = self.path().join("src");
        fs::create_dir_all(src.join("docs/empty")).unwrap();
        fs::write(src.join("docs/a.txt"), "alpha\n").unwrap();
        fs::write(src.join("docs/b.txt"), "bravo\n").unwrap();
        fs::write(src.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
        std::os::unix::fs::symlink("docs/a.txt", src.join("link")).unwrap();
        src
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Filter what changes from run to run.
fn settings(env: &Env) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&env.path().display().to_string()), "[TMP]");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[ID64]");
    s.add_filter(r"\b[0-9a-f]{8}\b", "[ID]");
    s.add_filter(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d", "[TIME]");
    s.add_filter(r"\d+\.\d\ds\b", "[SECS]");
    // Tree blobs hold inode numbers and times, so their compressed size varies.
    s.add_filter(
        r"Added to the repository: [^(]+\([^)]+\)",
        "Added to the repository: [SIZE] ([SIZE] stored)",
    );
    s.add_filter(r"(?m)^(Host|-+).*$", "$1 [...]");
    s.add_filter(r"  +", "  ");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[test]
fn first_run_backup_snapshots_diff_restore() {
    let env = Env::new();
    let src = env.sample();
    let init = env.ok(&["init"]);
    assert!(init.contains("created repository"));
    let s = env.src_str(&src);
    let out = env.ok(&["backup", &s, "--tag", "first", "--host", "testhost"]);
    settings(&env).bind(|| insta::assert_snapshot!("backup_first", out));
    fs::write(src.join("docs/b.txt"), "bravo changed\n").unwrap();
    fs::write(src.join("docs/c.txt"), "charlie\n").unwrap();
    let out = env.ok(&["backup", &s, "--host", "testhost"]);
    settings(&env).bind(|| insta::assert_snapshot!("backup_second", out));
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let (first, second) = (
        snaps[0]["id"].as_str().unwrap().to_string(),
        snaps[1]["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);
    let table = env.ok(&["snapshots", "--host", "testhost"]);
    settings(&env).bind(|| insta::assert_snapshot!("snapshots_table", table));
    let diff = env.ok(&["diff", &first[..8], &second[..8]]);
    settings(&env).bind(|| insta::assert_snapshot!("diff", diff));

    let target = env.path().join("restored");
    let t = target.to_str().unwrap();
    env.ok(&["restore", &first[..10], "--target", t, "--verify"]);
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(back.join("docs/b.txt")).unwrap(),
        "bravo\n"
    );
    assert!(!back.join("docs/c.txt").exists());
    assert!(back.join("docs/empty").is_dir());
    assert_eq!(
        fs::read_link(back.join("link")).unwrap(),
        PathBuf::from("docs/a.txt")
    );

    // Restoring over existing files is refused, with a hint, and changes nothing.
    let o = env.run(&["restore", "latest", "--target", t]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read_to_string(back.join("docs/b.txt")).unwrap(),
        "bravo\n"
    );
    let r = env.json(&["restore", "latest", "--target", t, "--overwrite"]);
    assert_eq!(r["summary"]["files"], 2, "b changed, c new: {r}");
    assert_eq!(r["summary"]["files_skipped_identical"], 2);
    assert_eq!(
        fs::read_to_string(back.join("docs/b.txt")).unwrap(),
        "bravo changed\n"
    );

    // --at picks the newest snapshot at or before a time; --include restores one file.
    let at = snaps[0]["time"].as_str().unwrap().to_string();
    let t2 = env.path().join("one-file");
    env.ok(&[
        "restore",
        "latest",
        "--at",
        &at,
        "--target",
        t2.to_str().unwrap(),
        "--include",
        "a.txt",
    ]);
    let b2 = t2.join(src.strip_prefix("/").unwrap());
    assert!(b2.join("docs/a.txt").exists());
    assert!(!b2.join("docs/b.txt").exists() && !b2.join("big.bin").exists());

    // ls, dump, stats, cat, check.
    let ls = env.ok(&["ls", "latest", &format!("{s}/docs")]);
    settings(&env).bind(|| insta::assert_snapshot!("ls", ls));
    assert_eq!(
        env.ok(&["dump", "latest", &format!("{s}/docs/c.txt")]),
        "charlie\n"
    );
    let tar = env
        .cmd(&["dump", "latest", &format!("{s}/docs")])
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert_eq!(&tar.stdout[257..262], b"ustar", "a directory dumps as tar");
    let stats = env.json(&["stats"]);
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 1.5, "{stats}");
    assert!(
        stats["compression_ratio"].as_f64().unwrap() > 10.0,
        "3 MiB of one byte compresses: {stats}"
    );
    let cfg = env.json(&["cat", "config"]);
    assert_eq!(cfg["chunker"]["avg_size"], 1 << 20);
    assert_eq!(cfg["compression"], "zstd:2");
    let check = env.json(&["check", "--read-data"]);
    assert!(check["errors"].as_array().unwrap().is_empty());
    assert_eq!(check["snapshots"], 2);
}

impl Env {
    fn src_str(&self, p: &Path) -> String {
        p.to_str().unwrap().to_string()
    }
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let env = Env::new();
    // No repository yet.
    let o = env.run(&["snapshots"]);
    assert_eq!(code(&o), 1);
    settings(&env).bind(|| insta::assert_snapshot!("no_repository", stderr(&o)));
    env.ok(&["init"]);
    let o = env.run(&["init"]);
    assert_eq!(code(&o), 1);
    settings(&env).bind(|| insta::assert_snapshot!("init_exists", stderr(&o)));
    // Wrong password: clear message, nothing written.
    let before = list(&env.repo());
    let src = env.sample();
    let o = env
        .cmd(&["backup", src.to_str().unwrap()])
        .env("LIFEBOAT_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    settings(&env).bind(|| insta::assert_snapshot!("wrong_password", stderr(&o)));
    assert_eq!(before, list(&env.repo()), "a wrong password writes nothing");
    // Unknown snapshot, bad flag, missing path, bad pattern, no password source.
    let o = env.run(&["restore", "abcdef12", "--target", "/tmp/x"]);
    assert_eq!(code(&o), 1);
    settings(&env).bind(|| insta::assert_snapshot!("unknown_snapshot", stderr(&o)));
    let o = env.run(&["backup", "--no-such-flag"]);
    assert_eq!(code(&o), 2, "usage errors are clap's: {}", stderr(&o));
    let o = env.run(&["backup", "/definitely/not/here"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("/definitely/not/here"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["backup", src.to_str().unwrap(), "--exclude", "a[b"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("a[b"), "{}", stderr(&o));
    let o = env
        .cmd(&["snapshots"])
        .env_remove("LIFEBOAT_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("hint: set LIFEBOAT_PASSWORD"),
        "{}",
        stderr(&o)
    );
    assert_eq!(before, list(&env.repo()), "failed commands wrote nothing");
}

fn list(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            v.push(p.display().to_string());
        }
    }
    v.sort();
    v
}

#[test]
fn damaged_pack_names_the_affected_snapshot_via_the_cli() {
    let env = Env::new();
    let src = env.sample();
    let mut x: u32 = 1;
    let noise: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    fs::write(src.join("random.bin"), noise).unwrap();
    env.ok(&["init"]);
    let b = env.json(&["backup", src.to_str().unwrap()]);
    let id = b["snapshot_id"].as_str().unwrap().to_string();
    // Flip one byte in the middle of the largest pack (the data pack).
    let mut packs: Vec<PathBuf> = list(&env.repo().join("data"))
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let pack = packs.last().unwrap();
    let mut bytes = fs::read(pack).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x80;
    fs::write(pack, bytes).unwrap();
    let o = env.run(&["check"]);
    assert_eq!(code(&o), 0, "structure is intact: {}", stderr(&o));
    let o = env.run(&["check", "--read-data"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("snapshot {} ", &id[..8])) && err.contains("random.bin"),
        "{err}"
    );
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(pack_name), "names the pack: {err}");
}

#[test]
fn stdin_backup_and_keys() {
    let env = Env::new();
    env.ok(&["init"]);
    let mut child = env
        .cmd(&[
            "backup",
            "--stdin",
            "--stdin-filename",
            "dump.sql",
            "--json",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"create table t(x int);\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        env.ok(&["dump", "latest", "dump.sql"]),
        "create table t(x int);\n"
    );
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["source"], "stdin");

    let o = env
        .cmd(&["key", "add"])
        .env("LIFEBOAT_NEW_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = env
        .cmd(&["snapshots"])
        .env("LIFEBOAT_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(o.status.success());
    env.ok(&["key", "remove", &other[..8]]);
    let o = env
        .cmd(&["snapshots"])
        .env("LIFEBOAT_PASSWORD", "second")
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    // Password from a file and from a command.
    let pwf = env.path().join("pw");
    fs::write(&pwf, format!("{PW}\n")).unwrap();
    let o = env
        .cmd(&["snapshots"])
        .env_remove("LIFEBOAT_PASSWORD")
        .env("LIFEBOAT_PASSWORD_FILE", &pwf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env
        .cmd(&[
            "snapshots",
            "--password-command",
            &format!("cat {}", pwf.display()),
        ])
        .env_remove("LIFEBOAT_PASSWORD")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn unreadable_files_make_a_partial_snapshot_with_exit_code_3() {
    let env = Env::new();
    let src = env.sample();
    fs::write(src.join("docs/secret.txt"), "top secret").unwrap();
    fs::set_permissions(
        src.join("docs/secret.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let is_root = nix::unistd::geteuid().is_root();
    // Root reads everything: run the backup as `nobody` so the mode bites.
    let bin = env.path().join("lifeboat");
    fs::copy(env!("CARGO_BIN_EXE_lifeboat"), &bin).unwrap();
    fs::set_permissions(env.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["init"]);
    let mut cmd = env.cmd(&["backup", src.to_str().unwrap(), "--json"]);
    if is_root {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("a nobody user");
        chown_r(&env.repo(), nobody.uid.as_raw(), nobody.gid.as_raw());
        use std::os::unix::process::CommandExt;
        cmd = Command::new(&bin);
        cmd.args(["backup", src.to_str().unwrap(), "--json"])
            .env("LIFEBOAT_INSECURE_TEST_KDF", "1")
            .env("LIFEBOAT_PASSWORD", PW)
            .env("LIFEBOAT_REPO", env.repo())
            .env("HOME", "/tmp")
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw());
    }
    let o = cmd.output().unwrap();
    assert_eq!(code(&o), 3, "partial backup: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["partial"], true);
    let warnings = v["summary"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("secret.txt")),
        "{warnings:?}"
    );
    // The snapshot exists and holds everything else.
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("docs/a.txt") && !listing.contains("secret.txt"));
}

fn chown_r(p: &Path, uid: u32, gid: u32) {
    nix::unistd::chown(p, Some(uid.into()), Some(gid.into())).unwrap();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_r(&e.unwrap().path(), uid, gid);
        }
    }
}

#[test]
fn quickstart_runs_the_whole_loop() {
    let env = Env::new();
    let dir = env.path().join("qs");
    let v = env.json(&["quickstart", "--dir", dir.to_str().unwrap()]);
    assert!(v["entries_compared"].as_u64().unwrap() > 50, "{v}");
    assert!(v["second_backup"]["files_unmodified"].as_u64().unwrap() > 50);
    assert!(v["check"]["errors"].as_array().unwrap().is_empty());
    let o = env.run(&["quickstart", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "refuses a non-empty dir");
}

#[test]
fn stats_count_a_compression_groups_range_once() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path().join("many");
    fs::create_dir_all(&src).unwrap();
    for i in 0..300 {
        let body = "lifeboat ".repeat(i % 50 + 10);
        fs::write(
            src.join(format!("f{i:03}.txt")),
            format!("file {i}: {body}\n"),
        )
        .unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let stats = env.json(&["stats"]);
    // 300 small files, one group: counted per member, the group's range alone
    // would add up to more than the whole repository.
    let stored = stats["unique_stored_bytes"].as_u64().unwrap();
    assert!(
        stored < stats["repository_bytes"].as_u64().unwrap(),
        "{stats}"
    );
    assert!(
        stats["compression_ratio"].as_f64().unwrap() > 5.0,
        "{stats}"
    );
}
