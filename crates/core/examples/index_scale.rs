//! Synthetic large-index measurement for docs/PERFORMANCE.md ("Scale").
//!
//! Builds the in-memory [`Index`] the way `Repository::load_index` does (index
//! files handed one by one to `Index::builder()`, each dropped after its entries
//! are copied; `HOLD_FILES=1` measures the older way: every file decoded and
//! held, then `Index::from_files`) from N million
//! synthetic blob entries, and prints the process RSS at each stage, read from
//! `/proc/self/status`. Not a test: it asserts nothing and is run by hand or by
//! `scripts/bench --scale`.
//!
//! ```text
//! cargo run --release -p lifeboat-core --example index_scale -- 1 2 4
//! ```
//!
//! Arguments: blob counts in millions (default `1 2 4`). Environment:
//! `BLOBS_PER_PACK` (default 64), `PACKS_PER_INDEX` (default 32, the writer's
//! checkpoint interval), `ROUNDTRIP=1` to also encode and decode every index file
//! (closer to a real load, slower).

use std::time::Instant;

use lifeboat_core::blob::{BlobType, Id};
use lifeboat_core::index::{Index, IndexFile, IndexPack};
use lifeboat_core::pack::PackEntry;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn hwm() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// Reset VmHWM to the current RSS (Linux >= 4.0); returns false if not allowed.
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn id(&mut self) -> Id {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        Id(b)
    }
}

/// The next synthetic index file of at most `per_index` packs, or `None` when
/// `left` blobs have all been produced.
fn synthetic_file(
    left: &mut usize,
    per_pack: usize,
    per_index: usize,
    rng: &mut SplitMix,
) -> Option<IndexFile> {
    if *left == 0 {
        return None;
    }
    let mut packs = Vec::with_capacity(per_index);
    for _ in 0..per_index {
        if *left == 0 {
            break;
        }
        let k = per_pack.min(*left);
        *left -= k;
        let mut off = 0u32;
        let blobs = (0..k)
            .map(|_| {
                let len = 400_000 + (rng.next() % 600_000) as u32;
                let e = PackEntry {
                    id: rng.id(),
                    compression: 1,
                    offset: off,
                    length: len,
                    raw_length: len * 2,
                };
                off = off.wrapping_add(len);
                e
            })
            .collect();
        packs.push(IndexPack {
            id: rng.id(),
            blob_type: BlobType::Data,
            blobs,
        });
    }
    Some(IndexFile {
        supersedes: vec![],
        packs,
    })
}

fn synthetic_files(
    n: usize,
    per_pack: usize,
    per_index: usize,
    rng: &mut SplitMix,
) -> Vec<IndexFile> {
    let mut left = n;
    std::iter::from_fn(|| synthetic_file(&mut left, per_pack, per_index, rng)).collect()
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn main() {
    let millions: Vec<f64> = {
        let v: Vec<f64> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if v.is_empty() {
            vec![1.0, 2.0, 4.0]
        } else {
            v
        }
    };
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let per_pack = env("BLOBS_PER_PACK", 64).max(1);
    let per_index = env("PACKS_PER_INDEX", 32).max(1);
    let roundtrip = std::env::var("ROUNDTRIP").is_ok_and(|v| v == "1");
    let mut rng = SplitMix(42);

    // One child process per size, so every measurement starts from a clean heap.
    if std::env::var_os("INDEX_SCALE_CHILD").is_none() {
        println!(
            "# blobs_per_pack={per_pack} packs_per_index={per_index} roundtrip={roundtrip} decoded PackEntry={} B",
            std::mem::size_of::<PackEntry>()
        );
        println!(
            "{:>8} {:>10} {:>12} {:>12} {:>12} {:>12} {:>14} {:>10}",
            "blobs_M",
            "heap_MB",
            "files_MB",
            "peak_MB",
            "steady_MB",
            "B/blob",
            "peak_B/blob",
            "lookup_ns"
        );
        let exe = std::env::current_exe().expect("current exe");
        for m in &millions {
            let st = std::process::Command::new(&exe)
                .arg(m.to_string())
                .env("INDEX_SCALE_CHILD", "1")
                .status()
                .expect("spawn child");
            assert!(st.success(), "child for {m} million failed");
        }
        return;
    }

    let hold = std::env::var("HOLD_FILES").is_ok_and(|v| v == "1");
    for m in millions.iter().copied().filter(|_| !hold) {
        // What Repository::load_index does: one file at a time into the builder.
        let n = (m * 1e6) as usize;
        let base = rss();
        let hwm_ok = reset_hwm();
        let t = Instant::now();
        let mut left = n;
        let mut builder = Index::builder();
        let mut probe = Vec::new();
        let mut k = 0u64;
        while let Some(mut f) = synthetic_file(&mut left, per_pack, per_index, &mut rng) {
            if roundtrip {
                f = IndexFile::decode(&f.encode()).expect("roundtrip");
            }
            for p in f.packs.iter().step_by(7) {
                if probe.len() < 200_000 {
                    probe.extend(p.blobs.first().map(|b| b.id));
                }
            }
            k += 1;
            builder.add(Id([(k % 251) as u8; 32]), f);
        }
        let index = builder.finish();
        let build = t.elapsed();
        let peak = if hwm_ok { hwm() } else { rss() };
        let steady = rss();
        let mut hits = 0usize;
        let t = Instant::now();
        for id in &probe {
            hits += usize::from(index.contains(id));
        }
        let lookup = t.elapsed().as_nanos() as f64 / probe.len().max(1) as f64;
        assert_eq!(hits, probe.len());
        println!(
            "{:>8.2} {:>10.1} {:>12} {:>12.1} {:>12.1} {:>12.1} {:>14.1} {:>10.0}   (streaming build {:.2}s, len {})",
            m,
            mb(index.heap_bytes() as u64),
            "-",
            mb(peak.saturating_sub(base)),
            mb(steady.saturating_sub(base)),
            steady.saturating_sub(base) as f64 / n as f64,
            peak.saturating_sub(base) as f64 / n as f64,
            lookup,
            build.as_secs_f64(),
            index.len(),
        );
    }

    for m in millions.into_iter().filter(|_| hold) {
        let n = (m * 1e6) as usize;
        let base = rss();
        let mut files = synthetic_files(n, per_pack, per_index, &mut rng);
        if roundtrip {
            files = files
                .iter()
                .map(|f| IndexFile::decode(&f.encode()).expect("roundtrip"))
                .collect();
        }
        let with_files = rss();
        let hwm_ok = reset_hwm();
        let t = Instant::now();
        let index = Index::from_files(files.iter());
        let build = t.elapsed();
        let peak = if hwm_ok { hwm() } else { rss() };
        // A few ids that exist and a few that don't.
        let probe: Vec<Id> = files
            .iter()
            .flat_map(|f| f.packs.iter())
            .step_by(7)
            .filter_map(|p| p.blobs.first().map(|b| b.id))
            .take(200_000)
            .collect();
        drop(files);
        let steady = rss();
        let t = Instant::now();
        let mut hits = 0usize;
        for id in &probe {
            hits += usize::from(index.contains(id));
        }
        let mut miss = SplitMix(7);
        for _ in 0..probe.len() {
            hits += usize::from(index.contains(&miss.id()));
        }
        let lookup = t.elapsed().as_nanos() as f64 / (2 * probe.len()).max(1) as f64;
        assert_eq!(hits, probe.len());
        println!(
            "{:>8.2} {:>10.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>14.1} {:>10.0}   (build {:.2}s, len {})",
            m,
            mb(index.heap_bytes() as u64),
            mb(with_files.saturating_sub(base)),
            mb(peak.saturating_sub(base)),
            mb(steady.saturating_sub(base)),
            steady.saturating_sub(base) as f64 / n as f64,
            peak.saturating_sub(base) as f64 / n as f64,
            lookup,
            build.as_secs_f64(),
            index.len(),
        );
        drop(index);
    }
}
