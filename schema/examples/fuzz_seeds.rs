//! Writes seed inputs for the fuzz targets (`fuzz/`) from the shared corpus:
//! each `schema/corpus/*.json` as it is for `decode_json`, and its binary
//! frames (plain and zstd) for `decode_binary`.
//!
//! ```text
//! cargo run -p gitmind-schema --example fuzz_seeds    # then, in fuzz/:
//! RUSTC_BOOTSTRAP=1 cargo fuzz run decode_binary -- -max_total_time=60
//! ```

use std::path::PathBuf;

use gitmind_schema::binary::{self, Compression};
use gitmind_schema::{json, Limits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let json_dir = root.join("fuzz/corpus/decode_json");
    let binary_dir = root.join("fuzz/corpus/decode_binary");
    std::fs::create_dir_all(&json_dir)?;
    std::fs::create_dir_all(&binary_dir)?;
    let mut count = 0;
    for entry in std::fs::read_dir(root.join("schema/corpus"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(json_dir.join(&name), &text)?;
        let envs: Vec<_> = json::decode(&text, &Limits::default())?
            .into_iter()
            .collect::<Result<_, _>>()?;
        std::fs::write(
            binary_dir.join(format!("{name}.plain")),
            binary::encode_with(&envs, Compression::Never),
        )?;
        std::fs::write(
            binary_dir.join(format!("{name}.zstd")),
            binary::encode_with(&envs, Compression::Always),
        )?;
        count += 1;
    }
    println!(
        "wrote seeds of {count} corpus files to {} and {}",
        json_dir.display(),
        binary_dir.display()
    );
    Ok(())
}
