//! Human and JSON output; errors with `hint:` lines.

use serde::Serialize;

pub fn print_error(e: &anyhow::Error) {
    let top = e.to_string();
    let (mut main, hints): (Vec<String>, Vec<String>) = top
        .lines()
        .map(String::from)
        .partition(|l| !l.starts_with("hint:"));
    // Append the causes that add information to the message, before the hints.
    // A cause whose text is already shown (many errors print their source
    // inside their own message) is skipped.
    let mut shown = top.clone();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        let c = c.trim_end_matches([' ', ':']);
        if !c.is_empty() && !shown.contains(c) {
            if let Some(last) = main.last_mut() {
                last.push_str(&format!(": {c}"));
            }
            shown.push_str(c);
        }
    }
    eprintln!("error: {}", main.join("\n"));
    for h in hints {
        eprintln!("{h}");
    }
    if let Some(h) = hint_for(e) {
        eprintln!("hint: {h}");
    }
}

fn hint_for(e: &anyhow::Error) -> Option<String> {
    if let Some(h) = pg_tool_too_old_hint(e) {
        return Some(h);
    }
    let core = e.downcast_ref::<lifeboat_core::Error>()?;
    let hint = match core {
        lifeboat_core::Error::SnapshotNotFound(_) => {
            Some("`lifeboat snapshots` lists the snapshots and their ids")
        }
        lifeboat_core::Error::AmbiguousSnapshot { .. } => {
            Some("give more digits of the snapshot id")
        }
        lifeboat_core::Error::Damaged { .. } => {
            Some("run `lifeboat check --read-data` to see everything affected")
        }
        lifeboat_core::Error::PathNotFound { .. } => {
            Some("`lifeboat ls SNAPSHOT` lists the paths in a snapshot")
        }
        _ => None,
    };
    hint.map(String::from)
}

/// `pg_dump` and `pg_dumpall` refuse a server of a newer major than their own ("aborting
/// because of server version mismatch", then "server version: 18.6; pg_dump version: 15.20"):
/// the way out is the server major's client tools on `PATH`.
fn pg_tool_too_old_hint(e: &anyhow::Error) -> Option<String> {
    let text = e
        .chain()
        .map(|c| c.to_string())
        .find(|t| t.contains("aborting because of server version mismatch"))?;
    let major = text
        .split("server version: ")
        .nth(1)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .filter(|m| !m.is_empty());
    Some(match major {
        Some(m) => format!(
            "the server is PostgreSQL {m}: put PostgreSQL {m}'s client tools (pg_dump, \
             pg_dumpall, psql) first in PATH (Debian: /usr/lib/postgresql/{m}/bin)"
        ),
        None => "put the server's major's client tools (pg_dump, pg_dumpall, psql) first in \
                 PATH"
            .into(),
    })
}

pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("serialisable output")
    );
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A plain text table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(header.to_vec()));
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}
