//! Keeping the number of pack files bounded.
//!
//! Every group commit adds a small pack. When there are more than
//! `max_packs` small ones, they are merged into one, geometrically: the
//! smallest are taken until at most half of `max_packs` remain, then more
//! as long as the next is not larger than twice what was taken, up to
//! [`MAX_MERGE_TOTAL`] bytes. Each object is then copied O(log n) times over
//! its life. Merges run on their own thread ([`Merger`]), so they never
//! hold up a commit.
//!
//! Objects are copied as they are packed (no inflate, no delta search):
//! a merge costs I/O and one SHA-1, nothing more. Packs of
//! [`MAX_MERGE_BYTES`] or more are left alone, and so are packs holding
//! deltas (written by a person's `git gc`, which also compresses history
//! far better than this does: it is safe to run while the server is
//! stopped). Nothing is pruned, so a journal's blob ids keep resolving.
//!
//! The merged pack is written and flushed like any other (see `pack`) and
//! only then are the old packs removed, index first as git does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::pack::{list_packs, read_raw_objects, sync_dir, PackWriter};
use super::PersistStats;

/// Packs at least this large are never merged.
pub const MAX_MERGE_BYTES: u64 = 32 << 20;
/// A merge takes at most this many bytes of packs.
pub const MAX_MERGE_TOTAL: u64 = 128 << 20;

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

/// Merges small packs when there are more than `max_packs` of them;
/// returns what it did and how many small packs there are now.
///
/// # Errors
/// Reading or writing packs failed; the old packs are then all kept.
pub fn consolidate(
    pack_dir: &Path,
    max_packs: usize,
    fsync: bool,
) -> std::io::Result<(Option<Merged>, usize)> {
    let io = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} in {}: {e}", pack_dir.display()))
    };
    let mut packs = list_packs(pack_dir).map_err(|e| io("listing packs", e))?;
    packs.retain(|(_, size)| *size < MAX_MERGE_BYTES);
    if packs.len() <= max_packs.max(2) {
        return Ok((None, packs.len()));
    }
    let started = Instant::now();
    let must = packs.len().saturating_sub(max_packs / 2).max(2);
    packs.sort_by_key(|(_, size)| *size);
    let mut take = 0;
    let mut sum = 0u64;
    while take < packs.len()
        && sum + packs[take].1 <= MAX_MERGE_TOTAL
        && (take < must || packs[take].1 <= 2 * sum)
    {
        sum += packs[take].1;
        take += 1;
    }
    let mut writer = PackWriter::new();
    let mut merged = Vec::new();
    for (pack, _) in &packs[..take] {
        let Some(raw) = read_raw_objects(pack).map_err(|e| io("reading a pack", e))? else {
            continue;
        };
        for (o, range) in raw.objects {
            writer.add_raw(o.id, &raw.data[range], o.crc);
        }
        merged.push(pack.clone());
    }
    if merged.len() < 2 {
        return Ok((None, packs.len()));
    }
    let objects = writer.len();
    let written = writer
        .finish(pack_dir, fsync)
        .map_err(|e| io("writing the merged pack", e))?;
    for pack in &merged {
        if *pack == written.pack {
            continue;
        }
        std::fs::remove_file(pack.with_extension("idx"))
            .map_err(|e| io("removing an old index", e))?;
        std::fs::remove_file(pack).map_err(|e| io("removing an old pack", e))?;
    }
    if fsync {
        sync_dir(pack_dir).map_err(|e| io("syncing", e))?;
    }
    let merged_small = usize::from(written.bytes < MAX_MERGE_BYTES);
    let left = packs.len() - merged.len() + merged_small;
    let report = Merged {
        packs: merged.len(),
        objects,
        millis: started.elapsed().as_millis() as u64,
    };
    Ok((Some(report), left))
}

/// A thread that merges packs in the background, so that a merge never
/// holds up a commit (the commit thread never reads packs: it writes new
/// ones, which a merge may pick up once their index exists).
pub struct Merger {
    tx: Option<crossbeam::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    busy: Arc<AtomicBool>,
    small: Arc<AtomicUsize>,
    max_packs: usize,
}

impl Merger {
    /// Starts the thread; `small` is the number of small packs now.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(
        pack_dir: PathBuf,
        max_packs: usize,
        fsync: bool,
        small: usize,
        stats: Arc<PersistStats>,
    ) -> std::io::Result<Merger> {
        let (tx, rx) = crossbeam::channel::unbounded::<()>();
        let busy = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(small));
        let (b, c) = (Arc::clone(&busy), Arc::clone(&count));
        let thread = std::thread::Builder::new().name("gitmind-repack".into()).spawn(move || {
            for () in rx {
                // Packs written during a merge do not start another (the
                // merger was busy): look again after each merge until there
                // are few enough, or a writer has started the next one.
                loop {
                    let before = c.load(Ordering::Acquire);
                    let merged = match consolidate(&pack_dir, max_packs, fsync) {
                        Ok((Some(m), left)) => {
                            c.fetch_sub(before.saturating_sub(left), Ordering::AcqRel);
                            stats.merged();
                            tracing::info!(packs = m.packs, objects = m.objects, ms = m.millis, "packs merged");
                            true
                        }
                        // Nothing to merge (the small packs are too few, or
                        // none is small): look again after `max_packs / 2` more.
                        Ok((None, left)) => {
                            c.store(left.min(max_packs / 2), Ordering::Release);
                            false
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "merging packs failed; the old packs are kept");
                            c.store(max_packs / 2, Ordering::Release);
                            false
                        }
                    };
                    b.store(false, Ordering::Release);
                    let again = merged
                        && c.load(Ordering::Acquire) > max_packs
                        && !b.swap(true, Ordering::AcqRel);
                    if !again {
                        break;
                    }
                }
            }
        })?;
        Ok(Merger {
            tx: Some(tx),
            thread: Some(thread),
            busy,
            small: count,
            max_packs,
        })
    }

    /// Notes one more small pack and starts a merge when there are too many
    /// and none is running.
    pub fn pack_written(&self) {
        let n = self.small.fetch_add(1, Ordering::AcqRel) + 1;
        if n > self.max_packs && !self.busy.swap(true, Ordering::AcqRel) {
            if let Some(tx) = &self.tx {
                let _ = tx.send(());
            }
        }
    }
}

impl Drop for Merger {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
