//! Moving a graph's ref as git itself does: write the new value into
//! `<ref>.lock` (created exclusively, so a concurrent `git update-ref`
//! and this cannot both write), flush it, rename it over the ref, flush the
//! folder. Compare-and-swap: the ref must still hold the tip this thread
//! committed last, or someone else moved it and nothing is written.
//!
//! Done by hand rather than through libgit2, which spent half a
//! millisecond per update looking at `packed-refs` and the object database.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::object::ObjectId;
use super::pack::sync_dir;

/// The value of a ref: its loose file, else its line in `packed-refs`.
///
/// # Errors
/// A file cannot be read, or the ref does not hold an object id.
pub fn read_ref(repo: &Path, refname: &str) -> io::Result<Option<ObjectId>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{refname}: {what}"));
    match fs::read_to_string(repo.join(refname)) {
        Ok(text) => {
            return ObjectId::from_hex(text.trim())
                .map(Some)
                .ok_or_else(|| bad("not an object id"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let packed = match fs::read_to_string(repo.join("packed-refs")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for line in packed.lines() {
        if let Some((hex, name)) = line.split_once(' ') {
            if name == refname {
                return ObjectId::from_hex(hex)
                    .map(Some)
                    .ok_or_else(|| bad("bad packed-refs line"));
            }
        }
    }
    Ok(None)
}

/// Moves `refname` from `old` (`None`: it must not exist) to `new`, or
/// removes it (`new` `None`), flushing when `fsync` is set.
///
/// # Errors
/// A message: the ref is locked or moved by someone else, or an I/O error.
pub fn update_ref(
    repo: &Path,
    refname: &str,
    new: Option<ObjectId>,
    old: Option<ObjectId>,
    fsync: bool,
) -> Result<(), String> {
    let path = repo.join(refname);
    let Some(dir) = path.parent() else {
        return Err(format!("{refname} has no folder"));
    };
    let fresh_dir = !dir.exists();
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock = dir.join(format!(
        "{}.lock",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(&lock)
        .map_err(|e| format!("locking {refname}: {e}"))?;
    let result = (|| {
        let current = read_ref(repo, refname).map_err(|e| format!("reading {refname}: {e}"))?;
        if current != old {
            return Err(format!(
                "{refname} is at {current:?}, not {old:?}: moved by someone else"
            ));
        }
        let Some(new) = new else {
            return fs::remove_file(&path).map_err(|e| format!("removing {refname}: {e}"));
        };
        file.write_all(format!("{new}\n").as_bytes())
            .and_then(|()| if fsync { file.sync_all() } else { Ok(()) })
            .map_err(|e| format!("writing {}: {e}", lock.display()))?;
        fs::rename(&lock, &path).map_err(|e| format!("renaming {}: {e}", lock.display()))?;
        Ok(())
    })();
    let _ = fs::remove_file(&lock);
    result?;
    if fsync {
        let mut dirs = vec![dir];
        if fresh_dir {
            // A new ref may have created its folders, up to `refs/`.
            dirs.extend(
                dir.ancestors()
                    .skip(1)
                    .take_while(|d| d.starts_with(repo) && *d != repo),
            );
        }
        if let Some(e) = dirs.into_iter().find_map(|d| {
            sync_dir(d)
                .err()
                .map(|e| format!("syncing {}: {e}", d.display()))
        }) {
            // Not durable: put the old value back, so that the ref and this
            // thread's idea of the tip agree again.
            if let Err(u) = update_ref(repo, refname, old, new, false) {
                tracing::error!(refname, error = %u, "could not put the ref back after a failed sync");
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_like_git() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let (a, b) = (ObjectId([1; 20]), ObjectId([2; 20]));
        let name = "refs/gitmind/graphs/g";
        update_ref(dir.path(), name, Some(a), None, true).unwrap();
        assert!(update_ref(dir.path(), name, Some(b), None, true).is_err());
        assert!(update_ref(dir.path(), name, Some(b), Some(b), true).is_err());
        update_ref(dir.path(), name, Some(b), Some(a), true).unwrap();
        assert_eq!(repo.refname_to_id(name).unwrap(), b.to_oid());
        // A ref packed by a person's `git pack-refs` is read from packed-refs.
        std::fs::remove_file(dir.path().join(name)).unwrap();
        std::fs::write(
            dir.path().join("packed-refs"),
            format!("# pack-refs with: peeled\n{b} {name}\n"),
        )
        .unwrap();
        assert_eq!(read_ref(dir.path(), name).unwrap(), Some(b));
        update_ref(dir.path(), name, Some(a), Some(b), false).unwrap();
        assert_eq!(repo.refname_to_id(name).unwrap(), a.to_oid());
        // A lock held by someone else stops the update.
        std::fs::write(dir.path().join(format!("{name}.lock")), b"").unwrap();
        assert!(update_ref(dir.path(), name, Some(b), Some(a), false)
            .unwrap_err()
            .contains("locking"));
    }
}
