//! Optional Reed-Solomon parity over pack files, stored beside them.
//!
//! For a pack `data/xx/<id>`, the sidecar `parity/<id>` lets `check --repair`
//! rebuild the pack **bit for bit** when at most `parity_shards` of its
//! `data_shards` equal slices are damaged. The pack format is unchanged;
//! repositories without sidecars work as before.
//!
//! ```text
//! sidecar = "LBPR" version:u8(=2) k:u8 m:u8 shard_len:u32le pack_len:u64le
//!           shard_hash[32]*(k+m) header_hash[32] parity_shard[shard_len]*m
//! ```
//! `shard_len` is `ceil(pack_len / k)` rounded up to an even number (the codec
//! works on 16-bit words); data shards are the pack's consecutive slices, the
//! last zero-padded. `shard_hash` is BLAKE3 of each shard, `header_hash` BLAKE3
//! of everything before it. The parity shards are the recovery shards of the
//! `reed-solomon-simd` crate (version 3: Leopard-RS, a systematic
//! Reed-Solomon code over GF(2^16)) for `k` original and `m` recovery shards,
//! so any `k` intact shards determine the pack; the per-shard hashes say which
//! shards are intact. Sidecars are not encrypted: they are a function of the
//! (encrypted) pack bytes only.
//!
//! Version 1 sidecars (a hand-written GF(2^8) Cauchy code of earlier builds)
//! are recognised but can no longer be decoded: `lifeboat parity --upgrade`
//! rewrites them from the intact packs.
//!
//! Space overhead: `m/k` of the pack plus `45 + 32·(k+m)` bytes
//! (docs/MAINTENANCE.md has measured figures).
//!
//! # Errors
//! [`Error::Damaged`] naming the pack when the sidecar is unusable or more
//! shards are damaged than the parity can rebuild; storage errors.

use std::borrow::Cow;

use bytes::Bytes;
use lifeboat_storage::{PutOptions, StorageError};
use serde::Serialize;

use crate::blob::Id;
use crate::error::{Error, Result};
use crate::pack::pack_key;
use crate::repository::Repository;

const MAGIC: &[u8; 4] = b"LBPR";
/// The sidecar format written now.
pub const VERSION: u8 = 2;
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

/// Data shard `j` of `pack`: a slice, or a zero-padded copy for the last one.
fn data_shard(pack: &[u8], j: usize, shard_len: usize) -> Cow<'_, [u8]> {
    let start = (j * shard_len).min(pack.len());
    let end = ((j + 1) * shard_len).min(pack.len());
    if end - start == shard_len {
        Cow::Borrowed(&pack[start..end])
    } else {
        let mut s = vec![0u8; shard_len];
        s[..end - start].copy_from_slice(&pack[start..end]);
        Cow::Owned(s)
    }
}

fn shard_len(pack_len: usize, k: usize) -> usize {
    let l = pack_len.div_ceil(k).max(2);
    l + l % 2
}

fn codec_error(e: reed_solomon_simd::Error) -> Error {
    Error::invalid("parity shards", e.to_string())
}

/// Compute the sidecar of a pack.
///
/// # Errors
/// [`Error::Invalid`] for invalid parameters.
pub fn encode(params: ParityParams, pack: &[u8]) -> Result<Vec<u8>> {
    params.validate()?;
    let (k, m) = (params.data_shards as usize, params.parity_shards as usize);
    let shard_len = shard_len(pack.len(), k);
    let mut encoder =
        reed_solomon_simd::ReedSolomonEncoder::new(k, m, shard_len).map_err(codec_error)?;
    let mut hashes = Vec::with_capacity(k + m);
    for j in 0..k {
        let shard = data_shard(pack, j, shard_len);
        hashes.push(blake3::hash(&shard));
        encoder.add_original_shard(&shard).map_err(codec_error)?;
    }
    let result = encoder.encode().map_err(codec_error)?;
    let mut out = Vec::with_capacity(FIXED + 32 * (k + m + 1) + m * shard_len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(k as u8);
    out.push(m as u8);
    out.extend_from_slice(&(shard_len as u32).to_le_bytes());
    out.extend_from_slice(&(pack.len() as u64).to_le_bytes());
    hashes.extend(result.recovery_iter().map(blake3::hash));
    for h in &hashes {
        out.extend_from_slice(h.as_bytes());
    }
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    for p in result.recovery_iter() {
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// The format version of a sidecar (its fifth byte), if it is one.
pub fn sidecar_version(sidecar: &[u8]) -> Option<u8> {
    (sidecar.len() > 4 && &sidecar[..4] == MAGIC).then(|| sidecar[4])
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
    match sidecar_version(sidecar) {
        Some(VERSION) if sidecar.len() >= FIXED => {}
        Some(1) => {
            return Err(
                "parity sidecar format 1 (written by an earlier build) can no longer be \
                        decoded; while the pack is intact, `lifeboat parity --upgrade` rewrites it"
                    .into(),
            )
        }
        _ => return Err("not a parity sidecar (bad magic or version)".into()),
    }
    let (k, m) = (sidecar[5] as usize, sidecar[6] as usize);
    let shard_len = u32::from_le_bytes(sidecar[7..11].try_into().expect("4 bytes")) as usize;
    let pack_len = u64::from_le_bytes(sidecar[11..19].try_into().expect("8 bytes")) as usize;
    let hashes_end = FIXED + 32 * (k + m);
    if k == 0
        || m == 0
        || !shard_len.is_multiple_of(2)
        || sidecar.len() != hashes_end + 32 + m * shard_len
        || pack_len > k * shard_len
    {
        return Err("parity sidecar has inconsistent sizes".into());
    }
    if blake3::hash(&sidecar[..hashes_end]).as_bytes() != &sidecar[hashes_end..hashes_end + 32] {
        return Err("parity sidecar header is damaged".into());
    }
    let hash = |i: usize| &sidecar[FIXED + 32 * i..FIXED + 32 * (i + 1)];
    let present = &damaged[..damaged.len().min(pack_len)];
    let data: Vec<Cow<'_, [u8]>> = (0..k).map(|j| data_shard(present, j, shard_len)).collect();
    let parity: Vec<&[u8]> = (0..m)
        .map(|i| {
            let start = hashes_end + 32 + i * shard_len;
            &sidecar[start..start + shard_len]
        })
        .collect();
    let data_ok: Vec<bool> = (0..k)
        .map(|j| blake3::hash(&data[j]).as_bytes() == hash(j))
        .collect();
    let parity_ok: Vec<bool> = (0..m)
        .map(|i| blake3::hash(parity[i]).as_bytes() == hash(k + i))
        .collect();
    let damaged_shards: Vec<usize> = (0..k).filter(|&j| !data_ok[j]).collect();
    let mut rebuilt = std::collections::BTreeMap::new();
    if !damaged_shards.is_empty() {
        let intact = data_ok.iter().chain(&parity_ok).filter(|ok| **ok).count();
        if intact < k {
            return Err(format!(
                "{} of {} shards are damaged; the parity can rebuild at most {m}",
                k + m - intact,
                k + m
            ));
        }
        rebuilt = reed_solomon_simd::decode(
            k,
            m,
            (0..k).filter(|&j| data_ok[j]).map(|j| (j, &data[j])),
            (0..m).filter(|&i| parity_ok[i]).map(|i| (i, parity[i])),
        )
        .map_err(|e| format!("parity decoding failed: {e}"))?;
        for &j in &damaged_shards {
            let out = rebuilt
                .get(&j)
                .ok_or_else(|| format!("parity decoding did not rebuild shard {j}"))?;
            if blake3::hash(out).as_bytes() != hash(j) {
                return Err(format!("rebuilt shard {j} does not match its hash"));
            }
        }
    }
    let mut bytes = Vec::with_capacity(k * shard_len);
    for (j, shard) in data.iter().enumerate() {
        match rebuilt.get(&j) {
            Some(r) => bytes.extend_from_slice(r),
            None => bytes.extend_from_slice(shard),
        }
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

/// Write a sidecar for every pack that has none (and, with `upgrade`, for
/// every pack whose sidecar has an older format version). Packs are read one
/// at a time.
///
/// # Errors
/// Storage errors naming the object; [`Error::Invalid`] for bad parameters;
/// [`Error::Damaged`] for a pack whose bytes do not match its name.
pub fn create_missing(
    repo: &Repository,
    params: ParityParams,
    upgrade: bool,
) -> Result<ParityReport> {
    params.validate()?;
    let have: std::collections::HashMap<String, u64> = repo
        .storage()
        .list(PARITY_PREFIX)?
        .into_iter()
        .filter_map(|m| Some((m.key.rsplit('/').next()?.to_string(), m.size)))
        .collect();
    let mut report = ParityReport::default();
    for m in repo.storage().list("data")? {
        let Some(name) = m.key.rsplit('/').next() else {
            continue;
        };
        let Ok(id) = name.parse::<Id>() else { continue };
        report.packs += 1;
        report.pack_bytes += m.size;
        let mut replace = false;
        if let Some(size) = have.get(name) {
            let current = !upgrade
                || *size < 5
                || repo
                    .storage()
                    .get(&parity_key(&id), Some(0..5))
                    .map_or(true, |h| sidecar_version(&h) == Some(VERSION));
            if current {
                report.parity_bytes += size;
                continue;
            }
            replace = true;
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
        let opts = if replace {
            PutOptions::default()
        } else {
            PutOptions::create()
        };
        match repo
            .storage()
            .put(&parity_key(&id), Bytes::from(sidecar), &opts)
        {
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
        let shard = shard_len(pack.len(), 10);
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
    fn damaged_parity_shard_and_data_shard_together() {
        let pack = sample(64 * 1024 + 3);
        let p = ParityParams {
            data_shards: 8,
            parity_shards: 2,
        };
        let mut side = encode(p, &pack).unwrap();
        assert_eq!(sidecar_version(&side), Some(VERSION));
        // One parity shard damaged, one data shard damaged: still repairable.
        let last = side.len() - 1;
        side[last] ^= 0x40;
        let mut bad = pack.clone();
        bad[100] ^= 1;
        let r = reconstruct(&side, &bad).unwrap();
        assert_eq!(r.bytes, pack);
        assert_eq!(r.damaged_shards, vec![0]);
        // A second damaged data shard is one too many.
        bad[pack.len() - 1] ^= 1;
        let e = reconstruct(&side, &bad).unwrap_err();
        assert!(e.contains("3 of 10 shards are damaged"), "{e}");
    }

    #[test]
    fn version_one_sidecars_are_refused_with_a_hint() {
        let pack = sample(1000);
        let mut side = encode(ParityParams::default(), &pack).unwrap();
        side[4] = 1;
        let e = reconstruct(&side, &pack).unwrap_err();
        assert!(e.contains("lifeboat parity --upgrade"), "{e}");
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
