//! `quickstart`: the whole loop on a sample folder, no external service.
//! Creates sample data, a local repository with a random password in a file,
//! backs up twice (the second incremental), checks every byte, restores and
//! compares the restore with the source.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lifeboat_core::archiver::{self, BackupOptions};
use lifeboat_core::check::{self, CheckOptions, ReadDataSubset};
use lifeboat_core::progress::NoProgress;
use lifeboat_core::repository::{InitOptions, Repository};
use lifeboat_core::restorer::{self, RestoreOptions};
use lifeboat_storage::LocalStorage;
use serde_json::json;

use super::Exit;
use crate::args::{GlobalArgs, QuickstartArgs};
use crate::output::{bytes, print_json};

fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("lifeboat").join(format!(
        "quickstart-{}",
        chrono::Local::now().format("%Y%m%d-%H%M%S")
    ))
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn make_sample(src: &Path) -> Result<()> {
    write(
        &src.join("README.txt"),
        b"Sample data for the Lifeboat quickstart.\n",
    )?;
    for i in 0..50 {
        let text = format!("note {i}\n").repeat(200 + i * 10);
        write(
            &src.join(format!("notes/2026/note-{i:02}.txt")),
            text.as_bytes(),
        )?;
    }
    // 24 MiB of incompressible data: spans several chunks.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let data: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(&src.join("media/video.bin"), &data)?;
    write(&src.join("empty.txt"), b"")?;
    std::fs::create_dir_all(src.join("empty-dir"))?;
    std::os::unix::fs::symlink("README.txt", src.join("link-to-readme"))?;
    std::fs::hard_link(src.join("README.txt"), src.join("hardlink-to-readme"))?;
    std::fs::set_permissions(
        src.join("notes/2026/note-00.txt"),
        std::fs::Permissions::from_mode(0o640),
    )?;
    Ok(())
}

/// Compare two trees byte for byte (content, symlinks, modes).
fn compare(a: &Path, b: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(a)? {
        let entry = entry?;
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa)?,
            std::fs::symlink_metadata(&pb).with_context(|| format!("{} missing", pb.display()))?,
        );
        if ma.file_type() != mb.file_type() || ma.permissions().mode() != mb.permissions().mode() {
            bail!("{} differs in type or mode", pb.display());
        }
        if ma.is_dir() {
            n += compare(&pa, &pb)?;
        } else if ma.file_type().is_symlink() {
            if std::fs::read_link(&pa)? != std::fs::read_link(&pb)? {
                bail!("{} points elsewhere", pb.display());
            }
        } else if std::fs::read(&pa)? != std::fs::read(&pb)? {
            bail!("{} differs", pb.display());
        }
        n += 1;
    }
    Ok(n)
}

pub fn run(g: &GlobalArgs, a: &QuickstartArgs) -> Result<Exit> {
    let dir = a.dir.clone().unwrap_or_else(default_dir);
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty\nhint: pass --dir with a new or empty directory",
            dir.display()
        );
    }
    let say = |s: String| {
        if !g.json && !g.quiet {
            println!("{s}");
        }
    };
    let (src, repo_dir, restore_dir) = (dir.join("sample"), dir.join("repo"), dir.join("restore"));
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    make_sample(&src)?;
    say(format!("1. sample data created in {}", src.display()));

    let password: String = {
        use rand::RngCore;
        let mut b = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let pw_file = dir.join("password");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pw_file)?
        .write_all(password.as_bytes())?;
    let storage = Arc::new(LocalStorage::new(&repo_dir));
    let repo = Repository::init(storage, &password, &InitOptions::default())?;
    say(format!(
        "2. repository created in {} (password in {})",
        repo_dir.display(),
        pw_file.display()
    ));

    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    let t1 = Instant::now();
    let first = archiver::backup(&repo.clone().into_indexed()?, &opts, &NoProgress)?;
    let first_secs = t1.elapsed().as_secs_f64();
    let s1 = first.snapshot.summary.clone().unwrap_or_default();
    say(format!(
        "3. first backup: snapshot {} — {} files, {} read, {} stored, {first_secs:.2}s",
        first.snapshot_id.map(|i| i.short()).unwrap_or_default(),
        s1.total_files,
        bytes(s1.bytes_read),
        bytes(s1.data_added_stored)
    ));

    write(
        &src.join("notes/2026/note-01.txt"),
        b"edited after the first backup\n",
    )?;
    write(&src.join("notes/new.txt"), b"a new file\n")?;
    let t2 = Instant::now();
    let second = archiver::backup(&repo.clone().into_indexed()?, &opts, &NoProgress)?;
    let s2 = second.snapshot.summary.clone().unwrap_or_default();
    say(format!(
        "4. second backup (incremental): {} new, {} changed, {} unmodified files; {} read, {} added, {:.2}s",
        s2.files_new,
        s2.files_changed,
        s2.files_unmodified,
        bytes(s2.bytes_read),
        bytes(s2.data_added_stored),
        t2.elapsed().as_secs_f64()
    ));

    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: Some(ReadDataSubset::All),
        },
        &NoProgress,
    )?;
    if !report.ok() {
        bail!("check found errors: {:?}", report.errors);
    }
    say(format!(
        "5. check --read-data: {} blobs in {} packs verified, no errors",
        report.blobs_read, report.packs_read
    ));

    let indexed = repo.into_indexed()?;
    let id = second.snapshot_id.expect("not a dry run");
    let t3 = Instant::now();
    let r = restorer::restore(
        &indexed,
        &id,
        second.snapshot.tree,
        &RestoreOptions {
            target: restore_dir.clone(),
            verify: true,
            reads: restorer::ReadLimits::LOCAL,
            ..Default::default()
        },
        &NoProgress,
    )?;
    let restored_src = restore_dir.join(src.strip_prefix("/").unwrap_or(&src));
    let compared = compare(&src, &restored_src)?;
    say(format!(
        "6. restore of snapshot {} to {}: {} files, {} written, {:.2}s; {compared} entries compared: identical",
        id.short(),
        restore_dir.display(),
        r.files,
        bytes(r.bytes_written),
        t3.elapsed().as_secs_f64()
    ));
    if g.json {
        print_json(&json!({
            "dir": dir, "repository": repo_dir, "password_file": pw_file,
            "snapshots": [first.snapshot_id, second.snapshot_id],
            "first_backup": s1, "second_backup": s2, "check": report, "restore": r,
            "entries_compared": compared, "seconds": t.elapsed().as_secs_f64(),
        }));
    } else if !g.quiet {
        println!(
            "\nAll good in {:.1}s. Continue with:",
            t.elapsed().as_secs_f64()
        );
        println!(
            "  export LIFEBOAT_REPO={} LIFEBOAT_PASSWORD_FILE={}",
            repo_dir.display(),
            pw_file.display()
        );
        println!("  lifeboat snapshots");
        println!(
            "  lifeboat diff {} {}",
            first.snapshot_id.map(|i| i.short()).unwrap_or_default(),
            id.short()
        );
        println!("  lifeboat backup ~/your/folder");
    }
    Ok(Exit::Ok)
}
