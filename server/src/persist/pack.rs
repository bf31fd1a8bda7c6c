//! One pack file per group commit, written by hand.
//!
//! Git's pack format is small: a header, each object as a type-and-size
//! header followed by its zlib stream, and a SHA-1 trailer; the `.idx` beside
//! it lists the sorted ids with their CRC-32 and offset. Writing it here, in
//! one pass over objects already in memory, costs one hash per object (and
//! a deflate for the large ones): no loose objects, no delta search, no
//! re-reading.
//!
//! Durability: the pack and its index are written under temporary names in
//! `objects/pack`, flushed with `fsync` (when asked), renamed to
//! `pack-<checksum>.pack` then `.idx` (git finds a pack by its index, so the
//! pack is always complete when the index appears), and the folder is
//! flushed. Only then may a ref point at the objects.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::{Compress, Compression, FlushCompress, Status};
use sha1::{Digest, Sha1};

use super::object::{ObjectId, ObjectKind};

/// Objects smaller than this are stored without compression. Deflate
/// cost about 50 µs per small object here (measured: more than half of a
/// group commit's time) and saves little on trees (mostly binary ids);
/// the large objects (an import's journal) are compressed. A person's
/// `git gc`, run while the server is stopped, compresses and deltas the
/// history.
const COMPRESS_MIN: usize = 64 * 1024;

/// A pack being built in memory.
pub struct PackWriter {
    /// The pack stream so far, header included (its count is patched last).
    buf: Vec<u8>,
    /// Every object written, in pack order.
    entries: Vec<PackEntry>,
    /// The ids already in this pack: an object goes in once.
    seen: HashSet<ObjectId>,
    /// Reused deflate state (creating one per object is costly).
    fast: Compress,
}

/// One object's place in the pack.
#[derive(Debug, Clone, Copy)]
struct PackEntry {
    id: ObjectId,
    offset: u64,
    crc: u32,
}

/// Where a pack was written.
#[derive(Debug, Clone)]
pub struct WrittenPack {
    /// `objects/pack/pack-<checksum>.pack`.
    pub pack: PathBuf,
    /// `objects/pack/pack-<checksum>.idx`.
    pub index: PathBuf,
    /// Bytes of pack and index together.
    pub bytes: u64,
}

/// A position in a [`PackWriter`] to go back to (see [`PackWriter::truncate`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    buf: usize,
    entries: usize,
}

impl Default for PackWriter {
    fn default() -> Self {
        PackWriter::new()
    }
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> PackWriter {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PACK");
        buf.extend_from_slice(&2u32.to_be_bytes());
        buf.extend_from_slice(&0u32.to_be_bytes());
        PackWriter {
            buf,
            entries: Vec::new(),
            seen: HashSet::new(),
            fast: Compress::new(Compression::fast(), true),
        }
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no object.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an object (once: adding it again does nothing) and returns its id.
    pub fn add(&mut self, kind: ObjectKind, data: &[u8]) -> ObjectId {
        let id = ObjectId::hash(kind, data);
        if !self.seen.insert(id) {
            return id;
        }
        let offset = self.buf.len() as u64;
        // Type and size header: 3 bits of type, then the size 4 + 7n bits.
        let mut size = data.len();
        let mut byte = (kind as u8) << 4 | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            self.buf.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        self.buf.push(byte);
        if data.len() < COMPRESS_MIN {
            stored_zlib(data, &mut self.buf);
        } else {
            deflate(&mut self.fast, data, &mut self.buf);
        }
        let crc = {
            let mut crc = flate2::Crc::new();
            crc.update(&self.buf[usize::try_from(offset).unwrap_or(0)..]);
            crc.sum()
        };
        self.entries.push(PackEntry { id, offset, crc });
        id
    }

    /// Adds an object already packed elsewhere (header and zlib stream),
    /// as it is; its CRC is `crc`. Does nothing if the id is already in.
    pub fn add_raw(&mut self, id: ObjectId, packed: &[u8], crc: u32) {
        if !self.seen.insert(id) {
            return;
        }
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(packed);
        self.entries.push(PackEntry { id, offset, crc });
    }

    /// The current position.
    pub fn mark(&self) -> Mark {
        Mark {
            buf: self.buf.len(),
            entries: self.entries.len(),
        }
    }

    /// Drops every object added since `mark`.
    pub fn truncate(&mut self, mark: Mark) {
        for e in self.entries.drain(mark.entries..) {
            self.seen.remove(&e.id);
        }
        self.buf.truncate(mark.buf);
    }

    /// Writes the pack and its index into `pack_dir` and returns where.
    ///
    /// # Errors
    /// Any I/O error; then no pack under a final name was written (a
    /// temporary file may be left, named `tmp_*` as git's own, which
    /// `git gc` cleans).
    pub fn finish(mut self, pack_dir: &Path, fsync: bool) -> io::Result<WrittenPack> {
        let count = u32::try_from(self.entries.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "too many objects for one pack")
        })?;
        self.buf[8..12].copy_from_slice(&count.to_be_bytes());
        let checksum: [u8; 20] = Sha1::digest(&self.buf).into();
        self.buf.extend_from_slice(&checksum);
        let index = build_index(&mut self.entries, &checksum);

        let name = ObjectId(checksum).to_string();
        let pack = pack_dir.join(format!("pack-{name}.pack"));
        let idx = pack_dir.join(format!("pack-{name}.idx"));
        let tmp_pack = write_temp(pack_dir, "tmp_pack_gitmind", &self.buf, fsync)?;
        let tmp_idx = match write_temp(pack_dir, "tmp_idx_gitmind", &index, fsync) {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_file(&tmp_pack);
                return Err(e);
            }
        };
        fs::rename(&tmp_pack, &pack)?;
        fs::rename(&tmp_idx, &idx)?;
        if fsync {
            sync_dir(pack_dir)?;
        }
        Ok(WrittenPack {
            pack,
            index: idx,
            bytes: (self.buf.len() + index.len()) as u64,
        })
    }
}

/// A zlib stream holding `data` in stored (uncompressed) deflate blocks.
fn stored_zlib(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        // Chunks are at most 0xffff bytes long.
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
}

/// Adler-32, the checksum that ends a zlib stream.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before the sums overflow.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    b << 16 | a
}

/// Appends `data` as one zlib stream.
fn deflate(z: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    z.reset();
    let start_in = z.total_in();
    let start_out = out.len();
    loop {
        out.reserve(data.len() / 2 + 64);
        let done = usize::try_from(z.total_in() - start_in).unwrap_or(data.len());
        match z.compress_vec(&data[done..], out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break,
            Ok(_) => continue,
            // Deflating into memory only fails on misuse; fall back to the
            // stored form so the object is still written correctly.
            Err(_) => {
                out.truncate(start_out);
                stored_zlib(data, out);
                break;
            }
        }
    }
}

/// Builds a version 2 `.idx` for the entries (sorting them by id).
fn build_index(entries: &mut [PackEntry], pack_checksum: &[u8; 20]) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.id);
    let mut out = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    out.extend_from_slice(&[0xff, b't', b'O', b'c', 0, 0, 0, 2]);
    let mut fanout = [0u32; 256];
    for e in entries.iter() {
        fanout[usize::from(e.id.0[0])] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for e in entries.iter() {
        out.extend_from_slice(&e.id.0);
    }
    for e in entries.iter() {
        out.extend_from_slice(&e.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for e in entries.iter() {
        if e.offset < 0x8000_0000 {
            // Checked just above: fits in 31 bits.
            out.extend_from_slice(&(e.offset as u32).to_be_bytes());
        } else {
            let slot = 0x8000_0000 | large.len() as u32;
            out.extend_from_slice(&slot.to_be_bytes());
            large.push(e.offset);
        }
    }
    for off in large {
        out.extend_from_slice(&off.to_be_bytes());
    }
    out.extend_from_slice(pack_checksum);
    let own: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&own);
    out
}

/// Writes a new file with a unique temporary name in `dir`.
fn write_temp(dir: &Path, prefix: &str, data: &[u8], fsync: bool) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{prefix}_{}_{n}", std::process::id()));
    let mut f = File::options().write(true).create_new(true).open(&path)?;
    let result = f
        .write_all(data)
        .and_then(|()| if fsync { f.sync_all() } else { Ok(()) });
    if let Err(e) = result {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Flushes a folder's entries (new names, renames) to disk.
///
/// # Errors
/// The folder cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The packs in `pack_dir`: (the `.pack` path, its size in bytes), for
/// every pack that has its index.
///
/// # Errors
/// The folder cannot be read.
pub fn list_packs(pack_dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(pack_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "idx") {
            let pack = path.with_extension("pack");
            if let Ok(meta) = fs::metadata(&pack) {
                out.push((pack, meta.len()));
            }
        }
    }
    Ok(out)
}

/// One object of an existing pack, as its index lists it.
#[derive(Debug, Clone, Copy)]
pub struct IndexedObject {
    /// Its id.
    pub id: ObjectId,
    /// Its offset in the pack.
    pub offset: u64,
    /// CRC-32 of its packed bytes.
    pub crc: u32,
}

/// Reads a version 2 `.idx`: every object's id, offset and CRC.
///
/// # Errors
/// The file cannot be read or is not a well-formed version 2 index.
pub fn read_index(idx: &Path) -> io::Result<Vec<IndexedObject>> {
    let data = fs::read(idx)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a version 2 pack index", idx.display()),
        )
    };
    if data.len() < 8 + 1024 || data[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad());
    }
    let u32_at = |at: usize| -> io::Result<u32> {
        let b: [u8; 4] = data
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        Ok(u32::from_be_bytes(b))
    };
    let count = u32_at(8 + 1020)? as usize;
    let ids_at = 8 + 1024;
    let crcs_at = ids_at + count * 20;
    let offs_at = crcs_at + count * 4;
    let large_at = offs_at + count * 4;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let id: [u8; 20] = data
            .get(ids_at + i * 20..ids_at + i * 20 + 20)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        let crc = u32_at(crcs_at + i * 4)?;
        let off = u32_at(offs_at + i * 4)?;
        let offset = if off & 0x8000_0000 == 0 {
            u64::from(off)
        } else {
            let at = large_at + (off & 0x7fff_ffff) as usize * 8;
            let b: [u8; 8] = data
                .get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(bad)?;
            u64::from_be_bytes(b)
        };
        out.push(IndexedObject {
            id: ObjectId(id),
            offset,
            crc,
        });
    }
    Ok(out)
}

/// A pack read whole, with where each object's packed bytes are.
#[derive(Debug)]
pub struct RawPack {
    /// The pack file's bytes.
    pub data: Vec<u8>,
    /// Each object and the range of its header and zlib stream in `data`.
    pub objects: Vec<(IndexedObject, std::ops::Range<usize>)>,
}

/// The packed bytes (header and zlib stream) of every object of a pack,
/// for copying into another pack as they are. `None` when the pack holds
/// a delta (written by `git gc`, not by this module): deltas name other
/// objects by their offset, so they cannot be copied byte for byte.
///
/// # Errors
/// The pack or its index cannot be read or do not agree.
pub fn read_raw_objects(pack: &Path) -> io::Result<Option<RawPack>> {
    let mut objects = read_index(&pack.with_extension("idx"))?;
    let data = fs::read(pack)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not match its index", pack.display()),
        )
    };
    if data.len() < 32 || &data[..4] != b"PACK" {
        return Err(bad());
    }
    let end = data.len() - 20;
    objects.sort_unstable_by_key(|o| o.offset);
    let mut out = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        let start = usize::try_from(o.offset).map_err(|_| bad())?;
        let stop = match objects.get(i + 1) {
            Some(next) => usize::try_from(next.offset).map_err(|_| bad())?,
            None => end,
        };
        if start < 12 || stop > end || start >= stop {
            return Err(bad());
        }
        // Types 6 and 7 are deltas.
        if matches!((data[start] >> 4) & 7, 6 | 7) {
            return Ok(None);
        }
        out.push((*o, start..stop));
    }
    Ok(Some(RawPack { data, objects: out }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn adler32_matches_zlib() {
        // zlib.adler32(b"Wikipedia") == 0x11E60398
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
        let big = vec![0xffu8; 100_000];
        let mut z = flate2::Compress::new(Compression::none(), true);
        let mut out = Vec::new();
        deflate(&mut z, &big, &mut out);
        assert_eq!(out[out.len() - 4..], adler32(&big).to_be_bytes());
    }

    #[test]
    fn stored_streams_inflate() {
        use std::io::Read;
        for len in [0usize, 1, 255, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            stored_zlib(&data, &mut out);
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn git_reads_the_pack() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let pack_dir = dir.path().join("objects/pack");
        let mut w = PackWriter::new();
        let small = w.add(ObjectKind::Blob, b"small");
        let big_data = "x".repeat(10_000);
        let big = w.add(ObjectKind::Blob, big_data.as_bytes());
        let mut tree = Vec::new();
        super::super::object::push_tree_entry(&mut tree, false, b"a", &small);
        super::super::object::push_tree_entry(&mut tree, false, b"b", &big);
        let t = w.add(ObjectKind::Tree, &tree);
        assert_eq!(w.add(ObjectKind::Blob, b"small"), small);
        assert_eq!(w.len(), 3);
        let written = w.finish(&pack_dir, true).unwrap();
        assert!(written.pack.exists() && written.index.exists());
        assert_eq!(read_index(&written.index).unwrap().len(), 3);
        let odb = repo.odb().unwrap();
        odb.refresh().unwrap();
        assert_eq!(odb.read(big.to_oid()).unwrap().data(), big_data.as_bytes());
        let tree = repo.find_tree(t.to_oid()).unwrap();
        assert_eq!(tree.len(), 2);
        let status = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(dir.path())
            .args(["verify-pack", "-v"])
            .arg(&written.index)
            .output();
        if let Ok(out) = status {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
