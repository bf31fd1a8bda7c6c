//! Keeping the number of pack files bounded.
//!
//! Every group commit adds a small pack. When there are more than
//! `max_packs`, the smallest are merged into one, geometrically: the
//! smallest packs are taken until at most half of `max_packs` remain, and
//! then as long as the next pack is not more than twice what was taken.
//! Each object is then rewritten O(log n) times over its life, and a merge
//! touches mostly small packs, so it fits in a quiet moment of the thread.
//! Packs over [`MAX_MERGE_BYTES`] are left as they are.
//!
//! The merged pack is built by libgit2's pack builder (deltas, zlib) and
//! indexed by its indexer, flushed, and only then are the old packs removed
//! (index first, as git does). Every object stays: nothing is pruned, so a
//! journal's blob ids keep resolving.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use git2::{Buf, Indexer, Repository};

use super::pack::{list_packs, read_index_ids, sync_dir, sync_file};
use super::PersistError;

/// Packs at least this large are never merged.
pub const MAX_MERGE_BYTES: u64 = 256 << 20;

/// What one merge did.
#[derive(Debug, Clone, Copy)]
pub struct Merged {
    /// Packs merged.
    pub packs: usize,
    /// Objects in the new pack.
    pub objects: usize,
    /// How long it took.
    pub millis: u64,
}

/// Merges the smallest packs when there are more than `max_packs`.
///
/// # Errors
/// Reading or writing packs failed; the old packs are then all kept.
pub fn consolidate(
    repo_path: &Path,
    pack_dir: &Path,
    max_packs: usize,
    fsync: bool,
) -> Result<Option<Merged>, PersistError> {
    let io = |what: &str, e| PersistError::io(format!("{what} in {}", pack_dir.display()), e);
    let mut packs = list_packs(pack_dir).map_err(|e| io("listing packs", e))?;
    if packs.len() <= max_packs.max(2) {
        return Ok(None);
    }
    let started = Instant::now();
    packs.retain(|(_, size)| *size < MAX_MERGE_BYTES);
    packs.sort_by_key(|(_, size)| *size);
    let must = packs
        .len()
        .saturating_sub(max_packs / 2)
        .max(2)
        .min(packs.len());
    let mut take = must;
    let mut sum: u64 = packs[..take].iter().map(|(_, s)| s).sum();
    while take < packs.len() && packs[take].1 <= 2 * sum {
        sum += packs[take].1;
        take += 1;
    }
    let chosen = &packs[..take];
    if chosen.len() < 2 {
        return Ok(None);
    }

    let repo = Repository::open_bare(repo_path)?;
    let odb = repo.odb()?;
    let mut builder = repo.packbuilder()?;
    builder.set_threads(1);
    let mut objects = 0;
    for (pack, _) in chosen {
        for id in
            read_index_ids(&pack.with_extension("idx")).map_err(|e| io("reading an index", e))?
        {
            builder.insert_object(id.to_oid(), None)?;
            objects += 1;
        }
    }
    let mut buf = Buf::new();
    builder.write_buf(&mut buf)?;
    drop(builder);
    let mut indexer = Indexer::new(Some(&odb), pack_dir, 0o444, false)?;
    indexer
        .write_all(&buf)
        .map_err(|e| io("indexing the merged pack", e))?;
    let name = indexer.commit()?;
    let new_pack = pack_dir.join(format!("pack-{name}.pack"));
    let new_idx = pack_dir.join(format!("pack-{name}.idx"));
    if fsync {
        sync_file(&new_pack).map_err(|e| io("syncing the merged pack", e))?;
        sync_file(&new_idx).map_err(|e| io("syncing the merged index", e))?;
        sync_dir(pack_dir).map_err(|e| io("syncing", e))?;
    }
    for (pack, _) in chosen {
        if *pack == new_pack {
            continue;
        }
        std::fs::remove_file(pack.with_extension("idx"))
            .map_err(|e| io("removing an old index", e))?;
        std::fs::remove_file(pack).map_err(|e| io("removing an old pack", e))?;
    }
    if fsync {
        sync_dir(pack_dir).map_err(|e| io("syncing", e))?;
    }
    Ok(Some(Merged {
        packs: chosen.len(),
        objects,
        millis: started.elapsed().as_millis() as u64,
    }))
}
