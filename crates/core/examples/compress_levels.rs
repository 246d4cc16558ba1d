//! zstd levels on the chunks Lifeboat would store: compressed size and compression time per
//! level, each chunk compressed at every level in turn (docs/PERFORMANCE.md quotes it):
//!
//! ```text
//! cargo run --release -p lifeboat-core --example compress_levels -- DIR 3 2 1
//! ```
//!
//! Chunks are cut with the default chunker parameters; every regular file is read by name,
//! so a hard-linked file counts once per name.

use std::time::Instant;

use lifeboat_core::blob::{compress_into, Compression};
use lifeboat_core::chunker::{ChunkerConfig, ChunkerParams};

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args.next().expect("usage: compress_levels DIR LEVEL...");
    let levels: Vec<i32> = args.map(|s| s.parse().expect("a zstd level")).collect();
    let cfg = ChunkerConfig::new(ChunkerParams::default(), 1);
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stored = vec![0u64; levels.len()];
    let mut secs = vec![0f64; levels.len()];
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            continue;
        }
        if !md.is_file() {
            continue;
        }
        let f = std::fs::File::open(&p).unwrap();
        for chunk in cfg.chunker(f) {
            let chunk = chunk.unwrap();
            total += chunk.len() as u64;
            for (i, &level) in levels.iter().enumerate() {
                let t = Instant::now();
                let code = compress_into(Compression::Zstd(level), &chunk, &mut out);
                secs[i] += t.elapsed().as_secs_f64();
                stored[i] += if code == 0 { chunk.len() } else { out.len() } as u64;
            }
        }
    }
    for (i, level) in levels.iter().enumerate() {
        println!(
            "level {level:3}: in {:.1} MB, stored {:.1} MB, zstd {:.3} s ({:.0} MB/s)",
            total as f64 / 1e6,
            stored[i] as f64 / 1e6,
            secs[i],
            total as f64 / 1e6 / secs[i]
        );
    }
}
