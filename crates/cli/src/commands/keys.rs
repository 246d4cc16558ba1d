//! `init` and `key list|add|remove|passwd`.

use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_core::chunker::ChunkerParams;
use lifeboat_core::crypto::KdfParams;
use lifeboat_core::repository::{InitOptions, Repository};
use lifeboat_storage::{ObjectLockLayer, ObjectLockSetting};
use serde_json::json;

use super::Exit;
use crate::args::{GlobalArgs, InitArgs, KeyCommand};
use crate::output::{print_json, table};
use crate::settings;

pub fn init(g: &GlobalArgs, a: &InitArgs) -> Result<Exit> {
    let location = settings::repo_location(g)?;
    let storage = settings::open_storage_with(g, &location)?;
    let mut opts = InitOptions {
        compression: a.compression.parse().map_err(anyhow::Error::msg)?,
        ..InitOptions::default()
    };
    if let Some(c) = &a.chunker {
        let v: Vec<u32> = c
            .split('/')
            .map(|x| x.parse())
            .collect::<Result<_, _>>()
            .context("--chunker MIN/AVG/MAX")?;
        anyhow::ensure!(v.len() == 3, "--chunker takes MIN/AVG/MAX");
        opts.chunker = ChunkerParams {
            min_size: v[0],
            avg_size: v[1],
            max_size: v[2],
        };
    }
    if let Some(n) = a.min_pack_size {
        opts.min_pack_size = n;
    }
    let mut storage = storage;
    if let Some(l) = &a.object_lock {
        let setting: ObjectLockSetting = l.parse().map_err(anyhow::Error::msg)?;
        let lock = settings::require_bucket_lock(g, &location)?;
        storage = Arc::new(ObjectLockLayer::with_setting(storage, lock, setting));
        opts.object_lock = Some(setting);
    }
    if storage.exists("config")? {
        anyhow::bail!("a repository already exists at {location}\nhint: use it with --repo {location}, or choose another location");
    }
    let mut copied_from = None;
    if a.copy_chunker_params {
        // The source's chunker sizes and content key (never its encryption key):
        // `copy` from it then moves blobs by id.
        if a.chunker.is_some() {
            anyhow::bail!("--chunker and --copy-chunker-params exclude each other");
        }
        let (from, from_password) = settings::from_repo(&a.from)?;
        let (src, _) = settings::open_repo_at(g, &from, &from_password, "source ")?;
        opts.chunker = src.config().chunker;
        opts.content_key = Some(src.content_key());
        copied_from = Some(from);
    } else if a.from.from_repo.is_some() && std::env::var_os("LIFEBOAT_FROM_REPO").is_none() {
        anyhow::bail!("--from-repo is only used with --copy-chunker-params");
    }
    let password = settings::password(g, true)?;
    let repo = Repository::init(storage, &password, &opts).map_err(|e| match e {
        lifeboat_core::Error::RepositoryExists { location } => anyhow::anyhow!(
            "a repository already exists at {location}\nhint: use it with --repo {location}, or choose another location"
        ),
        e => e.into(),
    })?;
    if g.json {
        print_json(
            &json!({"repository": location, "id": repo.config().id, "config": repo.config().display_json(), "chunker_params_from": copied_from}),
        );
    } else if !g.quiet {
        println!(
            "created repository {} at {location}",
            &repo.config().id[..8]
        );
        if let Some(from) = &copied_from {
            println!("chunker parameters and content key copied from {from}: `lifeboat copy --from-repo {from}` moves blobs by id");
        }
        println!("keep the password safe: without it the data cannot be read.");
    }
    Ok(Exit::Ok)
}

pub fn key(g: &GlobalArgs, cmd: KeyCommand) -> Result<Exit> {
    let mut repo = settings::open_repo(g)?;
    match cmd {
        KeyCommand::List => {
            let slots = repo.key_slots()?;
            if g.json {
                let v: Vec<_> = slots
                    .iter()
                    .map(|(id, s)| json!({"id": id, "current": id == repo.key_id(), "created": s.created, "hostname": s.hostname, "username": s.username, "kdf": s.kdf, "m_cost": s.params.m_cost, "t_cost": s.params.t_cost, "p_cost": s.params.p_cost}))
                    .collect();
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = slots
                    .iter()
                    .map(|(id, s)| {
                        vec![
                            format!(
                                "{}{}",
                                if id == repo.key_id() { "*" } else { " " },
                                &id[..8]
                            ),
                            s.username.clone(),
                            s.hostname.clone(),
                            s.created.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                print!("{}", table(&[" ID", "User", "Host", "Created"], &rows));
            }
        }
        KeyCommand::Add(a) => match &a.generate {
            Some(file) => {
                let id = add_generated_key(&repo, file)?;
                report(
                    g,
                    &format!("secret written to {}; added", file.display()),
                    &id,
                );
            }
            None => {
                let pw = settings::new_password(a.new.new_password_file.as_deref())?;
                let id = repo.add_key(&pw, KdfParams::from_env_or_default())?;
                report(g, "added", &id);
            }
        },
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id)?;
            report(g, "removed", &removed);
        }
        KeyCommand::Passwd(a) => {
            let pw = settings::new_password(a.new_password_file.as_deref())?;
            let id = repo.change_password(&pw, KdfParams::from_env_or_default())?;
            report(g, "changed password; new key", &id);
        }
    }
    Ok(Exit::Ok)
}

/// `key add --generate FILE`: 256 random bits (base64url) into a new 0600 file, and a key
/// slot for them with [`KdfParams::GENERATED`]: Argon2id's cost protects guessable passwords,
/// not random secrets, and the commands using this file run once per WAL segment.
fn add_generated_key(repo: &lifeboat_core::Repository, file: &std::path::Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    // 43 base64url characters (256 bits), no padding: printable, no shell or conf quoting issues.
    let secret = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating key file {} (it must not exist)", file.display()))?;
    f.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing key file {}", file.display()))?;
    match repo.add_key(&secret, KdfParams::GENERATED) {
        Ok(id) => Ok(id),
        Err(e) => {
            let _ = std::fs::remove_file(file);
            Err(e.into())
        }
    }
}

fn report(g: &GlobalArgs, what: &str, id: &str) {
    if g.json {
        print_json(&json!({"result": what, "key": id}));
    } else if !g.quiet {
        println!("{what} {}", &id[..8.min(id.len())]);
    }
}
