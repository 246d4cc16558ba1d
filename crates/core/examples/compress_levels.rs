//! zstd levels on the chunks Lifeboat would store: compressed size and compression time per
//! candidate, each chunk compressed by every candidate in turn (docs/PERFORMANCE.md quotes
//! it):
//!
//! ```text
//! cargo run --release -p lifeboat-core --example compress_levels -- DIR 3 2 1 \
//!     3:strat=1,hlog=17,mml=5
//! ```
//!
//! A candidate is a level, optionally followed by `:` and zstd advanced parameters that
//! override the level's (`wlog`, `hlog`, `clog`, `slog`, `mml`, `tlen`, `strat`, as the
//! zstd command line's `--zstd=` names them), optionally ending in `/probe`: a chunk longer
//! than 256 KiB compresses its first 128 KiB as a frame of its own and is stored as it is
//! when that saves less than 1/64, else the rest follows as a second frame; or ending in
//! `/group`: chunks shorter than 512 KiB are compressed in compression groups, as the
//! writer stores them (`lifeboat_core::group`, directory included). Chunks are cut with the default chunker
//! parameters, files in the order a backup walks them; every regular file is read by name,
//! so a hard-linked file counts once per name. Chunks that a candidate cannot shrink count at their own size, as Lifeboat stores
//! them.

use std::time::Instant;

use lifeboat_core::chunker::{ChunkerConfig, ChunkerParams};
use lifeboat_core::group::{Group, MAX_MEMBER};
use zstd::zstd_safe::{CParameter, Strategy};

fn candidate(spec: &str) -> zstd::bulk::Compressor<'static> {
    let (level, params) = spec.split_once(':').unwrap_or((spec, ""));
    let mut z = zstd::bulk::Compressor::new(level.parse().expect("a zstd level")).unwrap();
    for kv in params.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').expect("key=value");
        let v: u32 = v.parse().expect("a number");
        let p = match k {
            "wlog" => CParameter::WindowLog(v),
            "hlog" => CParameter::HashLog(v),
            "clog" => CParameter::ChainLog(v),
            "slog" => CParameter::SearchLog(v),
            "mml" => CParameter::MinMatch(v),
            "tlen" => CParameter::TargetLength(v),
            "strat" => CParameter::Strategy(match v {
                1 => Strategy::ZSTD_fast,
                2 => Strategy::ZSTD_dfast,
                3 => Strategy::ZSTD_greedy,
                4 => Strategy::ZSTD_lazy,
                _ => panic!("strategy 1..4"),
            }),
            other => panic!("unknown parameter {other}"),
        };
        z.set_parameter(p).unwrap();
    }
    z
}

/// Stored bytes and compression seconds of one compression group.
fn compress_group(
    z: &mut zstd::bulk::Compressor<'static>,
    g: Group,
    out: &mut Vec<u8>,
) -> (u64, f64) {
    let (plain, _) = g.finish();
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
    let t = Instant::now();
    let ok = z.compress_to_buffer(&plain, out).is_ok();
    let secs = t.elapsed().as_secs_f64();
    let n = if ok && out.len() < plain.len() {
        out.len()
    } else {
        plain.len()
    };
    (n as u64, secs)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .expect("usage: compress_levels DIR CANDIDATE...");
    let specs: Vec<String> = args.collect();
    let mut zs: Vec<_> = specs
        .iter()
        .map(|s| candidate(s.trim_end_matches("/probe").trim_end_matches("/group")))
        .collect();
    let mut groups: Vec<Option<Group>> = specs
        .iter()
        .map(|s| s.ends_with("/group").then(Group::default))
        .collect();
    // `/probe`: a chunk longer than two probes compresses its first PROBE bytes as a frame of
    // their own; when that saves less than 1/64 the chunk is stored as it is, else the rest
    // follows as a second frame.
    const PROBE: usize = 128 * 1024;
    let probed: Vec<bool> = specs.iter().map(|s| s.ends_with("/probe")).collect();
    let cfg = ChunkerConfig::new(ChunkerParams::default(), 1);
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stored = vec![0u64; specs.len()];
    let mut secs = vec![0f64; specs.len()];
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            // Names in byte order, depth first, as a backup walks them (groups
            // take small files in that order).
            let mut names: Vec<_> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            stack.extend(names.into_iter().rev());
            continue;
        }
        if !md.is_file() {
            continue;
        }
        let f = std::fs::File::open(&p).unwrap();
        for chunk in cfg.chunker(f) {
            let chunk = chunk.unwrap();
            total += chunk.len() as u64;
            out.reserve(zstd::zstd_safe::compress_bound(chunk.len()));
            for (i, z) in zs.iter_mut().enumerate() {
                if let Some(g) = groups[i].as_mut().filter(|_| chunk.len() < MAX_MEMBER) {
                    g.push(lifeboat_core::blob::Id::default(), &chunk);
                    if g.is_full() {
                        let (s, t) = compress_group(z, std::mem::take(g), &mut out);
                        stored[i] += s;
                        secs[i] += t;
                    }
                    continue;
                }
                out.clear();
                let t = Instant::now();
                let mut first = 0;
                let ok = if probed[i] && chunk.len() > 2 * PROBE {
                    z.compress_to_buffer(&chunk[..PROBE], &mut out).is_ok()
                        && out.len() * 64 < PROBE * 63
                        && {
                            first = out.len();
                            z.compress_to_buffer(&chunk[PROBE..], &mut out).is_ok()
                        }
                } else {
                    z.compress_to_buffer(&chunk, &mut out).is_ok()
                };
                secs[i] += t.elapsed().as_secs_f64();
                stored[i] += if ok && first + out.len() < chunk.len() {
                    first + out.len()
                } else {
                    chunk.len()
                } as u64;
            }
        }
    }
    for (i, g) in groups.iter_mut().enumerate() {
        if let Some(g) = g.take().filter(|g| !g.is_empty()) {
            let (s, t) = compress_group(&mut zs[i], g, &mut out);
            stored[i] += s;
            secs[i] += t;
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        println!(
            "{spec:>32}: in {:.1} MB, stored {:.1} MB, zstd {:.3} s ({:.0} MB/s)",
            total as f64 / 1e6,
            stored[i] as f64 / 1e6,
            secs[i],
            total as f64 / 1e6 / secs[i]
        );
    }
}
