//! Optional Reed-Solomon parity over pack files, stored beside them.
//!
//! For a pack `data/xx/<id>`, the sidecar `parity/<id>` lets `check --repair`
//! rebuild the pack **bit for bit** when at most `parity_shards` of its
//! `data_shards` equal slices are damaged. The pack format is unchanged;
//! repositories without sidecars work as before.
//!
//! ```text
//! sidecar = "LBPR" version:u8(=1) k:u8 m:u8 shard_len:u32le pack_len:u64le
//!           shard_hash[32]*(k+m) header_hash[32] parity_shard[shard_len]*m
//! ```
//! `shard_hash` is BLAKE3 of each shard (data shards zero-padded to
//! `shard_len`), `header_hash` BLAKE3 of everything before it. The code is a
//! systematic Reed-Solomon code over GF(2^8) (polynomial 0x11d) with a Cauchy
//! generator matrix, so any `k` intact shards determine the pack. Sidecars are
//! not encrypted: they are a function of the (encrypted) pack bytes only.
//!
//! Space overhead: `m/k` of the pack plus `45 + 32·(k+m)` bytes
//! (docs/MAINTENANCE.md has measured figures).
//!
//! # Errors
//! [`Error::Damaged`] naming the pack when the sidecar is unusable or more
//! shards are damaged than the parity can rebuild; storage errors.

use std::sync::OnceLock;

use bytes::Bytes;
use lifeboat_storage::{PutOptions, StorageError};
use serde::Serialize;

use crate::blob::Id;
use crate::error::{Error, Result};
use crate::pack::pack_key;
use crate::repository::Repository;

const MAGIC: &[u8; 4] = b"LBPR";
const VERSION: u8 = 1;
const FIXED: usize = 4 + 1 + 1 + 1 + 4 + 8;

/// Storage prefix of parity sidecars.
pub const PARITY_PREFIX: &str = "parity";

/// The sidecar key of a pack.
pub fn parity_key(pack: &Id) -> String {
    format!("{PARITY_PREFIX}/{pack}")
}

/// Shard counts: the pack is cut into `data_shards` slices and `parity_shards`
/// parity slices are added; up to `parity_shards` damaged slices are repairable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParityParams {
    pub data_shards: u8,
    pub parity_shards: u8,
}

impl Default for ParityParams {
    /// 20 + 2: 10% overhead, any 2 damaged twentieths of a pack repairable.
    fn default() -> Self {
        Self {
            data_shards: 20,
            parity_shards: 2,
        }
    }
}

impl ParityParams {
    /// # Errors
    /// [`Error::Invalid`] unless `1 <= k`, `1 <= m` and `k + m <= 255`.
    pub fn validate(&self) -> Result<()> {
        let (k, m) = (self.data_shards as usize, self.parity_shards as usize);
        if k == 0 || m == 0 || k + m > 255 {
            return Err(Error::invalid(
                "parity shards",
                format!("need 1 <= data shards, 1 <= parity shards, sum <= 255 (got {k} + {m})"),
            ));
        }
        Ok(())
    }
}

// ---- GF(2^8) ----

struct Gf {
    exp: [u8; 512],
    log: [u8; 256],
}

fn gf() -> &'static Gf {
    static T: OnceLock<Gf> = OnceLock::new();
    T.get_or_init(|| {
        let mut exp = [0u8; 512];
        let mut log = [0u8; 256];
        let mut x: u16 = 1;
        for (i, e) in exp.iter_mut().enumerate().take(255) {
            *e = x as u8;
            log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11d;
            }
        }
        for i in 255..512 {
            exp[i] = exp[i - 255];
        }
        Gf { exp, log }
    })
}

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let t = gf();
    t.exp[t.log[a as usize] as usize + t.log[b as usize] as usize]
}

fn inv(a: u8) -> u8 {
    debug_assert!(a != 0);
    let t = gf();
    t.exp[255 - t.log[a as usize] as usize]
}

/// Row `i` of the parity part of the generator: Cauchy `1 / (x_i + y_j)` with
/// `x_i = k + i`, `y_j = j` (all distinct, so every square submatrix of
/// `[I; C]` is invertible).
fn cauchy_row(k: usize, i: usize) -> Vec<u8> {
    (0..k).map(|j| inv(((k + i) as u8) ^ (j as u8))).collect()
}

/// `out ^= c · src`
fn mul_add(out: &mut [u8], c: u8, src: &[u8]) {
    if c == 0 {
        return;
    }
    let t = gf();
    let lc = t.log[c as usize] as usize;
    for (o, s) in out.iter_mut().zip(src) {
        if *s != 0 {
            *o ^= t.exp[lc + t.log[*s as usize] as usize];
        }
    }
}

/// Invert a square matrix in place (Gauss-Jordan); `None` if singular.
fn invert(mut a: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    let n = a.len();
    let mut r: Vec<Vec<u8>> = (0..n)
        .map(|i| (0..n).map(|j| u8::from(i == j)).collect())
        .collect();
    for col in 0..n {
        let piv = (col..n).find(|&row| a[row][col] != 0)?;
        a.swap(col, piv);
        r.swap(col, piv);
        let f = inv(a[col][col]);
        for j in 0..n {
            a[col][j] = mul(a[col][j], f);
            r[col][j] = mul(r[col][j], f);
        }
        for row in 0..n {
            if row != col && a[row][col] != 0 {
                let f = a[row][col];
                let (ac, rc) = (a[col].clone(), r[col].clone());
                for j in 0..n {
                    a[row][j] ^= mul(f, ac[j]);
                    r[row][j] ^= mul(f, rc[j]);
                }
            }
        }
    }
    Some(r)
}

fn data_shards(pack: &[u8], k: usize, shard_len: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|j| {
            let mut s = vec![0u8; shard_len];
            let start = (j * shard_len).min(pack.len());
            let end = ((j + 1) * shard_len).min(pack.len());
            s[..end - start].copy_from_slice(&pack[start..end]);
            s
        })
        .collect()
}

/// Compute the sidecar of a pack.
///
/// # Errors
/// [`Error::Invalid`] for invalid parameters.
pub fn encode(params: ParityParams, pack: &[u8]) -> Result<Vec<u8>> {
    params.validate()?;
    let (k, m) = (params.data_shards as usize, params.parity_shards as usize);
    let shard_len = pack.len().div_ceil(k).max(1);
    let data = data_shards(pack, k, shard_len);
    let parity: Vec<Vec<u8>> = (0..m)
        .map(|i| {
            let row = cauchy_row(k, i);
            let mut p = vec![0u8; shard_len];
            for (c, d) in row.iter().zip(&data) {
                mul_add(&mut p, *c, d);
            }
            p
        })
        .collect();
    let mut out = Vec::with_capacity(FIXED + 32 * (k + m + 1) + m * shard_len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(k as u8);
    out.push(m as u8);
    out.extend_from_slice(&(shard_len as u32).to_le_bytes());
    out.extend_from_slice(&(pack.len() as u64).to_le_bytes());
    for s in data.iter().chain(&parity) {
        out.extend_from_slice(blake3::hash(s).as_bytes());
    }
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    for p in &parity {
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// The outcome of [`reconstruct`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconstructed {
    pub bytes: Vec<u8>,
    /// Data shards that were damaged and rebuilt.
    pub damaged_shards: Vec<usize>,
}

/// Rebuild a pack from possibly damaged (or truncated) bytes and its sidecar.
///
/// # Errors
/// A message when the sidecar is malformed or too many shards are damaged.
pub fn reconstruct(sidecar: &[u8], damaged: &[u8]) -> std::result::Result<Reconstructed, String> {
    if sidecar.len() < FIXED || &sidecar[..4] != MAGIC || sidecar[4] != VERSION {
        return Err("not a parity sidecar (bad magic or version)".into());
    }
    let (k, m) = (sidecar[5] as usize, sidecar[6] as usize);
    let shard_len = u32::from_le_bytes(sidecar[7..11].try_into().expect("4 bytes")) as usize;
    let pack_len = u64::from_le_bytes(sidecar[11..19].try_into().expect("8 bytes")) as usize;
    let hashes_end = FIXED + 32 * (k + m);
    if k == 0
        || m == 0
        || sidecar.len() != hashes_end + 32 + m * shard_len
        || pack_len > k * shard_len
    {
        return Err("parity sidecar has inconsistent sizes".into());
    }
    if blake3::hash(&sidecar[..hashes_end]).as_bytes() != &sidecar[hashes_end..hashes_end + 32] {
        return Err("parity sidecar header is damaged".into());
    }
    let hash = |i: usize| &sidecar[FIXED + 32 * i..FIXED + 32 * (i + 1)];
    let mut shards: Vec<Option<Vec<u8>>> =
        data_shards(&damaged[..damaged.len().min(pack_len)], k, shard_len)
            .into_iter()
            .chain((0..m).map(|i| {
                let start = hashes_end + 32 + i * shard_len;
                sidecar[start..start + shard_len].to_vec()
            }))
            .enumerate()
            .map(|(i, s)| (blake3::hash(&s).as_bytes() == hash(i)).then_some(s))
            .collect();
    let damaged_shards: Vec<usize> = (0..k).filter(|&j| shards[j].is_none()).collect();
    if !damaged_shards.is_empty() {
        let good: Vec<usize> = (0..k + m)
            .filter(|&i| shards[i].is_some())
            .take(k)
            .collect();
        if good.len() < k {
            return Err(format!(
                "{} of {} shards are damaged; the parity can rebuild at most {m}",
                k + m - (0..k + m).filter(|&i| shards[i].is_some()).count(),
                k + m
            ));
        }
        let rows: Vec<Vec<u8>> = good
            .iter()
            .map(|&i| {
                if i < k {
                    (0..k).map(|j| u8::from(i == j)).collect()
                } else {
                    cauchy_row(k, i - k)
                }
            })
            .collect();
        let dec = invert(rows).ok_or("parity matrix is singular")?;
        for &j in &damaged_shards {
            let mut out = vec![0u8; shard_len];
            for (c, &g) in dec[j].iter().zip(&good) {
                mul_add(&mut out, *c, shards[g].as_ref().expect("good shard"));
            }
            if blake3::hash(&out).as_bytes() != hash(j) {
                return Err(format!("rebuilt shard {j} does not match its hash"));
            }
            shards[j] = Some(out);
        }
    }
    let mut bytes = Vec::with_capacity(k * shard_len);
    for s in shards.into_iter().take(k) {
        bytes.extend_from_slice(&s.expect("all data shards present"));
    }
    bytes.truncate(pack_len);
    Ok(Reconstructed {
        bytes,
        damaged_shards,
    })
}

/// Counts of [`create_missing`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ParityReport {
    pub packs: u64,
    pub created: u64,
    pub pack_bytes: u64,
    pub parity_bytes: u64,
}

/// Write a sidecar for every pack that has none. Packs are read one at a time.
///
/// # Errors
/// Storage errors naming the object; [`Error::Invalid`] for bad parameters.
pub fn create_missing(repo: &Repository, params: ParityParams) -> Result<ParityReport> {
    params.validate()?;
    let have: std::collections::HashSet<String> = repo
        .storage()
        .list(PARITY_PREFIX)?
        .into_iter()
        .filter_map(|m| m.key.rsplit('/').next().map(str::to_string))
        .collect();
    let mut report = ParityReport::default();
    for m in repo.storage().list("data")? {
        let Some(name) = m.key.rsplit('/').next() else {
            continue;
        };
        let Ok(id) = name.parse::<Id>() else { continue };
        report.packs += 1;
        report.pack_bytes += m.size;
        if have.contains(name) {
            if let Ok(h) = repo.storage().head(&parity_key(&id)) {
                report.parity_bytes += h.size;
            }
            continue;
        }
        let bytes = repo.storage().get(&m.key, None)?;
        if Id::of_stored(&bytes) != id {
            // Never compute parity over damaged bytes.
            return Err(Error::damaged(
                "pack",
                id,
                "content does not match its name; not writing parity",
            ));
        }
        let sidecar = encode(params, &bytes)?;
        report.parity_bytes += sidecar.len() as u64;
        match repo.storage().put(
            &parity_key(&id),
            Bytes::from(sidecar),
            &PutOptions::create(),
        ) {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => report.created += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// One pack handled by [`verify_and_repair`].
#[derive(Debug, Clone, Serialize)]
pub struct PackRepair {
    pub pack: String,
    /// `repaired` or the reason it could not be.
    pub outcome: String,
    pub damaged_shards: Vec<usize>,
}

/// Read every pack that has a sidecar; rebuild (and rewrite) those whose bytes
/// do not hash to their name. With `dry_run`, report only.
///
/// # Errors
/// Storage errors of listing and writing; unrepairable packs are reported, not errors.
pub fn verify_and_repair(repo: &Repository, dry_run: bool) -> Result<Vec<PackRepair>> {
    let mut out = Vec::new();
    for m in repo.storage().list(PARITY_PREFIX)? {
        let Some(Ok(id)) = m.key.rsplit('/').next().map(str::parse::<Id>) else {
            continue;
        };
        let bytes = match repo.storage().get(&pack_key(&id), None) {
            Ok(b) => b.to_vec(),
            Err(StorageError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if Id::of_stored(&bytes) == id {
            continue;
        }
        let sidecar = repo.storage().get(&m.key, None)?;
        match reconstruct(&sidecar, &bytes) {
            Ok(r) if Id::of_stored(&r.bytes) == id => {
                if !dry_run {
                    repo.storage().put(
                        &pack_key(&id),
                        Bytes::from(r.bytes),
                        &PutOptions::default(),
                    )?;
                }
                out.push(PackRepair {
                    pack: id.to_hex(),
                    outcome: if dry_run {
                        "repairable".into()
                    } else {
                        "repaired".into()
                    },
                    damaged_shards: r.damaged_shards,
                });
            }
            Ok(r) => out.push(PackRepair {
                pack: id.to_hex(),
                outcome: "rebuilt bytes do not match the pack id".into(),
                damaged_shards: r.damaged_shards,
            }),
            Err(e) => out.push(PackRepair {
                pack: id.to_hex(),
                outcome: e,
                damaged_shards: Vec::new(),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 31 % 251) as u8 ^ (i >> 8) as u8)
            .collect()
    }

    #[test]
    fn rebuilds_up_to_m_damaged_shards() {
        let pack = sample(10_007);
        let p = ParityParams {
            data_shards: 10,
            parity_shards: 3,
        };
        let side = encode(p, &pack).unwrap();
        let shard = pack.len().div_ceil(10);
        let mut bad = pack.clone();
        for s in [0usize, 4, 9] {
            bad[s * shard + 3] ^= 0xff;
        }
        let r = reconstruct(&side, &bad).unwrap();
        assert_eq!(r.bytes, pack);
        assert_eq!(r.damaged_shards, vec![0, 4, 9]);
        bad[shard * 2] ^= 1;
        assert!(reconstruct(&side, &bad).unwrap_err().contains("damaged"));
    }

    #[test]
    fn rebuilds_truncated_pack() {
        let pack = sample(5000);
        let side = encode(
            ParityParams {
                data_shards: 4,
                parity_shards: 2,
            },
            &pack,
        )
        .unwrap();
        let r = reconstruct(&side, &pack[..4000]).unwrap();
        assert_eq!(r.bytes, pack);
    }

    #[test]
    fn damaged_sidecar_header_is_refused() {
        let pack = sample(100);
        let mut side = encode(ParityParams::default(), &pack).unwrap();
        side[FIXED + 1] ^= 1;
        assert!(reconstruct(&side, &pack).is_err());
    }

    proptest! {
        #[test]
        fn any_m_erasures_are_repairable(len in 1usize..3000, k in 1u8..12, m in 1u8..4, seed in any::<u64>()) {
            let pack = sample(len);
            let side = encode(ParityParams { data_shards: k, parity_shards: m }, &pack).unwrap();
            let shard = len.div_ceil(k as usize).max(1);
            let mut bad = pack.clone();
            let mut x = seed | 1;
            for _ in 0..m {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let pos = (x as usize) % len;
                bad[pos] ^= 0x5a;
            }
            let r = reconstruct(&side, &bad).unwrap();
            prop_assert_eq!(r.bytes, pack);
            let _ = shard;
        }

        #[test]
        fn reconstruct_never_panics(side in proptest::collection::vec(any::<u8>(), 0..300), pack in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = reconstruct(&side, &pack);
        }
    }
}
