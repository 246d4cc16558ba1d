//! `init` and `key list|add|remove|passwd`.

use anyhow::{Context, Result};
use lifeboat_core::chunker::ChunkerParams;
use lifeboat_core::crypto::KdfParams;
use lifeboat_core::repository::{InitOptions, Repository};
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
    if storage.exists("config")? {
        anyhow::bail!("a repository already exists at {location}\nhint: use it with --repo {location}, or choose another location");
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
            &json!({"repository": location, "id": repo.config().id, "config": repo.config()}),
        );
    } else if !g.quiet {
        println!(
            "created repository {} at {location}",
            &repo.config().id[..8]
        );
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
        KeyCommand::Add(a) => {
            let pw = settings::new_password(a.new_password_file.as_deref())?;
            let id = repo.add_key(&pw, KdfParams::from_env_or_default())?;
            report(g, "added", &id);
        }
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

fn report(g: &GlobalArgs, what: &str, id: &str) {
    if g.json {
        print_json(&json!({"result": what, "key": id}));
    } else if !g.quiet {
        println!("{what} {}", &id[..8.min(id.len())]);
    }
}
