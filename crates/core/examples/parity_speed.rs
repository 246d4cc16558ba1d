//! Parity sidecar space overhead and encode/rebuild speed on one core
//! (docs/MAINTENANCE.md quotes its output):
//!
//! ```text
//! cargo run --release -p lifeboat-core --example parity_speed
//! ```

use std::time::Instant;

use lifeboat_core::parity::{encode, reconstruct, ParityParams};

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

fn main() {
    let rounds = 8;
    for pack_len in [400_000usize, 16 << 20] {
        let pack = pseudo_random(pack_len, 7);
        for (k, m) in [(10u8, 2u8), (20, 2), (50, 5)] {
            let params = ParityParams {
                data_shards: k,
                parity_shards: m,
            };
            let n = if pack_len < 1 << 20 {
                rounds * 20
            } else {
                rounds
            };
            let t = Instant::now();
            let mut side = Vec::new();
            for _ in 0..n {
                side = encode(params, &pack).expect("valid parameters");
            }
            let enc = t.elapsed().as_secs_f64();
            // Damage m data shards, then rebuild.
            let shard = pack_len.div_ceil(k as usize);
            let mut bad = pack.clone();
            for s in 0..m as usize {
                bad[s * shard + 1] ^= 0xff;
            }
            let t = Instant::now();
            for _ in 0..n {
                let r = reconstruct(&side, &bad).expect("repairable");
                assert_eq!(r.bytes, pack);
            }
            let dec = t.elapsed().as_secs_f64();
            let mb = (pack_len * n) as f64 / 1e6;
            println!(
                "pack {:>9} B  k+m {:>2}+{}  overhead {:>5.2}%  encode {:>7.0} MB/s  rebuild {} shards {:>7.0} MB/s",
                pack_len,
                k,
                m,
                100.0 * side.len() as f64 / pack_len as f64,
                mb / enc,
                m,
                mb / dec
            );
        }
    }
}
